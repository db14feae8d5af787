"""PSD2 identity from eIDAS certificates (EIDAS-02..05, BG-04/BG-05, MTLS-10)."""

from __future__ import annotations

import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bankguard._pki_testing import TestPKI, _oid, _seq, _tlv, _utf8, qc_statements_der
from bankguard.mtls.eidas import PSD2_ROLES, IdentityRejected, PSD2Identity, psd2_identity

REASONS = {
    "eidas.no_organization_identifier",
    "eidas.organization_identifier_invalid",
    "eidas.no_psd2_statement",
    "eidas.roles_empty",
    "eidas.role_name_mismatch",
    "eidas.nca_mismatch",
    "eidas.malformed_qc_statements",
    "eidas.not_a_qwac",
}
PSD2 = "0.4.0.19495.2"


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI()


def rejected(cert: x509.Certificate, *, require_qwac: bool = False) -> str:
    with pytest.raises(IdentityRejected) as info:
        psd2_identity(cert, require_qwac=require_qwac)
    assert info.value.reason in REASONS
    return info.value.reason


def inner(**kw) -> bytes:
    """The statements of :func:`qc_statements_der` without the outer SEQUENCE header."""
    value = qc_statements_der(**kw)
    return value[2:] if value[1] < 0x80 else value[2 + (value[1] & 0x7F) :]


def with_qc(pki: TestPKI, value: bytes, **kw) -> x509.Certificate:
    return pki.leaf(qc_statements=value, **kw)[0]


# -- EIDAS-02: the PSD2 statement ------------------------------------------------------------


def test_EIDAS_02_qwac_with_two_roles(pki):
    cert, _ = pki.leaf(roles=("PSP_AI", "PSP_PI"))
    assert psd2_identity(cert, require_qwac=True) == PSD2Identity(
        tpp_id="PSDGB-FCA-123456",
        country="GB",
        nca_id="GB-FCA",
        nca_name="Financial Conduct Authority",
        authorisation_number="123456",
        roles=frozenset({"PSP_AI", "PSP_PI"}),
    )


def test_EIDAS_02_all_four_roles(pki):
    cert, _ = pki.leaf(roles=tuple(PSD2_ROLES.values()))
    assert psd2_identity(cert).roles == frozenset({"PSP_AS", "PSP_PI", "PSP_AI", "PSP_IC"})


def test_EIDAS_02_missing_psd2_statement(pki):
    assert rejected(pki.leaf(nca=None)[0]) == "eidas.no_psd2_statement"


def test_EIDAS_02_missing_qc_statements_extension(pki):
    cert, _ = pki.leaf()
    without = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(pki.intermediate_key, hashes.SHA256())
    )
    assert rejected(without) == "eidas.no_psd2_statement"


def test_EIDAS_02_unknown_statements_are_skipped(pki):
    unknown_info = _seq(_oid("1.2.3.4"), _tlv(0x04, b"\x00\x01"))
    high_tag = _seq(_oid("1.2.3.5"), b"\x1f\x81\x00\x01\x00")  # [UNIVERSAL 128] in high-tag form
    bare = _seq(_oid("1.2.3.6"))
    value = _seq(unknown_info, high_tag, bare, inner(roles=("PSP_IC",)))
    assert psd2_identity(with_qc(pki, value)).roles == frozenset({"PSP_IC"})


# -- EIDAS-03: roles -------------------------------------------------------------------------


def test_EIDAS_03_role_name_must_match_its_oid(pki):
    cert, _ = pki.leaf(roles=(("0.4.0.19495.1.3", "PSP_PI"),))
    assert rejected(cert) == "eidas.role_name_mismatch"


def test_EIDAS_03_one_mismatch_spoils_the_statement(pki):
    cert, _ = pki.leaf(roles=("PSP_AI", ("0.4.0.19495.1.2", "PSP_AS")))
    assert rejected(cert) == "eidas.role_name_mismatch"


def test_EIDAS_03_empty_roles(pki):
    assert rejected(pki.leaf(roles=())[0]) == "eidas.roles_empty"


