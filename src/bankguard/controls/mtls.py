"""The client-certificate control: read the certificate, validate it, derive the TPP.

Trust model (RFC 9440 §4; STANDARDS FWD-01, FWD-02, MTLS-07): the certificate comes from
exactly one configured source, never a fallback from one to another. A header source is
believed only when the direct peer is in ``trusted_proxies``; from any other peer the
header is ignored (treated as no certificate) and the audit event notes it. A header that
is present but malformed is refused with 400 (FWD-03/04/09). Behind the source:

* binding: the presented certificate's ``x5t#S256`` is what certificate-bound tokens are
  compared with (RFC 8705 §3, in the token control); this needs no trust anchors;
* validation: with ``trust_anchors``, the chain is validated with
  ``cryptography.x509.verification`` (dates, clientAuth usage, CRLs) → 401
  ``certificate-invalid`` otherwise (EIDAS-01); results are cached by certificate hash;
* identity: with ``identity: eidas``, the TPP id (organizationIdentifier) and PSD2 roles
  (ETSI TS 119 495 QCStatement) → principal and audit event; an operation's ``roles`` are
  then required → 403 ``role-invalid`` (BG-04, RTS Art. 34).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any

from ..errors import (
    CertificateInvalid,
    CertificateRequired,
    ConfigurationError,
    HeaderFieldsTooLarge,
    MalformedClientCertificate,
    RoleInvalid,
)
from ..policy import Network, Policy
from ..request import RequestFacts
from . import State

_MAX_CACHED = 10_000


def _trusted(peer: str | None, networks: tuple[Network, ...]) -> bool:
    if peer is None:
        return False
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


class ClientCertCheck:
    name = "client_cert"

    def __init__(self, policy: Policy) -> None:
        from ..mtls import sources

        cfg = policy.client_cert
        self.mode = cfg.mode
        self.source = cfg.source
        self.required = cfg.required
        self.trusted = policy.trusted_proxies
        self.header = cfg.header_name
        self.from_header = self.source in ("rfc9440", "xfcc", "nginx", "aws-alb")
        limit = cfg.max_header_bytes
        parsers: dict[str, Callable[[Any], Any]] = {
            "rfc9440": lambda h: sources.from_rfc9440(
                h, name=self.header, chain_name=cfg.chain_header.lower(), max_bytes=limit
            ),
            "xfcc": lambda h: sources.from_xfcc(
                h, name=self.header, elements=cfg.xfcc_elements, max_bytes=limit
            ),
            "nginx": lambda h: sources.from_nginx(
                h,
                name=self.header,
                verify_name=cfg.verify_header.lower() if cfg.verify_header else None,
                max_bytes=limit,
            ),
            "aws-alb": lambda h: sources.from_aws_alb(h, name=self.header, max_bytes=limit),
            "asgi-tls": sources.from_asgi_tls,
            "wsgi-environ": sources.from_wsgi_environ,
        }
        self.parse = parsers.get(self.source)
        self.source_error: type[Exception] = sources.CertSourceError
        self.validator: Any = None
        self.crl_source: Any = None
        if cfg.trust_anchors:
            from ..mtls.validation import CertificateValidator

            try:
                self.validator = CertificateValidator.from_files(
                    cfg.trust_anchors, cfg.intermediates, tuple(cfg.crl_files)
                )
            except ValueError as exc:
                raise ConfigurationError(str(exc), path="client_cert.trust_anchors") from None
            if cfg.crl_urls:  # fetched in the background; file CRLs stay in force next to them
                from ..mtls.crl import CrlSource
                from ..mtls.validation import _load_crls

                file_crls = [crl for path in cfg.crl_files for crl in _load_crls(path)]
                validator = self.validator
                self.crl_source = CrlSource(
                    cfg.crl_urls,
                    lambda url_crls: validator.update_crls([*file_crls, *url_crls]),
                    refresh=cfg.crl_refresh,
                    allow_http=cfg.crl_insecure_http,
                )
        self.eidas = cfg.identity == "eidas"
        self.require_qwac = cfg.require_qwac
        # The same client sends the same certificate on every request: parsed certificates are
        # kept by the exact header value (bounded), identities by thumbprint. Validation keeps
        # its own cache, bounded by the certificates' validity.
        self._parsed: dict[tuple[tuple[str, ...], ...], Any] = {}
        self._records: dict[str, tuple[Any, int, float, str | None, frozenset[str], dict[int, Any]]] = {}
        self.chain_sensitive = self.source == "rfc9440"
        self.chain_header = cfg.chain_header.lower()
        self.verify_name = cfg.verify_header.lower() if cfg.verify_header and self.source == "nginx" else None
        self._peers: dict[str | None, bool] = {}
        self._validated: dict[str, tuple[int, float]] = {}
        self._identities: dict[str, tuple[str, frozenset[str]]] = {}
        self._cached = self._cached_path()

    def _cached_path(self) -> Callable[[RequestFacts, State], bool]:
        """The cached path, as a closure over what it reads (it runs on every request): this
        exact header value was fully checked before, from a trusted peer, and nothing that
        decided it (CRLs, the chain's validity, the proxy's verification) has changed."""
        records_get, peers_get = self._records.get, self._peers.get
        header, chain_header, verify_name = self.header, self.chain_header, self.verify_name
        chain_sensitive, validator, crl_source = self.chain_sensitive, self.validator, self.crl_source
        check_roles = self._check_roles

        def cached(facts: RequestFacts, state: State) -> bool:
            values = facts.headers.by_name.get(header)
            if values is None or len(values) != 1:
                return False
            record = records_get(values[0])
            if record is None or not peers_get(facts.peer):
                return False
            if chain_sensitive and chain_header in facts.headers:
                return False
            if verify_name is not None and facts.headers.only(verify_name) != "SUCCESS":
                return False
            presented, generation, until, tpp_id, roles, variants = record
            if validator is not None and (
                generation != validator.generation
                or until <= time.time()
                or (crl_source is not None and not crl_source.complete)
            ):
                return False
            state.certificate = presented
            state.variants = variants
            if tpp_id is not None:
                state.tpp_id = tpp_id
                state.roles = roles
            op = state.operation
            if op is not None and op.roles:
                check_roles(state)
            return True

        return cached

    def close(self) -> None:
        """Stop the CRL refresh thread, if any."""
        if self.crl_source is not None:
            self.crl_source.close()

    def _parse_cached(self, facts: RequestFacts) -> Any:
        headers = facts.headers
        # Each header's lines kept apart, so no two different requests share a key.
        key = (
            tuple(headers.get_all(self.header)),
            tuple(headers.get_all(self.chain_header)) if self.source == "rfc9440" else (),
            tuple(headers.get_all(self.verify_name)) if self.verify_name is not None else (),
        )
        found = self._parsed.get(key)
        if found is None and self.parse is not None:
            found = self.parse(headers)  # CertSourceError propagates; failures are not cached
            if found is not None:
                if len(self._parsed) >= _MAX_CACHED:
                    self._parsed.pop(next(iter(self._parsed)), None)
                self._parsed[key] = found
        return found

    def _identity(self, presented: Any) -> tuple[str, frozenset[str]]:
        found = self._identities.get(presented.thumbprint)
        if found is None:
            from ..mtls.eidas import IdentityRejected, psd2_identity

            try:
                identity = psd2_identity(presented.certificate, require_qwac=self.require_qwac)
            except IdentityRejected as exc:
                raise CertificateInvalid(exc.reason) from None
            found = (identity.tpp_id, identity.roles)
            if len(self._identities) >= _MAX_CACHED:
                self._identities.pop(next(iter(self._identities)), None)
            self._identities[presented.thumbprint] = found
        return found

    def _peer_trusted(self, peer: str | None) -> bool:
        found = self._peers.get(peer)
        if found is None:
            found = _trusted(peer, self.trusted)
            if len(self._peers) >= _MAX_CACHED:
                self._peers.clear()
            self._peers[peer] = found
        return found

    def _validate(self, presented: Any) -> None:
        """Chain validation, remembered by thumbprint until the chain expires or the CRLs change."""
        validator = self.validator
        hit = self._validated.get(presented.thumbprint)
        if hit is not None and hit[0] == validator.generation and hit[1] > time.time():
            return
        generation = validator.generation
        chain = validator.validate(presented.certificate, presented.chain)
        if len(self._validated) >= _MAX_CACHED:
            self._validated.pop(next(iter(self._validated)), None)
        self._validated[presented.thumbprint] = (generation, min(chain.valid_until, chain.recheck_at))

    def run(self, facts: RequestFacts, state: State) -> None:
        if self.parse is None:
            return None
        if self.from_header and self._cached(facts, state):
            return None
        presented = None
        try:
            if self.from_header:
                if self.header in facts.headers or (
                    self.source == "rfc9440" and self.chain_header in facts.headers
                ):
                    if self._peer_trusted(facts.peer):
                        presented = self._parse_cached(facts)
                    else:
                        state.notes.append("client_cert.untrusted_header_ignored")
            elif facts.transport is not None:
                presented = self.parse(facts.transport)
        except self.source_error as exc:
            reason = getattr(exc, "reason", "client_cert.malformed")
            if reason == "client_cert.too_large":
                raise HeaderFieldsTooLarge(reason) from None  # FWD-13: 431
            raise MalformedClientCertificate(reason) from None
        state.certificate = presented
        op = state.operation
        needs_certificate = op is not None and not op.public and (self.required or bool(op.roles))
        if presented is None:
            if needs_certificate:
                raise CertificateRequired("client_cert.missing")
            return None
        if self.validator is not None:
            from ..mtls.validation import CertificateRejected

            try:
                if self.crl_source is not None and not self.crl_source.complete:
                    raise CertificateRejected("certificate.crl_unavailable", "a CRL URL was never fetched")
                self._validate(presented)
            except CertificateRejected as exc:
                raise CertificateInvalid(exc.reason) from None
        if self.eidas:
            tpp_id, roles = self._identity(presented)
            state.tpp_id = tpp_id
            state.roles = roles  # the token control, or the guard for tokenless requests, adds them
        self._check_roles(state)
        if self.from_header:
            value = facts.headers.only(self.header)
            verified = self.verify_name is None or facts.headers.only(self.verify_name) == "SUCCESS"
            if value is not None and verified and self.chain_header not in facts.headers:
                self._remember(value, presented, state)
        return None

    @staticmethod
    def _check_roles(state: State) -> None:
        op = state.operation
        if op is not None and op.roles:
            missing = [r for r in op.roles if r not in state.roles]
            if missing:
                raise RoleInvalid("client_cert.role_missing", required=missing)

    def _remember(self, value: str, presented: Any, state: State) -> None:
        """Keep what a fully checked header value established, for the next identical request."""
        if self.validator is None:
            generation, until = 0, float("inf")
        else:
            hit = self._validated.get(presented.thumbprint)
            if hit is None:
                return
            generation, until = hit
        if len(self._records) >= _MAX_CACHED:
            self._records.pop(next(iter(self._records)), None)
        self._records[value] = (presented, generation, until, state.tpp_id, state.roles, {})
