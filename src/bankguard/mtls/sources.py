"""Strict parsers for the client certificate a TLS terminator hands to the application.

RFC 8705 §6.5 leaves the proxy-to-application hop open; a deployment configures exactly one
source (STANDARDS §2b: never auto-detect, never fall back to another convention).

* RFC 9440 ``Client-Cert``: one RFC 8941 §3.3.5 Byte Sequence, ``:base64(DER):``. Several lines
  or a list value are a duplicate (FWD-03); PEM armour, inner whitespace, base64url or
  parameters are malformed (FWD-04). ``Client-Cert-Chain``: an SF List of Byte Sequences in TLS
  order, the leaf's issuer first (RFC 9440 §2.3, FWD-05).
* Envoy ``x-forwarded-client-cert``: elements split on unquoted ``,``, pairs on unquoted ``;``,
  quoted values with backslash escapes, case-insensitive keys. The element count must equal the
  configured one, as an edge proxy not in ``SANITIZE_SET`` mode lets clients inject elements
  (FWD-08); the first element, the edge proxy's, is read. Duplicate ``Cert``/``Chain``/``Hash``/
  ``Subject`` keys are refused (FWD-09). ``Cert`` and ``Chain`` (leaf first) are URL-encoded PEM;
  a hex ``Hash`` must equal the DER's SHA-256, compared as bytes, and is no certificate alone (FWD-10).
* nginx ``$ssl_client_escaped_cert`` (URL-encoded PEM), checked against ``$ssl_client_verify``
  when configured: ``SUCCESS``, ``NONE`` (no certificate) or ``FAILED:<reason>`` (FWD-11).
  AWS ALB ``X-Amzn-Mtls-Clientcert``: URL-encoded PEM, the leaf, then any chain.
* A server terminating TLS itself: the ASGI TLS extension and mod_ssl's WSGI environ keys, which
  a request header cannot reach (WSGI servers file headers under ``HTTP_*``).

Trust model: these functions check a field's form, not its sender. Reading a forwarded field is
safe only once the caller knows the peer is the trusted proxy and that the proxy overwrites the
field (FWD-01, FWD-02, FWD-12). Values are capped before decoding (FWD-13). A parser returns None
when its field is absent and raises :class:`CertSourceError` when it is present but unusable; the
``reason`` is a stable code that never holds certificate content. The thumbprint is RFC 8705 §3.1
``x5t#S256`` over the leaf DER (MTLS-03).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any
from urllib.parse import unquote_to_bytes

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from ..request import Headers

#: ``Client-Cert-Chain`` may hold this many times ``max_bytes`` (FWD-13: 16 kB a certificate, 64 kB in all).
CHAIN_FACTOR = 4
#: Most intermediates accepted after the leaf, whatever the source.
MAX_CHAIN = 16
#: Largest PEM text accepted (server-provided sources have no configured cap of their own).
MAX_PEM_CHARS = 1 << 18

_B64 = re.compile(r"[A-Za-z0-9+/]*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_BYTE_SEQUENCE = re.compile(r":([A-Za-z0-9+/=]*):")
_COMMA = re.compile(r"[ \t]*,[ \t]*")  # OWS "," OWS: RFC 8941 §4.2.1 lists, XFCC elements
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9]+(?:[ -][A-Z0-9]+)*)-----")
_PEM_LINE = re.compile(r"[A-Za-z0-9+/=]{1,64}")
_URL_BAD = re.compile(r"%(?![0-9A-Fa-f]{2})|[^\x21-\x7e]")
_CTL = r"\x00-\x08\x0a-\x1f\x7f"
_XFCC_PAIR = re.compile(rf'([A-Za-z0-9_-]+)=("(?:[^"\\{_CTL}]|\\[^{_CTL}])*"|[^",;\x00-\x20\x7f]*)')
_XFCC_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_XFCC_SINGLE = frozenset({"cert", "chain", "hash", "subject"})
_HEX_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")
_WSGI_CHAIN_KEY = re.compile(r"SSL_CLIENT_CERT_CHAIN_[0-9]+")
_MALFORMED, _TOO_LARGE = "client_cert.malformed", "client_cert.too_large"


class CertSourceError(Exception):
    """A certificate field is present but unusable; ``reason`` is a stable code, never content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PresentedCertificate:
    """The client certificate as a source delivered it. The repr shows source and thumbprint only."""

    certificate: x509.Certificate = field(repr=False)
    der: bytes = field(repr=False)
    #: Intermediates offered, in TLS order (the leaf's issuer first); may be empty.
    chain: tuple[x509.Certificate, ...] = field(repr=False)
    #: ``rfc9440``, ``xfcc``, ``nginx``, ``aws-alb``, ``asgi-tls`` or ``wsgi-environ``.
    source: str
    #: ``x5t#S256``: base64url, no padding, of the SHA-256 of ``der`` (RFC 8705 §3.1).
    thumbprint: str


def thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1 ``x5t#S256`` of a DER certificate (never of PEM text, never SHA-1)."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def _b64decode(text: str, *, padded: bool) -> bytes:
    """Standard-alphabet base64; ``=`` only as final padding, required when ``padded``."""
    if _B64.fullmatch(text) is None or (len(text) % 4 and (padded or "=" in text or len(text) % 4 == 1)):
        raise CertSourceError(_MALFORMED)
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)  # valid by now


def _load(der: bytes) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion, CryptographyDeprecationWarning):  # warning: under -W error
        raise CertSourceError("client_cert.not_a_certificate") from None
    # RFC 5280 §4.1.2.2 serials are positive (cryptography only warns); the DER must be exact.
    if cert.serial_number <= 0 or cert.public_bytes(Encoding.DER) != der:
        raise CertSourceError("client_cert.not_a_certificate")
    return cert


def _build(ders: Sequence[bytes], source: str) -> PresentedCertificate:
    if len(ders) > MAX_CHAIN + 1:
        raise CertSourceError(_TOO_LARGE)
    certs = [_load(der) for der in ders]
    return PresentedCertificate(certs[0], ders[0], tuple(certs[1:]), source, thumbprint(ders[0]))


def _pem_blocks(text: object, *, single: bool = False) -> list[bytes]:
    """The DER of each RFC 7468 §3 strict-form block: 64-character lines, padded base64."""
    if not isinstance(text, str):
        raise CertSourceError(_MALFORMED)
    if len(text) > MAX_PEM_CHARS:
        raise CertSourceError(_TOO_LARGE)
    lines = text.replace("\r\n", "\n").split("\n")
    ders: list[bytes] = []
    i = 0
    while i < len(lines):
        if not lines[i]:  # blank lines between blocks
            i += 1
            continue
        begin = _PEM_BEGIN.fullmatch(lines[i])
        if begin is None:
            raise CertSourceError(_MALFORMED)
        try:
            end = lines.index(f"-----END {begin[1]}-----", i + 1)
        except ValueError:
            raise CertSourceError(_MALFORMED) from None
        body = lines[i + 1 : end]
        if not body or any(len(x) != 64 for x in body[:-1]) or not all(map(_PEM_LINE.fullmatch, body)):
            raise CertSourceError(_MALFORMED)
        der = _b64decode("".join(body), padded=True)
        if begin[1] != "CERTIFICATE":
            raise CertSourceError("client_cert.not_a_certificate")
        ders.append(der)
        i = end + 1
    if not ders or (single and len(ders) > 1):
        raise CertSourceError(_MALFORMED)
    return ders


def _url_decode(value: str) -> str:
    """Strict percent-decoding: printable ASCII, every ``%`` followed by two hex digits, ``+`` kept."""
    if _URL_BAD.search(value) is not None:
        raise CertSourceError(_MALFORMED)
    try:
        return unquote_to_bytes(value).decode("ascii")
    except UnicodeDecodeError:
        raise CertSourceError(_MALFORMED) from None


def _lines(headers: Headers, name: str, max_bytes: int) -> list[str]:
    """Every field line of ``name``, capped in total before anything is decoded (FWD-13)."""
    lines = headers.get_all(name.lower())
    if sum(len(line) for line in lines) > max_bytes:
        raise CertSourceError(_TOO_LARGE)
    return lines


def _singleton(headers: Headers, name: str, max_bytes: int) -> str | None:
    """The one value of a certificate field. A second line, or a comma (what a WSGI server makes
    of two lines; base64 and URL-encoded PEM never contain one), is a duplicate (FWD-03)."""
    lines = _lines(headers, name, max_bytes)
    if not lines:
        return None
    if len(lines) > 1 or "," in lines[0]:
        raise CertSourceError("client_cert.duplicate")
    return lines[0]


