"""Client certificate path validation for certificates used as an *identity* (eIDAS QWACs).

RFC 8705 §6.2 (MTLS-07): proof-of-possession binding needs no chain validation; this module is
the other code path, used only when the certificate identifies the TPP (RTS Art. 34, §6c).

* MTLS-10 (RFC 8705 §7.5): chain building and path validation are done by
  ``cryptography.x509.verification`` (RFC 5280 / web-PKI profile), never by hand.
* MTLS-09 (RFC 8705 §2.1, §7.4): only the configured anchors are trusted, so a certificate
  with the same subject DN from any other CA fails. Anchors must be CA certificates.
* EIDAS-01 (RTS Art. 34(1)): validity at the injected clock's time, the ``clientAuth`` EKU
  on the leaf, revocation through configured CRLs (RFC 5280 §6.3), fail closed when stale.
* BG-05: each failure has its own ``reason`` (``certificate.expired`` → ``CERTIFICATE_EXPIRED``,
  ``certificate.revoked`` → ``CERTIFICATE_REVOKED``, the rest → ``CERTIFICATE_INVALID``).

The ``cryptography`` client verifier (≥ 45) applies the web-PKI end-entity profile: it requires
a subjectAltName and accepts a leaf *without* any EKU. QWACs may have no SAN, so the end-entity
policy here makes the SAN optional and the EKU mandatory with ``clientAuth`` in it. Unknown
critical extensions are still refused.

Results are cached by SHA-256 over the DER of the leaf and the presented chain: successes
until the earliest ``notAfter`` in the chain or the next CRL update, refusals for 60 s.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

__all__ = ["CertificateRejected", "CertificateValidator", "ValidatedChain"]

REASONS = frozenset(
    "certificate." + name
    for name in ("expired", "not_yet_valid", "untrusted", "revoked", "not_for_client_auth", "invalid")
) | {"certificate.crl_unavailable"}
REJECTION_TTL = 60.0
MAX_PRESENTED_CHAIN = 8
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)

_Revocation = Mapping[bytes, tuple[x509.CertificateRevocationList, ...]]  # by issuer fingerprint


class CertificateRejected(Exception):
    """The certificate is not accepted as an identity; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ValidatedChain:
    """A leaf that chains to a configured anchor; ``chain`` runs from the leaf to the anchor."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    valid_until: float
    """Earliest ``notAfter`` in the chain, epoch seconds."""
    recheck_at: float = float("inf")
    """When the result must be computed again: ``valid_until`` or the next CRL update used."""


def _require_client_auth(policy: Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage) -> None:
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise ValueError("the extended key usage does not include clientAuth")


_EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .require_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_client_auth)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _timestamp(value: dt.datetime | None) -> float:
    return float("inf") if value is None else value.timestamp()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def _may_sign_crls(ca: x509.Certificate, crl: x509.CertificateRevocationList) -> bool:
    try:
        if not ca.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign:
            return False
    except x509.ExtensionNotFound:
        pass
    try:
        return ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _revocation(
    crls: Sequence[x509.CertificateRevocationList], cas: Sequence[x509.Certificate]
) -> _Revocation:
    """Index CRLs by the configured CA whose key verifies them; refuse any CRL that none does."""
    by_issuer: dict[bytes, tuple[x509.CertificateRevocationList, ...]] = {}
    for crl in crls:
        where = crl.issuer.rfc4514_string()
        if crl.next_update_utc is None:
            raise ValueError(f"the CRL from {where!r} has no nextUpdate (RFC 5280 §5.1.2.5)")
        for ext in crl.extensions:
            idp = ext.value
            if isinstance(idp, x509.DeltaCRLIndicator) or (
                isinstance(idp, x509.IssuingDistributionPoint)
                and (idp.indirect_crl or idp.only_some_reasons or idp.only_contains_attribute_certs)
            ):
                raise ValueError(f"the CRL from {where!r} is a delta, indirect or partial CRL")
        issuers = [_fingerprint(ca) for ca in cas if _may_sign_crls(ca, crl)]
        if not issuers:
            raise ValueError(f"the CRL from {where!r} does not verify with any configured CA certificate")
        for issuer in issuers:
            by_issuer[issuer] = (*by_issuer.get(issuer, ()), crl)
    return by_issuer


class CertificateValidator:
    """Validates client certificates against a fixed set of trust anchors (MTLS-09, EIDAS-01).

    ``intermediates`` are offered to the chain builder together with the chain the client
    presented. A CRL must verify with a configured CA certificate's key, else :class:`ValueError`.
    """

    def __init__(
        self,
        *,
        anchors: Sequence[x509.Certificate],
        intermediates: Sequence[x509.Certificate] = (),
        crls: Sequence[x509.CertificateRevocationList] = (),
        clock: Callable[[], float] = time.time,
        max_entries: int = 10000,
    ) -> None:
        if not anchors:
            raise ValueError("at least one trust anchor is required")
        for anchor in anchors:
            if not _is_ca(anchor):
                name = anchor.subject.rfc4514_string()
                raise ValueError(f"trust anchor {name!r} is not a CA certificate (basicConstraints cA)")
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self._anchors, self._intermediates = tuple(anchors), tuple(intermediates)
        self._store = Store(list(self._anchors))
        self._clock = clock
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._cache: dict[bytes, tuple[float, ValidatedChain | tuple[str, str]]] = {}
        #: Changes whenever the CRLs change; results remembered elsewhere must be dropped then.
        self.generation = 0
        self._revocation = _revocation(crls, (*self._anchors, *self._intermediates))

    @classmethod
    def from_files(
        cls,
        anchors_file: str,
        intermediates_file: str | None = None,
        crl_files: Sequence[str] = (),
        **kw: Any,
    ) -> CertificateValidator:
        """Load PEM certificate bundles and PEM or DER CRLs; :class:`ValueError` names a bad file."""
        anchors = _load_certs(anchors_file, "trust anchors")
        intermediates = _load_certs(intermediates_file, "intermediates") if intermediates_file else []
        crls = [crl for path in crl_files for crl in _load_crls(path)]
        return cls(anchors=anchors, intermediates=intermediates, crls=crls, **kw)

    def __len__(self) -> int:
        return len(self._cache)

    def update_crls(self, crls: Sequence[x509.CertificateRevocationList]) -> None:
        """Replace every CRL at once (all are checked first) and forget cached results."""
        revocation = _revocation(crls, (*self._anchors, *self._intermediates))
        with self._lock:
            self._revocation = revocation
            self.generation += 1
            self._cache.clear()

    def validate(
        self, leaf: x509.Certificate, presented_chain: Sequence[x509.Certificate] = ()
    ) -> ValidatedChain:
        """The validated chain of ``leaf``, or :class:`CertificateRejected`."""
        now = self._clock()
        digest = hashlib.sha256(leaf.public_bytes(Encoding.DER))
        for cert in presented_chain:
            digest.update(cert.public_bytes(Encoding.DER))
        key = digest.digest()
        with self._lock:
            found = self._cache.get(key)
            generation, revocation = self.generation, self._revocation
        if found is not None and now < found[0]:
            if isinstance(found[1], ValidatedChain):
                return found[1]
            raise CertificateRejected(*found[1])
        try:
            validated, expires = self._validate(leaf, presented_chain, now, revocation)
        except CertificateRejected as exc:
            self._remember(key, generation, now + REJECTION_TTL, (exc.reason, exc.detail))
            raise
        self._remember(key, generation, expires, validated)
        return validated

    def _remember(
        self, key: bytes, generation: int, expires: float, result: ValidatedChain | tuple[str, str]
    ) -> None:
        if not self.max_entries:
            return
        with self._lock:
            if generation != self.generation:
                return  # CRLs changed while validating: do not cache a verdict from the old ones
            self._cache.pop(key, None)
            while len(self._cache) >= self.max_entries:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = (expires, result)

    def _validate(
        self,
        leaf: x509.Certificate,
        presented: Sequence[x509.Certificate],
        now: float,
        revocation: _Revocation,
    ) -> tuple[ValidatedChain, float]:
        if len(presented) > MAX_PRESENTED_CHAIN:
            raise CertificateRejected("certificate.invalid", "presented chain too long")
        _check_dates(leaf, now, "certificate")
        _check_leaf(leaf)
        pool = [*self._intermediates, *presented]
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(dt.datetime.fromtimestamp(now, tz=dt.timezone.utc))
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier()
        )
        try:
            chain = tuple(verifier.verify(leaf, pool).chain)
        except VerificationError as exc:
            _diagnose_dates(leaf, [*pool, *self._anchors], now)
            raise CertificateRejected("certificate.untrusted", str(exc)) from None
        valid_until = min(_timestamp(cert.not_valid_after_utc) for cert in chain)
        expires = min(valid_until, _check_revocation(chain, revocation, now))
        return ValidatedChain(leaf=leaf, chain=chain, valid_until=valid_until, recheck_at=expires), expires


def _check_revocation(chain: Sequence[x509.Certificate], revocation: _Revocation, now: float) -> float:
    """RFC 5280 §6.3 against the configured CRLs; returns the earliest next update that was used."""
    next_update = float("inf")
    for subject, issuer in itertools.pairwise(chain):
        crls = revocation.get(_fingerprint(issuer), ())
        serial = subject.serial_number
        if any(crl.get_revoked_certificate_by_serial_number(serial) is not None for crl in crls):
            raise CertificateRejected("certificate.revoked", f"serial {serial:#x}")
        fresh = [t for t in (_timestamp(crl.next_update_utc) for crl in crls) if now <= t]
        if crls and not fresh:
            raise CertificateRejected("certificate.crl_unavailable", issuer.subject.rfc4514_string())
        next_update = min([next_update, *fresh])
    return next_update


def _check_dates(cert: x509.Certificate, now: float, what: str) -> None:
    if now < cert.not_valid_before_utc.timestamp():
        raise CertificateRejected("certificate.not_yet_valid", what)
    if now > cert.not_valid_after_utc.timestamp():
        raise CertificateRejected("certificate.expired", what)


def _check_leaf(leaf: x509.Certificate) -> None:
    """Precise reasons for leaf problems the verifier would report only as a failed path."""
    try:
        extensions = leaf.extensions
    except (ValueError, x509.DuplicateExtension) as exc:
        raise CertificateRejected("certificate.invalid", f"unparseable extensions: {exc}") from None
    for ext in extensions:
        if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
            raise CertificateRejected("certificate.invalid", "a CA certificate is not a client certificate")
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise CertificateRejected(
                "certificate.invalid", f"unknown critical extension {ext.oid.dotted_string}"
            )
    try:
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateRejected("certificate.not_for_client_auth", "no extended key usage") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise CertificateRejected("certificate.not_for_client_auth", "no clientAuth extended key usage")


def _diagnose_dates(leaf: x509.Certificate, pool: Sequence[x509.Certificate], now: float) -> None:
    """After a failed path: report an issuer outside its validity period precisely.

    This only refines the reason for a refusal the verifier already decided; it trusts nothing.
    Names that ``cryptography`` cannot read (or warns about) end the search.
    """
    current = leaf
    try:
        for _ in range(MAX_PRESENTED_CHAIN):
            issuer = next((c for c in pool if c.subject == current.issuer and _issued(current, c)), None)
            if issuer is None or issuer is current:
                return
            _check_dates(issuer, now, f"issuer {issuer.subject.rfc4514_string()}")
            current = issuer
    except (ValueError, UserWarning):
        return


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {path!r}: {exc.strerror or exc}") from None


def _load_certs(path: str, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"the {what} file {path!r} is not a PEM certificate bundle") from None


def _load_crls(path: str) -> list[x509.CertificateRevocationList]:
    data = _read(path, "CRL")
    blocks = _PEM_CRL.findall(data) if b"-----BEGIN" in data else None
    try:
        if blocks is None:
            return [x509.load_der_x509_crl(data)]
        if blocks:
            return [x509.load_pem_x509_crl(block) for block in blocks]
    except ValueError:
        pass
    raise ValueError(f"the CRL file {path!r} is not a PEM or DER CRL")
