"""Rate-limit windows over the ``limits`` library.

The counting is the ``limits`` library's: its storages hold the counters and its strategies'
algorithms decide (``fixed-window``: a counter that expires ``seconds`` after its first hit;
``moving-window``: a log of the last ``limit`` hits; ``sliding-window-counter``: the current and
the previous window, the previous one weighted by how much of it still overlaps). This module
turns a :class:`~bankguard.stores.Hit` into those calls and reads back, for every window, whether
it admitted the request, what remains and when it resets, which the RateLimit header fields and
``Retry-After`` need.

In process (``memory://``, and the pre-authentication limit always) :class:`LimitsMemory` calls a
``limits`` :class:`~limits.storage.MemoryStorage` directly: no I/O, so the same code serves WSGI
and ASGI. On Redis, :class:`~bankguard.stores_redis.RedisStore` sends one command per window --
the ``limits`` strategy's own Lua hit script joined with its own statistics read in one script --
and all windows in one pipeline: one round trip per request however many windows apply
(``limits``' storage API would take two per window).
:func:`counted_fixed`, :func:`counted_moving` and :func:`counted_sliding` compute the statistics
the way ``limits``' ``get_window_stats`` does, for both.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref

from limits.storage import MemoryStorage

from .stores import Counted, Hit, StoreFull, Window

__all__ = ["STRATEGIES", "LimitsMemory", "counted_fixed", "counted_moving", "counted_sliding"]

#: The ``limits`` strategies a window may use, by the names ``limits`` gives them.
STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")


def counted_fixed(count: int, limit: int, expires_in: float) -> Counted:
    """A fixed window after ``incr`` returned ``count`` (it counts refused hits too)."""
    return Counted(count <= limit, max(0, limit - count), max(0.0, expires_in))


def counted_moving(admitted: bool, limit: int, seconds: int, start: float, count: int, now: float) -> Counted:
    """A moving window: ``count`` hits logged since ``start`` (the oldest one still inside)."""
    reset = start + seconds - now if count else 0.0
    # (Redis hands the start back through Lua's tostring, rounded to 14 digits: keep it in range.)
    return Counted(admitted, max(0, limit - count), min(float(seconds), max(0.0, reset)))


def counted_sliding(
    admitted: bool,
    limit: int,
    seconds: int,
    previous_count: int,
    previous_expires_in: float,
    current_count: int,
    current_expires_in: float,
) -> Counted:
    """A sliding window counter: the previous window's count weighted by its remaining overlap."""
    weighted = previous_count * previous_expires_in / seconds + current_count
    remaining = max(0, limit - math.floor(weighted))
    reset = 0.0
    if previous_count or current_count:
        step = seconds / previous_count if previous_count else 0.0
        previous_in = (previous_expires_in % step or step) if previous_count else math.inf
        # A fresh current window lives 2 x seconds (it becomes the previous one): 0 means a whole window.
        current_in = (current_expires_in % seconds or seconds) if current_count else math.inf
        reset = min(previous_in, current_in)
    return Counted(admitted, remaining, min(float(seconds), max(0.0, reset)))


