"""The checks of the decision core, one module per control.

A check is a small object with a ``name`` (the control, as named in the policy and
the audit event), a ``mode`` (``enforce`` or ``report``) and ``run(facts, state)``.
``run`` raises :class:`~bankguard.errors.Denied` to refuse, records what it
established on ``state``, and returns either None or a generator that yields
store operations (:mod:`bankguard.stores`) and receives their results. The guard
drives that generator with a sync store under WSGI and an async one under ASGI,
so the decision logic is written once.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..decision import ANONYMOUS, Operation, Principal
from ..policy import Mode
from ..request import RequestFacts
from ..stores import StoreOp

#: What a check that needs a store returns.
StoreFlow = Generator[StoreOp, Any, None]


@dataclass(slots=True)
class Credentials:
    """The credentials found in the Authorization header (syntax checked, not verified)."""

    scheme: str
    token: str = field(repr=False)


@dataclass(slots=True)
class State:
    """What the checks establish about one request as the pipeline runs."""

    interaction_id: str
    interaction_id_generated: bool = True
    #: Reason code when the client sent an unusable interaction id.
    interaction_problem: str | None = None
    client_address: str | None = None
    operation: Operation | None = None
    path_params: dict[str, str] = field(default_factory=dict)
    credentials: Credentials | None = None
    principal: Principal = ANONYMOUS
    #: The client certificate presented (over TLS or by a trusted proxy), if any.
    certificate: Any = None
    #: TPP identity established from a validated eIDAS certificate.
    tpp_id: str | None = None
    roles: frozenset[str] = frozenset()
    #: Observations that did not block (an untrusted forwarded header ignored, ...).
    notes: list[str] = field(default_factory=list)
    #: Principals already merged with this certificate's identity, by id of the token's principal
    #: (kept with the certificate's cached record; see the token control).
    variants: dict[int, Any] | None = None
    #: The DPoP proof that passed its stateless checks (``Authorization: DPoP``), if any.
    proof: Any = None
    #: Headers the response gets whatever it is (a rotated ``DPoP-Nonce``, RFC 9449 §8.2).
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    #: Rate-limit windows this request was counted in: (its RateLimit-Policy item, name, remaining,
    #: reset).
    quotas: list[tuple[str, str, int, float]] = field(default_factory=list)


class Check(Protocol):
    name: str
    mode: Mode

    def run(self, facts: RequestFacts, state: State) -> StoreFlow | None: ...
