"""Rate limits: a cheap limit per client address before authentication, then per-TPP tiers,
per-operation overrides and the PSD2 unattended-access cap after it (OWASP API4; OBIE and Berlin
Group 429; PSD2 RTS art. 36(5)).

Only verified identities are counted (STANDARDS OWASP-14): the per-TPP check runs after the
certificate and token checks, so a request with a forged or expired credential is refused before
it can spend the quota of the TPP it claims to be. The pre-authentication check keys on the client
address the guard resolved (``X-Forwarded-For`` only from trusted proxies), never on a header a
client chooses.

Responses carry ``RateLimit-Policy`` and ``RateLimit`` as draft-ietf-httpapi-ratelimit-headers-10
defines them (structured-field lists: ``"tpp-60s";q=1000;w=60`` and ``"tpp-60s";r=998;t=42``); a
429 carries ``Retry-After`` (RFC 9110 §10.2.3, RFC 6585 §4).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import os
from collections.abc import Generator, Iterable
from typing import Any
from urllib.parse import quote

from ..errors import ConfigProblem, ConfigurationError, ServiceUnavailable, TooManyRequests
from ..policy import Policy
from ..policy_ratelimit import windows_of
from ..ratelimit import LimitsMemory
from ..request import RequestFacts
from ..stores import Counted, Hit, MemoryStore, StoreFailure, StoreOp, Window
from . import State

log = logging.getLogger("bankguard")

__all__ = ["RATELIMIT_HEADERS", "PreAuthLimitCheck", "TppLimitCheck", "publish"]

RATELIMIT_HEADERS = ("ratelimit-policy", "ratelimit")
_SHORT = {"fixed-window": "fw", "moving-window": "mw", "sliding-window-counter": "sw"}

#: Identities x operations whose windows are kept ready.
_MAX_CACHED = 10_000

# (name, limit, seconds, its RateLimit-Policy item) of each window of a limit string.
Plan = tuple[tuple[str, int, int, str], ...]


def _plan(prefix: str, text: str) -> Plan:
    return tuple(_window(f"{prefix}-{seconds}s", limit, seconds) for limit, seconds in windows_of(text))


def _window(name: str, limit: int, seconds: int) -> tuple[str, int, int, str]:
    return name, limit, seconds, f'"{name}";q={limit};w={seconds}'


def _part(value: str) -> str:
    """A key segment: percent-encoded, so no identity can forge another's key (``/``, ``{}``)."""
    return quote(value, safe="")


def publish(state: State) -> None:
    """Set the RateLimit header fields from every window the request was counted in."""
    headers = state.response_headers
    if headers and any(h[0] in RATELIMIT_HEADERS for h in headers):
        headers[:] = [h for h in headers if h[0] not in RATELIMIT_HEADERS]
    quotas = state.quotas
    if len(quotas) == 1:  # the common case: one window
        item, name, remaining, reset = quotas[0]
        headers += [("ratelimit-policy", item), ("ratelimit", f'"{name}";r={remaining};t={math.ceil(reset)}')]
    elif quotas:
        current = ", ".join(f'"{q[1]}";r={q[2]};t={math.ceil(q[3])}' for q in quotas)
        headers += [("ratelimit-policy", ", ".join(q[0] for q in quotas)), ("ratelimit", current)]


def _record(state: State, plan: Plan, results: Iterable[Counted], headers: bool) -> list[float]:
    """Note the windows on ``state``; the reset times of those that refused."""
    quotas = state.quotas
    if headers and not quotas and len(plan) == 1:  # the common case: the first and only window
        name, _, _, item = plan[0]
        admitted, remaining, reset = next(iter(results))
        quotas.append((item, name, remaining, reset))
        fields = state.response_headers
        if fields and any(h[0] in RATELIMIT_HEADERS for h in fields):
            fields[:] = [h for h in fields if h[0] not in RATELIMIT_HEADERS]
        fields += [("ratelimit-policy", item), ("ratelimit", f'"{name}";r={remaining};t={math.ceil(reset)}')]
        return [] if admitted else [reset]
    refused: list[float] = []
    for (name, _, _, item), counted in zip(plan, results, strict=True):
        if headers:
            quotas.append((item, name, counted.remaining, counted.reset))
        if not counted.admitted:
            refused.append(counted.reset)
    if headers:
        publish(state)
    return refused


def _retry_after(resets: list[float]) -> int:
    return max(1, math.ceil(max(resets)))


def _fields(state: State) -> list[tuple[str, str]]:
    """The RateLimit fields on ``state``, for a 429 (the problem carries them too)."""
    return [h for h in state.response_headers if h[0] in RATELIMIT_HEADERS]


