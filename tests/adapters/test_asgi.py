"""BankGuardMiddleware around raw ASGI apps and FastAPI, driven in-process."""

from __future__ import annotations

import re
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

import bankguard
from bankguard import (
    BankGuardMiddleware,
    EventCollector,
    Guard,
    NotProtectedError,
    Principal,
    RequestFacts,
    SecurityContext,
    get_context,
    get_principal,
    protect,
)
from bankguard.decision import CONTEXT_KEY
from bankguard.integrations import fastapi as bg_fastapi

from .conftest import (
    FIXED_IID,
    MAX_BODY,
    MAX_FIELD,
    MAX_TARGET,
    PROBLEM,
    UUID_RE,
    RecordingASGIApp,
    asgi_request,
    asgi_scope,
    asgi_send_scope,
    assert_problem,
    build_fastapi_bank,
    last_event,
    make_guard,
    make_policy,
)


@pytest.fixture
def app() -> RecordingASGIApp:
    return RecordingASGIApp()


@pytest.fixture
def mw(app: RecordingASGIApp, guard: Guard) -> BankGuardMiddleware:
    return BankGuardMiddleware(app, guard=guard)


# -- construction ----------------------------------------------------------------------


def test_middleware_needs_exactly_one_of_policy_or_guard(app: RecordingASGIApp, guard: Guard) -> None:
    with pytest.raises(TypeError):
        BankGuardMiddleware(app)
    with pytest.raises(TypeError):
        BankGuardMiddleware(app, make_policy(), guard=guard)
    built = BankGuardMiddleware(app, make_policy())
    assert asgi_request(built).status == 200


# -- body size (OWASP-10) ---------------------------------------------------------------


