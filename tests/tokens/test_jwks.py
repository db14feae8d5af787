"""Remote key sets (STANDARDS §3d JWKS-01..06, JWT-13) against real servers on 127.0.0.1.

Every server and every refresh thread started here is stopped by its fixture. TTL,
backoff and staleness run on an injected clock; the few real waits are short and bounded.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from bankguard.errors import ConfigurationError
from bankguard.policy_tokens import IssuerPolicy, JwksRefreshPolicy
from bankguard.tokens import _http, jwks
from bankguard.tokens.jose import JoseError, b64url_encode, verify_signature
from bankguard.tokens.jwks import RemoteKeySource, max_age

pytestmark = pytest.mark.network

ISS = "https://as.example"
ALLOWED = frozenset({"ES256"})
REFRESH = {"min_ttl": 300, "max_ttl": 3600, "cooldown": 30, "max_stale": 86400, "timeout": 2}


# -- keys ---------------------------------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
            "x": b64url_encode(numbers.x.to_bytes(32, "big")),
            "y": b64url_encode(numbers.y.to_bytes(32, "big")),
        }

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def jwks_of(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [k.jwk for k in keys]}


def verifies(source: RemoteKeySource, key: SigningKey) -> bool:
    """Whether a signature by ``key`` verifies with the source's current keys (exact kid lookup)."""
    index = source.current()
    data, signature = b"header.payload", key.sign(b"header.payload")
    for candidate in index.candidates(key.kid, "ES256") if index else []:
        try:
            verify_signature(candidate.key, "ES256", data, signature)
        except JoseError:
            continue
        return True
    return False


# -- servers ------------------------------------------------------------------------------


