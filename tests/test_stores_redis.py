"""RedisStore against the real redis-server on 127.0.0.1:6379 (scripts/test.sh starts one).

Each test works under its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
import redis

from bankguard import EventCollector, Guard, Policy
from bankguard.controls import State
from bankguard.errors import BadRequest
from bankguard.guard import default_checks
from bankguard.request import RequestFacts
from bankguard.stores import Call, Get, Hit, Incr, SetIfAbsent, StoreOp, Window
from bankguard.stores_redis import RedisStore
from bankguard.testing import make_facts

REDIS_URL = "redis://127.0.0.1:6379/0"
UNREACHABLE_URL = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def raw() -> Iterator[redis.Redis]:
    """A plain redis-py client, to look at what the store wrote."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.fail(
            f"no redis-server answers on 127.0.0.1:6379 ({exc}); run the suite with scripts/test.sh, "
            "which starts one, or start `redis-server --port 6379` yourself",
            pytrace=False,
        )
    yield client
    client.close()


@pytest.fixture
def prefix(raw: redis.Redis) -> Iterator[str]:
    value = f"bankguard-test:{uuid.uuid4().hex}:"
    yield value
    keys = list(raw.scan_iter(match=value + "*"))
    if keys:
        raw.delete(*keys)


@pytest.fixture
def make_store(prefix: str) -> Iterator[Callable[..., RedisStore]]:
    """Builds stores under the test's prefix and closes them all at the end."""
    stores: list[RedisStore] = []

    def make(url: str = REDIS_URL, **options: Any) -> RedisStore:
        store = RedisStore(url, **{"prefix": prefix, **options})
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
    gc.collect()  # a leaked connection would surface here as a ResourceWarning


@pytest.fixture
def store(make_store: Callable[..., RedisStore]) -> RedisStore:
    return make_store()


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def clients_named(raw: redis.Redis, name: str) -> int:
    return sum(1 for c in raw.client_list() if c.get("name") == name)


# -- the operations --------------------------------------------------------------------------


def test_set_if_absent_stores_once(store, raw, prefix):
    assert store.execute(SetIfAbsent("jti:1", "a", ttl=60)) is True
    assert store.execute(SetIfAbsent("jti:1", "b", ttl=60)) is False
    assert store.execute(Get("jti:1")) == "a"
    assert raw.get(prefix + "jti:1") == b"a"  # stored under the prefix
    assert 59_000 < raw.pttl(prefix + "jti:1") <= 60_000


def test_set_if_absent_expires_after_ttl(store):
    assert store.execute(SetIfAbsent("jti:1", "a", ttl=0.2)) is True
    assert store.execute(SetIfAbsent("jti:1", "b", ttl=0.2)) is False
    assert wait_until(lambda: store.execute(Get("jti:1")) is None)
    assert store.execute(SetIfAbsent("jti:1", "b", ttl=60)) is True
    assert store.execute(Get("jti:1")) == "b"


def test_ttl_is_whole_milliseconds_and_at_least_one(store, raw, prefix):
    store.execute(SetIfAbsent("k", "v", ttl=2.5))
    assert 2_400 < raw.pttl(prefix + "k") <= 2_500
    assert store.execute(SetIfAbsent("tiny", "v", ttl=0.0001)) is True  # PX 1, not an error
    with pytest.raises(ValueError, match="finite"):
        store.execute(SetIfAbsent("k2", "v", ttl=float("inf")))


def test_get_returns_text_or_none(store, raw, prefix):
    assert store.execute(Get("missing")) is None
    store.execute(SetIfAbsent("k", "zażółć", ttl=60))
    assert store.execute(Get("k")) == "zażółć"
    raw.set(prefix + "bytes", "é".encode())
    assert store.execute(Get("bytes")) == "é"


def test_incr_counts_from_zero(store):
    assert [store.execute(Incr("c", ttl=10)) for _ in range(3)] == [1, 2, 3]
    assert store.execute(Incr("c", ttl=10, amount=5)) == 8
    assert store.execute(Get("c")) == "8"  # Redis keeps text; MemoryStore keeps the int


def test_incr_sets_the_expiry_only_when_it_creates_the_counter(store, raw, prefix):
    store.execute(Incr("c", ttl=60))
    first = raw.pttl(prefix + "c")
    assert 59_000 < first <= 60_000
    assert store.execute(Incr("c", ttl=3600)) == 2
    assert 0 < raw.pttl(prefix + "c") <= first  # not extended, not reset


