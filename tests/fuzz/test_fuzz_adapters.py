"""Fuzzing the adapters' header decoding: raw ASGI scopes, Starlette's TestClient, Flask's test
client and hand-made WSGI environs, with applications protected by :func:`bankguard.protect`.

Properties (docs/errors.md, "Headers on every problem response", "Fail closed"; STANDARDS
AUTH-06, DPOP-01, FAPI-10; RFC 9110 §5.3):

* whatever bytes the header lines hold (NUL, CR, LF, bytes above 0x7f, UTF-8 of characters
  outside latin-1, mixed-case names, repeated lines), the response is the application's 200 or a
  documented 4xx problem with ``application/problem+json``, ``type``/``title``/``status``,
  ``WWW-Authenticate`` on 401s and no CR/LF/NUL in any header; never 5xx;
* each request writes exactly one audit event, whose status is the response's, and neither the
  token nor the proof appears in it;
* the adapter decides what :meth:`Guard.decide` decides for the same request read as the adapters
  document it (ASGI: every byte as latin-1, one entry per field line; WSGI: lines joined with ", "),
  and the case of header names never matters.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from typing import Any

from flask import Flask, jsonify
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bankguard import EventCollector, protect
from bankguard.request import Headers, RequestFacts, parse_content_length

from .conftest import (
    CHALLENGE,
    CLIENT_ERRORS,
    ISSUER,
    KEY,
    ORIGIN,
    PROBLEM,
    UNSAFE,
    Verdict,
    documented_statuses,
    fuzz,
    new_guard,
    token_policy,
)

PEER = "203.0.113.9"
TOKEN = ISSUER.mint(lifetime=3600)


def _policy(events: EventCollector) -> Any:
    return token_policy(audit={"sink": events})


async def _starlette_endpoint(request: StarletteRequest) -> JSONResponse:
    return JSONResponse({"ok": True})


STARLETTE_EVENTS = EventCollector()
STARLETTE = protect(
    Starlette(
        routes=[
            Route("/accounts", _starlette_endpoint),
            Route("/accounts/{AccountId}", _starlette_endpoint),
            Route("/health", _starlette_endpoint),
            Route("/payments", _starlette_endpoint, methods=["POST"]),
        ]
    ),
    _policy(STARLETTE_EVENTS),
)
CLIENT = TestClient(STARLETTE, base_url="https://api.bank.example")

FLASK_EVENTS = EventCollector()
_flask = Flask("fuzz")


@_flask.get("/accounts")
@_flask.get("/accounts/<account_id>")
@_flask.get("/health")
def _flask_view(account_id: str | None = None) -> Any:
    return jsonify(ok=True)


FLASK = protect(_flask, _policy(FLASK_EVENTS))
FLASK_CLIENT = FLASK.test_client()

#: The reference: the same policy, decided directly.
REFERENCE, REFERENCE_EVENTS = new_guard(token_policy())


def check_response(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    events: EventCollector,
    before: int,
    secrets: list[str],
) -> Verdict:
    """The suite's property for one response that went through an adapter."""
    for name, value in headers:
        assert not UNSAFE.search(name), (name, value)
        assert not UNSAFE.search(value), (name, value)
    new = events.events[before:]
    assert len(new) == 1, f"expected one audit event, got {len(new)}"
    event = new[0]
    serialised = event.to_json()
    for secret in secrets:
        assert len(secret) < 16 or secret not in serialised
    iids = [v for k, v in headers if k.lower() == "x-fapi-interaction-id"]
    assert iids == [event.interaction_id]
    if status == 200:
        assert event.outcome == "allow"
        assert json.loads(body) == {"ok": True}
        return Verdict(True, None, None)
    assert status in CLIENT_ERRORS, (status, body[:200])
    assert event.outcome == "deny"
    assert event.status == status
    assert event.reason is not None
    assert status in documented_statuses(event.reason), event.reason
    assert [v for k, v in headers if k.lower() == "content-type"] == [PROBLEM]
    document = json.loads(body)
    assert document["status"] == status
    assert document["title"]
    assert document["type"]
    assert document["interaction_id"] == event.interaction_id
    challenges = [v for k, v in headers if k.lower() == "www-authenticate"]
    assert challenges or status != 401
    assert all(CHALLENGE.match(c) for c in challenges), challenges
    for secret in secrets:
        assert len(secret) < 16 or secret not in body.decode("latin-1")
    return Verdict(False, status, event.reason)


