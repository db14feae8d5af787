"""Fuzzing the DPoP proof's JOSE header and its ``jwk`` member (JWK parsing, RFC 7517/7518/8037).

Properties (STANDARDS DPOP-02..DPOP-08, DPOP-15, DPOP-28, JWKS-03, ATK-34; docs/errors.md
``invalid-dpop-proof``):

* the JWK functions (:func:`public_key_from_jwk`, :func:`verification_key`, :func:`thumbprint`)
  return or raise ``JoseError`` for any mapping, never another exception;
* a proof is accepted exactly when its header is ``typ`` dpop+jwt, an allowed ``alg``, none of the
  refused members, and a public ``jwk`` of the signing key, whatever unknown members it adds, with
  ``use``/``key_ops``/``kid``/``alg`` consistent; any other ``jwk`` (every ``kty``/``crv``, missing or
  private members, wrong lengths, off-curve points, odd RSA exponents) is a ``dpop.*`` 401;
* the verdict on a proof does not depend on what the verifier has seen before (its key, header,
  ``htu`` and path memos): a fresh verifier and one warmed by earlier proofs agree.
"""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from bankguard.testing import DPoPKey, make_facts
from bankguard.tokens.dpop import DPoPVerifier, ProofError
from bankguard.tokens.jose import JoseError
from bankguard.tokens.jwk import public_key_from_jwk, thumbprint, verification_key
from bankguard.tokens.runtime import build_dpop

from .conftest import (
    B64URL,
    ISSUER,
    ORIGIN,
    attempt,
    b64url,
    decide,
    fuzz,
    json_values,
    new_guard,
    token_policy,
)

KEYS = {"ES256": DPoPKey("ES256"), "EdDSA": DPoPKey("EdDSA"), "PS256": DPoPKey("PS256")}
POLICY = token_policy()
GUARD, EVENTS = new_guard(POLICY)
URL = ORIGIN + "/accounts"
PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
REFUSED_HEADER = ("jku", "x5u", "x5c", "crit", "b64", "zip", "enc")

odd = st.one_of(st.sampled_from([None, True, 0, 1.5, "", [], {}, ["verify"], {"a": 1}]), json_values)
b64_values = st.one_of(
    st.binary(max_size=70).map(b64url),
    st.text(st.sampled_from(B64URL + "=+/ "), max_size=24),
    odd,
)
random_jwks = st.fixed_dictionaries(
    {},
    optional={
        "kty": st.one_of(st.sampled_from(["EC", "RSA", "OKP", "oct", "ec", "rsa", ""]), odd),
        "crv": st.one_of(
            st.sampled_from(["P-256", "P-384", "P-521", "Ed25519", "Ed448", "X25519", "p-256"]), odd
        ),
        "x": b64_values,
        "y": b64_values,
        "n": b64_values,
        "e": st.one_of(st.sampled_from(["AQAB", "Aw", "Ag", "AQ", "AA", "AQAAAAAB"]), b64_values),
        "d": b64_values,
        "k": b64_values,
        "alg": st.one_of(st.sampled_from(["ES256", "PS256", "EdDSA", "RS256", "none"]), odd),
        "use": st.one_of(st.sampled_from(["sig", "enc"]), odd),
        "key_ops": st.one_of(st.sampled_from([["verify"], ["sign"], "verify", []]), odd),
        "kid": odd,
    },
)


def _is_b64(text: str) -> bool:
    return all(c in B64URL for c in text)


@fuzz(300)
@given(jwk=random_jwks | st.dictionaries(st.text(max_size=4), json_values, max_size=4))
def test_DPOP_06_07_jwk_functions_never_raise_anything_else(jwk: dict[str, Any]) -> None:
    for fn in (
        public_key_from_jwk,
        thumbprint,
        lambda j: verification_key(j, frozenset({"ES256", "PS256", "EdDSA"})),
    ):
        _, reason = attempt(fn, jwk, error=JoseError)
        if reason is not None:
            assert reason.startswith("jwk_") or reason in ("rsa_key_size", "key_alg_mismatch"), reason


# -- proofs with a fuzzed header ------------------------------------------------------------------


def _leading_zero(value: str) -> str:
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return b64url(b"\x00" + raw)


