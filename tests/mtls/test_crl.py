"""CRLs fetched from URLs (RFC 5280 §5; STANDARDS EIDAS-01, BG-05) against a real server on 127.0.0.1.

The served CRL is changed by the tests; refreshes are driven with ``refresh_now()`` or a tiny
refresh interval and bounded waits. Every server, guard and refresh thread is stopped by its fixture.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bankguard import EventCollector, Guard, Policy
from bankguard._pki_testing import TestPKI
from bankguard.decision import Decision
from bankguard.mtls.crl import CrlSource, parse_crl
from bankguard.mtls.validation import CertificateValidator
from bankguard.testing import TestIssuer, make_facts
from bankguard.tokens._http import FetchError

pytestmark = pytest.mark.network

AUDIENCE = "https://api.bank.example"
PROXY = "10.1.2.3"
WAIT = 5.0  # upper bound of every wait for the background thread


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def until(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


class CrlServer:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``body`` with ``status`` at every path.

    ``stop()`` closes the port; ``start()`` opens it again on the same port number.
    """

    def __init__(self, body: bytes = b"", *, running: bool = True) -> None:
        self.body, self.status, self.hits = body, 200, 0
        self.port = 0
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.start()
        if not running:
            self.stop()

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body, status = outer.body, outer.status
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/pkix-crl")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            assert self.thread is not None
            self.thread.join(WAIT)
            self.httpd = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/qtsp.crl"


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI()


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def server(pki: TestPKI) -> Iterator[CrlServer]:
    srv = CrlServer(der(pki.crl()))
    yield srv
    srv.stop()


@pytest.fixture
def anchors(pki: TestPKI, tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "roots.pem"
    root.write_bytes(TestPKI.pem_bundle(pki.root))
    inter = tmp_path / "intermediates.pem"
    inter.write_bytes(TestPKI.pem_bundle(pki.intermediate))
    return {"trust_anchors": str(root), "intermediates": str(inter)}


@pytest.fixture
def guards() -> Iterator[list[Guard]]:
    made: list[Guard] = []
    yield made
    for guard in made:
        guard.close()


@pytest.fixture
def sources() -> Iterator[list[CrlSource]]:
    made: list[CrlSource] = []
    yield made
    for source in made:
        source.close()


def make_guard(
    guards: list[Guard], issuer: TestIssuer, anchors: dict[str, str], urls: Sequence[str], **cert: Any
) -> Guard:
    policy = Policy.from_dict(
        {
            "trusted_proxies": ["10.0.0.0/8"],
            "tokens": {
                "issuers": [
                    {
                        "issuer": issuer.issuer,
                        "audiences": [AUDIENCE],
                        "algorithms": ["ES256"],
                        "jwks": issuer.jwks(),
                    }
                ]
            },
            "client_cert": {"source": "nginx", **anchors, "crl_urls": list(urls), **cert},
            "routes": {"operations": [{"method": "GET", "path": "/accounts", "scopes": ["accounts"]}]},
        }
    )
    guard = Guard(policy, sink=EventCollector())
    guards.append(guard)
    return guard


def crl_source(guard: Guard) -> CrlSource:
    (check,) = [c for c in guard.checks if c.name == "client_cert"]
    source = getattr(check, "crl_source", None)
    assert isinstance(source, CrlSource)
    return source


def decide(guard: Guard, issuer: TestIssuer, cert: x509.Certificate) -> Decision:
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    headers = [
        ("authorization", f"Bearer {issuer.mint()}"),
        ("x-ssl-client-cert", quote(pem, safe="")),
    ]
    return guard.decide(make_facts("GET", "/accounts", headers=headers, peer=PROXY))


def outcome(decision: Decision) -> tuple[int | None, str | None]:
    return (decision.event.status, decision.event.reason)


ALLOWED = (None, None)
REVOKED = (401, "certificate.revoked")
UNAVAILABLE = (401, "certificate.crl_unavailable")


# -- through the guard ------------------------------------------------------------------------


def test_EIDAS_01_BG_05_crl_url_revocation_applies_after_refresh(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str], server: CrlServer, guards: list[Guard]
) -> None:
    leaf, _ = pki.leaf()
    guard = make_guard(guards, issuer, anchors, [server.url])
    source = crl_source(guard)
    assert source.complete
    assert server.hits == 1
    assert outcome(decide(guard, issuer, leaf)) == ALLOWED
    server.body = der(pki.crl([leaf.serial_number]))
    assert source.refresh_now() is True
    assert outcome(decide(guard, issuer, leaf)) == REVOKED
    other, _ = pki.leaf("other.example")
    assert outcome(decide(guard, issuer, other)) == ALLOWED
    assert source.refresh_now() is False  # the same CRL again: nothing changes
    assert source.last_error is None


