"""PSD2 identity of a TPP from its eIDAS certificate (RTS Art. 34, ETSI TS 119 495).

Call it only on a certificate that :mod:`bankguard.mtls.validation` accepted: the
statements below are trusted because the QTSP signed them (EIDAS-01).

* EIDAS-02 (RFC 3739 §3.2.6, TS 119 495 §5.1): the QCStatements extension (OID
  1.3.6.1.5.5.7.1.3) must hold the PSD2 statement (OID 0.4.0.19495.2)::

      PSD2QcType ::= SEQUENCE { rolesOfPSP RolesOfPSP, nCAName UTF8String, nCAId UTF8String }
      RolesOfPSP ::= SEQUENCE OF SEQUENCE { roleOfPspOid OID, roleOfPspName UTF8String }

  ``cryptography`` leaves the extension unparsed, so a small strict DER reader decodes it:
  definite lengths in minimal form only, every length checked against its enclosing
  element, nesting depth and input size bounded, no trailing bytes.
* EIDAS-03 (TS 119 495 §5.1-5.2): authorisation follows the role OID; each role name must be
  the name of its OID; unknown OIDs (such as ``.1.0``, "unspecified") grant nothing; an
  empty RolesOfPSP is refused. Only unknown roles gives an identity with no roles (BG-04
  then answers ``ROLE_INVALID``).
* EIDAS-04 (EN 319 412-1 §5.1.4): subject ``organizationIdentifier`` (OID 2.5.4.97) is
  ``PSD`` + country + ``-`` + NCA (2-8 A-Z) + ``-`` + authorisation number; its country-NCA
  part must equal ``nCAId``. The full string is the TPP key (EIDAS-06).
* EIDAS-05 (EN 319 412-5): ``require_qwac=True`` also requires QcType web (0.4.0.1862.1.6.3),
  so a QSealC (QcType eseal) is not accepted as a TLS client certificate.
* BG-05: every refusal is an :class:`IdentityRejected` (``CERTIFICATE_INVALID``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["PSD2_ROLES", "IdentityRejected", "PSD2Identity", "psd2_identity"]

PSD2_ROLES = {
    "0.4.0.19495.1.1": "PSP_AS",
    "0.4.0.19495.1.2": "PSP_PI",
    "0.4.0.19495.1.3": "PSP_AI",
    "0.4.0.19495.1.4": "PSP_IC",
}
QC_STATEMENTS = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.3")
PSD2_STATEMENT = "0.4.0.19495.2"
QC_TYPE_STATEMENT = "0.4.0.1862.1.6"
QC_TYPE_WEB = "0.4.0.1862.1.6.3"

_ORG_ID = re.compile(r"PSD([A-Z]{2})-([A-Z]{2,8})-([A-Za-z0-9./-]{1,200})")
_MAX_INPUT = 16384
_MAX_DEPTH = 8
_MAX_OID_BYTES = 64
_SEQUENCE, _OID, _UTF8 = 0x30, 0x06, 0x0C


class IdentityRejected(Exception):
    """No PSD2 identity can be taken from the certificate; ``reason`` says why (``eidas.*``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PSD2Identity:
    """The TPP named by a PSD2 certificate; ``roles`` holds names from :data:`PSD2_ROLES`."""

    tpp_id: str
    country: str
    nca_id: str
    nca_name: str
    authorisation_number: str
    roles: frozenset[str]


class _Malformed(Exception):
    pass


class _Der:
    """Reader over the content of one DER element; children are read in order."""

    __slots__ = ("_data", "_depth", "_pos")

    def __init__(self, data: bytes, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            raise _Malformed("nesting too deep")
        self._data, self._pos, self._depth = data, 0, depth

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def _byte(self) -> int:
        if self._pos >= len(self._data):
            raise _Malformed("truncated")
        self._pos += 1
        return self._data[self._pos - 1]

    def element(self) -> tuple[int, bytes]:
        """The next element's tag (identifier octets as one integer) and content."""
        tag = first = self._byte()
        if first & 0x1F == 0x1F:  # high tag number form (X.690 §8.1.2.4), at most 3 more octets
            for count in range(4):
                if count == 3:
                    raise _Malformed("tag number too large")
                octet = self._byte()
                if count == 0 and octet in (0x80, *range(0x00, 0x1F)):
                    raise _Malformed("non-minimal tag")
                tag = tag << 8 | octet
                if not octet & 0x80:
                    break
        size = self._byte()
        if size == 0x80:
            raise _Malformed("indefinite length")
        if size > 0x80:
            count = size & 0x7F
            if count > 3:
                raise _Malformed("length too large")
            size = int.from_bytes(bytes(self._byte() for _ in range(count)), "big")
            if size < 0x80 or size >> (8 * (count - 1)) == 0:
                raise _Malformed("non-minimal length")
        if size > len(self._data) - self._pos:
            raise _Malformed("length beyond the enclosing element")
        self._pos += size
        return tag, self._data[self._pos - size : self._pos]

    def expect(self, tag: int) -> bytes:
        found, content = self.element()
        if found != tag:
            raise _Malformed(f"expected tag {tag:#x}, found {found:#x}")
        return content

    def sequence(self) -> _Der:
        return _Der(self.expect(_SEQUENCE), self._depth + 1)

    def oid(self) -> str:
        content = self.expect(_OID)
        if not 0 < len(content) <= _MAX_OID_BYTES or content[-1] & 0x80:
            raise _Malformed("bad object identifier")
        arcs: list[int] = []
        value, start = 0, True
        for octet in content:
            if start and octet == 0x80:
                raise _Malformed("non-minimal object identifier")
            value, start = value << 7 | (octet & 0x7F), not octet & 0x80
            if start:
                arcs.append(value)
                value = 0
        first = min(arcs[0] // 40, 2)
        return ".".join(map(str, (first, arcs[0] - 40 * first, *arcs[1:])))

    def utf8(self) -> str:
        try:
            text = self.expect(_UTF8).decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed("invalid UTF-8") from None
        if not 1 <= len(text) <= 256:
            raise _Malformed("string size outside 1..256")
        return text

    def end(self) -> None:
        if not self.at_end():
            raise _Malformed("unexpected trailing data")


def _statements(value: bytes) -> dict[str, tuple[int, bytes] | None]:
    """QCStatements ::= SEQUENCE OF SEQUENCE { statementId OID, statementInfo ANY OPTIONAL }.

    Maps each statement id to the tag and content of its info. Repeating the PSD2 or QcType statement
    is refused as ambiguous.
    """
    if len(value) > _MAX_INPUT:
        raise _Malformed("extension too large")
    outer = _Der(value)
    seq = outer.sequence()
    outer.end()
    found: dict[str, tuple[int, bytes] | None] = {}
    while not seq.at_end():
        statement = seq.sequence()
        oid = statement.oid()
        info = None if statement.at_end() else statement.element()
        statement.end()
        if oid in found and oid in (PSD2_STATEMENT, QC_TYPE_STATEMENT):
            raise _Malformed(f"statement {oid} repeated")
        found[oid] = info
    return found


def _sequence_of(info: tuple[int, bytes] | None) -> _Der:
    """Reader over the content of a statementInfo that must be a SEQUENCE."""
    if info is None or info[0] != _SEQUENCE:
        raise _Malformed("statement info is not a SEQUENCE")
    return _Der(info[1], 2)


def _organization_identifier(cert: x509.Certificate) -> re.Match[str]:
    try:
        values = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)]
    except (ValueError, UserWarning):  # UserWarning: odd lengths, when warnings are errors
        raise IdentityRejected("eidas.organization_identifier_invalid", "unparseable subject") from None
    if not values:
        raise IdentityRejected("eidas.no_organization_identifier")
    match = _ORG_ID.fullmatch(values[0]) if len(values) == 1 and isinstance(values[0], str) else None
    if match is None:
        raise IdentityRejected("eidas.organization_identifier_invalid", "not PSDXX-NCA-number")
    return match


def psd2_identity(cert: x509.Certificate, *, require_qwac: bool = False) -> PSD2Identity:
    """The PSD2 identity in ``cert`` (EIDAS-02..05), or :class:`IdentityRejected`.

    ``cert`` must already be validated; this function checks content, not trust.
    """
    org = _organization_identifier(cert)
    try:
        raw = cert.extensions.get_extension_for_oid(QC_STATEMENTS).value.public_bytes()
    except x509.ExtensionNotFound:
        raise IdentityRejected("eidas.no_psd2_statement", "no QCStatements extension") from None
    except (ValueError, x509.DuplicateExtension, NotImplementedError) as exc:
        raise IdentityRejected("eidas.malformed_qc_statements", str(exc)) from None
    try:
        statements = _statements(raw)
        if PSD2_STATEMENT not in statements:
            raise IdentityRejected("eidas.no_psd2_statement")
        psd2 = _sequence_of(statements[PSD2_STATEMENT])
        roles_seq = psd2.sequence()
        declared: list[tuple[str, str]] = []
        while not roles_seq.at_end():
            role = roles_seq.sequence()
            declared.append((role.oid(), role.utf8()))
            role.end()
        nca_name, nca_id = psd2.utf8(), psd2.utf8()
        psd2.end()
        qc_types: set[str] = set()
        if QC_TYPE_STATEMENT in statements:
            types = _sequence_of(statements[QC_TYPE_STATEMENT])
            while not types.at_end():
                qc_types.add(types.oid())
    except _Malformed as exc:
        raise IdentityRejected("eidas.malformed_qc_statements", str(exc)) from None
    if not declared:
        raise IdentityRejected("eidas.roles_empty")
    for oid, name in declared:
        if oid in PSD2_ROLES and PSD2_ROLES[oid] != name:
            raise IdentityRejected("eidas.role_name_mismatch", f"{oid} is {PSD2_ROLES[oid]}")
    country, nca, number = org.groups()
    if nca_id != f"{country}-{nca}":
        raise IdentityRejected("eidas.nca_mismatch", "organizationIdentifier disagrees with nCAId")
    if require_qwac and QC_TYPE_WEB not in qc_types:
        raise IdentityRejected("eidas.not_a_qwac", "QcType web missing")
    return PSD2Identity(
        tpp_id=org.group(0),
        country=country,
        nca_id=nca_id,
        nca_name=nca_name,
        authorisation_number=number,
        roles=frozenset(PSD2_ROLES[oid] for oid, _ in declared if oid in PSD2_ROLES),
    )
