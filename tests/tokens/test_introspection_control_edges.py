"""Opaque tokens through the guard (RFC 7662), with the endpoint replaced by an in-memory table:
active and inactive answers, claims that fail INTRO-03, claims of the wrong type, and an
endpoint that cannot answer (503 + Retry-After, fail closed; RFC 6750 §3.1 for the 401s)."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

import pytest

import bankguard.tokens.introspection as introspection_module
from bankguard import BankGuardWSGI, EventCollector, Guard, Policy
from bankguard.testing import make_facts
from bankguard.tokens._http import FetchError, HttpResponse

SECRET_ENV = "BANKGUARD_EDGES_INTROSPECTION_SECRET"
AUDIENCE = "https://api.bank.example"
ISSUER = "https://as.bank.example"


class FakeEndpoint:
    """Answers per token: a claims mapping (JSON 200), an int (that status), or an exception."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.calls = 0

    def __call__(self, method: str, url: str, *, body: bytes, **kw: Any) -> HttpResponse:
        self.calls += 1
        token = parse_qs(body.decode())["token"][0]
        answer = self.answers[token]
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, int):
            return HttpResponse(answer, {}, b"")
        return HttpResponse(200, {"content-type": "application/json"}, json.dumps(answer).encode())


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> FakeEndpoint:
    fake = FakeEndpoint()
    monkeypatch.setattr(introspection_module, "request", fake)
    monkeypatch.setenv(SECRET_ENV, "s" * 32)
    return fake


@pytest.fixture
def events() -> EventCollector:
    return EventCollector()


@pytest.fixture
def guard(endpoint: FakeEndpoint, events: EventCollector) -> Guard:
    policy = Policy.from_dict(
        {
            "tokens": {
                "introspection": {
                    "endpoint": "https://as.bank.example/introspect",
                    "client_id": "rs",
                    "client_secret_env": SECRET_ENV,
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                }
            },
            "routes": {"operations": [{"method": "GET", "path": "/accounts", "scopes": ["accounts"]}]},
        }
    )
    return Guard(policy, sink=events)


def active(**claims: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "active": True,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "psu-1",
        "client_id": "tpp-1",
        "scope": "accounts",
        "exp": now + 300,
        **claims,
    }


def decide(guard: Guard, token: str) -> Any:
    return guard.decide(make_facts("GET", "/accounts", headers=[("authorization", f"Bearer {token}")]))


def test_INTRO_active_token_is_accepted_and_cached(guard: Guard, endpoint: FakeEndpoint) -> None:
    endpoint.answers["opaque-1"] = active()
    decision = decide(guard, "opaque-1")
    assert decision.allowed
    assert (decision.principal.client_id, decision.principal.subject) == ("tpp-1", "psu-1")
    assert decide(guard, "opaque-1").allowed
    assert endpoint.calls == 1  # the second request is answered from the cache (INTRO-04)


def test_INTRO_02_inactive_token_is_401_invalid_token(
    guard: Guard, endpoint: FakeEndpoint, events: EventCollector
) -> None:
    endpoint.answers["revoked"] = {"active": False}
    decision = decide(guard, "revoked")
    assert not decision.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (401, "token.inactive")
    problem = guard.problem(decision)
    assert 'error="invalid_token"' in dict(problem.headers)["www-authenticate"]


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://other-rs.example"}, "token.introspection.audience"),
        ({"iss": "https://other-as.example"}, "token.introspection.issuer"),
        ({"exp": 1}, "token.introspection.expired"),
        ({"exp": "soon"}, "token.introspection.malformed_claim"),
    ],
)
def test_INTRO_03_claims_of_an_active_answer_are_checked(
    guard: Guard, endpoint: FakeEndpoint, events: EventCollector, claims: dict[str, Any], reason: str
) -> None:
    endpoint.answers["t"] = active(**claims)
    assert not decide(guard, "t").allowed
    assert (events.events[-1].status, events.events[-1].reason) == (401, reason)


@pytest.mark.parametrize("claims", [{"sub": 42}, {"client_id": ""}])
def test_INTRO_claims_of_the_wrong_type_are_invalid_tokens(
    guard: Guard, endpoint: FakeEndpoint, events: EventCollector, claims: dict[str, Any]
) -> None:
    endpoint.answers["t"] = active(**claims)
    decision = decide(guard, "t")
    assert not decision.allowed
    assert events.events[-1].status == 401
    assert events.events[-1].reason.startswith("token.")
    assert 'error="invalid_token"' in dict(guard.problem(decision).headers)["www-authenticate"]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (FetchError("connection_failed"), "token.introspection_unavailable:connection_failed"),
        (500, "token.introspection_unavailable:status_500"),
    ],
)
def test_INTRO_05_endpoint_without_an_answer_is_503_with_retry_after(
    guard: Guard, endpoint: FakeEndpoint, events: EventCollector, answer: Any, reason: str
) -> None:
    endpoint.answers["t"] = answer
    decision = decide(guard, "t")
    assert not decision.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (503, reason)
    problem = guard.problem(decision)
    assert problem.status == 503
    assert dict(problem.headers)["retry-after"] == "5"


def test_INTRO_05_unexpected_client_failure_fails_closed(endpoint: FakeEndpoint, guard: Guard) -> None:
    """A bug below the client (not a fetch error) must never let the request through."""
    endpoint.answers["t"] = RuntimeError("bug in the HTTP layer")
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:  # never reached
        seen["called"] = True
        start_response("200 OK", [])
        return [b""]

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"] = status

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/accounts",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "203.0.113.9",
        "wsgi.url_scheme": "https",
        "HTTP_AUTHORIZATION": "Bearer t",
    }
    b"".join(BankGuardWSGI(app, guard=guard)(environ, start_response))
    assert "called" not in seen
    assert seen["status"] == "503 Service Unavailable"
