"""The verified-token cache: a repeated token skips parsing and signature checks.

Entries are keyed by the SHA-256 of the token, never the token itself, and hold the
:class:`~bankguard.tokens.jwt.VerifiedToken` until it expires; the expiry is checked
again on every hit, with the same leeway as a first verification (JWT-24). The cache
is bounded (oldest entries go first) and can be emptied selectively so that a
revocation takes effect at once (:meth:`TokenCache.evict`, :meth:`TokenCache.evict_where`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

from ..decision import Principal
from .jwt import VerifiedToken

Entry = tuple[VerifiedToken, Principal]


def token_key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[bytes, Entry] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float, leeway: float, key: bytes | None = None) -> Entry | None:
        """The verified token and its principal, if cached and not expired."""
        if not self.max_entries:
            return None
        key = key or token_key(token)
        found = self._entries.get(key)
        if found is None:
            return None
        expires = found[0].expires_at
        if expires is not None and now >= expires + leeway:
            with self._lock:
                self._entries.pop(key, None)
            return None
        return found

    def put(
        self, token: str, verified: VerifiedToken, principal: Principal, key: bytes | None = None
    ) -> Principal:
        """Remember a verified token with its principal; returns the principal."""
        if not self.max_entries:
            return principal
        key = key or token_key(token)
        with self._lock:
            entries = self._entries
            entries[key] = (verified, principal)
            while len(entries) > self.max_entries:
                del entries[next(iter(entries))]
        return principal

    def evict(self, token: str) -> bool:
        """Forget one token; True if it was cached."""
        with self._lock:
            return self._entries.pop(token_key(token), None) is not None

    def evict_where(self, predicate: Callable[[VerifiedToken], bool]) -> int:
        """Forget every token for which ``predicate`` is true (e.g. a revoked ``jti`` or client)."""
        with self._lock:
            doomed = [k for k, (v, _) in self._entries.items() if predicate(v)]
            for key in doomed:
                del self._entries[key]
        return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
