"""The client-certificate control at its edges: certificates from the server's own TLS (WSGI
environ, ASGI TLS extension), peers that are not plain addresses, the remembered-header fast
path (roles and chain headers are still checked), eIDAS identities that cannot be read, and
bounded caches (RFC 8705, RFC 9440 §4, FWD-01, MTLS-07, BG-04, OWASP API4)."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bankguard import BankGuardMiddleware, BankGuardWSGI, EventCollector, Guard, Policy
from bankguard._pki_testing import TestPKI
from bankguard.mtls.sources import thumbprint
from bankguard.testing import TestIssuer, make_facts

AUDIENCE = "https://api.bank.example"
PROXY = "10.1.2.3"
PROBLEM = "application/problem+json"


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def x5t(cert: x509.Certificate) -> str:
    return thumbprint(cert.public_bytes(serialization.Encoding.DER))


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI()


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def anchors(pki: TestPKI, tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "roots.pem"
    root.write_bytes(TestPKI.pem_bundle(pki.root))
    inter = tmp_path / "intermediates.pem"
    inter.write_bytes(TestPKI.pem_bundle(pki.intermediate))
    return {"trust_anchors": str(root), "intermediates": str(inter)}


def make_policy(issuer: TestIssuer, client_cert: dict[str, Any], **routes: dict[str, Any]) -> Policy:
    return Policy.from_dict(
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
            "client_cert": client_cert,
            "routes": {
                "operations": [
                    {"method": "GET", "path": "/accounts", **routes.get("accounts", {})},
                    {"method": "POST", "path": "/payments", **routes.get("payments", {})},
                ]
            },
        }
    )


def control(guard: Guard) -> Any:
    return next(check for check in guard.checks if check.name == "client_cert")


def nginx(cert: x509.Certificate, *, safe: str = "") -> tuple[str, str]:
    return ("x-ssl-client-cert", quote(pem(cert), safe=safe))


def decide(
    guard: Guard, *headers: tuple[str, str], method: str = "GET", path: str = "/accounts", **kw: Any
) -> Any:
    return guard.decide(make_facts(method, path, headers=list(headers), peer=kw.get("peer", PROXY)))


# -- certificates from the server's own TLS ------------------------------------------------------


def wsgi_environ(headers: dict[str, str], **ssl: str) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/accounts",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.7",
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
        **ssl,
    }
    return environ


def wsgi_call(app: Any, environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.update(status=int(status.split()[0]), headers={k.lower(): v for k, v in headers})
        return None

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def ok_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_MTLS_01_certificate_from_the_wsgi_environ_binds_the_token(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(make_policy(issuer, {"source": "wsgi-environ", **anchors}), sink=events)
    app = BankGuardWSGI(ok_wsgi, guard=guard)
    token = issuer.mint({"cnf": {"x5t#S256": x5t(cert)}})
    auth = {"authorization": f"Bearer {token}"}
    status, _, body = wsgi_call(
        app, wsgi_environ(auth, SSL_CLIENT_CERT=pem(cert), SSL_CLIENT_VERIFY="SUCCESS")
    )
    assert (status, body) == (200, b"ok"), events.events[-1].reason
    assert events.events[-1].binding == "mtls"
    # Another certificate from the same CA does not match the token's binding.
    other, _ = pki.leaf("other.example")
    status, headers, _ = wsgi_call(app, wsgi_environ(auth, SSL_CLIENT_CERT=pem(other)))
    assert (status, headers["content-type"]) == (401, PROBLEM)
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert events.events[-1].reason == "token.certificate_mismatch"


def test_MTLS_wsgi_environ_verify_failure_is_refused(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    app = BankGuardWSGI(ok_wsgi, guard=Guard(make_policy(issuer, {"source": "wsgi-environ"}), sink=events))
    token = issuer.mint({"cnf": {"x5t#S256": x5t(cert)}})
    environ = wsgi_environ(
        {"authorization": f"Bearer {token}"}, SSL_CLIENT_CERT=pem(cert), SSL_CLIENT_VERIFY="FAILED:expired"
    )
    status, headers, _ = wsgi_call(app, environ)
    assert (status, headers["content-type"]) == (400, PROBLEM)
    assert events.events[-1].reason == "client_cert.verify_failed"


def test_MTLS_wsgi_environ_without_a_certificate_when_one_is_required(issuer: TestIssuer) -> None:
    events = EventCollector()
    guard = Guard(make_policy(issuer, {"source": "wsgi-environ", "required": True}), sink=events)
    status, headers, _ = wsgi_call(BankGuardWSGI(ok_wsgi, guard=guard), wsgi_environ({}))
    assert (status, headers["content-type"]) == (401, PROBLEM)
    assert events.events[-1].reason == "client_cert.missing"


def asgi_call(
    app: Any, headers: list[tuple[bytes, bytes]], tls: dict[str, Any] | None
) -> tuple[int, dict[str, str]]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/accounts",
        "raw_path": b"/accounts",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("203.0.113.7", 50000),
        "server": ("api.bank.example", 443),
    }
    if tls is not None:
        scope["extensions"] = {"tls": tls}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}


async def ok_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_MTLS_01_certificate_from_the_asgi_tls_extension(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(make_policy(issuer, {"source": "asgi-tls"}), sink=events)
    app = BankGuardMiddleware(ok_asgi, guard=guard)
    token = issuer.mint({"cnf": {"x5t#S256": x5t(cert)}})
    auth = [(b"authorization", f"Bearer {token}".encode())]
    status, _ = asgi_call(app, auth, {"client_cert_chain": [pem(cert), pem(pki.intermediate)]})
    assert status == 200, events.events[-1].reason
    status, headers = asgi_call(app, auth, {"client_cert_chain": [], "client_cert_error": "handshake"})
    assert (status, headers["content-type"]) == (400, PROBLEM)
    assert events.events[-1].reason == "client_cert.verify_failed"
    status, headers = asgi_call(app, auth, None)
    assert status == 401
    assert events.events[-1].reason == "token.certificate_missing"


# -- peers (FWD-01) ---------------------------------------------------------------------------


@pytest.mark.parametrize("peer", [None, "unix:/run/proxy.sock", "10.1.2.3%eth0x"])
def test_FWD_01_header_from_a_peer_without_an_ip_address_is_ignored(
    pki: TestPKI, issuer: TestIssuer, peer: str | None
) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(make_policy(issuer, {"source": "nginx"}), sink=events)
    token = issuer.mint({"cnf": {"x5t#S256": x5t(cert)}})
    decision = decide(guard, ("authorization", f"Bearer {token}"), nginx(cert), peer=peer)
    assert not decision.allowed
    event = events.events[-1]
    assert (event.reason, event.notes) == (
        "token.certificate_missing",
        ("client_cert.untrusted_header_ignored",),
    )


def test_FWD_01_ipv4_mapped_ipv6_proxy_address_is_trusted(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(make_policy(issuer, {"source": "nginx"}), sink=events)
    token = issuer.mint({"cnf": {"x5t#S256": x5t(cert)}})
    decision = decide(guard, ("authorization", f"Bearer {token}"), nginx(cert), peer="::ffff:10.1.2.3")
    assert decision.allowed, events.events[-1].reason
    assert decision.principal.binding == "mtls"


# -- the remembered-header fast path ---------------------------------------------------------------


def test_BG_04_remembered_certificate_still_needs_the_operations_role(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf(roles=("PSP_AI",))
    events = EventCollector()
    policy = make_policy(
        issuer, {"source": "nginx", "identity": "eidas", **anchors}, payments={"roles": ["PSP_PI"]}
    )
    guard = Guard(policy, sink=events)
    auth = ("authorization", f"Bearer {issuer.mint()}")
    assert decide(guard, auth, nginx(cert)).allowed  # checked in full, then remembered
    assert decide(guard, auth, nginx(cert)).allowed  # the fast path
    refused = decide(guard, auth, nginx(cert), method="POST", path="/payments")
    assert not refused.allowed
    event = events.events[-1]
    assert (event.status, event.reason) == (403, "client_cert.role_missing")
    assert guard.problem(refused).status == 403


def test_FWD_rfc9440_chain_header_added_later_is_parsed(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    """A remembered ``Client-Cert`` value does not let a request skip its ``Client-Cert-Chain``."""
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(make_policy(issuer, {"source": "rfc9440", **anchors}), sink=events)
    der = cert.public_bytes(serialization.Encoding.DER)
    import base64

    client_cert = ("client-cert", ":" + base64.b64encode(der).decode() + ":")
    auth = ("authorization", f"Bearer {issuer.mint({'cnf': {'x5t#S256': x5t(cert)}})}")
    assert decide(guard, auth, client_cert).allowed
    assert decide(guard, auth, client_cert).allowed
    refused = decide(guard, auth, client_cert, ("client-cert-chain", "not a byte sequence"))
    assert not refused.allowed
    assert events.events[-1].status == 400
    assert events.events[-1].reason.startswith("client_cert.")
    # A well-formed chain is validated (and, carrying a chain, not remembered).
    inter = ":" + base64.b64encode(pki.intermediate.public_bytes(serialization.Encoding.DER)).decode() + ":"
    assert decide(guard, auth, client_cert, ("client-cert-chain", inter)).allowed
    assert decide(guard, auth, client_cert, ("client-cert-chain", inter)).allowed


def test_MTLS_same_certificate_in_another_encoding_reuses_the_validation(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(make_policy(issuer, {"source": "nginx", **anchors}), sink=events)
    auth = ("authorization", f"Bearer {issuer.mint({'cnf': {'x5t#S256': x5t(cert)}})}")
    assert decide(guard, auth, nginx(cert)).allowed
    assert decide(guard, auth, nginx(cert, safe="/+=")).allowed
    assert [e.outcome for e in events.events] == ["allow", "allow"]


def test_FWD_11_unverified_header_value_is_not_remembered(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(
        make_policy(issuer, {"source": "nginx", "verify_header": "x-ssl-client-verify"}), sink=events
    )
    auth = ("authorization", f"Bearer {issuer.mint({'cnf': {'x5t#S256': x5t(cert)}})}")
    verified = ("x-ssl-client-verify", "SUCCESS")
    assert decide(guard, auth, nginx(cert), verified).allowed
    refused = decide(guard, auth, nginx(cert), ("x-ssl-client-verify", "FAILED:unknown ca"))
    assert not refused.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (400, "nginx.verify_failed")
    assert decide(guard, auth, nginx(cert), verified).allowed


# -- eIDAS identity ------------------------------------------------------------------------------


def test_EIDAS_certificate_without_an_organization_identifier_is_401(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf(organization_identifier=None)
    events = EventCollector()
    guard = Guard(make_policy(issuer, {"source": "nginx", "identity": "eidas", **anchors}), sink=events)
    decision = decide(guard, ("authorization", f"Bearer {issuer.mint()}"), nginx(cert))
    assert not decision.allowed
    event = events.events[-1]
    assert event.status == 401
    assert event.control == "client_cert"
    problem = guard.problem(decision)
    assert problem.status == 401
    assert dict(problem.headers)["content-type"] == PROBLEM


# -- bounded caches (OWASP API4) ------------------------------------------------------------------


def test_caches_stay_bounded_and_decisions_stay_right(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bankguard.controls.mtls as mtls_control

    monkeypatch.setattr(mtls_control, "_MAX_CACHED", 2)
    events = EventCollector()
    guard = Guard(make_policy(issuer, {"source": "nginx", "identity": "eidas", **anchors}), sink=events)
    check = control(guard)
    certs = [pki.leaf(f"tpp{i}.example", organization_identifier=f"PSDGB-FCA-10000{i}")[0] for i in range(4)]
    peers = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    auth = ("authorization", f"Bearer {issuer.mint()}")
    for _ in range(2):
        for cert, peer in zip(certs, peers, strict=True):
            decision = decide(guard, auth, nginx(cert), peer=peer)
            assert decision.allowed, events.events[-1].reason
            assert (
                decision.principal.tpp_id
                == cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_IDENTIFIER)[0].value
            )
    for cache in (check._parsed, check._records, check._validated, check._identities):
        assert len(cache) <= 2
    assert len(check._peers) <= 2
    guard.close()  # no CRL refresh thread to stop: closing is harmless
    assert decide(guard, auth, nginx(certs[0])).allowed


def test_FWD_empty_certificate_header_is_no_certificate(issuer: TestIssuer) -> None:
    """nginx sends no field for an empty ``$ssl_client_escaped_cert``; an empty line counts as none."""
    events = EventCollector()
    guard = Guard(make_policy(issuer, {"source": "nginx", "required": True}), sink=events)
    decision = decide(guard, ("authorization", f"Bearer {issuer.mint()}"), ("x-ssl-client-cert", ""))
    assert not decision.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (401, "client_cert.missing")


def test_EIDAS_identity_is_read_once_per_certificate(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf(organization_identifier="PSDGB-FCA-654321", roles=("PSP_PI",))
    events = EventCollector()
    guard = Guard(make_policy(issuer, {"source": "nginx", "identity": "eidas", **anchors}), sink=events)
    auth = ("authorization", f"Bearer {issuer.mint()}")
    first = decide(guard, auth, nginx(cert))
    second = decide(guard, auth, nginx(cert, safe="/+="))  # another encoding: parsed again
    for decision in (first, second):
        assert decision.allowed, events.events[-1].reason
        assert decision.principal.tpp_id == "PSDGB-FCA-654321"
        assert decision.principal.roles == frozenset({"PSP_PI"})
    assert len(control(guard)._identities) == 1
