"""JWT access-token verification, one test per row of STANDARDS §3 (JWT-01..JWT-28, JWT-31, JWT-33),
the token-related vectors of §11, and fuzzing of the parser and verifier.

Requests go through a :class:`~bankguard.Guard` built from a policy with inline key sets
(``tokens.issuers[].jwks``) from :class:`~bankguard.testing.TestIssuer`, on a fixed clock.
Revocation (JWT-29) and sender constraint (JWT-32) are in ``test_token_control.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bankguard import ConfigurationError, EventCollector, Guard, Policy
from bankguard.decision import Decision
from bankguard.testing import TestIssuer, make_facts
from bankguard.tokens import jose
from bankguard.tokens.cache import token_key
from bankguard.tokens.jose import JoseError, b64url_encode, verify_signature
from bankguard.tokens.jwk import load_jwks, thumbprint
from bankguard.tokens.jwt import JwtVerifier, ParsedJwt, TokenError, VerifiedToken

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
AUD = "https://api.bank.example"
ISS = "https://as.bank.example"
ISS_B = "https://as-b.bank.example"
RSA_ISS = "https://rsa.bank.example"

ISSUER = TestIssuer(ISS, alg="ES256", kid="ec-1")
ISSUER_B = TestIssuer(ISS_B, alg="ES256", kid="b-1")
RSA_ISSUER = TestIssuer(RSA_ISS, alg="RS256", kid="rsa-1")


def signing_key(issuer: TestIssuer) -> Any:
    """The issuer's private key, to sign hand-built tokens with a trusted key."""
    return issuer._key


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def raw_sign(key: Any, alg: str, signing_input: bytes) -> bytes:
    digests = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
    if alg.startswith("HS"):
        return hmac.new(key, signing_input, "sha" + alg[2:]).digest()
    if alg.startswith("RS"):
        return key.sign(signing_input, padding.PKCS1v15(), digests[alg[2:]])
    if alg.startswith("PS"):
        h = digests[alg[2:]]
        return key.sign(signing_input, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(digests[alg[2:]])))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def forge(
    header: dict[str, Any] | bytes,
    payload: dict[str, Any] | bytes,
    *,
    key: Any = None,
    alg: str = "ES256",
    signature: bytes | None = None,
) -> str:
    h = header if isinstance(header, bytes) else dumps(header)
    p = payload if isinstance(payload, bytes) else dumps(payload)
    signing_input = f"{b64(h)}.{b64(p)}".encode("ascii")
    if signature is None:
        signature = raw_sign(key if key is not None else signing_key(ISSUER), alg, signing_input)
    return f"{signing_input.decode('ascii')}.{b64(signature)}"


