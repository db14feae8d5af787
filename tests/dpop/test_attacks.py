"""The DPoP-proof side of the attack catalogue (STANDARDS §8) through a real :class:`~bankguard.Guard`.

Every attack is a request ``Authorization: DPoP <token>`` plus a ``DPoP`` proof header, decided by
a guard built from a policy with ``dpop.enabled`` (and, where the row needs it, server nonces or
the ``fapi2`` profile), on a fixed clock. Each refusal asserts the status (never a 5xx), the
``WWW-Authenticate`` challenge and its ``error`` code (E2 ``invalid_token`` for the key binding,
STANDARDS §10 C5; E3 ``invalid_dpop_proof`` for the proof itself; E4 ``use_dpop_nonce`` with one
``DPoP-Nonce``), the problem document and the audit reason.

Covered: ATK-07, ATK-17, ATK-18, ATK-19, ATK-23, ATK-27, ATK-32, ATK-33, ATK-34, the ``alg``, ``typ``
and key-reference header rows of DPOP-04..DPOP-06, and property tests (hypothesis) of the whole
check: arbitrary header text, mutated proofs and arbitrary claim values never reach a 5xx and are
never accepted, through :meth:`Guard.decide` and :meth:`Guard.adecide` alike.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from bankguard import EventCollector, Guard, Policy
from bankguard.decision import Decision
from bankguard.problem import ProblemResponse
from bankguard.testing import DPoPKey, TestIssuer, make_facts, sign_compact
from bankguard.tokens.dpop import access_token_hash
from bankguard.tokens.dpop_nonce import NonceIssuer

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z; every guard here runs on this clock
ISS = "https://as.bank.example"
ORIGIN = "https://api.bank.example"
URL = ORIGIN + "/accounts"
ALGS = "ES256 PS256 EdDSA"
PROBLEM = "application/problem+json"
NONCE_VAR = "BANKGUARD_TEST_DPOP_NONCE_KEY"
NONCE_SECRET = secrets.token_urlsafe(48)
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SEGMENTS = ("header", "payload", "signature")
SLUGS = {
    "invalid_dpop_proof": "invalid-dpop-proof",
    "invalid_token": "invalid-token",
    "use_dpop_nonce": "use-dpop-nonce",
}

ISSUER = TestIssuer(ISS, alg="ES256", kid="ec-1")
CLIENT = DPoPKey("ES256")
ATTACKER = DPoPKey("ES256")
RSA_CLIENT = DPoPKey("PS256")

OPERATIONS = [
    {"method": "GET", "path": "/accounts", "id": "listAccounts", "scopes": ["accounts"]},
    {"method": "GET", "path": "/accounts/{id}", "id": "getAccount", "scopes": ["accounts"]},
    {"method": "POST", "path": "/payments", "id": "createPayment", "scopes": ["accounts"]},
]


# -- policies, guards, requests -------------------------------------------------------------------


def make_policy(profile: str = "generic", *, nonce: bool = False) -> Policy:
    dpop: dict[str, Any] = {"enabled": True}
    if nonce:
        dpop["nonce"] = {"enabled": True, "secret_env": NONCE_VAR}
    return Policy.from_dict(
        {
            "profile": profile,
            "external_origins": [ORIGIN],
            "routes": {"operations": OPERATIONS},
            "tokens": {
                "issuers": [
                    {"issuer": ISS, "audiences": [ORIGIN], "algorithms": ["ES256"], "jwks": ISSUER.jwks()}
                ]
            },
            "dpop": dpop,
        }
    )


def make_guard(profile: str = "generic", *, nonce: bool = False, secret: str = NONCE_SECRET) -> Guard:
    """A guard on the fixed clock; the nonce key is in the environment only while it is built."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(NONCE_VAR, secret)
        return Guard(make_policy(profile, nonce=nonce), sink=EventCollector(), clock=lambda: NOW)


@pytest.fixture
def guard() -> Guard:
    return make_guard()


@pytest.fixture
def nonce_guard() -> Guard:
    return make_guard(nonce=True)


def bound_token(key: DPoPKey = CLIENT, **claims: Any) -> str:
    """An access token bound to ``key`` (``cnf.jkt``), valid at NOW."""
    return ISSUER.mint(claims, now=NOW, audience=ORIGIN, dpop_key=key)


def plain_token(**claims: Any) -> str:
    return ISSUER.mint(claims, now=NOW, audience=ORIGIN)


TOKEN = bound_token()


def proof(
    token: str = TOKEN, *, key: DPoPKey = CLIENT, method: str = "GET", url: str = URL, **kw: Any
) -> str:
    kw.setdefault("iat", NOW)
    return key.proof(method, url, access_token=token, **kw)


def facts(
    token: str,
    proofs: str | list[str] | None,
    *,
    method: str = "GET",
    target: str = "/accounts",
    scheme: str = "DPoP",
    extra: tuple[tuple[str, str], ...] = (),
) -> Any:
    headers = [("authorization", f"{scheme} {token}")]
    if isinstance(proofs, str):
        proofs = [proofs]
    headers.extend(("dpop", p) for p in proofs or ())
    headers.extend(extra)
    return make_facts(method, target, headers=headers)


def send(guard: Guard, token: str, proofs: str | list[str] | None, **kw: Any) -> Decision:
    return guard.decide(facts(token, proofs, **kw))


def challenges(response: ProblemResponse) -> list[tuple[str, dict[str, str]]]:
    """Each ``WWW-Authenticate`` value as (scheme, params); a repeated parameter fails the test."""
    out = []
    for name, value in response.headers:
        if name != "www-authenticate":
            continue
        scheme, _, rest = value.partition(" ")
        pairs = re.findall(r'([a-z_]+)="([^"\\]*)"', rest)
        params = dict(pairs)
        assert len(params) == len(pairs), f"repeated auth-param in {value!r}"
        out.append((scheme, params))
    return out


def assert_refused(
    guard: Guard,
    decision: Decision,
    reason: str,
    *,
    status: int = 401,
    error: str | None = "invalid_dpop_proof",
    scheme: str = "DPoP",
) -> ProblemResponse:
    """The request was refused with ``status``, the ``error`` challenge, a problem document and
    the audit ``reason`` (the event also reached the sink)."""
    assert not decision.allowed
    audit = decision.event
    control = "request" if reason.startswith("request.") else "tokens"
    assert (audit.outcome, audit.status, audit.control, audit.reason) == ("deny", status, control, reason)
    assert isinstance(guard.sink, EventCollector)
    assert guard.sink.events[-1] is audit
    response = guard.problem(decision)
    assert response.status == status < 500
    headers = [name for name, _ in response.headers]
    assert dict(response.headers)["content-type"] == PROBLEM
    assert dict(response.headers)["cache-control"] == "no-store"
    document = json.loads(response.body)
    assert document["status"] == status
    found = challenges(response)
    if error is None:
        assert found == []
        assert document["type"].endswith("/header-fields-too-large")
    else:
        with_error = [(s, p) for s, p in found if "error" in p]
        assert len(with_error) == 1, found
        name, params = with_error[0]
        assert (name, params["error"]) == (scheme, error)
        assert "error_description" in params
        if scheme == "DPoP":
            assert params["algs"] == ALGS
            assert len(found) == 1  # the tried scheme alone carries the challenge
        assert document["type"].endswith("/" + SLUGS[error])
    assert headers.count("dpop-nonce") == (1 if error == "use_dpop_nonce" else 0)
    return response


