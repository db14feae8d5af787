"""Flask helpers: read the verified principal inside a view.

from bankguard import Policy, protect
from bankguard.integrations.flask import current_principal

app = protect(Flask(__name__), Policy.from_yaml("policy.yaml"))

@app.get("/accounts")
def accounts():
    principal = current_principal()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ..context import get_context
from ..decision import Principal, SecurityContext
from ..errors import Denied
from ..scopes import ScopeRequirement, requirement_of


def current_context() -> SecurityContext:
    """The bankguard context of the current Flask request."""
    return get_context(request.environ)


def current_principal() -> Principal:
    """The verified principal of the current Flask request."""
    return current_context().principal


def interaction_id() -> str:
    """The ``x-fapi-interaction-id`` bankguard echoes on the response."""
    return current_context().interaction_id


def scope_resolver(app: Flask) -> Callable[[dict[str, Any]], ScopeRequirement | None]:
    """Find the ``require_scopes`` declarations for a WSGI environ: on the view function,
    its blueprint (and parent blueprints) and the app object. Matching uses Flask's own
    URL map, so it picks the view Flask will run."""
    url_map = app.url_map

    def resolve(environ: dict[str, Any]) -> ScopeRequirement | None:
        try:
            endpoint, _ = url_map.bind_to_environ(environ).match()
        except HTTPException:
            return requirement_of(app)  # no route: Flask answers 404/405 itself
        except Exception:  # a routing redirect or an unexpected failure: no declaration found
            return requirement_of(app)
        found = requirement_of(app.view_functions.get(endpoint))
        parts = str(endpoint).split(".")[:-1]
        for i in range(len(parts)):
            blueprint = app.blueprints.get(".".join(parts[: i + 1]))
            found = _merge(found, requirement_of(blueprint))
        return _merge(found, requirement_of(app))

    return resolve


def _merge(a: ScopeRequirement | None, b: ScopeRequirement | None) -> ScopeRequirement | None:
    if a is None:
        return b
    return a.merge(b)


def install_error_handler(app: Flask) -> None:
    """Render refusals raised inside views (``require_scopes`` at call time) as problem details."""

    def handle(denial: Denied) -> Response:
        context = get_context(request.environ)
        guard = context.guard
        problem = guard.late_denial(context, denial, method=request.method, path=request.path)
        return Response(problem.body, status=problem.status, headers=list(problem.headers))

    app.register_error_handler(Denied, handle)


__all__ = [
    "current_context",
    "current_principal",
    "install_error_handler",
    "interaction_id",
    "scope_resolver",
]
