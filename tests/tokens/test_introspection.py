"""RFC 7662 introspection against a real authorization server on 127.0.0.1 (INTRO-01..07).

The mock AS is an ``http.server.ThreadingHTTPServer`` (plain HTTP with ``insecure_http``, or
HTTPS requiring a client certificate for ``tls_client_auth``). Every server is stopped at the
end of its test; handlers that sleep are woken then, so no test waits for long.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote_plus

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bankguard.errors import ConfigurationError
from bankguard.policy_tokens import IntrospectionPolicy
from bankguard.tokens.introspection import (
    IntrospectionClient,
    IntrospectionResult,
    IntrospectionUnavailable,
    check_claims,
)

pytestmark = pytest.mark.network

SECRET_ENV = "BANKGUARD_TEST_INTROSPECTION_SECRET"
SECRET = "s3cr:et+/ é%&="
CLIENT_ID = "rs client:1"
TOKEN = "2YotnFZFEjr1zCsicMWpAA.opaque-~token"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the mock authorization server ------------------------------------------------------------


class MockAS:
    """An introspection endpoint that records each request and answers as told."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.handshake_failures = 0
        self.status = 200
        self.body = b'{"active": true}'
        self.respond: Callable[[dict[str, Any]], tuple[int, bytes]] | None = None
        #: Seconds a handler waits before answering; ``release`` (set at stop) cuts it short.
        self.delay = 0.0
        self.release = threading.Event()
        self._lock = threading.Lock()
        mock = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a client that stops reading cannot block the handler (and stop()) for long

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle(self) -> None:
                if tls is not None:
                    try:
                        self.request.do_handshake()
                    except OSError:  # ssl.SSLError included: no or an untrusted client certificate
                        with mock._lock:
                            mock.handshake_failures += 1
                        return
                super().handle()

            def do_POST(self) -> None:
                mock._serve(self)

            do_GET = do_PUT = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False  # server_close() joins the handler threads
        if tls is not None:
            self.server.socket = tls.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/introspect"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        connection = handler.connection
        record = {
            "method": handler.command,
            "path": handler.path,
            "headers": {k.lower(): v for k, v in handler.headers.items()},
            "authorization": handler.headers.get_all("Authorization") or [],
            "body": body,
            "form": parse_qs(body.decode("ascii"), keep_blank_values=True),
            "peercert": connection.getpeercert() if isinstance(connection, ssl.SSLSocket) else None,
        }
        with self._lock:
            self.requests.append(record)
        if self.delay:
            self.release.wait(self.delay)
        status, payload = self.respond(record) if self.respond else (self.status, self.body)
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            if 300 <= status < 400:
                handler.send_header("Location", self.url + "/elsewhere")
            handler.end_headers()
            for i in range(0, len(payload), 65536):
                handler.wfile.write(payload[i : i + 65536])
        except OSError:
            pass  # the client hung up: timeout or size cap

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.requests)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def start_as() -> Iterator[Callable[..., MockAS]]:
    started: list[MockAS] = []

    def start(tls: ssl.SSLContext | None = None) -> MockAS:
        mock = MockAS(tls)
        started.append(mock)
        return mock

    yield start
    for mock in started:
        mock.stop()


@pytest.fixture
def mock_as(start_as: Callable[..., MockAS]) -> MockAS:
    return start_as()


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def make_policy(mock: MockAS, **overrides: Any) -> IntrospectionPolicy:
    options: dict[str, Any] = {
        "endpoint": mock.url,
        "client_id": CLIENT_ID,
        "client_secret_env": SECRET_ENV,
        "insecure_http": True,
        **overrides,
    }
    return IntrospectionPolicy(**options)


def make_client(
    mock: MockAS, clock: Clock | None = None, max_entries: int = 100, **overrides: Any
) -> IntrospectionClient:
    return IntrospectionClient(
        make_policy(mock, **overrides), clock=clock or Clock(), max_entries=max_entries
    )


