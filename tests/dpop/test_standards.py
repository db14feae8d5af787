"""STANDARDS §1 (RFC 9449 at the resource server): one or more tests per row DPOP-01 … DPOP-30.

Also MTLS-05 (a certificate-bound token presented with the DPoP scheme), FAPI-01 / MTLS-06
under the ``fapi2`` profile, CFG-06 (advertised ``algs`` equals the verification allow-list)
and the policy checks made at load time for the ``dpop`` section.

Every request runs against a fixed clock, so ``iat`` windows, token lifetimes and nonce ages
are exact. Most rows go through :meth:`Guard.decide`; a representative subset also through
:meth:`Guard.adecide`, and the header-sensitive rows (duplicate proofs, nonce headers, cache
control, CORS, oversized headers) through the real adapters: :class:`BankGuardMiddleware`
under Starlette's ``TestClient`` and :class:`BankGuardWSGI` driven with a PEP 3333 environ.
Each denial is checked for status, the exact ``WWW-Authenticate`` challenge(s), the problem
document, the audit reason, and (through the adapters) that the application never ran.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.middleware.cors import CORSMiddleware
from starlette.testclient import TestClient

from bankguard import (
    BankGuardMiddleware,
    BankGuardWSGI,
    ConfigurationError,
    EventCollector,
    Guard,
    Policy,
    protect,
)
from bankguard.decision import CONTEXT_KEY, Decision
from bankguard.problem import ProblemResponse
from bankguard.request import Headers, RequestFacts
from bankguard.stores import MemoryStore
from bankguard.testing import DPoPKey, TestIssuer, make_facts, sign_compact
from bankguard.tokens.dpop import MAX_JTI_CHARS, access_token_hash, normal_htu
from bankguard.tokens.dpop_nonce import NonceIssuer
from bankguard.tokens.jwk import thumbprint

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ORIGIN = "https://api.bank.example"
ISS = "https://as.bank.example"
ALGS = "ES256 PS256 EdDSA"
PROBLEM = "application/problem+json"
BEARER_E1 = 'Bearer realm="api"'
DPOP_E1 = f'DPoP algs="{ALGS}"'
NONCE_ENV = "BANKGUARD_TEST_DPOP_NONCE_KEY"
INTROSPECTION_ENV = "BANKGUARD_TEST_DPOP_INTROSPECTION_SECRET"
#: RFC 9449 §8.1: ``nonce = 1*NQCHAR``, NQCHAR = %x21 / %x23-5B / %x5D-7E.
NQCHARS = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+\Z")
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: The order of the P-256 group (RFC 7518 §3.4; ATK-18, ATK-19).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

ISSUER = TestIssuer(ISS, alg="ES256", kid="ec-1")
KEY = DPoPKey("ES256")
OTHER_KEY = DPoPKey("ES256")

OPERATIONS: list[dict[str, Any]] = [
    {"method": "GET", "path": "/accounts", "id": "listAccounts", "scopes": ["accounts"]},
    {"method": "GET", "path": "/accounts/{AccountId}", "id": "getAccount", "scopes": ["accounts"]},
    {"method": "POST", "path": "/payments", "id": "createPayment", "scopes": ["accounts"]},
]


# -- policies, clocks, tokens, proofs ----------------------------------------------------------


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy_data(
    *,
    profile: str = "generic",
    dpop: dict[str, Any] | None = None,
    origins: Sequence[str] | None = (ORIGIN,),
    tokens: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "profile": profile,
        "routes": {"operations": OPERATIONS},
        "tokens": tokens
        if tokens is not None
        else {
            "issuers": [
                {"issuer": ISS, "audiences": [ORIGIN], "algorithms": ["ES256"], "jwks": ISSUER.jwks()}
            ]
        },
        "dpop": {"enabled": True, **(dpop or {})},
        **extra,
    }
    if origins is not None:
        data["external_origins"] = list(origins)
    return data


def make_policy(**kwargs: Any) -> Policy:
    return Policy.from_dict(policy_data(**kwargs))


def make_guard(policy: Policy | None = None, clock: Callable[[], float] | None = None) -> Guard:
    return Guard(
        policy if policy is not None else make_policy(), sink=EventCollector(), clock=clock or Clock()
    )


def events_of(guard: Guard) -> list[Any]:
    sink = guard.sink
    assert isinstance(sink, EventCollector)
    return sink.events


def mint(key: DPoPKey | None = KEY, *, now: float = NOW, lifetime: int = 3600, **claims: Any) -> str:
    """An access token from ISSUER, bound to ``key`` (``cnf.jkt``) unless ``key`` is None."""
    return ISSUER.mint(claims or None, now=now, audience=ORIGIN, lifetime=lifetime, dpop_key=key)


def proof(
    key: DPoPKey = KEY,
    method: str = "GET",
    path: str = "/accounts",
    *,
    token: str | None = None,
    iat: float = NOW,
    origin: str = ORIGIN,
    **kwargs: Any,
) -> str:
    return key.proof(method, origin + path, access_token=token, iat=int(iat), **kwargs)


def dpop_headers(token: str, *proofs: str, scheme: str = "DPoP") -> list[tuple[str, str]]:
    return [("authorization", f"{scheme} {token}"), *(("dpop", p) for p in proofs)]


def decide(
    guard: Guard,
    headers: Iterable[tuple[str, str]],
    method: str = "GET",
    target: str = "/accounts",
    *,
    driver: str = "decide",
) -> Decision:
    facts = make_facts(method, target, headers=list(headers))
    if driver == "adecide":
        return asyncio.run(guard.adecide(facts))
    return guard.decide(facts)


def good(guard: Guard, token: str | None = None, *, driver: str = "decide", **kwargs: Any) -> Decision:
    """A request with a fresh, valid proof for GET /accounts."""
    token = token if token is not None else mint()
    return decide(guard, dpop_headers(token, proof(token=token, **kwargs)), driver=driver)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def segments(jws: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    h, p, s = jws.split(".")
    return json.loads(unb64(h)), json.loads(unb64(p)), unb64(s)


def with_signature(jws: str, signature: bytes) -> str:
    h, p, _ = jws.split(".")
    return f"{h}.{p}.{b64(signature)}"


def raw_jws(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, signature: bytes) -> str:
    """A compact JWS from raw parts (no signing)."""

    def enc(part: dict[str, Any] | bytes) -> str:
        return b64(part if isinstance(part, bytes) else json.dumps(part, separators=(",", ":")).encode())

    return f"{enc(header)}.{enc(payload)}.{b64(signature)}"


def proof_claims(token: str | None = None, path: str = "/accounts", **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"jti": "jti-" + b64(hashlib.sha256(repr(overrides).encode()).digest()[:9])}
    claims.update(htm="GET", htu=ORIGIN + path, iat=int(NOW))
    if token is not None:
        claims["ath"] = access_token_hash(token)
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def signed_with(
    private_key: Any, sign_alg: str, header: dict[str, Any], payload: dict[str, Any] | bytes
) -> str:
    return sign_compact(header, payload, private_key, sign_alg)


# -- asserting responses -----------------------------------------------------------------------

_CHALLENGE = re.compile(r'([A-Za-z][A-Za-z0-9]*)((?: [a-z_]+="[^"\\]*"(?:,(?= )|\Z))*)\Z')
_PARAM = re.compile(r' ([a-z_]+)="([^"\\]*)"')


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    """``Scheme k="v", k="v"``; every value within RFC 6750 §3's characters, each name once."""
    m = _CHALLENGE.match(value)
    assert m is not None, f"unparseable challenge {value!r}"
    params: dict[str, str] = {}
    for name, val in _PARAM.findall(m.group(2)):
        assert name not in params, f"{name} repeated in {value!r}"
        assert all(0x20 <= ord(c) <= 0x7E for c in val), value
        params[name] = val
    return m.group(1), params


def named(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name]


def refused(
    guard: Guard, decision: Decision, status: int, reason: str, slug: str
) -> tuple[ProblemResponse, str]:
    """The denial's audit event and problem document; returns the response and its detail."""
    assert not decision.allowed
    event = decision.event
    assert (event.outcome, event.status, event.reason) == ("deny", status, reason), event
    assert events_of(guard)[-1] is event
    response = guard.problem(decision)
    assert response.status == status
    assert named(response.headers, "content-type") == [PROBLEM]
    assert named(response.headers, "cache-control") == ["no-store"]
    document = json.loads(response.body)
    assert document["type"] == "https://bankguard.dev/problems/" + slug
    assert document["status"] == status
    assert document["interaction_id"] == decision.interaction_id
    return response, document["detail"]


def assert_e1(guard: Guard, decision: Decision, reason: str) -> None:
    response, _ = refused(guard, decision, 401, reason, "authentication-required")
    assert named(response.headers, "www-authenticate") == [BEARER_E1, DPOP_E1]
    assert named(response.headers, "dpop-nonce") == []


def assert_dpop_error(
    guard: Guard, decision: Decision, reason: str, error: str, slug: str, algs: str = ALGS
) -> ProblemResponse:
    response, detail = refused(guard, decision, 401, reason, slug)
    (challenge,) = named(response.headers, "www-authenticate")
    scheme, params = parse_challenge(challenge)
    assert scheme == "DPoP"
    assert params == {"algs": algs, "error": error, "error_description": detail}
    assert challenge.startswith(f'DPoP algs="{algs}", error="{error}", ')
    return response


def assert_e3(guard: Guard, decision: Decision, reason: str, algs: str = ALGS) -> None:
    """401 ``invalid_dpop_proof`` (E3) with the DPoP challenge only, no nonce."""
    response = assert_dpop_error(guard, decision, reason, "invalid_dpop_proof", "invalid-dpop-proof", algs)
    assert named(response.headers, "dpop-nonce") == []
    assert decision.event.control == "tokens"


def assert_e2(guard: Guard, decision: Decision, reason: str) -> None:
    """401 ``invalid_token`` (E2) for the DPoP scheme."""
    response = assert_dpop_error(guard, decision, reason, "invalid_token", "invalid-token")
    assert named(response.headers, "dpop-nonce") == []


def assert_e4(guard: Guard, decision: Decision, reason: str) -> str:
    """401 ``use_dpop_nonce`` (E4): exactly one fresh DPoP-Nonce and no-store. Returns the nonce."""
    response = assert_dpop_error(guard, decision, reason, "use_dpop_nonce", "use-dpop-nonce")
    (nonce,) = named(response.headers, "dpop-nonce")
    assert NQCHARS.match(nonce)
    assert named(response.headers, "cache-control") == ["no-store"]
    return nonce


def assert_allowed(decision: Decision) -> None:
    assert decision.allowed, decision.event
    principal = decision.context.principal
    assert principal.authenticated
    assert principal.binding == "dpop"
    assert principal.subject == "psu-1"


