"""RedisStore on a Redis Cluster and behind Redis Sentinel, with real ``redis-server`` processes.

The fixtures start, on free ports of 127.0.0.1, a three-node cluster (``--cluster-enabled``,
joined with ``redis-cli --cluster create``) and a master with one Sentinel watching it; they stop
them afterwards. Every store operation -- replay markers, counters and rate-limit hits with
several windows -- behaves as it does on one server, through the sync and the async face.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bankguard import Guard, Policy
from bankguard.errors import ConfigurationError
from bankguard.stores import Get, Hit, Incr, SetIfAbsent, Window
from bankguard.stores_redis import RedisStore
from bankguard.testing import EventCollector, TestIssuer, make_facts

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too."""
    found: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(found) < count:
            port = _free_ports(1)[0]
            if port > 55000 or port in found:
                continue
            bus = stack.enter_context(socket.socket())
            try:
                bus.bind((HOST, port + 10000))
            except OSError:
                continue
            found.append(port)
    return found


def _wait(check: object, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not come up within {START_TIMEOUT} s")


def _server(directory: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", *extra]
    return subprocess.Popen(  # noqa: S603 - fixed argv
        argv, cwd=directory, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        proc.terminate()
    for proc in processes:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise AssertionError("redis-server and redis-cli must be installed (scripts/test.sh installs them)")
    root = tmp_path_factory.mktemp("cluster")
    ports = _cluster_ports(3)
    procs = [
        _server(root / str(p), p, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        for p in ports
    ]
    try:
        for p in ports:
            _wait(lambda p=p: redis.Redis(host=HOST, port=p, socket_timeout=1).ping(), f"node {p}")
        subprocess.run(  # noqa: S603 - fixed argv
            [  # noqa: S607 - redis-cli from PATH, like redis-server
                "redis-cli",
                "--cluster",
                "create",
                *(f"{HOST}:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )
        for p in ports:
            _wait(
                lambda p=p: (
                    redis.Redis(host=HOST, port=p, socket_timeout=1).cluster("info")["cluster_state"] == "ok"
                ),
                f"cluster state on {p}",
            )
        yield "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in ports[:2])  # seeds: two of three
    finally:
        _stop(procs)


@pytest.fixture(scope="module")
def sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("sentinel")
    master_port, sentinel_port = _free_ports(2)
    config = root / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind {HOST}\nsentinel monitor mymaster {HOST} {master_port} 1\n"
        "sentinel down-after-milliseconds mymaster 5000\n"
    )
    master = _server(root / "master", master_port)
    procs = [master]
    try:
        _wait(lambda: redis.Redis(host=HOST, port=master_port, socket_timeout=1).ping(), "master")
        procs.append(
            subprocess.Popen(  # noqa: S603 - fixed argv
                ["redis-server", str(config), "--sentinel"],  # noqa: S607
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait(
            lambda: redis.Redis(
                host=HOST, port=sentinel_port, socket_timeout=1
            ).sentinel_get_master_addr_by_name("mymaster"),
            "sentinel",
        )
        yield f"redis+sentinel://{HOST}:{sentinel_port}/mymaster/3"
    finally:
        _stop(procs)


@pytest.fixture(params=["cluster", "sentinel"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def _prefix() -> str:
    return f"topo-{time.monotonic_ns()}:"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hits_with_several_windows_count_exactly(url: str, strategy: str) -> None:
    store = RedisStore(url, prefix=_prefix())
    try:
        # Three windows in three different hash slots (on different nodes of the cluster).
        windows = tuple(Window(f"tpp/{i}", 3 + i, 60 * (i + 1), strategy) for i in range(3))
        results = [store.execute(Hit(windows)) for _ in range(5)]
        assert [r[0].admitted for r in results] == [True, True, True, False, False]
        assert [r[0].remaining for r in results[:3]] == [2, 1, 0]
        assert all(0 < c.reset <= w.seconds for r in results for c, w in zip(r, windows, strict=True))
    finally:
        store.close()


def test_replay_markers_and_counters(url: str) -> None:
    store = RedisStore(url, prefix=_prefix())
    try:
        assert store.execute(SetIfAbsent("jti", "1", 5)) is True
        assert store.execute(SetIfAbsent("jti", "1", 5)) is False
        assert store.execute(Get("jti")) == "1"
        assert [store.execute(Incr("n", 5)) for _ in range(3)] == [1, 2, 3]
    finally:
        store.close()


def test_the_async_face_counts_on_the_same_counters(url: str) -> None:
    store = RedisStore(url, prefix=_prefix())
    windows = (Window("a", 2, 60, "sliding-window-counter"), Window("b", 10, 600, "moving-window"))

    async def main() -> list[bool]:
        try:
            out = [all(c.admitted for c in await store.aexecute(Hit(windows))) for _ in range(2)]
            assert await store.aexecute(SetIfAbsent("j", "x", 5)) is True
            return out
        finally:
            await store.aclose()

    try:
        assert asyncio.run(main()) == [True, True]
        assert store.execute(Hit(windows))[0].admitted is False  # the sync face sees the same count
        assert store.execute(SetIfAbsent("j", "x", 5)) is False
    finally:
        store.close()


def test_a_guard_limits_through_the_cluster(cluster_url: str) -> None:
    issuer = TestIssuer("https://as.bank.example", alg="ES256")
    policy = Policy.from_dict(
        {
            "tokens": {
                "issuers": [
                    {
                        "issuer": issuer.issuer,
                        "audiences": ["https://api.bank.example"],
                        "algorithms": ["ES256"],
                        "jwks": issuer.jwks(),
                    }
                ]
            },
            "routes": {"operations": [{"id": "accounts", "method": "GET", "path": "/accounts"}]},
            "storage": {"uri": cluster_url, "prefix": _prefix()},
            "ratelimit": {"enabled": True, "tiers": {"default": "2/minute; 10/hour"}},
        }
    )
    events = EventCollector()
    guard = Guard(policy, sink=events)
    try:
        headers = [("authorization", f"Bearer {issuer.mint()}")]
        decisions = [guard.decide(make_facts("GET", "/accounts", headers=headers)) for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        assert decisions[2].denial is not None
        assert decisions[2].denial.status == 429
        assert events.events[2].reason == "ratelimit.exceeded"
    finally:
        guard.close()


@pytest.mark.parametrize(
    "bad",
    [
        "redis+sentinel://127.0.0.1:26379",  # no service name
        "redis+cluster://127.0.0.1:7000/2",  # a cluster has db 0 only
        "redis+cluster://127.0.0.1",  # no port
        "redis+cluster://u:s3cret@127.0.0.1:7000?socket_timeout=1",  # no options
    ],
)
def test_bad_topology_urls_are_configuration_errors_without_the_password(bad: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Guard(Policy.from_dict({"storage": {"uri": bad}}))
    assert info.value.path == "storage.uri"
    assert "s3cret" not in str(info.value)
