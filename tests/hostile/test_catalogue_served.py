"""The served subset of the hostile-input catalogue, as raw bytes over real sockets: the Starlette
application under uvicorn (h11) and the Flask application under gunicorn, each started on a random
port of 127.0.0.1 for this module and stopped at its end.

The servers' own parsers are part of the test here: a request a server refuses itself is expected
as such in the table (``server_refused``: its own 400, no problem document, no audit event). The
audit events are read back from a file each server appends to (``served_apps.write_event``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .catalogue import SERVED_CASES, Case
from .support import (
    PROBLEM,
    catalogue_policy,
    check_event,
    check_handled,
    check_no_server_error,
    check_refusal,
    ids,
    rendered,
)
from .wire import send_raw

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds for a server to accept connections
STOP_TIMEOUT = 5.0  # seconds for a server to exit after SIGTERM (then SIGKILL)
SERVERS = ("uvicorn", "gunicorn")


@dataclass
class Served:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    audit: Path
    log: Path

    def events_since(self, offset: int) -> list[dict[str, Any]]:
        with self.audit.open("rb") as source:
            source.seek(offset)
            return [json.loads(line) for line in source.read().splitlines() if line.strip()]

    def report(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT)


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _version(distribution: str) -> tuple[int, ...]:
    parts = importlib.metadata.version(distribution).split(".")[:2]
    return tuple(int("".join(itertools.takewhile(str.isdigit, p)) or 0) for p in parts)


def _argv(name: str, port: int) -> list[str]:
    if name == "uvicorn":
        # h11, as the catalogue's in-process ASGI rows assume; no proxy headers (bankguard reads them).
        return [
            *(sys.executable, "-m", "uvicorn", "tests.hostile.served_apps:asgi_app"),
            *("--host", HOST, "--port", str(port), "--http", "h11", "--no-proxy-headers"),
            *("--log-level", "warning", "--no-access-log"),
        ]
    argv = [
        *(sys.executable, "-m", "gunicorn", "-b", f"{HOST}:{port}", "-w", "1"),
        *("--graceful-timeout", "3", "tests.hostile.served_apps:wsgi_app"),
    ]
    if _version("gunicorn") >= (25, 1):
        argv[-1:-1] = ["--no-control-socket"]  # else it opens ~/.gunicorn/gunicorn.ctl
    return argv


def _wait_accepting(server: Served) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(
                f"{server.name} exited with {server.proc.returncode}:\n{server.report()}", pytrace=False
            )
        try:
            socket.create_connection((HOST, server.port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(
        f"{server.name} did not listen within {START_TIMEOUT:.0f} s:\n{server.report()}", pytrace=False
    )


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    directory = tmp_path_factory.mktemp("hostile-served")
    policy = catalogue_policy()
    # Several served rows write with the same token; the in-process rows test the limit of 5.
    policy["ratelimit"]["operations"] = {"CreateItem": "100/minute"}
    (directory / "policy.json").write_text(json.dumps(policy))
    started: dict[str, Served] = {}
    try:
        for name, port in zip(SERVERS, _free_ports(len(SERVERS)), strict=True):
            audit, log = directory / f"{name}-audit.jsonl", directory / f"{name}.log"
            audit.touch()
            env = dict(os.environ, HOSTILE_POLICY=str(directory / "policy.json"), HOSTILE_AUDIT=str(audit))
            env.pop("WEB_CONCURRENCY", None)
            with log.open("wb") as out:
                proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter's uvicorn / gunicorn
                    _argv(name, port),
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started[name] = Served(name, proc, port, audit, log)
        for server in started.values():
            _wait_accepting(server)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("case", SERVED_CASES, ids=ids(SERVED_CASES))
def test_hostile_request_over_a_socket(case: Case, server_name: str, servers: dict[str, Served]) -> None:
    server = servers[server_name]
    assert case.repeat == 1
    expect = case.expected_served(server_name)
    offset = server.audit.stat().st_size
    request = rendered(case)
    outcome = send_raw(server.port, request.to_bytes(), half_close=case.half_close)
    check_no_server_error(outcome)
    events = server.events_since(offset)
    if expect.kind == "closed":
        assert outcome.status is None, (outcome.status, outcome.body[:300])
        assert events == []
        return
    if expect.kind == "server":
        assert outcome.status == expect.status, (outcome.status, outcome.body[:300])
        assert outcome.get("content-type") != PROBLEM
        assert outcome.get("x-fapi-interaction-id") is None
        assert events == [], "the server refused the request, bankguard never saw it"
        return
    if expect.kind == "guard":
        check_refusal(expect, outcome, request)
    else:
        check_handled(expect, outcome, request)
    assert len(events) == 1, (events, server.report())
    check_event(expect, events[0], outcome)
