"""The JWT attack catalogue (STANDARDS §8, ATK-01..ATK-31) against the access-token path.

Every attack is a request through a real :class:`~bankguard.Guard` built from a policy with
inline key sets, as an application would build it. Expected for access tokens: 401
``invalid_token`` (template E2), a problem document, an audit event naming the control and
the reason, no side effects (no file, process, socket or database activity while deciding,
watched with an audit hook) and no outbound request (an "attacker" server on 127.0.0.1
counts its hits). Where the request never reaches the token control (the Authorization
field itself is malformed, or too large) the expected answer is the earlier control's.

The DPoP-only rows (ATK-32..ATK-36 and the proof halves of ATK-17/19/27) belong to the
DPoP control and are not here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID

from bankguard import ConfigurationError, EventCollector, Guard, Policy
from bankguard.decision import Decision
from bankguard.testing import TestIssuer, make_facts
from bankguard.tokens.jose import JoseError, SharedSecret, check_key_for_alg, verify_signature
from bankguard.tokens.jwt import IssuerRules, JwtVerifier, TokenError
from bankguard.tokens.keys import StaticKeySource

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z; every guard here runs on this clock
AUD = "https://api.bank.example"
ISS = "https://as.bank.example"
OTHER_ISS = "https://other-as.example"
RSA_ISS = "https://rsa.bank.example"
ED_ISS = "https://ed.bank.example"

EC_ISSUER = TestIssuer(ISS, alg="ES256", kid="ec-1")
#: A second trusted issuer that, nastily, uses the same ``kid``.
OTHER_ISSUER = TestIssuer(OTHER_ISS, alg="ES256", kid="ec-1")
RSA_ISSUER = TestIssuer(RSA_ISS, alg="RS256", kid="rsa-1")
ED_ISSUER = TestIssuer(ED_ISS, alg="EdDSA", kid="ed-1")

ATTACKER_EC = ec.generate_private_key(ec.SECP256R1())
ATTACKER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def signing_key(issuer: TestIssuer) -> Any:
    """The issuer's private key, to sign hand-built (malicious) tokens with a trusted key."""
    return issuer._key


# -- building tokens byte by byte ---------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


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
    if alg.startswith("ES"):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(digests[alg[2:]])))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(signing_input)  # EdDSA


def forge(
    header: dict[str, Any] | bytes,
    payload: dict[str, Any] | bytes,
    *,
    key: Any = None,
    alg: str | None = None,
    signature: bytes | None = None,
) -> str:
    """A compact JWS from exact header and payload bytes, signed with ``key`` under ``alg``."""
    h = header if isinstance(header, bytes) else dumps(header)
    p = payload if isinstance(payload, bytes) else dumps(payload)
    signing_input = f"{b64(h)}.{b64(p)}".encode("ascii")
    if signature is None:
        signature = raw_sign(key, alg or "", signing_input) if key is not None else b""
    return f"{signing_input.decode('ascii')}.{b64(signature)}"


def claims(iss: str = ISS, **changes: Any) -> dict[str, Any]:
    """Valid RFC 9068 claims at NOW; a change to None removes the claim."""
    body: dict[str, Any] = {
        "iss": iss,
        "sub": "psu-1",
        "aud": AUD,
        "client_id": "tpp-client-1",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "jti": "jti-1",
        "scope": "accounts payments",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def header(alg: str = "ES256", kid: str | None = "ec-1", **changes: Any) -> dict[str, Any]:
    head: dict[str, Any] = {"alg": alg, "typ": "at+jwt", "kid": kid}
    head.update(changes)
    return {k: v for k, v in head.items() if v is not None}


def ec_token(head: dict[str, Any] | None = None, body: dict[str, Any] | bytes | None = None) -> str:
    """Signed by the trusted EC issuer's own key: only the named part is malicious."""
    return forge(
        head if head is not None else header(),
        body if body is not None else claims(),
        key=signing_key(EC_ISSUER),
        alg="ES256",
    )


def good_token() -> str:
    return EC_ISSUER.mint(now=NOW, audience=AUD, scope="accounts payments")


def segments(token: str) -> list[str]:
    return token.split(".")


# -- the guard ---------------------------------------------------------------------------------------


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
    {"method": "GET", "path": "/health", "id": "health", "public": True},
]


def make_policy(*issuers: dict[str, Any], **tokens: Any) -> Policy:
    entries = list(issuers) or [
        issuer_entry(EC_ISSUER, ["ES256"]),
        issuer_entry(OTHER_ISSUER, ["ES256"]),
        issuer_entry(RSA_ISSUER, ["RS256", "PS256"]),
        issuer_entry(ED_ISSUER, ["EdDSA"]),
    ]
    return Policy.from_dict(
        {"routes": {"operations": OPERATIONS}, "tokens": {"issuers": entries, "leeway": 0, **tokens}}
    )


POLICY = make_policy()


@pytest.fixture
def events() -> EventCollector:
    return EventCollector()


@pytest.fixture
def guard(events: EventCollector) -> Guard:
    return Guard(POLICY, sink=events, clock=lambda: NOW)


# -- side effects ----------------------------------------------------------------------------------

_WATCHED = (
    "open",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "subprocess.Popen",
    "socket.connect",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "sqlite3.connect",
    "urllib.Request",
    "os.listdir",
    "os.scandir",
)
_recorders: list[tuple[int, list[str]]] = []


_NETWORK = ("socket.", "urllib.Request")


class _OutboundBlocked(RuntimeError):
    """Raised inside a watched decision that tries to use the network: nothing leaves the host."""


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recorders and event.startswith(_WATCHED):
        ident, seen = _recorders[-1]
        if threading.get_ident() == ident:
            seen.append(event)
            if event.startswith(_NETWORK):
                raise _OutboundBlocked(event)


sys.addaudithook(_audit)


@contextmanager
def no_side_effects() -> Iterator[None]:
    """Fail if the block opens a file, starts a process, resolves or connects a socket (network
    attempts are also stopped on the spot, so a regression could not reach beyond this host)."""
    seen: list[str] = []
    _recorders.append((threading.get_ident(), seen))
    try:
        yield
    finally:
        _recorders.pop()
    assert seen == [], f"side effects while deciding: {seen}"


def decide(guard: Guard, token: str, method: str = "GET", path: str = "/accounts") -> Decision:
    facts = make_facts(method, path, headers=[("authorization", f"Bearer {token}")])
    guard.decide(make_facts("GET", "/health"))  # warm up: lazy imports are not side effects
    with no_side_effects():
        return guard.decide(facts)


def assert_e2(
    decision: Decision, events: EventCollector, guard: Guard, reason: str | tuple[str, ...]
) -> None:
    """401 invalid_token from the token control, with the audit reason (or one of several, where
    only the family is stable), Bearer challenge and problem body."""
    assert not decision.allowed
    event = events.events[-1]
    assert event is decision.event
    assert (event.outcome, event.status, event.control) == ("deny", 401, "tokens"), event
    reasons = (reason,) if isinstance(reason, str) else reason
    assert event.reason in reasons
    response = guard.problem(decision)
    assert response.status == 401
    headers = dict(response.headers)
    assert headers["content-type"] == "application/problem+json"
    challenge = headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    document = json.loads(response.body)
    assert document["status"] == 401
    assert document["type"].endswith("/invalid-token")
    # The precise reason code is for the audit trail, never for the client.
    assert event.reason not in response.body.decode()
    assert event.reason not in challenge


#: Reason codes of a segment that is not strict, canonical base64url (the segment may be named).
NOT_BASE64URL = tuple(
    f"token.{seg}{kind}"
    for seg in ("", "header_", "payload_", "signature_")
    for kind in ("not_base64url", "not_canonical")
)


def assert_rejected_early(decision: Decision, status: int, control: str, reason: str) -> None:
    """Refused before the token control: a malformed Authorization field (400) or too large (431)."""
    assert not decision.allowed
    assert (decision.event.status, decision.event.control, decision.event.reason) == (status, control, reason)


def test_the_unmodified_token_is_accepted(guard: Guard, events: EventCollector) -> None:
    """Control experiment: every attack below starts from this accepted token."""
    decision = decide(guard, good_token())
    assert decision.allowed, decision.event
    assert decision.context.principal.subject == "psu-1"
    assert events.events[-1].outcome == "allow"


# -- ATK-01..04: alg none and missing alg --------------------------------------------------------