def from_pem(text: str, *, source: str, chain_pems: Sequence[str] = ()) -> PresentedCertificate:
    """A leaf in PEM (further blocks in ``text`` are its chain, in order) plus one PEM per chain entry."""
    ders = _pem_blocks(text)
    ders.extend(_pem_blocks(pem, single=True)[0] for pem in islice(chain_pems, MAX_CHAIN + 1))
    return _build(ders, source)


def from_rfc9440(
    headers: Headers,
    *,
    name: str = "client-cert",
    chain_name: str = "client-cert-chain",
    max_bytes: int = 16384,
) -> PresentedCertificate | None:
    """RFC 9440 §2.2 ``Client-Cert`` and §2.3 ``Client-Cert-Chain`` (FWD-03, FWD-04, FWD-05)."""
    value = _singleton(headers, name, max_bytes)
    chain_lines = _lines(headers, chain_name, CHAIN_FACTOR * max_bytes)
    if value is None:
        if chain_lines:
            raise CertSourceError("client_cert.chain_without_certificate")
        return None
    ders = [_byte_sequence(value.strip(" "))]
    chain_value = ", ".join(chain_lines).strip(" ")  # RFC 9110 §5.3 line combination
    members = _COMMA.split(chain_value) if chain_value else []
    if len(members) > MAX_CHAIN:
        raise CertSourceError(_TOO_LARGE)
    for member in members:
        if len(member) > max_bytes:
            raise CertSourceError(_TOO_LARGE)
        ders.append(_byte_sequence(member))
    return _build(ders, "rfc9440")


def _byte_sequence(item: str) -> bytes:
    """RFC 8941 §4.2.7; missing ``=`` padding is accepted as §3.3.5 asks, parameters are not."""
    match = _BYTE_SEQUENCE.fullmatch(item)
    if match is None:
        raise CertSourceError(_MALFORMED)
    return _b64decode(match[1], padded=False)


def _xfcc_elements(value: str) -> list[list[tuple[str, str]]]:
    """Envoy XFCC: ``,`` between elements, ``;`` between pairs, quoted values unescaped."""
    elements: list[list[tuple[str, str]]] = []
    pairs: list[tuple[str, str]] = []
    pos = 0
    while True:
        match = _XFCC_PAIR.match(value, pos)
        if match is None:
            raise CertSourceError("xfcc.malformed")
        raw = match[2]
        if raw.startswith('"'):
            raw = _XFCC_UNESCAPE.sub(r"\1", raw[1:-1])
        pairs.append((match[1].lower(), raw))
        pos = match.end()
        if pos == len(value):
            elements.append(pairs)
            return elements
        if value[pos] == ";":
            pos += 1
            continue
        separator = _COMMA.match(value, pos)
        if separator is None:
            raise CertSourceError("xfcc.malformed")
        elements.append(pairs)
        pairs = []
        pos = separator.end()


