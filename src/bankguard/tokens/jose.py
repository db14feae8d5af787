"""Strict compact JWS: parsing and signature verification on ``cryptography``.

Written for resource servers that must refuse anything ambiguous (RFC 8725, 8725bis):

* exactly three segments of the base64url alphabet; decoding is strict and canonical:
  no padding, no whitespace, no stray characters, no set trailing bits (RFC 7515 §2,
  §5.2 step 2; JWT-01, ATK-17);
* header and claims are UTF-8 JSON *objects*, without duplicate member names (also
  when spelled with escapes), without ``NaN`` / ``Infinity`` or numbers that overflow
  to infinity, without lone surrogates, with bounded depth (RFC 7519 §7.2; JWT-02,
  JWT-03, JWT-09, ATK-22, ATK-29);
* the algorithm is pinned by the key, never taken from the token (RFC 8725 §3.1):
  :func:`verify` receives the algorithm the *key* is bound to, and the header ``alg``
  must equal it exactly;
* ECDSA signatures are fixed-length ``R || S`` with ``0 < r, s < n`` (RFC 7518 §3.4;
  CVE-2022-21449); RSA keys under 2048 bits are refused (RFC 7518 §3.3, FAPI 2.0 §5.4.1).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


@dataclass(frozen=True, slots=True)
class SharedSecret:
    """An HMAC key (HS256/384/512), configured for one issuer alone; never from a JWK Set."""

    secret: bytes = field(repr=False)


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
Key = PublicKey | SharedSecret

_SEGMENT = re.compile(r"^[A-Za-z0-9_-]*\Z")
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MAX_DEPTH = 8
MAX_MEMBERS = 256


class JoseError(ValueError):
    """The JWS is invalid. ``reason`` is a stable code for the audit event."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Last characters whose unused low bits are zero, for lengths 2 and 3 mod 4 (RFC 4648 §3.5).
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = {0: b"", 2: b"==", 3: b"="}


def b64url_decode(segment: str, what: str = "segment", *, alphabet_checked: bool = False) -> bytes:
    """Strict, canonical base64url without padding (RFC 7515 §2)."""
    rest = len(segment) % 4
    if rest == 1 or (not alphabet_checked and not _SEGMENT.match(segment)):
        raise JoseError(f"{what}_not_base64url")
    if rest and segment[-1] not in _CANONICAL_LAST[rest]:
        raise JoseError(f"{what}_not_canonical")
    try:
        return binascii.a2b_base64(segment.encode("ascii").translate(_TO_STANDARD) + _PADDING[rest])
    except (binascii.Error, ValueError):  # pragma: no cover - the alphabet was checked above
        raise JoseError(f"{what}_not_base64url") from None


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _no_constants(name: str) -> Any:
    raise JoseError("json_non_finite_number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JoseError("json_non_finite_number")
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise JoseError("json_duplicate_member")
    return result


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_object, parse_constant=_no_constants, parse_float=_finite_float
)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _check_structure(value: Any, text: str) -> None:
    if text.count("{") + text.count("[") == 1:  # one flat object: only its width matters
        if len(value) > MAX_MEMBERS:
            raise JoseError("json_too_many_members")
    else:
        _check_nesting(value)
    if "\\u" in text:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JoseError("json_lone_surrogate") from None


def _check_nesting(value: Any) -> None:
    """Bound the depth and width of nested containers (JWT-09)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise JoseError("json_too_deep")
        if len(item) > MAX_MEMBERS:
            raise JoseError("json_too_many_members")
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """Strict UTF-8 JSON object (RFC 7519 §7.2 steps 4 and 10; RFC 8259)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise JoseError(f"{what}_not_utf8") from None
    try:
        if text[:1] == "{" and text[-1:] == "}":
            # The common case, no surrounding whitespace: the scanner directly, and the
            # whole text must have been consumed (no trailing garbage).
            value, end = _SCAN(text, 0)
            if end != len(text):
                raise ValueError("trailing data")
        else:
            value = _DECODER.decode(text)
    except JoseError:
        raise
    except (ValueError, RecursionError, StopIteration):
        raise JoseError(f"{what}_not_json") from None
    if not isinstance(value, dict):
        raise JoseError(f"{what}_not_object")
    _check_structure(value, text)
    return value