def test_ATK_01_alg_none_empty_signature(guard: Guard, events: EventCollector) -> None:
    token = forge({"alg": "none", "typ": "at+jwt"}, claims())
    assert token.endswith(".")
    assert_e2(decide(guard, token), events, guard, "token.signature_missing")


def test_ATK_01_alg_none_with_some_signature_bytes(guard: Guard, events: EventCollector) -> None:
    token = forge({"alg": "none", "typ": "at+jwt"}, claims(), signature=b"\x00")
    assert_e2(decide(guard, token), events, guard, "token.alg_not_allowed")


NONE_VARIANTS = [
    pytest.param("none", id="none"),
    pytest.param("None", id="None"),
    pytest.param("NONE", id="NONE"),
    pytest.param("nOnE", id="nOnE"),
    pytest.param("none ", id="trailing-space"),
    pytest.param(" none", id="leading-space"),
    pytest.param("none\u0000", id="trailing-NUL"),
    pytest.param("none\t", id="trailing-tab"),
    pytest.param("n\u043ene", id="cyrillic-o"),
]


@pytest.mark.parametrize("alg", NONE_VARIANTS)
def test_ATK_02_none_case_variants_empty_signature(guard: Guard, events: EventCollector, alg: str) -> None:
    token = forge(header(alg=alg), claims())
    assert_e2(decide(guard, token), events, guard, "token.signature_missing")


@pytest.mark.parametrize("alg", NONE_VARIANTS)
def test_ATK_03_none_keeping_the_original_signature(guard: Guard, events: EventCollector, alg: str) -> None:
    _, p, s = segments(good_token())
    token = f"{b64(dumps(header(alg=alg)))}.{p}.{s}"
    assert_e2(decide(guard, token), events, guard, "token.alg_not_allowed")


@pytest.mark.parametrize(
    "alg",
    [
        pytest.param("es256", id="lower-case"),
        pytest.param("Es256", id="mixed-case"),
        pytest.param("ES256 ", id="trailing-space"),
        pytest.param("ES256\u0000", id="trailing-NUL"),
    ],
)
def test_ATK_02_alg_compared_exactly(guard: Guard, events: EventCollector, alg: str) -> None:
    """Signed with the right key, but the header names the algorithm in another spelling."""
    token = ec_token(header(alg=alg))
    assert_e2(decide(guard, token), events, guard, "token.alg_not_allowed")


@pytest.mark.parametrize(
    "head",
    [
        pytest.param({"typ": "at+jwt", "kid": "ec-1"}, id="missing"),
        pytest.param({"alg": None, "typ": "at+jwt", "kid": "ec-1"}, id="null"),
        pytest.param({"alg": ["ES256"], "typ": "at+jwt", "kid": "ec-1"}, id="array"),
        pytest.param({"alg": {"name": "ES256"}, "typ": "at+jwt", "kid": "ec-1"}, id="object"),
        pytest.param({"alg": 256, "typ": "at+jwt", "kid": "ec-1"}, id="number"),
        pytest.param({"alg": True, "typ": "at+jwt", "kid": "ec-1"}, id="boolean"),
    ],
)
def test_ATK_04_missing_null_or_non_string_alg(
    guard: Guard, events: EventCollector, head: dict[str, Any]
) -> None:
    token = forge(head, claims(), key=signing_key(EC_ISSUER), alg="ES256")
    assert_e2(decide(guard, token), events, guard, "token.alg_missing")


# -- ATK-05/06: public key as HMAC secret ---------------------------------------------------------


def _public(issuer: TestIssuer) -> Any:
    return signing_key(issuer).public_key()


def _spki_pem(issuer: TestIssuer) -> bytes:
    return _public(issuer).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _spki_der(issuer: TestIssuer) -> bytes:
    return _public(issuer).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _openssh(issuer: TestIssuer) -> bytes:
    return _public(issuer).public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def _rsa_secrets() -> list[Any]:
    pub = _public(RSA_ISSUER)
    jwk = RSA_ISSUER.public_jwk()
    return [
        pytest.param(_spki_pem(RSA_ISSUER), id="spki-pem"),
        pytest.param(_spki_pem(RSA_ISSUER).rstrip(b"\n"), id="spki-pem-no-newline"),
        pytest.param(
            pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1), id="pkcs1-pem"
        ),
        pytest.param(_spki_der(RSA_ISSUER), id="spki-der"),
        pytest.param(
            pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1), id="pkcs1-der"
        ),
        pytest.param(dumps(jwk), id="jwk-json"),
        pytest.param(json.dumps(jwk).encode(), id="jwk-json-spaced"),
        pytest.param(dumps(RSA_ISSUER.jwks()), id="jwks-json"),
        pytest.param(pub.public_numbers().n.to_bytes(256, "big"), id="n-bytes"),
        pytest.param(jwk["n"].encode(), id="n-base64url"),
        pytest.param(_openssh(RSA_ISSUER), id="openssh"),
    ]


@pytest.mark.parametrize("hs_alg", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("secret", _rsa_secrets())
def test_ATK_05_rs_to_hs_with_public_key_as_secret(
    guard: Guard, events: EventCollector, secret: bytes, hs_alg: str
) -> None:
    token = forge(header(alg=hs_alg, kid="rsa-1"), claims(iss=RSA_ISS), key=secret, alg=hs_alg)
    assert_e2(decide(guard, token), events, guard, "token.alg_not_allowed")


def test_ATK_05_rs_to_hs_with_pem(guard: Guard, events: EventCollector) -> None:
    """The classic: HS256 keyed with the PEM the AS publishes, with the RSA issuer's kid."""
    token = forge(
        header(alg="HS256", kid="rsa-1"), claims(iss=RSA_ISS), key=_spki_pem(RSA_ISSUER), alg="HS256"
    )
    assert_e2(decide(guard, token), events, guard, "token.alg_not_allowed")


def _ec_and_ed_secrets() -> list[Any]:
    ec_pub = _public(EC_ISSUER)
    return [
        pytest.param(EC_ISSUER, _spki_pem(EC_ISSUER), id="ec-spki-pem"),
        pytest.param(EC_ISSUER, _spki_der(EC_ISSUER), id="ec-spki-der"),
        pytest.param(EC_ISSUER, dumps(EC_ISSUER.public_jwk()), id="ec-jwk-json"),
        pytest.param(
            EC_ISSUER,
            ec_pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint),
            id="ec-x962-point",
        ),
        pytest.param(EC_ISSUER, _openssh(EC_ISSUER), id="ec-openssh"),
        pytest.param(ED_ISSUER, _spki_pem(ED_ISSUER), id="ed25519-spki-pem"),
        pytest.param(
            ED_ISSUER,
            _public(ED_ISSUER).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
            id="ed25519-raw",
        ),
        pytest.param(ED_ISSUER, dumps(ED_ISSUER.public_jwk()), id="ed25519-jwk-json"),
        pytest.param(ED_ISSUER, _openssh(ED_ISSUER), id="ed25519-openssh"),
    ]


@pytest.mark.parametrize(("issuer", "secret"), _ec_and_ed_secrets())
def test_ATK_06_es_to_hs_with_public_key_as_secret(
    guard: Guard, events: EventCollector, issuer: TestIssuer, secret: bytes
) -> None:
    token = forge(header(alg="HS256", kid=issuer.kid), claims(iss=issuer.issuer), key=secret, alg="HS256")
    assert_e2(decide(guard, token), events, guard, "token.alg_not_allowed")


def test_ATK_05_public_key_never_verifies_hmac_even_if_allowed() -> None:
    """Defence in depth: an issuer misconfigured to allow HS256 next to RS256 still binds its
    JWKS key to RS256 only, and the JOSE layer refuses an RSA key for HMAC outright."""
    source, skipped = StaticKeySource.from_jwks(RSA_ISS, RSA_ISSUER.jwks(), frozenset({"RS256", "HS256"}))
    assert skipped == []
    index = source.current()
    assert index is not None
    assert [k.algorithms for k in index.keys] == [frozenset({"RS256"})]
    rules = IssuerRules(
        issuer=RSA_ISS,
        audiences=frozenset({AUD}),
        algorithms=frozenset({"RS256", "HS256"}),
        typ=frozenset({"at+jwt"}),
        required_claims=("iss", "exp", "aud"),
        keys=source,
    )
    verifier = JwtVerifier(
        {RSA_ISS: rules}, leeway=0, max_future_iat=10, max_token_bytes=8192, clock=lambda: NOW
    )
    pem = _spki_pem(RSA_ISSUER)
    token = forge(header(alg="HS256", kid="rsa-1"), claims(iss=RSA_ISS), key=pem, alg="HS256")
    parsed = verifier.parse(token)
    with pytest.raises(TokenError) as caught:
        verifier.verify(parsed, index)
    assert caught.value.reason == "no_key_for_alg"
    signing_input, _, sig = token.rpartition(".")
    signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    with pytest.raises(JoseError) as low_level:
        verify_signature(_public(RSA_ISSUER), "HS256", signing_input.encode(), signature)
    assert low_level.value.reason == "key_alg_mismatch"
    with pytest.raises(JoseError):
        check_key_for_alg(_public(RSA_ISSUER), "HS256")
    with pytest.raises(JoseError):
        check_key_for_alg(SharedSecret(pem), "RS256")


