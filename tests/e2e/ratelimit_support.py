"""Processes and helpers for tests/e2e/test_ratelimit_workers.py.

* :func:`write_policy`: a policy with tokens from a :class:`~bankguard.testing.TestIssuer` (its
  JWK Set inline), a Redis ``storage`` and a ``ratelimit`` section, for the app in
  ``tests/e2e/ratelimit_app.py``.
* :class:`RedisServer`: a private ``redis-server`` on a free port of 127.0.0.1, without
  persistence, that a test can stop and start again on the same port.
* :func:`serving`: the app under uvicorn or gunicorn, several workers on one port; stopped on
  exit. :func:`worker_pids` waits until every worker has answered.
* :class:`Reply`, :func:`get_accounts`, :func:`burst`, :func:`pinned_burst` and
  :class:`Traffic`: requests, their outcome (a transport error or timeout is an outcome too,
  never an exception) and the interaction id each request sent, by which its audit event is
  found.

Every wait is bounded; every process started here is stopped in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import redis

from bankguard.testing import TestIssuer

from .conftest import (
    AUDIENCE,
    HOST,
    ISSUER,
    REQUEST_TIMEOUT,
    Service,
    distribution_version,
    free_ports,
    wait_until_answering,
)

HERE = Path(__file__).resolve().parent
#: The shared redis-server scripts/test.sh starts; a database the rest of the suite does not use.
SHARED_REDIS_URL = "redis://127.0.0.1:6379/13"
REDIS_START_TIMEOUT = 10.0  # seconds for a private redis-server to answer PING
EVENT_TIMEOUT = 5.0  # seconds for the audit events of answered requests to reach their files
WORKERS_TIMEOUT = 15.0  # seconds for every worker of a server to have answered once

Kind = Literal["uvicorn", "gunicorn"]
Strategy = Literal["fixed-window", "moving-window", "sliding-window-counter"]


# -- policy ------------------------------------------------------------------------------------


def write_policy(
    directory: Path,
    issuer: TestIssuer,
    *,
    redis_url: str,
    prefix: str,
    limits: str,
    strategy: Strategy = "sliding-window-counter",
    on_storage_failure: Literal["closed", "open"] = "closed",
    timeout: str = "250ms",
) -> Path:
    """Tokens from ``issuer``; ``GET /accounts`` counted per client id in Redis; audit on."""
    policy = directory / "policy.yaml"
    policy.write_text(
        f"""\
# Per-TPP rate limits shared by every process through Redis (tests/e2e/test_ratelimit_workers.py).
profile: generic

routes:
  undeclared: deny
  operations:
    - {{id: GetHealth, method: GET, path: /health, public: true}}
    - {{id: GetWhoami, method: GET, path: /whoami, public: true}}
    - {{id: GetAccounts, method: GET, path: /accounts, scopes: [accounts]}}

auth:
  realm: open-banking

tokens:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      algorithms: [ES256]
      jwks: {json.dumps(issuer.jwks())}

storage:
  uri: {redis_url}
  prefix: "{prefix}"
  timeout: {timeout}

ratelimit:
  enabled: true
  strategy: {strategy}
  on_storage_failure: {on_storage_failure}
  tiers:
    default: "{limits}"

audit:
  sink: logging
  logger: bankguard.audit
