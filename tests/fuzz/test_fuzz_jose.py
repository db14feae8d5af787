"""Fuzzing compact JWS / JWT parsing and verification, at unit level and through a Guard.

Properties (STANDARDS JWT-01..JWT-03, JWT-05..JWT-14, JWT-18, JWT-20..JWT-28, ATK-17, ATK-22,
ATK-29; docs/errors.md ``invalid-token``):

* base64url decoding is strict and canonical: a segment decodes only when it is the one encoding
  of its bytes (``b64url_encode(b64url_decode(s)) == s``);
* ``json_object`` accepts exactly the UTF-8 JSON objects without duplicate members, non-finite
  numbers, lone surrogates, nesting deeper than 8 or containers wider than 256 (compared with an
  independent reading of the same text by ``json``);
* ``parse_compact`` and ``JwtVerifier`` either return or raise their own error with a documented
  reason, whatever the text; a token the verifier accepts satisfies every rule an independent
  oracle checks (RFC 9068 §4, RFC 7519 §4.1, RFC 8725), and a correctly signed token that
  satisfies them is accepted;
* the same tokens through :meth:`Guard.decide` end in an allow exactly when the oracle says so
  (plus the scope and binding rules of the token control), else in a documented 401/403.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import event, example, given
from hypothesis import strategies as st

from bankguard import Guard, Policy
from bankguard.testing import make_facts
from bankguard.tokens.jose import JoseError, b64url_decode, b64url_encode, json_object, parse_compact
from bankguard.tokens.jwt import JwtVerifier, TokenError, VerifiedToken
from bankguard.tokens.runtime import build_verifier

from .conftest import (
    AUDIENCE,
    B64URL,
    ISS,
    EventCollector,
    attempt,
    b64url,
    check_decision,
    documented_statuses,
    fuzz,
    json_values,
    nested,
)

NOW = float(int(time.time()))
LEEWAY = 30
MAX_FUTURE_IAT = 10
LATEST = 253402300800
REFUSED_HEADER = ("crit", "b64", "cty", "jku", "x5u", "jwk", "x5c", "enc", "zip")
REQUIRED = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")
SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*\Z")


class Signer:
    """An ES256 issuer key that signs any header and payload bytes (not only JSON objects)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        self.jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
            "kid": "k1",
            "alg": "ES256",
            "use": "sig",
        }

    def sign(self, header: bytes, payload: bytes) -> str:
        signing_input = f"{b64url(header)}.{b64url(payload)}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


SIGNER = Signer()


def jose_policy(**tokens: Any) -> Policy:
    return Policy.from_dict(
        {
            "tokens": {
                "issuers": [
                    {
                        "issuer": ISS,
                        "audiences": [AUDIENCE],
                        "algorithms": ["ES256"],
                        "jwks": {"keys": [SIGNER.jwk]},
                    }
                ],
                **tokens,
            },
            "routes": {
                "operations": [
                    {"method": "GET", "path": "/accounts", "id": "listAccounts", "scopes": ["accounts"]},
                ]
            },
        }
    )


POLICY = jose_policy()
VERIFIER = build_verifier(POLICY.tokens, lambda: NOW)
assert isinstance(VERIFIER, JwtVerifier)
EVENTS = EventCollector()
GUARD = Guard(POLICY, sink=EVENTS, clock=lambda: NOW)

# -- base64url -------------------------------------------------------------------------------------


@fuzz(300)
@given(segment=st.text(st.sampled_from(B64URL + "=+/ \n.!~é"), max_size=24) | st.text(max_size=12))
@example(segment="QQ")  # canonical "A"
@example(segment="QR")  # same bits, non-zero unused bits: a second spelling
@example(segment="QQ==")
@example(segment="Q")
def test_JWT_01_base64url_decoding_is_strict_and_canonical(segment: str) -> None:
    data, reason = attempt(b64url_decode, segment, "seg", error=JoseError)
    if reason is not None:
        assert reason in ("seg_not_base64url", "seg_not_canonical")
        return
    assert b64url_encode(data) == segment  # the only spelling of these bytes (ATK-17)