def test_ATK_05_policy_refuses_hmac_next_to_a_key_set() -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_policy(issuer_entry(RSA_ISSUER, ["RS256", "HS256"]))
    assert any("algorithms" in p.path for p in caught.value.problems)
    with pytest.raises(ConfigurationError):
        make_policy(issuer_entry(RSA_ISSUER, ["HS256"]))


# -- ATK-07..10: keys and key URLs from the token ---------------------------------------------------


def _attacker_jwk(kid: str = "attacker") -> dict[str, Any]:
    numbers = ATTACKER_EC.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "kid": kid,
        "use": "sig",
        "alg": "ES256",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }


@pytest.mark.parametrize(
    "kid", [pytest.param("attacker", id="attacker-kid"), pytest.param("ec-1", id="trusted-kid")]
)
def test_ATK_07_embedded_jwk_attacker_key(guard: Guard, events: EventCollector, kid: str) -> None:
    token = forge(header(kid=kid, jwk=_attacker_jwk(kid)), claims(), key=ATTACKER_EC, alg="ES256")
    assert_e2(decide(guard, token), events, guard, "token.header_embedded_key")


def test_ATK_07_embedded_jwk_without_the_header_ban_still_fails_on_the_key(
    guard: Guard, events: EventCollector
) -> None:
    """The same attacker token without ``jwk``: the trusted key set decides, and refuses it."""
    token = forge(header(kid="ec-1"), claims(), key=ATTACKER_EC, alg="ES256")
    assert_e2(decide(guard, token), events, guard, "token.signature_invalid")


class _Attacker(ThreadingHTTPServer):
    """Serves the attacker's JWK Set / certificate on 127.0.0.1 and counts every request."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        super().__init__(("127.0.0.1", 0), _AttackerHandler)

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _AttackerHandler(BaseHTTPRequestHandler):
    server: _Attacker

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        body = dumps({"keys": [_attacker_jwk("ec-1"), _attacker_jwk()]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def attacker() -> Iterator[_Attacker]:
    server = _Attacker()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # The server does answer: zero hits later means nothing asked, not that nothing could.
        with urllib.request.urlopen(server.base + "/probe", timeout=5) as response:  # noqa: S310
            assert json.load(response)["keys"]
        assert server.hits == ["/probe"]
        server.hits.clear()
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _url_variants(base: str, port: int) -> list[str]:
    return [
        f"{base}/jwks.json",
        f"http://as.bank.example@127.0.0.1:{port}/jwks.json",
        f"{base}/#https://as.bank.example/jwks.json",
        f"{base}/redirect?to=https://as.bank.example/jwks.json",
        f"https://as.bank.example/redirect?url={base}/jwks.json",
        f"http://localhost:{port}/jwks.json",
        f"http://[::ffff:127.0.0.1]:{port}/jwks.json",
        "file:///etc/passwd",
        "file:///dev/null",
    ]


@pytest.mark.network
@pytest.mark.parametrize("param", ["jku", "x5u"])
@pytest.mark.parametrize("kid", ["attacker", "ec-1", None])
def test_ATK_08_09_jku_and_x5u_injection_fetch_nothing(
    guard: Guard, events: EventCollector, attacker: _Attacker, param: str, kid: str | None
) -> None:
    port = int(attacker.server_address[1])
    for url in _url_variants(attacker.base, port):
        token = forge(header(kid=kid, **{param: url}), claims(), key=ATTACKER_EC, alg="ES256")
        assert_e2(decide(guard, token), events, guard, "token.header_key_url")
    assert attacker.hits == []


@pytest.mark.network
def test_ATK_08_unknown_kid_with_jku_fetches_nothing(
    guard: Guard, events: EventCollector, attacker: _Attacker
) -> None:
    """Without the header ban the unknown kid alone is refused; still no request anywhere."""
    token = forge(header(kid="attacker"), claims(), key=ATTACKER_EC, alg="ES256")
    assert_e2(decide(guard, token), events, guard, "token.kid_unknown")
    token = forge(
        header(kid="attacker", jku=attacker.base + "/jwks.json", x5u=attacker.base + "/cert.pem"),
        claims(),
        key=ATTACKER_EC,
        alg="ES256",
    )
    assert_e2(decide(guard, token), events, guard, "token.header_key_url")
    assert attacker.hits == []


def _self_signed_certificate(key: Any) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "as.bank.example")])
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize(
    ("key", "alg"),
    [pytest.param(ATTACKER_EC, "ES256", id="ec"), pytest.param(ATTACKER_RSA, "RS256", id="rsa")],
)
def test_ATK_10_x5c_self_signed_chain(guard: Guard, events: EventCollector, key: Any, alg: str) -> None:
    der = _self_signed_certificate(key).public_bytes(serialization.Encoding.DER)
    x5c = [base64.b64encode(der).decode("ascii")]
    sha256 = b64(hashlib.sha256(der).digest())
    iss, kid = (ISS, "ec-1") if alg == "ES256" else (RSA_ISS, "rsa-1")
    for extra in ({"x5c": x5c}, {"x5c": x5c, "x5t#S256": sha256}):
        token = forge(header(alg=alg, kid=kid, **extra), claims(iss=iss), key=key, alg=alg)
        assert_e2(decide(guard, token), events, guard, "token.header_embedded_key")


# -- ATK-11..13: kid abuse -----------------------------------------------------------------------

KID_ATTACKS = [
    pytest.param("../../../../../../dev/null", b"", id="path-traversal-dev-null"),
    pytest.param("/proc/sys/kernel/randomize_va_space", b"2\n", id="known-file"),
    pytest.param("..\\..\\..\\windows\\win.ini", b"", id="windows-traversal"),
    pytest.param("file:///etc/passwd", b"", id="file-url"),
    pytest.param("x' UNION SELECT 'secret'-- ", b"secret", id="sql-union"),
    pytest.param("ec-1' OR '1'='1", b"secret", id="sql-tautology"),
    pytest.param("*)(uid=*", b"secret", id="ldap-wildcard"),
    pytest.param("key|sleep 10", b"", id="pipe"),
    pytest.param("$(id)", b"", id="command-substitution"),
    pytest.param("`id`", b"", id="backticks"),
    pytest.param("ec-1\u0000", b"", id="trailing-NUL"),
    pytest.param("EC-1", b"", id="different-case"),
    pytest.param("ec-1 ", b"", id="trailing-space"),
]


@pytest.mark.parametrize(("kid", "secret"), KID_ATTACKS)
def test_ATK_11_12_13_kid_injection_with_hmac(
    guard: Guard, events: EventCollector, kid: str, secret: bytes
) -> None:
    """The textbook form: HS256 keyed with what the injected kid would make a naive server load."""
    token = forge(header(alg="HS256", kid=kid), claims(), key=secret, alg="HS256")
    assert_e2(decide(guard, token), events, guard, "token.alg_not_allowed")


@pytest.mark.parametrize(("kid", "secret"), KID_ATTACKS)
def test_ATK_11_12_13_kid_injection_with_the_issuer_alg(
    guard: Guard, events: EventCollector, kid: str, secret: bytes
) -> None:
    """With the allowed alg the kid is only ever an exact dictionary lookup: unknown."""
    token = forge(header(kid=kid), claims(), key=ATTACKER_EC, alg="ES256")
    assert_e2(decide(guard, token), events, guard, "token.kid_unknown")


@pytest.mark.parametrize(
    "kid",
    [
        pytest.param(42, id="number"),
        pytest.param(["ec-1"], id="array"),
        pytest.param({"$ne": None}, id="nosql-object"),
        pytest.param(True, id="boolean"),
        pytest.param("", id="empty"),
        pytest.param("k" * 257, id="257-chars"),
    ],
)
def test_ATK_13_kid_type_confusion(guard: Guard, events: EventCollector, kid: Any) -> None:
    token = ec_token({"alg": "ES256", "typ": "at+jwt", "kid": kid})
    assert_e2(decide(guard, token), events, guard, "token.kid_invalid")


def test_ATK_13_kid_null_is_refused(guard: Guard, events: EventCollector) -> None:
    """``"kid": null`` is a present kid that is not a string (JWT-14): refused, signed by the
    issuer's key or not, before any key is tried."""
    assert_e2(
        decide(guard, ec_token({"alg": "ES256", "typ": "at+jwt", "kid": None})),
        events,
        guard,
        "token.kid_invalid",
    )
    token = forge({"alg": "ES256", "typ": "at+jwt", "kid": None}, claims(), key=ATTACKER_EC, alg="ES256")
    assert_e2(decide(guard, token), events, guard, "token.kid_invalid")