@dataclass
class Route:
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 whose answers a test sets per path; counts requests."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    outer.hits[self.path] += 1
                    route = outer.routes.get(self.path, Route(b"{}", status=404))
                time.sleep(route.delay)
                try:
                    self.send_response(route.status)
                    for name, value in route.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    self.wfile.write(route.body)
                except OSError:  # the client gave up (size cap, timeout)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, path: str, document: Any, **kw: Any) -> None:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.routes[path] = Route(body, **kw)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()  # joins the handler threads
        self.thread.join(5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(clock: Clock) -> Iterator[Any]:
    """Build sources on the fake clock; all are closed (threads joined) at teardown."""
    made: list[RemoteKeySource] = []

    def build(url: str | None = None, *, start: bool = False, real_clock: bool = False, **kw: Any):
        refresh = JwksRefreshPolicy(**{**REFRESH, **kw.pop("refresh", {})})
        kw.setdefault("insecure_http", True)
        if url is not None:
            kw.setdefault("jwks_uri", url)
        policy = IssuerPolicy(
            issuer=ISS, audiences=("https://rs.example",), algorithms=("ES256",), refresh=refresh, **kw
        )
        source = RemoteKeySource.from_policy(
            policy, ALLOWED, clock=time.monotonic if real_clock else clock, start=start
        )
        made.append(source)
        return source

    yield build
    for source in made:
        source.close()
        assert source._thread is None or not source._thread.is_alive()


def raw_source(url: str, made: list[RemoteKeySource], **kw: Any) -> RemoteKeySource:
    source = RemoteKeySource(ISS, ALLOWED, jwks_uri=url, refresh=JwksRefreshPolicy(**REFRESH), **kw)
    made.append(source)
    return source


@pytest.fixture
def made() -> Iterator[list[RemoteKeySource]]:
    sources: list[RemoteKeySource] = []
    yield sources
    for source in sources:
        source.close()


def records(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "bankguard" and r.levelno == level and text in r.getMessage()
    ]


# -- loading ------------------------------------------------------------------------------


def test_initial_load_serves_the_key_set_and_starts_one_thread(server, make, clock):
    k1 = SigningKey("k1")
    server.serve("/jwks", jwks_of(k1))
    source = make(server.url("/jwks"), start=True)
    assert source.refreshable is True
    assert source.issuer == ISS
    assert verifies(source, k1)
    assert (source.fetch_count, source.last_success, source.last_error) == (1, clock.now, None)
    assert source._thread is not None
    assert source._thread.is_alive()
    assert source._thread.daemon


def test_initial_failure_starts_empty_and_fails_closed(server, make, caplog):
    server.serve("/jwks", b"", status=503)
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        source = make(server.url("/jwks"), start=True)
    assert source.current() is None
    assert source.last_error == "status_503"
    assert source.last_success is None
    assert records(caplog, "no keys for issuer", logging.ERROR)


# -- JWKS-01 discovery ------------------------------------------------------------------


@pytest.mark.parametrize(
    "well_known", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
)
def test_JWKS_01_discovery_takes_jwks_uri_from_metadata(server, make, well_known):
    k1 = SigningKey("k1")
    server.serve("/keys", jwks_of(k1))
    server.serve(well_known, {"issuer": ISS, "jwks_uri": server.url("/keys")})
    source = make(discovery=server.url(well_known))
    assert source.refresh_if_due()
    assert verifies(source, k1)
    assert (server.hits[well_known], server.hits["/keys"]) == (1, 1)


@pytest.mark.parametrize("claimed", [ISS + "/", "https://AS.example", "https://evil.example", None, 7])
def test_JWKS_01_discovery_issuer_mismatch_loads_no_keys(server, make, caplog, claimed):
    server.serve("/keys", jwks_of(SigningKey("k1")))
    metadata = {"jwks_uri": server.url("/keys")} | ({} if claimed is None else {"issuer": claimed})
    server.serve("/.well-known/openid-configuration", metadata)
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        source = make(discovery=server.url("/.well-known/openid-configuration"), start=True)
    assert source.current() is None
    assert source.last_error == "metadata_issuer_mismatch"
    assert server.hits["/keys"] == 0
    assert records(caplog, "no keys for issuer", logging.ERROR)
    assert source.refresh_unknown_kid() is False  # still mismatched: still no keys
    assert source.current() is None


@pytest.mark.parametrize("jwks_uri", [None, 42, "", "keys.json", "ftp://127.0.0.1/keys", "https://u:p@h/k"])
def test_JWKS_01_metadata_jwks_uri_must_be_a_url(server, make, jwks_uri):
    server.serve("/.well-known/openid-configuration", {"issuer": ISS, "jwks_uri": jwks_uri})
    source = make(discovery=server.url("/.well-known/openid-configuration"))
    source.refresh_if_due()
    assert source.current() is None
    assert source.last_error == "metadata_jwks_uri_invalid"


def test_JWKS_01_forced_refresh_reuses_discovered_uri_scheduled_refresh_rediscovers(server, make, clock):
    k1, k2 = SigningKey("k1"), SigningKey("k2")
    server.serve("/keys", jwks_of(k1))
    server.serve("/.well-known/openid-configuration", {"issuer": ISS, "jwks_uri": server.url("/keys")})
    source = make(discovery=server.url("/.well-known/openid-configuration"))
    source.refresh_if_due()
    server.serve("/keys", jwks_of(k1, k2))
    assert source.refresh_unknown_kid() is True
    assert server.hits["/.well-known/openid-configuration"] == 1
    server.serve("/.well-known/openid-configuration", {"issuer": "https://other.example", "jwks_uri": "x"})
    clock.advance(3600)
    assert source.refresh_if_due()
    assert source.last_error == "metadata_issuer_mismatch"
    assert verifies(source, k2)  # the last good set still serves (JWKS-05)


# -- JWKS-02 transport ------------------------------------------------------------------


@pytest.mark.parametrize("location", ["/elsewhere", "http://169.254.169.254/latest/meta-data/"])
def test_JWKS_02_redirect_is_not_followed(server, make, location):
    server.serve("/elsewhere", jwks_of(SigningKey("k1")))
    target = server.url(location) if location.startswith("/") else location
    server.serve("/jwks", b"", status=302, headers={"Location": target})
    source = make(server.url("/jwks"))
    source.refresh_if_due()
    assert source.current() is None
    assert source.last_error == "status_302"
    assert server.hits["/elsewhere"] == 0


def test_JWKS_02_http_refused_without_insecure_http(server, made):
    server.serve("/jwks", jwks_of(SigningKey("k1")))
    with pytest.raises(ConfigurationError):
        IssuerPolicy(issuer=ISS, audiences=("a",), algorithms=("ES256",), jwks_uri=server.url("/jwks"))
    source = raw_source(server.url("/jwks"), made, allow_http=False)
    assert source.current() is None
    assert source.last_error == "scheme_refused"
    assert server.hits["/jwks"] == 0


def test_JWKS_02_oversize_document_refused(server, make):
    k1 = SigningKey("k1")
    document = jwks_of(k1) | {"padding": "x" * 2000}
    server.serve("/jwks", document)
    source = make(server.url("/jwks"), refresh={"max_bytes": 1024})
    source.refresh_if_due()
    assert source.current() is None
    assert source.last_error == "too_large"
    server.serve("/jwks", jwks_of(k1))  # the same cap admits a small set
    assert source.refresh_unknown_kid() is True
    assert verifies(source, k1)


def test_JWKS_02_link_local_target_refused_without_connecting(make, monkeypatch):
    connects: list[Any] = []
    monkeypatch.setattr(_http.socket, "create_connection", lambda *a, **k: connects.append(a))
    source = make("http://169.254.169.254/.well-known/jwks.json")
    assert source.refresh_if_due()
    assert source.current() is None
    assert source.last_error == "address_refused"
    assert connects == []


def test_JWKS_02_timeout_is_bounded(server, make):
    server.serve("/jwks", jwks_of(SigningKey("k1")), delay=1.0)
    source = make(server.url("/jwks"), refresh={"timeout": 0.2})
    started = time.monotonic()
    assert source.refresh_unknown_kid() is False
    assert time.monotonic() - started < 0.9
    assert source.last_error == "timeout"


@pytest.mark.parametrize("status", [201, 204, 304, 404, 500])
def test_JWKS_02_only_status_200_counts(server, make, status):
    server.serve("/jwks", jwks_of(SigningKey("k1")), status=status)
    source = make(server.url("/jwks"))
    source.refresh_if_due()
    assert source.current() is None
    assert source.last_error == f"status_{status}"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>not json</html>", "document_not_json"),
        (b"\xff\xfe{}", "document_not_utf8"),
        (b"[]", "document_not_object"),
        (b'{"keys": {}}', "jwks_not_a_key_set"),
        (b'{"kees": []}', "jwks_not_a_key_set"),
        (b'{"keys": [], "keys": []}', "json_duplicate_member"),
        (b'{"keys": [NaN]}', "json_non_finite_number"),
    ],
)
def test_JWKS_02_document_must_be_a_json_key_set(server, make, body, reason):
    server.serve("/jwks", body)
    source = make(server.url("/jwks"))
    source.refresh_if_due()
    assert source.current() is None
    assert source.last_error == reason


