"""Request parameters and media types: parsing per style/explode, and coercion of string values.

Parameters arrive as strings; each is split according to its ``style``/``explode`` (OAS 3.0.3
§4.7.12.4, 3.1.0 §4.8.12.4, after RFC 6570) and every scalar is coerced to the type its schema
declares (``"42"`` → 42 for an integer, ``"true"`` → true for a boolean) before the schema
validates it. A string that does not parse as the declared type stays a string, so the schema
reports ``type``. Supported styles:

=========  ===============  ====================================================================
location   styles           forms (array / object)
=========  ===============  ====================================================================
path       simple (default) ``a,b`` / ``k,v,k,v`` (explode: ``k=v,k=v``)
           label            ``.a,b`` (explode: ``.a.b``) / ``.k,v`` (explode: ``.k=v.k=v``)
           matrix           ``;n=a,b`` (explode: ``;n=a;n=b``) / ``;n=k,v`` (explode: ``;k=v;k=v``)
query      form (default)   ``n=a&n=b`` (explode, default) or ``n=a,b``; object: ``k=v&k=v``
                            (explode: the declared properties are parameters) or ``n=k,v,k,v``
           spaceDelimited   ``n=a%20b``;  pipeDelimited ``n=a|b``
           deepObject       ``n[k]=v&n[k]=v``
header     simple           ``a, b`` (all field lines together) / ``k,v,k,v`` or ``k=v,k=v``
cookie     form             ``n=a,b`` (explode: the cookie repeated)
=========  ===============  ====================================================================

A query parameter sent with an empty value is refused unless ``allowEmptyValue`` is set
(§4.7.12.2); a parameter that is not an array and arrives more than once (``?a=1&a=2``, or a
header on two field lines) is refused as ``duplicate`` (HTTP parameter pollution: the
application might read either). Parameters ``content``-declared with a JSON media type are
parsed as JSON. Unknown query parameters are not refused (OAS does not close the query).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import parse_qsl

from ..request import Headers
from ._schema import failures

# RFC 9110 §8.3.1: media-type = type "/" subtype, each a token (RFC 9110 §5.6.2).
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA = re.compile(rf"({_TCHARS})/({_TCHARS})")
_INT = re.compile(r"-?[0-9]+", re.ASCII)
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?", re.ASCII)
#: Coercion order: the most specific reading of a string wins.
_ORDER = ("integer", "number", "boolean", "array", "object", "null", "string")
DEFAULT_STYLE = {"path": "simple", "query": "form", "header": "simple", "cookie": "form"}
STYLES = {
    "path": frozenset({"simple", "label", "matrix"}),
    "query": frozenset({"form", "spaceDelimited", "pipeDelimited", "deepObject"}),
    "header": frozenset({"simple"}),
    "cookie": frozenset({"form"}),
}


def media_type(value: str | None) -> str | None:
    """``"Application/JSON; charset=utf-8"`` → ``"application/json"``; None when malformed."""
    if value is None:
        return None
    main = value.split(";", 1)[0].strip().lower()
    return main if _MEDIA.fullmatch(main) else None


def is_json(mt: str) -> bool:
    """``application/json`` and every ``+json`` structured syntax suffix (RFC 6839 §3.1)."""
    return mt == "application/json" or mt.endswith("+json")


def pick(declared: Mapping[str, Any], mt: str) -> Any:
    """The entry for ``mt``: exact, then ``type/*``, then ``*/*`` (OAS §4.7.11 Content map)."""
    hit = declared.get(mt)
    if hit is None:
        hit = declared.get(mt.split("/", 1)[0] + "/*")
        if hit is None:
            hit = declared.get("*/*")
    return hit


# --- schema types, for coercion -----------------------------------------------------------------


def types_of(schema: Any, resolve: Callable[[str], Any], depth: int = 0) -> tuple[str, ...]:
    """The JSON types a schema admits, in coercion order (empty when it does not say)."""
    found: set[str] = set()
    schema = _deref(schema, resolve)
    if not isinstance(schema, dict) or depth > 16:
        return ()
    declared = schema.get("type")
    if isinstance(declared, str):
        found.add(declared)
    elif isinstance(declared, list):
        found.update(t for t in declared if isinstance(t, str))
    else:
        for key in ("allOf", "oneOf", "anyOf"):
            members = schema.get(key)
            if isinstance(members, list):
                for member in members:
                    found.update(types_of(member, resolve, depth + 1))
        if not found and isinstance(schema.get("enum"), list):
            found.update(_json_type(v) for v in schema["enum"])
    if "integer" in found and "number" in found:
        found.discard("integer")
    return tuple(t for t in _ORDER if t in found)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "null" if value is None else "string"


def _deref(schema: Any, resolve: Callable[[str], Any]) -> Any:
    for _ in range(32):
        if not (isinstance(schema, dict) and isinstance(schema.get("$ref"), str)):
            break
        try:
            schema = resolve(schema["$ref"])
        except LookupError:
            return None
    return schema


def coerce(text: str, types: tuple[str, ...]) -> Any:
    """``text`` as the first of ``types`` it parses as; unchanged when none fits."""
    for t in types:
        if t == "integer" and _INT.fullmatch(text):
            try:
                return int(text)
            except ValueError:  # beyond Python's int digit limit
                return text
        if t == "number" and _NUMBER.fullmatch(text):
            try:
                number = float(text)
            except ValueError:  # pragma: no cover - the pattern admits only floats
                return text
            if number in (float("inf"), float("-inf")):
                return text
            if _INT.fullmatch(text):
                try:
                    return int(text)
                except ValueError:
                    return text
            return number
        if t == "boolean" and text in ("true", "false"):
            return text == "true"
        if t == "string":
            return text
    return text


# --- parameters ------------------------------------------------------------------------------------


class _Bad(Exception):
    """A parameter that cannot be read in its declared style."""

    def __init__(self, code: str) -> None:
        self.code = code


def _bad(code: str) -> NoReturn:
    raise _Bad(code)


@dataclass(slots=True)
class Param:
    name: str
    where: str  # "path" | "query" | "header" | "cookie"
    required: bool
    style: str
    explode: bool
    allow_empty: bool = False
    shape: str = "primitive"  # "primitive" | "array" | "object"
    types: tuple[str, ...] = ()
    item_types: tuple[str, ...] = ()
    prop_types: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extra: bool = False  # object with explicit additionalProperties: unclaimed query keys are its own
    json_content: bool = False  # declared with `content` and a JSON media type
    compiled: Any = None  # _schema.Compiled, or None (presence is checked only)

    @property
    def label(self) -> str:
        return f"{self.where}.{self.name.lower() if self.where == 'header' else self.name}"

    def describe(self, schema: Any, resolve: Callable[[str], Any]) -> None:
        """Fill in the shape and the coercion types from the parameter's schema."""
        self.types = types_of(schema, resolve)
        target = _deref(schema, resolve)
        if "array" in self.types and "object" not in self.types:
            self.shape = "array"
            items = target.get("items") if isinstance(target, dict) else None
            self.item_types = types_of(items, resolve)
        elif "object" in self.types:
            self.shape = "object"
            props = target.get("properties") if isinstance(target, dict) else None
            if isinstance(props, dict):
                self.prop_types = {k: types_of(v, resolve) for k, v in props.items()}
            extra = target.get("additionalProperties") if isinstance(target, dict) else None
            self.extra = extra is True or isinstance(extra, dict)
            if isinstance(extra, dict):
                self.item_types = types_of(extra, resolve)


