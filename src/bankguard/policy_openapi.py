"""Policy section for the OpenAPI contract: the spec, request and response enforcement, and
response data minimisation (issue: PSD2 data minimisation, PCI-DSS 4.0 §6.4.2, OWASP API3).

The spec is read and its validators compiled when the guard is built (like key sets), not when
the policy loads; ``bankguard check-policy`` loads it too, so spec defects show there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ._config import Invalid, Section, option, parse_file, parse_size
from .errors import ConfigProblem, ConfigurationError

Mode = Literal["enforce", "report"]
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+\Z")  # RFC 6749 §3.3 scope-token


def _parse_scope_list(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid(path, "expected a list of scopes")
    for i, scope in enumerate(value):
        if not isinstance(scope, str) or not _SCOPE.match(scope):
            raise Invalid(f"{path}[{i}]", f"{scope!r} is not a scope-token (RFC 6749 §3.3)")
    return tuple(value)


def _parse_property_scopes(value: object, path: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if isinstance(value, tuple):  # already converted
        value = dict(value)
    if not isinstance(value, dict):
        raise Invalid(path, "expected a mapping of schema locations to lists of scopes")
    out: dict[str, tuple[str, ...]] = {}
    for key, scopes in value.items():
        if not isinstance(key, str) or not key.startswith("#/"):
            raise Invalid(
                path, f"{key!r}: a location such as '#/components/schemas/OBAccount6/properties/Nickname'"
            )
        out[key] = _parse_scope_list(scopes, f"{path}.{key}")
    return tuple(sorted(out.items()))


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponsesPolicy(Section):
    """Response validation against the declared schema, per status code and media type."""

    #: ``enforce``: an invalid response is replaced by a 502 problem; ``report``: it is sent as
    #: the application wrote it and reported; ``sample``: like enforce, on a share of responses.
    mode: Literal["enforce", "report", "sample"] = "enforce"
    #: Share of responses validated in ``sample`` mode (minimisation applies to every response).
    sample_rate: float = 0.1
    #: Largest response body buffered for minimisation and validation. A larger or streamed body
    #: passes through untouched, and the audit event says so.
    max_body_bytes: int = option(1024 * 1024, parse=parse_size)

    def _check(self) -> None:
        problems = []
        if not 0 < self.sample_rate <= 1:
            problems.append(ConfigProblem("sample_rate", "must be above 0 and at most 1"))
        if not 1024 <= self.max_body_bytes <= 64 * 1024 * 1024:
            problems.append(ConfigProblem("max_body_bytes", "must be between 1 KiB and 64 MiB"))
        if problems:
            raise ConfigurationError(problems)


@dataclass(frozen=True, kw_only=True, slots=True)
class MinimisePolicy(Section):
    """What is removed from JSON responses before they leave (PSD2 data minimisation).

    Properties the response schema does not declare are always removed. Properties tied to
    scopes (``property_scopes`` here, or ``x-bankguard-scopes`` in the spec) are removed for
    callers lacking them; card numbers are masked to first six / last four.
    """

    #: Mask values that look like card numbers (Luhn-valid runs of 13-19 digits).
    mask_pan: bool = True
    #: Scopes that see card numbers unmasked (a caller holding any one of them).
    reveal_pan_scopes: tuple[str, ...] = option((), parse=_parse_scope_list)
    #: Schema location → scopes a caller needs (all of them) to receive that property.
    #: (Written as a mapping; kept as sorted pairs, so the policy stays hashable.)
    property_scopes: tuple[tuple[str, tuple[str, ...]], ...] = option((), parse=_parse_property_scopes)


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenApiPolicy(Section):
    """The API's OpenAPI contract, enforced in both directions. Off until ``spec`` is set."""

    #: The OpenAPI 3.0 / 3.1 document (YAML or JSON), relative to the policy file.
    spec: str | None = option(None, parse=parse_file)
    #: Request validation: ``enforce`` refuses (400/415), ``report`` only records.
    mode: Mode = "enforce"
    #: Path the API is served under, replacing the path of the spec's ``servers`` URLs.
    base_path: str | None = None
    #: Treat the spec defects bankguard otherwise tolerates with a warning as load errors.
    strict: bool = False
    #: Require the OAuth2 scopes of each operation's ``security`` (decorators become optional).
    scopes_from_spec: bool = True
    #: Accept ``date-time`` query values without a UTC offset (``2024-05-01T09:30:00``), as the
    #: UK Open Banking specs ask clients to send date filters; bodies stay RFC 3339.
    query_date_time_without_offset: bool = False
    responses: ResponsesPolicy = field(default_factory=ResponsesPolicy)
    minimise: MinimisePolicy = field(default_factory=MinimisePolicy)

    def _check(self) -> None:
        if self.base_path is not None and (
            not self.base_path.startswith("/") or (self.base_path.endswith("/") and self.base_path != "/")
        ):
            raise ConfigurationError(
                "must start with '/' and not end with one, e.g. /open-banking/v4.0/aisp", path="base_path"
            )

    @property
    def configured(self) -> bool:
        return self.spec is not None