# -- JWKS-02 over TLS -------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture
def tls_server(tmp_path) -> Iterator[tuple[Server, str]]:
    """An HTTPS server for 127.0.0.1 whose certificate a test CA issued; yields it and the CA file."""
    ca_key, ca_cert = make_ca("bankguard test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    s = Server(tls=context)
    yield s, str(tmp_path / "ca.pem")
    s.close()


def test_JWKS_02_https_with_the_configured_ca(tls_server, make):
    server, ca_file = tls_server
    k1 = SigningKey("k1")
    server.serve("/jwks", jwks_of(k1))
    source = make(server.url("/jwks"), ca_file=ca_file, insecure_http=False)
    source.refresh_if_due()
    assert source.last_error is None
    assert verifies(source, k1)


def test_JWKS_02_https_with_a_wrong_ca_fails(tls_server, make, tmp_path):
    server, _ = tls_server
    server.serve("/jwks", jwks_of(SigningKey("k1")))
    other = tmp_path / "other-ca.pem"
    other.write_bytes(make_ca("some other CA")[1].public_bytes(serialization.Encoding.PEM))
    source = make(server.url("/jwks"), ca_file=str(other), insecure_http=False)
    source.refresh_if_due()
    assert source.current() is None
    assert source.last_error == "tls_failed"
    assert server.hits["/jwks"] == 0


def test_JWKS_02_https_untrusted_by_the_system_store_fails(tls_server, make):
    server, _ = tls_server
    server.serve("/jwks", jwks_of(SigningKey("k1")))
    source = make(server.url("/jwks"), insecure_http=False)
    source.refresh_if_due()
    assert source.last_error == "tls_failed"
    assert source.current() is None


def test_JWKS_02_discovered_http_jwks_uri_refused_without_insecure_http(tls_server, server, make):
    https, ca_file = tls_server
    server.serve("/keys", jwks_of(SigningKey("k1")))
    https.serve("/.well-known/openid-configuration", {"issuer": ISS, "jwks_uri": server.url("/keys")})
    source = make(
        discovery=https.url("/.well-known/openid-configuration"), ca_file=ca_file, insecure_http=False
    )
    source.refresh_if_due()
    assert source.current() is None
    assert source.last_error == "metadata_jwks_uri_not_https"
    assert server.hits["/keys"] == 0


# -- JWKS-03 unusable keys --------------------------------------------------------------


def test_JWKS_03_oct_and_private_keys_skipped_and_logged(server, make, caplog):
    good, leaked = SigningKey("good"), SigningKey("leaked")
    private = leaked.jwk | {
        "d": b64url_encode(leaked.private.private_numbers().private_value.to_bytes(32, "big"))
    }
    oct_key = {"kty": "oct", "kid": "hmac", "alg": "HS256", "k": b64url_encode(b"s" * 32)}
    server.serve("/jwks", {"keys": [good.jwk, private, oct_key, {"kty": "RSA", "kid": "weird", "n": 1}]})
    source = make(server.url("/jwks"))
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        source.refresh_if_due()
        assert source.refresh_unknown_kid() is False  # same usable set: nothing changed
    index = source.current()
    assert index is not None
    assert len(index) == 1
    assert verifies(source, good)
    assert not verifies(source, leaked)
    assert not index.knows("hmac")
    assert not index.knows("leaked")
    assert index.candidates("hmac", "HS256") == []
    alerts = records(caplog, "keys skipped")
    assert len(alerts) == 2  # once per fetch, all reasons in one line
    assert "jwk_private_material" in alerts[0]
    assert "'hmac'" in alerts[0]
    assert "'weird'" in alerts[0]


# -- JWKS-04 unknown kid: single-flight, rate-limited ------------------------------------


def test_JWKS_04_thousand_unknown_kids_within_cooldown_cause_one_fetch(server, make, clock):
    k1, k2 = SigningKey("k1"), SigningKey("k2")
    server.serve("/jwks", jwks_of(k1))
    source = make(server.url("/jwks"), start=True)
    assert server.hits["/jwks"] == 1
    server.serve("/jwks", jwks_of(k1, k2))
    results = [source.refresh_unknown_kid() for _ in range(1000)]
    assert results[0] is True
    assert not any(results[1:])
    assert server.hits["/jwks"] == 2
    assert verifies(source, k2)
    clock.advance(29.9)
    assert source.refresh_unknown_kid() is False
    assert server.hits["/jwks"] == 2
    clock.advance(0.1)  # one cooldown after the forced fetch
    assert source.refresh_unknown_kid() is False  # fetched, but nothing changed
    assert server.hits["/jwks"] == 3


def test_JWKS_04_concurrent_callers_share_one_fetch(server, make):
    k1 = SigningKey("k1")
    server.serve("/jwks", jwks_of(k1), delay=0.3)
    source = make(server.url("/jwks"))
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def call() -> None:
        barrier.wait(5)
        results.append(source.refresh_unknown_kid())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == [True] * 8
    assert server.hits["/jwks"] == 1
    assert source.fetch_count == 1


def test_JWKS_04_refresh_never_raises(make, monkeypatch, caplog):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(jwks, "request", broken)
    source = make("http://127.0.0.1:9/jwks")
    with caplog.at_level(logging.ERROR, logger="bankguard"):
        assert source.refresh_unknown_kid() is False
    assert records(caplog, "unexpected error", logging.ERROR)
    assert source._in_flight is False


# -- JWKS-05 caching --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        ("public, max-age=600", 600),
        ("max-age=10", 300),  # below min_ttl
        ("max-age=999999", 3600),  # above max_ttl
        (None, 3600),
        ("no-cache", 300),
        ("max-age=600, max-age=900", 300),  # repeated: invalid, treated as stale
    ],
)
def test_JWKS_05_max_age_honoured_within_bounds(server, make, clock, cache_control, ttl):
    headers = {"Cache-Control": cache_control} if cache_control else {}
    server.serve("/jwks", jwks_of(SigningKey("k1")), headers=headers)
    source = make(server.url("/jwks"))
    assert source.refresh_if_due()
    clock.advance(0.85 * ttl)
    assert not source.refresh_if_due()
    clock.advance(0.15 * ttl)
    assert source.refresh_if_due()
    assert server.hits["/jwks"] == 2


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("public", None),
        ("max-age=60", 60.0),
        ("Public, Max-Age=60", 60.0),
        ('max-age="60"', 60.0),
        ("max-age=-1", 0.0),
        ("max-age=abc", 0.0),
        ("no-store", 0.0),
        ("s-maxage=60", None),
    ],
)
def test_max_age_parsing(value, seconds):
    assert max_age(value) == seconds


