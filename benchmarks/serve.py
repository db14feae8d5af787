"""Real servers on 127.0.0.1 under wrk: throughput, latency and memory of bankguard.

    python benchmarks/serve.py                  # full run (about nine minutes)
    python benchmarks/serve.py --quick          # under a minute, for smoke runs
    python benchmarks/serve.py --json out.json  # also save every figure
    python benchmarks/serve.py --extra          # also the single controls and openapi-core's integration

Method
------
The applications are those of ``benchmarks/stack.py`` (``make_asgi`` / ``make_wsgi``, the variant
named by ``BENCH_VARIANT``): a Starlette or Flask app answering ``GET
/accounts/{AccountId}/transactions`` with 45 kB of JSON and ``POST /domestic-payments`` with 201,
bare, behind bankguard, or behind the peer stacks (PyJWT, slowapi / Flask-Limiter and a hand-written
redaction pass with openapi-core or Connexion 3 doing the contract's work). Each variant runs in its
own server process with one worker on a free port of 127.0.0.1: uvicorn (``--factory``, no access
log, asyncio and h11 unless uvloop and httptools are installed) for ASGI, gunicorn's sync worker for
WSGI (which closes the connection after each response, bare or not). The keys, certificates and
tokens are made once (``stack.Material``) in a temporary directory every server reads
(``BENCH_DIR``); storage is ``memory://`` (``BENCH_STORAGE``). bankguard's audit events go to its
logging sink; with logging at WARNING, as in these servers, allow events are not written.

Before anything is timed, one request of every variant must answer 200 (201 for the payment): a
benchmark measuring refusals is worthless. And it must be refused without what it claims to check
(no ``Authorization``, no ``DPoP`` proof, a proof sent twice, no client certificate where the token
is bound to it: 401), or the benchmark would measure a guard that lets everything through. Each
server is then warmed up (wrk for a few seconds; ``--quick``: 20 requests), and every wrk run must
report no non-2xx response (wrk's ``Non-2xx or 3xx responses``) or the benchmark stops.

Load comes from wrk (Debian's ``wrk``; installed with apt-get when missing) with a fixed number of
connections and threads (16 and 2) and ``benchmarks/wrk/request.lua``, which sends the headers of
``stack.request_headers`` (access token, nginx's client-certificate header as from a trusted proxy
on 127.0.0.1, interaction id), with ``Host`` and ``X-Forwarded-Proto`` as nginx sets them, with
every request. DPoP variants need a fresh proof per request
(unique ``jti``, ``iat`` within the server's 60 s window): just before each of their runs, enough
proofs (the variant's last rate, else the last bare rate, times the duration, plus a margin) are
made here with the client's key, written to one file per wrk thread, and each thread sends its own
proofs once, in order; a thread that runs out is reported and the run fails. Proofs name the
external origin (``https://api.bank.example``) while requests go to 127.0.0.1.

Runs alternate with runs of the bare application (``bare, X, bare, Y, ..., bare``; ``--quick``:
``bare, X, Y, ..., bare``), so machine noise hits both; a run's ratio is its rate over the mean of
the bare runs just before and after it, and the figure printed is the median over rounds. The peers
are compared with ``full-dpop``, whose work they do: the ratio is ``full-dpop``'s median rate over
each peer run's. Each row also shows the worker's CPU time (``/proc/PID/stat``) per request, the
same over the bare app's (``+µs``, what the stack costs per request, the figure least disturbed by
noise) and the worker's share of one core during the runs: near 100 % means the server, not wrk
(which shares the machine), was the bottleneck. RSS is the worker's after its runs.

Memory: the resident set (``VmRSS`` in ``/proc/PID/status``: uvicorn's process, gunicorn's worker,
not its master) of a worker serving ``full-mtls``'s policy with the UK Open Banking Account and
Transaction 4.0 spec (``../shared/specs/uk-ob``, 29 operations) as its contract, ``GET
/open-banking/v4.0/aisp/accounts/{AccountId}/transactions`` answering a valid ``OBReadTransaction6``
with two undeclared properties per transaction and a card number (``benchmarks/openapi.py``), which
bankguard strips and masks: after start, after a warm-up and after each of three load phases. The
growth after warm-up is what the target (flat) is about.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk" / "request.lua"
UK_SPEC = Path(
    os.environ.get("BANKGUARD_SPECS", HERE.parents[1] / "shared" / "specs"),
    "uk-ob",
    "account-info-openapi.yaml",
)
UK_BASE = "/open-banking/v4.0/aisp"
UK_TEMPLATE = UK_BASE + "/accounts/{AccountId}/transactions"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: What the TLS-terminating proxy in front (nginx, the trusted peer 127.0.0.1) sets: the external
#: host and scheme, so that the apps see https://api.bank.example as their URL (uvicorn and
#: gunicorn believe X-Forwarded-Proto from 127.0.0.1 by default).
PROXY_HEADERS = [("Host", "api.bank.example"), ("X-Forwarded-Proto", "https")]

#: Variants compared with the bare app, and the ratio (variant / bare) each must reach.
GET_VARIANTS = ("bearer", "dpop", "full-mtls", "full-dpop")
POST_VARIANTS = ("full-mtls", "full-dpop")
PEERS = ("peer-openapi-core", "peer-connexion")
#: With --extra: the single controls, and openapi-core's own Starlette / Flask integration.
EXTRA_VARIANTS = ("request", "mtls", "openapi", "ratelimit")
EXTRA_PEERS = ("peer-openapi-core-integration",)
TARGETS: dict[str, float] = {
    "bearer": 0.90,
    "dpop": 0.75,
    "full-mtls": 0.50,
    "full-dpop": 0.50,
    # The peers: full-dpop's rate over the peer's (how many times faster bankguard is).
    "peer-openapi-core": 300.0,
    "peer-connexion": 15.0,
}
#: Peers do what full-dpop does (stack.py): that is the variant they are compared with.
PEER_BASE = "full-dpop"


# --------------------------------------------------------------------------------------------
# The machine and the load generator


def ensure_wrk() -> str:
    """wrk's path; installed from Debian's packages when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt:
        print("wrk not found: apt-get install -y -qq wrk", flush=True)
        subprocess.run([apt, "install", "-y", "-qq", "wrk"], check=False)  # noqa: S603 - argument list, no shell
        found = shutil.which("wrk")
    if not found:
        raise SystemExit(
            "wrk, the load generator, is needed and could not be installed: install it "
            "(`apt-get install wrk` on Debian and Ubuntu, `brew install wrk` on macOS) and run again"
        )
    return found


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine_info(wrk: str) -> dict[str, Any]:
    deps = []
    for requirement in importlib.metadata.requires("bankguard") or []:
        if "extra ==" not in requirement:
            deps.append(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])
    others = ["uvicorn", "h11", "httptools", "uvloop", "gunicorn", "starlette", "flask", "werkzeug"]
    others += ["openapi-core", "connexion", "pyjwt", "slowapi", "flask-limiter"]
    shown = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)  # noqa: S603 - wrk from PATH, fixed arguments, no shell
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "system": f"{platform.system()} {platform.release()}",
        "wrk": (shown.stdout or shown.stderr).splitlines()[0].split(" Copyright")[0].strip(),
        "bankguard": _version("bankguard"),
        "dependencies": {name: _version(name) for name in deps},
        "servers_and_peers": {name: _version(name) for name in others},
    }