class Request:
    """The parts of a request the parameters come from, parsed lazily."""

    __slots__ = ("_cookies", "_pairs", "_query", "claimed", "headers", "path")

    def __init__(
        self, path: Mapping[str, str], query: str, headers: Headers, claimed: frozenset[str]
    ) -> None:
        self.path = path
        self._query = query
        self.headers = headers
        self.claimed = claimed  # query names declared by some parameter
        self._pairs: dict[str, list[str]] | None = None
        self._cookies: dict[str, list[str]] | None = None

    @property
    def query(self) -> dict[str, list[str]]:
        if self._pairs is None:
            pairs: dict[str, list[str]] = {}
            if self._query:
                for key, value in parse_qsl(self._query, keep_blank_values=True):
                    pairs.setdefault(key, []).append(value)
            self._pairs = pairs
        return self._pairs

    @property
    def cookies(self) -> dict[str, list[str]]:
        if self._cookies is None:
            jar: dict[str, list[str]] = {}
            for line in self.headers.get_all("cookie"):
                for part in line.split(";"):
                    name, eq, value = part.strip().partition("=")
                    if eq and name:
                        value = value.strip()
                        if len(value) >= 2 and value[0] == value[-1] == '"':
                            value = value[1:-1]
                        jar.setdefault(name.strip(), []).append(value)
            self._cookies = jar
        return self._cookies