def assert_allowed(decision: Decision) -> None:
    assert decision.allowed, (decision.event.status, decision.event.reason)
    assert decision.context.principal.binding == "dpop"


# -- building proofs byte by byte -------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def es256(key: DPoPKey, signing_input: bytes) -> bytes:
    r, s = decode_dss_signature(key._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_proof(
    header: dict[str, Any] | bytes,
    payload: dict[str, Any] | bytes,
    *,
    key: DPoPKey = CLIENT,
    signature: bytes | None = None,
) -> str:
    """A compact JWS from exact header and payload bytes, ES256-signed with ``key`` (or carrying
    ``signature`` as given)."""
    h = header if isinstance(header, bytes) else dumps(header)
    p = payload if isinstance(payload, bytes) else dumps(payload)
    signing_input = f"{b64(h)}.{b64(p)}".encode("ascii")
    sig = es256(key, signing_input) if signature is None else signature
    return f"{signing_input.decode('ascii')}.{b64(sig)}"


def dpop_header(key: DPoPKey = CLIENT, **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"typ": "dpop+jwt", "alg": key.alg, "jwk": dict(key.public_jwk)}
    header.update(changes)
    return {k: v for k, v in header.items() if v is not None}


def dpop_claims(token: str = TOKEN, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": "GET",
        "htu": URL,
        "iat": int(NOW),
        "ath": access_token_hash(token),
    }
    claims.update(changes)
    return claims


def with_signature(proof_value: str, signature: bytes) -> str:
    h, p, _ = proof_value.split(".")
    return f"{h}.{p}.{b64(signature)}"


def high_s(proof_value: str) -> str:
    """The same proof with ``s`` replaced by ``n - s``: a second valid ECDSA signature."""
    h, p, s = proof_value.split(".")
    sig = unb64(s)
    r, s_int = sig[:32], int.from_bytes(sig[32:], "big")
    return f"{h}.{p}.{b64(r + (P256_N - s_int).to_bytes(32, 'big'))}"


# -- ATK-07: embedded attacker jwk ------------------------------------------------------------------


def test_ATK_07_attacker_jwk_gives_a_valid_proof_that_fails_the_binding(guard: Guard) -> None:
    forged = proof(key=ATTACKER)  # a perfectly valid proof, with the attacker's own key
    response = assert_refused(
        guard, send(guard, TOKEN, forged), "token.dpop_key_mismatch", error="invalid_token"
    )
    ((_, params),) = challenges(response)
    assert params["error_description"] == "Invalid DPoP key binding."
    assert json.loads(response.body)["detail"] == "Invalid DPoP key binding."


def test_ATK_07_victim_jwk_with_attacker_signature(guard: Guard) -> None:
    forged = raw_proof(dpop_header(CLIENT), dpop_claims(), key=ATTACKER)
    assert_refused(guard, send(guard, TOKEN, forged), "dpop.signature_invalid")


def test_ATK_07_failed_binding_does_not_spend_the_jti(guard: Guard) -> None:
    """The attacker's refused proof reuses the victim's jti: the victim's proof still goes through."""
    jti = secrets.token_urlsafe(16)
    assert_refused(
        guard,
        send(guard, TOKEN, proof(key=ATTACKER, jti=jti)),
        "token.dpop_key_mismatch",
        error="invalid_token",
    )
    assert_allowed(send(guard, TOKEN, proof(jti=jti)))


# -- ATK-17: base64 malleability --------------------------------------------------------------------


def proof_with_partial_quantum(index: int) -> str:
    """A valid proof whose segment ``index`` ends in a partial base64 quantum (length % 4 in 2, 3),
    so its last character has unused low bits."""
    for pad in range(4):
        candidate = proof(header={"x-pad": "p" * pad}, claims={"x-pad": "p" * pad})
        if len(candidate.split(".")[index]) % 4:
            return candidate
    raise AssertionError("no padding gave a partial quantum")  # pragma: no cover


def malleations(proof_value: str, index: int) -> list[tuple[str, str, str]]:
    """(name, variant, expected reason) for the encodings a lenient decoder would accept."""
    parts = proof_value.split(".")
    segment = parts[index]
    mid = len(segment) // 2

    def put(new: str) -> str:
        changed = list(parts)
        changed[index] = new
        return ".".join(changed)

    def insert(text: str) -> str:
        return put(segment[:mid] + text + segment[mid:])

    out = [
        ("append =", put(segment + "="), "dpop.not_base64url"),
        ("append ==", put(segment + "=="), "dpop.not_base64url"),
        ("insert !", insert("!"), "dpop.not_base64url"),
        ("insert +", insert("+"), "dpop.not_base64url"),
        ("insert /", insert("/"), "dpop.not_base64url"),
        ("insert space", insert(" "), "dpop.not_base64url"),
        ("insert tab", insert("\t"), "dpop.not_base64url"),
        ("insert newline", insert("\n"), "dpop.not_base64url"),
        ("insert CRLF", insert("\r\n"), "dpop.not_base64url"),
        ("trailing newline", put(segment + "\n"), "dpop.not_base64url"),
    ]
    if len(segment) % 4:
        out.append(("padded", put(segment + "=" * (-len(segment) % 4)), "dpop.not_base64url"))
        value = B64URL.index(segment[-1])
        out.append(
            (
                "non-canonical last char",
                put(segment[:-1] + B64URL[value | 1]),
                f"dpop.{SEGMENTS[index]}_not_canonical",
            )
        )
    standard = segment.translate(str.maketrans("-_", "+/"))
    if standard != segment:
        out.append(("standard alphabet", put(standard), "dpop.not_base64url"))
    return out


def test_ATK_17_non_canonical_last_char_decodes_to_the_same_bytes() -> None:
    """The attack is real: a lenient decoder maps the non-canonical variant to the original bytes."""
    original = proof_with_partial_quantum(2)
    (variant,) = [v for _, v, reason in malleations(original, 2) if reason.endswith("_not_canonical")]
    assert variant != original
    assert unb64(variant.split(".")[2]) == unb64(original.split(".")[2])


def reencodings(original: str) -> list[tuple[str, str]]:
    """The same proof (same claims, same jti, same key) in other valid encodings."""
    h, p, _ = original.split(".")
    header, claims = json.loads(unb64(h)), json.loads(unb64(p))
    spaced_header = json.dumps(dict(reversed(list(header.items()))), indent=1).encode()
    media_type = dumps({**header, "typ": "application/dpop+jwt"})
    escaped = (
        "{"
        + ", ".join(
            '"' + "".join(f"\\u{ord(c):04x}" for c in name) + '": ' + json.dumps(value)
            for name, value in claims.items()
        )
        + "}"
    ).encode()
    return [
        ("re-signed", raw_proof(unb64(h), unb64(p))),
        ("high-S", high_s(original)),
        ("header whitespace and order", raw_proof(spaced_header, unb64(p))),
        ("typ as media type", raw_proof(media_type, unb64(p))),
        (
            "payload pretty-printed",
            raw_proof(unb64(h), json.dumps(claims, indent=2, sort_keys=True).encode()),
        ),
        ("payload names escaped", raw_proof(unb64(h), escaped)),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=SEGMENTS)
def test_ATK_17_base64_malleability_is_refused_and_never_spends_the_jti(index: int) -> None:
    guard = make_guard()
    original = proof_with_partial_quantum(index)
    variants = malleations(original, index)
    assert any(reason.endswith("_not_canonical") for _, _, reason in variants)
    for _, variant, reason in variants:
        assert variant != original
        assert_refused(guard, send(guard, TOKEN, variant), reason)
    # None of the refused encodings spent the jti: the original is accepted once ...
    assert_allowed(send(guard, TOKEN, original))
    # ... and afterwards the variants are still refused for their encoding, not let through.
    for _, variant, reason in variants:
        assert_refused(guard, send(guard, TOKEN, variant), reason)
    assert_refused(guard, send(guard, TOKEN, original), "dpop.replayed")


@pytest.mark.parametrize("name", [name for name, _ in reencodings(proof())])
def test_ATK_17_DPOP_13_reencoded_proof_does_not_pass_the_replay_cache(name: str) -> None:
    original = proof()
    variant = dict(reencodings(original))[name]
    assert variant != original
    # Each encoding is a valid proof on its own ...
    assert_allowed(send(make_guard(), TOKEN, variant))
    # ... but the replay cache is keyed on the jti, not on the proof string.
    guard = make_guard()
    assert_allowed(send(guard, TOKEN, original))
    assert_refused(guard, send(guard, TOKEN, variant), "dpop.replayed")
    guard = make_guard()
    assert_allowed(send(guard, TOKEN, variant))
    assert_refused(guard, send(guard, TOKEN, original), "dpop.replayed")


# -- ATK-18: psychic signatures ---------------------------------------------------------------------


def _valid_signature() -> tuple[str, bytes]:
    original = proof()
    return original, unb64(original.split(".")[2])


def _der(signature: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))


