"""Helpers for testing applications and policies that use bankguard.

* :func:`make_facts` builds a :class:`RequestFacts` without a server, to run a
  :class:`Guard` directly: ``Guard(policy, sink=events).decide(make_facts("GET", "/accounts"))``.
* :class:`EventCollector` is a sink that keeps events in a list.
* :func:`capture_events` collects what the default logging sink writes.
* :class:`TestIssuer` mints signed access tokens and publishes the matching JWK Set.
* :class:`TestPKI` issues a CA hierarchy and eIDAS QWAC-shaped client certificates.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ._pki_testing import TestPKI, qc_statements_der
from .audit import EventCollector, capture_events
from .request import Headers, RequestFacts


def make_facts(
    method: str = "GET",
    target: str = "/",
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
    peer: str | None = "127.0.0.1",
    scheme: str = "https",
) -> RequestFacts:
    """Request facts for ``method target`` (``target`` may carry a ``?query``)."""
    path, _, query = target.partition("?")
    return RequestFacts(
        method=method,
        scheme=scheme,
        path=path,
        raw_path=path.encode("latin-1"),
        query=query,
        headers=Headers(headers),
        peer=peer,
        body=body,
    )


__all__ = [
    "DPoPKey",
    "EventCollector",
    "TestIssuer",
    "TestPKI",
    "capture_events",
    "make_facts",
    "qc_statements_der",
    "sign_compact",
]


# -- access tokens for tests ---------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(n: int, length: int | None = None) -> str:
    return _b64(n.to_bytes(length or max(1, (n.bit_length() + 7) // 8), "big"))


class TestIssuer:
    """An authorization server for tests: a signing key, its JWK Set, and ``mint()``.

    ``TestIssuer("https://as.example", alg="ES256")`` makes a fresh key pair with
    ``cryptography``; :meth:`jwks` gives the public JWK Set to put in a policy
    (``tokens.issuers[].jwks``) or serve from a test server; :meth:`mint` signs an
    RFC 9068 access token with sensible defaults that any claim can override
    (``None`` removes a claim). Never use it outside tests.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self, issuer: str = "https://as.bank.example", *, alg: str = "ES256", kid: str | None = "k1"
    ) -> None:
        self.issuer = issuer
        self.alg = alg
        self.kid = kid
        self._key: Any = _generate(alg)

    def public_jwk(self) -> dict[str, Any]:
        jwk = _public_jwk(self._key.public_key())
        jwk.update({"use": "sig", "alg": self.alg})
        if self.kid is not None:
            jwk["kid"] = self.kid
        return jwk

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}

    def mint(
        self,
        claims: dict[str, Any] | None = None,
        *,
        header: dict[str, Any] | None = None,
        audience: str = "https://api.bank.example",
        scope: str | None = "accounts",
        lifetime: int = 300,
        now: float | None = None,
        dpop_key: DPoPKey | None = None,
    ) -> str:
        """An access token; with ``dpop_key`` it is bound to that key (``cnf.jkt``, RFC 9449 §6)."""
        issued = int(time.time() if now is None else now)
        body: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "psu-1",
            "aud": audience,
            "client_id": "tpp-client-1",
            "iat": issued,
            "exp": issued + lifetime,
            "jti": secrets.token_urlsafe(12),
        }
        if scope is not None:
            body["scope"] = scope
        if dpop_key is not None:
            body["cnf"] = {"jkt": dpop_key.thumbprint}
        body.update(claims or {})
        head: dict[str, Any] = {"alg": self.alg, "typ": "at+jwt"}
        if self.kid is not None:
            head["kid"] = self.kid
        head.update(header or {})
        return sign_compact(
            {k: v for k, v in head.items() if v is not None},
            {k: v for k, v in body.items() if v is not None},
            self._key,
            self.alg,
        )


