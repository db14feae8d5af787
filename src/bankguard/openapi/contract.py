"""The OpenAPI contract of an API, compiled once: operations, parameters, bodies and responses.

:func:`load_contract` reads an OpenAPI 3.0.x or 3.1.x document (YAML or JSON, with local and
relative-file ``$ref``s, recursive schemas allowed), compiles every schema validator once at
load (never per request), and returns a :class:`Contract` whose :class:`OperationContract`\\ s
check requests (:meth:`OperationContract.check_request`) and find the declared response for a
status and media type (:meth:`OperationContract.response`).

Request checks, each failure a :class:`Violation` naming the location and the check, never the
submitted value:

* parameters (styles and coercion of strings: :mod:`._params`): ``required``, ``empty`` (a query
  value without ``allowEmptyValue``), ``duplicate`` (a non-array parameter sent twice),
  ``style`` (unreadable in its declared style), ``not_json`` (a ``content`` parameter), and the
  schema checks below; located ``path.AccountId``, ``query.ids/2``, ``header.x-request-id``,
  ``cookie.session``;
* the body's media type (OAS 3.0.3 §4.7.10, §4.7.13): parameters such as ``charset`` are
  ignored, ``type/*`` and ``*/*`` ranges are honoured; a body of an undeclared type, without a
  Content-Type, or with a range as Content-Type is ``content_type`` (415, at
  ``header.content-type``); a body on an operation that declares none is ``body_not_allowed``
  (415); a missing required body is ``body_required``;
* JSON bodies (``application/json`` and any ``+json``, RFC 6839 §3.1): strict RFC 8259 parsing
  (UTF-8 without BOM, no NaN/Infinity, finite numbers) else ``body_not_json``; a member name
  repeated in one object is ``body_duplicate_member`` (parsers disagree on which value wins);
  then the schema, located ``body/Data/Initiation/InstructedAmount/Amount``. Other declared media
  types (``application/jwt``, XML, multipart) are checked for their type only.
* schema checks are named by their keyword: ``type``, ``format``, ``enum``, ``pattern``,
  ``minimum``, ``maxLength``, ``additionalProperties``, ``oneOf``, ``anyOf``, ``readOnly``, ...

``Accept``, ``Content-Type`` and ``Authorization`` header parameters are ignored (OAS 3.0.3
§4.7.12.1). Unknown query parameters are allowed (OAS does not close the query string).

Schemas: OAS 3.0 as JSON Schema draft 4 after translation (``nullable``, ``readOnly`` /
``writeOnly``, Reference Object siblings, OAS annotations), OAS 3.1 as JSON Schema 2020-12
(:mod:`._schema`). Parsing: :mod:`._parse`; files and references: :mod:`._load`; operations:
:mod:`._build`. Spec defects and hard errors: :func:`load_contract`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

from ..request import Headers
from ._load import Defects, Documents, fail
from ._params import Param, Request, check_param, is_json, media_type, pick
from ._schema import Compiled, Dialect, failures

__all__ = [
    "Contract",
    "OperationContract",
    "ResponseContract",
    "Resolver",
    "Violation",
    "load_contract",
]

Resolver = Callable[[str], Mapping[str, Any]]

#: At most this many violations are returned for one request (and pointers for one response).
MAX_VIOLATIONS = 20
_VERSION = re.compile(r"3\.([01])\.[0-9]+(?:-[0-9A-Za-z.-]+)?")


@dataclass(frozen=True, slots=True)
class Violation:
    """One failed check, never the submitted value."""

    location: str  # "query.fromBookingDateTime", "header.x-fapi-interaction-id", "body/Data/Amount", ...
    code: str  # "required", "type", "format", "enum", "content_type", "body_required", ...
    status: int = 400  # 415 for an undeclared request media type


class ResponseContract:
    """A declared response body: its schema (as written) and its compiled validator."""

    __slots__ = ("_compiled", "dialect", "resolve", "schema")

    def __init__(
        self, schema: Mapping[str, Any] | None, resolve: Resolver, dialect: Dialect, compiled: Compiled | None
    ) -> None:
        self.schema = schema
        self.resolve = resolve
        self.dialect: Literal["oas30", "oas31"] = dialect
        self._compiled = compiled

    def validate(self, document: Any) -> list[str]:
        """JSON pointers (``/Data/Transaction/3/Amount``) of the failures, at most 20, no values."""
        validator = self._compiled.validator if self._compiled is not None else None
        if validator is None:
            return []
        out: list[str] = []
        for pointer, _ in failures(validator, document, MAX_VIOLATIONS):
            if pointer not in out:
                out.append(pointer)
        return out

    def __repr__(self) -> str:
        schema = "declared" if self.schema is not None else "none"
        return f"ResponseContract(dialect={self.dialect!r}, schema={schema})"


@dataclass(slots=True)
class _Media:
    json: bool
    compiled: Compiled | None


@dataclass(slots=True)
class _Body:
    required: bool
    media: dict[str, _Media]


@dataclass(slots=True)
class _Response:
    content: dict[str, ResponseContract]
    empty: ResponseContract


class OperationContract:
    """One operation (method and path template with the server base path)."""

    __slots__ = (
        "_body",
        "_claimed",
        "_params",
        "_plan",
        "_responses",
        "method",
        "operation_id",
        "path",
        "security",
    )

    def __init__(
        self,
        method: str,
        path: str,
        operation_id: str | None,
        security: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...] | None,
        params: tuple[Param, ...],
        body: _Body | None,
        responses: dict[str, _Response],
    ) -> None:
        self.method = method
        self.path = path
        self.operation_id = operation_id
        self.security = security
        self._params = params
        #: Each parameter with, for an optional header, its lower-case name (skipped when absent).
        self._plan = tuple(
            (p, p.name.lower() if p.where == "header" and not p.required else None) for p in params
        )
        self._claimed = frozenset(p.name for p in params if p.where == "query")
        self._body = body
        self._responses = responses

    def check_request(
        self,
        *,
        path_params: Mapping[str, str],
        query: str,
        headers: Headers,
        body: bytes | None,
        content_type: str | None,
    ) -> list[Violation]:
        """Every failed check of the request (at most 20); ``[]`` when it conforms."""
        out: list[Violation] = []
        if self._params:
            request = Request(path_params, query, headers, self._claimed)
            present = headers.by_name
            for param, optional_header in self._plan:
                if optional_header is not None and optional_header not in present:
                    continue  # an optional header that was not sent: nothing to check
                failed = check_param(param, request)
                if failed:
                    out.extend(Violation(where, code) for where, code in failed)
        out.extend(self._check_body(body, content_type))
        return out[:MAX_VIOLATIONS]

    def _check_body(self, body: bytes | None, content_type: str | None) -> list[Violation]:
        present = body is not None and len(body) > 0
        declared = self._body
        if declared is None:
            return [Violation("body", "body_not_allowed", 415)] if present else []
        if not present:
            return [Violation("body", "body_required")] if declared.required else []
        mt = media_type(content_type)
        # A Content-Type names one media type; a range ("application/*") is no media type.
        media = pick(declared.media, mt) if mt is not None and "*" not in mt else None
        if mt is None or media is None:
            return [Violation("header.content-type", "content_type", 415)]
        if not is_json(mt) or media.compiled is None or media.compiled.validator is None:
            return []
        try:
            document = json.loads(
                cast(bytes, body).decode("utf-8"),
                object_pairs_hook=_unique_members,
                parse_constant=_no_constant,
                parse_float=_finite,
            )
        except _DuplicateMember:
            return [Violation("body", "body_duplicate_member")]
        except (ValueError, RecursionError):
            return [Violation("body", "body_not_json")]
        return [
            Violation("body" + pointer, code)
            for pointer, code in failures(media.compiled.validator, document, MAX_VIOLATIONS)
        ]

    def response(self, status: int, content_type: str | None) -> ResponseContract | None:
        """The declared response: exact status, then ``2XX``-style range, then ``default``; and its
        media type: exact, then ``type/*``, then ``*/*``. None when undeclared. A response declared
        without content (204) gives a contract without schema whatever the media type."""
        declared = self._responses.get(str(status))
        if declared is None:
            declared = self._responses.get(f"{status // 100}XX")
            if declared is None:
                declared = self._responses.get("default")
                if declared is None:
                    return None
        if not declared.content:
            return declared.empty
        mt = media_type(content_type)
        return pick(declared.content, mt) if mt is not None else None

    def declared_responses(self) -> list[ResponseContract]:
        """Every declared response body (all status codes and media types), for precompiling."""
        return [contract for declared in self._responses.values() for contract in declared.content.values()]

    def __repr__(self) -> str:
        return f"OperationContract({self.method} {self.path})"


class _DuplicateMember(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateMember
    return out


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


class Contract:
    """A loaded, compiled OpenAPI document."""

    __slots__ = (
        "base_paths",
        "dialect",
        "load_seconds",
        "operations",
        "resolve",
        "security_schemes",
        "version",
        "warnings",
    )

    def __init__(
        self,
        version: str,
        dialect: Dialect,
        operations: tuple[OperationContract, ...],
        warnings: tuple[str, ...],
        security_schemes: Mapping[str, Mapping[str, Any]],
        base_paths: tuple[str, ...],
        load_seconds: float,
        resolve: Resolver,
    ) -> None:
        self.version = version
        self.dialect: Literal["oas30", "oas31"] = dialect
        self.operations = operations
        self.warnings = warnings
        self.security_schemes = security_schemes
        self.base_paths = base_paths
        self.load_seconds = load_seconds
        self.resolve = resolve

    def __repr__(self) -> str:
        return f"Contract(version={self.version!r}, operations={len(self.operations)})"


def load_contract(
    source: str | os.PathLike[str],
    *,
    base_path: str | None = None,
    strict: bool = False,
    query_date_time_without_offset: bool = False,
) -> Contract:
    """Load and compile an OpenAPI 3.0.x / 3.1.x document.

    ``base_path`` overrides the servers' paths. Documented spec defects (a key repeated in a
    mapping, a non-string key such as an unquoted response code, an enum value listed twice, a
    parameter declared twice for one operation, an undeclared or misplaced path parameter, an
    invalid style, an unknown security scheme, ``nullable`` in 3.1, ...) become
    :attr:`Contract.warnings`, each naming its location; ``strict=True`` raises
    :class:`~bankguard.errors.ConfigurationError` for the first instead. Unreadable files, text
    that is not YAML/JSON, a document that is not an object, a missing or unsupported
    ``openapi`` version, a ``$ref`` that cannot be resolved, a malformed path template and an
    invalid schema always raise ``ConfigurationError`` naming the location.
    """
    start = time.perf_counter()
    path = Path(os.fspath(source))
    defects = Defects(strict)
    docs = Documents(path, defects)
    root = docs.root.data
    version = root.get("openapi")
    if version is None and "swagger" in root:
        fail("swagger", "OpenAPI 2.0 (Swagger) is not supported; convert the document to OpenAPI 3")
    if not isinstance(version, str):
        fail("openapi", "missing, or not a version string such as '3.0.3'")
    match = _VERSION.fullmatch(version)
    if match is None:
        fail("openapi", f"version {version!r} is not supported (3.0.x and 3.1.x are)")
    dialect: Dialect = "oas30" if match.group(1) == "0" else "oas31"
    docs.scan_all()
    from ._build import Builder  # the builder constructs this module's classes

    builder = Builder(docs, defects, dialect, base_path, query_date_time_without_offset)
    operations = builder.operations()
    builder.requests.compile()
    if builder.query is not builder.requests:
        builder.query.compile()
    builder.responses.compile()
    return Contract(
        version=version,
        dialect=dialect,
        operations=tuple(operations),
        warnings=tuple(defects.items),
        security_schemes=builder.schemes,
        base_paths=builder.base_paths,
        load_seconds=time.perf_counter() - start,
        resolve=builder.resolve,
    )