N32 = P256_N.to_bytes(32, "big")
ONE32 = (1).to_bytes(32, "big")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda sig: bytes(64), "dpop.signature_out_of_range", id="r=s=0"),
        pytest.param(lambda sig: N32 + N32, "dpop.signature_out_of_range", id="r=s=n"),
        pytest.param(lambda sig: N32 + ONE32, "dpop.signature_out_of_range", id="r=n,s=1"),
        pytest.param(lambda sig: sig[:32] + bytes(32), "dpop.signature_out_of_range", id="s=0"),
        pytest.param(lambda sig: bytes(32) + sig[32:], "dpop.signature_out_of_range", id="r=0"),
        pytest.param(lambda sig: b"\xff" * 64, "dpop.signature_out_of_range", id="all-ones"),
        pytest.param(_der, "dpop.signature_length", id="DER-of-valid-signature"),
        pytest.param(lambda sig: sig[:63], "dpop.signature_length", id="63-bytes"),
        pytest.param(lambda sig: sig + b"\x00", "dpop.signature_length", id="65-bytes"),
        pytest.param(lambda sig: b"\x00" + sig, "dpop.signature_length", id="65-bytes-leading-zero"),
        pytest.param(lambda sig: sig[:32], "dpop.signature_length", id="r-only"),
        pytest.param(lambda sig: bytes(1), "dpop.signature_length", id="1-byte"),
    ],
)
def test_ATK_18_psychic_signatures(guard: Guard, make: Any, reason: str) -> None:
    original, signature = _valid_signature()
    forged = with_signature(original, make(signature))
    assert_refused(guard, send(guard, TOKEN, forged), reason)
    assert_allowed(send(guard, TOKEN, original))  # the refusals spent nothing


def test_ATK_18_empty_signature(guard: Guard) -> None:
    h, p, _ = proof().split(".")
    assert_refused(guard, send(guard, TOKEN, f"{h}.{p}."), "dpop.signature_missing")


def test_ATK_18_flipped_signature_bit(guard: Guard) -> None:
    original, signature = _valid_signature()
    flipped = bytes([signature[0] ^ 0x01]) + signature[1:]
    assert_refused(guard, send(guard, TOKEN, with_signature(original, flipped)), "dpop.signature_invalid")


# -- ATK-19: high-S malleability ------------------------------------------------------------------


def test_ATK_19_high_s_verifies_but_its_second_use_is_a_replay() -> None:
    original = proof()
    variant = high_s(original)
    assert variant != original
    guard = make_guard()
    assert_allowed(send(guard, TOKEN, variant))  # n - s is a valid signature: it verifies
    assert_refused(guard, send(guard, TOKEN, variant), "dpop.replayed")
    assert_refused(guard, send(guard, TOKEN, original), "dpop.replayed")


def test_ATK_19_high_s_after_the_original_was_used_is_refused() -> None:
    original = proof()
    guard = make_guard()
    assert_allowed(send(guard, TOKEN, original))
    assert_refused(guard, send(guard, TOKEN, high_s(original)), "dpop.replayed")
    assert_refused(guard, send(guard, TOKEN, high_s(high_s(original))), "dpop.replayed")


# -- ATK-23: huge or deep proofs ------------------------------------------------------------------