def _unavailable(state: State, exc: StoreFailure, fail_open: bool) -> None:
    """The counters cannot answer: refuse (503) or, under ``on_storage_failure: open``, let the
    request through with a note on its audit event. Either way operators get the cause."""
    # The cause (refused, timed out, pool exhausted, full) is for operators, never for clients
    # or the audit trail; it names no key and no credential.
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    log.warning(
        "bankguard: rate-limit store failed (%s: %s); failing %s",
        type(cause).__name__,
        str(cause)[:200],
        "open" if fail_open else "closed",
    )
    if not fail_open:
        raise ServiceUnavailable("ratelimit.storage_unavailable", retry_after=1)
    state.notes.append("ratelimit.storage_unavailable")


def _customer_present(facts: RequestFacts, headers: tuple[str, ...]) -> bool:
    """Whether the request says the customer is present: one of ``headers`` holds an IP address
    (FAPI-11, Berlin Group ``PSU-IP-Address``). Any other value is no such signal, so it cannot be
    used to step around the unattended-access cap."""
    for name in headers:
        for value in facts.headers.get_all(name):
            try:
                ipaddress.ip_address(value.strip())
            except ValueError:
                continue
            return True
    return False


class PreAuthLimitCheck:
    """Per client address, in this process, before any signature is verified."""

    name = "ratelimit"

    def __init__(self, policy: Policy) -> None:
        rl = policy.ratelimit
        self.mode = rl.mode
        self._plan = _plan("preauth", rl.preauth.limits or "")
        self._ipv6_prefix = rl.preauth.ipv6_prefix
        self._headers = rl.headers
        self._memory = LimitsMemory(policy.storage.max_entries)
        self._fail_open = rl.on_storage_failure == "open"

    def _address(self, address: str) -> str:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return _part(address[:64])
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, self._ipv6_prefix), strict=False))
        return str(ip)

    def run(self, facts: RequestFacts, state: State) -> None:
        address = state.client_address or facts.peer
        if address is None:
            return None
        key = f"rl/preauth/{_part(self._address(address))}"
        windows = tuple(
            Window(f"{key}/{seconds}", limit, seconds, "fixed-window") for _, limit, seconds, _ in self._plan
        )
        try:
            results = self._memory.hit(Hit(windows))
        except StoreFailure as exc:  # its table is full of live counters (an address flood)
            _unavailable(state, exc, self._fail_open)
            return None
        refused = _record(state, self._plan, results, self._headers)
        if refused:
            raise TooManyRequests(
                "ratelimit.preauth_exceeded", retry_after=_retry_after(refused), headers=_fields(state)
            )
        return None


