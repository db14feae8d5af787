"""Policy section for per-TPP rate limits and quotas (OWASP API4, OBIE 429, PSD2 RTS art. 36(5)).

Limits are written the way the ``limits`` library parses them: ``"1000/minute"``,
``"1000 per minute; 20000/day"``, ``"10/5 seconds"``; several windows apply at once. Every string
is parsed when the policy loads, so a typo is a :class:`~bankguard.errors.ConfigurationError`
naming its YAML path (``ratelimit.tiers.gold``), never a surprise while serving.

.. code-block:: yaml

    ratelimit:
      enabled: true
      strategy: sliding-window-counter     # or fixed-window, moving-window
      tiers:
        default: "100/minute; 5000/day"
        gold:
          limits: "1000/minute; 20000/day"
          operations: {CreateDomesticPayments: "50/minute"}
      tpps: {PSDGB-FCA-123456: gold}       # TPP id (eIDAS) or OAuth client_id → tier
      operations: {GetTransactions: "20/minute"}
      preauth: {limits: "50/second"}       # per client address, before any signature check
      unattended: {enabled: true, operations: [GetAccounts, GetBalances, GetTransactions]}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Literal

from ._config import Invalid, Section, option, parse_duration
from .errors import ConfigProblem, ConfigurationError

Mode = Literal["enforce", "report"]
Strategy = Literal["fixed-window", "moving-window", "sliding-window-counter"]

#: Shortest key for the keyed digest of consent and account ids.
MIN_KEY_SECRET_BYTES = 32
#: At most this many windows in one limit string.
MAX_WINDOWS = 8
#: The longest window: a year (quotas beyond that belong in a contract, not a counter).
MAX_WINDOW_SECONDS = 366 * 86400
_OPERATION_ID = re.compile(r"^[A-Za-z0-9._~:-]{1,128}\Z")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}\Z")  # RFC 9110 token
_IDENTITY = re.compile(r"^[\x21-\x7e]{1,256}\Z")
_ZERO_LENGTH = re.compile(r"(?:/|\bper)\s*0+\s*[A-Za-z]", re.IGNORECASE)


def windows_of(text: str) -> tuple[tuple[int, int], ...]:
    """``(limit, seconds)`` of every window of a limit string (already validated)."""
    from limits import parse_many

    return tuple((item.amount, item.get_expiry()) for item in parse_many(text))


def parse_limits(value: object, path: str) -> str:
    """A ``limits`` string: ``"1000/minute; 20000/day"``; returned in a normal form."""
    from limits import parse_many

    if not isinstance(value, str):
        raise Invalid(path, f"expected limits such as '1000/minute; 20000/day', got {value!r}")
    if _ZERO_LENGTH.search(value):  # limits reads "100/0 minutes" as "100/minute"
        raise Invalid(path, "every window must last between a second and a year")
    try:
        items = parse_many(value)
    except ValueError:
        raise Invalid(
            path,
            f"{value!r} is not a limit such as '100/second', '1000 per minute; 20000/day', '10/5 seconds'",
        ) from None
    if not items:
        raise Invalid(path, "names no window")
    if len(items) > MAX_WINDOWS:
        raise Invalid(path, f"at most {MAX_WINDOWS} windows")
    seen: set[int] = set()
    for item in items:
        if item.amount < 1:
            raise Invalid(path, "every window must admit at least one request")
        seconds = item.get_expiry()
        if not 1 <= seconds <= MAX_WINDOW_SECONDS:
            raise Invalid(path, "every window must last between a second and a year")
        if seconds in seen:
            raise Invalid(path, f"two windows of {seconds} s; give each length once")
        seen.add(seconds)
    return "; ".join(f"{item.amount}/{item.get_expiry()} seconds" for item in items)


def _parse_operation_limits(value: object, path: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, tuple):
        value = dict(value)
    if not isinstance(value, dict):
        raise Invalid(path, "expected a mapping of operation ids to limits")
    out: dict[str, str] = {}
    for key, text in value.items():
        if not isinstance(key, str) or not _OPERATION_ID.match(key):
            raise Invalid(path, f"{key!r} is not an operation id")
        out[key] = parse_limits(text, f"{path}.{key}")
    return tuple(sorted(out.items()))


@dataclass(frozen=True, kw_only=True, slots=True)
class Tier(Section):
    """The limits of one tier of TPPs, and per-operation overrides for them."""

    limits: str = option(parse=parse_limits)
    #: Operation id → limits that replace :attr:`limits` for that operation (own counters).
    operations: tuple[tuple[str, str], ...] = option((), parse=_parse_operation_limits)


def _parse_tiers(value: object, path: str) -> tuple[tuple[str, Tier], ...]:
    if isinstance(value, tuple):
        value = dict(value)
    if not isinstance(value, dict):
        raise Invalid(path, "expected a mapping of tier names to limits")
    out: dict[str, Tier] = {}
    problems: list[ConfigProblem] = []
    for name, spec in value.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not _OPERATION_ID.match(name):
            problems.append(ConfigProblem(path, f"{name!r} is not a tier name (letters, digits, . _ ~ : -)"))
            continue
        try:
            if isinstance(spec, Tier):
                out[name] = spec
            elif isinstance(spec, str):
                out[name] = Tier(limits=parse_limits(spec, where))
            elif isinstance(spec, dict):
                from ._config import build

                out[name] = build(Tier, spec, where)
            else:
                problems.append(
                    ConfigProblem(where, "expected limits ('1000/minute') or {limits, operations}")
                )
        except Invalid as exc:
            problems.append(exc.problem)
        except ConfigurationError as exc:
            problems.extend(
                p if p.path.startswith(where) else ConfigProblem(f"{where}.{p.path}", p.message)
                for p in exc.problems
            )
    if problems:
        raise ConfigurationError(problems)
    return tuple(sorted(out.items()))


def _parse_tpps(value: object, path: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, tuple):
        value = dict(value)
    if not isinstance(value, dict):
        raise Invalid(path, "expected a mapping of TPP ids or client ids to tier names")
    for key, tier in value.items():
        if not isinstance(key, str) or not _IDENTITY.match(key):
            raise Invalid(path, f"{key!r} is not a TPP id or client id")
        if not isinstance(tier, str):
            raise Invalid(f"{path}.{key}", "expected a tier name")
    return tuple(sorted(value.items()))


def _parse_names(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid(path, "expected a list")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _OPERATION_ID.match(item):
            raise Invalid(f"{path}[{i}]", f"{item!r} is not an operation id or parameter name")
    return tuple(value)


def _parse_claims(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid(path, "expected a list of claim names")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not 0 < len(item) <= 64:
            raise Invalid(f"{path}[{i}]", f"{item!r} is not a claim name")
    return tuple(value)


def _parse_headers(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise Invalid(path, "expected a non-empty list of header names")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _HEADER.match(item):
            raise Invalid(f"{path}[{i}]", f"{item!r} is not a header name")
    return tuple(h.lower() for h in value)


@dataclass(frozen=True, kw_only=True, slots=True)
class PreAuthPolicy(Section):
    """A cheap limit per client address, checked before any certificate or token is verified, so
    an unauthenticated flood cannot burn CPU on signatures. Counted in each process (it protects
    that process; no store round trip before authentication)."""

    #: Limits per client address (None: off), e.g. ``"50/second"``.
    limits: str | None = option(None, parse=parse_limits)
    #: IPv6 clients are counted per network of this prefix length (one customer often holds a
    #: whole /64; counting single addresses would let it rotate through them).
    ipv6_prefix: int = 64

    def _check(self) -> None:
        if not 32 <= self.ipv6_prefix <= 128:
            raise ConfigurationError("must be between 32 and 128", path="ipv6_prefix")


@dataclass(frozen=True, kw_only=True, slots=True)
class UnattendedPolicy(Section):
    """PSD2 RTS art. 36(5)(b): without the customer present, an AISP may access account data at
    most ``limit`` times per ``period`` per consent / account (Berlin Group ``frequencyPerDay``)."""

    enabled: bool = False
    #: Requests allowed per period when the customer is not present.
    limit: int = 4
    #: The period (a moving window: any 24 hours, not a calendar day).
    period: float = option(86400.0, parse=parse_duration)
    #: The account-information operations the cap applies to (operation ids).
    operations: tuple[str, ...] = option((), parse=_parse_names)
    #: Headers carrying the customer's IP address, which means the customer is present (UK:
    #: ``x-fapi-customer-ip-address``, Berlin Group: ``psu-ip-address``); a value that is not an IP
    #: address is no such signal.
    presence_headers: tuple[str, ...] = option(
        ("x-fapi-customer-ip-address", "psu-ip-address"), parse=_parse_headers
    )
    #: Claims of the verified access token naming the consent, counted separately (the first
    #: present: UK ``openbanking_intent_id``, or ``consent_id``).
    consent_claims: tuple[str, ...] = option(("openbanking_intent_id", "consent_id"), parse=_parse_claims)
    #: Path parameters naming the account, counted separately (``AccountId``, ``account-id``).
    account_parameters: tuple[str, ...] = option(("AccountId", "account-id"), parse=_parse_names)
    #: Shape of the 429: ``generic`` (problem+json) or ``berlin-group`` (adds ``tppMessages`` with
    #: ``ACCESS_EXCEEDED``).
    error: Literal["generic", "berlin-group"] = "generic"
    #: Environment variable holding a key (at least 32 bytes, the same on every replica) for the
    #: digest of consent and account ids in the counters' keys: HMAC-SHA256 instead of SHA-256,
    #: so someone reading the store cannot test guessed account numbers against it.
    key_secret_env: str | None = None

    def _check(self) -> None:
        problems = []
        if not 1 <= self.limit <= 1000:
            problems.append(ConfigProblem("limit", "must be between 1 and 1000"))
        if not 3600 <= self.period <= MAX_WINDOW_SECONDS or self.period != int(self.period):
            problems.append(ConfigProblem("period", "must be whole seconds between an hour and a year"))
        secret = os.environ.get(self.key_secret_env, "") if self.key_secret_env is not None else None
        if self.enabled and secret is not None and len(secret.encode("utf-8")) < MIN_KEY_SECRET_BYTES:
            problems.append(
                ConfigProblem(
                    "key_secret_env",
                    f"environment variable {self.key_secret_env} must hold at least "
                    f"{MIN_KEY_SECRET_BYTES} bytes",
                )
            )
        if self.enabled and not self.operations:
            problems.append(
                ConfigProblem("operations", "name the account-information operations the cap applies to")
            )
        if problems:
            raise ConfigurationError(problems)


@dataclass(frozen=True, kw_only=True, slots=True)
class RateLimitPolicy(Section):
    """Per-TPP rate limits and quotas, keyed only on a verified identity: the TPP id of a
    validated certificate, else the ``client_id`` of a verified token. Requests with neither
    (public operations) meet only the pre-authentication limit."""

    enabled: bool = False
    #: ``enforce`` refuses with 429; ``report`` counts and records only.
    mode: Mode = "enforce"
    #: The ``limits`` strategy of the tier and operation windows.
    strategy: Strategy = "sliding-window-counter"
    #: When the store cannot answer: ``closed`` refuses (503), ``open`` lets the request through
    #: unlimited. Either way the audit event records it.
    on_storage_failure: Literal["closed", "open"] = "closed"
    #: Tier name → limits. ``default`` applies to every identity :attr:`tpps` does not name.
    tiers: tuple[tuple[str, Tier], ...] = option((), parse=_parse_tiers)
    #: Identity (TPP id or client id) → tier name.
    tpps: tuple[tuple[str, str], ...] = option((), parse=_parse_tpps)
    #: Operation id → limits for every tier (a tier's own ``operations`` take precedence).
    operations: tuple[tuple[str, str], ...] = option((), parse=_parse_operation_limits)
    #: Send ``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers-10).
    headers: bool = True
    preauth: PreAuthPolicy = field(default_factory=PreAuthPolicy)
    unattended: UnattendedPolicy = field(default_factory=UnattendedPolicy)

    def _check(self) -> None:
        problems = []
        names = {name for name, _ in self.tiers}
        if self.enabled and "default" not in names:
            problems.append(
                ConfigProblem("tiers", "define a 'default' tier (it applies to every TPP not in tpps)")
            )
        for identity, tier in self.tpps:
            if tier not in names:
                problems.append(ConfigProblem(f"tpps.{identity}", f"no tier named {tier!r}"))
        if problems:
            raise ConfigurationError(problems)

    def tier_of(self, identity: str) -> Tier:
        """The tier of a verified identity (the ``default`` tier when not listed)."""
        tiers = dict(self.tiers)
        return tiers[dict(self.tpps).get(identity, "default")]
