"""The response path's fast route (:func:`bankguard.openapi.minimise.minimise_body`): a body
the walk would leave as it is is recognised by a closed-schema check and a scan of its bytes,
and gives exactly what parsing and :func:`~bankguard.openapi.minimise.minimise` give; through
:meth:`bankguard.responses.ResponsePlan.finish`, such a body is sent as the very bytes received.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bankguard import Guard, Policy
from bankguard.openapi import minimise as minimise_module
from bankguard.openapi.minimise import (
    MAX_DEPTH,
    DocumentTooDeep,
    MinimiseReport,
    Shape,
    compile_shape,
    minimise,
    minimise_body,
    prepare,
)
from bankguard.testing import EventCollector, TestIssuer, make_facts

NO_SCOPES: frozenset[str] = frozenset()
VISA = "4111111111111111"


def resolver(schemas: Mapping[str, Any]):
    def resolve(ref: str) -> Mapping[str, Any]:
        prefix = "#/components/schemas/"
        if not ref.startswith(prefix):
            raise KeyError(ref)
        return schemas[ref[len(prefix) :]]

    return resolve


def shape_of(schema: Any, schemas: Mapping[str, Any] | None = None, **options: Any) -> Shape:
    return compile_shape(schema, resolver(dict(schemas or {})), **options)


def slow(body: bytes, shape: Shape, scopes: frozenset[str], reveal: bool) -> tuple[Any, MinimiseReport]:
    """The reference: parse with the standard library, then walk."""
    return minimise(json.loads(body), shape, scopes=scopes, reveal_pan=reveal)


def outcome(call: Any) -> tuple[str, Any]:
    try:
        result, report = call()
    except DocumentTooDeep:
        return ("too deep", None)
    except (ValueError, RecursionError):
        return ("not json", None)
    # json.dumps keeps the order of properties: the results must agree on it too
    return ("ok", (json.dumps(result, ensure_ascii=False), report))


def assert_same(body: bytes, shape: Shape, scopes: frozenset[str], reveal: bool) -> tuple[str, Any]:
    expected = outcome(lambda: slow(body, shape, scopes, reveal))
    assert outcome(lambda: minimise_body(body, shape, scopes=scopes, reveal_pan=reveal)) == expected
    return expected


class WalkCounter:
    """Counts the walks :func:`minimise_body` falls back to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = minimise_module.minimise

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(minimise_module, "minimise", counting)


def obj(properties: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), **extra}


STR = {"type": "string"}
ACCOUNT_SCHEMAS = {
    "Account": obj(
        {
            "Id": STR,
            "Identification": STR,
            "Balance": {"type": "number"},
            "Tags": {"type": "array", "items": STR},
            "Owner": obj({"Name": STR}, additionalProperties=False),
            "Secret": {"type": "string", "x-bankguard-scopes": ["secret"]},
            "Extra": {"type": "object", "additionalProperties": True},
        },
        additionalProperties=False,
    )
}
ACCOUNT = {
    "Id": "22289",
    "Identification": "80200110203345",  # a Luhn-valid sort code + account number
    "Balance": 12.5,
    "Tags": ["22289-20240509-004", "2024-01-05 ref 4000"],
    "Owner": {"Name": "J Doe"},
    "Extra": {"anything": [1, {"goes": True}]},
}


@pytest.fixture
def account_shape() -> Shape:
    return shape_of({"$ref": "#/components/schemas/Account"}, ACCOUNT_SCHEMAS)


# -- the fast path is taken, and only when the walk would change nothing ---------------------------


def test_a_conforming_body_without_card_numbers_skips_the_walk(account_shape, monkeypatch):
    walks = WalkCounter(monkeypatch)
    body = json.dumps(ACCOUNT).encode()
    for reveal in (False, True):
        document, report = minimise_body(body, account_shape, scopes=NO_SCOPES, reveal_pan=reveal)
        assert document == ACCOUNT
        assert report == MinimiseReport()
    assert walks.calls == 0


