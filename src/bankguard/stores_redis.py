"""A store shared by every worker process and replica serving one API, backed by Redis.

:class:`RedisStore` executes the operations of :mod:`bankguard.stores` with the same
results as :class:`~bankguard.stores.MemoryStore`, so a check behaves the same whether
one process or fifty serve the API.

What is stored
    Short-lived entries only, each with an expiry: DPoP proof ``jti`` replay markers
    (:class:`~bankguard.stores.SetIfAbsent` for the proof's acceptance window) and
    counters (:class:`~bankguard.stores.Incr`, a fixed window that starts at the first
    increment). Nothing is kept without a TTL, so Redis needs no persistence and no
    clean-up job.

Why keys carry a prefix
    Every key is ``prefix + key`` (``"bankguard:"`` by default). A Redis is often shared
    with other applications; the prefix keeps bankguard's entries apart from theirs,
    lets an ACL restrict the guard to its own keys (``~bankguard:*``), and lets two APIs
    or environments on one Redis use different prefixes so that one never sees the
    other's replay markers or counters.

No secrets in keys or values
    Keys and values are stored as given and are visible to anyone who can run ``SCAN``
    or ``MONITOR`` on the Redis. Callers pass hashes (the DPoP replay entry is keyed on
    the SHA-256 of the proof's ``jti``), never tokens, proofs or credentials.

Failures
    ``socket_timeout`` is the store's ``timeout`` (opening a connection may take
    ``max(2 s, timeout)``: on a busy event loop the handshake's completion waits for the
    loop), so a dead Redis fails fast, and nothing is retried: ``SET NX`` and ``INCRBY`` are not
    idempotent, and repeating one after a lost reply would report a first use as a
    replay or count a request twice. Every error (unreachable, timed out, refused,
    ``ResponseError``) propagates; the guard's driver turns an exception from a store
    into a fail-closed 503. When all ``max_connections`` connections of a single server's
    pool are busy, an operation waits up to ``max(2 s, 8 x timeout)`` for one (a blocking
    pool): a burst is congestion, not Redis failing. Cluster and Sentinel pools cannot wait;
    they get at least 1024 connections per node instead.
    Options in the URL's query string (``?socket_timeout=1``) override these defaults.

Sync face (WSGI)
    One :class:`redis.Redis` with a thread-safe pool, created on first use.

Async face (ASGI)
    A :mod:`redis.asyncio` connection belongs to the event loop that opened it, and a
    process may run several loops (one per test, one per ``TestClient``), so the store
    keeps one async client per running loop. The client is closed when its loop shuts
    down: it is tied to an async generator that the loop finalizes in
    ``loop.shutdown_asyncgens()``, which ``asyncio.run``, ``asyncio.Runner``, anyio
    and uvicorn call. :meth:`RedisStore.aclose` closes the current loop's client at once
    (from an ASGI lifespan shutdown, say); a loop closed without ``shutdown_asyncgens``
    leaks its client's connections. On a single server, rate-limit hits bypass the client's
    own command machinery: their commands are written at once and their replies read on
    pooled connections of redis-py's connection class under one deadline (:class:`_Commands`),
    about half the client's per-call cost on loopback.

Fork safety
    Pre-fork servers (gunicorn) may create the store in the master process. The sync
    pool handles the fork: ``redis.connection.ConnectionPool._checkpid()``, called on
    every ``get_connection()`` and ``release()`` (``BlockingConnectionPool`` included),
    compares ``os.getpid()`` with the pid recorded when the pool was (re)set and, in a
    forked child, calls ``reset()``, so the child opens its own connections and never
    shares a socket with its parent; ``Connection.disconnect()`` skips
    ``socket.shutdown()`` when the pid differs, so the child cannot cut the parent's
    connection. The :mod:`redis.asyncio` pool has no such check, which is fine as long as
    the async face is first used in the worker (event loops do not survive a fork).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import sys
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.connection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript, Script
from redis.retry import Retry

from .ratelimit import counted_fixed, counted_moving, counted_sliding
from .stores import REDIS_SCHEMES, Counted, Get, Hit, Incr, SetIfAbsent, StoreOp

if sys.version_info >= (3, 11):
    from asyncio import timeout as async_timeout
else:  # redis-py depends on async-timeout below 3.11.3
    from async_timeout import timeout as async_timeout  # type: ignore[import-not-found,unused-ignore]

__all__ = ["RedisStore"]

_SHOWN_SCHEMES = "redis://, rediss://, unix://, redis+cluster://, redis+sentinel:// (rediss+ for TLS)"

#: redis-py's URL parser (what ``from_url`` uses), to refuse a bad URL when the store is built.
_parse_url = cast(Callable[[str], dict[str, object]], redis.connection.parse_url)

#: Create the counter at 0 with the expiry unless it exists, then add: the window starts at
#: the first increment and later increments never extend it. One round trip, atomic.
_INCR_SCRIPT = """
redis.call('SET', KEYS[1], 0, 'NX', 'PX', ARGV[2])
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""


