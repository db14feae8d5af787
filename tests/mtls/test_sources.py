"""Client certificates from what a TLS terminator forwards (STANDARDS §2b, FWD-03..FWD-13).

Certificates are generated here with ``cryptography``: a root CA, an intermediate, leaves
(EC and RSA, one with awkward characters in its subject) and an unrelated "attacker" leaf.
The RFC 8705 and RFC 9440 appendix certificates give vectors V3, V4 and V6 (§11).
Properties: every parser, fed arbitrary latin-1 text (CR, LF, NUL, quotes, commas,
semicolons, huge values, and pieces of valid encodings), returns a certificate that was put
in, None, or raises CertSourceError with a known reason; every format round-trips.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bankguard.mtls.sources import (
    CertSourceError,
    PresentedCertificate,
    from_asgi_tls,
    from_aws_alb,
    from_nginx,
    from_pem,
    from_rfc9440,
    from_wsgi_environ,
    from_xfcc,
    thumbprint,
)
from bankguard.request import Headers

# -- certificates ------------------------------------------------------------------------------

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key: Any, issuer: str | None = None, issuer_key: Any = None, ca: bool = False):
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer or subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key or key, hashes.SHA256())


CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA = _issue("Test Root CA", CA_KEY, ca=True)
INT_KEY = ec.generate_private_key(ec.SECP256R1())
INTERMEDIATE = _issue("Test Intermediate CA", INT_KEY, "Test Root CA", CA_KEY, ca=True)
LEAF_KEY = ec.generate_private_key(ec.SECP256R1())
LEAF = _issue("tpp.example", LEAF_KEY, "Test Intermediate CA", INT_KEY)
AWKWARD = _issue('a,b;c="d"\\e=f', ec.generate_private_key(ec.SECP256R1()), "Test Intermediate CA", INT_KEY)
RSA_LEAF = _issue("rsa.example", rsa.generate_private_key(65537, 2048), "Test Intermediate CA", INT_KEY)
ATTACKER = _issue("attacker.example", ec.generate_private_key(ec.SECP256R1()))

CERTS = [LEAF, AWKWARD, RSA_LEAF, ATTACKER, INTERMEDIATE, CA]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def sf(cert: x509.Certificate) -> str:
    return ":" + base64.b64encode(der(cert)).decode("ascii") + ":"


def urlenc(text: str, safe: str = "") -> str:
    return quote(text, safe=safe)


KNOWN_DERS = {der(c) for c in CERTS}
REASONS = {
    "client_cert.malformed",
    "client_cert.duplicate",
    "client_cert.too_large",
    "client_cert.not_a_certificate",
    "client_cert.chain_without_certificate",
    "client_cert.verify_failed",
    "xfcc.malformed",
    "xfcc.element_count",
    "xfcc.duplicate_key",
    "xfcc.hash_mismatch",
    "xfcc.no_certificate",
    "xfcc.chain_mismatch",
    "nginx.verify_failed",
    "nginx.verify_invalid",
    "nginx.verify_missing",
    "nginx.unexpected_certificate",
    "nginx.missing_certificate",
}


def H(*items: tuple[str, str]) -> Headers:
    return Headers(items)


def reason_of(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(CertSourceError) as info:
        call(*args, **kwargs)
    assert info.value.reason in REASONS
    assert str(info.value) == info.value.reason
    return info.value.reason


def xfcc_cert(cert: x509.Certificate) -> str:
    return f'Hash={hashlib.sha256(der(cert)).hexdigest()};Cert="{urlenc(pem(cert))}"'


# -- vectors (STANDARDS §11) -----------------------------------------------------------------

RFC8705_PEM = """-----BEGIN CERTIFICATE-----
MIIBBjCBrAIBAjAKBggqhkjOPQQDAjAPMQ0wCwYDVQQDDARtdGxzMB4XDTE4MTAx
ODEyMzcwOVoXDTIyMDUwMjEyMzcwOVowDzENMAsGA1UEAwwEbXRsczBZMBMGByqG
SM49AgEGCCqGSM49AwEHA0IABNcnyxwqV6hY8QnhxxzFQ03C7HKW9OylMbnQZjjJ
/Au08/coZwxS7LfA4vOLS9WuneIXhbGGWvsDSb0tH6IxLm8wCgYIKoZIzj0EAwID
SQAwRgIhAP0RC1E+vwJD/D1AGHGzuri+hlV/PpQEKTWUVeORWz83AiEA5x2eXZOV
bUlJSGQgjwD5vaUaKlLR50Q2DmFfQj1L+SY=
-----END CERTIFICATE-----
"""
V3 = "A4DtL2JmUMhAsvJj5tKyn64SqzmuXbMrJa0n761y5v0"

# RFC 9440 Appendix A, Figures 2 and 3, with the display line breaks removed.
RFC9440_CLIENT_CERT = (
    ":MIIBqDCCAU6gAwIBAgIBBzAKBggqhkjOPQQDAjA6MRswGQYDVQQKDBJMZXQncyBBdXRoZW50aWNhdGUxGzAZBgNVBAMMEkxB"
    "IEludGVybWVkaWF0ZSBDQTAeFw0yMDAxMTQyMjU1MzNaFw0yMTAxMjMyMjU1MzNaMA0xCzAJBgNVBAMMAkJDMFkwEwYHKoZI"
    "zj0CAQYIKoZIzj0DAQcDQgAE8YnXXfaUgmnMtOXU/IncWalRhebrXmckC8vdgJ1p5Be5F/3YC8OthxM4+k1M6aEAEFcGzkJi"
    "Ny6J84y7uzo9M6NyMHAwCQYDVR0TBAIwADAfBgNVHSMEGDAWgBRm3WjLa38lbEYCuiCPct0ZaSED2DAOBgNVHQ8BAf8EBAMC"
    "BsAwEwYDVR0lBAwwCgYIKwYBBQUHAwIwHQYDVR0RAQH/BBMwEYEPYmRjQGV4YW1wbGUuY29tMAoGCCqGSM49BAMCA0gAMEUC"
    "IBHda/r1vaL6G3VliL4/Di6YK0Q6bMjeSkC3dFCOOB8TAiEAx/kHSB4urmiZ0NX5r5XarmPk0wmuydBVoU4hBVZ1yhk=:"
)
RFC9440_CLIENT_CERT_CHAIN = (
    ":MIIB5jCCAYugAwIBAgIBFjAKBggqhkjOPQQDAjBWMQswCQYDVQQGEwJVUzEbMBkGA1UECgwSTGV0J3MgQXV0aGVudGljYXRl"
    "MSowKAYDVQQDDCFMZXQncyBBdXRoZW50aWNhdGUgUm9vdCBBdXRob3JpdHkwHhcNMjAwMTE0MjEzMjMwWhcNMzAwMTExMjEz"
    "MjMwWjA6MRswGQYDVQQKDBJMZXQncyBBdXRoZW50aWNhdGUxGzAZBgNVBAMMEkxBIEludGVybWVkaWF0ZSBDQTBZMBMGByqG"
    "SM49AgEGCCqGSM49AwEHA0IABJf+aA54RC5pyLAR5yfXVYmNpgd+CGUTDp2KOGhc0gK91zxhHesEYkdXkpS2UN8Kati+yHtW"
    "CV3kkhCngGyv7RqjZjBkMB0GA1UdDgQWBBRm3WjLa38lbEYCuiCPct0ZaSED2DAfBgNVHSMEGDAWgBTEA2Q6eecKu9g9yb5g"
    "lbkhhVINGDASBgNVHRMBAf8ECDAGAQH/AgEAMA4GA1UdDwEB/wQEAwIBhjAKBggqhkjOPQQDAgNJADBGAiEA5pLvaFwRRkxo"
    "mIAtDIwg9D7gC1xzxBl4r28EzmSO1pcCIQCJUShpSXO9HDIQMUgH69fNDEMHXD3RRX5gP7kuu2KGMg==:, "
    ":MIICBjCCAaygAwIBAgIJAKS0yiqKtlhoMAoGCCqGSM49BAMCMFYxCzAJBgNVBAYTAlVTMRswGQYDVQQKDBJMZXQncyBBdXRo"
    "ZW50aWNhdGUxKjAoBgNVBAMMIUxldCdzIEF1dGhlbnRpY2F0ZSBSb290IEF1dGhvcml0eTAeFw0yMDAxMTQyMTI1NDVaFw00"
    "MDAxMDkyMTI1NDVaMFYxCzAJBgNVBAYTAlVTMRswGQYDVQQKDBJMZXQncyBBdXRoZW50aWNhdGUxKjAoBgNVBAMMIUxldCdz"
    "IEF1dGhlbnRpY2F0ZSBSb290IEF1dGhvcml0eTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABFoaHU+Z5bPKmGzlYXtCf+E6"
    "HYj62fORaHDOrt+yyh3H/rTcs7ynFfGn+gyFsrSP3Ez88rajv+U2NfD0o0uZ4PmjYzBhMB0GA1UdDgQWBBTEA2Q6eecKu9g9"
    "yb5glbkhhVINGDAfBgNVHSMEGDAWgBTEA2Q6eecKu9g9yb5glbkhhVINGDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQE"
    "AwIBhjAKBggqhkjOPQQDAgNIADBFAiEAmAeg1ycKHriqHnaD4M/UDBpQRpkmdcRFYGMg1Qyrkx4CIB4ivz3wQcQkGhcsUZ1S"
    "OImd/lq1Q0FLf09rGfLQPWDc:"
)
V4 = "v68ffgcPn6jdYpBfFY2nP4ShE2Yk-6_Mk5PI9yh6aes"
V4_HEX = "bfaf1f7e070f9fa8dd62905f158da73f84a1136624fbafcc9393c8f7287a69eb"


def test_V3_rfc8705_appendix_a_thumbprint():
    presented = from_pem(RFC8705_PEM, source="wsgi-environ")
    assert presented.thumbprint == V3
    assert thumbprint(presented.der) == V3
    assert presented.certificate.subject.rfc4514_string() == "CN=mtls"


def test_V4_V6_rfc9440_appendix_a_client_cert():
    presented = from_rfc9440(H(("Client-Cert", RFC9440_CLIENT_CERT)))
    assert presented is not None
    assert len(presented.der) == 428  # V6
    assert presented.thumbprint == V4
    assert hashlib.sha256(presented.der).hexdigest() == V4_HEX
    assert presented.source == "rfc9440"
    assert presented.chain == ()


def test_V6_rfc9440_appendix_a_chain_in_tls_order():
    headers = H(("client-cert", RFC9440_CLIENT_CERT), ("client-cert-chain", RFC9440_CLIENT_CERT_CHAIN))
    presented = from_rfc9440(headers)
    assert presented is not None
    assert [c.subject.rfc4514_string() for c in presented.chain] == [
        "CN=LA Intermediate CA,O=Let's Authenticate",
        "CN=Let's Authenticate Root Authority,O=Let's Authenticate,C=US",
    ]
    # The same list split over two field lines (RFC 9440 §2.3: the field may repeat).
    first, second = RFC9440_CLIENT_CERT_CHAIN.split(", ")
    split = from_rfc9440(
        H(("client-cert", RFC9440_CLIENT_CERT), ("client-cert-chain", first), ("client-cert-chain", second))
    )
    assert split == presented


def test_V4_hex_form_is_the_xfcc_hash():
    v4_pem = from_rfc9440(H(("client-cert", RFC9440_CLIENT_CERT)))
    assert v4_pem is not None
    text = v4_pem.certificate.public_bytes(serialization.Encoding.PEM).decode()
    for digest in (V4_HEX, V4_HEX.upper()):
        got = from_xfcc(H(("x-forwarded-client-cert", f'Hash={digest};Cert="{urlenc(text)}"')))
        assert got is not None
        assert got.thumbprint == V4
        assert got.der == v4_pem.der


# -- RFC 9440 (FWD-03, FWD-04) --------------------------------------------------------------


def test_FWD_03_client_cert_is_a_singleton():
    two_lines = H(("client-cert", sf(LEAF)), ("client-cert", sf(ATTACKER)))
    assert reason_of(from_rfc9440, two_lines) == "client_cert.duplicate"
    # What a WSGI server makes of the two lines, and a list value on one line.
    assert (
        reason_of(from_rfc9440, H(("client-cert", f"{sf(LEAF)}, {sf(ATTACKER)}"))) == "client_cert.duplicate"
    )
    assert reason_of(from_rfc9440, H(("client-cert", f"{sf(LEAF)},{sf(LEAF)}"))) == "client_cert.duplicate"
    # An SF parse error.
    assert reason_of(from_rfc9440, H(("client-cert", sf(LEAF) + ":"))) == "client_cert.malformed"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(base64.b64encode(der(LEAF)).decode(), id="no-colons"),
        pytest.param(":" + base64.b64encode(der(LEAF)).decode(), id="no-closing-colon"),
        pytest.param(":" + base64.urlsafe_b64encode(der(LEAF)).decode() + ":", id="base64url"),
        pytest.param(":" + base64.encodebytes(der(LEAF)).decode() + ":", id="line-breaks"),
        pytest.param(sf(LEAF)[:40] + " " + sf(LEAF)[40:], id="space-inside"),
        pytest.param(sf(LEAF)[:40] + "\t" + sf(LEAF)[40:], id="tab-inside"),
        pytest.param(":" + pem(LEAF) + ":", id="pem-armour"),
        pytest.param(pem(LEAF).replace("\n", ""), id="pem-one-line"),
        pytest.param(sf(LEAF) + ";a=1", id="parameters"),
        pytest.param('"' + sf(LEAF) + '"', id="quoted"),
        pytest.param(sf(LEAF)[:-1] + "=:", id="excess-padding"),
        pytest.param(":QQ=Q:", id="padding-in-the-middle"),
        pytest.param(":Q:", id="impossible-length"),
        pytest.param("\t" + sf(LEAF), id="leading-tab"),
        pytest.param("", id="empty"),
    ],
)
def test_FWD_04_client_cert_parsed_strictly(value):
    assert reason_of(from_rfc9440, H(("client-cert", value))) == "client_cert.malformed"


def test_FWD_04_must_decode_to_a_der_certificate():
    def not_cert(data: bytes) -> str:
        return reason_of(from_rfc9440, H(("client-cert", ":" + base64.b64encode(data).decode() + ":")))

    assert not_cert(b"") == "client_cert.not_a_certificate"
    assert not_cert(b"hello") == "client_cert.not_a_certificate"
    assert not_cert(der(LEAF) + b"\x00") == "client_cert.not_a_certificate"  # trailing data
    assert not_cert(der(LEAF)[:-1]) == "client_cert.not_a_certificate"
    key = LEAF_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert not_cert(key) == "client_cert.not_a_certificate"


def test_rfc9440_accepts_what_rfc8941_allows():
    unpadded = ":" + base64.b64encode(der(RSA_LEAF)).decode().rstrip("=") + ":"
    for value in (sf(LEAF), unpadded, f"  {sf(LEAF)}  "):  # RFC 8941 §4.2 discards surrounding SP
        got = from_rfc9440(H(("client-cert", value)))
        assert got is not None
        assert got.der in (der(LEAF), der(RSA_LEAF))
    assert from_rfc9440(H(("Client-Cert", sf(LEAF))), name="Client-Cert") is not None


def test_rfc9440_absent_and_chain_rules():
    assert from_rfc9440(H()) is None
    assert from_rfc9440(H(("x-ssl-client-cert", sf(LEAF)))) is None
    only_chain = H(("client-cert-chain", sf(INTERMEDIATE)))
    assert reason_of(from_rfc9440, only_chain) == "client_cert.chain_without_certificate"
    for chain in (f"{sf(INTERMEDIATE)},", f"{sf(INTERMEDIATE)}, , {sf(CA)}", "(" + sf(INTERMEDIATE) + ")"):
        headers = H(("client-cert", sf(LEAF)), ("client-cert-chain", chain))
        assert reason_of(from_rfc9440, headers) == "client_cert.malformed"
    bad_member = H(("client-cert", sf(LEAF)), ("client-cert-chain", ":aGVsbG8=:"))
    assert reason_of(from_rfc9440, bad_member) == "client_cert.not_a_certificate"
    tabs = from_rfc9440(
        H(("client-cert", sf(LEAF)), ("client-cert-chain", f"{sf(INTERMEDIATE)}\t,\t{sf(CA)}"))
    )
    assert tabs is not None
    assert tabs.chain == (INTERMEDIATE, CA)


# -- Envoy XFCC (FWD-08, FWD-09, FWD-10) ----------------------------------------------------


def xfcc(*lines: str) -> Headers:
    return Headers([("x-forwarded-client-cert", line) for line in lines])


def test_FWD_08_element_count_must_match():
    injected = f"Cert={urlenc(pem(ATTACKER))},By=spiffe://edge;{xfcc_cert(LEAF)}"
    assert reason_of(from_xfcc, xfcc(injected)) == "xfcc.element_count"
    two_elements = f"{xfcc_cert(ATTACKER)},{xfcc_cert(LEAF)}"
    assert reason_of(from_xfcc, xfcc(two_elements)) == "xfcc.element_count"
    # A second field line is a second element (RFC 9110 §5.3), as the merged WSGI value is.
    assert reason_of(from_xfcc, xfcc(xfcc_cert(ATTACKER), xfcc_cert(LEAF))) == "xfcc.element_count"
    assert reason_of(from_xfcc, xfcc(f"{xfcc_cert(ATTACKER)}, {xfcc_cert(LEAF)}")) == "xfcc.element_count"
    # With two expected hops the edge proxy's element, the first, is read.
    got = from_xfcc(xfcc(f"{xfcc_cert(LEAF)},By=spiffe://inner;{xfcc_cert(INTERMEDIATE)}"), elements=2)
    assert got is not None
    assert got.der == der(LEAF)
    assert reason_of(from_xfcc, xfcc(xfcc_cert(LEAF)), elements=2) == "xfcc.element_count"
    with pytest.raises(ValueError, match="elements"):
        from_xfcc(xfcc(xfcc_cert(LEAF)), elements=0)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param('By=spiffe://a;{cert};Subject="a,b";URI=spiffe://b', id="quoted-comma"),
        pytest.param('Subject="a;b=c";{cert}', id="quoted-semicolon-equals"),
        pytest.param('Subject="x\\"y,z\\"";{cert}', id="escaped-quotes"),
        pytest.param('Subject="ends with backslash\\\\";{cert}', id="escaped-backslash"),
        pytest.param('Subject="CN=hello,O=Acme\\, Inc.";{cert};DNS=a;DNS=b', id="escaped-comma"),
        pytest.param('Subject="";URI=;{cert}', id="empty-values"),
        pytest.param("{cert};By=spiffe://a?x=y", id="bare-equals"),
    ],
)
def test_FWD_09_quoting_never_splits_a_value(template):
    got = from_xfcc(xfcc(template.format(cert=xfcc_cert(AWKWARD))))
    assert got is not None
    assert got.der == der(AWKWARD)


def test_FWD_09_keys_are_case_insensitive_and_unique():
    digest = hashlib.sha256(der(LEAF)).hexdigest()
    body = urlenc(pem(LEAF))
    got = from_xfcc(xfcc(f'hASH={digest};cErT="{body}";SUBJECT="x"'))
    assert got is not None
    assert got.der == der(LEAF)
    for value in (
        f'Cert="{body}";cert="{urlenc(pem(ATTACKER))}"',
        f'Cert="{body}";CERT="{body}"',
        f"Hash={digest};Cert={body};hash={digest}",
        f'Cert="{body}";Subject="a";subject="b"',
        f'Cert="{body}";Chain={body};chain={body}',
    ):
        assert reason_of(from_xfcc, xfcc(value)) == "xfcc.duplicate_key"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param('Subject="a,b;{cert}', id="unterminated-quote"),
        pytest.param('Subject="a"b;{cert}', id="text-after-quote"),
        pytest.param('Subject=a"b";{cert}', id="quote-inside-bare-value"),
        pytest.param("{cert};", id="trailing-semicolon"),
        pytest.param("{cert},", id="trailing-comma"),
        pytest.param(";{cert}", id="leading-semicolon"),
        pytest.param("{cert};;By=x", id="empty-pair"),
        pytest.param("{cert};By", id="no-equals"),
        pytest.param("{cert};=x", id="empty-key"),
        pytest.param("{cert} ;By=x", id="space-before-semicolon"),
        pytest.param("{cert};By=a b", id="space-in-bare-value"),
        pytest.param('{cert};Subject="a\r\nb"', id="crlf-in-quotes"),
        pytest.param("{cert};Subject=a\x00b", id="nul"),
        pytest.param("", id="empty"),
        pytest.param("Hash=abc;{cert}", id="short-hash"),
        pytest.param(f"Hash={V4};{{cert}}", id="base64url-hash"),
    ],
)
def test_FWD_09_malformed_xfcc(value):
    assert reason_of(from_xfcc, xfcc(value.format(cert=f"Cert={urlenc(pem(LEAF))}"))) == "xfcc.malformed"


def test_FWD_10_hash_must_agree_with_cert():
    wrong = f'Hash={hashlib.sha256(der(ATTACKER)).hexdigest()};Cert="{urlenc(pem(LEAF))}"'
    assert reason_of(from_xfcc, xfcc(wrong)) == "xfcc.hash_mismatch"
    hash_only = f'By=spiffe://edge;Hash={hashlib.sha256(der(LEAF)).hexdigest()};Subject="CN=x"'
    assert reason_of(from_xfcc, xfcc(hash_only)) == "xfcc.no_certificate"
    assert reason_of(from_xfcc, xfcc("By=spiffe://edge;URI=spiffe://x")) == "xfcc.no_certificate"
    without_hash = from_xfcc(xfcc(f"Cert={urlenc(pem(LEAF))}"))  # computed, not trusted
    assert without_hash is not None
    assert without_hash.thumbprint == thumbprint(der(LEAF))


def test_xfcc_chain_key_includes_the_leaf():
    chain = urlenc(pem(LEAF) + pem(INTERMEDIATE) + pem(CA))
    for value in (f'{xfcc_cert(LEAF)};Chain="{chain}"', f'Chain="{chain}"'):
        got = from_xfcc(xfcc(value))
        assert got is not None
        assert got.der == der(LEAF)
        assert got.chain == (INTERMEDIATE, CA)
    mismatch = f'{xfcc_cert(ATTACKER)};Chain="{chain}"'
    assert reason_of(from_xfcc, xfcc(mismatch)) == "xfcc.chain_mismatch"
    two_in_cert = f'Cert="{urlenc(pem(LEAF) + pem(INTERMEDIATE))}"'
    assert reason_of(from_xfcc, xfcc(two_in_cert)) == "client_cert.malformed"
    bad_escape = f'Cert="{urlenc(pem(LEAF))}%zz"'
    assert reason_of(from_xfcc, xfcc(bad_escape)) == "client_cert.malformed"


# -- nginx (FWD-11) and AWS ALB -------------------------------------------------------------


def nginx(cert: str | None = None, verify: str | None = None) -> Headers:
    items = [] if cert is None else [("x-ssl-client-cert", cert)]
    return Headers(items + ([] if verify is None else [("x-ssl-client-verify", verify)]))


VERIFY = "x-ssl-client-verify"


def test_FWD_11_nginx_verify_status():
    escaped = urlenc(pem(LEAF))
    got = from_nginx(nginx(escaped, "SUCCESS"), verify_name=VERIFY)
    assert got is not None
    assert (got.der, got.source) == (der(LEAF), "nginx")
    assert from_nginx(nginx(None, "NONE"), verify_name=VERIFY) is None
    assert reason_of(from_nginx, nginx(escaped, "NONE"), verify_name=VERIFY) == "nginx.unexpected_certificate"
    expired = nginx(escaped, "FAILED:certificate has expired")
    assert reason_of(from_nginx, expired, verify_name=VERIFY) == "nginx.verify_failed"
    assert reason_of(from_nginx, nginx(None, "FAILED:x, y"), verify_name=VERIFY) == "nginx.verify_failed"
    for odd in ("success", "SUCCESS, SUCCESS", "GENEROUS", "", "FAILED"):
        assert reason_of(from_nginx, nginx(escaped, odd), verify_name=VERIFY) == "nginx.verify_invalid"
    assert reason_of(from_nginx, nginx(escaped), verify_name=VERIFY) == "nginx.verify_missing"
    assert reason_of(from_nginx, nginx(None, "SUCCESS"), verify_name=VERIFY) == "nginx.missing_certificate"
    two = Headers([("x-ssl-client-cert", escaped), (VERIFY, "SUCCESS"), (VERIFY, "SUCCESS")])
    assert reason_of(from_nginx, two, verify_name=VERIFY) == "client_cert.duplicate"
    assert from_nginx(nginx(), verify_name=VERIFY) is None


def test_FWD_11_nginx_url_decoded_pem():
    got = from_nginx(nginx(urlenc(pem(RSA_LEAF), safe="+/=")))  # no verify header configured
    assert got is not None
    assert got.der == der(RSA_LEAF)
    assert from_nginx(nginx()) is None
    assert from_nginx(nginx("")) is None  # nginx sends an empty variable as no field at all
    assert reason_of(from_nginx, nginx(pem(LEAF).replace("\n", ""))) == "client_cert.malformed"
    deprecated = pem(LEAF).replace("\n", "\n\t").rstrip("\t")  # $ssl_client_cert
    assert reason_of(from_nginx, nginx(urlenc(deprecated))) == "client_cert.malformed"
    plus_for_space = urlenc(pem(LEAF)).replace("%20", "+")
    assert reason_of(from_nginx, nginx(plus_for_space)) == "client_cert.malformed"
    two = Headers([("x-ssl-client-cert", urlenc(pem(LEAF))), ("x-ssl-client-cert", urlenc(pem(LEAF)))])
    assert reason_of(from_nginx, two) == "client_cert.duplicate"
    merged = nginx(urlenc(pem(ATTACKER)) + ", " + urlenc(pem(LEAF)))
    assert reason_of(from_nginx, merged) == "client_cert.duplicate"


def test_aws_alb_leaf_then_chain():
    value = urlenc(pem(LEAF) + pem(INTERMEDIATE), safe="+=/")
    got = from_aws_alb(H(("X-Amzn-Mtls-Clientcert", value)))
    assert got is not None
    assert (got.der, got.chain, got.source) == (der(LEAF), (INTERMEDIATE,), "aws-alb")
    assert from_aws_alb(H()) is None
    key_pem = LEAF_KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(CertSourceError) as info:
        from_aws_alb(H(("x-amzn-mtls-clientcert", urlenc(key_pem))))
    assert info.value.reason == "client_cert.not_a_certificate"
    assert "PRIVATE" not in repr(info.value)


# -- size caps (FWD-13) -----------------------------------------------------------------------


def test_FWD_13_sizes_are_capped_before_decoding():
    huge = ":" + "A" * 200_000 + ":"
    assert reason_of(from_rfc9440, H(("client-cert", huge))) == "client_cert.too_large"
    garbage = '\x00,;"' * 50_000  # too large is found before anything is parsed
    assert reason_of(from_rfc9440, H(("client-cert", garbage))) == "client_cert.too_large"
    assert reason_of(from_xfcc, xfcc(garbage)) == "client_cert.too_large"
    assert reason_of(from_nginx, nginx(garbage)) == "client_cert.too_large"
    assert reason_of(from_aws_alb, H(("x-amzn-mtls-clientcert", garbage))) == "client_cert.too_large"
    big_chain = ", ".join([sf(INTERMEDIATE)] * 200)
    headers = H(("client-cert", sf(LEAF)), ("client-cert-chain", big_chain))
    assert reason_of(from_rfc9440, headers) == "client_cert.too_large"
    many = ", ".join([sf(INTERMEDIATE)] * 17)
    assert (
        reason_of(from_rfc9440, H(("client-cert", sf(LEAF)), ("client-cert-chain", many)))
        == "client_cert.too_large"
    )
    # Two lines are counted together, so a WSGI-merged value and ASGI lines agree.
    halves = H(("client-cert", "A" * 9000), ("client-cert", "A" * 9000))
    assert reason_of(from_rfc9440, halves) == "client_cert.too_large"
    assert from_rfc9440(H(("client-cert", sf(RSA_LEAF))), max_bytes=len(sf(RSA_LEAF))) is not None
    assert (
        reason_of(from_rfc9440, H(("client-cert", sf(RSA_LEAF))), max_bytes=len(sf(RSA_LEAF)) - 1)
        == "client_cert.too_large"
    )
    assert reason_of(from_pem, "A" * 300_000, source="wsgi-environ") == "client_cert.too_large"


# -- PEM, ASGI TLS extension, WSGI environ ---------------------------------------------------


def test_from_pem_strict_armour():
    text = pem(LEAF)
    assert from_pem(text.replace("\n", "\r\n"), source="asgi-tls").der == der(LEAF)
    assert from_pem(text.rstrip("\n"), source="asgi-tls").der == der(LEAF)
    both = from_pem(text + "\n" + pem(INTERMEDIATE), source="wsgi-environ", chain_pems=[pem(CA)])
    assert both.chain == (INTERMEDIATE, CA)
    body = "".join(text.splitlines()[1:-1])
    lines = text.split("\n")
    truncated = "\n".join([*lines[:-3], lines[-3][:-1], *lines[-2:]])  # last line one short
    wide = "-----BEGIN CERTIFICATE-----\n" + "\n".join(body[i : i + 76] for i in range(0, len(body), 76))
    for broken in (
        "",
        "\n\n",
        "junk\n" + text,
        text + "junk\n",
        text.replace("-----END CERTIFICATE-----", ""),
        text.replace("END CERTIFICATE", "END X509 CRL"),
        text.replace("-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE----- "),
        text.replace("\n", "\n ", 2),
        text.replace("\n", "\r"),
        wide + "\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        truncated,
    ):
        assert reason_of(from_pem, broken, source="wsgi-environ") == "client_cert.malformed"
    crl_label = text.replace("CERTIFICATE", "X509 CRL")
    assert reason_of(from_pem, crl_label, source="wsgi-environ") == "client_cert.not_a_certificate"
    assert reason_of(from_pem, text, source="x", chain_pems=[pem(CA) + pem(CA)]) == "client_cert.malformed"
    assert reason_of(from_pem, text, source="x", chain_pems=[pem(CA)] * 17) == "client_cert.too_large"


def test_asgi_tls_extension():
    assert from_asgi_tls(None) is None
    assert from_asgi_tls({"server_cert": None, "client_cert_chain": [], "tls_version": 0x0304}) is None
    assert from_asgi_tls({"server_cert": None}) is None
    got = from_asgi_tls({"client_cert_chain": (pem(LEAF), pem(INTERMEDIATE)), "client_cert_error": None})
    assert got is not None
    assert (got.der, got.chain, got.source) == (der(LEAF), (INTERMEDIATE,), "asgi-tls")
    assert from_asgi_tls({"client_cert_chain": iter([pem(LEAF)])}) is not None
    failed = {"client_cert_chain": [pem(LEAF)], "client_cert_error": "certificate verify failed"}
    assert reason_of(from_asgi_tls, failed) == "client_cert.verify_failed"
    for chain in (pem(LEAF), pem(LEAF).encode(), [der(LEAF)], [pem(LEAF) + pem(CA)], 42, {"a": pem(LEAF)}):
        assert reason_of(from_asgi_tls, {"client_cert_chain": chain}) == "client_cert.malformed"
    assert reason_of(from_asgi_tls, [pem(LEAF)]) == "client_cert.malformed"
    assert reason_of(from_asgi_tls, {"client_cert_chain": [pem(LEAF)] * 18}) == "client_cert.too_large"


def test_wsgi_environ():
    assert from_wsgi_environ({}) is None
    assert from_wsgi_environ({"SSL_CLIENT_CERT": ""}) is None
    # A request header never becomes SSL_CLIENT_CERT, only HTTP_SSL_CLIENT_CERT.
    assert from_wsgi_environ({"HTTP_SSL_CLIENT_CERT": pem(ATTACKER)}) is None
    environ = {
        "SSL_CLIENT_CERT": pem(LEAF),
        "SSL_CLIENT_CERT_CHAIN_0": pem(INTERMEDIATE),
        "SSL_CLIENT_CERT_CHAIN_1": pem(CA),
        "SSL_CLIENT_VERIFY": "SUCCESS",
    }
    got = from_wsgi_environ(environ)
    assert got is not None
    assert (got.der, got.chain, got.source) == (der(LEAF), (INTERMEDIATE, CA), "wsgi-environ")
    gap = {"SSL_CLIENT_CERT": pem(LEAF), "SSL_CLIENT_CERT_CHAIN_1": pem(CA)}
    assert reason_of(from_wsgi_environ, gap) == "client_cert.malformed"
    zero = {"SSL_CLIENT_CERT": pem(LEAF), "SSL_CLIENT_CERT_CHAIN_00": pem(CA)}
    assert reason_of(from_wsgi_environ, zero) == "client_cert.malformed"
    no_leaf = {"SSL_CLIENT_CERT_CHAIN_0": pem(CA)}
    assert reason_of(from_wsgi_environ, no_leaf) == "client_cert.chain_without_certificate"
    failed = {"SSL_CLIENT_CERT": pem(LEAF), "SSL_CLIENT_VERIFY": "FAILED:unable to get issuer"}
    assert reason_of(from_wsgi_environ, failed) == "client_cert.verify_failed"
    assert reason_of(from_wsgi_environ, {"SSL_CLIENT_CERT": der(LEAF)}) == "client_cert.malformed"
    two_in_leaf = {"SSL_CLIENT_CERT": pem(LEAF) + pem(CA)}
    assert reason_of(from_wsgi_environ, two_in_leaf) == "client_cert.malformed"


def test_presented_certificate_hides_contents():
    got = from_rfc9440(H(("client-cert", sf(AWKWARD))))
    assert got is not None
    text = repr(got)
    assert got.thumbprint in text
    assert "rfc9440" in text
    assert "a,b" not in text
    assert base64.b64encode(der(AWKWARD)).decode()[:20] not in text
    assert isinstance(got, PresentedCertificate)
    with pytest.raises(AttributeError):
        got.source = "xfcc"  # type: ignore[misc]


# -- properties ------------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
SOME_CERTS = st.sampled_from([LEAF, AWKWARD, RSA_LEAF, ATTACKER])
CHAINS = st.lists(st.sampled_from([INTERMEDIATE, CA]), max_size=3)

latin1 = st.characters(min_codepoint=0, max_codepoint=255)
FRAGMENTS = [
    sf(LEAF),
    sf(INTERMEDIATE),
    pem(LEAF),
    pem(CA),
    urlenc(pem(LEAF)),
    urlenc(pem(AWKWARD), safe="+=/"),
    xfcc_cert(LEAF),
    xfcc_cert(ATTACKER),
    f"Cert={urlenc(pem(LEAF))}",
    f"Hash={hashlib.sha256(der(LEAF)).hexdigest()}",
    "Subject=",
    "By=",
    "Chain=",
    "cert=",
    '"',
    "\\",
    '\\"',
    ",",
    ", ",
    ";",
    "=",
    ":",
    "::",
    "%",
    "%0A",
    "%2",
    "%zz",
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\t",
    " ",
    "-----BEGIN CERTIFICATE-----",
    "-----END CERTIFICATE-----",
    "SUCCESS",
    "NONE",
    "FAILED:",
    "\xff",
    "\xa0",
]
text_values = st.one_of(
    st.text(latin1, max_size=80),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(latin1, max_size=6)), max_size=8).map("".join),
    st.builds(  # huge: past every cap (at most 300 000 characters)
        lambda s, n: (s * n)[:300_000],
        st.one_of(st.sampled_from(FRAGMENTS), st.text(latin1, min_size=1, max_size=3)),
        st.integers(1, 20_000),
    ),
)


def check_outcome(call: Any, *args: Any, allowed: set[bytes] | None = KNOWN_DERS, **kwargs: Any) -> None:
    """The call returns None, a certificate (one of ``allowed``, when given) or a known refusal."""
    reason = None
    try:
        got = call(*args, **kwargs)
    except CertSourceError as exc:
        got, reason = None, exc.reason
    assert reason is None or reason in REASONS
    if got is not None:
        assert isinstance(got, PresentedCertificate)
        assert got.thumbprint == thumbprint(got.der)
        assert der(got.certificate) == got.der
        if allowed is not None:
            assert got.der in allowed
            assert all(der(c) in allowed for c in got.chain)


def header_lists(names: list[str]) -> st.SearchStrategy[Headers]:
    line = st.tuples(st.sampled_from([*names, "x-other"]), text_values)
    return st.lists(line, max_size=3).map(Headers)


@PROPERTY
@given(header_lists(["client-cert", "client-cert-chain"]))
def test_property_rfc9440_hostile_text(headers):
    check_outcome(from_rfc9440, headers)


@PROPERTY
@given(header_lists(["x-forwarded-client-cert"]), st.integers(1, 3))
def test_property_xfcc_hostile_text(headers, elements):
    check_outcome(from_xfcc, headers, elements=elements)


@PROPERTY
@given(
    header_lists(["x-ssl-client-cert", "x-ssl-client-verify"]), st.sampled_from([None, "x-ssl-client-verify"])
)
def test_property_nginx_hostile_text(headers, verify_name):
    check_outcome(from_nginx, headers, verify_name=verify_name)


@PROPERTY
@given(header_lists(["x-amzn-mtls-clientcert"]))
def test_property_aws_alb_hostile_text(headers):
    check_outcome(from_aws_alb, headers)


@PROPERTY
@given(text_values, st.lists(text_values, max_size=2))
def test_property_pem_hostile_text(text, chain):
    check_outcome(from_pem, text, source="wsgi-environ", chain_pems=chain)


anything = st.one_of(
    st.none(), text_values, st.integers(), st.binary(max_size=8), st.lists(text_values, max_size=3)
)


@PROPERTY
@given(
    st.one_of(
        st.none(), st.dictionaries(st.sampled_from(["client_cert_chain", "client_cert_error", "x"]), anything)
    )
)
def test_property_asgi_tls_hostile_values(extension):
    check_outcome(from_asgi_tls, extension)


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "SSL_CLIENT_CERT",
                "SSL_CLIENT_CERT_CHAIN_0",
                "SSL_CLIENT_CERT_CHAIN_1",
                "SSL_CLIENT_CERT_CHAIN_01",
                "SSL_CLIENT_VERIFY",
            ]
        ),
        anything,
    )
)
def test_property_wsgi_environ_hostile_values(environ):
    check_outcome(from_wsgi_environ, environ)


@PROPERTY
@given(SOME_CERTS, st.integers(0, 2000), st.integers(0, 255))
def test_property_rfc9440_mutated_der(cert, position, byte):
    data = bytearray(der(cert))
    data[position % len(data)] = byte
    value = ":" + base64.b64encode(bytes(data)).decode() + ":"
    check_outcome(from_rfc9440, H(("client-cert", value)), allowed={bytes(data)})


@PROPERTY
@given(st.binary(max_size=600))
def test_property_rfc9440_arbitrary_der(data):
    check_outcome(
        from_rfc9440, H(("client-cert", ":" + base64.b64encode(data).decode() + ":")), allowed={data}
    )


VALID_ENCODINGS = [
    sf(LEAF),
    f'{xfcc_cert(AWKWARD)};Subject="a,b";By=spiffe://edge',
    urlenc(pem(LEAF)),
    urlenc(pem(RSA_LEAF) + pem(INTERMEDIATE), safe="+=/"),
    pem(LEAF),
]
EDIT_CHARS = st.one_of(st.sampled_from(list('",;=:\\%\r\n\x00 \t+/A-')), latin1)
EVERY_NAME = ("client-cert", "x-forwarded-client-cert", "x-ssl-client-cert", "x-amzn-mtls-clientcert")


@PROPERTY
@given(
    st.sampled_from(VALID_ENCODINGS),
    st.lists(
        st.tuples(st.integers(0, 3000), st.sampled_from(["replace", "insert", "delete"]), EDIT_CHARS),
        max_size=4,
    ),
)
def test_property_mutated_encodings(value, edits):
    """A few edits to a valid value: a known reason, None or a certificate, never a crash.

    A changed base64 character may still decode to a certificate, just another one, so here any
    returned certificate only has to be consistent with its own DER.
    """
    chars = list(value)
    for position, operation, char in edits:
        i = position % len(chars)
        if operation == "replace":
            chars[i] = char
        elif operation == "insert":
            chars.insert(i, char)
        elif len(chars) > 1:
            del chars[i]
    mutated = "".join(chars)
    headers = Headers([(name, mutated) for name in EVERY_NAME])
    for call in (from_rfc9440, from_xfcc, from_nginx, from_aws_alb):
        check_outcome(call, headers, allowed=None)
    check_outcome(from_pem, mutated, source="wsgi-environ", allowed=None)


def assert_round_trip(
    got: PresentedCertificate | None, cert: x509.Certificate, chain: list[x509.Certificate], source: str
):
    assert got is not None
    assert got.der == der(cert)
    assert got.thumbprint == thumbprint(der(cert))
    assert got.thumbprint == base64.urlsafe_b64encode(hashlib.sha256(der(cert)).digest()).decode().rstrip("=")
    assert got.certificate == cert
    assert got.chain == tuple(chain)
    assert got.source == source


@PROPERTY
@given(SOME_CERTS, CHAINS, st.booleans(), st.booleans())
def test_property_rfc9440_round_trip(cert, chain, unpadded, split_lines):
    def enc(c: x509.Certificate) -> str:
        return sf(c).replace("=", "") if unpadded else sf(c)

    items = [("client-cert", enc(cert))]
    if chain:
        members = [enc(c) for c in chain]
        items += (
            [("client-cert-chain", m) for m in members]
            if split_lines
            else [("client-cert-chain", ", ".join(members))]
        )
    assert_round_trip(from_rfc9440(Headers(items)), cert, chain, "rfc9440")


@PROPERTY
@given(
    SOME_CERTS,
    CHAINS,
    st.permutations(["hash", "cert", "by", "subject", "uri", "dns"]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_property_xfcc_round_trip(cert, chain, order, quoted, upper, with_chain):
    body = urlenc(pem(cert))
    subject = cert.subject.rfc4514_string().replace("\\", "\\\\").replace('"', '\\"')
    pairs = {
        "hash": f"Hash={hashlib.sha256(der(cert)).hexdigest()}",
        "cert": f'Cert="{body}"' if quoted else f"Cert={body}",
        "by": "By=spiffe://cluster.local/ns/bank/sa/api",
        "subject": f'Subject="{subject}"',
        "uri": "URI=spiffe://cluster.local/ns/tpp/sa/client",
        "dns": "DNS=tpp.example;DNS=alt.example",
    }
    value = ";".join(pairs[k].upper() if upper and k == "by" else pairs[k] for k in order)
    if with_chain:
        value += f';Chain="{urlenc(pem(cert) + "".join(pem(c) for c in chain))}"'
    assert_round_trip(from_xfcc(xfcc(value)), cert, chain if with_chain else [], "xfcc")


@PROPERTY
@given(SOME_CERTS, st.sampled_from(["", "+=/"]), st.booleans())
def test_property_nginx_round_trip(cert, safe, verify):
    items = [("x-ssl-client-cert", urlenc(pem(cert), safe=safe))] + ([(VERIFY, "SUCCESS")] if verify else [])
    got = from_nginx(Headers(items), verify_name=VERIFY if verify else None)
    assert_round_trip(got, cert, [], "nginx")


@PROPERTY
@given(SOME_CERTS, CHAINS, st.sampled_from(["", "+=/"]))
def test_property_aws_alb_round_trip(cert, chain, safe):
    value = urlenc(pem(cert) + "".join(pem(c) for c in chain), safe=safe)
    assert_round_trip(from_aws_alb(H(("x-amzn-mtls-clientcert", value))), cert, chain, "aws-alb")


@PROPERTY
@given(SOME_CERTS, CHAINS, st.booleans(), st.booleans())
def test_property_pem_round_trip(cert, chain, crlf, inline_chain):
    def fmt(text: str) -> str:
        return text.replace("\n", "\r\n") if crlf else text

    if inline_chain:
        got = from_pem(fmt(pem(cert) + "".join(pem(c) for c in chain)), source="wsgi-environ")
    else:
        got = from_pem(fmt(pem(cert)), source="wsgi-environ", chain_pems=[fmt(pem(c)) for c in chain])
    assert_round_trip(got, cert, chain, "wsgi-environ")


@PROPERTY
@given(SOME_CERTS, CHAINS)
def test_property_asgi_and_wsgi_round_trip(cert, chain):
    pems = [pem(cert)] + [pem(c) for c in chain]
    assert_round_trip(
        from_asgi_tls({"client_cert_chain": pems, "client_cert_error": None}), cert, chain, "asgi-tls"
    )
    environ: dict[str, Any] = {"SSL_CLIENT_CERT": pems[0]}
    environ.update({f"SSL_CLIENT_CERT_CHAIN_{n}": p for n, p in enumerate(pems[1:])})
    assert_round_trip(from_wsgi_environ(environ), cert, chain, "wsgi-environ")


def test_reasons_are_stable_codes():
    assert all(re.fullmatch(r"[a-z0-9]+(?:_[a-z]+)*\.[a-z_]+", r) for r in REASONS)