@fuzz(100)
@given(data=st.binary(max_size=64))
def test_JWT_01_base64url_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data


# -- JSON ------------------------------------------------------------------------------------------


def _depth_ok(value: Any, depth: int = 0) -> bool:
    """JWT-09 as documented: containers nested at most 8 below the top one, at most 256 members."""
    if not isinstance(value, (dict, list)):
        return True
    if depth > 8 or len(value) > 256:
        return False
    children = value.values() if isinstance(value, dict) else value
    return all(_depth_ok(c, depth + 1) for c in children)


def _reference(data: bytes) -> tuple[str, Any]:
    """An independent reading: ``("ok", value)`` or ``(why, None)``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8", None
    duplicates: list[bool] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            duplicates.append(True)
        return dict(items)

    try:
        value = json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return "not_json", None
    if not isinstance(value, dict):
        return "not_object", None
    if duplicates:
        return "json_duplicate_member", None
    if not _finite(value):  # json reads NaN, Infinity and 1e309 as floats
        return "json_non_finite_number", None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "json_lone_surrogate", None
    if not _depth_ok(value):
        return "json_too_deep", None
    return "ok", value


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


json_texts = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.text(max_size=6), json_values, max_size=6).map(
        lambda d: json.dumps(d, ensure_ascii=False).encode()
    ),
    st.binary(max_size=40),
    st.sampled_from(
        [
            b'{"a":1,"a":2}',
            b'{"a":1,"\\u0061":2}',
            b'{"exp":NaN}',
            b'{"exp":Infinity}',
            b'{"exp":-Infinity}',
            b'{"exp":1e309}',
            b'{"a":"\\ud800"}',
            b'{"\\udfff":1}',
            b'\xef\xbb\xbf{"a":1}',
            b'{"a":1} x',
            b' {"a":1} ',
            b'{"a":1}\n',
            b"[]",
            b'"x"',
            '{"a":1}'.encode("utf-16"),
            b"{" * 5000,
            b'{"a":' + b"9" * 5000 + b"}",
        ]
    ),
    st.integers(0, 14).map(lambda d: json.dumps({"x": nested(d)}).encode()),
    st.integers(250, 260).map(lambda n: json.dumps({str(i): i for i in range(n)}).encode()),
    st.integers(250, 260).map(lambda n: json.dumps({"a": list(range(n))}).encode()),
)


@fuzz(300)
@given(data=json_texts)
def test_JWT_02_JWT_03_json_objects_are_strict(data: bytes) -> None:
    why, value = _reference(data)
    parsed, reason = attempt(json_object, data, "claims", error=JoseError)
    if reason is not None:
        assert why != "ok", (data[:80], reason)
        assert reason.startswith(("claims_", "json_")), reason
        if why in ("json_duplicate_member", "json_lone_surrogate", "not_utf8", "not_object"):
            assert reason.endswith(why), (why, reason)
        return
    assert why == "ok", (data[:80], why)
    assert parsed == value


# -- compact serialisation ------------------------------------------------------------------------

PARSE_REASONS = re.compile(
    r"(token_too_large|jwe_not_accepted|not_compact_jws|not_base64url|signature_missing"
    r"|(header|payload|signature)_not_(base64url|canonical)|header_not_(utf8|json|object)|json_[a-z_]+)\Z"
)


segment_texts = st.one_of(
    st.text(st.sampled_from(B64URL), max_size=16),
    st.just(b64url(b'{"alg":"ES256"}')),
    st.text(st.sampled_from(B64URL + "=+/ ~!\n\x00é"), max_size=8),
)


@fuzz(300)
@given(token=st.lists(segment_texts, min_size=1, max_size=6).map(".".join))
@example(token="e30.e30.AA.AA.AA")
@example(token=".e30.AA")
def test_JWT_01_JWT_04_parse_compact_accepts_three_canonical_segments(token: str) -> None:
    jws, reason = attempt(parse_compact, token, 8192, error=JoseError)
    if reason is not None:
        assert PARSE_REASONS.match(reason), reason
        return
    h, p, s = token.split(".")
    assert jws.header == json.loads(b64url_decode(h))
    assert b64url_encode(jws.payload) == p
    assert b64url_encode(jws.signature) == s
    assert jws.signing_input == f"{h}.{p}".encode()
    assert jws.signature


# -- JWT headers and claims ---------------------------------------------------------------------------

odd = st.one_of(json_values, st.sampled_from([None, True, 1, 1.5, "", [], {}, ["x"], {"a": 1}]))
algs = st.one_of(
    st.sampled_from(
        ["ES256", "ES256", "es256", "none", "None", "NONE", "HS256", "RS256", "PS256", "ES384", ""]
    ),
    odd,
)
typs = st.one_of(
    st.sampled_from(
        ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT", "JWT", "dpop+jwt", "at+jwt ", ""]
    ),
    odd,
)
kids = st.one_of(
    st.sampled_from(["k1", "k1", "k2", "", "K1", "k" * 257, "../../etc/passwd", "' OR 1=1--"]), odd
)
times = st.one_of(
    st.sampled_from(
        [NOW - 3600, NOW - 31, NOW - 29, NOW, NOW + 5, NOW + 11, NOW + 3600, 0, -1, LATEST - 1, LATEST]
    ),
    st.sampled_from(["1700000000", True, False, 1e300, 2**70, None, [], NOW + 0.5]),
    st.floats(allow_nan=False, allow_infinity=False),
    odd,
)
audiences = st.one_of(
    st.sampled_from([AUDIENCE, [AUDIENCE], [AUDIENCE, "x"], ["x", AUDIENCE], [], ["x"], [1], [AUDIENCE, 1]]),
    odd,
)
strings = st.one_of(st.sampled_from(["psu-1", "tpp-client-1", "", "x" * 300]), odd)
scopes = st.one_of(
    st.sampled_from(["accounts", "accounts payments", " accounts", "accounts ", "a  accounts", "accounts,x"]),
    st.sampled_from(['accounts "x"', "accounts\\", "accounts é", ["accounts"], None]),
    odd,
)
cnfs = st.one_of(st.sampled_from([{}, {"jkt": "abc"}, {"x5t#S256": "abc"}, {"jwk": {}}, "x", []]), odd)
ABSENT = object()


HEADER: dict[str, Any] = {"alg": "ES256", "typ": "at+jwt", "kid": "k1"}
CLAIMS: dict[str, Any] = {
    "iss": ISS,
    "sub": "psu-1",
    "aud": AUDIENCE,
    "client_id": "tpp-client-1",
    "iat": NOW - 10,
    "exp": NOW + 300,
    "jti": "id-1",
    "scope": "accounts",
}


@st.composite
def jwt_parts(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A header and claims: the valid ones with a few members replaced, removed or added."""
    header = dict(HEADER)
    claims = dict(CLAIMS)
    header_changes = {"alg": algs, "typ": typs, "kid": kids}
    claim_changes = {
        "iss": st.one_of(st.sampled_from([ISS + "/", ISS.upper(), "https://evil.example"]), odd),
        "aud": audiences,
        "exp": times,
        "nbf": times,
        "iat": times,
        "auth_time": times,
        "sub": strings,
        "client_id": strings,
        "jti": strings,
        "scope": scopes,
        "cnf": cnfs,
    }
    target = draw(st.sampled_from(["header", "claims", "claims", "claims", "both"]))
    if target in ("header", "both"):
        for name in draw(st.sets(st.sampled_from(sorted(header_changes)), max_size=2)):
            value = draw(st.one_of(header_changes[name], st.just(ABSENT)))
            header.pop(name, None) if value is ABSENT else header.__setitem__(name, value)
        for name in draw(st.sets(st.sampled_from([*REFUSED_HEADER, "foo", "x-custom"]), max_size=1)):
            header[name] = draw(odd)
    if target == "header":
        return header, claims
    for name in draw(st.sets(st.sampled_from(sorted(claim_changes)), min_size=1, max_size=3)):
        value = draw(st.one_of(claim_changes[name], st.just(ABSENT)))
        claims.pop(name, None) if value is ABSENT else claims.__setitem__(name, value)
    for name, value in draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)).items():
        claims.setdefault(name, value)
    return header, claims


