"""Strict conversion of plain data (parsed YAML, dicts) into frozen policy dataclasses.

Every problem is collected with the YAML path of the offending key, so one run of
``bankguard check-policy`` reports all of them. Nothing here is used per request.
"""

from __future__ import annotations

import contextvars
import dataclasses
import ipaddress
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ConfigProblem, ConfigurationError

T = TypeVar("T")

Parser = Callable[[object, str], object]


class Invalid(Exception):
    """One value is wrong; carries the path and the message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.problem = ConfigProblem(path, message)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def option(default: Any = dataclasses.MISSING, *, parse: Parser | None = None, **kw: Any) -> Any:
    """A dataclass field whose raw value goes through ``parse(value, path)`` first."""
    metadata = {"parse": parse} if parse is not None else {}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kw)
    if isinstance(default, (list, dict, set)):
        raise TypeError("use default_factory for mutable defaults")
    return dataclasses.field(default=default, metadata=metadata, **kw)


def describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) if not isinstance(a, str) else a for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp) if a is not type(None)) + " or null"
    if origin is tuple:
        return f"a list of {describe(get_args(tp)[0])}"
    if origin in (dict, Mapping, typing.Mapping):
        return f"a mapping of {describe(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def convert(tp: Any, value: object, path: str, parse: Parser | None = None) -> object:
    if parse is not None:
        if value is None and get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp):
            return None
        return parse(value, path)
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if isinstance(value, bool) or value not in allowed:
            raise Invalid(path, f"{value!r} is not allowed; use one of: {describe(tp)}")
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        if len(args) == 1:
            return convert(args[0], value, path)
        raise TypeError(f"unsupported union {tp}")  # pragma: no cover - policy authoring error
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise Invalid(path, f"expected {describe(tp)}, got {type_name(value)}")
        (item,) = get_args(tp)[:1]
        return tuple(_convert_all(item, enumerate(value), path))
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise Invalid(path, f"expected {describe(tp)}, got {type_name(value)}")
        _, vt = get_args(tp)
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise Invalid(path, f"key {bad[0]!r} must be a string")
        converted = _convert_all(vt, value.items(), path)
        return types.MappingProxyType(dict(zip(value, converted, strict=True)))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        return build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise Invalid(path, f"expected true or false, got {type_name(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(path, f"expected an integer, got {type_name(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(path, f"expected a number, got {type_name(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise Invalid(path, f"expected a string, got {type_name(value)}")
        return value
    if tp is object or tp is Any:
        return value
    raise TypeError(f"no converter for {tp!r} at {path}")  # pragma: no cover


def _convert_all(tp: Any, items: Iterable[tuple[Any, object]], path: str) -> list[object]:
    """Convert every item, collecting the problems of all of them."""
    out: list[object] = []
    problems: list[ConfigProblem] = []
    for key, value in items:
        try:
            out.append(convert(tp, value, join(path, key)))
        except Invalid as exc:
            problems.append(exc.problem)
        except ConfigurationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigurationError(problems)
    return out


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return {int: "an integer", float: "a number", str: "a string"}.get(type(value), type(value).__name__)


_HINTS: dict[type, dict[str, Any]] = {}


def hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def build(cls: type[T], data: object, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; collect every problem with its path."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigurationError([ConfigProblem(path, f"expected a mapping, got {type_name(data)}")])
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    problems: list[ConfigProblem] = []
    for key in data:
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "(none)"
            problems.append(ConfigProblem(join(path, str(key)), f"unknown key; allowed here: {allowed}"))
    kwargs: dict[str, object] = {}
    types_ = hints(cls)
    missing = False
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(ConfigProblem(join(path, name), "is required"))
                missing = True
            continue
        try:
            kwargs[name] = convert(types_[name], data[name], join(path, name), f.metadata.get("parse"))
        except Invalid as exc:
            problems.append(exc.problem)
        except ConfigurationError as exc:
            problems.extend(exc.problems)
    if not missing and len(kwargs) + sum(1 for k in fields if k not in data) == len(fields):
        # Every present field converted: run the cross-field checks too, so one pass
        # reports unknown keys and contradictions together.
        try:
            instance = cls(**kwargs)
        except ConfigurationError as exc:
            # Cross-field checks raise paths relative to the section; anchor them.
            problems.extend(ConfigProblem(_anchor(path, p.path), p.message) for p in exc.problems)
        else:
            if not problems:
                return instance
    raise ConfigurationError(problems)


class Section:
    """Base of every policy dataclass: values are converted and validated on construction,
    whether the policy comes from YAML or is built in Python. Subclasses put cross-field
    rules in :meth:`_check` and raise ConfigurationError with paths relative to themselves."""

    __slots__ = ()

    def __post_init__(self) -> None:
        check_fields(self)
        self._check()

    def _check(self) -> None:
        return None


def check_fields(instance: Any) -> None:
    """Convert and validate every field of a dataclass instance in place."""
    problems: list[ConfigProblem] = []
    types_ = hints(type(instance))
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        try:
            new = convert(types_[f.name], value, f.name, f.metadata.get("parse"))
        except Invalid as exc:
            problems.append(exc.problem)
        except ConfigurationError as exc:
            problems.extend(exc.problems)
        else:
            if new is not value:
                object.__setattr__(instance, f.name, new)
    if problems:
        raise ConfigurationError(problems)


def _anchor(base: str, rel: str) -> str:
    if not base:
        return rel
    if not rel:
        return base
    return f"{base}{rel}" if rel.startswith("[") else f"{base}.{rel}"


# -- value parsers -------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*([0-9]+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


def parse_size(value: object, path: str) -> int:
    """``65536``, ``"64KiB"`` or ``"1MB"`` → bytes (a positive integer)."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        n = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise Invalid(path, f"expected a size such as 65536, '64KiB' or '1MB', got {value!r}")
    if n <= 0:
        raise Invalid(path, "must be greater than zero")
    return n


