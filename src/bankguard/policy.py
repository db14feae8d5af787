"""The policy: one frozen tree of keyword-only dataclasses.

Build it in Python (``Policy(routes=RoutesPolicy(...))``), from a mapping
(:meth:`Policy.from_dict`) or from YAML (:meth:`Policy.from_yaml`). All parsing and
validation happens here, at load time; an invalid policy raises
:class:`~bankguard.errors.ConfigurationError` naming the YAML path of every bad key.
After construction a policy never changes and is shared by all threads and tasks.

Every control section has ``mode: enforce | report``. In ``report`` mode the control
decides and writes its verdict to the audit event but does not block the request,
so a control can be rolled out gradually. There is no setting that turns a check off.

See ``docs/policy.md`` for every key with its type, default and effect.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from ._config import BASE_DIR, Invalid, Section, build, option, parse_networks, parse_size
from .audit import AuditEvent
from .errors import ConfigProblem, ConfigurationError
from .policy_dpop import DPoPPolicy, Origin, StoragePolicy, parse_origins
from .policy_mtls import HEADER_SOURCES, PSD2_ROLE_NAMES, ClientCertPolicy
from .policy_openapi import OpenApiPolicy
from .policy_ratelimit import RateLimitPolicy
from .policy_tokens import PROFILE_ALGORITHMS, TokensPolicy

log = logging.getLogger("bankguard")

Mode = Literal["enforce", "report"]
#: Regulatory presets. See ``docs/policy.md#profile`` for what each one changes.
Profile = Literal["generic", "fapi2", "fapi1-adv", "obie", "nextgenpsd2"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
AuditSink = Callable[[AuditEvent], None]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # RFC 9110 §5.6.2 token
_PARAM = re.compile(r"\{([^{}/]*)\}")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+\Z")  # RFC 6749 §3.3 scope-token
_AUTH_PARAM_VALUE = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]*\Z")  # RFC 6750 §3


def _section(cls: type[Any]) -> Any:
    return field(default_factory=cls)


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestPolicy(Section):
    """Request hygiene: size caps, request-target sanity, method overrides.

    Applies to every request, declared or not, before anything else is parsed
    (OWASP API4; RFC 6585 §5; RFC 9110 §15.5.14).
    """

    mode: Mode = "enforce"
    #: Total size of all header field lines; beyond it: 431.
    max_header_bytes: int = option(32 * 1024, parse=parse_size)
    #: Size of any one header field line; beyond it: 431.
    max_header_field_bytes: int = option(16 * 1024, parse=parse_size)
    #: Request body cap, enforced while reading (also for chunked bodies); beyond it: 413.
    max_body_bytes: int = option(1024 * 1024, parse=parse_size)
    #: Path plus query string; beyond it: 414.
    max_target_bytes: int = option(8 * 1024, parse=parse_size)

    def _check(self) -> None:
        if self.max_header_field_bytes > self.max_header_bytes:
            raise ConfigurationError("must not exceed max_header_bytes", path="max_header_field_bytes")


@dataclass(frozen=True, kw_only=True, slots=True)
class RouteSpec(Section):
    """One declared operation."""

    #: HTTP method, e.g. ``GET``. ``GET`` also admits ``HEAD`` (RFC 9110 §9.3.2).
    method: str
    #: Path template, e.g. ``/accounts/{AccountId}``. Parameters match one non-empty segment.
    path: str
    #: Operation id used in audit events; defaults to ``"<METHOD> <path>"``.
    id: str | None = None
    #: A public operation needs no credentials. Default false: deny unless declared open.
    public: bool = False
    #: Scopes the access token must all grant (RFC 6750 §3.1 ``insufficient_scope`` otherwise).
    scopes: tuple[str, ...] = ()
    #: Scopes of which the access token must grant at least one.
    any_scopes: tuple[str, ...] = ()
    #: PSD2 roles the client's eIDAS certificate must all hold (PSP_AS, PSP_PI, PSP_AI, PSP_IC).
    roles: tuple[str, ...] = ()

    def _check(self) -> None:
        problems = []
        for name in ("scopes", "any_scopes"):
            for i, scope in enumerate(getattr(self, name)):
                if not _SCOPE.match(scope):
                    problems.append(
                        ConfigProblem(f"{name}[{i}]", f"{scope!r} is not a scope token (RFC 6749 §3.3)")
                    )
        if self.public and (self.scopes or self.any_scopes):
            problems.append(ConfigProblem("public", "a public operation cannot require scopes"))
        if self.public and self.roles:
            problems.append(ConfigProblem("public", "a public operation cannot require PSD2 roles"))
        for i, role in enumerate(self.roles):
            if role not in PSD2_ROLE_NAMES:
                problems.append(
                    ConfigProblem(
                        f"roles[{i}]", f"{role!r} is not a PSD2 role ({', '.join(sorted(PSD2_ROLE_NAMES))})"
                    )
                )
        if not _TOKEN.match(self.method) or self.method != self.method.upper():
            problems.append(ConfigProblem("method", f"{self.method!r} is not an upper-case HTTP method"))
        problems.extend(ConfigProblem("path", m) for m in _template_problems(self.path))
        if problems:
            raise ConfigurationError(problems)
        if self.id is None:
            object.__setattr__(self, "id", f"{self.method} {self.path}")

    @property
    def operation_id(self) -> str:
        return self.id or f"{self.method} {self.path}"


def _template_problems(path: str) -> list[str]:
    if not path.startswith("/"):
        return [f"{path!r} must start with '/'"]
    problems = []
    names: set[str] = set()
    for segment in path.split("/")[1:]:
        if segment in (".", ".."):
            problems.append(f"{path!r} contains a dot segment")
        for name in _PARAM.findall(segment):
            if not _PARAM_NAME.match(name):
                problems.append(f"{path!r}: parameter name {name!r} is not valid")
            elif name in names:
                problems.append(f"{path!r}: parameter {name!r} appears twice")
            names.add(name)
        if _PARAM.sub("", segment).count("{") or _PARAM.sub("", segment).count("}"):
            problems.append(f"{path!r}: unbalanced braces in {segment!r}")
    return problems


@dataclass(frozen=True, kw_only=True, slots=True)
class RoutesPolicy(Section):
    """The operations this API exposes (OWASP API5/API9: deny by default)."""

    mode: Mode = "enforce"
    #: What happens to a request that matches no declared operation: ``deny`` (404/405) or ``allow``.
    undeclared: Literal["deny", "allow"] = "deny"
    operations: tuple[RouteSpec, ...] = ()

    def _check(self) -> None:
        seen: dict[tuple[str, str], int] = {}
        ids: dict[str, int] = {}
        problems = []
        gets = {_PARAM.sub("{}", op.path) for op in self.operations if op.method == "GET"}
        for i, op in enumerate(self.operations):
            if op.method == "HEAD" and _PARAM.sub("{}", op.path) in gets:
                problems.append(
                    ConfigProblem(
                        f"operations[{i}]",
                        "HEAD is served with the rules of the GET declared on the same path; "
                        "remove this HEAD declaration (RFC 9110 §9.3.2)",
                    )
                )
        for i, op in enumerate(self.operations):
            key = (op.method, _PARAM.sub("{}", op.path))
            if key in seen:
                problems.append(
                    ConfigProblem(
                        f"operations[{i}]", f"{op.method} {op.path} repeats operations[{seen[key]}]"
                    )
                )
            seen.setdefault(key, i)
            if op.operation_id in ids:
                problems.append(
                    ConfigProblem(
                        f"operations[{i}].id",
                        f"id {op.operation_id!r} repeats operations[{ids[op.operation_id]}]",
                    )
                )
            ids.setdefault(op.operation_id, i)
        if problems:
            raise ConfigurationError(problems)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthPolicy(Section):
    """How credentials are read from the request (RFC 6750 §2, RFC 9110 §11)."""

    mode: Mode = "enforce"
    #: ``realm`` of the ``WWW-Authenticate`` challenges.
    realm: str = "api"

    def _check(self) -> None:
        if not self.realm or not _AUTH_PARAM_VALUE.match(self.realm):
            raise ConfigurationError(
                "must be non-empty printable ASCII without '\"' or '\\' (RFC 6750 §3)", path="realm"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class InteractionIdPolicy(Section):
    """The correlation id echoed on every response (FAPI 1.0 Baseline §6.2.1 item 11)."""

    mode: Mode = "enforce"
    #: Request and response header carrying the id.
    header: str = "x-fapi-interaction-id"
    #: An id that is not an RFC 4122 UUID is ``replace``d by a fresh one, or ``reject``ed with 400.
    #: Default: ``reject`` under the ``fapi1-adv`` and ``obie`` profiles, ``replace`` otherwise.
    invalid: Literal["replace", "reject"] | None = None

    def _check(self) -> None:
        if not _TOKEN.match(self.header):
            raise ConfigurationError(f"{self.header!r} is not a header name", path="header")
        object.__setattr__(self, "header", self.header.lower())


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseHeadersPolicy(Section):
    """Headers added to the application's responses when it did not set them (OWASP API8).

    bankguard's own problem responses always carry ``Cache-Control: no-store`` and
    ``X-Content-Type-Options: nosniff`` whatever is set here.
    """

    #: ``Cache-Control`` for responses; bank data must not be cached (RFC 9440 §2.4).
    cache_control: str = "no-store"
    #: Add ``X-Content-Type-Options: nosniff``.
    nosniff: bool = True

    def _check(self) -> None:
        if not self.cache_control or any(c in self.cache_control for c in "\r\n\x00"):
            raise ConfigurationError("must be a non-empty single-line value", path="cache_control")
        if "no-store" not in self.cache_control.lower():
            log.warning("policy: response_headers.cache_control lacks no-store; bank data may be cached")
        if not self.nosniff:
            log.warning("policy: response_headers.nosniff is false; X-Content-Type-Options is not added")


@dataclass(frozen=True, kw_only=True, slots=True)
class ProblemsPolicy(Section):
    """How error responses (RFC 9457 problem details) are rendered."""

    #: Prefix of every problem ``type`` URI; the problem's slug is appended.
    #: Point it at your developer portal's copy of ``docs/errors.md``.
    type_base: str = "https://bankguard.dev/problems/"

    def _check(self) -> None:
        if not re.match(r"^(https?://|urn:|tag:)[\x21-\x7e]*\Z", self.type_base):
            raise ConfigurationError("must be an absolute http(s), urn: or tag: URI prefix", path="type_base")


def _parse_sink(value: object, path: str) -> object:
    if callable(value):
        return value
    if isinstance(value, str) and (value == "logging" or re.match(r"^[\w.]+:[\w.]+\Z", value)):
        return value
    raise Invalid(path, f"expected 'logging' or 'package.module:callable', got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditPolicy(Section):
    """Where decision events go. One event is written for every decision."""

    #: ``logging`` (JSON lines through :mod:`logging`), ``package.module:callable``
    #: (imported at load time), or, from Python, any callable taking an AuditEvent.
    sink: str | AuditSink = option("logging", parse=_parse_sink)
    #: Logger name for the ``logging`` sink.
    logger: str = "bankguard.audit"


_PROFILE_REJECTS_BAD_INTERACTION_ID = {"fapi1-adv", "obie"}
_PROFILE_REQUIRES_SENDER_CONSTRAINT = {"fapi2", "fapi1-adv", "obie"}
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Policy(Section):
    """The whole bankguard configuration. Frozen; build once, share everywhere."""

    #: Regulatory preset that chooses secure defaults for keys left unset.
    profile: Profile = "generic"
    #: Networks of the reverse proxies whose forwarding headers are believed. Empty: none.
    trusted_proxies: tuple[Network, ...] = option((), parse=parse_networks)
    #: The URLs clients reach this API at (DPoP ``htu`` is checked against them, DPOP-11).
    external_origins: tuple[Origin, ...] = option((), parse=parse_origins)
    request: RequestPolicy = _section(RequestPolicy)
    routes: RoutesPolicy = _section(RoutesPolicy)
    auth: AuthPolicy = _section(AuthPolicy)
    interaction_id: InteractionIdPolicy = _section(InteractionIdPolicy)
    response_headers: ResponseHeadersPolicy = _section(ResponseHeadersPolicy)
    problems: ProblemsPolicy = _section(ProblemsPolicy)
    audit: AuditPolicy = _section(AuditPolicy)
    tokens: TokensPolicy = _section(TokensPolicy)
    client_cert: ClientCertPolicy = _section(ClientCertPolicy)
    dpop: DPoPPolicy = _section(DPoPPolicy)
    storage: StoragePolicy = _section(StoragePolicy)
    openapi: OpenApiPolicy = _section(OpenApiPolicy)
    ratelimit: RateLimitPolicy = _section(RateLimitPolicy)

    def _check(self) -> None:
        problems = []
        if self.dpop.enabled:
            problems.extend(self._dpop_problems())
        if not self.tokens.configured:
            for i, op in enumerate(self.routes.operations):
                if not op.public:
                    problems.append(
                        ConfigProblem(
                            f"routes.operations[{i}].public",
                            f"{op.method} {op.path} is not public, so it needs token verification; "
                            "configure tokens.issuers or tokens.introspection, or declare it public: true",
                        )
                    )
        allowed = PROFILE_ALGORITHMS[self.profile]
        for i, issuer in enumerate(self.tokens.issuers):
            for j, alg in enumerate(issuer.algorithms):
                if alg not in allowed:
                    problems.append(
                        ConfigProblem(
                            f"tokens.issuers[{i}].algorithms[{j}]",
                            f"{alg} is not allowed under profile {self.profile} "
                            f"(allowed: {', '.join(sorted(allowed))})",
                        )
                    )
        if self.client_cert.source in HEADER_SOURCES and not self.trusted_proxies:
            problems.append(
                ConfigProblem(
                    "client_cert.source",
                    f"a {self.client_cert.source} header is believed only from trusted_proxies, "
                    "and none are listed (RFC 9440 §4)",
                )
            )
        for i, op in enumerate(self.routes.operations):
            if op.roles and self.client_cert.identity != "eidas":
                problems.append(
                    ConfigProblem(
                        f"routes.operations[{i}].roles", "PSD2 roles need client_cert.identity: eidas"
                    )
                )
        required = self.profile in _PROFILE_REQUIRES_SENDER_CONSTRAINT
        if self.tokens.require_sender_constraint is False and required:
            problems.append(
                ConfigProblem(
                    "tokens.require_sender_constraint",
                    f"profile {self.profile} accepts only sender-constrained tokens (FAPI 2.0 §5.3.4)",
                )
            )
        if problems:
            raise ConfigurationError(problems)
        if self.tokens.require_sender_constraint is None:
            object.__setattr__(
                self, "tokens", dataclasses.replace(self.tokens, require_sender_constraint=required)
            )
        if self.interaction_id.invalid is None:
            mode: Literal["replace", "reject"] = (
                "reject" if self.profile in _PROFILE_REJECTS_BAD_INTERACTION_ID else "replace"
            )
            object.__setattr__(self, "interaction_id", dataclasses.replace(self.interaction_id, invalid=mode))
        if self.dpop.enabled and not self.storage.shared:
            log.info(
                "policy: DPoP replay entries are kept in memory://, which protects one process; "
                "with several workers or replicas set storage.uri to a Redis URL"
            )
        for origin in self.external_origins:
            if origin.scheme == "http" and origin.authority.split(":")[0] not in _LOOPBACK_HOSTS:
                log.warning(
                    "policy: external origin %s is plain http; clients should reach the API over https",
                    origin,
                )
        if self.routes.undeclared == "allow":
            log.warning("policy: routes.undeclared is 'allow'; undeclared operations are not denied")
        if self.ratelimit.enabled and not self.storage.shared:
            log.info(
                "policy: rate-limit counters are kept in memory://, per process; with several workers "
                "or replicas set storage.uri to a Redis URL so a limit holds for the whole API"
            )
        for name in (
            "request",
            "routes",
            "auth",
            "interaction_id",
            "tokens",
            "client_cert",
            "openapi",
            "ratelimit",
        ):
            if getattr(self, name).mode == "report":
                log.warning("policy: %s runs in report mode; its denials are logged, not enforced", name)

    def _dpop_problems(self) -> list[ConfigProblem]:
        problems = []
        if not self.external_origins:
            problems.append(
                ConfigProblem(
                    "external_origins",
                    "DPoP proofs name the URL they were made for (htu); list the origins clients use "
                    "to reach this API, e.g. [https://api.bank.example] (RFC 9449 §4.3)",
                )
            )
        if self.profile in ("fapi1-adv", "obie"):
            problems.append(
                ConfigProblem(
                    "dpop.enabled",
                    f"profile {self.profile} binds tokens with mutual TLS only "
                    "(FAPI 1.0 Advanced §6.2.1; UK Open Banking builds on it)",
                )
            )
        allowed = PROFILE_ALGORITHMS[self.profile]
        for j, alg in enumerate(self.dpop.algorithms):
            if alg not in allowed:
                problems.append(
                    ConfigProblem(
                        f"dpop.algorithms[{j}]",
                        f"{alg} is not allowed under profile {self.profile} "
                        f"(allowed: {', '.join(sorted(allowed))})",
                    )
                )
        if not self.tokens.configured:
            problems.append(
                ConfigProblem(
                    "dpop.enabled", "DPoP binds access tokens; configure tokens.issuers or introspection"
                )
            )
        return problems

    # -- loading ----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Policy:
        """Build a policy from plain data (as parsed from YAML or JSON)."""
        return build(cls, data, "")

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str] | IO[str]) -> Policy:
        """Load a policy from a YAML file (a path or an open text file)."""
        directory: str | None
        if isinstance(source, (str, os.PathLike)):
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
            directory = os.path.dirname(os.path.abspath(source))
        else:
            text = source.read()
            name = getattr(source, "name", None)
            directory = os.path.dirname(os.path.abspath(name)) if isinstance(name, str) else None
        token = BASE_DIR.set(directory)
        try:
            return cls.from_yaml_text(text)
        finally:
            BASE_DIR.reset(token)

    @classmethod
    def from_yaml_text(cls, text: str) -> Policy:
        """Load a policy from YAML text."""
        from ._yaml import load_strict

        return cls.from_dict(load_strict(text))

    def summary(self) -> str:
        """A one-screen description of what this policy enforces."""
        from ._summary import summarise

        return summarise(self)
