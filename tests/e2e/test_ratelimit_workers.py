"""Per-TPP rate limits over real server processes sharing a real Redis (OWASP API4, RFC 6585 §4).

The app is ``tests/e2e/ratelimit_app.py`` (Starlette under uvicorn, Flask under gunicorn); its
policy counts ``GET /accounts`` per verified client id with ``ratelimit.tiers.default`` in the
Redis named by ``storage.uri``. Access tokens come from a ``TestIssuer`` whose JWK Set is inline
in the policy. Each process writes its audit events to its own file (``audit-<pid>.jsonl``), and
every request carries a fresh ``x-fapi-interaction-id``, by which its event is found.

* Exact limit across processes: ``L`` requests of one client are admitted and the rest get 429
  (``Retry-After``, problem+json), however the requests are spread over the workers, for each
  ``limits`` strategy, with the async store face (``uvicorn --workers 2``) and the sync one
  (``gunicorn --workers 2``). Every request is decided, by a worker the test knows, and audited
  exactly once. Which worker accepts a connection is up to the kernel (and an asyncio loop may
  accept a whole backlog at once), so for uvicorn the burst travels over kept-alive connections
  whose worker was learned first (``pinned_burst``); gunicorn's sync workers accept one
  connection at a time, so an admitted request that holds its worker a little
  (``RL_E2E_HOLD``) makes the other one accept the next.
* Redis going away and coming back (a private ``redis-server`` of the test, stopped while
  requests are in flight and started again on the same port): with
  ``ratelimit.on_storage_failure: closed`` requests are refused with 503 problem+json, audited
  as ``ratelimit.storage_unavailable``, never a 500 and never slower than the client's few
  seconds of patience; with ``open`` they go through unlimited, the audit event noting
  ``ratelimit.storage_unavailable``. Either way the service resumes, limits included, as soon as
  Redis answers again, without restarting the app.

Cross-process DPoP replay over a shared Redis is covered by test_dpop_shared_replay.py.
"""

from __future__ import annotations

import collections
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from bankguard.testing import TestIssuer

from .ratelimit_support import (
    SHARED_REDIS_URL,
    Kind,
    Reply,
    Server,
    Strategy,
    Traffic,
    burst,
    delete_keys,
    get_accounts,
    keys_under,
    pinned_burst,
    private_redis,
    serving,
    shared_redis_client,
    token_for,
    unique_prefix,
    worker_pids,
    write_policy,
)

pytestmark = pytest.mark.network

LIMIT = 25  # requests per minute of the default tier
REQUESTS = 60  # in one burst of one client: more than LIMIT
CONNECTIONS = 20  # kept-alive connections carrying a burst to uvicorn's workers
STRATEGIES: list[Strategy] = ["fixed-window", "moving-window", "sliding-window-counter"]
#: Seconds a client waits for any answer while Redis is down: a bound, not a measurement.
PATIENCE = 5.0
#: Requests sent to one worker while Redis is down: more than its pool holds (64 connections),
#: so connections lost to failures would show as a pool that never recovers.
DOWN_REQUESTS = 100
AFTER_REQUESTS = 100
_REMAINING = re.compile(r'^"tpp-60s";r=(\d+);t=(\d+)$')


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[redis.Redis]:
    client = shared_redis_client()
    yield client
    client.close()


@pytest.fixture
def prefix(shared_redis: redis.Redis) -> Iterator[str]:
    """A key prefix of this test only; its keys are deleted at the end."""
    value = unique_prefix()
    try:
        yield value
    finally:
        delete_keys(shared_redis, value)


def new_client_id() -> str:
    return f"tpp-{uuid.uuid4().hex[:12]}"


def remaining(reply: Reply) -> int:
    """``r`` of the ``RateLimit`` field (draft-ietf-httpapi-ratelimit-headers-10)."""
    match = _REMAINING.match(reply.headers.get("ratelimit", ""))
    assert match, reply.describe()
    return int(match.group(1))


def assert_admitted(reply: Reply, pids: set[int], limit: int = LIMIT) -> None:
    """200 from one of ``pids``, counted (the RateLimit fields) in a window of ``limit``."""
    assert reply.status == 200, reply.describe()
    assert reply.body["pid"] in pids, reply.describe()
    assert reply.headers["ratelimit-policy"] == f'"tpp-60s";q={limit};w=60', reply.describe()
    assert 0 <= remaining(reply) < limit, reply.describe()
    assert reply.headers["x-fapi-interaction-id"] == reply.interaction_id


def assert_problem(reply: Reply, status: int, slug: str) -> None:
    assert reply.status == status, reply.describe()
    assert reply.headers["content-type"].startswith("application/problem+json"), reply.describe()
    assert isinstance(reply.body, dict), reply.describe()
    assert reply.body["status"] == status, reply.describe()
    assert reply.body["type"].endswith(slug), reply.describe()
    assert reply.headers["x-fapi-interaction-id"] == reply.interaction_id
    retry_after = reply.headers.get("retry-after", "")
    assert retry_after.isdigit(), reply.describe()
    assert 1 <= int(retry_after) <= 60, reply.describe()