def claims(iss: str = ISS, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "iss": iss,
        "sub": "psu-1",
        "aud": AUD,
        "client_id": "tpp-client-1",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "jti": "jti-1",
        "scope": "accounts",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def header(alg: str = "ES256", kid: str | None = "ec-1", **changes: Any) -> dict[str, Any]:
    head: dict[str, Any] = {"alg": alg, "typ": "at+jwt", "kid": kid}
    head.update(changes)
    return {k: v for k, v in head.items() if v is not None}


def mint(**changes: Any) -> str:
    """A token from the trusted EC issuer, with claim changes (None removes a claim)."""
    return forge(header(), claims(**changes))


def issuer_entry(issuer: TestIssuer, algorithms: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "issuer": issuer.issuer,
        "audiences": [AUD],
        "algorithms": algorithms,
        "jwks": issuer.jwks(),
        **extra,
    }


OPERATIONS = [
    {"method": "GET", "path": "/accounts", "id": "listAccounts", "scopes": ["accounts"]},
    {"method": "POST", "path": "/payments", "id": "createPayment", "scopes": ["payments"]},
    {"method": "GET", "path": "/balances", "id": "getBalances", "any_scopes": ["accounts", "balances"]},
    {"method": "GET", "path": "/me", "id": "me"},
]


def make_policy(*issuers: dict[str, Any], profile: str = "generic", **tokens: Any) -> Policy:
    entries = list(issuers) or [
        issuer_entry(ISSUER, ["ES256"]),
        issuer_entry(ISSUER_B, ["ES256"]),
        issuer_entry(RSA_ISSUER, ["RS256", "PS256"]),
    ]
    return Policy.from_dict(
        {
            "profile": profile,
            "routes": {"operations": OPERATIONS},
            "tokens": {"issuers": entries, "leeway": 0, **tokens},
        }
    )


POLICY = make_policy()


@pytest.fixture
def events() -> EventCollector:
    return EventCollector()


@pytest.fixture
def guard(events: EventCollector) -> Guard:
    return Guard(POLICY, sink=events, clock=lambda: NOW)


def decide(guard: Guard, token: str, method: str = "GET", path: str = "/accounts") -> Decision:
    return guard.decide(make_facts(method, path, headers=[("authorization", f"Bearer {token}")]))


def assert_allowed(decision: Decision) -> None:
    assert decision.allowed, decision.event
    assert decision.event.outcome == "allow"
    assert decision.context.principal.authenticated


def assert_e2(decision: Decision, guard: Guard, reason: str | tuple[str, ...]) -> None:
    """401 invalid_token from the token control with this audit reason (or one of these)."""
    assert not decision.allowed
    event = decision.event
    assert (event.status, event.control) == (401, "tokens"), event
    assert event.reason in ((reason,) if isinstance(reason, str) else reason)
    response = guard.problem(decision)
    headers = dict(response.headers)
    assert headers["content-type"] == "application/problem+json"
    assert headers["www-authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert json.loads(response.body)["status"] == 401


NOT_BASE64URL = tuple(
    f"token.{seg}{kind}"
    for seg in ("", "header_", "payload_", "signature_")
    for kind in ("not_base64url", "not_canonical")
)


def verifier(max_token_bytes: int = 8192, policy: Policy = POLICY) -> JwtVerifier:
    built = Guard(policy).tokens
    assert built is not None
    assert built.verifier is not None
    return JwtVerifier(
        built.verifier.issuers,
        leeway=0,
        max_future_iat=10,
        max_token_bytes=max_token_bytes,
        clock=lambda: NOW,
    )


def parse_reason(token: str, max_token_bytes: int = 8192) -> str:
    with pytest.raises(TokenError) as caught:
        verifier(max_token_bytes).parse(token)
    return caught.value.reason


def test_a_valid_token_is_accepted_with_its_claims(guard: Guard, events: EventCollector) -> None:
    decision = decide(guard, ISSUER.mint(now=NOW, audience=AUD))
    assert_allowed(decision)
    principal = decision.context.principal
    assert (principal.subject, principal.client_id, principal.scopes) == (
        "psu-1",
        "tpp-client-1",
        {"accounts"},
    )
    assert events.events == [decision.event]
    assert (decision.event.client_id, decision.event.subject) == ("tpp-client-1", "psu-1")


# -- 3a. Parsing and format ------------------------------------------------------------------------


def _format_cases() -> list[Any]:
    h, p, s = mint().split(".")
    return [
        pytest.param(f"{h}.{p}.{s}!!", id="sig!!"),
        pytest.param(f"{h}.{p}.{s}==", id="sig=="),
        pytest.param(f"{h}.{p}.{s}=", id="sig="),
        pytest.param(json.dumps({"payload": p, "signatures": [{"protected": h, "signature": s}]}), id="json"),
        pytest.param(f"{h}.{p}\n.{s}", id="line-break"),
        pytest.param(f" {h}.{p}.{s}", id="leading-space"),
        pytest.param(f"{h}.{p}.{s[:-2]}+A", id="standard-alphabet-plus"),
        pytest.param(f"{h}.{p}.{s[:-2]}/A", id="standard-alphabet-slash"),
        pytest.param(f"{h}.{p}", id="two-segments"),
        pytest.param(f"{h}.{p}.{s}.", id="four-segments"),
        pytest.param("", id="empty"),
        pytest.param("..", id="dots-only"),
        pytest.param(f"{h}.{p}.{s}\u00e9", id="non-ascii"),
    ]


@pytest.mark.parametrize("token", _format_cases())
def test_JWT_01_compact_strict_base64url_only(token: str) -> None:
    reason = parse_reason(token)
    assert f"token.{reason}" in (*NOT_BASE64URL, "token.not_compact_jws")


def test_JWT_01_through_the_guard(guard: Guard) -> None:
    """Padding reaches the token control: 401 invalid_token. ``!!`` is not a b64token character, so
    the Authorization field itself is malformed: 400 invalid_request (AUTH-06, E6). Both refuse."""
    token = mint()
    assert_e2(decide(guard, token + "=="), guard, NOT_BASE64URL)
    bang = decide(guard, token + "!!")
    assert not bang.allowed
    assert (bang.event.status, bang.event.control, bang.event.reason) == (
        400,
        "auth",
        "authorization.malformed",
    )
    assert 'error="invalid_request"' in dict(guard.problem(bang).headers)["www-authenticate"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(b'{"exp": Infinity}', "json_non_finite_number", id="Infinity"),
        pytest.param(b'{"exp": -Infinity}', "json_non_finite_number", id="-Infinity"),
        pytest.param(b'{"exp": NaN}', "json_non_finite_number", id="NaN"),
        pytest.param(b'{"exp": 1e999}', "json_non_finite_number", id="overflowing-float"),
        pytest.param(b"[1,2]", "claims_not_object", id="array"),
        pytest.param(b'"at"', "claims_not_object", id="string"),
        pytest.param(b"42", "claims_not_object", id="number"),
        pytest.param(b"null", "claims_not_object", id="null"),
        pytest.param(b'{"a":1} x', "claims_not_json", id="trailing-garbage"),
        pytest.param(b'{"a":1}{"b":2}', "claims_not_json", id="two-objects"),
        pytest.param(b"{'a':1}", "claims_not_json", id="single-quotes"),
        pytest.param(b'{"a":1,}', "claims_not_json", id="trailing-comma"),
        pytest.param(b"", "claims_not_json", id="empty"),
        pytest.param(b'\xef\xbb\xbf{"a":1}', "claims_not_json", id="bom"),
        pytest.param('{"a":1}'.encode("utf-16"), "claims_not_utf8", id="utf-16"),
        pytest.param('{"a":1}'.encode("utf-32"), "claims_not_utf8", id="utf-32"),
    ],
)
def test_JWT_02_claims_are_a_utf8_json_object(payload: bytes, reason: str) -> None:
    token = forge(header(), payload)
    assert parse_reason(token) == reason


@pytest.mark.parametrize(
    ("raw_header", "reason"),
    [
        pytest.param(json.dumps(header()).encode("utf-16"), ("token.header_not_utf8",), id="utf-16"),
        pytest.param(json.dumps(header()).encode("utf-16-be"), ("token.header_not_json",), id="utf-16-be"),
        pytest.param(b"\xef\xbb\xbf" + dumps(header()), ("token.header_not_json",), id="bom"),
        pytest.param(b'["ES256"]', ("token.header_not_object",), id="array"),
        pytest.param(dumps(header()) + b"x", ("token.header_not_json",), id="trailing-garbage"),
        pytest.param(dumps(header())[:-1] + b',"x":NaN}', ("token.json_non_finite_number",), id="NaN"),
    ],
)
def test_JWT_02_header_is_a_utf8_json_object(
    guard: Guard, raw_header: bytes, reason: tuple[str, ...]
) -> None:
    assert_e2(decide(guard, forge(raw_header, claims())), guard, reason)


def test_JWT_02_infinity_in_claims_through_the_guard(guard: Guard) -> None:
    payload = dumps(claims(exp=None))[:-1] + b',"exp":Infinity}'
    assert_e2(decide(guard, forge(header(), payload)), guard, "token.json_non_finite_number")


@pytest.mark.parametrize(
    ("raw_header", "payload"),
    [
        pytest.param(
            b'{"alg":"none","alg":"ES256","typ":"at+jwt","kid":"ec-1"}', None, id="header-alg-twice"
        ),
        pytest.param(b'{"alg":"ES256","typ":"JWT","typ":"at+jwt","kid":"ec-1"}', None, id="header-typ-twice"),
        pytest.param(None, dumps(claims())[:-1] + b',"sub":"someone-else"}', id="sub-twice"),
        pytest.param(None, dumps(claims())[:-1] + b',"aud":"https://other-rs.example"}', id="aud-twice"),
        pytest.param(None, dumps(claims())[:-1] + b',"aud":"' + AUD.encode() + b'"}', id="aud-twice-same"),
        pytest.param(None, dumps(claims())[:-1] + b',"\\u0073ub":"x"}', id="escaped-sub"),
    ],
)
def test_JWT_03_duplicate_members_rejected(
    guard: Guard, raw_header: bytes | None, payload: bytes | None
) -> None:
    token = forge(
        raw_header if raw_header is not None else header(), payload if payload is not None else claims()
    )
    assert_e2(decide(guard, token), guard, "token.json_duplicate_member")


def test_JWT_04_five_part_jwe_rejected(guard: Guard) -> None:
    jwe = ".".join(b64(x) for x in (b'{"alg":"RSA-OAEP","enc":"A256GCM"}', b"key", b"iv", b"ct", b"tag"))
    assert_e2(decide(guard, jwe), guard, ("token.not_a_jwt", "token.jwe_not_accepted"))
    assert parse_reason(jwe) == "jwe_not_accepted"


@pytest.mark.parametrize(
    "extra",
    [pytest.param({"b64": False, "crit": ["b64"]}, id="with-crit"), pytest.param({"b64": False}, id="alone")],
)
def test_JWT_05_unencoded_payload_rejected(guard: Guard, extra: dict[str, Any]) -> None:
    token = forge({**header(), **extra}, claims())
    assert_e2(decide(guard, token), guard, ("token.b64_not_allowed", "token.crit_not_supported"))


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"crit": ["exp"], "exp": int(NOW) + 60}, id="crit-exp"),
        pytest.param({"crit": []}, id="crit-empty"),
        pytest.param({"crit": "exp"}, id="crit-not-array"),
        pytest.param({"crit": ["kid"]}, id="crit-registered-param"),
        pytest.param({"crit": ["x-absent"]}, id="crit-absent-param"),
    ],
)
def test_JWT_06_crit_rejected(guard: Guard, extra: dict[str, Any]) -> None:
    assert_e2(decide(guard, forge({**header(), **extra}, claims())), guard, "token.crit_not_supported")


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"foo": 1}, id="foo"),
        pytest.param({"x-vendor": {"nested": [1, 2]}}, id="vendor-object"),
        pytest.param({"iss": "https://evil.example"}, id="header-iss-ignored"),
    ],
)
def test_JWT_07_unknown_header_params_ignored(guard: Guard, extra: dict[str, Any]) -> None:
    decision = decide(guard, forge({**header(), **extra}, claims()))
    assert_allowed(decision)


