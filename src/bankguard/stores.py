"""Shared state for checks, as small operations a driver executes.

A check never calls a store itself. It *yields* one of the operations below and
receives the result, so the same check runs under a sync driver (WSGI, through
:meth:`SyncStore.execute`) and an async one (ASGI, through
:meth:`AsyncStore.aexecute`) — the pattern of httpx's ``Auth.auth_flow``.

:class:`MemoryStore` serves both faces within one process. It is bounded: expired
entries are dropped, and when ``max_entries`` live entries are held a new entry is refused
with :class:`StoreFull` rather than a live one forgotten, so a flood of unique keys can
neither exhaust memory (OWASP API4) nor push out a replay entry whose proof is still
acceptable (RFC 9449 §11.1): the request fails closed.

A failing store raises :class:`StoreFailure` *into* the check's generator; a check
that does not handle it fails closed (503).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from .errors import BankGuardError

if TYPE_CHECKING:
    from .ratelimit import LimitsMemory


#: The Redis URL schemes a store accepts (``rediss`` is TLS; ``+cluster``, ``+sentinel`` name the
#: topology), besides ``memory://``.
REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)


@dataclass(frozen=True, slots=True)
class Incr:
    """Add ``amount`` to the counter at ``key`` (created at 0 with ``ttl`` seconds); returns the new value."""

    key: str
    ttl: float
    amount: int = 1


@dataclass(frozen=True, slots=True)
class SetIfAbsent:
    """Store ``value`` at ``key`` for ``ttl`` seconds unless present; returns True if stored."""

    key: str
    value: str
    ttl: float


@dataclass(frozen=True, slots=True)
class Get:
    """Return the value at ``key``, or None."""

    key: str


@dataclass(frozen=True, slots=True)
class Call:
    """Run a blocking callable (a key refresh, an introspection request) and return its result.

    Not a store operation: the drivers run it themselves, directly under WSGI and in a
    worker thread under ASGI, so the event loop never blocks. The callable must bound its
    own time and should return failures as values; an exception it raises fails closed.
    """

    fn: Callable[[], object]


@dataclass(frozen=True, slots=True)
class Window:
    """One rate-limit window: at most ``limit`` requests per ``seconds`` under ``strategy``."""

    key: str
    limit: int
    seconds: int
    #: ``fixed-window``, ``moving-window`` or ``sliding-window-counter`` (the ``limits`` strategies).
    strategy: str


class Counted(NamedTuple):
    """What one window said about a hit (a named tuple: made for every window of every request)."""

    admitted: bool
    #: Requests left in the window after this one.
    remaining: int
    #: Seconds until the window admits again (or resets).
    reset: float


@dataclass(frozen=True, slots=True)
class Hit:
    """Count one request against every window (see :mod:`bankguard.ratelimit`); returns a
    ``tuple[Counted, ...]`` in the order of ``windows``. A window that refuses does not undo the
    others: a refused request still counts where it was admitted. Redis runs all windows in one
    round trip."""

    windows: tuple[Window, ...]
    cost: int = 1


StoreOp = Incr | SetIfAbsent | Get | Call | Hit


class StoreFailure(BankGuardError):
    """The store could not execute an operation (unreachable, timed out, refused)."""


class StoreFull(StoreFailure):
    """A bounded store holds ``max_entries`` live entries; a new one is refused."""


class SyncStore(Protocol):
    def execute(self, op: StoreOp) -> object: ...


class AsyncStore(Protocol):
    async def aexecute(self, op: StoreOp) -> object: ...


class MemoryStore:
    """Process-local store with TTLs and a size bound. Thread-safe; never blocks on I/O."""

    def __init__(self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._clock = clock
        self._data: dict[str, tuple[float, object]] = {}
        self._expiries: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._limits: LimitsMemory | None = None

    def __len__(self) -> int:
        return len(self._data)

    def _live(self, key: str, now: float) -> object | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= now:
            del self._data[key]
            return None
        return item[1]

    def _put(self, key: str, value: object, ttl: float, now: float) -> None:
        if not ttl > 0 or ttl == float("inf"):
            raise ValueError("ttl must be a positive, finite number of seconds")
        self._evict(now)
        if len(self._data) >= self.max_entries and key not in self._data:
            raise StoreFull(f"{self.max_entries} live entries")
        expires = now + ttl
        self._data[key] = (expires, value)
        heapq.heappush(self._expiries, (expires, key))

    def _evict(self, now: float) -> None:
        """Drop expired entries (never a live one)."""
        heap, data = self._expiries, self._data
        while heap and heap[0][0] <= now:
            expires, key = heapq.heappop(heap)
            item = data.get(key)
            if item is not None and item[0] == expires:
                del data[key]
        if len(heap) > 4 * self.max_entries:  # stale heap entries from overwritten keys
            self._expiries = [(e, k) for k, (e, _) in data.items()]
            heapq.heapify(self._expiries)

    def limiter(self) -> LimitsMemory:
        """The ``limits`` memory storage that runs :class:`Hit` operations here (made on first use)."""
        limiter = self._limits
        if limiter is None:
            from .ratelimit import LimitsMemory

            with self._lock:
                limiter = self._limits = self._limits or LimitsMemory(self.max_entries)
        return limiter

    def execute(self, op: StoreOp) -> object:
        if isinstance(op, Hit):
            return (self._limits or self.limiter()).hit(op)
        with self._lock:
            now = self._clock()
            if isinstance(op, Get):
                return self._live(op.key, now)
            if isinstance(op, SetIfAbsent):
                if self._live(op.key, now) is not None:
                    return False
                self._put(op.key, op.value, op.ttl, now)
                return True
            if isinstance(op, Incr):
                current = self._live(op.key, now)
                if isinstance(current, int):
                    expires = self._data[op.key][0]
                    self._data[op.key] = (expires, current + op.amount)
                    return current + op.amount
                self._put(op.key, op.amount, op.ttl, now)
                return op.amount
            raise TypeError(f"unknown store operation {op!r}")

    async def aexecute(self, op: StoreOp) -> object:
        return self.execute(op)