def test_JWKS_05_last_good_set_kept_while_failing_then_fail_closed(server, make, clock, caplog):
    k1 = SigningKey("k1")
    server.serve("/jwks", jwks_of(k1))
    source = make(server.url("/jwks"), refresh={"max_stale": 7200})
    source.refresh_if_due()
    loaded = source.last_success
    server.serve("/jwks", b"", status=500)
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        clock.advance(3600)
        while clock.now - loaded <= 7200:
            source.refresh_if_due()
            assert verifies(source, k1)  # within max_stale: still serving
            clock.advance(30)
        assert source.current() is None  # beyond max_stale: fail closed
        source.refresh_if_due()
        source.refresh_if_due()
        clock.advance(300)
        source.refresh_if_due()
    assert source.last_error == "status_500"
    assert source.last_success == loaded
    assert len(records(caplog, "stale beyond max_stale", logging.ERROR)) == 1  # alarm once
    server.serve("/jwks", jwks_of(k1))
    clock.advance(300)
    assert source.refresh_if_due()
    assert verifies(source, k1)
    assert source.last_error is None


def test_JWKS_05_failure_backoff_doubles_up_to_min_ttl(server, make, clock):
    server.serve("/jwks", b"", status=500)
    source = make(server.url("/jwks"))
    assert source.refresh_if_due()
    gaps = []
    for _ in range(6):
        start = clock.now
        clock.advance(1)
        while not source.refresh_if_due():
            clock.advance(1)
        gaps.append(clock.now - start)
    assert gaps == [30, 60, 120, 240, 300, 300]


