"""Render a :class:`~bankguard.errors.Denied` as an HTTP response.

The body is RFC 9457 problem details (``application/problem+json``, §3): a stable
``type`` URI per problem, ``title``, ``status``, a generic ``detail`` and the
``interaction_id`` extension member. The precise reason never appears here; it goes
to the audit event.

Challenges follow RFC 6750 §3 and RFC 9449 §7 (STANDARDS §0): with no usable
credentials every enabled scheme is offered and no ``error`` is given (E1); when
credentials were presented, the challenge of the scheme the client used carries
``error`` and ``error_description``. Auth-param values are restricted to the
characters RFC 6750 §3 allows, each attribute appears at most once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import Denied, InsufficientScope

_ALLOWED = frozenset(chr(c) for c in (0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)))


def auth_param(value: str) -> str:
    """Drop every character RFC 6750 §3 forbids in an auth-param value (AUTH-08)."""
    return "".join(c for c in value if c in _ALLOWED)


@dataclass(frozen=True, slots=True)
class Scheme:
    """An enabled authentication scheme and the parameters of its bare challenge."""

    name: str
    params: tuple[tuple[str, str], ...] = ()

    def challenge(self, extra: tuple[tuple[str, str], ...] = ()) -> str:
        params = [*self.params, *extra]
        if not params:
            return self.name
        return self.name + " " + ", ".join(f'{k}="{auth_param(v)}"' for k, v in params)


@dataclass(frozen=True, slots=True)
class ProblemResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ProblemRenderer:
    """Built once per guard from the policy; renders denials without further lookups."""

    def __init__(
        self,
        *,
        type_base: str,
        schemes: tuple[Scheme, ...],
        interaction_header: str,
        cache_control: str = "no-store",
    ) -> None:
        self.type_base = type_base
        self.schemes = schemes
        self.interaction_header = interaction_header
        self.cache_control = cache_control

    def www_authenticate(self, denial: Denied) -> list[str]:
        if not denial.challenge:
            return []
        if denial.error is None:
            return [s.challenge() for s in self.schemes]
        extra: list[tuple[str, str]] = [("error", denial.error)]
        if denial.detail:
            extra.append(("error_description", denial.detail))
        if isinstance(denial, InsufficientScope) and denial.required:
            extra.append(("scope", " ".join(denial.required)))
        tried = [s for s in self.schemes if denial.scheme and s.name.lower() == denial.scheme.lower()]
        targets = tried or list(self.schemes)
        out = [s.challenge(tuple(extra)) for s in targets]
        if denial.offer_all and tried:
            out.extend(s.challenge() for s in self.schemes if s not in tried)
        return out

    def render(self, denial: Denied, interaction_id: str, *, head: bool = False) -> ProblemResponse:
        document: dict[str, object] = {
            "type": self.type_base + denial.slug,
            "title": denial.title,
            "status": denial.status,
            "detail": denial.detail,
            "interaction_id": interaction_id,
        }
        for name, value in denial.extensions.items():
            document.setdefault(name, value)  # never replaces the standard members
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=True).encode("ascii")
        headers: list[tuple[str, str]] = [
            ("content-type", "application/problem+json"),
            ("content-length", str(len(body))),
            ("cache-control", self.cache_control),
            ("x-content-type-options", "nosniff"),
            (self.interaction_header, interaction_id),
        ]
        headers.extend(("www-authenticate", c) for c in self.www_authenticate(denial))
        headers.extend(denial.headers)
        return ProblemResponse(denial.status, tuple(headers), b"" if head else body)
