"""Client-certificate behaviours that mutation testing (scripts/mutation.sh) found unpinned.

Through the guard (``Guard.decide``), as applications meet them:

* FWD-01: a certificate header accepted once from the trusted proxy is never accepted again,
  from the remembered result, for a request from another peer (nor from a peer without an
  address); an IPv4-mapped IPv6 proxy address is the IPv4 address;
* EIDAS-01: a remembered acceptance is dropped when the CRLs change, so a certificate revoked
  since is refused on its next request;
* BG-04: the roles an operation requires are checked on requests served from the remembered
  result too; an operation with roles needs a certificate even when certificates are optional;
* FWD-11: a remembered nginx certificate is not reused when ``$ssl_client_verify`` no longer
  says ``SUCCESS``;
* every configured source (RFC 9440 with its chain header, Envoy XFCC with its element count,
  AWS ALB, the ASGI TLS extension, mod_ssl's WSGI variables) delivers the certificate a
  certificate-bound token is checked against (MTLS-01), under the configured header names and
  size cap (FWD-13);
* EIDAS-05: ``require_qwac`` refuses a QSealC presented as the TLS client certificate.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bankguard import ConfigurationError, EventCollector, Guard, Policy
from bankguard._pki_testing import TestPKI, _oid, _seq, _tlv, qc_statements_der
from bankguard.mtls.eidas import IdentityRejected, psd2_identity
from bankguard.mtls.sources import (
    MAX_CHAIN,
    MAX_PEM_CHARS,
    CertSourceError,
    from_asgi_tls,
    from_aws_alb,
    from_nginx,
    from_pem,
    from_rfc9440,
    from_wsgi_environ,
    from_xfcc,
    thumbprint,
)
from bankguard.mtls.validation import MAX_PRESENTED_CHAIN, CertificateRejected, CertificateValidator
from bankguard.request import Headers
from bankguard.testing import TestIssuer, make_facts

from .test_control import AUDIENCE, decide, nginx_header, pem, policy
from .test_validation import Clock


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI()


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def anchors(pki: TestPKI, tmp_path: Path) -> dict[str, str]:
    root, inter = tmp_path / "roots.pem", tmp_path / "intermediates.pem"
    root.write_bytes(TestPKI.pem_bundle(pki.root))
    inter.write_bytes(TestPKI.pem_bundle(pki.intermediate))
    return {"trust_anchors": str(root), "intermediates": str(inter)}


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def bound_token(issuer: TestIssuer, cert: x509.Certificate) -> str:
    return issuer.mint({"cnf": {"x5t#S256": thumbprint(der(cert))}})


def bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


def client_cert_check(guard: Guard) -> Any:
    return next(check for check in guard.checks if check.name == "client_cert")


# -- FWD-01: remembered results never leave the trusted proxy ----------------------------------------


@pytest.mark.parametrize(
    "peer", ["203.0.113.9", None, "not-an-address"], ids=["other-peer", "no-peer", "bad"]
)
def test_FWD_01_remembered_certificate_is_not_served_to_another_peer(
    pki: TestPKI, issuer: TestIssuer, peer: str | None
) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(policy(issuer, {}), sink=events)
    token = bound_token(issuer, cert)
    assert decide(guard, bearer(token), nginx_header(cert)).allowed  # from the proxy: remembered
    refused = decide(guard, bearer(token), nginx_header(cert), peer=peer)  # type: ignore[arg-type]
    assert not refused.allowed
    event = events.events[-1]
    assert (event.status, event.reason, event.notes) == (
        401,
        "token.certificate_missing",
        ("client_cert.untrusted_header_ignored",),
    )
    assert refused.principal.binding is None


def test_FWD_01_ipv4_mapped_ipv6_proxy_address_is_trusted(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(policy(issuer, {}), sink=events)
    decision = decide(guard, bearer(bound_token(issuer, cert)), nginx_header(cert), peer="::ffff:10.1.2.3")
    assert decision.allowed, events.events[-1].reason
    assert decision.principal.binding == "mtls"
    outside = decide(guard, bearer(bound_token(issuer, cert)), nginx_header(cert), peer="::ffff:192.0.2.1")
    assert events.events[-1].reason == "token.certificate_missing"
    assert not outside.allowed


# -- EIDAS-01: CRL changes reach remembered results ------------------------------------------------


def test_EIDAS_01_certificate_revoked_after_it_was_accepted_is_refused(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(policy(issuer, {**anchors, "identity": "eidas"}), sink=events)
    token = issuer.mint()
    for _ in range(2):  # the second request is served from what the first established
        assert decide(guard, bearer(token), nginx_header(cert)).allowed, events.events[-1].reason
    client_cert_check(guard).validator.update_crls([pki.crl([cert.serial_number])])
    refused = decide(guard, bearer(token), nginx_header(cert))
    assert not refused.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (401, "certificate.revoked")
    assert guard.problem(refused).status == 401
    other, _ = pki.leaf("other.example")
    assert decide(guard, bearer(token), nginx_header(other)).allowed  # the new CRL revokes one serial


# -- BG-04: roles on every request ------------------------------------------------------------------


def test_BG_04_roles_are_checked_on_a_remembered_certificate(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf(roles=("PSP_AI",))
    events = EventCollector()
    guard = Guard(
        policy(issuer, {**anchors, "identity": "eidas"}, payments={"roles": ["PSP_PI"]}), sink=events
    )
    token = issuer.mint()
    allowed = decide(guard, bearer(token), nginx_header(cert))  # GET /accounts needs no role
    assert allowed.allowed, events.events[-1].reason
    assert allowed.principal.roles == frozenset({"PSP_AI"})
    refused = decide(guard, bearer(token), nginx_header(cert), method="POST", path="/payments")
    assert not refused.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (403, "client_cert.role_missing")
    assert b"role-invalid" in guard.problem(refused).body
    again = decide(guard, bearer(token), nginx_header(cert))
    assert again.allowed
    assert (again.principal.tpp_id, again.principal.roles) == ("PSDGB-FCA-123456", frozenset({"PSP_AI"}))


def test_BG_05_operation_with_roles_needs_a_certificate_even_when_optional(
    issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    events = EventCollector()
    guard = Guard(
        policy(issuer, {**anchors, "identity": "eidas"}, payments={"roles": ["PSP_PI"]}), sink=events
    )
    refused = decide(guard, bearer(issuer.mint()), method="POST", path="/payments")
    assert not refused.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (401, "client_cert.missing")
    assert decide(guard, bearer(issuer.mint())).allowed  # no roles, certificate optional


# -- FWD-11: the proxy's verification result is read on every request ------------------------------


def test_FWD_11_remembered_certificate_needs_success_each_time(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(policy(issuer, {"verify_header": "X-SSL-Client-Verify"}), sink=events)
    token = bound_token(issuer, cert)
    success = ("x-ssl-client-verify", "SUCCESS")
    assert decide(guard, bearer(token), nginx_header(cert), success).allowed, events.events[-1].reason
    assert decide(guard, bearer(token), nginx_header(cert), success).allowed
    failed = decide(guard, bearer(token), nginx_header(cert), ("x-ssl-client-verify", "FAILED:expired"))
    assert not failed.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (400, "nginx.verify_failed")
    missing = decide(guard, bearer(token), nginx_header(cert))
    assert not missing.allowed
    assert events.events[-1].reason == "nginx.verify_missing"


# -- every source, through the guard ------------------------------------------------------------------


def _sf_binary(cert: x509.Certificate) -> str:
    return ":" + base64.b64encode(der(cert)).decode("ascii") + ":"


def _guard(issuer: TestIssuer, events: EventCollector, **client_cert: Any) -> Guard:
    return Guard(policy(issuer, client_cert), sink=events)


@pytest.mark.parametrize(
    ("config", "header"),
    [
        pytest.param({"source": "rfc9440"}, lambda c: ("client-cert", _sf_binary(c)), id="rfc9440"),
        pytest.param(
            {"source": "rfc9440", "header": "X-Client-Cert"},
            lambda c: ("x-client-cert", _sf_binary(c)),
            id="rfc9440-named",
        ),
        pytest.param(
            {"source": "xfcc"},
            lambda c: ("x-forwarded-client-cert", f"By=spiffe://proxy;Cert={quote(pem(c), safe='')}"),
            id="xfcc",
        ),
        pytest.param(
            {"source": "xfcc", "xfcc_elements": 2},
            lambda c: ("x-forwarded-client-cert", f"Cert={quote(pem(c), safe='')},By=spiffe://inner"),
            id="xfcc-two-elements",
        ),
        pytest.param(
            {"source": "aws-alb"},
            lambda c: ("x-amzn-mtls-clientcert", quote(pem(c), safe="+=/")),
            id="aws-alb",
        ),
        pytest.param(
            {"source": "aws-alb", "header": "X-Client-Certificate"},
            lambda c: ("x-client-certificate", quote(pem(c), safe="")),
            id="aws-alb-named",
        ),
        pytest.param(
            {"source": "nginx", "header": "X-Client-Certificate"},
            lambda c: ("x-client-certificate", quote(pem(c), safe="")),
            id="nginx-named",
        ),
    ],
)
def test_MTLS_01_every_header_source_delivers_the_bound_certificate(
    pki: TestPKI, issuer: TestIssuer, config: dict[str, Any], header: Any
) -> None:
    cert, _ = pki.leaf()
    other, _ = pki.leaf("other.example")
    events = EventCollector()
    guard = _guard(issuer, events, **config)
    token = bound_token(issuer, cert)
    for _ in range(2):
        decision = decide(guard, bearer(token), header(cert))
        assert decision.allowed, events.events[-1].reason
        assert decision.principal.binding == "mtls"
    refused = decide(guard, bearer(token), header(other))
    assert not refused.allowed
    assert events.events[-1].reason == "token.certificate_mismatch"


@pytest.mark.parametrize(
    ("config", "header", "reason"),
    [
        pytest.param({"source": "rfc9440"}, ("client-cert", "MIIB"), "client_cert.malformed", id="rfc9440"),
        pytest.param(
            {"source": "xfcc", "xfcc_elements": 2},
            ("x-forwarded-client-cert", "By=spiffe://proxy"),
            "xfcc.element_count",
            id="xfcc-count",
        ),
        pytest.param(
            {"source": "aws-alb"}, ("x-amzn-mtls-clientcert", "%zz"), "client_cert.malformed", id="alb"
        ),
    ],
)
def test_FWD_04_malformed_header_of_each_source_is_400(
    issuer: TestIssuer, config: dict[str, Any], header: tuple[str, str], reason: str
) -> None:
    events = EventCollector()
    guard = _guard(issuer, events, **config)
    decision = decide(guard, bearer(issuer.mint()), header)
    assert not decision.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (400, reason)
    assert guard.problem(decision).status == 400


@pytest.mark.parametrize(
    ("config", "name"),
    [
        pytest.param({"source": "rfc9440"}, "client-cert", id="rfc9440"),
        pytest.param({"source": "xfcc"}, "x-forwarded-client-cert", id="xfcc"),
        pytest.param({"source": "aws-alb"}, "x-amzn-mtls-clientcert", id="alb"),
        pytest.param({"source": "nginx"}, "x-ssl-client-cert", id="nginx"),
    ],
)
def test_FWD_13_configured_header_cap_gives_431(
    issuer: TestIssuer, config: dict[str, Any], name: str
) -> None:
    events = EventCollector()
    guard = _guard(issuer, events, max_header_bytes=1024, **config)
    decision = decide(guard, bearer(issuer.mint()), (name, "A" * 2048))
    assert not decision.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (431, "client_cert.too_large")


def test_FWD_05_rfc9440_chain_header_takes_part_in_validation(
    pki: TestPKI, issuer: TestIssuer, tmp_path: Path
) -> None:
    """Only the root is configured: the intermediate must come from ``Client-Cert-Chain``."""
    root = tmp_path / "roots.pem"
    root.write_bytes(TestPKI.pem_bundle(pki.root))
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = _guard(issuer, events, source="rfc9440", trust_anchors=str(root), identity="eidas")
    token = issuer.mint()
    leaf = ("client-cert", _sf_binary(cert))
    refused = decide(guard, bearer(token), leaf)
    assert not refused.allowed
    assert events.events[-1].reason == "certificate.untrusted"
    wrong = decide(guard, bearer(token), leaf, ("client-cert-chain", _sf_binary(pki.root)))
    assert not wrong.allowed
    assert events.events[-1].reason == "certificate.untrusted"
    decision = decide(guard, bearer(token), leaf, ("client-cert-chain", _sf_binary(pki.intermediate)))
    assert decision.allowed, events.events[-1].reason
    assert decision.principal.tpp_id == "PSDGB-FCA-123456"


def _transport_facts(transport: dict[str, Any], token: str) -> Any:
    facts = make_facts("GET", "/accounts", headers=[bearer(token)], peer="203.0.113.9")
    return dataclasses.replace(facts, transport=transport)


@pytest.mark.parametrize(
    ("source", "transport"),
    [
        pytest.param("asgi-tls", lambda c: {"client_cert_chain": [pem(c)]}, id="asgi-tls"),
        pytest.param("wsgi-environ", lambda c: {"SSL_CLIENT_CERT": pem(c)}, id="wsgi-environ"),
    ],
)
def test_MTLS_01_server_terminated_tls_delivers_the_bound_certificate(
    pki: TestPKI, issuer: TestIssuer, source: str, transport: Any
) -> None:
    cert, _ = pki.leaf()
    other, _ = pki.leaf("other.example")
    events = EventCollector()
    guard = Guard(
        Policy.from_dict(
            {
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
                "client_cert": {"source": source},
                "routes": {"operations": [{"method": "GET", "path": "/accounts", "scopes": ["accounts"]}]},
            }
        ),
        sink=events,
    )
    token = bound_token(issuer, cert)
    decision = guard.decide(_transport_facts(transport(cert), token))
    assert decision.allowed, events.events[-1].reason
    assert decision.principal.binding == "mtls"
    assert not guard.decide(_transport_facts(transport(other), token)).allowed
    assert events.events[-1].reason == "token.certificate_mismatch"
    assert not guard.decide(_transport_facts({}, token)).allowed
    assert events.events[-1].reason == "token.certificate_missing"


# -- EIDAS-05 ------------------------------------------------------------------------------------------


def test_EIDAS_05_require_qwac_refuses_a_qseal_certificate(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    seal, _ = pki.leaf(qc_type="eseal")
    web, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(policy(issuer, {**anchors, "identity": "eidas", "require_qwac": True}), sink=events)
    refused = decide(guard, bearer(issuer.mint()), nginx_header(seal))
    assert not refused.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (401, "eidas.not_a_qwac")
    assert decide(guard, bearer(issuer.mint()), nginx_header(web)).allowed
    lenient = Guard(policy(issuer, {**anchors, "identity": "eidas"}), sink=EventCollector())
    assert decide(lenient, bearer(issuer.mint()), nginx_header(seal)).allowed


# -- EIDAS-01: validation boundaries on an injected clock -----------------------------------------------


def test_EIDAS_01_leaf_becomes_valid_at_its_not_before_even_after_a_cached_refusal(pki: TestPKI) -> None:
    """Refusals are remembered for 60 s; a leaf whose notBefore is exactly then is accepted then."""
    later = (pki.now + dt.timedelta(seconds=61)).replace(microsecond=0)  # certificate times are whole seconds
    start = later.timestamp() - 60
    cert, _ = pki.leaf(not_before=later)
    clock = Clock(start)
    validator = CertificateValidator(anchors=[pki.root], intermediates=[pki.intermediate], clock=clock)
    with pytest.raises(CertificateRejected) as refused:
        validator.validate(cert)
    assert refused.value.reason == "certificate.not_yet_valid"
    clock.now = later.timestamp()
    assert validator.validate(cert).leaf == cert


def test_EIDAS_01_crl_is_fresh_up_to_its_next_update(pki: TestPKI) -> None:
    next_update = (pki.now + dt.timedelta(hours=2)).replace(microsecond=0)  # CRL times are whole seconds
    cert, _ = pki.leaf()
    clock = Clock(next_update.timestamp())
    validator = CertificateValidator(
        anchors=[pki.root],
        intermediates=[pki.intermediate],
        crls=[pki.crl(next_update=next_update)],
        clock=clock,
    )
    assert validator.validate(cert).recheck_at == next_update.timestamp()
    clock.now += 1
    with pytest.raises(CertificateRejected) as stale:
        CertificateValidator(
            anchors=[pki.root],
            intermediates=[pki.intermediate],
            crls=[pki.crl(next_update=next_update)],
            clock=clock,
        ).validate(cert)
    assert stale.value.reason == "certificate.crl_unavailable"


def test_MTLS_10_presented_chain_of_the_maximum_length_is_accepted(pki: TestPKI) -> None:
    cert, _ = pki.leaf()
    validator = CertificateValidator(anchors=[pki.root], clock=Clock(pki.now.timestamp()))
    assert validator.validate(cert, [pki.intermediate] * MAX_PRESENTED_CHAIN).leaf == cert


def test_EIDAS_01_from_files_passes_options_through(pki: TestPKI, tmp_path: Path) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_bytes(TestPKI.pem_bundle(pki.root))
    inter = tmp_path / "inter.pem"
    inter.write_bytes(TestPKI.pem_bundle(pki.intermediate))
    cert, _ = pki.leaf()
    expired_clock = Clock((pki.now + dt.timedelta(days=400)).timestamp())
    validator = CertificateValidator.from_files(str(roots), str(inter), clock=expired_clock, max_entries=0)
    with pytest.raises(CertificateRejected) as refused:
        validator.validate(cert)
    assert refused.value.reason == "certificate.expired"
    assert len(validator) == 0  # max_entries=0: nothing remembered


def test_EIDAS_01_every_crl_update_reaches_remembered_results(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(policy(issuer, {**anchors, "identity": "eidas"}), sink=events)
    token = issuer.mint()
    check = client_cert_check(guard)
    assert decide(guard, bearer(token), nginx_header(cert)).allowed
    check.validator.update_crls([pki.crl()])  # a first update revokes nothing
    assert decide(guard, bearer(token), nginx_header(cert)).allowed
    assert decide(guard, bearer(token), nginx_header(cert)).allowed
    check.validator.update_crls([pki.crl([cert.serial_number])])  # the second one does
    assert not decide(guard, bearer(token), nginx_header(cert)).allowed
    assert events.events[-1].reason == "certificate.revoked"


def _ca(name: str, *, ca: bool | None = True, crl_sign: bool = True) -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=crl_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()), key


def _crl(
    issuer: x509.Certificate, key: Any, *extensions: x509.ExtensionType
) -> x509.CertificateRevocationList:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(days=1))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    return builder.sign(key, hashes.SHA256())


def test_MTLS_09_trust_anchor_without_basic_constraints_is_refused() -> None:
    anchor, _ = _ca("no basic constraints", ca=None)
    with pytest.raises(ValueError, match="not a CA certificate"):
        CertificateValidator(anchors=[anchor])


def test_EIDAS_01_crl_of_a_ca_without_crl_sign_is_refused() -> None:
    anchor, key = _ca("no cRLSign", crl_sign=False)
    with pytest.raises(ValueError, match="does not verify with any configured CA"):
        CertificateValidator(anchors=[anchor], crls=[_crl(anchor, key)])


def _idp(**flags: bool) -> x509.IssuingDistributionPoint:
    options: dict[str, Any] = {
        "full_name": None,
        "relative_name": None,
        "only_contains_user_certs": False,
        "only_contains_ca_certs": False,
        "only_some_reasons": None,
        "indirect_crl": False,
        "only_contains_attribute_certs": False,
    }
    options.update(flags)
    return x509.IssuingDistributionPoint(**options)


@pytest.mark.parametrize(
    "extension",
    [
        pytest.param(x509.DeltaCRLIndicator(1), id="delta"),
        pytest.param(_idp(indirect_crl=True), id="indirect"),
        pytest.param(_idp(only_some_reasons=frozenset({x509.ReasonFlags.key_compromise})), id="some-reasons"),
        pytest.param(_idp(only_contains_attribute_certs=True), id="attribute-certs"),
    ],
)
def test_EIDAS_01_delta_indirect_and_partial_crls_are_refused(extension: x509.ExtensionType) -> None:
    anchor, key = _ca("partial CRLs")
    with pytest.raises(ValueError, match="delta, indirect or partial CRL"):
        CertificateValidator(anchors=[anchor], crls=[_crl(anchor, key, extension)])


def test_EIDAS_01_crl_with_a_plain_distribution_point_is_accepted() -> None:
    anchor, key = _ca("user certificates CRL")
    CertificateValidator(anchors=[anchor], crls=[_crl(anchor, key, _idp(only_contains_user_certs=True))])


# -- sources: boundaries and strictness ---------------------------------------------------------------


def _der_with_length_mod3(pki: TestPKI, remainder: int) -> bytes:
    for i in range(64):
        cert, _ = pki.leaf(f"tpp{'x' * i}.example")
        if len(der(cert)) % 3 == remainder:
            return der(cert)
    raise AssertionError("no certificate of that length")


@pytest.mark.parametrize("remainder", [1, 2])
def test_FWD_04_rfc9440_byte_sequence_without_padding_is_accepted(pki: TestPKI, remainder: int) -> None:
    raw = _der_with_length_mod3(pki, remainder)
    text = base64.b64encode(raw).decode("ascii").rstrip("=")
    presented = from_rfc9440(Headers([("client-cert", f":{text}:")]))
    assert presented is not None
    assert presented.der == raw


@pytest.mark.parametrize("text", ["A", "AAAAA", "AAAAAAAAA"], ids=["1", "5", "9"])
def test_FWD_04_rfc9440_base64_of_impossible_length_is_malformed(text: str) -> None:
    with pytest.raises(CertSourceError) as refused:
        from_rfc9440(Headers([("client-cert", f":{text}:")]))
    assert refused.value.reason == "client_cert.malformed"


@pytest.mark.parametrize(
    ("parse", "name", "limit"),
    [
        pytest.param(from_rfc9440, "client-cert", 16384, id="rfc9440"),
        pytest.param(from_xfcc, "x-forwarded-client-cert", 65536, id="xfcc"),
        pytest.param(from_nginx, "x-ssl-client-cert", 16384, id="nginx"),
        pytest.param(from_aws_alb, "x-amzn-mtls-clientcert", 16384, id="aws-alb"),
    ],
)
def test_FWD_13_default_caps(parse: Any, name: str, limit: int) -> None:
    with pytest.raises(CertSourceError) as refused:
        parse(Headers([(name, "A" * (limit + 1))]))
    assert refused.value.reason == "client_cert.too_large"
    with pytest.raises(CertSourceError) as at_limit:
        parse(Headers([(name, "A" * limit)]))
    assert at_limit.value.reason != "client_cert.too_large"


def test_FWD_05_rfc9440_chain_of_the_maximum_length(pki: TestPKI) -> None:
    cert, _ = pki.leaf()
    member = _sf_binary(pki.intermediate)
    full = from_rfc9440(
        Headers([("client-cert", _sf_binary(cert)), ("client-cert-chain", ", ".join([member] * MAX_CHAIN))]),
        max_bytes=65536,
    )
    assert full is not None
    assert len(full.chain) == MAX_CHAIN
    with pytest.raises(CertSourceError) as refused:
        from_rfc9440(
            Headers(
                [
                    ("client-cert", _sf_binary(cert)),
                    ("client-cert-chain", ", ".join([member] * (MAX_CHAIN + 1))),
                ]
            ),
            max_bytes=65536,
        )
    assert refused.value.reason == "client_cert.too_large"


def test_FWD_13_rfc9440_chain_member_over_the_cap_is_too_large(pki: TestPKI) -> None:
    cert, _ = pki.leaf()
    member = ":" + "A" * 2000 + ":"
    with pytest.raises(CertSourceError) as refused:
        from_rfc9440(
            Headers([("client-cert", _sf_binary(cert)), ("client-cert-chain", member)]), max_bytes=1900
        )
    assert refused.value.reason == "client_cert.too_large"


def test_MTLS_10_wsgi_environ_chain_of_the_maximum_length(pki: TestPKI) -> None:
    cert, _ = pki.leaf()
    environ = {"SSL_CLIENT_CERT": pem(cert)}
    environ.update({f"SSL_CLIENT_CERT_CHAIN_{n}": pem(pki.intermediate) for n in range(MAX_CHAIN)})
    presented = from_wsgi_environ(environ)
    assert presented is not None
    assert len(presented.chain) == MAX_CHAIN
    environ[f"SSL_CLIENT_CERT_CHAIN_{MAX_CHAIN}"] = pem(pki.intermediate)
    with pytest.raises(CertSourceError) as refused:
        from_wsgi_environ(environ)
    assert refused.value.reason == "client_cert.too_large"


def test_MTLS_03_each_source_names_itself(pki: TestPKI) -> None:
    cert, _ = pki.leaf()
    escaped = quote(pem(cert), safe="")
    presented = [
        from_rfc9440(Headers([("client-cert", _sf_binary(cert))])),
        from_xfcc(Headers([("x-forwarded-client-cert", f"Cert={escaped}")])),
        from_nginx(Headers([("x-ssl-client-cert", escaped)])),
        from_aws_alb(Headers([("x-amzn-mtls-clientcert", escaped)])),
        from_asgi_tls({"client_cert_chain": [pem(cert)]}),
        from_wsgi_environ({"SSL_CLIENT_CERT": pem(cert)}),
        from_pem(pem(cert), source="custom"),
    ]
    assert [p.source if p else None for p in presented] == [
        "rfc9440",
        "xfcc",
        "nginx",
        "aws-alb",
        "asgi-tls",
        "wsgi-environ",
        "custom",
    ]
    assert {p.thumbprint for p in presented if p} == {thumbprint(der(cert))}


def _rewrap(cert: x509.Certificate, widths: list[int]) -> str:
    """The PEM of ``cert`` with body lines of the given widths (the rest in 64-character lines)."""
    body = base64.b64encode(der(cert)).decode("ascii")
    lines, pos = [], 0
    for width in widths:
        lines.append(body[pos : pos + width])
        pos += width
    lines += [body[i : i + 64] for i in range(pos, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def test_MTLS_10_pem_lines_must_be_64_characters_but_the_last(pki: TestPKI) -> None:
    cert, _ = pki.leaf()
    assert from_pem(_rewrap(cert, []), source="t").der == der(cert)
    body_lines = -(-len(base64.b64encode(der(cert))) // 64)
    bad = [
        _rewrap(cert, [64, 60]),  # a short second line
        _rewrap(cert, [64] * (body_lines - 2) + [60]),  # a short line just before the last
        _rewrap(cert, [64] * (body_lines - 2) + [128]),  # a last line longer than 64
    ]
    for text in bad:
        with pytest.raises(CertSourceError) as refused:
            from_pem(text, source="t")
        assert refused.value.reason == "client_cert.malformed"


def test_MTLS_10_pem_of_the_maximum_size_is_read(pki: TestPKI) -> None:
    cert, _ = pki.leaf()
    text = pem(cert)
    padded = text + "\n" * (MAX_PEM_CHARS - len(text))
    assert len(padded) == MAX_PEM_CHARS
    assert from_pem(padded, source="t").der == der(cert)
    with pytest.raises(CertSourceError) as refused:
        from_pem(padded + "\n", source="t")
    assert refused.value.reason == "client_cert.too_large"


def test_MTLS_10_certificate_with_serial_one_is_accepted(pki: TestPKI) -> None:
    cert, _ = pki.leaf()
    key = ec.generate_private_key(ec.SECP256R1())
    one = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(pki.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(pki.intermediate_key, hashes.SHA256())
    )
    presented = from_pem(pem(one), source="t")
    assert presented.certificate.serial_number == 1


def test_FWD_11_non_ascii_escape_is_reported_as_malformed(issuer: TestIssuer) -> None:
    events = EventCollector()
    guard = Guard(policy(issuer, {}), sink=events)
    decision = decide(guard, bearer(issuer.mint()), ("x-ssl-client-cert", "%FF%FE"))
    assert not decision.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (400, "client_cert.malformed")


# -- EIDAS-02: the strict DER reader of QCStatements ---------------------------------------------------


def _with_extra_statement(info: bytes, oid: bytes | None = None) -> bytes:
    """The usual QCStatements plus one statement this reader does not know, with ``info`` as is."""
    extra = _seq(oid if oid is not None else _oid("1.2.3.4.5"), info)
    return _seq(_seq(_oid("0.4.0.1862.1.1")), extra, *_statements_of(qc_statements_der(compliance=False)))


def _statements_of(value: bytes) -> list[bytes]:
    """Split the content of the outer SEQUENCE of a QCStatements value into its statements."""
    content = value[2:] if value[1] < 0x80 else value[2 + (value[1] & 0x7F) :]
    items, pos = [], 0
    while pos < len(content):
        size, head = content[pos + 1], 2
        if size >= 0x80:
            count = size & 0x7F
            size, head = int.from_bytes(content[pos + 2 : pos + 2 + count], "big"), 2 + count
        items.append(content[pos : pos + head + size])
        pos += head + size
    return items


def _identity(pki: TestPKI, value: bytes) -> Any:
    return psd2_identity(pki.leaf(qc_statements=value)[0])


def _refusal(pki: TestPKI, value: bytes) -> str:
    with pytest.raises(IdentityRejected) as refused:
        _identity(pki, value)
    return refused.value.reason


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param(b"\x1f\x1f", id="tag-31"),
        pytest.param(b"\x1f\x21", id="tag-33"),
        pytest.param(b"\x1f\x81\x00", id="tag-128"),
        pytest.param(b"\x1f\x81\x80\x01", id="three-octets"),
    ],
)
def test_EIDAS_02_unknown_statement_with_a_high_tag_number_is_ignored(pki: TestPKI, tag: bytes) -> None:
    identity = _identity(pki, _with_extra_statement(tag + b"\x01\x00"))
    assert (identity.tpp_id, identity.roles) == ("PSDGB-FCA-123456", frozenset({"PSP_AI"}))


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param(b"\x1f\x00", id="number-0"),
        pytest.param(b"\x1f\x1e", id="number-30"),
        pytest.param(b"\x1f\x80\x21", id="leading-zero"),
        pytest.param(b"\x1f\x81\x80\x80\x01", id="four-octets"),
    ],
)
def test_EIDAS_02_non_minimal_or_oversized_tags_are_malformed(pki: TestPKI, tag: bytes) -> None:
    assert _refusal(pki, _with_extra_statement(tag + b"\x01\x00")) == "eidas.malformed_qc_statements"


@pytest.mark.parametrize("size", [1, 127, 128, 255, 256])
def test_EIDAS_02_nca_names_of_1_to_256_characters(pki: TestPKI, size: int) -> None:
    identity = psd2_identity(pki.leaf(nca=("N" * size, "GB-FCA"))[0])
    assert identity.nca_name == "N" * size
    assert identity.nca_id == "GB-FCA"


@pytest.mark.parametrize(
    "element",
    [
        pytest.param(b"\x04\x81\x05" + b"\x00" * 5, id="long-form-for-5"),
        pytest.param(b"\x04\x82\x00\x90" + b"\x00" * 0x90, id="two-octets-for-144"),
        pytest.param(b"\x04\x82\x01\x00" + b"\x00" * 255, id="longer-than-the-content"),
        pytest.param(b"\x04\x80\x00\x00", id="indefinite"),
    ],
)
def test_EIDAS_02_non_minimal_or_overrunning_lengths_are_malformed(pki: TestPKI, element: bytes) -> None:
    assert _refusal(pki, _with_extra_statement(element)) == "eidas.malformed_qc_statements"


def test_EIDAS_02_minimal_long_form_lengths_are_read(pki: TestPKI) -> None:
    for element in (b"\x04\x81\x80" + b"\x00" * 0x80, b"\x04\x82\x01\x00" + b"\x00" * 0x100):
        assert _identity(pki, _with_extra_statement(element)).tpp_id == "PSDGB-FCA-123456"


@pytest.mark.parametrize(
    ("oid", "accepted"),
    [
        pytest.param(b"\x06\x01\x2a", True, id="one-octet"),
        pytest.param(b"\x06\x40" + b"\x2a" * 64, True, id="64-octets"),
        pytest.param(b"\x06\x41" + b"\x2a" * 65, False, id="65-octets"),
        pytest.param(b"\x06\x00", False, id="empty"),
    ],
)
def test_EIDAS_02_object_identifier_sizes(pki: TestPKI, oid: bytes, accepted: bool) -> None:
    value = _with_extra_statement(b"\x05\x00", oid=oid)
    if accepted:
        assert _identity(pki, value).tpp_id == "PSDGB-FCA-123456"
    else:
        assert _refusal(pki, value) == "eidas.malformed_qc_statements"


def _padded_to(size: int) -> bytes:
    for n in range(size, 0, -1):
        value = _with_extra_statement(_tlv(0x04, b"\x00" * n))
        if len(value) == size:
            return value
    raise AssertionError(size)


def test_EIDAS_02_qc_statements_up_to_16_kib(pki: TestPKI) -> None:
    assert _identity(pki, _padded_to(16384)).tpp_id == "PSDGB-FCA-123456"
    assert _refusal(pki, _padded_to(16385)) == "eidas.malformed_qc_statements"


# -- more of the control: duplicates after a remembered request, names, modes, bounded memory -----------


def test_FWD_03_duplicate_header_after_a_remembered_certificate_is_400(
    pki: TestPKI, issuer: TestIssuer
) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(policy(issuer, {}), sink=events)
    token = bound_token(issuer, cert)
    assert decide(guard, bearer(token), nginx_header(cert)).allowed
    twice = decide(guard, bearer(token), nginx_header(cert), nginx_header(cert))
    assert not twice.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (400, "client_cert.duplicate")


def test_certificate_on_an_undeclared_route_is_read_on_every_request(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str]
) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = Guard(
        policy(issuer, {**anchors, "identity": "eidas"}, routes={"undeclared": "allow", "operations": []}),
        sink=events,
    )
    for _ in range(2):
        decision = decide(guard, bearer(issuer.mint()), nginx_header(cert), path="/elsewhere")
        assert decision.allowed, events.events[-1].reason
        assert events.events[-1].tpp_id == "PSDGB-FCA-123456"


def test_FWD_05_rfc9440_chain_without_a_certificate_is_400(issuer: TestIssuer, pki: TestPKI) -> None:
    events = EventCollector()
    guard = _guard(issuer, events, source="rfc9440")
    decision = decide(guard, bearer(issuer.mint()), ("client-cert-chain", _sf_binary(pki.intermediate)))
    assert not decision.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (
        400,
        "client_cert.chain_without_certificate",
    )


def test_FWD_05_rfc9440_custom_chain_header_takes_part_in_validation(
    pki: TestPKI, issuer: TestIssuer, tmp_path: Path
) -> None:
    root = tmp_path / "roots.pem"
    root.write_bytes(TestPKI.pem_bundle(pki.root))
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = _guard(
        issuer, events, source="rfc9440", chain_header="X-Chain", trust_anchors=str(root), identity="eidas"
    )
    leaf = ("client-cert", _sf_binary(cert))
    default_name = decide(
        guard, bearer(issuer.mint()), leaf, ("client-cert-chain", _sf_binary(pki.intermediate))
    )
    assert not default_name.allowed
    assert events.events[-1].reason == "certificate.untrusted"
    decision = decide(guard, bearer(issuer.mint()), leaf, ("x-chain", _sf_binary(pki.intermediate)))
    assert decision.allowed, events.events[-1].reason


def test_MTLS_01_xfcc_under_a_custom_header_name(pki: TestPKI, issuer: TestIssuer) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = _guard(issuer, events, source="xfcc", header="X-Client-Certs")
    token = bound_token(issuer, cert)
    decision = decide(guard, bearer(token), ("x-client-certs", f"Cert={quote(pem(cert), safe='')}"))
    assert decision.allowed, events.events[-1].reason
    default_name = decide(
        guard, bearer(token), ("x-forwarded-client-cert", f"Cert={quote(pem(cert), safe='')}")
    )
    assert not default_name.allowed
    assert events.events[-1].reason == "token.certificate_missing"


def test_MTLS_09_anchor_file_that_is_no_ca_is_a_configuration_error(
    pki: TestPKI, issuer: TestIssuer, tmp_path: Path
) -> None:
    leaf, _ = pki.leaf()
    bad = tmp_path / "anchors.pem"
    bad.write_bytes(TestPKI.pem_bundle(leaf))
    with pytest.raises(ConfigurationError, match="is not a CA certificate") as refused:
        Guard(policy(issuer, {"trust_anchors": str(bad)}), sink=EventCollector())
    assert "client_cert.trust_anchors" in str(refused.value)


def test_FWD_04_client_cert_in_report_mode_records_a_malformed_header(issuer: TestIssuer) -> None:
    events = EventCollector()
    guard = Guard(policy(issuer, {"mode": "report"}), sink=events)
    decision = decide(guard, bearer(issuer.mint()), ("x-ssl-client-cert", "not-a-certificate"))
    assert decision.allowed
    assert decision.event.reports == ("client_cert:client_cert.malformed",)


def test_OWASP_15_remembered_certificates_stay_bounded(
    pki: TestPKI, issuer: TestIssuer, anchors: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every memo of the control is bounded: more certificates (and proxies) than it keeps, and each
    request is still decided on its own certificate."""
    monkeypatch.setattr("bankguard.controls.mtls._MAX_CACHED", 2)
    certs = [pki.leaf(f"tpp{i}.example", organization_identifier=f"PSDGB-FCA-10000{i}")[0] for i in range(4)]
    events = EventCollector()
    guard = Guard(policy(issuer, {**anchors, "identity": "eidas"}), sink=events)
    check = client_cert_check(guard)
    for round_ in range(2):
        for i, cert in enumerate(certs):
            decision = decide(guard, bearer(issuer.mint()), nginx_header(cert), peer=f"10.0.0.{i + 1}")
            assert decision.allowed, (round_, i, events.events[-1].reason)
            assert events.events[-1].tpp_id == f"PSDGB-FCA-10000{i}"
            for memo in (check._parsed, check._records, check._identities, check._validated, check._peers):
                assert len(memo) <= 2


