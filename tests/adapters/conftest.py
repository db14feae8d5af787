"""Shared builders for the adapter tests.

* one policy (small caps so limits are cheap to reach) describing a tiny banking API;
* recording raw ASGI / WSGI applications that report whether, and with what, they ran;
* in-process drivers that build an ASGI scope or a WSGI environ by hand, so a test controls
  every byte (raw paths, duplicate header lines, chunked input, odd Content-Length values);
* the same banking API written twice, with Flask and with FastAPI, returning identical JSON.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote, unquote_to_bytes

import pytest
from fastapi import Body, Depends, FastAPI
from flask import Flask, jsonify, request

from bankguard import AuditEvent, EventCollector, Guard, Policy, SecurityContext
from bankguard.integrations import fastapi as bg_fastapi
from bankguard.integrations import flask as bg_flask

MAX_BODY = 1024
MAX_HEADERS = 4096
MAX_FIELD = 1024
MAX_TARGET = 256

PEER = "203.0.113.9"
UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
FIXED_IID = "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
PROBLEM = "application/problem+json"

OPERATIONS: list[dict[str, Any]] = [
    {"method": "GET", "path": "/accounts", "id": "listAccounts", "public": True},
    {"method": "GET", "path": "/accounts/{AccountId}", "id": "getAccount", "public": True},
    {"method": "GET", "path": "/accounts/{AccountId}/balances", "id": "getBalances", "public": True},
    {"method": "POST", "path": "/payments", "id": "createPayment", "public": True},
]


def policy_data(**sections: Any) -> dict[str, Any]:
    """The test policy as plain data; keyword arguments replace or extend sections."""
    data: dict[str, Any] = {
        "request": {
            "max_body_bytes": MAX_BODY,
            "max_header_bytes": MAX_HEADERS,
            "max_header_field_bytes": MAX_FIELD,
            "max_target_bytes": MAX_TARGET,
        },
        "routes": {"operations": OPERATIONS},
    }
    data.update(sections)
    return data


def make_policy(**sections: Any) -> Policy:
    return Policy.from_dict(policy_data(**sections))


def make_guard(policy: Policy | None = None) -> tuple[Guard, EventCollector]:
    events = EventCollector()
    return Guard(policy if policy is not None else make_policy(), sink=events), events


@pytest.fixture
def policy() -> Policy:
    return make_policy()


@pytest.fixture
def events() -> EventCollector:
    return EventCollector()


@pytest.fixture
def guard(policy: Policy, events: EventCollector) -> Guard:
    return Guard(policy, sink=events)


# -- responses -------------------------------------------------------------------------


@dataclass
class Response:
    """What a client would have received. Header names are lower-cased, order kept."""

    status: int
    headers: list[tuple[str, str]]
    #: Body bytes as the application / middleware produced them.
    raw_body: bytes
    #: Body bytes a server would transmit (a server sends no body for HEAD).
    body: bytes
    #: ASGI: body messages the middleware or app pulled from ``receive``.
    received: int = 0
    #: WSGI: the ``exc_info`` argument of the last ``start_response`` call.
    exc_info: Any = None

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self) -> Any:
        return json.loads(self.raw_body)

    @property
    def is_problem(self) -> bool:
        return self.get("content-type") == PROBLEM


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    """A bankguard problem response: status, media type, body status, echoed interaction id."""
    assert response.status == status, (response.status, response.raw_body)
    assert response.get("content-type") == PROBLEM
    assert response.get("cache-control") == "no-store"
    assert response.get("x-content-type-options") == "nosniff"
    document: dict[str, Any] = response.json()
    assert document["status"] == status
    assert document["interaction_id"] == response.get("x-fapi-interaction-id")
    assert set(document) == {"type", "title", "status", "detail", "interaction_id"}
    assert response.get("content-length") == str(len(response.raw_body))
    return document


def last_event(events: EventCollector) -> AuditEvent:
    assert events.events, "no audit event was written"
    return events.events[-1]


# -- recording applications ----------------------------------------------------------------


@dataclass
class ASGICall:
    scope: dict[str, Any]
    body: bytes
    messages: list[dict[str, Any]]


class RecordingASGIApp:
    """Reads the whole body, records the call, answers ``status`` with ``headers``."""

    def __init__(
        self,
        *,
        status: int = 200,
        headers: Sequence[tuple[str, str]] = (("content-type", "application/json"),),
        body: bytes = b'{"ok":true}',
    ) -> None:
        self.status = status
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        self.body = body
        self.calls: list[ASGICall] = []
        self.lifespan: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        messages = []
        chunks = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.calls.append(ASGICall(scope=scope, body=b"".join(chunks), messages=messages))
        await send({"type": "http.response.start", "status": self.status, "headers": list(self.headers)})
        await send({"type": "http.response.body", "body": self.body})


def read_declared(environ: dict[str, Any]) -> bytes:
    """Read the body the PEP 3333 way: CONTENT_LENGTH bytes, or to EOF for terminated input."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        data: bytes = stream.read(int(length))
        return data
    if environ.get("wsgi.input_terminated"):
        rest: bytes = stream.read()
        return rest
    return b""


