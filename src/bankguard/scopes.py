"""Scope requirements and the ``require_scopes`` decorator.

An operation can require scopes in the policy (``routes.operations[].scopes`` /
``any_scopes``) or in code, with :func:`require_scopes` on a view function, an
endpoint, a Flask blueprint, a FastAPI router or a whole ASGI/WSGI application.
The decorator attaches a :class:`ScopeRequirement`; on a function it also returns a thin
wrapper that checks the requirement again when the function is called. The guard
enforces declarations before the application runs wherever it can resolve the route
(one decision, one audit event); the call-time check is the second line for routes it
could not resolve, and writes its own audit event when it refuses. A token lacking a
required scope gets 403 ``insufficient_scope`` with the ``scope`` attribute
(RFC 6750 §3.1); a missing token gets 401.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
ATTRIBUTE = "__bankguard_scopes__"
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+\Z")  # RFC 6749 §3.3 scope-token


@dataclass(frozen=True, slots=True)
class ScopeRequirement:
    """Scopes a token must grant: every one of ``all_of``, one of each ``any_of`` group, and
    every scope of at least one ``one_of`` alternative (an OpenAPI ``security`` list: OAS 3.1
    §4.8.10, one requirement object per alternative).

    ``authenticated`` alone (no scopes) means a verified token is required, whatever it grants.
    """

    all_of: frozenset[str] = frozenset()
    any_of: tuple[frozenset[str], ...] = ()
    authenticated: bool = False
    one_of: tuple[frozenset[str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.all_of or self.any_of or self.authenticated or self.one_of)

    def merge(self, other: ScopeRequirement | None) -> ScopeRequirement:
        if not other:
            return self
        groups = tuple(dict.fromkeys((*self.any_of, *other.any_of)))
        if self.one_of and other.one_of:
            # (A1 or A2) and (B1 or B2) = (A1+B1) or (A1+B2) or (A2+B1) or (A2+B2)
            one_of = tuple(dict.fromkeys(a | b for a in self.one_of for b in other.one_of))
        else:
            one_of = self.one_of or other.one_of
        return ScopeRequirement(
            self.all_of | other.all_of, groups, self.authenticated or other.authenticated, one_of
        )

    def unmet(self, granted: frozenset[str]) -> tuple[str, ...]:
        """The scopes to name in the challenge when ``granted`` falls short; empty when met."""
        if not self.any_of and not self.one_of and self.all_of <= granted:  # the usual case
            return ()
        missing = self.all_of - granted
        failed_groups = [g for g in self.any_of if not g & granted]
        closest: frozenset[str] = frozenset()
        if self.one_of and not any(alt <= granted for alt in self.one_of):
            closest = min(self.one_of, key=lambda alt: (len(alt - granted), sorted(alt)))
        if not missing and not failed_groups and not closest:
            return ()
        needed = set(self.all_of) | closest
        for group in failed_groups:
            needed |= group
        return tuple(sorted(needed))


def parse_scopes(values: Iterable[str], what: str = "scope") -> frozenset[str]:
    out = set()
    for value in values:
        if not isinstance(value, str) or not _SCOPE.match(value):
            raise ValueError(f"{value!r} is not a valid {what} (RFC 6749 §3.3 scope-token)")
        out.add(value)
    return frozenset(out)


def requirement_of(obj: object) -> ScopeRequirement | None:
    """The requirement declared on ``obj`` with :func:`require_scopes`, if any."""
    found = getattr(obj, ATTRIBUTE, None)
    return found if isinstance(found, ScopeRequirement) else None


def _mark(obj: Any, requirement: ScopeRequirement) -> None:
    existing = requirement_of(obj)
    # A bound method takes no attributes of its own; its function does, and the method reads them.
    target = obj.__func__ if inspect.ismethod(obj) else obj
    setattr(target, ATTRIBUTE, requirement.merge(existing) if existing else requirement)


def enforce(requirement: ScopeRequirement) -> None:
    """Check ``requirement`` against the principal of the request being served.

    The guard normally enforces declarations before the application runs; this call-time
    check is the second line, for routes whose declarations the guard could not see
    (a framework's own routing internals). Outside a request bankguard let through it
    refuses to run the endpoint at all.
    """
    from .context import NotProtectedError, current_context
    from .errors import AuthenticationRequired, Denied, InsufficientScope

    context = current_context()
    if context is None:
        raise NotProtectedError(
            "a require_scopes endpoint ran outside bankguard; wrap the app with protect()"
        )
    principal = context.principal
    denial: Denied | None = None
    if not principal.authenticated:
        denial = AuthenticationRequired("token.missing")
    elif unmet := requirement.unmet(principal.scopes):
        denial = InsufficientScope("scope.insufficient", required=unmet)
    if denial is None:
        return
    guard = context.guard
    if guard is not None and guard.policy.tokens.mode == "report":
        guard.late_report(context, denial)  # report mode: recorded, not enforced
        return
    raise denial


def _wrap(fn: Callable[..., Any], requirement: ScopeRequirement) -> Callable[..., Any]:
    # Mark the function itself too: when this decorator sits above the route decorator, the
    # framework has registered ``fn``, and the guard finds the requirement there.
    _mark(fn, requirement)
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_guarded(*args: Any, **kwargs: Any) -> Any:
            enforce(requirement_of(async_guarded) or requirement)
            return await fn(*args, **kwargs)

        return async_guarded

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        enforce(requirement_of(guarded) or requirement)
        return fn(*args, **kwargs)

    return guarded


def require_scopes(*scopes: str, any_of: Iterable[str] = ()) -> Callable[[T], T]:
    """Declare the scopes an endpoint needs.

    ``require_scopes("accounts")`` needs ``accounts``; ``require_scopes("a", "b")`` needs both;
    ``require_scopes(any_of=["payments", "payments:write"])`` needs at least one of them.

    * On a view or endpoint function (sync or async), above or below the route decorator.
      The guard enforces it before the application runs where it can find the route
      (Flask, Starlette and FastAPI routes, mounts, included routers); below the route
      decorator the returned wrapper also enforces it when the function is called.
    * On a Flask ``Blueprint``: every view of the blueprint (checked before the view runs).
    * On a FastAPI ``APIRouter``: its routes (routes added later also get a router
      dependency that checks at call time).
    * On an ASGI or WSGI application object: every request to it.

    Stacked declarations add up.
    """
    requirement = ScopeRequirement(
        parse_scopes(scopes),
        (parse_scopes(any_of, "any_of scope"),) if not isinstance(any_of, str) and any_of else (),
    )
    if isinstance(any_of, str):
        raise ValueError("any_of takes a list of scopes, not a string")
    if not requirement:
        raise ValueError("require_scopes() needs at least one scope")

    def decorate(obj: T) -> T:
        if hasattr(obj, "add_api_route") and hasattr(obj, "dependencies"):
            _guard_router(obj, requirement)
        elif hasattr(obj, "before_request") and hasattr(obj, "register_blueprint"):
            _guard_blueprint(obj, requirement)
        elif (inspect.isfunction(obj) or inspect.ismethod(obj)) and not _is_app_callable(obj):
            wrapped = _wrap(obj, requirement)
            _mark(wrapped, requirement)
            return wrapped  # type: ignore[return-value]
        _mark(obj, requirement)
        return obj

    return decorate


def _is_app_callable(fn: Any) -> bool:
    """An ASGI (scope, receive, send) or WSGI (environ, start_response) function."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return names[:3] == ["scope", "receive", "send"] or names[:2] == ["environ", "start_response"]


class ScopeDependency:
    """A FastAPI dependency that enforces a requirement at call time; the guard also reads
    it from the route before dispatch. ``require_scopes`` on a router adds one."""

    def __init__(self, requirement: ScopeRequirement) -> None:
        self.requirement = requirement

    def __call__(self) -> None:
        enforce(self.requirement)

    def __repr__(self) -> str:
        return f"ScopeDependency({self.requirement!r})"


def _guard_router(router: Any, requirement: ScopeRequirement) -> None:
    """FastAPI router: a dependency on routes added from now on; routes it already has are
    marked, so the guard enforces the requirement on them before dispatch."""
    from fastapi import Depends

    for route in getattr(router, "routes", ()):
        endpoint = getattr(route, "endpoint", None)
        if endpoint is not None and hasattr(route, "dependant"):
            _mark(endpoint, requirement)
    router.dependencies.append(Depends(ScopeDependency(requirement)))


def _guard_blueprint(blueprint: Any, requirement: ScopeRequirement) -> None:
    """Flask blueprint: checked before each of its views runs (and resolved by the guard)."""

    def check_scopes() -> None:
        enforce(requirement)

    blueprint.before_request(check_scopes)
