"""The sans-IO view of a request that every check reads.

:class:`RequestFacts` holds what an HTTP request looked like when it reached the
process: method, path, query, header field lines, the direct peer address and the
body (already bounded by the adapter). It reads no socket and imports no web
framework; :mod:`bankguard.adapters.asgi` and :mod:`bankguard.adapters.wsgi` fill it.

Header names are lower-cased; values are the latin-1 decoding of the raw bytes, so
every byte survives the round trip and nothing is normalised away. Under ASGI each
field line is kept separately, so duplicates can be detected (RFC 9110 §5.3).
WSGI servers merge repeated fields into one comma-separated value before the
application sees them; checks that care about duplicates account for that.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .scopes import ScopeRequirement


class Headers:
    """Immutable, ordered header field lines with case-insensitive lookup."""

    __slots__ = ("_items", "_largest", "_size", "by_name")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: tuple[tuple[str, str], ...] = tuple((k.lower(), v) for k, v in items)
        index: dict[str, list[str]] = {}
        size = largest = 0
        for k, v in self._items:
            index.setdefault(k, []).append(v)
            line = len(k) + len(v) + 4  # "name: value\r\n"
            size += line
            if line > largest:
                largest = line
        #: Values per lower-cased name, one per field line (read-only; do not modify).
        self.by_name = index
        self._size = size
        self._largest = largest

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        values = self.by_name.get(name)
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` (one per field line), in order."""
        return list(self.by_name.get(name, ()))

    def only(self, name: str) -> str | None:
        """The value of ``name`` when it was sent on exactly one field line, else None."""
        values = self.by_name.get(name)
        return values[0] if values is not None and len(values) == 1 else None

    def count(self, name: str) -> int:
        return len(self.by_name.get(name, ()))

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> Iterable[str]:
        return self.by_name.keys()

    @property
    def size(self) -> int:
        """Bytes of all field lines as sent on the wire (approximately, HTTP/1.1 framing)."""
        return self._size

    @property
    def largest_line(self) -> int:
        return self._largest

    def __repr__(self) -> str:
        # Values may hold credentials: never print them.
        return f"Headers(names={sorted(self.by_name)!r})"


#: A Content-Length with more digits than this is treated as "too large" without converting it.
MAX_LENGTH_DIGITS = 15


def parse_content_length(values: list[str]) -> tuple[int | None, str | None]:
    """The declared body length, or a framing error code (RFC 9110 §8.6).

    Several field lines (or a list value) are accepted only when all values agree.
    A numeral too long to be a real length is returned as a length beyond any cap.
    """
    if not values:
        return None, None
    distinct = {v.strip() for line in values for v in line.split(",")}
    if len(distinct) != 1:
        return None, "conflicting_content_length"
    (value,) = distinct
    if not value or not value.isascii() or not value.isdigit():
        return None, "invalid_content_length"
    if len(value) > MAX_LENGTH_DIGITS:
        return 10**MAX_LENGTH_DIGITS, None
    return int(value), None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFacts:
    """What the checks see of one request. Built by an adapter, never mutated."""

    #: Request method as sent (not upper-cased: RFC 9110 §9.1 methods are case-sensitive).
    method: str
    #: ``http`` or ``https`` as the server saw it (behind a proxy: the proxy's hop).
    scheme: str = "http"
    #: Decoded path, the one the application routes on (ASGI ``path``, WSGI ``PATH_INFO``).
    path: str = "/"
    #: Path bytes as received, when the server provides them (ASGI ``raw_path``).
    raw_path: bytes | None = None
    #: Query string as received, undecoded.
    query: str = ""
    headers: Headers = field(default_factory=Headers)
    #: IP address of the direct peer (the proxy, when there is one), or None.
    peer: str | None = None
    http_version: str = "1.1"
    #: The buffered body, or None when there is none or it was not buffered.
    body: bytes | None = None
    #: The body exceeded the configured cap (it was then not fully buffered).
    body_too_large: bool = False
    #: The adapter found the body framing invalid (e.g. a bad Content-Length).
    framing_error: str | None = None
    #: Scopes the application declared for the matched endpoint (``require_scopes``).
    requirements: ScopeRequirement | None = None
    #: What the server itself knows of the TLS client certificate: the ASGI ``tls`` extension
    #: dict, or the WSGI ``SSL_CLIENT_CERT*`` variables. None when the server says nothing.
    transport: Mapping[str, Any] | None = None

    def __repr__(self) -> str:
        return (
            f"RequestFacts(method={self.method!r}, path={self.path!r}, peer={self.peer!r}, "
            f"headers={self.headers!r})"
        )
