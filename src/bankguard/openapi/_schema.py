"""OpenAPI Schema Objects as JSON Schema, compiled once with jsonschema-rs.

OAS 3.0 (§4.7.24) schemas are validated as JSON Schema draft 4 after this translation:

* ``nullable: true`` admits ``null``: ``"null"`` joins ``type`` and ``enum``; when the schema
  composes others (``allOf``/``anyOf``/``oneOf``/``not``) it is wrapped as
  ``anyOf: [{type: null}, schema]``. (3.0.3 says ``nullable`` only acts beside ``type``; earlier
  3.0 releases, and the specs written against them, expect ``nullable`` + ``allOf`` to work, so
  it acts in both cases.)
* A Reference Object's siblings are ignored (§4.7.23: "any properties added SHALL be ignored").
* ``discriminator``, ``xml``, ``externalDocs``, ``example``, ``deprecated`` and ``x-*`` are
  dropped: annotations only; ``oneOf`` is still validated by JSON Schema semantics (exactly one).
* ``exclusiveMinimum``/``exclusiveMaximum`` are booleans already, as in draft 4.
* ``format: int32``/``int64`` add the type's bounds unless ``minimum``/``maximum`` are set.

OAS 3.1 (§4.8.24) schemas are JSON Schema 2020-12 and are validated as they are (``nullable``
is not a 3.1 keyword: it is reported as a spec defect and ignored).

Both dialects, by direction (OAS 3.0.3 §4.7.24 ``readOnly``/``writeOnly``; JSON Schema
Validation 2020-12 §9.4): a ``readOnly`` property is not required in a request, and a request
that sends one is refused (code ``readOnly``: a client must not set server-managed fields,
OWASP API3:2023 mass assignment); a ``writeOnly`` property is not required in a response, and a
response that carries one is refused (code ``writeOnly``: a secret the client sent must not be
echoed back). The requirement is lifted only for properties declared ``readOnly``/``writeOnly``
directly or through ``$ref``, not for ones declared so inside an ``allOf`` member.

Formats are asserted (``date-time``, ``date``, ``time`` per RFC 3339, ``uuid`` per RFC 9562,
``email``, ``ipv4``, ``uri``, ...); unknown formats (``byte``, ``url``, ``float``) are ignored.
Draft 4 has no ``uuid``; a format function adds it for OAS 3.0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, NoReturn

import jsonschema_rs

from ._load import Defects, Document, Documents, Ptr, fail, location

Dialect = Literal["oas30", "oas31"]
Direction = Literal["request", "response"]

#: Keywords whose value is one schema, a list of schemas, or a map of names to schemas.
_ONE = frozenset(
    {
        "additionalProperties",
        "additionalItems",
        "items",
        "not",
        "contains",
        "propertyNames",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
_MAP = frozenset({"properties", "patternProperties", "definitions", "$defs", "dependentSchemas"})
_OAS30_ANNOTATIONS = frozenset({"nullable", "discriminator", "xml", "externalDocs", "example", "deprecated"})
_COMPOSED = ("allOf", "anyOf", "oneOf", "not")
_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

#: Base of the registry URIs of translated ``$ref`` targets (never fetched: retrieval is refused).
BUNDLE_BASE = "https://bankguard.invalid/schema/"


class Translator:
    """Translates one dialect's schemas for one direction (requests or responses).

    ``ref`` maps each ``$ref`` string to the reference to emit (identity when None);
    ``resolve`` returns a ref's target (to see ``readOnly``/``writeOnly`` behind a ``$ref``);
    ``warn(path, message)`` reports spec defects, ``path`` relative to the translated root.
    ``oas=False`` turns the OpenAPI-specific rules off (plain JSON Schema).
    """

    def __init__(
        self,
        dialect: Dialect,
        direction: Direction,
        *,
        oas: bool = True,
        ref: Callable[[str], str] | None = None,
        resolve: Callable[[str], Any] | None = None,
        warn: Callable[[tuple[str | int, ...], str], None] | None = None,
    ) -> None:
        self.dialect = dialect
        self.direction = direction
        self.oas = oas
        self._ref = ref
        self._resolve = resolve
        self._warn = warn
        self._hidden = "readOnly" if direction == "request" else "writeOnly"
        self._active: set[int] = set()
        self._path: list[str | int] = []
        self._warned: set[int] = set()

    def schema(self, node: Any) -> Any:
        if not isinstance(node, dict):
            return node  # a boolean schema (3.1), or an invalid one the compiler reports
        ref = node.get("$ref")
        if isinstance(ref, str) and self.oas and self.dialect == "oas30":
            return {"$ref": self._ref(ref) if self._ref else ref}
        key = id(node)
        if key in self._active:
            raise RecursionError("an inline schema contains itself (a YAML alias cycle); use $ref")
        self._active.add(key)
        try:
            out: dict[str, Any] = {}
            for name, value in node.items():
                if self.oas and (
                    name.startswith("x-") or (self.dialect == "oas30" and name in _OAS30_ANNOTATIONS)
                ):
                    continue
                if name == "$ref" and isinstance(value, str):
                    out[name] = self._ref(value) if self._ref else value
                elif name in _MAP and isinstance(value, dict):
                    out[name] = {k: self._child(v, name, k) for k, v in value.items()}
                elif name in _LIST and isinstance(value, list):
                    out[name] = [self._child(v, name, i) for i, v in enumerate(value)]
                elif name in _ONE:
                    out[name] = self._child(value, name)
                elif name == "dependencies" and isinstance(value, dict):
                    out[name] = {
                        k: self._child(v, name, k) if isinstance(v, dict) else v for k, v in value.items()
                    }
                else:
                    out[name] = value
            return self._oas(node, out) if self.oas else out
        finally:
            self._active.discard(key)

    def _child(self, node: Any, *where: str | int) -> Any:
        self._path.extend(where)
        try:
            return self.schema(node)
        finally:
            del self._path[-len(where) :]

    def _oas(self, node: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        props = node.get("properties")
        required = out.get("required")
        if isinstance(props, dict) and isinstance(required, list):
            hidden = {name for name, s in props.items() if self._flagged(s)}
            if hidden:
                kept = [r for r in required if r not in hidden]
                if kept:
                    out["required"] = kept
                else:
                    del out["required"]
        fmt = node.get("format")
        if fmt in _BOUNDS and _has_type(node, ("integer", "number")):
            low, high = _BOUNDS[fmt]
            out.setdefault("minimum", low)
            out.setdefault("maximum", high)
        if "nullable" in node:
            if self.dialect == "oas31":
                if self._warn is not None and id(node) not in self._warned:
                    self._warned.add(id(node))
                    self._warn(
                        tuple(self._path),
                        "nullable is not an OAS 3.1 keyword (use type: [..., 'null']); ignored",
                    )
            elif node["nullable"] is True:
                return _nullable(out)
        return out

    def _flagged(self, schema: Any) -> bool:
        """Whether a property schema is readOnly (requests) / writeOnly (responses)."""
        for _ in range(32):
            if not isinstance(schema, dict):
                return False
            if schema.get(self._hidden) is True:
                return True
            ref = schema.get("$ref")
            if not isinstance(ref, str) or self._resolve is None:
                return False
            try:
                schema = self._resolve(ref)
            except LookupError:
                return False
        return False


def _has_type(node: dict[str, Any], names: Iterable[str]) -> bool:
    t = node.get("type")
    return any(n == t or (isinstance(t, list) and n in t) for n in names)


def _nullable(out: dict[str, Any]) -> dict[str, Any]:
    t = out.get("type")
    if any(k in out for k in _COMPOSED) or not (t is None or isinstance(t, str)):
        return {"anyOf": [{"type": "null"}, out]}
    if isinstance(t, str):
        out["type"] = [t, "null"]
    enum = out.get("enum")
    if isinstance(enum, list) and not any(v is None for v in enum):
        out["enum"] = [*enum, None]
    return out


# --- compiling ---------------------------------------------------------------------------------


class _Refuse:
    """A custom keyword that refuses any instance when its value is true (readOnly/writeOnly)."""

    keyword = ""

    def __init__(self, parent_schema: dict[str, Any], value: Any, schema_path: list[str | int]) -> None:
        self.on = value is True

    def validate(self, instance: Any) -> None:
        if self.on:
            raise ValueError(f"{self.keyword} property sent")


class _RefuseReadOnly(_Refuse):
    keyword = "readOnly"


class _RefuseWriteOnly(_Refuse):
    keyword = "writeOnly"


def _is_uuid(value: str) -> bool:
    return _UUID.fullmatch(value) is not None


_LOCAL_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,9})?"
)
_OFFSET = re.compile(r"[Zz]|[+-][0-9]{2}:[0-9]{2}")


def date_time_offset_optional(value: str) -> bool:
    """RFC 3339 ``date-time``, or the same without its offset (an ISO 8601 local date-time,
    ``2024-05-01T09:30:00``), as UK Open Banking asks clients to send date filters; the date and
    the time must still exist (no 2024-02-30, no 25:00)."""
    import datetime as _dt

    m = _LOCAL_DATE_TIME.match(value)
    if m is None:
        return False
    rest = value[m.end() :]
    if rest and not _OFFSET.fullmatch(rest):
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    try:
        _dt.datetime(year, month, day, hour, minute, min(second, 59))  # a leap second is allowed
    except ValueError:
        return False
    return second <= 60 and (not rest or rest in "Zz" or (int(rest[1:3]) < 24 and int(rest[4:6]) < 60))


def _no_retrieval(uri: str) -> NoReturn:
    raise ValueError(f"schema {uri!r} is not part of the spec; nothing is fetched")


def validator_class(dialect: Dialect) -> type[jsonschema_rs.Validator]:
    return jsonschema_rs.Draft4Validator if dialect == "oas30" else jsonschema_rs.Draft202012Validator


def draft_of(dialect: Dialect) -> int:
    return jsonschema_rs.Draft4 if dialect == "oas30" else jsonschema_rs.Draft202012


def compile_translated(
    schema: Any,
    *,
    dialect: Dialect,
    direction: Direction,
    oas: bool = True,
    registry: jsonschema_rs.Registry | None = None,
    retriever: Callable[[str], Any] | None = None,
    formats: Mapping[str, Callable[[str], bool]] | None = None,
) -> jsonschema_rs.Validator:
    """Compile an already translated schema (raises jsonschema_rs.ValidationError if invalid)."""
    keywords: dict[str, type[Any]] = {}
    checks: dict[str, Callable[[str], bool]] = {"uuid": _is_uuid} if dialect == "oas30" else {}
    checks.update(formats or {})
    if oas:
        keywords["readOnly" if direction == "request" else "writeOnly"] = (
            _RefuseReadOnly if direction == "request" else _RefuseWriteOnly
        )
    return validator_class(dialect)(
        schema,
        formats=checks or None,
        validate_formats=True,
        ignore_unknown_formats=True,
        retriever=retriever or _no_retrieval,
        registry=registry,
        keywords=keywords or None,
    )


def compile_schema(
    schema: Any,
    *,
    dialect: Dialect,
    direction: Direction,
    oas: bool = True,
    retriever: Callable[[str], Any] | None = None,
) -> jsonschema_rs.Validator:
    """Translate and compile one self-contained schema (its ``$ref``s stay as written)."""
    translated = Translator(dialect, direction, oas=oas).schema(schema)
    return compile_translated(translated, dialect=dialect, direction=direction, oas=oas, retriever=retriever)


# --- errors ------------------------------------------------------------------------------------

_MAX_SEGMENT = 64


def _segment(value: str | int) -> str:
    text = str(value)
    if len(text) > _MAX_SEGMENT:
        text = text[:_MAX_SEGMENT] + "…"
    return text.replace("~", "~0").replace("/", "~1")


def failures(validator: jsonschema_rs.Validator, instance: Any, limit: int = 20) -> list[tuple[str, str]]:
    """``(JSON pointer, check)`` of each failure, at most ``limit``; ``[]`` when valid.

    A missing required property is reported at its own pointer (``/Data/Amount``, ``required``);
    an unexpected one at its object's (the name was chosen by the sender: never echoed). An
    instance that is not JSON data at all is one failure at the root, ``("", "type")``.
    """
    try:
        if validator.is_valid(instance):
            return []
        out: list[tuple[str, str]] = []
        for error in validator.iter_errors(instance):
            pointer = "".join("/" + _segment(s) for s in error.instance_path)
            kind = error.kind
            if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
                pointer += "/" + _segment(kind.property)
            out.append((pointer, kind.name))
            if len(out) >= limit:
                break
        return out or [("", "type")]
    except (ValueError, TypeError, OverflowError, RecursionError):
        return [("", "type")]


# --- the schemas of one spec -------------------------------------------------------------------


class Compiled:
    """One schema of the spec: its translation, and (after :meth:`SchemaSet.compile`) its validator."""

    __slots__ = ("translated", "validator", "where")

    def __init__(self, translated: Any, where: str) -> None:
        self.translated = translated
        self.where = where
        self.validator: jsonschema_rs.Validator | None = None


class SchemaSet:
    """The spec's schemas for one direction: translated once, ``$ref`` targets registered once
    in a shared registry, every validator compiled once at load (never per request)."""

    def __init__(
        self,
        docs: Documents,
        defects: Defects,
        dialect: Dialect,
        direction: Direction,
        formats: Mapping[str, Callable[[str], bool]] | None = None,
    ) -> None:
        self._formats = formats
        self._docs = docs
        self._defects = defects
        self.dialect: Dialect = dialect
        self.direction: Direction = direction
        self._uris: dict[str, str] = {}
        self._queue: list[tuple[str, Document, Ptr, Any]] = []
        self._resources: list[tuple[str, Any]] = []
        self._where: dict[str, str] = {}
        self._compiled: dict[object, Compiled] = {}

    def add(self, node: Any, doc: Document, ptr: Ptr) -> Compiled:
        """Register the schema ``node`` found at ``ptr`` of ``doc``; shared nodes are compiled once."""
        ref = node.get("$ref") if isinstance(node, dict) else None
        key: object = id(node)
        if isinstance(ref, str) and (self.dialect == "oas30" or len(node) == 1):
            key = ref  # the same $ref written in several places compiles once
        item = self._compiled.get(key)
        if item is None:
            item = Compiled(self._translate(node, doc, ptr), location(doc.label, ptr))
            self._compiled[key] = item
        return item

    def _translate(self, node: Any, doc: Document, ptr: Ptr) -> Any:
        def warn(path: tuple[str | int, ...], message: str) -> None:
            self._defects.add(location(doc.label, ptr + path), message)

        translator = Translator(
            self.dialect, self.direction, ref=self._ref, resolve=self._docs.resolve, warn=warn
        )
        try:
            return translator.schema(node)
        except RecursionError as exc:
            fail(location(doc.label, ptr), str(exc))

    def _ref(self, ref: str) -> str:
        uri = self._uris.get(ref)
        if uri is None:
            try:
                doc, ptr, node = self._docs.locate(ref)
            except KeyError:
                fail("$ref", f"$ref {ref!r} cannot be resolved")
            uri = f"{BUNDLE_BASE}{self.direction}/{len(self._uris)}"
            self._uris[ref] = uri
            self._where[uri] = location(doc.label, ptr)
            self._queue.append((uri, doc, ptr, node))
        return uri

    def compile(self) -> None:
        while self._queue:
            uri, doc, ptr, node = self._queue.pop()
            self._resources.append((uri, self._translate(node, doc, ptr)))
        registry = None
        if self._resources:
            try:
                registry = jsonschema_rs.Registry(
                    self._resources, draft=draft_of(self.dialect), retriever=_no_retrieval
                )
            except (ValueError, TypeError) as exc:
                fail("components", f"the schemas cannot be registered: {_first_line(exc)}")
        for item in self._compiled.values():
            if item.validator is None:
                try:
                    item.validator = self._compile(item.translated, registry)
                except (ValueError, TypeError) as exc:
                    self._blame(item, registry, exc)

    def _compile(self, schema: Any, registry: jsonschema_rs.Registry | None) -> jsonschema_rs.Validator:
        return compile_translated(
            schema, dialect=self.dialect, direction=self.direction, registry=registry, formats=self._formats
        )

    def _blame(self, item: Compiled, registry: jsonschema_rs.Registry | None, exc: Exception) -> NoReturn:
        """Name the schema that failed to compile: the root itself, or one it references."""
        for uri, resource in self._resources:
            try:
                self._compile(resource, registry)
            except (ValueError, TypeError) as inner:
                fail(self._where[uri], f"invalid schema: {_first_line(inner)}")
        fail(item.where, f"invalid schema: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
