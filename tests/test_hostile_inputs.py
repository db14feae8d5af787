"""Hostile input properties: whatever a client sends, bankguard answers with the app's 200
or a 4xx problem document, never a 5xx and never an exception.

The same requests go to the decision core (:class:`Guard`), the ASGI adapter and the WSGI
adapter. Each generated request starts from an ordinary one and makes a few of its parts
hostile: arbitrary header names and values (latin-1, including CR, LF, NUL and very long
values), paths, raw paths, query strings, methods, bodies and Content-Length values. Keeping
the other parts ordinary lets a hostile part reach the later checks and the application.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bankguard import (
    BankGuardMiddleware,
    BankGuardWSGI,
    EventCollector,
    Guard,
    Headers,
    Policy,
    RequestFacts,
)

POLICY = Policy.from_dict(
    {
        "request": {
            "max_body_bytes": 1024,
            # A field cap above 4300 bytes lets numerals longer than int() converts by
            # default reach the adapters' Content-Length parsing.
            "max_header_bytes": 12000,
            "max_header_field_bytes": 6000,
            "max_target_bytes": 256,
        },
        "routes": {
            "operations": [
                {"method": "GET", "path": "/accounts", "public": True},
                {"method": "GET", "path": "/accounts/{AccountId}", "public": True},
                {"method": "GET", "path": "/accounts/{AccountId}/balances", "public": True},
                {"method": "POST", "path": "/payments", "public": True},
            ]
        },
    }
)
GUARD = Guard(POLICY, sink=EventCollector())
PEER = "198.51.100.4"
FIXED_IID = "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
PROBLEM = "application/problem+json"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UNSAFE = re.compile(r"[\r\n\x00]")

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies --------------------------------------------------------------------------

latin1 = st.characters(min_codepoint=0, max_codepoint=255)
short_text = st.text(latin1, max_size=24)
#: Up to 12 KiB: sometimes over the per-field (6000 bytes) and total (12000 bytes) header caps.
long_text = st.builds(lambda s, n: s * n, st.text(latin1, min_size=1, max_size=4), st.integers(1, 3000))
#: More digits than Python's int() converts by default (4300).
huge_numeral = st.integers(4000, 5000).map(lambda n: "9" * n)

hostile_value = st.one_of(
    st.sampled_from(
        [
            "Bearer abc",
            "bearer abc",
            "Bearer a b",
            "DPoP abc==",
            "Bearer abc\r\nX-Injected: 1",
            FIXED_IID,
            "abc\r\nSet-Cookie: x=1",
            "application/x-www-form-urlencoded",
            "chunked",
            "0",
            "-1",
            "10, 12",
        ]
    ),
    short_text,
    long_text,
    huge_numeral,
)
hostile_name = st.one_of(
    st.sampled_from(
        [
            "authorization",
            "proxy-authorization",
            "content-type",
            "content-length",
            "transfer-encoding",
            "x-fapi-interaction-id",
            "x-http-method-override",
            "x-forwarded-for",
            "dpop",
        ]
    ),
    short_text,
)
hostile_headers = st.lists(st.tuples(hostile_name, hostile_value), min_size=1, max_size=4)
ordinary_headers = st.lists(
    st.sampled_from(
        [
            ("accept", "application/json"),
            ("user-agent", "tpp-client/1.0"),
            ("authorization", "Bearer eyJhbGciOiJQUzI1NiJ9.e30.c2ln"),
            ("x-fapi-interaction-id", FIXED_IID),
            ("content-type", "application/json"),
        ]
    ),
    max_size=3,
    unique=True,
)

ordinary_path = st.sampled_from(["/accounts", "/accounts/acc-001", "/accounts/acc-001/balances", "/payments"])
segment = st.one_of(
    st.sampled_from(
        [
            "accounts",
            "acc-001",
            "balances",
            "payments",
            ".",
            "..",
            "%2F",
            "%2e%2e",
            "%00",
            "\\",
            "",
            "%5C",
            "%ZZ",
        ]
    ),
    short_text,
)
hostile_path = st.one_of(
    st.lists(segment, min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts)),
    short_text,
    long_text,
    st.text(max_size=40),  # any code point: ASGI paths are decoded text
)
ordinary_query = st.sampled_from(["", "page=2", "fromDate=2025-01-01&toDate=2025-02-01"])
query_key = st.one_of(
    st.sampled_from(["access_token", "_method", "%5Fmethod", "page", "", "a%", "a+b"]), short_text
)
hostile_query = st.one_of(
    st.lists(st.tuples(query_key, short_text), min_size=1, max_size=4).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
    ),
    short_text,
    long_text,
)
ordinary_method = st.sampled_from(["GET", "POST", "HEAD"])
hostile_method = st.one_of(st.sampled_from(["PUT", "DELETE", "OPTIONS", "TRACE", "get", ""]), short_text)
ordinary_body = st.one_of(st.just(b""), st.just(b'{"Amount": "10.00"}'))
hostile_body = st.one_of(st.binary(min_size=1, max_size=64), st.binary(min_size=900, max_size=2500))
hostile_length = st.one_of(st.integers(0, 10**7).map(str), short_text, huge_numeral)

ASPECTS = ("method", "path", "raw", "query", "headers", "body", "length")


@dataclass(frozen=True)
class Wire:
    """One request as it could arrive from the network."""

    method: str
    path: str
    #: ASGI raw_path / WSGI RAW_URI as sent; None: derived from ``path`` like a server would.
    raw: bytes | None
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    #: Content-Length as sent; None: none sent.
    length: str | None
    #: Where the body is cut into ASGI messages.
    cuts: list[int]
    #: WSGI: the server marks the input terminated (chunked request).
    terminated: bool
    http_version: str

    @property
    def head(self) -> bool:
        return self.method == "HEAD"


@st.composite
def wires(draw: st.DrawFn) -> Wire:
    hostile = draw(st.sets(st.sampled_from(ASPECTS), max_size=3))

    def pick(aspect: str, ordinary: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> Any:
        return draw(wild if aspect in hostile else ordinary)

    body = pick("body", ordinary_body, hostile_body)
    return Wire(
        method=pick("method", ordinary_method, hostile_method),
        path=pick("path", ordinary_path, hostile_path),
        raw=pick("raw", st.none(), st.binary(max_size=300)),
        query=pick("query", ordinary_query, hostile_query),
        headers=pick("headers", ordinary_headers, hostile_headers),
        body=body,
        length=pick(
            "length", st.sampled_from([str(len(body))] if body else [None]), hostile_length | st.none()
        ),
        cuts=draw(st.lists(st.integers(0, 2500), max_size=4)),
        terminated=draw(st.booleans()),
        http_version=draw(st.sampled_from(["1.1", "2"])),
    )


#: Known edge cases, always tried in addition to the generated ones.
EXAMPLES = [
    # RFC 9110 §8.6: a numeral longer than int() converts by default must be a client error.
    Wire(
        method="POST",
        path="/payments",
        raw=None,
        query="",
        headers=[("content-type", "application/json")],
        body=b"{}",
        length="9" * 4301,
        cuts=[],
        terminated=False,
        http_version="1.1",
    ),
    # Header injection attempts in the credentials and the interaction id.
    Wire(
        method="GET",
        path="/accounts",
        raw=None,
        query="",
        headers=[("authorization", "Bearer abc\r\nX-Injected: 1"), ("x-fapi-interaction-id", "a\r\nb: c")],
        body=b"",
        length=None,
        cuts=[],
        terminated=False,
        http_version="1.1",
    ),
]


def with_examples(test: Any) -> Any:
    for wire in EXAMPLES:
        test = example(wire=wire)(test)
    return test


# -- the property ---------------------------------------------------------------------------


def assert_app_or_client_error(
    status: int, headers: list[tuple[str, str]], payload: bytes, *, app_called: bool, head: bool
) -> None:
    """The app's 200, or a 4xx problem+json whose body status is the HTTP status.

    Either way exactly one interaction id (a UUID) and no CR / LF / NUL in any header."""
    for name, value in headers:
        assert not UNSAFE.search(name), name
        assert not UNSAFE.search(value), (name, value)
    iids = [v for k, v in headers if k.lower() == "x-fapi-interaction-id"]
    assert len(iids) == 1
    assert UUID.match(iids[0])
    if app_called:
        assert status == 200
        assert payload == b"app"
        return
    assert 400 <= status < 500, (status, payload)
    assert [v for k, v in headers if k.lower() == "content-type"] == [PROBLEM]
    if head:
        assert payload == b""
        return
    document = json.loads(payload)
    assert document["status"] == status
    assert document["interaction_id"] == iids[0]


# -- Guard -------------------------------------------------------------------------------------


@SETTINGS
@given(
    wire=wires(),
    too_large=st.sampled_from([False, False, False, True]),
    framing=st.sampled_from([None, None, None, "invalid_content_length", "conflicting_content_length"]),
)
def test_guard_answers_allow_or_a_client_error(wire: Wire, too_large: bool, framing: str | None) -> None:
    facts = RequestFacts(
        method=wire.method,
        path=wire.path,
        raw_path=wire.raw,
        query=wire.query,
        headers=Headers(wire.headers),
        peer=PEER,
        body=wire.body or None,
        body_too_large=too_large,
        framing_error=framing,
    )
    decision = GUARD.decide(facts)
    if decision.allowed:
        merged = GUARD.merge_response_headers([("content-type", "text/plain")], decision)
        assert_app_or_client_error(200, merged, b"app", app_called=True, head=False)
        return
    problem = GUARD.problem(decision, head=wire.head)
    assert_app_or_client_error(
        problem.status, list(problem.headers), problem.body, app_called=False, head=wire.head
    )


# -- ASGI ----------------------------------------------------------------------------------------


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    scope["test.called"] = True
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"app"})


ASGI = BankGuardMiddleware(_asgi_app, guard=GUARD)


async def _run_asgi(scope: dict[str, Any], chunks: list[bytes]) -> tuple[int, list[tuple[str, str]], bytes]:
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await ASGI(scope, receive, send)
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, payload


@SETTINGS
@with_examples
@given(wire=wires())
def test_asgi_adapter_answers_app_or_client_error(wire: Wire) -> None:
    headers = list(wire.headers)
    if wire.length is not None:
        headers.append(("content-length", wire.length))
    elif wire.body and wire.http_version == "1.1":
        headers.append(("transfer-encoding", "chunked"))
    bounds = sorted({0, len(wire.body), *(c for c in wire.cuts if c < len(wire.body))})
    chunks = [wire.body[a:b] for a, b in itertools.pairwise(bounds)] or [b""]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": wire.http_version,
        "method": wire.method,
        "scheme": "https",
        "path": wire.path,
        "raw_path": wire.raw if wire.raw is not None else quote(wire.path, safe="/%\\").encode("ascii"),
        "query_string": wire.query.encode("latin-1"),
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": (PEER, 50000),
    }
    status, out_headers, payload = asyncio.run(_run_asgi(scope, chunks))
    assert_app_or_client_error(
        status, out_headers, payload, app_called=bool(scope.get("test.called")), head=wire.head
    )


# -- WSGI ----------------------------------------------------------------------------------------


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    environ["test.called"] = True
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        environ["wsgi.input"].read(int(length))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app"]


WSGI = BankGuardWSGI(_wsgi_app, guard=GUARD)


@SETTINGS
@with_examples
@given(wire=wires())
def test_wsgi_adapter_answers_app_or_client_error(wire: Wire) -> None:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": wire.method,
        "SCRIPT_NAME": "",
        # PEP 3333: environ strings are latin-1; a server decodes the path bytes that way.
        "PATH_INFO": wire.path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": wire.query,
        "SERVER_NAME": "bank.example",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": PEER,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(wire.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if wire.raw is not None:
        environ["RAW_URI"] = wire.raw.decode("latin-1")
    for name, value in wire.headers:
        key = name.upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        environ[key] = environ[key] + ", " + value if key in environ else value
    if wire.length is not None:
        environ["CONTENT_LENGTH"] = wire.length
    if wire.terminated:
        environ["wsgi.input_terminated"] = True
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"] = int(status.split(" ", 1)[0])
        seen["headers"] = list(response_headers)
        return lambda data: None

    payload = b"".join(WSGI(environ, start_response))
    assert_app_or_client_error(
        seen["status"], seen["headers"], payload, app_called=bool(environ.get("test.called")), head=wire.head
    )