def test_JWKS_05_max_stale_shorter_than_ttl_refreshes_in_time(server, make, clock):
    k1 = SigningKey("k1")
    server.serve("/jwks", jwks_of(k1))
    source = make(server.url("/jwks"), refresh={"max_stale": 600})
    source.refresh_if_due()
    clock.advance(600)
    assert source.refresh_if_due()
    assert verifies(source, k1)


# -- JWKS-06 rotation -------------------------------------------------------------------


def test_JWKS_06_rotation_add_then_remove(server, make, clock):
    k1, k2 = SigningKey("k1"), SigningKey("k2")
    server.serve("/jwks", jwks_of(k1))
    source = make(server.url("/jwks"))
    source.refresh_if_due()
    assert verifies(source, k1)
    assert not verifies(source, k2)
    server.serve("/jwks", jwks_of(k1, k2))
    assert source.refresh_unknown_kid() is True  # unknown kid k2 → forced refresh
    assert verifies(source, k1)
    assert verifies(source, k2)
    server.serve("/jwks", jwks_of(k2))
    assert verifies(source, k1)  # until the next refresh
    clock.advance(3600)
    assert source.refresh_if_due()
    assert not verifies(source, k1)
    assert verifies(source, k2)


def test_JWKS_06_background_thread_picks_up_rotation(server, make, monkeypatch):
    monkeypatch.setattr(jwks, "_MIN_BACKOFF", 0.05)
    k1, k2 = SigningKey("k1"), SigningKey("k2")
    server.serve("/jwks", jwks_of(k1))
    source = make(server.url("/jwks"), start=True, real_clock=True, refresh={"min_ttl": 0, "max_ttl": 0.1})
    assert verifies(source, k1)
    server.serve("/jwks", jwks_of(k2))
    deadline = time.monotonic() + 5
    while verifies(source, k1) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert verifies(source, k2)
    assert not verifies(source, k1)


