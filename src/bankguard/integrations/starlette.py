"""Starlette helper: the resolver that finds ``require_scopes`` declarations for a request.

It walks the application's routes the way Starlette's router will (first full match,
into mounts), so the declaration bankguard enforces is the one of the endpoint that
will run. Results per route object are cached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount

from ..context import get_context
from ..errors import Denied
from ..scopes import ScopeRequirement, requirement_of

Scope = MutableMapping[str, Any]


def _route_requirement(
    route: Any, cache: dict[int, tuple[Any, ScopeRequirement | None]]
) -> ScopeRequirement | None:
    hit = cache.get(id(route))
    if hit is not None and hit[0] is route:
        return hit[1]
    found = requirement_of(getattr(route, "endpoint", None))
    dependant = getattr(route, "dependant", None)
    if dependant is not None:  # a FastAPI route: Security(bearer, scopes=...) counts too
        from .fastapi import security_scopes

        extra = security_scopes(dependant)
        found = extra.merge(found) if extra else found
    cache[id(route)] = (route, found)
    return found


def scope_resolver(app: Any) -> Callable[[Scope], ScopeRequirement | None]:
    """Find the scopes declared for a request by walking the app's routes as Starlette will."""
    cache: dict[int, tuple[Any, ScopeRequirement | None]] = {}
    app_level = requirement_of(app)

    def walk(routes: Iterable[Any], scope: Scope) -> ScopeRequirement | None:
        for route in routes:
            match, child = route.matches(scope)
            if match is not Match.FULL:
                continue
            if isinstance(route, Mount):
                inner = getattr(route, "routes", None)
                mounted = requirement_of(route.app)
                if not inner:
                    return mounted
                found = walk(inner, {**scope, **child})
                return found.merge(mounted) if found else mounted
            return _route_requirement(route, cache)
        return None

    def resolve(scope: Scope) -> ScopeRequirement | None:
        found = walk(getattr(app, "routes", ()), scope)
        if app_level:
            return app_level.merge(found)
        return found

    return resolve


def install_error_handler(app: Any) -> None:
    """Render refusals raised inside endpoints and dependencies (``require_scopes`` at call
    time, ``Security(bearer, scopes=...)``) as problem details, audited like any refusal."""

    async def handle(request: Request, denial: Exception) -> Response:
        if not isinstance(denial, Denied):  # pragma: no cover - registered for Denied only
            raise denial
        context = get_context(request.scope)
        problem = context.guard.late_denial(context, denial, method=request.method, path=request.url.path)
        return Response(problem.body, status_code=problem.status, headers=dict(problem.headers))

    app.add_exception_handler(Denied, handle)


__all__ = ["install_error_handler", "scope_resolver"]
