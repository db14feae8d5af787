"""Chain validation set-up at its edges: trust anchors that are not CAs, CAs without a key usage
extension, CA keys not allowed to sign CRLs, delta and indirect CRLs, and CRL files that hold no
CRL (MTLS-09, EIDAS-01, BG-05; RFC 5280 §4.2.1.3, §4.2.1.9, §5.2.4, §5.2.5)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bankguard import Guard, Policy
from bankguard._pki_testing import TestPKI
from bankguard.errors import ConfigurationError
from bankguard.mtls.validation import CertificateValidator

NOW = dt.datetime.now(dt.timezone.utc)


def name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def ca(
    subject: str, key: ec.EllipticCurvePrivateKey, *, basic: bool = True, usage: x509.KeyUsage | None = None
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if basic:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    return builder.sign(key, hashes.SHA256())


def crl(
    issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, revoked: tuple[int, ...] = (), *extensions: Any
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(NOW - dt.timedelta(hours=1))
        .next_update(NOW + dt.timedelta(days=1))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(NOW - dt.timedelta(hours=1))
            .build()
        )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    return builder.sign(key, hashes.SHA256())


def usage(*, crl_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


@pytest.fixture(scope="module")
def root_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_MTLS_09_trust_anchor_without_basic_constraints_is_refused(
    root_key: ec.EllipticCurvePrivateKey,
) -> None:
    anchor = ca("Not A CA", root_key, basic=False)
    with pytest.raises(ValueError, match="is not a CA certificate"):
        CertificateValidator(anchors=[anchor])


def test_validator_needs_an_anchor_and_a_sane_cache_size(root_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError, match="at least one trust anchor"):
        CertificateValidator(anchors=[])
    with pytest.raises(ValueError, match="max_entries"):
        CertificateValidator(anchors=[ca("Root", root_key)], max_entries=-1)


def test_BG_05_ca_without_key_usage_may_sign_its_crls(root_key: ec.EllipticCurvePrivateKey) -> None:
    """RFC 5280 §4.2.1.3: without a key usage extension the key is not restricted, so its CRLs count."""
    root = ca("Root Without KU", root_key)
    validator = CertificateValidator(anchors=[root], crls=[crl(root, root_key)])
    generation = validator.generation
    validator.update_crls([crl(root, root_key, (1234,))])
    assert validator.generation == generation + 1


def test_EIDAS_01_crl_from_a_ca_without_crl_sign_is_refused(root_key: ec.EllipticCurvePrivateKey) -> None:
    root = ca("Root Certs Only", root_key, usage=usage(crl_sign=False))
    with pytest.raises(ValueError, match="does not verify with any configured CA certificate"):
        CertificateValidator(anchors=[root], crls=[crl(root, root_key)])


@pytest.mark.parametrize(
    "extension",
    [
        x509.DeltaCRLIndicator(1),
        x509.IssuingDistributionPoint(
            full_name=None,
            relative_name=None,
            only_contains_user_certs=False,
            only_contains_ca_certs=False,
            only_some_reasons=None,
            indirect_crl=True,
            only_contains_attribute_certs=False,
        ),
        x509.IssuingDistributionPoint(
            full_name=None,
            relative_name=None,
            only_contains_user_certs=False,
            only_contains_ca_certs=False,
            only_some_reasons=frozenset({x509.ReasonFlags.key_compromise}),
            indirect_crl=False,
            only_contains_attribute_certs=False,
        ),
    ],
    ids=["delta", "indirect", "some-reasons"],
)
def test_EIDAS_01_delta_indirect_and_partial_crls_are_refused(
    root_key: ec.EllipticCurvePrivateKey, extension: Any
) -> None:
    root = ca("Root", root_key)
    with pytest.raises(ValueError, match="is a delta, indirect or partial CRL"):
        CertificateValidator(anchors=[root], crls=[crl(root, root_key, (), extension)])


# -- CRL files named in the policy --------------------------------------------------------------


@pytest.fixture
def anchors(tmp_path: Path) -> str:
    path = tmp_path / "roots.pem"
    path.write_bytes(TestPKI.pem_bundle(TestPKI().root))
    return str(path)


def load(anchors: str, crl_file: Path) -> None:
    Guard(
        Policy.from_dict(
            {"client_cert": {"source": "asgi-tls", "trust_anchors": anchors, "crl_files": [str(crl_file)]}}
        )
    )


@pytest.mark.parametrize(
    "content",
    [
        b"-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n",
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgQ1JM\n-----END CERTIFICATE-----\n",
        b"\x30\x03\x02\x01\x00",
    ],
    ids=["bad-pem-crl", "no-crl-block", "bad-der"],
)
def test_crl_file_without_a_crl_is_a_configuration_error(
    anchors: str, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "qtsp.crl"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError) as info:
        load(anchors, path)
    assert info.value.path == "client_cert.trust_anchors"
    assert info.value.problems[0].message == f"the CRL file {str(path)!r} is not a PEM or DER CRL"


def test_crl_file_of_another_ca_is_a_configuration_error(anchors: str, tmp_path: Path) -> None:
    other = TestPKI()
    path = tmp_path / "other.crl"
    path.write_bytes(other.crl().public_bytes(serialization.Encoding.DER))
    with pytest.raises(ConfigurationError) as info:
        load(anchors, path)
    assert "does not verify with any configured CA certificate" in info.value.problems[0].message
