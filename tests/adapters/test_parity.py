"""One scenario table, two adapters: Flask behind BankGuardWSGI and FastAPI behind
BankGuardMiddleware implement the same banking API. Every scenario must give the same
status, the same bankguard headers, the same body and the same audit verdict.

Requests are built by hand so both adapters see what a real server would hand them:
ASGI keeps repeated header lines apart, WSGI servers merge them into ``"a, b"``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from bankguard import AuditEvent, BankGuardMiddleware, BankGuardWSGI

from .conftest import (
    FIXED_IID,
    MAX_BODY,
    MAX_FIELD,
    MAX_TARGET,
    PROBLEM,
    UUID_RE,
    Response,
    asgi_request,
    build_fastapi_bank,
    build_flask_bank,
    make_guard,
    wsgi_request,
)

#: Headers bankguard sets or that describe its own responses; compared across adapters.
GUARD_HEADERS = (
    "content-type",
    "cache-control",
    "x-content-type-options",
    "www-authenticate",
    "allow",
    "retry-after",
)
JSON = ("content-type", "application/json")
BARE_CHALLENGE = 'Bearer realm="api"'
INVALID_REQUEST_CHALLENGE = (
    'Bearer realm="api", error="invalid_request", '
    'error_description="The request carries malformed or ambiguous credentials."'
)


@dataclass(frozen=True)
class Scenario:
    method: str
    target: str
    status: int
    #: ``app``: the application answered; ``guard``: bankguard refused before the app ran.
    origin: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: Send the body without a length (ASGI: several messages; WSGI: terminated input).
    chunked: bool = False
    #: Send FIXED_IID as x-fapi-interaction-id and expect it echoed; else expect a fresh UUID.
    fixed_iid: bool = True
    #: Exact values expected for some response headers (all values, in order).
    expect: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Expected audit verdict: (control, reason); None for an allow.
    verdict: tuple[str, str] | None = None


SCENARIOS = [
    pytest.param(
        Scenario("GET", "/accounts", 200, "app"),
        id="get-accounts",
    ),
    pytest.param(
        Scenario("GET", "/accounts/acc-001", 200, "app"),
        id="get-account-path-param",
    ),
    pytest.param(
        Scenario("GET", "/accounts/acc%20003", 200, "app"),
        id="get-account-encoded-space-in-param",
    ),
    pytest.param(
        Scenario("GET", "/accounts/caf%C3%A9-%E2%82%AC", 200, "app"),
        id="get-account-utf8-path-param",
    ),
    pytest.param(
        Scenario("GET", "/accounts/acc-002/balances?fromDate=2025-01-01", 200, "app"),
        id="get-balances-with-query",
    ),
    pytest.param(
        Scenario("POST", "/payments", 201, "app", headers=(JSON,), body=b'{"Amount": "10.00", "Ccy": "GBP"}'),
        id="post-payment-json",
    ),
    pytest.param(
        Scenario(
            "POST",
            "/payments",
            201,
            "app",
            headers=(JSON,),
            body=b'{"Amount": "' + b"9" * 600 + b'"}',
            chunked=True,
        ),
        id="post-payment-json-chunked",
    ),
    pytest.param(
        Scenario("GET", "/accounts", 200, "app", fixed_iid=False),
        id="interaction-id-generated",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/accounts",
            200,
            "app",
            headers=(("x-fapi-interaction-id", "abc\r\nSet-Cookie: a=b"),),
            fixed_iid=False,
        ),
        id="invalid-interaction-id-replaced",
    ),
    pytest.param(
        Scenario("HEAD", "/accounts/acc-001", 200, "app"),
        id="head-where-get-declared",
    ),
    pytest.param(
        Scenario("GET", "/accounts", 200, "app", headers=(("authorization", "bearer tok"),)),
        id="lowercase-bearer-accepted",
    ),
    pytest.param(
        Scenario("GET", "/accounts", 200, "app", headers=(("proxy-authorization", "DPoP a b"),)),
        id="proxy-authorization-ignored",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/open-banking/v9.9/aisp/accounts",
            404,
            "guard",
            verdict=("routes", "routes.undeclared_operation"),
        ),
        id="undeclared-path-404",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/accounts/",
            404,
            "guard",
            fixed_iid=False,
            verdict=("routes", "routes.undeclared_operation"),
        ),
        id="trailing-slash-404-generated-id",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/nowhere",
            404,
            "guard",
            headers=(("x-fapi-interaction-id", "not-a-uuid"),),
            fixed_iid=False,
            verdict=("routes", "routes.undeclared_operation"),
        ),
        id="invalid-interaction-id-replaced-on-denial",
    ),
    pytest.param(
        Scenario(
            "DELETE",
            "/accounts",
            405,
            "guard",
            expect=(("allow", ("GET, HEAD",)),),
            verdict=("routes", "routes.method_not_allowed"),
        ),
        id="wrong-method-405",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/payments",
            405,
            "guard",
            expect=(("allow", ("POST",)),),
            verdict=("routes", "routes.method_not_allowed"),
        ),
        id="get-on-post-only-405",
    ),
    pytest.param(
        Scenario(
            "HEAD",
            "/statements",
            404,
            "guard",
            verdict=("routes", "routes.undeclared_operation"),
        ),
        id="head-undeclared-404",
    ),
    pytest.param(
        Scenario(
            "HEAD",
            "/payments",
            405,
            "guard",
            expect=(("allow", ("POST",)),),
            verdict=("routes", "routes.method_not_allowed"),
        ),
        id="head-on-post-only-405",
    ),
    pytest.param(
        Scenario(
            "POST",
            "/payments",
            413,
            "guard",
            headers=(JSON,),
            body=b"x" * (MAX_BODY + 1),
            verdict=("request", "request.body_too_large"),
        ),
        id="body-over-cap-413",
    ),
    pytest.param(
        Scenario(
            "POST",
            "/payments",
            413,
            "guard",
            headers=(JSON,),
            body=b"x" * (MAX_BODY * 3),
            chunked=True,
            verdict=("request", "request.body_too_large"),
        ),
        id="chunked-body-over-cap-413",
    ),
    pytest.param(
        Scenario(
            "POST",
            "/payments",
            400,
            "guard",
            headers=(JSON, ("content-length", "abc")),
            body=b"{}",
            verdict=("request", "request.invalid_content_length"),
        ),
        id="invalid-content-length-400",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/accounts",
            431,
            "guard",
            headers=(("x-big", "v" * MAX_FIELD),),
            verdict=("request", "request.header_field_too_large"),
        ),
        id="header-field-431",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/accounts",
            431,
            "guard",
            headers=tuple((f"x-pad-{i}", "v" * 200) for i in range(25)),
            verdict=("request", "request.headers_too_large"),
        ),
        id="header-total-431",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/accounts?filter=" + "f" * MAX_TARGET,
            414,
            "guard",
            verdict=("request", "request.target_too_long"),
        ),
        id="target-414",
    ),
    pytest.param(
        Scenario("GET", "/accounts/./acc-001", 400, "guard", verdict=("request", "request.dot_segment")),
        id="dot-segment-400",
    ),
    pytest.param(
        Scenario(
            "GET", "/accounts/%2e%2e/payments", 400, "guard", verdict=("request", "request.dot_segment")
        ),
        id="encoded-dot-dot-400",
    ),
    pytest.param(
        Scenario("GET", "/accounts/a%2Fb", 400, "guard", verdict=("request", "request.encoded_separator")),
        id="encoded-slash-400",
    ),
    pytest.param(
        Scenario(
            "GET", "/accounts\\acc-001", 400, "guard", verdict=("request", "request.path_control_character")
        ),
        id="backslash-400",
    ),
    pytest.param(
        Scenario(
            "POST",
            "/payments",
            400,
            "guard",
            headers=(JSON, ("X-HTTP-Method-Override", "DELETE")),
            body=b"{}",
            verdict=("request", "request.method_override_header"),
        ),
        id="method-override-header-400",
    ),
    pytest.param(
        Scenario(
            "POST",
            "/payments?_method=DELETE",
            400,
            "guard",
            headers=(JSON,),
            body=b"{}",
            verdict=("request", "request.method_override_param"),
        ),
        id="method-override-param-400",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/accounts?access_token=eyJ.eyJ.sig",
            401,
            "guard",
            expect=(("www-authenticate", (BARE_CHALLENGE,)),),
            verdict=("auth", "authorization.token_outside_header"),
        ),
        id="query-token-401",
    ),
    pytest.param(
        Scenario(
            "POST",
            "/payments",
            401,
            "guard",
            headers=(("content-type", "application/x-www-form-urlencoded"),),
            body=b"access_token=abc",
            expect=(("www-authenticate", (BARE_CHALLENGE,)),),
            verdict=("auth", "authorization.token_outside_header"),
        ),
        id="form-token-401",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/accounts?access_token=abc",
            400,
            "guard",
            headers=(("authorization", "Bearer abc"),),
            expect=(("www-authenticate", (INVALID_REQUEST_CHALLENGE,)),),
            verdict=("auth", "authorization.multiple_methods"),
        ),
        id="header-and-query-token-400",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/accounts",
            400,
            "guard",
            headers=(("authorization", "Bearer abc"), ("authorization", "Bearer def")),
            expect=(("www-authenticate", (INVALID_REQUEST_CHALLENGE,)),),
            verdict=("auth", "authorization.duplicate"),
        ),
        id="duplicate-authorization-400",
    ),
    pytest.param(
        Scenario(
            "GET",
            "/accounts",
            400,
            "guard",
            headers=(("authorization", "Bearer a b"),),
            expect=(("www-authenticate", (INVALID_REQUEST_CHALLENGE,)),),
            verdict=("auth", "authorization.malformed"),
        ),
        id="two-tokens-400",
    ),
]


def _run_asgi(s: Scenario, headers: list[tuple[str, str]]) -> tuple[Response, list[AuditEvent], list[str]]:
    calls: list[str] = []
    guard, events = make_guard()
    app = BankGuardMiddleware(build_fastapi_bank(calls), guard=guard)
    chunks = [s.body[i : i + 300] for i in range(0, len(s.body), 300)] if s.chunked else None
    response = asgi_request(app, s.method, s.target, headers=headers, body=s.body, chunks=chunks)
    return response, events.events, calls


def _run_wsgi(s: Scenario, headers: list[tuple[str, str]]) -> tuple[Response, list[AuditEvent], list[str]]:
    calls: list[str] = []
    guard, events = make_guard()
    flask_app = build_flask_bank(calls)
    flask_app.wsgi_app = BankGuardWSGI(flask_app.wsgi_app, guard=guard)  # type: ignore[method-assign]
    response = wsgi_request(flask_app, s.method, s.target, headers=headers, body=s.body, chunked=s.chunked)
    return response, events.events, calls


def _verdict(event: AuditEvent) -> tuple[Any, ...]:
    return (
        event.outcome,
        event.control,
        event.reason,
        event.status,
        event.operation,
        event.method,
        event.path,
        event.interaction_id_generated,
    )


def _normalised(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, "<interaction-id>" if k == "x-fapi-interaction-id" else v) for k, v in headers]


def _without_iid(body: bytes, iid: str) -> bytes:
    return body.replace(iid.encode("ascii"), b"<interaction-id>")


@pytest.mark.parametrize("s", SCENARIOS)
def test_parity(s: Scenario) -> None:
    headers = list(s.headers)
    if s.fixed_iid:
        headers.append(("x-fapi-interaction-id", FIXED_IID))
    a, a_events, a_calls = _run_asgi(s, headers)
    w, w_events, w_calls = _run_wsgi(s, headers)

    # status and who answered
    assert (a.status, w.status) == (s.status, s.status), (a.raw_body, w.raw_body)
    if s.origin == "app":
        assert len(a_calls) == len(w_calls) == 1
    else:
        assert a_calls == w_calls == []

    # bankguard's headers
    for name in GUARD_HEADERS:
        assert a.get_all(name) == w.get_all(name), name
    for name, values in s.expect:
        assert tuple(a.get_all(name)) == values, name
    a_iid, w_iid = a.get_all("x-fapi-interaction-id"), w.get_all("x-fapi-interaction-id")
    assert len(a_iid) == len(w_iid) == 1
    if s.fixed_iid:
        assert a_iid == w_iid == [FIXED_IID]
    else:
        sent = {v for k, v in s.headers if k == "x-fapi-interaction-id"}
        for iid in (a_iid[0], w_iid[0]):
            assert re.match(UUID_RE, iid)
            assert iid not in sent
    assert a.get("cache-control") == "no-store"
    assert a.get("x-content-type-options") == "nosniff"

    # bodies
    if s.origin == "guard":
        assert a.get("content-type") == PROBLEM
        assert _normalised(a.headers) == _normalised(w.headers)
        assert _without_iid(a.raw_body, a_iid[0]) == _without_iid(w.raw_body, w_iid[0])
        assert a.get("content-length") == w.get("content-length")
        if s.method == "HEAD":
            # No body; Content-Length still announces what GET would have sent (RFC 9110 §8.6).
            assert a.raw_body == w.raw_body == b""
        else:
            assert a.get("content-length") == str(len(a.raw_body))
            document = json.loads(a.raw_body)
            assert document["status"] == s.status
            assert document["interaction_id"] == a_iid[0]
    elif s.method == "HEAD":
        assert a.body == w.body == b""
    else:
        a_json, w_json = a.json(), w.json()
        assert a_json["interaction_id"] == a_iid[0]
        assert w_json["interaction_id"] == w_iid[0]
        a_json["interaction_id"] = w_json["interaction_id"] = "<interaction-id>"
        assert a_json == w_json

    # audit
    assert len(a_events) == len(w_events) == 1
    assert _verdict(a_events[0]) == _verdict(w_events[0])
    if s.origin == "app":
        assert a_events[0].outcome == "allow"
    else:
        assert a_events[0].outcome == "deny"
        assert a_events[0].status == s.status
    if s.verdict is not None:
        assert (a_events[0].control, a_events[0].reason) == s.verdict


def test_parity_table_is_large_enough() -> None:
    assert len(SCENARIOS) >= 20
    assert len({p.id for p in SCENARIOS}) == len(SCENARIOS)