def test_incr_window_ends_with_the_ttl(store):
    assert store.execute(Incr("c", ttl=0.2)) == 1
    assert store.execute(Incr("c", ttl=0.2)) == 2
    assert wait_until(lambda: store.execute(Get("c")) is None)
    assert store.execute(Incr("c", ttl=0.2)) == 1


def test_prefixes_separate_stores(make_store, raw, prefix):
    a, b = make_store(prefix=prefix + "a:"), make_store(prefix=prefix + "b:")
    assert a.execute(SetIfAbsent("jti", "1", ttl=60)) is True
    assert b.execute(SetIfAbsent("jti", "1", ttl=60)) is True
    assert b.execute(Get("jti")) == "1"
    assert sorted(raw.scan_iter(match=prefix + "*")) == [
        (prefix + "a:jti").encode(),
        (prefix + "b:jti").encode(),
    ]


@pytest.mark.parametrize("op", [Call(lambda: 1), "GET k"], ids=["Call", "not-an-op"])
def test_call_and_unknown_operations_are_refused_without_io(make_store, op):
    store = make_store(UNREACHABLE_URL)  # a TypeError, not a connection error: nothing is sent
    with pytest.raises(TypeError, match="unknown store operation"):
        store.execute(op)
    with pytest.raises(TypeError, match="unknown store operation"):
        asyncio.run(store.aexecute(op))


# -- the async face --------------------------------------------------------------------------


def test_async_face_gives_the_same_results(store):
    async def scenario() -> list[object]:
        return [
            await store.aexecute(SetIfAbsent("k", "v", ttl=5)),
            await store.aexecute(SetIfAbsent("k", "w", ttl=5)),
            await store.aexecute(Incr("n", ttl=5)),
            await store.aexecute(Incr("n", ttl=5, amount=2)),
            await store.aexecute(Get("k")),
            await store.aexecute(Get("missing")),
        ]

    assert asyncio.run(scenario()) == [True, False, 1, 3, "v", None]


def test_sync_and_async_faces_share_the_data(store, make_store):
    other = make_store()  # as another worker would
    assert store.execute(SetIfAbsent("jti", "sync", ttl=60)) is True
    assert store.execute(Incr("n", ttl=60)) == 1

    async def scenario() -> list[object]:
        return [
            await other.aexecute(SetIfAbsent("jti", "async", ttl=60)),
            await other.aexecute(Get("jti")),
            await other.aexecute(Incr("n", ttl=60)),
            await store.aexecute(Incr("n", ttl=60)),
        ]

    assert asyncio.run(scenario()) == [False, "sync", 2, 3]
    assert store.execute(Incr("n", ttl=60)) == 4


def test_async_face_works_under_successive_event_loops(make_store, raw):
    name = f"bankguard-test-{uuid.uuid4().hex}"
    store = make_store(f"{REDIS_URL}?client_name={name}")
    loops: list[asyncio.AbstractEventLoop] = []

    async def scenario() -> object:
        loops.append(asyncio.get_running_loop())
        assert clients_named(raw, name) <= 1
        return await store.aexecute(Incr("n", ttl=60))

    assert asyncio.run(scenario()) == 1
    # The first loop's connection was closed when asyncio.run shut that loop down.
    assert wait_until(lambda: clients_named(raw, name) == 0)
    assert asyncio.run(scenario()) == 2
    assert loops[0] is not loops[1]
    assert wait_until(lambda: clients_named(raw, name) == 0)


def test_async_face_serves_concurrent_tasks_beyond_the_pool_size(make_store):
    store = make_store(max_connections=2, timeout=2.0)

    async def scenario() -> list[object]:
        claims = [store.aexecute(SetIfAbsent("jti", str(n), ttl=60)) for n in range(30)]
        counts = [store.aexecute(Incr("n", ttl=60)) for _ in range(30)]
        return await asyncio.gather(*claims, *counts)

    results = asyncio.run(scenario())
    assert sorted(results[:30], key=bool) == [False] * 29 + [True]
    assert set(results[30:]) == set(range(1, 31))  # thirty distinct counts


def test_aclose_closes_the_running_loops_client(make_store, raw):
    name = f"bankguard-test-{uuid.uuid4().hex}"
    store = make_store(f"{REDIS_URL}?client_name={name}")

    async def scenario() -> list[object]:
        first = await store.aexecute(Incr("n", ttl=60))
        assert clients_named(raw, name) == 1
        await store.aclose()
        closed = wait_until(lambda: clients_named(raw, name) == 0)
        await store.aclose()  # again: nothing to close
        return [first, closed, await store.aexecute(Incr("n", ttl=60))]

    assert asyncio.run(scenario()) == [1, True, 2]
    assert wait_until(lambda: clients_named(raw, name) == 0)