def print_machine(info: dict[str, Any]) -> None:
    print("machine")
    print(f"  cpu          {info['cpu']}, {info['cores']} cores")
    print(f"  python       {info['python']} on {info['system']}")
    print(f"  wrk          {info['wrk']}")
    print(f"  bankguard    {info['bankguard']}")
    print("  its deps     " + ", ".join(f"{k} {v}" for k, v in info["dependencies"].items()))
    present = {k: v for k, v in info["servers_and_peers"].items() if v != "-"}
    print("  servers etc  " + ", ".join(f"{k} {v}" for k, v in present.items()))
    missing = [k for k, v in info["servers_and_peers"].items() if v == "-"]
    if missing:
        print("  not present  " + ", ".join(missing))


# --------------------------------------------------------------------------------------------
# Servers


class ServerFailed(Exception):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: gunicorn settings file: the worker writes its pid to $BENCH_READY once it has loaded the app.
GUNICORN_CONF = """\
import os


def post_worker_init(worker):
    path = os.environ.get("BENCH_READY")
    if path:
        with open(path + ".tmp", "w") as f:
            f.write(str(worker.pid))
        os.replace(path + ".tmp", path)
"""


@dataclass
class Server:
    """One server process (its own process group) serving one variant with one worker."""

    kind: str  # "asgi" (uvicorn) or "wsgi" (gunicorn, sync worker)
    variant: str
    env: dict[str, str]
    module: str = "stack"
    factories: tuple[str, str] = ("make_asgi", "make_wsgi")
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    logs: Path | None = None
    started: float = 0.0

    @property
    def name(self) -> str:
        return f"{'uvicorn' if self.kind == 'asgi' else 'gunicorn'} {self.variant}"

    @property
    def log(self) -> Path:
        assert self.logs is not None
        return self.logs / f"{self.kind}-{self.variant}.log"

    @property
    def ready_file(self) -> Path:
        return self.log.with_suffix(".ready")

    def command(self) -> list[str]:
        if self.kind == "asgi":
            return [
                sys.executable, "-m", "uvicorn", "--factory", f"{self.module}:{self.factories[0]}",
                "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(self.port),
                "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
        assert self.logs is not None
        return [
            sys.executable, "-m", "gunicorn", "-w", "1", "-k", "sync", "--chdir", str(HERE),
            "-c", str(self.logs / "gunicorn_conf.py"), "-b", f"127.0.0.1:{self.port}",
            "--log-level", "warning", "--timeout", "120", f"{self.module}:{self.factories[1]}()",
        ]  # fmt: skip

    def start(self, logs: Path) -> None:
        self.logs, self.port = logs, free_port()
        self.ready_file.unlink(missing_ok=True)
        if self.kind == "wsgi":
            (logs / "gunicorn_conf.py").write_text(GUNICORN_CONF)
        env = {**os.environ, **self.env, "BENCH_VARIANT": self.variant, "PYTHONUNBUFFERED": "1"}
        env["BENCH_READY"] = str(self.ready_file)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - the benchmark's own server command, no shell
                self.command(),
                cwd=HERE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.perf_counter()

    def wait(self, timeout: float = 120.0) -> float:
        """Seconds from start until the app is built and the port accepts connections (uvicorn
        binds once the factory has returned; gunicorn's worker writes its pid once it has loaded)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self.proc.returncode} on start:\n{self.tail()}")
            if self.worker_pid() is not None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return time.perf_counter() - self.started
            time.sleep(0.05)
        raise ServerFailed(f"{self.name} did not answer within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        if self.logs is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def worker_pid(self) -> int | None:
        """The process that serves: uvicorn's own, gunicorn's (only) worker."""
        if self.proc is None:
            return None
        if self.kind == "asgi":
            return self.proc.pid
        try:
            pid = int(self.ready_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid not in _children(self.proc.pid):
            raise ServerFailed(f"{self.name}: worker {pid} is gone (restarted?):\n{self.tail()}")
        return pid

    def rss_kib(self) -> int:
        pid = self.worker_pid()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise ServerFailed(f"{self.name}: no VmRSS for pid {pid}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the worker so far."""
        stat = Path(f"/proc/{self.worker_pid()}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # fields after the command name
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@contextlib.contextmanager
def serving(servers: list[Server], logs: Path) -> Iterator[None]:
    """Start every server at once; stop them all (their process groups) whatever happens."""
    try:
        for server in servers:
            server.start(logs)
        yield
    finally:
        for server in servers:
            server.stop()


# --------------------------------------------------------------------------------------------
# Requests

HeadersFor = Callable[[str, str, str], list[tuple[str, str]]]


@dataclass
class Shape:
    """One kind of request: method, path (as sent), body, expected status, the external origin."""

    method: str
    path: str
    body: bytes | None
    expect: int
    origin: str

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def url(self) -> str:
        return self.origin + self.path


def one_request(server: Server, shape: Shape, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """(status, body) of one request over a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        has_host = any(k.lower() == "host" for k, _ in headers)
        conn.putrequest(shape.method, shape.path, skip_host=has_host, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if shape.body is not None:
            conn.putheader("Content-Length", str(len(shape.body)))
        conn.endheaders(shape.body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


#: A header a variant cannot do without, and the status it answers when it is missing: proof that
#: the stack measured enforces what it claims to (a policy that lets everything through would
#: also answer 200). The client certificate is required where the token is bound to it, not
#: where it is bound to a DPoP key (bankguard's full-dpop reads it as the TPP's identity).
REQUIRED = {"authorization": 401, "dpop": 401, "x-ssl-client-cert": 401}


def verify_refusals(headers_for: HeadersFor, server: Server, shape: Shape) -> list[str]:
    """Each header the variant sends from REQUIRED, left out once: the answer must be a refusal."""
    headers = headers_for(server.variant, shape.method, shape.url)
    names = {k.lower() for k, _ in headers}
    checked = []
    for name, expected in REQUIRED.items():
        if name not in names or (name == "x-ssl-client-cert" and "dpop" in names):
            continue
        fresh = headers_for(server.variant, shape.method, shape.url)  # a proof not yet sent
        status, body = one_request(server, shape, [(k, v) for k, v in fresh if k.lower() != name])
        # The peers' own refusals are theirs to shape: any refusal will do (shown when not 401).
        peer_ok = server.variant.startswith("peer-") and status >= 400
        if status != expected and not peer_ok:
            raise SystemExit(
                f"{server.name}: {shape.label} without {name} answered {status}, expected {expected}:"
                f"\n{body[:400].decode(errors='replace')}"
            )
        checked.append(name if status == expected else f"{name}: {status}")
    dpop = [v for k, v in headers if k.lower() == "dpop"]
    if dpop:  # a proof sent twice: the second time is a replay
        once, twice = (one_request(server, shape, headers)[0] for _ in range(2))
        if once != shape.expect or twice < 400 or (twice != 401 and not server.variant.startswith("peer-")):
            raise SystemExit(f"{server.name}: a DPoP proof sent twice answered {once}, then {twice}")
        checked.append("replay" if twice == 401 else f"replay: {twice}")
    return checked


def verify(headers_for: HeadersFor, server: Server, shape: Shape) -> int:
    """One request must get the expected status; the response body's size is returned."""
    status, body = one_request(server, shape, headers_for(server.variant, shape.method, shape.url))
    if status != shape.expect:
        raise SystemExit(
            f"{server.name}: {shape.label} answered {status}, expected {shape.expect}; the benchmark "
            f"would measure refusals:\n{body[:600].decode(errors='replace')}\n{server.tail(15)}"
        )
    return len(body)


# --------------------------------------------------------------------------------------------
# wrk


@dataclass
class Run:
    kind: str
    shape: str
    variant: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    socket_errors: int
    seconds: float
    cpu_us_per_request: float
    cpu_share: float  # worker CPU seconds per wall second during the run
    proofs: int = 0
    proof_seconds: float = 0.0


@dataclass
class Load:
    connections: int
    threads: int
    seconds: int  # wrk takes whole seconds
    margin: float = 1.5  # DPoP proofs per run: the expected requests times this, plus 300


class Workload:
    """Writes the files wrk's script reads for one server and shape, and runs wrk."""

    def __init__(self, wrk: str, headers_for: HeadersFor, work: Path, load: Load) -> None:
        self.wrk, self.headers_for, self.work, self.load = wrk, headers_for, work, load
        self.rates: dict[tuple[str, str, str], float] = {}  # (kind, variant, shape) -> last req/s

    def _files(self, server: Server, shape: Shape) -> tuple[Path, str, bool]:
        first = self.headers_for(server.variant, shape.method, shape.url)
        tag = f"{server.kind}-{server.variant}-{shape.method}"
        lines = []
        for name, value in first:
            if name.lower() == "dpop":
                continue
            if "\n" in value or "\r" in value:
                raise SystemExit(f"{server.name}: header {name} holds a line break")
            lines.append(f"{'Host' if name.lower() == 'host' else name}: {value}")
        headers = self.work / f"{tag}.headers"
        headers.write_text("\n".join(lines) + "\n")
        body = "-"
        if shape.body is not None:
            path = self.work / f"{tag}.body"
            path.write_bytes(shape.body)
            body = str(path)
        return headers, body, any(k.lower() == "dpop" for k, _ in first)

    def _proofs(self, server: Server, shape: Shape, count: int) -> tuple[str, float]:
        """``count`` fresh proofs in one file per wrk thread; the seconds it took to make them."""
        t0 = time.perf_counter()
        proofs = []
        for _ in range(count):
            headers = self.headers_for(server.variant, shape.method, shape.url)
            proofs.append(next(v for k, v in headers if k.lower() == "dpop"))
        elapsed = time.perf_counter() - t0
        if len(set(proofs)) != len(proofs):
            raise SystemExit(f"{server.name}: request_headers gave the same DPoP proof twice")
        prefix = self.work / f"{server.kind}-{server.variant}-{shape.method}.proofs"
        for index in range(self.load.threads):
            Path(f"{prefix}.{index}").write_text("\n".join(proofs[index :: self.load.threads]) + "\n")
        return str(prefix), elapsed

    def _expected_rate(self, server: Server, shape: Shape) -> float:
        own = self.rates.get((server.kind, server.variant, shape.label))
        bare = self.rates.get((server.kind, "bare", shape.label), 3000.0)
        return bare if own is None else min(bare, own * 1.5)

    def run(self, server: Server, shape: Shape, seconds: int | None = None) -> Run:
        seconds = seconds or self.load.seconds
        headers, body, dpop = self._files(server, shape)
        proofs, made, proof_seconds = "-", 0, 0.0
        if dpop:
            made = int(self._expected_rate(server, shape) * seconds * self.load.margin) + 300
            made += -made % self.load.threads
            proofs, proof_seconds = self._proofs(server, shape, made)
        command = [
            self.wrk, f"-t{self.load.threads}", f"-c{self.load.connections}", f"-d{seconds}s",
            "--latency", "--timeout", "30s", "-s", str(WRK_SCRIPT),
            f"http://127.0.0.1:{server.port}{shape.path}", "--",
            shape.method, str(headers), body, proofs, str(self.load.threads),
        ]  # fmt: skip
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 120)  # noqa: S603 - wrk with numeric and internal arguments, no shell
        cpu, wall = server.cpu_seconds() - cpu0, time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(
                f"wrk failed ({done.returncode}) on {server.name}:\n{done.stdout}\n{done.stderr}"
            )
        result = parse_wrk(done.stdout)
        if result["exhausted"]:
            raise SystemExit(
                f"{server.name}: the {made} DPoP proofs made for {seconds} s ran out "
                f"({result['exhausted']} requests without one): raise Load.margin"
            )
        if result["non2xx"]:
            raise SystemExit(
                f"{server.name}: {result['non2xx']} of {result['requests']} responses under load were not "
                f"2xx or 3xx; the figures would measure refusals:\n{done.stdout}\n{server.tail(15)}"
            )
        if result["requests"] == 0:
            raise SystemExit(f"{server.name}: wrk completed no request:\n{done.stdout}")
        run = Run(
            kind=server.kind,
            shape=shape.label,
            variant=server.variant,
            rps=result["rps"],
            p50_ms=result["p50_us"] / 1000,
            p99_ms=result["p99_us"] / 1000,
            requests=result["requests"],
            non2xx=result["non2xx"],
            socket_errors=result["connect"] + result["read"] + result["write"] + result["timeout"],
            seconds=result["duration_us"] / 1e6,
            cpu_us_per_request=cpu / result["requests"] * 1e6,
            cpu_share=cpu / wall,
            proofs=made,
            proof_seconds=proof_seconds,
        )
        self.rates[(server.kind, server.variant, shape.label)] = run.rps
        return run


_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")


def parse_wrk(out: str) -> dict[str, Any]:
    """wrk's own summary lines and the script's ``BENCH {json}`` line, checked against each other."""
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no BENCH line (was the script run?):\n{out}")
    result: dict[str, Any] = json.loads(line[6:])
    rps = _RPS.search(out)
    if rps is None:
        raise SystemExit(f"wrk printed no Requests/sec:\n{out}")
    result["rps"] = float(rps.group(1))
    non2xx = _NON2XX.search(out)
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    if result["non2xx"] != result["status"]:
        raise SystemExit(f"wrk's non-2xx count and the script's disagree:\n{out}")
    return result


# --------------------------------------------------------------------------------------------
# Schedules and figures


def alternate(
    workload: Workload,
    servers: dict[str, Server],
    shape: Shape,
    variants: tuple[str, ...],
    rounds: int,
    flank: bool,
) -> list[Run]:
    """Per round: bare, X, bare, Y, ..., bare (``flank``) or bare, X, Y, ..., bare."""
    runs: list[Run] = []
    for _ in range(rounds):
        runs.append(workload.run(servers["bare"], shape))
        for i, variant in enumerate(variants):
            runs.append(workload.run(servers[variant], shape))
            if flank or i == len(variants) - 1:
                runs.append(workload.run(servers["bare"], shape))
    return runs


def bare_ratios(runs: list[Run], variant: str) -> list[float]:
    """Each run of ``variant`` over the mean of the nearest bare runs before and after it."""
    ratios = []
    for i, run in enumerate(runs):
        if run.variant == variant:
            before = next((r.rps for r in reversed(runs[:i]) if r.variant == "bare"), None)
            after = next((r.rps for r in runs[i + 1 :] if r.variant == "bare"), None)
            ratios.append(run.rps / statistics.mean(x for x in (before, after) if x is not None))
    return ratios


def summary(runs: list[Run], variant: str) -> dict[str, float]:
    mine = [r for r in runs if r.variant == variant]
    return {
        "rps": statistics.median(r.rps for r in mine),
        "p50_ms": statistics.median(r.p50_ms for r in mine),
        "p99_ms": statistics.median(r.p99_ms for r in mine),
        "cpu_us_per_request": statistics.median(r.cpu_us_per_request for r in mine),
        "cpu_share": statistics.median(r.cpu_share for r in mine),
        "requests": sum(r.requests for r in mine),
        "non2xx": sum(r.non2xx for r in mine),
        "socket_errors": sum(r.socket_errors for r in mine),
        "runs": len(mine),
    }


def comparison(kind: str, shape: str, variant: str, base: str, ratios: list[float]) -> dict[str, Any]:
    ratio = statistics.median(ratios)
    target = TARGETS.get(variant)
    return {
        "kind": kind,
        "shape": shape,
        "variant": variant,
        "base": base,
        "ratios": ratios,
        "ratio": ratio,
        "target": target,
        "met": None if target is None else ratio >= target,
    }


# --------------------------------------------------------------------------------------------
# Memory: one worker with the UK Account and Transaction spec as its contract


def uk_policy() -> Any:
    """``full-mtls``'s policy (stack.policy) with the UK spec as the contract."""
    import stack

    from bankguard import Policy

    material = stack.Material.load(Path(os.environ["BENCH_DIR"]))
    return Policy.from_dict(
        {
            "external_origins": [stack.ORIGIN],
            "trusted_proxies": ["127.0.0.0/8"],
            "storage": {"uri": os.environ.get("BENCH_STORAGE", "memory://")},
            "tokens": {
                "issuers": [
                    {
                        "issuer": stack.ISSUER,
                        "audiences": [stack.AUDIENCE],
                        "algorithms": ["ES256"],
                        "jwks": material.jwks,
                    }
                ]
            },
            "openapi": {"spec": str(UK_SPEC)},
            "profile": "fapi2",
            "client_cert": {
                "source": "nginx",
                "verify_header": stack.VERIFY_HEADER,
                "trust_anchors": str(material.ca_file),
            },
            "ratelimit": {
                "enabled": True,
                "strategy": stack.LIMIT_STRATEGY,
                "tiers": {"default": stack.LIMIT},
            },
        }
    )


def make_uk_asgi() -> Any:
    """Starlette app answering the UK transactions document ($BENCH_UK_DOC), behind uk_policy()."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from bankguard import protect

    document = Path(os.environ["BENCH_UK_DOC"]).read_bytes()

    async def transactions(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return protect(Starlette(routes=[Route(UK_TEMPLATE, transactions, methods=["GET"])]), uk_policy())


def make_uk_wsgi() -> Any:
    """Flask app answering the UK transactions document ($BENCH_UK_DOC), behind uk_policy()."""
    from flask import Flask, Response

    from bankguard import protect

    document = Path(os.environ["BENCH_UK_DOC"]).read_bytes()
    app = Flask("bench_uk")

    @app.get(UK_TEMPLATE.replace("{AccountId}", "<AccountId>"))
    def transactions(AccountId: str) -> Response:
        return Response(document, mimetype="application/json")

    return protect(app, uk_policy())


def measure_memory(kind: str, plan: Plan, stack: Any, material: Any, work: Path, wrk: str) -> dict[str, Any]:
    from openapi import transactions_document  # benchmarks/openapi.py, beside this script

    if not UK_SPEC.exists():
        raise SystemExit(f"the UK Account and Transaction spec is missing: {UK_SPEC}")
    document = work / "uk-transactions.json"
    document.write_text(json.dumps(transactions_document(50, extra=True), separators=(",", ":")))
    env = {"BENCH_DIR": str(material.directory), "BENCH_UK_DOC": str(document)}
    server = Server(kind, "uk-full-mtls", env, "serve", ("make_uk_asgi", "make_uk_wsgi"))
    shape = Shape("GET", UK_BASE + stack.TRANSACTIONS_PATH, None, 200, stack.ORIGIN)
    extra = [
        ("x-fapi-auth-date", "Sun, 01 Nov 2026 10:43:31 GMT"),
        ("x-fapi-customer-ip-address", "203.0.113.7"),
    ]

    def headers_for(variant: str, method: str, url: str) -> list[tuple[str, str]]:
        return [*PROXY_HEADERS, *stack.request_headers(material, "full-mtls", method, url), *extra]

    workload = Workload(wrk, headers_for, work, plan.load)
    points: list[tuple[str, int, Run | None]] = []
    with serving([server], work):
        try:
            started = server.wait()
        except ServerFailed as exc:
            raise SystemExit(str(exc)) from None
        points.append(("start", server.rss_kib(), None))
        size = verify(headers_for, server, shape)
        run = workload.run(server, shape, plan.memory_warmup)
        points.append((f"warm-up ({plan.memory_warmup} s)", server.rss_kib(), run))
        for phase in range(plan.memory_phases):
            run = workload.run(server, shape, plan.memory_seconds)
            points.append((f"load {phase + 1} ({plan.memory_seconds} s)", server.rss_kib(), run))
    warm = points[1][1]
    growth = points[-1][1] - warm
    after_warmup = sum(r.requests for _, _, r in points[2:] if r)
    print(f"\n{kind.upper()} memory: {server.name.split()[0]} worker, UK Account and Transaction 4.0 spec")
    print(f"  full-mtls policy; {shape.label} ({size} bytes out); app built in {started:.1f} s")
    print(f"  {'after':<22}{'VmRSS MiB':>11}{'req/s':>10}{'requests':>10}{'p99 ms':>9}{'CPU µs':>9}")
    for label, kib, r in points:
        figures = f"{r.rps:>10.1f}{r.requests:>10}{r.p99_ms:>9.2f}{r.cpu_us_per_request:>9.0f}" if r else ""
        print(f"  {label:<22}{kib / 1024:>11.1f}{figures}")
    print(
        f"  growth after warm-up: {growth / 1024:+.2f} MiB over {after_warmup} requests "
        f"({growth * 1024 / max(after_warmup, 1):+.2f} bytes per request)"
    )
    return {
        "server": server.name,
        "spec": str(UK_SPEC),
        "response_bytes": size,
        "start_seconds": started,
        "points": [
            {"after": label, "rss_kib": kib, "run": asdict(r) if r else None} for label, kib, r in points
        ],
        "growth_kib": growth,
        "requests_after_warmup": after_warmup,
    }


# --------------------------------------------------------------------------------------------
# Main


@dataclass
class Plan:
    load: Load
    rounds: int
    flank: bool
    warmup: int  # seconds of wrk per server and shape before timing; 0: 20 single requests
    memory_warmup: int
    memory_phases: int
    memory_seconds: int
    kinds: tuple[str, ...] = ("asgi", "wsgi")
    extra: bool = False
    notes: list[str] = field(default_factory=list)


def _ratio_text(value: float) -> str:
    """Rounded down, so that a ratio just under its target never reads as the target."""
    return f"{math.floor(value * 1000) / 1000:.3f}" if value < 10 else f"{math.floor(value * 10) / 10:.1f}"


HEADER = (
    f"  {'variant':<30}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs':>8}{'+µs':>7}{'CPU':>6}"
    f"{'requests':>10}{'non2xx':>7}{'ratio':>8}{'bytes':>8}{'RSS MiB':>9}"
)


def _row(
    label: str, s: dict[str, float], bare: dict[str, float], ratio: str, size: int | str, rss: int | None
) -> str:
    """One variant's medians; ``+µs``: the worker's CPU per request over the bare app's."""
    mib = f"{rss / 1024:.1f}" if rss else ""
    cpu = s["cpu_us_per_request"]
    added = f"{cpu - bare['cpu_us_per_request']:+.0f}" if s is not bare else ""
    return (
        f"  {label:<30}{s['rps']:>9.1f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{cpu:>8.0f}{added:>7}"
        f"{s['cpu_share']:>6.0%}{int(s['requests']):>10}{int(s['non2xx']):>7}{ratio:>8}{size:>8}{mib:>9}"
    )


def measure_kind(kind: str, plan: Plan, stack: Any, material: Any, work: Path, wrk: str) -> dict[str, Any]:
    get_variants = GET_VARIANTS + (EXTRA_VARIANTS if plan.extra else ())
    peers = PEERS + (EXTRA_PEERS if plan.extra else ())
    env = {"BENCH_DIR": str(material.directory)}
    servers = {v: Server(kind, v, env) for v in ("bare", *get_variants, *peers)}
    get = Shape("GET", stack.TRANSACTIONS_PATH, None, 200, stack.ORIGIN)
    post = Shape("POST", stack.PAYMENTS_PATH, bytes(stack.PAYMENT_BODY), 201, stack.ORIGIN)

    def headers_for(variant: str, method: str, url: str) -> list[tuple[str, str]]:
        return [*PROXY_HEADERS, *stack.request_headers(material, variant, method, url)]

    workload = Workload(wrk, headers_for, work, plan.load)
    server_name = "uvicorn" if kind == "asgi" else "gunicorn, sync worker"
    out: dict[str, Any] = {"server": server_name, "runs": [], "comparisons": [], "summary": {}}
    with serving(list(servers.values()), work):
        sizes, built, refusals, skipped = {}, {}, {}, []
        for variant, server in list(servers.items()):
            try:
                server.wait()
            except ServerFailed as exc:
                if variant in EXTRA_VARIANTS + EXTRA_PEERS:  # optional: reported, not fatal
                    skipped.append(variant)
                    plan.notes.append(
                        f"{kind}: {variant} skipped, it did not start: {str(exc).splitlines()[-1]}"
                    )
                    del servers[variant]
                    continue
                raise SystemExit(str(exc)) from None
            sizes[variant] = verify(headers_for, server, get)
            built[variant] = time.perf_counter() - server.started
            refusals[variant] = verify_refusals(headers_for, server, get)
            if variant == "bare" or variant in POST_VARIANTS:
                sizes[f"POST {variant}"] = verify(headers_for, server, post)
        get_variants = tuple(v for v in get_variants if v not in skipped)
        peers = tuple(v for v in peers if v not in skipped)
        out["first_response_seconds"], out["response_bytes"] = built, sizes
        out["refusals_checked"] = refusals
        print(
            f"\n{kind.upper()}: {server_name}, 1 worker per variant; wrk {plan.load.threads} threads, "
            f"{plan.load.connections} connections, {plan.load.seconds} s runs, {plan.rounds} round(s)"
        )
        print("  first response after start (s): " + ", ".join(f"{v} {t:.1f}" for v, t in built.items()))
        checked = ", ".join(f"{v} ({' '.join(c)})" for v, c in refusals.items() if c)
        print(f"  refused as they must be, without (or replaying): {checked}")
        for variant, server in servers.items():  # not timed: first requests, lazily built caches
            for shape in (get, post) if variant == "bare" or variant in POST_VARIANTS else (get,):
                if plan.warmup:
                    workload.run(server, shape, plan.warmup)
                else:
                    t0 = time.perf_counter()
                    for _ in range(20):
                        verify(headers_for, server, shape)
                    # One at a time, so a low guess of the rate under load: sizes the DPoP proofs.
                    workload.rates[(kind, variant, shape.label)] = 3 * 20 / (time.perf_counter() - t0)
        results = []
        for shape, variants in ((get, get_variants), (post, POST_VARIANTS)):
            runs = alternate(workload, servers, shape, variants, plan.rounds, plan.flank)
            if shape is get:
                for _ in range(plan.rounds):
                    runs += [workload.run(servers[peer], shape) for peer in peers]
            results.append((shape, variants, runs))
        rss = {variant: server.rss_kib() for variant, server in servers.items()}
    out["rss_kib_after_load"] = rss
    for shape, variants, runs in results:
        out["runs"] += [asdict(r) for r in runs]
        method = shape.method
        print(f"\n  {shape.label} ({len(shape.body)} bytes in)" if shape.body else f"\n  {shape.label}")
        print(HEADER)
        sums = {v: summary(runs, v) for v in ("bare", *variants)}
        for variant in ("bare", *variants):
            ratio = ""
            if variant != "bare":
                comp = comparison(kind, shape.label, variant, "bare", bare_ratios(runs, variant))
                out["comparisons"].append(comp)
                ratio = _ratio_text(comp["ratio"])
            size = sizes[variant if method == "GET" else f"POST {variant}"]
            print(
                _row(
                    variant,
                    sums[variant],
                    sums["bare"],
                    ratio,
                    size,
                    rss[variant] if method == "GET" else None,
                )
            )
        if method == "GET":
            for peer in peers:
                sums[peer] = summary(runs, peer)
                comp = comparison(
                    kind,
                    shape.label,
                    peer,
                    PEER_BASE,
                    [sums[PEER_BASE]["rps"] / r.rps for r in runs if r.variant == peer],
                )
                out["comparisons"].append(comp)
                print(
                    _row(peer, sums[peer], sums["bare"], _ratio_text(comp["ratio"]), sizes[peer], rss[peer])
                )
        made = sum(r.proofs for r in runs)
        if made:
            took = sum(r.proof_seconds for r in runs)
            sent = sum(r.requests for r in runs if r.proofs)
            print(f"  DPoP proofs: {made} made in {took:.1f} s ({made / took:.0f}/s) for {sent} requests")
        errors = sum(r.socket_errors for r in runs)
        if errors:
            print(f"  wrk socket errors (connect, read, write, timeout): {errors}")
        out["summary"][shape.label] = sums
    return out


def print_targets(results: dict[str, Any], plan: Plan) -> None:
    print(
        "\ntargets (median over runs of variant / bare, the bare runs next to it; "
        f"peers: {PEER_BASE}'s rate over the peer's)"
    )
    print(f"  {'ratio':<50}{'target':>10}{'value':>10}  status")
    for kind in plan.kinds:
        for c in results[kind]["comparisons"]:
            if c["target"] is None:
                continue
            method = c["shape"].split()[0]
            pair = (
                f"{c['base']} / {c['variant']}"
                if c["variant"].startswith("peer-")
                else f"{c['variant']} / bare"
            )
            status = "met" if c["met"] else "NOT MET"
            print(f"  {kind.upper()} {method} {pair:<41}{'>= ' + _ratio_text(c['target']):>10}"
                  f"{_ratio_text(c['ratio']):>10}  {status}")  # fmt: skip
    for kind in plan.kinds:
        memory = results[kind].get("memory")
        if memory:
            growth = memory["growth_kib"] / 1024
            label = f"{kind.upper()} RSS growth after warm-up, UK spec worker"
            print(f"  {label:<50}{'flat':>10}{growth:>+8.2f} MiB")
    for note in plan.notes:
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 s runs, one round, short memory phases")
    parser.add_argument("--json", type=Path, default=None, help="save every figure to this file")
    parser.add_argument("--kinds", default="asgi,wsgi", help="asgi, wsgi or asgi,wsgi (default)")
    parser.add_argument("--extra", action="store_true", help="also request, mtls, openapi, ratelimit and "
                        "peer-openapi-core-integration (no targets)")  # fmt: skip
    parser.add_argument("--no-memory", action="store_true", help="skip the memory phases")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=None, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        plan = Plan(
            Load(args.connections, args.threads, args.seconds or 1), args.rounds or 1, False, 0, 1, 3, 1
        )
    else:
        plan = Plan(
            Load(args.connections, args.threads, args.seconds or 5), args.rounds or 2, True, 2, 5, 3, 15
        )
    plan.kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not plan.kinds or set(plan.kinds) - {"asgi", "wsgi"}:
        parser.error(f"--kinds: asgi, wsgi or asgi,wsgi, not {args.kinds!r}")
    plan.extra = args.extra
    if not (HERE / "stack.py").exists():
        raise SystemExit("benchmarks/stack.py is missing: it builds the applications this benchmark serves")
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import stack  # benchmarks/stack.py, beside this script

    wrk = ensure_wrk()
    info = machine_info(wrk)
    print_machine(info)
    results: dict[str, Any] = {"machine": info, "plan": asdict(plan)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bankguard-serve-") as tmp:
        work = Path(tmp)
        material = stack.Material.create(work / "material")
        for kind in plan.kinds:
            results[kind] = measure_kind(kind, plan, stack, material, work, wrk)
        if not args.no_memory:
            for kind in plan.kinds:
                results[kind]["memory"] = measure_memory(kind, plan, stack, material, work, wrk)
    print_targets(results, plan)
    results["notes"] = plan.notes
    results["seconds"] = time.perf_counter() - t0
    print(f"\n{results['seconds']:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
