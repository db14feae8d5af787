"""CRLs fetched from URLs (RFC 5280 §5) and refreshed in the background, never on the request path.

* EIDAS-01 (RTS Art. 34(1)): revocation is checked against CRLs; this module keeps those of
  ``crl_urls`` current. A URL serves one complete CRL, DER (RFC 5280 §4.2.1.13) or PEM. Its
  signature, nextUpdate (§5.1.2.5) and the refusal of delta, indirect and partial CRLs are checked by
  :meth:`~bankguard.mtls.validation.CertificateValidator.update_crls`, which ``on_update`` calls.
* BG-05: a revoked certificate is refused as ``certificate.revoked``; while a URL never gave a CRL,
  the control refuses every certificate as ``certificate.crl_unavailable`` (:attr:`CrlSource.complete`).
* Fetches go through :mod:`bankguard.tokens._http` (no redirects, bounded time and size). ``http://``
  is allowed by default (CRLs are signed); as an attacker could then replay an older CRL, a CRL
  older than the last good one of its URL (thisUpdate §5.1.2.4, cRLNumber §5.2.3) or from another
  issuer (§5.1.2.3) is refused.
* Failures (network, status, garbage, a CRL that does not verify) are logged on the ``bankguard``
  logger and keep the last good CRL; the validator fails closed once it passes nextUpdate.
* A daemon thread refreshes every ``refresh`` seconds and shortly before the earliest nextUpdate,
  retrying with bounded backoff; after a fork (gunicorn workers) the child starts its own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..tokens._http import FetchError, request

__all__ = ["CrlSource"]

log = logging.getLogger("bankguard")

_MIN_WAIT = 0.05  # seconds between two loop turns, at least
_MAX_WAIT = 60.0  # the loop re-reads the clock at least this often
_MIN_BACKOFF, _MAX_BACKOFF = 1.0, 300.0
_LEAD = 300.0  # refresh this long before the earliest nextUpdate
_NEAR = 30.0  # at most this often while a CRL is at (or past) its nextUpdate
_ACCEPT = [("Accept", "application/pkix-crl, application/x-pem-file;q=0.5")]
_restart_lock = threading.Lock()


def _fresh_restart_lock() -> None:
    global _restart_lock
    _restart_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_restart_lock)


def parse_crl(data: bytes) -> x509.CertificateRevocationList:
    """One CRL, DER or PEM; :class:`FetchError` ``not_a_crl`` otherwise."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            if data.count(b"-----BEGIN") != 1:
                raise ValueError("expected exactly one PEM block")
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise FetchError("not_a_crl") from None


def _number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _older(new: x509.CertificateRevocationList, old: x509.CertificateRevocationList) -> str | None:
    """Why ``new`` may not replace ``old`` (the last good CRL of the same URL), or None."""
    if new.issuer != old.issuer:
        return "issuer_changed"
    if new.last_update_utc < old.last_update_utc:
        return "older_than_current"
    n, o = _number(new), _number(old)
    if n is not None and o is not None and n < o:
        return "older_than_current"
    return None


