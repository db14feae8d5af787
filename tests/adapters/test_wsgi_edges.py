"""BankGuardWSGI edge cases: header spellings a client controls, paths that are not latin-1
text, call-time scope refusals from plain WSGI apps, and the response path of the OpenAPI
contract (streamed pass-through, overflow, failing iterables, unnamed status codes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bankguard import BankGuardWSGI, EventCollector, Guard, Policy, require_scopes
from bankguard.testing import TestIssuer

from .conftest import (
    PROBLEM,
    RecordingWSGIApp,
    assert_problem,
    make_guard,
    wsgi_call,
    wsgi_environ,
    wsgi_request,
)

ISSUER = TestIssuer("https://as.bank.example", alg="ES256")

SPEC = """
openapi: 3.0.3
info: {title: edges, version: "1"}
security: []
paths:
  /accounts/{AccountId}:
    get:
      operationId: GetAccount
      parameters:
        - {name: AccountId, in: path, required: true, schema: {type: string}}
      responses:
        "200":
          description: the account
          content:
            application/json:
              schema:
                type: object
                additionalProperties: false
                properties: {AccountId: {type: string}, Notes: {type: string}}
        "299":
          description: an extension status
          content:
            application/json:
              schema: {type: object, properties: {AccountId: {type: string}}}
        "404":
          description: unknown
  /payments:
    post:
      operationId: CreatePayment
      requestBody:
        required: true
        content:
          application/json:
            schema: {type: object, properties: {Amount: {type: string}}}
      responses:
        "201": {description: created}
"""


def contract_guard(tmp_path: Path, events: EventCollector) -> Guard:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    policy = Policy.from_dict(
        {"openapi": {"spec": str(spec), "responses": {"max_body_bytes": "1KiB"}}, "audit": {"sink": events}}
    )
    return Guard(policy, sink=events)


class ClosingBody:
    """A WSGI response iterable that records whether the server (or middleware) closed it."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.closed = False
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            if self.fail_after is not None and self.sent == self.fail_after:
                raise RuntimeError("the application failed while streaming")
            self.sent += 1
            yield chunk

    def close(self) -> None:
        self.closed = True


def app_answering(status: str, headers: list[tuple[str, str]], body: Any, *, exc_info: bool = False) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if exc_info:
            try:
                raise ValueError("handled error page")
            except ValueError:
                import sys

                start_response(status, headers, sys.exc_info())
        else:
            start_response(status, headers)
        return body

    return app


@pytest.fixture
def events() -> EventCollector:
    return EventCollector()


# -- request side ---------------------------------------------------------------------------


def test_repr_names_app_and_guard() -> None:
    guard, _ = make_guard()
    app = RecordingWSGIApp()
    text = repr(BankGuardWSGI(app, guard=guard))
    assert text.startswith("BankGuardWSGI(app=<")
    assert "guard=" in text


def test_exactly_one_of_policy_or_guard() -> None:
    guard, _ = make_guard()
    with pytest.raises(TypeError, match="exactly one"):
        BankGuardWSGI(RecordingWSGIApp(), guard.policy, guard=guard)
    with pytest.raises(TypeError, match="exactly one"):
        BankGuardWSGI(RecordingWSGIApp())


def test_client_spelled_content_type_is_not_the_content_type(tmp_path: Path, events: EventCollector) -> None:
    """A client's ``Content_Type`` line lands in ``HTTP_CONTENT_TYPE``; only ``CONTENT_TYPE`` counts."""
    app = RecordingWSGIApp(status="201 Created", headers=(), body=b"")
    mw = BankGuardWSGI(app, guard=contract_guard(tmp_path, events))
    environ = wsgi_environ("POST", "/payments", [], body=b'{"Amount":"1.00"}')
    environ["HTTP_CONTENT_TYPE"] = "application/json"
    response = wsgi_call(mw, environ)
    assert (response.status, response.get("content-type")) == (415, PROBLEM)
    assert response.json()["status"] == 415
    assert app.calls == []
    assert events.events[-1].reason.startswith("openapi.")
    # The same body with the real CONTENT_TYPE is accepted.
    environ = wsgi_environ(
        "POST", "/payments", [("content-type", "application/json")], body=b'{"Amount":"1"}'
    )
    assert wsgi_call(mw, environ).status == 201
    assert [call.body for call in app.calls] == [b'{"Amount":"1"}']


