"""RFC 7662 token introspection for opaque access tokens, with a bounded result cache.

* Request (§2.1; INTRO-01): ``POST`` form ``token=...&token_type_hint=access_token``,
  authenticated by ``client_secret_basic``, ``client_secret_post`` or ``tls_client_auth``.
* Response (§2.2; INTRO-02, INTRO-07): untrusted input. Status 200 only, size cap, a strict
  JSON object, no URL in it followed; active only when ``active`` is the JSON boolean ``true``.
* No usable answer (§4; INTRO-05): :class:`IntrospectionUnavailable` → 503 + ``Retry-After``.
* Cache (§4; INTRO-04): by SHA-256 of the token, at most ``cache_ttl`` and never past ``exp``;
  inactive results for ``negative_cache_ttl``. Concurrent calls for one token share one request.
* The local checks of the metadata (INTRO-03) belong to the token control; :func:`check_claims`
  does the time, issuer and audience part.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote_plus, urlencode

from ..errors import ConfigurationError
from ..policy_tokens import IntrospectionPolicy
from ._http import FetchError, request, tls_context
from .jose import JoseError, json_object

#: 9999-12-31T00:00:00Z: later NumericDates are not plausible (as for JWTs).
_LATEST = 253402300800


def _number(value: object) -> float | None:
    """A plausible NumericDate (RFC 7662 §2.2) as a float; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < _LATEST:
        return None
    return float(value)


