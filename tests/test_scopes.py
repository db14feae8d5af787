"""``require_scopes`` and ``Security(bearer, scopes=...)``: declared in code, enforced by the guard.

Every place a scope requirement can be declared (Flask views, blueprints and nested blueprints,
FastAPI and Starlette endpoints sync and async, FastAPI routers, Starlette mounts, plain ASGI
and WSGI callables, FastAPI ``Security`` dependencies, the policy's ``scopes``/``any_scopes``)
is driven in-process through the same three requests:

* no credentials → 401 with ``WWW-Authenticate: Bearer realm="api"`` and no ``error`` (AUTH-01, E1);
* a valid token lacking the scope → 403 ``insufficient_scope`` with ``scope="<needed>"``
  (AUTH-03, JWT-28, E5), the endpoint never runs, and the audit event names control ``tokens``
  and reason ``scope.insufficient``;
* a token granting the scope → 200, and the endpoint reads the verified principal.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Security
from flask import Blueprint, Flask, jsonify
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, Router
from starlette.testclient import TestClient
from werkzeug.test import Client as WerkzeugClient

from bankguard import (
    BankGuardMiddleware,
    BankGuardWSGI,
    Guard,
    Policy,
    Principal,
    ScopeRequirement,
    get_principal,
    protect,
    require_scopes,
)
from bankguard.integrations import fastapi as bg_fastapi
from bankguard.integrations import flask as bg_flask
from bankguard.scopes import requirement_of
from bankguard.testing import EventCollector, TestIssuer, capture_events

AUDIENCE = "https://api.bank.example"
ISSUER = TestIssuer()
SUBJECT = "psu-1"
CLIENT_ID = "tpp-client-1"
PROBLEM = "application/problem+json"
E1_CHALLENGE = 'Bearer realm="api"'


# -- policy, tokens, responses ---------------------------------------------------------------


def policy_data(
    *, operations: Iterable[dict[str, Any]] = (), undeclared: str = "allow", sink: Any = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
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
        "routes": {"undeclared": undeclared, "operations": list(operations)},
    }
    if sink is not None:
        data["audit"] = {"sink": sink}
    return data


def make_policy(
    *, operations: Iterable[dict[str, Any]] = (), undeclared: str = "allow", sink: Any = None
) -> Policy:
    return Policy.from_dict(policy_data(operations=operations, undeclared=undeclared, sink=sink))


def token(scope: str | None) -> str:
    return ISSUER.mint(scope=scope)


def principal_json(principal: Principal) -> dict[str, Any]:
    return {
        "authenticated": principal.authenticated,
        "subject": principal.subject,
        "client_id": principal.client_id,
        "scopes": sorted(principal.scopes),
    }


def expected_principal(scope: str) -> dict[str, Any]:
    return {
        "authenticated": True,
        "subject": SUBJECT,
        "client_id": CLIENT_ID,
        "scopes": sorted(scope.split()),
    }


@dataclass(frozen=True)
class Reply:
    status: int
    challenges: list[str]
    content_type: str | None
    body: Any


def is_asgi(app: Any) -> bool:
    return inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(
        getattr(app, "__call__", None)  # noqa: B004 - the bound method itself
    )


def client_for(app: Any) -> Callable[[str, str | None, str], Reply]:
    """A request function for an ASGI app (Starlette's TestClient) or a WSGI app (werkzeug's Client)."""
    if is_asgi(app):
        asgi_client = TestClient(app)

        def send_asgi(path: str, bearer: str | None, method: str = "GET") -> Reply:
            headers = {"authorization": f"Bearer {bearer}"} if bearer is not None else {}
            r = asgi_client.request(method, path, headers=headers)
            return Reply(
                r.status_code,
                r.headers.get_list("www-authenticate"),
                r.headers.get("content-type"),
                json.loads(r.content) if r.content else None,
            )

        return send_asgi
    wsgi_client = WerkzeugClient(app)

    def send_wsgi(path: str, bearer: str | None, method: str = "GET") -> Reply:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
        r = wsgi_client.open(path, method=method, headers=headers)
        return Reply(
            r.status_code,
            r.headers.getlist("WWW-Authenticate"),
            r.headers.get("Content-Type"),
            json.loads(r.data) if r.data else None,
        )

    return send_wsgi


_PARAM = re.compile(r'([A-Za-z_]+)="([^"]*)"')


def challenge_params(challenge: str) -> tuple[str, dict[str, str], list[str]]:
    """Scheme, auth-params and the names in order (to see repeats) of one challenge."""
    scheme, _, rest = challenge.partition(" ")
    pairs = _PARAM.findall(rest)
    return scheme, dict(pairs), [name for name, _ in pairs]


def assert_e1(reply: Reply) -> None:
    """AUTH-01 / E1: 401, one Bearer challenge with realm and no error attribute."""
    assert reply.status == 401, reply
    assert reply.challenges == [E1_CHALLENGE]
    assert "error" not in reply.challenges[0]
    assert reply.content_type == PROBLEM
    assert reply.body["status"] == 401


def assert_e5(reply: Reply, needed: str) -> None:
    """AUTH-03 / JWT-28 / E5: 403 insufficient_scope naming the scopes the operation needs."""
    assert reply.status == 403, reply
    assert len(reply.challenges) == 1, reply.challenges
    scheme, params, names = challenge_params(reply.challenges[0])
    assert scheme == "Bearer"
    assert params["realm"] == "api"
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == needed
    assert len(names) == len(set(names)), "each auth-param at most once (RFC 6750 §3)"
    assert reply.content_type == PROBLEM
    assert reply.body["status"] == 403
    assert reply.body["type"].endswith("/insufficient-scope")


# -- applications, one per way of declaring scopes --------------------------------------------


@dataclass
class Spec:
    """How to build an app (given the list its endpoint appends to) and what it requires."""

    build: Callable[[list[str]], Any]
    path: str
    #: The ``scope`` attribute the 403 must carry.
    needed: str
    #: Scopes of a valid token that does not satisfy the requirement.
    lacking: str
    #: Scopes of a token that does.
    granting: str
    #: ``protect``, or ``adapter`` (BankGuardMiddleware / BankGuardWSGI with Guard(policy, sink=...)).
    serve: str = "protect"
    operations: tuple[dict[str, Any], ...] = ()
    #: The ``scope`` attribute for a token with no scope at all; defaults to ``needed``.
    needed_without_scopes: str | None = None


@dataclass
class Served:
    send: Callable[..., Reply]
    calls: list[str]
    events: EventCollector
    spec: Spec = field(repr=False)


def serve(spec: Spec) -> Served:
    calls: list[str] = []
    events = EventCollector()
    app = spec.build(calls)
    if spec.serve == "protect":
        served = protect(app, make_policy(operations=spec.operations, sink=events))
    else:
        guard = Guard(make_policy(operations=spec.operations), sink=events)
        adapter: Any = BankGuardMiddleware if is_asgi(app) else BankGuardWSGI
        served = adapter(app, guard=guard)
    return Served(client_for(served), calls, events, spec)


# Flask ---------------------------------------------------------------------------------------


def flask_view_below_route(calls: list[str]) -> Flask:
    app = Flask(__name__)

    @app.get("/accounts")
    @require_scopes("accounts")
    def accounts() -> Any:
        calls.append("accounts")
        return jsonify(principal_json(bg_flask.current_principal()))

    return app


def flask_view_above_route(calls: list[str]) -> Flask:
    app = Flask(__name__)

    @require_scopes("accounts")
    @app.get("/accounts")
    def accounts() -> Any:
        calls.append("accounts")
        return jsonify(principal_json(bg_flask.current_principal()))

    return app


def flask_stacked(calls: list[str]) -> Flask:
    app = Flask(__name__)

    @app.get("/accounts")
    @require_scopes("accounts")
    @require_scopes("balances")
    def accounts() -> Any:
        calls.append("accounts")
        return jsonify(principal_json(bg_flask.current_principal()))

    return app


def flask_any_of(calls: list[str]) -> Flask:
    app = Flask(__name__)

    @app.post("/payments")
    @require_scopes(any_of=["payments", "payments:write"])
    def payments() -> Any:
        calls.append("payments")
        return jsonify(principal_json(bg_flask.current_principal()))

    return app


def flask_blueprint(calls: list[str]) -> Flask:
    app = Flask(__name__)
    bp = require_scopes("accounts")(Blueprint("aisp", __name__, url_prefix="/aisp"))

    @bp.get("/accounts")
    def accounts() -> Any:
        calls.append("accounts")
        return jsonify(principal_json(bg_flask.current_principal()))

    app.register_blueprint(bp)
    return app


def flask_nested_blueprints(calls: list[str]) -> Flask:
    app = Flask(__name__)
    parent = require_scopes("accounts")(Blueprint("v1", __name__, url_prefix="/v1"))
    child = require_scopes("balances")(Blueprint("aisp", __name__, url_prefix="/aisp"))

    @child.get("/balances")
    @require_scopes("transactions")
    def balances() -> Any:
        calls.append("balances")
        return jsonify(principal_json(bg_flask.current_principal()))

    parent.register_blueprint(child)
    app.register_blueprint(parent)
    return app


def flask_app_object(calls: list[str]) -> Flask:
    app = require_scopes("accounts")(Flask(__name__))

    @app.get("/accounts")
    def accounts() -> Any:
        calls.append("accounts")
        return jsonify(principal_json(bg_flask.current_principal()))

    return app


POLICY_OPERATIONS = (
    {"method": "POST", "path": "/payments", "id": "createPayment", "scopes": ["payments"]},
    {"method": "GET", "path": "/accounts", "id": "listAccounts", "any_scopes": ["accounts", "accounts:read"]},
)


def flask_policy_and_decorator(calls: list[str]) -> Flask:
    app = Flask(__name__)

    @app.post("/payments")
    @require_scopes("payments:write")
    def payments() -> Any:
        calls.append("payments")
        return jsonify(principal_json(bg_flask.current_principal()))

    return app


def flask_policy_any_scopes_and_decorator_any_of(calls: list[str]) -> Flask:
    app = Flask(__name__)

    @app.get("/accounts")
    @require_scopes(any_of=["psu", "tpp"])
    def accounts() -> Any:
        calls.append("accounts")
        return jsonify(principal_json(bg_flask.current_principal()))

    return app


# FastAPI -------------------------------------------------------------------------------------

Who = Annotated[Principal, Depends(bg_fastapi.principal)]
BearerAccounts = Annotated[Principal, Security(bg_fastapi.bearer, scopes=["accounts"])]
BearerNoScopes = Annotated[Principal, Security(bg_fastapi.bearer)]


async def current_user(who: BearerNoScopes) -> Principal:
    """A dependency built on ``bearer``; endpoints ask it for scopes (FastAPI's OAuth2 scopes pattern)."""
    return who


UserWithAccounts = Annotated[Principal, Security(current_user, scopes=["accounts"])]

#: A second bearer scheme with its own OpenAPI name.
bank_bearer = bg_fastapi.BankGuardBearer(scheme_name="bank", description="Access token from the bank AS")
BankBearerTwoScopes = Annotated[Principal, Security(bank_bearer, scopes=["accounts", "balances"])]

#: Dependencies that ran, in order (reset by the test that uses them).
DEPENDENCY_RUNS: list[str] = []


async def expensive_lookup() -> str:
    DEPENDENCY_RUNS.append("dependency")
    return "x"


Lookup = Annotated[str, Depends(expensive_lookup)]


def fastapi_async_below_route(calls: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/accounts")
    @require_scopes("accounts")
    async def accounts(who: Who) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    return app


def fastapi_sync_above_route(calls: list[str]) -> FastAPI:
    app = FastAPI()

    @require_scopes("accounts")
    @app.get("/accounts")
    def accounts(who: Who) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    return app


def fastapi_stacked(calls: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/accounts")
    @require_scopes("accounts")
    @require_scopes("balances")
    async def accounts(who: Who) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    return app


def fastapi_any_of(calls: list[str]) -> FastAPI:
    app = FastAPI()

    @app.post("/payments")
    @require_scopes(any_of=["payments", "payments:write"])
    def payments(who: Who) -> dict[str, Any]:
        calls.append("payments")
        return principal_json(who)

    return app


def _aisp_router(calls: list[str]) -> APIRouter:
    """A router decorated before its routes are added: an async route, and a sync one with its own scope."""
    router = require_scopes("accounts")(APIRouter())

    @router.get("/accounts")
    async def accounts(who: Who) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    @router.get("/balances")
    @require_scopes("balances")
    def balances(who: Who) -> dict[str, Any]:
        calls.append("balances")
        return principal_json(who)

    return router


def fastapi_router_included(calls: list[str]) -> FastAPI:
    app = FastAPI()
    app.include_router(_aisp_router(calls), prefix="/aisp")
    return app


def fastapi_router_mounted(calls: list[str]) -> FastAPI:
    app = FastAPI()
    app.mount("/aisp", _aisp_router(calls))
    return app


def fastapi_security_scopes(calls: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/accounts")
    async def accounts(who: BearerAccounts) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    return app


def fastapi_security_and_decorator(calls: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/accounts")
    @require_scopes("balances")
    def accounts(who: BearerAccounts) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    return app


def fastapi_included_router_decorated_endpoint(calls: list[str]) -> FastAPI:
    router = APIRouter()

    @router.get("/accounts")
    @require_scopes("accounts")
    async def accounts(who: Who) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    app = FastAPI()
    app.include_router(router, prefix="/aisp")
    return app


def fastapi_include_router_with_security_dependency(calls: list[str]) -> FastAPI:
    router = APIRouter()

    @router.get("/accounts")
    async def accounts(who: Who) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    app = FastAPI()
    app.include_router(router, dependencies=[Security(bg_fastapi.bearer, scopes=["accounts"])])
    return app


def fastapi_router_dependency_security(calls: list[str]) -> FastAPI:
    router = APIRouter(dependencies=[Security(bg_fastapi.bearer, scopes=["accounts"])])

    @router.get("/accounts")
    async def accounts(who: Who) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    app = FastAPI()
    app.include_router(router)
    return app


def fastapi_security_on_a_dependency(calls: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/accounts")
    async def accounts(who: UserWithAccounts) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    return app


def fastapi_policy_and_decorator(calls: list[str]) -> FastAPI:
    app = FastAPI()

    @app.post("/payments")
    @require_scopes("payments:write")
    async def payments(who: Who) -> dict[str, Any]:
        calls.append("payments")
        return principal_json(who)

    return app


def fastapi_policy_any_scopes_and_decorator_any_of(calls: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/accounts")
    @require_scopes(any_of=["psu", "tpp"])
    async def accounts(who: Who) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    return app


def fastapi_app_object(calls: list[str]) -> FastAPI:
    app = require_scopes("accounts")(FastAPI())

    @app.get("/accounts")
    async def accounts(who: Who) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    return app


# Starlette -----------------------------------------------------------------------------------


def _starlette_endpoint(calls: list[str], name: str, *, sync: bool = False) -> Callable[..., Any]:
    if sync:

        def endpoint_sync(request: Request) -> JSONResponse:
            calls.append(name)
            return JSONResponse(principal_json(get_principal(request.scope)))

        return endpoint_sync

    async def endpoint(request: Request) -> JSONResponse:
        calls.append(name)
        return JSONResponse(principal_json(get_principal(request.scope)))

    return endpoint


def starlette_async(calls: list[str]) -> Starlette:
    endpoint = require_scopes("accounts")(_starlette_endpoint(calls, "accounts"))
    return Starlette(routes=[Route("/accounts", endpoint)])


def starlette_sync(calls: list[str]) -> Starlette:
    endpoint = require_scopes("accounts")(_starlette_endpoint(calls, "accounts", sync=True))
    return Starlette(routes=[Route("/accounts", endpoint)])


def starlette_stacked_any_of(calls: list[str]) -> Starlette:
    endpoint = require_scopes("payments")(
        require_scopes(any_of=["psu", "tpp"])(_starlette_endpoint(calls, "payments"))
    )
    return Starlette(routes=[Route("/payments", endpoint, methods=["POST"])])


def starlette_endpoint_class(calls: list[str]) -> Starlette:
    @require_scopes("accounts")
    class Accounts(HTTPEndpoint):
        async def get(self, request: Request) -> JSONResponse:
            calls.append("accounts")
            return JSONResponse(principal_json(get_principal(request.scope)))

    return Starlette(routes=[Route("/accounts", Accounts)])


def starlette_endpoint_method(calls: list[str]) -> Starlette:
    class Accounts(HTTPEndpoint):
        @require_scopes("accounts")
        async def get(self, request: Request) -> JSONResponse:
            calls.append("accounts")
            return JSONResponse(principal_json(get_principal(request.scope)))

    return Starlette(routes=[Route("/accounts", Accounts)])


def starlette_mount_routes(calls: list[str]) -> Starlette:
    endpoint = require_scopes("accounts")(_starlette_endpoint(calls, "accounts"))
    return Starlette(routes=[Mount("/api", routes=[Route("/accounts", endpoint)])])


def starlette_mount_decorated_app(calls: list[str]) -> Starlette:
    inner_endpoint = require_scopes("balances")(_starlette_endpoint(calls, "balances"))
    sub = require_scopes("accounts")(Starlette(routes=[Route("/balances", inner_endpoint)]))
    return Starlette(routes=[Mount("/api", app=sub)])


def starlette_mount_decorated_router(calls: list[str]) -> Starlette:
    router = require_scopes("accounts")(Router(routes=[Route("/accounts", _starlette_endpoint(calls, "x"))]))
    return Starlette(routes=[Mount("/api", app=router)])


def starlette_mount_decorated_asgi_callable(calls: list[str]) -> Starlette:
    @require_scopes("accounts")
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        calls.append("raw")
        body = json.dumps(principal_json(get_principal(scope))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return Starlette(routes=[Mount("/api", app=raw)])


def starlette_decorated_mount_object(calls: list[str]) -> Starlette:
    mount = require_scopes("accounts")(
        Mount("/api", routes=[Route("/accounts", _starlette_endpoint(calls, "x"))])
    )
    return Starlette(routes=[mount])


def starlette_app_object(calls: list[str]) -> Starlette:
    return require_scopes("accounts")(Starlette(routes=[Route("/accounts", _starlette_endpoint(calls, "x"))]))


# Plain ASGI and WSGI callables --------------------------------------------------------------


def asgi_function(calls: list[str]) -> Any:
    @require_scopes("accounts")
    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append("asgi")
        body = json.dumps(principal_json(get_principal(scope))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


class AsgiApp:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append("asgi")
        body = json.dumps(principal_json(get_principal(scope))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def asgi_instance_stacked(calls: list[str]) -> Any:
    return require_scopes("accounts")(require_scopes("balances")(AsgiApp(calls)))


def wsgi_function(calls: list[str]) -> Any:
    @require_scopes("accounts")
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append("wsgi")
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(principal_json(get_principal(environ))).encode()]

    return app


def wsgi_any_of(calls: list[str]) -> Any:
    @require_scopes(any_of=["payments", "payments:write"])
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append("wsgi")
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(principal_json(get_principal(environ))).encode()]

    return app


SPECS: dict[str, Spec] = {
    # Flask
    "flask-view-below-route": Spec(flask_view_below_route, "/accounts", "accounts", "payments", "accounts"),
    "flask-view-above-route": Spec(flask_view_above_route, "/accounts", "accounts", "payments", "accounts"),
    "flask-stacked": Spec(flask_stacked, "/accounts", "accounts balances", "accounts", "accounts balances"),
    "flask-any-of": Spec(flask_any_of, "/payments", "payments payments:write", "accounts", "payments:write"),
    "flask-blueprint": Spec(flask_blueprint, "/aisp/accounts", "accounts", "payments", "accounts"),
    "flask-nested-blueprints": Spec(
        flask_nested_blueprints,
        "/v1/aisp/balances",
        "accounts balances transactions",
        "accounts balances",
        "accounts balances transactions",
    ),
    "flask-app-object": Spec(flask_app_object, "/accounts", "accounts", "payments", "accounts"),
    "flask-policy-scopes-and-decorator": Spec(
        flask_policy_and_decorator,
        "/payments",
        "payments payments:write",
        "payments",
        "payments payments:write",
        operations=POLICY_OPERATIONS,
    ),
    "flask-policy-any-scopes-and-decorator-any-of": Spec(
        flask_policy_any_scopes_and_decorator_any_of,
        "/accounts",
        "psu tpp",
        "accounts:read",
        "accounts:read tpp",
        operations=POLICY_OPERATIONS,
        needed_without_scopes="accounts accounts:read psu tpp",
    ),
    # FastAPI
    "fastapi-async-below-route": Spec(
        fastapi_async_below_route, "/accounts", "accounts", "payments", "accounts"
    ),
    "fastapi-sync-above-route": Spec(
        fastapi_sync_above_route, "/accounts", "accounts", "payments", "accounts"
    ),
    "fastapi-stacked": Spec(
        fastapi_stacked, "/accounts", "accounts balances", "balances", "accounts balances"
    ),
    "fastapi-any-of": Spec(fastapi_any_of, "/payments", "payments payments:write", "accounts", "payments"),
    "fastapi-router-included-async-route": Spec(
        fastapi_router_included, "/aisp/accounts", "accounts", "payments", "accounts"
    ),
    "fastapi-router-included-sync-route-stacked": Spec(
        fastapi_router_included, "/aisp/balances", "accounts balances", "accounts", "accounts balances"
    ),
    "fastapi-security-scopes": Spec(fastapi_security_scopes, "/accounts", "accounts", "payments", "accounts"),
    "fastapi-security-and-decorator": Spec(
        fastapi_security_and_decorator, "/accounts", "accounts balances", "accounts", "accounts balances"
    ),
    "fastapi-router-mounted-async-route": Spec(
        fastapi_router_mounted, "/aisp/accounts", "accounts", "payments", "accounts"
    ),
    "fastapi-router-mounted-sync-route-stacked": Spec(
        fastapi_router_mounted, "/aisp/balances", "accounts balances", "accounts", "accounts balances"
    ),
    "fastapi-included-router-decorated-endpoint": Spec(
        fastapi_included_router_decorated_endpoint, "/aisp/accounts", "accounts", "payments", "accounts"
    ),
    "fastapi-include-router-security-dependency": Spec(
        fastapi_include_router_with_security_dependency, "/accounts", "accounts", "payments", "accounts"
    ),
    "fastapi-router-dependencies-security": Spec(
        fastapi_router_dependency_security, "/accounts", "accounts", "payments", "accounts"
    ),
    "fastapi-policy-scopes-and-decorator": Spec(
        fastapi_policy_and_decorator,
        "/payments",
        "payments payments:write",
        "payments:write",
        "payments payments:write",
        operations=POLICY_OPERATIONS,
    ),
    "fastapi-policy-any-scopes-and-decorator-any-of": Spec(
        fastapi_policy_any_scopes_and_decorator_any_of,
        "/accounts",
        "accounts accounts:read",
        "psu",
        "accounts psu",
        operations=POLICY_OPERATIONS,
        needed_without_scopes="accounts accounts:read psu tpp",
    ),
    "fastapi-app-object": Spec(fastapi_app_object, "/accounts", "accounts", "payments", "accounts"),
    # Starlette
    "starlette-async": Spec(starlette_async, "/accounts", "accounts", "payments", "accounts"),
    "starlette-sync": Spec(starlette_sync, "/accounts", "accounts", "payments", "accounts"),
    "starlette-stacked-any-of": Spec(
        starlette_stacked_any_of, "/payments", "payments psu tpp", "payments", "payments tpp"
    ),
    "starlette-endpoint-class": Spec(
        starlette_endpoint_class, "/accounts", "accounts", "payments", "accounts"
    ),
    "starlette-mount-routes": Spec(
        starlette_mount_routes, "/api/accounts", "accounts", "payments", "accounts"
    ),
    "starlette-mount-decorated-app": Spec(
        starlette_mount_decorated_app, "/api/balances", "accounts balances", "balances", "accounts balances"
    ),
    "starlette-mount-decorated-router": Spec(
        starlette_mount_decorated_router, "/api/accounts", "accounts", "payments", "accounts"
    ),
    "starlette-mount-decorated-asgi-callable": Spec(
        starlette_mount_decorated_asgi_callable, "/api/anything", "accounts", "payments", "accounts"
    ),
    "starlette-app-object": Spec(starlette_app_object, "/accounts", "accounts", "payments", "accounts"),
    # Plain callables, whole-app requirement, through the adapter classes and through protect()
    "asgi-function-middleware": Spec(
        asgi_function, "/any", "accounts", "payments", "accounts", serve="adapter"
    ),
    "asgi-function-protect": Spec(asgi_function, "/any", "accounts", "payments", "accounts"),
    "asgi-instance-stacked-middleware": Spec(
        asgi_instance_stacked, "/any", "accounts balances", "accounts", "accounts balances", serve="adapter"
    ),
    "wsgi-function-wsgi-adapter": Spec(
        wsgi_function, "/any", "accounts", "payments", "accounts", serve="adapter"
    ),
    "wsgi-function-protect": Spec(wsgi_function, "/any", "accounts", "payments", "accounts"),
    "wsgi-any-of-wsgi-adapter": Spec(
        wsgi_any_of, "/any", "payments payments:write", "accounts", "payments", serve="adapter"
    ),
}

#: The method each spec's route answers.
METHODS = {"/payments": "POST"}


def method_of(spec: Spec) -> str:
    return METHODS.get(spec.path, "GET")


@pytest.fixture(params=sorted(SPECS), ids=sorted(SPECS))
def served(request: pytest.FixtureRequest) -> Served:
    return serve(SPECS[request.param])


# -- the three requests, everywhere ------------------------------------------------------------


def test_AUTH_01_no_token_gets_401_bare_challenge_and_endpoint_not_called(served: Served) -> None:
    spec = served.spec
    reply = served.send(spec.path, None, method_of(spec))
    assert_e1(reply)
    assert served.calls == []
    assert len(served.events.events) == 1, "one request, one decision, one audit event"
    event = served.events.events[0]
    assert (event.outcome, event.status, event.control, event.reason) == (
        "deny",
        401,
        "tokens",
        "token.missing",
    )


def test_AUTH_03_JWT_28_token_lacking_scope_gets_403_insufficient_scope(served: Served) -> None:
    spec = served.spec
    reply = served.send(spec.path, token(spec.lacking), method_of(spec))
    assert_e5(reply, spec.needed)
    assert served.calls == [], "the endpoint must not run when the scope is insufficient"
    assert len(served.events.events) == 1, "one request, one decision, one audit event"
    event = served.events.events[0]
    assert (event.outcome, event.status, event.control, event.reason) == (
        "deny",
        403,
        "tokens",
        "scope.insufficient",
    )
    assert (event.subject, event.client_id) == (SUBJECT, CLIENT_ID)


def test_AUTH_03_token_without_scope_claim_gets_403(served: Served) -> None:
    spec = served.spec
    reply = served.send(spec.path, token(None), method_of(spec))
    assert_e5(reply, spec.needed_without_scopes or spec.needed)
    assert served.calls == []


def test_granting_token_reaches_endpoint_which_reads_the_principal(served: Served) -> None:
    spec = served.spec
    reply = served.send(spec.path, token(spec.granting), method_of(spec))
    assert reply.status == 200, reply
    assert reply.challenges == []
    assert reply.body == expected_principal(spec.granting)
    assert len(served.calls) == 1
    assert len(served.events.events) == 1
    event = served.events.events[0]
    assert (event.outcome, event.control, event.reason) == ("allow", None, None)
    assert (event.subject, event.client_id) == (SUBJECT, CLIENT_ID)


# -- declarations the guard must not silently drop ----------------------------------------------

EXTRA_SPECS: dict[str, Spec] = {
    # FastAPI's OAuth2-scopes pattern: the scopes sit on a dependency that itself uses bearer.
    # FastAPI's OpenAPI lists them on the operation (see the OpenAPI test below).
    "fastapi-security-on-a-dependency-of-bearer": Spec(
        fastapi_security_on_a_dependency, "/accounts", "accounts", "payments", "accounts"
    ),
    # require_scopes accepts these objects without complaint, so it must also enforce them.
    "starlette-decorated-mount-object": Spec(
        starlette_decorated_mount_object, "/api/accounts", "accounts", "payments", "accounts"
    ),
    "starlette-endpoint-method": Spec(
        starlette_endpoint_method, "/accounts", "accounts", "payments", "accounts"
    ),
}


@pytest.mark.parametrize("name", sorted(EXTRA_SPECS))
def test_AUTH_03_declared_scope_is_enforced(name: str) -> None:
    served = serve(EXTRA_SPECS[name])
    spec = served.spec
    assert_e1(served.send(spec.path, None))
    assert_e5(served.send(spec.path, token(spec.lacking)), spec.needed)
    assert served.calls == []
    event = served.events.events[-1]
    assert (event.control, event.reason) == ("tokens", "scope.insufficient")
    assert served.send(spec.path, token(spec.granting)).body == expected_principal(spec.granting)


# -- the requirement belongs to the route the framework runs -----------------------------------


def test_flask_requirement_applies_to_the_decorated_view_only() -> None:
    events = EventCollector()
    app = Flask(__name__)

    @app.get("/accounts")
    @require_scopes("accounts")
    def accounts() -> Any:
        return jsonify(principal_json(bg_flask.current_principal()))

    @app.get("/status")
    def status() -> Any:
        return jsonify(principal_json(bg_flask.current_principal()))

    protect(app, make_policy(sink=events))
    send = client_for(app)
    open_reply = send("/status", None)
    assert open_reply.status == 200
    assert open_reply.body["authenticated"] is False
    assert_e1(send("/accounts", None))


def test_fastapi_requirement_follows_method_of_the_matched_route() -> None:
    app = FastAPI()
    calls: list[str] = []

    @app.get("/payments")
    async def list_payments() -> dict[str, Any]:
        calls.append("list")
        return {"ok": True}

    @app.post("/payments")
    @require_scopes("payments")
    async def create_payment(who: Who) -> dict[str, Any]:
        calls.append("create")
        return principal_json(who)

    send = client_for(protect(app, make_policy()))
    assert send("/payments", None, "GET").status == 200
    assert_e5(send("/payments", token("accounts"), "POST"), "payments")
    assert calls == ["list"]
    assert send("/payments", token("payments"), "POST").body == expected_principal("payments")


def test_flask_blueprint_requirement_does_not_leak_to_app_views() -> None:
    app = Flask(__name__)
    bp = require_scopes("accounts")(Blueprint("aisp", __name__, url_prefix="/aisp"))

    @bp.get("/accounts")
    def accounts() -> Any:
        return jsonify(ok=True)

    @app.get("/health")
    def health() -> Any:
        return jsonify(ok=True)

    app.register_blueprint(bp)
    protect(app, make_policy())
    send = client_for(app)
    assert send("/health", None).status == 200
    assert_e1(send("/aisp/accounts", None))


def test_fastapi_router_scope_adds_to_endpoint_scope_and_leaves_other_routes_alone() -> None:
    router = require_scopes("accounts")(APIRouter())

    @router.get("/balances")
    @require_scopes("balances")
    async def balances(who: Who) -> dict[str, Any]:
        return principal_json(who)

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    app.include_router(router, prefix="/aisp")
    send = client_for(protect(app, make_policy()))
    assert send("/health", None).status == 200
    assert_e5(send("/aisp/balances", token("balances")), "accounts balances")
    assert send("/aisp/balances", token("accounts balances")).status == 200


@pytest.mark.parametrize("attach", ["include_router", "mount"])
def test_fastapi_router_decorated_after_its_routes_protects_them_too(attach: str) -> None:
    """Routes defined before and after decorating the router are both protected."""
    calls: list[str] = []
    router = APIRouter()

    @router.get("/accounts")
    async def accounts(who: Who) -> dict[str, Any]:
        calls.append("accounts")
        return principal_json(who)

    require_scopes("accounts")(router)

    @router.get("/balances")
    def balances(who: Who) -> dict[str, Any]:
        calls.append("balances")
        return principal_json(who)

    app = FastAPI()
    if attach == "mount":
        app.mount("/aisp", router)
    else:
        app.include_router(router, prefix="/aisp")
    send = client_for(protect(app, make_policy()))
    for path in ("/aisp/accounts", "/aisp/balances"):
        assert_e1(send(path, None))
        assert_e5(send(path, token("payments")), "accounts")
    assert calls == []
    assert send("/aisp/accounts", token("accounts")).body == expected_principal("accounts")
    assert send("/aisp/balances", token("accounts")).body == expected_principal("accounts")


# -- a requirement on the app object, declared after protect() ----------------------------------


def test_flask_app_requirement_declared_after_protect_is_enforced() -> None:
    app = Flask(__name__)
    protect(app, make_policy())
    require_scopes("accounts")(app)

    @app.get("/accounts")
    def accounts() -> Any:
        return jsonify(ok=True)

    send = client_for(app)
    assert_e1(send("/accounts", None))
    assert_e5(send("/accounts", token("payments")), "accounts")


@pytest.mark.parametrize("framework", [Starlette, FastAPI])
def test_starlette_app_requirement_declared_after_protect_is_enforced(framework: type[Any]) -> None:
    """protect() returns the same app and routes may still be added to it (docs/security.md);
    a requirement declared on that app afterwards must hold like it does for Flask."""
    app = framework()
    served = protect(app, make_policy())
    require_scopes("accounts")(app)

    async def accounts(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app.add_route("/accounts", accounts)
    send = client_for(served)
    assert_e1(send("/accounts", None))
    assert_e5(send("/accounts", token("payments")), "accounts")


# -- FastAPI: OpenAPI and the Security dependency ------------------------------------------------


def test_fastapi_openapi_documents_the_bearer_scheme_and_operation_security() -> None:
    app = FastAPI()

    @app.get("/accounts")
    async def accounts(who: BearerAccounts) -> dict[str, Any]:
        return principal_json(who)

    @app.get("/balances")
    @require_scopes("balances")
    async def balances(who: Who) -> dict[str, Any]:
        return principal_json(who)

    @app.get("/me")
    async def me(who: UserWithAccounts) -> dict[str, Any]:
        return principal_json(who)

    protect(app, make_policy())
    document = app.openapi()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bankguard"]["type"] == "http"
    assert schemes["bankguard"]["scheme"].lower() == "bearer"
    assert schemes["bankguard"]["bearerFormat"] == "JWT"
    assert document["paths"]["/accounts"]["get"]["security"] == [{"bankguard": ["accounts"]}]
    # Security(current_user, scopes=[...]) over a dependency on bearer: documented as required too.
    assert document["paths"]["/me"]["get"]["security"] == [{"bankguard": ["accounts"]}]
    # require_scopes with Depends(principal) adds no security scheme to the operation.
    assert "security" not in document["paths"]["/balances"]["get"]


def test_fastapi_custom_bearer_scheme_name_and_its_scopes() -> None:
    app = FastAPI()
    calls: list[str] = []

    @app.get("/accounts")
    async def accounts(who: BankBearerTwoScopes) -> Any:
        calls.append("accounts")
        return principal_json(who)

    send = client_for(protect(app, make_policy()))
    document = app.openapi()
    assert document["components"]["securitySchemes"]["bank"]["description"] == "Access token from the bank AS"
    assert document["paths"]["/accounts"]["get"]["security"] == [{"bank": ["accounts", "balances"]}]
    assert_e5(send("/accounts", token("accounts")), "accounts balances")
    assert calls == []
    assert send("/accounts", token("accounts balances")).body == expected_principal("accounts balances")


def test_fastapi_security_scopes_enforced_before_dependencies_and_endpoint_run() -> None:
    DEPENDENCY_RUNS.clear()
    ran = DEPENDENCY_RUNS
    app = FastAPI()

    @app.get("/accounts")
    async def accounts(who: BearerAccounts, value: Lookup) -> Any:
        ran.append("endpoint")
        return principal_json(who)

    send = client_for(protect(app, make_policy()))
    assert_e1(send("/accounts", None))
    assert_e5(send("/accounts", token("payments")), "accounts")
    assert ran == []
    assert send("/accounts", token("accounts")).status == 200
    assert ran == ["dependency", "endpoint"]


# -- audit via the default logging sink ---------------------------------------------------------


def test_capture_events_records_scope_insufficient_for_a_flask_view() -> None:
    app = flask_view_below_route([])
    protect(app, make_policy())
    send = client_for(app)
    with capture_events() as events:
        reply = send("/accounts", token("payments"))
    assert_e5(reply, "accounts")
    assert events, "no audit event was written"
    assert events[-1]["control"] == "tokens"
    assert events[-1]["reason"] == "scope.insufficient"
    assert events[-1]["outcome"] == "deny"
    assert events[-1]["status"] == 403


def test_capture_events_records_scope_insufficient_for_a_fastapi_endpoint() -> None:
    send = client_for(protect(fastapi_security_scopes([]), make_policy()))
    with capture_events() as events:
        reply = send("/accounts", token("payments"))
    assert_e5(reply, "accounts")
    assert [(e["control"], e["reason"]) for e in events] == [("tokens", "scope.insufficient")]


# -- policy-declared scopes with undeclared routes denied -------------------------------------------


def test_policy_scopes_alone_without_decorator() -> None:
    app = Flask(__name__)

    @app.post("/payments")
    def payments() -> Any:
        return jsonify(principal_json(bg_flask.current_principal()))

    events = EventCollector()
    protect(app, make_policy(operations=POLICY_OPERATIONS, undeclared="deny", sink=events))
    send = client_for(app)
    assert_e1(send("/payments", None, "POST"))
    assert_e5(send("/payments", token("accounts"), "POST"), "payments")
    assert events.events[-1].operation == "createPayment"
    assert send("/payments", token("payments"), "POST").status == 200


# -- the decorator itself ---------------------------------------------------------------------


def test_decorator_keeps_sync_and_async_functions_what_they_are() -> None:
    def sync_view(account_id: str) -> str:
        return account_id

    async def async_view(account_id: str) -> str:
        return account_id

    decorated_sync = require_scopes("accounts")(sync_view)
    decorated_async = require_scopes("accounts")(async_view)
    assert not inspect.iscoroutinefunction(decorated_sync)
    assert inspect.iscoroutinefunction(decorated_async)
    assert decorated_sync.__name__ == "sync_view"
    assert decorated_async.__name__ == "async_view"
    assert list(inspect.signature(decorated_sync).parameters) == ["account_id"]
    assert requirement_of(decorated_sync) == ScopeRequirement(frozenset({"accounts"}))
    assert requirement_of(decorated_async) == ScopeRequirement(frozenset({"accounts"}))


def test_stacked_decorators_add_up_all_of_and_any_of_groups() -> None:
    @require_scopes("a")
    @require_scopes("b", any_of=["p", "q"])
    @require_scopes(any_of=["x", "y"])
    def view() -> None:
        return None

    assert requirement_of(view) == ScopeRequirement(
        frozenset({"a", "b"}), (frozenset({"p", "q"}), frozenset({"x", "y"}))
    )


def test_undecorated_object_has_no_requirement() -> None:
    def view() -> None:
        return None

    assert requirement_of(view) is None


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((), {}, id="nothing"),
        pytest.param((), {"any_of": []}, id="empty-any-of"),
        pytest.param(("",), {}, id="empty-string"),
        pytest.param(("accounts read",), {}, id="space"),
        pytest.param(('acc"ounts',), {}, id="dquote"),
        pytest.param(("acc\\ounts",), {}, id="backslash"),
        pytest.param(("accounts\n",), {}, id="trailing-newline"),
        pytest.param(("kont\u00f6",), {}, id="non-ascii"),
        pytest.param(("accounts\x7f",), {}, id="del"),
        pytest.param(("accounts",), {"any_of": ["payments", "pay ments"]}, id="bad-in-any-of"),
        pytest.param((123,), {}, id="not-a-string"),
    ],
)
def test_require_scopes_rejects_missing_or_invalid_scopes(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the input
        require_scopes(*args, **kwargs)


def test_require_scopes_rejects_a_bare_string_for_any_of() -> None:
    """``any_of="payments"`` would otherwise become the group {p, a, y, m, e, n, t, s}, which a
    token with scope ``a`` satisfies."""
    with pytest.raises((TypeError, ValueError)):
        require_scopes(any_of="payments")


@pytest.mark.parametrize(
    "scope", ["accounts", "payments:write", "urn:bank:aisp", "a!#$%&'()*+,-./:;<=>?@[]^_`{|}~"]
)
def test_require_scopes_accepts_rfc6749_scope_tokens(scope: str) -> None:
    def view() -> None:
        return None

    assert requirement_of(require_scopes(scope)(view)) == ScopeRequirement(frozenset({scope}))


# -- ScopeRequirement: merge and unmet ----------------------------------------------------------

R = ScopeRequirement
F = frozenset


@pytest.mark.parametrize(
    ("left", "right", "merged"),
    [
        pytest.param(R(F({"a"})), None, R(F({"a"})), id="with-none"),
        pytest.param(R(F({"a"})), R(), R(F({"a"})), id="with-empty"),
        pytest.param(R(), R(F({"a"})), R(F({"a"})), id="empty-with-some"),
        pytest.param(R(F({"a"})), R(F({"b"})), R(F({"a", "b"})), id="all-of-union"),
        pytest.param(R(F({"a"})), R(F({"a"})), R(F({"a"})), id="same-all-of"),
        pytest.param(
            R(any_of=(F({"p", "q"}),)),
            R(any_of=(F({"x"}),)),
            R(any_of=(F({"p", "q"}), F({"x"}))),
            id="groups-kept",
        ),
        pytest.param(
            R(any_of=(F({"p", "q"}),)),
            R(any_of=(F({"q", "p"}),)),
            R(any_of=(F({"p", "q"}),)),
            id="same-group-once",
        ),
        pytest.param(R(F({"a"})), R(any_of=(F({"p"}),)), R(F({"a"}), (F({"p"}),)), id="all-of-and-group"),
    ],
)
def test_scope_requirement_merge(
    left: ScopeRequirement, right: ScopeRequirement | None, merged: ScopeRequirement
) -> None:
    assert left.merge(right) == merged


@pytest.mark.parametrize(
    ("requirement", "granted", "unmet"),
    [
        pytest.param(R(), F(), (), id="nothing-required"),
        pytest.param(R(F({"a"})), F({"a"}), (), id="all-of-met"),
        pytest.param(R(F({"a", "b"})), F({"a", "b", "c"}), (), id="all-of-met-with-extra"),
        pytest.param(R(F({"a", "b"})), F({"a"}), ("a", "b"), id="all-of-partly-met-names-all"),
        pytest.param(R(F({"a"})), F(), ("a",), id="all-of-nothing-granted"),
        pytest.param(R(any_of=(F({"p", "q"}),)), F({"q"}), (), id="any-of-met"),
        pytest.param(R(any_of=(F({"p", "q"}),)), F({"a"}), ("p", "q"), id="any-of-unmet"),
        pytest.param(R(F({"a"}), (F({"p", "q"}),)), F({"a"}), ("a", "p", "q"), id="group-unmet"),
        pytest.param(R(F({"a"}), (F({"p", "q"}),)), F({"p"}), ("a",), id="all-of-unmet-group-met"),
        pytest.param(R(any_of=(F({"p", "q"}), F({"x", "y"}))), F({"p"}), ("x", "y"), id="second-group-unmet"),
        pytest.param(R(any_of=(F({"p", "q"}), F({"x", "y"}))), F({"q", "y"}), (), id="both-groups-met"),
        pytest.param(R(F({"accounts"})), F({"Accounts"}), ("accounts",), id="case-sensitive"),
        pytest.param(R(F({"accounts"})), F({"accounts:read"}), ("accounts",), id="no-prefix-matching"),
    ],
)
def test_scope_requirement_unmet(
    requirement: ScopeRequirement, granted: frozenset[str], unmet: tuple[str, ...]
) -> None:
    assert requirement.unmet(granted) == unmet


def test_scope_requirement_truthiness() -> None:
    assert not R()
    assert R(F({"a"}))
    assert R(any_of=(F({"p"}),))
