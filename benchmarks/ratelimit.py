"""Per-TPP rate-limit cost, side by side with the ``limits`` library, slowapi and Flask-Limiter.

    python benchmarks/ratelimit.py            # full run (about a minute)
    python benchmarks/ratelimit.py --quick    # about ten seconds, for CI smoke runs

Also run by benchmarks/run.py. Needs a Redis at 127.0.0.1:6379 (``$BANKGUARD_BENCH_REDIS`` to
change it; database 15, every key under a prefix unique to the run and deleted at the end) and the
peers: ``pip install slowapi Flask-Limiter``.

Limits are ``1000000/minute`` (one window) and ``1000000/minute; 100000000/day`` (two windows), so
nothing is ever refused; the strategy is ``sliding-window-counter`` (bankguard's default, and the
one the peers are configured with) unless a row says ``fixed-window``. Per request, in µs:

* floor: a bare ``limits`` ``hit()`` (``SlidingWindowCounterRateLimiter`` / ``FixedWindowRateLimiter``)
  on ``MemoryStorage`` and on ``RedisStorage``; ``limits.aio`` on ``redis.asyncio`` for the async
  rows. With two windows the floor is two hits, one per window, as ``limits`` needs them;
* bankguard ``Hit``: the store operation :class:`~bankguard.stores.Hit` the rate-limit check yields,
  run by ``MemoryStore.execute`` / ``RedisStore.execute`` (``aexecute`` for async): the strategy's
  hit plus the read the RateLimit headers need, every window in one Redis pipeline;
* bankguard ``decide +``: what the rate-limit check adds to :meth:`Guard.decide` (and
  :meth:`Guard.adecide`): one guard with ``ratelimit.enabled`` against the same guard without its
  ``ratelimit`` check, on a request with a bearer token the guard has verified before (cached);
* in an application, driven in-process through its ASGI / WSGI interface (no sockets):
  bankguard ``protect()`` with rate limits minus ``protect()`` without them (same token route and
  policy otherwise), slowapi (``@limiter.limit`` on a Starlette endpoint) minus the same bare
  Starlette app, Flask-Limiter (``@limiter.limit`` on a Flask view) minus the same bare Flask app.
  ``protect()`` whole minus the bare app is shown for context (token check, route, audit event).
  slowapi calls ``limits``' synchronous storage even in an ASGI app, so each Redis round trip
  blocks the event loop; bankguard's ASGI path awaits ``redis.asyncio`` (the ``redis async``
  floor rows show what that costs in ``limits.aio`` itself).

Every figure comes from one run, in three groups measured one after the other (the limiter on
its own: floors, ``Hit``, ``decide +``; the ASGI apps; the WSGI apps). Within a group all contenders
are interleaved slot by slot: each slot calls every contender in turn, a short burst of calls each
(order reversed every other slot), so all see the same machine noise and each burst runs with warm
caches after its first call, as a server serving one app does; an added cost (``+``) is measured
by alternating the two variants call by call. Long-lived objects are frozen out of the garbage
collector's scans before timing (``gc.freeze``). Figures are medians over rounds; ratios are
medians of per-round ratios; the first round warms up and is dropped.

``limits``' ``MemoryStorage`` starts a cleanup thread (``threading.Timer(0.01)``) on a hit when
its previous one has finished. Interleaved with dozens of contenders, every memory hit would
start one: a cost of sparse traffic that falls on the floor, bankguard and the peers alike and
hides everything else. While timing, every MemoryStorage holds a running long timer instead, as
under steady traffic; what a hit that starts the thread costs is measured and printed apart.

Round trips are counted, not timed: redis-py's ``send_packed_command`` (one write of one command
or of a whole pipeline, each followed by reading its replies) and ``read_response`` (one reply per
command) are wrapped, sync and async, while a batch of requests runs after a warm-up.

Targets are printed as met or not met, never asserted: bankguard's limiter at most 1.5 times the
bare hit of the same storage (with several windows: the bare hits of those windows), one Redis
round trip per request whatever the number of windows, and less added cost than slowapi and
Flask-Limiter. ``--quick`` checks that every path works; its timings are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import logging
import os
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio.connection
import redis.connection
from flask import Flask
from flask import Response as FlaskResponse
from flask_limiter import Limiter as FlaskLimiter
from flask_limiter.util import get_remote_address as flask_remote_address
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage as AsyncLimitsRedis
from limits.aio.strategies import SlidingWindowCounterRateLimiter as AsyncSlidingWindow
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter
from slowapi import Limiter as SlowLimiter
from slowapi import _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address as slowapi_remote_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bankguard import Guard, Policy, guard_of, protect
from bankguard.audit import AuditEvent
from bankguard.controls import State
from bankguard.policy_ratelimit import windows_of
from bankguard.request import RequestFacts
from bankguard.stores import Get, Hit, MemoryStore, Window
from bankguard.stores_redis import RedisStore
from bankguard.testing import TestIssuer, make_facts

REDIS_URL = os.environ.get("BANKGUARD_BENCH_REDIS", "redis://127.0.0.1:6379/15")
ONE = "1000000/minute"
TWO = "1000000/minute; 100000000/day"
THREE = "1000000/minute; 10000000/hour; 100000000/day"
LIMITS = {1: ONE, 2: TWO, 3: THREE}
STRATEGY = "sliding-window-counter"
AUDIENCE = "https://api.bank.example"
PATH = "/accounts/22289/transactions"
TEMPLATE = "/accounts/{AccountId}/transactions"
#: The identity bankguard counts: the ``client_id`` of TestIssuer's tokens.
IDENTITY = "tpp-client-1"
HEADERS = (
    ("host", "api.bank.example"),
    ("accept", "application/json"),
    ("x-fapi-interaction-id", "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"),
    ("user-agent", "benchmark/1.0"),
)
BODY = b'{"Data":{}}'
#: bankguard's limiter at most this many times the bare hit(s) of the same storage.
TARGET_FLOOR = 1.5


# --------------------------------------------------------------------------------------------
# Interleaved measurement


@dataclass
class Contender:
    """One thing measured: ``fn`` called ``reps`` times in every slot. With a ``baseline``, the
    two alternate call by call (in alternating order) and both are recorded, the baseline as
    ``name + "-"``: their difference is what ``fn`` adds."""

    name: str
    fn: Callable[[], Any]
    reps: int = 1
    asynchronous: bool = False
    baseline: Callable[[], Any] | None = None
    samples: list[float] = field(default_factory=list)  # mean µs per call, one per round
    baseline_samples: list[float] = field(default_factory=list)


async def _run(c: Contender, totals: list[float], slot: int) -> None:
    clock = time.perf_counter
    fn, base = c.fn, c.baseline
    for rep in range(slot % 2, c.reps + slot % 2):
        if base is None:
            t0 = clock()
            if c.asynchronous:
                await fn()
            else:
                fn()
            totals[0] += clock() - t0
            continue
        first, second = (fn, base) if rep % 2 == 0 else (base, fn)
        t0 = clock()
        if c.asynchronous:
            await first()
            t1 = clock()
            await second()
        else:
            first()
            t1 = clock()
            second()
        t2 = clock()
        totals[0] += t1 - t0 if rep % 2 == 0 else t2 - t1
        totals[1] += t2 - t1 if rep % 2 == 0 else t1 - t0


async def _round(contenders: list[Contender], slots: int) -> None:
    totals = [[0.0, 0.0] for _ in contenders]
    for slot in range(slots):
        order = list(enumerate(contenders))
        if slot % 2:
            order.reverse()
        for i, c in order:
            await _run(c, totals[i], slot)
    for i, c in enumerate(contenders):
        calls = slots * c.reps
        c.samples.append(totals[i][0] / calls * 1e6)
        if c.baseline is not None:
            c.baseline_samples.append(totals[i][1] / calls * 1e6)


def measure_rounds(
    loop: asyncio.AbstractEventLoop, contenders: list[Contender], rounds: int, slots: int
) -> dict[str, list[float]]:
    """Per contender (and baseline), mean µs per call in each round after the first (dropped)."""
    gc.collect()
    gc.freeze()
    try:
        for _ in range(rounds + 1):
            loop.run_until_complete(_round(contenders, slots))
    finally:
        gc.unfreeze()
    out = {c.name: c.samples[1:] for c in contenders}
    out.update({c.name + "-": c.baseline_samples[1:] for c in contenders if c.baseline is not None})
    return out


def med(values: list[float]) -> float:
    return statistics.median(values)


def ratio(num: list[float], den: list[float]) -> float:
    """Median of per-round ratios."""
    return statistics.median(n / d for n, d in zip(num, den, strict=True))


def diff(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


# --------------------------------------------------------------------------------------------
# Round trips


class RoundTrips:
    """Counts redis-py's writes (round trips) and replies (commands), sync and async, while active."""

    def __init__(self) -> None:
        self.sends = 0
        self.replies = 0

    @contextmanager
    def counting(self) -> Iterator[RoundTrips]:
        sync_cls = redis.connection.AbstractConnection
        async_cls = redis.asyncio.connection.AbstractConnection
        saved = [
            (cls, name, cls.__dict__[name])
            for cls in (sync_cls, async_cls)
            for name in ("send_packed_command", "read_response")
        ]
        send, read = sync_cls.send_packed_command, sync_cls.read_response
        asend, aread = async_cls.send_packed_command, async_cls.read_response

        def sync_send(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.sends += 1
            return send(conn, *args, **kwargs)

        def sync_read(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.replies += 1
            return read(conn, *args, **kwargs)

        async def async_send(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.sends += 1
            return await asend(conn, *args, **kwargs)

        async def async_read(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.replies += 1
            return await aread(conn, *args, **kwargs)

        sync_cls.send_packed_command = sync_send  # type: ignore[method-assign]
        sync_cls.read_response = sync_read  # type: ignore[method-assign]
        async_cls.send_packed_command = async_send  # type: ignore[method-assign]
        async_cls.read_response = async_read  # type: ignore[method-assign]
        try:
            yield self
        finally:
            for cls, name, original in saved:
                setattr(cls, name, original)


def round_trips(
    loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], n: int, asynchronous: bool = False
) -> tuple[float, float]:
    """(round trips, commands) per call of ``fn``, over ``n`` calls after three warm-up calls."""

    async def batch(count: int) -> None:
        for _ in range(count):
            if asynchronous:
                await fn()
            else:
                fn()

    loop.run_until_complete(batch(3))  # connections opened, scripts loaded
    counter = RoundTrips()
    with counter.counting():
        loop.run_until_complete(batch(n))
    return counter.sends / n, counter.replies / n


# --------------------------------------------------------------------------------------------
# limits' MemoryStorage cleanup thread


@contextmanager
def steady_memory_storages() -> Iterator[None]:
    """Keep the cleanup timer of every ``limits`` MemoryStorage alive while timing (see the module
    docstring; :func:`cleanup_thread_cost` measures what starting it costs). Expiry is unaffected:
    ``MemoryStorage.get`` drops expired counters too."""
    pinned = []
    for storage in [o for o in gc.get_objects() if isinstance(o, MemoryStorage)]:
        timer = threading.Timer(3600, lambda: None)
        timer.daemon = True
        timer.start()
        storage.timer.cancel()
        storage.timer = timer
        pinned.append(timer)
    try:
        yield
    finally:
        for timer in pinned:
            timer.cancel()


def cleanup_thread_cost(n: int) -> tuple[float, float]:
    """Median µs of a bare sliding-window hit on MemoryStorage: with the cleanup timer running,
    and when the hit has to start it (the previous one finished: no hit in the last 10 ms)."""
    storage = MemoryStorage()
    limiter = SlidingWindowCounterRateLimiter(storage)
    item = parse_many(ONE)[0]
    clock = time.perf_counter
    warm, starting = [], []
    for _ in range(n):
        while storage.timer.is_alive():  # busy, not sleeping: an idle CPU wakes up slowly
            pass
        t0 = clock()
        limiter.hit(item, IDENTITY)
        t1 = clock()
        limiter.hit(item, IDENTITY)
        t2 = clock()
        starting.append(t1 - t0)
        warm.append(t2 - t1)
    storage.timer.cancel()
    return med(warm) * 1e6, med(starting) * 1e6


# --------------------------------------------------------------------------------------------
# Fixtures: audit sink, policies, apps, in-process clients


class OutcomeSink:
    """Audit sink counting allows and keeping the first refusals (cheap, for every guard alike)."""

    def __init__(self) -> None:
        self.allowed = 0
        self.refused: list[tuple[str, int | None, str | None]] = []

    def __call__(self, event: AuditEvent) -> None:
        if event.outcome == "allow":
            self.allowed += 1
        elif len(self.refused) < 5:
            self.refused.append((event.outcome, event.status, event.reason))

    def check(self, what: str) -> None:
        if self.refused:
            raise SystemExit(f"{what}: decisions were not allowed: {self.refused}")


def policy(
    issuer: TestIssuer, sink: OutcomeSink, limits: str | None, storage: str = "memory://", prefix: str = ""
) -> Policy:
    """A token route needing scope ``accounts``; with ``limits``, per-TPP rate limits on."""
    spec: dict[str, Any] = {
        "tokens": {
            "issuers": [
                {
                    "issuer": issuer.issuer,
                    "audiences": [AUDIENCE],
                    "algorithms": [issuer.alg],
                    "jwks": issuer.jwks(),
                }
            ]
        },
        "routes": {"operations": [{"method": "GET", "path": TEMPLATE, "scopes": ["accounts"]}]},
        "audit": {"sink": sink},
    }
    if storage != "memory://":
        spec["storage"] = {"uri": storage, "prefix": prefix}
    if limits is not None:
        spec["ratelimit"] = {"enabled": True, "tiers": {"default": limits}}
    return Policy.from_dict(spec)


class FloorCheck:
    """In place of the rate-limit check: the bare ``limits`` hit(s) of the floor. In memory it
    calls them in the check, as the limiter calls its memory storage; on Redis it yields one store
    operation to the guard's driver, as the limiter yields its ``Hit``, and :class:`FloorStore`
    runs the floor for it (awaited under :meth:`Guard.adecide`)."""

    name = "floor"
    mode = "enforce"

    def __init__(self, fn: Callable[[], Any], inline: bool) -> None:
        self.fn, self.inline = fn, inline

    def run(self, facts: RequestFacts, state: State) -> Any:
        if self.inline:
            self.fn()
            return None
        return self._flow()

    def _flow(self) -> Generator[Any, Any, None]:
        yield FLOOR_OP


FLOOR_OP = Get("floor")


class FloorStore:
    """The store a floor guard's driver runs :data:`FLOOR_OP` with: the bare hit(s)."""

    def __init__(self, fn: Callable[[], Any], afn: Callable[[], Any] | None) -> None:
        self.fn, self.afn = fn, afn

    def execute(self, op: Any) -> Any:
        return self.fn()

    async def aexecute(self, op: Any) -> Any:
        assert self.afn is not None
        return await self.afn()


def floor_guard(guard: Guard, fn: Callable[[], Any], inline: bool) -> Guard:
    """``guard`` with a :class:`FloorCheck` where its rate-limit check was."""
    return Guard(guard.policy, checks=[*guard.checks, FloorCheck(fn, inline)], sink=guard.sink)


def without_ratelimit(guard: Guard, sink: OutcomeSink) -> Guard:
    """The same guard (policy, token check and its cache, route) without its ``ratelimit`` check."""
    return Guard(guard.policy, checks=[c for c in guard.checks if c.name != "ratelimit"], sink=sink)


def starlette_app(endpoint: Callable[..., Any] | None = None) -> Starlette:
    async def transactions(request: Request) -> Response:
        return Response(BODY, media_type="application/json")

    return Starlette(routes=[Route(TEMPLATE, endpoint or transactions, methods=["GET"])])


def slowapi_app(limits: str, storage: str, prefix: str) -> Starlette:
    """slowapi as its documentation shows it: ``@limiter.limit`` on the endpoint."""
    limiter = SlowLimiter(
        key_func=slowapi_remote_address, storage_uri=storage, strategy=STRATEGY, key_prefix=prefix
    )

    @limiter.limit(limits)
    async def transactions(request: Request) -> Response:
        return Response(BODY, media_type="application/json")

    app = starlette_app(transactions)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app


_FLASK_APPS = iter(range(1_000_000))


def flask_app(limiter: Callable[[Flask], Callable[..., Any]] | None = None) -> Flask:
    """A Flask app with the transactions view; ``limiter(app)`` decorates the view."""
    app = Flask(f"bench{next(_FLASK_APPS)}")

    def transactions(AccountId: str) -> FlaskResponse:
        return FlaskResponse(BODY, mimetype="application/json")

    view = limiter(app)(transactions) if limiter is not None else transactions
    app.add_url_rule("/accounts/<AccountId>/transactions", view_func=view, methods=["GET"])
    return app


def flask_limiter_app(limits: str, storage: str, prefix: str) -> Flask:
    """Flask-Limiter as its documentation shows it: ``@limiter.limit`` on the view."""

    def decorate(app: Flask) -> Callable[..., Any]:
        limiter = FlaskLimiter(
            flask_remote_address, app=app, storage_uri=storage, strategy=STRATEGY, key_prefix=prefix
        )
        return limiter.limit(limits)

    return flask_app(decorate)


class AsgiClient:
    """Calls an ASGI app with one prepared GET; records statuses and RateLimit headers seen."""

    def __init__(self, app: Any, headers: tuple[tuple[str, str], ...]) -> None:
        self.app = app
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "https",
            "path": PATH,
            "raw_path": PATH.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 443),
        }
        self.statuses: list[int] = []
        self.ratelimit_headers = 0

    async def __call__(self) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(message["status"])
                if any(k == b"ratelimit" for k, _ in message.get("headers", ())):
                    self.ratelimit_headers += 1

        await self.app(dict(self.scope), receive, send)

    def expect(self, status: int, what: str, *, headers: bool | None = None) -> None:
        got = set(self.statuses)
        if got != {status}:
            raise SystemExit(f"{what}: answered {sorted(got)}, expected only {status}")
        if headers is not None and self.ratelimit_headers != (len(self.statuses) if headers else 0):
            raise SystemExit(f"{what}: {self.ratelimit_headers} of {len(self.statuses)} with RateLimit")
        self.statuses.clear()
        self.ratelimit_headers = 0


class WsgiClient:
    """Calls a WSGI app with one prepared GET; records statuses and RateLimit headers seen."""

    def __init__(self, app: Any, headers: tuple[tuple[str, str], ...]) -> None:
        self.app = app
        self.environ = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": PATH,
            "QUERY_STRING": "",
            "SERVER_NAME": "api.bank.example",
            "SERVER_PORT": "443",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers},
        }
        self.statuses: list[int] = []
        self.ratelimit_headers = 0

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.statuses.append(int(status[:3]))
        if any(k.lower() == "ratelimit" for k, _ in headers):
            self.ratelimit_headers += 1
        return lambda data: None

    def __call__(self) -> None:
        environ = dict(self.environ)
        environ["wsgi.input"] = io.BytesIO(b"")
        body = self.app(environ, self._start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    expect = AsgiClient.expect


# --------------------------------------------------------------------------------------------
# Setup


def _items(limits: str) -> list[RateLimitItem]:
    return list(parse_many(limits))


def _hit_op(limits: str, strategy: str = STRATEGY) -> Hit:
    """The Hit the rate-limit check yields for IDENTITY's default tier (same keys)."""
    short = {"sliding-window-counter": "sw", "fixed-window": "fw"}[strategy]
    return Hit(
        tuple(
            Window(f"rl/{short}/tpp/{IDENTITY}/{seconds}", limit, seconds, strategy)
            for limit, seconds in windows_of(limits)
        )
    )


@dataclass
class Setup:
    loop: asyncio.AbstractEventLoop
    prefix: str
    issuer: TestIssuer
    token: str
    sink: OutcomeSink
    closers: list[Callable[[], Any]] = field(default_factory=list)
    aclosers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return (*HEADERS, ("authorization", f"Bearer {self.token}"))

    def storage(self, redis_: bool) -> str:
        return REDIS_URL if redis_ else "memory://"

    def guard(self, windows: int | None, redis_: bool, tag: str) -> Guard:
        g = Guard(
            policy(
                self.issuer,
                self.sink,
                LIMITS[windows] if windows else None,
                self.storage(redis_),
                f"{self.prefix}:{tag}:",
            ),
            sink=self.sink,
        )
        self.closers.append(g.close)
        if isinstance(g.store, RedisStore):
            self.aclosers.append(g.store.aclose)
        return g

    def protected(self, app: Any, windows: int | None, redis_: bool, tag: str) -> Any:
        limits = LIMITS[windows] if windows else None
        app = protect(
            app, policy(self.issuer, self.sink, limits, self.storage(redis_), f"{self.prefix}:{tag}:")
        )
        g = guard_of(app)
        self.closers.append(g.close)
        if isinstance(g.store, RedisStore):
            self.aclosers.append(g.store.aclose)
        return app


def _limits_floor(limiter: Any, items: list[RateLimitItem]) -> Callable[[], bool]:
    if len(items) == 1:
        item = items[0]
        return lambda: limiter.hit(item, IDENTITY)

    def hits() -> bool:
        ok = True
        for item in items:
            ok = limiter.hit(item, IDENTITY) and ok
        return ok

    return hits


def _async_limits_floor(limiter: Any, items: list[RateLimitItem]) -> Callable[[], Any]:
    async def hits() -> bool:
        ok = True
        for item in items:
            ok = await limiter.hit(item, IDENTITY) and ok
        return ok

    return hits


def _admitted(result: Any, what: str) -> None:
    if not all(c.admitted for c in result):
        raise SystemExit(f"{what}: a window refused: {result}")


def _refusal_checks(setup: Setup) -> None:
    """Each limiter measured is wired to enforce: with a limit of 3 per minute, the 4th is a 429."""
    p = f"{setup.prefix}:refuse"
    bg_asgi = protect(starlette_app(), policy(setup.issuer, OutcomeSink(), "3/minute", REDIS_URL, f"{p}:a:"))
    bg_wsgi = protect(flask_app(), policy(setup.issuer, OutcomeSink(), "3/minute", REDIS_URL, f"{p}:w:"))
    for app in (bg_asgi, bg_wsgi):
        store = guard_of(app).store
        setup.closers.append(guard_of(app).close)
        if isinstance(store, RedisStore):
            setup.aclosers.append(store.aclose)
    cases: list[tuple[str, Any, bool]] = [
        ("bankguard protect(Starlette)", AsgiClient(bg_asgi, setup.headers), True),
        ("bankguard protect(Flask)", WsgiClient(bg_wsgi, setup.headers), False),
        ("slowapi", AsgiClient(slowapi_app("3/minute", REDIS_URL, p), setup.headers), True),
        ("Flask-Limiter", WsgiClient(flask_limiter_app("3/minute", REDIS_URL, p), setup.headers), False),
    ]
    for what, client, asynchronous in cases:
        for _ in range(4):
            if asynchronous:
                setup.loop.run_until_complete(client())
            else:
                client()
        if client.statuses != [200, 200, 200, 429]:
            raise SystemExit(f"{what} with 3/minute answered {client.statuses}, expected 3 x 200 then 429")


# --------------------------------------------------------------------------------------------
# The measurements


Row = dict[str, Any]


def measure(setup: Setup, rounds: int, slots: int, batch: int) -> tuple[dict[str, list[float]], list[Row]]:
    """Timings (µs per call, one per round, by contender) and round trips (one row per case)."""
    loop, prefix = setup.loop, setup.prefix
    items = {k: _items(LIMITS[k]) for k in (1, 2)}

    # Floor: bare limits hits, memory and Redis, sync and async.
    mem_storage = MemoryStorage()
    red_storage = RedisStorage(REDIS_URL, key_prefix=f"{prefix}:floor")
    setup.closers.append(red_storage.storage.close)
    aio_storage = AsyncLimitsRedis(
        f"async+{REDIS_URL}", implementation="redispy", key_prefix=f"{prefix}:afloor"
    )
    setup.aclosers.append(aio_storage.bridge.storage.aclose)  # type: ignore[attr-defined]
    floors = {
        "floor-mem-1": _limits_floor(SlidingWindowCounterRateLimiter(mem_storage), items[1]),
        "floor-mem-2": _limits_floor(SlidingWindowCounterRateLimiter(mem_storage), items[2]),
        "floor-mem-fw": _limits_floor(FixedWindowRateLimiter(mem_storage), items[1]),
        "floor-red-1": _limits_floor(SlidingWindowCounterRateLimiter(red_storage), items[1]),
        "floor-red-2": _limits_floor(SlidingWindowCounterRateLimiter(red_storage), items[2]),
        "floor-red-fw": _limits_floor(FixedWindowRateLimiter(red_storage), items[1]),
    }
    afloors = {
        "afloor-red-1": _async_limits_floor(AsyncSlidingWindow(aio_storage), items[1]),
        "afloor-red-2": _async_limits_floor(AsyncSlidingWindow(aio_storage), items[2]),
    }

    # bankguard's Hit on its stores.
    mem_store = MemoryStore()
    red_store = RedisStore(REDIS_URL, prefix=f"{prefix}:hit:")
    setup.closers.append(red_store.close)
    setup.aclosers.append(red_store.aclose)
    hit_ops = {1: _hit_op(ONE), 2: _hit_op(TWO), "fw": _hit_op(ONE, "fixed-window")}
    hits: dict[str, Callable[[], Any]] = {}
    for k, op in hit_ops.items():
        hits[f"hit-mem-{k}"] = lambda op=op: mem_store.execute(op)
        hits[f"hit-red-{k}"] = lambda op=op: red_store.execute(op)
    ahits = {f"ahit-red-{k}": (lambda op=hit_ops[k]: red_store.aexecute(op)) for k in (1, 2)}
    for name, fn in hits.items():
        _admitted(fn(), name)
    for name, afn in ahits.items():
        _admitted(loop.run_until_complete(afn()), name)
    for name, fn in floors.items():
        if not fn():
            raise SystemExit(f"{name}: refused")

    # Guard.decide / adecide with and without the rate-limit check.
    facts = make_facts("GET", PATH, headers=setup.headers)
    decide_pairs: dict[str, tuple[Guard, Guard]] = {}
    for k in (1, 2):
        for redis_ in (False, True):
            on = setup.guard(k, redis_, f"decide{k}")
            decide_pairs[f"dec-{'red' if redis_ else 'mem'}-{k}"] = (on, without_ratelimit(on, setup.sink))
    for name, (on, off) in decide_pairs.items():
        for g in (on, off):
            d = g.decide(facts)
            if not d.allowed:
                raise SystemExit(f"{name}: refused {d.event.reason}")
        if not any(h[0] == "ratelimit" for h in on.decide(facts).response_headers):
            raise SystemExit(f"{name}: no RateLimit header: the rate-limit check did not run")
        if any(h[0] == "ratelimit" for h in off.decide(facts).response_headers):
            raise SystemExit(f"{name}: the baseline guard counts too")

    # Applications.
    bare_asgi, bare_wsgi = AsgiClient(starlette_app(), setup.headers), WsgiClient(flask_app(), setup.headers)
    asgi: dict[str, tuple[Any, Any]] = {}
    wsgi: dict[str, tuple[Any, Any]] = {}
    bg_off_asgi = AsgiClient(setup.protected(starlette_app(), None, False, "off"), setup.headers)
    bg_off_wsgi = WsgiClient(setup.protected(flask_app(), None, False, "off"), setup.headers)
    for k in (1, 2):
        for redis_ in (False, True):
            where = "red" if redis_ else "mem"
            storage = setup.storage(redis_)
            tag = f"app{k}{where}"
            asgi[f"bg-{where}-{k}"] = (
                AsgiClient(setup.protected(starlette_app(), k, redis_, tag), setup.headers),
                bg_off_asgi,
            )
            asgi[f"peer-{where}-{k}"] = (
                AsgiClient(slowapi_app(LIMITS[k], storage, f"{prefix}:slowapi{k}"), setup.headers),
                bare_asgi,
            )
            wsgi[f"bg-{where}-{k}"] = (
                WsgiClient(setup.protected(flask_app(), k, redis_, tag), setup.headers),
                bg_off_wsgi,
            )
            wsgi[f"peer-{where}-{k}"] = (
                WsgiClient(flask_limiter_app(LIMITS[k], storage, f"{prefix}:flask{k}"), setup.headers),
                bare_wsgi,
            )
    # Every client once (the guards verify and cache the token), then each answered 200, with the
    # RateLimit header fields exactly when bankguard's limiter is on.
    clients: dict[int, tuple[str, Any, bool | None]] = {}
    for name, (on, off) in (*asgi.items(), *wsgi.items()):
        clients[id(on)] = (name, on, name.startswith("bg"))
        clients.setdefault(id(off), (name + " baseline", off, False))
    for _, client, _ in clients.values():
        if isinstance(client, AsgiClient):
            loop.run_until_complete(client())
        else:
            client()
    for name, client, headers in clients.values():
        client.expect(200, name, headers=headers)
    setup.sink.check("warm-up")

    rt = round_trip_rows(setup, floors, afloors, decide_pairs, facts, asgi, wsgi, batch)

    core = [
        *(Contender(name, fn, reps=20 if "mem" in name else 4) for name, fn in floors.items()),
        *(Contender(name, fn, reps=20 if "mem" in name else 4) for name, fn in hits.items()),
        *(Contender(name, fn, reps=4, asynchronous=True) for name, fn in afloors.items()),
        *(Contender(name, fn, reps=4, asynchronous=True) for name, fn in ahits.items()),
    ]
    for name, (on, off) in decide_pairs.items():
        core.append(
            Contender(name, lambda g=on: g.decide(facts), reps=8, baseline=lambda g=off: g.decide(facts))
        )
        # The floor added to the same decision the same way: the guard with, in place of its
        # limiter, a check that makes the bare limits hit() of each window.
        where = name[len("dec-") :]
        floored = floor_guard(off, floors["floor-" + where], inline="mem" in name)
        fstore = FloorStore(floors["floor-" + where], afloors.get("afloor-" + where))
        core.append(
            Contender(
                "f" + name,
                lambda g=floored, st=fstore: g.decide(facts, st),
                reps=8,
                baseline=lambda g=off: g.decide(facts),
            )
        )
        if "red" in name:
            core.append(
                Contender(
                    "a" + name,
                    lambda g=on: g.adecide(facts),
                    reps=4,
                    asynchronous=True,
                    baseline=lambda g=off: g.adecide(facts),
                )
            )
            core.append(
                Contender(
                    "fa" + name,
                    lambda g=floored, st=fstore: g.adecide(facts, st),
                    reps=4,
                    asynchronous=True,
                    baseline=lambda g=off: g.adecide(facts),
                )
            )
    asgi_group = [Contender("asgi-bare", bare_asgi, reps=4, asynchronous=True)]
    asgi_group += [
        Contender("asgi-" + name, on, reps=4, asynchronous=True, baseline=off)
        for name, (on, off) in asgi.items()
    ]
    wsgi_group = [Contender("wsgi-bare", bare_wsgi, reps=4)]
    wsgi_group += [Contender("wsgi-" + name, on, reps=4, baseline=off) for name, (on, off) in wsgi.items()]
    s: dict[str, list[float]] = {}
    with steady_memory_storages():
        for group in (core, asgi_group, wsgi_group):
            s.update(measure_rounds(loop, group, rounds, slots))
    setup.sink.check("timed run")
    for name, client, headers in clients.values():
        client.expect(200, f"{name}, timed run", headers=headers)
    return s, rt


def round_trip_rows(
    setup: Setup,
    floors: dict[str, Callable[[], Any]],
    afloors: dict[str, Callable[[], Any]],
    decide_pairs: dict[str, tuple[Guard, Guard]],
    facts: Any,
    asgi: dict[str, tuple[Any, Any]],
    wsgi: dict[str, tuple[Any, Any]],
    n: int,
) -> list[Row]:
    loop = setup.loop
    store = RedisStore(REDIS_URL, prefix=f"{setup.prefix}:rt:")
    setup.closers.append(store.close)
    setup.aclosers.append(store.aclose)
    three = setup.guard(3, True, "decide3")
    guards = {1: decide_pairs["dec-red-1"][0], 2: decide_pairs["dec-red-2"][0], 3: three}
    rows: list[Row] = []

    def add(what: str, windows: int, fn: Callable[[], Any], asynchronous: bool = False) -> None:
        trips, commands = round_trips(loop, fn, n, asynchronous)
        rows.append({"what": what, "windows": windows, "trips": trips, "commands": commands})

    for k in (1, 2, 3):
        op = _hit_op(LIMITS[k])
        add("bankguard RedisStore.execute(Hit)", k, lambda op=op: store.execute(op))
    for k in (1, 2, 3):
        op = _hit_op(LIMITS[k])
        add("bankguard RedisStore.aexecute(Hit)", k, lambda op=op: store.aexecute(op), True)
    for k, g in guards.items():
        add("bankguard Guard.decide (whole decision)", k, lambda g=g: g.decide(facts))
    for k, g in guards.items():
        add("bankguard Guard.adecide (whole decision)", k, lambda g=g: g.adecide(facts), True)
    for k in (1, 2):
        add("bankguard protect(Starlette)", k, asgi[f"bg-red-{k}"][0], True)
    for k in (1, 2):
        add("bankguard protect(Flask)", k, wsgi[f"bg-red-{k}"][0])
    for k in (1, 2):
        add("limits hit() per window", k, floors[f"floor-red-{k}"])
    for k in (1, 2):
        add("limits.aio hit() per window", k, afloors[f"afloor-red-{k}"], True)
    for k in (1, 2):
        add("slowapi", k, asgi[f"peer-red-{k}"][0], True)
    for k in (1, 2):
        add("Flask-Limiter", k, wsgi[f"peer-red-{k}"][0])
    for name in ("bg-red-1", "bg-red-2", "peer-red-1", "peer-red-2"):
        asgi[name][0].expect(200, f"{name}, round trips", headers=name.startswith("bg"))
        wsgi[name][0].expect(200, f"{name}, round trips", headers=name.startswith("bg"))
    return rows


# --------------------------------------------------------------------------------------------
# Report


def _cleanup(prefix: str) -> int:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()


def _quiet() -> None:
    logging.getLogger("bankguard").setLevel(logging.ERROR)
    # Both peers log each refusal at warning; the wiring check refuses on purpose.
    logging.getLogger("slowapi").setLevel(logging.ERROR)
    logging.getLogger("flask-limiter").setLevel(logging.ERROR)
    logging.getLogger("flask_limiter").setLevel(logging.ERROR)


def report(rounds: int, slots: int, *, quick: bool = False) -> None:
    _quiet()
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.RedisError as exc:
        print(f"\nrate limits: skipped, no Redis at {REDIS_URL} ({type(exc).__name__})")
        return
    prefix = f"bgbench-rl-{os.getpid()}-{secrets.token_hex(4)}"
    loop = asyncio.new_event_loop()
    issuer = TestIssuer(alg="ES256")
    setup = Setup(loop, prefix, issuer, issuer.mint(scope="accounts", lifetime=3600), OutcomeSink())
    try:
        _refusal_checks(setup)
        s, rt = measure(setup, rounds, slots, 20 if quick else 50)
        cleanup = cleanup_thread_cost(20 if quick else 50)
    finally:
        for aclose in setup.aclosers:
            loop.run_until_complete(aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        for close in setup.closers:
            close()
        removed = _cleanup(prefix)
    print_report(rounds, slots, s, rt, cleanup, removed)


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def print_report(
    rounds: int,
    slots: int,
    s: dict[str, list[float]],
    rt: list[Row],
    cleanup: tuple[float, float],
    removed: int,
) -> None:
    print(
        f"\nrate limits: {rounds} rounds x {slots} slots (µs per request; limits {ONE!r} and {TWO!r},"
        f" {STRATEGY} unless fixed-window)"
    )
    print("(floor: bare limits hit() per window, called in a burst; Hit: bankguard's store operation,")
    print(" all windows and the statistics for the RateLimit headers; decide +: Guard.decide with the")
    print(" ratelimit check minus without; floor +: the same guard without the check, then the bare")
    print(" hit(s), minus the guard alone -- the floor added to the same decision the same way, so both")
    print(" run with the caches a request leaves; x: medians of per-round ratios, measured side by side;")
    print(f" target <= {TARGET_FLOOR:.1f}x, same storage and windows; x burst: decide + / burst floor)")
    print(
        f"{'storage':<14}{'strategy':<10}{'win':>4}{'floor':>8}{'Hit':>8}{'x':>7}{'target':>9}"
        f"{'decide +':>10}{'floor +':>9}{'x':>7}{'target':>9}{'x burst':>9}"
    )
    rows = [
        ("memory", "sliding", 1, "floor-mem-1", "hit-mem-1", "dec-mem-1"),
        ("memory", "sliding", 2, "floor-mem-2", "hit-mem-2", "dec-mem-2"),
        ("memory", "fixed", 1, "floor-mem-fw", "hit-mem-fw", None),
        ("redis", "sliding", 1, "floor-red-1", "hit-red-1", "dec-red-1"),
        ("redis", "sliding", 2, "floor-red-2", "hit-red-2", "dec-red-2"),
        ("redis", "fixed", 1, "floor-red-fw", "hit-red-fw", None),
        ("redis async", "sliding", 1, "afloor-red-1", "ahit-red-1", "adec-red-1"),
        ("redis async", "sliding", 2, "afloor-red-2", "ahit-red-2", "adec-red-2"),
    ]
    for storage, strategy, windows, floor, hit, dec in rows:
        hit_ratio = ratio(s[hit], s[floor])
        line = (
            f"{storage:<14}{strategy:<10}{windows:>4}{med(s[floor]):>8.1f}{med(s[hit]):>8.1f}"
            f"{hit_ratio:>7.2f}{_met(hit_ratio <= TARGET_FLOOR):>9}"
        )
        if dec is not None:
            added = diff(s[dec], s[dec + "-"])
            floored = diff(s["f" + dec], s["f" + dec + "-"])
            dec_ratio = ratio(added, floored)
            line += (
                f"{med(added):>10.1f}{med(floored):>9.1f}{dec_ratio:>7.2f}"
                f"{_met(0 < dec_ratio <= TARGET_FLOOR):>9}{ratio(added, s[floor]):>9.2f}"
            )
        print(line)
    decide_whole = {k: med(s[k]) for k in ("dec-mem-1", "dec-red-1", "adec-red-1")}
    print(
        "  whole decision with the limit, 1 window: "
        + ", ".join(f"{k.replace('-1', '')} {v:.1f}" for k, v in decide_whole.items())
    )

    print("\nRedis round trips per request (counted: redis-py writes; commands: replies read)")
    print(f"{'':<44}{'windows':>8}{'round trips':>13}{'commands':>10}{'target':>9}")
    for r in rt:
        target = ""
        if r["what"].startswith("bankguard"):
            target = _met(abs(r["trips"] - 1) < 1e-9)
        print(f"{r['what']:<44}{r['windows']:>8}{r['trips']:>13.2f}{r['commands']:>10.2f}{target:>9}")
    for k in (1, 2, 3):
        mine = [r["trips"] for r in rt if r["what"].startswith("bankguard") and r["windows"] == k]
        print(
            f"  round trips per request: {max(mine):.2f} "
            f"({k} window{'s' if k > 1 else ''}, worst bankguard row)"
        )
    warm, starting = cleanup
    print(
        f"\nlimits MemoryStorage: a bare hit costs {warm:.1f} µs, "
        f"{starting:.1f} µs when it starts the cleanup thread"
    )
    print(" (every hit 10 ms or more after the last thread started: low traffic; bankguard memory://,")
    print(" its pre-authentication limit, slowapi and Flask-Limiter memory:// alike; the rows above keep")
    print(" the thread running, as steady traffic does)")

    print("\nin an application, added cost of the limiter (µs per request; +: with minus without,")
    print(" alternated call by call; bankguard: protect() with ratelimit minus protect() without;")
    print(" peer: app with the limiter minus the same bare app; x: peer + / bankguard +, target > 1)")
    print(
        f"{'app':<10}{'storage':<9}{'win':>4}{'bare':>8}{'protect':>9}{'bg +':>8}{'peer':>15}{'peer +':>9}"
        f"{'x':>7}{'target':>9}{'protect - bare':>16}"
    )
    for kind, bare, peer in (("asgi", "Starlette", "slowapi"), ("wsgi", "Flask", "Flask-Limiter")):
        for where, label in (("mem", "memory"), ("red", "redis")):
            for k in (1, 2):
                bg, pr = f"{kind}-bg-{where}-{k}", f"{kind}-peer-{where}-{k}"
                bg_added, peer_added = diff(s[bg], s[bg + "-"]), diff(s[pr], s[pr + "-"])
                times = ratio(peer_added, bg_added) if med(bg_added) > 0 else float("inf")
                whole = diff(s[bg], s[f"{kind}-bare"])
                print(
                    f"{bare:<10}{label:<9}{k:>4}{med(s[f'{kind}-bare']):>8.1f}{med(s[bg]):>9.1f}"
                    f"{med(bg_added):>8.1f}{peer:>15}{med(peer_added):>9.1f}{times:>7.2f}"
                    f"{_met(times > 1):>9}{med(whole):>16.1f}"
                )
    print("(slowapi blocks the event loop for each Redis round trip; bankguard awaits redis.asyncio)")
    print(f"(Redis keys of this run deleted: {removed})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few rounds, few slots")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--slots", type=int, default=None, help="interleaved slots per round")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    slots = args.slots or (50 if args.quick else 140)
    print(f"python {sys.version.split()[0]}")
    report(rounds, slots, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