def _padded_proof(size: int) -> str:
    """A validly signed proof of at least ``size`` characters (a large extra claim)."""
    value = proof(claims={"pad": "x" * (size * 3 // 4)})
    assert len(value) >= size
    return value


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        pytest.param(8 * 1024 + 1, "dpop.proof_too_large", id="over-max_proof_bytes"),
        pytest.param(20 * 1024, "request.header_field_too_large", id="over-field-cap"),
        pytest.param(64 * 1024, "request.headers_too_large", id="64k"),
    ],
)
def test_ATK_23_DPOP_28_huge_dpop_header(guard: Guard, size: int, reason: str) -> None:
    value = _padded_proof(size)
    assert_refused(guard, send(guard, TOKEN, value), reason, status=431, error=None)


def test_ATK_23_huge_non_ascii_dpop_header(guard: Guard) -> None:
    assert_refused(guard, send(guard, TOKEN, "é" * 10_000), "dpop.proof_too_large", status=431, error=None)


def rsa_jwk(bits: int, e: int = 65537) -> dict[str, str]:
    """An RSA public JWK with a ``bits``-bit modulus (not a real key: refused before any use)."""
    n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    return {
        "kty": "RSA",
        "n": b64(n.to_bytes(bits // 8, "big")),
        "e": b64(e.to_bytes((e.bit_length() + 7) // 8, "big")),
    }


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        pytest.param(rsa_jwk(8192), "dpop.jwk_rsa_too_large", id="RSA-8192"),
        pytest.param(rsa_jwk(16384), "dpop.rsa_key_size", id="RSA-16384"),
        pytest.param(rsa_jwk(1024), "dpop.rsa_key_size", id="RSA-1024"),
        pytest.param(rsa_jwk(2048, 2**64 + 1), "dpop.jwk_rsa_exponent", id="e-65-bits"),
        pytest.param(rsa_jwk(2048, 2**4095 + 1), "dpop.jwk_rsa_exponent", id="e-4096-bits"),
        pytest.param(rsa_jwk(2048, 1), "dpop.jwk_rsa_exponent", id="e-1"),
        pytest.param(rsa_jwk(2048, 65536), "dpop.jwk_rsa_exponent", id="e-even"),
    ],
)
def test_ATK_23_DPOP_28_oversized_rsa_proof_keys(guard: Guard, jwk: dict[str, str], reason: str) -> None:
    signature = secrets.token_bytes(len(unb64(jwk["n"])))
    forged = raw_proof(dpop_header(RSA_CLIENT, jwk=jwk), dpop_claims(), signature=signature)
    assert len(forged) <= 8 * 1024
    assert_refused(guard, send(guard, TOKEN, forged), reason)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"deep": _nested(20)}, "dpop.json_too_deep", id="claims-20-deep"),
        pytest.param({"deep": _nested(500)}, "dpop.json_too_deep", id="claims-500-deep"),
        pytest.param({f"c{i}": i for i in range(300)}, "dpop.json_too_many_members", id="300-claims"),
        pytest.param({"list": list(range(1000))}, "dpop.json_too_many_members", id="1000-entries"),
    ],
)
def test_ATK_23_deep_or_wide_claims(guard: Guard, claims: dict[str, Any], reason: str) -> None:
    value = proof(claims=claims)  # validly signed: the structure is what is refused
    assert_refused(guard, send(guard, TOKEN, value), reason)


def test_ATK_23_deeply_nested_header(guard: Guard) -> None:
    header = b"[" * 2900 + b"]" * 2900
    forged = raw_proof(header, dpop_claims(), signature=bytes(64))
    assert len(forged) <= 8 * 1024
    assert_refused(guard, send(guard, TOKEN, forged), "dpop.header_not_json")


# -- ATK-27: cross-JWT confusion --------------------------------------------------------------------


def test_ATK_27_access_token_as_dpop_proof(guard: Guard) -> None:
    assert_refused(guard, send(guard, TOKEN, TOKEN), "dpop.typ_not_dpop_jwt")


def test_ATK_27_dpop_proof_as_access_token(guard: Guard) -> None:
    as_token = proof()
    decision = send(guard, as_token, proof(as_token))
    assert_refused(guard, decision, "token.header_embedded_key", error="invalid_token")


def test_ATK_27_dpop_proof_as_bearer_token(guard: Guard) -> None:
    decision = send(guard, proof(), None, scheme="Bearer")
    assert_refused(guard, decision, "token.header_embedded_key", error="invalid_token", scheme="Bearer")


def test_ATK_27_id_token_as_dpop_proof(guard: Guard) -> None:
    """An ID-token-shaped JWT (``typ: JWT``) signed by the client key with every proof claim."""
    forged = raw_proof(dpop_header(typ="JWT"), {**dpop_claims(), "aud": "tpp-client-1", "sub": "psu-1"})
    assert_refused(guard, send(guard, TOKEN, forged), "dpop.typ_not_dpop_jwt")


def test_ATK_27_as_issued_id_token_as_dpop_proof(guard: Guard) -> None:
    id_token = ISSUER.mint({"aud": "tpp-client-1", "nonce": "n-1"}, header={"typ": "JWT"}, now=NOW)
    assert_refused(guard, send(guard, TOKEN, id_token), "dpop.typ_not_dpop_jwt")


@pytest.mark.parametrize(
    "typ",
    [
        pytest.param("at+jwt", id="at+jwt"),
        pytest.param("application/at+jwt", id="application/at+jwt"),
        pytest.param("JWT", id="JWT"),
        pytest.param(None, id="missing"),
        pytest.param("dpop", id="dpop"),
        pytest.param("dpop+jwt ", id="trailing-space"),
        pytest.param("application/dpop+jwt; x=1", id="parameter"),
        pytest.param("jwt+dpop", id="reversed"),
        pytest.param(["dpop+jwt"], id="list"),
        pytest.param(1, id="number"),
    ],
)
def test_DPOP_04_typ_not_dpop_jwt(guard: Guard, typ: Any) -> None:
    forged = raw_proof(dpop_header(typ=typ), dpop_claims())
    assert_refused(guard, send(guard, TOKEN, forged), "dpop.typ_not_dpop_jwt")


@pytest.mark.parametrize("typ", ["application/dpop+jwt", "DPoP+JWT", "Application/DPOP+jwt"])
def test_DPOP_04_typ_compared_as_media_type(guard: Guard, typ: str) -> None:
    assert_allowed(send(guard, TOKEN, raw_proof(dpop_header(typ=typ), dpop_claims())))


# -- DPOP-05 / DPOP-06: alg, key references ---------------------------------------------------------


@pytest.mark.parametrize(
    "alg",
    [
        pytest.param("none", id="none"),
        pytest.param("None", id="None"),
        pytest.param("NONE", id="NONE"),
        pytest.param("HS256", id="HS256"),
        pytest.param("es256", id="es256"),
        pytest.param("ES256K", id="ES256K"),
        pytest.param("ES384", id="ES384-not-allowed"),
        pytest.param("RS256", id="RS256-not-allowed"),
        pytest.param("ES256 ", id="trailing-space"),
        pytest.param(None, id="missing"),
        pytest.param(["ES256"], id="list"),
    ],
)
def test_DPOP_05_alg_not_allowed(guard: Guard, alg: Any) -> None:
    """Signed with the real ES256 key; only the header ``alg`` differs."""
    forged = raw_proof(dpop_header(alg=alg), dpop_claims())
    assert_refused(guard, send(guard, TOKEN, forged), "dpop.alg_not_allowed")


def test_DPOP_05_hs256_keyed_with_the_public_jwk(guard: Guard) -> None:
    header = dpop_header(alg="HS256")
    for secret in (
        dumps(CLIENT.public_jwk),
        json.dumps(CLIENT.public_jwk).encode(),
        CLIENT.thumbprint.encode(),
    ):
        forged = sign_compact(header, dpop_claims(), secret, "HS256")
        assert_refused(guard, send(guard, TOKEN, forged), "dpop.alg_not_allowed")