def _combined(
    acquire: bytes, read: bytes, *, read_args: dict[str, str] | None = None, keys: int = 1
) -> bytes:
    """One script running a ``limits`` strategy's hit script and then the script (or command) it
    reads the window's statistics with, both as ``limits`` ships them: one command per window.

    ``read_args`` renames the read script's ``ARGV[i]`` to the slots the combined call fills.
    """
    body = read.decode("utf-8")
    for old, new in (read_args or {}).items():
        body = body.replace(old, new)
    return (
        f"local function acquire()\n{acquire.decode('utf-8')}\nend\n"
        f"local function read()\n{body}\nend\n"
        "local admitted = acquire()\n"
        "return {admitted, read()}\n"
    ).encode()


def _limits_scripts() -> dict[str, bytes]:
    """The scripts a hit runs: the ``limits`` strategies' Lua, each hit joined with its read."""
    from limits.storage import RedisStorage as LimitsRedis

    return {
        # ARGV: expiry, amount
        "fixed-window": _combined(LimitsRedis.SCRIPT_INCR_EXPIRE, b"return redis.call('pttl', KEYS[1])"),
        # ARGV: now, limit, expiry, amount, window start (the read's ARGV[1])
        "moving-window": _combined(
            LimitsRedis.SCRIPT_ACQUIRE_MOVING_WINDOW,
            LimitsRedis.SCRIPT_MOVING_WINDOW,
            read_args={"ARGV[1]": "ARGV[5]"},
        ),
        # KEYS: previous, current; ARGV: limit, expiry, amount (the read's ARGV[1] is the expiry)
        "sliding-window-counter": _combined(
            LimitsRedis.SCRIPT_ACQUIRE_SLIDING_WINDOW,
            LimitsRedis.SCRIPT_SLIDING_WINDOW,
            read_args={"ARGV[1]": "ARGV[2]"},
        ),
    }


_SCRIPTS = _limits_scripts()
_SHA = {name: hashlib.sha1(text).hexdigest() for name, text in _SCRIPTS.items()}  # noqa: S324 - EVALSHA names a script by its SHA-1, no security use  # nosec B324


def _hit_commands(prefix: str, op: Hit, now: float) -> list[tuple[object, ...]]:
    """One command per window: the ``limits`` strategy's hit and the read of its statistics."""
    commands: list[tuple[object, ...]] = []
    for w in op.windows:
        key = prefix + w.key
        sha = _SHA.get(w.strategy)
        if sha is None:
            raise ValueError(f"unknown rate-limit strategy {w.strategy!r}")
        if w.strategy == "fixed-window":
            commands.append(("EVALSHA", sha, 1, key, w.seconds, op.cost))
        elif w.strategy == "moving-window":
            commands.append(("EVALSHA", sha, 1, key, now, w.limit, w.seconds, op.cost, now - w.seconds))
        else:
            # limits' key scheme (both windows in one hash slot of a Redis Cluster), under the
            # prefix, so an ACL restricted to ``~prefix*`` covers them
            current = f"{prefix}{{{w.key}}}"
            previous = current + "/-1"
            commands.append(("EVALSHA", sha, 2, previous, current, w.limit, w.seconds, op.cost))
    return commands