def test_ATK_13_kid_of_100_kb(guard: Guard, events: EventCollector) -> None:
    token = ec_token(header(kid="k" * 100_000))
    # Through the guard the header field alone is beyond the request's size caps.
    assert_rejected_early(decide(guard, token), 431, "request", "request.headers_too_large")
    # The verifier, given room, refuses the kid itself.
    with pytest.raises(TokenError) as caught:
        _verifier(1_000_000).parse(token)
    assert caught.value.reason == "kid_invalid"


# -- ATK-14..16: signature segment games ------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "alg"),
    [
        pytest.param(EC_ISSUER, "ES256", id="ES256"),
        pytest.param(RSA_ISSUER, "RS256", id="RS256"),
        pytest.param(ED_ISSUER, "EdDSA", id="EdDSA"),
    ],
)
def test_ATK_14_empty_signature(guard: Guard, events: EventCollector, issuer: TestIssuer, alg: str) -> None:
    h, p, _ = segments(issuer.mint(now=NOW, audience=AUD))
    assert_e2(decide(guard, f"{h}.{p}."), events, guard, "token.signature_missing")


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param("two", id="hdr.pay"),
        pytest.param("four", id="hdr.pay.sig.extra"),
        pytest.param("four-empty", id="hdr.pay.sig."),
        pytest.param("leading-dot", id=".hdr.pay.sig"),
    ],
)
def test_ATK_15_stripped_or_extra_segments(guard: Guard, events: EventCollector, shape: str) -> None:
    token = good_token()
    h, p, s = segments(token)
    forged = {
        "two": f"{h}.{p}",
        "four": f"{h}.{p}.{s}.{s}",
        "four-empty": f"{token}.",
        "leading-dot": f".{token}",
    }[shape]
    assert_e2(decide(guard, forged), events, guard, "token.not_a_jwt")


def test_ATK_16_signature_from_another_token(guard: Guard, events: EventCollector) -> None:
    a = EC_ISSUER.mint(now=NOW, audience=AUD, scope="accounts")
    b = EC_ISSUER.mint({"sub": "victim"}, now=NOW, audience=AUD, scope="accounts payments")
    assert decide(guard, a).allowed
    assert decide(guard, b).allowed
    ha, _, sa = segments(a)
    hb, pb, _ = segments(b)
    assert_e2(decide(guard, f"{hb}.{pb}.{sa}"), events, guard, "token.signature_invalid")
    assert_e2(decide(guard, f"{ha}.{pb}.{sa}"), events, guard, "token.signature_invalid")


def test_ATK_16_signature_from_another_issuers_key(guard: Guard, events: EventCollector) -> None:
    h, p, _ = segments(good_token())
    _, _, other_sig = segments(OTHER_ISSUER.mint(now=NOW, audience=AUD))
    assert_e2(decide(guard, f"{h}.{p}.{other_sig}"), events, guard, "token.signature_invalid")


# -- ATK-17: base64 malleability ---------------------------------------------------------------------

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _noncanonical(segment: str) -> str:
    """The same bytes, with the unused trailing bits of the last character set."""
    assert len(segment) % 4 in (2, 3)
    value = _ALPHABET.index(segment[-1])
    assert value & 1 == 0
    return segment[:-1] + _ALPHABET[value | 1]


def _token_with(predicate: Any) -> str:
    for _ in range(200):
        token = good_token()
        if predicate(token):
            return token
    raise AssertionError("no suitable token minted")  # pragma: no cover


def test_ATK_17_noncanonical_trailing_bits_decode_to_the_same_bytes() -> None:
    """Sanity for the cases below: a lenient decoder would read these segments as the original."""
    _, _, s = segments(good_token())
    mutated = _noncanonical(s)
    assert mutated != s
    assert base64.urlsafe_b64decode(mutated + "==") == base64.urlsafe_b64decode(s + "==")


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        pytest.param("pad-signature", NOT_BASE64URL, id="sig=="),
        pytest.param("pad-signature-one", NOT_BASE64URL, id="sig="),
        pytest.param("plus-slash", NOT_BASE64URL, id="standard-alphabet"),
        pytest.param("noncanonical-signature", NOT_BASE64URL, id="sig-trailing-bits"),
        pytest.param("noncanonical-payload", NOT_BASE64URL, id="payload-trailing-bits"),
        pytest.param("extra-char", NOT_BASE64URL, id="sig-length-mod-4-is-1"),
    ],
)
def test_ATK_17_base64_malleability_reaching_the_token_control(
    guard: Guard, events: EventCollector, mutation: str, reason: tuple[str, ...]
) -> None:
    if mutation == "plus-slash":
        token = _token_with(lambda t: any(c in "-_" for c in t.split(".")[2]))
    elif mutation == "noncanonical-payload":
        token = _token_with(lambda t: len(t.split(".")[1]) % 4 in (2, 3))
    else:
        token = good_token()
    h, p, s = segments(token)
    forged = {
        "pad-signature": f"{token}==",
        "pad-signature-one": f"{token}=",
        "plus-slash": token.replace("-", "+").replace("_", "/"),
        "noncanonical-signature": f"{h}.{p}.{_noncanonical(s)}",
        "noncanonical-payload": f"{h}.{_noncanonical(p)}.{s}",
        "extra-char": f"{token}A" if len(s) % 4 == 0 else f"{h}.{p}.{s}{'A' * ((1 - len(s)) % 4)}",
    }[mutation]
    assert forged != token
    assert_e2(decide(guard, forged), events, guard, reason)


@pytest.mark.parametrize(
    "mutation",
    [
        pytest.param("bang", id="sig!!"),
        pytest.param("bang-inside", id="hdr!.pay.sig"),
        pytest.param("space", id="space-inside"),
        pytest.param("newline", id="newline-inside"),
        pytest.param("tab", id="tab-inside"),
        pytest.param("padding-inside", id="hdr==.pay.sig"),
    ],
)
def test_ATK_17_characters_outside_token68_are_a_malformed_field(guard: Guard, mutation: str) -> None:
    """``!``, whitespace and inner padding are not ``b64token`` characters (RFC 6750 §2.1): the
    Authorization field is malformed and answered 400 invalid_request (AUTH-06, E6); the token
    control never sees them, so nothing is accepted."""
    token = good_token()
    h, p, s = segments(token)
    forged = {
        "bang": f"{token}!!",
        "bang-inside": f"{h}!.{p}.{s}",
        "space": f"{h}.{p[:10]} {p[10:]}.{s}",
        "newline": f"{h}.{p}\n.{s}",
        "tab": f"{h}\t.{p}.{s}",
        "padding-inside": f"{h}==.{p}.{s}",
    }[mutation]
    assert_rejected_early(decide(guard, forged), 400, "auth", "authorization.malformed")


@pytest.mark.parametrize(
    "mutation",
    ["bang", "space", "newline", "plus", "slash", "padding", "noncanonical", "percent-encoded"],
)
def test_ATK_17_parser_refuses_every_non_canonical_encoding(mutation: str) -> None:
    verifier = _verifier()
    token = _token_with(lambda t: "-" in t.split(".")[2] and "_" in t.split(".")[2])
    h, p, s = segments(token)
    forged = {
        "bang": f"{h}.{p}.{s}!!",
        "space": f"{h} .{p}.{s}",
        "newline": f"{h}.{p}.{s[:5]}\n{s[5:]}",
        "plus": f"{h}.{p}.{s.replace('-', '+')}",
        "slash": f"{h}.{p}.{s.replace('_', '/')}",
        "padding": f"{h}.{p}.{s}==",
        "noncanonical": f"{h}.{p}.{_noncanonical(s)}",
        "percent-encoded": f"{h}.{p}.{s[:3]}%41{s[3:]}",
    }[mutation]
    assert forged != token
    with pytest.raises(TokenError) as caught:
        verifier.parse(forged)
    assert f"token.{caught.value.reason}" in NOT_BASE64URL


