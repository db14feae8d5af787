"""Key sets: where an issuer's verification keys come from, indexed for lookup.

A *key source* gives the guard the current :class:`KeyIndex` of one issuer without
blocking (:meth:`KeySource.current`). Remote sources (``jwks_uri``, discovery) refresh
in the background, outside the request path; when a token names a ``kid`` the index
does not hold, the token check asks the source for one single-flight refetch
(:meth:`KeySource.refresh_unknown_kid`, blocking, run off the event loop by the
guard's driver), rate-limited by a cooldown so random ``kid`` floods cause no fetch
storm (JWKS-04).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from .jose import JoseError, SharedSecret, json_object
from .jwk import VerificationKey, load_jwks

#: Without a ``kid`` in the header, at most this many compatible keys are tried (JWT-15).
MAX_KIDLESS_CANDIDATES = 3


class KeyIndex:
    """Keys by ``kid``; immutable once built."""

    __slots__ = ("by_kid", "keys")

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        self.keys: tuple[VerificationKey, ...] = tuple(keys)
        by_kid: dict[str, list[VerificationKey]] = {}
        for key in self.keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        self.by_kid = by_kid

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        """Keys that may verify a token with this ``kid`` and ``alg`` (exact lookup, JWT-14/15)."""
        if kid is not None:
            return [k for k in self.by_kid.get(kid, ()) if alg in k.algorithms]
        return [k for k in self.keys if alg in k.algorithms][:MAX_KIDLESS_CANDIDATES]

    def knows(self, kid: str) -> bool:
        return kid in self.by_kid

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"KeyIndex(kids={sorted(self.by_kid)!r}, keys={len(self.keys)})"


class KeySource(Protocol):
    """The keys of one issuer."""

    issuer: str
    #: Whether :meth:`refresh_unknown_kid` can ever find new keys.
    refreshable: bool

    def current(self) -> KeyIndex | None:
        """The usable keys now, or None (never loaded, or stale beyond ``max_stale``). Never blocks."""
        ...

    def refresh_unknown_kid(self) -> bool:
        """Refetch once if the cooldown allows (joining a fetch already running); True if new
        keys were loaded. Blocking; bounded by the fetch timeout. Never raises."""
        ...

    def close(self) -> None: ...


class StaticKeySource:
    """Keys given in the policy: an inline JWK Set, a JWKS file, or a shared secret."""

    refreshable = False

    def __init__(self, issuer: str, index: KeyIndex) -> None:
        self.issuer = issuer
        self._index = index

    @classmethod
    def from_jwks(
        cls, issuer: str, document: Any, allowed: frozenset[str]
    ) -> tuple[StaticKeySource, list[str]]:
        keys, skipped = load_jwks(document, allowed)
        return cls(issuer, KeyIndex(keys)), skipped

    @classmethod
    def from_file(cls, issuer: str, path: str, allowed: frozenset[str]) -> tuple[StaticKeySource, list[str]]:
        with open(path, "rb") as fh:
            raw = fh.read(1024 * 1024 + 1)
        if len(raw) > 1024 * 1024:
            raise JoseError("jwks_too_large")
        return cls.from_jwks(issuer, json_object(raw, "jwks"), allowed)

    @classmethod
    def from_secret(cls, issuer: str, secret: bytes, algorithms: frozenset[str]) -> StaticKeySource:
        key = VerificationKey(kid=None, algorithms=algorithms, key=SharedSecret(secret), kty="oct")
        return cls(issuer, KeyIndex([key]))

    def current(self) -> KeyIndex | None:
        return self._index

    def refresh_unknown_kid(self) -> bool:
        return False

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticKeySource(issuer={self.issuer!r}, {self._index!r})"
