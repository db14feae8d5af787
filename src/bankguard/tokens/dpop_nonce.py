"""Stateless DPoP server nonces (RFC 9449 §8, §9).

A nonce is ``base64url(version ‖ issued-at ‖ 8 random bytes ‖ tag)`` where the tag is the
first 16 bytes of HMAC-SHA256 over the rest, under a key derived from the policy's
``dpop.nonce.secret_env``. Why stateless rather than stored:

* every worker and replica that holds the key accepts the nonces of the others, with no
  store round trip and nothing to replicate (the ``jti`` replay entry already needs one);
* nonces are unpredictable (random part, and the tag cannot be computed without the key)
  and valid only at this server: another server's nonce, an authorization server's nonce
  or a forged one fails the tag (DPOP-25);
* the issue time inside bounds the nonce's lifetime, so a stale nonce is refused with a
  fresh one (DPOP-23).

The value uses only base64url characters, a subset of the ``NQCHAR`` syntax of §8.1.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable

from .jose import JoseError, b64url_decode, b64url_encode

_VERSION = b"\x01"
_TAG_BYTES = 16
_BODY = struct.Struct(">cQ8s")  # version, issued-at in milliseconds, random
_LENGTH = _BODY.size + _TAG_BYTES
#: Clock difference tolerated between replicas (a nonce "issued" slightly in the future).
MAX_CLOCK_SKEW = 5.0


class NonceIssuer:
    """Issues and checks nonces under one key. Thread-safe (no mutable state)."""

    def __init__(
        self,
        secret: bytes,
        *,
        lifetime: float,
        rotate_after: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the nonce key must be at least 32 bytes")
        # A key of its own, so the configured secret is never used directly for anything else.
        self._key = hmac.new(secret, b"bankguard dpop-nonce v1", hashlib.sha256).digest()
        self.lifetime = lifetime
        self.rotate_after = rotate_after
        self.clock = clock

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_TAG_BYTES]

    def issue(self) -> str:
        body = _BODY.pack(_VERSION, int(self.clock() * 1000), os.urandom(8))
        return b64url_encode(body + self._tag(body))

    def age(self, nonce: str) -> float | None:
        """Seconds since ``nonce`` was issued, or None when it is not a live nonce of this server."""
        if len(nonce) != 44 or not nonce.isascii():  # 36 bytes in base64url
            return None
        try:
            raw = b64url_decode(nonce, "nonce")
        except JoseError:
            return None
        if len(raw) != _LENGTH or raw[:1] != _VERSION:
            return None
        body, tag = raw[: _BODY.size], raw[_BODY.size :]
        if not hmac.compare_digest(tag, self._tag(body)):
            return None
        issued_ms: int = _BODY.unpack(body)[1]
        age = self.clock() - issued_ms / 1000
        if age < -MAX_CLOCK_SKEW or age > self.lifetime:
            return None
        return max(age, 0.0)