def reference(method: str, path: str, headers: list[tuple[str, str]]) -> Verdict:
    """:meth:`Guard.decide` on the request as the adapters read it (an empty body; the framing
    that its Content-Length field lines imply, RFC 9110 §8.6)."""
    before = len(REFERENCE_EVENTS.events)
    fields = Headers(headers)
    length, framing = parse_content_length(fields.get_all("content-length"))
    facts = RequestFacts(
        method=method,
        scheme="https",
        path=path,
        raw_path=path.encode(),
        headers=fields,
        peer=PEER,
        framing_error=framing,
        body_too_large=length is not None and length > REFERENCE.policy.request.max_body_bytes,
    )
    decision = REFERENCE.decide(facts)
    event = REFERENCE_EVENTS.events[before]
    return Verdict(decision.allowed, event.status, event.reason)


# -- strategies ------------------------------------------------------------------------------------

raw_bytes = st.one_of(
    st.binary(max_size=24),
    st.text(max_size=12).map(lambda t: t.encode("utf-8")),  # characters outside latin-1, as UTF-8
    st.sampled_from([b"", b"\x00", b"a\r\nb: c", b"\n", b"\xff\xfe", "é".encode(), b" Bearer x ", b"\x7f"]),
)
names = st.one_of(
    st.sampled_from(
        [
            "authorization",
            "Authorization",
            "AUTHORIZATION",
            "dpop",
            "DPoP",
            "x-fapi-interaction-id",
            "X-FAPI-Interaction-Id",
            "content-length",
            "x-http-method-override",
            "x-custom",
            "accept",
        ]
    ),
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_", min_size=1, max_size=12),
)


@st.composite
def credentials(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    kind = draw(st.sampled_from(["bearer", "bearer", "dpop", "none", "broken"]))
    if kind == "bearer":
        return [(b"authorization", b"Bearer " + TOKEN.encode())]
    if kind == "dpop":
        token = ISSUER.mint(dpop_key=KEY)
        proof = KEY.proof("GET", ORIGIN + "/accounts", access_token=token)
        return [(b"authorization", b"DPoP " + token.encode()), (b"dpop", proof.encode())]
    if kind == "broken":
        return [(b"authorization", b"Bearer " + TOKEN[:-3].encode() + draw(raw_bytes))]
    return []


header_lines = st.lists(st.tuples(names.map(str.encode), raw_bytes), max_size=5)


# -- raw ASGI scopes -----------------------------------------------------------------------------------


async def _asgi(app: Any, scope: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
    return (
        start["status"],
        headers,
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
    )


def asgi(
    lines: list[tuple[bytes, bytes]], path: str = "/accounts"
) -> tuple[int, list[tuple[str, str]], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": lines,
        "client": (PEER, 50000),
        "server": ("api.bank.example", 443),
    }
    return asyncio.run(_asgi(STARLETTE, scope))


@fuzz(200)
@given(
    creds=credentials(),
    noise=header_lines,
    path=st.sampled_from(["/accounts", "/accounts/a-1", "/health", "/x"]),
)
def test_asgi_raw_header_bytes(
    creds: list[tuple[bytes, bytes]], noise: list[tuple[bytes, bytes]], path: str
) -> None:
    lines = creds + noise
    secrets = [v.decode("latin-1") for _, v in creds]
    before = len(STARLETTE_EVENTS.events)
    status, headers, body = asgi(lines, path)
    verdict = check_response(status, headers, body, STARLETTE_EVENTS, before, secrets)
    decoded = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in lines]
    if not any(k.lower() == b"dpop" for k, _ in lines):  # a proof is single-use: no second decision
        assert reference("GET", path, decoded) == verdict


@fuzz(100)
@given(creds=credentials(), noise=header_lines, masks=st.lists(st.integers(0, 2**16), min_size=8, max_size=8))
def test_asgi_header_name_case_does_not_matter(
    creds: list[tuple[bytes, bytes]], noise: list[tuple[bytes, bytes]], masks: list[int]
) -> None:
    if any(k.lower() == b"dpop" for k, _ in creds):
        creds = [(b"authorization", b"Bearer " + TOKEN.encode())]
    lines = creds + noise
    cased = [
        (bytes(c - 32 if m >> i & 1 and 97 <= c <= 122 else c for i, c in enumerate(k)), v)
        for (k, v), m in zip(lines, masks * 2, strict=False)
    ]
    results = []
    for variant in (lines, cased):
        before = len(STARLETTE_EVENTS.events)
        status, headers, body = asgi(variant)
        results.append(check_response(status, headers, body, STARLETTE_EVENTS, before, [TOKEN]))
    assert results[0] == results[1]


# -- Starlette TestClient ---------------------------------------------------------------------------

printable = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30
)


