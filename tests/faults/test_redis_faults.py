"""The Redis of ``storage.uri`` failing under mixed traffic, through real applications (STANDARDS
DPOP-13, OWASP-16, CFG-08; docs/workers.md "When Redis is down"; docs/policy.md ``storage``,
``ratelimit.on_storage_failure``; docs/errors.md "Fail closed").

A private ``redis-server`` (no persistence) holds both the DPoP replay entries and the per-TPP
rate-limit counters. The Starlette application (async store face) and the Flask application (sync
face) are called from six threads at once with three kinds of requests:

* ``dpop``: a DPoP-bound token with a fresh proof each time, whose ``jti`` must be recorded in Redis
  (``SET NX``) before the request is served;
* ``bearer``: a Bearer token of a client in a generous tier (counted, never throttled here);
* ``limited``: a Bearer token of a client in a tier of 5 requests per minute.

While the traffic runs, Redis is killed (SIGTERM or SIGKILL) and started again on the same port,
or frozen (SIGSTOP: connections are still accepted by the kernel, nothing is answered) and thawed.
Documented behaviour checked on every response and its audit event:

* only 200, 429 or 503, never a 500, and exactly one audit event per request;
* while Redis cannot answer: ``dpop`` requests 503 ``security-check-failed`` (``tokens.store_failure``,
  ``Retry-After: 1``) whatever ``on_storage_failure`` says; the others 503 ``service-unavailable``
  (``ratelimit.storage_unavailable``, ``Retry-After: 1``) under ``closed``, or 200 uncounted with the
  note ``ratelimit.storage_unavailable`` under ``open``;
* once Redis answers again, service resumes without a restart of the application: proofs are
  single-use again and the limit of the tight tier is enforced again.

A Redis that accepts connections and never answers (:class:`~tests.faults.conftest.SilentServer`)
gives the same refusals, each bounded by ``storage.timeout`` and the connect limit (lowered here with
the documented ``?socket_connect_timeout=`` query option). Recovery times (Redis answering again
to the first DPoP request served) are kept as the user property ``recovery_s``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from bankguard.testing import DPoPKey, EventCollector, TestIssuer

from .conftest import (
    ACCOUNTS,
    ORIGIN,
    PATIENCE,
    WAIT,
    RedisProcess,
    Reply,
    Served,
    SilentServer,
    assert_problem,
    assert_unavailable,
    event_of,
    make_policy,
    until,
)

pytestmark = pytest.mark.network

ISSUER = TestIssuer("https://as.bank.example", alg="ES256")
DPOP_KEY = DPoPKey("ES256")
TOKENS = {
    "dpop": ISSUER.mint({"client_id": "tpp-dpop"}, dpop_key=DPOP_KEY, lifetime=3600),
    "bearer": ISSUER.mint({"client_id": "tpp-bearer"}, lifetime=3600),
    "limited": ISSUER.mint({"client_id": "tpp-limited"}, lifetime=3600),
}
KINDS = ("dpop", "bearer", "limited")
TIGHT = 5  # requests per minute of the tier of tpp-limited
WORKERS = 6
PHASE = 30  # requests answered in each phase of the traffic
STORE_TIMEOUT = 0.25  # storage.timeout (the default)
#: For a Redis that accepts connections and never answers: opening a connection (its handshake
#: included) may take the connect limit, max(2 s, timeout) by default; the documented query option
#: lowers it so that these tests stay short.
HUNG = "?socket_connect_timeout=0.5"

Mode = Literal["closed", "open"]


def redis_policy(events: EventCollector, uri: str, mode: Mode) -> Any:
    return make_policy(
        events,
        tokens={
            "issuers": [
                {
                    "issuer": ISSUER.issuer,
                    "audiences": [ORIGIN],
                    "algorithms": ["ES256"],
                    "jwks": ISSUER.jwks(),
                }
            ]
        },
        dpop={"enabled": True},
        storage={"uri": uri, "timeout": STORE_TIMEOUT, "prefix": f"faults:{uuid.uuid4().hex}:"},
        ratelimit={
            "enabled": True,
            "on_storage_failure": mode,
            "tiers": {"default": "1000/minute", "tight": f"{TIGHT}/minute"},
            "tpps": {"tpp-limited": "tight"},
        },
    )


def headers(kind: str, proof: str | None = None) -> dict[str, str]:
    token = TOKENS[kind]
    if kind != "dpop":
        return {"authorization": f"Bearer {token}"}
    return {
        "authorization": f"DPoP {token}",
        "dpop": proof or DPOP_KEY.proof("GET", ACCOUNTS, access_token=token),
    }


@dataclass
class Sent:
    kind: str
    reply: Reply
    sent: float
    done: float


class Traffic:
    """``WORKERS`` threads sending dpop, bearer and limited requests in turn until stopped."""

    def __init__(self, app: Served) -> None:
        self.app = app
        self.results: list[Sent] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(WORKERS)]
        for thread in self._threads:
            thread.start()

    def _run(self, offset: int) -> None:
        n = offset
        while not self._stop.is_set():
            kind = KINDS[n % len(KINDS)]
            n += 1
            sent = time.monotonic()
            try:
                reply = self.app.get(headers(kind))
            except BaseException as exc:  # reported by the test, never swallowed
                with self._lock:
                    self.errors.append(exc)
                return
            with self._lock:
                self.results.append(Sent(kind, reply, sent, time.monotonic()))

    def answered_after(self, moment: float) -> list[Sent]:
        with self._lock:
            return [r for r in self.results if r.sent >= moment]

    def wait(self, condition: Callable[[], bool]) -> None:
        assert until(condition, timeout=PATIENCE), f"traffic stalled: {len(self.results)} answered"
        assert self.errors == []

    def stop(self) -> list[Sent]:
        self._stop.set()
        for thread in self._threads:
            thread.join(PATIENCE)
        assert not any(t.is_alive() for t in self._threads), "a request never got an answer"
        assert self.errors == []
        return list(self.results)


# -- what each answer may be -------------------------------------------------------------------


def assert_served(events: EventCollector, kind: str, reply: Reply, notes: tuple[str, ...] = ()) -> None:
    assert reply.status == 200, reply.describe()
    assert reply.json() == {
        "subject": "psu-1",
        "client_id": f"tpp-{kind}",
        "binding": "dpop" if kind == "dpop" else None,
    }
    event = event_of(events, reply)
    assert (event.outcome, event.reason, event.notes) == ("allow", None, notes), event


def assert_store_failure(events: EventCollector, reply: Reply) -> None:
    """The DPoP replay check could not record the proof: 503, always (fail closed)."""
    assert_unavailable(reply, "security-check-failed", retry_after=1)
    event = event_of(events, reply)
    assert (event.outcome, event.status, event.control, event.reason) == (
        "deny",
        503,
        "tokens",
        "tokens.store_failure",
    )


def assert_ratelimit_unavailable(events: EventCollector, reply: Reply) -> None:
    assert_unavailable(reply, "service-unavailable", retry_after=1)
    event = event_of(events, reply)
    assert (event.outcome, event.status, event.control, event.reason) == (
        "deny",
        503,
        "ratelimit",
        "ratelimit.storage_unavailable",
    )


def assert_throttled(events: EventCollector, reply: Reply) -> None:
    assert_problem(reply, 429, "too-many-requests")
    assert (reply.get("retry-after") or "").isdigit(), reply.describe()
    event = event_of(events, reply)
    assert (event.outcome, event.status, event.control, event.reason) == (
        "deny",
        429,
        "ratelimit",
        "ratelimit.exceeded",
    )


def assert_possible(events: EventCollector, mode: Mode, result: Sent) -> str:
    """Any answer the documented behaviour allows at any moment of an outage; returns its label."""
    reply, kind = result.reply, result.kind
    event = event_of(events, reply)
    if reply.status == 200:
        notes = event.notes
        if notes:  # uncounted: only under open, and only when the store failed for the rate limit
            assert mode == "open", event
        assert_served(events, kind, reply, notes)
        return "200 uncounted" if notes else "200"
    if reply.status == 429:
        assert kind == "limited", reply.describe()
        assert_throttled(events, reply)
        return "429"
    assert reply.status == 503, reply.describe()  # never a 500, never anything else
    if event.reason == "tokens.store_failure":
        assert kind == "dpop", event
        assert_store_failure(events, reply)
        return "503 tokens.store_failure"
    assert mode == "closed", event
    assert_ratelimit_unavailable(events, reply)
    return "503 ratelimit.storage_unavailable"


def assert_outage_answer(events: EventCollector, mode: Mode, result: Sent) -> None:
    """A request sent and answered entirely while Redis could not answer."""
    if result.kind == "dpop":
        assert_store_failure(events, result.reply)
    elif mode == "closed":
        assert_ratelimit_unavailable(events, result.reply)
    else:
        assert_served(events, result.kind, result.reply, ("ratelimit.storage_unavailable",))


# -- the scenario --------------------------------------------------------------------------------


def sanity(app: Served, events: EventCollector) -> int:
    """With Redis up: a proof is single-use, the tight tier throttles the sixth request. Returns the
    number of requests sent."""
    proof = DPOP_KEY.proof("GET", ACCOUNTS, access_token=TOKENS["dpop"])
    assert_served(events, "dpop", app.get(headers("dpop", proof)))
    replayed = app.get(headers("dpop", proof))
    assert_problem(replayed, 401, "invalid-dpop-proof")
    assert replayed.get_all("www-authenticate") == [
        'DPoP algs="ES256 PS256 EdDSA", error="invalid_dpop_proof", '
        'error_description="The DPoP proof has been used before."'
    ]
    assert event_of(events, replayed).reason == "dpop.replayed"
    assert_served(events, "bearer", app.get(headers("bearer")))
    limited = [app.get(headers("limited")) for _ in range(TIGHT + 1)]
    for reply in limited[:TIGHT]:
        assert_served(events, "limited", reply)
    assert_throttled(events, limited[-1])
    return 3 + TIGHT + 1


def run_outage(
    app: Served,
    events: EventCollector,
    mode: Mode,
    break_redis: Callable[[], None],
    repair_redis: Callable[[], None],
    record: Callable[[str, object], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = sanity(app, events)
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        traffic = Traffic(app)
        start = time.monotonic()
        traffic.wait(lambda: len(traffic.answered_after(start)) >= PHASE)
        break_redis()
        down = time.monotonic()
        traffic.wait(lambda: len(traffic.answered_after(down)) >= PHASE)
        restart = time.monotonic()
        repair_redis()
        up = time.monotonic()

        def resumed() -> bool:
            return any(r.kind == "dpop" and r.reply.status == 200 for r in traffic.answered_after(up))

        traffic.wait(resumed)
        first = min(r.done for r in traffic.answered_after(up) if r.kind == "dpop" and r.reply.status == 200)
        record("recovery_s", round(first - up, 3))
        results = traffic.stop()
    assert len(events.events) == sent + len(results)  # one event per request, none lost or doubled
    labels = Counter(assert_possible(events, mode, r) for r in results)
    record("answers", dict(sorted(labels.items())))
    outage = [r for r in results if r.sent >= down and r.done <= restart]
    assert len(outage) >= PHASE // 2, labels
    for result in outage:
        assert_outage_answer(events, mode, result)
    logged = [r.getMessage() for r in caplog.records if r.name == "bankguard"]
    failing = "failing closed" if mode == "closed" else "failing open"
    assert any("rate-limit store failed" in m and m.endswith(failing) for m in logged)
    assert any("check 'tokens' failed (store_failure)" in m for m in logged)
    # Service has resumed: every kind of request is served again, one after the other...
    for kind in ("dpop", "bearer", "dpop", "bearer"):
        assert_served(events, kind, app.get(headers(kind)))
    # ...proofs are single-use again...
    proof = DPOP_KEY.proof("GET", ACCOUNTS, access_token=TOKENS["dpop"])
    assert_served(events, "dpop", app.get(headers("dpop", proof)))
    assert event_of(events, app.get(headers("dpop", proof))).reason == "dpop.replayed"
    # ...and the tight tier is enforced again, its counter starting from what the restarted (or
    # thawed) Redis holds: at most TIGHT requests of the client served since then.
    served = sum(r.kind == "limited" and r.reply.status == 200 for r in results if r.sent >= up)
    throttled = None
    for _ in range(TIGHT + 1):
        reply = app.get(headers("limited"))
        if reply.status != 200:
            throttled = reply
            break
        assert_served(events, "limited", reply)
        served += 1
    assert throttled is not None, labels
    assert_throttled(events, throttled)
    assert served <= TIGHT, labels
    assert len(events.events) == app.sent


OUTAGES = [
    pytest.param("closed", signal.SIGKILL, id="closed-sigkill"),
    pytest.param("closed", signal.SIGTERM, id="closed-sigterm"),
    pytest.param("open", signal.SIGKILL, id="open-sigkill"),
]


@pytest.mark.parametrize(("mode", "sig"), OUTAGES)
def test_OWASP_16_DPOP_13_redis_killed_and_restarted_under_traffic(
    serve: Callable[..., Served],
    redis_server: RedisProcess,
    events: EventCollector,
    caplog: pytest.LogCaptureFixture,
    record: Callable[[str, object], None],
    mode: Mode,
    sig: signal.Signals,
) -> None:
    app = serve(redis_policy(events, redis_server.url, mode))
    run_outage(
        app,
        events,
        mode,
        lambda: redis_server.stop(sig),
        redis_server.start,
        record,
        caplog,
    )


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_OWASP_16_DPOP_13_redis_frozen_and_thawed_under_traffic(
    serve: Callable[..., Served],
    redis_server: RedisProcess,
    events: EventCollector,
    caplog: pytest.LogCaptureFixture,
    record: Callable[[str, object], None],
    mode: Mode,
) -> None:
    """SIGSTOP: the kernel still accepts connections, Redis answers nothing; every request that
    needs it fails after ``storage.timeout`` instead of waiting. SIGCONT: service resumes."""
    app = serve(redis_policy(events, redis_server.url + HUNG, mode))
    proc = redis_server.proc
    assert proc is not None

    def state() -> str:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0]

    def freeze() -> None:
        proc.send_signal(signal.SIGSTOP)
        assert until(lambda: state() == "T", timeout=WAIT)

    def thaw() -> None:
        proc.send_signal(signal.SIGCONT)
        assert until(redis_server.answers, timeout=WAIT)

    run_outage(app, events, mode, freeze, thaw, record, caplog)


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_OWASP_16_redis_that_accepts_and_never_answers_is_bounded_by_the_time_limits(
    serve: Callable[..., Served], silent_server: SilentServer, events: EventCollector, mode: Mode
) -> None:
    app = serve(redis_policy(events, f"redis://127.0.0.1:{silent_server.port}/0{HUNG}", mode))
    results: list[Sent] = []
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:

        def one(n: int) -> Sent:
            kind = KINDS[n % len(KINDS)]
            sent = time.monotonic()
            return Sent(kind, app.get(headers(kind)), sent, time.monotonic())

        futures = [pool.submit(one, n) for n in range(2 * WORKERS)]
        for future in futures:
            results.append(future.result(timeout=PATIENCE))  # a bound against a hang, not a measurement
    assert len(events.events) == len(results)
    for result in results:
        assert_outage_answer(events, mode, result)
    assert silent_server.accepted  # the connections were made; nothing ever answered them