def test_close_inside_a_running_loop_forgets_the_async_client(make_store, raw):
    name = f"bankguard-test-{uuid.uuid4().hex}"
    store = make_store(f"{REDIS_URL}?client_name={name}")

    async def scenario() -> list[object]:
        first = await store.aexecute(Incr("n", ttl=60))
        store.close()  # sync close from async code: the loop closes the forgotten client
        for _ in range(20):
            await asyncio.sleep(0.01)
        return [first, await store.aexecute(Incr("n", ttl=60))]

    assert asyncio.run(scenario()) == [1, 2]
    gc.collect()
    assert wait_until(lambda: clients_named(raw, name) == 0)


# -- concurrency, failures, lifecycle --------------------------------------------------------


def test_concurrent_set_if_absent_has_exactly_one_winner(store):
    results: list[object] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def work(n: int) -> None:
        barrier.wait()
        result = store.execute(SetIfAbsent("jti", str(n), ttl=60))
        with lock:
            results.append(result)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(20)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=10)
    assert sorted(results, key=bool) == [False] * 19 + [True]


def test_threads_beyond_the_pool_size_wait_for_a_connection(make_store):
    store = make_store(max_connections=2, timeout=2.0)
    errors: list[BaseException] = []
    barrier = threading.Barrier(12)

    def work() -> None:
        barrier.wait()
        try:
            for _ in range(25):
                store.execute(Incr("total", ttl=60))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(12)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=20)
    assert errors == []
    assert store.execute(Get("total")) == "300"


def test_unreachable_redis_raises(make_store):
    store = make_store(UNREACHABLE_URL)
    with pytest.raises(redis.ConnectionError):
        store.execute(SetIfAbsent("jti", "v", ttl=60))
    with pytest.raises(redis.ConnectionError):
        asyncio.run(store.aexecute(Incr("n", ttl=60)))


def test_missing_unix_socket_raises(make_store, tmp_path):
    store = make_store(f"unix://{tmp_path}/no-redis.sock")
    with pytest.raises(redis.ConnectionError):
        store.execute(Get("k"))


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server that accepts connections and never answers (a hung Redis)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    stop.set()
    thread.join(timeout=5)
    listener.close()
    for conn in accepted:
        conn.close()


def test_a_hung_redis_times_out_once_without_retrying(make_store, silent_server):
    port, accepted = silent_server
    store = make_store(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
        store.execute(SetIfAbsent("jti", "v", ttl=60))
    with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
        asyncio.run(store.aexecute(SetIfAbsent("jti", "v", ttl=60)))
    time.sleep(0.2)  # a retry would have connected again by now
    assert len(accepted) == 2  # one connection per operation, none repeated


def test_a_forked_child_opens_its_own_connections(store):
    assert store.execute(Incr("n", ttl=60)) == 1  # the parent's pool now holds a connection
    with warnings.catch_warnings():
        # Python 3.12+ warns when other threads are alive; this test's child only touches Redis.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            code = 0 if store.execute(Incr("n", ttl=60)) == 2 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.execute(Incr("n", ttl=60)) == 3  # the parent's connection was left intact


def test_close_releases_connections_and_the_store_reconnects(make_store, raw):
    name = f"bankguard-test-{uuid.uuid4().hex}"
    store = make_store(f"{REDIS_URL}?client_name={name}")
    store.close()  # before any use: nothing to close
    assert store.execute(Incr("n", ttl=60)) == 1
    assert clients_named(raw, name) == 1
    store.close()
    assert wait_until(lambda: clients_named(raw, name) == 0)
    store.close()  # idempotent
    assert store.execute(Incr("n", ttl=60)) == 2


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://user:s3cret@host",
        "redis+sentinel://user:s3cret@host:26379",
        "user:s3cret@host:6379",
        "s3cret",
        "REDIS://user:s3cret@host",
    ],
)
def test_unsupported_schemes_are_refused_without_the_password(url):
    # (a Sentinel URL without a service name is refused too)
    with pytest.raises(ValueError, match="Redis URL") as info:
        RedisStore(url)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:s3cret@host:notaport/0",
        "redis://user:s3cret@host:6379/0?db=notanumber",
        "redis://host:6379/0?password=s3cret&socket_timeout=soon",
    ],
)
def test_malformed_urls_are_refused_without_the_password(url):
    with pytest.raises(ValueError, match="invalid Redis URL") as info:
        RedisStore(url)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"max_connections": 0}, "max_conn"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        RedisStore(REDIS_URL, **options)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@redis.internal:6380/2", "redis://user:***@redis.internal:6380/2"),
        ("rediss://:s3cret@redis.internal", "rediss://:***@redis.internal"),
        ("redis://s3cret@redis.internal", "redis://***@redis.internal"),
        ("unix:///run/redis.sock?password=s3cret&db=1", "unix:///run/redis.sock?password=***&db=***"),
    ],
)
def test_repr_hides_the_password(url, shown):
    text = repr(RedisStore(url, prefix="api:"))
    assert "s3cret" not in text
    assert text == f"RedisStore({shown!r}, prefix='api:', timeout=0.25)"