@pytest.mark.parametrize(
    ("change", "reveal"),
    [
        (lambda d: d.update(Leak=1), True),  # undeclared
        (lambda d: d["Owner"].update(Leak=1), True),  # undeclared, nested
        (lambda d: d.update(Secret="s"), True),  # tied to a scope the caller lacks
        (lambda d: d["Tags"].append(VISA), False),  # a card number
        (lambda d: d["Tags"].append("4111 1111 1111 1111"), False),
        (lambda d: d["Extra"].update({VISA: 1}), False),  # in a free-form name
        (lambda d: d.update(Balance=4111111111111111), False),  # a JSON number
        (lambda d: d.update(Balance=4.111111111111111e15), False),  # written with an exponent
        (lambda d: d["Tags"].append("caf\u00e9 4111111111111111"), False),  # non-ASCII body
    ],
)
def test_anything_to_change_takes_the_walk(account_shape, monkeypatch, change, reveal):
    document = copy.deepcopy(ACCOUNT)
    change(document)
    body = json.dumps(document, ensure_ascii=False).encode()
    walks = WalkCounter(monkeypatch)
    result, report = minimise_body(body, account_shape, scopes=NO_SCOPES, reveal_pan=reveal)
    assert walks.calls == 1
    assert report.changed
    assert (result, report) == slow(body, account_shape, NO_SCOPES, reveal)


def test_card_numbers_in_bodies_that_change_nothing_else_are_masked(account_shape):
    document = dict(ACCOUNT, Tags=[VISA, "3782 822463 10005"], Balance=4.111111111111111e15)
    result, report = minimise_body(
        json.dumps(document).encode(), account_shape, scopes=NO_SCOPES, reveal_pan=False
    )
    assert result["Tags"] == ["411111******1111", "3782 82**** *0005"]
    assert result["Balance"] == "411111******1111"
    assert report.masked == 3


def test_a_caller_holding_the_scope_keeps_the_fast_path(account_shape, monkeypatch):
    body = json.dumps(dict(ACCOUNT, Secret="s")).encode()
    walks = WalkCounter(monkeypatch)
    document, report = minimise_body(body, account_shape, scopes=frozenset({"secret", "x"}), reveal_pan=True)
    assert document["Secret"] == "s"
    assert not report.changed
    assert walks.calls == 0
    # a caller without it: the closed schema for that caller refuses the property
    _, report = minimise_body(body, account_shape, scopes=frozenset({"x"}), reveal_pan=True)
    assert report.removed_unauthorised == 1
    assert walks.calls == 1


def test_bodies_the_scan_cannot_read_as_written_take_the_walk(account_shape, monkeypatch):
    walks = WalkCounter(monkeypatch)
    for body in (
        json.dumps(dict(ACCOUNT, Id="caf\u00e9")).encode(),  # non-ASCII: other digits may hide
        json.dumps(dict(ACCOUNT, Id="caf\u00e9"), ensure_ascii=True).encode(),  # \u escapes
        json.dumps(dict(ACCOUNT, Id='a "quoted"\nid')).encode(),  # other escapes
        json.dumps(ACCOUNT).encode("utf-16"),  # another encoding
        b"\xef\xbb\xbf" + json.dumps(ACCOUNT).encode(),  # a byte order mark
    ):
        before = walks.calls
        assert assert_same(body, account_shape, NO_SCOPES, False)[0] == "ok"
        assert walks.calls == before + 1
    # with card numbers revealed, the bytes are not scanned: the closed schema decides
    before = walks.calls
    minimise_body(
        json.dumps(dict(ACCOUNT, Id="caf\u00e9")).encode(), account_shape, scopes=NO_SCOPES, reveal_pan=True
    )
    assert walks.calls == before


def test_many_runs_of_spaces_are_bounded_work(account_shape):
    # Deep indentation: runs of spaces the scan would otherwise look at one by one.
    body = json.dumps({**ACCOUNT, "Extra": {"x": [[[[[[[["a"] * 300]]]]]]]}}, indent=4).encode()
    assert assert_same(body, account_shape, NO_SCOPES, False)[0] == "ok"


def test_pattern_properties_take_the_walk(monkeypatch):
    shape = shape_of(obj({"a": STR}, patternProperties={"^x-": STR}, additionalProperties=False))
    walks = WalkCounter(monkeypatch)
    assert assert_same(b'{"a": "1"}', shape, NO_SCOPES, True)[0] == "ok"
    assert walks.calls == 0  # declared names only: no walk
    assert assert_same(b'{"a": "1", "x-y": "2", "z": 3}', shape, NO_SCOPES, True)[0] == "ok"
    assert assert_same(b'{"a": "1", "x-y": "2"}', shape, NO_SCOPES, True)[0] == "ok"
    assert walks.calls == 2