def test_path_info_that_is_not_latin1_text_is_used_as_given() -> None:
    """Some servers hand PATH_INFO already decoded; characters beyond latin-1 are kept, not lost."""
    guard, events = make_guard()
    app = RecordingWSGIApp()
    mw = BankGuardWSGI(app, guard=guard)
    environ = wsgi_environ("GET", "/accounts/x", [])
    environ["PATH_INFO"] = "/accounts/\u20ac"
    del environ["RAW_URI"], environ["REQUEST_URI"]
    response = wsgi_call(mw, environ)
    assert response.status == 200
    context = app.calls[0].environ["bankguard.context"]
    assert dict(context.path_params) == {"AccountId": "\u20ac"}
    assert events.events[-1].operation == "getAccount"


# -- call-time scope checks in a plain WSGI app --------------------------------------------------


def token_guard(events: EventCollector) -> Guard:
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
            "routes": {
                "operations": [
                    {"method": "GET", "path": "/accounts", "id": "listAccounts"},
                    {"method": "GET", "path": "/public", "public": True},
                ]
            },
        }
    )
    return Guard(policy, sink=events)


@require_scopes("accounts:detail")
def detailed_accounts() -> bytes:
    return b'{"Data":[]}'


def handler_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Plain WSGI: routing the guard cannot see, calling a decorated function."""
    body = detailed_accounts()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def test_SCOPE_call_time_refusal_is_403_insufficient_scope(events: EventCollector) -> None:
    mw = BankGuardWSGI(handler_app, guard=token_guard(events))
    response = wsgi_request(mw, "GET", "/accounts", headers=[("authorization", f"Bearer {ISSUER.mint()}")])
    document = assert_problem(response, 403)
    assert document["status"] == 403
    challenge = response.get("www-authenticate") or ""
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="accounts:detail"' in challenge
    event = events.events[-1]
    assert (event.outcome, event.control, event.reason) == ("deny", "scopes", "scope.insufficient")
    assert (event.method, event.path, event.operation) == ("GET", "/accounts", "listAccounts")


def test_SCOPE_call_time_check_passes_with_the_scope(events: EventCollector) -> None:
    mw = BankGuardWSGI(handler_app, guard=token_guard(events))
    token = ISSUER.mint(scope="accounts accounts:detail")
    response = wsgi_request(mw, "GET", "/accounts", headers=[("authorization", f"Bearer {token}")])
    assert (response.status, response.raw_body) == (200, b'{"Data":[]}')


def test_SCOPE_call_time_check_on_a_public_route_needs_a_token(events: EventCollector) -> None:
    mw = BankGuardWSGI(handler_app, guard=token_guard(events))
    response = wsgi_request(mw, "HEAD", "/public")
    assert response.status == 401
    assert response.get("content-type") == PROBLEM
    assert response.body == b""
    assert response.get("www-authenticate") is not None
    assert events.events[-1].reason == "token.missing"


def test_SCOPE_decorated_function_outside_bankguard_refuses_to_run() -> None:
    from bankguard import NotProtectedError

    with pytest.raises(NotProtectedError, match="protect"):
        detailed_accounts()


# -- response side of the OpenAPI contract -------------------------------------------------------


def test_non_json_response_streams_and_is_closed(tmp_path: Path, events: EventCollector) -> None:
    body = ClosingBody([b"one,", b"two,", b"three"])
    app = app_answering("200 OK", [("Content-Type", "text/csv")], body)
    response = wsgi_call(
        BankGuardWSGI(app, guard=contract_guard(tmp_path, events)), wsgi_environ("GET", "/accounts/a1", [])
    )
    assert (response.status, response.raw_body) == (200, b"one,two,three")
    assert response.get("x-fapi-interaction-id") is not None
    assert body.closed


def test_non_json_response_with_exc_info_is_passed_on(tmp_path: Path, events: EventCollector) -> None:
    app = app_answering(
        "500 Internal Server Error", [("Content-Type", "text/html")], [b"<p>x</p>"], exc_info=True
    )
    mw = BankGuardWSGI(app, guard=contract_guard(tmp_path, events))
    response = wsgi_call(mw, wsgi_environ("GET", "/accounts/a1", []))
    assert (response.status, response.raw_body) == (500, b"<p>x</p>")
    assert response.exc_info is not None
    assert response.exc_info[0] is ValueError


def test_empty_non_json_response(tmp_path: Path, events: EventCollector) -> None:
    app = app_answering("404 Not Found", [("Content-Type", "text/plain")], [])
    response = wsgi_call(
        BankGuardWSGI(app, guard=contract_guard(tmp_path, events)), wsgi_environ("GET", "/accounts/a1", [])
    )
    assert (response.status, response.raw_body) == (404, b"")


def test_oversized_json_response_passes_untouched_and_is_audited(
    tmp_path: Path, events: EventCollector
) -> None:
    chunks = [b'{"AccountId":"a1","Notes":"', b"x" * 600, b"y" * 600, b'","Secret":"s"}']
    body = ClosingBody(chunks)
    app = app_answering("200 OK", [("Content-Type", "application/json")], body)
    response = wsgi_call(
        BankGuardWSGI(app, guard=contract_guard(tmp_path, events)), wsgi_environ("GET", "/accounts/a1", [])
    )
    assert response.status == 200
    assert response.raw_body == b"".join(chunks)  # undeclared "Secret" not stripped: not buffered
    assert body.closed
    assert [e.reason for e in events.events][-1] == "openapi.response_not_buffered"
    assert events.events[-1].outcome == "report"


def test_application_failing_mid_body_is_closed_and_the_error_propagates(
    tmp_path: Path, events: EventCollector
) -> None:
    body = ClosingBody([b'{"AccountId":', b'"a1"}'], fail_after=1)
    app = app_answering("200 OK", [("Content-Type", "application/json")], body)
    mw = BankGuardWSGI(app, guard=contract_guard(tmp_path, events))
    with pytest.raises(RuntimeError, match="failed while streaming"):
        wsgi_call(mw, wsgi_environ("GET", "/accounts/a1", []))
    assert body.closed


@pytest.mark.parametrize(
    ("status", "line"), [("299 Account Moved", "299 Account Moved"), ("299", "299 Unknown")]
)
def test_status_python_does_not_name_keeps_the_applications_phrase(
    tmp_path: Path, events: EventCollector, status: str, line: str
) -> None:
    seen: dict[str, str] = {}
    app = app_answering(status, [("Content-Type", "application/json")], [b'{"AccountId":"a1","Extra":1}'])
    mw = BankGuardWSGI(app, guard=contract_guard(tmp_path, events))

    def start_response(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"] = status_line
        return None

    body = b"".join(mw(wsgi_environ("GET", "/accounts/a1", []), start_response))
    assert seen["status"] == line
    assert body == b'{"AccountId":"a1"}'  # minimised: "Extra" is not declared


def test_legacy_write_callable_is_buffered_with_the_body(tmp_path: Path, events: EventCollector) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "application/json")])
        write(b'{"AccountId":"a1",')
        return [b'"Secret":"s"}']

    response = wsgi_call(
        BankGuardWSGI(app, guard=contract_guard(tmp_path, events)), wsgi_environ("GET", "/accounts/a1", [])
    )
    assert response.status == 200
    assert response.json() == {"AccountId": "a1"}
    assert response.get("content-length") == str(len(response.raw_body))
    assert events.events[-1].reason == "openapi.response_minimised"
