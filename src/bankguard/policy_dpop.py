"""Policy sections for DPoP (RFC 9449), the origins this API is reached at, and shared storage.

* ``external_origins`` are the URLs clients use to reach this API (``https://api.bank.example``,
  optionally with a path prefix the proxy strips). A DPoP proof's ``htu`` is compared with
  them and the request path, never with a ``Host`` the client wrote (DPOP-11).
* ``dpop`` turns the ``DPoP`` authorization scheme on, with its algorithm allow-list, the
  proof acceptance window and optional server nonces (RFC 9449 §8, §9).
* ``storage`` chooses where shared state lives: ``memory://`` (one process) or
  ``redis://`` / ``rediss://`` / ``unix://`` when several workers or replicas serve one API.
  DPoP ``jti`` replay entries and rate-limit counters live there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ._config import Invalid, Section, option, parse_duration, parse_size, type_name
from .errors import ConfigProblem, ConfigurationError
from .policy_tokens import ASYMMETRIC
from .stores import REDIS_SCHEMES

#: The proof algorithms offered when the policy names none (FAPI 2.0 §5.4.1 allows exactly these).
DEFAULT_DPOP_ALGORITHMS = ("ES256", "PS256", "EdDSA")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Origin:
    """One external origin, normalised (RFC 3986 §6.2.2-6.2.3): scheme and host in lower
    case, the default port dropped, an optional path prefix without a trailing ``/``."""

    scheme: str
    authority: str
    prefix: str = ""

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.prefix}"


def normal_authority(scheme: str, host: str, port: int | None) -> str:
    """``host[:port]`` as compared: host in lower case, IPv6 in brackets, default port dropped."""
    host = host.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return host
    return f"{host}:{port}"


def parse_origins(value: object, path: str) -> tuple[Origin, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid(
            path, f"expected a list of URLs such as https://api.bank.example, got {type_name(value)}"
        )
    out: list[Origin] = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        if isinstance(item, Origin):
            out.append(item)
            continue
        if not isinstance(item, str) or any(c in item for c in " \t\r\n\\%"):
            raise Invalid(where, f"expected an absolute URL without spaces or %-escapes, got {item!r}")
        try:
            parts = urlsplit(item)
            port = parts.port
        except ValueError:
            raise Invalid(where, f"{item!r} is not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise Invalid(where, f"{item!r} must be an absolute https:// (or http://) URL")
        if parts.username is not None or parts.password is not None:
            raise Invalid(where, f"{item!r} must not carry credentials")
        if parts.query or parts.fragment or "?" in item or "#" in item:
            raise Invalid(where, f"{item!r} must not have a query or fragment")
        if port == 0:
            raise Invalid(where, f"{item!r} has an invalid port")
        prefix = parts.path.rstrip("/")
        if "/./" in prefix + "/" or "/../" in prefix + "/" or "//" in prefix:
            raise Invalid(where, f"{item!r}: the path prefix must be in normal form")
        out.append(Origin(scheme, normal_authority(scheme, parts.hostname, port), prefix))
    if len(set(out)) != len(out):
        raise Invalid(path, "lists an origin twice")
    return tuple(out)


def _parse_dpop_algorithms(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise Invalid(path, "expected a non-empty list of asymmetric JWS algorithms, e.g. [ES256, PS256]")
    out: list[str] = []
    for i, alg in enumerate(value):
        if not isinstance(alg, str) or alg not in ASYMMETRIC:
            raise Invalid(
                f"{path}[{i}]",
                f"{alg!r} is not an asymmetric JWS algorithm bankguard verifies "
                f"(RFC 9449 §4.3 item 5); use some of {', '.join(sorted(ASYMMETRIC))}",
            )
        if alg in out:
            raise Invalid(f"{path}[{i}]", f"{alg} is listed twice")
        out.append(alg)
    return tuple(out)


#: Least length of the nonce key (bytes of the environment variable's value).
MIN_NONCE_SECRET_BYTES = 32


@dataclass(frozen=True, kw_only=True, slots=True)
class NoncePolicy(Section):
    """Server-issued DPoP nonces (RFC 9449 §8, §9). Off by default.

    Nonces are stateless: each one carries its issue time and an HMAC-SHA256 tag under a key
    read from ``secret_env``, so every worker and replica that shares the key accepts the
    nonces of the others without shared storage, and no other server can mint or accept them.
    """

    enabled: bool = False
    #: Environment variable holding the nonce key (at least 32 bytes; the same on every replica).
    secret_env: str | None = None
    #: How long an issued nonce is accepted.
    lifetime: float = option(300.0, parse=parse_duration)
    #: A success presenting a nonce older than this gets a fresh one in ``DPoP-Nonce`` (§8.2).
    rotate_after: float = option(120.0, parse=parse_duration)

    def _check(self) -> None:
        problems = []
        if not 10 <= self.lifetime <= 3600:
            problems.append(ConfigProblem("lifetime", "must be between 10 seconds and 1 hour"))
        if not 0 < self.rotate_after <= self.lifetime:
            problems.append(ConfigProblem("rotate_after", "must be positive and at most lifetime"))
        if self.enabled:
            if not self.secret_env:
                problems.append(
                    ConfigProblem("secret_env", "nonces need a key shared by all replicas; name its variable")
                )
            elif len(os.environ.get(self.secret_env, "").encode("utf-8")) < MIN_NONCE_SECRET_BYTES:
                problems.append(
                    ConfigProblem(
                        "secret_env",
                        f"environment variable {self.secret_env} must hold at least "
                        f"{MIN_NONCE_SECRET_BYTES} bytes",
                    )
                )
        if problems:
            raise ConfigurationError(problems)


@dataclass(frozen=True, kw_only=True, slots=True)
class DPoPPolicy(Section):
    """The ``DPoP`` authorization scheme (RFC 9449 §7). Off by default.

    When on, ``Authorization: DPoP <token>`` with one ``DPoP`` proof header is accepted for
    tokens bound with ``cnf.jkt``; ``external_origins`` must be set (what ``htu`` is checked
    against). Proof failures are denials of the tokens control and follow its ``mode``.
    """

    enabled: bool = False
    #: Proof algorithms accepted and advertised in ``algs`` (RFC 9449 §7.1; CFG-06).
    #: Default: ES256, PS256, EdDSA; under a profile, only the profile's algorithms are allowed.
    algorithms: tuple[str, ...] = option(DEFAULT_DPOP_ALGORITHMS, parse=_parse_dpop_algorithms)
    #: Oldest accepted proof: ``iat`` at most this long ago (RFC 9449 §11.1; DPOP-12).
    max_age: float = option(60.0, parse=parse_duration)
    #: Allowance for clients whose clock runs ahead (DPOP-12: 10 s to 60 s).
    future_skew: float = option(10.0, parse=parse_duration)
    #: Size cap of the ``DPoP`` header value (DPOP-28); beyond it: 431.
    max_proof_bytes: int = option(8 * 1024, parse=parse_size)
    nonce: NoncePolicy = field(default_factory=NoncePolicy)

    def _check(self) -> None:
        problems = []
        if not 1 <= self.max_age <= 300:
            problems.append(ConfigProblem("max_age", "must be between 1 second and 5 minutes (DPOP-12)"))
        if not 0 <= self.future_skew <= 60:
            problems.append(ConfigProblem("future_skew", "must be between 0 and 60 seconds (DPOP-12)"))
        if not 1024 <= self.max_proof_bytes <= 64 * 1024:
            problems.append(ConfigProblem("max_proof_bytes", "must be between 1 KiB and 64 KiB"))
        if self.nonce.enabled and not self.enabled:
            problems.append(ConfigProblem("nonce.enabled", "nonces need dpop.enabled: true"))
        if problems:
            raise ConfigurationError(problems)


StorageScheme = Literal["memory", "redis", "rediss", "unix"]


_STORAGE_SCHEMES = ("memory", *REDIS_SCHEMES)


def parse_storage_uri(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise Invalid(path, f"expected a storage URI such as memory:// or redis://host:6379/0, got {value!r}")
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in _STORAGE_SCHEMES:
        raise Invalid(
            path,
            "use memory://, redis://, rediss://, unix:// (a Redis socket), redis+cluster://host:port,... "
            "or redis+sentinel://host:port,.../service (rediss+ for TLS)",
        )
    if scheme == "memory" and value.lower() != "memory://":
        raise Invalid(path, "memory:// takes no host or options")
    if any(c in value for c in " \t\r\n"):
        raise Invalid(path, "must not contain whitespace")
    return scheme + value[len(scheme) :]  # the scheme in lower case, as the store expects


@dataclass(frozen=True, kw_only=True, slots=True)
class StoragePolicy(Section):
    """Where shared state lives (DPoP replay entries, rate-limit counters).

    ``memory://`` keeps it in the process: correct for one worker only. With several
    workers or replicas use Redis, so a proof accepted by one is refused by all others.
    A store that cannot answer fails closed (503).
    """

    #: (Kept out of ``repr``: a Redis URL may hold a password.)
    uri: str = option("memory://", parse=parse_storage_uri, repr=False)
    #: Prefix of every key bankguard writes (several APIs can share one Redis).
    prefix: str = "bankguard:"
    #: Time limit of one Redis command (connecting and waiting for a pooled connection get more).
    timeout: float = option(0.25, parse=parse_duration)
    #: Entry cap of the ``memory://`` store, and of each table of in-process rate-limit counters
    #: (the pre-authentication limit's included).
    max_entries: int = 100_000

    def _check(self) -> None:
        problems = []
        if not 0 < self.timeout <= 5:
            problems.append(ConfigProblem("timeout", "must be between 0 and 5 seconds"))
        if self.max_entries < 1000:
            problems.append(ConfigProblem("max_entries", "must be at least 1000"))
        if not self.prefix or any(c in self.prefix for c in " \t\r\n"):
            problems.append(ConfigProblem("prefix", "must be a non-empty string without whitespace"))
        if problems:
            raise ConfigurationError(problems)

    @property
    def shared(self) -> bool:
        return not self.uri.lower().startswith("memory://")