@dataclass(frozen=True, slots=True)
class CompactJWS:
    """A parsed, not yet verified compact JWS."""

    header: dict[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes


#: Header segments longer than this are never remembered.
MAX_MEMO_HEADER = 1024
MEMO_ENTRIES = 256


def parse_compact(token: str, max_length: int, memo: dict[str, dict[str, Any]] | None = None) -> CompactJWS:
    """Split and decode a compact JWS; refuses JWE, JSON serialisation and oversize tokens.

    ``memo`` remembers decoded headers by their exact encoded segment (an issuer signs every
    token with the same header), bounded; callers must not modify a header they get back.
    """
    if len(token) > max_length:
        raise JoseError("token_too_large")
    if token.encode("ascii", "replace").translate(None, _ALPHABET) != b".." or token.startswith("."):
        parts = token.split(".")
        if len(parts) == 5:
            raise JoseError("jwe_not_accepted")
        if len(parts) != 3:
            raise JoseError("not_compact_jws")
        raise JoseError("not_base64url")
    h, p, s = token.split(".")
    header = memo.get(h) if memo is not None else None
    if header is None:
        header = json_object(b64url_decode(h, "header", alphabet_checked=True), "header")
        if memo is not None and len(h) <= MAX_MEMO_HEADER:
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[h] = header
    payload = b64url_decode(p, "payload", alphabet_checked=True)
    signature = b64url_decode(s, "signature", alphabet_checked=True)
    if not signature:
        raise JoseError("signature_missing")
    return CompactJWS(header, payload, f"{h}.{p}".encode("ascii"), signature)


# -- algorithms ---------------------------------------------------------------------------

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_EC_CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "ES256": (ec.SECP256R1, 32),
    "ES384": (ec.SECP384R1, 48),
    "ES512": (ec.SECP521R1, 66),
}
_EC_ORDERS = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    ),
    "ES512": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}
#: Every asymmetric JWS algorithm bankguard verifies (RFC 7518 §3.1, RFC 8037 §3.1).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_PKCS1V15 = padding.PKCS1v15()
_PKCS1 = {f"RS{n}": _HASHES[n]() for n in ("256", "384", "512")}
_PSS = {
    f"PS{n}": (
        padding.PSS(mgf=padding.MGF1(_HASHES[n]()), salt_length=padding.PSS.DIGEST_LENGTH),
        _HASHES[n](),
    )
    for n in ("256", "384", "512")
}
_ECDSA = {alg: ec.ECDSA(_HASHES[alg[2:]]()) for alg in ("ES256", "ES384", "ES512")}
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192


def check_key_for_alg(key: Key, alg: str) -> None:
    """Raise JoseError unless ``key`` is usable with ``alg`` (family, curve, size)."""
    if alg in _HMAC:
        if not isinstance(key, SharedSecret):
            raise JoseError("key_alg_mismatch")
        if len(key.secret) < 32:
            raise JoseError("hmac_key_size")
    elif isinstance(key, SharedSecret):
        raise JoseError("key_alg_mismatch")
    elif alg.startswith(("RS", "PS")):
        if not isinstance(key, rsa.RSAPublicKey):
            raise JoseError("key_alg_mismatch")
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise JoseError("rsa_key_size")
    elif alg in _EC_CURVES:
        curve, _ = _EC_CURVES[alg]
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
            raise JoseError("key_alg_mismatch")
    elif alg == "EdDSA":
        if not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            raise JoseError("key_alg_mismatch")
    else:
        raise JoseError("alg_not_supported")


#: Key family per concrete key class, so verification dispatches on a dictionary lookup
#: rather than on ``isinstance`` against cryptography's abstract classes.
_FAMILIES: dict[type, str] = {}


def _family(key: Key) -> str:
    kind = type(key)
    family = _FAMILIES.get(kind)
    if family is None:
        if isinstance(key, SharedSecret):
            family = "hmac"
        elif isinstance(key, rsa.RSAPublicKey):
            family = "rsa"
        elif isinstance(key, ec.EllipticCurvePublicKey):
            family = "ec"
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            family = "eddsa"
        else:
            family = "unknown"
        _FAMILIES[kind] = family
    return family


def verify_signature(key: Key, alg: str, signing_input: bytes, signature: bytes) -> None:
    """Verify one JWS signature with ``alg``: the algorithm the key is bound to."""
    family = _family(key)
    try:
        if family == "hmac" and alg in _HMAC:
            expected = hmac.new(cast(SharedSecret, key).secret, signing_input, _HMAC[alg]).digest()
            if not hmac.compare_digest(expected, signature):
                raise JoseError("signature_invalid")
        elif family == "rsa" and alg in _PKCS1:
            cast(rsa.RSAPublicKey, key).verify(signature, signing_input, _PKCS1V15, _PKCS1[alg])
        elif family == "rsa" and alg in _PSS:
            pss, digest = _PSS[alg]
            cast(rsa.RSAPublicKey, key).verify(signature, signing_input, pss, digest)
        elif family == "ec" and alg in _EC_CURVES:
            _, size = _EC_CURVES[alg]
            if len(signature) != 2 * size:
                raise JoseError("signature_length")
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            n = _EC_ORDERS[alg]
            if not (0 < r < n and 0 < s < n):
                raise JoseError("signature_out_of_range")
            cast(ec.EllipticCurvePublicKey, key).verify(
                encode_dss_signature(r, s), signing_input, _ECDSA[alg]
            )
        elif family == "eddsa" and alg == "EdDSA":
            cast(ed25519.Ed25519PublicKey, key).verify(signature, signing_input)
        else:
            raise JoseError("key_alg_mismatch")
    except InvalidSignature:
        raise JoseError("signature_invalid") from None
    except JoseError:
        raise
    except (ValueError, TypeError):
        raise JoseError("signature_invalid") from None
