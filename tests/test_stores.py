"""MemoryStore: TTLs on an injected clock, the size bound, thread safety, and the async face."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bankguard.stores import Get, Incr, MemoryStore, SetIfAbsent, StoreFailure, StoreFull


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


def test_get_of_a_missing_key_is_none(store):
    assert store.execute(Get("nope")) is None


def test_set_if_absent_stores_once(store):
    assert store.execute(SetIfAbsent("jti:1", "a", ttl=60)) is True
    assert store.execute(SetIfAbsent("jti:1", "b", ttl=60)) is False
    assert store.execute(Get("jti:1")) == "a"


def test_set_if_absent_expires_after_ttl(store, clock):
    store.execute(SetIfAbsent("jti:1", "a", ttl=60))
    clock.advance(59.999)
    assert store.execute(Get("jti:1")) == "a"
    assert store.execute(SetIfAbsent("jti:1", "b", ttl=60)) is False
    clock.advance(0.001)
    assert store.execute(Get("jti:1")) is None
    assert store.execute(SetIfAbsent("jti:1", "b", ttl=60)) is True
    assert store.execute(Get("jti:1")) == "b"


def test_incr_counts_from_zero(store):
    assert [store.execute(Incr("c", ttl=10)) for _ in range(3)] == [1, 2, 3]
    assert store.execute(Incr("c", ttl=10, amount=5)) == 8
    assert store.execute(Get("c")) == 8


def test_incr_window_is_fixed_from_the_first_increment(store, clock):
    store.execute(Incr("c", ttl=10))
    clock.advance(6)
    assert store.execute(Incr("c", ttl=10)) == 2
    clock.advance(4)  # 10 s after the first increment: the window is over, not extended
    assert store.execute(Get("c")) is None
    assert store.execute(Incr("c", ttl=10)) == 1


def test_keys_are_independent(store):
    store.execute(Incr("a", ttl=10))
    store.execute(SetIfAbsent("b", "x", ttl=10))
    assert store.execute(Incr("a", ttl=10)) == 2
    assert store.execute(Get("b")) == "x"
    assert len(store) == 2


def test_expired_entries_are_dropped_on_later_writes(store, clock):
    for i in range(10):
        store.execute(SetIfAbsent(f"k{i}", "v", ttl=5))
    clock.advance(5)
    store.execute(SetIfAbsent("fresh", "v", ttl=5))
    assert len(store) == 1


def test_max_entries_bounds_the_store_and_refuses_rather_than_forgets(clock):
    store = MemoryStore(max_entries=3, clock=clock)
    for i in range(3):
        assert store.execute(SetIfAbsent(f"flood:{i}", "v", ttl=1000 + i)) is True
    for i in range(3, 50):
        with pytest.raises(StoreFull):
            store.execute(SetIfAbsent(f"flood:{i}", "v", ttl=1000 + i))
        assert len(store) == 3
    # No live entry was forgotten: a replay of any of them is still seen (DPOP-13, DPOP-28).
    assert [store.execute(SetIfAbsent(f"flood:{i}", "v", ttl=5)) for i in range(3)] == [False] * 3


def test_a_full_store_accepts_again_once_entries_expire(clock):
    store = MemoryStore(max_entries=3, clock=clock)
    store.execute(SetIfAbsent("soon", "v", ttl=10))
    store.execute(SetIfAbsent("late", "v", ttl=50))
    store.execute(SetIfAbsent("middle", "v", ttl=30))
    with pytest.raises(StoreFull):
        store.execute(SetIfAbsent("later", "v", ttl=40))
    clock.advance(10)
    assert store.execute(SetIfAbsent("later", "v", ttl=40)) is True
    assert store.execute(Get("soon")) is None
    assert [store.execute(Get(k)) for k in ("late", "middle", "later")] == ["v", "v", "v"]


def test_a_full_store_still_updates_existing_counters(clock):
    store = MemoryStore(max_entries=2, clock=clock)
    store.execute(Incr("a", ttl=100))
    store.execute(Incr("b", ttl=100))
    assert store.execute(Incr("a", ttl=100)) == 2
    with pytest.raises(StoreFull):
        store.execute(Incr("c", ttl=100))


def test_expired_entries_are_dropped_despite_overwritten_keys(clock):
    store = MemoryStore(max_entries=2, clock=clock)
    for _ in range(50):  # the same key expiring and coming back leaves stale heap entries
        store.execute(SetIfAbsent("k", "v", ttl=1))
        clock.advance(1)
    store.execute(SetIfAbsent("a", "v", ttl=100))
    store.execute(SetIfAbsent("b", "v", ttl=200))
    assert len(store) == 2
    assert [store.execute(Get(k)) for k in ("a", "b")] == ["v", "v"]


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
def test_ttl_must_be_positive_and_finite(clock, ttl):
    store = MemoryStore(clock=clock)
    with pytest.raises(ValueError, match="ttl"):
        store.execute(SetIfAbsent("k", "v", ttl=ttl))


def test_max_entries_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        MemoryStore(max_entries=0)


def test_unknown_operation_is_refused(store):
    with pytest.raises(TypeError, match="unknown store operation"):
        store.execute("GET k")  # type: ignore[arg-type]


def test_concurrent_incr_gives_the_exact_total():
    store = MemoryStore()
    threads, per_thread = 8, 2000
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            store.execute(Incr("total", ttl=3600))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert store.execute(Get("total")) == threads * per_thread


def test_concurrent_set_if_absent_has_exactly_one_winner():
    store = MemoryStore()
    results: list[object] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def work(n: int) -> None:
        barrier.wait()
        result = store.execute(SetIfAbsent("jti", str(n), ttl=60))
        with lock:
            results.append(result)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(results, key=bool) == [False] * 15 + [True]


def test_aexecute_works(store, clock):
    async def scenario() -> list[object]:
        return [
            await store.aexecute(SetIfAbsent("k", "v", ttl=5)),
            await store.aexecute(SetIfAbsent("k", "w", ttl=5)),
            await store.aexecute(Incr("n", ttl=5)),
            await store.aexecute(Incr("n", ttl=5)),
            await store.aexecute(Get("k")),
        ]

    assert asyncio.run(scenario()) == [True, False, 1, 2, "v"]
    clock.advance(5)
    assert asyncio.run(store.aexecute(Get("k"))) is None


def test_operations_are_frozen_values():
    assert Incr("k", ttl=1) == Incr("k", ttl=1, amount=1)
    assert hash(SetIfAbsent("k", "v", ttl=1)) == hash(SetIfAbsent("k", "v", ttl=1))
    assert issubclass(StoreFailure, Exception)