def _time_ok(claims: dict[str, Any], name: str) -> bool:
    if name not in claims:
        return True
    v = claims[name]
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v < LATEST


def oracle(header: dict[str, Any], claims: dict[str, Any]) -> bool:
    """RFC 9068 §4 / RFC 7519 §4.1 / RFC 8725 acceptance, written from the docs (signature valid)."""
    if any(name in header for name in REFUSED_HEADER):
        return False
    if header.get("alg") != "ES256" or not isinstance(header.get("alg"), str):
        return False
    if "kid" in header and header["kid"] != "k1":  # a present kid is a string (JWT-14), null included
        return False
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != "at+jwt":
        return False
    if not (_depth_ok(header) and _depth_ok(claims)):
        return False
    if any(claims.get(name) is None for name in REQUIRED) or claims["iss"] != ISS:
        return False
    if not all(_time_ok(claims, n) for n in ("exp", "nbf", "iat", "auth_time")):
        return False
    if claims["exp"] + LEEWAY <= NOW or claims["iat"] > NOW + MAX_FUTURE_IAT:
        return False
    if "nbf" in claims and claims["nbf"] > NOW + LEEWAY:
        return False
    aud = claims["aud"]
    audience_list = [aud] if isinstance(aud, str) else aud
    if not isinstance(audience_list, list) or not audience_list:
        return False
    if not all(isinstance(a, str) for a in audience_list) or AUDIENCE not in audience_list:
        return False
    for name in ("sub", "client_id", "jti"):
        if not isinstance(claims[name], str) or not claims[name]:
            return False
    # A present scope is a string of scope-tokens (JWT-28; docs/errors.md ``token.claim_type``); unlike
    # ``cnf`` and ``sub``, the docs make no exception for null.
    if "scope" in claims and (not isinstance(claims["scope"], str) or not SCOPE.match(claims["scope"])):
        return False
    cnf = claims.get("cnf")
    return cnf is None or isinstance(cnf, dict)


