"""Policy section for client certificates: where they come from and what they prove.

Forwarded certificate headers are believed only from ``trusted_proxies`` (RFC 9440 §4,
FWD-01/02): a header source without trusted proxies is refused at load time (CFG-04).
Two uses are kept apart (RFC 8705 §6.2, MTLS-07): the *binding* of certificate-bound
tokens compares thumbprints and needs no trust anchors; the *identity* of a TPP (eIDAS
QWAC roles) needs the chain validated against ``trust_anchors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._config import Section, option, parse_duration, parse_file, parse_size, parse_url
from .errors import ConfigProblem, ConfigurationError

CertSource = Literal["none", "asgi-tls", "wsgi-environ", "rfc9440", "xfcc", "nginx", "aws-alb"]
HEADER_SOURCES = frozenset({"rfc9440", "xfcc", "nginx", "aws-alb"})
DEFAULT_HEADERS = {
    "rfc9440": "client-cert",
    "xfcc": "x-forwarded-client-cert",
    "nginx": "x-ssl-client-cert",
    "aws-alb": "x-amzn-mtls-clientcert",
}
PSD2_ROLE_NAMES = frozenset({"PSP_AS", "PSP_PI", "PSP_AI", "PSP_IC"})


def _files(value: object, path: str) -> tuple[str, ...]:
    from ._config import Invalid

    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid(path, "expected a list of file names")
    return tuple(parse_file(v, f"{path}[{i}]") for i, v in enumerate(value))


def _urls(value: object, path: str) -> tuple[str, ...]:
    from ._config import Invalid

    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid(path, "expected a list of URLs")
    return tuple(parse_url(v, f"{path}[{i}]") for i, v in enumerate(value))


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientCertPolicy(Section):
    """Where the client certificate comes from, how it is validated, what identity it gives."""

    mode: Literal["enforce", "report"] = "enforce"
    #: ``none``; the server's own TLS (``asgi-tls``: the ASGI TLS extension; ``wsgi-environ``:
    #: ``SSL_CLIENT_CERT``); or a header set by a TLS-terminating proxy: ``rfc9440``
    #: (``Client-Cert``), ``xfcc`` (Envoy), ``nginx`` (``$ssl_client_escaped_cert``), ``aws-alb``.
    source: CertSource = "none"
    #: Header name for header sources; default per source (``client-cert``,
    #: ``x-forwarded-client-cert``, ``x-ssl-client-cert``, ``x-amzn-mtls-clientcert``).
    header: str | None = None
    #: ``rfc9440`` only: the ``Client-Cert-Chain`` header name.
    chain_header: str = "client-cert-chain"
    #: ``nginx`` only: header carrying ``$ssl_client_verify``; when set, only ``SUCCESS`` is accepted.
    verify_header: str | None = None
    #: ``xfcc`` only: how many elements the header must have (one per proxy hop; FWD-08).
    xfcc_elements: int = 1
    #: Size cap of a certificate header (FWD-13); beyond it the request is refused.
    max_header_bytes: int = option(16 * 1024, parse=parse_size)
    #: PEM bundle of the CAs trusted for client identity (e.g. QWAC issuing CAs). Without it no
    #: chain is validated and no identity is derived; token binding still works (MTLS-07).
    trust_anchors: str | None = option(None, parse=parse_file)
    #: PEM bundle of intermediate CAs to build chains with.
    intermediates: str | None = option(None, parse=parse_file)
    #: CRL files (PEM or DER) checked for revocation; a CRL past its nextUpdate fails closed.
    crl_files: tuple[str, ...] = option((), parse=_files)
    #: CRL URLs fetched in the background (never on the request path) and refreshed every
    #: ``crl_refresh`` and before their nextUpdate; until every URL has delivered a CRL, every
    #: certificate is refused (``certificate.crl_unavailable``).
    crl_urls: tuple[str, ...] = option((), parse=_urls)
    crl_refresh: float = option(3600.0, parse=parse_duration)
    #: Allow ``http://`` CRL URLs (CRLs are signed, and are commonly published over http).
    crl_insecure_http: bool = True
    #: ``eidas``: read the TPP id (organizationIdentifier) and PSD2 roles (ETSI TS 119 495).
    identity: Literal["none", "eidas"] = "none"
    #: With ``identity: eidas``, also require the QWAC QcType (web) (EIDAS-05).
    require_qwac: bool = False
    #: Require a (valid, when anchors are set) certificate for every non-public operation.
    required: bool = False
    #: Token claim whose value must equal the certificate's TPP id (EIDAS-06), e.g. ``client_id``.
    token_tpp_claim: str | None = None

    def _check(self) -> None:
        problems = []
        if self.source not in HEADER_SOURCES and self.header is not None:
            problems.append(
                ConfigProblem("header", f"only header sources use a header name, not {self.source}")
            )
        if self.verify_header is not None and self.source != "nginx":
            problems.append(ConfigProblem("verify_header", "only the nginx source has a verify header"))
        if self.crl_refresh <= 0:
            problems.append(ConfigProblem("crl_refresh", "must be more than 0 seconds"))
        for i, url in enumerate(self.crl_urls):
            if url.startswith("http://") and not self.crl_insecure_http:
                problems.append(ConfigProblem(f"crl_urls[{i}]", "is http:// but crl_insecure_http is false"))
        if self.xfcc_elements < 1:
            problems.append(ConfigProblem("xfcc_elements", "must be at least 1"))
        if self.identity == "eidas" and not self.trust_anchors:
            problems.append(
                ConfigProblem("identity", "an eIDAS identity needs trust_anchors (a validated chain)")
            )
        if (self.intermediates or self.crl_files or self.crl_urls) and not self.trust_anchors:
            problems.append(ConfigProblem("trust_anchors", "intermediates and CRLs need trust_anchors"))
        if self.require_qwac and self.identity != "eidas":
            problems.append(ConfigProblem("require_qwac", "needs identity: eidas"))
        if self.token_tpp_claim is not None and self.identity != "eidas":
            problems.append(ConfigProblem("token_tpp_claim", "needs identity: eidas"))
        if (self.required or self.identity != "none") and self.source == "none":
            problems.append(ConfigProblem("source", "name where the client certificate comes from"))
        if problems:
            raise ConfigurationError(problems)

    @property
    def header_name(self) -> str:
        return (self.header or DEFAULT_HEADERS.get(self.source, "")).lower()
