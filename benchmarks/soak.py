"""Mixed valid and hostile traffic against the two examples, served as in production, for a minute.

    python benchmarks/soak.py                  # 60 s per server (about three minutes in all)
    python benchmarks/soak.py --duration 300   # longer
    python benchmarks/soak.py --quick          # 10 s per server, a smoke run

The FastAPI example (``examples/fastapi_app``) runs under ``uvicorn --workers 2`` and the Flask
example (``examples/flask_app``) under ``gunicorn --workers 2``, one after the other, on free
ports of 127.0.0.1, each with its own ``policy.yaml`` adapted through ``BANKGUARD_POLICY`` (the
examples read it) in four ways only: the access tokens' issuer is a key made here
(``tokens.issuers[0].jwks``, instead of the demo authorization server), ``storage`` is the Redis at
127.0.0.1:6379 (``$BANKGUARD_BENCH_REDIS``; database 15, a prefix unique to the run, deleted at the
end), the rate limits are raised so that only the limit under test refuses, and
``external_origins`` names the port served. Audit events go, one JSON line each, to a file per
server (``bankguard.audit`` logger, a logging configuration given to the server).

The load comes from this process: 16 connections (``--connections``) on one event loop, each
sending the next request of one fixed cycle of request classes and reading its answer (HTTP/1.1,
keep-alive where the server keeps the connection; gunicorn's sync workers close it after each
answer). Valid requests carry a DPoP-bound token and a DPoP proof made just before sending
(unique ``jti``, fresh ``iat``), as a client does. Every request carries its own
``x-fapi-interaction-id`` (except the class that sends an invalid one), by which its audit event
is found. The classes, and what each must get:

========================  ======================================================  ============
class                     request                                                 expected
========================  ======================================================  ============
accounts                  GET /accounts, valid token and proof                    200
transactions              GET /accounts/22289/transactions, valid                 200
payment                   POST /domestic-payments, valid body, token and proof    201
limited                   GET /accounts by the TPP whose tier is N per hour       N x 200, 429
no-token                  GET /accounts without Authorization                     401
bearer                    the DPoP-bound token sent as Bearer                     401
forged                    a token signed by another key                           401
garbage-token             ``Authorization: DPoP %%%``                             400
replayed-proof            a proof already used by an earlier request              401
wrong-htu                 a proof made for another path                           401
duplicate-auth            two Authorization lines                                 400
path-trick                GET /accounts/%2e%2e/domestic-payments                  400
override                  X-HTTP-Method-Override: DELETE                          400
huge-header               one 7 KiB header line                                   431
bad-json                  POST /domestic-payments, valid credentials, ``{``       400
unknown-route             GET /admin                                              404
bad-interaction-id        an ``x-fapi-interaction-id`` that is not a UUID          200 (new id)
========================  ======================================================  ============

Checks (the exit status is 1 when one fails): no 5xx and no connection error; every request's
status within its class's expectation; the limited TPP got exactly N successes (``--limit``) and
429 for the rest; every request has exactly one decision audit event (found by interaction id,
the replaced ones by count) and the events match the requests in number; each worker's resident
memory (``VmRSS``) after the warm-up (the first 20 % of the run) and at the end, growth below
``--rss-growth`` MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml

from bankguard.testing import DPoPKey, TestIssuer

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BANKGUARD_BENCH_REDIS", "redis://127.0.0.1:6379/15")
AUDIENCE = "https://api.bank.example"
ACCOUNT = "22289"
PAYMENT = {
    "Data": {
        "ConsentId": "PDC-58923",
        "Initiation": {
            "InstructionIdentification": "ACME412",
            "EndToEndIdentification": "FRESCO.21302.GFX.20",
            "InstructedAmount": {"Amount": "165.88", "Currency": "GBP"},
            "CreditorAccount": {
                "SchemeName": "UK.OBIE.SortCodeAccountNumber",
                "Identification": "08080021325698",
                "Name": "ACME Inc",
            },
        },
    },
    "Risk": {},
}
MAIN_CLIENT = "tpp-soak"
LIMITED_CLIENT = "tpp-limited"


# --------------------------------------------------------------------------------------------
# The servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def adapted_policy(example: str, issuer: TestIssuer, port: int, prefix: str, limit: int) -> dict[str, Any]:
    """The example's policy with our issuer, Redis, raised limits and the served origin."""
    here = ROOT / "examples" / example
    policy = yaml.safe_load((here / "policy.yaml").read_text())
    policy["external_origins"] = [f"http://127.0.0.1:{port}"]
    policy["openapi"]["spec"] = str((here / policy["openapi"]["spec"]).resolve())
    policy["tokens"]["issuers"] = [
        {"issuer": issuer.issuer, "audiences": [AUDIENCE], "algorithms": ["ES256"], "jwks": issuer.jwks()}
    ]
    policy["storage"] = {"uri": REDIS_URL, "prefix": prefix}
    rl = policy["ratelimit"]
    rl["tiers"] = {"default": "1000000/minute", "limited": f"{limit}/hour"}
    rl["tpps"] = {LIMITED_CLIENT: "limited"}
    rl["operations"] = {}
    rl["preauth"] = {"limits": "1000000/second"}
    return policy


