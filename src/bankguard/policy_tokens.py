"""Policy sections for access tokens: issuers, their keys, introspection.

Secure by default (RFC 8725 §3.1, RFC 9068 §4, FAPI 2.0 §5.4): every issuer names its
algorithms (no default, never ``none``); asymmetric and symmetric algorithms never
share an issuer; a symmetric key lives in an environment variable, never in the file;
key URLs are HTTPS unless ``insecure_http`` is set (for tests; warned at load).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Literal

from ._config import Invalid, Section, option, parse_duration, parse_file, parse_size, parse_url
from .errors import ConfigProblem, ConfigurationError

log = logging.getLogger("bankguard")

ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
SYMMETRIC = frozenset({"HS256", "HS384", "HS512"})
#: RFC 9068 §2.2: the claims every JWT access token carries.
RFC9068_CLAIMS = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")
#: Algorithms each profile allows (FAPI 2.0 §5.4.1; FAPI 1.0 Advanced §8.6; STANDARDS §10 C1).
PROFILE_ALGORITHMS: dict[str, frozenset[str]] = {
    "generic": ASYMMETRIC | SYMMETRIC,
    "fapi2": frozenset({"PS256", "ES256", "EdDSA"}),
    "fapi1-adv": frozenset({"PS256", "ES256"}),
    "obie": frozenset({"PS256", "ES256"}),
    "nextgenpsd2": ASYMMETRIC,
}


def _parse_algorithms(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise Invalid(path, "expected a non-empty list of JWS algorithms, e.g. [PS256, ES256]")
    out = []
    for i, alg in enumerate(value):
        if not isinstance(alg, str) or alg not in ASYMMETRIC | SYMMETRIC:
            allowed = ", ".join(sorted(ASYMMETRIC | SYMMETRIC))
            raise Invalid(f"{path}[{i}]", f"{alg!r} is not a supported algorithm; use one of {allowed}")
        out.append(alg)
    return tuple(out)


@dataclass(frozen=True, kw_only=True, slots=True)
class JwksRefreshPolicy(Section):
    """How remote key sets are fetched and kept (JWKS-02, JWKS-04, JWKS-05)."""

    #: Lower bound of the refresh interval, whatever ``Cache-Control: max-age`` says.
    min_ttl: float = option(300.0, parse=parse_duration)
    #: Upper bound of the refresh interval; also the interval when the server gives none.
    max_ttl: float = option(3600.0, parse=parse_duration)
    #: Least time between two refetches forced by an unknown ``kid`` (single-flight).
    cooldown: float = option(30.0, parse=parse_duration)
    #: How long the last good key set keeps verifying while refreshes fail; then fail closed.
    max_stale: float = option(86400.0, parse=parse_duration)
    #: Time limit of one fetch (connect + read).
    timeout: float = option(5.0, parse=parse_duration)
    #: Size cap of a key set or metadata document.
    max_bytes: int = option(256 * 1024, parse=parse_size)

    def _check(self) -> None:
        if self.min_ttl > self.max_ttl:
            raise ConfigurationError("must not exceed max_ttl", path="min_ttl")
        if not 0 < self.timeout <= 30:
            raise ConfigurationError("must be between 0 and 30 seconds", path="timeout")


@dataclass(frozen=True, kw_only=True, slots=True)
class IssuerPolicy(Section):
    """One trusted authorization server and where its keys come from."""

    #: The issuer identifier; a token's ``iss`` must equal it exactly (RFC 9068 §4).
    issuer: str
    #: Audience values that identify this resource server; ``aud`` must contain one (RFC 9068 §4).
    audiences: tuple[str, ...]
    #: JWS algorithms accepted from this issuer (RFC 8725 §3.1). Never taken from the token.
    algorithms: tuple[str, ...] = option(parse=_parse_algorithms)
    #: Key source, exactly one of: ``jwks_uri``, ``discovery`` (RFC 8414 / OIDC metadata URL),
    #: ``jwks_file`` (path, relative to the policy file), ``jwks`` (an inline JWK Set),
    #: or ``hmac_secret_env`` (an environment variable holding a shared secret, HS* only).
    jwks_uri: str | None = option(None, parse=parse_url)
    discovery: str | None = option(None, parse=parse_url)
    jwks_file: str | None = option(None, parse=parse_file)
    jwks: dict[str, object] | None = None
    hmac_secret_env: str | None = None
    #: Accepted JOSE ``typ`` values, compared case-insensitively, ``application/`` prefix optional
    #: (RFC 9068 §2.1, JWT-10). Add ``JWT`` only for a legacy issuer that cannot send ``at+jwt``.
    typ: tuple[str, ...] = ("at+jwt",)
    #: Claims that must be present (RFC 9068 §2.2).
    required_claims: tuple[str, ...] = RFC9068_CLAIMS
    #: CA bundle for the key URLs' certificates; default: the system's trust store.
    ca_file: str | None = option(None, parse=parse_file)
    #: Allow ``http://`` key URLs. For tests on 127.0.0.1 only; logged as a warning.
    insecure_http: bool = False
    refresh: JwksRefreshPolicy = field(default_factory=JwksRefreshPolicy)

    def _check(self) -> None:
        problems = []
        sources = [
            n for n in ("jwks_uri", "discovery", "jwks_file", "jwks", "hmac_secret_env") if getattr(self, n)
        ]
        if len(sources) != 1:
            problems.append(
                ConfigProblem(
                    "",
                    "name exactly one key source: jwks_uri, discovery, jwks_file, jwks or hmac_secret_env"
                    + (f" (found {', '.join(sources)})" if sources else ""),
                )
            )
        if not self.issuer:
            problems.append(ConfigProblem("issuer", "must not be empty"))
        if not self.audiences or not all(self.audiences):
            problems.append(ConfigProblem("audiences", "list at least one non-empty audience"))
        algs = set(self.algorithms)
        if algs & SYMMETRIC and algs & ASYMMETRIC:
            problems.append(
                ConfigProblem(
                    "algorithms", "do not mix symmetric (HS*) and asymmetric algorithms (RFC 8725 §3.1)"
                )
            )
        if algs & SYMMETRIC and not self.hmac_secret_env:
            problems.append(
                ConfigProblem("algorithms", "HS* algorithms need hmac_secret_env (and no key set)")
            )
        if self.hmac_secret_env and algs - SYMMETRIC:
            problems.append(ConfigProblem("hmac_secret_env", "a shared secret verifies HS* algorithms only"))
        if self.hmac_secret_env:
            secret = os.environ.get(self.hmac_secret_env, "")
            # RFC 7518 §3.2: a key at least as long as the hash output.
            need = max((int(a[2:]) // 8 for a in algs & SYMMETRIC), default=32)
            if len(secret.encode("utf-8")) < need:
                problems.append(
                    ConfigProblem(
                        "hmac_secret_env",
                        f"environment variable {self.hmac_secret_env} must hold a secret of at least "
                        f"{need * 8} bits ({need} bytes; RFC 7518 §3.2)",
                    )
                )
        missing = {"iss", "exp", "aud"} - set(self.required_claims)
        if missing:
            problems.append(ConfigProblem("required_claims", f"must include {', '.join(sorted(missing))}"))
        if not self.typ:
            problems.append(ConfigProblem("typ", "list at least one accepted typ, normally at+jwt"))
        for name in ("jwks_uri", "discovery"):
            url = getattr(self, name)
            if url and url.startswith("http://") and not self.insecure_http:
                problems.append(
                    ConfigProblem(name, "must be https:// (set insecure_http: true for local tests only)")
                )
        if problems:
            raise ConfigurationError(problems)
        if self.insecure_http:
            log.warning(
                "policy: issuer %s allows plain http key URLs (insecure_http); tests only", self.issuer
            )
        if any(t.lower().removeprefix("application/") != "at+jwt" for t in self.typ):
            log.warning(
                "policy: issuer %s accepts typ %s besides at+jwt (JWT-10)", self.issuer, list(self.typ)
            )


ClientAuth = Literal["client_secret_basic", "client_secret_post", "tls_client_auth"]


@dataclass(frozen=True, kw_only=True, slots=True)
class IntrospectionPolicy(Section):
    """RFC 7662 token introspection for opaque (non-JWT) access tokens."""

    #: The introspection endpoint.
    endpoint: str = option(parse=parse_url)
    #: This resource server's client id at the authorization server.
    client_id: str
    #: How bankguard authenticates to the endpoint (RFC 7662 §2.1).
    auth: ClientAuth = "client_secret_basic"
    #: Environment variable holding the client secret (``client_secret_*``).
    client_secret_env: str | None = None
    #: Client certificate and key files (``tls_client_auth``), relative to the policy file.
    client_cert_file: str | None = option(None, parse=parse_file)
    client_key_file: str | None = option(None, parse=parse_file)
    #: CA bundle for the endpoint's certificate; default: the system's trust store.
    ca_file: str | None = option(None, parse=parse_file)
    #: Expected ``iss`` in responses, when the server includes one.
    issuer: str | None = None
    #: Audience values that identify this resource server, checked when ``aud`` is present.
    audiences: tuple[str, ...] = ()
    #: Longest time an active result is reused; never beyond the token's ``exp`` (RFC 7662 §4).
    cache_ttl: float = option(60.0, parse=parse_duration)
    #: How long an inactive result is remembered (short: a token may become active... never, but
    #: a flood of random tokens must not reach the server each time).
    negative_cache_ttl: float = option(10.0, parse=parse_duration)
    timeout: float = option(3.0, parse=parse_duration)
    max_bytes: int = option(64 * 1024, parse=parse_size)
    #: Allow an ``http://`` endpoint. For tests on 127.0.0.1 only; logged as a warning.
    insecure_http: bool = False

    def _check(self) -> None:
        problems = []
        if self.auth.startswith("client_secret"):
            if not self.client_secret_env:
                problems.append(ConfigProblem("client_secret_env", f"{self.auth} needs client_secret_env"))
            elif not os.environ.get(self.client_secret_env):
                problems.append(
                    ConfigProblem(
                        "client_secret_env", f"environment variable {self.client_secret_env} is not set"
                    )
                )
        elif self.endpoint.startswith("http://"):
            problems.append(ConfigProblem("endpoint", "tls_client_auth needs an https:// endpoint"))
        elif not (self.client_cert_file and self.client_key_file):
            problems.append(
                ConfigProblem("auth", "tls_client_auth needs client_cert_file and client_key_file")
            )
        if self.endpoint.startswith("http://") and not self.insecure_http:
            problems.append(
                ConfigProblem("endpoint", "must be https:// (set insecure_http: true for local tests only)")
            )
        if self.negative_cache_ttl > 60:
            problems.append(ConfigProblem("negative_cache_ttl", "must be at most 60 seconds"))
        if not 0 < self.timeout <= 30:
            problems.append(ConfigProblem("timeout", "must be between 0 and 30 seconds"))
        if problems:
            raise ConfigurationError(problems)
        if self.insecure_http:
            log.warning("policy: introspection endpoint allows plain http (insecure_http); tests only")


@dataclass(frozen=True, kw_only=True, slots=True)
class TokensPolicy(Section):
    """Access-token verification: JWTs from the listed issuers, opaque tokens by introspection."""

    mode: Literal["enforce", "report"] = "enforce"
    issuers: tuple[IssuerPolicy, ...] = ()
    introspection: IntrospectionPolicy | None = None
    #: Clock skew tolerated for ``exp`` and ``nbf`` (RFC 7519 §4.1.4; JWT-24), at most 300 s.
    leeway: float = option(30.0, parse=parse_duration)
    #: How far in the future ``iat`` may lie (JWT-26), at most 60 s.
    max_future_iat: float = option(10.0, parse=parse_duration)
    #: Longest access token accepted, checked before any parsing (JWT-09).
    max_token_bytes: int = option(8192, parse=parse_size)
    #: Verified tokens remembered (by SHA-256 of the token) until they expire.
    cache_entries: int = 10_000
    #: Refuse tokens that are not sender-constrained (no ``cnf``; RFC 8705, RFC 9449).
    #: Default: true under the fapi2, fapi1-adv and obie profiles (and cannot be false there).
    require_sender_constraint: bool | None = None

    def _check(self) -> None:
        problems = []
        if self.leeway > 300:
            problems.append(
                ConfigProblem("leeway", "must be at most 300 seconds (RFC 9068 §4: a few minutes)")
            )
        if self.max_future_iat > 60:
            problems.append(ConfigProblem("max_future_iat", "must be at most 60 seconds"))
        if not 1024 <= self.max_token_bytes <= 65536:
            problems.append(ConfigProblem("max_token_bytes", "must be between 1KiB and 64KiB"))
        if self.cache_entries < 0:
            problems.append(ConfigProblem("cache_entries", "must not be negative"))
        seen: dict[str, int] = {}
        for i, issuer in enumerate(self.issuers):
            if issuer.issuer in seen:
                problems.append(
                    ConfigProblem(f"issuers[{i}].issuer", f"repeats issuers[{seen[issuer.issuer]}]")
                )
            seen.setdefault(issuer.issuer, i)
        if problems:
            raise ConfigurationError(problems)

    @property
    def configured(self) -> bool:
        return bool(self.issuers) or self.introspection is not None