def test_EIDAS_01_BG_05_background_thread_picks_up_a_new_crl(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str], server: CrlServer, guards: list[Guard]
) -> None:
    leaf, _ = pki.leaf()
    guard = make_guard(guards, issuer, anchors, [server.url], crl_refresh="50ms")
    assert outcome(decide(guard, issuer, leaf)) == ALLOWED
    server.body = TestPKI.pem_bundle(pki.crl([leaf.serial_number]))  # PEM is accepted too
    assert until(lambda: outcome(decide(guard, issuer, leaf)) == REVOKED)


def test_EIDAS_01_crl_url_down_at_start_fails_closed_until_it_comes_back(
    pki: TestPKI,
    issuer: TestIssuer,
    anchors: dict[str, str],
    guards: list[Guard],
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = CrlServer(der(pki.crl()), running=False)
    try:
        with caplog.at_level(logging.WARNING, logger="bankguard"):
            guard = make_guard(guards, issuer, anchors, [down.url])
        assert any("no CRL yet" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
        source = crl_source(guard)
        assert not source.complete
        assert source.last_error is not None
        assert "connection_failed" in source.last_error
        for name in ("tpp.example", "other.example"):  # every certificate, not one issuer's
            assert outcome(decide(guard, issuer, pki.leaf(name)[0])) == UNAVAILABLE
        assert source.refresh_now() is False  # still down
        assert outcome(decide(guard, issuer, pki.leaf()[0])) == UNAVAILABLE
        down.start()
        source.refresh_now()  # the refresh thread, retrying after a failure, may be first
        assert source.complete
        assert source.last_error is None
        assert outcome(decide(guard, issuer, pki.leaf()[0])) == ALLOWED
    finally:
        down.stop()


def test_EIDAS_01_crl_url_down_at_start_recovers_in_the_background(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str], guards: list[Guard]
) -> None:
    down = CrlServer(der(pki.crl()), running=False)
    try:
        guard = make_guard(guards, issuer, anchors, [down.url], crl_refresh="50ms")
        leaf, _ = pki.leaf()
        assert outcome(decide(guard, issuer, leaf)) == UNAVAILABLE
        down.start()
        assert until(lambda: crl_source(guard).complete, timeout=WAIT)  # retried within the refresh interval
        assert outcome(decide(guard, issuer, leaf)) == ALLOWED
    finally:
        down.stop()


def test_EIDAS_01_bad_crls_from_the_url_are_logged_and_the_last_good_one_kept(
    pki: TestPKI,
    issuer: TestIssuer,
    anchors: dict[str, str],
    server: CrlServer,
    guards: list[Guard],
    caplog: pytest.LogCaptureFixture,
) -> None:
    revoked, _ = pki.leaf("revoked.example")
    good, _ = pki.leaf()
    server.body = der(pki.crl([revoked.serial_number]))
    guard = make_guard(guards, issuer, anchors, [server.url])
    source = crl_source(guard)
    assert outcome(decide(guard, issuer, revoked)) == REVOKED
    forged = pki.crl(signing_key=ec.generate_private_key(ec.SECP256R1()))  # another key, revokes nothing
    replayed = pki.crl(last_update=pki.now - dt.timedelta(days=2))  # older than the current one
    bad: list[tuple[bytes, int, str]] = [
        (b"not a CRL at all", 200, "not_a_crl"),
        (der(pki.crl())[:-10], 200, "not_a_crl"),  # truncated
        (b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n", 200, "not_a_crl"),
        (der(pki.crl()), 500, "status_500"),
        (der(forged), 200, "does not verify"),
        (der(replayed), 200, "older_than_current"),
        (der(pki.crl(issued_by_root=True)), 200, "issuer_changed"),  # the root's CRL on this URL
    ]
    for body, status, expected in bad:
        server.body, server.status = body, status
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bankguard"):
            assert source.refresh_now() is False
        assert expected in (source.last_error or ""), source.last_error
        assert any(expected in r.getMessage() for r in caplog.records), expected
        assert source.complete
        assert outcome(decide(guard, issuer, revoked)) == REVOKED  # the last good CRL still applies
        assert outcome(decide(guard, issuer, good)) == ALLOWED
    assert source._thread is not None
    assert source._thread.is_alive()
    server.body, server.status = der(pki.crl()), 200  # a newer good CRL is taken again
    assert source.refresh_now() is True
    assert source.last_error is None
    assert outcome(decide(guard, issuer, revoked)) == ALLOWED


def test_EIDAS_01_file_crls_stay_in_force_next_to_url_crls(
    pki: TestPKI,
    issuer: TestIssuer,
    anchors: dict[str, str],
    server: CrlServer,
    guards: list[Guard],
    tmp_path: Path,
) -> None:
    by_file, _ = pki.leaf("file.example")
    by_url, _ = pki.leaf("url.example")
    crl_file = tmp_path / "qtsp.crl"
    crl_file.write_bytes(der(pki.crl([by_file.serial_number])))
    server.body = der(pki.crl([by_url.serial_number]))
    guard = make_guard(guards, issuer, anchors, [server.url], crl_files=[str(crl_file)])
    assert outcome(decide(guard, issuer, by_file)) == REVOKED
    assert outcome(decide(guard, issuer, by_url)) == REVOKED
    assert outcome(decide(guard, issuer, pki.leaf()[0])) == ALLOWED


def test_EIDAS_01_every_url_must_have_given_a_crl(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str], server: CrlServer, guards: list[Guard]
) -> None:
    root_crls = CrlServer(b"garbage")
    try:
        guard = make_guard(guards, issuer, anchors, [server.url, root_crls.url])
        source = crl_source(guard)
        assert not source.complete
        assert outcome(decide(guard, issuer, pki.leaf()[0])) == UNAVAILABLE
        root_crls.body = der(pki.crl(issued_by_root=True))
        source.refresh_now()  # the refresh thread, retrying after a failure, may be first
        assert source.complete
        assert outcome(decide(guard, issuer, pki.leaf()[0])) == ALLOWED
    finally:
        root_crls.stop()


def test_guard_close_stops_the_crl_thread(
    issuer: TestIssuer, anchors: dict[str, str], server: CrlServer, guards: list[Guard]
) -> None:
    guard = make_guard(guards, issuer, anchors, [server.url], crl_refresh="50ms")
    source = crl_source(guard)
    thread = source._thread
    assert thread is not None
    assert thread.is_alive()
    assert until(lambda: server.hits >= 3)  # it refreshes
    started = time.monotonic()
    guard.close()
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.0
    hits = server.hits
    time.sleep(0.2)
    assert server.hits == hits


# -- the source on its own --------------------------------------------------------------------


class Recorder:
    def __init__(self, validator: CertificateValidator | None = None) -> None:
        self.calls: list[list[bytes]] = []
        self.validator = validator

    def __call__(self, crls: Sequence[x509.CertificateRevocationList]) -> None:
        if self.validator is not None:
            self.validator.update_crls(crls)
        self.calls.append([der(c) for c in crls])


def test_on_update_only_when_the_crls_change(
    pki: TestPKI, server: CrlServer, sources: list[CrlSource]
) -> None:
    recorder = Recorder(CertificateValidator(anchors=[pki.root], intermediates=[pki.intermediate]))
    source = CrlSource([server.url], recorder, refresh=3600)
    sources.append(source)
    assert recorder.calls == [[server.body]]
    assert source.fetch_count == 1
    source.refresh_now()
    assert len(recorder.calls) == 1
    assert source.fetch_count == 2
    server.body = der(pki.crl([1234]))
    source.refresh_now()
    assert recorder.calls[-1] == [server.body]


def test_start_false_fetches_nothing(server: CrlServer, sources: list[CrlSource]) -> None:
    recorder = Recorder()
    source = CrlSource([server.url], recorder, refresh=3600, start=False)
    sources.append(source)
    assert not source.complete
    assert server.hits == 0
    assert source._thread is None
    assert source.refresh_now() is True
    assert source.complete
    assert recorder.calls


def test_refreshes_before_the_earliest_next_update(
    pki: TestPKI, server: CrlServer, sources: list[CrlSource]
) -> None:
    now = pki.now.timestamp()
    server.body = der(pki.crl(next_update=pki.now + dt.timedelta(hours=1)))
    source = CrlSource([server.url], Recorder(), refresh=86400, clock=lambda: now, start=False)
    sources.append(source)
    source.refresh_now()
    assert now < source._next_at < now + 3600  # before nextUpdate, long before the refresh interval
    server.body = der(pki.crl(next_update=pki.now + dt.timedelta(seconds=5)))
    source.refresh_now()
    assert source._next_at >= now + 1  # near nextUpdate it never spins


def test_failures_back_off_within_bounds(server: CrlServer, sources: list[CrlSource]) -> None:
    now = 1_000_000.0
    server.status = 503
    source = CrlSource([server.url], Recorder(), refresh=10, clock=lambda: now, start=False)
    sources.append(source)
    waits = []
    for _ in range(8):
        source.refresh_now()
        waits.append(source._next_at - now)
    assert waits[:4] == [1, 2, 4, 8]
    assert max(waits) == 10  # never beyond the refresh interval
    assert source.last_error == f"{server.url}: status_503"


def test_an_on_update_bug_never_kills_the_thread(
    server: CrlServer, sources: list[CrlSource], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(crls: Sequence[x509.CertificateRevocationList]) -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="bankguard"):
        source = CrlSource([server.url], broken, refresh=3600)
    sources.append(source)
    assert any(r.exc_info for r in caplog.records)
    assert not source.complete
    assert source._thread is not None
    assert source._thread.is_alive()


def test_fork_restarts_the_thread(server: CrlServer, sources: list[CrlSource]) -> None:
    source = CrlSource([server.url], Recorder(), refresh=3600)
    sources.append(source)
    old = source._thread
    assert old is not None
    source._pid = -1  # as seen from a forked child
    assert source.complete
    new = source._thread
    assert new is not None
    assert new is not old
    assert new.is_alive()
    old.join(WAIT)
    assert not old.is_alive()


def test_parse_crl_der_and_pem(pki: TestPKI) -> None:
    crl = pki.crl([7])
    assert der(parse_crl(der(crl))) == der(crl)
    assert der(parse_crl(TestPKI.pem_bundle(crl))) == der(crl)
    with pytest.raises(FetchError, match="not_a_crl"):
        parse_crl(TestPKI.pem_bundle(crl, crl))  # one URL, one CRL
    with pytest.raises(FetchError, match="not_a_crl"):
        parse_crl(b"")


def test_http_urls_need_allow_http() -> None:
    with pytest.raises(ValueError, match="https"):
        CrlSource(["http://127.0.0.1:9/x.crl"], Recorder(), refresh=60, allow_http=False, start=False)
    with pytest.raises(ValueError, match="positive"):
        CrlSource(["https://127.0.0.1:9/x.crl"], Recorder(), refresh=0, start=False)
