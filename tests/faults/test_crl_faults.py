"""A CRL distribution point (``client_cert.crl_urls``) that fails, through real applications
(STANDARDS EIDAS-01, BG-05, MTLS-09; docs/policy.md "Chain validation and revocation"; docs/security.md
item 12; docs/errors.md "certificate-invalid").

The CRL is served by a :class:`~tests.faults.conftest.FaultServer` on 127.0.0.1; the client
certificate reaches the application as nginx forwards it (``x-ssl-client-cert``) from a trusted proxy
address; certificates and CRLs come from :class:`~bankguard.testing.TestPKI`. Documented behaviour:

* while the URL has never delivered a CRL that verifies (down, garbage, an error status, a CRL whose
  signature does not verify): every certificate is refused, 401 ``certificate-invalid`` with the bare
  ``Bearer realm="api"`` challenge, audited as ``certificate.crl_unavailable``; the fetch failure is
  logged on the ``bankguard`` logger;
* after a good load, failures keep the last good CRL: valid certificates are served, revoked ones
  refused (``certificate.revoked``), and a forged CRL cannot un-revoke anything;
* a last good CRL past its ``nextUpdate`` refuses the certificates of its issuer
  (``certificate.crl_unavailable``), those accepted before included;
* CRLs are fetched in the background only (never on the request path): with ``crl_refresh: 100ms``
  a repaired endpoint is picked up within a few hundred milliseconds, without a restart. The time
  from the repair to the first request served is kept as the user property ``recovery_s``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bankguard.testing import EventCollector, TestIssuer, TestPKI

from .conftest import (
    ORIGIN,
    Answer,
    FaultServer,
    Reply,
    Served,
    alternating,
    assert_allowed,
    assert_allowed_event,
    assert_denied_event,
    assert_problem,
    make_policy,
    until,
)

pytestmark = pytest.mark.network

ISSUER = TestIssuer("https://as.bank.example", alg="ES256")
PKI = TestPKI()
REFRESH = "100ms"


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def crl_answer(crl: x509.CertificateRevocationList) -> Answer:
    return Answer(der(crl), content_type="application/pkix-crl")


@pytest.fixture
def anchors(tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "roots.pem"
    root.write_bytes(TestPKI.pem_bundle(PKI.root))
    intermediates = tmp_path / "intermediates.pem"
    intermediates.write_bytes(TestPKI.pem_bundle(PKI.intermediate))
    return {"trust_anchors": str(root), "intermediates": str(intermediates)}


def crl_policy(events: EventCollector, anchors: dict[str, str], server: FaultServer) -> Any:
    return make_policy(
        events,
        trusted_proxies=["10.0.0.0/8"],
        client_cert={
            "source": "nginx",
            **anchors,
            "crl_urls": [server.url("/qtsp.crl")],
            "crl_refresh": REFRESH,
        },
        tokens={
            "issuers": [
                {
                    "issuer": ISSUER.issuer,
                    "audiences": [ORIGIN],
                    "algorithms": ["ES256"],
                    "jwks": ISSUER.jwks(),
                }
            ]
        },
    )


def request(app: Served, cert: x509.Certificate) -> Reply:
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return app.get({"authorization": f"Bearer {ISSUER.mint()}", "x-ssl-client-cert": quote(pem, safe="")})


def assert_refused(events: EventCollector, reply: Reply, reason: str) -> None:
    """401 certificate-invalid: a bare challenge, as E1 (the token is fine)."""
    assert_problem(reply, 401, "certificate-invalid")
    assert reply.get_all("www-authenticate") == ['Bearer realm="api"'], reply.describe()
    assert_denied_event(events, reply, "client_cert", reason)


def logged(caplog: pytest.LogCaptureFixture, level: int, *parts: str) -> bool:
    return any(
        r.levelno == level and r.name == "bankguard" and all(p in r.getMessage() for p in parts)
        for r in caplog.records
    )


def served_after_repair(
    app: Served,
    events: EventCollector,
    cert: x509.Certificate,
    repair: Callable[[], None],
    record: Callable[[str, object], None],
    reason: str = "certificate.crl_unavailable",
) -> int:
    """Repair the endpoint, then send requests until one is served; each one before it must be the
    documented refusal. Returns the number of requests sent."""
    replies: list[Reply] = []
    started = time.monotonic()
    repair()

    def served() -> bool:
        replies.append(request(app, cert))
        return replies[-1].status == 200

    assert until(served, timeout=5.0, step=0.05), replies[-1].describe()
    record("recovery_s", round(time.monotonic() - started, 3))
    for reply in replies[:-1]:
        assert_refused(events, reply, reason)
    assert_allowed(replies[-1])
    assert_allowed_event(events, replies[-1])
    return len(replies)


UNUSABLE = [
    pytest.param(None, "connection_failed", id="connection-refused"),
    pytest.param(Answer(b"this is not a CRL", content_type="text/plain"), "not_a_crl", id="garbage"),
    pytest.param(
        Answer(b"<html><h1>Service Unavailable</h1></html>", content_type="text/html"),
        "not_a_crl",
        id="html-200",
    ),
    pytest.param(
        Answer(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), "not_a_crl", id="bad-pem"
    ),
    pytest.param(Answer(der(PKI.crl())[:-12]), "not_a_crl", id="truncated"),
    pytest.param(Answer(b"oops", status=500, content_type="text/plain"), "status_500", id="status-500"),
    pytest.param(Answer(b"", status=404), "status_404", id="status-404"),
    pytest.param(
        crl_answer(PKI.crl(signing_key=ec.generate_private_key(ec.SECP256R1()))),
        "does not verify",
        id="bad-signature",
    ),
    pytest.param(crl_answer(TestPKI().crl()), "does not verify", id="another-ca-same-name"),
]


@pytest.mark.parametrize(("kind", "answer", "reason"), alternating(UNUSABLE))
def test_EIDAS_01_crl_unusable_at_start_refuses_every_certificate_until_repaired(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    anchors: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    record: Callable[[str, object], None],
    answer: Answer | None,
    reason: str,
) -> None:
    server = http_servers(answer, running=answer is not None)
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        app = serve(crl_policy(events, anchors, server))
    assert logged(caplog, logging.ERROR, "crl: no CRL yet from", server.url("/qtsp.crl"))
    assert logged(caplog, logging.WARNING, "crl: refreshing", reason)
    leaf, _ = PKI.leaf()
    other, _ = PKI.leaf("other.example")
    for cert in (leaf, other, leaf):  # every certificate, again and again
        assert_refused(events, request(app, cert), "certificate.crl_unavailable")

    def repair() -> None:
        server.answer = crl_answer(PKI.crl())
        if answer is None:
            server.start()

    sent = served_after_repair(app, events, leaf, repair, record)
    assert len(events.events) == 3 + sent


def test_EIDAS_01_BG_05_crl_down_after_good_load_keeps_the_last_good_crl(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    anchors: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    record: Callable[[str, object], None],
) -> None:
    good, _ = PKI.leaf("good.example")
    revoked, _ = PKI.leaf("revoked.example")
    later, _ = PKI.leaf("later.example")
    server = http_servers(crl_answer(PKI.crl([revoked.serial_number])))
    app = serve(crl_policy(events, anchors, server))
    assert_allowed(request(app, good))
    assert_refused(events, request(app, revoked), "certificate.revoked")
    hits = server.hits
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        server.stop()
        assert until(lambda: logged(caplog, logging.WARNING, "crl: refreshing", "connection_failed"))
        for cert in (good, later):  # seen before, and never seen: both checked with the last good CRL
            reply = request(app, cert)
            assert_allowed(reply)
            assert_allowed_event(events, reply)
        assert_refused(events, request(app, revoked), "certificate.revoked")
    # Back with a newer CRL that also revokes `later`: picked up in the background.
    started = time.monotonic()
    server.answer = crl_answer(PKI.crl([revoked.serial_number, later.serial_number]))
    server.start()
    assert until(lambda: request(app, later).status == 401, timeout=5.0, step=0.05)
    record("recovery_s", round(time.monotonic() - started, 3))
    assert server.hits > hits
    assert_refused(events, request(app, later), "certificate.revoked")
    assert_allowed(request(app, good))
    assert len(events.events) == app.sent


BAD_AFTER_LOAD = [
    pytest.param(Answer(b"<html>maintenance</html>", content_type="text/html"), "not_a_crl", id="html"),
    pytest.param(Answer(b"", status=503), "status_503", id="status-503"),
    pytest.param(
        crl_answer(PKI.crl(signing_key=ec.generate_private_key(ec.SECP256R1()))),
        "does not verify",
        id="forged-empty-crl",
    ),
    pytest.param(crl_answer(TestPKI().crl()), "does not verify", id="another-ca-same-name"),
    pytest.param(
        crl_answer(PKI.crl(last_update=PKI.now - dt.timedelta(days=3))),
        "older_than_current",
        id="rolled-back",
    ),
    pytest.param(crl_answer(PKI.crl(issued_by_root=True)), "issuer_changed", id="other-issuer"),
]


@pytest.mark.parametrize(("kind", "answer", "reason"), alternating(BAD_AFTER_LOAD))
def test_EIDAS_01_bad_crl_after_good_load_cannot_unrevoke(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    anchors: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    answer: Answer,
    reason: str,
) -> None:
    good, _ = PKI.leaf("good.example")
    revoked, _ = PKI.leaf("revoked.example")
    server = http_servers(crl_answer(PKI.crl([revoked.serial_number])))
    app = serve(crl_policy(events, anchors, server))
    assert_refused(events, request(app, revoked), "certificate.revoked")
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        server.answer = answer  # none of these revokes `revoked`: each would un-revoke it if applied
        hits = server.hits
        assert until(lambda: server.hits >= hits + 2)  # two background refreshes saw it
        assert until(lambda: logged(caplog, logging.WARNING, "crl: refreshing", reason))
    assert_refused(events, request(app, revoked), "certificate.revoked")
    reply = request(app, good)
    assert_allowed(reply)
    assert_allowed_event(events, reply)
    assert len(events.events) == 3


def test_EIDAS_01_last_good_crl_past_next_update_fails_closed_then_recovers(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    anchors: dict[str, str],
    record: Callable[[str, object], None],
) -> None:
    """policy.md: remembered results last until the nextUpdate of the CRLs they relied on, "so a
    stale CRL refuses clients already seen as well (`certificate.crl_unavailable`)"."""
    seen, _ = PKI.leaf("seen.example")
    unseen, _ = PKI.leaf("unseen.example")
    soon = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=2)
    server = http_servers(crl_answer(PKI.crl(next_update=soon)))
    app = serve(crl_policy(events, anchors, server))
    assert_allowed(request(app, seen))
    server.stop()
    assert until(
        lambda: dt.datetime.now(dt.timezone.utc) > soon + dt.timedelta(milliseconds=100), timeout=4.0
    )
    assert_refused(events, request(app, unseen), "certificate.crl_unavailable")
    assert_refused(events, request(app, seen), "certificate.crl_unavailable")

    def repair() -> None:
        server.answer = crl_answer(PKI.crl())  # a current CRL, not older than the stale one
        server.start()

    served_after_repair(app, events, seen, repair, record)
