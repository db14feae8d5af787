"""Reading what bankguard established, from an ASGI scope or a WSGI environ."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .decision import CONTEXT_KEY, Principal, SecurityContext


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