# -- ATK-18/19: ECDSA signature values ----------------------------------------------------------------


def _rs(r: int, s: int, size: int = 32) -> bytes:
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(bytes(64), id="r=s=0"),
        pytest.param(_rs(P256_ORDER, P256_ORDER), id="r=s=n"),
        pytest.param(_rs(P256_ORDER, 1), id="r=n,s=1"),
        pytest.param(_rs(1, P256_ORDER), id="r=1,s=n"),
        pytest.param(_rs(0, 1), id="r=0,s=1"),
        pytest.param(_rs(1, 0), id="r=1,s=0"),
        pytest.param(b"\xff" * 64, id="r=s=2^256-1"),
        pytest.param(_rs(P256_ORDER + 1, P256_ORDER + 1), id="r=s=n+1"),
        pytest.param(bytes(63), id="63-bytes"),
        pytest.param(bytes(65), id="65-bytes"),
        pytest.param(bytes(1), id="1-byte"),
        pytest.param(bytes(96), id="96-bytes-ES384-length"),
    ],
)
def test_ATK_18_psychic_signatures(guard: Guard, events: EventCollector, signature: bytes) -> None:
    h, p, _ = segments(good_token())
    assert_e2(decide(guard, f"{h}.{p}.{b64(signature)}"), events, guard, "token.signature_invalid")


def _valid_rs(token: str) -> tuple[int, int]:
    raw = base64.urlsafe_b64decode(segments(token)[2] + "==")
    return int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")


@pytest.mark.parametrize("variant", ["der", "der-padded-63", "der-padded-65", "truncated-63", "extended-65"])
def test_ATK_18_wrong_encodings_of_a_valid_signature(
    guard: Guard, events: EventCollector, variant: str
) -> None:
    token = good_token()
    h, p, _ = segments(token)
    r, s = _valid_rs(token)
    raw = _rs(r, s)
    der = encode_dss_signature(r, s)
    signature = {
        "der": der,
        "der-padded-63": der[:63].ljust(63, b"\x00"),
        "der-padded-65": der[:65].ljust(65, b"\x00"),
        "truncated-63": raw[:63],
        "extended-65": raw + b"\x00",
    }[variant]
    assert_e2(decide(guard, f"{h}.{p}.{b64(signature)}"), events, guard, "token.signature_invalid")


def test_ATK_19_high_s_signature_verifies(guard: Guard, events: EventCollector) -> None:
    """ECDSA malleability: (r, n - s) is a valid signature of the same input. For access tokens
    that is acceptable (the token is the same bearer credential); the DPoP jti cache is what
    must stop proof replays. Both spellings are accepted and cached separately by hash."""
    token = good_token()
    h, p, _ = segments(token)
    r, s = _valid_rs(token)
    twin = f"{h}.{p}.{b64(_rs(r, P256_ORDER - s))}"
    assert twin != token
    first, second = decide(guard, token), decide(guard, twin)
    assert first.allowed
    assert second.allowed
    assert second.context.principal.claims == first.context.principal.claims


# -- ATK-20: expiry games -------------------------------------------------------------------------

EXPIRY_GAMES = [
    pytest.param(dumps(claims(exp=int(NOW) - 1)), "token.expired", id="exp-past"),
    pytest.param(dumps(claims(exp=int(NOW))), "token.expired", id="exp-equals-now"),
    pytest.param(dumps(claims(exp=None)), "token.claim_missing:exp", id="exp-absent"),
    pytest.param(dumps(claims(exp=None, iat=None, nbf=None)), "token.claim_missing:exp", id="no-times"),
    pytest.param(dumps(claims(exp="9999999999")), "token.claim_type:exp", id="exp-string"),
    pytest.param(dumps(claims(exp=True)), "token.claim_type:exp", id="exp-true"),
    pytest.param(dumps(claims(exp=None))[:-1] + b',"exp":NaN}', "token.json_non_finite_number", id="exp-NaN"),
    pytest.param(
        dumps(claims(exp=None))[:-1] + b',"exp":Infinity}', "token.json_non_finite_number", id="exp-Infinity"
    ),
    pytest.param(
        dumps(claims(exp=None))[:-1] + b',"exp":-Infinity}',
        "token.json_non_finite_number",
        id="exp--Infinity",
    ),
    pytest.param(
        dumps(claims(exp=None))[:-1] + b',"exp":1e309}', "token.json_non_finite_number", id="exp-1e309"
    ),
    pytest.param(dumps(claims(exp=-1)), "token.claim_range:exp", id="exp-negative"),
    pytest.param(dumps(claims(exp=253402300800)), "token.claim_range:exp", id="exp-after-year-9999"),
    pytest.param(dumps(claims(exp=[int(NOW) + 300])), "token.claim_type:exp", id="exp-array"),
    pytest.param(dumps(claims(exp=None)), "token.claim_missing:exp", id="exp-null"),
    pytest.param(dumps(claims(nbf=int(NOW) + 600)), "token.not_yet_valid", id="nbf-future"),
    pytest.param(dumps(claims(nbf="0")), "token.claim_type:nbf", id="nbf-string"),
    pytest.param(dumps(claims(nbf=False)), "token.claim_type:nbf", id="nbf-false"),
    pytest.param(dumps(claims(iat=int(NOW) + 3600)), "token.issued_in_future", id="iat-far-future"),
    pytest.param(dumps(claims(iat=int(NOW) + 11)), "token.issued_in_future", id="iat-11s-future"),
    pytest.param(dumps(claims(iat=True)), "token.claim_type:iat", id="iat-true"),
    pytest.param(dumps(claims(auth_time="yesterday")), "token.claim_type:auth_time", id="auth_time-string"),
]


@pytest.mark.parametrize(("payload", "reason"), EXPIRY_GAMES)
def test_ATK_20_expiry_games(guard: Guard, events: EventCollector, payload: bytes, reason: str) -> None:
    assert_e2(decide(guard, ec_token(body=payload)), events, guard, reason)


@pytest.mark.parametrize(
    "field", [pytest.param("exp", id="exp"), pytest.param("nbf", id="nbf"), pytest.param("iat", id="iat")]
)
def test_ATK_20_numeric_date_beyond_float_range_is_invalid_token(
    guard: Guard, events: EventCollector, field: str
) -> None:
    """A NumericDate written as a 400-digit integer is valid JSON and an int in Python. It must
    be refused like ``1e309`` (JWT-27), with 401 invalid_token, not end the check in an error."""
    payload = dumps(claims(**{field: None}))[:-1] + f',"{field}":1{"0" * 400}}}'.encode()
    decision = guard.decide(
        make_facts("GET", "/accounts", headers=[("authorization", f"Bearer {ec_token(body=payload)}")])
    )
    assert not decision.allowed
    assert (decision.event.status, decision.event.control) == (401, "tokens")
    assert decision.event.reason == f"token.claim_range:{field}"


# -- ATK-21: crit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"crit": ["x-unknown"], "x-unknown": 1}, id="unknown-extension"),
        pytest.param({"crit": []}, id="empty"),
        pytest.param({"crit": ["alg"]}, id="names-alg"),
        pytest.param({"crit": ["kid", "typ"]}, id="names-registered"),
        pytest.param({"crit": "b64"}, id="string"),
        pytest.param({"crit": ["exp"], "exp": int(NOW) + 60}, id="exp-in-header"),
        pytest.param({"crit": ["absent"]}, id="absent-param"),
        pytest.param({"crit": None}, id="null"),
        pytest.param({"crit": ["b64"], "b64": True}, id="b64-true"),
    ],
)
def test_ATK_21_crit_abuse(guard: Guard, events: EventCollector, extra: dict[str, Any]) -> None:
    token = ec_token({**header(), **extra})
    assert_e2(decide(guard, token), events, guard, "token.crit_not_supported")


# -- ATK-22: duplicate members ------------------------------------------------------------------------


def _payload_text() -> str:
    return dumps(claims()).decode()[:-1]


