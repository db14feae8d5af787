"""DPoP proof verification for a resource server (RFC 9449 §4.3, §7.1, §8, §9).

:meth:`DPoPVerifier.verify` runs every check of §4.3 that needs no shared state, in the
order that makes a refusal cheapest (STANDARDS §0):

1. size cap (DPOP-28), one proof header (DPOP-01, checked by the caller);
2. compact JWS with strictly canonical base64url and strict JSON (DPOP-02; ATK-17);
3. header: ``typ`` ``dpop+jwt`` compared as a media type (DPOP-04); ``alg`` in the
   allow-list, case-sensitive (DPOP-05); a public ``jwk`` consistent with ``alg`` (DPOP-06,
   DPOP-07); no ``jku``/``x5u``/``x5c``, no ``crit`` or ``b64``;
4. the signature with the ``jwk`` (DPOP-08; ECDSA ``r``, ``s`` range-checked);
5. claims: ``jti``, ``htm``, ``htu``, ``iat`` present and typed (DPOP-03); ``htm`` equal to
   the method, case-sensitive (DPOP-09); ``htu`` normalised per RFC 3986 §6.2.2-6.2.3 and
   equal to one configured external origin plus the request path (DPOP-10, DPOP-11,
   DPOP-30); ``iat`` inside the window (DPOP-12); ``ath`` over the exact access token
   (DPOP-14); the server nonce when nonces are on (DPOP-23, DPOP-25).

What stays for the token control: the key binding (``cnf.jkt`` against
:attr:`VerifiedProof.jkt`, DPOP-15) and the single use of the ``jti`` (DPOP-13), which
needs the shared store and is recorded only once everything else passed.

Public keys parsed from proofs are kept (bounded) by their JWK members, so a client that
signs every proof with the same key costs one parse.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ..policy_dpop import Origin, normal_authority
from .dpop_nonce import NonceIssuer
from .jose import JoseError, Key, b64url_decode, b64url_encode, json_object, parse_compact, verify_signature
from .jwk import PRIVATE_MEMBERS, thumbprint, verification_key

#: Longest ``jti`` accepted (RFC 9449 §11.1: bound what the replay cache holds; DPOP-13).
MAX_JTI_CHARS = 256
#: Longest ``htu`` accepted.
MAX_HTU_CHARS = 4096
#: Largest RSA modulus in a proof key (DPOP-28, ATK-23).
MAX_PROOF_RSA_BITS = 4096
_KEY_CACHE_ENTRIES = 4096
_REFUSED_HEADERS = ("jku", "x5u", "x5c", "crit", "b64", "zip", "enc")
_KEY_MEMBERS = ("kty", "crv", "x", "y", "n", "e")


class ProofError(Exception):
    """The proof fails RFC 9449 §4.3: 401 ``invalid_dpop_proof`` (E3)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NonceError(ProofError):
    """No nonce, or not a valid nonce of this server: 401 ``use_dpop_nonce`` (E4)."""


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """A proof that passed every stateless check."""

    #: RFC 7638 thumbprint of the proof key, compared with the token's ``cnf.jkt``.
    jkt: str
    #: Key of the replay entry: a hash of the ``jti`` (never the raw value, never the proof).
    replay_key: str
    iat: float
    #: Age of the presented server nonce, when nonces are on.
    nonce_age: float | None = None


# -- URI normalisation (RFC 3986 §6.2.2, §6.2.3) ----------------------------------------------

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: Characters a path may hold unescaped (RFC 3986 §3.3 pchar and "/").
_PATH_CHARS = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")