def test_EIDAS_01_two_crls_of_one_ca_are_both_consulted(pki: TestPKI) -> None:
    first, _ = pki.leaf("a.example")
    second, _ = pki.leaf("b.example")
    validator = CertificateValidator(
        anchors=[pki.root],
        intermediates=[pki.intermediate],
        crls=[pki.crl([first.serial_number]), pki.crl([second.serial_number])],
        clock=Clock(pki.now.timestamp()),
    )
    for cert in (first, second):
        with pytest.raises(CertificateRejected) as revoked:
            validator.validate(cert)
        assert revoked.value.reason == "certificate.revoked"


def test_EIDAS_01_validation_time_does_not_depend_on_the_local_time_zone(
    pki: TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, _ = pki.leaf(not_before=pki.now - dt.timedelta(minutes=5))
    clock = Clock(pki.now.timestamp())
    for zone in ("UTC", "EST+5", "JST-9"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        validator = CertificateValidator(anchors=[pki.root], intermediates=[pki.intermediate], clock=clock)
        assert validator.validate(cert).leaf == cert, zone
    monkeypatch.undo()
    time.tzset()


def test_FWD_13_rfc9440_chain_member_of_exactly_the_cap(pki: TestPKI) -> None:
    cert, _ = pki.leaf()
    value = _sf_binary(cert)
    presented = from_rfc9440(
        Headers([("client-cert", value), ("client-cert-chain", value)]), max_bytes=len(value)
    )
    assert presented is not None
    assert len(presented.chain) == 1