# -- in a guard ------------------------------------------------------------------------------


def public_policy() -> Policy:
    return Policy.from_dict(
        {"routes": {"operations": [{"method": "POST", "path": "/payments", "public": True}]}}
    )


class ClaimCheck:
    """Refuses a second use of an ``x-idempotency-key`` (a check that needs shared state)."""

    name = "claim"
    mode = "enforce"

    def run(self, facts: RequestFacts, state: State) -> Generator[StoreOp, Any, None] | None:
        key = facts.headers.get("x-idempotency-key")
        return None if key is None else self._flow(key)

    def _flow(self, key: str) -> Generator[StoreOp, Any, None]:
        claimed = yield SetIfAbsent(f"claim:{key}", "1", ttl=60)
        if not claimed:
            raise BadRequest("claim.reused")


def test_a_guard_decides_with_the_redis_store(store):
    guard = Guard(public_policy(), store=store, sink=EventCollector())
    assert guard.decide(make_facts("POST", "/payments")).allowed
    assert asyncio.run(guard.adecide(make_facts("POST", "/payments"))).allowed


def test_a_guard_shares_state_through_redis_across_sync_and_async(store, make_store):
    policy = public_policy()
    wsgi = Guard(policy, checks=[*default_checks(policy), ClaimCheck()], store=store, sink=EventCollector())
    asgi = Guard(
        policy, checks=[*default_checks(policy), ClaimCheck()], store=make_store(), sink=EventCollector()
    )
    request = make_facts("POST", "/payments", headers=[("x-idempotency-key", "k1")])
    assert wsgi.decide(request).allowed
    replay = asyncio.run(asgi.adecide(request))
    assert not replay.allowed
    assert replay.denial is not None
    assert (replay.denial.status, replay.denial.reason) == (400, "claim.reused")


def test_an_unreachable_redis_fails_closed_in_a_guard(make_store):
    policy = public_policy()
    guard = Guard(
        policy,
        checks=[*default_checks(policy), ClaimCheck()],
        store=make_store(UNREACHABLE_URL),
        sink=EventCollector(),
    )
    request = make_facts("POST", "/payments", headers=[("x-idempotency-key", "k1")])
    for decision in (guard.decide(request), asyncio.run(guard.adecide(request))):
        assert not decision.allowed
        assert decision.denial is not None
        assert (decision.denial.status, decision.denial.reason) == (503, "claim.store_failure")


# -- rate-limit hits --------------------------------------------------------------------------

STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rate_limit_keys_stay_under_the_prefix_an_acl_allows(make_store, prefix, raw, strategy):
    """A Redis user restricted to the prefix (``~prefix*``) can run every strategy."""
    user = f"bg-{uuid.uuid4().hex[:12]}"
    raw.acl_setuser(user, enabled=True, passwords=["+pw-for-test"], keys=[f"{prefix}*"], commands=["+@all"])
    try:
        store = make_store(f"redis://{user}:pw-for-test@127.0.0.1:6379/0")
        windows = (Window("rl/x/60", 2, 60, strategy), Window("rl/x/3600", 5, 3600, strategy))
        assert [store.execute(Hit(windows))[0].admitted for _ in range(3)] == [True, True, False]
        assert all(key.decode().startswith(prefix) for key in raw.scan_iter(match="*rl/x/*"))
    finally:
        raw.acl_deluser(user)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_flushed_script_cache_is_reloaded_without_counting_twice(store, raw, strategy):
    windows = (Window("rl/f/60", 10, 60, strategy), Window("rl/f/600", 10, 600, strategy))
    assert [c.remaining for c in store.execute(Hit(windows))] == [9, 9]
    raw.script_flush()  # as after a restart: the scripts are gone, the counters are not
    assert [c.remaining for c in store.execute(Hit(windows))] == [8, 8]
    assert [c.remaining for c in store.execute(Hit(windows))] == [7, 7]