signatures = st.one_of(
    st.just("valid"),
    st.just("valid"),
    st.binary(min_size=0, max_size=140),
    st.sampled_from([b"\x00" * 64, b"\xff" * 64, b"\x00" * 32 + b"\x01" * 32]),
    st.sampled_from(["truncated", "extended", "der"]),
)


def _token(header: dict[str, Any], claims: dict[str, Any], signature: Any) -> str:
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    payload = json.dumps(claims, separators=(",", ":")).encode()
    token = SIGNER.sign(header_bytes, payload)
    if signature == "valid":
        return token
    h, p, s = token.split(".")
    raw = base64.urlsafe_b64decode(s + "==")
    if signature == "truncated":
        raw = raw[:63]
    elif signature == "extended":
        raw = raw + b"\x00"
    elif signature == "der":
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        raw = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    else:
        raw = signature
    return f"{h}.{p}.{b64url(raw)}"


def _verify(token: str) -> VerifiedToken:
    parsed = VERIFIER.parse(token)
    index = parsed.rules.keys.current()
    assert index is not None
    return VERIFIER.verify(parsed, index)


@fuzz(300)
@given(parts=jwt_parts(), signature=signatures)
@example(parts=(HEADER, CLAIMS), signature="valid")
@example(parts=({**HEADER, "kid": None}, CLAIMS), signature="valid")  # fails: null kid accepted
def test_JWT_verifier_accepts_exactly_what_the_rules_allow(
    parts: tuple[dict[str, Any], dict[str, Any]], signature: Any
) -> None:
    header, claims = parts
    token = _token(header, claims, signature)
    expected = signature == "valid" and oracle(header, claims)
    event(f"expected {'accept' if expected else 'refusal'}")
    verified, reason = attempt(_verify, token, error=TokenError)
    if reason is not None:
        assert not expected, (header, claims, reason)
        assert documented_statuses("token." + reason) == {401}, reason
        return
    assert expected, (header, claims, signature)
    assert isinstance(verified, VerifiedToken)
    assert verified.issuer == ISS
    assert verified.client_id == claims["client_id"]


