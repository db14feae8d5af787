"""FastAPI / Starlette helpers: dependencies yielding what bankguard verified, and the
scope resolver that lets bankguard enforce ``require_scopes`` and ``Security`` scopes
before the endpoint runs.

    from fastapi import Depends, FastAPI, Security
    from bankguard import Policy, Principal, protect, require_scopes
    from bankguard.integrations.fastapi import bearer, principal

    app = protect(FastAPI(), Policy.from_yaml("policy.yaml"))

    @app.get("/accounts")
    async def accounts(who: Principal = Security(bearer, scopes=["accounts"])): ...

    @app.get("/balances")
    @require_scopes("accounts")
    async def balances(who: Principal = Depends(principal)): ...

Both forms are enforced by the guard, in front of the app (one decision, one audit
event); ``bearer`` also puts the HTTP bearer security scheme into the generated OpenAPI, and
``dpop`` (the same dependency) the HTTP ``DPoP`` scheme (RFC 9449 §7.1), for APIs whose
clients must use DPoP-bound tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, MutableMapping
from typing import Any

from fastapi.openapi.models import HTTPBase as HTTPBaseModel
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection

from ..context import get_context
from ..decision import Principal, SecurityContext
from ..scopes import ScopeDependency, ScopeRequirement, enforce, parse_scopes
from .starlette import scope_resolver as starlette_scope_resolver

Scope = MutableMapping[str, Any]


def security_context(connection: HTTPConnection) -> SecurityContext:
    """Dependency: the bankguard context of this request."""
    return get_context(connection.scope)


def principal(connection: HTTPConnection) -> Principal:
    """Dependency: the verified principal of this request."""
    return get_context(connection.scope).principal


def interaction_id(connection: HTTPConnection) -> str:
    """Dependency: the ``x-fapi-interaction-id`` bankguard echoes on the response."""
    return get_context(connection.scope).interaction_id


class BankGuardBearer(SecurityBase):
    """A security dependency: yields the verified principal and documents the HTTP scheme.

    Scopes given with ``Security(bearer, scopes=[...])`` are enforced by the guard before
    the endpoint runs where it can resolve the route, and by this dependency in any case.
    ``http_scheme`` only changes what the OpenAPI document says (``bearer`` or ``DPoP``);
    which schemes are accepted is the policy's business (``dpop.enabled``).
    """

    def __init__(
        self, *, scheme_name: str = "bankguard", description: str | None = None, http_scheme: str = "bearer"
    ) -> None:
        if http_scheme.lower() == "bearer":
            self.model: HTTPBaseModel = HTTPBearerModel(bearerFormat="JWT", description=description)
        else:
            self.model = HTTPBaseModel(scheme=http_scheme, description=description)
        self.scheme_name = scheme_name

    async def __call__(self, connection: HTTPConnection, security_scopes: SecurityScopes) -> Principal:
        context = get_context(connection.scope)
        if security_scopes.scopes:
            enforce(ScopeRequirement(parse_scopes(security_scopes.scopes)))
        elif not context.principal.authenticated:
            enforce(ScopeRequirement())  # a bearer dependency means: a verified token is required
        return context.principal


#: The default security dependency (documented as HTTP bearer).
bearer = BankGuardBearer()
#: The same dependency documented as the HTTP ``DPoP`` scheme.
dpop = BankGuardBearer(scheme_name="bankguard-dpop", http_scheme="DPoP")


def security_scopes(dependant: Any, seen: set[int] | None = None) -> ScopeRequirement | None:
    """Scopes of ``Security(<BankGuardBearer>, scopes=...)`` anywhere in a route's dependencies."""
    seen = seen if seen is not None else set()
    if id(dependant) in seen:
        return None
    seen.add(id(dependant))
    found: ScopeRequirement | None = None
    call = getattr(dependant, "call", None)
    while isinstance(call, functools.partial):
        call = call.func
    if isinstance(call, BankGuardBearer):
        # Scopes given here or on any dependency above it (FastAPI passes them down).
        scopes = [
            *(getattr(dependant, "parent_oauth_scopes", None) or ()),
            *(getattr(dependant, "own_oauth_scopes", None) or ()),
            *(getattr(dependant, "security_scopes", None) or ()),
        ]
        found = ScopeRequirement(parse_scopes(scopes), authenticated=True)
    elif isinstance(call, ScopeDependency):
        found = call.requirement
    for sub in getattr(dependant, "dependencies", ()):
        inner = security_scopes(sub, seen)
        if inner:
            found = inner.merge(found) if found else inner
    return found


def scope_resolver(app: Any) -> Callable[[Scope], ScopeRequirement | None]:
    """The Starlette resolver (it also reads ``Security(bearer, scopes=...)`` on FastAPI routes)."""
    return starlette_scope_resolver(app)


__all__ = [
    "BankGuardBearer",
    "bearer",
    "dpop",
    "interaction_id",
    "principal",
    "scope_resolver",
    "security_context",
]