DUPLICATES = [
    pytest.param(b'{"alg":"HS256","alg":"ES256","typ":"at+jwt","kid":"ec-1"}', None, id="header-alg-twice"),
    pytest.param(b'{"alg":"none","alg":"ES256","typ":"at+jwt","kid":"ec-1"}', None, id="header-none-then-es"),
    pytest.param(
        b'{"alg":"ES256","typ":"at+jwt","kid":"ec-1","kid":"ec-1"}', None, id="header-same-kid-twice"
    ),
    pytest.param(
        b'{"alg":"ES256","typ":"at+jwt","kid":"ec-1","\\u0061lg":"ES256"}', None, id="header-escaped-alg"
    ),
    pytest.param(None, ',"sub":"attacker"}', id="payload-sub-twice"),
    pytest.param(None, ',"aud":"https://other-rs.example"}', id="payload-aud-twice"),
    pytest.param(None, ',"\\u0073ub":"attacker"}', id="payload-escaped-sub"),
    pytest.param(None, ',"\\u0073\\u0075\\u0062":"attacker"}', id="payload-fully-escaped-sub"),
    pytest.param(None, ',"i\\u0073s":"https://evil.example"}', id="payload-escaped-iss"),
    pytest.param(None, ',"cnf":{"jkt":"a","jkt":"b"}}', id="nested-duplicate"),
]


@pytest.mark.parametrize(("raw_header", "payload_tail"), DUPLICATES)
def test_ATK_22_duplicate_members_including_escaped(
    guard: Guard, events: EventCollector, raw_header: bytes | None, payload_tail: str | None
) -> None:
    head: dict[str, Any] | bytes = raw_header if raw_header is not None else header()
    body = (_payload_text() + payload_tail).encode() if payload_tail else dumps(claims())
    token = forge(head, body, key=signing_key(EC_ISSUER), alg="ES256")
    assert_e2(decide(guard, token), events, guard, "token.json_duplicate_member")


# -- ATK-23: huge and deep --------------------------------------------------------------------------


def _verifier(max_token_bytes: int = 8192) -> JwtVerifier:
    built = Guard(POLICY).tokens
    assert built is not None
    assert built.verifier is not None
    return JwtVerifier(
        built.verifier.issuers,
        leeway=0,
        max_future_iat=10,
        max_token_bytes=max_token_bytes,
        clock=lambda: NOW,
    )


def test_ATK_23_one_megabyte_token(guard: Guard) -> None:
    token = ec_token(body=claims(pad="A" * 1_000_000))
    assert len(token) > 1_000_000
    assert_rejected_early(decide(guard, token), 431, "request", "request.headers_too_large")
    with pytest.raises(TokenError) as caught:
        _verifier().parse(token)
    assert caught.value.reason == "token_too_large"


def test_ATK_23_token_just_over_the_token_cap(guard: Guard, events: EventCollector) -> None:
    """Between ``max_token_bytes`` (8 KiB) and the header cap: refused by size, before parsing."""
    token = ec_token(body=claims(pad="A" * 7000))
    assert 8192 < len(token) < 16 * 1024
    assert_e2(decide(guard, token), events, guard, "token.too_large")


@pytest.mark.parametrize("where", ["payload", "header"])
def test_ATK_23_deep_nesting_within_the_size_cap(guard: Guard, events: EventCollector, where: str) -> None:
    """As deep as fits in 8 KiB (2 500 levels, beyond the interpreter's recursion limit)."""
    deep = b"[" * 2500 + b"]" * 2500
    if where == "payload":
        token = ec_token(body=dumps(claims())[:-1] + b',"x":' + deep + b"}")
        reason = "token.claims_not_json"
    else:
        token = forge(
            dumps(header())[:-1] + b',"x":' + deep + b"}", claims(), key=signing_key(EC_ISSUER), alg="ES256"
        )
        reason = "token.header_not_json"
    assert len(token) <= 8192
    assert_e2(decide(guard, token), events, guard, reason)


@pytest.mark.parametrize(
    ("depth", "reason"),
    [
        pytest.param(9, "json_too_deep", id="9-levels"),
        pytest.param(100_000, "claims_not_json", id="100000-levels"),
    ],
)
def test_ATK_23_deep_nesting_refused_without_recursion_error(depth: int, reason: str) -> None:
    deep = b"[" * depth + b"]" * depth
    token = ec_token(body=dumps(claims())[:-1] + b',"x":' + deep + b"}")
    with pytest.raises(TokenError) as caught:
        _verifier(10_000_000).parse(token)
    assert caught.value.reason == reason


def test_ATK_23_deep_objects_refused() -> None:
    nested: Any = "leaf"
    for _ in range(20):
        nested = {"a": nested}
    with pytest.raises(TokenError) as caught:
        _verifier(1_000_000).parse(ec_token(body=claims(x=nested)))
    assert caught.value.reason == "json_too_deep"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(claims(aud=[f"https://rs{i}.example" for i in range(100_000)]), id="100000-aud"),
        pytest.param(claims(**{f"c{i}": i for i in range(300)}), id="300-claims"),
    ],
)
def test_ATK_23_too_many_members(body: dict[str, Any]) -> None:
    with pytest.raises(TokenError) as caught:
        _verifier(10_000_000).parse(ec_token(body=body))
    assert caught.value.reason == "json_too_many_members"


def test_ATK_23_many_audiences_through_the_guard(guard: Guard, events: EventCollector) -> None:
    """As many audience entries as fit in a token under the cap: more than 256 → refused."""
    token = ec_token(body=claims(aud=[AUD, *(f"r{i}" for i in range(300))]))
    assert len(token) <= 8192
    assert_e2(decide(guard, token), events, guard, "token.json_too_many_members")


# -- ATK-24..26: other serialisations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        pytest.param({"b64": False, "crit": ["b64"]}, "token.crit_not_supported", id="b64-false-crit"),
        pytest.param({"b64": False}, "token.b64_not_allowed", id="b64-false-alone"),
        pytest.param({"b64": True}, "token.b64_not_allowed", id="b64-true"),
    ],
)
def test_ATK_24_b64_false(guard: Guard, events: EventCollector, extra: dict[str, Any], reason: str) -> None:
    token = ec_token({**header(), **extra})
    assert_e2(decide(guard, token), events, guard, reason)


def test_ATK_24_b64_false_with_a_raw_payload(guard: Guard, events: EventCollector) -> None:
    """RFC 7797 form: the payload segment is the raw JSON; it is not base64url, so refused."""
    head = {**header(), "b64": False, "crit": ["b64"]}
    h = b64(dumps(head))
    payload = '{"sub":"x"}'
    signing_input = f"{h}.{payload}".encode()
    sig = b64(raw_sign(signing_key(EC_ISSUER), "ES256", signing_input))
    decision = decide(guard, f"{h}.{payload}.{sig}")
    assert_rejected_early(decision, 400, "auth", "authorization.malformed")


def _jwe(head: dict[str, Any]) -> str:
    return ".".join([b64(dumps(head)), b64(b"k" * 16), b64(b"i" * 12), b64(b"ciphertext"), b64(b"t" * 16)])


@pytest.mark.parametrize(
    "head",
    [
        pytest.param({"alg": "dir", "enc": "A128GCM"}, id="dir"),
        pytest.param({"alg": "RSA1_5", "enc": "A128CBC-HS256", "kid": "rsa-1"}, id="RSA1_5"),
        pytest.param({"alg": "RSA-OAEP-256", "enc": "A256GCM", "typ": "at+jwt"}, id="RSA-OAEP-256"),
        pytest.param(
            {"alg": "PBES2-HS256+A128KW", "enc": "A128GCM", "p2s": "c2FsdA", "p2c": 100_000_000},
            id="PBES2-huge-p2c",
        ),
        pytest.param({"alg": "dir", "enc": "A128GCM", "zip": "DEF"}, id="zip-DEF"),
    ],
)
def test_ATK_25_jwe_is_not_decrypted(guard: Guard, events: EventCollector, head: dict[str, Any]) -> None:
    token = _jwe(head)
    assert_e2(decide(guard, token), events, guard, "token.not_a_jwt")
    with pytest.raises(TokenError) as caught:
        _verifier().parse(token)
    assert caught.value.reason == "jwe_not_accepted"


def test_ATK_25_jwe_with_the_direct_key_omitted(guard: Guard, events: EventCollector) -> None:
    token = ".".join([b64(dumps({"alg": "dir", "enc": "A128GCM"})), "", b64(b"iv"), b64(b"ct"), b64(b"tag")])
    assert_e2(decide(guard, token), events, guard, "token.not_a_jwt")


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"enc": "A128GCM"}, id="enc"),
        pytest.param({"zip": "DEF"}, id="zip"),
    ],
)
def test_ATK_25_jwe_header_members_in_a_jws(
    guard: Guard, events: EventCollector, extra: dict[str, Any]
) -> None:
    assert_e2(decide(guard, ec_token({**header(), **extra})), events, guard, "token.jwe_not_accepted")