def _public_jwk(key: Any) -> dict[str, Any]:
    """The public JWK members of a ``cryptography`` public key (RFC 7518 §6, RFC 8037 §2)."""
    if isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        return {"kty": "RSA", "n": _uint(rsa_numbers.n), "e": _uint(rsa_numbers.e)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = (key.curve.key_size + 7) // 8
        ec_numbers = key.public_numbers()
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
        return {"kty": "EC", "crv": crv, "x": _uint(ec_numbers.x, size), "y": _uint(ec_numbers.y, size)}
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}


class DPoPKey:
    """A client's DPoP key pair for tests: its JWK, its thumbprint and :meth:`proof`.

    ``key = DPoPKey("ES256")``; ``token = issuer.mint(dpop_key=key)`` binds a token to it;
    ``key.proof("GET", "https://api.bank.example/accounts", access_token=token)`` makes the
    ``DPoP`` header for one request (RFC 9449 §4.2). Any claim or header member can be
    overridden (``None`` removes it), to build the invalid proofs a test needs.
    Never use it outside tests.
    """

    __test__ = False

    def __init__(self, alg: str = "ES256") -> None:
        self.alg = alg
        self._key: Any = _generate(alg)
        self.public_jwk: dict[str, Any] = _public_jwk(self._key.public_key())
        from .tokens.jwk import thumbprint

        #: RFC 7638 thumbprint: the ``cnf.jkt`` of tokens bound to this key.
        self.thumbprint = thumbprint(self.public_jwk)

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        iat: float | None = None,
        jti: str | None = None,
        claims: dict[str, Any] | None = None,
        header: dict[str, Any] | None = None,
    ) -> str:
        """A signed proof for ``method`` on ``url`` (query and fragment are dropped from ``htu``)."""
        htu = url.split("#", 1)[0].split("?", 1)[0]
        body: dict[str, Any] = {
            "jti": jti if jti is not None else secrets.token_urlsafe(16),
            "htm": method,
            "htu": htu,
            "iat": int(time.time()) if iat is None else iat,
        }
        if access_token is not None:
            from .tokens.dpop import access_token_hash

            body["ath"] = access_token_hash(access_token)
        if nonce is not None:
            body["nonce"] = nonce
        body.update(claims or {})
        head: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": dict(self.public_jwk)}
        head.update(header or {})
        return sign_compact(
            {k: v for k, v in head.items() if v is not None},
            {k: v for k, v in body.items() if v is not None},
            self._key,
            self.alg,
        )


def _generate(alg: str) -> Any:
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg in ("ES256", "ES384", "ES512"):
        curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[alg]
        return ec.generate_private_key(curve)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {alg!r}")


def sign_compact(header: dict[str, Any], claims: dict[str, Any] | bytes, key: Any, alg: str) -> str:
    """Sign a compact JWS (for tests): ``key`` is a ``cryptography`` private key or HMAC bytes."""
    payload = claims if isinstance(claims, bytes) else json.dumps(claims, separators=(",", ":")).encode()
    signing_input = f"{_b64(json.dumps(header, separators=(',', ':')).encode())}.{_b64(payload)}".encode()
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
    if alg.startswith("HS"):
        import hmac as _hmac

        signature = _hmac.new(key, signing_input, "sha" + alg[2:]).digest()
    elif alg.startswith("RS"):
        signature = key.sign(signing_input, padding.PKCS1v15(), digest[alg[2:]])
    elif alg.startswith("PS"):
        h = digest[alg[2:]]
        signature = key.sign(signing_input, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    elif alg.startswith("ES"):
        der = key.sign(signing_input, ec.ECDSA(digest[alg[2:]]))
        r, s = decode_dss_signature(der)
        size = (key.curve.key_size + 7) // 8
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    elif alg == "EdDSA":
        signature = key.sign(signing_input)
    else:
        raise ValueError(f"unsupported algorithm {alg!r}")
    return f"{signing_input.decode()}.{_b64(signature)}"
