"""The token control with a remote key set through the guard; guard_of(); the policy summary."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask

from bankguard import BankGuardMiddleware, BankGuardWSGI, EventCollector, Guard, Policy, guard_of, protect
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