def _json_serialisations() -> list[Any]:
    h, p, s = segments(good_token())
    general = json.dumps({"payload": p, "signatures": [{"protected": h, "signature": s}]})
    flattened = json.dumps({"payload": p, "protected": h, "signature": s})
    return [
        pytest.param(general, id="general-json"),
        pytest.param(flattened, id="flattened-json"),
        pytest.param(f'"{h}.{p}.{s}"', id="wrapped-in-quotes"),
        pytest.param(f"'{h}.{p}.{s}'", id="wrapped-in-single-quotes"),
        pytest.param(base64.urlsafe_b64encode(flattened.encode()).decode(), id="base64-of-flattened-json"),
    ]


@pytest.mark.parametrize("credential", _json_serialisations())
def test_ATK_26_json_serialisation_and_wrapping(guard: Guard, credential: str) -> None:
    decision = decide(guard, credential)
    assert not decision.allowed
    # Quotes, braces and commas are not token68: the field is malformed (a comma is how servers
    # join repeated lines, so it reads as a duplicate). Either way 400 invalid_request (E6), or
    # for the base64 form, not a JWT (E2).
    assert (decision.event.status, decision.event.reason) in (
        (400, "authorization.malformed"),
        (400, "authorization.duplicate"),
        (401, "token.not_a_jwt"),
    )
    with pytest.raises(TokenError):
        _verifier().parse(credential)


# -- ATK-27: other JWTs presented as access tokens ----------------------------------------------------


TYP = "token.typ_not_accepted"


@pytest.mark.parametrize(
    ("head", "body", "reason"),
    [
        pytest.param(
            {"alg": "ES256", "typ": "JWT", "kid": "ec-1"},
            claims(aud="tpp-client-1", nonce="n-0S6_WzA2Mj", auth_time=int(NOW)),
            TYP,
            id="id-token-typ-JWT",
        ),
        pytest.param({"alg": "ES256", "kid": "ec-1"}, claims(aud="tpp-client-1"), TYP, id="id-token-no-typ"),
        pytest.param(
            {"alg": "ES256", "typ": "dpop+jwt", "kid": "ec-1"},
            {"jti": "p-1", "htm": "GET", "htu": "https://api.bank.example/accounts", "iat": int(NOW)},
            "token.issuer_unknown",
            id="dpop-proof",
        ),
        pytest.param(
            {"alg": "ES256", "typ": "dpop+jwt", "kid": "ec-1"}, claims(), TYP, id="access-claims-typ-dpop"
        ),
        pytest.param(
            {"alg": "ES256", "typ": "logout+jwt", "kid": "ec-1"},
            claims(events={"http://schemas.openid.net/event/backchannel-logout": {}}),
            TYP,
            id="logout-token",
        ),
        pytest.param(
            {"alg": "ES256", "typ": "JWT", "kid": "ec-1"},
            claims(iss="tpp-client-1", sub="tpp-client-1", aud="https://as.bank.example/token"),
            "token.issuer_unknown",
            id="client-assertion",
        ),
        pytest.param(
            {"alg": "ES256", "typ": "JWT", "kid": "ec-1"},
            claims(sub="tpp-client-1", aud=AUD),
            TYP,
            id="client-assertion-shaped-with-our-iss-and-aud",
        ),
        pytest.param(
            {"alg": "ES256", "typ": "JOSE", "kid": "ec-1"}, claims(), TYP, id="obie-x-jws-signature-typ-JOSE"
        ),
        pytest.param(
            {"alg": "ES256", "typ": "oauth-authz-req+jwt", "kid": "ec-1"}, claims(), TYP, id="request-object"
        ),
        pytest.param(
            {"alg": "ES256", "typ": "token-introspection+jwt", "kid": "ec-1"},
            claims(),
            TYP,
            id="jwt-introspection-response",
        ),
        pytest.param({"alg": "ES256", "typ": "at+jwt+x", "kid": "ec-1"}, claims(), TYP, id="typ-suffixed"),
        pytest.param({"alg": "ES256", "typ": ["at+jwt"], "kid": "ec-1"}, claims(), TYP, id="typ-array"),
        pytest.param(
            {"alg": "ES256", "typ": "at+jwt ", "kid": "ec-1"}, claims(), TYP, id="typ-trailing-space"
        ),
        pytest.param({"alg": "ES256", "typ": "", "kid": "ec-1"}, claims(), TYP, id="typ-empty"),
    ],
)
def test_ATK_27_cross_jwt_confusion(
    guard: Guard, events: EventCollector, head: dict[str, Any], body: dict[str, Any], reason: str
) -> None:
    token = forge(head, body, key=signing_key(EC_ISSUER), alg="ES256")
    assert_e2(decide(guard, token), events, guard, reason)


def test_ATK_27_obie_detached_jws_as_a_token(guard: Guard, events: EventCollector) -> None:
    """An ``x-jws-signature`` header value: detached (empty payload segment), crit members."""
    head = {
        "alg": "ES256",
        "kid": "ec-1",
        "typ": "JOSE",
        "cty": "application/json",
        "http://openbanking.org.uk/iat": int(NOW),
        "http://openbanking.org.uk/iss": "tpp-client-1",
        "http://openbanking.org.uk/tan": "openbanking.org.uk",
        "crit": [
            "http://openbanking.org.uk/iat",
            "http://openbanking.org.uk/iss",
            "http://openbanking.org.uk/tan",
        ],
    }
    full = forge(head, b'{"Data":{}}', key=signing_key(EC_ISSUER), alg="ES256")
    h, _, s = segments(full)
    assert_e2(decide(guard, f"{h}..{s}"), events, guard, "token.crit_not_supported")


def test_ATK_27_legacy_typ_still_needs_our_audience(events: EventCollector) -> None:
    """An issuer configured to accept ``typ: JWT`` (legacy) still refuses an ID token by ``aud``."""
    policy = make_policy(issuer_entry(EC_ISSUER, ["ES256"], typ=["at+jwt", "JWT"]))
    guard = Guard(policy, sink=events, clock=lambda: NOW)
    id_token = forge(
        {"alg": "ES256", "typ": "JWT", "kid": "ec-1"},
        claims(aud="tpp-client-1", nonce="n"),
        key=signing_key(EC_ISSUER),
        alg="ES256",
    )
    assert_e2(decide(guard, id_token), events, guard, "token.audience_mismatch")


# -- ATK-28: audience and issuer substitution ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(claims(aud="https://rs-b.example"), "token.audience_mismatch", id="token-for-rs-b"),
        pytest.param(claims(aud=["https://rs-b.example"]), "token.audience_mismatch", id="aud-array-rs-b"),
        pytest.param(claims(aud=AUD + "/"), "token.audience_mismatch", id="aud-trailing-slash"),
        pytest.param(claims(aud=AUD.upper()), "token.audience_mismatch", id="aud-upper-case"),
        pytest.param(claims(aud=[]), "token.claim_type:aud", id="aud-empty-array"),
        pytest.param(claims(aud=[AUD, 7]), "token.claim_type:aud", id="aud-non-string-member"),
        pytest.param(claims(iss=ISS + "/"), "token.issuer_unknown", id="iss-trailing-slash"),
        pytest.param(claims(iss="https://AS.bank.example"), "token.issuer_unknown", id="iss-case"),
        pytest.param(claims(iss="https://as.b\u0430nk.example"), "token.issuer_unknown", id="iss-homoglyph"),
        pytest.param(claims(iss=ISS + ":443"), "token.issuer_unknown", id="iss-explicit-port"),
        pytest.param(claims(iss="http://as.bank.example"), "token.issuer_unknown", id="iss-http"),
        pytest.param(claims(iss=[ISS]), "token.issuer_unknown", id="iss-array"),
    ],
)
def test_ATK_28_audience_and_issuer_substitution(
    guard: Guard, events: EventCollector, body: dict[str, Any], reason: str
) -> None:
    assert_e2(decide(guard, ec_token(body=body)), events, guard, reason)