@pytest.mark.parametrize("cty", ["JWT", "jwt", "application/json", "at+jwt"])
def test_JWT_08_nested_jwt_cty_rejected(guard: Guard, cty: str) -> None:
    assert_e2(decide(guard, forge(header(cty=cty), claims())), guard, "token.nested_jwt")


def test_JWT_09_one_megabyte_token_rejected_before_parsing(guard: Guard) -> None:
    token = mint(pad="A" * 1_000_000)
    decision = decide(guard, token)
    assert not decision.allowed
    assert (decision.event.status, decision.event.control) == (431, "request")
    assert parse_reason(token) == "token_too_large"


def test_JWT_09_token_over_max_token_bytes(guard: Guard) -> None:
    token = mint(pad="A" * 7000)
    assert 8192 < len(token) < 16384
    assert_e2(decide(guard, token), guard, "token.too_large")


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_JWT_09_deep_json_rejected_without_recursion_error(depth: int) -> None:
    deep = b"[" * depth + b"]" * depth
    payload = dumps(claims())[:-1] + b',"x":' + deep + b"}"
    assert parse_reason(forge(header(), payload), max_token_bytes=10_000_000) in (
        "claims_not_json",
        "json_too_deep",
    )
    deep_header = dumps(header())[:-1] + b',"x":' + deep + b"}"
    assert parse_reason(forge(deep_header, claims()), max_token_bytes=10_000_000) in (
        "header_not_json",
        "json_too_deep",
    )


def test_JWT_09_claim_count_capped() -> None:
    token = mint(**{f"c{i}": i for i in range(300)})
    assert parse_reason(token, max_token_bytes=100_000) == "json_too_many_members"


def test_JWT_09_max_token_bytes_bounded_by_policy() -> None:
    with pytest.raises(ConfigurationError):
        make_policy(max_token_bytes=1_000_000)


# -- 3b. Header ----------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "at+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_JWT_10_typ_at_jwt_accepted_case_insensitively(guard: Guard, typ: str) -> None:
    assert_allowed(decide(guard, forge(header(typ=typ), claims())))


@pytest.mark.parametrize(
    "typ",
    [
        pytest.param("JWT", id="JWT"),
        pytest.param("dpop+jwt", id="dpop+jwt"),
        pytest.param(None, id="absent"),
        pytest.param("application/jwt", id="application/jwt"),
        pytest.param("at+jwt; charset=utf-8", id="with-parameter"),
        pytest.param("application/application/at+jwt", id="double-prefix"),
        pytest.param(1, id="number"),
    ],
)
def test_JWT_10_other_typ_rejected(guard: Guard, typ: Any) -> None:
    head = {"alg": "ES256", "kid": "ec-1"} | ({} if typ is None else {"typ": typ})
    assert_e2(decide(guard, forge(head, claims())), guard, "token.typ_not_accepted")