# -- threads: fork safety, close --------------------------------------------------------


def test_restarts_thread_after_fork(server, make, monkeypatch):
    server.serve("/jwks", jwks_of(SigningKey("k1")))
    source = make(server.url("/jwks"), start=True)
    old_thread, old_cond = source._thread, source._cond
    monkeypatch.setattr(source, "_pid", -1)  # as if current() ran in a forked worker
    assert source.current() is not None
    assert source._thread is not old_thread
    assert source._thread.is_alive()
    assert source._cond is not old_cond
    old_thread.join(5)
    assert not old_thread.is_alive()
    assert source.fetch_count == 1  # current() itself did no I/O


FORK_SCRIPT = """
import os, sys, threading
from bankguard.tokens.jwks import RemoteKeySource

source = RemoteKeySource("https://as.example", frozenset({"ES256"}), jwks_uri=sys.argv[1], allow_http=True)
assert source.current() is not None and source._thread.is_alive()
pid = os.fork()
if pid == 0:
    code = 0
    try:
        assert source._thread is not None and not source._thread.is_alive()  # threads do not survive fork
        assert source.current() is not None  # restarts the thread, no I/O
        assert source._thread.is_alive() and source._pid == os.getpid()
        assert source.refresh_unknown_kid() is False  # the fresh lock works: one fetch, nothing new
        assert source.fetch_count == 2
        source.close()
        assert not source._thread.is_alive()
    except BaseException as exc:
        print("child:", repr(exc), file=sys.stderr)
        code = 1
    os._exit(code)
_, status = os.waitpid(pid, 0)
source.close()
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_restarts_thread_in_a_real_forked_child(server):
    server.serve("/jwks", jwks_of(SigningKey("k1")))
    # fork() inside the multi-threaded test process is unsafe: fork in a separate interpreter
    script = textwrap.dedent(FORK_SCRIPT)
    done = subprocess.run(  # noqa: S603 - this interpreter, our own script
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", script, server.url("/jwks")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert server.hits["/jwks"] == 2  # the parent's initial load and the child's forced refresh


def test_no_restart_after_fork_when_never_started_or_closed(server, make, monkeypatch):
    server.serve("/jwks", jwks_of(SigningKey("k1")))
    idle = make(server.url("/jwks"))
    closed = make(server.url("/jwks"), start=True)
    closed.close()
    for source in (idle, closed):
        monkeypatch.setattr(source, "_pid", -1)
        source.current()
        assert source._thread is None or not source._thread.is_alive()


def test_close_stops_the_thread_promptly(server, make):
    server.serve("/jwks", jwks_of(SigningKey("k1")))
    source = make(server.url("/jwks"), start=True, real_clock=True)
    thread = source._thread
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 1.0
    assert not thread.is_alive()
    source.close()  # idempotent
    source.start()  # a closed source stays closed
    assert not source._thread.is_alive()


def test_closed_source_does_not_fetch(server, make):
    server.serve("/jwks", jwks_of(SigningKey("k1")))
    source = make(server.url("/jwks"), start=True)
    source.close()
    assert source.refresh_unknown_kid() is False
    assert server.hits["/jwks"] == 1


def test_JWKS_04_reordered_key_set_is_not_a_change(server, make, clock):
    k1, k2 = SigningKey("k1"), SigningKey("k2")
    server.serve("/jwks", jwks_of(k1, k2))
    source = make(server.url("/jwks"))
    assert source.refresh_unknown_kid() is True
    server.serve("/jwks", jwks_of(k2, k1))
    clock.advance(30)
    assert source.refresh_unknown_kid() is False
    assert server.hits["/jwks"] == 2


def test_constructor_needs_exactly_one_location():
    with pytest.raises(ValueError, match="exactly one"):
        RemoteKeySource(ISS, ALLOWED, start=False)
    with pytest.raises(ValueError, match="exactly one"):
        RemoteKeySource(ISS, ALLOWED, jwks_uri="https://a/k", discovery="https://a/d", start=False)