def test_OWASP_10_content_length_over_cap_refused_without_calling_the_app(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    body = b"x" * (MAX_BODY + 1)
    response = asgi_request(mw, "POST", "/payments", body=body)
    assert_problem(response, 413)
    assert app.calls == []
    assert response.received == 0, "a declared oversize body must be refused before it is read"
    event = last_event(events)
    assert (event.outcome, event.control, event.reason) == ("deny", "request", "request.body_too_large")


def test_OWASP_10_ten_megabytes_declared_is_refused_before_reading(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    response = asgi_request(
        mw,
        "POST",
        "/payments",
        headers=[("content-length", str(10 * 1024 * 1024))],
        chunks=[b"y" * 65536] * 3,
    )
    assert_problem(response, 413)
    assert response.received == 0
    assert app.calls == []


def test_OWASP_10_chunked_body_over_cap_is_refused_while_streaming(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    chunks = [b"a" * 400] * 10  # 4000 bytes; the cap is crossed inside the third message
    response = asgi_request(mw, "POST", "/payments", chunks=chunks)
    assert_problem(response, 413)
    assert app.calls == []
    assert response.received == 3, "reading must stop at the message that crosses the cap"


def test_OWASP_10_http2_body_without_length_is_capped(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    response = asgi_request(mw, "POST", "/payments", chunks=[b"b" * 700, b"b" * 700], http_version="2")
    assert_problem(response, 413)
    assert app.calls == []


def test_OWASP_10_body_at_the_cap_is_allowed(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    body = b"z" * MAX_BODY
    response = asgi_request(mw, "POST", "/payments", body=body)
    assert response.status == 200
    assert app.calls[0].body == body


def test_OWASP_10_chunked_body_at_the_cap_is_allowed(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    chunks = [b"q" * 256] * 4
    response = asgi_request(mw, "POST", "/payments", chunks=chunks)
    assert response.status == 200
    assert app.calls[0].body == b"q" * MAX_BODY


def test_body_under_the_cap_is_replayed_byte_for_byte(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    body = bytes(range(256)) * 3
    response = asgi_request(
        mw, "POST", "/payments", headers=[("content-type", "application/octet-stream")], body=body
    )
    assert response.status == 200
    (call,) = app.calls
    assert call.body == body
    assert call.messages[-1]["more_body"] is False
    assert (b"content-length", str(len(body)).encode()) in call.scope["headers"]


def test_multi_chunk_body_is_replayed_byte_for_byte(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    chunks = [b'{"Amount":', b"", b' "10.00", ', bytes(range(200)), b'"x": 1}']
    response = asgi_request(mw, "POST", "/payments", chunks=chunks)
    assert response.status == 200
    (call,) = app.calls
    assert call.body == b"".join(chunks)
    assert [m["type"] for m in call.messages] == ["http.request"] * len(call.messages)
    assert call.messages[-1]["more_body"] is False


def test_http2_body_without_length_is_replayed(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    chunks = [b"first-", b"second"]
    response = asgi_request(mw, "POST", "/payments", chunks=chunks, http_version="2")
    assert response.status == 200
    assert app.calls[0].body == b"first-second"


def test_empty_body_reaches_the_app_as_empty(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    response = asgi_request(mw, "GET", "/accounts")
    assert response.status == 200
    assert app.calls[0].body == b""


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_report_mode_lets_an_oversize_body_through_intact(app: RecordingASGIApp, chunked: bool) -> None:
    guard, events = make_guard(make_policy(request={"mode": "report", "max_body_bytes": MAX_BODY}))
    body = bytes(range(256)) * 12  # 3072 bytes, three times the cap
    chunks = [body[i : i + 500] for i in range(0, len(body), 500)] if chunked else None
    response = asgi_request(
        BankGuardMiddleware(app, guard=guard), "POST", "/payments", body=body, chunks=chunks
    )
    assert response.status == 200
    assert app.calls[0].body == body
    event = last_event(events)
    assert (event.outcome, event.status, event.reports) == (
        "report",
        413,
        ("request:request.body_too_large",),
    )


def test_client_disconnect_while_sending_the_body_calls_nothing(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    scope = asgi_scope("POST", "/payments", [("transfer-encoding", "chunked")])
    sent = asgi_send_scope(
        mw,
        scope,
        [{"type": "http.request", "body": b"part", "more_body": True}, {"type": "http.disconnect"}],
    )
    assert sent == []
    assert app.calls == []


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("abc", id="letters"),
        pytest.param("-1", id="negative"),
        pytest.param("+5", id="plus-sign"),
        pytest.param("1.0", id="decimal"),
        pytest.param("0x10", id="hex"),
        pytest.param("", id="empty"),
        pytest.param("\xef\xbc\x95", id="utf8-fullwidth-digit"),
        pytest.param("\u00b2", id="superscript-two"),
        pytest.param("5 5", id="inner-space"),
    ],
)
def test_invalid_content_length_is_400(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector, value: str
) -> None:
    response = asgi_request(mw, "POST", "/payments", headers=[("content-length", value)], body=b"hello")
    assert_problem(response, 400)
    assert app.calls == []
    assert last_event(events).reason == "request.invalid_content_length"


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(["5", "6"], id="two-lines"),
        pytest.param(["5, 6"], id="one-line-list"),
        pytest.param(["5", "5, 7"], id="mixed"),
    ],
)
def test_conflicting_content_length_is_400(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector, lines: list[str]
) -> None:
    headers = [("content-length", v) for v in lines]
    response = asgi_request(mw, "POST", "/payments", headers=headers, body=b"hello")
    assert_problem(response, 400)
    assert app.calls == []
    assert last_event(events).reason == "request.conflicting_content_length"


def test_OWASP_10_huge_content_length_numeral_is_a_client_error(app: RecordingASGIApp) -> None:
    # RFC 9110 §8.6: recipients must anticipate large numerals and not fail converting them.
    # 5000 digits fit in one header field under the default caps (16 KiB per field) but
    # exceed Python's default int() limit of 4300 digits.
    guard, _ = make_guard(make_policy(request={"max_body_bytes": MAX_BODY}))
    response = asgi_request(
        BankGuardMiddleware(app, guard=guard), "POST", "/payments", headers=[("content-length", "9" * 5000)]
    )
    assert response.status in (400, 413), response.raw_body
    assert_problem(response, response.status)
    assert app.calls == []


# -- header sizes (OWASP-11) --------------------------------------------------------------


def test_OWASP_11_header_total_over_cap_is_431(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    headers = [(f"x-pad-{i}", "v" * 200) for i in range(25)]  # ~5.3 KB in fields of ~215 bytes
    response = asgi_request(mw, headers=headers)
    assert_problem(response, 431)
    assert app.calls == []
    assert last_event(events).reason == "request.headers_too_large"


def test_OWASP_11_single_field_over_cap_is_431(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    response = asgi_request(mw, headers=[("x-big", "v" * MAX_FIELD)])
    assert_problem(response, 431)
    assert app.calls == []
    assert last_event(events).reason == "request.header_field_too_large"


def test_OWASP_11_oversized_authorization_is_431_before_it_is_parsed(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    response = asgi_request(mw, headers=[("authorization", "Bearer " + "a" * MAX_FIELD)])
    assert_problem(response, 431)
    assert response.get("www-authenticate") is None
    assert app.calls == []


def test_OWASP_11_field_line_at_the_cap_is_allowed(mw: BankGuardMiddleware) -> None:
    # A field line counts as "name: value\r\n": len(name) + len(value) + 4 bytes.
    name = "x-pad"
    at_cap = [(name, "v" * (MAX_FIELD - len(name) - 4))]
    over = [(name, "v" * (MAX_FIELD - len(name) - 3))]
    assert asgi_request(mw, headers=at_cap).status == 200
    assert asgi_request(mw, headers=over).status == 431


# -- request target (414) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/accounts?q=" + "a" * MAX_TARGET, id="long-query"),
        pytest.param("/accounts/" + "b" * MAX_TARGET, id="long-path"),
        pytest.param("/nowhere/" + "c" * MAX_TARGET, id="long-undeclared-path"),
    ],
)
def test_request_target_over_max_target_bytes_is_414(
    mw: BankGuardMiddleware, app: RecordingASGIApp, target: str
) -> None:
    assert_problem(asgi_request(mw, "GET", target), 414)
    assert app.calls == []


def test_request_target_under_the_cap_is_allowed(mw: BankGuardMiddleware) -> None:
    target = "/accounts?q=" + "a" * (MAX_TARGET - len("/accounts") - len("q=") - 1)
    assert asgi_request(mw, "GET", target).status == 200


# -- path hygiene ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/accounts/acc%2F001", id="encoded-slash-upper"),
        pytest.param("/accounts/acc%2f001", id="encoded-slash-lower"),
        pytest.param("/accounts/acc%5C001", id="encoded-backslash"),
        pytest.param("/accounts/acc%00", id="encoded-nul"),
        pytest.param("/accounts/%2e%2e/payments", id="encoded-dot-dot"),
        pytest.param("/accounts/./acc-001", id="dot"),
        pytest.param("/accounts/../payments", id="dot-dot"),
        pytest.param("/accounts/acc-001/.", id="trailing-dot"),
        pytest.param("/accounts/acc-001/..", id="trailing-dot-dot"),
        pytest.param("/accounts\\acc-001", id="backslash"),
        pytest.param("/accounts/acc%0A001", id="encoded-newline"),
        pytest.param("/accounts/acc%7F", id="encoded-del"),
    ],
)
def test_ambiguous_paths_are_400(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector, target: str
) -> None:
    document = assert_problem(asgi_request(mw, "GET", target), 400)
    assert document["detail"] == "The request path is malformed."
    assert app.calls == []
    assert last_event(events).control == "request"


def test_relative_path_is_400(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    scope = asgi_scope("GET", "/accounts", [])
    scope["path"] = "accounts"
    scope["raw_path"] = b"accounts"
    sent = asgi_send_scope(mw, scope, [{"type": "http.request", "body": b"", "more_body": False}])
    assert sent[0]["status"] == 400
    assert app.calls == []


def test_percent_encoded_ordinary_characters_are_allowed(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    response = asgi_request(mw, "GET", "/accounts/acc%20001")
    assert response.status == 200
    assert get_context(app.calls[0].scope).path_params == {"AccountId": "acc 001"}


def test_utf8_path_parameters_are_decoded(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    assert asgi_request(mw, "GET", "/accounts/caf%C3%A9").status == 200
    assert get_context(app.calls[0].scope).path_params == {"AccountId": "caf\u00e9"}


# -- method tampering (OWASP-18) ---------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["X-HTTP-Method-Override", "x-http-method-override", "X-HTTP-Method", "X-Method-Override"]
)
def test_OWASP_18_method_override_header_is_400(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector, name: str
) -> None:
    response = asgi_request(mw, "POST", "/payments", headers=[(name, "DELETE")], body=b"{}")
    document = assert_problem(response, 400)
    assert document["type"].endswith("/method-override-refused")
    assert app.calls == []
    assert last_event(events).reason == "request.method_override_header"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("_method=DELETE", id="alone"),
        pytest.param("a=1&_method=PUT", id="after-another"),
        pytest.param("_method", id="no-value"),
    ],
)
def test_OWASP_18_method_override_query_parameter_is_400(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector, query: str
) -> None:
    response = asgi_request(mw, "POST", "/payments?" + query, body=b"{}")
    assert_problem(response, 400)
    assert app.calls == []
    assert last_event(events).reason == "request.method_override_param"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("%5Fmethod=DELETE", id="encoded-underscore"),
        pytest.param("_m%65thod=DELETE", id="encoded-letter"),
        pytest.param("%5F%6D%65%74%68%6F%64=PUT", id="fully-encoded"),
    ],
)
def test_OWASP_18_percent_encoded_method_override_parameter_is_400(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector, query: str
) -> None:
    # Frameworks decode parameter names (Starlette's QueryParams and werkzeug's args both turn
    # "%5Fmethod" into "_method"), so the override check must look at decoded names too.
    response = asgi_request(mw, "POST", "/payments?" + query, body=b"{}")
    assert_problem(response, 400)
    assert app.calls == []
    assert last_event(events).reason == "request.method_override_param"


def test_OWASP_18_parameter_that_only_resembles_method_is_allowed(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    response = asgi_request(mw, "POST", "/payments?x_method=DELETE&method_=PUT&_methods=1", body=b"{}")
    assert response.status == 200
    assert len(app.calls) == 1


def test_OWASP_18_lower_case_method_is_refused(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    # Some servers upper-case methods before routing: "get" must not reach GET undeclared.
    response = asgi_request(mw, "get", "/accounts")
    assert_problem(response, 400)
    assert app.calls == []
    assert last_event(events).reason == "request.method_not_upper_case"


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "DELETE", "PATCH"])
def test_OWASP_18_undeclared_methods_on_a_declared_path_are_405(
    mw: BankGuardMiddleware, app: RecordingASGIApp, method: str
) -> None:
    response = asgi_request(mw, method, "/accounts")
    assert_problem(response, 405)
    assert response.get("allow") == "GET, HEAD"
    assert app.calls == []


# -- credentials (AUTH-04/05/06, DPOP-21/22) ------------------------------------------------


def test_AUTH_05_token_in_query_only(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    response = asgi_request(mw, "GET", "/accounts?access_token=eyJhbGciOiJFUzI1NiJ9.e30.sig")
    document = assert_problem(response, 401)
    assert response.get_all("www-authenticate") == ['Bearer realm="api"']
    assert "error" not in (response.get("www-authenticate") or "")
    assert document["type"].endswith("/authentication-required")
    assert app.calls == []
    event = last_event(events)
    assert (event.control, event.reason) == ("auth", "authorization.token_outside_header")


def test_AUTH_05_token_in_query_among_other_parameters(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    response = asgi_request(mw, "GET", "/accounts?page=2&access_token=abc&sort=asc")
    assert_problem(response, 401)
    assert app.calls == []


def test_AUTH_05_percent_encoded_token_parameter_in_query(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    # Starlette and werkzeug decode "access%5Ftoken" to "access_token".
    response = asgi_request(mw, "GET", "/accounts?access%5Ftoken=abc")
    assert_problem(response, 401)
    assert response.get_all("www-authenticate") == ['Bearer realm="api"']
    assert app.calls == []


def test_AUTH_05_token_in_form_body_only(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    response = asgi_request(
        mw,
        "POST",
        "/payments",
        headers=[("content-type", "application/x-www-form-urlencoded; charset=utf-8")],
        body=b"amount=10&access_token=abc",
    )
    assert_problem(response, 401)
    assert response.get_all("www-authenticate") == ['Bearer realm="api"']
    assert app.calls == []


def test_AUTH_05_access_token_field_in_a_json_body_is_not_a_form_token(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    body = b'{"access_token": "not a credential, just data"}'
    response = asgi_request(
        mw, "POST", "/payments", headers=[("content-type", "application/json")], body=body
    )
    assert response.status == 200
    assert app.calls[0].body == body


def test_AUTH_04_header_and_query_token_is_invalid_request(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    response = asgi_request(
        mw, "GET", "/accounts?access_token=abc", headers=[("authorization", "Bearer abc")]
    )
    document = assert_problem(response, 400)
    (challenge,) = response.get_all("www-authenticate")
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_request"' in challenge
    assert 'realm="api"' in challenge
    assert document["type"].endswith("/invalid-request")
    assert app.calls == []
    assert last_event(events).reason == "authorization.multiple_methods"


def test_AUTH_04_header_and_form_body_token_is_invalid_request(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    response = asgi_request(
        mw,
        "POST",
        "/payments",
        headers=[("authorization", "Bearer abc"), ("content-type", "application/x-www-form-urlencoded")],
        body=b"access_token=abc",
    )
    assert_problem(response, 400)
    assert 'error="invalid_request"' in (response.get("www-authenticate") or "")
    assert app.calls == []


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(["Bearer abc", "DPoP abc"], id="bearer-and-dpop"),
        pytest.param(["Bearer abc", "Bearer abc"], id="same-twice"),
        pytest.param(["Bearer abc", ""], id="second-empty"),
    ],
)
def test_AUTH_06_DPOP_21_two_authorization_lines_are_400(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector, lines: list[str]
) -> None:
    response = asgi_request(mw, headers=[("authorization", v) for v in lines])
    assert_problem(response, 400)
    challenges = response.get_all("www-authenticate")
    assert challenges
    assert all('error="invalid_request"' in c for c in challenges)
    assert app.calls == []
    assert last_event(events).reason == "authorization.duplicate"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Bearer a b", id="two-tokens"),
        pytest.param("Bearer  abc", id="double-space"),
        pytest.param("Bearer abc,realm=x", id="extra-params"),
        pytest.param("Bearer", id="no-token"),
        pytest.param("Bearer ", id="empty-token"),
        pytest.param("Bearer ab\u00e9", id="non-ascii"),
        pytest.param("Bearer abc\n", id="trailing-newline"),
        pytest.param("Bearer abc\r\nX-Injected: 1", id="crlf"),
    ],
)
def test_AUTH_06_malformed_credentials_are_400(
    mw: BankGuardMiddleware, app: RecordingASGIApp, value: str
) -> None:
    response = asgi_request(mw, headers=[("authorization", value)])
    assert_problem(response, 400)
    assert 'error="invalid_request"' in (response.get("www-authenticate") or "")
    assert app.calls == []


@pytest.mark.parametrize("value", ["bearer tok", "BEARER tok", "Bearer tok", "DPoP tok=="])
def test_AUTH_06_scheme_is_case_insensitive_and_token68_accepted(
    mw: BankGuardMiddleware, app: RecordingASGIApp, value: str
) -> None:
    response = asgi_request(mw, headers=[("authorization", value)])
    assert response.status == 200
    assert len(app.calls) == 1


def test_DPOP_22_proxy_authorization_is_ignored(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    response = asgi_request(mw, headers=[("proxy-authorization", "DPoP a b c")])
    assert response.status == 200
    assert get_principal(app.calls[0].scope).authenticated is False
    assert last_event(events).outcome == "allow"


def test_DPOP_22_proxy_authorization_does_not_count_as_a_header_method(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    # Only the query carries a token: 401 E1, not the 400 of "two methods".
    response = asgi_request(
        mw, "GET", "/accounts?access_token=abc", headers=[("proxy-authorization", "Bearer abc")]
    )
    assert_problem(response, 401)
    assert response.get_all("www-authenticate") == ['Bearer realm="api"']


# -- routes (OWASP-17/24, FAPI-17) ---------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["/open-banking/v9.9/aisp/accounts", "/", "/accounts/", "/accounts/acc-001/transactions", "/ACCOUNTS"],
)
def test_OWASP_24_undeclared_path_is_404(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector, target: str
) -> None:
    document = assert_problem(asgi_request(mw, "GET", target), 404)
    assert document["type"].endswith("/not-found")
    assert app.calls == []
    event = last_event(events)
    assert (event.control, event.reason) == ("routes", "routes.undeclared_operation")


def test_OWASP_17_wrong_method_is_405_with_allow(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    response = asgi_request(mw, "GET", "/payments")
    assert_problem(response, 405)
    assert response.get_all("allow") == ["POST"]
    assert app.calls == []
    assert last_event(events).reason == "routes.method_not_allowed"
    response = asgi_request(mw, "DELETE", "/accounts/acc-001")
    assert response.get_all("allow") == ["GET, HEAD"]


def test_FAPI_17_head_is_admitted_where_get_is_declared(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    response = asgi_request(mw, "HEAD", "/accounts/acc-001")
    assert response.status == 200
    (call,) = app.calls
    assert call.scope["method"] == "HEAD"
    context = get_context(call.scope)
    assert context.operation is not None
    assert context.operation.id == "getAccount"
    assert last_event(events).operation == "getAccount"


def test_FAPI_17_head_on_an_undeclared_path_is_404_with_empty_body(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    response = asgi_request(mw, "HEAD", "/admin")
    assert response.status == 404
    assert response.raw_body == b""
    assert response.get("content-type") == PROBLEM
    assert re.match(UUID_RE, response.get("x-fapi-interaction-id") or "")
    assert app.calls == []


def test_FAPI_17_head_where_only_post_is_declared_is_405(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    response = asgi_request(mw, "HEAD", "/payments")
    assert response.status == 405
    assert response.get("allow") == "POST"
    assert response.raw_body == b""
    assert app.calls == []


def test_FAPI_17_head_with_a_query_token_is_401_with_empty_body(
    mw: BankGuardMiddleware, app: RecordingASGIApp
) -> None:
    response = asgi_request(mw, "HEAD", "/accounts?access_token=abc")
    assert response.status == 401
    assert response.get_all("www-authenticate") == ['Bearer realm="api"']
    assert response.raw_body == b""
    assert app.calls == []


# -- response headers (FAPI-08/10, FWD-06/07, OWASP-23) -------------------------------------


def test_FAPI_08_interaction_id_generated_when_absent(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    response = asgi_request(mw)
    iid = response.get_all("x-fapi-interaction-id")
    assert len(iid) == 1
    assert re.match(UUID_RE, iid[0])
    assert get_context(app.calls[0].scope).interaction_id == iid[0]


def test_FAPI_08_interaction_id_echoed_on_success_and_error(mw: BankGuardMiddleware) -> None:
    ok = asgi_request(mw, headers=[("x-fapi-interaction-id", FIXED_IID)])
    assert ok.get_all("x-fapi-interaction-id") == [FIXED_IID]
    denied = asgi_request(
        mw, "GET", "/accounts?access_token=x", headers=[("x-fapi-interaction-id", FIXED_IID)]
    )
    assert denied.status == 401
    assert denied.get_all("x-fapi-interaction-id") == [FIXED_IID]
    assert denied.json()["interaction_id"] == FIXED_IID


def test_FAPI_08_interaction_id_set_by_the_app_is_replaced(guard: Guard) -> None:
    app = RecordingASGIApp(
        headers=[("content-type", "application/json"), ("X-FAPI-Interaction-ID", "from-app")]
    )
    response = asgi_request(
        BankGuardMiddleware(app, guard=guard), headers=[("x-fapi-interaction-id", FIXED_IID)]
    )
    assert response.get_all("x-fapi-interaction-id") == [FIXED_IID]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("abc\r\nSet-Cookie: x=1", id="crlf-injection"),
        pytest.param("not-a-uuid", id="text"),
        pytest.param(FIXED_IID + " ", id="trailing-space"),
        pytest.param(FIXED_IID + "\n", id="trailing-newline"),
        pytest.param("{" + FIXED_IID + "}", id="braces"),
        pytest.param("", id="empty"),
    ],
)
def test_FAPI_10_invalid_interaction_id_is_replaced_never_reflected(
    mw: BankGuardMiddleware, events: EventCollector, value: str
) -> None:
    response = asgi_request(mw, headers=[("x-fapi-interaction-id", value)])
    assert response.status == 200
    (iid,) = response.get_all("x-fapi-interaction-id")
    assert iid != value
    assert re.match(UUID_RE, iid)
    assert "set-cookie" not in dict(response.headers)
    assert last_event(events).interaction_id_generated is True


def test_FAPI_10_two_interaction_ids_are_replaced(mw: BankGuardMiddleware) -> None:
    other = "0b5a0f54-8c9c-4d0e-9a63-1f0d1e2c3b4a"
    response = asgi_request(
        mw, headers=[("x-fapi-interaction-id", FIXED_IID), ("x-fapi-interaction-id", other)]
    )
    (iid,) = response.get_all("x-fapi-interaction-id")
    assert iid not in (FIXED_IID, other)
    assert re.match(UUID_RE, iid)


def test_FAPI_10_obie_profile_rejects_an_invalid_interaction_id(app: RecordingASGIApp) -> None:
    guard, _ = make_guard(make_policy(profile="obie"))
    response = asgi_request(BankGuardMiddleware(app, guard=guard), headers=[("x-fapi-interaction-id", "bad")])
    document = assert_problem(response, 400)
    assert document["type"].endswith("/invalid-interaction-id")
    assert response.get("x-fapi-interaction-id") != "bad"
    assert app.calls == []


def test_FAPI_08_configured_interaction_header_is_used(app: RecordingASGIApp) -> None:
    guard, _ = make_guard(make_policy(interaction_id={"header": "X-Request-ID"}))
    mw = BankGuardMiddleware(app, guard=guard)
    ok = asgi_request(mw, headers=[("x-request-id", FIXED_IID)])
    assert ok.get_all("x-request-id") == [FIXED_IID]
    assert ok.get("x-fapi-interaction-id") is None
    denied = asgi_request(mw, "GET", "/nowhere", headers=[("x-request-id", FIXED_IID)])
    assert denied.get_all("x-request-id") == [FIXED_IID]
    assert denied.json()["interaction_id"] == FIXED_IID


def test_FWD_07_OWASP_23_security_headers_added_when_the_app_sets_none(mw: BankGuardMiddleware) -> None:
    response = asgi_request(mw)
    assert response.status == 200
    assert response.get_all("cache-control") == ["no-store"]
    assert response.get_all("x-content-type-options") == ["nosniff"]
    assert response.get_all("content-type") == ["application/json"]
    assert response.raw_body == b'{"ok":true}'


def test_OWASP_23_app_cache_control_and_nosniff_are_kept(guard: Guard) -> None:
    app = RecordingASGIApp(
        headers=[
            ("Content-Type", "application/json"),
            ("Cache-Control", "private, max-age=60"),
            ("X-Content-Type-Options", "nosniff"),
            ("ETag", '"v1"'),
        ]
    )
    response = asgi_request(BankGuardMiddleware(app, guard=guard))
    assert response.get_all("cache-control") == ["private, max-age=60"]
    assert response.get_all("x-content-type-options") == ["nosniff"]
    assert response.get_all("etag") == ['"v1"']


def test_FWD_06_client_cert_response_headers_are_stripped(guard: Guard) -> None:
    app = RecordingASGIApp(
        headers=[
            ("content-type", "application/json"),
            ("Client-Cert", ":MIIB:"),
            ("client-cert-chain", ":MIIC:, :MIID:"),
            ("CLIENT-CERT", ":MIIE:"),
            ("x-client-cert-note", "kept"),
        ]
    )
    response = asgi_request(BankGuardMiddleware(app, guard=guard))
    names = [k for k, _ in response.headers]
    assert "client-cert" not in names
    assert "client-cert-chain" not in names
    assert response.get("x-client-cert-note") == "kept"


def test_app_status_and_body_pass_through_unchanged(guard: Guard) -> None:
    app = RecordingASGIApp(status=418, headers=[("content-type", "text/plain")], body=b"teapot")
    response = asgi_request(BankGuardMiddleware(app, guard=guard))
    assert response.status == 418
    assert response.raw_body == b"teapot"
    assert response.get("cache-control") == "no-store"


# -- other scope types -----------------------------------------------------------------


def test_websocket_is_closed_with_1008_and_never_reaches_the_app(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    scope = asgi_scope("GET", "/accounts", [("x-fapi-interaction-id", FIXED_IID)])
    scope["type"] = "websocket"
    scope.pop("method")
    sent = asgi_send_scope(mw, scope, [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert app.calls == []
    event = last_event(events)
    assert (event.outcome, event.control, event.reason) == ("deny", "adapter", "adapter.websocket_refused")


def test_lifespan_passes_through(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    sent = asgi_send_scope(mw, scope, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]
    assert events.events == []


# -- fail closed -----------------------------------------------------------------------


def test_exception_inside_the_guard_is_503_problem_never_500(
    mw: BankGuardMiddleware,
    app: RecordingASGIApp,
    events: EventCollector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def explode(self: Guard, facts: RequestFacts, store: object = None) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Guard, "adecide", explode)
    response = asgi_request(mw, headers=[("x-fapi-interaction-id", FIXED_IID)])
    document = assert_problem(response, 503)
    assert document["type"].endswith("/security-check-failed")
    assert response.get("retry-after") == "1"
    assert b"secret internal detail" not in response.raw_body
    assert b"Traceback" not in response.raw_body
    assert app.calls == []
    event = last_event(events)
    assert (event.outcome, event.control, event.reason, event.status) == (
        "deny",
        "adapter",
        "adapter.internal_error",
        503,
    )


def test_exception_inside_the_guard_on_head_has_an_empty_body(
    mw: BankGuardMiddleware, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(self: Guard, facts: RequestFacts, store: object = None) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Guard, "adecide", explode)
    response = asgi_request(mw, "HEAD", "/accounts")
    assert response.status == 503
    assert response.raw_body == b""


class _ExplodingCheck:
    name = "exploding"
    mode = "enforce"

    def run(self, facts: RequestFacts, state: object) -> None:
        raise ValueError("broken check")


def test_exception_inside_a_check_fails_closed_with_503(app: RecordingASGIApp) -> None:
    events = EventCollector()
    guard = Guard(make_policy(), checks=[_ExplodingCheck()], sink=events)
    response = asgi_request(BankGuardMiddleware(app, guard=guard))
    assert_problem(response, 503)
    assert b"broken check" not in response.raw_body
    assert app.calls == []
    event = last_event(events)
    assert (event.control, event.reason) == ("exploding", "exploding.internal_error")


# -- security context -----------------------------------------------------------------


def test_security_context_is_in_the_scope(mw: BankGuardMiddleware, app: RecordingASGIApp) -> None:
    response = asgi_request(
        mw, "GET", "/accounts/acc-001/balances", headers=[("x-fapi-interaction-id", FIXED_IID)]
    )
    assert response.status == 200
    scope = app.calls[0].scope
    assert CONTEXT_KEY == "bankguard.context"
    context = scope["bankguard.context"]
    assert isinstance(context, SecurityContext)
    assert context is get_context(scope)
    assert context.interaction_id == FIXED_IID
    assert context.operation is not None
    assert (context.operation.id, context.operation.method, context.operation.path) == (
        "getBalances",
        "GET",
        "/accounts/{AccountId}/balances",
    )
    assert dict(context.path_params) == {"AccountId": "acc-001"}
    principal = get_principal(scope)
    assert isinstance(principal, Principal)
    assert principal.authenticated is False
    assert principal.client_id is None


def test_get_context_on_an_unprotected_scope_raises() -> None:
    scope = asgi_scope("GET", "/accounts", [])
    with pytest.raises(NotProtectedError):
        get_context(scope)
    with pytest.raises(NotProtectedError):
        get_principal(scope)
    scope[CONTEXT_KEY] = {"principal": "forged"}
    with pytest.raises(NotProtectedError):
        get_context(scope)


# -- FastAPI -----------------------------------------------------------------------------


PrincipalDep = Annotated[Principal, Depends(bg_fastapi.principal)]
ContextDep = Annotated[SecurityContext, Depends(bg_fastapi.security_context)]
InteractionDep = Annotated[str, Depends(bg_fastapi.interaction_id)]


def _fastapi_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/accounts/{account_id}")
    async def account(
        account_id: str, who: PrincipalDep, ctx: ContextDep, iid: InteractionDep
    ) -> dict[str, Any]:
        return {
            "account_id": account_id,
            "authenticated": who.authenticated,
            "operation": ctx.operation.id if ctx.operation else None,
            "params": dict(ctx.path_params),
            "interaction_id": iid,
            "same_principal": who is ctx.principal,
        }

    return app


def test_fastapi_dependencies_read_the_security_context() -> None:
    app = protect(_fastapi_app(), make_policy())
    with TestClient(app) as client:
        response = client.get("/accounts/acc-001", headers={"x-fapi-interaction-id": FIXED_IID})
    assert response.status_code == 200
    assert response.json() == {
        "account_id": "acc-001",
        "authenticated": False,
        "operation": "getAccount",
        "params": {"AccountId": "acc-001"},
        "interaction_id": FIXED_IID,
        "same_principal": True,
    }
    assert response.headers["x-fapi-interaction-id"] == FIXED_IID
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_fastapi_dependencies_without_bankguard_raise_not_protected() -> None:
    with TestClient(_fastapi_app()) as client, pytest.raises(NotProtectedError):
        client.get("/accounts/acc-001")


def test_protect_detects_fastapi_and_returns_the_same_app() -> None:
    app = _fastapi_app()
    protected = protect(app, make_policy())
    assert protected is app

    @app.post("/payments")  # added after protect(): still behind bankguard
    async def pay() -> dict[str, str]:
        return {"status": "accepted"}

    with TestClient(app) as client:
        undeclared = client.get("/docs-that-do-not-exist")
        over = client.post("/payments", content=b"x" * (MAX_BODY + 1))
        accepted = client.post("/payments", json={})
    assert undeclared.status_code == 404
    assert undeclared.headers["content-type"] == PROBLEM
    assert over.status_code == 413
    assert over.headers["content-type"] == PROBLEM
    assert accepted.status_code == 200
    assert accepted.headers["cache-control"] == "no-store"
    assert re.match(UUID_RE, accepted.headers["x-fapi-interaction-id"])


def test_protect_fastapi_unhandled_error_still_carries_bankguard_headers() -> None:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/accounts")
    async def broken() -> None:
        raise RuntimeError("handler bug")

    protect(app, make_policy())
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/accounts", headers={"x-fapi-interaction-id": FIXED_IID})
    assert response.status_code == 500
    assert response.headers["x-fapi-interaction-id"] == FIXED_IID
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "handler bug" not in response.text


def test_protect_on_an_already_started_fastapi_app_never_fails_open() -> None:
    # Starlette builds its middleware stack once, on the first request. protect() called
    # after that must either refuse (as Starlette's add_middleware does) or still take effect;
    # returning the app silently unprotected would fail open.
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/admin")
    async def admin() -> dict[str, str]:
        return {"secret": "undeclared operation"}

    with TestClient(app) as client:
        assert client.get("/admin").status_code == 200
    try:
        protect(app, make_policy())
    except (RuntimeError, bankguard.BankGuardError):
        return  # refused loudly: fail closed
    with TestClient(app) as client:
        response = client.get("/admin")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM


def test_fastapi_bank_through_the_middleware() -> None:
    calls: list[str] = []
    guard, events = make_guard()
    app = BankGuardMiddleware(build_fastapi_bank(calls), guard=guard)
    response = asgi_request(
        app,
        "POST",
        "/payments",
        headers=[("content-type", "application/json"), ("x-fapi-interaction-id", FIXED_IID)],
        chunks=[b'{"Amount": ', b'"10.00"}'],
    )
    assert response.status == 201
    assert response.json()["Data"]["Initiation"] == {"Amount": "10.00"}
    assert response.json()["interaction_id"] == FIXED_IID
    assert calls == ["create_payment"]
    assert [e.outcome for e in events.events] == ["allow"]


def test_protect_wraps_a_raw_async_callable(app: RecordingASGIApp) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)

    protected = protect(raw, make_policy())
    assert isinstance(protected, BankGuardMiddleware)
    assert protected.app is raw
    assert asgi_request(protected, "GET", "/nowhere").status == 404
    assert asgi_request(protected).status == 200
    assert len(app.calls) == 1


def test_protect_wraps_a_class_with_async_call(app: RecordingASGIApp) -> None:
    protected = protect(app, make_policy())
    assert isinstance(protected, BankGuardMiddleware)
    assert protected.app is app
    assert asgi_request(protected, "GET", "/accounts?_method=DELETE").status == 400
    assert app.calls == []


def test_protect_kind_asgi_forces_the_asgi_adapter(app: RecordingASGIApp) -> None:
    class Opaque:
        """An ASGI app whose __call__ is not visibly async (it returns the coroutine)."""

        def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
            return app(scope, receive, send)

    opaque = Opaque()
    protected = protect(opaque, make_policy(), kind="asgi")
    assert isinstance(protected, BankGuardMiddleware)
    assert asgi_request(protected).status == 200


def test_OWASP_18_method_override_form_field_is_400(
    mw: BankGuardMiddleware, app: RecordingASGIApp, events: EventCollector
) -> None:
    form = [("content-type", "application/x-www-form-urlencoded")]
    response = asgi_request(mw, "POST", "/payments", headers=form, body=b"amount=1&%5Fmethod=DELETE")
    assert_problem(response, 400)
    assert app.calls == []
    assert last_event(events).reason == "request.method_override_param"


@pytest.mark.parametrize("kind", ["fastapi", "raw-middleware"])
def test_protect_twice_is_refused(kind: str) -> None:
    # Two guards would decide every request twice and write two audit events.
    app: Any = _fastapi_app()
    protected = protect(app, make_policy())
    if kind == "raw-middleware":
        protected = BankGuardMiddleware(app, make_policy())
    with pytest.raises(ValueError, match="already protected"):
        protect(protected, make_policy())