class TppLimitCheck:
    """Tier, operation and unattended-access windows of a verified identity, in the shared store."""

    name = "ratelimit"

    def __init__(self, policy: Policy, known_operations: Iterable[str] | None = None) -> None:
        rl = policy.ratelimit
        self.mode = rl.mode
        self._strategy = rl.strategy
        self._short = _SHORT[rl.strategy]
        self._fail_open = rl.on_storage_failure == "open"
        self._headers = rl.headers
        self._tpps = dict(rl.tpps)
        self._tiers: dict[str, tuple[Plan, dict[str, Plan]]] = {}
        shared = {op: _plan("op", text) for op, text in rl.operations}
        for name, tier in rl.tiers:
            ops = dict(shared)
            ops.update({op: _plan("op", text) for op, text in tier.operations})
            self._tiers[name] = (_plan("tpp", tier.limits), ops)
        un = rl.unattended
        self._unattended = frozenset(un.operations) if un.enabled else frozenset()
        self._unattended_plan: Plan = (_window("unattended", un.limit, int(un.period)),)
        self._presence = un.presence_headers
        self._accounts = un.account_parameters
        self._consents = un.consent_claims
        self._bg_error = un.error == "berlin-group"
        self._digest_key: bytes | None = None
        if un.key_secret_env:
            secret = os.environ.get(un.key_secret_env, "")
            if not secret:  # checked when the policy loaded; gone since
                raise ConfigurationError(
                    f"environment variable {un.key_secret_env} is not set",
                    path="ratelimit.unattended.key_secret_env",
                )
            self._digest_key = secret.encode("utf-8")
        self._windows: dict[tuple[str, str | None], tuple[Plan, tuple[Window, ...], Hit]] = {}
        self._inline: LimitsMemory | None = None
        if known_operations is not None:
            _check_operations(policy, set(known_operations))

    def run(self, facts: RequestFacts, state: State) -> Generator[StoreOp, Any, None] | None:
        principal = state.principal
        identity = (
            principal.tpp_id or state.tpp_id or (principal.client_id if principal.authenticated else None)
        )
        if identity is None:
            return None  # nobody verified: only the pre-authentication limit applies
        op = state.operation.id if state.operation is not None else None
        found = self._windows.get((identity, op))
        if found is None:
            found = self._windows_of(identity, op)
        plan, windows, hit = found
        if op in self._unattended and not _customer_present(facts, self._presence):
            consent = principal.consent_id or next(
                (str(v) for c in self._consents if isinstance(v := principal.claims.get(c), str) and v), "-"
            )
            account = next((state.path_params[p] for p in self._accounts if p in state.path_params), "-")
            _, limit, seconds, _ = self._unattended_plan[0]
            # Consent and account ids are personal data: the key holds a digest of them (keyed when
            # unattended.key_secret_env names a key).
            material = f"{consent}\x00{account}".encode()
            if self._digest_key is not None:
                digest = hmac.new(self._digest_key, material, hashlib.sha256).hexdigest()[:32]
            else:
                digest = hashlib.sha256(material).hexdigest()[:32]
            key = f"rl/mw/unattended/{_part(identity)}/{digest}"
            hit = Hit((*windows, Window(key, limit, seconds, "moving-window")))
            return self._count(state, plan + self._unattended_plan, hit, True)
        return self._count(state, plan, hit, False)

    def _windows_of(self, identity: str, op: str | None) -> tuple[Plan, tuple[Window, ...], Hit]:
        """The plan and windows of an identity on an operation (cached: the same every request)."""
        tier, overrides = self._tiers[self._tpps.get(identity, "default")]
        who = _part(identity)
        if op is not None and op in overrides:
            plan, base = overrides[op], f"rl/{self._short}/op/{_part(op)}/{who}"
        else:
            plan, base = tier, f"rl/{self._short}/tpp/{who}"
        windows = tuple(
            Window(f"{base}/{seconds}", limit, seconds, self._strategy) for _, limit, seconds, _ in plan
        )
        if len(self._windows) >= _MAX_CACHED:
            self._windows.clear()  # verified identities are few; this bounds a misbehaving deployment
        found = self._windows[identity, op] = (plan, windows, Hit(windows))
        return found

    def bind_store(self, store: object) -> None:
        """Called by the guard with its store: a process-local one is used directly (no I/O, so
        nothing to hand to the driver), a shared one through the driver."""
        self._inline = store.limiter() if isinstance(store, MemoryStore) else None

    def _count(
        self, state: State, plan: Plan, hit: Hit, unattended: bool
    ) -> Generator[StoreOp, Any, None] | None:
        if self._inline is not None:
            try:
                results = self._inline.hit(hit)
            except StoreFailure as exc:
                _unavailable(state, exc, self._fail_open)
                return None
            self._judge(state, plan, results, unattended)
            return None
        return self._flow(state, plan, hit, unattended)

    def _flow(self, state: State, plan: Plan, hit: Hit, unattended: bool) -> Generator[StoreOp, Any, None]:
        try:
            results: tuple[Counted, ...] = yield hit
        except StoreFailure as exc:
            _unavailable(state, exc, self._fail_open)
            return
        self._judge(state, plan, results, unattended)

    def _judge(self, state: State, plan: Plan, results: tuple[Counted, ...], unattended: bool) -> None:
        refused = _record(state, plan, results, self._headers)
        if not refused:
            return
        retry = _retry_after(refused)
        if unattended and not results[-1].admitted:
            denial = TooManyRequests(
                "ratelimit.unattended_exceeded",
                retry_after=retry,
                detail="The number of accesses without the customer present was exceeded.",
                headers=_fields(state),
            )
            if self._bg_error:
                denial.extensions["tppMessages"] = [
                    {"category": "ERROR", "code": "ACCESS_EXCEEDED", "text": denial.detail}
                ]
            raise denial
        raise TooManyRequests("ratelimit.exceeded", retry_after=retry, headers=_fields(state))


def _check_operations(policy: Policy, known: set[str]) -> None:
    """Operation ids in the rate-limit policy must name declared operations."""
    rl = policy.ratelimit
    problems: list[ConfigProblem] = []
    named = [(f"ratelimit.operations.{op}", op) for op, _ in rl.operations]
    for tier_name, tier in rl.tiers:
        named += [(f"ratelimit.tiers.{tier_name}.operations.{op}", op) for op, _ in tier.operations]
    if rl.unattended.enabled:
        named += [
            (f"ratelimit.unattended.operations[{i}]", op) for i, op in enumerate(rl.unattended.operations)
        ]
    for path, op in named:
        if op not in known:
            problems.append(ConfigProblem(path, f"no declared operation has the id {op!r}"))
    if problems:
        raise ConfigurationError(problems)
