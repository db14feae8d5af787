"""A throw-away PKI for tests of client-certificate validation and eIDAS identities.

:class:`TestPKI` builds, with ``cryptography``, an EC P-256 root CA, an intermediate CA
(the "QTSP") and TPP leaf certificates shaped like PSD2 QWACs and QSealCs:

* subject ``organizationIdentifier`` (OID 2.5.4.97, EN 319 412-1 §5.1.4), e.g. ``PSDGB-FCA-123456``;
* the QCStatements extension (RFC 3739 §3.2.6, OID 1.3.6.1.5.5.7.1.3) with QcCompliance,
  QcType web/eseal/esign (EN 319 412-5) and the PSD2 statement (ETSI TS 119 495 §5.1, OID
  0.4.0.19495.2) naming the roles and the competent authority (NCA);
* the ``clientAuth`` extended key usage (RTS Art. 34, EIDAS-01), optional subjectAltName.

:func:`qc_statements_der` encodes the extension value on its own and can produce broken
encodings (role names that do not match their OIDs, unknown role OIDs, indefinite lengths).
Keys are generated fresh for every instance; nothing here is fit for production.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["PSD2_ROLE_OIDS", "QC_STATEMENTS_OID", "QC_TYPE_OIDS", "TestPKI", "qc_statements_der"]

QC_STATEMENTS_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.3")
PSD2_ROLE_OIDS = {
    "PSP_AS": "0.4.0.19495.1.1",
    "PSP_PI": "0.4.0.19495.1.2",
    "PSP_AI": "0.4.0.19495.1.3",
    "PSP_IC": "0.4.0.19495.1.4",
}
QC_TYPE_OIDS = {"esign": "0.4.0.1862.1.6.1", "eseal": "0.4.0.1862.1.6.2", "web": "0.4.0.1862.1.6.3"}
_QC_COMPLIANCE = "0.4.0.1862.1.1"
_QC_TYPE = "0.4.0.1862.1.6"
_PSD2_STATEMENT = "0.4.0.19495.2"

RoleSpec = str | tuple[str, str]
"""A role name (``"PSP_AI"``, encoded with its own OID) or an ``(oid, name)`` pair taken verbatim."""


# -- DER encoding (only what the QCStatements need) ------------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _utf8(text: str) -> bytes:
    return _tlv(0x0C, text.encode("utf-8"))


def _oid(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


def qc_statements_der(
    *,
    roles: Iterable[RoleSpec] = ("PSP_AI",),
    nca: tuple[str, str] | None = ("Financial Conduct Authority", "GB-FCA"),
    qc_type: str | None = "web",
    compliance: bool = True,
    malformed: bool = False,
) -> bytes:
    """DER of a QCStatements extension value (RFC 3739 §3.2.6, ETSI TS 119 495 §5.1).

    ``nca=None`` leaves out the PSD2 statement; ``qc_type=None`` leaves out QcType;
    ``roles=()`` gives an empty RolesOfPSP. ``malformed=True`` re-encodes the outer
    SEQUENCE with an indefinite length (valid BER, invalid DER).
    """
    statements = []
    if compliance:
        statements.append(_seq(_oid(_QC_COMPLIANCE)))
    if qc_type is not None:
        statements.append(_seq(_oid(_QC_TYPE), _seq(_oid(QC_TYPE_OIDS.get(qc_type, qc_type)))))
    if nca is not None:
        encoded_roles = []
        for role in roles:
            oid, name = (PSD2_ROLE_OIDS[role], role) if isinstance(role, str) else role
            encoded_roles.append(_seq(_oid(oid), _utf8(name)))
        psd2 = _seq(_seq(*encoded_roles), _utf8(nca[0]), _utf8(nca[1]))
        statements.append(_seq(_oid(_PSD2_STATEMENT), psd2))
    if malformed:
        return b"\x30\x80" + b"".join(statements) + b"\x00\x00"
    return _seq(*statements)


# -- certificates ------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_usage(seal: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=seal,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


class TestPKI:
    """Root CA → intermediate CA → TPP leaves, all EC P-256, valid around ``now``.

    Two instances made with the default names have identical CA subject DNs but different
    keys: the second one plays "another CA issuing the same subject" (MTLS-09).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        now: dt.datetime | None = None,
        root_name: str = "bankguard Test Root CA",
        intermediate_name: str = "bankguard Test QTSP CA",
    ) -> None:
        self.now = now or dt.datetime.now(dt.timezone.utc)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca(_name(root_name), self.root_key, _name(root_name), self.root_key, None)
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._ca(
            _name(intermediate_name), self.intermediate_key, self.root.subject, self.root_key, 0
        )

    def _ca(
        self,
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        issuer_key: ec.EllipticCurvePrivateKey,
        path_length: int | None,
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - dt.timedelta(days=30))
            .not_valid_after(self.now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
            .sign(issuer_key, hashes.SHA256())
        )

    def leaf(
        self,
        common_name: str = "tpp.example",
        *,
        organization_identifier: str | None = "PSDGB-FCA-123456",
        roles: Iterable[RoleSpec] = ("PSP_AI",),
        nca: tuple[str, str] | None = ("Financial Conduct Authority", "GB-FCA"),
        qc_type: str | None = "web",
        client_auth: bool = True,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        san_dns: Sequence[str] | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
        qc_statements: bytes | None = None,
        subject: x509.Name | None = None,
        issued_by_root: bool = False,
        eku: Sequence[x509.ObjectIdentifier] | None = None,
        extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A TPP certificate and its private key.

        ``qc_statements`` replaces the encoded extension value with raw bytes (for fuzzing);
        ``subject`` replaces the generated subject DN; ``issued_by_root`` skips the intermediate;
        ``eku`` replaces the extended key usages that ``client_auth`` selects;
        ``extra_extensions`` adds ``(extension, critical)`` pairs.
        """
        key = key or ec.generate_private_key(ec.SECP256R1())
        if subject is None:
            attributes = [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test TPP Ltd"),
            ]
            if organization_identifier is not None:
                attributes.append(
                    x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, organization_identifier)
                )
            subject = x509.Name(attributes)
        issuer, issuer_key = (
            (self.root, self.root_key) if issued_by_root else (self.intermediate, self.intermediate_key)
        )
        if qc_statements is None:
            qc_statements = qc_statements_der(roles=roles, nca=nca, qc_type=qc_type)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or self.now - dt.timedelta(hours=1))
            .not_valid_after(not_after or self.now + dt.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_usage(seal=qc_type == "eseal"), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
            .add_extension(x509.UnrecognizedExtension(QC_STATEMENTS_OID, qc_statements), critical=False)
        )
        if eku is None and client_auth:
            eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        for extension, critical in extra_extensions:
            builder = builder.add_extension(extension, critical=critical)
        if san_dns:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in san_dns]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256()), key

    def self_signed(
        self, common_name: str = "tpp.example"
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A self-signed client certificate with ``clientAuth``: fine for PoP binding, never for identity."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - dt.timedelta(hours=1))
            .not_valid_after(self.now + dt.timedelta(days=90))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cert, key

    def crl(
        self,
        revoked_serials: Iterable[int] = (),
        *,
        next_update: dt.datetime | None = None,
        last_update: dt.datetime | None = None,
        issued_by_root: bool = False,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL from the intermediate (or the root); ``signing_key`` signs with another key."""
        issuer, key = (
            (self.root, self.root_key) if issued_by_root else (self.intermediate, self.intermediate_key)
        )
        last = last_update or self.now - dt.timedelta(hours=1)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(last)
            .next_update(next_update or self.now + dt.timedelta(days=1))
        )
        for serial in revoked_serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build()
            )
        return builder.sign(signing_key or key, hashes.SHA256())

    @staticmethod
    def pem_bundle(*items: x509.Certificate | x509.CertificateRevocationList) -> bytes:
        """PEM text of certificates (or CRLs), concatenated."""
        return b"".join(item.public_bytes(serialization.Encoding.PEM) for item in items)
