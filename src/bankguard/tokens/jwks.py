"""Remote key sets: an issuer's JWK Set fetched from ``jwks_uri`` or found by discovery.

* Keys come only from the configured ``jwks_uri``, or from the ``jwks_uri`` of the AS
  metadata (RFC 8414 §3, OIDC Discovery) whose ``issuer`` is identical to the configured
  issuer (RFC 8414 §3.3, RFC 9068 §4; JWKS-01, JWT-13, JWT-22).
* Fetches go through :mod:`._http`: HTTPS with verified certificates, no redirects, bounded
  time and size, refused link-local targets (JWKS-02). Only status 200 with a strict JSON
  object counts; keys are filtered by :func:`.jwk.load_jwks` (JWKS-03, JWT-12, JWT-17), and
  skipped keys (private or ``oct`` keys among them) are logged as an operational alert.
* A daemon thread refreshes ahead of expiry: ``Cache-Control: max-age`` clamped to
  ``[min_ttl, max_ttl]``; on failure it retries with backoff and the last good set keeps
  serving up to ``max_stale`` after the last success, then the source fails closed (JWKS-05).
  Each refresh replaces the whole set, so added keys verify and removed keys stop (JWKS-06).
* An unknown ``kid`` forces one single-flight fetch, at most one per ``cooldown`` (JWKS-04).
* :meth:`RemoteKeySource.current` never blocks or does I/O; after a fork (gunicorn workers)
  it restarts the refresh thread in the child.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .._config import Invalid, parse_url
from ..policy_tokens import IssuerPolicy, JwksRefreshPolicy
from ._http import FetchError, request, tls_context
from .jose import JoseError, SharedSecret, json_object
from .jwk import VerificationKey, load_jwks
from .keys import KeyIndex

log = logging.getLogger("bankguard")

_MAX_AGE = re.compile(r"^max-age=\"?([0-9]{1,10})\"?\Z")
_MIN_WAIT = 0.05  # seconds between two loop turns, at least
_MAX_WAIT = 60.0  # the loop re-reads the clock at least this often
_MIN_BACKOFF = 1.0
_SPKI = PublicFormat.SubjectPublicKeyInfo
_restart_lock = threading.Lock()


def _fresh_restart_lock() -> None:
    global _restart_lock
    _restart_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_restart_lock)


def max_age(cache_control: str | None) -> float | None:
    """Seconds of ``Cache-Control: max-age`` (RFC 9111 §5.2.2.1); 0 for ``no-store``/``no-cache``
    or an invalid or repeated ``max-age``; None when the header gives no lifetime."""
    if not cache_control:
        return None
    ages: list[str] = []
    for directive in (d.strip().lower() for d in cache_control.split(",")):
        if directive in ("no-store", "no-cache"):
            return 0.0
        if directive.startswith("max-age"):
            ages.append(directive)
    if not ages:
        return None
    m = _MAX_AGE.match(ages[0].replace(" ", ""))
    return float(m.group(1)) if m and len(ages) == 1 else 0.0


def _digest(key: VerificationKey) -> bytes:
    spki = b"" if isinstance(key.key, SharedSecret) else key.key.public_bytes(Encoding.DER, _SPKI)
    return hashlib.sha256(repr((key.kid, key.kty, sorted(key.algorithms))).encode() + spki).digest()


class RemoteKeySource:
    """The keys of one issuer, fetched from ``jwks_uri`` or through discovery (a KeySource)."""

    refreshable = True

    def __init__(
        self,
        issuer: str,
        allowed: frozenset[str],
        *,
        jwks_uri: str | None = None,
        discovery: str | None = None,
        refresh: JwksRefreshPolicy | None = None,
        allow_http: bool = False,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> None:
        if (jwks_uri is None) == (discovery is None):
            raise ValueError("give exactly one of jwks_uri and discovery")
        self.issuer = issuer
        self.fetch_count = 0  # fetch attempts, for metrics
        self.last_success: float | None = None  # clock time of the last good fetch
        self.last_error: str | None = None  # reason of the last failure, None after a success
        self._allowed = allowed
        self._jwks_uri = jwks_uri
        self._discovery = discovery
        self._discovered: str | None = None
        self._policy = refresh or JwksRefreshPolicy()
        self._allow_http = allow_http
        self._tls = tls_context(ca_file) if ca_file else None
        self._clock = clock
        self._state: tuple[KeyIndex, str, float] | None = None  # index, fingerprint, loaded at
        self._next_at = clock()
        self._failures, self._stale_alarm = 0, False
        self._last_forced: float | None = None
        self._in_flight, self._generation, self._result = False, 0, False  # single-flight state
        #: Called (from the refresh thread) when the keys change or go stale; the token control
        #: empties its verified-token cache then, so withdrawn keys stop verifying at once.
        self.listeners: list[Callable[[], None]] = []
        self._started = self._closed = False
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    @classmethod
    def from_policy(
        cls,
        issuer: IssuerPolicy,
        allowed: frozenset[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> RemoteKeySource:
        return cls(
            issuer.issuer,
            allowed,
            jwks_uri=issuer.jwks_uri,
            discovery=issuer.discovery,
            refresh=issuer.refresh,
            allow_http=issuer.insecure_http,
            ca_file=issuer.ca_file,
            clock=clock,
            start=start,
        )

    # -- KeySource --------------------------------------------------------------------------

    def current(self) -> KeyIndex | None:
        if self._pid != os.getpid():
            self._after_fork()
        state = self._state
        if state is None or self._clock() - state[2] > self._policy.max_stale:
            return None
        return state[0]

    def refresh_unknown_kid(self) -> bool:
        return self._fetch(forced=True)

    def start(self) -> None:
        """Load the keys once (synchronously) and start the refresh thread."""
        if self._started or self._closed:
            return
        self._started = True
        if self._state is None:
            self._fetch(forced=False)
            if self._state is None:
                log.error(
                    "jwks: no keys for issuer %s (%s); its tokens are rejected until a fetch succeeds",
                    self.issuer,
                    self.last_error,
                )
        self._spawn()

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and thread.is_alive():
            thread.join(self._policy.timeout + 1.0)

    def refresh_if_due(self) -> bool:
        """One turn of the refresh loop: fetch if the refresh time has come; True if it did."""
        if self._clock() < self._next_at:
            return False
        self._fetch(forced=False)
        return True

    # -- background thread ------------------------------------------------------------------

    def _spawn(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, args=(self._stop,), name=f"bankguard-jwks {self.issuer}", daemon=True
        )
        self._thread.start()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.refresh_if_due()
            delay = min(max(self._next_at - self._clock(), _MIN_WAIT), _MAX_WAIT)
            if stop.wait(delay):
                return

    def _after_fork(self) -> None:
        """Locks and threads do not survive fork(): make new ones in the child."""
        with _restart_lock:
            if self._pid == os.getpid():
                return
            old = self._thread
            if old is not None and old.is_alive():  # the same process (a test): stop the old thread
                self._stop.set()
            self._cond = threading.Condition()
            self._stop = threading.Event()
            self._in_flight = False
            self._thread = None
            self._pid = os.getpid()
            if self._started and not self._closed:
                self._spawn()

    # -- fetching ---------------------------------------------------------------------------

    def _fetch(self, *, forced: bool) -> bool:
        """Single-flight refresh; True if the key set changed. Never raises."""
        p = self._policy
        if forced and self._closed:
            return False
        with self._cond:
            if self._in_flight:  # join the running fetch
                generation, deadline = self._generation, time.monotonic() + p.timeout + 1.0
                while self._generation == generation and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                return self._result and self._generation != generation
            if forced:
                now = self._clock()
                if self._last_forced is not None and now - self._last_forced < p.cooldown:
                    return False
                self._last_forced = now
            self._in_flight = True
            cond = self._cond
        changed = False
        try:
            changed = self._refresh(discover=not forced or self._discovered is None)
        except Exception:  # never let a bug kill the refresh thread or a request
            log.exception("jwks: unexpected error refreshing the keys of %s", self.issuer)
        finally:
            with cond:
                self._in_flight = False
                self._generation += 1
                self._result = changed
                cond.notify_all()
        return changed

    def _get(self, url: str, deadline: float) -> tuple[dict[str, object], str | None]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError("timeout")
        response = request(
            "GET",
            url,
            timeout=left,
            max_bytes=self._policy.max_bytes,
            allow_http=self._allow_http,
            headers=[("Accept", "application/json")],
            tls=self._tls,
        )
        if response.status != 200:  # redirects included: never followed (JWKS-02)
            raise FetchError(f"status_{response.status}")
        return json_object(response.body, "document"), response.headers.get("cache-control")

    def _discover(self, deadline: float) -> str:
        if self._discovery is None:
            raise FetchError("no_discovery_url")
        metadata, _ = self._get(self._discovery, deadline)
        if metadata.get("issuer") != self.issuer:
            raise FetchError("metadata_issuer_mismatch")
        uri = metadata.get("jwks_uri")
        try:
            uri = parse_url(uri, "jwks_uri")
        except Invalid:
            raise FetchError("metadata_jwks_uri_invalid") from None
        if not uri.startswith("https://") and not self._allow_http:
            raise FetchError("metadata_jwks_uri_not_https")
        return uri

    def _refresh(self, *, discover: bool) -> bool:
        p = self._policy
        self.fetch_count += 1
        deadline = time.monotonic() + p.timeout
        try:
            uri = self._jwks_uri
            if uri is None:
                if discover or self._discovered is None:
                    self._discovered = self._discover(deadline)
                uri = self._discovered
            document, cache_control = self._get(uri, deadline)
            keys, skipped = load_jwks(document, self._allowed)
        except (FetchError, JoseError) as exc:
            self._discovered = None
            self._failed(exc.reason)
            return False
        if skipped:
            log.warning("jwks: %s: keys skipped (check the AS key set): %s", self.issuer, "; ".join(skipped))
        fingerprint = hashlib.sha256(b"".join(sorted(_digest(k) for k in keys))).hexdigest()
        now = self._clock()
        old = self._state
        self._state = (KeyIndex(keys), fingerprint, now)  # one reference swap
        self.last_success, self.last_error = now, None
        self._failures, self._stale_alarm = 0, False
        age = max_age(cache_control)
        ttl = min(max(p.max_ttl if age is None else age, p.min_ttl), p.max_ttl, p.max_stale)
        self._next_at = now + max(ttl - min(ttl / 10, 60.0), _MIN_BACKOFF)
        if not keys:
            log.warning("jwks: %s: the key set holds no usable key", self.issuer)
        changed = old is None or old[1] != fingerprint
        if changed and old is not None:
            self._notify()  # keys added or withdrawn: what was verified with the old set is re-checked
        return changed

    def _notify(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:
                log.exception("jwks: a key-change listener failed")

    def _failed(self, reason: str) -> None:
        p = self._policy
        now = self._clock()
        self.last_error = reason
        self._failures += 1
        backoff = max(p.cooldown, _MIN_BACKOFF) * 2 ** min(self._failures - 1, 20)
        self._next_at = now + min(backoff, max(p.min_ttl, _MIN_BACKOFF))
        state = self._state
        if state is not None and now - state[2] > p.max_stale:
            if not self._stale_alarm:
                self._stale_alarm = True
                log.error(
                    "jwks: keys of %s are stale beyond max_stale (%s); failing closed", self.issuer, reason
                )
                self._notify()
        else:
            log.warning("jwks: refreshing the keys of %s failed: %s", self.issuer, reason)

    def __repr__(self) -> str:
        state = self._state
        return f"RemoteKeySource(issuer={self.issuer!r}, {state[0] if state else None!r})"