def test_EIDAS_03_unknown_role_oid_grants_nothing(pki):
    cert, _ = pki.leaf(roles=("PSP_AI", ("0.4.0.19495.1.0", "PSP_UNSPECIFIED"), ("1.2.3", "PSP_PI")))
    assert psd2_identity(cert).roles == frozenset({"PSP_AI"})


def test_EIDAS_03_only_unknown_roles_gives_an_identity_without_roles(pki):
    cert, _ = pki.leaf(roles=(("0.4.0.19495.1.0", "unspecified"),))
    assert psd2_identity(cert).roles == frozenset()


def test_BG_04_authorisation_follows_the_oid_not_the_name(pki):
    cert, _ = pki.leaf(roles=(("0.4.0.19495.1.9", "PSP_PI"),))
    assert "PSP_PI" not in psd2_identity(cert).roles


# -- EIDAS-04: organizationIdentifier --------------------------------------------------------


@pytest.mark.parametrize(
    ("org_id", "nca_id"),
    [
        ("PSDGB-FCA-123456", "GB-FCA"),
        ("PSDDE-BAFIN-123456", "DE-BAFIN"),
        ("PSDNL-DNB-R123.45/6", "NL-DNB"),
        ("PSDFR-ACPR-A-1-b", "FR-ACPR"),
        ("PSDES-BDE-1", "ES-BDE"),
    ],
)
def test_EIDAS_04_valid_organization_identifiers(pki, org_id, nca_id):
    cert, _ = pki.leaf(organization_identifier=org_id, nca=("Some NCA", nca_id))
    identity = psd2_identity(cert)
    assert identity.tpp_id == org_id
    assert identity.nca_id == nca_id
    assert f"PSD{identity.nca_id}-{identity.authorisation_number}" == org_id


@pytest.mark.parametrize(
    "org_id",
    [
        "VATGB-123",
        "NTRGB-12345678",
        "PSDGB-FCA-",
        "PSDGB-FCA",
        "PSDgb-FCA-1",
        "PSDGBR-FCA-1",
        "PSDGB-F-1",
        "PSDGB-ABCDEFGHI-1",
        "PSDGB-FCA-12 34",
        "PSDGB-FCA-123\n",
        " PSDGB-FCA-123",
        "PSDGB-FCA-12\x0034",
        "PSDGB-FCA-\uff11\uff12\uff13",
        "PSDGB-FCA-123_4",
        "psdGB-FCA-1",
    ],
)
def test_EIDAS_04_invalid_organization_identifiers(pki, org_id):
    cert, _ = pki.leaf(organization_identifier=org_id)
    assert rejected(cert) == "eidas.organization_identifier_invalid"


def test_EIDAS_04_missing_organization_identifier(pki):
    assert rejected(pki.leaf(organization_identifier=None)[0]) == "eidas.no_organization_identifier"


def test_EIDAS_04_two_organization_identifiers_are_ambiguous(pki):
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "PSDGB-FCA-123456"),
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "PSDGB-FCA-654321"),
        ]
    )
    assert rejected(pki.leaf(subject=subject)[0]) == "eidas.organization_identifier_invalid"


@pytest.mark.parametrize("nca_id", ["DE-BAFIN", "GB-PRA", "GB-FCA ", "gb-fca", "FCA"])
def test_EIDAS_04_nca_id_must_match_the_organization_identifier(pki, nca_id):
    cert, _ = pki.leaf(nca=("Financial Conduct Authority", nca_id))
    assert rejected(cert) == "eidas.nca_mismatch"


def test_EIDAS_04_bmp_string_organization_identifier_is_read_as_text(pki):
    attr = x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "PSDGB-FCA-777", _type=_ASN1Type.BMPString)
    cert, _ = pki.leaf(subject=x509.Name([attr]))
    assert psd2_identity(cert).tpp_id == "PSDGB-FCA-777"


# -- EIDAS-05: QWAC versus QSealC ------------------------------------------------------------


def test_EIDAS_05_qseal_is_not_a_qwac(pki):
    seal, _ = pki.leaf(qc_type="eseal")
    assert rejected(seal, require_qwac=True) == "eidas.not_a_qwac"
    assert psd2_identity(seal).roles == frozenset({"PSP_AI"})  # fine where a seal is expected


