"""The token control with a remote key set through the guard; guard_of(); the policy summary."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Security
from flask import Flask

from bankguard import (
    BankGuardMiddleware,
    BankGuardWSGI,
    EventCollector,
    Guard,
    Policy,
    Principal,
    guard_of,
    protect,
)
from bankguard.integrations.fastapi import bearer
from bankguard.testing import TestIssuer, make_facts

AUDIENCE = "https://api.bank.example"


class KeyServer:
    """A JWKS endpoint on 127.0.0.1 that can be switched on and off."""

    def __init__(self) -> None:
        self.document: dict[str, Any] | None = None
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                if outer.document is None:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    server = KeyServer()
    yield server
    server.close()


def remote_policy(url: str, issuer: TestIssuer, **refresh: Any) -> Policy:
    return Policy.from_dict(
        {
            "tokens": {
                "issuers": [
                    {
                        "issuer": issuer.issuer,
                        "audiences": [AUDIENCE],
                        "algorithms": [issuer.alg],
                        "jwks_uri": url,
                        "insecure_http": True,
                        "refresh": {"cooldown": 0, **refresh},
                    }
                ]
            },
            "routes": {"operations": [{"method": "GET", "path": "/accounts", "scopes": ["accounts"]}]},
        }
    )


def test_JWKS_05_keys_unavailable_at_start_are_fetched_on_the_next_token(key_server: KeyServer) -> None:
    # The key server is down when the guard starts: the source starts empty (fail closed).
    issuer = TestIssuer()
    events = EventCollector()
    guard = Guard(remote_policy(key_server.url, issuer), sink=events)
    try:
        token = issuer.mint()
        facts = make_facts("GET", "/accounts", headers=[("authorization", f"Bearer {token}")])
        refused = guard.decide(facts)
        assert (refused.allowed, events.events[-1].reason) == (False, "token.keys_unavailable")
        # The server comes back: the next token triggers one refetch, no waiting for the schedule.
        key_server.document = issuer.jwks()
        allowed = guard.decide(facts)
        assert allowed.allowed, events.events[-1].reason
        assert allowed.principal.client_id == "tpp-client-1"
    finally:
        guard.close()


def test_JWKS_04_unknown_kid_through_the_async_driver(key_server: KeyServer) -> None:
    import asyncio

    old, new = TestIssuer(kid="k1"), TestIssuer(kid="k2")
    key_server.document = old.jwks()
    guard = Guard(remote_policy(key_server.url, old), sink=EventCollector())
    try:
        key_server.document = {"keys": [old.public_jwk(), new.public_jwk()]}
        token = new.mint()
        facts = make_facts("GET", "/accounts", headers=[("authorization", f"Bearer {token}")])
        decision = asyncio.run(guard.adecide(facts))  # the refetch runs in a worker thread
        assert decision.allowed
    finally:
        guard.close()


def test_guard_of_finds_the_guard_of_every_kind_of_app() -> None:
    issuer = TestIssuer()
    policy = Policy.from_dict(
        {
            "tokens": {
                "issuers": [
                    {
                        "issuer": issuer.issuer,
                        "audiences": [AUDIENCE],
                        "algorithms": ["ES256"],
                        "jwks": issuer.jwks(),
                    }
                ]
            }
        }
    )
    fastapi_app = protect(FastAPI(), policy)
    flask_app = protect(Flask(__name__), policy)

    async def raw_asgi(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
        return None

    wrapped = protect(raw_asgi, policy)
    assert isinstance(guard_of(fastapi_app), Guard)
    assert isinstance(guard_of(flask_app), Guard)
    assert isinstance(wrapped, BankGuardMiddleware)
    assert guard_of(wrapped) is wrapped.guard
    wsgi = BankGuardWSGI(lambda environ, start_response: [], policy)
    assert guard_of(wsgi) is wsgi.guard
    with pytest.raises(ValueError, match="not protected"):
        guard_of(FastAPI())
    # The revocation hooks are reachable through it.
    assert guard_of(fastapi_app).evict_token("never-seen") is False


def test_summary_names_the_issuers_and_scopes() -> None:
    issuer = TestIssuer()
    summary = remote_policy("http://127.0.0.1:9/jwks", issuer).summary()
    assert "scopes: accounts" in summary
    assert f"issuer {issuer.issuer} [ES256] keys: jwks_uri http://127.0.0.1:9/jwks" in summary
    assert "tokens             not configured" in Policy().summary()


def _inline_policy(issuer: TestIssuer, **extra: Any) -> dict[str, Any]:
    return {
        "tokens": {
            "issuers": [
                {
                    "issuer": issuer.issuer,
                    "audiences": [AUDIENCE],
                    "algorithms": ["ES256"],
                    "jwks": issuer.jwks(),
                }
            ],
            **extra,
        },
        "routes": {"undeclared": "allow"},
    }


def test_require_scopes_above_the_route_without_token_verification_fails_closed() -> None:
    from starlette.testclient import TestClient

    from bankguard import require_scopes

    app = protect(FastAPI(), Policy.from_dict({"routes": {"undeclared": "allow"}}))

    @require_scopes("accounts")  # above the route decorator: the framework registered the bare function
    @app.get("/accounts")
    async def accounts() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(app) as client:
        anonymous = client.get("/accounts")
        with_token = client.get("/accounts", headers={"authorization": "Bearer abc"})
    assert anonymous.status_code == 401
    assert with_token.status_code == 401
    assert with_token.headers["content-type"] == "application/problem+json"


def test_bearer_dependency_without_scopes_accepts_a_valid_token_on_an_undeclared_route() -> None:
    from starlette.testclient import TestClient

    issuer = TestIssuer()
    app = protect(FastAPI(), Policy.from_dict(_inline_policy(issuer)))

    @app.get("/me")
    async def me(who: Annotated[Principal, Security(bearer)]) -> dict[str, Any]:
        return {"client": who.client_id}

    with TestClient(app) as client:
        ok = client.get("/me", headers={"authorization": f"Bearer {issuer.mint()}"})
        missing = client.get("/me")
    assert (ok.status_code, ok.json()) == (200, {"client": "tpp-client-1"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="api"'


def test_report_mode_records_call_time_refusals_without_blocking() -> None:
    from starlette.testclient import TestClient

    from bankguard import require_scopes

    issuer = TestIssuer()
    events = EventCollector()
    policy = Policy.from_dict({**_inline_policy(issuer, mode="report"), "audit": {"sink": "logging"}})
    app = FastAPI()

    @app.get("/payments")
    @require_scopes("payments")
    async def payments() -> dict[str, str]:
        return {"ok": "yes"}

    guard = Guard(policy, sink=events)
    wrapped = BankGuardMiddleware(app, guard=guard)
    with TestClient(wrapped) as client:
        response = client.get(
            "/payments", headers={"authorization": f"Bearer {issuer.mint(scope='accounts')}"}
        )
    assert response.status_code == 200
    # Wrapped directly, the middleware still resolves the route: the decision records the refusal
    # without enforcing it, and so does the call-time check inside the application.
    assert [(e.outcome, e.reason) for e in events.events] == [
        ("report", "scope.insufficient"),
        ("report", "scope.insufficient"),
    ]


@pytest.mark.parametrize(
    ("alg", "length", "accepted"),
    [("HS256", 32, True), ("HS384", 47, False), ("HS512", 63, False), ("HS512", 64, True)],
)
def test_ATK_30_hmac_secret_at_least_the_hash_length(
    monkeypatch: pytest.MonkeyPatch, alg: str, length: int, accepted: bool
) -> None:
    from bankguard import ConfigurationError

    monkeypatch.setenv("BG_TEST_SECRET", "s" * length)
    data = {
        "tokens": {
            "issuers": [
                {
                    "issuer": "https://as",
                    "audiences": [AUDIENCE],
                    "algorithms": [alg],
                    "hmac_secret_env": "BG_TEST_SECRET",
                }
            ]
        }
    }
    if accepted:
        assert Policy.from_dict(data).tokens.issuers[0].algorithms == (alg,)
    else:
        with pytest.raises(ConfigurationError, match=f"{length + 1} bytes|{(length + 1) * 8} bits"):
            Policy.from_dict(data)


def test_upper_case_scheme_is_normalised_and_still_needs_insecure_http() -> None:
    from bankguard import ConfigurationError

    issuer = {
        "issuer": "https://as",
        "audiences": [AUDIENCE],
        "algorithms": ["ES256"],
        "jwks_uri": "HTTP://127.0.0.1:9/jwks",
    }
    with pytest.raises(ConfigurationError, match="https://"):
        Policy.from_dict({"tokens": {"issuers": [issuer]}})
    loaded = Policy.from_dict(
        {"tokens": {"issuers": [{**issuer, "insecure_http": True, "jwks_uri": "HTTPS://as/jwks"}]}}
    )
    assert loaded.tokens.issuers[0].jwks_uri == "https://as/jwks"


def test_JWT_20_null_required_claim_counts_as_missing() -> None:
    issuer = TestIssuer()
    events = EventCollector()
    guard = Guard(Policy.from_dict(_inline_policy(issuer)), sink=events)
    from bankguard.testing import sign_compact

    claims = {
        "iss": issuer.issuer,
        "aud": AUDIENCE,
        "exp": 4102444800,
        "iat": 1700000000,
        "jti": "j",
        "client_id": "c",
        "sub": None,
    }
    token = sign_compact({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}, claims, issuer._key, "ES256")
    decision = guard.decide(make_facts("GET", "/x", headers=[("authorization", f"Bearer {token}")]))
    assert not decision.allowed
    assert events.events[-1].reason == "token.claim_missing:sub"


def test_JWKS_06_withdrawn_key_stops_cached_tokens_at_once(key_server: KeyServer) -> None:
    old, new = TestIssuer(kid="k1"), TestIssuer(kid="k2")
    key_server.document = old.jwks()
    events = EventCollector()
    guard = Guard(remote_policy(key_server.url, old), sink=events)
    try:
        token = old.mint()
        facts = make_facts("GET", "/accounts", headers=[("authorization", f"Bearer {token}")])
        assert guard.decide(facts).allowed  # verified and cached
        key_server.document = new.jwks()  # k1 withdrawn
        assert guard.tokens is not None
        source = guard.tokens.verifier.issuers[old.issuer].keys  # type: ignore[union-attr]
        assert source.refresh_unknown_kid() is True  # the key set changed: listeners ran
        refused = guard.decide(facts)
        assert not refused.allowed
        assert events.events[-1].reason == "token.kid_unknown"
    finally:
        guard.close()