@fuzz(250)
@given(parts=jwt_parts(), signature=signatures, scheme=st.sampled_from(["Bearer", "bearer"]))
@example(parts=(HEADER, CLAIMS), signature="valid", scheme="Bearer")
@example(parts=(HEADER, {**CLAIMS, "scope": None}), signature="valid", scheme="Bearer")  # fails: null scope
def test_JWT_tokens_through_the_guard(
    parts: tuple[dict[str, Any], dict[str, Any]], signature: Any, scheme: str
) -> None:
    header, claims = parts
    token = _token(header, claims, signature)
    before = len(EVENTS.events)
    decision = GUARD.decide(make_facts("GET", "/accounts", headers=[("authorization", f"{scheme} {token}")]))
    verdict = check_decision(GUARD, EVENTS, before, decision, secrets=[token])
    event(str(verdict.reason))
    valid = signature == "valid" and oracle(header, claims)
    cnf = claims.get("cnf") if isinstance(claims.get("cnf"), dict) else {}
    scope = claims.get("scope")
    granted = set(scope.split(" ")) if isinstance(scope, str) else set()
    if not valid:
        assert verdict.status == 401, verdict
        assert (verdict.reason or "").startswith("token."), verdict
    elif "jkt" in cnf:
        assert verdict.reason == "token.dpop_bound_presented_as_bearer"
    elif "x5t#S256" in cnf:
        assert verdict.reason == "token.certificate_missing"
    elif "accounts" not in granted:
        assert (verdict.status, verdict.reason) == (403, "scope.insufficient")
    else:
        assert verdict.allowed, verdict
        assert EVENTS.events[-1].client_id == claims["client_id"]


@fuzz(100)
@given(
    header=st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [
                b'{"alg":"ES256","alg":"none","typ":"at+jwt"}',
                b'{"alg":"ES256","typ":"at+jwt","\\u0061lg":"ES256"}',
                b'{"alg":"ES256","typ":"at+jwt","kid":"k1"} ',
                b'\xef\xbb\xbf{"alg":"ES256","typ":"at+jwt"}',
                '{"alg":"ES256","typ":"at+jwt"}'.encode("utf-16-le"),
                b'{"alg":"ES256","typ":"at+jwt","x":NaN}',
                b'{"alg":"ES256","typ":"at+jwt","x":"\\udc00"}',
            ]
        ),
    ),
    payload=json_texts,
)
def test_JWT_02_raw_header_and_payload_bytes(header: bytes, payload: bytes) -> None:
    token = SIGNER.sign(header, payload)
    before = len(EVENTS.events)
    decision = GUARD.decide(make_facts("GET", "/accounts", headers=[("authorization", f"Bearer {token}")]))
    verdict = check_decision(GUARD, EVENTS, before, decision, secrets=[token])
    header_ok = _reference(header)[0] == "ok"
    payload_ok = _reference(payload)[0] == "ok"
    if not (header_ok and payload_ok):
        assert verdict.status == 401, verdict
        assert (verdict.reason or "").startswith("token."), verdict
    if verdict.allowed:
        claims = json.loads(payload)
        assert oracle(json.loads(header), claims)


