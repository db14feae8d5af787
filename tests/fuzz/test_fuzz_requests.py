"""Fuzzing requests against the four published specs in /work/shared/specs (``openapi.spec``).

For each spec (UK Open Banking Account and Transaction 4.0, Berlin Group NextGenPSD2 1.3.8,
Australia CDR banking 1.36, Brazil payments 4.0) a guard is built with the spec as
``openapi.spec``, and requests to its real operations are generated: path parameters, query
strings, header parameters and bodies drawn from the spec's own examples and enums, from a
minimal instance of each request schema, from mutations of those, and from arbitrary text and
JSON (``st.recursive``).

Properties (docs/openapi.md, docs/errors.md ``request-invalid``, ``unsupported-media-type``;
STANDARDS OWASP-05, OWASP-06, OWASP-12, OWASP-13):

* every request ends in an allow or a documented 4xx problem (``conftest.check_decision``); a
  contract refusal is 400 ``openapi.request_invalid`` or 415 ``openapi.content_type_not_declared``
  with an ``errors`` list of at most 20 well-formed ``location``/``check`` entries, 415 exactly
  when a media-type entry is among them, the same entries in the audit event's notes, and no
  submitted value in the problem or the event;
* query parameters the operation does not declare change nothing (docs/openapi.md: unknown query
  parameters are allowed), nor do header fields no control or parameter reads, nor the case of
  header names.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_plus

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from bankguard import Policy
from bankguard.request import Headers, RequestFacts

from .conftest import (
    AUDIENCE,
    ISS,
    ISSUER,
    READ_HEADERS,
    Verdict,
    check_decision,
    fuzz,
    json_values,
    new_guard,
)

SPECS = Path("/work/shared/specs")
FILES = {
    "uk-ob": SPECS / "uk-ob" / "account-info-openapi.yaml",
    "berlin-group": SPECS / "berlin-group" / "psd2-api-1.3.8-2020-11-06v1.yaml",
    "au-cdr": SPECS / "au-cdr" / "cds_banking.json",
    "br-ofb": SPECS / "br-ofb" / "payments_4.0.0.yml",
}
IID = "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
#: Inserted into generated values: a refusal must never repeat them.
MARK = "Qzx7Mark"
LOCATION = re.compile(r"(?:(?:path|query|header|cookie)\.[^\s]+|body(?:/.*)?)\Z")
METHOD_OVERRIDE = frozenset({"_method", "access_token"})
#: Header parameters the generator sets itself (OAS ignores Authorization, Accept, Content-Type).
SET_BY_GENERATOR = frozenset({"authorization", "content-type", "accept", "x-fapi-interaction-id"})


# -- the spec, read as data: parameters, examples, a minimal instance of each body ---------------------


@dataclass
class Param:
    name: str
    where: str
    required: bool
    samples: list[str] = field(default_factory=list)


@dataclass
class Operation:
    method: str
    path: str  # with the base path, as the guard routes it
    params: list[Param]
    media: dict[str, list[Any]]  # media type -> sample documents (JSON types) or [] (other types)
    body_required: bool


class Spec:
    def __init__(self, file: Path) -> None:
        text = file.read_text(encoding="utf-8")
        self.doc: Any = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)

    def resolve(self, node: Any, depth: int = 0) -> Any:
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and depth < 20:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                return {}
            node = self.doc
            for part in ref[2:].split("/"):
                node = (
                    node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
                )
            depth += 1
        return node

    def instance(self, schema: Any, depth: int = 0) -> Any:
        """A small instance of ``schema``: examples and enums first, required members only."""
        schema = self.resolve(schema)
        if not isinstance(schema, dict) or depth > 12:
            return None
        if "example" in schema:
            return schema["example"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        for key in ("allOf",):
            if isinstance(schema.get(key), list):
                merged: dict[str, Any] = {}
                for part in schema[key]:
                    value = self.instance(part, depth + 1)
                    if isinstance(value, dict):
                        merged.update(value)
                return merged
        for key in ("oneOf", "anyOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.instance(schema[key][0], depth + 1)
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            props = schema.get("properties") or {}
            return {
                name: self.instance(props.get(name, {}), depth + 1)
                for name in schema.get("required") or []
                if isinstance(name, str)
            }
        if kind == "array":
            return [self.instance(schema.get("items", {}), depth + 1)] if schema.get("minItems") else []
        if kind == "integer":
            return int(schema.get("minimum", 1))
        if kind == "number":
            return schema.get("minimum", 1.5)
        if kind == "boolean":
            return True
        fmt = schema.get("format")
        return {
            "date-time": "2024-05-01T09:30:00+00:00",
            "date": "2024-05-01",
            "uuid": str(uuid.UUID(int=1, version=4)),
            "email": "a@example.com",
            "uri": "https://example.com/",
        }.get(fmt, "x" * max(1, int(schema.get("minLength", 1))))

    def samples(self, param: dict[str, Any]) -> list[str]:
        out: list[Any] = []
        schema = self.resolve(param.get("schema", {}))
        if "example" in param:
            out.append(param["example"])
        for item in (param.get("examples") or {}).values():
            item = self.resolve(item)
            if isinstance(item, dict) and "value" in item:
                out.append(item["value"])
        if isinstance(schema, dict):
            out += [v for v in (schema.get("example"), schema.get("default")) if v is not None]
            out += list(schema.get("enum") or [])
            if not out:
                out.append(self.instance(schema))
        return [_text(v) for v in out if v is not None and not isinstance(v, (dict, list))][:8]

    def operations(self, base: str) -> Iterator[Operation]:
        for path, item in (self.doc.get("paths") or {}).items():
            item = self.resolve(item)
            shared = [self.resolve(p) for p in item.get("parameters") or []]
            for method, op in item.items():
                if method not in ("get", "put", "post", "delete", "patch"):
                    continue
                declared = {(p.get("in"), p.get("name")): p for p in shared}
                declared.update(
                    {(p.get("in"), p.get("name")): p for p in map(self.resolve, op.get("parameters") or [])}
                )
                params = [
                    Param(str(name), str(where), bool(p.get("required")) or where == "path", self.samples(p))
                    for (where, name), p in declared.items()
                    if where in ("path", "query", "header") and name
                ]
                body = self.resolve(op.get("requestBody") or {})
                media: dict[str, list[Any]] = {}
                for mt, content in (body.get("content") or {}).items():
                    content = self.resolve(content) or {}
                    docs = []
                    if "example" in content:
                        docs.append(content["example"])
                    for item_ in (content.get("examples") or {}).values():
                        item_ = self.resolve(item_)
                        if isinstance(item_, dict) and "value" in item_:
                            docs.append(item_["value"])
                    docs.append(self.instance(content.get("schema", {})))
                    media[mt] = docs
                yield Operation(method.upper(), base + path, params, media, bool(body.get("required")))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Api:
    """One spec under a guard, with what the generator needs."""

    def __init__(self, name: str) -> None:
        self.name = name
        policy = Policy.from_dict(
            {
                "tokens": {
                    "issuers": [
                        {
                            "issuer": ISS,
                            "audiences": [AUDIENCE],
                            "algorithms": ["ES256"],
                            "jwks": ISSUER.jwks(),
                        }
                    ]
                },
                "openapi": {"spec": str(FILES[name])},
                "request": {"max_body_bytes": 65536},
            }
        )
        self.guard, self.events = new_guard(policy)
        contract = self.guard.contract
        spec = Spec(FILES[name])
        self.operations = [op for base in contract.base_paths[:1] for op in spec.operations(base)]
        routed = {(op.method, op.path) for op in contract.operations}
        assert self.operations
        assert all((op.method, op.path) in routed for op in self.operations)
        scopes = {
            s for op in contract.operations for alt in op.security or () for _, names in alt for s in names
        }
        self.token = ISSUER.mint(scope=" ".join(sorted(scopes)) or None, lifetime=3600)
        self.header_names = {
            p.name.lower() for op in self.operations for p in op.params if p.where == "header"
        }


APIS = {name: Api(name) for name in FILES}


# -- requests ------------------------------------------------------------------------------------------


@dataclass
class Request:
    op: Operation
    path: str  # decoded
    raw_path: bytes
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes | None
    raw_query: str | None = None

    def facts(
        self, query: list[tuple[str, str]] | None = None, headers: list[tuple[str, str]] | None = None
    ) -> Any:
        pairs = self.query if query is None else query
        text = self.raw_query if self.raw_query is not None and query is None else _encode(pairs)
        if self.raw_query is not None and query is not None:
            text = "&".join(t for t in (self.raw_query, _encode(pairs[len(self.query) :])) if t)
        return RequestFacts(
            method=self.op.method,
            scheme="https",
            path=self.path,
            raw_path=self.raw_path,
            query=text,
            headers=Headers(self.headers if headers is None else headers),
            peer="203.0.113.9",
            body=self.body,
        )


def _encode(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


garbage = st.one_of(
    st.text(max_size=16).map(lambda t: MARK + t),
    st.sampled_from(["", " ", "-1", "0", "1e999", "9" * 30, "true", "null", "[]", "{}", "a,b", "%", "%ZZ"]),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["2024-02-30", "2024-05-01T09:30:00", "2024-05-01T09:30:00Z", "not-a-date"]),
)


def values_for(param: Param) -> st.SearchStrategy[str]:
    if param.samples:
        return st.one_of(st.sampled_from(param.samples), st.sampled_from(param.samples), garbage)
    return garbage


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """``document`` with one member replaced, removed or added, at any depth."""
    doc = json.loads(json.dumps(document))
    places: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k in node:
                places.append((node, k))
                walk(node[k])
        elif isinstance(node, list):
            for i in range(len(node)):
                places.append((node, i))
                walk(node[i])

    walk(doc)
    if not places:
        return draw(json_values)
    container, key = draw(st.sampled_from(places))
    action = draw(st.sampled_from(["replace", "replace", "remove", "add", "string"]))
    if action == "replace":
        container[key] = draw(json_values)
    elif action == "remove" and isinstance(container, dict):
        del container[key]
    elif action == "add" and isinstance(container, dict):
        container[draw(st.text(max_size=8))] = draw(json_values)
    else:
        container[key] = MARK + str(container[key])[:8]
    return doc


@st.composite
def bodies(draw: st.DrawFn, op: Operation) -> tuple[bytes | None, str | None]:
    choice = draw(st.sampled_from(["declared", "declared", "declared", "other", "none"]))
    if choice == "none" or (not op.media and draw(st.integers(0, 7))):
        return None, None
    declared = sorted(op.media)
    mt = draw(st.sampled_from(declared)) if declared and choice == "declared" else None
    content_type = (
        draw(st.sampled_from([mt, mt, mt + "; charset=utf-8", mt.upper()]))
        if mt is not None
        else draw(st.sampled_from(["application/json", "text/plain", "application/*", "", "json", None]))
    )
    docs = op.media.get(mt or "", []) if mt else []
    form = draw(st.sampled_from(["sample", "mutated", "mutated", "random", "bytes", "broken"]))
    if form in ("sample", "mutated") and docs:
        doc = draw(st.sampled_from(docs))
        doc = draw(mutated(doc)) if form == "mutated" else doc
        raw = json.dumps(doc).encode()
    elif form == "bytes":
        raw = draw(st.binary(max_size=64))
    elif form == "broken" and docs:
        text = json.dumps(draw(st.sampled_from(docs)))
        raw = draw(
            st.sampled_from(
                [
                    text[: len(text) // 2].encode(),
                    ("\ufeff" + text).encode(),
                    text.replace("{", '{"a":1,"a":2,', 1).encode(),
                    text.replace("}", ',"n":NaN}', 1).encode(),
                    text.encode("utf-16"),
                    ("[" * 3000 + "]" * 3000).encode(),
                ]
            )
        )
    else:
        raw = json.dumps(draw(json_values)).encode()
    return raw, content_type


@st.composite
def requests(draw: st.DrawFn, api: Api) -> Request:
    op = draw(st.sampled_from(api.operations))
    raw_segments = op.path
    decoded = op.path
    for param in [p for p in op.params if p.where == "path"]:
        value = draw(st.one_of(values_for(param), values_for(param), st.text(max_size=8)))
        encoded = quote(value, safe="") if draw(st.integers(0, 4)) else quote(value, safe=";,=@:!$&'()*+")
        raw_segments = raw_segments.replace("{" + param.name + "}", encoded, 1)
        decoded = decoded.replace("{" + param.name + "}", unquote(encoded), 1)
    query: list[tuple[str, str]] = []
    for param in [p for p in op.params if p.where == "query"]:
        if draw(st.integers(0, 9)) < (8 if param.required else 4):
            query.append((param.name, draw(values_for(param))))
            if draw(st.integers(0, 19)) == 0:
                query.append((param.name, draw(values_for(param))))  # HTTP parameter pollution
    headers = [("authorization", "Bearer " + api.token), ("x-fapi-interaction-id", IID)]
    for param in [p for p in op.params if p.where == "header"]:
        if param.name.lower() in SET_BY_GENERATOR:
            continue
        if draw(st.integers(0, 9)) < (9 if param.required else 3):
            value = draw(values_for(param))
            headers.append((param.name.lower(), value.replace("\r", "").replace("\n", "")))
    body, content_type = draw(bodies(op))
    if content_type is not None:
        headers.append(("content-type", content_type))
    raw_query = None
    if draw(st.integers(0, 9)) == 0:
        raw_query = draw(st.sampled_from(["&&", "=", "a=b=c", "%ZZ=1", "a&a", "+=+", "a%00=1"])) + MARK
    return Request(op, decoded, raw_segments.encode("latin-1"), query, headers, body, raw_query)


# -- the properties ----------------------------------------------------------------------------------


def run(api: Api, request: Request, **changes: Any) -> Verdict:
    before = len(api.events.events)
    decision = api.guard.decide(request.facts(**changes))
    verdict = check_decision(api.guard, api.events, before, decision, secrets=[api.token])
    event_ = api.events.events[-1]
    if verdict.reason in ("openapi.request_invalid", "openapi.content_type_not_declared"):
        assert verdict.errors
        assert len(verdict.errors) <= 20
        for location, check in verdict.errors:
            assert LOCATION.match(location), (location, check)
            assert re.fullmatch(r"[A-Za-z_]+", check), (location, check)
        media = {"content_type", "body_not_allowed"}
        assert (verdict.status == 415) == any(check in media for _, check in verdict.errors), verdict
        assert list(event_.notes) == [f"openapi.{loc}:{check}" for loc, check in verdict.errors]
    if not decision.allowed:
        body = api.guard.problem(decision).body.decode()
        assert MARK not in body, body  # values are never repeated (locations may hold names only)
        assert MARK not in event_.to_json().replace(json.dumps(event_.path)[1:-1], "")
    return verdict


@pytest.mark.parametrize("name", sorted(FILES))
@fuzz(120)
@given(data=st.data())
def test_OWASP_05_requests_against_real_specs(name: str, data: Any) -> None:
    api = APIS[name]
    verdict = run(api, data.draw(requests(api)))
    event(f"{name} {verdict.reason}")


undeclared_names = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~"),
    min_size=1,
    max_size=12,
)


@pytest.mark.parametrize("name", sorted(FILES))
@fuzz(60)
@given(data=st.data())
def test_undeclared_query_parameters_change_nothing(name: str, data: Any) -> None:
    api = APIS[name]
    request = data.draw(requests(api))
    declared = {p.name for p in request.op.params if p.where == "query"}
    extra = data.draw(
        st.lists(
            st.tuples(
                undeclared_names.filter(lambda n: unquote_plus(n) not in declared | METHOD_OVERRIDE),
                st.text(max_size=10),
            ),
            min_size=1,
            max_size=4,
        )
    )
    assert run(api, request) == run(api, request, query=request.query + extra), extra


@pytest.mark.parametrize("name", sorted(FILES))
@fuzz(50)
@given(data=st.data())
def test_unrelated_headers_and_name_case_change_nothing(name: str, data: Any) -> None:
    api = APIS[name]
    request = data.draw(requests(api))
    extra = data.draw(
        st.lists(
            st.tuples(
                st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
                    lambda n: n not in READ_HEADERS and n not in api.header_names
                ),
                st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
            ),
            min_size=1,
            max_size=4,
        )
    )
    baseline = run(api, request)
    assert run(api, request, headers=request.headers + extra) == baseline
    masks = data.draw(
        st.lists(st.integers(0, 2**30), min_size=len(request.headers), max_size=len(request.headers))
    )
    cased = [
        ("".join(c.upper() if m >> i & 1 else c for i, c in enumerate(k)), v)
        for (k, v), m in zip(request.headers, masks, strict=True)
    ]
    assert run(api, request, headers=cased) == baseline


def test_each_spec_has_an_allowed_request() -> None:
    """The generator reaches the application: for every spec, the samples alone make requests the
    guard allows (so the properties above are not only about refusals)."""
    for api in APIS.values():
        allowed = 0
        for op in api.operations:
            path = op.path
            for param in [p for p in op.params if p.where == "path"]:
                path = path.replace(
                    "{" + param.name + "}", quote(param.samples[0] if param.samples else "a1", safe="")
                )
            headers = [("authorization", "Bearer " + api.token), ("x-fapi-interaction-id", IID)]
            headers += [
                (p.name.lower(), p.samples[0])
                for p in op.params
                if p.where == "header" and p.required and p.samples and p.name.lower() not in SET_BY_GENERATOR
            ]
            query = [
                (p.name, p.samples[0]) for p in op.params if p.where == "query" and p.required and p.samples
            ]
            body = None
            if op.media:
                mt = sorted(op.media)[0]
                body = json.dumps(op.media[mt][0]).encode()
                headers.append(("content-type", mt))
            request = Request(op, unquote(path), path.encode(), query, headers, body)
            allowed += run(api, request).allowed
        assert allowed, api.name