def test_DPOP_05_alg_none_with_empty_signature(guard: Guard) -> None:
    h, p, _ = raw_proof(dpop_header(alg="none"), dpop_claims()).split(".")
    assert_refused(guard, send(guard, TOKEN, f"{h}.{p}."), "dpop.signature_missing")


@pytest.mark.parametrize(
    ("member", "value"),
    [
        pytest.param("jku", "https://attacker.example/jwks.json", id="jku"),
        pytest.param("x5u", "https://attacker.example/cert.pem", id="x5u"),
        pytest.param("x5c", ["MIIBdummy"], id="x5c"),
        pytest.param("crit", ["exp"], id="crit"),
        pytest.param("b64", False, id="b64"),
        pytest.param("zip", "DEF", id="zip"),
        pytest.param("enc", "A256GCM", id="enc"),
    ],
)
def test_DPOP_06_key_reference_headers_refused(guard: Guard, member: str, value: Any) -> None:
    forged = raw_proof(dpop_header(**{member: value}), dpop_claims())
    assert_refused(guard, send(guard, TOKEN, forged), f"dpop.header_{member}_refused")


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"jwk": None, "kid": "client-key-1"}, id="kid-only"),
        pytest.param({"jwk": None}, id="no-key"),
        pytest.param({"jwk": "eyJrdHkiOiJFQyJ9"}, id="jwk-string"),
        pytest.param({"jwk": [CLIENT.public_jwk]}, id="jwk-list"),
    ],
)
def test_DPOP_06_jwk_missing(guard: Guard, changes: dict[str, Any]) -> None:
    forged = raw_proof(dpop_header(**changes), dpop_claims())
    assert_refused(guard, send(guard, TOKEN, forged), "dpop.jwk_missing")


class _CountingHandler(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"keys": [ATTACKER.public_jwk]}).encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def attacker_server() -> Iterator[tuple[str, type[_CountingHandler]]]:
    handler = type("Handler", (_CountingHandler,), {"hits": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.network
def test_DPOP_06_jku_and_x5u_are_never_fetched(guard: Guard) -> None:
    with attacker_server() as (base, handler):
        for member in ("jku", "x5u"):
            forged = raw_proof(
                dpop_header(ATTACKER, jwk=None, **{member: f"{base}/keys"}), dpop_claims(), key=ATTACKER
            )
            assert_refused(guard, send(guard, TOKEN, forged), f"dpop.header_{member}_refused")
            forged = raw_proof(
                dpop_header(ATTACKER, jwk=None, kid="k", **{member: f"{base}/keys"}),
                dpop_claims(),
                key=ATTACKER,
            )
            assert_refused(guard, send(guard, TOKEN, forged), f"dpop.header_{member}_refused")
        assert handler.hits == 0


# -- ATK-32: unbound or downgraded tokens -----------------------------------------------------------


@pytest.mark.parametrize("with_proof", [False, True], ids=["no-proof", "with-proof"])
def test_ATK_32_DPOP_18_dpop_bound_token_as_bearer(guard: Guard, with_proof: bool) -> None:
    decision = send(guard, TOKEN, proof() if with_proof else None, scheme="Bearer")
    response = assert_refused(
        guard, decision, "token.dpop_bound_presented_as_bearer", error="invalid_token", scheme="Bearer"
    )
    found = challenges(response)
    assert found[0] == ("Bearer", {**found[0][1], "realm": "api", "error": "invalid_token"})
    assert found[1:] == [("DPoP", {"algs": ALGS})]  # offered, without error


def test_ATK_32_MTLS_05_cert_bound_token_with_dpop_scheme(guard: Guard) -> None:
    token = plain_token(cnf={"x5t#S256": "A4DtL2JmUMhAsvJj5tKyn64SqzmuXbMrJa0n761y5v0"})
    assert_refused(guard, send(guard, token, proof(token)), "token.not_dpop_bound", error="invalid_token")


def test_ATK_32_MTLS_05_doubly_bound_token_needs_both_bindings(guard: Guard) -> None:
    token = plain_token(
        cnf={"jkt": CLIENT.thumbprint, "x5t#S256": "A4DtL2JmUMhAsvJj5tKyn64SqzmuXbMrJa0n761y5v0"}
    )
    assert_refused(
        guard, send(guard, token, proof(token)), "token.certificate_missing", error="invalid_token"
    )


def test_ATK_32_DPOP_19_unbound_token_with_dpop_scheme(guard: Guard) -> None:
    token = plain_token()
    assert_refused(guard, send(guard, token, proof(token)), "token.not_dpop_bound", error="invalid_token")


def test_ATK_32_FAPI_01_unbound_token_under_fapi2() -> None:
    guard = make_guard("fapi2")
    token = plain_token()
    decision = send(guard, token, None, scheme="Bearer")
    assert_refused(guard, decision, "token.not_sender_constrained", error="invalid_token", scheme="Bearer")
    assert_refused(guard, send(guard, token, proof(token)), "token.not_dpop_bound", error="invalid_token")
    assert_allowed(send(guard, TOKEN, proof()))  # a DPoP-bound token is what fapi2 wants


# -- ATK-33: replay and reuse -----------------------------------------------------------------------


def test_ATK_33_DPOP_13_same_proof_twice(guard: Guard) -> None:
    value = proof()
    assert_allowed(send(guard, TOKEN, value))
    response = assert_refused(guard, send(guard, TOKEN, value), "dpop.replayed")
    assert challenges(response)[0][1]["error_description"] == "The DPoP proof has been used before."


def test_ATK_33_DPOP_30_proof_for_another_uri(guard: Guard) -> None:
    value = proof()
    decision = send(guard, TOKEN, value, target="/accounts/123")
    assert_refused(guard, decision, "dpop.htu_path_mismatch")
    assert_allowed(send(guard, TOKEN, value))  # the refusal did not spend it


@pytest.mark.parametrize(
    ("url", "target", "reason"),
    [
        pytest.param(URL + "/", "/accounts", "dpop.htu_path_mismatch", id="trailing-slash"),
        pytest.param(URL + "/123", "/accounts/124", "dpop.htu_path_mismatch", id="other-id"),
        pytest.param(URL + "/123/..", "/accounts/123", "dpop.htu_path_mismatch", id="dot-dot"),
        pytest.param(ORIGIN + "/ACCOUNTS", "/accounts", "dpop.htu_path_mismatch", id="path-case"),
        pytest.param(ORIGIN + "/accounts%2F", "/accounts", "dpop.htu_path_mismatch", id="encoded-slash"),
        pytest.param(ORIGIN + "/v1/accounts", "/accounts", "dpop.htu_path_mismatch", id="prefix"),
        pytest.param("http://api.bank.example/accounts", "/accounts", "dpop.htu_origin_mismatch", id="http"),
        pytest.param(
            "https://api.bank.example:8443/accounts", "/accounts", "dpop.htu_origin_mismatch", id="port"
        ),
        pytest.param("https://other-rs.example/accounts", "/accounts", "dpop.htu_origin_mismatch", id="host"),
        pytest.param(
            "https://api.bank.example.evil/accounts", "/accounts", "dpop.htu_origin_mismatch", id="suffix"
        ),
        pytest.param(
            "https://user@api.bank.example/accounts", "/accounts", "dpop.htu_invalid", id="userinfo"
        ),
        pytest.param("wss://api.bank.example/accounts", "/accounts", "dpop.htu_invalid", id="wss"),
        pytest.param("/accounts", "/accounts", "dpop.htu_invalid", id="relative"),
    ],
)
def test_ATK_33_DPOP_10_proof_for_another_url(guard: Guard, url: str, target: str, reason: str) -> None:
    assert_refused(guard, send(guard, TOKEN, proof(url=url), target=target), reason)


@pytest.mark.parametrize("header", ["host", "x-forwarded-host", "forwarded"])
def test_ATK_33_DPOP_11_proof_for_another_host_with_forged_host(guard: Guard, header: str) -> None:
    value = proof(url="https://other-rs.example/accounts")
    host = "host=other-rs.example" if header == "forwarded" else "other-rs.example"
    decision = send(guard, TOKEN, value, extra=((header, host),))
    assert_refused(guard, decision, "dpop.htu_origin_mismatch")


def test_ATK_33_DPOP_10_equivalent_htu_is_accepted(guard: Guard) -> None:
    value = proof(url="HTTPS://API.bank.example:443/x/../accounts?x=1#f")
    assert_allowed(send(guard, TOKEN, value))


@pytest.mark.parametrize(
    ("htm", "method", "target"),
    [
        pytest.param("POST", "GET", "/accounts", id="POST-on-GET"),
        pytest.param("get", "GET", "/accounts", id="lower-case"),
        pytest.param("GET", "POST", "/payments", id="GET-on-POST"),
        pytest.param("GET ", "GET", "/accounts", id="trailing-space"),
    ],
)
def test_ATK_33_DPOP_09_proof_for_another_method(guard: Guard, htm: str, method: str, target: str) -> None:
    url = ORIGIN + target
    decision = send(guard, TOKEN, proof(method=htm, url=url), method=method, target=target)
    assert_refused(guard, decision, "dpop.htm_mismatch")


def test_ATK_33_DPOP_14_proof_for_another_token(guard: Guard) -> None:
    other = bound_token()  # bound to the same key, but another token
    assert other != TOKEN
    assert_refused(guard, send(guard, TOKEN, proof(other)), "dpop.ath_mismatch")


@pytest.mark.parametrize(
    "ath",
    [
        pytest.param(access_token_hash(TOKEN) + "=", id="padded"),
        pytest.param(access_token_hash(TOKEN).upper(), id="upper-case"),
        pytest.param(access_token_hash(TOKEN)[:-1], id="truncated"),
        pytest.param("", id="empty"),
        pytest.param(base64.b64encode(unb64(access_token_hash(TOKEN))).decode(), id="standard-base64"),
    ],
)
def test_ATK_33_DPOP_14_ath_variants(guard: Guard, ath: str) -> None:
    assert ath != access_token_hash(TOKEN)
    forged = raw_proof(dpop_header(), dpop_claims(ath=ath))
    assert_refused(guard, send(guard, TOKEN, forged), "dpop.ath_mismatch")


@pytest.mark.parametrize(
    "ath", [pytest.param(None, id="missing"), pytest.param(1, id="number"), pytest.param(["x"], id="list")]
)
def test_ATK_33_DPOP_14_lacking_ath(guard: Guard, ath: Any) -> None:
    claims = dpop_claims(ath=ath)
    if ath is None:
        del claims["ath"]
    assert_refused(guard, send(guard, TOKEN, raw_proof(dpop_header(), claims)), "dpop.ath_missing")


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        pytest.param(-3600, "dpop.iat_too_old", id="minus-1h"),
        pytest.param(3600, "dpop.iat_in_future", id="plus-1h"),
        pytest.param(-61, "dpop.iat_too_old", id="minus-61s"),
        pytest.param(11, "dpop.iat_in_future", id="plus-11s"),
        pytest.param(-NOW, "dpop.iat_too_old", id="epoch"),
    ],
)
def test_ATK_33_DPOP_12_iat_outside_the_window(guard: Guard, offset: float, reason: str) -> None:
    assert_refused(guard, send(guard, TOKEN, proof(iat=NOW + offset)), reason)