def answer(**claims: Any) -> bytes:
    return json.dumps(claims).encode()


# -- a CA, a server certificate and a client certificate ----------------------------------------


class Pki(NamedTuple):
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_cn: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    out = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bankguard test CA")])
    usage = {k: False for k in ("content_commitment", "key_encipherment", "data_encipherment")}
    usage.update(key_agreement=False, encipher_only=False, decipher_only=False)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str, purpose: x509.ObjectIdentifier, san: list[x509.GeneralName]) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path, key_path = out / f"{name}.crt", out / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path

    server_cert, server_key = leaf(
        "as.test",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_cert, client_key = leaf("bankguard-rs", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    (out / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return Pki(out / "ca.crt", server_cert, server_key, client_cert, client_key, "bankguard-rs")


@pytest.fixture
def tls_as(start_as: Callable[..., MockAS], pki: Pki) -> MockAS:
    """An HTTPS introspection endpoint that requires a client certificate from the test CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return start_as(context)


def tls_policy(mock: MockAS, pki: Pki, **overrides: Any) -> IntrospectionPolicy:
    options: dict[str, Any] = {
        "endpoint": mock.url,
        "client_id": CLIENT_ID,
        "auth": "tls_client_auth",
        "client_cert_file": str(pki.client_cert),
        "client_key_file": str(pki.client_key),
        "ca_file": str(pki.ca),
        **overrides,
    }
    return IntrospectionPolicy(**options)


# -- INTRO-01: the request and client authentication ------------------------------------------


def assert_introspection_post(record: dict[str, Any]) -> None:
    assert record["method"] == "POST"
    assert record["path"] == "/introspect"
    assert record["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert record["headers"]["accept"] == "application/json"
    assert record["form"]["token"] == [TOKEN]
    assert record["form"]["token_type_hint"] == ["access_token"]


def test_INTRO_01_client_secret_basic(mock_as: MockAS) -> None:
    client = make_client(mock_as, auth="client_secret_basic")
    assert client.introspect(TOKEN).active
    (record,) = mock_as.requests
    assert_introspection_post(record)
    assert set(record["form"]) == {"token", "token_type_hint"}  # no credentials in the body
    (authorization,) = record["authorization"]
    scheme, _, credentials = authorization.partition(" ")
    assert scheme == "Basic"
    decoded = base64.b64decode(credentials, validate=True).decode("ascii")
    # RFC 6749 §2.3.1: each part form-urlencoded before base64, so ':' in them is escaped.
    assert decoded == "rs+client%3A1:s3cr%3Aet%2B%2F+%C3%A9%25%26%3D"
    client_id, secret = decoded.split(":")
    assert (unquote_plus(client_id), unquote_plus(secret)) == (CLIENT_ID, SECRET)


def test_INTRO_01_client_secret_post(mock_as: MockAS, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(mock_as, auth="client_secret_post")
    monkeypatch.setenv(SECRET_ENV, "changed later")  # the secret was read at construction
    assert client.introspect(TOKEN).active
    (record,) = mock_as.requests
    assert_introspection_post(record)
    assert record["authorization"] == []
    assert record["form"]["client_id"] == [CLIENT_ID]
    assert record["form"]["client_secret"] == [SECRET]


def test_INTRO_01_tls_client_auth_presents_the_certificate(tls_as: MockAS, pki: Pki) -> None:
    client = IntrospectionClient(tls_policy(tls_as, pki))
    assert client.introspect(TOKEN).active
    (record,) = tls_as.requests
    assert_introspection_post(record)
    assert record["authorization"] == []
    assert record["form"]["client_id"] == [CLIENT_ID]
    assert "client_secret" not in record["form"]
    subject = dict(attr for rdn in record["peercert"]["subject"] for attr in rdn)
    assert subject["commonName"] == pki.client_cn


def test_INTRO_01_tls_server_refuses_a_client_without_certificate(tls_as: MockAS, pki: Pki) -> None:
    policy = make_policy(tls_as, auth="client_secret_post", insecure_http=False, ca_file=str(pki.ca))
    with pytest.raises(IntrospectionUnavailable) as caught:
        IntrospectionClient(policy).introspect(TOKEN)
    assert caught.value.reason in {"tls_failed", "connection_failed"}
    assert tls_as.requests == []


def test_INTRO_01_endpoint_certificate_is_verified(tls_as: MockAS, pki: Pki) -> None:
    client = IntrospectionClient(tls_policy(tls_as, pki, ca_file=None))  # system CAs: test CA unknown
    with pytest.raises(IntrospectionUnavailable) as caught:
        client.introspect(TOKEN)
    assert caught.value.reason == "tls_failed"
    assert tls_as.requests == []


def test_INTRO_01_tls_client_auth_needs_https(mock_as: MockAS, pki: Pki) -> None:
    # Refused when the policy is built: a client certificate over plain http protects nothing.
    with pytest.raises(ConfigurationError, match="https"):
        tls_policy(mock_as, pki, insecure_http=True)


def test_INTRO_01_secret_missing_at_construction(mock_as: MockAS, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = make_policy(mock_as)
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(ConfigurationError):
        IntrospectionClient(policy)


@pytest.mark.parametrize("auth", ["client_secret_basic", "client_secret_post"])
def test_INTRO_01_secret_never_in_repr(mock_as: MockAS, auth: str) -> None:
    client = make_client(mock_as, auth=auth)
    text = repr(client)
    assert mock_as.url in text
    assert repr(CLIENT_ID) in text
    basic = base64.b64encode(b"rs+client%3A1:s3cr%3Aet%2B%2F+%C3%A9%25%26%3D").decode()
    assert "s3cr" not in text
    assert basic not in text


# -- INTRO-02: only the JSON boolean true is active; INTRO-07: the body is untrusted ------------


@pytest.mark.parametrize(
    ("body", "active"),
    [
        pytest.param(b'{"active": true}', True, id="true"),
        pytest.param(b'{"active": "true", "scope": "accounts"}', False, id="string-true"),
        pytest.param(b'{"active": 1}', False, id="one"),
        pytest.param(b'{"scope": "accounts"}', False, id="missing"),
        pytest.param(b'{"active": false}', False, id="false"),
        pytest.param(b'{"active": null}', False, id="null"),
        pytest.param(b'{"active": [true]}', False, id="array-true"),
        pytest.param(b'{"active": {"active": true}}', False, id="object"),
    ],
)
def test_INTRO_02_active_only_when_json_true(mock_as: MockAS, body: bytes, active: bool) -> None:
    mock_as.body = body
    result = make_client(mock_as).introspect(TOKEN)
    assert result.active is active
    if not active:
        assert check_claims(result, make_policy(mock_as), T0, 30) == "introspection.inactive"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"active=true", "response_not_json", id="not-json"),
        pytest.param(b"", "response_not_json", id="empty"),
        pytest.param(b'[{"active": true}]', "response_not_object", id="array"),
        pytest.param(b"true", "response_not_object", id="bare-true"),
        pytest.param(b'{"active": true', "response_not_json", id="truncated"),
        pytest.param(b'{"active": true, "x": "\xff"}', "response_not_utf8", id="not-utf8"),
        pytest.param(b'{"active": true, "exp": NaN}', "json_non_finite_number", id="nan"),
        pytest.param(b'{"active": false, "active": true}', "json_duplicate_member", id="duplicate"),
        pytest.param(b'{"active": true, "x": ' + b"[" * 20 + b"]" * 20 + b"}", "json_too_deep", id="deep"),
    ],
)
def test_INTRO_02_07_invalid_body_is_inactive(mock_as: MockAS, body: bytes, reason: str) -> None:
    # INTRO-02: a 200 that is not one clean JSON object never makes a token active.
    # ``reason`` names the parser finding that makes the body unusable.
    mock_as.body = body
    client = make_client(mock_as)
    result = client.introspect(TOKEN)
    assert result.active is False
    assert dict(result.claims) == {}
    assert check_claims(result, make_policy(mock_as), T0, 30) == "introspection.inactive"
    assert reason


def test_INTRO_07_ten_megabytes_aborted(mock_as: MockAS) -> None:
    mock_as.body = b'{"active": true, "pad": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    started = time.monotonic()
    with pytest.raises(IntrospectionUnavailable) as caught:
        make_client(mock_as).introspect(TOKEN)
    assert caught.value.reason == "too_large"
    assert time.monotonic() - started < 5


def test_INTRO_07_size_cap_is_exact(mock_as: MockAS) -> None:
    prefix = b'{"active": true, "pad": "'
    mock_as.body = prefix + b"a" * (1024 - len(prefix) - 2) + b'"}'
    assert len(mock_as.body) == 1024
    assert make_client(mock_as, max_bytes=1024).introspect(TOKEN).active
    mock_as.body = prefix + b"a" * (1025 - len(prefix) - 2) + b'"}'
    with pytest.raises(IntrospectionUnavailable) as caught:
        make_client(mock_as, max_bytes=1024).introspect(TOKEN)
    assert caught.value.reason == "too_large"


# -- INTRO-03: the local checks of an active result --------------------------------------------

ISS = "https://as.example"
AUD = "https://rs.example"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({}, None, id="nothing-to-check"),
        pytest.param(
            {"iss": ISS, "aud": AUD, "exp": T0 + 60, "nbf": T0 - 10, "iat": T0 - 10}, None, id="all-good"
        ),
        pytest.param({"aud": ["other", AUD]}, None, id="aud-list-contains"),
        pytest.param({"aud": ["other", "rs2"]}, None, id="aud-second-audience"),
        pytest.param({"aud": "https://other-rs.example"}, "introspection.audience", id="aud-other"),
        pytest.param({"aud": ["a", "b"]}, "introspection.audience", id="aud-list-others"),
        pytest.param({"aud": []}, "introspection.audience", id="aud-empty-list"),
        pytest.param({"aud": [AUD, 1]}, "introspection.malformed_claim", id="aud-list-non-string"),
        pytest.param({"aud": 5}, "introspection.malformed_claim", id="aud-number"),
        pytest.param({"aud": {"x": AUD}}, "introspection.malformed_claim", id="aud-object"),
        pytest.param({"aud": None}, "introspection.malformed_claim", id="aud-null"),
        pytest.param({"iss": "https://evil.example"}, "introspection.issuer", id="iss-other"),
        pytest.param({"iss": ISS + "/"}, "introspection.issuer", id="iss-exact-match-only"),
        pytest.param({"iss": 5}, "introspection.malformed_claim", id="iss-number"),
        pytest.param({"iss": None}, "introspection.malformed_claim", id="iss-null"),
        pytest.param({"exp": T0 - 31}, "introspection.expired", id="exp-past-leeway"),
        pytest.param({"exp": T0 - 30}, "introspection.expired", id="exp-at-leeway"),
        pytest.param({"exp": T0 - 29}, None, id="exp-within-leeway"),
        pytest.param({"exp": T0 + 60.5}, None, id="exp-float"),
        pytest.param({"nbf": T0 + 31}, "introspection.not_yet_valid", id="nbf-future"),
        pytest.param({"nbf": T0 + 30}, None, id="nbf-within-leeway"),
        pytest.param({"exp": str(int(T0) + 60)}, "introspection.malformed_claim", id="exp-string"),
        pytest.param({"exp": True}, "introspection.malformed_claim", id="exp-bool"),
        pytest.param({"nbf": False}, "introspection.malformed_claim", id="nbf-bool"),
        pytest.param({"iat": "yesterday"}, "introspection.malformed_claim", id="iat-string"),
        pytest.param({"iat": True}, "introspection.malformed_claim", id="iat-bool"),
        pytest.param({"exp": None}, "introspection.malformed_claim", id="exp-null"),
        pytest.param({"exp": -1}, "introspection.malformed_claim", id="exp-negative"),
        pytest.param({"exp": 10**400}, "introspection.malformed_claim", id="exp-huge"),
    ],
)
def test_INTRO_03_check_claims(claims: dict[str, Any], reason: str | None) -> None:
    policy = IntrospectionPolicy(
        endpoint="https://as.example/introspect",
        client_id=CLIENT_ID,
        client_secret_env=SECRET_ENV,
        issuer=ISS,
        audiences=(AUD, "rs2"),
    )
    result = IntrospectionResult.from_response({"active": True, **claims})
    assert check_claims(result, policy, T0, 30) == reason


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"iss": "https://any.example", "aud": "anyone"}, None, id="not-configured"),
        pytest.param({"aud": [1]}, "introspection.malformed_claim", id="types-still-checked"),
        pytest.param({"exp": T0 - 100}, "introspection.expired", id="time-still-checked"),
    ],
)
def test_INTRO_03_issuer_and_audience_only_when_configured(
    claims: dict[str, Any], reason: str | None
) -> None:
    policy = IntrospectionPolicy(
        endpoint="https://as.example/introspect", client_id=CLIENT_ID, client_secret_env=SECRET_ENV
    )
    result = IntrospectionResult.from_response({"active": True, **claims})
    assert check_claims(result, policy, T0, 30) == reason


def test_INTRO_03_unfrozen_claims_are_checked_the_same() -> None:
    policy = IntrospectionPolicy(
        endpoint="https://as.example/introspect",
        client_id=CLIENT_ID,
        client_secret_env=SECRET_ENV,
        audiences=(AUD,),
    )
    good = IntrospectionResult(active=True, claims={"aud": ["x", AUD]})
    bad = IntrospectionResult(active=True, claims={"aud": ["x", 1]})
    assert check_claims(good, policy, T0, 0) is None
    assert check_claims(bad, policy, T0, 0) == "introspection.malformed_claim"


def test_INTRO_03_active_with_another_audience_end_to_end(mock_as: MockAS) -> None:
    mock_as.body = answer(active=True, aud="https://other-rs.example", exp=T0 + 60)
    client = make_client(mock_as, audiences=(AUD,))
    result = client.introspect(TOKEN)
    assert result.active
    assert check_claims(result, client.policy, T0, 30) == "introspection.audience"


# -- INTRO-04: the cache ------------------------------------------------------------------------


def test_INTRO_04_second_call_from_cache(mock_as: MockAS) -> None:
    client = make_client(mock_as)
    assert client.cached(TOKEN) is None
    first = client.introspect(TOKEN)
    assert client.introspect(TOKEN) is first
    assert client.cached(TOKEN) is first
    assert mock_as.hits == 1
    assert client.cached("another token") is None
    assert mock_as.hits == 1


def test_INTRO_04_never_beyond_exp(mock_as: MockAS) -> None:
    clock = Clock()
    mock_as.body = answer(active=True, exp=T0 + 5)
    client = make_client(mock_as, clock, cache_ttl=60)
    result = client.introspect(TOKEN)
    assert result.expires_at == T0 + 5
    clock.now = T0 + 4.999
    assert client.cached(TOKEN) is result
    clock.now = T0 + 5
    assert client.cached(TOKEN) is None
    client.introspect(TOKEN)
    assert mock_as.hits == 2


def test_INTRO_04_at_most_cache_ttl(mock_as: MockAS) -> None:
    clock = Clock()
    mock_as.body = answer(active=True, exp=T0 + 3600)
    client = make_client(mock_as, clock, cache_ttl=60)
    client.introspect(TOKEN)
    clock.now = T0 + 59.9
    assert client.cached(TOKEN) is not None
    clock.now = T0 + 60
    assert client.cached(TOKEN) is None


def test_INTRO_04_no_exp_uses_cache_ttl(mock_as: MockAS) -> None:
    clock = Clock()
    client = make_client(mock_as, clock, cache_ttl=30)
    client.introspect(TOKEN)
    clock.now = T0 + 29
    assert client.cached(TOKEN) is not None
    clock.now = T0 + 30
    assert client.cached(TOKEN) is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(answer(active=True, exp=T0 - 1), id="exp-past"),
        pytest.param(answer(active=True, exp=T0), id="exp-now"),
        pytest.param(answer(active=True, exp="soon"), id="exp-malformed"),
        pytest.param(answer(active=True, exp=True), id="exp-bool"),
    ],
)
def test_INTRO_04_unusable_exp_is_not_cached(mock_as: MockAS, body: bytes) -> None:
    mock_as.body = body
    client = make_client(mock_as)
    client.introspect(TOKEN)
    client.introspect(TOKEN)
    assert mock_as.hits == 2
    assert client._cache == {}


def test_INTRO_04_negative_cache_expires(mock_as: MockAS) -> None:
    clock = Clock()
    mock_as.body = answer(active=False)
    client = make_client(mock_as, clock, negative_cache_ttl=10, cache_ttl=60)
    assert not client.introspect(TOKEN).active
    clock.now = T0 + 9.9
    cached = client.cached(TOKEN)
    assert cached is not None
    assert not cached.active
    clock.now = T0 + 10
    assert client.cached(TOKEN) is None
    client.introspect(TOKEN)
    assert mock_as.hits == 2


def test_INTRO_04_caching_can_be_disabled(mock_as: MockAS) -> None:
    client = make_client(mock_as, cache_ttl=0, negative_cache_ttl=0)
    client.introspect(TOKEN)
    client.introspect(TOKEN)
    assert mock_as.hits == 2
    mock_as.body = answer(active=False)
    client.introspect(TOKEN)
    assert client.cached(TOKEN) is None


def test_INTRO_04_keyed_by_hash_of_token(mock_as: MockAS) -> None:
    client = make_client(mock_as)
    client.introspect(TOKEN)
    keys: list[object] = list(client._cache)
    assert TOKEN not in keys
    assert TOKEN.encode() not in keys
    assert keys == [hashlib.sha256(TOKEN.encode()).digest()]
    assert TOKEN not in repr(client._cache)


def test_INTRO_04_bounded_entries_evict_oldest(mock_as: MockAS) -> None:
    client = make_client(mock_as, max_entries=3)
    tokens = [f"token-{i}" for i in range(5)]
    for token in tokens:
        client.introspect(token)
    assert len(client._cache) == 3
    assert [client.cached(t) is not None for t in tokens] == [False, False, True, True, True]
    none = make_client(mock_as, max_entries=0)
    none.introspect(TOKEN)
    assert none.cached(TOKEN) is None


def test_INTRO_04_evict(mock_as: MockAS) -> None:
    client = make_client(mock_as)
    client.introspect(TOKEN)
    client.evict(TOKEN)
    assert client.cached(TOKEN) is None
    client.evict("never seen")
    client.introspect(TOKEN)
    assert mock_as.hits == 2


def test_INTRO_01_token_that_is_not_valid_unicode(mock_as: MockAS) -> None:
    mock_as.respond = lambda record: (200, answer(active=False))
    assert not make_client(mock_as).introspect("tok\ud800en").active
    assert mock_as.requests[0]["body"].startswith(b"token=tok%ED%A0%80en&")


def test_INTRO_04_results_per_token(mock_as: MockAS) -> None:
    mock_as.respond = lambda record: (200, answer(active=record["form"]["token"][0] == "good"))
    client = make_client(mock_as)
    assert client.introspect("good").active
    assert not client.introspect("bad").active
    assert client.cached("good").active  # type: ignore[union-attr]
    assert not client.cached("bad").active  # type: ignore[union-attr]


def run_in_threads(n: int, target: Callable[[], Any]) -> tuple[list[Any], list[threading.Thread]]:
    results: list[Any] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            value: Any = target()
        except Exception as exc:
            value = exc
        with lock:
            results.append(value)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for thread in threads:
        thread.start()
    return results, threads


def wait_for(condition: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_INTRO_04_single_flight(mock_as: MockAS) -> None:
    mock_as.delay = 5.0  # held until release
    client = make_client(mock_as)
    results, threads = run_in_threads(8, lambda: client.introspect(TOKEN))
    wait_for(lambda: mock_as.hits == 1)
    time.sleep(0.2)  # let the others join the call in flight
    mock_as.release.set()
    for thread in threads:
        thread.join(5)
    assert len(results) == 8
    assert all(isinstance(r, IntrospectionResult) and r.active for r in results)
    assert len({id(r) for r in results}) == 1
    assert mock_as.hits == 1


def test_INTRO_04_single_flight_shares_failure(mock_as: MockAS) -> None:
    mock_as.delay = 5.0
    mock_as.status = 500
    client = make_client(mock_as)
    results, threads = run_in_threads(4, lambda: client.introspect(TOKEN))
    wait_for(lambda: mock_as.hits == 1)
    time.sleep(0.2)
    mock_as.release.set()
    for thread in threads:
        thread.join(5)
    assert len(results) == 4
    assert all(isinstance(r, IntrospectionUnavailable) and r.reason == "status_500" for r in results)
    assert mock_as.hits == 1


def test_INTRO_04_evict_during_call_is_not_undone(mock_as: MockAS) -> None:
    mock_as.delay = 5.0
    client = make_client(mock_as)
    results, threads = run_in_threads(1, lambda: client.introspect(TOKEN))
    wait_for(lambda: mock_as.hits == 1)
    client.evict(TOKEN)  # e.g. a revocation event arrives while the answer is on its way
    mock_as.release.set()
    threads[0].join(5)
    assert len(results) == 1
    assert client.cached(TOKEN) is None


# -- INTRO-05: no answer → IntrospectionUnavailable, never active, never cached -----------------


def test_INTRO_05_server_down(mock_as: MockAS) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client(mock_as, endpoint=f"http://127.0.0.1:{port}/introspect")
    with pytest.raises(IntrospectionUnavailable) as caught:
        client.introspect(TOKEN)
    assert caught.value.reason == "connection_failed"


def test_INTRO_05_timeout(mock_as: MockAS) -> None:
    mock_as.delay = 0.6
    client = make_client(mock_as, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(IntrospectionUnavailable) as caught:
        client.introspect(TOKEN)
    assert caught.value.reason == "timeout"
    assert time.monotonic() - started < 2
    assert client.cached(TOKEN) is None


@pytest.mark.parametrize("status", [500, 503, 401, 400, 404, 204, 201])
def test_INTRO_05_non_200(mock_as: MockAS, status: int) -> None:
    mock_as.status = status
    mock_as.body = b'{"active": true}'
    client = make_client(mock_as)
    with pytest.raises(IntrospectionUnavailable) as caught:
        client.introspect(TOKEN)
    assert caught.value.reason == f"status_{status}"
    assert client.cached(TOKEN) is None


def test_INTRO_05_07_redirect_not_followed(mock_as: MockAS) -> None:
    mock_as.status = 307
    with pytest.raises(IntrospectionUnavailable) as caught:
        make_client(mock_as).introspect(TOKEN)
    assert caught.value.reason == "status_307"
    assert [r["path"] for r in mock_as.requests] == ["/introspect"]


def test_INTRO_05_failure_is_not_remembered(mock_as: MockAS) -> None:
    client = make_client(mock_as)
    mock_as.status = 500
    with pytest.raises(IntrospectionUnavailable):
        client.introspect(TOKEN)
    mock_as.status = 200
    assert client.introspect(TOKEN).active
    assert mock_as.hits == 2


# -- DPOP-16 / MTLS-04: binding data exposed for the token control ------------------------------

JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
X5T = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"


def test_DPOP_16_jkt_and_token_type(mock_as: MockAS) -> None:
    mock_as.body = answer(active=True, token_type="DPoP", cnf={"jkt": JKT}, scope="accounts payments")
    result = make_client(mock_as).introspect(TOKEN)
    assert result.token_type == "DPoP"
    assert result.cnf == {"jkt": JKT}
    assert result.jkt == JKT
    assert result.x5t_s256 is None
    assert result.scopes == frozenset({"accounts", "payments"})


def test_MTLS_04_certificate_thumbprint(mock_as: MockAS) -> None:
    mock_as.body = answer(active=True, token_type="Bearer", cnf={"x5t#S256": X5T})
    result = make_client(mock_as).introspect(TOKEN)
    assert result.token_type == "Bearer"
    assert result.x5t_s256 == X5T
    assert result.jkt is None


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"token_type": 5, "cnf": "jkt", "scope": ["accounts"]}, id="wrong-types"),
        pytest.param({"cnf": {"jkt": 5, "x5t#S256": ["x"]}}, id="thumbprints-not-strings"),
        pytest.param({}, id="absent"),
    ],
)
def test_DPOP_16_MTLS_04_malformed_binding_data_is_absent(claims: dict[str, Any]) -> None:
    result = IntrospectionResult.from_response({"active": True, **claims})
    assert result.token_type is None
    assert result.jkt is None
    assert result.x5t_s256 is None
    assert result.scopes == frozenset()


def test_scope_string_splits_on_spaces_only() -> None:
    result = IntrospectionResult.from_response({"active": True, "scope": " a  b\tc a "})
    assert result.scopes == frozenset({"a", "b\tc"})


def test_result_is_read_only(mock_as: MockAS) -> None:
    mock_as.body = answer(active=True, cnf={"jkt": JKT}, aud=["a", "b"])
    result = make_client(mock_as).introspect(TOKEN)
    with pytest.raises(TypeError):
        result.claims["active"] = False  # type: ignore[index]
    with pytest.raises(TypeError):
        result.cnf["jkt"] = "other"  # type: ignore[index]
    assert result.claims["aud"] == ("a", "b")
    with pytest.raises(FrozenInstanceError):
        result.active = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("token_type", "allowed"),
    [
        pytest.param("Bearer", True, id="bearer"),
        pytest.param("DPoP", False, id="dpop"),
        pytest.param(None, True, id="absent"),
    ],
)
def test_DPOP_16_introspected_dpop_token_presented_as_bearer_is_refused(
    mock_as: MockAS, token_type: str | None, allowed: bool
) -> None:
    from bankguard import EventCollector, Guard, Policy
    from bankguard.testing import make_facts

    claims: dict[str, Any] = {"active": True, "exp": 4102444800, "scope": "accounts", "client_id": "c"}
    if token_type is not None:
        claims["token_type"] = token_type
    mock_as.body = answer(**claims)
    intro = make_policy(mock_as)
    policy = Policy(
        tokens={"introspection": intro},  # type: ignore[arg-type]
        routes={"operations": [{"method": "GET", "path": "/accounts"}]},  # type: ignore[arg-type]
    )
    events = EventCollector()
    guard = Guard(policy, sink=events)
    decision = guard.decide(
        make_facts("GET", "/accounts", headers=[("authorization", "Bearer opaque-token-1")])
    )
    assert decision.allowed is allowed
    if not allowed:
        assert events.events[-1].reason == "token.dpop_bound_presented_as_bearer"