def test_JWT_10_id_token_from_the_same_issuer_and_key_rejected(guard: Guard) -> None:
    id_token = ISSUER.mint(
        {"aud": "tpp-client-1", "nonce": "n-1", "auth_time": int(NOW)},
        header={"typ": "JWT"},
        now=NOW,
        scope=None,
    )
    assert_e2(decide(guard, id_token), guard, "token.typ_not_accepted")


@pytest.mark.parametrize(
    "alg",
    ["none", "None", "NONE", "nOnE", "none ", "none\u0000", "es256", "Es256", "ES256 "],
)
@pytest.mark.parametrize("signature", ["empty", "original"])
def test_JWT_11_none_and_case_variants(guard: Guard, alg: str, signature: str) -> None:
    _, p, s = mint().split(".")
    token = f"{b64(dumps(header(alg=alg)))}.{p}.{s if signature == 'original' else ''}"
    assert_e2(decide(guard, token), guard, ("token.alg_not_allowed", "token.signature_missing"))


def test_JWT_11_rs256_is_case_sensitive(guard: Guard) -> None:
    token = forge(
        header(alg="rs256", kid="rsa-1"), claims(iss=RSA_ISS), key=signing_key(RSA_ISSUER), alg="RS256"
    )
    assert_e2(decide(guard, token), guard, "token.alg_not_allowed")


def _public_key_secrets() -> list[Any]:
    public = signing_key(RSA_ISSUER).public_key()
    return [
        pytest.param(
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            id="pem",
        ),
        pytest.param(
            public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
            id="der",
        ),
        pytest.param(dumps(RSA_ISSUER.public_jwk()), id="jwk-json"),
    ]


@pytest.mark.parametrize("secret", _public_key_secrets())
def test_JWT_12_hs256_signed_with_the_jwks_public_key(guard: Guard, secret: bytes) -> None:
    token = forge(header(alg="HS256", kid="rsa-1"), claims(iss=RSA_ISS), key=secret, alg="HS256")
    assert_e2(decide(guard, token), guard, "token.alg_not_allowed")


def test_JWT_12_key_alg_ps256_token_rs256(events: EventCollector) -> None:
    issuer = TestIssuer(RSA_ISS, alg="PS256", kid="ps-1")
    guard = Guard(make_policy(issuer_entry(issuer, ["RS256", "PS256"])), sink=events, clock=lambda: NOW)
    assert_allowed(decide(guard, issuer.mint(now=NOW, audience=AUD)))
    token = forge(header(alg="RS256", kid="ps-1"), claims(iss=RSA_ISS), key=signing_key(issuer), alg="RS256")
    assert_e2(decide(guard, token), guard, "token.no_key_for_alg")


def test_JWT_12_each_key_bound_to_exactly_its_algorithms() -> None:
    keys, skipped = load_jwks(
        {"keys": [ISSUER.public_jwk(), RSA_ISSUER.public_jwk(), {**RSA_ISSUER.public_jwk(), "alg": "ES256"}]},
        frozenset({"ES256", "RS256", "PS256", "HS256"}),
    )
    assert skipped == ["keys[2] kid='rsa-1': jwk_alg_mismatch"]
    assert [sorted(k.algorithms) for k in keys] == [["ES256"], ["RS256"]]
    alg_less = {k: v for k, v in RSA_ISSUER.public_jwk().items() if k != "alg"}
    (key,), _ = load_jwks({"keys": [alg_less]}, frozenset({"RS256", "PS256", "ES256", "HS256"}))
    assert key.algorithms == frozenset({"RS256", "PS256"})


class _Counter(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.hits: list[str] = []
        super().__init__(("127.0.0.1", 0), _CountingHandler)


class _CountingHandler(BaseHTTPRequestHandler):
    server: _Counter

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        body = dumps({"keys": []})
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def evil_server() -> Iterator[_Counter]:
    server = _Counter()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.network
def test_JWT_13_header_keys_and_key_urls_rejected_without_fetching(
    guard: Guard, evil_server: _Counter
) -> None:
    host, port = evil_server.server_address[:2]
    url = f"http://{host!s}:{port}/jwks.json"
    attacker = ec.generate_private_key(ec.SECP256R1())
    numbers = attacker.public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }
    cases = [
        ({"jwk": jwk}, "token.header_embedded_key"),
        ({"x5c": ["MIIB"]}, "token.header_embedded_key"),
        ({"jku": url}, "token.header_key_url"),
        ({"x5u": url}, "token.header_key_url"),
        ({"jku": f"http://127.0.0.1:{port}@evil.example/jwks.json", "kid": "evil"}, "token.header_key_url"),
    ]
    for extra, reason in cases:
        token = forge({**header(), **extra}, claims(), key=attacker)
        assert_e2(decide(guard, token), guard, reason)
    assert evil_server.hits == []
    with urllib.request.urlopen(url, timeout=5):  # the server was reachable all along
        pass
    assert evil_server.hits == ["/jwks.json"]


@pytest.mark.parametrize(
    ("kid", "reason"),
    [
        pytest.param("../../../../dev/null", "token.kid_unknown", id="path"),
        pytest.param("' UNION SELECT 'k'--", "token.kid_unknown", id="sql"),
        pytest.param("x|sleep 5", "token.kid_unknown", id="shell"),
        pytest.param("EC-1", "token.kid_unknown", id="case-sensitive"),
        pytest.param(123, "token.kid_invalid", id="number"),
        pytest.param({"a": 1}, "token.kid_invalid", id="object"),
        pytest.param("k" * 257, "token.kid_invalid", id="over-256"),
    ],
)
def test_JWT_14_kid_is_an_exact_lookup(guard: Guard, kid: Any, reason: str) -> None:
    token = forge({"alg": "ES256", "typ": "at+jwt", "kid": kid}, claims())
    assert_e2(decide(guard, token), guard, reason)


