"""Per-TPP rate limits on Redis in a served Starlette app under concurrent load, beside slowapi.

    python benchmarks/ratelimit_served.py              # 5 rounds of 5 s runs (about three minutes)
    python benchmarks/ratelimit_served.py --quick      # one round of 2 s runs, for smoke runs

``benchmarks/ratelimit.py`` measures the limiter call by call in one process, where nothing else
is waiting: there a synchronous Redis call (slowapi's) costs less than an awaited one
(bankguard's), because a blocking call simply holds the process while Redis answers. A server
under load is different: while slowapi waits for Redis it blocks the event loop, and every other
connection waits with it; bankguard's await lets the loop serve other requests meanwhile. This
script measures that case.

Four variants of the same Starlette app (``ratelimit.starlette_app``: ``GET
/accounts/{AccountId}/transactions`` answering a small JSON body), each in its own uvicorn
process with one worker on 127.0.0.1 (``serve.Server``):

* ``bare`` -- the app alone;
* ``slowapi`` -- the app with slowapi's ``@limiter.limit`` on the endpoint, on Redis;
* ``guard`` -- the app behind ``bankguard.protect``: bearer token verified (then cached), route
  and scope, audit event -- without rate limits;
* ``guard-limited`` -- the same with ``ratelimit.enabled``: one per-TPP window on Redis.

The limit is ``1000000/minute`` for both limiters (sliding window counter), so nothing is refused;
every run must answer 2xx only (``serve.Workload`` stops otherwise). Load is wrk, 2 threads x 16
connections. Runs alternate (``bare, slowapi, guard, guard-limited`` per round, order reversed
every other round); the figures are medians over rounds. The limiter's added cost per request is
``1 / rate`` with it minus without it: slowapi against ``bare``, bankguard's limiter against
``guard``. The worker's CPU time per request is shown too (a blocking wait costs no CPU, so CPU
alone would hide slowapi's stalls). Needs Redis at 127.0.0.1:6379 (``$BANKGUARD_BENCH_REDIS``),
database 15, every key under a prefix unique to the run and deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import redis
import serve

from bankguard import protect
from bankguard.testing import TestIssuer
from ratelimit import (
    AUDIENCE,
    HEADERS,
    ONE,
    PATH,
    REDIS_URL,
    OutcomeSink,
    _cleanup,
    policy,
    slowapi_app,
    starlette_app,
)

VARIANTS = ("bare", "slowapi", "guard", "guard-limited")


def make_asgi() -> Any:
    """The variant named by ``BENCH_VARIANT`` (uvicorn ``--factory``), keys from ``BENCH_DIR``."""
    variant = os.environ["BENCH_VARIANT"]
    prefix = os.environ["BENCH_PREFIX"]
    if variant == "bare":
        return starlette_app()
    if variant == "slowapi":
        return slowapi_app(ONE, REDIS_URL, f"{prefix}:slowapi")
    material = json.loads((Path(os.environ["BENCH_DIR"]) / "material.json").read_text())
    issuer = SimpleNamespace(issuer=material["issuer"], alg=material["alg"], jwks=lambda: material["jwks"])
    limits = ONE if variant == "guard-limited" else None
    return protect(starlette_app(), policy(issuer, OutcomeSink(), limits, REDIS_URL, f"{prefix}:bg:"))  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one round of 2 s runs")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 5)
    seconds = args.seconds or (2 if args.quick else 5)
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.RedisError as exc:
        print(f"served rate limits: skipped, no Redis at {REDIS_URL} ({type(exc).__name__})")
        return 0
    wrk = serve.ensure_wrk()
    prefix = f"bgbench-rls-{os.getpid()}-{secrets.token_hex(4)}"
    issuer = TestIssuer(alg="ES256")
    token = issuer.mint(scope="accounts", lifetime=3600)
    headers = [*HEADERS, ("authorization", f"Bearer {token}")]

    def headers_for(variant: str, method: str, url: str) -> list[tuple[str, str]]:
        return headers

    with tempfile.TemporaryDirectory(prefix="bgbench-rls-") as tmp:
        work = Path(tmp)
        material = {"issuer": issuer.issuer, "alg": issuer.alg, "jwks": issuer.jwks()}
        (work / "material.json").write_text(json.dumps(material))
        env = {"BENCH_DIR": str(work), "BENCH_PREFIX": prefix}
        servers = {
            v: serve.Server("asgi", v, env, module="ratelimit_served", factories=("make_asgi", ""))
            for v in VARIANTS
        }
        shape = serve.Shape("GET", PATH, None, 200, AUDIENCE)
        load = serve.Load(connections=16, threads=2, seconds=seconds)
        workload = serve.Workload(wrk, headers_for, work, load)
        runs: dict[str, list[serve.Run]] = {v: [] for v in VARIANTS}
        try:
            with serve.serving(list(servers.values()), work):
                for server in servers.values():
                    server.wait()
                    serve.verify(headers_for, server, shape)
                    if server.variant.startswith("guard"):  # it enforces what it claims to
                        serve.verify_refusals(headers_for, server, shape)
                    workload.run(server, shape, 1)  # warm-up: connections, token cache, scripts
                for r in range(rounds):
                    order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
                    for v in order:
                        runs[v].append(workload.run(servers[v], shape))
        finally:
            removed = _cleanup(prefix)
    print_report(runs, rounds, seconds, removed)
    return 0


def _added(runs: dict[str, list[serve.Run]], with_: str, without: str) -> float:
    """Median over rounds of 1/rate with minus 1/rate without, in µs per request."""
    return statistics.median(
        1e6 / a.rps - 1e6 / b.rps for a, b in zip(runs[with_], runs[without], strict=True)
    )


def print_report(runs: dict[str, list[serve.Run]], rounds: int, seconds: int, removed: int) -> None:
    print(
        f"\nrate limits on Redis, served (uvicorn, 1 worker; wrk 2 threads x 16 connections; "
        f"{rounds} round(s) of {seconds} s; limit {ONE!r}, sliding window counter)"
    )
    print(f"{'variant':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu µs/req':>12}{'cpu share':>11}")
    for v in VARIANTS:
        rs = runs[v]
        print(
            f"{v:<16}{statistics.median(r.rps for r in rs):>9.0f}"
            f"{statistics.median(r.p50_ms for r in rs):>9.2f}{statistics.median(r.p99_ms for r in rs):>9.2f}"
            f"{statistics.median(r.cpu_us_per_request for r in rs):>12.0f}"
            f"{statistics.median(r.cpu_share for r in rs):>10.0%}"
        )
    slow = _added(runs, "slowapi", "bare")
    mine = _added(runs, "guard-limited", "guard")
    times = slow / mine if mine > 0 else float("inf")
    print(
        f"limiter added per request (1/rate with - without): slowapi {slow:.0f} µs, "
        f"bankguard {mine:.0f} µs -> bankguard {times:.2f}x faster "
        f"({'met' if times > 1 else 'not met'}: target faster than slowapi)"
    )
    print(f"(Redis keys of this run deleted: {removed})")


if __name__ == "__main__":
    sys.exit(main())