def logging_config(audit_file: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": "%(message)s"}},
        "handlers": {
            "audit": {"class": "logging.FileHandler", "filename": str(audit_file), "formatter": "line"},
            "stderr": {"class": "logging.StreamHandler", "level": "WARNING"},
        },
        "loggers": {
            "bankguard.audit": {"handlers": ["audit"], "level": "INFO", "propagate": False},
            "bankguard": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


@dataclass
class Served:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    audit: Path
    log: Path

    def workers(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    cmdline = (entry / "cmdline").read_bytes()
                    # (uvicorn's multiprocessing also starts a resource tracker: not a worker)
                    if (
                        int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid
                        and b"resource_tracker" not in cmdline
                    ):
                        found.append(int(entry.name))
        return sorted(found)

    def rss_mib(self) -> dict[int, float]:
        out = {}
        for pid in self.workers():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[pid] = int(line.split()[1]) / 1024
        return out


@contextlib.contextmanager
def serving(name: str, work: Path, policy: dict[str, Any], port: int) -> Iterator[Served]:
    policy_file, audit = work / f"{name}-policy.yaml", work / f"{name}-audit.jsonl"
    policy_file.write_text(yaml.safe_dump(policy))
    log_config = work / f"{name}-logging.json"
    log_config.write_text(json.dumps(logging_config(audit)))
    env = {**os.environ, "BANKGUARD_POLICY": str(policy_file), "PYTHONPATH": str(ROOT)}
    bind = f"127.0.0.1:{port}"
    if name == "fastapi":
        command = [
            sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app", "--workers", "2",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--no-proxy-headers",
            "--log-config", str(log_config),
        ]  # fmt: skip
    else:
        conf = work / "gunicorn_conf.py"
        conf.write_text(f"logconfig_dict = {logging_config(audit)!r}\n")
        command = [
            sys.executable, "-m", "gunicorn", "-w", "2", "-k", "sync", "-b", bind, "-c", str(conf),
            "--timeout", "60", "examples.flask_app.app:app",
        ]  # fmt: skip
    log = work / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - this script's own server command, no shell
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    served = Served(name, port, proc, audit, log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited on start:\n{log.read_text()[-3000:]}")
            if len(served.workers()) >= 2:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                    break
            time.sleep(0.1)
        else:
            raise SystemExit(f"{name} did not start within 60 s:\n{log.read_text()[-3000:]}")
        yield served
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# --------------------------------------------------------------------------------------------
# The traffic


@dataclass
class Client:
    """What valid and hostile requests are made of."""

    issuer: TestIssuer
    origin: str
    key: DPoPKey = field(default_factory=DPoPKey)
    other: DPoPKey = field(default_factory=DPoPKey)
    forger: TestIssuer = field(default_factory=lambda: TestIssuer(alg="ES256"))
    used: list[str] = field(default_factory=list)

    def token(self, client_id: str = MAIN_CLIENT) -> str:
        return self.issuer.mint(
            {"client_id": client_id, "sub": client_id},
            scope="accounts payments",
            lifetime=3600,
            dpop_key=self.key,
        )

    def proof(self, method: str, path: str, token: str) -> str:
        made = self.key.proof(method, self.origin + path, access_token=token)
        if len(self.used) < 64:
            self.used.append(made)
        return made


Request = tuple[str, str, list[tuple[str, str]], bytes]  # method, target, headers, body
#: class -> (statuses allowed, whether its interaction id is ours to find its event by)
EXPECTED: dict[str, tuple[frozenset[int], bool]] = {
    "accounts": (frozenset({200}), True),
    "transactions": (frozenset({200}), True),
    "payment": (frozenset({201}), True),
    "limited": (frozenset({200, 429}), True),
    "no-token": (frozenset({401}), True),
    "bearer": (frozenset({401}), True),
    "forged": (frozenset({401}), True),
    "garbage-token": (frozenset({400}), True),
    "replayed-proof": (frozenset({401}), True),
    "wrong-htu": (frozenset({401}), True),
    "duplicate-auth": (frozenset({400}), True),
    "path-trick": (frozenset({400}), True),
    "override": (frozenset({400}), True),
    "huge-header": (frozenset({431}), True),
    "bad-json": (frozenset({400}), True),
    "unknown-route": (frozenset({404}), True),
    "bad-interaction-id": (frozenset({200}), False),
}
#: One cycle of the traffic: valid requests are half of it.
CYCLE = [
    "accounts", "transactions", "no-token", "accounts", "payment", "forged", "transactions",
    "limited", "bearer", "accounts", "replayed-proof", "transactions", "path-trick", "accounts",
    "garbage-token", "payment", "duplicate-auth", "transactions", "wrong-htu", "accounts",
    "override", "limited", "huge-header", "transactions", "bad-json", "accounts", "unknown-route",
    "bad-interaction-id",
]  # fmt: skip


class Traffic:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.token = client.token()
        self.limited_token = client.token(LIMITED_CLIENT)
        self.forged = client.forger.mint({"iss": client.issuer.issuer}, dpop_key=client.key, lifetime=3600)
        self.next = 0

    def build(self) -> tuple[str, str, Request]:
        kind = CYCLE[self.next % len(CYCLE)]
        self.next += 1
        iid = str(uuid.uuid4())
        c, token = self.client, self.token
        headers: list[tuple[str, str]] = [("accept", "application/json"), ("x-fapi-interaction-id", iid)]

        def valid(method: str, path: str, who: str | None = None) -> list[tuple[str, str]]:
            t = who or token
            return [("authorization", f"DPoP {t}"), ("dpop", c.proof(method, path, t))]

        method, target, body = "GET", "/accounts", b""
        if kind in ("accounts", "bad-interaction-id"):
            headers += valid("GET", target)
            if kind == "bad-interaction-id":
                headers[1] = ("x-fapi-interaction-id", "not-a-uuid")
        elif kind == "transactions":
            target = f"/accounts/{ACCOUNT}/transactions"
            headers += valid("GET", target)
        elif kind in ("payment", "bad-json"):
            method, target = "POST", "/domestic-payments"
            body = json.dumps(PAYMENT).encode() if kind == "payment" else b"{"
            headers += [*valid(method, target), ("content-type", "application/json")]
        elif kind == "limited":
            headers += valid("GET", target, self.limited_token)
        elif kind == "bearer":
            headers += [("authorization", f"Bearer {token}")]
        elif kind == "forged":
            headers += [
                ("authorization", f"DPoP {self.forged}"),
                ("dpop", c.proof("GET", target, self.forged)),
            ]
        elif kind == "garbage-token":
            headers += [("authorization", "DPoP %%%"), ("dpop", c.proof("GET", target, token))]
        elif kind == "replayed-proof":
            headers += [("authorization", f"DPoP {token}"), ("dpop", c.used[0])]
        elif kind == "wrong-htu":
            headers += [
                ("authorization", f"DPoP {token}"),
                ("dpop", c.key.proof("GET", c.origin + "/x", access_token=token)),
            ]
        elif kind == "duplicate-auth":
            headers += [*valid("GET", target), ("authorization", f"DPoP {token}")]
        elif kind == "path-trick":
            target = "/accounts/%2e%2e/domestic-payments"
            headers += valid("GET", target)
        elif kind == "override":
            headers += [*valid("GET", target), ("x-http-method-override", "DELETE")]
        elif kind == "huge-header":
            headers += [*valid("GET", target), ("x-pad", "p" * 7 * 1024)]
        elif kind == "unknown-route":
            target = "/admin"
            headers += valid("GET", target)
        else:
            headers += []  # no-token
        return kind, iid, (method, target, headers, body)


def encode(request: Request, port: int) -> bytes:
    method, target, headers, body = request
    lines = [f"{method} {target} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method == "POST":
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers


@dataclass
class Outcome:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    ids: dict[str, str] = field(default_factory=dict)  # our interaction id -> class


async def drive(port: int, traffic: Traffic, seconds: float, connections: int, outcome: Outcome) -> None:
    end = time.monotonic() + seconds

    async def one_connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while time.monotonic() < end:
            kind, iid, request = traffic.build()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert reader is not None
                writer.write(encode(request, port))
                outcome.sent += 1
                if EXPECTED[kind][1]:
                    outcome.ids[iid] = kind
                status, headers = await asyncio.wait_for(read_response(reader), 30)
                outcome.statuses[kind, status] += 1
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
                outcome.errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None

    await asyncio.gather(*(one_connection() for _ in range(connections)))


async def prime(port: int, traffic: Traffic) -> None:
    """One valid request, whose proof the replayed-proof class sends again."""
    c = traffic.client
    headers = [
        ("authorization", f"DPoP {traffic.token}"),
        ("dpop", c.proof("GET", "/accounts", traffic.token)),
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode(("GET", "/accounts", headers, b""), port))
    status, _ = await read_response(reader)
    writer.close()
    if status != 200:
        raise SystemExit(f"the priming request answered {status}, not 200")


# --------------------------------------------------------------------------------------------
# The run


def check(
    name: str,
    outcome: Outcome,
    served: Served,
    limit: int,
    rss: dict[str, dict[int, float]],
    max_growth: float,
) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]], dict[int, float]]:
    """The failed checks, the audit events, the decision events among them, RSS growth per worker."""
    failures: list[str] = []
    by_class: dict[str, Counter[int]] = {}
    for (kind, status), n in outcome.statuses.items():
        by_class.setdefault(kind, Counter())[status] += n
    for kind, counts in sorted(by_class.items()):
        allowed = EXPECTED[kind][0]
        wrong = {s: n for s, n in counts.items() if s not in allowed}
        if wrong:
            failures.append(f"{kind}: unexpected statuses {wrong} (expected {sorted(allowed)})")
    fives = sum(n for (_, s), n in outcome.statuses.items() if s >= 500)
    if fives:
        failures.append(f"{fives} responses were 5xx")
    if outcome.errors:
        failures.append(f"connection errors: {dict(outcome.errors)}")
    limited = by_class.get("limited", Counter())
    if sum(limited.values()) <= limit:
        failures.append(
            f"the limited TPP sent {sum(limited.values())} requests, not more than its limit {limit}"
        )
    elif limited[200] != limit:
        failures.append(f"limited TPP: {limited[200]} successes, expected exactly {limit}")
    # Audit events: one decision per request.
    deadline = time.monotonic() + 10
    while True:
        events = [json.loads(line) for line in served.audit.read_text().splitlines() if line.strip()]
        decisions = [e for e in events if not str(e.get("reason") or "").startswith("openapi.response_")]
        if len(decisions) >= outcome.sent or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    per_id = Counter(e["interaction_id"] for e in decisions)
    missing = [i for i in outcome.ids if per_id[i] != 1]
    if missing:
        failures.append(f"{len(missing)} requests without exactly one decision event, e.g. {missing[:3]}")
    # What the response path did (minimised bodies): at most one event per request, never a 5xx.
    responses = Counter(
        e["interaction_id"] for e in events if str(e.get("reason") or "").startswith("openapi.response_")
    )
    if any(n > 1 for n in responses.values()):
        failures.append("a response has more than one response event")
    if len(decisions) != outcome.sent:
        failures.append(f"{len(decisions)} decision events for {outcome.sent} requests")
    if set(rss["warm"]) != set(rss["end"]) or len(rss["end"]) != 2:
        failures.append(f"workers changed during the run (a crash and a restart?): {rss}")
    growth = {pid: rss["end"].get(pid, 0.0) - mib for pid, mib in rss["warm"].items()}
    if any(g > max_growth for g in growth.values()):
        failures.append(f"resident memory grew {growth} MiB after warm-up (limit {max_growth} MiB)")
    return failures, events, decisions, growth


def run_one(name: str, args: argparse.Namespace, work: Path, prefix: str) -> dict[str, Any]:
    port = free_port()
    issuer = TestIssuer("https://as.soak.example", alg="ES256")
    example = "fastapi_app" if name == "fastapi" else "flask_app"
    policy = adapted_policy(example, issuer, port, f"{prefix}:{name}:", args.limit)
    client = Client(issuer, f"http://127.0.0.1:{port}")
    traffic = Traffic(client)
    outcome = Outcome()
    rss: dict[str, dict[int, float]] = {}
    with serving(name, work, policy, port) as served:
        loop = asyncio.new_event_loop()
        try:
            # Prime the replayed proof: sent once (accepted), then replayed by its class.
            loop.run_until_complete(prime(port, traffic))
            time.sleep(0.5)
            served.audit.write_text("")  # the counts start after the priming request
            warm = args.duration * 0.2
            started = time.monotonic()
            loop.run_until_complete(drive(port, traffic, warm, args.connections, outcome))
            rss["warm"] = served.rss_mib()
            half = (args.duration - warm) / 2
            loop.run_until_complete(drive(port, traffic, half, args.connections, outcome))
            rss["middle"] = served.rss_mib()
            loop.run_until_complete(drive(port, traffic, half, args.connections, outcome))
            elapsed = time.monotonic() - started
            rss["end"] = served.rss_mib()
        finally:
            loop.close()
        time.sleep(0.5)
        failures, events, decisions, growth = check(name, outcome, served, args.limit, rss, args.rss_growth)
    return {
        "name": name,
        "sent": outcome.sent,
        "seconds": elapsed,
        "rate": outcome.sent / elapsed,
        "statuses": outcome.statuses,
        "events": len(events),
        "decisions": len(decisions),
        "rss": rss,
        "growth": growth,
        "failures": failures,
    }


def report(result: dict[str, Any], limit: int) -> None:
    name = {
        "fastapi": "FastAPI example, uvicorn --workers 2",
        "flask": "Flask example, gunicorn -w 2 (sync)",
    }[result["name"]]
    print(f"\n{name}: {result['sent']} requests in {result['seconds']:.0f} s ({result['rate']:.0f}/s)")
    by_class: dict[str, Counter[int]] = {}
    for (kind, status), n in result["statuses"].items():
        by_class.setdefault(kind, Counter())[status] += n
    for kind in EXPECTED:
        counts = by_class.get(kind, Counter())
        shown = ", ".join(f"{s} x {n}" for s, n in sorted(counts.items()))
        print(f"  {kind:<20} {shown}")
    print(f"  limited TPP: {by_class.get('limited', Counter())[200]} successes (limit {limit}/hour)")
    print(
        f"  audit events: {result['decisions']} decisions for {result['sent']} requests, and"
        f" {result['events'] - result['decisions']} response events (bodies minimised)"
    )
    for pid, mib in sorted(result["rss"]["warm"].items()):
        end = result["rss"]["end"].get(pid, float("nan"))
        middle = result["rss"]["middle"].get(pid, float("nan"))
        print(
            f"  worker {pid}: RSS {mib:.1f} MiB after warm-up, {middle:.1f} MiB halfway, {end:.1f} MiB at"
            f" the end ({end - mib:+.2f} MiB; second half {end - middle:+.2f} MiB)"
        )
    for failure in result["failures"]:
        print(f"  FAILED: {failure}")
    if not result["failures"]:
        print("  all checks passed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per server")
    parser.add_argument("--quick", action="store_true", help="10 s per server")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--limit", type=int, default=100, help="the limited TPP's requests per hour")
    parser.add_argument("--rss-growth", type=float, default=10.0, help="MiB a worker may grow after warm-up")
    parser.add_argument("--servers", default="fastapi,flask")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 10.0
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    prefix = f"bgsoak-{os.getpid()}-{secrets.token_hex(4)}"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.duration:.0f} s per server")
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="bgsoak-") as tmp:
            for name in args.servers.split(","):
                results.append(run_one(name, args, Path(tmp), prefix))
                report(results[-1], args.limit)
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    return 1 if any(r["failures"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