"""
    )
    return policy


def token_for(issuer: TestIssuer, client_id: str) -> str:
    """An access token of ``client_id`` with the ``accounts`` scope, valid for five minutes."""
    return issuer.mint({"client_id": client_id}, audience=AUDIENCE, scope="accounts")


def unique_prefix() -> str:
    return f"bankguard-e2e-rl:{uuid.uuid4().hex}:"


def keys_under(client: redis.Redis, prefix: str) -> list[bytes]:
    """Every key a store with ``prefix`` wrote. The sliding-window-counter keys are written as
    ``{<prefix><key>}`` and ``{<prefix><key>}/-1`` (a Redis Cluster hash tag around the whole
    name), so they are looked for under ``{<prefix>`` as well."""
    found: set[bytes] = set()
    for pattern in (f"{prefix}*", f"{{{prefix}*"):
        found.update(client.scan_iter(match=pattern, count=1000))
    return sorted(found)


def delete_keys(client: redis.Redis, prefix: str) -> None:
    keys = keys_under(client, prefix)
    if keys:
        client.delete(*keys)


def shared_redis_client() -> redis.Redis:
    """A plain client of :data:`SHARED_REDIS_URL`; fails the test when nothing answers."""
    client = redis.Redis.from_url(SHARED_REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.fail(
            f"no redis-server answers on 127.0.0.1:6379 ({exc}); run the suite with scripts/test.sh, "
            "which starts one, or start `redis-server --port 6379` yourself",
            pytrace=False,
        )
    return client


# -- a private redis-server ----------------------------------------------------------------------


@dataclass
class RedisServer:
    """A redis-server of one test: no persistence, its files in ``directory``, one fixed port."""

    directory: Path
    port: int = field(default_factory=lambda: free_ports(1)[0])
    service: Service | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH (Debian/Ubuntu: apt-get install redis-server)")
        self.starts += 1
        argv = [
            binary,
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
        ]
        log = self.directory / f"redis-{self.starts}.log"
        self.service = Service.start(f"redis-server (start {self.starts})", argv, log)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        with contextlib.closing(self.client()) as probe:
            while True:
                if not self.service.running():
                    pytest.fail(
                        f"redis-server exited with {self.service.proc.returncode}:\n{self.service.report()}",
                        pytrace=False,
                    )
                with contextlib.suppress(redis.RedisError):
                    if probe.ping():
                        return
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"redis-server did not answer on port {self.port} within "
                        f"{REDIS_START_TIMEOUT:.0f} s:\n{self.service.report()}",
                        pytrace=False,
                    )
                time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server (bounded wait, then kill) and wait until it has exited."""
        if self.service is not None:
            self.service.stop()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- the app servers ---------------------------------------------------------------------------


@dataclass
class Server:
    """The app served on ``url`` by a server whose workers write audit events to ``audit_dir``."""

    kind: Kind
    service: Service
    url: str
    audit_dir: Path

    def running(self) -> bool:
        return self.service.running()

    def events(self) -> list[dict[str, Any]]:
        """Every decision event written so far, each with the ``pid`` of the process that wrote it."""
        out: list[dict[str, Any]] = []
        for path in sorted(self.audit_dir.glob("audit-*.jsonl")):
            pid = int(path.stem.removeprefix("audit-"))
            for line in path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line being written right now
                if isinstance(event, dict) and event.get("event") == "bankguard.decision":
                    out.append({**event, "pid": pid})
        return out

    def events_of(self, interaction_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The decision events of these requests, waiting (bounded) until each one has one."""
        wanted = set(interaction_ids)
        deadline = time.monotonic() + EVENT_TIMEOUT
        while True:
            found: dict[str, list[dict[str, Any]]] = {i: [] for i in wanted}
            for event in self.events():
                if event.get("interaction_id") in wanted:
                    found[event["interaction_id"]].append(event)
            missing = [i for i, events in found.items() if not events]
            if not missing:
                return found
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{len(missing)} of {len(wanted)} requests have no audit event, e.g. {missing[:3]}\n"
                    + self.report(),
                    pytrace=False,
                )
            time.sleep(0.05)

    def report(self) -> str:
        return self.service.report()


def _environment(policy: Path, audit_dir: Path, hold: float) -> dict[str, str]:
    env = {
        **os.environ,
        "RL_E2E_POLICY": str(policy),
        "RL_E2E_AUDIT_DIR": str(audit_dir),
        "RL_E2E_HOLD": str(hold),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("FORWARDED_ALLOW_IPS", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS"):
        env.pop(name, None)
    return env


def _uvicorn(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "ratelimit_app:asgi",
        "--factory",
        "--app-dir",
        str(HERE),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        # Connections a test pins to a worker stay open between its requests.
        "--timeout-keep-alive",
        "30",
        "--no-proxy-headers",  # bankguard reads forwarding headers itself (no trusted proxy here)
        "--log-level",
        "warning",
    ]


def _gunicorn(port: int, workers: int) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-b",
        f"{HOST}:{port}",
        "-w",
        str(workers),
        "--graceful-timeout",
        "3",
        "--log-level",
        "warning",
        "--pythonpath",
        str(HERE),
        "ratelimit_app:wsgi()",  # built in each worker, after the fork
    ]
    if distribution_version("gunicorn") >= (25, 1):
        argv[-1:-1] = ["--no-control-socket"]  # else it would open ~/.gunicorn/gunicorn.ctl
    return argv


@contextlib.contextmanager
def serving(
    kind: Kind, directory: Path, policy: Path, *, workers: int = 1, hold: float = 0.0
) -> Iterator[Server]:
    """The app under uvicorn or gunicorn with ``workers`` worker processes on one port of
    127.0.0.1; stopped on exit."""
    audit_dir = directory / "audit"
    audit_dir.mkdir()
    env = _environment(policy, audit_dir, hold)
    (port,) = free_ports(1)
    argv = _uvicorn(port, workers) if kind == "uvicorn" else _gunicorn(port, workers)
    service = Service.start(kind, argv, directory / f"{kind}.log", env)
    try:
        url = f"http://{HOST}:{port}"
        with httpx.Client(timeout=REQUEST_TIMEOUT) as probe:
            wait_until_answering(service, f"{url}/health", probe)
        yield Server(kind, service, url, audit_dir)
    finally:
        service.stop()


def worker_pids(server: Server, expected: int) -> set[int]:
    """The pids of the workers of ``server``, once ``expected`` of them have answered
    ``/whoami`` (a public route that holds its worker, so concurrent requests must spread)."""
    url = f"{server.url}/whoami"
    seen: set[int] = set()
    deadline = time.monotonic() + WORKERS_TIMEOUT

    async def round_of(n: int) -> list[int]:
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
            replies = await asyncio.gather(*(client.get(url) for _ in range(n)), return_exceptions=True)
        return [
            int(r.json()["pid"]) for r in replies if isinstance(r, httpx.Response) and r.status_code == 200
        ]

    while len(seen) < expected:
        if time.monotonic() > deadline or not server.running():
            pytest.fail(
                f"only workers {sorted(seen)} of {expected} answered within {WORKERS_TIMEOUT:.0f} s:\n"
                + server.report(),
                pytrace=False,
            )
        seen.update(asyncio.run(round_of(2 * expected)))
    return seen


# -- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What one request got: a response, or the transport error or timeout that replaced it."""

    interaction_id: str
    url: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: str | None = None
    #: The worker at the other end of the kept-alive connection that carried it (pinned_burst).
    worker: int | None = None

    @classmethod
    def of(cls, interaction_id: str, url: str, response: httpx.Response, worker: int | None = None) -> Reply:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return cls(interaction_id, url, response.status_code, dict(response.headers), body, worker=worker)

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.url} [{self.interaction_id}]: {self.error}"
        return f"{self.url} [{self.interaction_id}]: {self.status} {self.headers} {self.body!r}"


def _request_headers(token: str, interaction_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "x-fapi-interaction-id": interaction_id}


def get_accounts(client: httpx.Client, url: str, token: str) -> Reply:
    """``GET /accounts`` with ``token`` and a fresh interaction id; never raises for the network."""
    interaction_id = str(uuid.uuid4())
    try:
        response = client.get(f"{url}/accounts", headers=_request_headers(token, interaction_id))
    except httpx.HTTPError as exc:
        return Reply(interaction_id, url, error=f"{type(exc).__name__}: {exc}")
    return Reply.of(interaction_id, url, response)


async def _get(client: httpx.AsyncClient, url: str, token: str, worker: int | None = None) -> Reply:
    interaction_id = str(uuid.uuid4())
    try:
        response = await client.get(f"{url}/accounts", headers=_request_headers(token, interaction_id))
    except httpx.HTTPError as exc:
        return Reply(interaction_id, url, error=f"{type(exc).__name__}: {exc}", worker=worker)
    return Reply.of(interaction_id, url, response, worker)


def burst(url: str, token: str, count: int) -> list[Reply]:
    """``count`` concurrent ``GET /accounts``, each on a connection of its own."""

    async def run() -> list[Reply]:
        limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as client:
            return list(await asyncio.gather(*(_get(client, url, token) for _ in range(count))))

    return asyncio.run(run())


def pinned_burst(
    server: Server, token: str, *, workers: int, connections: int, first: int, count: int
) -> list[Reply]:
    """``first`` requests one after the other, then ``count`` at once, over ``connections``
    kept-alive connections whose worker is known, so that every worker takes part.

    Which worker accepts a connection is up to the kernel and the workers' event loops (one
    loop may accept a whole backlog at once), but a connection, once accepted, stays with its
    worker. So connections are opened, each asked ``/whoami`` (public, not counted), until
    every one of ``workers`` workers holds one (bounded); ``connections`` of them are kept, at
    least one per worker. The ``first`` requests go to the workers in turn; the burst goes round
    the connections, one request at a time on each, all connections at once. Each
    :class:`Reply` names its connection's worker.
    """
    url = server.url
    deadline = time.monotonic() + WORKERS_TIMEOUT

    async def open_one() -> tuple[httpx.AsyncClient, int | None]:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=60)
        client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits)
        try:
            response = await client.get(f"{url}/whoami")
            return client, int(response.json()["pid"]) if response.status_code == 200 else None
        except httpx.HTTPError:
            return client, None

    async def run() -> list[Reply]:
        by_worker: dict[int, list[httpx.AsyncClient]] = {}
        opened: list[httpx.AsyncClient] = []
        try:
            while len(by_worker) < workers or sum(map(len, by_worker.values())) < connections:
                if time.monotonic() > deadline or not server.running():
                    pytest.fail(
                        f"connections reached workers {sorted(by_worker)} only, of {workers}:\n"
                        + server.report(),
                        pytrace=False,
                    )
                for client, pid in await asyncio.gather(*(open_one() for _ in range(connections))):
                    opened.append(client)
                    if pid is not None:
                        by_worker.setdefault(pid, []).append(client)
            # One connection of each worker first, then the others, `connections` in all.
            ordered = [(pid, c[0]) for pid, c in sorted(by_worker.items())]
            ordered += [(pid, client) for pid, c in sorted(by_worker.items()) for client in c[1:]]
            chosen = ordered[:connections]

            replies = [
                await _get(chosen[i % workers][1], url, token, chosen[i % workers][0]) for i in range(first)
            ]

            async def lane(n: int) -> list[Reply]:
                pid, client = chosen[n]
                return [await _get(client, url, token, pid) for _ in range(n, count, len(chosen))]

            for lane_replies in await asyncio.gather(*(lane(n) for n in range(len(chosen)))):
                replies += lane_replies
            return replies
        finally:
            for client in opened:
                await client.aclose()

    return asyncio.run(run())


class Traffic:
    """``GET /accounts`` in background threads, back to back, until :meth:`stop`; every
    outcome is kept (in :attr:`replies`)."""

    def __init__(self, url: str, token: str, *, threads: int = 3, timeout: float = 5.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self.replies: list[Reply] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                reply = get_accounts(client, self.url, self.token)
                with self._lock:
                    self.replies.append(reply)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(self.timeout + REQUEST_TIMEOUT)

    def count(self) -> int:
        with self._lock:
            return len(self.replies)

    def wait_for(self, more: int, bound: float = 10.0) -> None:
        """Until ``more`` further replies have come back; fails after ``bound`` seconds."""
        target = self.count() + more
        deadline = time.monotonic() + bound
        while self.count() < target:
            if time.monotonic() > deadline:
                pytest.fail(f"the background requests stalled at {self.count()} replies", pytrace=False)
            time.sleep(0.02)