@st.composite
def jwk_mutations(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """The signing key's JWK with members added, replaced or removed."""
    jwk = dict(base)
    for op in draw(
        st.lists(st.sampled_from(["add", "private", "replace", "remove", "flip", "zero"]), max_size=3)
    ):
        member = draw(st.sampled_from(sorted(jwk) or ["kty"]))
        if op == "add":
            name = draw(st.sampled_from(["alg", "use", "key_ops", "kid", "ext", "x5t", "foo"]))
            jwk[name] = draw(
                st.one_of(
                    st.sampled_from(
                        ["ES256", "PS256", "EdDSA", "sig", "enc", ["verify"], ["sign", "verify"]]
                    ),
                    odd,
                )
            )
        elif op == "private":
            jwk[draw(st.sampled_from(PRIVATE))] = draw(b64_values)
        elif op == "replace":
            jwk[member] = draw(st.one_of(b64_values, st.sampled_from(["EC", "RSA", "OKP", "P-384", "Ed448"])))
        elif op == "remove":
            jwk.pop(member, None)
        elif op == "flip" and isinstance(jwk.get(member), str) and jwk[member] and _is_b64(jwk[member]):
            value = jwk[member]
            i = draw(st.integers(0, len(value) - 1))
            jwk[member] = value[:i] + B64URL[(B64URL.index(value[i]) + 1) % 64] + value[i + 1 :]
        elif op == "zero" and member in ("x", "y", "n", "e") and isinstance(jwk.get(member), str):
            jwk[member] = _leading_zero(jwk[member])
    return jwk


def header_ok(header: dict[str, Any], alg: str, base: dict[str, Any]) -> bool:
    """RFC 9449 §4.3 items 4-7 and docs/dpop.md, written from the docs."""
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ("dpop+jwt", "application/dpop+jwt"):
        return False
    if header.get("alg") != alg or any(name in header for name in REFUSED_HEADER):
        return False
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or any(name in jwk for name in PRIVATE):
        return False
    if any(jwk.get(m) != base.get(m) for m in ("kty", "crv", "x", "y", "n", "e")):
        return False
    if "alg" in jwk and jwk["alg"] != alg:
        return False
    if jwk.get("use") not in (None, "sig"):
        return False
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return False
    return jwk.get("kid") is None or isinstance(jwk["kid"], str)


@st.composite
def proof_headers(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    alg = draw(st.sampled_from(sorted(KEYS)))
    base = KEYS[alg].public_jwk
    header: dict[str, Any] = {"typ": "dpop+jwt", "alg": alg}
    mutated = jwk_mutations(base)
    header["jwk"] = draw(st.one_of(mutated, mutated, mutated, random_jwks, odd))
    for name in draw(st.sets(st.sampled_from(["typ", "alg", "jwk", "extra", "kid"]), max_size=1)):
        if name == "typ":
            header["typ"] = draw(
                st.one_of(
                    st.sampled_from(["DPoP+JWT", "application/dpop+jwt", "at+jwt", "JWT", "dpop+jwt ", ""]),
                    odd,
                )
            )
        elif name == "alg":
            header["alg"] = draw(
                st.one_of(st.sampled_from(["es256", "none", "HS256", "RS256", "ES384"]), odd)
            )
        elif name == "jwk":
            header["jwk"] = None  # DPoPKey.proof drops members set to None
        elif name == "kid":
            header["kid"] = draw(odd)
        else:
            header[draw(st.sampled_from([*REFUSED_HEADER, "foo"]))] = draw(odd)
    return alg, header


def sent_header(header: dict[str, Any], alg: str, key: DPoPKey) -> dict[str, Any]:
    """The header :meth:`DPoPKey.proof` signs: its defaults, updated, without None members."""
    merged = {"typ": "dpop+jwt", "alg": alg, "jwk": dict(key.public_jwk), **header}
    return {k: v for k, v in merged.items() if v is not None}


@fuzz(300)
@given(parts=proof_headers())
def test_DPOP_04_08_proof_headers_and_jwk(parts: tuple[str, dict[str, Any]]) -> None:
    alg, header = parts
    key = KEYS[alg]
    token = ISSUER.mint(dpop_key=key)
    proof = key.proof("GET", URL, access_token=token, header=header)
    headers = [("authorization", "DPoP " + token), ("dpop", proof)]
    verdict = decide(GUARD, EVENTS, make_facts("GET", "/accounts", headers=headers), secrets=[token, proof])
    expected = header_ok(sent_header(header, alg, key), alg, key.public_jwk)
    event(f"{alg} {'accept' if expected else verdict.reason}")
    if expected:
        assert verdict.allowed, (header, verdict)
    else:
        assert not verdict.allowed
        # A JWK naming the same public key with non-canonical members is another thumbprint.
        assert verdict.status == 401, verdict
        assert (verdict.reason or "").startswith("dpop.") or verdict.reason == "token.dpop_key_mismatch", (
            verdict
        )


# -- the verifier's memos ------------------------------------------------------------------------


def _outcome(verifier: DPoPVerifier, proof: str, token: str, path: str) -> str:
    try:
        verifier.verify(proof, method="GET", raw_path=path.encode(), path=path, access_token=token)
    except ProofError as exc:
        return exc.reason
    return "ok"


WARM = build_dpop(POLICY)


@fuzz(200)
@given(
    parts=proof_headers(),
    claims=st.dictionaries(
        st.sampled_from(["htu", "htm", "iat", "jti", "ath", "nonce"]), json_values, max_size=2
    ),
    path=st.sampled_from(["/accounts", "/accounts/", "/accounts/%41", "/Accounts", "/accounts/../accounts"]),
)
def test_DPOP_proof_verdicts_do_not_depend_on_earlier_proofs(
    parts: tuple[str, dict[str, Any]], claims: dict[str, Any], path: str
) -> None:
    alg, header = parts
    key = KEYS[alg]
    token = ISSUER.mint(dpop_key=key)
    proof = key.proof("GET", URL, access_token=token, header=header, claims=claims)
    fresh = build_dpop(POLICY)
    first = _outcome(fresh, proof, token, path)
    assert _outcome(fresh, proof, token, path) == first  # memos filled by the first call
    assert _outcome(WARM, proof, token, path) == first  # a verifier that saw many other proofs
    # The same header with a payload made for another token, then for this one again.
    other = key.proof("GET", URL, access_token=token + "x", header=header, claims=claims)
    _outcome(WARM, other, token, path)
    assert _outcome(WARM, proof, token, path) == first