def _normal_escapes(raw: bytes) -> str | None:
    """Escape what must be escaped, upper-case the hex of every escape and decode escaped
    unreserved characters; None when a ``%`` is not followed by two hex digits."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25:  # "%"
            if i + 2 >= n or raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                return None
            value = int(raw[i + 1 : i + 3], 16)
            out.append(chr(value) if value in _UNRESERVED else f"%{value:02X}")
            i += 3
            continue
        out.append(chr(c) if c in _PATH_CHARS else f"%{c:02X}")
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4."""
    if "." not in path:
        return path
    output: list[str] = []
    for segment in path.split("/")[1:] if path.startswith("/") else path.split("/"):
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    trailing = path.endswith(("/.", "/.."))
    return "/" + "/".join(output) + ("/" if trailing and output else "")


_PLAIN_PATH = re.compile(rb"^/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*\Z")


def normal_path(raw: bytes) -> str | None:
    """A request path (raw bytes, no query) in normal form; None when it is malformed."""
    if b"/." not in raw and _PLAIN_PATH.match(raw):
        return raw.decode("ascii")  # nothing escaped, no dot-segment: already normal
    escaped = _normal_escapes(raw)
    if escaped is None:
        return None
    if not escaped:
        return "/"
    return _remove_dot_segments(escaped)


def normal_htu(htu: str) -> tuple[str, str, str] | None:
    """``(scheme, authority, path)`` of an ``htu`` in normal form, without query and fragment."""
    if len(htu) > MAX_HTU_CHARS or not htu.isascii() or any(c in htu for c in " \t\r\n\\\x00"):
        return None
    try:
        parts = urlsplit(htu)
        port = parts.port
        host = parts.hostname
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not host or parts.username is not None or port == 0:
        return None
    path = normal_path(parts.path.encode("ascii"))
    if path is None:
        return None
    return scheme, normal_authority(scheme, host, port), path