class CrlSource:
    """The current CRLs of ``urls``; ``on_update`` gets all of them whenever they change."""

    def __init__(
        self,
        urls: Sequence[str],
        on_update: Callable[[Sequence[x509.CertificateRevocationList]], None],
        *,
        refresh: float,
        timeout: float = 5.0,
        max_bytes: int = 10 * 1024 * 1024,
        allow_http: bool = True,
        clock: Callable[[], float] = time.time,
        start: bool = True,
    ) -> None:
        if not urls:
            raise ValueError("at least one CRL URL is required")
        for url in urls:
            scheme = urlsplit(url).scheme
            if scheme != "https" and not (scheme == "http" and allow_http):
                raise ValueError(f"CRL URL {url!r} must be https:// (or http:// with allow_http)")
        if refresh <= 0 or timeout <= 0 or max_bytes <= 0:
            raise ValueError("refresh, timeout and max_bytes must be positive")
        self.urls = tuple(dict.fromkeys(urls))
        self.fetch_count = 0  # fetch attempts (one per URL per round), for metrics
        self.last_error: str | None = None  # "<url>: <reason>" of the last failure, None after a clean round
        self._on_update = on_update
        self._refresh, self._timeout, self._max_bytes = refresh, timeout, max_bytes
        self._allow_http, self._clock = allow_http, clock
        self._crls: dict[str, x509.CertificateRevocationList] = {}  # last good CRL per URL
        self._complete = False
        self._next_at = clock()
        self._failures = 0
        self._started = self._closed = False
        self._pid = os.getpid()
        self._lock = threading.Lock()  # one round at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    @property
    def complete(self) -> bool:
        """True once every URL has given a CRL that verified; never blocks or does I/O."""
        if self._pid != os.getpid():
            self._after_fork()
        return self._complete

    def start(self) -> None:
        """Fetch every URL once (synchronously, within ``timeout``) and start the refresh thread."""
        if self._started or self._closed:
            return
        self._started = True
        self._round(deadline=time.monotonic() + self._timeout)
        if not self._complete:
            missing = ", ".join(url for url in self.urls if url not in self._crls)
            log.error(
                "crl: no CRL yet from %s; client certificates are refused until one is fetched", missing
            )
        self._spawn()

    def close(self) -> None:
        """Stop the refresh thread (waits for a fetch in progress, at most about ``timeout``)."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and thread.is_alive():
            thread.join(self._timeout + 1.0)

    def refresh_now(self) -> bool:
        """Fetch every URL now; True if the CRLs changed. Never raises."""
        if self._pid != os.getpid():
            self._after_fork()
        return self._round(deadline=None)

    # -- background thread ------------------------------------------------------------------

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._loop, args=(self._stop,), name="bankguard-crl")
        self._thread.daemon = True
        self._thread.start()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self._clock() >= self._next_at:
                self._round(deadline=None)
            if stop.wait(min(max(self._next_at - self._clock(), _MIN_WAIT), _MAX_WAIT)):
                return

    def _after_fork(self) -> None:
        """Locks and threads do not survive fork(): make new ones in the child."""
        with _restart_lock:
            if self._pid == os.getpid():
                return
            old = self._thread
            if old is not None and old.is_alive():  # the same process (a test): stop the old thread
                self._stop.set()
            self._lock, self._stop, self._thread = threading.Lock(), threading.Event(), None
            self._pid = os.getpid()
            if self._started and not self._closed:
                self._spawn()

    # -- fetching ---------------------------------------------------------------------------

    def _round(self, *, deadline: float | None) -> bool:
        with self._lock:
            try:
                return self._fetch_all(deadline)
            except Exception:  # never let a bug kill the refresh thread
                log.exception("crl: unexpected error refreshing the CRLs")
                self._schedule(failed=True)
                return False

    def _fetch_all(self, deadline: float | None) -> bool:
        errors: list[str] = []
        fetched: dict[str, x509.CertificateRevocationList] = {}
        for url in self.urls:
            if self._closed:  # close() waits for one fetch at most
                break
            self.fetch_count += 1
            try:
                crl = self._get(url, deadline)
                old = self._crls.get(url)
                why = None if old is None else _older(crl, old)
                if why is not None:
                    raise FetchError(why)
            except FetchError as exc:
                errors.append(f"{url}: {exc.reason}")
                continue
            if old is None or crl.public_bytes(Encoding.DER) != old.public_bytes(Encoding.DER):
                fetched[url] = crl
        changed = self._publish(fetched, errors)
        for error in errors:
            log.warning("crl: refreshing %s failed; the last good CRL (if any) stays in use", error)
        self.last_error = errors[-1] if errors else None
        self._schedule(failed=bool(errors))
        return changed

    def _get(self, url: str, deadline: float | None) -> x509.CertificateRevocationList:
        left = self._timeout if deadline is None else min(self._timeout, deadline - time.monotonic())
        if left <= 0:
            raise FetchError("timeout")
        response = request(
            "GET", url, timeout=left, max_bytes=self._max_bytes, allow_http=self._allow_http, headers=_ACCEPT
        )
        if response.status != 200:  # redirects included: never followed
            raise FetchError(f"status_{response.status}")
        return parse_crl(response.body)

    def _publish(self, fetched: dict[str, x509.CertificateRevocationList], errors: list[str]) -> bool:
        """Hand the new CRLs to ``on_update``; one it refuses is dropped, the others still apply."""
        if not fetched:
            return False
        try:
            self._apply({**self._crls, **fetched})
            return True
        except ValueError as exc:
            if len(fetched) == 1:
                errors.append(f"{next(iter(fetched))}: refused ({exc})")
                return False
        changed = False
        for url, crl in fetched.items():  # find the CRL that was refused
            try:
                self._apply({**self._crls, url: crl})
                changed = True
            except ValueError as exc:
                errors.append(f"{url}: refused ({exc})")
        return changed

    def _apply(self, crls: dict[str, x509.CertificateRevocationList]) -> None:
        self._on_update([crls[url] for url in self.urls if url in crls])  # ValueError: refused
        self._crls = crls
        self._complete = all(url in crls for url in self.urls)

    def _schedule(self, *, failed: bool) -> None:
        now = self._clock()
        self._failures = self._failures + 1 if failed else 0
        wait = self._refresh
        if failed:
            wait = min(wait, _MIN_BACKOFF * 2 ** min(self._failures - 1, 20), _MAX_BACKOFF)
        next_at = now + wait
        updates = [crl.next_update_utc.timestamp() for crl in self._crls.values() if crl.next_update_utc]
        if updates:
            next_at = min(next_at, max(min(updates) - _LEAD, now + _NEAR))
        self._next_at = next_at

    def __repr__(self) -> str:
        return f"CrlSource(urls={list(self.urls)!r}, complete={self._complete})"
