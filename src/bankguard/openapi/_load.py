"""The files of an OpenAPI document and ``$ref`` resolution (parsing: :mod:`._parse`).

Documented defects (a warning naming the location, or :class:`ConfigurationError` when strict):
a key repeated in one mapping (the last value is used, as YAML and JSON parsers do), a mapping
key that is not a string (a numeric response code read as an integer: it is read as its
string), an enum value listed twice. Hard errors: an unreadable file, text that is neither
YAML nor JSON, a ``$ref`` that cannot be resolved (remote URLs and ``$anchor``/``$id`` targets
included), a reference cycle.

References (RFC 3986 URI references with an RFC 6901 JSON pointer fragment) are resolved against
the file that holds them (OAS 3.0.3 §4.7.23). At load, every ``$ref`` of a file other than the
root is rewritten to be relative to the root file, so one resolver serves the whole tree and a
ref string found anywhere can be resolved without knowing which file held it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ..errors import ConfigurationError
from ._parse import KeyDefect, fail, parse_document

__all__ = ["Defects", "Document", "Documents", "Ptr", "fail", "location"]

Ptr = tuple[str | int, ...]

#: Keys whose value maps names to objects (never keywords): properties, paths, responses, ...
NAMED_MAPS = frozenset(
    {
        "properties",
        "patternProperties",
        "definitions",
        "$defs",
        "dependentSchemas",
        "schemas",
        "parameters",
        "responses",
        "headers",
        "requestBodies",
        "securitySchemes",
        "links",
        "callbacks",
        "pathItems",
        "paths",
        "webhooks",
        "content",
        "encoding",
        "variables",
        "mapping",
        "scopes",
    }
)
#: Keys whose value is literal data, not OpenAPI or schema objects.
_LITERAL = frozenset({"example", "enum", "const", "default"})


@dataclass
class Defects:
    """Documented spec defects: collected as warnings, or raised at once when strict."""

    strict: bool
    items: list[str] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        if self.strict:
            fail(where, message)
        text = f"{where}: {message}"
        if text not in self.items:
            self.items.append(text)


def location(label: str, ptr: Ptr) -> str:
    """``paths./accounts.get.parameters[3]``; prefixed with ``file:`` outside the root file."""
    out: list[str] = []
    for seg in ptr:
        out.append(f"[{seg}]" if isinstance(seg, int) else ("." if out else "") + seg)
    body = "".join(out)
    if label:
        return f"{label}:{body}" if body else label
    return body or "(root)"


# --- documents and references ------------------------------------------------------------------


@dataclass(eq=False)
class Document:
    path: Path
    rel: str  # path relative to the root file's directory, POSIX style; "" for the root
    label: str  # how warnings name this file ("" for the root)
    data: Any


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class Documents:
    """The root document and every file it references, with a ``$ref`` resolver."""

    def __init__(self, root: Path, defects: Defects) -> None:
        self.defects = defects
        self._dir = root.parent
        self._by_path: dict[Path, Document] = {}
        self._queue: list[Document] = []
        #: Resolved references: ref string (relative to the root) -> (document, pointer, target).
        self.targets: dict[str, tuple[Document, Ptr, Any]] = {}
        self._pending_keys: dict[int, list[KeyDefect]] = {}
        self._frozen = False
        self.root = self._open(root, "", root.name)
        if not isinstance(self.root.data, dict):
            fail(root.name, f"an OpenAPI document must be an object, not {_kind(self.root.data)}")

    # Loading ---------------------------------------------------------------------------------

    def _open(self, path: Path, rel: str, label: str) -> Document:
        key = path.resolve()
        doc = self._by_path.get(key)
        if doc is None:
            if self._frozen:  # after loading, resolving never reads another file
                fail(label, "not part of the loaded document")
            data, key_defects = parse_document(path, label or path.name)
            doc = Document(path, rel, "" if rel == "" else label, data)
            self._by_path[key] = doc
            self._pending_keys[id(doc)] = key_defects
            self._queue.append(doc)
        return doc

    def scan_all(self) -> None:
        """Walk every loaded file: report key and enum defects, rewrite and resolve every ``$ref``."""
        while self._queue:
            self._scan(self._queue.pop(0))
        self._frozen = True

    def _scan(self, doc: Document) -> None:
        pending: dict[int, list[KeyDefect]] = {}
        for d in self._pending_keys.pop(id(doc), []):
            pending.setdefault(id(d.mapping), []).append(d)
        refs: list[tuple[dict[str, Any], Ptr]] = []
        seen: set[int] = set()
        stack: list[tuple[Any, Ptr, bool]] = [(doc.data, (), False)]
        while stack:
            node, ptr, named = stack.pop()
            if isinstance(node, dict):
                if id(node) in seen:
                    continue
                seen.add(id(node))
                if pending and id(node) in pending:
                    self._report_keys(doc, ptr, pending.pop(id(node)))
                for key, value in node.items():
                    if not named:
                        if key == "$ref":
                            if not isinstance(value, str):
                                fail(location(doc.label, (*ptr, key)), "$ref must be a string")
                            refs.append((node, ptr))
                            continue
                        if key in _LITERAL or key.startswith("x-"):
                            if key == "enum" and isinstance(value, list):
                                self._check_enum(doc, (*ptr, key), value)
                            continue
                        if key == "examples":
                            if isinstance(value, dict):
                                for name, example in value.items():
                                    if isinstance(example, dict) and isinstance(example.get("$ref"), str):
                                        refs.append((example, (*ptr, key, name)))
                            continue
                    if isinstance(value, (dict, list)):
                        stack.append((value, (*ptr, key), (not named) and key in NAMED_MAPS))
            elif isinstance(node, list):
                if id(node) in seen:
                    continue
                seen.add(id(node))
                for index, value in enumerate(node):
                    if isinstance(value, (dict, list)):
                        stack.append((value, (*ptr, index), False))
        for defects in pending.values():  # inside literal data (examples): named by line only
            self._report_keys(doc, None, defects)
        for holder, ptr in refs:
            self._ref(doc, holder, ptr)

    def _report_keys(self, doc: Document, ptr: Ptr | None, defects: list[KeyDefect]) -> None:
        for d in defects:
            where = location(doc.label, ptr) if ptr is not None else (doc.label or self.root.path.name)
            if d.line is not None:
                where += f" (line {d.line})"
            if d.kind == "duplicate":
                self.defects.add(where, f"key {d.key!r} appears twice in one mapping; the last value is used")
            elif ptr is not None and ptr and ptr[-1] == "responses":
                self.defects.add(
                    where,
                    f"response code {d.original!r} is not a string (YAML reads it as a number; "
                    f"OAS §4.6 requires string keys); it is read as {d.key!r}",
                )
            else:
                self.defects.add(
                    where, f"key {d.original!r} is not a string (OAS §4.6); it is read as {d.key!r}"
                )

    def _check_enum(self, doc: Document, ptr: Ptr, values: list[Any]) -> None:
        seen: set[str] = set()
        for index, value in enumerate(values):
            key = json.dumps(value, sort_keys=True, default=str)
            if key in seen:
                self.defects.add(
                    location(doc.label, (*ptr, index)),
                    f"enum value {value!r} is listed twice; the duplicate is ignored",
                )
            seen.add(key)

    def _ref(self, doc: Document, holder: dict[str, Any], ptr: Ptr) -> None:
        ref = holder["$ref"]
        where = location(doc.label, (*ptr, "$ref"))
        canonical = self._canonical(doc, ref, where)
        if canonical != ref:
            holder["$ref"] = canonical
        if canonical not in self.targets:
            self.targets[canonical] = self._locate(canonical, where, ref)

    def _canonical(self, doc: Document, ref: str, where: str) -> str:
        """``ref`` (relative to ``doc``) rewritten relative to the root file."""
        if _SCHEME.match(ref) or ref.startswith("//"):
            fail(where, f"$ref {ref!r}: only local and relative-file references are supported")
        file_part, hash_, fragment = ref.partition("#")
        if fragment and not fragment.startswith("/"):
            fail(where, f"$ref {ref!r}: anchor references are not supported (use a JSON pointer)")
        if not file_part:
            if doc.rel == "":
                return ref
            target = doc.path.resolve()
        else:
            try:
                target = (doc.path.parent / unquote(urlsplit(file_part).path)).resolve()
            except (OSError, ValueError):
                fail(where, f"$ref {ref!r} cannot be resolved: not a file name")
        if target == self.root.path.resolve():
            return "#" + fragment
        rel = Path(os.path.relpath(target, self._dir.resolve())).as_posix()
        return quote(rel, safe="/") + (hash_ + fragment)

    def _locate(self, ref: str, where: str, written: str | None = None) -> tuple[Document, Ptr, Any]:
        file_part, _, fragment = ref.partition("#")
        written = ref if written is None else written
        if file_part:
            rel = unquote(file_part)
            path = self._dir / rel
            try:
                found = "\x00" not in rel and path.is_file()
            except (OSError, ValueError):
                found = False
            if not found:
                fail(where, f"$ref {written!r} cannot be resolved: no file {os.path.normpath(path)!r}")
            doc = self._open(path, rel, rel)
        else:
            doc = self.root
        node: Any = doc.data
        ptr: list[str | int] = []
        for raw in fragment.split("/")[1:] if fragment else []:
            token = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
                ptr.append(token)
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
                ptr.append(int(token))
            else:
                fail(where, f"$ref {written!r} cannot be resolved: {token!r} not found")
        return doc, tuple(ptr), node

    # Resolution -----------------------------------------------------------------------------

    def locate(self, ref: str) -> tuple[Document, Ptr, Any]:
        """The document, pointer and node a (root-relative) ref points to; KeyError if unknown."""
        hit = self.targets.get(ref)
        if hit is None:
            try:
                hit = self._locate(ref, "$ref")
            except ConfigurationError:
                raise KeyError(ref) from None
            self.targets[ref] = hit
        return hit

    def resolve(self, ref: str) -> Any:
        """The node ``ref`` points to (refs anywhere in the loaded tree are relative to the root)."""
        return self.locate(ref)[2]

    def deref(self, node: Any, doc: Document, ptr: Ptr) -> tuple[Any, Document, Ptr]:
        """Follow a chain of Reference Objects to the object itself (for non-schema objects)."""
        hops = 0
        start = location(doc.label, ptr)
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            hops += 1
            if hops > 64:
                fail(start, "$ref chain too long or cyclic")
            doc, ptr, node = self.locate(node["$ref"])
        return node, doc, ptr


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "null" if value is None else type(value).__name__
