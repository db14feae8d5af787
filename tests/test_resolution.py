"""Declarations the guard must see however the application is assembled, and key changes
that must reach the verified-token cache."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask, jsonify
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Host, Route, Router
from starlette.testclient import TestClient

from bankguard import (
    BankGuardMiddleware,
    BankGuardWSGI,
    ConfigurationError,
    EventCollector,
    Guard,
    Policy,
    protect,
    require_scopes,
)
from bankguard.testing import TestIssuer, make_facts

AUDIENCE = "https://api.bank.example"
ISSUER = TestIssuer()


def policy(**routes: Any) -> Policy:
    return Policy.from_dict(
        {
            "tokens": {
                "issuers": [
                    {
                        "issuer": ISSUER.issuer,
                        "audiences": [AUDIENCE],
                        "algorithms": ["ES256"],
                        "jwks": ISSUER.jwks(),
                    }
                ]
            },
            "routes": {"undeclared": "allow", **routes},
        }
    )


def test_OWASP_17_head_cannot_be_declared_beside_get() -> None:
    with pytest.raises(ConfigurationError, match="HEAD is served with the rules of the GET"):
        policy(
            operations=[
                {"method": "GET", "path": "/accounts", "scopes": ["accounts"]},
                {"method": "HEAD", "path": "/accounts", "public": True},
            ]
        )


async def admin(request: Any) -> JSONResponse:
    return JSONResponse({"secret": "admin"})


def test_host_routes_are_walked() -> None:
    inner = Router(routes=[Route("/admin", require_scopes("admin")(admin))])
    app = protect(Starlette(routes=[Host("api.bank.example", app=inner)]), policy())
    with TestClient(app, base_url="http://api.bank.example") as client:
        assert client.get("/admin").status_code == 401
        token = ISSUER.mint(scope="admin")
        assert client.get("/admin", headers={"authorization": f"Bearer {token}"}).status_code == 200


def test_middleware_wrapped_directly_still_sees_decorators_above_the_route() -> None:
    app = FastAPI()

    @require_scopes("admin")  # above the route decorator: only the pre-dispatch check can see it
    @app.get("/admin")
    async def secret() -> dict[str, str]:
        return {"secret": "admin"}

    wrapped = BankGuardMiddleware(app, guard=Guard(policy(), sink=EventCollector()))
    with TestClient(wrapped) as client:
        assert client.get("/admin").status_code == 401


def test_flask_wrapped_directly_sees_decorators_and_renders_refusals() -> None:
    flask_app = Flask(__name__)

    @require_scopes("admin")
    @flask_app.get("/admin")
    def secret_above() -> Any:
        return jsonify(secret="admin")

    @flask_app.get("/other")
    @require_scopes("admin")
    def secret_below() -> Any:
        return jsonify(secret="admin")

    flask_app.wsgi_app = BankGuardWSGI(flask_app.wsgi_app, guard=Guard(policy(), sink=EventCollector()))  # type: ignore[method-assign]
    client = flask_app.test_client()
    token = ISSUER.mint(scope="accounts")
    for path in ("/admin", "/other"):
        assert client.get(path).status_code == 401
        refused = client.get(path, headers={"authorization": f"Bearer {token}"})
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"


def test_JWKS_06_key_change_empties_the_verified_token_cache() -> None:
    events = EventCollector()
    guard = Guard(policy(operations=[{"method": "GET", "path": "/accounts"}]), sink=events)
    token = ISSUER.mint()
    facts = make_facts("GET", "/accounts", headers=[("authorization", f"Bearer {token}")])
    assert guard.decide(facts).allowed
    check = guard.tokens
    assert check is not None
    assert len(check.cache) == 1
    check.forget_verified()  # what a remote key set calls when its keys change or go stale
    assert len(check.cache) == 0
    assert guard.decide(facts).allowed  # verified again, from scratch