class _SweptMemoryStorage(MemoryStorage):
    """``limits``' memory storage, its expired entries dropped by one long-lived daemon thread per
    process (every :data:`SWEEP_SECONDS`) instead of a timer thread started after every idle
    10 ms, which costs a sparse request a thread start (~0.2 ms)."""

    def __init__(self) -> None:
        super().__init__()
        self._swept_in: int | None = None  # the process whose sweeper runs
        self._sweep_lock = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces limits' private hook
        if self._swept_in != os.getpid():  # first use, or a forked child (threads do not survive)
            with self._sweep_lock:
                if self._swept_in != os.getpid():
                    self._swept_in = os.getpid()
                    threading.Thread(target=_sweep, args=(weakref.ref(self),), daemon=True).start()

    def sweep(self) -> None:
        self._MemoryStorage__expire_events()  # type: ignore[attr-defined]

    def hit_sliding(self, key: str, limit: int, expiry: int, amount: int) -> Counted:
        """``acquire_sliding_window_entry`` -- the same reads, increment and race check, in the
        same order -- returning the window's statistics from those reads (``get_sliding_window``
        would read both counters again, at almost the cost of the hit)."""
        now = time.time()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous_count, previous_ttl, current_count, current_ttl = self._get_sliding_window_info(
            previous_key, current_key, expiry, now
        )
        weighted = previous_count * previous_ttl / expiry
        admitted = amount <= limit and math.floor(weighted + current_count) + amount <= limit
        if admitted:
            current_count = self.incr(current_key, 2 * expiry, amount=amount)
            if math.floor(weighted + current_count) > limit:  # another thread's hit came first
                current_count = self.decr(current_key, amount)
                admitted = False
        return counted_sliding(
            admitted, limit, expiry, previous_count, previous_ttl, current_count, current_ttl
        )

    def size(self) -> int:
        return len(self.storage) + len(self.events)


def _unwrapped(cls: type) -> None:
    """``limits`` wraps the methods of every storage class -- again for each subclass, so twice
    here -- to turn the storage's exceptions into ``StorageError`` when ``wrap_exceptions`` is
    set. This storage never sets it, so the wrappers only re-raise: use the methods themselves
    (a sliding-window hit calls them a dozen times)."""
    for name in dir(cls):
        method = getattr(cls, name)
        if callable(method) and hasattr(method, "__wrapped__") and not name.startswith("__"):
            while hasattr(method, "__wrapped__"):
                method = method.__wrapped__
            setattr(cls, name, method)


_unwrapped(_SweptMemoryStorage)

#: How often expired rate-limit entries are dropped from process memory.
SWEEP_SECONDS = 1.0


def _sweep(ref: weakref.ref[_SweptMemoryStorage]) -> None:
    pid = os.getpid()
    while True:
        time.sleep(SWEEP_SECONDS)
        storage = ref()
        if storage is None or storage._swept_in != pid:
            return
        storage.sweep()
        del storage


class LimitsMemory:
    """:class:`~bankguard.stores.Hit` against a process-local ``limits`` memory storage.

    Bounded: when ``max_entries`` counters and logs are live, a hit that needs a new one first
    drops the expired ones, then, if still full, raises :class:`~bankguard.stores.StoreFull`
    (the check fails closed or open, as its policy says) rather than grow without limit.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.storage = _SweptMemoryStorage()
        self.max_entries = max_entries

    def _room(self, window: Window) -> None:
        storage = self.storage
        if len(storage.storage) + len(storage.events) < self.max_entries:
            return
        key = window.key
        if window.strategy == "sliding-window-counter":  # limits keeps it under the window's own key
            key = storage.sliding_window_keys(key, window.seconds, time.time())[1]
        if key in storage.storage or key in storage.events:
            return
        storage.sweep()
        if storage.size() >= self.max_entries:
            raise StoreFull(f"{self.max_entries} live rate-limit entries")

    def hit(self, op: Hit) -> tuple[Counted, ...]:
        storage = self.storage
        out: list[Counted] = []
        full = self.max_entries
        for window in op.windows:
            key, limit, seconds = window.key, window.limit, window.seconds
            if len(storage.storage) + len(storage.events) >= full:
                self._room(window)
            if window.strategy == "fixed-window":
                count = storage.incr(key, seconds, amount=op.cost)
                out.append(counted_fixed(count, limit, storage.get_expiry(key) - time.time()))
            elif window.strategy == "moving-window":
                admitted = storage.acquire_entry(key, limit, seconds, amount=op.cost)
                start, count = storage.get_moving_window(key, limit, seconds)
                out.append(counted_moving(admitted, limit, seconds, start, count, time.time()))
            elif window.strategy == "sliding-window-counter":
                out.append(storage.hit_sliding(key, limit, seconds, op.cost))
            else:
                raise ValueError(f"unknown rate-limit strategy {window.strategy!r}")
        return tuple(out)