def assert_throttled(reply: Reply) -> None:
    assert_problem(reply, 429, "too-many-requests")


def assert_exact_limit(server: Server, replies: list[Reply], client_id: str, pids: set[int]) -> None:
    """LIMIT replies are 200 and the rest 429, and each request has exactly one audit event,
    written by one of ``pids``, saying the same."""
    assert [r.describe() for r in replies if r.error is not None] == []
    statuses = collections.Counter(r.status for r in replies)
    assert statuses == {200: LIMIT, 429: len(replies) - LIMIT}, statuses
    for reply in replies:
        if reply.status == 200:
            assert_admitted(reply, pids)
        else:
            assert_throttled(reply)

    events = server.events_of([r.interaction_id for r in replies])
    assert sum(len(e) for e in events.values()) == len(replies)  # one decision per request
    # and no other decision about the limited operation (the public /whoami aside)
    assert sum(e["operation"] == "GetAccounts" for e in server.events()) == len(replies)
    for reply in replies:
        (event,) = events[reply.interaction_id]
        assert event["pid"] in pids, event
        assert event["client_id"] == client_id, event
        assert event["operation"] == "GetAccounts", event
        if reply.status == 200:
            assert event["outcome"] == "allow", event
        else:
            assert (event["outcome"], event["status"], event["control"], event["reason"]) == (
                "deny",
                429,
                "ratelimit",
                "ratelimit.exceeded",
            ), event


# -- the exact limit across processes -------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_exact_limit_across_workers_asgi(
    strategy: Strategy, tmp_path: Path, issuer: TestIssuer, shared_redis: redis.Redis, prefix: str
) -> None:
    client_id = new_client_id()
    token = token_for(issuer, client_id)
    policy = write_policy(
        tmp_path,
        issuer,
        redis_url=SHARED_REDIS_URL,
        prefix=prefix,
        limits=f"{LIMIT}/minute",
        strategy=strategy,
    )
    with serving("uvicorn", tmp_path, policy, workers=2) as server:
        replies = pinned_burst(server, token, workers=2, connections=CONNECTIONS, first=2, count=REQUESTS - 2)
        pids = {r.worker for r in replies if r.worker is not None}
        assert len(pids) == 2
        assert server.service.proc.pid not in pids  # workers, not the supervisor
        # One request to each worker first: the second worker counts on from the first one's count.
        first = replies[:2]
        for reply in first:
            assert_admitted(reply, pids)
        assert [r.body["pid"] for r in first] == [r.worker for r in first]
        assert first[0].worker != first[1].worker
        assert [remaining(r) for r in first] == [LIMIT - 1, LIMIT - 2]

        assert_exact_limit(server, replies, client_id, pids)
        # Each request was decided by the worker its connection leads to; both decided some.
        events = server.events_of([r.interaction_id for r in replies])
        assert [events[r.interaction_id][0]["pid"] for r in replies] == [r.worker for r in replies]
        assert {r.body["pid"] for r in replies if r.status == 200} <= pids
        assert server.running()
    assert keys_under(shared_redis, prefix), "the counters are not in the shared Redis"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_exact_limit_across_workers_wsgi(
    strategy: Strategy, tmp_path: Path, issuer: TestIssuer, shared_redis: redis.Redis, prefix: str
) -> None:
    client_id = new_client_id()
    token = token_for(issuer, client_id)
    policy = write_policy(
        tmp_path,
        issuer,
        redis_url=SHARED_REDIS_URL,
        prefix=prefix,
        limits=f"{LIMIT}/minute",
        strategy=strategy,
    )
    # An admitted request holds its sync worker a little, so the other worker must accept.
    with serving("gunicorn", tmp_path, policy, workers=2, hold=0.05) as server:
        master = server.service.proc.pid
        pids = worker_pids(server, 2)  # public /whoami: not counted
        assert master not in pids

        replies = burst(server.url, token, REQUESTS)
        assert_exact_limit(server, replies, client_id, pids)
        events = server.events_of([r.interaction_id for r in replies])
        deciders = collections.Counter(e["pid"] for (e,) in events.values())
        assert set(deciders) == pids, deciders  # both workers decided requests of the burst
        assert server.running()
    assert keys_under(shared_redis, prefix), "the counters are not in the shared Redis"


# -- Redis going away and coming back -------------------------------------------------------------