def _string(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _freeze(value: Any) -> Any:
    """Read-only view of parsed JSON: objects become mappings, arrays tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True, slots=True)
class IntrospectionResult:
    """One introspection response (RFC 7662 §2.2). ``claims`` is the whole response object,
    read-only (nested objects are mappings, arrays tuples); ``expires_at`` is its ``exp``."""

    active: bool
    claims: Mapping[str, Any] = field(repr=False)
    expires_at: float | None = None

    @classmethod
    def from_response(cls, response: Mapping[str, Any]) -> IntrospectionResult:
        """Only the JSON boolean ``true`` makes a token active (RFC 7662 §2.2; INTRO-02)."""
        return cls(
            active=response.get("active") is True,
            claims=_freeze(dict(response)),
            expires_at=_number(response.get("exp")),
        )

    @property
    def scopes(self) -> frozenset[str]:
        """The space-delimited ``scope`` string as a set (RFC 7662 §2.2, RFC 6749 §3.3)."""
        scope = self.claims.get("scope")
        return frozenset(s for s in scope.split(" ") if s) if isinstance(scope, str) else frozenset()

    @property
    def token_type(self) -> str | None:
        """``token_type`` (RFC 7662 §2.2): ``DPoP`` for a DPoP-bound token (RFC 9449 §6.2)."""
        return _string(self.claims.get("token_type"))

    @property
    def cnf(self) -> Mapping[str, Any] | None:
        """The confirmation member (RFC 7800 §3.1; RFC 9449 §6.2; RFC 8705 §3.2)."""
        value = self.claims.get("cnf")
        return value if isinstance(value, Mapping) else None

    @property
    def jkt(self) -> str | None:
        """``cnf.jkt``: thumbprint of the DPoP key the token is bound to (RFC 9449 §6.2)."""
        return _string((self.cnf or {}).get("jkt"))

    @property
    def x5t_s256(self) -> str | None:
        """``cnf.x5t#S256``: thumbprint of the bound client certificate (RFC 8705 §3.2)."""
        return _string((self.cnf or {}).get("x5t#S256"))


class IntrospectionUnavailable(Exception):
    """The endpoint gave no usable answer (RFC 7662 §4): unreachable, timeout, TLS failure,
    non-200, oversize or invalid body. ``reason`` is a short code. Answer 503 + Retry-After."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    result: IntrospectionResult | None = None
    error: str = "interrupted"
    cacheable: bool = True


def _key(token: str) -> bytes:
    """Cache key: SHA-256 of the token, so the cache never holds tokens (RFC 7662 §4)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class IntrospectionClient:
    """Introspects opaque tokens at one endpoint (RFC 7662 §2) and caches the results (§4).

    The client secret is read from ``policy.client_secret_env`` here, once; it never
    appears in ``repr``. :meth:`introspect` blocks (run it off the event loop);
    :meth:`cached` never does I/O. Thread-safe.
    """

    def __init__(
        self, policy: IntrospectionPolicy, *, clock: Callable[[], float] = time.time, max_entries: int = 10000
    ) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must not be negative")
        self.policy = policy
        self._clock = clock
        self._max_entries = max_entries
        self._lock = threading.Lock()
        #: SHA-256 of the token → (result, time it stops being fresh); oldest first.
        self._cache: OrderedDict[bytes, tuple[IntrospectionResult, float]] = OrderedDict()
        self._flights: dict[bytes, _Flight] = {}
        self._headers: list[tuple[str, str]] = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "application/json"),
        ]
        self._form: list[tuple[str, str]] = []
        https = policy.endpoint.lower().startswith("https:")
        if policy.auth == "tls_client_auth":
            if not https:
                raise ConfigurationError("tls_client_auth needs an https:// endpoint", path="endpoint")
            self._form.append(("client_id", policy.client_id))
        else:
            name = policy.client_secret_env or ""
            secret = os.environ.get(name, "")
            if not secret:
                raise ConfigurationError(f"environment variable {name} is not set", path="client_secret_env")
            if policy.auth == "client_secret_basic":
                # RFC 6749 §2.3.1: form-urlencode id and secret (Appendix B), then Basic.
                pair = f"{quote_plus(policy.client_id, safe='')}:{quote_plus(secret, safe='')}"
                basic = base64.b64encode(pair.encode("utf-8")).decode("ascii")
                self._headers.append(("Authorization", f"Basic {basic}"))
            else:
                self._form += [("client_id", policy.client_id), ("client_secret", secret)]
        self._tls = None
        if https:
            mtls = policy.auth == "tls_client_auth"
            try:
                self._tls = tls_context(
                    policy.ca_file, *((policy.client_cert_file, policy.client_key_file) if mtls else ())
                )
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"cannot load TLS files: {exc}", path="ca_file") from None
        # A follower waits at most as long as one exchange can take (connect, TLS, read).
        self._wait = 3 * policy.timeout + 1

    def __repr__(self) -> str:
        return f"IntrospectionClient(endpoint={self.policy.endpoint!r}, client_id={self.policy.client_id!r})"

    def cached(self, token: str) -> IntrospectionResult | None:
        """The cached result for ``token`` if still fresh; never blocks on I/O (RFC 7662 §4)."""
        key = _key(token)
        with self._lock:
            return self._lookup(key, self._clock())

    def evict(self, token: str) -> None:
        """Forget ``token`` (revocation hooks), including the result of a call now running."""
        key = _key(token)
        with self._lock:
            self._cache.pop(key, None)
            flight = self._flights.get(key)
            if flight is not None:
                flight.cacheable = False

    def introspect(self, token: str) -> IntrospectionResult:
        """The server's answer for ``token`` (RFC 7662 §2), from the cache when fresh.

        Blocking. Raises :class:`IntrospectionUnavailable` when no valid answer arrives.
        """
        key = _key(token)
        with self._lock:
            hit = self._lookup(key, self._clock())
            if hit is not None:
                return hit
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            if not flight.done.wait(self._wait):
                raise IntrospectionUnavailable("timeout")
            if flight.result is None:
                raise IntrospectionUnavailable(flight.error)
            return flight.result
        try:
            flight.result = self._fetch(token)
        except IntrospectionUnavailable as exc:
            flight.error = exc.reason
            raise
        finally:
            with self._lock:
                del self._flights[key]
                if flight.result is not None and flight.cacheable:
                    self._store(key, flight.result, self._clock())
            flight.done.set()
        return flight.result

    def _fetch(self, token: str) -> IntrospectionResult:
        # Failures are raised outside the ``except`` blocks: a chained FetchError would keep
        # its traceback, and with it the half-read connection, alive as long as the exception.
        policy = self.policy
        body = urlencode(
            [("token", token), ("token_type_hint", "access_token"), *self._form], errors="surrogatepass"
        )
        failure = None
        try:
            response = request(
                "POST",
                policy.endpoint,
                timeout=policy.timeout,
                max_bytes=policy.max_bytes,
                allow_http=policy.insecure_http,
                body=body.encode("ascii"),
                headers=self._headers,
                tls=self._tls,
            )
        except FetchError as exc:
            failure = exc.reason
        if failure is not None:
            raise IntrospectionUnavailable(failure)
        if response.status != 200:
            raise IntrospectionUnavailable(f"status_{response.status}")
        try:
            data = json_object(response.body, "response")
        except JoseError:
            # INTRO-02: a 200 whose body is not a clean JSON object never makes a token
            # active; it is treated as an inactive answer.
            return IntrospectionResult(active=False, claims=MappingProxyType({}))
        return IntrospectionResult.from_response(data)

    def _lookup(self, key: bytes, now: float) -> IntrospectionResult | None:
        result, until = self._cache.get(key, (None, 0.0))
        if result is not None and now >= until:
            del self._cache[key]
            return None
        return result

    def _store(self, key: bytes, result: IntrospectionResult, now: float) -> None:
        """Active: min(cache_ttl, exp - now), never past ``exp``; inactive: negative_cache_ttl."""
        if result.active:
            if "exp" in result.claims and result.expires_at is None:
                return  # a malformed exp: no way to honour it, so no caching
            until = now + self.policy.cache_ttl
            if result.expires_at is not None:
                until = min(until, result.expires_at)
        else:
            until = now + self.policy.negative_cache_ttl
        if until <= now or self._max_entries == 0:
            return
        self._cache[key] = (result, until)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)


def check_claims(
    result: IntrospectionResult, policy: IntrospectionPolicy, now: float, leeway: float
) -> str | None:
    """The time, issuer and audience checks of an active result (RFC 7662 §2.2, §4; INTRO-03).

    Returns a reason code, or None when the result passes. Scope, ``cnf`` and
    ``token_type`` are left to the token control (DPOP-16, MTLS-04).
    """
    if not result.active:
        return "introspection.inactive"
    claims = result.claims
    times = {name: _number(claims[name]) for name in ("exp", "nbf", "iat") if name in claims}
    iss = claims.get("iss")
    aud = claims.get("aud", ())
    audiences = (aud,) if isinstance(aud, str) else aud
    if (
        None in times.values()
        or ("iss" in claims and not isinstance(iss, str))
        or not isinstance(audiences, (list, tuple))
        or not all(isinstance(a, str) for a in audiences)
    ):
        return "introspection.malformed_claim"
    exp, nbf = times.get("exp"), times.get("nbf")
    if exp is not None and now >= exp + leeway:
        return "introspection.expired"
    if nbf is not None and now + leeway < nbf:
        return "introspection.not_yet_valid"
    if policy.issuer and "iss" in claims and iss != policy.issuer:
        return "introspection.issuer"
    if policy.audiences and "aud" in claims and not set(audiences) & set(policy.audiences):
        return "introspection.audience"
    return None