def _queue_hit(pipe: Any, prefix: str, op: Hit, now: float) -> None:
    for command in _hit_commands(prefix, op, now):
        pipe.execute_command(*command)


class _Commands:
    """Commands sent in one write, their replies read in order, on connections of redis-py's own
    class that this pool holds -- for the async face's rate-limit hits on a single server.

    redis-py's async client spends most of a loopback round trip on itself: a blocking pool
    waited on through a condition, a task started by ``asyncio.wait_for`` for every write and a
    timeout for every read, a pipeline object per call. Here a connection is taken from a list
    (a semaphore bounds how many exist; only when all are busy does an operation wait, up to
    the pool wait), and the whole exchange -- write and every reply -- runs under one deadline,
    the store's ``timeout``. A connection that failed or timed out mid-exchange is closed, never
    reused; opening one keeps its own, longer, connect timeout. Error replies are returned in
    place, as a pipeline with ``raise_on_error=False`` returns them.
    """

    def __init__(self, pool: redis.asyncio.ConnectionPool, size: int, timeout: float, wait: float) -> None:
        kwargs = dict(pool.connection_kwargs)
        # The deadline (the URL's socket_timeout, when it gives one) covers the whole exchange.
        self._timeout = float(kwargs.pop("socket_timeout", None) or timeout)
        # Opening a connection (TCP, TLS, AUTH, SELECT) keeps the longer connect timeout.
        self._connect_timeout = float(kwargs.get("socket_connect_timeout") or _connect_timeout(timeout))
        self._kwargs = kwargs
        self._class = pool.connection_class
        self._idle: list[Any] = []
        self._free = asyncio.Semaphore(size)
        self._wait = wait
        self._open: weakref.WeakSet[Any] = weakref.WeakSet()

    async def run(self, commands: list[tuple[object, ...]]) -> list[object]:
        free = self._free
        if free.locked():
            try:
                await asyncio.wait_for(free.acquire(), self._wait)
            except asyncio.TimeoutError:
                raise redis.exceptions.ConnectionError("no free connection within the pool wait") from None
        else:
            await free.acquire()  # returns at once
        try:
            conn = self._idle.pop() if self._idle else self._connection()
            done = False
            try:
                try:
                    if not conn.is_connected:
                        async with async_timeout(self._connect_timeout):
                            await conn.connect()
                    async with async_timeout(self._timeout):
                        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                        replies: list[object] = []
                        for _ in commands:
                            try:
                                replies.append(await conn.read_response())
                            except redis.exceptions.ResponseError as error:  # read whole: in place
                                replies.append(error)
                except asyncio.TimeoutError:
                    raise redis.exceptions.TimeoutError("Timeout talking to Redis") from None
                done = True
                return replies
            finally:
                if done:
                    self._idle.append(conn)
                else:
                    await conn.disconnect(nowait=True)
        finally:
            free.release()

    def _connection(self) -> Any:
        conn = self._class(**self._kwargs)
        self._open.add(conn)
        return conn

    async def aclose(self) -> None:
        self._idle.clear()
        for conn in list(self._open):
            await conn.disconnect()


def _number(value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bytes):
        value = value.decode("ascii")
    return float(cast(str, value))


def _read_hit(op: Hit, raw: list[object], now: float) -> tuple[Counted, ...]:
    out: list[Counted] = []
    replies = iter(raw)
    for w in op.windows:
        reply = cast("list[object]", next(replies))
        first = reply[0] if reply else None
        second = reply[1] if len(reply) > 1 else None
        if w.strategy == "fixed-window":
            out.append(counted_fixed(int(_number(first)), w.limit, max(0.0, _number(second)) / 1000))
        elif w.strategy == "moving-window":
            window = cast("list[object] | None", second)
            start, count = (_number(window[0]), int(_number(window[1]))) if window else (now, 0)
            out.append(counted_moving(bool(first), w.limit, w.seconds, start, count, now))
        else:
            pc, pttl, cc, cttl = cast("list[object]", second) if second else [0, 0, 0, 0]
            out.append(
                counted_sliding(
                    bool(first),
                    w.limit,
                    w.seconds,
                    int(_number(pc)),
                    max(0.0, _number(pttl)) / 1000,
                    int(_number(cc)),
                    max(0.0, _number(cttl)) / 1000,
                )
            )
    return tuple(out)


