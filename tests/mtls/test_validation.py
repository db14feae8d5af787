"""Client certificate path validation for identity use (MTLS-07/09/10, EIDAS-01, BG-05)."""

from __future__ import annotations

import datetime as dt
import threading
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from bankguard._pki_testing import TestPKI
from bankguard.mtls import validation
from bankguard.mtls.validation import REASONS, CertificateRejected, CertificateValidator, ValidatedChain

DAY = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI()


@pytest.fixture
def clock(pki: TestPKI) -> Clock:
    return Clock(pki.now.timestamp())


def validator(pki: TestPKI, clock: Clock, **kw) -> CertificateValidator:
    kw.setdefault("intermediates", [pki.intermediate])
    return CertificateValidator(anchors=[pki.root], clock=clock, **kw)


def reason(v: CertificateValidator, cert: x509.Certificate, chain=()) -> str:
    with pytest.raises(CertificateRejected) as info:
        v.validate(cert, chain)
    assert info.value.reason in REASONS
    return info.value.reason


@pytest.fixture
def count_verifies(monkeypatch):
    calls: list[int] = []
    real = validation.PolicyBuilder

    def counting() -> PolicyBuilder:
        calls.append(1)
        return real()

    monkeypatch.setattr(validation, "PolicyBuilder", counting)
    return calls


# -- a valid chain ---------------------------------------------------------------------------


def test_EIDAS_01_valid_chain_via_configured_intermediate(pki, clock):
    cert, _ = pki.leaf()
    result = validator(pki, clock).validate(cert)
    assert isinstance(result, ValidatedChain)
    assert result.leaf == cert
    assert result.chain == (cert, pki.intermediate, pki.root)
    assert result.valid_until == cert.not_valid_after_utc.timestamp()


def test_EIDAS_01_valid_chain_via_presented_intermediate(pki, clock):
    cert, _ = pki.leaf()
    result = validator(pki, clock, intermediates=()).validate(cert, [pki.intermediate])
    assert result.chain == (cert, pki.intermediate, pki.root)


def test_EIDAS_01_missing_intermediate_is_untrusted(pki, clock):
    cert, _ = pki.leaf()
    assert reason(validator(pki, clock, intermediates=()), cert) == "certificate.untrusted"


def test_EIDAS_01_qwac_without_subject_alt_name_is_accepted(pki, clock):
    without, _ = pki.leaf(san_dns=None)
    with_san, _ = pki.leaf(san_dns=["tpp.example"])
    v = validator(pki, clock)
    assert v.validate(without).leaf == without
    assert v.validate(with_san).leaf == with_san


def test_EIDAS_01_valid_until_is_the_earliest_not_after(pki, clock):
    late, _ = pki.leaf(not_after=pki.now + dt.timedelta(days=20000))
    result = validator(pki, clock).validate(late)
    assert result.valid_until == min(c.not_valid_after_utc.timestamp() for c in result.chain)
    assert result.valid_until == pki.intermediate.not_valid_after_utc.timestamp()


# -- trust anchors ---------------------------------------------------------------------------


def test_MTLS_09_unknown_ca_is_untrusted(pki, clock):
    stranger = TestPKI(root_name="Other Root", intermediate_name="Other CA")
    cert, _ = stranger.leaf()
    assert reason(validator(pki, clock), cert, [stranger.intermediate]) == "certificate.untrusted"


@pytest.mark.parametrize("present", ["nothing", "its own intermediate", "the real intermediate"])
def test_MTLS_09_same_subject_dn_from_another_ca_is_untrusted(pki, clock, present):
    impostor_pki = TestPKI()  # the same CA names, other keys
    genuine, _ = pki.leaf()
    impostor, _ = impostor_pki.leaf()
    assert impostor.subject == genuine.subject
    assert impostor.issuer == genuine.issuer
    chain = {
        "nothing": [],
        "its own intermediate": [impostor_pki.intermediate],
        "the real intermediate": [pki.intermediate],
    }[present]
    assert reason(validator(pki, clock), impostor, chain) == "certificate.untrusted"