@pytest.mark.parametrize("offset", [-60, -30, 0, 5, 10, 9.5])
def test_ATK_33_DPOP_12_iat_inside_the_window(guard: Guard, offset: float) -> None:
    assert_allowed(send(guard, TOKEN, proof(iat=NOW + offset)))


@pytest.mark.parametrize(
    "iat",
    [
        pytest.param("1767225600", id="string"),
        pytest.param(True, id="bool"),
        pytest.param(None, id="null"),
        pytest.param([int(NOW)], id="list"),
    ],
)
def test_DPOP_03_iat_not_a_number(guard: Guard, iat: Any) -> None:
    forged = raw_proof(dpop_header(), dpop_claims(iat=iat))
    assert_refused(guard, send(guard, TOKEN, forged), "dpop.iat_missing")


@pytest.mark.parametrize(
    ("iat", "reasons"),
    [
        pytest.param(10**400, {"dpop.iat_missing", "dpop.iat_in_future"}, id="huge-int"),
        pytest.param(-(10**400), {"dpop.iat_missing", "dpop.iat_too_old"}, id="huge-negative-int"),
        pytest.param(2**1024, {"dpop.iat_missing", "dpop.iat_in_future"}, id="2^1024"),
    ],
)
def test_DPOP_03_iat_beyond_float_range_is_a_401(guard: Guard, iat: int, reasons: set[str]) -> None:
    """A NumericDate that no float can hold is an invalid proof (E3), not an internal error."""
    decision = send(guard, TOKEN, raw_proof(dpop_header(), dpop_claims(iat=iat)))
    assert (decision.event.status, decision.event.reason in reasons) == (401, True), decision.event.reason
    assert_refused(guard, decision, str(decision.event.reason))


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        pytest.param("jti", None, "dpop.jti_missing", id="jti-missing"),
        pytest.param("jti", "", "dpop.jti_missing", id="jti-empty"),
        pytest.param("jti", 7, "dpop.jti_missing", id="jti-number"),
        pytest.param("jti", "j" * 257, "dpop.jti_too_long", id="jti-257"),
        pytest.param("jti", "j" * 5000, "dpop.jti_too_long", id="jti-5000"),
        pytest.param("htm", None, "dpop.htm_missing", id="htm-missing"),
        pytest.param("htm", ["GET"], "dpop.htm_missing", id="htm-list"),
        pytest.param("htu", None, "dpop.htu_missing", id="htu-missing"),
        pytest.param("htu", {"u": URL}, "dpop.htu_missing", id="htu-object"),
        pytest.param("iat", None, "dpop.iat_missing", id="iat-missing"),
    ],
)
def test_DPOP_03_required_claims(guard: Guard, name: str, value: Any, reason: str) -> None:
    claims = dpop_claims()
    if value is None:
        del claims[name]
    else:
        claims[name] = value
    assert_refused(guard, send(guard, TOKEN, raw_proof(dpop_header(), claims)), reason)


