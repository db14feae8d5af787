"""JSON Web Keys (RFC 7517, RFC 7518 §6, RFC 8037) to verification keys, strictly.

Only public signature keys are used (JWKS-03): ``kty`` RSA, EC or OKP; ``use`` absent
or ``sig``; ``key_ops`` absent or containing ``verify``; no private members; never
``oct``. Each usable key is bound to the algorithms it may verify (JWT-12): its own
``alg`` when present, otherwise the algorithms its type and curve imply (RSA keys
without ``alg`` are bound to the RSA algorithms of the issuer's allow-list).
Keys that do not qualify are skipped with a reason, never used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .jose import (
    ASYMMETRIC_ALGORITHMS,
    JoseError,
    Key,
    PublicKey,
    b64url_decode,
    b64url_encode,
    check_key_for_alg,
)

PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_CURVES: dict[str, tuple[ec.EllipticCurve, str, int]] = {
    "P-256": (ec.SECP256R1(), "ES256", 32),
    "P-384": (ec.SECP384R1(), "ES384", 48),
    "P-521": (ec.SECP521R1(), "ES512", 66),
}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
MAX_KEYS = 64


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    algorithms: frozenset[str]
    key: Key
    kty: str


def _int(value: Any, what: str) -> int:
    if not isinstance(value, str):
        raise JoseError(f"jwk_{what}_not_string")
    raw = b64url_decode(value, f"jwk_{what}")
    if not raw:
        raise JoseError(f"jwk_{what}_empty")
    return int.from_bytes(raw, "big")


def public_key_from_jwk(jwk: Mapping[str, Any]) -> tuple[PublicKey, frozenset[str]]:
    """The public key of ``jwk`` and the algorithms its type implies."""
    if PRIVATE_MEMBERS & jwk.keys():
        raise JoseError("jwk_private_material")
    kty = jwk.get("kty")
    try:
        if kty == "RSA":
            n, e = _int(jwk.get("n"), "n"), _int(jwk.get("e"), "e")
            if e < 3 or e % 2 == 0 or e.bit_length() > 32:
                raise JoseError("jwk_rsa_exponent")
            key: PublicKey = rsa.RSAPublicNumbers(e, n).public_key()
            return key, _RSA_ALGS
        if kty == "EC":
            crv = jwk.get("crv")
            if not isinstance(crv, str) or crv not in _CURVES:
                raise JoseError("jwk_curve_not_supported")
            curve, alg, size = _CURVES[crv]
            xs, ys = jwk.get("x"), jwk.get("y")
            if not isinstance(xs, str) or not isinstance(ys, str):
                raise JoseError("jwk_ec_coordinates")
            x, y = b64url_decode(xs, "jwk_x"), b64url_decode(ys, "jwk_y")
            if len(x) != size or len(y) != size:
                raise JoseError("jwk_ec_coordinates")
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
            ).public_key()  # raises ValueError for points not on the curve
            return key, frozenset({alg})
        if kty == "OKP":
            crv = jwk.get("crv")
            xs = jwk.get("x")
            if not isinstance(xs, str):
                raise JoseError("jwk_okp_x")
            x = b64url_decode(xs, "jwk_x")
            if crv == "Ed25519":
                return ed25519.Ed25519PublicKey.from_public_bytes(x), frozenset({"EdDSA"})
            if crv == "Ed448":
                return ed448.Ed448PublicKey.from_public_bytes(x), frozenset({"EdDSA"})
            raise JoseError("jwk_curve_not_supported")
    except JoseError:
        raise
    except (ValueError, TypeError, OverflowError):
        raise JoseError("jwk_invalid") from None
    raise JoseError("jwk_kty_not_supported")


def verification_key(jwk: Mapping[str, Any], allowed: frozenset[str]) -> VerificationKey:
    """A key for signature verification, bound to algorithms within ``allowed``."""
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise JoseError("jwk_not_for_signatures")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise JoseError("jwk_not_for_verification")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JoseError("jwk_kid_not_string")
    key, implied = public_key_from_jwk(jwk)
    alg = jwk.get("alg")
    if alg is not None:
        if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS or alg not in implied:
            raise JoseError("jwk_alg_mismatch")
        algorithms = frozenset({alg})
    else:
        algorithms = implied
    algorithms &= allowed
    if not algorithms:
        raise JoseError("jwk_alg_not_allowed")
    for a in algorithms:
        check_key_for_alg(key, a)
    return VerificationKey(kid=kid, algorithms=algorithms, key=key, kty=str(jwk["kty"]))


def load_jwks(document: Any, allowed: frozenset[str]) -> tuple[list[VerificationKey], list[str]]:
    """Usable keys of a JWK Set, and the reasons keys were skipped."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JoseError("jwks_not_a_key_set")
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for i, jwk in enumerate(document["keys"][:MAX_KEYS]):
        if not isinstance(jwk, Mapping):
            skipped.append(f"keys[{i}]: not an object")
            continue
        try:
            keys.append(verification_key(jwk, allowed))
        except JoseError as exc:
            skipped.append(f"keys[{i}] kid={jwk.get('kid')!r}: {exc.reason}")
    if len(document["keys"]) > MAX_KEYS:
        skipped.append(f"keys beyond the first {MAX_KEYS} ignored")
    return keys, skipped


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url), from the required members only."""
    kty = jwk.get("kty")
    members: Iterable[str]
    if kty == "EC":
        members = ("crv", "kty", "x", "y")
    elif kty == "RSA":
        members = ("e", "kty", "n")
    elif kty == "OKP":
        members = ("crv", "kty", "x")
    else:
        raise JoseError("jwk_kty_not_supported")
    subset = {}
    for m in members:
        value = jwk.get(m)
        if not isinstance(value, str):
            raise JoseError("jwk_member_missing")
        subset[m] = value
    canonical = json.dumps(subset, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())