def test_MTLS_09_anchors_must_be_ca_certificates(pki):
    leaf, _ = pki.leaf()
    with pytest.raises(ValueError, match="not a CA certificate"):
        CertificateValidator(anchors=[leaf])
    with pytest.raises(ValueError, match="at least one trust anchor"):
        CertificateValidator(anchors=[])


def test_MTLS_07_self_signed_certificate_is_no_identity(pki, clock):
    cert, _ = pki.self_signed()
    assert reason(validator(pki, clock), cert) == "certificate.untrusted"


# -- dates -----------------------------------------------------------------------------------


def test_EIDAS_01_expired(pki, clock):
    cert, _ = pki.leaf(not_after=pki.now + dt.timedelta(days=1))
    clock.now += 2 * DAY
    assert reason(validator(pki, clock), cert) == "certificate.expired"


def test_EIDAS_01_not_yet_valid(pki, clock):
    cert, _ = pki.leaf(not_before=pki.now + dt.timedelta(days=1))
    assert reason(validator(pki, clock), cert) == "certificate.not_yet_valid"


def test_EIDAS_01_expired_intermediate_is_reported_as_expired(clock):
    young = TestPKI(now=dt.datetime.fromtimestamp(clock.now, dt.timezone.utc))
    cert, _ = young.leaf(not_after=young.now + dt.timedelta(days=5000))
    clock.now += 3700 * DAY  # the CAs are valid for 3650 days, the leaf is not
    with pytest.raises(CertificateRejected) as info:
        CertificateValidator(anchors=[young.root], intermediates=[young.intermediate], clock=clock).validate(
            cert
        )
    assert info.value.reason == "certificate.expired"
    assert "issuer" in info.value.detail


def test_EIDAS_01_validity_is_checked_at_the_clock_time(pki, clock):
    cert, _ = pki.leaf(not_after=pki.now + dt.timedelta(days=1))
    v = validator(pki, clock, max_entries=0)
    v.validate(cert)
    clock.now = cert.not_valid_after_utc.timestamp()
    v.validate(cert)  # notAfter itself is inside the validity period (RFC 5280 §4.1.2.5)
    clock.now += 1
    assert reason(v, cert) == "certificate.expired"


# -- key usage -------------------------------------------------------------------------------


def test_EIDAS_01_no_extended_key_usage_is_not_for_client_auth(pki, clock):
    cert, _ = pki.leaf(client_auth=False)
    assert reason(validator(pki, clock), cert) == "certificate.not_for_client_auth"