def test_pattern_properties_beside_additional_properties_take_the_walk():
    for pattern in (STR, False):
        shape = shape_of(obj({}, patternProperties={"^x-": pattern}, additionalProperties=True))
        _, (_, report) = assert_same(b'{"x-1": {"k": 1}, "o": {"k": 1}}', shape, NO_SCOPES, True)
        assert report.changed


def test_an_escape_next_to_a_card_number_is_seen():
    shape = shape_of(None)
    for text in ("line\n4111111111111111", "tab\t4111 1111 1111 1111", 'q"4111111111111111"'):
        body = json.dumps({"v": text}).encode()  # the escapes: \n, \t, \"
        _, (_, report) = assert_same(body, shape, NO_SCOPES, False)
        assert report.masked == 1, text


def test_forbidden_names_and_prefix_items():
    shape = shape_of(
        {
            "type": "object",
            "properties": {
                "no": False,
                "pin": {"type": "string", "writeOnly": True},
                "t": {"type": "array", "prefixItems": [obj({"a": STR})], "items": obj({"b": STR})},
            },
            "additionalProperties": True,
        },
        dialect="oas31",
    )
    for body in (
        b'{"no": 1}',
        b'{"pin": "1"}',
        b'{"t": [{"a": 1}, {"b": 2}]}',
        b'{"t": [{"b": 1}]}',
        b'{"o": 1}',
    ):
        assert_same(body, shape, NO_SCOPES, True)


def test_deep_documents_fail_the_same_way():
    schemas = {"N": obj({"n": {"$ref": "#/components/schemas/N"}, "free": {}})}
    shape = shape_of({"$ref": "#/components/schemas/N"}, schemas)
    for depth in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 40):
        nested = "{}"
        for _ in range(depth):
            nested = '{"n": ' + nested + "}"
        free = "[]"
        for _ in range(depth):
            free = "[" + free + "]"
        for body in (nested, '{"free": ' + free + "}"):
            for reveal in (False, True):
                assert_same(body.encode(), shape, NO_SCOPES, reveal)


def test_shapes_too_large_for_a_closed_schema_always_walk(monkeypatch, account_shape):
    monkeypatch.setattr(minimise_module, "MAX_CLOSED_DEFINITIONS", 3)
    walks = WalkCounter(monkeypatch)
    body = json.dumps(ACCOUNT).encode()
    assert minimise_body(body, account_shape, scopes=NO_SCOPES, reveal_pan=True)[0] == ACCOUNT
    assert minimise_body(body, account_shape, scopes=NO_SCOPES, reveal_pan=True)[0] == ACCOUNT
    assert walks.calls == 2


def test_prepare_compiles_ahead_and_variants_are_bounded(account_shape, monkeypatch):
    prepare(account_shape)
    prepare(account_shape)  # idempotent
    monkeypatch.setattr(minimise_module, "_MAX_VARIANTS", 2)
    body = json.dumps(ACCOUNT).encode()
    # a third combination of held scopes is not compiled: the walk decides, with the same result
    assert minimise_body(body, account_shape, scopes=frozenset({"secret"}), reveal_pan=True)[0] == ACCOUNT
    other = shape_of(
        obj(
            {
                "a": {"type": "string", "x-bankguard-scopes": ["p"]},
                "b": {"type": "string", "x-bankguard-scopes": ["q"]},
            }
        )
    )
    prepare(other)
    walks = WalkCounter(monkeypatch)
    assert minimise_body(b'{"a": "1"}', other, scopes=frozenset({"p"}), reveal_pan=True)[0] == {"a": "1"}
    assert walks.calls == 1


def test_not_json_is_refused_as_json_loads_refuses_it(account_shape):
    for body in (b"", b"{", b"[1,]", b"\xff\xfe\x00", b'{"a": 1} x', b"NaN-"):
        for reveal in (False, True):
            assert assert_same(body, account_shape, NO_SCOPES, reveal)[0] == "not json"
    deep = b"[" * 100_000 + b"]" * 100_000
    assert assert_same(deep, account_shape, NO_SCOPES, False)[0] == "not json"


# -- fast and slow agree on arbitrary documents and shapes -----------------------------------------

NAMES = ["a", "b", "c", "x-1"]
_leaf_schemas = st.sampled_from(
    [STR, {"type": "integer"}, {}, True, False, {"description": "any"}, {"type": "string", "writeOnly": True}]
)