def _xfcc_fields(pairs: list[tuple[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in _XFCC_SINGLE:
            if key in fields:
                raise CertSourceError("xfcc.duplicate_key")
            fields[key] = value
    return fields


def from_xfcc(
    headers: Headers,
    *,
    name: str = "x-forwarded-client-cert",
    elements: int = 1,
    max_bytes: int = 65536,
) -> PresentedCertificate | None:
    """Envoy ``x-forwarded-client-cert``; ``elements`` is the count the proxies add (FWD-08..10)."""
    if elements < 1:
        raise ValueError("elements must be at least 1")
    lines = _lines(headers, name, max_bytes)
    if not lines:
        return None
    parsed = _xfcc_elements(",".join(lines).strip(" \t"))
    if len(parsed) != elements:
        raise CertSourceError("xfcc.element_count")
    first, *_ = [_xfcc_fields(pairs) for pairs in parsed]
    cert, chain, digest = first.get("cert"), first.get("chain"), first.get("hash")
    if digest is not None and _HEX_SHA256.fullmatch(digest) is None:
        raise CertSourceError("xfcc.malformed")
    if cert is None and chain is None:
        raise CertSourceError("xfcc.no_certificate")
    ders = _pem_blocks(_url_decode(cert), single=True) if cert is not None else []
    if chain is not None:
        chain_ders = _pem_blocks(_url_decode(chain))  # the chain includes the leaf
        if ders and chain_ders[0] != ders[0]:
            raise CertSourceError("xfcc.chain_mismatch")
        ders = chain_ders
    if digest is not None and bytes.fromhex(digest) != hashlib.sha256(ders[0]).digest():
        raise CertSourceError("xfcc.hash_mismatch")
    return _build(ders, "xfcc")


def from_nginx(
    headers: Headers,
    *,
    name: str = "x-ssl-client-cert",
    verify_name: str | None = None,
    max_bytes: int = 16384,
) -> PresentedCertificate | None:
    """nginx ``$ssl_client_escaped_cert``, and ``$ssl_client_verify`` when ``verify_name`` is set (FWD-11)."""
    value = _singleton(headers, name, max_bytes) or None  # nginx sends no field for an empty value
    if verify_name is not None:
        lines = _lines(headers, verify_name, max_bytes)  # FAILED:<reason> may contain a comma
        if len(lines) > 1:
            raise CertSourceError("client_cert.duplicate")
        verify = lines[0] if lines else None
        if verify is not None and verify.startswith("FAILED:"):
            raise CertSourceError("nginx.verify_failed")
        if verify not in (None, "NONE", "SUCCESS"):
            raise CertSourceError("nginx.verify_invalid")
        if (verify == "SUCCESS") != (value is not None):  # a certificate exactly when SUCCESS
            reasons = {None: "nginx.verify_missing", "NONE": "nginx.unexpected_certificate"}
            raise CertSourceError(reasons.get(verify, "nginx.missing_certificate"))
    return None if value is None else _build(_pem_blocks(_url_decode(value)), "nginx")


def from_aws_alb(
    headers: Headers, *, name: str = "x-amzn-mtls-clientcert", max_bytes: int = 16384
) -> PresentedCertificate | None:
    """AWS ALB mTLS: URL-encoded PEM (``+``, ``=``, ``/`` may be left as is), leaf then chain."""
    value = _singleton(headers, name, max_bytes) or None
    return None if value is None else _build(_pem_blocks(_url_decode(value)), "aws-alb")


def from_asgi_tls(extension: Mapping[str, Any] | None) -> PresentedCertificate | None:
    """ASGI TLS extension 0.2 ``client_cert_chain`` (PEM, leaf first); a ``client_cert_error`` is refused."""
    if extension is None:
        return None
    if not isinstance(extension, Mapping):
        raise CertSourceError(_MALFORMED)
    if extension.get("client_cert_error") is not None:
        raise CertSourceError("client_cert.verify_failed")
    chain = extension.get("client_cert_chain") or ()  # absent, None or empty: no certificate
    if isinstance(chain, (str, bytes, bytearray, Mapping)) or not isinstance(chain, Iterable):
        raise CertSourceError(_MALFORMED)
    pems = list(islice(chain, MAX_CHAIN + 2))
    if not pems:
        return None
    return _build([_pem_blocks(pem, single=True)[0] for pem in pems], "asgi-tls")


def from_wsgi_environ(environ: Mapping[str, Any]) -> PresentedCertificate | None:
    """mod_ssl ``SSL_CLIENT_CERT``, ``SSL_CLIENT_CERT_CHAIN_<n>`` (PEM); a FAILED verify is refused."""
    keys = [key for key in environ if isinstance(key, str) and _WSGI_CHAIN_KEY.fullmatch(key)]
    if not environ.get("SSL_CLIENT_CERT"):
        if keys:
            raise CertSourceError("client_cert.chain_without_certificate")
        return None
    verify = environ.get("SSL_CLIENT_VERIFY")
    if isinstance(verify, str) and verify.startswith("FAILED"):
        raise CertSourceError("client_cert.verify_failed")
    if len(keys) > MAX_CHAIN:
        raise CertSourceError(_TOO_LARGE)
    expected = [f"SSL_CLIENT_CERT_CHAIN_{n}" for n in range(len(keys))]
    if sorted(keys) != sorted(expected):  # numbered 0..n-1, no gaps, no leading zeros
        raise CertSourceError(_MALFORMED)
    pems = [environ["SSL_CLIENT_CERT"], *(environ[key] for key in expected)]
    return _build([_pem_blocks(pem, single=True)[0] for pem in pems], "wsgi-environ")