def test_JWT_14_kid_of_256_characters_is_a_lookup(guard: Guard) -> None:
    assert_e2(decide(guard, forge(header(kid="k" * 256), claims())), guard, "token.kid_unknown")


def test_JWT_15_duplicate_kid_chosen_by_key_type(events: EventCollector) -> None:
    ec_issuer = TestIssuer(ISS, alg="ES256", kid="shared")
    rsa_issuer = TestIssuer(ISS, alg="RS256", kid="shared")
    jwks = {"keys": [rsa_issuer.public_jwk(), ec_issuer.public_jwk()]}
    entry = {"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256", "RS256"], "jwks": jwks}
    guard = Guard(make_policy(entry), sink=events, clock=lambda: NOW)
    assert_allowed(decide(guard, ec_issuer.mint(now=NOW, audience=AUD)))
    assert_allowed(decide(guard, rsa_issuer.mint(now=NOW, audience=AUD)))
    kidless = forge(header(kid=None), claims(), key=signing_key(ec_issuer))
    assert_allowed(decide(guard, kidless))


def test_JWT_15_kidless_token_tries_a_bounded_number_of_keys(events: EventCollector) -> None:
    issuers = [TestIssuer(ISS, alg="ES256", kid=f"k{i}") for i in range(5)]
    entry = {
        "issuer": ISS,
        "audiences": [AUD],
        "algorithms": ["ES256"],
        "jwks": {"keys": [i.public_jwk() for i in issuers]},
    }
    guard = Guard(make_policy(entry), sink=events, clock=lambda: NOW)
    assert_allowed(decide(guard, forge(header(kid=None), claims(), key=signing_key(issuers[0]))))
    # The fifth key is beyond the candidates tried for a kid-less token; with its kid it verifies.
    assert_e2(
        decide(guard, forge(header(kid=None), claims(), key=signing_key(issuers[4]))),
        guard,
        "token.signature_invalid",
    )
    assert_allowed(decide(guard, forge(header(kid="k4"), claims(), key=signing_key(issuers[4]))))


def test_JWT_16_rs256_token_under_fapi2(events: EventCollector) -> None:
    policy = make_policy(issuer_entry(ISSUER, ["ES256", "PS256"]), profile="fapi2")
    guard = Guard(policy, sink=events, clock=lambda: NOW)
    token = forge(
        header(alg="RS256", kid="rsa-1"), claims(cnf={"jkt": "x"}), key=signing_key(RSA_ISSUER), alg="RS256"
    )
    assert_e2(decide(guard, token), guard, "token.alg_not_allowed")


@pytest.mark.parametrize(
    ("profile", "alg"),
    [
        pytest.param("fapi2", "RS256", id="fapi2-RS256"),
        pytest.param("fapi2", "ES384", id="fapi2-ES384"),
        pytest.param("fapi1-adv", "RS256", id="fapi1-adv-RS256"),
        pytest.param("fapi1-adv", "EdDSA", id="fapi1-adv-EdDSA"),
        pytest.param("obie", "RS256", id="obie-RS256"),
        pytest.param("fapi2", "HS256", id="fapi2-HS256"),
    ],
)
def test_JWT_16_profile_algorithm_sets_enforced_at_load(profile: str, alg: str) -> None:
    entry = {"issuer": ISS, "audiences": [AUD], "algorithms": [alg], "jwks": ISSUER.jwks()}
    with pytest.raises(ConfigurationError) as caught:
        make_policy(entry, profile=profile)
    assert any(p.path.startswith("tokens.issuers[0].algorithms") for p in caught.value.problems)


def test_JWT_16_generic_profile_accepts_rs256(guard: Guard) -> None:
    """STANDARDS §10 C1: RFC 9068 requires RS256 support; the generic profile keeps it."""
    assert_allowed(decide(guard, RSA_ISSUER.mint(now=NOW, audience=AUD)))


def test_JWT_17_1024_bit_rsa_key_in_the_jwks_is_ignored(events: EventCollector) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    numbers = weak.public_key().public_numbers()
    weak_jwk = {
        "kty": "RSA",
        "kid": "weak",
        "use": "sig",
        "alg": "RS256",
        "n": b64(numbers.n.to_bytes(128, "big")),
        "e": b64(numbers.e.to_bytes(3, "big")),
    }
    entry = {
        "issuer": RSA_ISS,
        "audiences": [AUD],
        "algorithms": ["RS256"],
        "jwks": {"keys": [weak_jwk, RSA_ISSUER.public_jwk()]},
    }
    guard = Guard(make_policy(entry), sink=events, clock=lambda: NOW)
    assert_allowed(decide(guard, RSA_ISSUER.mint(now=NOW, audience=AUD)))
    token = forge(header(alg="RS256", kid="weak"), claims(iss=RSA_ISS), key=weak, alg="RS256")
    assert_e2(decide(guard, token), guard, "token.kid_unknown")
    kidless = forge(header(alg="RS256", kid=None), claims(iss=RSA_ISS), key=weak, alg="RS256")
    assert_e2(decide(guard, kidless), guard, "token.signature_invalid")
    only_weak = make_policy({**entry, "jwks": {"keys": [weak_jwk]}})
    with pytest.raises(ConfigurationError):
        Guard(only_weak)


