"""Reading what bankguard established, from an ASGI scope or a WSGI environ."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .decision import CONTEXT_KEY, Principal, SecurityContext

#: The context of the request being served, for code that has no request object at hand
#: (``require_scopes`` wrappers). Set by the adapters around the call into the application;
#: copied into worker threads with the rest of the context.
_CURRENT: contextvars.ContextVar[SecurityContext | None] = contextvars.ContextVar(
    "bankguard_context", default=None
)


def current_context() -> SecurityContext | None:
    """The :class:`SecurityContext` of the request being served in this context, if any."""
    return _CURRENT.get()


@contextmanager
def serving(context: SecurityContext) -> Iterator[None]:
    token = _CURRENT.set(context)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class NotProtectedError(RuntimeError):
    """The request did not pass through bankguard, so nothing about it is verified."""


def get_context(scope_or_environ: Mapping[str, Any]) -> SecurityContext:
    """The :class:`SecurityContext` of a request bankguard let through.

    Raises :class:`NotProtectedError` when the request did not pass through bankguard
    (the app is not wrapped, or this route is mounted outside it): code that relies on
    a verified principal must not run silently without one.
    """
    context = scope_or_environ.get(CONTEXT_KEY)
    if not isinstance(context, SecurityContext):
        raise NotProtectedError("this request did not pass through bankguard; wrap the app with protect()")
    return context


def get_principal(scope_or_environ: Mapping[str, Any]) -> Principal:
    """The verified :class:`Principal` of a request bankguard let through."""
    return get_context(scope_or_environ).principal
