"""Adapters from ASGI and WSGI to the decision core, and :func:`protect`."""

from __future__ import annotations

import inspect
import weakref
from typing import Any, Literal, TypeVar

from ..guard import Guard
from ..policy import Policy
from .asgi import BankGuardMiddleware
from .wsgi import BankGuardWSGI

A = TypeVar("A")


def _is_asgi(app: Any) -> bool:
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - we need the bound method itself
    return call is not None and inspect.iscoroutinefunction(call)


#: Applications protected in place, with their guards (a second protect() is refused).
_PROTECTED: weakref.WeakKeyDictionary[Any, Guard] = weakref.WeakKeyDictionary()


def _marked(app: Any) -> bool:
    try:
        return app in _PROTECTED
    except TypeError:  # not weak-referenceable: cannot have been protected in place
        return False


def guard_of(app: Any) -> Guard:
    """The :class:`Guard` protecting ``app`` (as returned by :func:`protect`), e.g. to call
    ``close()`` at shutdown or the revocation hooks ``evict_token`` / ``evict_tokens``."""
    if isinstance(app, (BankGuardMiddleware, BankGuardWSGI)):
        return app.guard
    wsgi = getattr(app, "wsgi_app", None)
    if isinstance(wsgi, BankGuardWSGI):
        return wsgi.guard
    if _marked(app):
        return _PROTECTED[app]
    raise ValueError("this application is not protected by bankguard")


def protect(app: A, policy: Policy, *, kind: Literal["asgi", "wsgi"] | None = None) -> A:
    """Put bankguard in front of ``app`` and return what to serve.

    * A Flask application (anything with a ``wsgi_app``) is protected in place:
      ``app.wsgi_app`` is wrapped and the same Flask object is returned, so routes
      can still be added to it.
    * A Starlette / FastAPI application gets :class:`BankGuardMiddleware` around its
      whole middleware stack, outside Starlette's error handler, so even a 500 from an
      unhandled exception carries the interaction id and ``Cache-Control: no-store``.
      The same application object is returned, so routes can still be added to it.
    * Any other ASGI callable (an ``async`` callable) is wrapped in
      :class:`BankGuardMiddleware`; any other callable in :class:`BankGuardWSGI`.

    ``kind`` forces the choice for callables whose flavour cannot be seen.
    The guard is built here, so policy problems (an unimportable audit sink) surface
    at start-up, not on the first request.
    """
    if isinstance(app, (BankGuardMiddleware, BankGuardWSGI)) or isinstance(
        getattr(app, "wsgi_app", None), BankGuardWSGI
    ):
        raise ValueError("this application is already protected by bankguard")
    if _marked(app):
        raise ValueError("this application is already protected by bankguard")
    guard = Guard(policy)
    if kind is None and hasattr(app, "wsgi_app") and not _is_asgi(app):
        from ..integrations.flask import install_error_handler as install_flask_handler
        from ..integrations.flask import scope_resolver as flask_resolver

        install_flask_handler(app)  # type: ignore[arg-type]

        app.wsgi_app = BankGuardWSGI(app.wsgi_app, guard=guard, resolver=flask_resolver(app))  # type: ignore[arg-type]
        return app
    build_stack = getattr(app, "build_middleware_stack", None)
    if kind is None and callable(build_stack) and _is_asgi(app):
        # Starlette builds its stack lazily on the first call; wrap what it builds.
        from ..integrations.starlette import install_error_handler as install_starlette_handler
        from ..integrations.starlette import scope_resolver as starlette_resolver

        install_starlette_handler(app)

        resolver = starlette_resolver(app)

        def build_guarded_stack() -> Any:
            return BankGuardMiddleware(build_stack(), guard=guard, resolver=resolver)

        app.build_middleware_stack = build_guarded_stack  # type: ignore[attr-defined]
        _PROTECTED[app] = guard
        if getattr(app, "middleware_stack", None) is not None:
            # Already served a request: drop the cached stack so the guarded one is built.
            app.middleware_stack = None  # type: ignore[attr-defined]
        return app
    if kind == "asgi" or (kind is None and _is_asgi(app)):
        return BankGuardMiddleware(app, guard=guard)  # type: ignore[arg-type,return-value]
    if kind not in (None, "wsgi"):
        raise ValueError(f"kind must be 'asgi' or 'wsgi', not {kind!r}")
    return BankGuardWSGI(app, guard=guard)  # type: ignore[arg-type,return-value]


__all__ = ["BankGuardMiddleware", "BankGuardWSGI", "guard_of", "protect"]
