"""Real dependencies that misbehave on demand, and real applications protected by bankguard.

* :class:`FaultServer`: a threaded HTTP server on 127.0.0.1 standing in for an authorization
  server's JWK Set or introspection endpoint, or a CA's CRL distribution point. A test sets
  what it answers (:class:`Answer`): a document, garbage, an error status, a late answer, a body
  above the size cap, or a body dripping one byte at a time. ``stop()`` closes the port
  (connection refused); ``start()`` listens again on the same port.
* :class:`SilentServer`: accepts TCP connections and never answers (a hung Redis).
* :class:`RedisProcess`: a private ``redis-server`` without persistence, which a test stops
  (SIGTERM or SIGKILL) and starts again on the same port.
* :func:`make_policy` and the ``serve`` fixture: a one-operation API (``GET /accounts``, scope
  ``accounts``) written with Starlette and with Flask, protected with ``protect()`` (or, when a
  test injects a clock, with the adapters and the integrations' resolvers), called in process
  through Starlette's ``TestClient`` and Flask's test client. Audit events go to an
  :class:`~bankguard.testing.EventCollector` named in the policy.
* Assertions on the problem documents and challenges of docs/errors.md.

Every server, process, guard and client made here is stopped by its fixture; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bankguard import BankGuardMiddleware, BankGuardWSGI, Guard, Policy, guard_of, protect
from bankguard.context import get_principal
from bankguard.integrations import flask as bg_flask
from bankguard.integrations import starlette as bg_starlette
from bankguard.testing import EventCollector

HOST = "127.0.0.1"
ORIGIN = "https://api.bank.example"
ACCOUNTS = f"{ORIGIN}/accounts"
PEER = "10.1.2.3"  # the client address the apps see; a trusted proxy in the mTLS policies
PROBLEM = "application/problem+json"
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "interaction_id"}
TYPE_BASE = "https://bankguard.dev/problems/"
WAIT = 5.0  # upper bound of every wait for a background thread or a process
#: Bound on the answer to any single request: a guard against a hang, not a measurement.
PATIENCE = 10.0

OPERATIONS = [{"id": "GetAccounts", "method": "GET", "path": "/accounts", "scopes": ["accounts"]}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def until(condition: Callable[[], bool], timeout: float = WAIT, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# -- HTTP dependencies ---------------------------------------------------------------------------


@dataclass
class Answer:
    """What a :class:`FaultServer` answers to every request.

    ``delay``: seconds before the status line (the server waits, then answers). ``drip``: no
    ``Content-Length``; the body is ``body`` followed by one space every ``drip_interval`` seconds
    for at most ``drip`` seconds, then the connection is closed.
    """

    body: bytes = b"{}"
    status: int = 200
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    drip: float = 0.0
    drip_interval: float = 0.02

    @classmethod
    def json(cls, document: Any, **kw: Any) -> Answer:
        return cls(json.dumps(document).encode(), **kw)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FaultServer:
    """An HTTP/1.1 server on 127.0.0.1 whose answer a test sets; records every request."""

    def __init__(self, answer: Answer | None = None, *, running: bool = True) -> None:
        self.answer = answer or Answer()
        self.port = free_port()
        self.requests: list[Seen] = []
        #: For dripping answers: True when the client hung up before the drip ended.
        self.drips: list[bool] = []
        self._lock = threading.Lock()
        self._release = threading.Event()  # ends delays and drips at once (stop, teardown)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if running:
            self.start()

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> None:
        outer = self
        self._release.clear()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with outer._lock:
                    outer.requests.append(
                        Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    answer = outer.answer
                if answer.delay and outer._release.wait(answer.delay):
                    return  # released: the server is stopping
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.content_type)
                    for name, value in answer.headers:
                        self.send_header(name, value)
                    if answer.drip:
                        self.send_header("Connection", "close")
                        self.end_headers()
                        self.wfile.write(answer.body)
                        outer._drip(self, answer)
                        return
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:  # the client gave up (size cap, time limit)
                    pass

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer((HOST, self.port), Handler)
        httpd.daemon_threads = True
        httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def _drip(self, handler: BaseHTTPRequestHandler, answer: Answer) -> None:
        end = time.monotonic() + answer.drip
        abandoned = False
        while time.monotonic() < end and not self._release.is_set():
            try:
                handler.wfile.write(b" ")
                handler.wfile.flush()
            except OSError:
                abandoned = True
                break
            time.sleep(answer.drip_interval)
        handler.close_connection = True
        with self._lock:
            self.drips.append(abandoned)

    def stop(self) -> None:
        """Close the port: connections are refused until :meth:`start`."""
        self._release.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(WAIT)
            self._thread = None


@pytest.fixture
def http_servers() -> Iterator[Callable[..., FaultServer]]:
    made: list[FaultServer] = []

    def make(answer: Answer | None = None, *, running: bool = True) -> FaultServer:
        server = FaultServer(answer, running=running)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never reads or writes: a peer that hangs."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind((HOST, 0))
        self._sock.listen(128)
        self._sock.settimeout(0.05)
        self.port = int(self._sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        for conn in self.accepted:
            conn.close()
        self._sock.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


# -- Redis -------------------------------------------------------------------------------------


class RedisProcess:
    """A private ``redis-server`` on 127.0.0.1 without persistence, on one port for its whole life."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH (Debian/Ubuntu: apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        argv = [
            self.binary,
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
        log = (self.directory / f"redis-{self.starts}.log").open("wb")
        with log:
            self.proc = subprocess.Popen(  # noqa: S603 - a fixed argv: the redis-server binary on PATH
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if not until(self.answers, timeout=WAIT):
            self.stop(signal.SIGKILL)
            pytest.fail(f"redis-server did not answer on port {self.port} within {WAIT} s", pytrace=False)

    def answers(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server and wait until it has exited (SIGKILL after a bounded wait)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop(signal.SIGKILL)


# -- the protected application -----------------------------------------------------------------


def make_policy(events: EventCollector, **sections: Any) -> Policy:
    """``GET /accounts`` needing scope ``accounts``, audited into ``events``, plus ``sections``."""
    data: dict[str, Any] = {
        "external_origins": [ORIGIN],
        "routes": {"operations": OPERATIONS},
        "audit": {"sink": events},
    }
    data.update(sections)
    return Policy.from_dict(data)


def _principal_document(principal: Any) -> dict[str, Any]:
    return {"subject": principal.subject, "client_id": principal.client_id, "binding": principal.binding}


def starlette_app() -> Starlette:
    async def accounts(request: Request) -> JSONResponse:
        return JSONResponse(_principal_document(get_principal(request.scope)))

    return Starlette(routes=[Route("/accounts", accounts)])


def flask_app() -> Flask:
    app = Flask("faults")

    @app.get("/accounts")
    def accounts() -> Any:
        return jsonify(_principal_document(bg_flask.current_principal()))

    return app


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    interaction_id: str

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        return f"{self.status} {self.headers} {self.body[:300]!r}"


@dataclass
class Served:
    """A protected application and a thread-safe way to call ``GET /accounts`` on it."""

    kind: str
    app: Any
    guard: Guard
    peer: str = PEER
    #: Requests sent so far (each one must have exactly one audit event).
    sent: int = 0
    _asgi: TestClient | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def open(self) -> None:
        if self.kind == "asgi":
            # One client for the whole test: one event loop, so the async store face keeps its
            # connections between requests, as under a real ASGI server.
            client = TestClient(
                self.app, base_url=ORIGIN, client=(self.peer, 50000), raise_server_exceptions=False
            )
            self._asgi = client.__enter__()

    def get(self, headers: dict[str, str] | None = None, path: str = "/accounts") -> Reply:
        iid = str(uuid.uuid4())
        with self._lock:
            self.sent += 1
        sent = {"x-fapi-interaction-id": iid, **(headers or {})}
        if self.kind == "asgi":
            assert self._asgi is not None
            r = self._asgi.get(path, headers=sent)
            return Reply(r.status_code, [(k.lower(), v) for k, v in r.headers.multi_items()], r.content, iid)
        w = self.app.test_client().get(
            path, headers=sent, base_url=ORIGIN, environ_base={"REMOTE_ADDR": self.peer}
        )
        return Reply(w.status_code, [(k.lower(), v) for k, v in w.headers.items()], w.data, iid)

    def close(self) -> None:
        if self._asgi is not None:
            self._asgi.__exit__(None, None, None)
            self._asgi = None
        self.guard.close()


def build(kind: str, policy: Policy, *, clock: Callable[[], float] | None = None) -> Served:
    """Protect the Starlette (``asgi``) or Flask (``wsgi``) application with ``policy``.

    Without a clock: ``protect()``. With one: a :class:`Guard` on that clock, wrapped with the
    adapters and the integration's resolver and error handler, as tokens.md shows.
    """
    if kind == "asgi":
        app: Any = starlette_app()
        if clock is None:
            app = protect(app, policy)
            guard = guard_of(app)
        else:
            guard = Guard(policy, clock=clock)
            bg_starlette.install_error_handler(app)
            app = BankGuardMiddleware(app, guard=guard, resolver=bg_starlette.scope_resolver(app))
    else:
        app = flask_app()
        if clock is None:
            app = protect(app, policy)
            guard = guard_of(app)
        else:
            guard = Guard(policy, clock=clock)
            bg_flask.install_error_handler(app)
            app.wsgi_app = BankGuardWSGI(app.wsgi_app, guard=guard, resolver=bg_flask.scope_resolver(app))
    served = Served(kind, app, guard)
    served.open()
    return served


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def events() -> EventCollector:
    return EventCollector()


@pytest.fixture
def serve(kind: str) -> Iterator[Callable[..., Served]]:
    """Builds protected applications of the test's kind; closes their clients and guards."""
    made: list[Served] = []

    def make(
        policy: Policy, *, clock: Callable[[], float] | None = None, app_kind: str | None = None
    ) -> Served:
        served = build(app_kind or kind, policy, clock=clock)
        made.append(served)
        return served

    yield make
    for served in made:
        served.close()


# -- assertions --------------------------------------------------------------------------------


def assert_problem(reply: Reply, status: int, slug: str) -> dict[str, Any]:
    """A bankguard problem response (docs/errors.md, "Body format" and "Headers")."""
    assert reply.status == status, reply.describe()
    assert reply.get("content-type") == PROBLEM, reply.describe()
    assert reply.get("cache-control") == "no-store", reply.describe()
    assert reply.get("x-content-type-options") == "nosniff", reply.describe()
    assert reply.get("x-fapi-interaction-id") == reply.interaction_id, reply.describe()
    document: dict[str, Any] = reply.json()
    assert set(document) == PROBLEM_MEMBERS, document
    assert document["type"] == TYPE_BASE + slug, document
    assert document["status"] == status
    assert document["interaction_id"] == reply.interaction_id
    return document


def assert_invalid_token(reply: Reply) -> None:
    """401 ``invalid-token`` with the Bearer challenge carrying the error (E2)."""
    assert_problem(reply, 401, "invalid-token")
    assert reply.get_all("www-authenticate") == [
        'Bearer realm="api", error="invalid_token", '
        'error_description="The access token is invalid, expired, revoked or not bound to this client."'
    ], reply.describe()


def assert_unavailable(reply: Reply, slug: str, retry_after: int) -> None:
    """503 without a challenge: the client should retry, not re-authenticate."""
    assert_problem(reply, 503, slug)
    assert reply.get("retry-after") == str(retry_after), reply.describe()
    assert reply.get_all("www-authenticate") == [], reply.describe()


def assert_allowed(reply: Reply, *, binding: str | None = None) -> None:
    assert reply.status == 200, reply.describe()
    assert reply.get("x-fapi-interaction-id") == reply.interaction_id
    assert reply.json() == {"subject": "psu-1", "client_id": "tpp-client-1", "binding": binding}


def event_of(events: EventCollector, reply: Reply) -> Any:
    """The one decision event of the request ``reply`` answers."""
    found = events.for_interaction(reply.interaction_id)
    assert len(found) == 1, (reply.describe(), found)
    return found[0]


def assert_denied_event(events: EventCollector, reply: Reply, control: str, reason: str) -> None:
    event = event_of(events, reply)
    assert (event.outcome, event.status, event.control, event.reason) == (
        "deny",
        reply.status,
        control,
        reason,
    ), event


def assert_allowed_event(events: EventCollector, reply: Reply, notes: tuple[str, ...] = ()) -> None:
    event = event_of(events, reply)
    assert (event.outcome, event.reason, event.notes) == ("allow", None, notes), event


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """Keep a figure of the test (a recovery time, counts of answers) in its ``user_properties``:
    ``pytest tests/faults -o junit_family=xunit1 --junitxml=faults.xml`` writes them out."""

    def keep(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))

    return keep


def alternating(cases: list[Any]) -> list[Any]:
    """Spread variants of one fault over both application kinds (ASGI, WSGI, ASGI, ...): the fetch
    under test is the same for both, so each variant runs once. Use with
    ``@pytest.mark.parametrize(("kind", ...), alternating([...]))``."""
    kinds = ("asgi", "wsgi")
    return [
        pytest.param(kinds[i % 2], *case.values, id=f"{kinds[i % 2]}-{case.id}")
        for i, case in enumerate(cases)
    ]