def test_a_burst_larger_than_the_pool_is_served_not_refused(make_store):
    """Waiting for a pooled connection is local congestion, not Redis failing: 400 concurrent
    hits on 4 connections are all answered, and exactly the limit is admitted."""
    store = make_store(max_connections=4)
    hit = Hit((Window("rl/burst/60", 150, 60, "sliding-window-counter"),))

    async def main() -> list[bool]:
        try:
            results = await asyncio.gather(*(store.aexecute(hit) for _ in range(400)))
            return [r[0].admitted for r in results]
        finally:
            await store.aclose()

    admitted = asyncio.run(main())
    assert len(admitted) == 400
    assert sum(admitted) == 150


def test_a_hung_redis_times_out_an_async_hit_and_drops_the_connection(make_store, silent_server):
    """The async face's rate-limit hits on a single server are bounded: opening a connection by
    the connect timeout (here the handshake never gets its replies), the write and every reply
    by one deadline; a connection that timed out is closed, never handed to the next operation,
    and nothing is retried."""
    port, accepted = silent_server
    store = make_store(f"redis://127.0.0.1:{port}/0?socket_connect_timeout=0.3", timeout=0.2)
    hit = Hit(
        (
            Window("rl/hung/60", 5, 60, "sliding-window-counter"),
            Window("rl/hung/3600", 5, 3600, "fixed-window"),
        )
    )

    async def twice() -> list[BaseException]:
        errors = []
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError) as caught:
                await store.aexecute(hit)
            assert time.monotonic() - started < 5  # bounded, however many windows
            errors.append(caught.value)
        await store.aclose()
        return errors

    errors = asyncio.run(twice())
    assert len(errors) == 2
    time.sleep(0.2)
    assert len(accepted) == 2  # a fresh connection for the second hit, none for a retry


def test_an_error_reply_in_an_async_hit_is_raised_after_every_reply_is_read(store, raw, prefix):
    """A window whose key holds another type answers with an error; the other windows' replies
    are still read off the connection, which stays usable for the next operation."""
    raw.set(f"{prefix}rl/wrongtype/60", "text")
    bad = Hit(
        (
            Window("rl/fine/60", 5, 60, "sliding-window-counter"),
            Window("rl/wrongtype/60", 5, 60, "fixed-window"),
        )
    )
    good = Hit((Window("rl/fine2/60", 5, 60, "sliding-window-counter"),))

    async def main() -> list[Any]:
        with pytest.raises(redis.ResponseError):
            await store.aexecute(bad)
        results = [await store.aexecute(good) for _ in range(3)]
        await store.aclose()
        return results

    results = asyncio.run(main())
    assert [r[0].remaining for r in results] == [4, 3, 2]


def _resp_commands(buffer: bytearray) -> list[list[bytes]]:
    """Complete RESP commands at the start of ``buffer`` (removed from it)."""
    commands = []
    while buffer.startswith(b"*"):
        pos = buffer.find(b"\r\n")
        if pos < 0:
            break
        count, args, i, complete = int(buffer[1:pos]), [], pos + 2, True
        for _ in range(count):
            end = buffer.find(b"\r\n", i)
            if end < 0:
                complete = False
                break
            size = int(buffer[i + 1 : end])
            if len(buffer) < end + 2 + size + 2:
                complete = False
                break
            args.append(bytes(buffer[end + 2 : end + 2 + size]))
            i = end + 2 + size + 2
        if not complete:
            break
        del buffer[:i]
        commands.append(args)
    return commands


@pytest.fixture
def stalling_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A Redis look-alike: answers the connection handshake (+OK), then never answers EVALSHA."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def talk(conn: socket.socket) -> None:
        conn.settimeout(0.05)
        buffer = bytearray()
        while not stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            buffer += data
            for command in _resp_commands(buffer):
                if command[0].upper() != b"EVALSHA":
                    conn.sendall(b"+OK\r\n")

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)
            threading.Thread(target=talk, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    stop.set()
    thread.join(timeout=5)
    listener.close()
    for conn in accepted:
        conn.close()


def test_an_async_hit_on_an_open_connection_times_out_and_the_connection_is_dropped(
    make_store, stalling_server
):
    port, accepted = stalling_server
    store = make_store(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    hit = Hit((Window("rl/stall/60", 5, 60, "sliding-window-counter"),))

    async def twice() -> None:
        for _ in range(2):
            with pytest.raises(redis.TimeoutError):
                await store.aexecute(hit)
        await store.aclose()

    asyncio.run(twice())
    time.sleep(0.2)
    assert len(accepted) == 2  # the timed-out connection was not reused; nothing was retried