def _missing_scripts(raw: list[object]) -> list[int]:
    """The windows (one command each) whose script the server lacked (restarted, flushed, a
    cluster node replaced); raises any other error. Those windows did not run."""
    missing = []
    for i, reply in enumerate(raw):
        if isinstance(reply, redis.exceptions.NoScriptError):
            missing.append(i)
        elif isinstance(reply, Exception):
            raise reply
    return missing


def _milliseconds(ttl: float) -> int:
    if not math.isfinite(ttl):
        raise ValueError(f"ttl must be a finite number of seconds, not {ttl!r}")
    return max(1, math.ceil(round(ttl * 1000, 3)))


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _unknown(op: object) -> TypeError:
    return TypeError(f"unknown store operation {op!r}")


_SECRET_NAME = re.compile(r"pass|secret|token|key|auth|cred", re.IGNORECASE)


def _secrets_of(url: str) -> list[str]:
    """The password and secret-looking query values of ``url``, to keep out of messages."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        found += [value for name, value in parse_qsl(parts.query) if _SECRET_NAME.search(name)]
    except ValueError:
        pass
    if "@" in url:  # unparsable, or a user part without a password: hide all of it
        found.append(url.rpartition("@")[0].partition("://")[2])
    return sorted({s for s in found if s}, key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _redact(url: str) -> str:
    """``url`` with the password and every query value replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, colon, _ = userinfo.partition(":")
            netloc = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
        query = "&".join(f"{name}=***" for name, _ in parse_qsl(parts.query, keep_blank_values=True))
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return "<unparsable URL>"


async def _close_with_loop(
    client: redis.asyncio.Redis, extras: list[Any], forget: weakref.ref[RedisStore]
) -> AsyncGenerator[None, None]:
    """Suspended for the life of the loop; its ``finally`` runs in ``loop.shutdown_asyncgens()``."""
    try:
        yield
    finally:
        store = forget()
        if store is not None:
            store._forget(client)
        await client.aclose()
        for extra in extras:  # the Sentinels' own connections
            await extra.aclose()


class _Target:
    """What a Redis URL names: one server, a cluster (its seed nodes) or a Sentinel-managed master."""

    __slots__ = ("db", "kind", "nodes", "password", "service", "ssl", "url", "username")

    def __init__(self, url: str) -> None:
        scheme = url.partition("://")[0] if "://" in url else ""
        if scheme not in REDIS_SCHEMES:
            shown = f"{scheme}://" if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,19}", scheme) else "another"
            raise _BadScheme(f"Redis URL scheme must be one of {_SHOWN_SCHEMES}, not {shown}")
        self.url = "unix" + url[len(scheme) :] if scheme == "redis+unix" else url
        self.kind = scheme.partition("+")[2] if scheme.endswith(("+cluster", "+sentinel")) else "basic"
        self.ssl = scheme.startswith("rediss")
        self.nodes: list[tuple[str, int]] = []
        self.service: str | None = None
        self.db = 0
        self.username: str | None = None
        self.password: str | None = None
        if self.kind == "basic":
            _parse_url(self.url)
            return
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise ValueError("cluster and sentinel URLs take no query options")
        userinfo, at, hosts = parts.netloc.rpartition("@")
        if at:
            user, colon, password = userinfo.partition(":")
            self.username = unquote(user) or None
            self.password = unquote(password) if colon else None
        for host in hosts.split(","):
            name, colon, port = host.rpartition(":")
            if not colon or not name or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("list the nodes as host:port,host:port")
            self.nodes.append((name.strip("[]"), int(port)))
        path = [p for p in parts.path.split("/") if p]
        if self.kind == "sentinel":
            if not path:
                raise ValueError("name the Sentinel service: redis+sentinel://host:26379/mymaster[/db]")
            self.service = unquote(path[0])
            path = path[1:]
        if path:
            if self.kind == "cluster":
                raise ValueError("a cluster has only db 0: give no path")
            if len(path) != 1 or not path[0].isdigit():
                raise ValueError("the path is /service or /service/db, db a number")
            self.db = int(path[0])