def test_EIDAS_05_no_qc_type_is_not_a_qwac(pki):
    assert rejected(pki.leaf(qc_type=None)[0], require_qwac=True) == "eidas.not_a_qwac"


def test_EIDAS_05_web_among_several_qc_types(pki):
    value = _seq(
        _seq(_oid("0.4.0.1862.1.6"), _seq(_oid("0.4.0.1862.1.6.2"), _oid("0.4.0.1862.1.6.3"))),
        inner(qc_type=None, compliance=False),
    )
    assert psd2_identity(with_qc(pki, value), require_qwac=True).tpp_id == "PSDGB-FCA-123456"


# -- strict DER ------------------------------------------------------------------------------


def psd2_value(body: bytes) -> bytes:
    return _seq(_seq(_oid(PSD2), body))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(qc_statements_der(malformed=True), id="indefinite-length"),
        pytest.param(qc_statements_der() + b"\x00", id="trailing-byte"),
        pytest.param(qc_statements_der()[:-1], id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x30\x81\x05" + qc_statements_der()[2:7], id="non-minimal-length"),
        pytest.param(b"\x30\x82\x00\x03\x06\x01\x00", id="length-with-leading-zero"),
        pytest.param(b"\x30\x85\x00\x00\x00\x00\x01\x00", id="five-length-octets"),
        pytest.param(b"\x30\xff", id="reserved-length"),
        pytest.param(b"\x31\x00", id="set-not-sequence"),
        pytest.param(_seq(_seq(_tlv(0x06, b"\x80\x01"))), id="non-minimal-oid"),
        pytest.param(_seq(_seq(_tlv(0x06, b"\x2b\x86"))), id="unterminated-oid"),
        pytest.param(_seq(_seq(_tlv(0x06, b""))), id="empty-oid"),
        pytest.param(_seq(_seq(_tlv(0x06, b"\x2b" + b"\x81" * 70 + b"\x01"))), id="huge-oid"),
        pytest.param(_seq(_seq(b"\x1f\x1e\x00")), id="non-minimal-high-tag"),
        pytest.param(_seq(_seq(_oid("1.2"), b"\x1f\x81\x81\x81\x01\x00")), id="huge-tag-number"),
        pytest.param(_seq(_seq(_oid(PSD2))), id="psd2-without-info"),
        pytest.param(psd2_value(_tlv(0x04, b"")), id="psd2-info-not-sequence"),
        pytest.param(psd2_value(_seq(_seq(), _utf8("FCA"))), id="psd2-missing-nca-id"),
        pytest.param(psd2_value(_seq(_seq(), _utf8("FCA"), _utf8("GB-FCA"), _utf8("x"))), id="psd2-extra"),
        pytest.param(psd2_value(_seq(_seq(), _utf8("FCA"), _tlv(0x13, b"GB-FCA"))), id="printable-nca"),
        pytest.param(psd2_value(_seq(_seq(), _utf8("FCA"), _tlv(0x0C, b"\xff"))), id="bad-utf8"),
        pytest.param(psd2_value(_seq(_seq(), _utf8("FCA"), _tlv(0x0C, b""))), id="empty-string"),
        pytest.param(psd2_value(_seq(_seq(), _utf8("x" * 257), _utf8("GB-FCA"))), id="string-too-long"),
        pytest.param(
            psd2_value(_seq(_seq(_seq(_oid("0.4.0.19495.1.3"))), _utf8("FCA"), _utf8("GB-FCA"))),
            id="role-without-name",
        ),
        pytest.param(
            qc_statements_der()[:2] + inner() + inner(qc_type=None),
            id="statements-after-the-outer-sequence",
        ),
    ],
)
def test_EIDAS_02_malformed_qc_statements(pki, value):
    assert rejected(with_qc(pki, value)) == "eidas.malformed_qc_statements"


