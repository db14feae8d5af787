"""Parsing OpenAPI documents: YAML or JSON, with the defects of published specs detected.

OAS 3.0.3 §4.6 / 3.1.0 §4.7 (Format): YAML 1.2 is recommended, tags are limited to the JSON
schema ruleset and mapping keys must be strings. So the YAML loader resolves plain scalars with
the YAML 1.2 core schema (``yes``/``on`` and ``2024-01-01`` stay strings; PyYAML's YAML 1.1
defaults would turn them into a boolean and a date) and accepts no other tags. It uses libyaml
(``yaml.cyaml.CParser``) when available; only node construction runs in Python. JSON is parsed
with :mod:`json` (faster), rejecting ``NaN``/``Infinity``.

Detected while parsing, reported by :class:`._load.Documents` with their location: a key
repeated in one mapping (the last value is kept, as YAML and JSON parsers do) and a key that is
not a string (read as its string: an unquoted response code ``200`` becomes ``"200"``).
Unreadable files and text that is neither YAML nor JSON raise ``ConfigurationError``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import BaseResolver

from ..errors import ConfigProblem, ConfigurationError


def fail(where: str, message: str) -> NoReturn:
    """Raise ConfigurationError for ``where`` (a spec location)."""
    raise ConfigurationError([ConfigProblem(where, message)])


_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _Core12Resolver(BaseResolver):
    """YAML 1.2 core schema for plain scalars (null, bool, int, float; everything else a string)."""


_Core12Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Core12Resolver.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Core12Resolver.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_Core12Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Core12Resolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


@dataclass(slots=True)
class KeyDefect:
    mapping: dict[str, Any]
    key: str
    line: int | None
    kind: str  # "duplicate" | "number"
    original: Any = None


class _Constructor(SafeConstructor):
    yaml_constructors: ClassVar[dict[Any, Any]] = {}  # PyYAML's registry, filled below: no others
    key_defects: list[KeyDefect]

    def construct_core_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)

    def construct_core_float(self, node: yaml.ScalarNode) -> float:
        text = str(self.construct_scalar(node)).lower()
        if text.endswith(".inf"):
            return float("-inf") if text.startswith("-") else float("inf")
        if text == ".nan":
            return float("nan")
        return float(text)

    def construct_core_bool(self, node: yaml.ScalarNode) -> bool:
        return str(self.construct_scalar(node)).lower() == "true"

    def construct_map(self, node: yaml.MappingNode) -> Iterator[dict[str, Any]]:
        data: dict[str, Any] = {}
        yield data
        merged = 0
        if any(k.tag == "tag:yaml.org,2002:merge" for k, _ in node.value):
            own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
            self.flatten_mapping(node)
            merged = len(node.value) - own
        explicit: set[str] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=False)
            line = key_node.start_mark.line + 1 if key_node.start_mark else None
            if not isinstance(key, str):
                if isinstance(key, bool) or key is None:
                    text = json.dumps(key)
                elif isinstance(key, (int, float)):
                    text = str(key)
                else:
                    raise ConstructorError(None, None, "a mapping key must be a scalar", key_node.start_mark)
                self.key_defects.append(KeyDefect(data, text, line, "number", key))
                key = text
            if index >= merged:
                if key in explicit:
                    self.key_defects.append(KeyDefect(data, key, line, "duplicate"))
                explicit.add(key)
            data[key] = self.construct_object(value_node, deep=False)

    def construct_undefined(self, node: yaml.Node) -> NoReturn:
        raise ConstructorError(
            None, None, f"tag {node.tag!r} is not allowed (OAS §4.6: JSON schema tags only)", node.start_mark
        )


_register: Any = _Constructor.add_constructor
_register("tag:yaml.org,2002:null", SafeConstructor.construct_yaml_null)
_register("tag:yaml.org,2002:bool", _Constructor.construct_core_bool)
_register("tag:yaml.org,2002:int", _Constructor.construct_core_int)
_register("tag:yaml.org,2002:float", _Constructor.construct_core_float)
_register("tag:yaml.org,2002:str", SafeConstructor.construct_yaml_str)
_register("tag:yaml.org,2002:seq", SafeConstructor.construct_yaml_seq)
_register("tag:yaml.org,2002:map", _Constructor.construct_map)
_register(None, _Constructor.construct_undefined)

_CParser: Any = None
try:
    import yaml.cyaml

    _CParser = getattr(yaml.cyaml, "CParser", None)
except ImportError:  # pragma: no cover - libyaml is in the PyYAML wheels
    pass

if _CParser is not None:

    class _Loader(_CParser, _Constructor, _Core12Resolver):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            _Constructor.__init__(self)
            _Core12Resolver.__init__(self)
            self.key_defects = []

else:  # pragma: no cover - libyaml is in the PyYAML wheels
    from yaml.composer import Composer
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Loader(Reader, Scanner, Parser, Composer, _Constructor, _Core12Resolver):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            _Constructor.__init__(self)
            _Core12Resolver.__init__(self)
            self.key_defects = []


def _parse_yaml(text: str, label: str) -> tuple[Any, list[KeyDefect]]:
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        fail(label, f"not valid YAML or JSON{where}: {problem}")
    except (ValueError, RecursionError) as exc:
        fail(label, f"not valid YAML or JSON: {exc}")
    finally:
        loader.dispose()
    return data, loader.key_defects


def _parse_json(text: str, label: str, *, fallback: bool) -> tuple[Any, list[KeyDefect]]:
    defects: list[KeyDefect] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        data = dict(items)
        if len(data) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    defects.append(KeyDefect(data, key, None, "duplicate"))
                seen.add(key)
        return data

    def constant(name: str) -> NoReturn:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant), defects
    except json.JSONDecodeError as exc:
        if fallback:
            return _parse_yaml(text, label)
        fail(label, f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    except (ValueError, RecursionError) as exc:
        if fallback:
            return _parse_yaml(text, label)
        fail(label, f"not valid JSON: {exc}")


def parse_document(path: Path, label: str) -> tuple[Any, list[KeyDefect]]:
    """Parse one file (JSON when it looks like JSON, else YAML); hard errors raise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        fail(label, f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        fail(label, f"not UTF-8 text (byte {exc.start})")
    if path.suffix.lower() == ".json":
        return _parse_json(text, label, fallback=False)
    if text.lstrip().startswith("{"):  # JSON is much faster to parse than YAML
        return _parse_json(text, label, fallback=True)
    return _parse_yaml(text, label)