class _BadScheme(ValueError):
    """Not a Redis URL at all: its text is not repeated (it may be a password)."""


def _target_of(url: str) -> _Target:
    try:
        return _Target(url)
    except _BadScheme:
        raise
    except ValueError as exc:
        detail = _scrub(str(exc), _secrets_of(url))
        raise ValueError(f"invalid Redis URL {_redact(url)}: {detail}") from None


def _pool_wait(timeout: float) -> float:
    """How long an operation waits for a free pooled connection. Waiting is local congestion (a
    burst larger than the pool, a busy event loop), not Redis failing: it gets more time than a
    command, so a burst is served late rather than refused, or let through under fail-open."""
    return max(2.0, 8 * timeout)


def _connect_timeout(timeout: float) -> float:
    """Time to open a connection: on a busy event loop the handshake's completion may wait for
    the loop longer than a command's ``timeout``; an unreachable Redis still fails within it."""
    return max(2.0, timeout)


#: Connections per node of a cluster or Sentinel-managed master: redis-py's pools there do not
#: wait for a free connection (they fail at once), so they get room for a burst.
_UNPOOLED_CONNECTIONS = 1024


def _sync_client_for(target: _Target, timeout: float, max_connections: int) -> tuple[Any, list[Any]]:
    """The client, and other clients to close with it (a Sentinel's connections to the Sentinels)."""
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": _connect_timeout(timeout),
        "retry": Retry(NoBackoff(), 0),
    }
    if target.kind == "basic":
        pool = redis.BlockingConnectionPool.from_url(
            target.url, max_connections=max_connections, timeout=_pool_wait(timeout), **common
        )
        return redis.Redis.from_pool(pool), []
    auth: dict[str, Any] = {"username": target.username, "password": target.password, "ssl": target.ssl}
    if target.kind == "cluster":
        from redis.cluster import ClusterNode

        nodes = [ClusterNode(host, port) for host, port in target.nodes]  # type: ignore[no-untyped-call]
        room = max(max_connections, _UNPOOLED_CONNECTIONS)
        return redis.RedisCluster(startup_nodes=nodes, max_connections=room, **auth, **common), []
    from redis.sentinel import Sentinel

    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        target.nodes,
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": _connect_timeout(timeout),
            **auth,
        },
        db=target.db,
        **auth,
        **common,
    )
    master = sentinel.master_for(  # type: ignore[no-untyped-call]
        cast(str, target.service), max_connections=max(max_connections, _UNPOOLED_CONNECTIONS)
    )
    return master, list(sentinel.sentinels)


def _async_client_for(target: _Target, timeout: float, max_connections: int) -> tuple[Any, list[Any]]:
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": _connect_timeout(timeout),
        "retry": AsyncRetry(NoBackoff(), 0),
    }
    if target.kind == "basic":
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            target.url, max_connections=max_connections, timeout=_pool_wait(timeout), **common
        )
        return redis.asyncio.Redis.from_pool(pool), []
    auth: dict[str, Any] = {"username": target.username, "password": target.password, "ssl": target.ssl}
    if target.kind == "cluster":
        from redis.asyncio.cluster import ClusterNode

        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        room = max(max_connections, _UNPOOLED_CONNECTIONS)
        cluster = redis.asyncio.RedisCluster(startup_nodes=nodes, max_connections=room, **auth, **common)
        return cluster, []
    from redis.asyncio.sentinel import Sentinel

    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        target.nodes,
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": _connect_timeout(timeout),
            **auth,
        },
        db=target.db,
        **auth,
        **common,
    )
    room = max(max_connections, _UNPOOLED_CONNECTIONS)
    return sentinel.master_for(cast(str, target.service), max_connections=room), list(sentinel.sentinels)