def assert_no_failures(replies: list[Reply], allowed: set[int]) -> None:
    """Every request was answered in time, with one of the ``allowed`` statuses (never a 500)."""
    unexpected = [r.describe() for r in replies if r.error is not None or r.status not in allowed]
    assert unexpected == [], f"{len(unexpected)} of {len(replies)} unexpected: {unexpected[:5]}"


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_redis_down_fails_closed_then_recovers(kind: Kind, tmp_path: Path, issuer: TestIssuer) -> None:
    limit = 10_000  # never reached: this test is about the store, not the limit
    token, background = token_for(issuer, new_client_id()), token_for(issuer, new_client_id())
    (tmp_path / "redis").mkdir()
    (tmp_path / "app").mkdir()
    with private_redis(tmp_path / "redis") as store:
        policy = write_policy(
            tmp_path / "app", issuer, redis_url=store.url, prefix=unique_prefix(), limits=f"{limit}/minute"
        )
        # One worker: every request of the outage meets the same connection pool.
        with serving(kind, tmp_path / "app", policy) as server:
            pids = worker_pids(server, 1)
            url = server.url
            with httpx.Client(timeout=PATIENCE) as client:
                before = [get_accounts(client, url, token) for _ in range(10)]
                with Traffic(url, background, timeout=PATIENCE) as traffic:
                    traffic.wait_for(20)
                    store.stop()  # while requests are in flight
                    down = [get_accounts(client, url, token) for _ in range(DOWN_REQUESTS)]
                    traffic.wait_for(20)
                    store.start()  # the same port, empty: no counters, no scripts
                    after = [get_accounts(client, url, token) for _ in range(AFTER_REQUESTS)]
                    traffic.wait_for(20)
            assert server.running()
            down_events = server.events_of([r.interaction_id for r in down])
            served_by = {e["pid"] for e in server.events()}

    for reply in before:
        assert_admitted(reply, pids, limit)
    assert_no_failures(traffic.replies, {200, 503})
    assert {r.status for r in traffic.replies} == {200, 503}  # the traffic spanned the outage
    assert_no_failures(down, {503})
    for reply in down:
        assert_problem(reply, 503, "service-unavailable")
        (event,) = down_events[reply.interaction_id]
        assert (event["outcome"], event["status"], event["control"], event["reason"]) == (
            "deny",
            503,
            "ratelimit",
            "ratelimit.storage_unavailable",
        ), event
    # Back as soon as Redis answers again: the same processes, nothing restarted.
    assert_no_failures(after, {200})
    for reply in after:
        assert_admitted(reply, pids, limit)
    assert served_by <= pids, (served_by, pids)


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_redis_down_fail_open(kind: Kind, tmp_path: Path, issuer: TestIssuer) -> None:
    limit = 20
    client_id = new_client_id()
    token, background = token_for(issuer, client_id), token_for(issuer, new_client_id())
    (tmp_path / "redis").mkdir()
    (tmp_path / "app").mkdir()
    with private_redis(tmp_path / "redis") as store:
        policy = write_policy(
            tmp_path / "app",
            issuer,
            redis_url=store.url,
            prefix=unique_prefix(),
            limits=f"{limit}/minute",
            on_storage_failure="open",
        )
        # One worker: every request of the outage meets the same connection pool.
        with serving(kind, tmp_path / "app", policy) as server:
            pids = worker_pids(server, 1)
            url = server.url
            with httpx.Client(timeout=PATIENCE) as client:
                before = [get_accounts(client, url, token) for _ in range(5)]
                with Traffic(url, background, timeout=PATIENCE) as traffic:
                    traffic.wait_for(20)
                    store.stop()  # while requests are in flight
                    traffic.wait_for(20)
                # More than the limit while Redis is down: nothing is counted, nothing refused.
                down = [get_accounts(client, url, token) for _ in range(DOWN_REQUESTS)]
                store.start()  # the same port, empty: every counter starts again at zero
                after = [get_accounts(client, url, token) for _ in range(limit + 5)]
            assert server.running()
            down_events = server.events_of([r.interaction_id for r in down])
            served_by = {e["pid"] for e in server.events()}

    for reply in before:
        assert_admitted(reply, pids, limit)
    assert [remaining(r) for r in before] == [limit - n for n in range(1, 6)]
    # The background client may have reached its own limit before the outage, nothing else.
    assert_no_failures(traffic.replies, {200, 429})
    assert_no_failures(down, {200})
    for reply in down:
        assert reply.body["pid"] in pids, reply.describe()
        assert "ratelimit" not in reply.headers, reply.describe()  # not counted
        (event,) = down_events[reply.interaction_id]
        assert (event["outcome"], event["status"], event["reason"]) == ("allow", None, None), event
        assert event["client_id"] == client_id, event
        assert event["notes"] == ["ratelimit.storage_unavailable"], event
    # Limits apply again as soon as Redis answers: exactly `limit` more, then 429.
    assert_no_failures(after, {200, 429})
    assert [r.status for r in after] == [200] * limit + [429] * 5, [r.describe() for r in after]
    assert [remaining(r) for r in after[:limit]] == list(range(limit - 1, -1, -1))
    for reply in after[limit:]:
        assert_throttled(reply)
    assert served_by <= pids, (served_by, pids)
