"""Framework integrations at their edges: scope checks that only run inside a handler (Flask,
Starlette, plain ASGI), routing that fails or does not match in the resolvers, the FastAPI
bearer dependency under report mode, and applications that cannot be weakly referenced
(RFC 6750 §3.1: 401 without a token, 403 ``insufficient_scope`` with ``scope``)."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, FastAPI, Security
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.routing import BaseConverter

from bankguard import (
    BankGuardMiddleware,
    EventCollector,
    Guard,
    Policy,
    Principal,
    ScopeRequirement,
    guard_of,
    protect,
    require_scopes,
)
from bankguard.integrations.fastapi import bearer
from bankguard.scopes import ScopeDependency
from bankguard.testing import TestIssuer

ISSUER = TestIssuer("https://as.bank.example", alg="ES256")
PROBLEM = "application/problem+json"


def policy(events: EventCollector, *operations: dict[str, Any], **extra: Any) -> Policy:
    tokens = {
        "issuers": [
            {
                "issuer": ISSUER.issuer,
                "audiences": ["https://api.bank.example"],
                "algorithms": ["ES256"],
                "jwks": ISSUER.jwks(),
            }
        ],
        **extra.pop("tokens", {}),
    }
    return Policy.from_dict(
        {"tokens": tokens, "routes": {"operations": list(operations)}, "audit": {"sink": events}, **extra}
    )


def auth(scope: str = "accounts") -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.mint(scope=scope)}"}


@require_scopes("accounts:detail")
def account_detail() -> dict[str, str]:
    """A helper the guard cannot see: checked when it is called."""
    return {"AccountId": "acc-1", "Detail": "full"}


# -- Flask -------------------------------------------------------------------------------------


def test_SCOPE_flask_call_time_refusal_renders_a_problem() -> None:
    events = EventCollector()
    app = Flask("bank")

    @app.get("/accounts/<account_id>")
    def account(account_id: str) -> Any:
        return account_detail()

    protect(app, policy(events, {"method": "GET", "path": "/accounts/{AccountId}"}))
    client = app.test_client()
    refused = client.get("/accounts/acc-1", headers=auth("accounts"))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == PROBLEM
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert 'scope="accounts:detail"' in refused.headers["www-authenticate"]
    assert refused.get_json()["status"] == 403
    event = events.events[-1]
    assert (event.outcome, event.reason, event.path) == ("deny", "scope.insufficient", "/accounts/acc-1")
    granted = client.get("/accounts/acc-1", headers=auth("accounts accounts:detail"))
    assert granted.status_code == 200
    assert granted.get_json() == {"AccountId": "acc-1", "Detail": "full"}


class FailingConverter(BaseConverter):
    """A custom converter with a bug: it raises something other than a routing error."""

    def to_python(self, value: str) -> Any:
        raise KeyError(value)


def test_SCOPE_flask_routing_failure_falls_back_to_the_app_declaration() -> None:
    events = EventCollector()
    app = Flask("bank")
    app.url_map.converters["failing"] = FailingConverter

    @app.get("/items/<failing:item>")
    def item(item: str) -> Any:  # never reached: the converter fails
        return {"item": item}

    require_scopes("admin")(app)
    protect(app, policy(events, {"method": "GET", "path": "/items/{item}"}))
    refused = app.test_client().get("/items/x", headers=auth("accounts"))
    assert refused.status_code == 403
    assert 'scope="admin"' in refused.headers["www-authenticate"]
    assert events.events[-1].reason == "scope.insufficient"


# -- Starlette and plain ASGI ------------------------------------------------------------------------


def test_SCOPE_starlette_call_time_refusal_renders_a_problem() -> None:
    events = EventCollector()

    async def account(request: Request) -> Response:
        return JSONResponse(account_detail())

    app = Starlette(routes=[Route("/accounts", account)])
    protect(app, policy(events, {"method": "GET", "path": "/accounts"}))
    client = TestClient(app, base_url="https://api.bank.example")
    refused = client.get("/accounts", headers=auth("accounts"))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == PROBLEM
    assert 'scope="accounts:detail"' in refused.headers["www-authenticate"]
    assert refused.headers["content-length"] == str(len(refused.content))
    assert refused.json()["status"] == 403
    assert events.events[-1].reason == "scope.insufficient"
    assert client.get("/accounts", headers=auth("accounts:detail")).json()["Detail"] == "full"


def asgi_run(app: Any, headers: dict[str, str]) -> tuple[list[dict[str, Any]], BaseException | None]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/accounts",
        "raw_path": b"/accounts",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("203.0.113.9", 40000),
        "server": ("api.bank.example", 443),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        asyncio.run(app(scope, receive, send))
    except BaseException as exc:
        return sent, exc
    return sent, None


def test_SCOPE_plain_asgi_call_time_refusal_before_the_response() -> None:
    events = EventCollector()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = account_detail()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": repr(body).encode()})

    mw = BankGuardMiddleware(app, policy(events, {"method": "GET", "path": "/accounts"}))
    sent, error = asgi_run(mw, auth("accounts"))
    assert error is None
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert start["status"] == 403
    assert headers["content-type"] == PROBLEM
    assert 'scope="accounts:detail"' in headers["www-authenticate"]
    assert events.events[-1].reason == "scope.insufficient"
    assert repr(mw).startswith("BankGuardMiddleware(app=<function")


def test_SCOPE_refusal_after_the_response_started_propagates() -> None:
    """Once the status line is out no problem can replace it: the error goes to the server."""
    events = EventCollector()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        account_detail()

    mw = BankGuardMiddleware(app, policy(events, {"method": "GET", "path": "/accounts"}))
    sent, error = asgi_run(mw, auth("accounts"))
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]
    assert error is not None
    assert type(error).__name__ == "InsufficientScope"


# -- FastAPI ----------------------------------------------------------------------------------------


def test_SCOPE_router_declaration_stays_on_its_routes() -> None:
    events = EventCollector()
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    router = APIRouter()

    @router.get("/x")
    async def router_route() -> dict[str, str]:
        return {"where": "router"}

    require_scopes("payments")(router)
    app.include_router(router, prefix="/r")

    @app.get("/other")
    async def other() -> dict[str, str]:
        return {"where": "app"}

    protect(app, policy(events, {"method": "GET", "path": "/r/x"}, {"method": "GET", "path": "/other"}))
    client = TestClient(app, base_url="https://api.bank.example")
    assert client.get("/other", headers=auth("accounts")).json() == {"where": "app"}
    refused = client.get("/r/x", headers=auth("accounts"))
    assert refused.status_code == 403
    assert 'scope="payments"' in refused.headers["www-authenticate"]
    assert client.get("/r/x", headers=auth("payments")).json() == {"where": "router"}


def test_SCOPE_bearer_dependency_in_report_mode_records_and_lets_through() -> None:
    events = EventCollector()
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/accounts")
    async def accounts(who: Annotated[Principal, Security(bearer)]) -> dict[str, Any]:
        return {"authenticated": who.authenticated}

    protect(app, policy(events, {"method": "GET", "path": "/accounts"}, tokens={"mode": "report"}))
    client = TestClient(app, base_url="https://api.bank.example")
    response = client.get("/accounts")
    assert (response.status_code, response.json()) == (200, {"authenticated": False})
    reports = [(e.outcome, e.reason) for e in events.events]
    assert ("report", "token.missing") in reports


def test_SCOPE_security_scopes_through_a_partial_are_enforced_before_dispatch() -> None:
    events = EventCollector()
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    ran: list[str] = []

    @app.get("/admin")
    async def admin(who: Annotated[Principal, Security(functools.partial(bearer), scopes=["admin"])]) -> Any:
        ran.append("admin")
        return {"ok": True}

    protect(app, policy(events, {"method": "GET", "path": "/admin"}))
    client = TestClient(app, base_url="https://api.bank.example")
    refused = client.get("/admin", headers=auth("accounts"))
    assert refused.status_code == 403
    assert 'scope="admin"' in refused.headers["www-authenticate"]
    assert ran == []
    (event,) = events.events
    assert event.reason == "scope.insufficient"
    assert event.peer is not None  # decided by the guard, not at call time
    assert client.get("/admin", headers=auth("admin")).json() == {"ok": True}


def test_router_routes_without_a_dependant_are_not_marked() -> None:
    router = APIRouter()

    async def raw(request: Request) -> Response:
        return Response("raw")

    router.add_route("/raw", raw)

    @router.get("/api")
    async def api() -> dict[str, str]:
        return {}

    require_scopes("payments")(router)
    from bankguard.scopes import requirement_of

    assert requirement_of(api) == ScopeRequirement(frozenset({"payments"}))
    assert requirement_of(raw) is None
    dependency = router.dependencies[-1].dependency
    assert isinstance(dependency, ScopeDependency)
    assert repr(dependency) == f"ScopeDependency({ScopeRequirement(frozenset({'payments'}))!r})"


# -- scope requirements ---------------------------------------------------------------------------------


def test_SCOPE_alternatives_combine_as_a_product() -> None:
    """(A1 or A2) and (B1 or B2) = every pair (OAS security alternatives merged with another list)."""
    a = ScopeRequirement(one_of=(frozenset({"a1"}), frozenset({"a2"})))
    b = ScopeRequirement(one_of=(frozenset({"b1"}), frozenset({"b2"})))
    merged = a.merge(b)
    assert set(merged.one_of) == {
        frozenset({"a1", "b1"}),
        frozenset({"a1", "b2"}),
        frozenset({"a2", "b1"}),
        frozenset({"a2", "b2"}),
    }
    assert merged.unmet(frozenset({"a2", "b1"})) == ()
    assert merged.unmet(frozenset({"a1"})) == ("a1", "b1")


# -- applications that cannot be weakly referenced ---------------------------------------------------------


class SlottedWSGIApp:
    __slots__ = ()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def test_protect_an_application_that_cannot_be_weakly_referenced() -> None:
    events = EventCollector()
    app = SlottedWSGIApp()
    with pytest.raises(ValueError, match="not protected"):
        guard_of(app)
    wrapped = protect(app, policy(events, {"method": "GET", "path": "/a", "public": True}))
    assert isinstance(guard_of(wrapped), Guard)
    with pytest.raises(ValueError, match="already protected"):
        protect(wrapped, policy(events))