class _LoopClient:
    __slots__ = ("client", "closer", "commands", "incr")

    def __init__(
        self, client: redis.asyncio.Redis, closer: AsyncGenerator[None, None], commands: _Commands | None
    ) -> None:
        self.client = client
        self.incr: AsyncScript = client.register_script(_INCR_SCRIPT)
        self.closer = closer
        self.commands = commands


class RedisStore:
    """Store on a Redis shared by all workers; a :class:`~bankguard.stores.SyncStore` and an
    :class:`~bankguard.stores.AsyncStore`. Thread-safe.

    :param url: ``redis://[user:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
        ``unix:///path/to/redis.sock``; query options are passed to redis-py.
    :param prefix: prepended to every key.
    :param timeout: seconds for each command (connecting and waiting for a pooled
        connection get more: see "Failures" above).
    :param max_connections: connections per pool (one sync pool, one async pool per loop).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "bankguard:",
        timeout: float = 0.25,
        max_connections: int = 64,
    ) -> None:
        self._target = _target_of(url)
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ValueError("timeout must be a positive number of seconds")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections <= 0:
            raise ValueError("max_connections must be a positive integer")
        self._url = url
        self.prefix = prefix
        self.timeout = float(timeout)
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._sync: tuple[redis.Redis, Script] | None = None
        self._sync_extras: list[Any] = []
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"RedisStore({_redact(self._url)!r}, prefix={self.prefix!r}, timeout={self.timeout!r})"

    # -- sync face -------------------------------------------------------------------

    def _sync_client(self) -> tuple[redis.Redis, Script]:
        current = self._sync
        if current is not None:
            return current
        with self._lock:
            if self._sync is None:
                client, extras = _sync_client_for(self._target, self.timeout, self.max_connections)
                self._sync_extras = extras
                self._sync = (client, client.register_script(_INCR_SCRIPT))
            return self._sync

    def execute(self, op: StoreOp) -> object:
        if isinstance(op, SetIfAbsent):
            client, _ = self._sync_client()
            return bool(client.set(self.prefix + op.key, op.value, nx=True, px=_milliseconds(op.ttl)))
        if isinstance(op, Get):
            client, _ = self._sync_client()
            return _text(client.get(self.prefix + op.key))
        if isinstance(op, Incr):
            ms = _milliseconds(op.ttl)
            _, incr = self._sync_client()
            return int(incr(keys=[self.prefix + op.key], args=[op.amount, ms]))
        if isinstance(op, Hit):
            return self._hit(op)
        raise _unknown(op)  # Call included: the drivers run it, a store never does

    def _hit(self, op: Hit) -> tuple[Counted, ...]:
        """Every window in one pipeline: one round trip. Windows whose script the server lacks
        (after a restart) did not run: the scripts are loaded and those windows alone sent
        again, so no window counts a request twice."""
        client, _ = self._sync_client()
        now = time.time()
        pipe = client.pipeline(transaction=False)
        _queue_hit(pipe, self.prefix, op, now)
        raw = pipe.execute(raise_on_error=False)
        missing = _missing_scripts(raw)
        if missing:
            for text in _SCRIPTS.values():  # on a cluster, every primary loads it
                client.script_load(text)
            again = Hit(tuple(op.windows[i] for i in missing), op.cost)
            pipe = client.pipeline(transaction=False)
            _queue_hit(pipe, self.prefix, again, now)
            redo = pipe.execute(raise_on_error=False)
            if _missing_scripts(redo):
                raise redis.exceptions.NoScriptError("the rate-limit scripts could not be loaded")
            for i, reply in zip(missing, redo, strict=True):
                raw[i] = reply
        return _read_hit(op, raw, now)

    # -- async face ------------------------------------------------------------------

    async def _loop_client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            bound = self._async.get(loop)
            if bound is not None:
                return bound
            client, extras = _async_client_for(self._target, self.timeout, self.max_connections)
            commands = None
            if self._target.kind == "basic":
                commands = _Commands(
                    client.connection_pool, self.max_connections, self.timeout, _pool_wait(self.timeout)
                )
                extras = [*extras, commands]
            bound = _LoopClient(client, _close_with_loop(client, extras, weakref.ref(self)), commands)
            self._async[loop] = bound
        # Runs to the generator's first yield without suspending, which registers it with
        # the loop's shutdown_asyncgens().
        await bound.closer.asend(None)
        return bound

    def _forget(self, client: redis.asyncio.Redis) -> None:
        with self._lock:
            for loop, bound in list(self._async.items()):
                if bound.client is client:
                    del self._async[loop]

    async def aexecute(self, op: StoreOp) -> object:
        if isinstance(op, SetIfAbsent):
            client = (await self._loop_client()).client
            stored = await client.set(self.prefix + op.key, op.value, nx=True, px=_milliseconds(op.ttl))
            return bool(stored)
        if isinstance(op, Get):
            client = (await self._loop_client()).client
            return _text(await client.get(self.prefix + op.key))
        if isinstance(op, Incr):
            ms = _milliseconds(op.ttl)
            incr = (await self._loop_client()).incr
            return int(await incr(keys=[self.prefix + op.key], args=[op.amount, ms]))
        if isinstance(op, Hit):
            return await self._ahit(op)
        raise _unknown(op)

    async def _ahit(self, op: Hit) -> tuple[Counted, ...]:
        bound = await self._loop_client()
        now = time.time()
        if bound.commands is not None:
            return await self._ahit_commands(bound.commands, op, now)
        client = bound.client
        pipe = client.pipeline(transaction=False)
        _queue_hit(pipe, self.prefix, op, now)
        raw = await pipe.execute(raise_on_error=False)
        missing = _missing_scripts(raw)
        if missing:
            for text in _SCRIPTS.values():
                await client.script_load(text)
            again = Hit(tuple(op.windows[i] for i in missing), op.cost)
            pipe = client.pipeline(transaction=False)
            _queue_hit(pipe, self.prefix, again, now)
            redo = await pipe.execute(raise_on_error=False)
            if _missing_scripts(redo):
                raise redis.exceptions.NoScriptError("the rate-limit scripts could not be loaded")
            for i, reply in zip(missing, redo, strict=True):
                raw[i] = reply
        return _read_hit(op, raw, now)

    async def _ahit_commands(self, commands: _Commands, op: Hit, now: float) -> tuple[Counted, ...]:
        """:meth:`_ahit` on a single server, through :class:`_Commands`."""
        raw = await commands.run(_hit_commands(self.prefix, op, now))
        missing = _missing_scripts(raw)
        if missing:
            await commands.run([("SCRIPT", "LOAD", text) for text in _SCRIPTS.values()])
            again = Hit(tuple(op.windows[i] for i in missing), op.cost)
            redo = await commands.run(_hit_commands(self.prefix, again, now))
            if _missing_scripts(redo):
                raise redis.exceptions.NoScriptError("the rate-limit scripts could not be loaded")
            for i, reply in zip(missing, redo, strict=True):
                raw[i] = reply
        return _read_hit(op, raw, now)

    # -- lifecycle -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the running loop's async client now (the next operation opens a new one)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            bound = self._async.pop(loop, None)
        if bound is not None:
            await bound.closer.aclose()

    def close(self) -> None:
        """Close the sync pool and forget the async clients.

        A forgotten async client is closed on its own loop: its generator is finalized
        when collected, or at the latest when the loop shuts down. The store stays usable;
        the next operation connects again.
        """
        with self._lock:
            current, self._sync = self._sync, None
            extras, self._sync_extras = self._sync_extras, []
            forgotten, self._async = self._async, weakref.WeakKeyDictionary()
        forgotten.clear()  # outside the lock: finalizing a generator schedules its aclose()
        if current is not None:
            current[0].close()
        for extra in extras:
            extra.close()