@pytest.mark.parametrize("bits", [2047, 8193])
def test_JWT_17_rsa_sizes_outside_2048_to_8192_skipped(bits: int) -> None:
    n = (1 << (bits - 1)) | 0xF1  # odd, exactly ``bits`` long; never used to verify
    jwk = {"kty": "RSA", "kid": "x", "n": b64(n.to_bytes((bits + 7) // 8, "big")), "e": "AQAB"}
    keys, skipped = load_jwks({"keys": [jwk]}, frozenset({"RS256"}))
    assert keys == []
    assert skipped == ["keys[0] kid='x': rsa_key_size"]


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(bytes(64), id="all-zero"),
        pytest.param("der", id="der-encoded"),
        pytest.param(bytes(63), id="63-bytes"),
        pytest.param(bytes(65), id="65-bytes"),
    ],
)
def test_JWT_18_ecdsa_signature_format(guard: Guard, signature: Any) -> None:
    token = mint()
    h, p, s = token.split(".")
    raw = unb64(s)
    if signature == "der":
        signature = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    assert_e2(decide(guard, f"{h}.{p}.{b64(signature)}"), guard, "token.signature_invalid")


@pytest.mark.parametrize(
    ("alg", "curve", "size"),
    [("ES256", ec.SECP256R1(), 32), ("ES384", ec.SECP384R1(), 48), ("ES512", ec.SECP521R1(), 66)],
)
def test_JWT_18_fixed_length_r_s_for_every_curve(alg: str, curve: ec.EllipticCurve, size: int) -> None:
    key = ec.generate_private_key(curve)
    data = b"header.payload"
    good = raw_sign(key, alg, data)
    assert len(good) == 2 * size
    verify_signature(key.public_key(), alg, data, good)
    r, s = int.from_bytes(good[:size], "big"), int.from_bytes(good[size:], "big")
    for bad in (good[:-1], good + b"\x00", b"\x00" + good, encode_dss_signature(r, s), bytes(2 * size)):
        with pytest.raises(JoseError):
            verify_signature(key.public_key(), alg, data, bad)


@pytest.mark.parametrize("error", [ValueError("boom"), TypeError("boom")])
def test_JWT_19_failing_crypto_rejects_the_token(
    guard: Guard, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def broken(*args: Any) -> bytes:
        raise error

    monkeypatch.setattr(jose, "encode_dss_signature", broken)
    assert_e2(decide(guard, mint()), guard, "token.signature_invalid")


def test_JWT_19_unexpected_failure_fails_closed(
    guard: Guard, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An error nobody anticipated is never a 200 or a 500: the guard answers 503 and logs it."""

    def broken(*args: Any) -> bytes:
        raise RuntimeError("crypto backend gone")

    monkeypatch.setattr(jose, "encode_dss_signature", broken)
    with caplog.at_level("ERROR", logger="bankguard"):
        decision = decide(guard, mint())
    assert not decision.allowed
    assert (decision.event.status, decision.event.control) == (503, "tokens")
    assert guard.problem(decision).status == 503
    assert any(r.exc_info and "crypto backend gone" in str(r.exc_info[1]) for r in caplog.records)


# -- 3c. Claims --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"])
def test_JWT_20_each_required_claim(guard: Guard, name: str) -> None:
    reason = "token.issuer_unknown" if name == "iss" else f"token.claim_missing:{name}"
    assert_e2(decide(guard, mint(**{name: None})), guard, reason)


def test_JWT_20_required_claims_configurable_but_not_below_iss_exp_aud() -> None:
    entry = issuer_entry(ISSUER, ["ES256"], required_claims=["iss", "exp"])
    with pytest.raises(ConfigurationError):
        make_policy(entry)
    relaxed = make_policy(issuer_entry(ISSUER, ["ES256"], required_claims=["iss", "exp", "aud"]))
    guard = Guard(relaxed, clock=lambda: NOW, sink=EventCollector())
    assert_allowed(decide(guard, mint(jti=None, client_id=None, sub=None, iat=None)))


@pytest.mark.parametrize(
    "iss",
    [
        ISS + "/",
        ISS.upper(),
        "https://as.bank.example.",
        "https://as.bank.example#",
        " " + ISS,
        ISS + "\u0000",
    ],
)
def test_JWT_21_iss_compared_exactly(guard: Guard, iss: str) -> None:
    assert_e2(decide(guard, mint(iss=iss)), guard, "token.issuer_unknown")


def test_JWT_22_key_of_issuer_a_cannot_sign_for_issuer_b(guard: Guard) -> None:
    assert_allowed(decide(guard, ISSUER_B.mint(now=NOW, audience=AUD)))
    forged = forge(header(kid="ec-1"), claims(iss=ISS_B), key=signing_key(ISSUER))
    assert_e2(decide(guard, forged), guard, "token.kid_unknown")
    forged_kid = forge(header(kid="b-1"), claims(iss=ISS_B), key=signing_key(ISSUER))
    assert_e2(decide(guard, forged_kid), guard, "token.signature_invalid")
    kidless = forge(header(kid=None), claims(iss=ISS_B), key=signing_key(ISSUER))
    assert_e2(decide(guard, kidless), guard, "token.signature_invalid")


@pytest.mark.parametrize(
    ("aud", "reason"),
    [
        pytest.param(["https://other-rs"], "token.audience_mismatch", id="other"),
        pytest.param([], "token.claim_type:aud", id="empty-array"),
        pytest.param([AUD, 1], "token.claim_type:aud", id="non-string-member"),
        pytest.param({"aud": AUD}, "token.claim_type:aud", id="object"),
        pytest.param(None, "token.claim_missing:aud", id="missing"),
        pytest.param("", "token.audience_mismatch", id="empty-string"),
        pytest.param(AUD + "/", "token.audience_mismatch", id="trailing-slash"),
        pytest.param([[AUD]], "token.claim_type:aud", id="nested-array"),
    ],
)
def test_JWT_23_audience_rejected(guard: Guard, aud: Any, reason: str) -> None:
    decision = decide(guard, mint(aud=aud))
    assert_e2(decision, guard, reason)


@pytest.mark.parametrize("aud", [AUD, [AUD], ["https://other-rs", AUD]])
def test_JWT_23_audience_accepted(guard: Guard, aud: Any) -> None:
    assert_allowed(decide(guard, mint(aud=aud)))


def test_JWT_24_expired(guard: Guard) -> None:
    decision = decide(guard, mint(exp=int(NOW) - 1))
    assert_e2(decision, guard, "token.expired")
    challenge = dict(guard.problem(decision).headers)["www-authenticate"]
    assert 'error_description="The access token has expired."' in challenge


def test_JWT_24_exp_equal_to_now_is_expired(guard: Guard) -> None:
    assert_e2(decide(guard, mint(exp=int(NOW))), guard, "token.expired")
    assert_allowed(decide(guard, mint(exp=int(NOW) + 1)))


def test_JWT_24_leeway_applies_and_is_capped(events: EventCollector) -> None:
    guard = Guard(make_policy(leeway=30), sink=events, clock=lambda: NOW)
    assert_allowed(decide(guard, mint(exp=int(NOW) - 29)))
    assert_e2(decide(guard, mint(exp=int(NOW) - 30)), guard, "token.expired")
    with pytest.raises(ConfigurationError):
        make_policy(leeway=301)


def test_JWT_25_not_before(guard: Guard, events: EventCollector) -> None:
    assert_e2(decide(guard, mint(nbf=int(NOW) + 600)), guard, "token.not_yet_valid")
    assert_allowed(decide(guard, mint(nbf=int(NOW))))
    lenient = Guard(make_policy(leeway=30), sink=events, clock=lambda: NOW)
    assert_allowed(decide(lenient, mint(nbf=int(NOW) + 30)))
    assert_e2(decide(lenient, mint(nbf=int(NOW) + 31)), lenient, "token.not_yet_valid")


def test_JWT_26_iat_in_the_future(guard: Guard) -> None:
    assert_e2(decide(guard, mint(iat=int(NOW) + 3600)), guard, "token.issued_in_future")
    assert_allowed(decide(guard, mint(iat=int(NOW) + 10)))
    assert_e2(decide(guard, mint(iat=int(NOW) + 11)), guard, "token.issued_in_future")
    with pytest.raises(ConfigurationError):
        make_policy(max_future_iat=61)


@pytest.mark.parametrize(
    ("payload_tail", "reason"),
    [
        pytest.param(b'"exp":"9999999999"', "token.claim_type:exp", id="exp-string"),
        pytest.param(b'"exp":true', "token.claim_type:exp", id="exp-true"),
        pytest.param(b'"exp":1e309', "token.json_non_finite_number", id="exp-1e309"),
        pytest.param(b'"exp":NaN', "token.json_non_finite_number", id="exp-NaN"),
        pytest.param(b'"exp":null', "token.claim_missing:exp", id="exp-null"),
        pytest.param(b'"exp":253402300800', "token.claim_range:exp", id="exp-year-10000"),
        pytest.param(b'"nbf":"0"', "token.claim_type:nbf", id="nbf-string"),
        pytest.param(b'"iat":false', "token.claim_type:iat", id="iat-false"),
        pytest.param(b'"auth_time":true', "token.claim_type:auth_time", id="auth_time-true"),
        pytest.param(b'"auth_time":-5', "token.claim_range:auth_time", id="auth_time-negative"),
    ],
)
def test_JWT_27_numeric_dates_are_plausible_numbers(guard: Guard, payload_tail: bytes, reason: str) -> None:
    name = payload_tail.split(b'"')[1].decode()
    payload = dumps(claims(**{name: None}))[:-1] + b"," + payload_tail + b"}"
    assert_e2(decide(guard, forge(header(), payload)), guard, reason)


def test_JWT_27_fractional_numeric_dates_accepted(guard: Guard) -> None:
    assert_allowed(decide(guard, mint(exp=NOW + 0.5, iat=NOW - 0.25, nbf=NOW)))


def test_JWT_28_insufficient_scope(guard: Guard) -> None:
    decision = decide(guard, mint(scope="accounts"), "POST", "/payments")
    assert not decision.allowed
    assert (decision.event.status, decision.event.control, decision.event.reason) == (
        403,
        "tokens",
        "scope.insufficient",
    )
    response = guard.problem(decision)
    assert response.status == 403
    challenge = dict(response.headers)["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="payments"' in challenge


@pytest.mark.parametrize(
    ("scope", "path", "allowed"),
    [
        pytest.param("accounts payments", "/payments", True, id="space-delimited"),
        pytest.param("payments accounts", "/accounts", True, id="order-free"),
        pytest.param("accounts,payments", "/payments", False, id="comma-is-one-scope-token"),
        pytest.param("Payments", "/payments", False, id="case-sensitive"),
        pytest.param("balances", "/balances", True, id="any-of"),
        pytest.param("payments", "/balances", False, id="any-of-unmet"),
        pytest.param("payments", "/me", True, id="no-scope-needed"),
    ],
)
def test_JWT_28_scope_parsing(guard: Guard, scope: str, path: str, allowed: bool) -> None:
    method = "POST" if path == "/payments" else "GET"
    decision = decide(guard, mint(scope=scope), method, path)
    assert decision.allowed is allowed
    if not allowed:
        assert (decision.event.status, decision.event.reason) == (403, "scope.insufficient")


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param(["accounts"], id="array"),
        pytest.param("accounts  payments", id="double-space"),
        pytest.param(" accounts", id="leading-space"),
        pytest.param("accounts\tpayments", id="tab"),
        pytest.param('acc"ounts', id="quote"),
        pytest.param("", id="empty"),
        pytest.param(1, id="number"),
    ],
)
def test_JWT_28_malformed_scope_is_an_invalid_token(guard: Guard, scope: Any) -> None:
    assert_e2(decide(guard, mint(scope=scope)), guard, "token.claim_type:scope")


def test_JWT_31_auth_time_and_acr_reach_the_principal(guard: Guard) -> None:
    decision = decide(guard, mint(auth_time=int(NOW) - 60, acr="urn:openbanking:psd2:sca"))
    assert_allowed(decision)
    claims_seen = decision.context.principal.claims
    assert claims_seen["auth_time"] == int(NOW) - 60
    assert claims_seen["acr"] == "urn:openbanking:psd2:sca"
    with pytest.raises(TypeError):
        claims_seen["acr"] = "downgraded"  # type: ignore[index]


@pytest.mark.parametrize(
    ("typ", "body"),
    [
        pytest.param(
            "dpop+jwt", {"jti": "p", "htm": "GET", "htu": AUD + "/accounts", "iat": int(NOW)}, id="dpop-proof"
        ),
        pytest.param("JWT", claims(aud="tpp-client-1", nonce="n"), id="id-token"),
        pytest.param("logout+jwt", claims(aud="tpp-client-1", events={}), id="logout-token"),
        pytest.param("JWT", claims(iss="tpp-client-1", aud=ISS + "/token"), id="client-assertion"),
        pytest.param("oauth-authz-req+jwt", claims(aud=ISS), id="request-object"),
        pytest.param("JOSE", claims(), id="obie-x-jws-signature"),
    ],
)
def test_JWT_33_other_jwts_as_access_tokens(guard: Guard, typ: str, body: dict[str, Any]) -> None:
    token = forge({"alg": "ES256", "typ": typ, "kid": "ec-1"}, body)
    assert_e2(decide(guard, token), guard, ("token.typ_not_accepted", "token.issuer_unknown"))


# -- §11 vectors -------------------------------------------------------------------------------------


def test_V1_dpop_jwk_thumbprint() -> None:
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
        "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    }
    assert thumbprint(jwk) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    # Only the required members count, whatever else the JWK carries, in any order.
    noisy = {"use": "sig", "kid": "x", "alg": "ES256", **dict(reversed(list(jwk.items())))}
    assert thumbprint(noisy) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def test_V2_token_hash_is_the_ath_digest() -> None:
    """The verified-token cache keys on SHA-256 of the token: the same digest as DPoP ``ath``."""
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    assert b64url_encode(token_key(token)) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    assert b64url_encode(hashlib.sha256(token.encode("ascii")).digest()) == b64url_encode(token_key(token))


def test_V5_rfc7638_rsa_example_thumbprint() -> None:
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
            "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHz"
            "u6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awa"
            "pJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_V1_thumbprint_refuses_incomplete_keys() -> None:
    with pytest.raises(JoseError):
        thumbprint({"kty": "EC", "crv": "P-256", "x": "abc"})
    with pytest.raises(JoseError):
        thumbprint({"kty": "oct", "k": "abc"})


# -- fuzzing -------------------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
_FUZZ_VERIFIER = verifier()
_ORIGINAL = mint(scope="accounts payments")


def _verify(token: str) -> VerifiedToken:
    parsed: ParsedJwt = _FUZZ_VERIFIER.parse(token)
    index = parsed.rules.keys.current()
    assert index is not None
    return _FUZZ_VERIFIER.verify(parsed, index)


def test_fuzz_baseline_token_verifies() -> None:
    assert _verify(_ORIGINAL).subject == "psu-1"


@FUZZ
@given(st.text(max_size=400))
def test_fuzz_parse_arbitrary_text(text: str) -> None:
    try:
        _verify(text)
    except TokenError:
        return
    raise AssertionError(f"arbitrary text verified: {text!r}")


_B64_CHARS = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/!")


@FUZZ
@given(st.text(alphabet=_B64_CHARS, max_size=600))
def test_fuzz_parse_token_alphabet(text: str) -> None:
    try:
        _verify(text)
    except TokenError:
        return
    raise AssertionError(f"arbitrary text verified: {text!r}")


@FUZZ
@given(st.data())
def test_fuzz_character_mutations_of_a_valid_token(data: st.DataObject) -> None:
    chars = list(_ORIGINAL)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        kind = data.draw(st.sampled_from(["replace", "insert", "delete", "swap"]), label="kind")
        i = data.draw(st.integers(0, len(chars) - 1), label="at")
        c = data.draw(st.characters(codec="utf-8") | _B64_CHARS, label="char")
        if kind == "replace":
            chars[i] = c
        elif kind == "insert":
            chars.insert(i, c)
        elif kind == "delete" and len(chars) > 1:
            del chars[i]
        else:
            j = data.draw(st.integers(0, len(chars) - 1), label="with")
            chars[i], chars[j] = chars[j], chars[i]
    token = "".join(chars)
    try:
        verified = _verify(token)
    except TokenError:
        return
    assert token == _ORIGINAL, f"a modified token verified: {token!r}"
    assert verified.subject == "psu-1"


@FUZZ
@given(st.permutations([0, 1, 2]), st.sampled_from([".", "..", ""]))
def test_fuzz_reordered_segments(order: list[int], joiner: str) -> None:
    parts = _ORIGINAL.split(".")
    token = joiner.join(parts[i] for i in order)
    try:
        _verify(token)
    except TokenError:
        return
    assert token == _ORIGINAL


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(
    st.sampled_from(["header", "payload"]),
    st.sampled_from(
        ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "client_id", "alg", "typ", "kid", "x"]
    ),
    _JSON,
)
def test_fuzz_json_changes_keep_the_old_signature(part: str, name: str, value: Any) -> None:
    h, p, s = _ORIGINAL.split(".")
    document = json.loads(unb64(h if part == "header" else p))
    document[name] = value
    encoded = b64(dumps(document))
    token = f"{encoded}.{p}.{s}" if part == "header" else f"{h}.{encoded}.{s}"
    try:
        _verify(token)
    except TokenError:
        return
    assert token == _ORIGINAL, f"a modified token verified: {token!r}"


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "client_id", "cnf", "auth_time"]
        ),
        _JSON,
        max_size=6,
    )
)
def test_fuzz_claims_signed_by_the_trusted_key(changes: dict[str, Any]) -> None:
    """Validly signed claims of any shape: verified (then every claim is sound) or a TokenError."""
    token = forge(header(), {**claims(), **changes})
    try:
        verified = _verify(token)
    except TokenError:
        return
    assert verified.issuer == ISS
    assert isinstance(verified.claims["exp"], (int, float))
    assert not isinstance(verified.claims["exp"], bool)
    assert verified.claims["exp"] > NOW
    aud = verified.claims["aud"]
    assert aud == AUD or (isinstance(aud, list) and AUD in aud)