def test_ATK_33_DPOP_23_missing_nonce_then_retry(nonce_guard: Guard) -> None:
    guard = nonce_guard
    response = assert_refused(
        guard, send(guard, TOKEN, proof()), "dpop.nonce_missing", error="use_dpop_nonce"
    )
    nonce = dict(response.headers)["dpop-nonce"]
    assert_allowed(send(guard, TOKEN, proof(nonce=nonce)))


@pytest.mark.parametrize(
    "nonce",
    [
        pytest.param("eyJ7S_zG.eyJH0-Z.HX4w-7v", id="AS-nonce-RFC9449-example"),
        pytest.param(
            NonceIssuer(secrets.token_bytes(32), lifetime=300, rotate_after=120, clock=lambda: NOW).issue(),
            id="other-RS-nonce",
        ),
        pytest.param("", id="empty"),
    ],
)
def test_ATK_33_DPOP_25_foreign_nonce_at_the_rs(nonce_guard: Guard, nonce: str) -> None:
    guard = nonce_guard
    response = assert_refused(
        guard,
        send(guard, TOKEN, proof(claims={"nonce": nonce})),
        "dpop.nonce_invalid",
        error="use_dpop_nonce",
    )
    fresh = dict(response.headers)["dpop-nonce"]
    assert fresh != nonce
    assert_allowed(send(guard, TOKEN, proof(nonce=fresh)))


def test_ATK_33_DPOP_25_nonce_of_a_replica_with_another_key(nonce_guard: Guard) -> None:
    other = make_guard(nonce=True, secret=secrets.token_urlsafe(48))
    nonce = dict(
        assert_refused(
            other, send(other, TOKEN, proof()), "dpop.nonce_missing", error="use_dpop_nonce"
        ).headers
    )["dpop-nonce"]
    decision = send(nonce_guard, TOKEN, proof(nonce=nonce))
    assert_refused(nonce_guard, decision, "dpop.nonce_invalid", error="use_dpop_nonce")


@pytest.mark.parametrize("nonce", [pytest.param(1, id="number"), pytest.param(["n"], id="list")])
def test_ATK_33_DPOP_23_nonce_not_a_string(nonce_guard: Guard, nonce: Any) -> None:
    forged = raw_proof(dpop_header(), dpop_claims(nonce=nonce))
    assert_refused(
        nonce_guard, send(nonce_guard, TOKEN, forged), "dpop.nonce_invalid", error="use_dpop_nonce"
    )


# -- ATK-34: private key material in the proof jwk --------------------------------------------------


def _ec_private() -> dict[str, str]:
    return {"d": b64(CLIENT._key.private_numbers().private_value.to_bytes(32, "big"))}


def _rsa_private() -> dict[str, str]:
    numbers = RSA_CLIENT._key.private_numbers()

    def enc(n: int) -> str:
        return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))

    return {
        "d": enc(numbers.d),
        "p": enc(numbers.p),
        "q": enc(numbers.q),
        "dp": enc(numbers.dmp1),
        "dq": enc(numbers.dmq1),
        "qi": enc(numbers.iqmp),
    }


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi"])
def test_ATK_34_DPOP_06_rsa_jwk_with_private_members(guard: Guard, member: str) -> None:
    token = bound_token(RSA_CLIENT)
    jwk = {**RSA_CLIENT.public_jwk, member: _rsa_private()[member]}
    value = proof(token, key=RSA_CLIENT, header={"jwk": jwk})  # validly signed with that very key
    assert_refused(guard, send(guard, token, value), "dpop.jwk_private_material")


def test_ATK_34_DPOP_06_rsa_jwk_with_p_and_q_and_oth(guard: Guard) -> None:
    token = bound_token(RSA_CLIENT)
    for extra in (_rsa_private(), {"oth": [{"r": "AQAB", "d": "AQAB", "t": "AQAB"}]}):
        value = proof(token, key=RSA_CLIENT, header={"jwk": {**RSA_CLIENT.public_jwk, **extra}})
        assert_refused(guard, send(guard, token, value), "dpop.jwk_private_material")


def test_ATK_34_DPOP_06_ec_jwk_with_d(guard: Guard) -> None:
    value = proof(header={"jwk": {**CLIENT.public_jwk, **_ec_private()}})
    assert_refused(guard, send(guard, TOKEN, value), "dpop.jwk_private_material")
    assert_allowed(send(guard, TOKEN, proof()))  # the same key without d is fine


def test_ATK_34_DPOP_06_ec_jwk_with_d_after_the_clean_key_was_seen(guard: Guard) -> None:
    assert_allowed(send(guard, TOKEN, proof()))
    value = proof(header={"jwk": {**CLIENT.public_jwk, **_ec_private()}})
    assert_refused(guard, send(guard, TOKEN, value), "dpop.jwk_private_material")


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        pytest.param({"kty": "oct", "k": b64(b"s" * 32)}, "dpop.jwk_private_material", id="oct-with-k"),
        pytest.param({"kty": "oct"}, "dpop.jwk_kty_not_supported", id="oct-without-k"),
        pytest.param(
            {"kty": "oct", "k": b64(b"s" * 32), "alg": "HS256"}, "dpop.jwk_private_material", id="oct-HS256"
        ),
    ],
)
def test_ATK_34_DPOP_06_oct_jwk(guard: Guard, jwk: dict[str, str], reason: str) -> None:
    forged = raw_proof(dpop_header(jwk=jwk), dpop_claims())
    assert_refused(guard, send(guard, TOKEN, forged), reason)
    forged = sign_compact(dpop_header(jwk=jwk, alg="HS256"), dpop_claims(), b"s" * 32, "HS256")
    assert_refused(guard, send(guard, TOKEN, forged), "dpop.alg_not_allowed")


# -- property tests ---------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SAMPLE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_GUARD = make_guard()
ASYNC_GUARD = make_guard()
#: Never presented as is: a mutation that got through would be allowed, not masked as a replay.
FUZZ_PROOF = proof()