@fuzz(60)
@given(size=st.integers(8000, 70000), depth=st.integers(0, 2500))
def test_JWT_09_huge_and_deep_tokens_are_refused_cheaply(size: int, depth: int) -> None:
    deep = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    tokens = [
        "e" * size,
        SIGNER.sign(b'{"alg":"ES256","typ":"at+jwt"}', deep),
        SIGNER.sign(b'{"alg":"ES256","typ":"at+jwt"}', json.dumps({"a": "x" * (size // 2)}).encode()),
    ]
    for token in tokens:
        before = len(EVENTS.events)
        facts = make_facts("GET", "/accounts", headers=[("authorization", f"Bearer {token}")])
        verdict = check_decision(GUARD, EVENTS, before, GUARD.decide(facts), secrets=[token])
        assert not verdict.allowed
        assert verdict.status in (401, 431), verdict


# -- the verified-token cache ----------------------------------------------------------------------


@fuzz(60)
@given(
    offsets=st.lists(
        st.tuples(st.integers(-400, 400), st.integers(-400, 400), st.integers(-400, 400)),
        min_size=1,
        max_size=4,
    ),
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200)), min_size=1, max_size=10),
)
def test_JWT_24_25_26_the_token_cache_changes_no_decision(
    offsets: list[tuple[int, int, int]], steps: list[tuple[int, int]]
) -> None:
    """A token remembered after its first verification is judged at every later time exactly as a
    guard without the cache judges it (``exp``, ``nbf``, ``iat`` against the moving clock)."""
    clock = [NOW]
    events = EventCollector()
    cached = Guard(jose_policy(), sink=events, clock=lambda: clock[0])
    uncached = Guard(jose_policy(cache_entries=0), sink=events, clock=lambda: clock[0])
    tokens = []
    for exp, nbf, iat in offsets:
        claims = {
            "iss": ISS,
            "sub": "psu-1",
            "aud": AUDIENCE,
            "client_id": "c",
            "jti": "j",
            "scope": "accounts",
        }
        claims.update(exp=NOW + exp, nbf=NOW + nbf, iat=NOW + iat)
        tokens.append(SIGNER.sign(b'{"alg":"ES256","typ":"at+jwt","kid":"k1"}', json.dumps(claims).encode()))
    for index, advance in steps:
        clock[0] += advance
        token = tokens[index % len(tokens)]
        facts = make_facts("GET", "/accounts", headers=[("authorization", "Bearer " + token)])
        verdicts = []
        for guard in (cached, uncached):
            before = len(events.events)
            verdicts.append(check_decision(guard, events, before, guard.decide(facts), secrets=[token]))
        assert verdicts[0] == verdicts[1], (clock[0] - NOW, offsets[index % len(offsets)], verdicts)


@pytest.mark.parametrize(
    ("header", "claims", "reason"),
    [
        ({"kid": None}, {}, "token.kid_invalid"),
        ({}, {"scope": None}, "token.claim_type:scope"),
    ],
)
def test_JWT_14_28_null_kid_and_scope_are_refused_as_documented(
    header: dict[str, Any], claims: dict[str, Any], reason: str
) -> None:
    """docs/tokens.md step 6: ``kid``, when present, a non-empty string; step 12 and docs/errors.md:
    ``scope`` a string of scope-tokens (only ``cnf``, ``sub``, ``client_id`` and ``jti`` get a
    ``null`` exception). A JSON ``null`` ``kid`` or ``scope`` is accepted as if absent."""
    base = {
        "iss": ISS,
        "sub": "psu-1",
        "aud": AUDIENCE,
        "client_id": "c",
        "iat": NOW,
        "exp": NOW + 300,
        "jti": "j",
        "scope": "accounts",
    }
    head = {"alg": "ES256", "typ": "at+jwt", "kid": "k1", **header}
    token = SIGNER.sign(json.dumps(head).encode(), json.dumps({**base, **claims}).encode())
    _, refused = attempt(_verify, token, error=TokenError)
    assert refused is not None, "accepted"
    assert "token." + refused == reason