@pytest.fixture(params=["decide", "adecide"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(clock: Clock) -> Guard:
    return make_guard(clock=clock)


@pytest.fixture
def nonce_key(monkeypatch: pytest.MonkeyPatch) -> str:
    secret = "n0nce-key-shared-by-every-replica-0123456789"
    monkeypatch.setenv(NONCE_ENV, secret)
    return secret


def nonce_policy(**nonce: Any) -> Policy:
    return make_policy(dpop={"nonce": {"enabled": True, "secret_env": NONCE_ENV, **nonce}})


# -- adapters ------------------------------------------------------------------------------------


class ASGIApp:
    """Records each call (with the principal bankguard established) and answers 200."""

    def __init__(self, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.headers = [("content-type", "application/json"), *headers]
        self.calls: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.calls.append(scope[CONTEXT_KEY].principal)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers],
            }
        )
        await send({"type": "http.response.body", "body": b'{"ok":true}'})


class WSGIApp:
    def __init__(self, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.headers = [("Content-Type", "application/json"), *headers]
        self.calls: list[Any] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.calls.append(environ[CONTEXT_KEY].principal)
        start_response("200 OK", list(self.headers))
        return [b'{"ok":true}']


def asgi_client(guard: Guard, app: Any, base_url: str = ORIGIN) -> TestClient:
    return TestClient(BankGuardMiddleware(app, guard=guard), base_url=base_url)


def wsgi_request(
    app: Any, headers: Sequence[tuple[str, str]], method: str = "GET", target: str = "/accounts"
) -> tuple[int, list[tuple[str, str]], bytes]:
    """A PEP 3333 environ as servers build it (repeated fields merged with ``", "``), one call."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": target,
        "QUERY_STRING": "",
        "RAW_URI": target,
        "SERVER_NAME": "api.bank.example",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.9",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "HTTP_HOST": "api.bank.example",
    }
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault("HTTP_" + name.upper().replace("-", "_"), []).append(value)
    environ.update({k: ", ".join(v) for k, v in merged.items()})
    started: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.update(status=status, headers=response_headers)
        return lambda data: None

    body = b"".join(app(environ, start_response))
    return int(started["status"].split()[0]), [(k.lower(), v) for k, v in started["headers"]], body


# == DPOP-01: exactly one DPoP header field ======================================================


def test_DPOP_01_two_proof_headers(guard: Guard, driver: str) -> None:
    token = mint()
    first, second = proof(token=token), proof(token=token)
    decision = decide(guard, dpop_headers(token, first, second), driver=driver)
    assert_e3(guard, decision, "dpop.multiple_proofs")


def test_DPOP_01_proof_headers_differing_in_case_count_together(guard: Guard) -> None:
    token = mint()
    lines = [("authorization", f"DPoP {token}"), ("DPoP", proof(token=token)), ("dpop", proof(token=token))]
    assert_e3(guard, decide(guard, lines), "dpop.multiple_proofs")


@pytest.mark.parametrize("names", [("DPoP", "DPoP"), ("DPoP", "dpop")], ids=["same-case", "mixed-case"])
def test_DPOP_01_two_proof_lines_through_asgi(guard: Guard, names: tuple[str, str]) -> None:
    app = ASGIApp()
    token = mint()
    headers = [("Authorization", f"DPoP {token}")] + [(n, proof(token=token)) for n in names]
    response = asgi_client(guard, app).get("/accounts", headers=headers)
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == [
        'DPoP algs="ES256 PS256 EdDSA", error="invalid_dpop_proof", '
        'error_description="The DPoP scheme requires exactly one DPoP proof header."'
    ]
    assert response.headers["content-type"] == PROBLEM
    assert events_of(guard)[-1].reason == "dpop.multiple_proofs"
    assert app.calls == []


def test_DPOP_01_merged_proofs_under_wsgi_are_not_one_token68(guard: Guard) -> None:
    """A WSGI server joins the two lines as ``a, b``: one value that is no compact JWS."""
    app = WSGIApp()
    token = mint()
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof(token=token)), ("dpop", proof(token=token))]
    status, response_headers, body = wsgi_request(BankGuardWSGI(app, guard=guard), headers)
    assert status == 401
    (challenge,) = named(response_headers, "www-authenticate")
    assert parse_challenge(challenge)[1]["error"] == "invalid_dpop_proof"
    assert json.loads(body)["type"].endswith("/invalid-dpop-proof")
    # Two 3-segment values joined by ", " split into 5 segments: refused as a JWE shape.
    assert events_of(guard)[-1].reason == "dpop.multiple_proofs"
    assert app.calls == []


def test_DPOP_01_one_proof_line_is_accepted_by_both_adapters(clock: Clock) -> None:
    guard = make_guard(clock=clock)
    asgi_app, wsgi_app = ASGIApp(), WSGIApp()
    token = mint()
    response = asgi_client(guard, asgi_app).get("/accounts", headers=dpop_headers(token, proof(token=token)))
    assert response.status_code == 200
    status, _, _ = wsgi_request(BankGuardWSGI(wsgi_app, guard=guard), dpop_headers(token, proof(token=token)))
    assert status == 200
    assert [p.binding for p in asgi_app.calls + wsgi_app.calls] == ["dpop", "dpop"]


# == DPOP-02: one token68, one well-formed compact JWS ===========================================


def _mutations() -> list[Any]:
    token = "T"
    p = proof(token=token)
    h, pl, s = p.split(".")
    duplicate = b64(b'{"typ":"dpop+jwt","typ":"JWT"}')
    quoted = b64(b'"dpop+jwt"')
    # The signature is 64 bytes: 86 characters, whose last one carries 4 unused bits; the
    # next character of the alphabet decodes to the same bytes with one of those bits set.
    sibling = B64URL[B64URL.index(s[-1]) + 1]
    return [
        pytest.param(p[:40] + " " + p[40:], "dpop.not_base64url", id="space-inside"),
        pytest.param(p[:40] + "\t" + p[40:], "dpop.not_base64url", id="tab-inside"),
        pytest.param(f"{h}.{pl}", "dpop.not_compact_jws", id="2-segments"),
        pytest.param(f"{h}.{pl}.{s}.{s}", "dpop.not_compact_jws", id="4-segments"),
        pytest.param(f"{h}.{pl}.{s}.{s}.{s}", "dpop.jwe_not_accepted", id="5-segments"),
        pytest.param(f"{h}.{pl}.{s}==", "dpop.not_base64url", id="padding"),
        pytest.param(f"{h}=.{pl}.{s}", "dpop.not_base64url", id="padding-in-header"),
        pytest.param(
            f"{h}.{pl.replace('-', '+').replace('_', '/')}x+/.{s}", "dpop.not_base64url", id="b64-std"
        ),
        pytest.param(f"{h}.{pl}!.{s}", "dpop.not_base64url", id="bang"),
        pytest.param(f"{h}.{pl}.", "dpop.signature_missing", id="empty-signature"),
        pytest.param(f"{h}.{pl}.{s[:-1]}{sibling}", "dpop.signature_not_canonical", id="non-canonical-bits"),
        pytest.param(f"{b64(b'[1]')}.{pl}.{s}", "dpop.header_not_object", id="header-array"),
        pytest.param(f"{quoted}.{pl}.{s}", "dpop.header_not_object", id="header-string"),
        pytest.param(f"{b64(b'{nope')}.{pl}.{s}", "dpop.header_not_json", id="header-not-json"),
        pytest.param(f"{duplicate}.{pl}.{s}", "dpop.json_duplicate_member", id="header-duplicate-member"),
        pytest.param(f"{h}.{pl}.{s}".replace(".", ". ", 1), "dpop.not_base64url", id="space-after-dot"),
    ]


@pytest.mark.parametrize(("value", "reason"), _mutations())
def test_DPOP_02_malformed_compact_jws(guard: Guard, value: str, reason: str) -> None:
    assert_e3(guard, decide(guard, dpop_headers(mint(), value)), reason)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(b"[1]", "dpop.payload_not_object", id="array"),
        pytest.param(b'"claims"', "dpop.payload_not_object", id="string"),
        pytest.param(b"{nope", "dpop.payload_not_json", id="not-json"),
        pytest.param(b'{"jti":"a","jti":"b"}', "dpop.json_duplicate_member", id="duplicate-member"),
    ],
)
def test_DPOP_02_signed_payload_that_is_not_a_json_object(guard: Guard, payload: bytes, reason: str) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.public_jwk}
    value = signed_with(KEY._key, "ES256", header, payload)
    assert_e3(guard, decide(guard, dpop_headers(mint(), value)), reason)


# == DPOP-03: required claims, correctly typed ====================================================


@pytest.mark.parametrize(
    ("claim", "reason"),
    [
        ("jti", "dpop.jti_missing"),
        ("htm", "dpop.htm_missing"),
        ("htu", "dpop.htu_missing"),
        ("iat", "dpop.iat_missing"),
    ],
)
def test_DPOP_03_required_claim_missing(guard: Guard, claim: str, reason: str) -> None:
    token = mint()
    value = KEY.proof("GET", ORIGIN + "/accounts", access_token=token, iat=NOW, claims={claim: None})
    assert_e3(guard, decide(guard, dpop_headers(token, value)), reason)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"iat": str(int(NOW))}, "dpop.iat_missing", id="iat-string"),
        pytest.param({"iat": True}, "dpop.iat_missing", id="iat-bool"),
        pytest.param({"iat": [int(NOW)]}, "dpop.iat_missing", id="iat-array"),
        pytest.param({"jti": 42}, "dpop.jti_missing", id="jti-number"),
        pytest.param({"jti": ""}, "dpop.jti_missing", id="jti-empty"),
        pytest.param({"htm": ["GET"]}, "dpop.htm_missing", id="htm-array"),
        pytest.param({"htu": {"u": ORIGIN}}, "dpop.htu_missing", id="htu-object"),
    ],
)
def test_DPOP_03_claim_of_the_wrong_type(guard: Guard, claims: dict[str, Any], reason: str) -> None:
    token = mint()
    value = KEY.proof("GET", ORIGIN + "/accounts", access_token=token, iat=NOW, claims=claims)
    assert_e3(guard, decide(guard, dpop_headers(token, value)), reason)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e309"])
def test_DPOP_03_iat_not_a_finite_number(guard: Guard, literal: str) -> None:
    token = mint()
    claims = proof_claims(token, iat=None)
    payload = json.dumps(claims, separators=(",", ":"))[:-1] + f',"iat":{literal}}}'
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.public_jwk}
    value = signed_with(KEY._key, "ES256", header, payload.encode())
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.json_non_finite_number")


# == DPOP-04: typ is dpop+jwt, compared as a media type ===========================================


@pytest.mark.parametrize("typ", ["at+jwt", "JWT", "jwt", None, "dpop", "application/jwt", "dpop+jwt; x=1", 1])
def test_DPOP_04_typ_not_dpop_jwt(guard: Guard, typ: Any) -> None:
    token = mint()
    value = proof(token=token, header={"typ": typ})
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.typ_not_dpop_jwt")


def test_DPOP_04_access_token_used_as_proof(guard: Guard) -> None:
    token = mint()
    assert_e3(guard, decide(guard, dpop_headers(token, token)), "dpop.typ_not_dpop_jwt")


@pytest.mark.parametrize("typ", ["application/dpop+jwt", "DPoP+JWT", "Application/DPOP+jwt"])
def test_DPOP_04_media_type_forms_accepted(guard: Guard, typ: str) -> None:
    assert_allowed(good(guard, header={"typ": typ}))


# == DPOP-05: alg asymmetric, allow-listed, case-sensitive ========================================


@pytest.mark.parametrize(
    "alg", ["None", "NONE", "HS256", "RS256", "ES256K", "es256", "ES384", "PS512", "", 256]
)
def test_DPOP_05_alg_not_allowed(guard: Guard, alg: Any) -> None:
    token = mint()
    value = proof(token=token, header={"alg": alg})
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.alg_not_allowed")


def test_DPOP_05_alg_none(guard: Guard) -> None:
    token = mint()
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": KEY.public_jwk}
    unsigned = raw_jws(header, proof_claims(token), b"")
    assert_e3(guard, decide(guard, dpop_headers(token, unsigned)), "dpop.signature_missing")
    kept = with_signature(raw_jws(header, proof_claims(token), b""), segments(proof(token=token))[2])
    assert_e3(guard, decide(guard, dpop_headers(token, kept)), "dpop.alg_not_allowed")


def test_DPOP_05_hmac_proof_keyed_with_the_public_key(guard: Guard) -> None:
    token = mint()
    secret = json.dumps(KEY.public_jwk, separators=(",", ":")).encode()
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": KEY.public_jwk}
    value = sign_compact(header, proof_claims(token), secret, "HS256")
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.alg_not_allowed")
    oct_header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64(secret)}}
    value = sign_compact(oct_header, proof_claims(token, jti="oct"), secret, "HS256")
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.alg_not_allowed")


def test_DPOP_05_rs256_refused_under_fapi2() -> None:
    rsa_key = DPoPKey("RS256")
    guard = make_guard(make_policy(profile="fapi2"))
    token = mint(rsa_key)
    value = proof(rsa_key, token=token)
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.alg_not_allowed")


@pytest.mark.parametrize("alg", ["ES256", "PS256", "EdDSA"])
def test_DPOP_05_fapi_algorithms_accepted(alg: str) -> None:
    key = DPoPKey(alg)
    guard = make_guard(make_policy(profile="fapi2"))
    token = mint(key)
    assert_allowed(decide(guard, dpop_headers(token, proof(key, token=token))))


# == DPOP-06: a public jwk, never private material, never by reference ===========================


def _private_d(key: DPoPKey) -> str:
    return b64(key._key.private_numbers().private_value.to_bytes(32, "big"))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param(
            {"jwk": {**KEY.public_jwk, "d": _private_d(KEY)}}, "dpop.jwk_private_material", id="EC-d"
        ),
        pytest.param({"jwk": {**KEY.public_jwk, "oth": []}}, "dpop.jwk_private_material", id="oth"),
        pytest.param({"jwk": {"kty": "oct", "k": b64(b"k" * 32)}}, "dpop.jwk_private_material", id="oct-k"),
        pytest.param({"jwk": {"kty": "oct"}}, "dpop.jwk_kty_not_supported", id="oct-without-k"),
        pytest.param({"jwk": None, "kid": "client-key-1"}, "dpop.jwk_missing", id="kid-only"),
        pytest.param({"jwk": "not-an-object"}, "dpop.jwk_missing", id="jwk-string"),
        pytest.param({"jwk": None, "x5c": ["MIIB"]}, "dpop.header_x5c_refused", id="x5c-instead"),
        pytest.param({"jwk": None, "jku": "https://evil.example/jwks"}, "dpop.header_jku_refused", id="jku"),
        pytest.param({"jwk": None, "x5u": "https://evil.example/c.pem"}, "dpop.header_x5u_refused", id="x5u"),
        pytest.param({"x5c": ["MIIB"]}, "dpop.header_x5c_refused", id="x5c-beside-jwk"),
        pytest.param({"crit": ["exp"], "exp": 1}, "dpop.header_crit_refused", id="crit"),
        pytest.param({"b64": False}, "dpop.header_b64_refused", id="b64"),
    ],
)
def test_DPOP_06_jwk_rules(guard: Guard, header: dict[str, Any], reason: str) -> None:
    token = mint()
    value = proof(token=token, header=header)
    assert_e3(guard, decide(guard, dpop_headers(token, value)), reason)


def test_DPOP_06_rsa_private_members(guard: Guard) -> None:
    key = DPoPKey("PS256")
    numbers = key._key.private_numbers()
    token = mint(key)
    for member, number in (("p", numbers.p), ("q", numbers.q), ("dp", numbers.dmp1), ("qi", numbers.iqmp)):
        jwk = {**key.public_jwk, member: b64(number.to_bytes((number.bit_length() + 7) // 8, "big"))}
        value = proof(key, token=token, header={"jwk": jwk})
        assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.jwk_private_material")


# == DPOP-07: alg consistent with the jwk ========================================================


def _ec_jwk(public: ec.EllipticCurvePublicKey, crv: str, size: int) -> dict[str, str]:
    numbers = public.public_numbers()
    return {
        "kty": "EC",
        "crv": crv,
        "x": b64(numbers.x.to_bytes(size, "big")),
        "y": b64(numbers.y.to_bytes(size, "big")),
    }


def test_DPOP_07_es256_header_with_p384_key(guard: Guard) -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    token = mint()
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": _ec_jwk(private.public_key(), "P-384", 48)}
    value = signed_with(private, "ES384", header, proof_claims(token))
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.jwk_alg_not_allowed")


def test_DPOP_07_ps256_with_1024_bit_rsa_key(guard: Guard) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    numbers = private.public_key().public_numbers()
    jwk = {"kty": "RSA", "n": b64(numbers.n.to_bytes(128, "big")), "e": "AQAB"}
    token = mint()
    value = signed_with(
        private, "PS256", {"typ": "dpop+jwt", "alg": "PS256", "jwk": jwk}, proof_claims(token)
    )
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.rsa_key_size")


def test_DPOP_07_eddsa_with_x25519_key(guard: Guard) -> None:
    x = x25519.X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    token = mint()
    header = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "X25519", "x": b64(x)}}
    value = raw_jws(header, proof_claims(token), b"\x01" * 64)
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.jwk_curve_not_supported")


@pytest.mark.parametrize("profile", ["generic", "fapi2"])
def test_DPOP_07_eddsa_only_with_ed25519(profile: str) -> None:
    """STANDARDS DPOP-07 and FAPI-05 pair EdDSA with OKP/Ed25519 only: an Ed448 key is refused."""
    guard = make_guard(make_policy(profile=profile))
    private = ed448.Ed448PrivateKey.generate()
    jwk = {
        "kty": "OKP",
        "crv": "Ed448",
        "x": b64(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)),
    }
    token = ISSUER.mint(now=NOW, audience=ORIGIN, lifetime=3600, claims={"cnf": {"jkt": thumbprint(jwk)}})
    value = signed_with(
        private, "EdDSA", {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}, proof_claims(token)
    )
    decision = decide(guard, dpop_headers(token, value))
    assert not decision.allowed, "an Ed448 proof key was accepted for EdDSA"
    assert decision.event.status == 401
    assert_e3(guard, decision, decision.event.reason or "")


def test_DPOP_07_rsa_key_with_es256(guard: Guard) -> None:
    key = DPoPKey("PS256")
    token = mint(key)
    value = proof(key, token=token, header={"alg": "ES256"})
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.jwk_alg_not_allowed")


def test_DPOP_07_jwk_alg_member_differs(guard: Guard) -> None:
    token = mint()
    value = proof(token=token, header={"jwk": {**KEY.public_jwk, "alg": "ES384"}})
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.jwk_alg_mismatch")
    same = proof(token=token, header={"jwk": {**KEY.public_jwk, "alg": "ES256"}})
    assert_allowed(decide(guard, dpop_headers(token, same)))


def test_DPOP_07_off_curve_point(guard: Guard) -> None:
    y = unb64(KEY.public_jwk["y"])
    bad_y = b64(y[:-1] + bytes([y[-1] ^ 1]))
    token = mint()
    value = proof(token=token, header={"jwk": {**KEY.public_jwk, "y": bad_y}})
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.jwk_invalid")


# == DPOP-08: the signature verifies with the jwk ================================================


def test_DPOP_08_flipped_signature_bit(guard: Guard) -> None:
    token = mint()
    value = proof(token=token)
    signature = bytearray(segments(value)[2])
    signature[10] ^= 0x01
    assert_e3(
        guard,
        decide(guard, dpop_headers(token, with_signature(value, bytes(signature)))),
        "dpop.signature_invalid",
    )


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        pytest.param(b"\x00" * 64, "dpop.signature_out_of_range", id="all-zero"),
        pytest.param(P256_N.to_bytes(32, "big") * 2, "dpop.signature_out_of_range", id="r=s=n"),
        pytest.param(
            P256_N.to_bytes(32, "big") + (1).to_bytes(32, "big"), "dpop.signature_out_of_range", id="r=n"
        ),
        pytest.param(b"\x01" * 63, "dpop.signature_length", id="63-bytes"),
        pytest.param(b"\x01" * 65, "dpop.signature_length", id="65-bytes"),
        pytest.param(encode_dss_signature(5, 7), "dpop.signature_length", id="DER"),
    ],
)
def test_DPOP_08_psychic_and_malformed_signatures(guard: Guard, signature: bytes, reason: str) -> None:
    token = mint()
    value = with_signature(proof(token=token), signature)
    assert_e3(guard, decide(guard, dpop_headers(token, value)), reason)


def test_DPOP_08_signature_of_another_key(guard: Guard) -> None:
    token = mint()
    theirs = proof(OTHER_KEY, token=token)
    value = with_signature(proof(token=token), segments(theirs)[2])
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.signature_invalid")


# == DPOP-09: htm equals the method, case-sensitively ============================================


@pytest.mark.parametrize("htm", ["POST", "get", "Get", "HEAD", ""])
def test_DPOP_09_htm_mismatch(guard: Guard, htm: str) -> None:
    token = mint()
    value = proof(token=token, claims={"htm": htm})
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.htm_mismatch")


def test_DPOP_09_method_override_never_reaches_the_proof_check(guard: Guard) -> None:
    token = mint()
    value = proof(method="POST", token=token)
    headers = [*dpop_headers(token, value), ("x-http-method-override", "POST")]
    decision = decide(guard, headers)
    assert (decision.event.status, decision.event.reason) == (400, "request.method_override_header")
    assert not decision.allowed


def test_DPOP_09_post_proof_for_post(guard: Guard) -> None:
    token = mint()
    decision = decide(
        guard, dpop_headers(token, proof(method="POST", path="/payments", token=token)), "POST", "/payments"
    )
    assert_allowed(decision)


# == DPOP-10: htu matches the target URI after RFC 3986 normalisation ============================


@pytest.mark.parametrize(
    ("htu", "target"),
    [
        pytest.param(
            "HTTPS://API.Bank.Example:443/accounts/./acc-001?x=1#f", "/accounts/acc-001", id="rfc-example"
        ),
        pytest.param("https://api.bank.example/accounts/x/../acc-001", "/accounts/acc-001", id="dot-dot"),
        pytest.param(
            "https://api.bank.example/%61ccounts/acc%2D001", "/accounts/acc-001", id="unreserved-escapes"
        ),
        pytest.param("https://api.bank.example/accounts/acc%3a1", "/accounts/acc%3A1", id="hex-case"),
        pytest.param("https://api.bank.example/accounts?from=2020", "/accounts?page=2", id="queries-ignored"),
        pytest.param("https://api.bank.example/accounts#frag", "/accounts", id="fragment-ignored"),
    ],
)
def test_DPOP_10_htu_normalised_match(guard: Guard, htu: str, target: str) -> None:
    token = mint()
    path = target.split("?", 1)[0]
    value = proof(path=path, token=token, claims={"htu": htu})
    assert_allowed(decide(guard, dpop_headers(token, value), "GET", target))


@pytest.mark.parametrize(
    ("htu", "expected"),
    [
        ("https://API.bank.example", ("https", "api.bank.example", "/")),
        ("HTTPS://api.bank.example:443", ("https", "api.bank.example", "/")),
        ("https://api.bank.example:8443/a/b/", ("https", "api.bank.example:8443", "/a/b/")),
        ("https://api.bank.example/a/%7e/%2f/%41", ("https", "api.bank.example", "/a/~/%2F/A")),
        ("https://[2001:DB8::1]/a", ("https", "[2001:db8::1]", "/a")),
    ],
)
def test_DPOP_10_normal_form(htu: str, expected: tuple[str, str, str]) -> None:
    assert normal_htu(htu) == expected


def test_DPOP_10_request_path_is_normalised_too(guard: Guard) -> None:
    """The raw request path with an escaped unreserved character matches the plain htu."""
    token = mint()
    facts = RequestFacts(
        method="GET",
        scheme="https",
        path="/accounts/acc-001",
        raw_path=b"/accounts/acc%2d001",
        headers=Headers(dpop_headers(token, proof(path="/accounts/acc-001", token=token))),
        peer="127.0.0.1",
    )
    assert_allowed(guard.decide(facts))


@pytest.mark.parametrize(
    ("htu", "target", "reason"),
    [
        pytest.param(
            ORIGIN + "/accounts/", "/accounts", "dpop.htu_path_mismatch", id="trailing-slash-in-proof"
        ),
        pytest.param(
            ORIGIN + "/accounts", "/accounts/", "dpop.htu_path_mismatch", id="trailing-slash-in-request"
        ),
        pytest.param(
            ORIGIN + "/accounts%2Facc-001", "/accounts/acc-001", "dpop.htu_path_mismatch", id="encoded-slash"
        ),
        pytest.param(ORIGIN + "/Accounts", "/accounts", "dpop.htu_path_mismatch", id="path-case"),
        pytest.param(
            "https://other.bank.example/accounts", "/accounts", "dpop.htu_origin_mismatch", id="other-host"
        ),
        pytest.param("http://api.bank.example/accounts", "/accounts", "dpop.htu_origin_mismatch", id="http"),
        pytest.param(ORIGIN + ":8443/accounts", "/accounts", "dpop.htu_origin_mismatch", id="other-port"),
        pytest.param(
            "https://user@api.bank.example/accounts", "/accounts", "dpop.htu_invalid", id="userinfo"
        ),
        pytest.param("/accounts", "/accounts", "dpop.htu_invalid", id="relative"),
        pytest.param("ftp://api.bank.example/accounts", "/accounts", "dpop.htu_invalid", id="ftp"),
        pytest.param(ORIGIN + "/acc%zzounts", "/accounts", "dpop.htu_invalid", id="bad-escape"),
    ],
)
def test_DPOP_10_htu_mismatch(guard: Guard, htu: str, target: str, reason: str) -> None:
    if target == "/accounts/":
        guard = make_guard(
            Policy.from_dict(
                {
                    **policy_data(),
                    "routes": {
                        "operations": [
                            {"method": "GET", "path": "/accounts/", "id": "slash", "scopes": ["accounts"]}
                        ]
                    },
                }
            )
        )
    token = mint()
    value = proof(token=token, claims={"htu": htu})
    assert_e3(guard, decide(guard, dpop_headers(token, value), "GET", target), reason)


# == DPOP-11: htu is compared with the configured origins, never with Host =======================


def test_DPOP_11_forged_host_does_not_choose_the_origin(guard: Guard) -> None:
    token = mint()
    value = proof(token=token, origin="https://other-rs.example")
    headers = [
        *dpop_headers(token, value),
        ("host", "other-rs.example"),
        ("x-forwarded-host", "other-rs.example"),
    ]
    assert_e3(guard, decide(guard, headers), "dpop.htu_origin_mismatch")


def test_DPOP_11_through_asgi_with_a_foreign_host() -> None:
    guard = make_guard()
    app = ASGIApp()
    client = asgi_client(guard, app, base_url="https://other-rs.example")
    token = mint()
    response = client.get(
        "/accounts", headers=dpop_headers(token, proof(token=token, origin="https://other-rs.example"))
    )
    assert response.status_code == 401
    assert events_of(guard)[-1].reason == "dpop.htu_origin_mismatch"
    assert app.calls == []
    # The Host the client wrote plays no part: a proof for the configured origin is what counts.
    response = client.get("/accounts", headers=dpop_headers(token, proof(token=token)))
    assert response.status_code == 200
    assert len(app.calls) == 1


def test_DPOP_11_origin_with_path_prefix_and_several_origins() -> None:
    guard = make_guard(
        make_policy(origins=["https://api.bank.example/open-banking/v3", "https://api2.bank.example"])
    )
    token = mint()
    value = KEY.proof("GET", "https://api.bank.example/open-banking/v3/accounts", access_token=token, iat=NOW)
    assert_allowed(decide(guard, dpop_headers(token, value)))
    assert_allowed(decide(guard, dpop_headers(token, proof(token=token, origin="https://api2.bank.example"))))
    unprefixed = proof(token=token)
    assert_e3(guard, decide(guard, dpop_headers(token, unprefixed)), "dpop.htu_path_mismatch")


# == DPOP-12: iat inside [now - max_age, now + future_skew] =====================================


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        pytest.param(-3600, "dpop.iat_too_old", id="hour-old"),
        pytest.param(-61, "dpop.iat_too_old", id="max_age+1"),
        pytest.param(120, "dpop.iat_in_future", id="two-minutes-ahead"),
        pytest.param(11, "dpop.iat_in_future", id="future_skew+1"),
    ],
)
def test_DPOP_12_iat_outside_the_window(guard: Guard, offset: int, reason: str) -> None:
    token = mint()
    assert_e3(guard, decide(guard, dpop_headers(token, proof(token=token, iat=NOW + offset))), reason)


@pytest.mark.parametrize("offset", [5, 0, -60, 10, -30])
def test_DPOP_12_iat_inside_the_window(guard: Guard, offset: int) -> None:
    assert_allowed(good(guard, iat=NOW + offset))


def test_DPOP_12_configured_window_bounds() -> None:
    clock = Clock()
    guard = make_guard(make_policy(dpop={"max_age": "300s", "future_skew": "60s"}), clock)
    token = mint()
    for offset in (-300, 60):
        assert_allowed(decide(guard, dpop_headers(token, proof(token=token, iat=NOW + offset))))
    assert_e3(
        guard, decide(guard, dpop_headers(token, proof(token=token, iat=NOW - 301))), "dpop.iat_too_old"
    )
    assert_e3(
        guard, decide(guard, dpop_headers(token, proof(token=token, iat=NOW + 61))), "dpop.iat_in_future"
    )


def test_DPOP_12_the_guard_clock_decides(clock: Clock) -> None:
    guard = make_guard(clock=clock)
    token = mint()
    value = proof(token=token, iat=NOW)
    clock.now = NOW + 61
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.iat_too_old")


# == DPOP-13: single-use jti ====================================================================


def test_DPOP_13_identical_proof_replayed(guard: Guard, driver: str) -> None:
    token = mint()
    value = proof(token=token)
    assert_allowed(decide(guard, dpop_headers(token, value), driver=driver))
    assert_e3(guard, decide(guard, dpop_headers(token, value), driver=driver), "dpop.replayed")


def test_DPOP_13_replay_through_adapters(clock: Clock) -> None:
    guard = make_guard(clock=clock)
    asgi_app, wsgi_app = ASGIApp(), WSGIApp()
    token = mint()
    value = proof(token=token)
    client = asgi_client(guard, asgi_app)
    assert client.get("/accounts", headers=dpop_headers(token, value)).status_code == 200
    response = client.get("/accounts", headers=dpop_headers(token, value))
    assert response.status_code == 401
    assert parse_challenge(response.headers["www-authenticate"])[1]["error"] == "invalid_dpop_proof"
    # The replay entry is shared by every adapter of the guard.
    status, _, _ = wsgi_request(BankGuardWSGI(wsgi_app, guard=guard), dpop_headers(token, value))
    assert status == 401
    assert [e.reason for e in events_of(guard)] == [None, "dpop.replayed", "dpop.replayed"]
    assert len(asgi_app.calls) == 1
    assert wsgi_app.calls == []


def test_DPOP_13_same_jti_resigned(guard: Guard) -> None:
    token = mint()
    assert_allowed(decide(guard, dpop_headers(token, proof(token=token, jti="one-jti"))))
    # A new signature (ECDSA is randomised), same key, same jti, even a later iat.
    again = proof(token=token, jti="one-jti", iat=NOW + 1)
    assert_e3(guard, decide(guard, dpop_headers(token, again)), "dpop.replayed")


def test_DPOP_13_same_jti_other_target_or_key(guard: Guard) -> None:
    token, other_token = mint(), mint(OTHER_KEY)
    assert_allowed(decide(guard, dpop_headers(token, proof(token=token, jti="shared"))))
    value = proof(OTHER_KEY, path="/accounts/acc-001", token=other_token, jti="shared")
    assert_e3(
        guard, decide(guard, dpop_headers(other_token, value), "GET", "/accounts/acc-001"), "dpop.replayed"
    )


def test_DPOP_13_high_s_twin_is_a_replay(guard: Guard) -> None:
    """ATK-19: replacing s with n - s still verifies; the jti entry refuses it."""
    token = mint()
    value = proof(token=token)
    signature = segments(value)[2]
    r, s = signature[:32], int.from_bytes(signature[32:], "big")
    twin = with_signature(value, r + (P256_N - s).to_bytes(32, "big"))
    assert twin != value
    assert_allowed(decide(guard, dpop_headers(token, value)))
    assert_e3(guard, decide(guard, dpop_headers(token, twin)), "dpop.replayed")


def test_DPOP_13_refused_proof_consumes_no_jti(guard: Guard) -> None:
    token = mint()
    assert_e3(
        guard,
        decide(guard, dpop_headers(token, proof(token=token, jti="j1", iat=NOW - 3600))),
        "dpop.iat_too_old",
    )
    assert_allowed(decide(guard, dpop_headers(token, proof(token=token, jti="j1"))))


def test_DPOP_13_replay_entry_lives_as_long_as_the_proof(clock: Clock) -> None:
    """The entry outlives the acceptance window of the proof, then is evicted (DPOP-28)."""
    guard = Guard(make_policy(), sink=EventCollector(), clock=clock, store=MemoryStore(clock=clock))
    token = mint()
    value = proof(token=token, jti="window", iat=NOW + 10)  # as far ahead as future_skew allows
    assert_allowed(decide(guard, dpop_headers(token, value)))
    clock.now = NOW + 70  # the last second in which iat = NOW + 10 is still inside max_age
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.replayed")
    clock.now = NOW + 71
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.iat_too_old")
    clock.now = NOW + 72  # past max_age + future_skew + 1: the entry is gone
    assert_allowed(decide(guard, dpop_headers(token, proof(token=token, jti="window", iat=clock.now))))


def test_DPOP_13_jti_length_cap(guard: Guard) -> None:
    token = mint()
    assert_allowed(decide(guard, dpop_headers(token, proof(token=token, jti="j" * MAX_JTI_CHARS))))
    value = proof(token=token, jti="j" * 300)
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.jti_too_long")


def test_DPOP_13_ten_kilobyte_jti() -> None:
    token = mint()
    value = proof(token=token, jti="j" * 10_000)
    # Default max_proof_bytes (8 KiB): the header cap answers first (STANDARDS §0 order, DPOP-28).
    guard = make_guard()
    refused(
        guard,
        decide(guard, dpop_headers(token, value)),
        431,
        "dpop.proof_too_large",
        "header-fields-too-large",
    )
    # With room for the proof, the jti cap refuses it.
    roomy = make_guard(make_policy(dpop={"max_proof_bytes": "64KiB"}))
    assert_e3(roomy, decide(roomy, dpop_headers(token, value)), "dpop.jti_too_long")


# == DPOP-14: ath over the exact access token ====================================================


def test_DPOP_14_ath_mismatch(guard: Guard, driver: str) -> None:
    token_a, token_b = mint(), mint()
    assert token_a != token_b
    value = proof(token=token_a)
    assert_e3(guard, decide(guard, dpop_headers(token_b, value), driver=driver), "dpop.ath_mismatch")


def test_DPOP_14_ath_missing(guard: Guard) -> None:
    token = mint()
    assert_e3(guard, decide(guard, dpop_headers(token, proof()), driver="decide"), "dpop.ath_missing")
    value = proof(token=token, claims={"ath": 1})
    assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.ath_missing")


def test_DPOP_14_ath_is_exact(guard: Guard) -> None:
    token = mint()
    digest = hashlib.sha256(token.encode()).digest()
    for ath in (base64.urlsafe_b64encode(digest).decode(), b64(digest).upper(), b64(digest) + " "):
        value = proof(token=token, claims={"ath": ath})
        assert_e3(guard, decide(guard, dpop_headers(token, value)), "dpop.ath_mismatch")


def test_DPOP_14_vector_V2() -> None:
    assert (
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU")
        == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


# == DPOP-15: cnf.jkt is the RFC 7638 thumbprint of the proof key ================================


def test_DPOP_15_proof_key_differs_from_binding(guard: Guard, driver: str) -> None:
    token = mint(KEY)
    value = proof(OTHER_KEY, token=token)
    decision = decide(guard, dpop_headers(token, value), driver=driver)
    assert_e2(guard, decision, "token.dpop_key_mismatch")
    assert named(guard.problem(decision).headers, "www-authenticate") == [
        'DPoP algs="ES256 PS256 EdDSA", error="invalid_token", error_description="Invalid DPoP key binding."'
    ]


def test_DPOP_15_vector_V1() -> None:
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
        "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    }
    assert thumbprint(jwk) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    assert thumbprint({**jwk, "kid": "k", "use": "sig", "alg": "ES256"}) == thumbprint(jwk)


def test_DPOP_15_thumbprint_uses_required_members_only(guard: Guard) -> None:
    token = mint()
    value = proof(token=token, header={"jwk": {**KEY.public_jwk, "kid": "device-1", "use": "sig"}})
    assert_allowed(decide(guard, dpop_headers(token, value)))


@pytest.mark.parametrize("jkt", ["", "x", 42, None, "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"])
def test_DPOP_15_malformed_or_foreign_jkt(guard: Guard, jkt: Any) -> None:
    token = ISSUER.mint(now=NOW, audience=ORIGIN, lifetime=3600, claims={"cnf": {"jkt": jkt}})
    assert_e2(guard, decide(guard, dpop_headers(token, proof(token=token))), "token.dpop_key_mismatch")


# == DPOP-16: introspected tokens: cnf.jkt and token_type ========================================


class IntrospectionServer:
    """An RFC 7662 endpoint on 127.0.0.1 answering from ``answers`` (token → JSON object)."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {}
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                from urllib.parse import parse_qs

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                token = parse_qs(body.decode("ascii")).get("token", [""])[0]
                server.hits += 1
                payload = json.dumps(server.answers.get(token, {"active": False})).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/introspect"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def introspection(monkeypatch: pytest.MonkeyPatch) -> Iterator[IntrospectionServer]:
    monkeypatch.setenv(INTROSPECTION_ENV, "rs-secret")
    server = IntrospectionServer()
    yield server
    server.stop()


def introspection_guard(server: IntrospectionServer) -> Guard:
    tokens = {
        "introspection": {
            "endpoint": server.url,
            "client_id": "rs",
            "client_secret_env": INTROSPECTION_ENV,
            "insecure_http": True,
            "timeout": "2s",
        }
    }
    return make_guard(make_policy(tokens=tokens))


def active(jkt: str | None, token_type: str | None, **claims: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {"active": True, "sub": "psu-1", "client_id": "tpp", "scope": "accounts"}
    answer.update(exp=int(NOW) + 300, iat=int(NOW))
    if jkt is not None:
        answer["cnf"] = {"jkt": jkt}
    if token_type is not None:
        answer["token_type"] = token_type
    answer.update(claims)
    return answer


@pytest.mark.network
def test_DPOP_16_introspection_token_type_bearer_with_dpop_scheme(introspection: IntrospectionServer) -> None:
    guard = introspection_guard(introspection)
    introspection.answers["opaque-bearer"] = active(KEY.thumbprint, "Bearer")
    decision = decide(guard, dpop_headers("opaque-bearer", proof(token="opaque-bearer")))
    assert_e2(guard, decision, "token.type_not_dpop")
    assert introspection.hits == 1


@pytest.mark.network
def test_DPOP_16_introspection_dpop_token(introspection: IntrospectionServer, driver: str) -> None:
    guard = introspection_guard(introspection)
    token = "opaque-dpop-token=="  # token68 padding is part of what ath covers
    introspection.answers[token] = active(KEY.thumbprint, "DPoP")
    decision = decide(guard, dpop_headers(token, proof(token=token)), driver=driver)
    assert_allowed(decision)
    # ath over the token without its padding is another token's hash.
    stripped = proof(token=token.rstrip("="))
    assert_e3(guard, decide(guard, dpop_headers(token, stripped), driver=driver), "dpop.ath_mismatch")
    # The same token as Bearer is a downgrade (RFC 9449 §6.2, §7.2).
    decision = decide(guard, [("authorization", f"Bearer {token}")], driver=driver)
    response, detail = refused(guard, decision, 401, "token.dpop_bound_presented_as_bearer", "invalid-token")
    assert named(response.headers, "www-authenticate") == [
        f'Bearer realm="api", error="invalid_token", error_description="{detail}"',
        DPOP_E1,
    ]


@pytest.mark.network
def test_DPOP_16_introspection_binding_checked_locally(introspection: IntrospectionServer) -> None:
    guard = introspection_guard(introspection)
    introspection.answers["opaque-other-key"] = active(OTHER_KEY.thumbprint, "DPoP")
    introspection.answers["opaque-unbound"] = active(None, "DPoP")
    introspection.answers["opaque-untyped"] = active(KEY.thumbprint, None)
    decision = decide(guard, dpop_headers("opaque-other-key", proof(token="opaque-other-key")))
    assert_e2(guard, decision, "token.dpop_key_mismatch")
    decision = decide(guard, dpop_headers("opaque-unbound", proof(token="opaque-unbound")))
    assert_e2(guard, decision, "token.not_dpop_bound")
    # token_type is optional in the response; when absent the binding decides.
    assert_allowed(decide(guard, dpop_headers("opaque-untyped", proof(token="opaque-untyped"))))


# == DPOP-17: the DPoP scheme needs a proof; the scheme name is case-insensitive ================


def test_DPOP_17_dpop_scheme_without_proof(guard: Guard, driver: str) -> None:
    decision = decide(guard, [("authorization", f"DPoP {mint()}")], driver=driver)
    assert_e3(guard, decision, "dpop.proof_missing")
    assert named(guard.problem(decision).headers, "www-authenticate") == [
        'DPoP algs="ES256 PS256 EdDSA", error="invalid_dpop_proof", '
        'error_description="The DPoP scheme requires exactly one DPoP proof header."'
    ]


@pytest.mark.parametrize("scheme", ["dpop", "DPOP", "DPoP", "dPoP"])
def test_DPOP_17_scheme_is_case_insensitive(guard: Guard, scheme: str, driver: str) -> None:
    token = mint()
    assert_allowed(decide(guard, dpop_headers(token, proof(token=token), scheme=scheme), driver=driver))


def test_DPOP_17_lowercase_scheme_failure_still_gets_the_dpop_challenge(guard: Guard) -> None:
    decision = decide(guard, [("authorization", f"dpop {mint()}")])
    assert_e3(guard, decision, "dpop.proof_missing")


def test_DPOP_17_all_checks_must_pass(guard: Guard) -> None:
    """Expired token with a perfect proof: no access."""
    token = mint(now=NOW - 7200)
    decision = decide(guard, dpop_headers(token, proof(token=token)))
    assert_e2(guard, decision, "token.expired")


# == DPOP-18: Bearer downgrade of a DPoP-bound token ============================================


@pytest.mark.parametrize("with_proof", [False, True], ids=["no-proof", "with-proof"])
def test_DPOP_18_bound_token_as_bearer(guard: Guard, driver: str, with_proof: bool) -> None:
    token = mint()
    headers = [("authorization", f"Bearer {token}")]
    if with_proof:
        headers.append(("dpop", proof(token=token)))
    decision = decide(guard, headers, driver=driver)
    response, detail = refused(guard, decision, 401, "token.dpop_bound_presented_as_bearer", "invalid-token")
    challenges = named(response.headers, "www-authenticate")
    assert challenges == [f'Bearer realm="api", error="invalid_token", error_description="{detail}"', DPOP_E1]
    assert parse_challenge(challenges[1]) == ("DPoP", {"algs": ALGS})


def test_DPOP_18_through_asgi(guard: Guard) -> None:
    app = ASGIApp()
    token = mint()
    response = asgi_client(guard, app).get("/accounts", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    challenges = response.headers.get_list("www-authenticate")
    assert challenges[0].startswith('Bearer realm="api", error="invalid_token"')
    assert challenges[1:] == [DPOP_E1]
    assert app.calls == []


# == DPOP-19: unbound token with the DPoP scheme =================================================


def test_DPOP_19_unbound_token_with_valid_proof(guard: Guard, driver: str) -> None:
    token = mint(None)
    decision = decide(guard, dpop_headers(token, proof(token=token)), driver=driver)
    assert_e2(guard, decision, "token.not_dpop_bound")


# == DPOP-20: challenges =========================================================================


def test_DPOP_20_no_credentials(guard: Guard, driver: str) -> None:
    decision = decide(guard, [], driver=driver)
    assert_e1(guard, decision, "token.missing")
    for challenge in named(guard.problem(decision).headers, "www-authenticate"):
        assert "error" not in challenge


def test_DPOP_20_no_credentials_through_adapters(guard: Guard) -> None:
    asgi_app, wsgi_app = ASGIApp(), WSGIApp()
    response = asgi_client(guard, asgi_app).get("/accounts")
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == [BEARER_E1, DPOP_E1]
    status, headers, _ = wsgi_request(BankGuardWSGI(wsgi_app, guard=guard), [])
    assert status == 401
    assert named(headers, "www-authenticate") == [BEARER_E1, DPOP_E1]
    assert asgi_app.calls == wsgi_app.calls == []


def test_DPOP_20_unsupported_scheme_offers_both(guard: Guard) -> None:
    assert_e1(guard, decide(guard, [("authorization", "Basic dXNlcjpwYXNz")]), "token.unsupported_scheme")


def test_DPOP_20_only_the_used_scheme_carries_the_error(guard: Guard) -> None:
    bad_bearer = decide(guard, [("authorization", f"Bearer {mint(None)}x")])
    (challenge,) = named(guard.problem(bad_bearer).headers, "www-authenticate")
    scheme, params = parse_challenge(challenge)
    assert (scheme, params["error"]) == ("Bearer", "invalid_token")
    token = mint()
    bad_proof = decide(guard, dpop_headers(token, proof(token=token, iat=NOW - 3600)))
    assert_e3(guard, bad_proof, "dpop.iat_too_old")


# == DPOP-21: ambiguous credentials ==============================================================


def _assert_e6_both(challenges: list[str]) -> None:
    parsed = [parse_challenge(c) for c in challenges]
    assert [s for s, _ in parsed] == ["Bearer", "DPoP"]
    for _, params in parsed:
        assert params["error"] == "invalid_request"
    assert parsed[1][1]["algs"] == ALGS


def test_DPOP_21_two_authorization_lines(guard: Guard, driver: str) -> None:
    token = mint()
    headers = [
        ("authorization", f"Bearer {token}"),
        ("authorization", f"DPoP {token}"),
        ("dpop", proof(token=token)),
    ]
    decision = decide(guard, headers, driver=driver)
    response, _ = refused(guard, decision, 400, "authorization.duplicate", "invalid-request")
    _assert_e6_both(named(response.headers, "www-authenticate"))


def test_DPOP_21_two_authorization_lines_through_adapters(guard: Guard) -> None:
    token = mint()
    headers = [
        ("Authorization", f"Bearer {token}"),
        ("Authorization", f"DPoP {token}"),
        ("DPoP", proof(token=token)),
    ]
    asgi_app = ASGIApp()
    response = asgi_client(guard, asgi_app).get("/accounts", headers=headers)
    assert response.status_code == 400
    _assert_e6_both(response.headers.get_list("www-authenticate"))
    assert asgi_app.calls == []


def test_DPOP_21_merged_authorization_under_wsgi(guard: Guard) -> None:
    """WSGI joins the two lines as ``Bearer t, DPoP t``; still ambiguous, still both challenges."""
    token = mint()
    headers = [
        ("Authorization", f"Bearer {token}"),
        ("Authorization", f"DPoP {token}"),
        ("DPoP", proof(token=token)),
    ]
    wsgi_app = WSGIApp()
    status, response_headers, _ = wsgi_request(BankGuardWSGI(wsgi_app, guard=guard), headers)
    assert status == 400
    assert events_of(guard)[-1].reason == "authorization.duplicate"
    assert wsgi_app.calls == []
    _assert_e6_both(named(response_headers, "www-authenticate"))


# == DPOP-22: Proxy-Authorization is never read ==================================================


def test_DPOP_22_token_only_in_proxy_authorization(guard: Guard, driver: str) -> None:
    token = mint()
    headers = [("proxy-authorization", f"DPoP {token}"), ("dpop", proof(token=token))]
    assert_e1(guard, decide(guard, headers, driver=driver), "token.missing")


def test_DPOP_22_proxy_authorization_beside_authorization_is_ignored(guard: Guard) -> None:
    token = mint()
    headers = [*dpop_headers(token, proof(token=token)), ("proxy-authorization", "DPoP garbage")]
    assert_allowed(decide(guard, headers))


# == DPOP-23 / DPOP-25: server nonces ===========================================================


def test_DPOP_23_nonce_required_then_accepted(nonce_key: str, clock: Clock, driver: str) -> None:
    guard = make_guard(nonce_policy(), clock)
    token = mint()
    decision = decide(guard, dpop_headers(token, proof(token=token)), driver=driver)
    nonce = assert_e4(guard, decision, "dpop.nonce_missing")
    # Retry with the nonce: accepted; no new nonce is needed yet.
    decision = decide(guard, dpop_headers(token, proof(token=token, nonce=nonce)), driver=driver)
    assert_allowed(decision)
    assert named(decision.response_headers, "dpop-nonce") == []
    # Never again without one (§11.3 nonce downgrade).
    assert_e4(
        guard, decide(guard, dpop_headers(token, proof(token=token)), driver=driver), "dpop.nonce_missing"
    )


def test_DPOP_23_nonces_are_unpredictable_nqchar(nonce_key: str, clock: Clock) -> None:
    guard = make_guard(nonce_policy(), clock)
    token = mint()
    nonces = {
        assert_e4(guard, decide(guard, dpop_headers(token, proof(token=token))), "dpop.nonce_missing")
        for _ in range(5)
    }
    assert len(nonces) == 5
    assert all(NQCHARS.match(n) for n in nonces)


@pytest.mark.parametrize(
    "nonce",
    [
        pytest.param("made-up-nonce", id="unknown"),
        pytest.param("A" * 44, id="right-length"),
        pytest.param(42, id="number"),
        pytest.param("", id="empty"),
    ],
)
def test_DPOP_23_unknown_nonce(nonce_key: str, clock: Clock, nonce: Any) -> None:
    guard = make_guard(nonce_policy(), clock)
    token = mint()
    value = proof(token=token, claims={"nonce": nonce})
    assert_e4(guard, decide(guard, dpop_headers(token, value)), "dpop.nonce_invalid")


def test_DPOP_23_tampered_nonce(nonce_key: str, clock: Clock) -> None:
    guard = make_guard(nonce_policy(), clock)
    token = mint()
    nonce = assert_e4(guard, decide(guard, dpop_headers(token, proof(token=token))), "dpop.nonce_missing")
    raw = bytearray(unb64(nonce))
    raw[3] ^= 0x01  # the issue time: the tag no longer matches
    value = proof(token=token, nonce=b64(bytes(raw)))
    assert_e4(guard, decide(guard, dpop_headers(token, value)), "dpop.nonce_invalid")


def test_DPOP_23_stale_nonce_gets_a_fresh_one(nonce_key: str, clock: Clock) -> None:
    guard = make_guard(nonce_policy(lifetime="300s"), clock)
    token = mint()
    nonce = assert_e4(guard, decide(guard, dpop_headers(token, proof(token=token))), "dpop.nonce_missing")
    clock.now = NOW + 301
    stale = proof(token=token, nonce=nonce, iat=clock.now)
    fresh = assert_e4(guard, decide(guard, dpop_headers(token, stale)), "dpop.nonce_invalid")
    assert fresh != nonce
    assert_allowed(decide(guard, dpop_headers(token, proof(token=token, nonce=fresh, iat=clock.now))))


def test_DPOP_23_nonce_within_lifetime(nonce_key: str, clock: Clock) -> None:
    guard = make_guard(nonce_policy(lifetime="300s"), clock)
    token = mint()
    nonce = assert_e4(guard, decide(guard, dpop_headers(token, proof(token=token))), "dpop.nonce_missing")
    clock.now = NOW + 300
    assert_allowed(decide(guard, dpop_headers(token, proof(token=token, nonce=nonce, iat=clock.now))))


def test_DPOP_25_authorization_server_nonce_is_refused(nonce_key: str, clock: Clock, driver: str) -> None:
    guard = make_guard(nonce_policy(), clock)
    as_nonces = NonceIssuer(
        b"the authorization server's own key!!", lifetime=300, rotate_after=120, clock=clock
    )
    token = mint()
    value = proof(token=token, nonce=as_nonces.issue())
    fresh = assert_e4(guard, decide(guard, dpop_headers(token, value), driver=driver), "dpop.nonce_invalid")
    assert_allowed(decide(guard, dpop_headers(token, proof(token=token, nonce=fresh)), driver=driver))


def test_DPOP_25_other_rs_nonce_is_refused(
    nonce_key: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = make_guard(nonce_policy(), clock)
    monkeypatch.setenv(NONCE_ENV, "another-resource-server-key-0123456789abcdef")
    other_rs = make_guard(nonce_policy(), clock)
    token = mint()
    foreign = assert_e4(
        other_rs, decide(other_rs, dpop_headers(token, proof(token=token))), "dpop.nonce_missing"
    )
    value = proof(token=token, nonce=foreign)
    assert_e4(guard, decide(guard, dpop_headers(token, value)), "dpop.nonce_invalid")


def test_DPOP_25_replicas_sharing_the_key_accept_each_others_nonces(nonce_key: str, clock: Clock) -> None:
    first, second = make_guard(nonce_policy(), clock), make_guard(nonce_policy(), clock)
    token = mint()
    nonce = assert_e4(first, decide(first, dpop_headers(token, proof(token=token))), "dpop.nonce_missing")
    assert_allowed(decide(second, dpop_headers(token, proof(token=token, nonce=nonce))))


# == DPOP-24: at most one DPoP-Nonce per response ================================================


def _nonce_guard_and_stale_nonce(clock: Clock) -> tuple[Guard, str]:
    """A guard in nonce mode and one of its own nonces, now older than rotate_after."""
    guard = make_guard(nonce_policy(lifetime="300s", rotate_after="120s"), clock)
    token = mint()
    nonce = assert_e4(guard, decide(guard, dpop_headers(token, proof(token=token))), "dpop.nonce_missing")
    clock.now = NOW + 130  # older than rotate_after, within lifetime
    return guard, nonce


@pytest.mark.parametrize("app_sets_nonce", [False, True], ids=["plain-app", "app-sets-DPoP-Nonce"])
def test_DPOP_24_one_nonce_header_through_asgi(nonce_key: str, clock: Clock, app_sets_nonce: bool) -> None:
    guard, stale = _nonce_guard_and_stale_nonce(clock)
    app = ASGIApp([("DPoP-Nonce", "app-nonce")] if app_sets_nonce else [])
    client = asgi_client(guard, app)
    token = mint()
    # 401 E4
    response = client.get("/accounts", headers=dpop_headers(token, proof(token=token, iat=clock.now)))
    assert response.status_code == 401
    assert len(response.headers.get_list("dpop-nonce")) == 1
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert parse_challenge(response.headers["www-authenticate"])[1]["error"] == "use_dpop_nonce"
    # 200 with a rotated nonce
    response = client.get(
        "/accounts", headers=dpop_headers(token, proof(token=token, nonce=stale, iat=clock.now))
    )
    assert response.status_code == 200
    (rotated,) = response.headers.get_list("dpop-nonce")
    assert rotated != "app-nonce"
    # 200 with a young nonce: bankguard adds none; the application's own (if any) is the only one.
    response = client.get(
        "/accounts", headers=dpop_headers(token, proof(token=token, nonce=rotated, iat=clock.now))
    )
    assert response.status_code == 200
    assert response.headers.get_list("dpop-nonce") == (["app-nonce"] if app_sets_nonce else [])
    assert len(app.calls) == 2


@pytest.mark.parametrize("app_sets_nonce", [False, True], ids=["plain-app", "app-sets-DPoP-Nonce"])
def test_DPOP_24_one_nonce_header_through_wsgi(nonce_key: str, clock: Clock, app_sets_nonce: bool) -> None:
    guard, stale = _nonce_guard_and_stale_nonce(clock)
    app = WSGIApp([("DPoP-Nonce", "app-nonce")] if app_sets_nonce else [])
    mw = BankGuardWSGI(app, guard=guard)
    token = mint()
    status, headers, _ = wsgi_request(mw, dpop_headers(token, proof(token=token, iat=clock.now)))
    assert status == 401
    assert len(named(headers, "dpop-nonce")) == 1
    status, headers, _ = wsgi_request(mw, dpop_headers(token, proof(token=token, nonce=stale, iat=clock.now)))
    assert status == 200
    (rotated,) = named(headers, "dpop-nonce")
    assert rotated != "app-nonce"
    assert len(app.calls) == 1


def test_DPOP_24_decision_carries_one_nonce(nonce_key: str, clock: Clock) -> None:
    guard, stale = _nonce_guard_and_stale_nonce(clock)
    token = mint()
    decision = decide(guard, dpop_headers(token, proof(token=token, nonce=stale, iat=clock.now)))
    assert_allowed(decision)
    merged = guard.merge_response_headers([("DPoP-Nonce", "a"), ("dpop-nonce", "b")], decision)
    assert len(named(merged, "dpop-nonce")) == 1
    assert named(merged, "dpop-nonce") == named(decision.response_headers, "dpop-nonce")


# == DPOP-26: a 2xx with a rotated nonce is not cacheable ========================================


def test_DPOP_26_rotated_nonce_response_is_no_store_asgi(nonce_key: str, clock: Clock) -> None:
    guard, stale = _nonce_guard_and_stale_nonce(clock)
    app = ASGIApp([("Cache-Control", "public, max-age=60")])
    token = mint()
    response = asgi_client(guard, app).get(
        "/accounts", headers=dpop_headers(token, proof(token=token, nonce=stale, iat=clock.now))
    )
    assert response.status_code == 200
    assert len(response.headers.get_list("dpop-nonce")) == 1
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert len(app.calls) == 1


def test_DPOP_26_rotated_nonce_response_is_no_store_wsgi(nonce_key: str, clock: Clock) -> None:
    guard, stale = _nonce_guard_and_stale_nonce(clock)
    app = WSGIApp([("Cache-Control", "public, max-age=60")])
    token = mint()
    status, headers, _ = wsgi_request(
        BankGuardWSGI(app, guard=guard), dpop_headers(token, proof(token=token, nonce=stale, iat=clock.now))
    )
    assert status == 200
    assert len(named(headers, "dpop-nonce")) == 1
    assert named(headers, "cache-control") == ["no-store"]


def test_DPOP_26_rotation_threshold(nonce_key: str, clock: Clock) -> None:
    guard = make_guard(nonce_policy(rotate_after="120s"), clock)
    token = mint()
    nonce = assert_e4(guard, decide(guard, dpop_headers(token, proof(token=token))), "dpop.nonce_missing")
    clock.now = NOW + 119
    decision = decide(guard, dpop_headers(token, proof(token=token, nonce=nonce, iat=clock.now)))
    assert_allowed(decision)
    assert named(decision.response_headers, "dpop-nonce") == []
    clock.now = NOW + 120
    decision = decide(guard, dpop_headers(token, proof(token=token, nonce=nonce, iat=clock.now)))
    assert_allowed(decision)
    (rotated,) = named(decision.response_headers, "dpop-nonce")
    assert NQCHARS.match(rotated)
    assert rotated != nonce


# == DPOP-27: CORS for browser clients (deployed outside bankguard) ===============================


def _cors_app() -> tuple[Any, ASGIApp]:
    inner = ASGIApp()
    policy = make_policy()
    app = CORSMiddleware(
        protect(inner, policy),
        allow_origins=["https://tpp.example"],
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "DPoP", "Content-Type", "x-fapi-interaction-id"],
        expose_headers=["WWW-Authenticate", "DPoP-Nonce", "x-fapi-interaction-id"],
    )
    return app, inner


def test_DPOP_27_preflight_allows_the_dpop_headers() -> None:
    app, inner = _cors_app()
    response = TestClient(app, base_url=ORIGIN).options(
        "/accounts",
        headers={
            "Origin": "https://tpp.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, dpop",
        },
    )
    assert response.status_code == 200
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "dpop"} <= allowed
    assert response.headers["access-control-allow-origin"] == "https://tpp.example"
    assert inner.calls == []


def test_DPOP_27_refusal_exposes_challenge_and_nonce_headers() -> None:
    app, inner = _cors_app()
    response = TestClient(app, base_url=ORIGIN).get("/accounts", headers={"Origin": "https://tpp.example"})
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == [BEARER_E1, DPOP_E1]
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"www-authenticate", "dpop-nonce"} <= exposed
    assert response.headers["access-control-allow-origin"] == "https://tpp.example"
    assert inner.calls == []


def test_DPOP_27_preflight_inside_bankguard_is_refused() -> None:
    """Without CORS outside, a preflight meets bankguard's route table: not an operation."""
    inner = ASGIApp()
    guard = make_guard()
    response = asgi_client(guard, inner).options(
        "/accounts", headers={"Origin": "https://tpp.example", "Access-Control-Request-Method": "GET"}
    )
    assert response.status_code == 405
    assert "access-control-allow-headers" not in response.headers
    assert "GET" in response.headers["allow"]
    assert inner.calls == []


def test_DPOP_27_unlisted_origin_gets_no_cors_headers() -> None:
    app, _ = _cors_app()
    response = TestClient(app, base_url=ORIGIN).options(
        "/accounts", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


# == DPOP-28: bounded resources ==================================================================


def test_DPOP_28_64k_proof_header(guard: Guard) -> None:
    token = mint()
    value = proof(token=token, jti="j" * 48_000)
    assert len(value) >= 64_000
    decision = decide(guard, dpop_headers(token, value))
    assert not decision.allowed
    assert decision.event.status == 431
    assert decision.event.reason in ("request.header_field_too_large", "request.headers_too_large")
    assert decision.event.duration_ms < 1000


def test_DPOP_28_64k_proof_header_through_adapters(guard: Guard) -> None:
    token = mint()
    value = "A" * 65_536
    asgi_app, wsgi_app = ASGIApp(), WSGIApp()
    response = asgi_client(guard, asgi_app).get("/accounts", headers=dpop_headers(token, value))
    assert response.status_code == 431
    status, _, _ = wsgi_request(BankGuardWSGI(wsgi_app, guard=guard), dpop_headers(token, value))
    assert status == 431
    assert asgi_app.calls == wsgi_app.calls == []


def test_DPOP_28_9k_proof_over_max_proof_bytes(guard: Guard, driver: str) -> None:
    token = mint()
    value = proof(token=token, jti="j" * 6_500)
    assert 8 * 1024 < len(value) < 16 * 1024
    decision = decide(guard, dpop_headers(token, value), driver=driver)
    refused(guard, decision, 431, "dpop.proof_too_large", "header-fields-too-large")
    assert decision.event.control == "tokens"


def test_DPOP_28_full_replay_cache_never_forgets_a_live_jti() -> None:
    """At its entry cap, the jti cache must not evict entries whose proofs are still acceptable:
    that would re-open replay (DPOP-13) for exactly the client that fills it."""
    policy = make_policy(storage={"max_entries": 1000})
    guard = make_guard(policy)
    token = mint()
    first = proof(token=token, jti="first")
    assert_allowed(decide(guard, dpop_headers(token, first)))
    for i in range(policy.storage.max_entries - 1):
        assert decide(guard, dpop_headers(token, proof(token=token, jti=f"filler-{i}"))).allowed
    # Full of live entries: a new proof fails closed (503) rather than forgetting one...
    full = decide(guard, dpop_headers(token, proof(token=token, jti="one-too-many")))
    assert (full.event.status, full.event.reason) == (503, "tokens.store_failure")
    # ...and the first proof, still inside its window, is still a replay.
    decision = decide(guard, dpop_headers(token, first))
    assert (decision.event.status, decision.event.reason) == (401, "dpop.replayed")


def test_DPOP_28_max_proof_bytes_is_configurable() -> None:
    guard = make_guard(make_policy(dpop={"max_proof_bytes": "1KiB"}))
    token = mint()
    assert_allowed(decide(guard, dpop_headers(token, proof(token=token))))
    decision = decide(guard, dpop_headers(token, proof(token=token, claims={"pad": "p" * 600})))
    assert (decision.event.status, decision.event.reason) == (431, "dpop.proof_too_large")


def _rsa_jwk(bits: int, e: int = 65537) -> dict[str, str]:
    n = (1 << (bits - 1)) | 1
    return {
        "kty": "RSA",
        "n": b64(n.to_bytes(bits // 8, "big")),
        "e": b64(e.to_bytes((e.bit_length() + 7) // 8, "big")),
    }


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        pytest.param(_rsa_jwk(8192), "dpop.jwk_rsa_too_large", id="rsa-8192"),
        pytest.param(_rsa_jwk(4096 + 8), "dpop.jwk_rsa_too_large", id="rsa-4104"),
        pytest.param(_rsa_jwk(16384), "dpop.rsa_key_size", id="rsa-16384"),
        pytest.param(_rsa_jwk(2048, e=(1 << 64) + 1), "dpop.jwk_rsa_exponent", id="huge-exponent"),
    ],
)
def test_DPOP_28_proof_key_size_bounds(jwk: dict[str, str], reason: str) -> None:
    guard = make_guard(make_policy(dpop={"max_proof_bytes": "16KiB"}))
    token = mint()
    value = raw_jws({"typ": "dpop+jwt", "alg": "PS256", "jwk": jwk}, proof_claims(token), b"\x01" * 256)
    assert_e3(guard, decide(guard, dpop_headers(token, value)), reason)


# == DPOP-29: a proof alone never authenticates ==================================================


def test_DPOP_29_proof_without_authorization(guard: Guard, driver: str) -> None:
    value = proof(token=mint())
    assert_e1(guard, decide(guard, [("dpop", value)], driver=driver), "token.missing")


def test_DPOP_29_proof_without_authorization_through_asgi(guard: Guard) -> None:
    app = ASGIApp()
    response = asgi_client(guard, app).get("/accounts", headers={"DPoP": proof(token=mint())})
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == [BEARER_E1, DPOP_E1]
    assert app.calls == []


# == DPOP-30: cross-endpoint replay ===============================================================


def test_DPOP_30_proof_for_another_path(guard: Guard, driver: str) -> None:
    token = mint()
    value = proof(token=token, path="/accounts")
    decision = decide(guard, dpop_headers(token, value), "GET", "/accounts/123", driver=driver)
    assert_e3(guard, decision, "dpop.htu_path_mismatch")


def test_DPOP_30_proof_for_another_method(guard: Guard) -> None:
    token = mint()
    value = proof(token=token, method="GET", path="/payments")
    assert_e3(guard, decide(guard, dpop_headers(token, value), "POST", "/payments"), "dpop.htm_mismatch")


def test_DPOP_30_used_proof_replayed_elsewhere(guard: Guard) -> None:
    token = mint()
    value = proof(token=token, path="/accounts")
    assert_allowed(decide(guard, dpop_headers(token, value)))
    assert_e3(
        guard, decide(guard, dpop_headers(token, value), "GET", "/accounts/123"), "dpop.htu_path_mismatch"
    )


# == MTLS-05, FAPI-01 / MTLS-06 =================================================================


def test_MTLS_05_certificate_bound_token_with_dpop_scheme(guard: Guard) -> None:
    token = ISSUER.mint(
        now=NOW,
        audience=ORIGIN,
        lifetime=3600,
        claims={"cnf": {"x5t#S256": "A4DtL2JmUMhAsvJj5tKyn64SqzmuXbMrJa0n761y5v0"}},
    )
    assert_e2(guard, decide(guard, dpop_headers(token, proof(token=token))), "token.not_dpop_bound")


def test_MTLS_05_both_bindings_must_verify(guard: Guard) -> None:
    cnf = {"jkt": KEY.thumbprint, "x5t#S256": "A4DtL2JmUMhAsvJj5tKyn64SqzmuXbMrJa0n761y5v0"}
    token = ISSUER.mint(now=NOW, audience=ORIGIN, lifetime=3600, claims={"cnf": cnf})
    assert_e2(guard, decide(guard, dpop_headers(token, proof(token=token))), "token.certificate_missing")


def test_FAPI_01_MTLS_06_fapi2_accepts_dpop_bound_tokens(driver: str) -> None:
    guard = make_guard(make_policy(profile="fapi2"))
    token = mint()
    decision = decide(guard, dpop_headers(token, proof(token=token)), driver=driver)
    assert_allowed(decision)
    assert decision.context.principal.binding == "dpop"


def test_FAPI_01_MTLS_06_fapi2_refuses_unbound_tokens(driver: str) -> None:
    guard = make_guard(make_policy(profile="fapi2"))
    token = mint(None)
    decision = decide(guard, [("authorization", f"Bearer {token}")], driver=driver)
    response, detail = refused(guard, decision, 401, "token.not_sender_constrained", "invalid-token")
    (challenge,) = named(response.headers, "www-authenticate")
    assert challenge == f'Bearer realm="api", error="invalid_token", error_description="{detail}"'
    assert_e2(
        guard, decide(guard, dpop_headers(token, proof(token=token)), driver=driver), "token.not_dpop_bound"
    )


# == CFG-06: advertised algs equal the allow-list =================================================


@pytest.mark.parametrize(
    "algorithms",
    [["ES256", "PS256", "EdDSA"], ["PS256", "ES256"], ["EdDSA"], ["ES256", "RS256", "ES384"]],
    ids=lambda a: "-".join(a),
)
def test_CFG_06_advertised_algs_equal_the_allow_list(algorithms: list[str]) -> None:
    policy = make_policy(dpop={"algorithms": algorithms})
    assert list(policy.dpop.algorithms) == algorithms
    guard = make_guard(policy)
    algs = " ".join(algorithms)
    decision = decide(guard, [])
    assert named(guard.problem(decision).headers, "www-authenticate") == [BEARER_E1, f'DPoP algs="{algs}"']
    for alg in ("ES256", "PS256", "EdDSA"):
        key = DPoPKey(alg) if alg != "PS256" else _PS256_KEY
        token = mint(key)
        decision = decide(guard, dpop_headers(token, proof(key, token=token)))
        if alg in algorithms:
            assert_allowed(decision)
        else:
            assert_e3(guard, decision, "dpop.alg_not_allowed", algs=algs)


_PS256_KEY = DPoPKey("PS256")


def test_CFG_06_default_algorithms() -> None:
    assert make_policy().dpop.algorithms == ("ES256", "PS256", "EdDSA")


# == policy checks at load time ==================================================================


def _problem_paths(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigurationError) as info:
        Policy.from_dict(data)
    return [p.path for p in info.value.problems]


def test_CFG_dpop_needs_external_origins() -> None:
    assert _problem_paths(policy_data(origins=None)) == ["external_origins"]
    assert "external_origins" in _problem_paths(policy_data(origins=[]))


@pytest.mark.parametrize(
    ("origin", "path"),
    [
        ("api.bank.example", "external_origins[0]"),
        ("https://api.bank.example/?q=1", "external_origins[0]"),
        ("https://user@api.bank.example", "external_origins[0]"),
        ("ftp://api.bank.example", "external_origins[0]"),
    ],
)
def test_CFG_external_origins_must_be_plain_urls(origin: str, path: str) -> None:
    assert _problem_paths(policy_data(origins=[origin])) == [path]


def test_CFG_fapi1_adv_refuses_dpop() -> None:
    # FAPI 1.0 Advanced binds tokens with mTLS only: the scheme itself is refused ...
    assert _problem_paths(policy_data(profile="fapi1-adv", dpop={"algorithms": ["ES256", "PS256"]})) == [
        "dpop.enabled"
    ]
    # ... and with the default allow-list, EdDSA (not a FAPI 1.0 algorithm) is named as well.
    assert _problem_paths(policy_data(profile="fapi1-adv")) == ["dpop.enabled", "dpop.algorithms[2]"]


def test_CFG_fapi2_refuses_rs256_proofs() -> None:
    assert _problem_paths(policy_data(profile="fapi2", dpop={"algorithms": ["RS256"]})) == [
        "dpop.algorithms[0]"
    ]
    assert _problem_paths(policy_data(profile="fapi2", dpop={"algorithms": ["ES256", "ES384"]})) == [
        "dpop.algorithms[1]"
    ]


@pytest.mark.parametrize("alg", ["HS256", "none", "es256"])
def test_CFG_dpop_algorithms_are_asymmetric(alg: str) -> None:
    assert _problem_paths(policy_data(dpop={"algorithms": ["ES256", alg]})) == ["dpop.algorithms[1]"]


def test_CFG_dpop_needs_token_verification() -> None:
    data = policy_data(tokens={})
    data["routes"] = {"operations": [{"method": "GET", "path": "/health", "id": "health", "public": True}]}
    assert _problem_paths(data) == ["dpop.enabled"]


def test_CFG_nonce_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _problem_paths(policy_data(dpop={"nonce": {"enabled": True}})) == ["dpop.nonce.secret_env"]
    monkeypatch.delenv(NONCE_ENV, raising=False)
    assert _problem_paths(policy_data(dpop={"nonce": {"enabled": True, "secret_env": NONCE_ENV}})) == [
        "dpop.nonce.secret_env"
    ]
    monkeypatch.setenv(NONCE_ENV, "x" * 31)
    assert _problem_paths(policy_data(dpop={"nonce": {"enabled": True, "secret_env": NONCE_ENV}})) == [
        "dpop.nonce.secret_env"
    ]
    monkeypatch.setenv(NONCE_ENV, "x" * 32)
    assert Policy.from_dict(
        policy_data(dpop={"nonce": {"enabled": True, "secret_env": NONCE_ENV}})
    ).dpop.nonce.enabled


def test_CFG_nonce_needs_dpop(nonce_key: str) -> None:
    data = policy_data(dpop={"nonce": {"enabled": True, "secret_env": NONCE_ENV}})
    data["dpop"]["enabled"] = False
    assert _problem_paths(data) == ["dpop.nonce.enabled"]


@pytest.mark.parametrize(
    ("nonce", "path"),
    [
        ({"lifetime": "5s", "rotate_after": "4s"}, "dpop.nonce.lifetime"),
        ({"lifetime": "2h"}, "dpop.nonce.lifetime"),
        ({"rotate_after": "0s"}, "dpop.nonce.rotate_after"),
        ({"lifetime": "60s", "rotate_after": "61s"}, "dpop.nonce.rotate_after"),
    ],
)
def test_CFG_nonce_timing_bounds(nonce_key: str, nonce: dict[str, Any], path: str) -> None:
    data = policy_data(dpop={"nonce": {"enabled": True, "secret_env": NONCE_ENV, **nonce}})
    assert _problem_paths(data) == [path]


@pytest.mark.parametrize(
    ("dpop", "path"),
    [
        ({"max_age": "0s"}, "dpop.max_age"),
        ({"max_age": "301s"}, "dpop.max_age"),
        ({"future_skew": "61s"}, "dpop.future_skew"),
        ({"future_skew": "-1s"}, "dpop.future_skew"),
        ({"max_proof_bytes": "512"}, "dpop.max_proof_bytes"),
        ({"max_proof_bytes": "65KiB"}, "dpop.max_proof_bytes"),
    ],
)
def test_CFG_07_window_bounds(dpop: dict[str, Any], path: str) -> None:
    assert _problem_paths(policy_data(dpop=dpop)) == [path]


@pytest.mark.parametrize(
    "dpop", [{"max_age": "300s", "future_skew": "60s"}, {"max_age": "1s", "future_skew": "0s"}]
)
def test_CFG_07_window_bounds_inclusive(dpop: dict[str, Any]) -> None:
    policy = make_policy(dpop=dpop)
    assert policy.dpop.max_age in (300, 1)