_huge = st.builds(
    lambda chunk, n: chunk * n,
    st.sampled_from(["A", ",", "é", ".", "=", " ", "\u2028", "a.b.c,", FUZZ_PROOF[:40]]),
    st.integers(min_value=1000, max_value=20_000),
)
_segmentish = st.lists(
    st.one_of(st.text(alphabet=B64URL, max_size=60), st.sampled_from(FUZZ_PROOF.split("."))),
    min_size=1,
    max_size=6,
).map(".".join)
HEADER_TEXT = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.text(alphabet=B64URL + ".=,; \t", max_size=300),
    _segmentish,
    _segmentish.map(lambda s: s + ", " + FUZZ_PROOF),
    st.just(FUZZ_PROOF + ", " + FUZZ_PROOF),
    _huge,
)


def _check_refused(decision: Decision, guard: Guard) -> None:
    assert not decision.allowed
    assert decision.event.status in (400, 401, 431), (decision.event.status, decision.event.reason)
    response = guard.problem(decision)
    assert response.status == decision.event.status
    assert dict(response.headers)["content-type"] == PROBLEM


@FUZZ
@given(value=HEADER_TEXT)
def test_DPOP_02_any_header_text_is_refused_cleanly(value: str) -> None:
    assume(value != FUZZ_PROOF)
    _check_refused(send(FUZZ_GUARD, TOKEN, value), FUZZ_GUARD)


@st.composite
def mutated_proofs(draw: st.DrawFn, original: str = FUZZ_PROOF) -> str:
    parts = original.split(".")
    index = draw(st.integers(0, 2))
    segment = parts[index]
    kind = draw(st.sampled_from(["flip", "replace", "insert", "delete", "swap"]))
    pos = draw(st.integers(0, max(0, len(segment) - (0 if kind == "insert" else 1))))
    char = draw(st.one_of(st.sampled_from(B64URL), st.sampled_from("=.!+/ \n\t,"), st.characters()))
    if kind == "flip" and segment:
        bit = draw(st.integers(0, 7))
        segment = segment[:pos] + chr(ord(segment[pos]) ^ (1 << bit)) + segment[pos + 1 :]
    elif kind == "replace" and segment:
        segment = segment[:pos] + char + segment[pos + 1 :]
    elif kind == "insert":
        segment = segment[:pos] + char + segment[pos:]
    elif kind == "delete" and segment:
        segment = segment[:pos] + segment[pos + 1 :]
    elif kind == "swap" and len(segment) > 1:
        other = draw(st.integers(0, len(segment) - 1))
        chars = list(segment)
        chars[pos], chars[other] = chars[other], chars[pos]
        segment = "".join(chars)
    parts[index] = segment
    return ".".join(parts)


@FUZZ
@given(mutated=mutated_proofs())
def test_ATK_17_mutated_proof_is_never_allowed(mutated: str) -> None:
    assume(mutated != FUZZ_PROOF)
    _check_refused(send(FUZZ_GUARD, TOKEN, mutated), FUZZ_GUARD)


_ABSENT = object()
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats()
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


def _claim(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, so that most examples reach the later checks."""
    return st.one_of(valid, st.one_of(valid, st.one_of(st.just(_ABSENT), _JSON)))


CLAIMS = st.fixed_dictionaries(
    {
        "jti": _claim(st.text(min_size=1, max_size=300)),
        "htm": _claim(st.sampled_from(["GET", "get", "POST", "GET "])),
        "htu": _claim(
            st.sampled_from([URL, URL + "/", ORIGIN.upper() + "/accounts", "https://a/accounts"]) | st.text()
        ),
        "iat": _claim(
            st.sampled_from([NOW, int(NOW), NOW - 59.5, NOW + 9.9, NOW + 11, NOW - 61])
            | st.floats(min_value=NOW - 120, max_value=NOW + 120)
            | st.integers(min_value=-(2**70), max_value=2**70)
        ),
        "ath": _claim(st.sampled_from([access_token_hash(TOKEN), access_token_hash(TOKEN)[:-1]]) | st.text()),
        "nonce": _claim(st.sampled_from(["valid", "eyJ7S_zG.eyJH0-Z.HX4w-7v"]) | st.text(alphabet=B64URL)),
    }
)
CLAIM_GUARD = make_guard(nonce=True)
#: The parity test's own pair: both see exactly the same requests, so replays match too.
CLAIM_SYNC_GUARD = make_guard(nonce=True)
CLAIM_ASYNC_GUARD = make_guard(nonce=True)
_NONCES = CLAIM_GUARD.tokens.dpop.nonces if CLAIM_GUARD.tokens and CLAIM_GUARD.tokens.dpop else None


def _claims_proof(claims: dict[str, Any]) -> str:
    body = {k: v for k, v in claims.items() if v is not _ABSENT}
    if body.get("nonce") == "valid" and _NONCES is not None:
        body["nonce"] = _NONCES.issue()
    return raw_proof(dpop_header(), json.dumps(body).encode("utf-8"))


def _check_no_fault(decision: Decision, guard: Guard) -> None:
    event(decision.event.reason or "allowed")
    assert decision.event.status is None or decision.event.status < 500, (
        decision.event.status,
        decision.event.reason,
    )
    if not decision.allowed:
        _check_refused(decision, guard)


@FUZZ
@given(claims=CLAIMS)
@example(claims={"jti": "j-1", "htm": "GET", "htu": URL, "iat": 10**400, "ath": _ABSENT, "nonce": _ABSENT})
def test_DPOP_03_arbitrary_claim_values_never_fault(claims: dict[str, Any]) -> None:
    _check_no_fault(send(CLAIM_GUARD, TOKEN, _claims_proof(claims)), CLAIM_GUARD)


def _both(value: str, sync_guard: Guard, async_guard: Guard) -> tuple[Decision, Decision]:
    sync = send(sync_guard, TOKEN, value)
    asynchronous = asyncio.run(async_guard.adecide(facts(TOKEN, value)))
    return sync, asynchronous


@FUZZ_SAMPLE
@given(value=st.one_of(HEADER_TEXT, mutated_proofs()))
def test_DPOP_02_adecide_refuses_like_decide(value: str) -> None:
    assume(value != FUZZ_PROOF)
    sync, asynchronous = _both(value, FUZZ_GUARD, ASYNC_GUARD)
    _check_refused(asynchronous, ASYNC_GUARD)
    assert (asynchronous.event.status, asynchronous.event.reason) == (sync.event.status, sync.event.reason)


@FUZZ_SAMPLE
@given(claims=CLAIMS)
def test_DPOP_03_adecide_arbitrary_claims_never_fault(claims: dict[str, Any]) -> None:
    value = _claims_proof(claims)
    sync, asynchronous = _both(value, CLAIM_SYNC_GUARD, CLAIM_ASYNC_GUARD)
    _check_no_fault(asynchronous, CLAIM_ASYNC_GUARD)
    assert (asynchronous.allowed, asynchronous.event.status, asynchronous.event.reason) == (
        sync.allowed,
        sync.event.status,
        sync.event.reason,
    )
