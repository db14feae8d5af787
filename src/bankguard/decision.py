"""What the decision core returns: the verified principal and the decision itself."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .scopes import ScopeRequirement

if TYPE_CHECKING:
    from .audit import AuditEvent
    from .errors import Denied

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is calling, as far as bankguard has verified it.

    Nothing here comes from an unverified source: a field is None (or empty)
    until a control has established it (a verified token, a validated certificate).
    """

    authenticated: bool = False
    #: ``sub`` of the verified access token (the PSU, or the client itself).
    subject: str | None = None
    #: OAuth ``client_id`` of the verified access token.
    client_id: str | None = None
    #: Third-party provider id, e.g. ``PSDGB-FCA-123456`` from an eIDAS certificate.
    tpp_id: str | None = None
    #: PSD2 roles (``PSP_AI``, ``PSP_PI``, ...) from a validated certificate.
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    consent_id: str | None = None
    #: How the token is sender-constrained: ``mtls``, ``dpop`` or None.
    binding: Literal["mtls", "dpop"] | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __repr__(self) -> str:
        # Claims may carry personal data; keep them out of reprs and logs.
        return (
            f"Principal(authenticated={self.authenticated}, subject={self.subject!r}, "
            f"client_id={self.client_id!r}, tpp_id={self.tpp_id!r}, scopes={sorted(self.scopes)!r})"
        )


ANONYMOUS = Principal()


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """A declared operation: one method on one path template."""

    id: str
    method: str
    path: str
    public: bool = False
    #: Scopes the token must all grant, and scopes of which it must grant one (policy-declared).
    scopes: tuple[str, ...] = ()
    any_scopes: tuple[str, ...] = ()
    #: ``scopes`` and ``any_scopes`` as one requirement, built once (None when there are none).
    requirement: ScopeRequirement | None = None
    #: PSD2 roles the client's certificate must hold.
    roles: tuple[str, ...] = ()
    #: The operation's OpenAPI contract (:class:`bankguard.openapi.contract.OperationContract`),
    #: when the policy names a spec.
    contract: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityContext:
    """What the application can read about a request bankguard let through.

    Stored in the ASGI scope and the WSGI environ under :data:`CONTEXT_KEY`; read it
    with :func:`bankguard.get_context` or the Flask / FastAPI helpers.
    """

    principal: Principal
    operation: Operation | None
    interaction_id: str
    #: Path parameters matched by the operation's template (decoded).
    path_params: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    #: The guard that decided, so late checks (``require_scopes`` at call time) can render
    #: and audit their refusals the same way.
    guard: Any = field(default=None, repr=False, compare=False)


CONTEXT_KEY = "bankguard.context"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome for one request: allow (with headers to add) or deny."""

    allowed: bool
    context: SecurityContext
    #: Headers to add to the response, whichever it is.
    response_headers: tuple[tuple[str, str], ...]
    event: AuditEvent
    denial: Denied | None = None

    @property
    def principal(self) -> Principal:
        return self.context.principal

    @property
    def interaction_id(self) -> str:
        return self.context.interaction_id
