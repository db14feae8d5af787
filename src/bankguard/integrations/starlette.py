"""Starlette helper: the resolver that finds ``require_scopes`` declarations for a request.

It walks the application's routes the way Starlette's router will (first full match,
into mounts), so the declaration bankguard enforces is the one of the endpoint that
will run. Results per route object are cached.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Host, Match, Mount

from ..context import get_context
from ..errors import Denied
from ..scopes import ScopeRequirement, requirement_of

Scope = MutableMapping[str, Any]


def _merge(a: ScopeRequirement | None, b: ScopeRequirement | None) -> ScopeRequirement | None:
    if not a:
        return b
    return a.merge(b)


def _route_requirement(
    route: Any, scope: Scope, cache: dict[int, tuple[Any, ScopeRequirement | None]]
) -> ScopeRequirement | None:
    """Declarations on a matched route: the endpoint, FastAPI dependencies, and for
    class-based endpoints the method that will handle this request."""
    hit = cache.get(id(route))
    if hit is not None and hit[0] is route:
        found = hit[1]
    else:
        endpoint = getattr(route, "endpoint", None)
        found = _merge(requirement_of(route), requirement_of(endpoint))
        dependant = getattr(route, "dependant", None)
        if dependant is not None:  # a FastAPI route: Security(bearer, scopes=...) counts too
            from .fastapi import security_scopes

            found = _merge(security_scopes(dependant), found)
        cache[id(route)] = (route, found)
    endpoint = getattr(route, "endpoint", None)
    if inspect.isclass(endpoint):  # HTTPEndpoint: the method handler may be decorated
        method = str(scope.get("method", "GET")).lower()
        handler = getattr(endpoint, "get" if method == "head" else method, None)
        found = _merge(found, requirement_of(handler))
    return found


def scope_resolver(app: Any) -> Callable[[Scope], ScopeRequirement | None]:
    """Find the scopes declared for a request by walking the app's routes as Starlette will:
    the first full match, into mounts and included routers. Declarations on the app object
    itself are read on every request, so they may be added after ``protect()``."""
    cache: dict[int, tuple[Any, ScopeRequirement | None]] = {}

    def walk(routes: Iterable[Any], scope: Scope) -> tuple[bool, ScopeRequirement | None]:
        for route in routes:
            candidates = getattr(route, "effective_candidates", None)
            if callable(candidates):  # FastAPI's included router: walk its effective routes
                matched, found = walk(candidates(), scope)
                if matched:
                    return True, _merge(requirement_of(route), found)
                continue
            match, child = route.matches(scope)
            if match is not Match.FULL:
                continue
            if isinstance(route, (Mount, Host)):
                mounted = _merge(requirement_of(route), requirement_of(route.app))
                inner = getattr(route, "routes", None)
                if not inner:
                    return True, mounted
                _, found = walk(inner, {**scope, **child})
                return True, _merge(found, mounted)
            return True, _route_requirement(route, scope, cache)
        return False, None

    def resolve(scope: Scope) -> ScopeRequirement | None:
        _, found = walk(getattr(app, "routes", ()), scope)
        return _merge(requirement_of(app), found)

    return resolve


def install_error_handler(app: Any) -> None:
    """Render refusals raised inside endpoints and dependencies (``require_scopes`` at call
    time, ``Security(bearer, scopes=...)``) as problem details, audited like any refusal."""

    async def handle(request: Request, denial: Exception) -> Response:
        if not isinstance(denial, Denied):  # pragma: no cover - registered for Denied only
            raise denial
        context = get_context(request.scope)
        problem = context.guard.late_denial(context, denial, method=request.method, path=request.url.path)
        response = Response(problem.body, status_code=problem.status)
        for name, value in problem.headers:
            if name != "content-length":
                response.headers.append(name, value)
        return response

    app.add_exception_handler(Denied, handle)


__all__ = ["install_error_handler", "scope_resolver"]
