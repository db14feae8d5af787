"""YAML loading for policies: safe, and strict about duplicate keys.

PyYAML keeps the last of two equal keys without a word; in a security policy that
silently drops a setting, so a duplicate key is a configuration error here.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigurationError


class _StrictLoader(yaml.SafeLoader):
    pass


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            kind = type(key).__name__
            raise ConfigurationError(f"line {line}: mapping keys must be plain scalars, not {kind}")
        if key in seen:
            raise ConfigurationError(f"duplicate key {key!r} at line {line} (first at line {seen[key]})")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_strict(text: str) -> Any:
    """Parse YAML text; syntax errors and duplicate keys raise ConfigurationError."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader subclasses yaml.SafeLoader  # nosec B506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigurationError(f"YAML syntax error{where}: {problem}") from None
