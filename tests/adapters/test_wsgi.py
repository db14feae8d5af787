"""BankGuardWSGI around raw WSGI apps and Flask, driven in-process."""

from __future__ import annotations

import io
import re
import sys
from typing import Any

import pytest
from flask import Flask, jsonify

from bankguard import (
    BankGuardWSGI,
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
from bankguard.integrations import flask as bg_flask

from .conftest import (
    FIXED_IID,
    MAX_BODY,
    MAX_FIELD,
    MAX_TARGET,
    PROBLEM,
    UUID_RE,
    RecordingWSGIApp,
    assert_problem,
    build_flask_bank,
    last_event,
    make_guard,
    make_policy,
    wsgi_call,
    wsgi_environ,
    wsgi_request,
)


@pytest.fixture
def app() -> RecordingWSGIApp:
    return RecordingWSGIApp()


@pytest.fixture
def mw(app: RecordingWSGIApp, guard: Guard) -> BankGuardWSGI:
    return BankGuardWSGI(app, guard=guard)


class ShortReads(io.RawIOBase):
    """A server input stream whose ``read(n)`` may return fewer than ``n`` bytes (as raw
    streams and socket wrappers do), never more than ``step`` at a time."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(min(len(buffer), self._step))
        buffer[: len(chunk)] = chunk
        return len(chunk)


# -- construction ----------------------------------------------------------------------


def test_wsgi_middleware_needs_exactly_one_of_policy_or_guard(app: RecordingWSGIApp, guard: Guard) -> None:
    with pytest.raises(TypeError):
        BankGuardWSGI(app)
    with pytest.raises(TypeError):
        BankGuardWSGI(app, make_policy(), guard=guard)
    assert wsgi_request(BankGuardWSGI(app, make_policy())).status == 200


# -- body size (OWASP-10) and replay -----------------------------------------------------


def test_OWASP_10_content_length_over_cap_refused_without_calling_the_app(
    mw: BankGuardWSGI, app: RecordingWSGIApp, events: EventCollector
) -> None:
    environ = wsgi_environ("POST", "/payments", [], body=b"x" * (MAX_BODY + 1))
    response = wsgi_call(mw, environ)
    assert_problem(response, 413)
    assert app.calls == []
    assert environ["wsgi.input"].tell() == 0, "a declared oversize body must be refused before it is read"
    event = last_event(events)
    assert (event.outcome, event.control, event.reason) == ("deny", "request", "request.body_too_large")


def test_OWASP_10_ten_megabytes_declared_is_refused_before_reading(
    mw: BankGuardWSGI, app: RecordingWSGIApp
) -> None:
    environ = wsgi_environ("POST", "/payments", [("content-length", str(10 * 1024 * 1024))], body=b"y" * 4096)
    response = wsgi_call(mw, environ)
    assert_problem(response, 413)
    assert environ["wsgi.input"].tell() == 0
    assert app.calls == []


def test_OWASP_10_chunked_input_over_cap_is_413_after_reading_at_most_cap_plus_one(
    mw: BankGuardWSGI, app: RecordingWSGIApp
) -> None:
    source = io.BytesIO(b"c" * (MAX_BODY * 8))
    environ = wsgi_environ("POST", "/payments", [], chunked=True)
    environ["wsgi.input"] = source
    response = wsgi_call(mw, environ)
    assert_problem(response, 413)
    assert app.calls == []
    assert source.tell() <= MAX_BODY + 1


def test_OWASP_10_body_at_the_cap_is_allowed(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    body = b"z" * MAX_BODY
    assert wsgi_request(mw, "POST", "/payments", body=body).status == 200
    assert app.calls[0].body == body


def test_chunked_input_under_the_cap_is_replayed_with_its_length(
    mw: BankGuardWSGI, app: RecordingWSGIApp
) -> None:
    body = bytes(range(256)) * 2
    response = wsgi_request(mw, "POST", "/payments", body=body, chunked=True)
    assert response.status == 200
    (call,) = app.calls
    assert call.body == body
    assert call.environ["CONTENT_LENGTH"] == str(len(body))


@pytest.mark.parametrize(
    "reader",
    [
        pytest.param(lambda s, n: s.read(), id="read-all"),
        pytest.param(lambda s, n: s.read(n), id="read-n"),
        pytest.param(lambda s, n: b"".join(iter(lambda: s.read(10), b"")), id="read-in-steps"),
        pytest.param(lambda s, n: b"".join(iter(s.readline, b"")), id="readline"),
        pytest.param(lambda s, n: b"".join(s.readlines()), id="readlines"),
        pytest.param(lambda s, n: b"".join(s), id="iterate"),
    ],
)
def test_body_is_replayed_through_wsgi_input(guard: Guard, reader: Any) -> None:
    body = b'{"Amount": "10.00",\n "Currency": "GBP"}\nsecond line\r\n' + bytes(range(256))

    def read(environ: dict[str, Any]) -> bytes:
        data: bytes = reader(environ["wsgi.input"], int(environ["CONTENT_LENGTH"]))
        return data

    app = RecordingWSGIApp(reader=read)
    response = wsgi_request(BankGuardWSGI(app, guard=guard), "POST", "/payments", body=body)
    assert response.status == 200
    (call,) = app.calls
    assert call.body == body
    assert call.environ["CONTENT_LENGTH"] == str(len(body))


def test_body_is_replayed_in_full_when_the_server_stream_returns_short_reads(
    mw: BankGuardWSGI, app: RecordingWSGIApp
) -> None:
    # PEP 3333 streams need not fill a read(n) in one call (werkzeug's LimitedStream copes
    # with such servers). Reading once and rewriting CONTENT_LENGTH truncates the body.
    body = b'{"InstructedAmount": {"Amount": "1000000.00", "Currency": "GBP"}}'
    environ = wsgi_environ("POST", "/payments", [("content-type", "application/json")], body=body)
    environ["wsgi.input"] = ShortReads(body)
    response = wsgi_call(mw, environ)
    assert response.status == 200
    (call,) = app.calls
    assert call.body == body
    assert call.environ["CONTENT_LENGTH"] == str(len(body))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "terminated-input"])
def test_report_mode_lets_an_oversize_body_through_intact(chunked: bool) -> None:
    guard, events = make_guard(make_policy(request={"mode": "report", "max_body_bytes": MAX_BODY}))
    app = RecordingWSGIApp()
    body = bytes(range(256)) * 12  # 3072 bytes, three times the cap
    response = wsgi_request(BankGuardWSGI(app, guard=guard), "POST", "/payments", body=body, chunked=chunked)
    assert response.status == 200
    assert app.calls[0].body == body
    event = last_event(events)
    assert (event.outcome, event.status, event.reports) == (
        "report",
        413,
        ("request:request.body_too_large",),
    )


def test_body_is_not_read_without_content_length_or_terminated_input(
    mw: BankGuardWSGI, app: RecordingWSGIApp
) -> None:
    environ = wsgi_environ("GET", "/accounts", [])
    environ["wsgi.input"] = io.BytesIO(b"unframed bytes a server would not hand over")
    response = wsgi_call(mw, environ)
    assert response.status == 200
    assert environ["wsgi.input"].tell() == 0
    assert app.calls[0].body == b""


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("abc", id="letters"),
        pytest.param("-1", id="negative"),
        pytest.param("+5", id="plus-sign"),
        pytest.param("1.0", id="decimal"),
        pytest.param("0x10", id="hex"),
        pytest.param("\uff15", id="fullwidth-digit"),
        pytest.param("\u00b2", id="superscript-two"),
        pytest.param(" ", id="blank"),
    ],
)
def test_invalid_content_length_is_400(
    mw: BankGuardWSGI, app: RecordingWSGIApp, events: EventCollector, value: str
) -> None:
    environ = wsgi_environ("POST", "/payments", [], body=b"hello")
    environ["CONTENT_LENGTH"] = value
    response = wsgi_call(mw, environ)
    assert_problem(response, 400)
    assert app.calls == []
    assert last_event(events).reason == "request.invalid_content_length"


@pytest.mark.parametrize("value", ["5, 6", "5,6", "5, 5, 7"])
def test_merged_conflicting_content_length_is_400(
    mw: BankGuardWSGI, app: RecordingWSGIApp, events: EventCollector, value: str
) -> None:
    environ = wsgi_environ("POST", "/payments", [], body=b"hello")
    environ["CONTENT_LENGTH"] = value
    assert_problem(wsgi_call(mw, environ), 400)
    assert app.calls == []
    assert last_event(events).reason == "request.conflicting_content_length"


def test_empty_content_length_means_no_body(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    environ = wsgi_environ("GET", "/accounts", [])
    environ["CONTENT_LENGTH"] = ""
    assert wsgi_call(mw, environ).status == 200
    assert app.calls[0].body == b""


def test_OWASP_10_huge_content_length_numeral_is_a_client_error(app: RecordingWSGIApp) -> None:
    # RFC 9110 §8.6: recipients must anticipate large numerals and not fail converting them.
    # 5000 digits fit under the default header caps but exceed Python's int() digit limit.
    guard, _ = make_guard(make_policy(request={"max_body_bytes": MAX_BODY}))
    environ = wsgi_environ("POST", "/payments", [], body=b"x")
    environ["CONTENT_LENGTH"] = "9" * 5000
    response = wsgi_call(BankGuardWSGI(app, guard=guard), environ)
    assert response.status in (400, 413), response.raw_body
    assert_problem(response, response.status)
    assert app.calls == []


# -- header sizes (OWASP-11) --------------------------------------------------------------


def test_OWASP_11_header_total_over_cap_is_431(
    mw: BankGuardWSGI, app: RecordingWSGIApp, events: EventCollector
) -> None:
    response = wsgi_request(mw, headers=[(f"x-pad-{i}", "v" * 200) for i in range(25)])
    assert_problem(response, 431)
    assert app.calls == []
    assert last_event(events).reason == "request.headers_too_large"


def test_OWASP_11_single_field_over_cap_is_431(
    mw: BankGuardWSGI, app: RecordingWSGIApp, events: EventCollector
) -> None:
    response = wsgi_request(mw, headers=[("x-big", "v" * MAX_FIELD)])
    assert_problem(response, 431)
    assert app.calls == []
    assert last_event(events).reason == "request.header_field_too_large"


def test_OWASP_11_merged_repeated_lines_count_against_the_field_cap(mw: BankGuardWSGI) -> None:
    # The server merged 6 lines of 200 bytes into one value of 1210 bytes.
    response = wsgi_request(mw, headers=[("x-rep", "v" * 200)] * 6)
    assert_problem(response, 431)


# -- request target (414) and path hygiene --------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/accounts?q=" + "a" * MAX_TARGET, id="long-query"),
        pytest.param("/accounts/" + "b" * MAX_TARGET, id="long-path"),
    ],
)
@pytest.mark.parametrize("raw_uri", [True, False], ids=["raw-uri", "path-info-only"])
def test_request_target_over_max_target_bytes_is_414(
    mw: BankGuardWSGI, app: RecordingWSGIApp, target: str, raw_uri: bool
) -> None:
    assert_problem(wsgi_request(mw, "GET", target, raw_uri=raw_uri), 414)
    assert app.calls == []


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/accounts/acc%2F001", id="encoded-slash-upper"),
        pytest.param("/accounts/acc%2f001", id="encoded-slash-lower"),
        pytest.param("/accounts/acc%5c001", id="encoded-backslash"),
        pytest.param("/accounts/acc%00", id="encoded-nul"),
        pytest.param("/accounts/%2E%2E/payments", id="encoded-dot-dot"),
        pytest.param("/accounts/./acc-001", id="dot"),
        pytest.param("/accounts/../payments", id="dot-dot"),
        pytest.param("/accounts\\acc-001", id="backslash"),
        pytest.param("/accounts/acc%0D%0A", id="encoded-crlf"),
    ],
)
def test_ambiguous_paths_are_400(
    mw: BankGuardWSGI, app: RecordingWSGIApp, events: EventCollector, target: str
) -> None:
    document = assert_problem(wsgi_request(mw, "GET", target), 400)
    assert document["detail"] == "The request path is malformed."
    assert app.calls == []
    assert last_event(events).control == "request"


@pytest.mark.parametrize("key", ["RAW_URI", "REQUEST_URI"])
def test_encoded_slash_is_seen_in_either_raw_uri_key(
    mw: BankGuardWSGI, app: RecordingWSGIApp, key: str
) -> None:
    environ = wsgi_environ("GET", "/accounts/a%2Fb", [], raw_uri=False)
    environ[key] = "/accounts/a%2Fb?x=1"
    assert_problem(wsgi_call(mw, environ), 400)
    assert app.calls == []


def test_encoded_slash_in_an_absolute_form_request_uri_is_400(mw: BankGuardWSGI) -> None:
    environ = wsgi_environ("GET", "/accounts/a%2Fb", [], raw_uri=False)
    environ["REQUEST_URI"] = "https://bank.example/accounts/a%2Fb"
    assert_problem(wsgi_call(mw, environ), 400)


def test_percent_encoded_ordinary_characters_are_allowed(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    assert wsgi_request(mw, "GET", "/accounts/acc%20001").status == 200
    assert dict(get_context(app.calls[0].environ).path_params) == {"AccountId": "acc 001"}


def test_utf8_path_parameters_are_decoded_like_the_framework_does(
    mw: BankGuardWSGI, app: RecordingWSGIApp, events: EventCollector
) -> None:
    # PEP 3333: PATH_INFO carries the path bytes as latin-1 text; werkzeug / Flask decode
    # them as UTF-8 ("caf\u00c3\u00a9" -> "caf\u00e9"). bankguard's context and audit event
    # must name the same value the application sees (and the ASGI adapter reports).
    assert wsgi_request(mw, "GET", "/accounts/caf%C3%A9").status == 200
    assert dict(get_context(app.calls[0].environ).path_params) == {"AccountId": "caf\u00e9"}
    assert last_event(events).path == "/accounts/caf\u00e9"


def test_empty_path_info_is_the_root(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    environ = wsgi_environ("GET", "/", [], raw_uri=False)
    environ["PATH_INFO"] = ""
    assert_problem(wsgi_call(mw, environ), 404)


# -- method tampering (OWASP-18) ---------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["X-HTTP-Method-Override", "X_HTTP_Method_Override", "X-HTTP-Method", "X-Method-Override"]
)
def test_OWASP_18_method_override_header_is_400(
    mw: BankGuardWSGI, app: RecordingWSGIApp, events: EventCollector, name: str
) -> None:
    response = wsgi_request(mw, "POST", "/payments", headers=[(name, "DELETE")], body=b"{}")
    assert_problem(response, 400)
    assert app.calls == []
    assert last_event(events).reason == "request.method_override_header"


@pytest.mark.parametrize("query", ["_method=DELETE", "a=1&_method=PUT", "%5Fmethod=DELETE"])
def test_OWASP_18_method_override_query_parameter_is_400(
    mw: BankGuardWSGI, app: RecordingWSGIApp, query: str
) -> None:
    assert_problem(wsgi_request(mw, "POST", "/payments?" + query, body=b"{}"), 400)
    assert app.calls == []


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "DELETE"])
def test_OWASP_18_undeclared_methods_on_a_declared_path_are_405(
    mw: BankGuardWSGI, app: RecordingWSGIApp, method: str
) -> None:
    response = wsgi_request(mw, method, "/accounts")
    assert_problem(response, 405)
    assert response.get("allow") == "GET, HEAD"
    assert app.calls == []


# -- credentials ------------------------------------------------------------------------


def test_AUTH_05_token_in_query_only(
    mw: BankGuardWSGI, app: RecordingWSGIApp, events: EventCollector
) -> None:
    response = wsgi_request(mw, "GET", "/accounts?access_token=abc")
    assert_problem(response, 401)
    assert response.get_all("www-authenticate") == ['Bearer realm="api"']
    assert app.calls == []
    assert last_event(events).reason == "authorization.token_outside_header"


def test_AUTH_05_token_in_form_body_only(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    response = wsgi_request(
        mw,
        "POST",
        "/payments",
        headers=[("content-type", "application/x-www-form-urlencoded")],
        body=b"access_token=abc",
    )
    assert_problem(response, 401)
    assert response.get_all("www-authenticate") == ['Bearer realm="api"']
    assert app.calls == []


def test_AUTH_04_header_and_query_token_is_invalid_request(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    response = wsgi_request(
        mw, "GET", "/accounts?access_token=abc", headers=[("Authorization", "Bearer abc")]
    )
    assert_problem(response, 400)
    (challenge,) = response.get_all("www-authenticate")
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_request"' in challenge
    assert app.calls == []


@pytest.mark.parametrize("separator", [", ", ","], ids=["werkzeug-style", "wsgiref-style"])
def test_AUTH_06_DPOP_21_merged_authorization_lines_are_400(
    mw: BankGuardWSGI, app: RecordingWSGIApp, separator: str
) -> None:
    response = wsgi_request(
        mw, headers=[("Authorization", "Bearer abc"), ("Authorization", "DPoP abc")], separator=separator
    )
    assert_problem(response, 400)
    assert 'error="invalid_request"' in (response.get("www-authenticate") or "")
    assert app.calls == []


def test_AUTH_06_two_tokens_is_400(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    response = wsgi_request(mw, headers=[("Authorization", "Bearer a b")])
    assert_problem(response, 400)
    assert app.calls == []


@pytest.mark.parametrize("value", ["bearer tok", "BEARER tok"])
def test_AUTH_06_scheme_is_case_insensitive(mw: BankGuardWSGI, app: RecordingWSGIApp, value: str) -> None:
    assert wsgi_request(mw, headers=[("Authorization", value)]).status == 200
    assert len(app.calls) == 1


def test_DPOP_22_proxy_authorization_is_ignored(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    response = wsgi_request(mw, headers=[("Proxy-Authorization", "DPoP a b c")])
    assert response.status == 200
    assert get_principal(app.calls[0].environ).authenticated is False


# -- routes ----------------------------------------------------------------------------


def test_OWASP_24_undeclared_path_is_404(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    assert_problem(wsgi_request(mw, "GET", "/open-banking/v9.9/aisp/accounts"), 404)
    assert app.calls == []


def test_OWASP_17_wrong_method_is_405_with_allow(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    response = wsgi_request(mw, "GET", "/payments")
    assert_problem(response, 405)
    assert response.get_all("allow") == ["POST"]
    assert app.calls == []


def test_FAPI_17_head_is_admitted_where_get_is_declared(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    assert wsgi_request(mw, "HEAD", "/accounts").status == 200
    assert app.calls[0].environ["REQUEST_METHOD"] == "HEAD"


def test_FAPI_17_head_denial_has_an_empty_body(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    response = wsgi_request(mw, "HEAD", "/admin")
    assert response.status == 404
    assert response.raw_body == b""
    assert response.get("content-type") == PROBLEM
    assert app.calls == []


# -- response headers ------------------------------------------------------------------


def test_FAPI_08_interaction_id_echoed_and_app_value_replaced(guard: Guard) -> None:
    app = RecordingWSGIApp(headers=[("Content-Type", "application/json"), ("X-Fapi-Interaction-Id", "app")])
    response = wsgi_request(BankGuardWSGI(app, guard=guard), headers=[("x-fapi-interaction-id", FIXED_IID)])
    assert response.get_all("x-fapi-interaction-id") == [FIXED_IID]


def test_FAPI_08_interaction_id_generated_when_absent(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    response = wsgi_request(mw)
    (iid,) = response.get_all("x-fapi-interaction-id")
    assert re.match(UUID_RE, iid)
    assert get_context(app.calls[0].environ).interaction_id == iid


@pytest.mark.parametrize(
    "value", ["abc\r\nSet-Cookie: x=1", FIXED_IID + ", 0b5a0f54-8c9c-4d0e-9a63-1f0d1e2c3b4a"]
)
def test_FAPI_10_invalid_interaction_id_is_replaced_never_reflected(mw: BankGuardWSGI, value: str) -> None:
    response = wsgi_request(mw, headers=[("x-fapi-interaction-id", value)])
    (iid,) = response.get_all("x-fapi-interaction-id")
    assert iid != value
    assert re.match(UUID_RE, iid)


def test_FWD_07_OWASP_23_security_headers_added_when_the_app_sets_none(mw: BankGuardWSGI) -> None:
    response = wsgi_request(mw)
    assert response.get_all("cache-control") == ["no-store"]
    assert response.get_all("x-content-type-options") == ["nosniff"]
    assert response.raw_body == b'{"ok":true}'


def test_OWASP_23_app_cache_control_is_kept(guard: Guard) -> None:
    app = RecordingWSGIApp(headers=[("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")])
    response = wsgi_request(BankGuardWSGI(app, guard=guard))
    assert response.get_all("cache-control") == ["max-age=60"]
    assert response.get_all("x-content-type-options") == ["nosniff"]


def test_FWD_06_client_cert_response_headers_are_stripped(guard: Guard) -> None:
    app = RecordingWSGIApp(
        headers=[
            ("Content-Type", "application/json"),
            ("Client-Cert", ":MIIB:"),
            ("Client-Cert-Chain", ":MIIC:"),
        ]
    )
    response = wsgi_request(BankGuardWSGI(app, guard=guard))
    names = {k for k, _ in response.headers}
    assert "client-cert" not in names
    assert "client-cert-chain" not in names


def test_start_response_exc_info_is_passed_through_with_merged_headers(guard: Guard) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise LookupError("late failure")
        except LookupError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]

    response = wsgi_request(BankGuardWSGI(app, guard=guard))
    assert response.status == 500
    assert response.exc_info is not None
    assert response.exc_info[0] is LookupError
    assert response.get("cache-control") == "no-store"
    assert re.match(UUID_RE, response.get("x-fapi-interaction-id") or "")


def test_start_response_write_callable_is_returned(guard: Guard) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written, ")
        return [b"returned"]

    response = wsgi_request(BankGuardWSGI(app, guard=guard))
    assert response.raw_body == b"written, returned"
    assert response.exc_info is None


# -- fail closed -----------------------------------------------------------------------


def test_exception_inside_the_guard_is_503_problem_never_500(
    mw: BankGuardWSGI, app: RecordingWSGIApp, events: EventCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: Guard, facts: RequestFacts, store: object = None) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Guard, "decide", explode)
    response = wsgi_request(mw)
    document = assert_problem(response, 503)
    assert document["type"].endswith("/security-check-failed")
    assert response.get("retry-after") == "1"
    assert b"secret internal detail" not in response.raw_body
    assert b"Traceback" not in response.raw_body
    assert app.calls == []
    event = last_event(events)
    assert (event.control, event.reason) == ("adapter", "adapter.internal_error")


def test_exception_inside_the_guard_on_head_has_an_empty_body(
    mw: BankGuardWSGI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: Guard, facts: RequestFacts, store: object = None) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Guard, "decide", explode)
    response = wsgi_request(mw, "HEAD", "/accounts")
    assert response.status == 503
    assert response.raw_body == b""


def test_unreadable_input_stream_fails_closed(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise OSError("connection reset")

    environ = wsgi_environ("POST", "/payments", [], body=b"hello")
    environ["wsgi.input"] = Broken()
    response = wsgi_call(mw, environ)
    assert_problem(response, 503)
    assert app.calls == []


# -- security context -----------------------------------------------------------------


def test_security_context_is_in_the_environ(mw: BankGuardWSGI, app: RecordingWSGIApp) -> None:
    wsgi_request(mw, "GET", "/accounts/acc-002", headers=[("x-fapi-interaction-id", FIXED_IID)])
    environ = app.calls[0].environ
    assert CONTEXT_KEY == "bankguard.context"
    context = environ["bankguard.context"]
    assert isinstance(context, SecurityContext)
    assert context is get_context(environ)
    assert context.interaction_id == FIXED_IID
    assert context.operation is not None
    assert context.operation.id == "getAccount"
    assert dict(context.path_params) == {"AccountId": "acc-002"}
    assert isinstance(get_principal(environ), Principal)


def test_get_context_on_an_unprotected_environ_raises() -> None:
    with pytest.raises(NotProtectedError):
        get_context(wsgi_environ("GET", "/accounts", []))


# -- Flask and protect() ----------------------------------------------------------------


def test_protect_wraps_flask_wsgi_app_and_returns_the_same_app() -> None:
    flask_app = build_flask_bank()
    original = flask_app.wsgi_app
    protected = protect(flask_app, make_policy())
    assert protected is flask_app
    assert isinstance(flask_app.wsgi_app, BankGuardWSGI)
    assert flask_app.wsgi_app.app == original

    @flask_app.get("/accounts/<account_id>/statements")
    def statements(account_id: str) -> Any:  # added after protect(): still behind bankguard
        return jsonify(account_id=account_id)

    client = flask_app.test_client()
    assert client.get("/accounts/acc-001/statements").status_code == 404
    ok = client.get("/accounts", headers={"x-fapi-interaction-id": FIXED_IID})
    assert ok.status_code == 200
    assert ok.headers["x-fapi-interaction-id"] == FIXED_IID
    assert ok.headers["cache-control"] == "no-store"
    assert ok.json is not None
    assert ok.json["operation"] == "listAccounts"


def test_flask_test_client_requests_are_guarded() -> None:
    calls: list[str] = []
    flask_app = protect(build_flask_bank(calls), make_policy())
    client = flask_app.test_client()
    duplicate = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
    oversize = b"x" * (MAX_BODY + 1)
    assert client.get("/accounts?access_token=abc").status_code == 401
    assert client.get("/accounts", headers=duplicate).status_code == 400
    assert client.post("/payments", data=oversize, content_type="application/json").status_code == 413
    assert client.get("/accounts/acc%2F001").status_code == 400
    assert client.delete("/accounts").status_code == 405
    assert calls == []
    created = client.post("/payments", json={"Amount": "1.00"})
    assert created.status_code == 201
    assert created.json is not None
    assert created.json["Data"]["Initiation"] == {"Amount": "1.00"}
    head = client.head("/accounts")
    assert head.status_code == 200
    assert head.data == b""
    assert calls == ["create_payment", "list_accounts"]


def test_flask_helpers_read_the_security_context() -> None:
    flask_app = Flask("helpers")

    @flask_app.get("/accounts/<account_id>")
    def account(account_id: str) -> Any:
        ctx = bg_flask.current_context()
        who = bg_flask.current_principal()
        return jsonify(
            account_id=account_id,
            operation=ctx.operation.id if ctx.operation else None,
            params=dict(ctx.path_params),
            interaction_id=bg_flask.interaction_id(),
            authenticated=who.authenticated,
            same_principal=who is ctx.principal,
        )

    protect(flask_app, make_policy())
    response = flask_app.test_client().get("/accounts/acc-001", headers={"x-fapi-interaction-id": FIXED_IID})
    assert response.status_code == 200
    assert response.json == {
        "account_id": "acc-001",
        "operation": "getAccount",
        "params": {"AccountId": "acc-001"},
        "interaction_id": FIXED_IID,
        "authenticated": False,
        "same_principal": True,
    }


def test_flask_helpers_outside_bankguard_raise_not_protected() -> None:
    flask_app = build_flask_bank()
    flask_app.testing = True  # let the view's exception reach the test
    with pytest.raises(NotProtectedError):
        flask_app.test_client().get("/accounts")
    with flask_app.test_request_context("/accounts"), pytest.raises(NotProtectedError):
        bg_flask.current_principal()


def test_protect_wraps_a_plain_wsgi_callable(app: RecordingWSGIApp) -> None:
    def plain(environ: dict[str, Any], start_response: Any) -> Any:
        return app(environ, start_response)

    protected = protect(plain, make_policy())
    assert isinstance(protected, BankGuardWSGI)
    assert protected.app is plain
    assert wsgi_request(protected, "GET", "/nowhere").status == 404
    assert wsgi_request(protected).status == 200
    assert len(app.calls) == 1


def test_protect_kind_wsgi_and_invalid_kind(app: RecordingWSGIApp) -> None:
    assert isinstance(protect(app, make_policy(), kind="wsgi"), BankGuardWSGI)
    with pytest.raises(ValueError, match="kind"):
        protect(app, make_policy(), kind="rsgi")  # type: ignore[arg-type]


def test_flask_bank_through_the_middleware_with_a_guard() -> None:
    guard, events = make_guard()
    calls: list[str] = []
    flask_app = build_flask_bank(calls)
    flask_app.wsgi_app = BankGuardWSGI(flask_app.wsgi_app, guard=guard)  # type: ignore[method-assign]
    response = wsgi_request(
        flask_app,
        "POST",
        "/payments",
        headers=[("Content-Type", "application/json"), ("x-fapi-interaction-id", FIXED_IID)],
        body=b'{"Amount": "10.00"}',
        chunked=True,
    )
    assert response.status == 201
    assert response.json()["Data"]["Initiation"] == {"Amount": "10.00"}
    assert response.json()["interaction_id"] == FIXED_IID
    assert calls == ["create_payment"]
    assert [(e.outcome, e.operation) for e in events.events] == [("allow", "createPayment")]


@pytest.mark.parametrize("kind", ["flask", "raw-middleware"])
def test_protect_twice_is_refused(kind: str) -> None:
    # Two guards would decide every request twice and write two audit events.
    flask_app = build_flask_bank()
    target: Any = protect(flask_app, make_policy())
    if kind == "raw-middleware":
        target = BankGuardWSGI(flask_app.wsgi_app, make_policy())
    with pytest.raises(ValueError, match="already protected"):
        protect(target, make_policy())


def test_OWASP_18_lower_case_method_is_refused_under_wsgi() -> None:
    # werkzeug upper-cases REQUEST_METHOD before routing: "get" must not reach GET undeclared.
    events = EventCollector()
    app = RecordingWSGIApp()
    wsgi = BankGuardWSGI(app, guard=Guard(make_policy(routes={"undeclared": "allow"}), sink=events))
    response = wsgi_request(wsgi, "get", "/accounts")
    assert response.status == 400
    assert app.calls == []
    assert events.events[-1].reason == "request.method_not_upper_case"