def _schema_children(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def with_scopes(schema: Any, scoped: bool) -> Any:
        if scoped and isinstance(schema, dict):
            return {**schema, "x-bankguard-scopes": ["s"]}
        return schema

    properties = st.dictionaries(st.sampled_from(NAMES), children, max_size=3)
    additional = st.one_of(st.none(), st.booleans(), children)
    objects = st.builds(
        lambda props, add, patterns: {
            "type": "object",
            "properties": props,
            **({} if add is None else {"additionalProperties": add}),
            **({"patternProperties": {"^x-": STR}} if patterns else {}),
        },
        properties,
        additional,
        st.booleans(),
    )
    arrays = st.builds(lambda items: {"type": "array", "items": items}, children)
    composed = st.builds(lambda a, b: {"allOf": [a, b]}, children, children)
    recursive = st.just({"$ref": "#/components/schemas/R"})
    return st.builds(with_scopes, st.one_of(objects, arrays, composed, recursive), st.booleans())


_schemas = st.recursive(_leaf_schemas, _schema_children, max_leaves=8)
_texts = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        [
            VISA,
            "4111 1111 1111 1111",
            "80200110203345",
            "22289-20240509-004",
            "x 378282246310005",
            "a\\b",
            "\u00e9",
        ]
    ),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([4111111111111111, 80200110203345, 4.111111111111111e15, 1e16, 2.5]),
    st.floats(allow_nan=False, allow_infinity=False),
    _texts,
)
_documents = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from([*NAMES, "d", VISA]), children, max_size=4),
    ),
    max_leaves=20,
)
_serialisations = st.sampled_from(
    [
        {"separators": (",", ":")},
        {"ensure_ascii": False},
        {"indent": 2},
        {"indent": 20, "ensure_ascii": False},
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schema=_schemas,
    recursive=_schemas,
    document=_documents,
    dump=_serialisations,
    scopes=st.sampled_from([NO_SCOPES, frozenset({"s"})]),
    reveal=st.booleans(),
)
def test_fast_and_slow_paths_agree(schema, recursive, document, dump, scopes, reveal):
    shape = shape_of(schema, {"R": obj({"a": STR, "r": recursive})})
    body = json.dumps(document, **dump).encode()
    status, _ = assert_same(body, shape, scopes, reveal)
    assert status == "ok"
    # the document as the walk leaves it is the one the fast path is for: it agrees there too
    stripped, _ = minimise(json.loads(body), shape, scopes=scopes, reveal_pan=reveal)
    assert_same(json.dumps(stripped, **dump).encode(), shape, scopes, reveal)


# -- through the guard: a conforming body is sent as the bytes received ------------------------------

ISSUER = TestIssuer("https://as.bank.example", alg="ES256")
SPEC = """
openapi: 3.0.3
info: {title: fixture, version: "1"}
servers: [{url: /v1}]
security: [{oauth: [accounts]}]
paths:
  /accounts/{AccountId}:
    get:
      parameters:
        - {name: AccountId, in: path, required: true, schema: {type: string}}
      responses:
        "200":
          description: the account
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Account"}
components:
  securitySchemes:
    oauth:
      type: oauth2
      flows:
        clientCredentials:
          tokenUrl: "https://as.bank.example/token"
          scopes: {accounts: a}
  schemas:
    Account:
      type: object
      additionalProperties: false
      required: [Id]
      properties:
        Id: {type: string}
        Identification: {type: string}
        Card: {type: string}
"""


@pytest.fixture
def guard(tmp_path: Path) -> Guard:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    policy = Policy.from_dict(
        {
            "tokens": {
                "issuers": [
                    {
                        "issuer": ISSUER.issuer,
                        "audiences": ["https://api.bank.example"],
                        "algorithms": ["ES256"],
                        "jwks": ISSUER.jwks(),
                    }
                ]
            },
            "openapi": {"spec": str(spec)},
            "audit": {"sink": EventCollector()},
        }
    )
    return Guard(policy)


def _finish(guard: Guard, body: bytes) -> Any:
    headers = [("authorization", f"Bearer {ISSUER.mint(scope='accounts')}")]
    decision = guard.decide(make_facts("GET", "/v1/accounts/22289", headers=headers))
    assert decision.allowed
    plan = guard.response_plan(decision, 200, [("content-type", "application/json")])
    assert plan is not None
    return plan.finish(body)


def test_finish_sends_a_conforming_body_as_received(guard):
    body = b'{"Id": "22289", "Identification": "80200110203345"}'
    outcome = _finish(guard, body)
    assert outcome.status == 200
    assert outcome.body is body


def test_finish_still_minimises_masks_and_refuses(guard):
    masked = _finish(guard, b'{"Id": "1", "Card": "4111111111111111", "Leak": 1}')
    assert json.loads(masked.body) == {"Id": "1", "Card": "411111******1111"}
    assert _finish(guard, b'{"Card": "x"}').status == 502  # Id missing
    assert _finish(guard, b'{"Id": "1",').status == 502  # not JSON
    assert _finish(guard, b"[" * 300 + b"]" * 300).status == 502  # too deep


# -- bodies at the edges of JSON parse as json.loads parses them ------------------------------

ANY_NUMBERS = {"type": "object", "additionalProperties": True}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"n": NaN}', "json accepts NaN"),
        (b'{"n": 123456789012345678901234567890}', "beyond 64-bit integers"),
        (b'{"s": "\\ud800"}', "a lone surrogate"),
        (b'\xef\xbb\xbf{"a": 1}', "a UTF-8 byte order mark"),
        (b'{"a": 1, "a": 2}', "the last duplicate wins in both"),
    ],
)
@pytest.mark.parametrize("reveal", [False, True])
def test_edge_bodies_parse_as_json_loads_does(body: bytes, why: str, reveal: bool) -> None:
    shape = shape_of(ANY_NUMBERS)
    prepare(shape)
    try:
        expected: Any = minimise(json.loads(body), shape, scopes=NO_SCOPES, reveal_pan=reveal)
    except ValueError as exc:
        with pytest.raises(type(exc)):
            minimise_body(body, shape, scopes=NO_SCOPES, reveal_pan=reveal)
        return
    got = minimise_body(body, shape, scopes=NO_SCOPES, reveal_pan=reveal)
    assert json.dumps(got[0]) == json.dumps(expected[0]), why
    assert got[1] == expected[1], why


