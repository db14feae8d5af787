"""The application the hostile-input catalogue attacks, written twice: Starlette (ASGI) and Flask
(WSGI), both protected with :func:`bankguard.protect`.

The policy (:func:`policy_data`) has everything switched on that a hostile request could play
against each other: request caps, the OpenAPI contract of ``openapi.yaml`` next to this file (routes
with different security: public, ``admin``, ``read``, ``write``), JWT access tokens, DPoP, a
forwarded client certificate header (RFC 9440), rate limits before and after authentication, and
``interaction_id.invalid: reject``.

Every handler answers with the same JSON document (schema ``Echo`` of the spec): its own name, the
operation bankguard matched, the verified subject, the path parameter and the number of body bytes
it received. A test therefore sees which handler ran and under which operation's rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bankguard import Policy, SecurityContext, get_context, protect

SPEC = Path(__file__).with_name("openapi.yaml")

ISSUER = "https://as.bank.example"
AUDIENCE = "https://api.bank.example"
#: The origin DPoP proofs name (``htu``); the request's Host header plays no part.
ORIGIN = "https://bank.example"

MAX_BODY = 32 * 1024  # room for 10 000 levels of nested JSON, which take 20 001 bytes
MAX_HEADERS = 8192
MAX_FIELD = 4096
MAX_TARGET = 1024
#: Requests per client address per minute, before any token is verified.
PREAUTH_LIMIT = 60
#: Requests per minute and verified client to CreateItem.
CREATE_LIMIT = 5

#: The operation each handler serves (operationId of the spec).
HANDLERS = {
    "get_status": "GetStatus",
    "get_public_item": "GetPublicItem",
    "list_users": "ListUsers",
    "get_item": "GetItem",
    "create_item": "CreateItem",
}


def policy_data(jwks: dict[str, Any], *, trusted: tuple[str, ...], sink: Any = "logging") -> dict[str, Any]:
    """The catalogue's policy. ``trusted``: the peers allowed to forward a ``Client-Cert``."""
    return {
        "profile": "generic",
        "external_origins": [ORIGIN],
        "trusted_proxies": list(trusted),
        "request": {
            "max_header_bytes": MAX_HEADERS,
            "max_header_field_bytes": MAX_FIELD,
            "max_body_bytes": MAX_BODY,
            "max_target_bytes": MAX_TARGET,
        },
        "routes": {"undeclared": "deny"},
        "openapi": {"spec": str(SPEC)},
        "tokens": {
            "issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["ES256"], "jwks": jwks}]
        },
        "dpop": {"enabled": True},
        "client_cert": {"source": "rfc9440"},
        "ratelimit": {
            "enabled": True,
            "tiers": {"default": "1000/minute"},
            "operations": {"CreateItem": f"{CREATE_LIMIT}/minute"},
            "preauth": {"limits": f"{PREAUTH_LIMIT}/minute"},
        },
        "interaction_id": {"invalid": "reject"},
        "audit": {"sink": sink},
    }


def echo(
    handler: str, ctx: SecurityContext, *, param: str | None = None, body: bytes = b""
) -> dict[str, Any]:
    return {
        "handler": handler,
        "operation": ctx.operation.id if ctx.operation is not None else "",
        "subject": ctx.principal.subject,
        "param": param,
        "body_bytes": len(body),
    }


# -- Starlette -------------------------------------------------------------------------------------


def build_starlette(policy: Policy, calls: list[str]) -> Starlette:
    """The API in Starlette, protected; ``calls`` receives the name of every handler that runs."""

    async def get_status(request: Request) -> JSONResponse:
        calls.append("get_status")
        return JSONResponse(echo("get_status", get_context(request.scope)))

    async def get_public_item(request: Request) -> JSONResponse:
        calls.append("get_public_item")
        ctx = get_context(request.scope)
        return JSONResponse(echo("get_public_item", ctx, param=request.path_params["name"]))

    async def list_users(request: Request) -> JSONResponse:
        calls.append("list_users")
        return JSONResponse(echo("list_users", get_context(request.scope)))

    async def get_item(request: Request) -> JSONResponse:
        calls.append("get_item")
        ctx = get_context(request.scope)
        return JSONResponse(echo("get_item", ctx, param=request.path_params["item_id"]))

    async def create_item(request: Request) -> JSONResponse:
        calls.append("create_item")
        body = await request.body()
        json.loads(body)  # the handler trusts what bankguard let through to be JSON
        return JSONResponse(echo("create_item", get_context(request.scope), body=body), status_code=201)

    app = Starlette(
        routes=[
            Route("/public/status", get_status, methods=["GET"]),
            Route("/public/{name}", get_public_item, methods=["GET"]),
            Route("/admin/users", list_users, methods=["GET"]),
            Route("/items/{item_id}", get_item, methods=["GET"]),
            Route("/items", create_item, methods=["POST"]),
        ]
    )
    return protect(app, policy)


# -- Flask -------------------------------------------------------------------------------------------


def build_flask(policy: Policy, calls: list[str]) -> Flask:
    """The same API in Flask, protected; ``calls`` receives the name of every handler that runs."""
    from bankguard.integrations.flask import current_context

    app = Flask(__name__, static_folder=None)

    def answer(document: dict[str, Any], status: int = 200) -> Response:
        return Response(json.dumps(document), status=status, content_type="application/json")

    @app.get("/public/status")
    def get_status() -> Response:
        calls.append("get_status")
        return answer(echo("get_status", current_context()))

    @app.get("/public/<name>")
    def get_public_item(name: str) -> Response:
        calls.append("get_public_item")
        return answer(echo("get_public_item", current_context(), param=name))

    @app.get("/admin/users")
    def list_users() -> Response:
        calls.append("list_users")
        return answer(echo("list_users", current_context()))

    @app.get("/items/<item_id>")
    def get_item(item_id: str) -> Response:
        calls.append("get_item")
        return answer(echo("get_item", current_context(), param=item_id))

    @app.post("/items")
    def create_item() -> Response:
        calls.append("create_item")
        body = request.get_data()
        json.loads(body)
        return answer(echo("create_item", current_context(), body=body), 201)

    return protect(app, policy)