#: Shortest prefixes accepted for trusted proxies: anything wider trusts much of the Internet.
MIN_PROXY_PREFIX = {4: 8, 6: 16}
_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def parse_networks(value: object, path: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A list of CIDRs or addresses (strings or ``ipaddress`` networks).

    Networks wider than /8 (IPv4) or /16 (IPv6), ``0.0.0.0/0`` and ``::/0`` included,
    are refused: they would let most of the Internet forge forwarding headers (CFG-04).
    """
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid(path, f"expected a list of networks such as 10.0.0.0/8, got {type_name(value)}")
    out = []
    problems = []
    for i, item in enumerate(value):
        p = join(path, i)
        if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            net = item
        elif isinstance(item, str):
            try:
                net = ipaddress.ip_network(item.strip(), strict=True)
            except ValueError as exc:
                problems.append(ConfigProblem(p, f"{item!r} is not a network: {exc}"))
                continue
        else:
            problems.append(ConfigProblem(p, f"expected a network such as 10.0.0.0/8, got {type_name(item)}"))
            continue
        minimum = MIN_PROXY_PREFIX[net.version]
        if net.version == 6 and net.subnet_of(_IPV4_MAPPED):  # type: ignore[arg-type]
            minimum = 96 + MIN_PROXY_PREFIX[4]  # ::ffff:a.b.c.d/n covers IPv4 space
        if net.prefixlen < minimum:
            problems.append(
                ConfigProblem(
                    p,
                    f"{str(net)!r} is too wide to trust (shorter than /{minimum}); "
                    "list your proxies' networks",
                )
            )
            continue
        out.append(net)
    if problems:
        raise ConfigurationError(problems)
    return tuple(out)


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*\Z")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object, path: str) -> float:
    """``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` → seconds (not negative)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise Invalid(path, f"expected a duration such as 30, '30s', '5m' or '500ms', got {value!r}")
    if not 0 <= seconds < 10**9:
        raise Invalid(path, "must be a non-negative number of seconds")
    return seconds


def parse_url(value: object, path: str) -> str:
    """An absolute ``https://`` (or ``http://``) URL with a host and no fragment or credentials."""
    from urllib.parse import urlsplit

    if not isinstance(value, str):
        raise Invalid(path, f"expected a URL, got {type_name(value)}")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise Invalid(path, f"{value!r} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Invalid(path, f"{value!r} must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise Invalid(path, f"{value!r} must not carry credentials or a fragment")
    if any(c in value for c in " \t\r\n\\") or (port is not None and port == 0):
        raise Invalid(path, f"{value!r} is not a valid URL")
    return parts.scheme + value[value.index(":") :]  # the scheme in lower case, as compared later


#: Directory that relative file names in a policy are resolved against (the YAML file's).
BASE_DIR: contextvars.ContextVar[str | None] = contextvars.ContextVar("bankguard_policy_dir", default=None)


def parse_file(value: object, path: str) -> str:
    """A readable file; a relative name is resolved against the policy file's directory."""
    if not isinstance(value, (str, os.PathLike)):
        raise Invalid(path, f"expected a file name, got {type_name(value)}")
    name = os.fspath(value)
    if not isinstance(name, str) or not name:
        raise Invalid(path, "expected a file name")
    base = BASE_DIR.get()
    full = name if os.path.isabs(name) or base is None else os.path.join(base, name)
    if not os.path.isfile(full):
        raise Invalid(path, f"no such file: {full}")
    return os.path.abspath(full)