@pytest.mark.parametrize("reveal", [False, True])
def test_numbers_orjson_would_change_are_parsed_exactly(reveal: bool) -> None:
    """Integers beyond 64 bits and exponent-written floats of card-number size: the first parse
    cannot be trusted with them, so the standard library parses the body again."""
    shape = shape_of(ANY_NUMBERS)
    prepare(shape)
    big = 2**64 + 1  # a float would be 2**64 exactly
    document, _ = minimise_body(
        f'{{"n": {big}, "m": -{big}}}'.encode(), shape, scopes=NO_SCOPES, reveal_pan=reveal
    )
    assert document == {"n": big, "m": -big}
    assert type(document["n"]) is int
    document, _ = minimise_body(b'{"n": 5.5e15}', shape, scopes=NO_SCOPES, reveal_pan=reveal)
    assert document == {"n": 5.5e15}


def test_large_numbers_that_are_not_card_numbers_keep_the_fast_path(monkeypatch) -> None:
    """Millisecond timestamps (13 digits) fail the first closed check, pass the exact one: no walk."""
    shape = shape_of(ANY_NUMBERS)
    prepare(shape)
    walks = WalkCounter(monkeypatch)
    body = b'{"bookedAt": 1763790000000, "amount": -1763790000000, "small": 12}'
    document, report = minimise_body(body, shape, scopes=NO_SCOPES, reveal_pan=False)
    assert document == json.loads(body)
    assert not report.changed
    assert walks.calls == 0


def test_a_card_sized_number_written_with_an_exponent_is_still_masked() -> None:
    shape = shape_of(ANY_NUMBERS)
    prepare(shape)
    document, report = minimise_body(
        b'{"n": 4.111111111111111e15}', shape, scopes=NO_SCOPES, reveal_pan=False
    )
    assert document == {"n": "411111******1111"}
    assert report.masked == 1


@pytest.mark.parametrize(
    "document",
    [
        {"a": "caf\u00e9 \u2028", "n": [1.5, 1e16, 2**63 - 1, -0.0, None, True]},
        {"big": 2**64 + 1},  # beyond what orjson writes
        {"s": "\ud800"},  # a lone surrogate json.loads accepts
        {"n": float("nan"), "i": float("inf")},  # json's NaN/Infinity, which orjson writes as null
        {"big": float("inf"), "s": "no NaN in the text"},  # 1e400 as parsed: no NaN/Infinity written
    ],
)
def test_a_changed_body_is_written_back_with_the_same_values(document: dict[str, Any]) -> None:
    from bankguard.responses import _serialise

    written = _serialise(document)
    assert json.dumps(json.loads(written)) == json.dumps(document)