def test_ATK_28_spoofed_iss_signed_by_another_trusted_issuer(guard: Guard, events: EventCollector) -> None:
    """OTHER_ISSUER is trusted and even uses the same kid; it still cannot speak for ISS."""
    assert decide(guard, OTHER_ISSUER.mint(now=NOW, audience=AUD)).allowed
    spoofed = OTHER_ISSUER.mint({"iss": ISS}, now=NOW, audience=AUD)
    assert_e2(decide(guard, spoofed), events, guard, "token.signature_invalid")
    from_rsa = RSA_ISSUER.mint({"iss": ISS}, now=NOW, audience=AUD)
    assert_e2(decide(guard, from_rsa), events, guard, "token.alg_not_allowed")


# -- ATK-29: encodings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_header", "raw_payload", "reason"),
    [
        pytest.param(
            json.dumps(header()).encode("utf-16"), None, "token.header_not_utf8", id="utf16-bom-header"
        ),
        pytest.param(
            json.dumps(header()).encode("utf-16-le"), None, "token.header_not_json", id="utf16le-header"
        ),
        pytest.param(json.dumps(header()).encode("utf-32"), None, "token.header_not_utf8", id="utf32-header"),
        pytest.param(b"\xef\xbb\xbf" + dumps(header()), None, "token.header_not_json", id="utf8-bom-header"),
        pytest.param(None, b"\xef\xbb\xbf" + dumps(claims()), "token.claims_not_json", id="utf8-bom-payload"),
        pytest.param(
            None, json.dumps(claims()).encode("utf-16"), "token.claims_not_utf8", id="utf16-payload"
        ),
        pytest.param(
            None, dumps(claims())[:-1] + b',"x":"\xc0\xaf"}', "token.claims_not_utf8", id="overlong"
        ),
        pytest.param(
            None, dumps(claims())[:-1] + b',"x":"\xed\xa0\x80"}', "token.claims_not_utf8", id="raw-surrogate"
        ),
        pytest.param(
            None, dumps(claims())[:-1] + b',"x":"\\ud800"}', "token.json_lone_surrogate", id="lone-surrogate"
        ),
        pytest.param(
            None, dumps(claims())[:-1] + b',"\\udfff":1}', "token.json_lone_surrogate", id="surrogate-key"
        ),
        pytest.param(
            dumps(header())[:-1] + b',"x":"\\udc00"}',
            None,
            "token.json_lone_surrogate",
            id="header-surrogate",
        ),
        pytest.param(
            None, dumps(claims())[:-1] + b',"x":"\xff"}', "token.claims_not_utf8", id="invalid-byte"
        ),
    ],
)
def test_ATK_29_encoding_tricks(
    guard: Guard, events: EventCollector, raw_header: bytes | None, raw_payload: bytes | None, reason: str
) -> None:
    token = forge(
        raw_header if raw_header is not None else header(),
        raw_payload if raw_payload is not None else claims(),
        key=signing_key(EC_ISSUER),
        alg="ES256",
    )
    assert_e2(decide(guard, token), events, guard, reason)


def test_ATK_29_escaped_non_ascii_is_fine(guard: Guard) -> None:
    """Properly paired escapes and real UTF-8 are ordinary text."""
    body = dumps(claims())[:-1] + b',"name":"\\ud83d\\ude00 M\xc3\xbcller"}'
    assert decide(guard, ec_token(body=body)).allowed


# -- ATK-30: weak HMAC secrets ------------------------------------------------------------------------

HS_ISS = "https://hs.bank.example"
STRONG_SECRET = "k9!v2#Lq7@Zr4$Tw8^Yp1&Bn6*Mx3(Hd"


def _hs_policy(monkeypatch: pytest.MonkeyPatch, secret: str) -> Policy:
    monkeypatch.setenv("BANKGUARD_TEST_HS_SECRET", secret)
    return make_policy(
        {
            "issuer": HS_ISS,
            "audiences": [AUD],
            "algorithms": ["HS256"],
            "hmac_secret_env": "BANKGUARD_TEST_HS_SECRET",
        }
    )


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("", id="empty"),
        pytest.param("secret", id="secret"),
        pytest.param("changeme", id="changeme"),
        pytest.param("x" * 31, id="31-bytes"),
        pytest.param("\u00e9" * 15, id="30-bytes-as-utf8"),
    ],
)
def test_ATK_30_weak_hmac_secret_refused_at_load(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _hs_policy(monkeypatch, secret)
    assert any(p.path.endswith("hmac_secret_env") for p in caught.value.problems)


def test_ATK_30_unset_secret_variable_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BANKGUARD_TEST_HS_SECRET", raising=False)
    with pytest.raises(ConfigurationError):
        make_policy(
            {
                "issuer": HS_ISS,
                "audiences": [AUD],
                "algorithms": ["HS256"],
                "hmac_secret_env": "BANKGUARD_TEST_HS_SECRET",
            }
        )


@pytest.mark.parametrize("guess", [b"secret", b"changeme", b"", b"password", STRONG_SECRET[:-1].encode()])
def test_ATK_30_dictionary_secret_does_not_verify(
    monkeypatch: pytest.MonkeyPatch, events: EventCollector, guess: bytes
) -> None:
    guard = Guard(_hs_policy(monkeypatch, STRONG_SECRET), sink=events, clock=lambda: NOW)
    good = forge(header(alg="HS256", kid=None), claims(iss=HS_ISS), key=STRONG_SECRET.encode(), alg="HS256")
    assert decide(guard, good).allowed
    forged = forge(header(alg="HS256", kid=None), claims(iss=HS_ISS), key=guess, alg="HS256")
    assert_e2(decide(guard, forged), events, guard, "token.signature_invalid")


def test_ATK_30_hmac_issuer_refuses_asymmetric_tokens(
    monkeypatch: pytest.MonkeyPatch, events: EventCollector
) -> None:
    guard = Guard(_hs_policy(monkeypatch, STRONG_SECRET), sink=events, clock=lambda: NOW)
    token = forge(header(kid=None), claims(iss=HS_ISS), key=signing_key(EC_ISSUER), alg="ES256")
    assert_e2(decide(guard, token), events, guard, "token.alg_not_allowed")


# -- ATK-31: key and algorithm mismatch inside the JWKS -------------------------------------------------


def test_ATK_31_jwks_key_alg_ps256_token_rs256(events: EventCollector) -> None:
    issuer = TestIssuer(RSA_ISS, alg="PS256", kid="ps-1")
    assert issuer.public_jwk()["alg"] == "PS256"
    guard = Guard(make_policy(issuer_entry(issuer, ["RS256", "PS256"])), sink=events, clock=lambda: NOW)
    assert decide(guard, issuer.mint(now=NOW, audience=AUD)).allowed
    token = forge(header(alg="RS256", kid="ps-1"), claims(iss=RSA_ISS), key=signing_key(issuer), alg="RS256")
    assert_e2(decide(guard, token), events, guard, "token.no_key_for_alg")


def test_ATK_31_enc_key_is_never_used_for_verification(events: EventCollector) -> None:
    enc = TestIssuer(ISS, alg="ES256", kid="enc-1")
    enc_jwk = {**enc.public_jwk(), "use": "enc"}
    ops_jwk = {**TestIssuer(ISS, alg="ES256", kid="wrap-1").public_jwk(), "key_ops": ["wrapKey"]}
    jwks = {"keys": [enc_jwk, ops_jwk, EC_ISSUER.public_jwk()]}
    entry = {"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"], "jwks": jwks}
    guard = Guard(make_policy(entry), sink=events, clock=lambda: NOW)
    assert decide(guard, good_token()).allowed
    token = enc.mint(now=NOW, audience=AUD)
    assert_e2(decide(guard, token), events, guard, "token.kid_unknown")
    kidless = forge(header(kid=None), claims(), key=signing_key(enc), alg="ES256")
    assert_e2(decide(guard, kidless), events, guard, "token.signature_invalid")
    only_enc = make_policy(
        {"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"], "jwks": {"keys": [enc_jwk]}}
    )
    with pytest.raises(ConfigurationError) as caught:
        Guard(only_enc)
    assert "no usable key" in str(caught.value)


def test_ATK_31_key_of_another_curve_under_the_same_kid(events: EventCollector) -> None:
    p384 = TestIssuer(ISS, alg="ES384", kid="ec-1")
    jwks = {"keys": [p384.public_jwk()]}
    guard = Guard(
        make_policy({"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256", "ES384"], "jwks": jwks}),
        sink=events,
        clock=lambda: NOW,
    )
    assert decide(guard, p384.mint(now=NOW, audience=AUD)).allowed
    token = forge(header(alg="ES256", kid="ec-1"), claims(), key=signing_key(EC_ISSUER), alg="ES256")
    assert_e2(decide(guard, token), events, guard, "token.no_key_for_alg")