def test_EIDAS_01_server_auth_only_is_not_for_client_auth(pki, clock):
    cert, _ = pki.leaf(eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    assert reason(validator(pki, clock), cert) == "certificate.not_for_client_auth"


def test_EIDAS_01_client_auth_among_other_usages_is_accepted(pki, clock):
    cert, _ = pki.leaf(eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    assert validator(pki, clock).validate(cert).leaf == cert


def test_MTLS_10_verifier_policy_itself_requires_client_auth(pki):
    """The end-entity policy given to cryptography enforces the EKU even without our pre-check."""
    verifier = (
        PolicyBuilder()
        .store(Store([pki.root]))
        .time(pki.now)
        .extension_policies(ca_policy=validation._CA_POLICY, ee_policy=validation._EE_POLICY)
        .build_client_verifier()
    )
    good, _ = pki.leaf()
    assert verifier.verify(good, [pki.intermediate]).chain[0] == good
    for cert in (pki.leaf(client_auth=False)[0], pki.leaf(eku=[ExtendedKeyUsageOID.SERVER_AUTH])[0]):
        with pytest.raises(VerificationError):
            verifier.verify(cert, [pki.intermediate])


def test_MTLS_10_cryptography_default_client_policy(pki):
    """Pins the library behaviour the module works around: SAN required, a missing EKU accepted."""
    verifier = PolicyBuilder().store(Store([pki.root])).time(pki.now).build_client_verifier()
    with pytest.raises(VerificationError, match=r"2\.5\.29\.17"):
        verifier.verify(pki.leaf()[0], [pki.intermediate])
    no_eku, _ = pki.leaf(client_auth=False, san_dns=["tpp.example"])
    assert verifier.verify(no_eku, [pki.intermediate]).chain[0] == no_eku


# -- malformed and odd certificates (MTLS-10) ------------------------------------------------


def test_MTLS_10_nul_in_common_name_does_not_crash(pki, clock):
    odd, _ = pki.leaf(common_name="a\x00b")
    plain, _ = pki.leaf(common_name="ab")
    assert odd.subject != plain.subject
    assert validator(pki, clock).validate(odd).leaf == odd


def test_MTLS_10_unknown_critical_extension_is_invalid(pki, clock):
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    cert, _ = pki.leaf(extra_extensions=[(ext, True)])
    assert reason(validator(pki, clock), cert) == "certificate.invalid"


def test_MTLS_10_ca_certificate_as_leaf_is_invalid(pki, clock):
    assert reason(validator(pki, clock), pki.intermediate) == "certificate.invalid"


def test_MTLS_10_overlong_presented_chain_is_invalid(pki, clock):
    cert, _ = pki.leaf()
    chain = [pki.intermediate] * (validation.MAX_PRESENTED_CHAIN + 1)
    assert reason(validator(pki, clock), cert, chain) == "certificate.invalid"


def test_MTLS_10_unrelated_certificates_in_the_presented_chain_are_ignored(pki, clock):
    cert, _ = pki.leaf()
    noise = [TestPKI().intermediate, pki.self_signed()[0], pki.intermediate]
    assert validator(pki, clock, intermediates=()).validate(cert, noise).leaf == cert


# -- revocation ------------------------------------------------------------------------------


def test_EIDAS_01_revoked_via_crl(pki, clock):
    cert, _ = pki.leaf()
    other, _ = pki.leaf()
    v = validator(pki, clock, crls=[pki.crl([cert.serial_number])])
    assert reason(v, cert) == "certificate.revoked"
    assert v.validate(other).leaf == other


def test_EIDAS_01_revoked_intermediate_via_root_crl(pki, clock):
    cert, _ = pki.leaf()
    crls = [pki.crl([pki.intermediate.serial_number], issued_by_root=True), pki.crl()]
    assert reason(validator(pki, clock, crls=crls), cert) == "certificate.revoked"


def test_EIDAS_01_stale_crl_fails_closed(pki, clock):
    cert, _ = pki.leaf()
    v = validator(pki, clock, crls=[pki.crl(next_update=pki.now + dt.timedelta(hours=1))])
    clock.now += 2 * 3600
    assert reason(v, cert) == "certificate.crl_unavailable"


def test_EIDAS_01_a_fresh_crl_next_to_a_stale_one_is_enough(pki, clock):
    cert, _ = pki.leaf()
    stale = pki.crl(next_update=pki.now - dt.timedelta(minutes=1), last_update=pki.now - dt.timedelta(days=2))
    assert validator(pki, clock, crls=[stale, pki.crl()]).validate(cert).leaf == cert


def test_EIDAS_01_issuer_without_crl_is_not_checked(pki, clock):
    cert, _ = pki.leaf()
    v = validator(pki, clock, crls=[pki.crl([cert.serial_number], issued_by_root=True)])
    assert v.validate(cert).leaf == cert  # the root CRL lists the serial, but the root did not issue it


def test_EIDAS_01_crl_signed_by_the_wrong_key_is_refused_at_load(pki):
    forged = pki.crl([1], signing_key=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="does not verify"):
        CertificateValidator(anchors=[pki.root], intermediates=[pki.intermediate], crls=[forged])


def test_EIDAS_01_crl_of_an_unconfigured_ca_is_refused_at_load(pki):
    with pytest.raises(ValueError, match="does not verify"):
        CertificateValidator(anchors=[pki.root], crls=[pki.crl()])  # the intermediate is not configured


def test_EIDAS_01_update_crls_swaps_and_clears_the_cache(pki, clock):
    cert, _ = pki.leaf()
    v = validator(pki, clock, crls=[pki.crl()])
    v.validate(cert)
    v.update_crls([pki.crl([cert.serial_number])])
    assert reason(v, cert) == "certificate.revoked"
    with pytest.raises(ValueError, match="does not verify"):
        v.update_crls([pki.crl(signing_key=ec.generate_private_key(ec.SECP256R1()))])
    assert reason(v, cert) == "certificate.revoked"  # a refused update keeps the old CRLs
    v.update_crls([])
    assert v.validate(cert).leaf == cert


def test_EIDAS_01_a_verdict_from_replaced_crls_is_not_cached(pki, clock, monkeypatch):
    cert, _ = pki.leaf()
    v = validator(pki, clock, crls=[pki.crl()])
    real = validation.PolicyBuilder
    updates = [[pki.crl([cert.serial_number])]]

    def builder_that_races() -> PolicyBuilder:
        if updates:
            v.update_crls(updates.pop())  # another thread swaps the CRLs mid-validation
        return real()

    monkeypatch.setattr(validation, "PolicyBuilder", builder_that_races)
    assert v.validate(cert).leaf == cert  # decided with the CRLs it started with
    assert reason(v, cert) == "certificate.revoked"


# -- BG-05: one reason per condition ---------------------------------------------------------


def test_BG_05_each_condition_has_its_own_reason(pki, clock):
    expired, _ = pki.leaf(
        not_after=pki.now - dt.timedelta(minutes=1), not_before=pki.now - dt.timedelta(days=1)
    )
    revoked, _ = pki.leaf()
    v = validator(pki, clock, crls=[pki.crl([revoked.serial_number])])
    found = {
        reason(v, expired),
        reason(v, pki.leaf(not_before=pki.now + dt.timedelta(days=1))[0]),
        reason(v, TestPKI().leaf()[0]),
        reason(v, revoked),
        reason(v, pki.leaf(client_auth=False)[0]),
        reason(v, pki.intermediate),
    }
    stale = validator(pki, clock, crls=[pki.crl(next_update=pki.now - dt.timedelta(seconds=1))])
    found.add(reason(stale, pki.leaf()[0]))
    assert found == REASONS


# -- the cache -------------------------------------------------------------------------------


def test_EIDAS_01_cache_hit_skips_the_verifier(pki, clock, count_verifies):
    cert, _ = pki.leaf()
    v = validator(pki, clock)
    first = v.validate(cert)
    assert v.validate(cert) is first
    assert v.validate(cert, ()) is first
    assert len(count_verifies) == 1
    v.validate(cert, [pki.intermediate])  # another presented chain is another key
    assert len(count_verifies) == 2


def test_EIDAS_01_cached_success_ends_with_the_certificate(pki, clock, count_verifies):
    cert, _ = pki.leaf(not_after=pki.now + dt.timedelta(days=1))
    v = validator(pki, clock)
    v.validate(cert)
    clock.now += 2 * DAY
    assert reason(v, cert) == "certificate.expired"


def test_EIDAS_01_cached_success_ends_with_the_next_crl_update(pki, clock, count_verifies):
    cert, _ = pki.leaf()
    v = validator(pki, clock, crls=[pki.crl(next_update=pki.now + dt.timedelta(hours=1))])
    v.validate(cert)
    v.validate(cert)
    assert len(count_verifies) == 1
    clock.now += 2 * 3600
    assert reason(v, cert) == "certificate.crl_unavailable"
    assert len(count_verifies) == 2


def test_EIDAS_01_rejections_are_cached_briefly(pki, clock, count_verifies):
    stranger, _ = TestPKI().leaf()
    v = validator(pki, clock)
    for _ in range(3):
        assert reason(v, stranger) == "certificate.untrusted"
    assert len(count_verifies) == 1
    clock.now += validation.REJECTION_TTL + 1
    assert reason(v, stranger) == "certificate.untrusted"
    assert len(count_verifies) == 2


def test_EIDAS_01_cache_is_bounded_oldest_first(pki, clock, count_verifies):
    certs = [pki.leaf()[0] for _ in range(5)]
    v = validator(pki, clock, max_entries=3)
    for cert in certs:
        v.validate(cert)
    assert len(v) == 3
    v.validate(certs[-1])
    assert len(count_verifies) == 5
    v.validate(certs[0])  # evicted
    assert len(count_verifies) == 6


def test_EIDAS_01_cache_can_be_disabled(pki, clock, count_verifies):
    cert, _ = pki.leaf()
    v = validator(pki, clock, max_entries=0)
    v.validate(cert)
    v.validate(cert)
    assert len(count_verifies) == 2
    assert len(v) == 0


def test_EIDAS_01_validation_is_thread_safe(pki, clock):
    certs = [pki.leaf()[0] for _ in range(8)] + [TestPKI().leaf()[0] for _ in range(4)]
    v = validator(pki, clock, max_entries=5)
    outcomes: list[str] = []

    def work() -> None:
        for _ in range(20):
            for cert in certs:
                try:
                    v.validate(cert)
                    outcomes.append("ok")
                except CertificateRejected as exc:
                    outcomes.append(exc.reason)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 6 * 20 * len(certs)
    assert outcomes.count("ok") == 6 * 20 * 8
    assert set(outcomes) == {"ok", "certificate.untrusted"}
    assert len(v) <= 5


# -- loading from files ----------------------------------------------------------------------


def test_EIDAS_01_from_files(pki, tmp_path, clock):
    revoked, _ = pki.leaf()
    good, _ = pki.leaf()
    (tmp_path / "anchors.pem").write_bytes(pki.pem_bundle(pki.root))
    (tmp_path / "inter.pem").write_bytes(pki.pem_bundle(pki.intermediate))
    (tmp_path / "inter.crl").write_bytes(
        pki.crl([revoked.serial_number]).public_bytes(serialization.Encoding.DER)
    )
    (tmp_path / "root.pem").write_bytes(pki.pem_bundle(pki.crl(issued_by_root=True)))
    v = CertificateValidator.from_files(
        str(tmp_path / "anchors.pem"),
        str(tmp_path / "inter.pem"),
        [str(tmp_path / "inter.crl"), str(tmp_path / "root.pem")],
        clock=clock,
    )
    assert v.validate(good).leaf == good
    assert reason(v, revoked) == "certificate.revoked"


def test_EIDAS_01_from_files_names_the_bad_file(pki, tmp_path):
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(pki.pem_bundle(pki.root))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"-----BEGIN nothing")
    with pytest.raises(ValueError, match=r"missing\.pem"):
        CertificateValidator.from_files(str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="garbage"):
        CertificateValidator.from_files(str(garbage))
    with pytest.raises(ValueError, match="garbage"):
        CertificateValidator.from_files(str(anchors), crl_files=[str(garbage)])
    with pytest.raises(ValueError, match="garbage"):
        CertificateValidator.from_files(str(anchors), str(garbage))


def test_MTLS_10_names_that_make_cryptography_warn_do_not_escape(pki, clock):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        long_cn = x509.NameAttribute(NameOID.COMMON_NAME, "x" * 300, _validate=False)
    odd = TestPKI(root_name="Other Root", intermediate_name="Other CA")
    cert, _ = odd.leaf(subject=x509.Name([long_cn]))
    self_signed = odd.leaf(subject=x509.Name([long_cn]), issued_by_root=True)[0]
    v = validator(pki, clock)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reason(v, cert, [odd.intermediate, self_signed]) == "certificate.untrusted"
        good, _ = pki.leaf(subject=x509.Name([long_cn]))
        assert v.validate(good).leaf == good
