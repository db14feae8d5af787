"""In-process throughput of a bare app versus the same app wrapped by bankguard.

    python benchmarks/run.py            # full run (a few minutes)
    python benchmarks/run.py --quick    # a few seconds, for CI smoke runs
    python benchmarks/run.py --quick --check   # exit 1 when a full-stack ratio misses its target

Each case drives the application directly through its interface (an ASGI call or a
WSGI call), without sockets, so the figures are the cost of the application and
bankguard alone. Bare and wrapped runs alternate round by round, so both see the same
machine noise; the script prints the median requests per second of each and the
ratio wrapped/bare, plus the median cost of one decision of the core alone. The other
scripts beside this one follow (tokens, mTLS, DPoP, OpenAPI, rate limits, and the full stack
against its peers and its cost floor: benchmarks/fullstack.py). With ``--check``, the exit status
is 1 when a full-stack ratio misses its target by more than its noise margin (see
benchmarks/fullstack.py; ratios only, never absolute times).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import fullstack  # benchmarks/fullstack.py, beside this script
from fastapi import FastAPI
from flask import Flask, jsonify

import dpop  # benchmarks/dpop.py, beside this script
import mtls  # benchmarks/mtls.py, beside this script
import openapi  # benchmarks/openapi.py, beside this script
import ratelimit  # benchmarks/ratelimit.py, beside this script
import tokens  # benchmarks/tokens.py, beside this script
from bankguard import BankGuardMiddleware, BankGuardWSGI, Guard, Policy
from bankguard.audit import EventCollector
from bankguard.testing import make_facts

POLICY = Policy.from_dict(
    {
        "routes": {
            "operations": [
                {"method": "GET", "path": "/accounts", "public": True},
                {"method": "GET", "path": "/accounts/{AccountId}/transactions", "public": True},
                {"method": "POST", "path": "/domestic-payments", "public": True},
            ]
        }
    }
)

TRANSACTIONS = [
    {
        "TransactionId": f"tx-{i:04d}",
        "Amount": {"Amount": f"{10 + i}.00", "Currency": "GBP"},
        "CreditDebitIndicator": "Debit" if i % 3 else "Credit",
        "BookingDateTime": "2026-11-01T10:00:00+00:00",
        "TransactionInformation": f"Card payment {i}",
    }
    for i in range(50)
]
HEADERS = [
    ("host", "api.bank.example"),
    ("accept", "application/json"),
    ("x-fapi-interaction-id", "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"),
    ("user-agent", "benchmark/1.0"),
]
PATH = "/accounts/22289/transactions"


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/accounts/{account_id}/transactions")
    async def transactions(account_id: str) -> dict[str, Any]:
        return {"Data": {"AccountId": account_id, "Transaction": TRANSACTIONS}}

    return app


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/accounts/<account_id>/transactions")
    def transactions(account_id: str) -> Any:
        return jsonify({"Data": {"AccountId": account_id, "Transaction": TRANSACTIONS}})

    return app


def asgi_runner(app: Any, n: int) -> Callable[[], float]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in HEADERS],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 443),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def loop() -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    def run() -> float:
        statuses.clear()
        start = time.perf_counter()
        asyncio.run(loop())
        elapsed = time.perf_counter() - start
        if set(statuses) != {200}:
            raise SystemExit(f"ASGI run answered {sorted(set(statuses))}, expected only 200")
        return n / elapsed

    return run


def wsgi_runner(app: Any, n: int) -> Callable[[], float]:
    base = {
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
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in HEADERS},
    }
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    def run() -> float:
        statuses.clear()
        start = time.perf_counter()
        for _ in range(n):
            environ = dict(base)
            environ["wsgi.input"] = io.BytesIO(b"")
            body = app(environ, start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        elapsed = time.perf_counter() - start
        if {s[:3] for s in statuses} != {"200"}:
            raise SystemExit(f"WSGI run answered {sorted(set(statuses))}, expected only 200")
        return n / elapsed

    return run


def decision_runner(guard: Guard, n: int) -> Callable[[], float]:
    facts = make_facts("GET", PATH, headers=HEADERS)

    def run() -> float:
        start = time.perf_counter()
        for _ in range(n):
            guard.decide(facts)
        return n / (time.perf_counter() - start)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few rounds, small batches")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--requests", type=int, default=None, help="requests per round and case")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a full-stack ratio misses its target margin"
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    n = args.requests or (300 if args.quick else 3000)
    logging.getLogger("bankguard").setLevel(logging.ERROR)

    # Audit events are collected in memory and cleared each round: the benchmark measures
    # the decision and the event, not a log handler's I/O.
    sink = EventCollector()
    guard = Guard(POLICY, sink=sink)
    asgi_bare = fastapi_app()
    wsgi_bare = flask_app()
    asgi_wrapped = BankGuardMiddleware(asgi_bare, guard=guard)
    wsgi_wrapped = BankGuardWSGI(wsgi_bare.wsgi_app, guard=guard)
    pairs = {
        "ASGI (FastAPI)": (asgi_runner(asgi_bare, n), asgi_runner(asgi_wrapped, n)),
        "WSGI (Flask)": (wsgi_runner(wsgi_bare, n), wsgi_runner(wsgi_wrapped, n)),
    }
    decide = decision_runner(guard, n)
    results: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}
    decisions: list[float] = []
    for bare, wrapped in pairs.values():  # warm-up
        bare()
        wrapped()
    for _ in range(rounds):
        for name, (bare, wrapped) in pairs.items():
            results[name][0].append(bare())
            results[name][1].append(wrapped())
            sink.events.clear()
        decisions.append(decide())
        sink.events.clear()

    print(f"bankguard in-process benchmark: {rounds} rounds x {n} requests, GET {PATH} (50 transactions)")
    print(f"python {sys.version.split()[0]}")
    print(f"{'case':<18}{'bare req/s':>14}{'wrapped req/s':>16}{'ratio':>8}{'added us/req':>15}")
    for name, (bare_rates, wrapped_rates) in results.items():
        b = statistics.median(bare_rates)
        w = statistics.median(wrapped_rates)
        added = (1 / w - 1 / b) * 1e6
        print(f"{name:<18}{b:>14,.0f}{w:>16,.0f}{w / b:>8.2f}{added:>15.1f}")
    d = statistics.median(decisions)
    print(f"{'decision only':<18}{'':>14}{d:>16,.0f}{'':>8}{1e6 / d:>15.1f}")
    tokens.report(rounds, 50 if args.quick else 300)
    mtls.report(rounds, 300 if args.quick else 3000)
    dpop.report(rounds, 100 if args.quick else 1000)
    openapi.report(rounds, 8 if args.quick else 40, quick=args.quick)
    ratelimit.report(rounds, 50 if args.quick else 140, quick=args.quick)
    found = fullstack.report(rounds, 0.05 if args.quick else 0.15, quick=args.quick)
    return fullstack.check(found) if args.check else 0


if __name__ == "__main__":
    sys.exit(main())