def request_path(raw_path: bytes | None, decoded: str) -> str | None:
    """The path the client asked for, in normal form: the raw path when the server gives it
    (so ``%2F`` stays escaped), otherwise the decoded path escaped again."""
    if raw_path is not None and raw_path.startswith(b"/"):
        return normal_path(raw_path)
    try:
        # A decoded "%" is a literal percent sign: escape it before normalising.
        return normal_path(decoded.replace("%", "%25").encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _is_dpop_typ(typ: object) -> bool:
    if not isinstance(typ, str):
        return False
    typ = typ.lower()
    return typ == "dpop+jwt" or typ == "application/dpop+jwt"


def access_token_hash(token: str) -> str:
    """``ath``: base64url SHA-256 of the ASCII access token (RFC 9449 §4.2)."""
    return b64url_encode(hashlib.sha256(token.encode("ascii")).digest())


class DPoPVerifier:
    """Verifies proofs against one policy. Build once; thread-safe."""

    def __init__(
        self,
        *,
        algorithms: tuple[str, ...],
        origins: tuple[Origin, ...],
        max_age: float,
        future_skew: float,
        max_proof_bytes: int,
        nonces: NonceIssuer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithms = frozenset(algorithms)
        #: Path prefixes per (scheme, authority): several origins may share a host.
        self.origins: dict[tuple[str, str], tuple[str, ...]] = {}
        for o in origins:
            key = (o.scheme, o.authority)
            self.origins[key] = (*self.origins.get(key, ()), o.prefix)
        self.max_age = max_age
        self.future_skew = future_skew
        self.max_proof_bytes = max_proof_bytes
        self.nonces = nonces
        self.clock = clock
        #: How long a replay entry must live: the whole window a proof is accepted in.
        self.replay_ttl = max_age + future_skew + 1.0
        self._keys: dict[tuple[Any, ...], tuple[Key, str, frozenset[str]]] = {}
        self._lock = threading.Lock()
        #: Memos of pure functions of what clients send, bounded: header segment → (alg, key,
        #: jkt) for headers that passed every check, htu → normal form, raw path → normal form.
        self._headers: dict[str, tuple[str, Key, str]] = {}
        self._htus: dict[str, tuple[str, str, str]] = {}
        self._paths: dict[bytes, str] = {}

    # -- keys ------------------------------------------------------------------------------

    def _key(self, jwk: dict[str, Any], alg: str) -> tuple[Key, str]:
        members = tuple(jwk.get(m) for m in _KEY_MEMBERS)
        cacheable = not _has_extra(jwk) and all(m is None or isinstance(m, str) for m in members)
        if cacheable:
            cached = self._keys.get(members)
            if cached is not None and alg in cached[2]:
                return cached[0], cached[1]
        if PRIVATE_MEMBERS & jwk.keys():
            raise ProofError("dpop.jwk_private_material")
        if jwk.get("kty") not in ("EC", "RSA", "OKP"):
            raise ProofError("dpop.jwk_kty_not_supported")
        if "alg" in jwk and jwk["alg"] != alg:
            raise ProofError("dpop.jwk_alg_mismatch")
        try:
            vk = verification_key(jwk, frozenset({alg}))
            jkt = thumbprint(jwk)
        except JoseError as exc:
            raise ProofError(f"dpop.{exc.reason}") from None
        if isinstance(vk.key, rsa.RSAPublicKey) and vk.key.key_size > MAX_PROOF_RSA_BITS:
            raise ProofError("dpop.jwk_rsa_too_large")
        if alg == "EdDSA" and not isinstance(vk.key, ed25519.Ed25519PublicKey):
            raise ProofError("dpop.jwk_curve_not_allowed")  # EdDSA means Ed25519 (DPOP-07; FAPI 2.0 §5.4.1)
        if cacheable:
            with self._lock:
                if len(self._keys) >= _KEY_CACHE_ENTRIES:
                    self._keys.clear()
                self._keys[members] = (vk.key, jkt, vk.algorithms)
        return vk.key, jkt

    # -- the proof --------------------------------------------------------------------------

    def verify(
        self,
        proof: str,
        *,
        method: str,
        raw_path: bytes | None,
        path: str,
        access_token: str,
        token_digest: bytes | None = None,
    ) -> VerifiedProof:
        """Check ``proof`` for a request; raises ProofError (E3) or NonceError (E4).

        ``token_digest`` is the SHA-256 of ``access_token`` when the caller has it already.
        """
        if len(proof) > self.max_proof_bytes:
            raise ProofError("dpop.proof_too_large")
        segments = proof.split(".")
        hit = self._headers.get(segments[0]) if len(segments) == 3 else None
        try:
            if hit is not None and _is_plain_base64url(proof):
                # This exact header passed every header check before: only the payload and
                # the signature are new (both still strictly decoded).
                alg, key, jkt = hit
                h, p, s = segments
                payload = b64url_decode(p, "payload", alphabet_checked=True)
                signature = b64url_decode(s, "signature", alphabet_checked=True)
                if not signature:
                    raise JoseError("signature_missing")
                signing_input = f"{h}.{p}".encode("ascii")
            else:
                jws = parse_compact(proof, self.max_proof_bytes)
                alg, key, jkt = self._header(jws.header, segments[0])
                payload, signature, signing_input = jws.payload, jws.signature, jws.signing_input
            verify_signature(key, alg, signing_input, signature)
            claims = json_object(payload, "payload")
        except JoseError as exc:
            raise ProofError(f"dpop.{exc.reason}") from None
        jti, htm, htu, iat = claims.get("jti"), claims.get("htm"), claims.get("htu"), claims.get("iat")
        if not isinstance(jti, str) or not jti:
            raise ProofError("dpop.jti_missing")
        if len(jti) > MAX_JTI_CHARS:
            raise ProofError("dpop.jti_too_long")
        if not isinstance(htm, str):
            raise ProofError("dpop.htm_missing")
        if not isinstance(htu, str):
            raise ProofError("dpop.htu_missing")
        if isinstance(iat, bool) or not isinstance(iat, (int, float)) or iat != iat or abs(iat) > 1e15:
            raise ProofError("dpop.iat_missing")
        if htm != method:
            raise ProofError("dpop.htm_mismatch")
        self._check_htu(htu, raw_path, path)
        now = self.clock()
        if iat < now - self.max_age:
            raise ProofError("dpop.iat_too_old")
        if iat > now + self.future_skew:
            raise ProofError("dpop.iat_in_future")
        ath = claims.get("ath")
        if not isinstance(ath, str):
            raise ProofError("dpop.ath_missing")
        digest = token_digest if token_digest is not None else hashlib.sha256(access_token.encode()).digest()
        if not ath.isascii() or not hmac.compare_digest(ath, b64url_encode(digest)):
            raise ProofError("dpop.ath_mismatch")
        nonce_age = None
        if self.nonces is not None:
            nonce = claims.get("nonce")
            if nonce is None:
                raise NonceError("dpop.nonce_missing")
            if not isinstance(nonce, str):
                raise NonceError("dpop.nonce_invalid")
            nonce_age = self.nonces.age(nonce)
            if nonce_age is None:
                raise NonceError("dpop.nonce_invalid")
        jti_digest = hashlib.sha256(jti.encode("utf-8", "surrogatepass")).digest()
        return VerifiedProof(
            jkt=jkt, replay_key="dpop:jti:" + b64url_encode(jti_digest), iat=float(iat), nonce_age=nonce_age
        )

    def _header(self, header: dict[str, Any], segment: str) -> tuple[str, Key, str]:
        """The header checks (RFC 9449 §4.3 items 4-7): ``(alg, key, jkt)``; remembered by the
        header's exact encoded segment, since a client repeats the same header in every proof."""
        if not _is_dpop_typ(header.get("typ")):
            raise ProofError("dpop.typ_not_dpop_jwt")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise ProofError("dpop.alg_not_allowed")
        if not _REFUSED.isdisjoint(header):
            name = next(n for n in _REFUSED_HEADERS if n in header)
            raise ProofError(f"dpop.header_{name}_refused")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise ProofError("dpop.jwk_missing")
        key, jkt = self._key(jwk, alg)
        if len(segment) <= _MAX_CACHED_HEADER:
            headers = self._headers
            if len(headers) >= _HEADER_CACHE_ENTRIES:
                headers.clear()
            headers[segment] = (alg, key, jkt)
        return alg, key, jkt

    def _check_htu(self, htu: str, raw_path: bytes | None, path: str) -> None:
        parsed = self._htus.get(htu)
        if parsed is None:
            parsed = normal_htu(htu)
            if parsed is None:
                raise ProofError("dpop.htu_invalid")
            _remember(self._htus, htu, parsed)
        scheme, authority, proof_path = parsed
        prefixes = self.origins.get((scheme, authority))
        if prefixes is None:
            raise ProofError("dpop.htu_origin_mismatch")
        target = self._paths.get(raw_path) if raw_path is not None else None
        if target is None:
            target = request_path(raw_path, path)
            if target is not None and raw_path is not None and raw_path.startswith(b"/"):
                _remember(self._paths, raw_path, target)
        if target is None or not any(proof_path == prefix + target for prefix in prefixes):
            raise ProofError("dpop.htu_path_mismatch")


_CACHE_ENTRIES = 1024
_HEADER_CACHE_ENTRIES = 1024
_MAX_CACHED_HEADER = 2048
_REFUSED = frozenset(_REFUSED_HEADERS)
_BASE64URL_TOKEN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")


def _is_plain_base64url(proof: str) -> bool:
    return _BASE64URL_TOKEN.match(proof) is not None


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Bounded memo: emptied when full, so unique values sent by a client cannot grow it."""
    if len(cache) >= _CACHE_ENTRIES:
        cache.clear()
    cache[key] = value


def _has_extra(jwk: dict[str, Any]) -> bool:
    """Whether ``jwk`` holds members beyond the key itself (``alg``, ``use``, private parts...),
    which must then be checked again rather than served from the key cache."""
    return any(m not in _KEY_MEMBERS for m in jwk)