@dataclass
class WSGICall:
    environ: dict[str, Any]
    body: bytes


class RecordingWSGIApp:
    """Reads the body with ``reader``, records the call, answers ``status`` with ``headers``."""

    def __init__(
        self,
        *,
        status: str = "200 OK",
        headers: Sequence[tuple[str, str]] = (("Content-Type", "application/json"),),
        body: bytes = b'{"ok":true}',
        reader: Callable[[dict[str, Any]], bytes] = read_declared,
    ) -> None:
        self.status = status
        self.headers = list(headers)
        self.body = body
        self.reader = reader
        self.calls: list[WSGICall] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = self.reader(environ)
        self.calls.append(WSGICall(environ=environ, body=body))
        start_response(self.status, list(self.headers))
        return [self.body]


# -- drivers ---------------------------------------------------------------------------


def split_target(target: str) -> tuple[str, str]:
    raw_path, _, query = target.partition("?")
    return raw_path, query


def asgi_scope(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    *,
    http_version: str = "1.1",
) -> dict[str, Any]:
    """An HTTP scope as uvicorn builds it: ``path`` is the percent-decoded ``raw_path``."""
    raw_path, query = split_target(target)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": http_version,
        "method": method,
        "scheme": "https",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": (PEER, 40000),
        "server": ("bank.example", 443),
        "state": {},
    }


def _with_framing(
    headers: Sequence[tuple[str, str]], body: bytes, chunks: Sequence[bytes] | None, http_version: str
) -> list[tuple[str, str]]:
    out = list(headers)
    names = {k.lower() for k, _ in out}
    if "content-length" in names or "transfer-encoding" in names:
        return out
    if chunks is not None:
        if http_version.startswith("1"):
            out.append(("transfer-encoding", "chunked"))
    elif body:
        out.append(("content-length", str(len(body))))
    return out


async def _drive_asgi(app: Any, scope: dict[str, Any], messages: list[dict[str, Any]]) -> Response:
    pending = list(messages)
    sent: list[dict[str, Any]] = []
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        if pending:
            received += 1
            return pending.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = [m for m in sent if m["type"] == "http.response.start"]
    assert len(start) == 1, sent
    raw_body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in start[0]["headers"]]
    return Response(
        status=start[0]["status"],
        headers=headers,
        raw_body=raw_body,
        body=b"" if scope["method"] == "HEAD" else raw_body,
        received=received,
    )


def asgi_request(
    app: Any,
    method: str = "GET",
    target: str = "/accounts",
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    chunks: Sequence[bytes] | None = None,
    http_version: str = "1.1",
    framing: bool = True,
) -> Response:
    """Run one request through an ASGI app in-process.

    ``body`` arrives as one ``http.request`` message with a Content-Length; ``chunks`` as
    several messages (``more_body=True`` until the last) with ``Transfer-Encoding: chunked``
    under HTTP/1.1. ``framing=False`` adds neither header.
    """
    if framing:
        headers = _with_framing(headers, body, chunks, http_version)
    parts = list(chunks) if chunks is not None else [body]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    scope = asgi_scope(method, target, headers, http_version=http_version)
    return asyncio.run(_drive_asgi(app, scope, messages))


def asgi_send_scope(app: Any, scope: dict[str, Any], messages: Sequence[dict[str, Any]]) -> list[Any]:
    """Run any scope; return every message the app sent."""
    pending = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def wsgi_environ(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    *,
    body: bytes = b"",
    chunked: bool = False,
    raw_uri: bool = True,
    separator: str = ", ",
) -> dict[str, Any]:
    """An environ as a PEP 3333 server builds it.

    Repeated header lines are merged into one value joined by ``separator`` (werkzeug and
    wsgiref use ``", "`` / ``","``), names become ``HTTP_*``; ``PATH_INFO`` is the
    percent-decoded path as latin-1 text; ``RAW_URI`` / ``REQUEST_URI`` hold the raw target.
    A chunked body has no CONTENT_LENGTH and sets ``wsgi.input_terminated``.
    """
    raw_path, query = split_target(target)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": "bank.example",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": PEER,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if raw_uri:
        environ["RAW_URI"] = environ["REQUEST_URI"] = target
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        merged.setdefault(key, []).append(value)
    for key, values in merged.items():
        environ[key] = separator.join(values)
    if chunked:
        environ["wsgi.input_terminated"] = True
    elif body and "CONTENT_LENGTH" not in environ:
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ


def wsgi_call(app: Any, environ: dict[str, Any]) -> Response:
    """Call a WSGI app with ``environ`` like a server would (start_response, write, close)."""
    state: dict[str, Any] = {}
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        state["status"] = status
        state["headers"] = list(headers)
        state["exc_info"] = exc_info
        return written.append

    result = app(environ, start_response)
    try:
        chunks = list(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    raw_body = b"".join(written) + b"".join(chunks)
    return Response(
        status=int(state["status"].split(" ", 1)[0]),
        headers=[(k.lower(), v) for k, v in state["headers"]],
        raw_body=raw_body,
        body=b"" if environ["REQUEST_METHOD"] == "HEAD" else raw_body,
        exc_info=state["exc_info"],
    )


def wsgi_request(
    app: Any,
    method: str = "GET",
    target: str = "/accounts",
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    chunked: bool = False,
    raw_uri: bool = True,
    separator: str = ", ",
) -> Response:
    environ = wsgi_environ(
        method, target, headers, body=body, chunked=chunked, raw_uri=raw_uri, separator=separator
    )
    return wsgi_call(app, environ)


# -- the same banking API, twice ----------------------------------------------------------

ACCOUNTS = {
    "acc-001": {"AccountId": "acc-001", "Currency": "GBP", "Nickname": "Bills"},
    "acc-002": {"AccountId": "acc-002", "Currency": "EUR", "Nickname": "Savings"},
}


def _about(ctx: SecurityContext) -> dict[str, Any]:
    return {
        "operation": ctx.operation.id if ctx.operation else None,
        "params": dict(ctx.path_params),
        "interaction_id": ctx.interaction_id,
        "authenticated": ctx.principal.authenticated,
    }


def accounts_document(ctx: SecurityContext) -> dict[str, Any]:
    return {"Data": {"Account": list(ACCOUNTS.values())}, **_about(ctx)}


def account_document(account_id: str, ctx: SecurityContext) -> dict[str, Any]:
    account = ACCOUNTS.get(account_id, {"AccountId": account_id, "Currency": None, "Nickname": None})
    return {"Data": {"Account": [account]}, **_about(ctx)}


def balances_document(account_id: str, ctx: SecurityContext) -> dict[str, Any]:
    return {"Data": {"Balance": [{"AccountId": account_id, "Amount": "10.00"}]}, **_about(ctx)}


def payment_document(payment: dict[str, Any], ctx: SecurityContext) -> dict[str, Any]:
    return {"Data": {"PaymentId": "pmt-1", "Initiation": payment}, **_about(ctx)}


def build_flask_bank(calls: list[str] | None = None) -> Flask:
    """The banking API in Flask (not yet protected)."""
    app = Flask("bank")
    seen = calls if calls is not None else []

    @app.get("/accounts")
    def list_accounts() -> Any:
        seen.append("list_accounts")
        return jsonify(accounts_document(bg_flask.current_context()))

    @app.get("/accounts/<account_id>")
    def get_account(account_id: str) -> Any:
        seen.append("get_account")
        return jsonify(account_document(account_id, bg_flask.current_context()))

    @app.get("/accounts/<account_id>/balances")
    def get_balances(account_id: str) -> Any:
        seen.append("get_balances")
        return jsonify(balances_document(account_id, bg_flask.current_context()))

    @app.post("/payments")
    def create_payment() -> Any:
        seen.append("create_payment")
        return jsonify(payment_document(request.get_json(), bg_flask.current_context())), 201

    return app


Context = Annotated[SecurityContext, Depends(bg_fastapi.security_context)]


def build_fastapi_bank(calls: list[str] | None = None) -> FastAPI:
    """The same banking API in FastAPI (not yet protected). GET routes also answer HEAD, as in Flask."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    seen = calls if calls is not None else []

    @app.api_route("/accounts", methods=["GET", "HEAD"])
    async def list_accounts(ctx: Context) -> dict[str, Any]:
        seen.append("list_accounts")
        return accounts_document(ctx)

    @app.api_route("/accounts/{account_id}", methods=["GET", "HEAD"])
    async def get_account(account_id: str, ctx: Context) -> dict[str, Any]:
        seen.append("get_account")
        return account_document(account_id, ctx)

    @app.api_route("/accounts/{account_id}/balances", methods=["GET", "HEAD"])
    async def get_balances(account_id: str, ctx: Context) -> dict[str, Any]:
        seen.append("get_balances")
        return balances_document(account_id, ctx)

    @app.post("/payments", status_code=201)
    async def create_payment(payment: Annotated[dict[str, Any], Body()], ctx: Context) -> dict[str, Any]:
        seen.append("create_payment")
        return payment_document(payment, ctx)

    return app