@fuzz(80)
@given(
    lines=st.lists(st.tuples(names, printable), max_size=4),
    bearer=st.booleans(),
    path=st.sampled_from(["/accounts", "/health", "/accounts/%41", "/x"]),
)
def test_starlette_testclient(lines: list[tuple[str, str]], bearer: bool, path: str) -> None:
    headers = ([("authorization", "Bearer " + TOKEN)] if bearer else []) + lines
    before = len(STARLETTE_EVENTS.events)
    response = CLIENT.get(path, headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers])
    check_response(
        response.status_code,
        list(response.headers.multi_items()),
        response.content,
        STARLETTE_EVENTS,
        before,
        [TOKEN],
    )


# -- Flask: test client and raw environs -------------------------------------------------------------------


@fuzz(80)
@given(
    lines=st.lists(st.tuples(names, printable), max_size=4),
    bearer=st.booleans(),
    path=st.sampled_from(["/accounts", "/health", "/accounts/a-1", "/x"]),
)
def test_flask_test_client(lines: list[tuple[str, str]], bearer: bool, path: str) -> None:
    headers = ([("Authorization", "Bearer " + TOKEN)] if bearer else []) + lines
    before = len(FLASK_EVENTS.events)
    response = FLASK_CLIENT.get(path, headers=headers, base_url="https://api.bank.example")
    verdict = check_response(
        response.status_code, list(response.headers.items()), response.data, FLASK_EVENTS, before, [TOKEN]
    )
    # Werkzeug joins repeated lines with ", " (as WSGI servers do) and files "_" under "-".
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.lower().replace("_", "-"), []).append(value)
    joined = [(k, ", ".join(v)) for k, v in merged.items() if k not in ("content-type", "content-length")]
    if not any(k in ("content-type", "content-length") for k in merged):
        assert reference("GET", path, joined) == verdict


wsgi_text = st.one_of(
    st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=24),  # PEP 3333: latin-1 strings
    st.text(max_size=8),  # a server that breaks PEP 3333: any code point
)


@fuzz(100)
@given(
    lines=st.lists(
        st.tuples(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=10), wsgi_text), max_size=5
    ),
    bearer=st.booleans(),
    path_info=st.sampled_from(["/accounts", "/health", "/acc\xc3\xa9", "/accounts/\x00"]),
    raw_uri=st.none()
    | st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=24).map(lambda t: "/" + t),
)
def test_wsgi_raw_environ(
    lines: list[tuple[str, str]], bearer: bool, path_info: str, raw_uri: str | None
) -> None:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path_info,
        "QUERY_STRING": "",
        "SERVER_NAME": "api.bank.example",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": PEER,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if raw_uri is not None:
        environ["RAW_URI"] = raw_uri  # PEP 3333 servers give it as latin-1 text of the raw bytes
    if bearer:
        environ["HTTP_AUTHORIZATION"] = "Bearer " + TOKEN
    for name, value in lines:
        key = "HTTP_" + name
        environ[key] = environ[key] + ", " + value if key in environ else value
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = int(status.split(" ", 1)[0]), headers
        return lambda data: None

    before = len(FLASK_EVENTS.events)
    body = b"".join(FLASK(environ, start_response))
    check_response(seen["status"], seen["headers"], body, FLASK_EVENTS, before, [TOKEN])