def check_param(param: Param, request: Request) -> list[tuple[str, str]]:
    """``(location, check)`` failures of one parameter (location ``query.name`` or below it)."""
    try:
        raw = _extract(param, request)
        if raw is None:
            return [(param.label, "required")] if param.required else []
        value = _parse(param, raw)
    except _Bad as bad:
        return [(param.label, bad.code)]
    validator = param.compiled.validator if param.compiled is not None else None
    if validator is None:
        return []
    return [(param.label + pointer, code) for pointer, code in failures(validator, value)]


def _extract(param: Param, request: Request) -> Any:
    """The raw text(s) of the parameter, or None when absent."""
    if param.where == "path":
        value = request.path.get(param.name)
        if value is not None and value == "":
            _bad("empty")
        return value
    if param.where == "header":
        lines = request.headers.get_all(param.name.lower())
        return [v.strip() for v in lines] if lines else None
    if param.where == "cookie":
        return request.cookies.get(param.name)
    query = request.query
    if param.shape == "object" and param.style == "deepObject":
        prefix = param.name + "["
        found = {k: v for k, v in query.items() if k.startswith(prefix)}
        return found or None
    if param.shape == "object" and param.style == "form" and param.explode and not param.json_content:
        found = {k: v for k, v in query.items() if k in param.prop_types}
        if param.extra:
            found.update((k, v) for k, v in query.items() if k not in request.claimed)
        return found or None
    values = query.get(param.name)
    if values is not None and not param.allow_empty and any(v == "" for v in values):
        _bad("empty")
    return values


def _single(values: Any) -> str:
    if isinstance(values, str):
        return values
    if len(values) != 1:
        _bad("duplicate")
    return str(values[0])


def _parse(param: Param, raw: Any) -> Any:
    if param.json_content:
        try:
            return json.loads(_single(raw), parse_constant=_no_constant)
        except (ValueError, RecursionError):
            _bad("not_json")
    if param.shape == "array":
        return [coerce(item, param.item_types) for item in _items(param, raw)]
    if param.shape == "object":
        return {
            k: coerce(v, param.prop_types.get(k, param.item_types)) for k, v in _members(param, raw).items()
        }
    text = _single(raw)
    if param.where == "path":
        text = _unprefix(param, text)
    return coerce(text, param.types)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(name)


def _unprefix(param: Param, text: str) -> str:
    """Strip a label (``.``) or matrix (``;name=``) prefix."""
    if param.style == "label":
        if not text.startswith("."):
            _bad("style")
        return text[1:]
    if param.style == "matrix":
        head = f";{param.name}="
        if text == f";{param.name}":
            return ""
        if not text.startswith(head):
            _bad("style")
        return text[len(head) :]
    return text


def _items(param: Param, raw: Any) -> list[str]:
    if param.where == "header":
        return [item.strip() for item in ",".join(raw).split(",")]
    if param.where == "query" or param.where == "cookie":
        if param.style in ("spaceDelimited", "pipeDelimited"):
            return _single(raw).split(" " if param.style == "spaceDelimited" else "|")
        if param.explode:
            return list(raw)
        return _single(raw).split(",")
    text = _single(raw)  # path
    if param.style == "matrix" and param.explode:
        head = f";{param.name}="
        parts = text.split(";")[1:] if text.startswith(";") else _bad("style")
        return [p[len(head) - 1 :] if p.startswith(head[1:]) else _bad("style") for p in parts]
    text = _unprefix(param, text)
    if param.style == "label" and param.explode:
        return text.split(".")
    return text.split(",")


def _members(param: Param, raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):  # query: deepObject or exploded form
        out: dict[str, str] = {}
        for key, values in raw.items():
            if param.style == "deepObject":
                inner = key[len(param.name) + 1 : -1] if key.endswith("]") else ""
                if not inner or "[" in inner or "]" in inner:
                    _bad("style")
                key = inner
            out[key] = _single(values)
        return out
    if param.where == "header":
        text = ",".join(v.strip() for v in raw)
    elif param.where == "path":
        text = _single(raw)
        if param.style == "matrix" and param.explode:
            parts = text.split(";")[1:] if text.startswith(";") else _bad("style")
            return _pairs(parts)
        text = _unprefix(param, text)
        if param.style == "label" and param.explode:
            return _pairs(text.split("."))
    else:
        text = _single(raw)
    if param.explode and param.where in ("path", "header"):
        return _pairs(text.split(","))
    flat = text.split(",")
    if len(flat) % 2:
        _bad("style")
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _pairs(parts: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq:
            _bad("style")
        out[key.strip()] = value.strip()
    return out
