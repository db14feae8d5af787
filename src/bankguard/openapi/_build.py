"""Building the operation contracts from an OpenAPI document's ``paths``.

Per path template (OAS 3.0.3 §4.7.8, 3.1.0 §4.8.8): the template must start with ``/`` and hold
well-formed ``{name}`` expressions, each name once (else ConfigurationError); a Path Item may be a
``$ref``; its ``parameters`` apply to every operation and an operation's own override them by
name and location (§4.7.9); the effective ``servers`` (operation, else path item, else the
document; or the ``base_path`` override) give the base paths; the effective ``security`` is the
operation's, else the document's (§4.7.10). Defects reported (warning, or error when strict): a
parameter declared twice in one list (the first is used), a template name without a path
parameter (checked as a non-empty string), a path parameter not in the template (ignored) or not
``required: true``, a style not defined for the location (§4.7.12.4; the default is used), a
parameter without schema or single-entry content, an undeclared security scheme, a response key
that is neither a status code, a range nor ``default`` (ignored), two templates equal up to
parameter names (§4.7.8), a malformed media type key (ignored), an operation without
``responses`` in 3.0.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlsplit

from ._load import Defects, Document, Documents, Ptr, fail, location
from ._params import DEFAULT_STYLE, STYLES, Param, is_json, media_type
from ._schema import Dialect, SchemaSet, date_time_offset_optional
from .contract import OperationContract, Resolver, ResponseContract, _Body, _Media, _Response

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: OAS 3.0.3 §4.7.12.1: header parameters with these names SHALL be ignored.
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
_TEMPLATE = re.compile(r"/(?:[^{}?#]|\{[^{}/?#]+\})*")
_VAR = re.compile(r"\{([^{}]*)\}")
_STATUS = re.compile(r"[1-5](?:[0-9][0-9]|XX)")


class Builder:
    """Walks the paths of the document into operation contracts."""

    def __init__(
        self,
        docs: Documents,
        defects: Defects,
        dialect: Dialect,
        base_path: str | None,
        query_date_time_without_offset: bool = False,
    ) -> None:
        self.docs = docs
        self.defects = defects
        self.dialect: Dialect = dialect
        self.requests = SchemaSet(docs, defects, dialect, "request")
        #: Query parameter schemas; their own set when date-times may come without an offset.
        self.query = (
            SchemaSet(docs, defects, dialect, "request", formats={"date-time": date_time_offset_optional})
            if query_date_time_without_offset
            else self.requests
        )
        self.responses = SchemaSet(docs, defects, dialect, "response")
        self.resolve = cast(Resolver, docs.resolve)
        root = docs.root.data
        self.override = None if base_path is None else (_normalise_base(base_path),)
        self.base_paths = (
            self.override or self._servers(root.get("servers"), docs.root, ("servers",)) or ("",)
        )
        self.schemes = self._schemes()
        self.security = (
            self._security(root["security"], docs.root, ("security",)) if "security" in root else None
        )

    def _at(self, node: Any, doc: Document, ptr: Ptr) -> tuple[Any, Document, Ptr]:
        return self.docs.deref(node, doc, ptr)

    def _object(self, node: Any, doc: Document, ptr: Ptr, what: str) -> dict[str, Any]:
        if not isinstance(node, dict):
            fail(location(doc.label, ptr), f"{what} must be an object")
        return node

    # Document-wide ---------------------------------------------------------------------------------

    def _schemes(self) -> dict[str, Mapping[str, Any]]:
        root = self.docs.root
        components = root.data.get("components")
        raw = components.get("securitySchemes") if isinstance(components, dict) else None
        if raw is None:
            return {}
        ptr: Ptr = ("components", "securitySchemes")
        self._object(raw, root, ptr, "securitySchemes")
        out: dict[str, Mapping[str, Any]] = {}
        for name, scheme in raw.items():
            node, doc, at = self._at(scheme, root, (*ptr, name))
            out[name] = self._object(node, doc, at, "a security scheme")
        return out

    def _security(
        self, value: Any, doc: Document, ptr: Ptr
    ) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], ...]:
        if not isinstance(value, list):
            fail(location(doc.label, ptr), "security must be an array of requirement objects")
        alternatives = []
        for i, requirement in enumerate(value):
            self._object(requirement, doc, (*ptr, i), "a security requirement")
            alternative = []
            for name, scopes in requirement.items():
                where = location(doc.label, (*ptr, i, name))
                if name not in self.schemes:
                    self.defects.add(
                        where, f"security scheme {name!r} is not declared in components.securitySchemes"
                    )
                scopes = [] if scopes is None else scopes
                if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                    fail(where, "scopes must be an array of strings")
                alternative.append((name, tuple(scopes)))
            alternatives.append(tuple(alternative))
        return tuple(alternatives)

    def _servers(self, value: Any, doc: Document, ptr: Ptr) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            fail(location(doc.label, ptr), "servers must be an array")
        out: list[str] = []
        for i, server in enumerate(value):
            url = server.get("url") if isinstance(server, dict) else None
            if not isinstance(url, str):
                fail(location(doc.label, (*ptr, i)), "a server needs a url")
            variables = server.get("variables") or {}

            def value_of(m: re.Match[str], variables: Any = variables) -> str:
                var = variables.get(m.group(1)) if isinstance(variables, dict) else None
                default = var.get("default") if isinstance(var, dict) else None
                return default if isinstance(default, str) else ""

            url = _VAR.sub(value_of, url)
            if "://" in url or url.startswith("//"):
                url = urlsplit(url).path
            out.append(_normalise_base(url.split("?", 1)[0].split("#", 1)[0]))
        return tuple(dict.fromkeys(out)) or None

    # Operations -------------------------------------------------------------------------------------

    def operations(self) -> list[OperationContract]:
        root = self.docs.root
        paths = root.data.get("paths")
        if paths is None:
            return []
        self._object(paths, root, ("paths",), "paths")
        out: list[OperationContract] = []
        shapes: dict[str, str] = {}
        for key, item in paths.items():
            if key.startswith("x-"):
                continue
            ptr: Ptr = ("paths", key)
            where = location(root.label, ptr)
            if not _TEMPLATE.fullmatch(key):
                fail(
                    where,
                    "malformed path template (it must start with '/', with balanced {name} expressions)",
                )
            names = _VAR.findall(key)
            if len(set(names)) != len(names):
                fail(where, "malformed path template: a parameter name appears twice")
            shape = _VAR.sub("{}", key)
            if shape in shapes:
                self.defects.add(
                    where, f"same path as {shapes[shape]!r} up to parameter names (OAS §4.7.8); both are kept"
                )
            shapes.setdefault(shape, key)
            node, doc, at = self._at(item, root, ptr)
            node = self._object(node, doc, at, "a path item")
            bases = self.override or self._servers(node.get("servers"), doc, (*at, "servers"))
            for method in _METHODS:
                if method in node:
                    out.extend(self._operation(key, names, method, node, doc, at, bases))
        return out

    def _operation(
        self,
        key: str,
        names: list[str],
        method: str,
        item: dict[str, Any],
        doc: Document,
        at: Ptr,
        bases: tuple[str, ...] | None,
    ) -> list[OperationContract]:
        ptr: Ptr = (*at, method)
        op = self._object(item[method], doc, ptr, "an operation")
        where = location(doc.label, ptr)
        params = self._parameters(
            [
                (item.get("parameters"), doc, (*at, "parameters")),
                (op.get("parameters"), doc, (*ptr, "parameters")),
            ]
        )
        declared = {p.name for p in params if p.where == "path"}
        for name in names:
            if name not in declared:
                self.defects.add(
                    where, f"path parameter {{{name}}} is not declared; it is checked as a non-empty string"
                )
                params.append(Param(name, "path", True, "simple", False))
        for p in [p for p in params if p.where == "path" and p.name not in names]:
            self.defects.add(where, f"parameter {p.name} (path) is not in the path template; ignored")
            params.remove(p)
        body = self._request_body(op.get("requestBody"), doc, (*ptr, "requestBody"))
        responses = self._responses(op.get("responses"), doc, (*ptr, "responses"))
        security = (
            self._security(op["security"], doc, (*ptr, "security")) if "security" in op else self.security
        )
        operation_id = op.get("operationId") if isinstance(op.get("operationId"), str) else None
        bases = (
            self.override
            or self._servers(op.get("servers"), doc, (*ptr, "servers"))
            or bases
            or self.base_paths
        )
        return [
            OperationContract(
                method.upper(), base + key, operation_id, security, tuple(params), body, responses
            )
            for base in bases
        ]

    def _parameters(self, levels: list[tuple[Any, Document, Ptr]]) -> list[Param]:
        merged: dict[tuple[str, str], Param] = {}
        for value, doc, ptr in levels:  # path-item level, then operation level (which overrides)
            if value is None:
                continue
            if not isinstance(value, list):
                fail(location(doc.label, ptr), "parameters must be an array")
            seen: set[tuple[str, str]] = set()
            for i, raw in enumerate(value):
                node, pdoc, pptr = self._at(raw, doc, (*ptr, i))
                name = node.get("name") if isinstance(node, dict) else None
                where_in = node.get("in") if isinstance(node, dict) else None
                if not isinstance(name, str) or where_in not in ("path", "query", "header", "cookie"):
                    fail(
                        location(doc.label, (*ptr, i)),
                        "a parameter needs a name and in: path, query, header or cookie",
                    )
                ident = (name.lower() if where_in == "header" else name, str(where_in))
                if ident in seen:
                    self.defects.add(
                        location(doc.label, (*ptr, i)),
                        f"parameter {name} ({where_in}) declared twice; the first is used",
                    )
                    continue
                seen.add(ident)
                if where_in == "header" and name.lower() in _IGNORED_HEADERS:
                    continue
                merged[ident] = self._parameter(node, pdoc, pptr)
        return list(merged.values())

    def _parameter(self, node: dict[str, Any], doc: Document, ptr: Ptr) -> Param:
        where = location(doc.label, ptr)
        name, where_in = node["name"], node["in"]
        style = node.get("style", DEFAULT_STYLE[where_in])
        if not isinstance(style, str) or style not in STYLES[where_in]:
            default = DEFAULT_STYLE[where_in]
            self.defects.add(
                where,
                f"style {style!r} is not defined for {where_in} parameters (OAS §4.7.12.4); "
                f"{default} is used",
            )
            style = default
        explode = node.get("explode", style == "form")
        required = node.get("required") is True
        if where_in == "path" and not required:
            self.defects.add(
                where, "a path parameter must have required: true (OAS §4.7.12.2); it is treated as required"
            )
            required = True
        param = Param(
            name,
            where_in,
            required,
            style,
            explode is True,
            allow_empty=where_in == "query" and node.get("allowEmptyValue") is True,
        )
        schema, content = node.get("schema"), node.get("content")
        if schema is not None:
            param.describe(schema, self.docs.resolve)
            schemas = self.query if where_in == "query" else self.requests
            param.compiled = schemas.add(schema, doc, (*ptr, "schema"))
        elif isinstance(content, dict) and len(content) == 1:
            key, media = next(iter(content.items()))
            media, mdoc, mptr = self._at(media, doc, (*ptr, "content", key))
            param.json_content = is_json(media_type(key) or "")
            inner = media.get("schema") if isinstance(media, dict) else None
            if param.json_content and inner is not None:
                param.compiled = self.requests.add(inner, mdoc, (*mptr, "schema"))
        else:
            self.defects.add(
                where,
                "a parameter needs a schema, or content with one media type (OAS §4.7.12.2); "
                "only its presence is checked",
            )
        return param

    def _request_body(self, value: Any, doc: Document, ptr: Ptr) -> _Body | None:
        if value is None:
            return None
        node, bdoc, bptr = self._at(value, doc, ptr)
        node = self._object(node, bdoc, bptr, "requestBody")
        content = self._object(node.get("content"), bdoc, (*bptr, "content"), "requestBody.content")
        media: dict[str, _Media] = {}
        for _key, mt, schema, mdoc, mptr in self._content(content, bdoc, (*bptr, "content")):
            if mt not in media:
                compiled = self.requests.add(schema, mdoc, (*mptr, "schema")) if schema is not None else None
                media[mt] = _Media(is_json(mt), compiled)
        return _Body(node.get("required") is True, media)

    def _content(
        self, content: dict[str, Any], doc: Document, ptr: Ptr
    ) -> list[tuple[str, str, Any, Document, Ptr]]:
        out = []
        for key, value in content.items():
            mt = media_type(key)
            if mt is None:
                self.defects.add(
                    location(doc.label, (*ptr, key)), f"media type {key!r} is malformed; ignored"
                )
                continue
            node, mdoc, mptr = self._at(value, doc, (*ptr, key))
            node = self._object(node, mdoc, mptr, "a media type object")
            out.append((key, mt, node.get("schema"), mdoc, mptr))
        return out

    def _responses(self, value: Any, doc: Document, ptr: Ptr) -> dict[str, _Response]:
        if value is None:
            if self.dialect == "oas30":
                self.defects.add(
                    location(doc.label, ptr[:-1]),
                    "responses is required in OAS 3.0 (§4.7.10); none is declared",
                )
            return {}
        self._object(value, doc, ptr, "responses")
        out: dict[str, _Response] = {}
        empty = ResponseContract(None, self.resolve, self.dialect, None)
        for code, raw in value.items():
            if code.startswith("x-"):
                continue
            norm = code if code == "default" else code.upper()
            if norm != "default" and not _STATUS.fullmatch(norm):
                self.defects.add(
                    location(doc.label, (*ptr, code)),
                    f"response code {code!r} is not a status code, a range such as 2XX, or default; ignored",
                )
                continue
            node, rdoc, rptr = self._at(raw, doc, (*ptr, code))
            node = self._object(node, rdoc, rptr, "a response")
            contracts: dict[str, ResponseContract] = {}
            content = node.get("content")
            if content is not None:
                self._object(content, rdoc, (*rptr, "content"), "content")
                for _key, mt, schema, mdoc, mptr in self._content(content, rdoc, (*rptr, "content")):
                    if mt not in contracts:
                        compiled = (
                            self.responses.add(schema, mdoc, (*mptr, "schema"))
                            if schema is not None
                            else None
                        )
                        contracts[mt] = ResponseContract(schema, self.resolve, self.dialect, compiled)
            out.setdefault(norm, _Response(contracts, empty))
        return out


def _normalise_base(path: str) -> str:
    """``"/open-banking/v4.0/aisp/"`` → ``"/open-banking/v4.0/aisp"``; ``"/"`` and ``""`` → ``""``."""
    path = path.strip()
    if not path:
        return ""
    normal = posixpath.normpath("/" + path.lstrip("/"))
    return "" if normal == "/" else normal.rstrip("/")
