"""JWT access tokens under RFC 9068 and the RFC 8725 best practices.

:meth:`JwtVerifier.parse` decodes and checks the header and reads the claims without
trusting them (it needs ``iss`` to pick the issuer's keys); :meth:`JwtVerifier.verify`
checks the signature with a key of *that* issuer bound to the header ``alg``, then the
claims. Every refusal raises :class:`TokenError` with a stable reason code.

Header (RFC 7515 §4, RFC 8725 §3): ``alg`` in the issuer's allow-list, compared exactly
(JWT-11/12/16); ``typ`` ``at+jwt`` unless the issuer lists more (JWT-10); no ``crit``
(JWT-06, no extension is understood), no ``b64`` (JWT-05), no ``cty`` (JWT-08), no
``jku``/``x5u``/``jwk``/``x5c`` (JWT-13: nothing is fetched or trusted from the token),
``kid`` a string of at most 256 characters used for an exact lookup only (JWT-14).

Claims (RFC 9068 §2.2, §4; RFC 7519 §4.1): required claims present (JWT-20); ``iss``
exactly a configured issuer (JWT-21/22); ``aud`` a string or non-empty list of strings
containing one of our audiences (JWT-23); ``exp``/``nbf``/``iat`` finite JSON numbers,
not booleans, before year 9999 (JWT-27), with ``now < exp + leeway`` (JWT-24),
``nbf <= now + leeway`` (JWT-25), ``iat <= now + max_future_iat`` (JWT-26); ``scope`` a
space-delimited string of scope-tokens (JWT-28); ``cnf`` an object.
"""

from __future__ import annotations

import math
import re
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .jose import CompactJWS, JoseError, json_object, parse_compact, verify_signature
from .keys import KeyIndex, KeySource

MAX_KID_LENGTH = 256
_LATEST = 253402300800  # 9999-12-31T00:00:00Z: later NumericDates are not plausible
_SCOPE_STRING = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*\Z")
_REFUSED_HEADER = (
    ("crit", "crit_not_supported"),
    ("b64", "b64_not_allowed"),
    ("cty", "nested_jwt"),
    ("jku", "header_key_url"),
    ("x5u", "header_key_url"),
    ("jwk", "header_embedded_key"),
    ("x5c", "header_embedded_key"),
    ("enc", "jwe_not_accepted"),
    ("zip", "jwe_not_accepted"),
)


class TokenError(Exception):
    """The token is refused; ``reason`` is a stable code (``expired``, ``audience``, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownKid(TokenError):
    """The ``kid`` is not in the issuer's current key set (a refresh may find it)."""


@dataclass(slots=True)
class VerifiedToken:
    """A token that passed every check. Treat it as read-only; ``claims`` is a read-only view.

    (Not a frozen dataclass only because frozen construction costs a measurable share of a
    first verification; nothing in bankguard changes it after construction.)
    """

    claims: Mapping[str, Any]
    issuer: str
    subject: str | None
    client_id: str | None
    scopes: frozenset[str]
    expires_at: float | None
    cnf: Mapping[str, Any] | None
    source: Literal["jwt", "introspection"]
    #: ``cnf`` read once: whether ``jkt`` / ``x5t#S256`` are present, and the latter's value.
    has_jkt: bool = False
    has_x5t: bool = False
    x5t: Any = None

    def __post_init__(self) -> None:
        cnf = self.cnf
        if cnf is not None:
            self.has_jkt = "jkt" in cnf
            self.has_x5t = "x5t#S256" in cnf
            self.x5t = cnf.get("x5t#S256")

    def __repr__(self) -> str:
        return f"VerifiedToken(issuer={self.issuer!r}, client_id={self.client_id!r}, source={self.source!r})"


@dataclass(frozen=True, slots=True)
class IssuerRules:
    """What one configured issuer accepts, ready for per-request use."""

    issuer: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    typ: frozenset[str]
    required_claims: tuple[str, ...]
    keys: KeySource


@dataclass(frozen=True, slots=True)
class ParsedJwt:
    jws: CompactJWS
    alg: str
    kid: str | None
    claims: dict[str, Any]
    rules: IssuerRules


def normalise_typ(value: str) -> str:
    """RFC 7515 §4.1.9: media types compare case-insensitively; ``application/`` may be omitted."""
    value = value.lower()
    return value[len("application/") :] if value.startswith("application/") else value


def numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim, or None when absent; anything but a plausible finite number is refused."""
    value = claims.get(name)
    if value is None:
        if name in claims:
            raise TokenError(f"claim_type:{name}")
        return None
    if type(value) is int and 0 <= value < _LATEST:  # the usual case, checked first
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenError(f"claim_type:{name}")
    if (isinstance(value, float) and not math.isfinite(value)) or not 0 <= value < _LATEST:
        raise TokenError(f"claim_range:{name}")
    return float(value)


def _scope_claim(claims: Mapping[str, Any]) -> frozenset[str]:
    """The ``scope`` claim of a JWT: absent means no scopes; present, it is a scope string
    (``null`` is refused as a claim of the wrong type, not read as absent)."""
    if "scope" not in claims:
        return frozenset()
    value = claims["scope"]
    if value is None:
        raise TokenError("claim_type:scope")
    return parse_scope(value)


def parse_scope(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, str) or not _SCOPE_STRING.match(value):
        raise TokenError("claim_type:scope")
    return frozenset(value.split(" "))


def optional_string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TokenError(f"claim_type:{name}")
    return value


class JwtVerifier:
    """Verifies JWT access tokens for a fixed set of issuers. Thread-safe; no I/O."""

    def __init__(
        self,
        issuers: Mapping[str, IssuerRules],
        *,
        leeway: float,
        max_future_iat: float,
        max_token_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuers = dict(issuers)
        self.leeway = leeway
        self.max_future_iat = max_future_iat
        self.max_token_bytes = max_token_bytes
        self.clock = clock
        #: Decoded headers by encoded segment (every token of an issuer key shares one).
        self._headers: dict[str, dict[str, Any]] = {}

    def parse(self, token: str) -> ParsedJwt:
        """Decode and check the header; read the claims and pick the issuer. No signature check yet."""
        try:
            jws = parse_compact(token, self.max_token_bytes, self._headers)
            header = jws.header
            for name, reason in _REFUSED_HEADER:
                if name in header:
                    raise TokenError(reason)
            alg = header.get("alg")
            if not isinstance(alg, str):
                raise TokenError("alg_missing")
            kid = header.get("kid")
            if "kid" in header and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH):
                raise TokenError("kid_invalid")  # present: a non-empty string (``null`` included)
            typ = header.get("typ")
            claims = json_object(jws.payload, "claims")
        except JoseError as exc:
            raise TokenError(exc.reason) from None
        issuer = claims.get("iss")
        rules = self.issuers.get(issuer) if isinstance(issuer, str) else None
        if rules is None:
            raise TokenError("issuer_unknown")
        if alg not in rules.algorithms:
            raise TokenError("alg_not_allowed")
        if not isinstance(typ, str) or normalise_typ(typ) not in rules.typ:
            raise TokenError("typ_not_accepted")
        return ParsedJwt(jws, alg, kid, claims, rules)

    def verify(self, parsed: ParsedJwt, index: KeyIndex) -> VerifiedToken:
        """Check the signature with the issuer's keys, then the claims."""
        if parsed.kid is not None and not index.knows(parsed.kid):
            raise UnknownKid("kid_unknown")
        candidates = index.candidates(parsed.kid, parsed.alg)
        if not candidates:
            raise TokenError("no_key_for_alg")
        jws = parsed.jws
        for key in candidates:
            try:
                verify_signature(key.key, parsed.alg, jws.signing_input, jws.signature)
                break
            except JoseError:
                continue
        else:
            raise TokenError("signature_invalid")
        return self.check_claims(parsed.claims, parsed.rules)

    def check_claims(self, claims: dict[str, Any], rules: IssuerRules) -> VerifiedToken:
        for name in rules.required_claims:
            if claims.get(name) is None:  # absent, or JSON null
                raise TokenError(f"claim_missing:{name}")
        now = self.clock()
        exp = numeric_date(claims, "exp")
        nbf = numeric_date(claims, "nbf")
        iat = numeric_date(claims, "iat")
        numeric_date(claims, "auth_time")
        if exp is not None and now >= exp + self.leeway:
            raise TokenError("expired")
        if nbf is not None and now + self.leeway < nbf:
            raise TokenError("not_yet_valid")
        if iat is not None and iat > now + self.max_future_iat:
            raise TokenError("issued_in_future")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) for a in audiences):
            raise TokenError("claim_type:aud")
        if rules.audiences.isdisjoint(audiences):
            raise TokenError("audience_mismatch")
        subject = optional_string(claims, "sub")
        client_id = optional_string(claims, "client_id")
        optional_string(claims, "jti")
        cnf = claims.get("cnf")
        if cnf is not None and not isinstance(cnf, dict):
            raise TokenError("claim_type:cnf")
        return VerifiedToken(
            claims=types.MappingProxyType(claims),
            issuer=rules.issuer,
            subject=subject,
            client_id=client_id,
            scopes=_scope_claim(claims),
            expires_at=exp,
            cnf=types.MappingProxyType(cnf) if cnf is not None else None,
            source="jwt",
        )
