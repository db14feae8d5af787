"""The client-certificate control through the guard: trusted sources, validation, eIDAS
identity, PSD2 roles per operation, certificate-bound tokens (RFC 8705)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bankguard import ConfigurationError, EventCollector, Guard, Policy
from bankguard._pki_testing import TestPKI
from bankguard.mtls.sources import thumbprint
from bankguard.testing import TestIssuer, make_facts

AUDIENCE = "https://api.bank.example"
PROXY = "10.1.2.3"


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def nginx_header(cert: x509.Certificate) -> tuple[str, str]:
    return ("x-ssl-client-cert", quote(pem(cert), safe=""))


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


def policy(issuer: TestIssuer, client_cert: dict[str, Any], **extra: Any) -> Policy:
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
            "client_cert": {"source": "nginx", **client_cert},
            "routes": {
                "operations": [
                    {
                        "method": "GET",
                        "path": "/accounts",
                        "scopes": ["accounts"],
                        **extra.get("accounts", {}),
                    },
                    {
                        "method": "POST",
                        "path": "/payments",
                        "scopes": ["accounts"],
                        **extra.get("payments", {}),
                    },
                    {"method": "GET", "path": "/health", "public": True},
                ]
            },
            **{k: v for k, v in extra.items() if k not in ("accounts", "payments")},
        }
    )


def decide(
    guard: Guard, *headers: tuple[str, str], method: str = "GET", path: str = "/accounts", peer: str = PROXY
) -> Any:
    return guard.decide(make_facts(method, path, headers=list(headers), peer=peer))


def test_MTLS_01_bound_token_with_its_certificate(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(policy(issuer, {}), sink=events)
    token = issuer.mint({"cnf": {"x5t#S256": thumbprint(cert.public_bytes(serialization.Encoding.DER))}})
    decision = decide(guard, ("authorization", f"Bearer {token}"), nginx_header(cert))
    assert decision.allowed, events.events[-1].reason
    assert decision.principal.binding == "mtls"
    other, _ = pki.leaf("other.example")
    refused = decide(guard, ("authorization", f"Bearer {token}"), nginx_header(other))
    assert not refused.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (401, "token.certificate_mismatch")
    assert guard.problem(refused).headers  # renders


def test_MTLS_07_binding_needs_no_trust_anchors_self_signed_is_fine(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.self_signed()
    guard = Guard(policy(issuer, {}), sink=EventCollector())
    token = issuer.mint({"cnf": {"x5t#S256": thumbprint(cert.public_bytes(serialization.Encoding.DER))}})
    assert decide(guard, ("authorization", f"Bearer {token}"), nginx_header(cert)).allowed


def test_FWD_01_header_from_an_untrusted_peer_is_ignored_and_noted(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(policy(issuer, {}), sink=events)
    token = issuer.mint({"cnf": {"x5t#S256": thumbprint(cert.public_bytes(serialization.Encoding.DER))}})
    decision = decide(guard, ("authorization", f"Bearer {token}"), nginx_header(cert), peer="203.0.113.9")
    assert not decision.allowed
    event = events.events[-1]
    assert (event.reason, event.notes) == (
        "token.certificate_missing",
        ("client_cert.untrusted_header_ignored",),
    )


def test_FWD_02_header_sources_need_trusted_proxies(issuer: TestIssuer) -> None:
    with pytest.raises(ConfigurationError, match=r"client_cert\.source"):
        Policy.from_dict({"client_cert": {"source": "rfc9440"}})


def test_FWD_11_malformed_forwarded_certificate_is_400(issuer: TestIssuer) -> None:
    events = EventCollector()
    guard = Guard(policy(issuer, {}), sink=events)
    decision = decide(guard, ("x-ssl-client-cert", "not-a-certificate"))
    assert not decision.allowed
    assert events.events[-1].status == 400
    assert guard.problem(decision).status == 400


def test_EIDAS_identity_and_roles_reach_principal_and_event(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf(roles=("PSP_AI", "PSP_PI"))
    events = EventCollector()
    guard = Guard(
        policy(issuer, {**anchors, "identity": "eidas"}, payments={"roles": ["PSP_PI"]}),
        sink=events,
    )
    token = issuer.mint()
    decision = decide(
        guard, ("authorization", f"Bearer {token}"), nginx_header(cert), method="POST", path="/payments"
    )
    assert decision.allowed, events.events[-1].reason
    assert decision.principal.tpp_id == "PSDGB-FCA-123456"
    assert decision.principal.roles == frozenset({"PSP_AI", "PSP_PI"})
    assert events.events[-1].tpp_id == "PSDGB-FCA-123456"


def test_BG_04_missing_role_is_403_role_invalid(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf(roles=("PSP_AI",))
    events = EventCollector()
    guard = Guard(
        policy(issuer, {**anchors, "identity": "eidas"}, payments={"roles": ["PSP_PI"]}), sink=events
    )
    decision = decide(
        guard,
        ("authorization", f"Bearer {issuer.mint()}"),
        nginx_header(cert),
        method="POST",
        path="/payments",
    )
    assert not decision.allowed
    problem = guard.problem(decision)
    assert problem.status == 403
    assert b"role-invalid" in problem.body
    assert (events.events[-1].reason, events.events[-1].tpp_id) == (
        "client_cert.role_missing",
        "PSDGB-FCA-123456",
    )


def test_BG_05_certificate_from_an_unknown_ca_is_401(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    stranger, _ = TestPKI().leaf()  # same subject names, another CA (MTLS-09)
    events = EventCollector()
    guard = Guard(policy(issuer, {**anchors, "identity": "eidas"}), sink=events)
    decision = decide(guard, ("authorization", f"Bearer {issuer.mint()}"), nginx_header(stranger))
    assert not decision.allowed
    assert guard.problem(decision).status == 401
    assert events.events[-1].reason == "certificate.untrusted"


def test_required_certificate_missing_is_401(issuer: TestIssuer) -> None:
    events = EventCollector()
    guard = Guard(policy(issuer, {"required": True}), sink=events)
    decision = decide(guard, ("authorization", f"Bearer {issuer.mint()}"))
    assert not decision.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (401, "client_cert.missing")
    assert decide(guard, path="/health").allowed  # public operations need no certificate


def test_EIDAS_06_token_must_belong_to_the_certificate_tpp(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(policy(issuer, {**anchors, "identity": "eidas", "token_tpp_claim": "org_id"}), sink=events)
    good = issuer.mint({"org_id": "PSDGB-FCA-123456"})
    bad = issuer.mint({"org_id": "PSDDE-BAFIN-999"})
    assert decide(guard, ("authorization", f"Bearer {good}"), nginx_header(cert)).allowed
    assert not decide(guard, ("authorization", f"Bearer {bad}"), nginx_header(cert)).allowed
    assert events.events[-1].reason == "token.tpp_mismatch"


def test_MTLS_06_fapi2_accepts_a_certificate_bound_token(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.leaf()
    issuer_ps = TestIssuer(alg="ES256")
    guard = Guard(
        Policy.from_dict(
            {
                "profile": "fapi2",
                "trusted_proxies": ["10.0.0.0/8"],
                "tokens": {
                    "issuers": [
                        {
                            "issuer": issuer_ps.issuer,
                            "audiences": [AUDIENCE],
                            "algorithms": ["ES256"],
                            "jwks": issuer_ps.jwks(),
                        }
                    ]
                },
                "client_cert": {"source": "nginx"},
                "routes": {"operations": [{"method": "GET", "path": "/accounts"}]},
            }
        ),
        sink=EventCollector(),
    )
    bound = issuer_ps.mint({"cnf": {"x5t#S256": thumbprint(cert.public_bytes(serialization.Encoding.DER))}})
    assert decide(guard, ("authorization", f"Bearer {bound}"), nginx_header(cert)).allowed
    assert not decide(guard, ("authorization", f"Bearer {issuer_ps.mint()}"), nginx_header(cert)).allowed


def test_FWD_11_verify_header_is_checked_on_every_request(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(policy(issuer, {"verify_header": "x-ssl-client-verify"}), sink=events)
    token = issuer.mint({"cnf": {"x5t#S256": thumbprint(cert.public_bytes(serialization.Encoding.DER))}})
    auth = ("authorization", f"Bearer {token}")
    assert decide(guard, auth, nginx_header(cert), ("x-ssl-client-verify", "SUCCESS")).allowed
    # The same certificate header again, now with a failed or missing verification: never from cache.
    failed = decide(
        guard, auth, nginx_header(cert), ("x-ssl-client-verify", "FAILED:certificate has expired")
    )
    assert not failed.allowed
    assert events.events[-1].status == 400
    assert not decide(guard, auth, nginx_header(cert)).allowed


def test_EIDAS_01_cached_acceptance_ends_when_the_crl_goes_stale(
    pki: TestPKI, issuer: TestIssuer, tmp_path: Path
) -> None:
    import datetime as dt

    now = [dt.datetime.now(dt.timezone.utc)]
    crl = pki.crl([], next_update=now[0] + dt.timedelta(seconds=60))
    crl_file = tmp_path / "qtsp.crl"
    crl_file.write_bytes(TestPKI.pem_bundle(crl))
    roots, inter = tmp_path / "roots.pem", tmp_path / "inter.pem"
    roots.write_bytes(TestPKI.pem_bundle(pki.root))
    inter.write_bytes(TestPKI.pem_bundle(pki.intermediate))
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(
        policy(
            issuer,
            {
                "trust_anchors": str(roots),
                "intermediates": str(inter),
                "crl_files": [str(crl_file)],
                "identity": "eidas",
            },
        ),
        sink=events,
    )
    auth = ("authorization", f"Bearer {issuer.mint()}")
    assert decide(guard, auth, nginx_header(cert)).allowed
    check = next(c for c in guard.checks if c.name == "client_cert")
    validator: Any = check.validator  # type: ignore[attr-defined]
    later = now[0].timestamp() + 120
    validator._clock = lambda: later
    import time as time_module

    real = time_module.time
    time_module.time = lambda: later  # the control's own cache compares with wall-clock time
    try:
        refused = decide(guard, auth, nginx_header(cert))
    finally:
        time_module.time = real
    assert not refused.allowed
    assert events.events[-1].reason == "certificate.crl_unavailable"


def test_roles_on_a_public_operation_are_refused_at_load(issuer: TestIssuer, anchors: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="PSD2 roles"):
        policy(
            issuer,
            {**anchors, "identity": "eidas"},
            accounts={"public": True, "scopes": [], "roles": ["PSP_AI"]},
        )


def test_FWD_13_oversized_certificate_header_is_431(issuer: TestIssuer) -> None:
    events = EventCollector()
    guard = Guard(policy(issuer, {"max_header_bytes": 1024}), sink=events)
    decision = decide(guard, ("x-ssl-client-cert", "A" * 2000))
    assert not decision.allowed
    assert events.events[-1].status == 431


def test_unusable_trust_anchor_file_is_a_configuration_error(issuer: TestIssuer, tmp_path: Path) -> None:
    bad = tmp_path / "roots.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="client_cert"):
        Guard(policy(issuer, {"trust_anchors": str(bad)}))


def test_MTLS_01_remembered_pairs_never_cross_certificates(pki: TestPKI, issuer: TestIssuer) -> None:
    cert_a, _ = pki.leaf("a.example")
    cert_b, _ = pki.leaf("b.example")
    events = EventCollector()
    guard = Guard(policy(issuer, {}), sink=events)

    def bound(cert: x509.Certificate) -> str:
        return issuer.mint({"cnf": {"x5t#S256": thumbprint(cert.public_bytes(serialization.Encoding.DER))}})

    token_a, token_b = bound(cert_a), bound(cert_b)
    for _ in range(3):  # accepted, and remembered for the (token, certificate) pair
        assert decide(guard, ("authorization", f"Bearer {token_a}"), nginx_header(cert_a)).allowed
        assert decide(guard, ("authorization", f"Bearer {token_b}"), nginx_header(cert_b)).allowed
    for token, cert in ((token_a, cert_b), (token_b, cert_a)):
        refused = decide(guard, ("authorization", f"Bearer {token}"), nginx_header(cert))
        assert not refused.allowed
        assert events.events[-1].reason == "token.certificate_mismatch"