@pytest.mark.parametrize(
    ("info", "detail"),
    [
        pytest.param(b"\x04\x80" + b"\x01" * 128 + b"\x00\x00", "indefinite", id="indefinite-length"),
        pytest.param(b"\x04\x81\x05hello", "non-minimal length", id="long-form-for-5"),
        pytest.param(b"\x04\x82\x00\x85" + b"x" * 133, "non-minimal length", id="leading-zero-length"),
        pytest.param(b"\x1f\x1e\x00", "non-minimal tag", id="high-form-for-tag-30"),
        pytest.param(b"\x1f\x80\x20\x00", "non-minimal tag", id="high-tag-leading-zero"),
        pytest.param(b"\x1f\x81\x81\x81\x01\x00", "tag number too large", id="huge-tag"),
    ],
)
def test_EIDAS_02_der_rules_apply_to_skipped_statements(pki, info, detail):
    """Each case breaks exactly one DER rule inside an unknown statement next to a valid PSD2 one."""
    value = _seq(_seq(_oid("1.2.3.4"), info), inner())
    with pytest.raises(IdentityRejected, match=detail) as exc:
        psd2_identity(with_qc(pki, value))
    assert exc.value.reason == "eidas.malformed_qc_statements"
    assert psd2_identity(with_qc(pki, _seq(_seq(_oid("1.2.3.4"), b"\x04\x05hello"), inner())))


def test_EIDAS_02_repeated_psd2_statement_is_malformed(pki):
    psd2 = inner(qc_type=None, compliance=False)
    assert rejected(with_qc(pki, _seq(psd2, psd2))) == "eidas.malformed_qc_statements"


def test_EIDAS_02_deeply_nested_unknown_statement_is_skipped_unparsed(pki):
    deep = _oid("1.2.3")
    for _ in range(200):
        deep = _seq(deep)
    value = _seq(_seq(_oid("1.2.3.4"), deep), inner())
    assert psd2_identity(with_qc(pki, value)).roles == frozenset({"PSP_AI"})  # skipped, never descended


# -- MTLS-10: odd names ----------------------------------------------------------------------


def odd_name(common_name: str) -> x509.Name:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography warns about the length of unvalidated names
        odd = x509.NameAttribute(NameOID.COMMON_NAME, common_name, _validate=False)
    return x509.Name([odd, x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "PSDGB-FCA-123456")])


@pytest.mark.parametrize("common_name", ["a\x00b", "", "\u202e", "a,b=c+d", "x" * 300])
def test_MTLS_10_odd_common_names_do_not_crash(pki, common_name):
    cert, _ = pki.leaf(subject=odd_name(common_name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert psd2_identity(cert).tpp_id == "PSDGB-FCA-123456"


def test_MTLS_10_name_warnings_as_errors_give_a_rejection(pki):
    """cryptography warns while parsing a 300-character CN; as an error it must not escape."""
    cert, _ = pki.leaf(subject=odd_name("x" * 300))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rejected(cert) == "eidas.organization_identifier_invalid"


def test_MTLS_10_nul_in_common_name_is_distinct(pki):
    odd, _ = pki.leaf(subject=odd_name("a\x00b"))
    plain, _ = pki.leaf(subject=odd_name("ab"))
    assert odd.subject != plain.subject
    assert psd2_identity(odd) == psd2_identity(plain)  # the TPP key is the organizationIdentifier


# -- hypothesis: arbitrary extension bytes ---------------------------------------------------

FUZZ_PKI = TestPKI()
VALID = qc_statements_der(roles=("PSP_AI", "PSP_PI"))


def never_crashes(value: bytes) -> None:
    cert, _ = FUZZ_PKI.leaf(qc_statements=value)
    try:
        result: PSD2Identity | str = psd2_identity(cert, require_qwac=True)
    except IdentityRejected as exc:
        result = exc.reason
    if isinstance(result, str):
        assert result in REASONS
    else:
        assert result.roles <= set(PSD2_ROLES.values())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
@example(b"\x30\x80\x00\x00")
@example(b"\x30\x84\xff\xff\xff\xff")
def test_MTLS_10_random_qc_statements_bytes(value):
    never_crashes(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(VALID) - 1), st.integers(0, 255), st.integers(0, len(VALID)))
def test_MTLS_10_mutated_qc_statements(position, byte, cut):
    mutated = bytearray(VALID)
    mutated[position] = byte
    never_crashes(bytes(mutated[: max(cut, 1)]))
    never_crashes(bytes(mutated))
