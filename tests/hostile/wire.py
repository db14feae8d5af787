"""Raw requests, and the three ways the catalogue delivers them.

A :class:`RawRequest` is the request as bytes: request line, header field lines (names and
values as sent, in order, repeats kept), body and framing. It is delivered

* to the ASGI application in-process, as uvicorn (h11) would present it (:func:`asgi_call`):
  header names lower-cased, each field line kept, ``raw_path`` the target up to ``?``, ``path``
  its percent-decoding (UTF-8, invalid sequences replaced), the body cut as the framing says;
* to the WSGI application in-process, as gunicorn would present it (:func:`wsgi_call`):
  ``PATH_INFO`` the percent-decoded path of the target as latin-1 text (the path part of an
  absolute-form target), ``RAW_URI`` the target, repeated field lines joined with ``,``,
  ``wsgi.input_terminated`` set. Unlike gunicorn, nothing is refused or dropped here (header
  names with ``_`` are kept, as the Werkzeug development server and wsgiref keep them), so that
  bankguard itself meets what a more lenient server would pass on;
* over a real socket to a server on 127.0.0.1 (:func:`send_raw`), so that the server's own
  parser is part of the test.

Placeholders in header values (``{read}``, ``{admin}``, ``{write}``, ``{bound}``, ``{proof}``) are
replaced by access tokens and DPoP proofs minted when the request is sent (:func:`render`).
"""

from __future__ import annotations

import asyncio
import io
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

CRLF = b"\r\n"


@dataclass(frozen=True)
class RawRequest:
    method: bytes = b"GET"
    target: bytes = b"/public/status"
    version: bytes = b"HTTP/1.1"
    #: Field lines as sent: (name, value), repeats and case kept.
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    #: ``auto``: a Content-Length for a non-empty body unless the case sends its own framing
    #: headers; ``chunked``: ``Transfer-Encoding: chunked`` and ``chunks`` as the body; ``none``:
    #: exactly the headers given.
    framing: str = "auto"
    chunks: tuple[bytes, ...] = ()

    def field_lines(self) -> list[tuple[bytes, bytes]]:
        lines = list(self.headers)
        names = {name.lower() for name, _ in lines}
        if self.framing == "chunked" and b"transfer-encoding" not in names:
            lines.append((b"Transfer-Encoding", b"chunked"))
        elif self.framing == "auto" and self.body and not names & {b"content-length", b"transfer-encoding"}:
            lines.append((b"Content-Length", str(len(self.body)).encode()))
        return lines

    def encoded_body(self) -> bytes:
        if self.framing != "chunked":
            return self.body
        out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in self.chunks if c)
        return out + b"0\r\n\r\n"

    def to_bytes(self) -> bytes:
        """The request as a client writes it on the connection."""
        head = [self.method + b" " + self.target + b" " + self.version]
        head += [name + b": " + value for name, value in self.field_lines()]
        return CRLF.join(head) + CRLF + CRLF + self.encoded_body()

    def path_bytes(self) -> bytes:
        """The path of the target as sent (no query), for a DPoP proof's ``htu``."""
        return self.target.split(b"?", 1)[0]


@dataclass
class Outcome:
    """What came back. ``status`` None: no response at all (the connection just closed)."""

    status: int | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


# -- placeholders ----------------------------------------------------------------------------


def render(request: RawRequest, values: Callable[[str, RawRequest], bytes]) -> RawRequest:
    """Replace each ``{name}`` placeholder in header values by ``values(name, request)``."""
    out = []
    for name, value in request.headers:
        while b"{" in value and b"}" in value:
            start = value.index(b"{")
            end = value.index(b"}", start)
            key = value[start + 1 : end].decode("ascii")
            value = value[:start] + values(key, request) + value[end + 1 :]
        out.append((name, value))
    return replace(request, headers=tuple(out))


# -- what a server makes of it -------------------------------------------------------------------


def _content_length(request: RawRequest) -> int | None:
    """The one valid Content-Length the request declares, else None."""
    values = [v.strip() for k, v in request.field_lines() if k.lower() == b"content-length"]
    if not values or len(set(values)) != 1 or not values[0].isdigit():
        return None
    return int(values[0])


def delivered_body(request: RawRequest) -> tuple[list[bytes], bool]:
    """The body parts a server hands on, and whether the client went away before the end."""
    if request.framing == "chunked":
        return [c for c in request.chunks if c] or [b""], False
    length = _content_length(request)
    if length is None:
        return [request.body], False
    if len(request.body) < length:
        return [request.body], True  # the client promised more and closed the connection
    return [request.body[:length]], False


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(path, query) of a request target, the path of an absolute-form target included."""
    text = target.decode("latin-1")
    if text.startswith("//"):
        parts = urlsplit("." + text)
        path = parts.path[1:]
    else:
        parts = urlsplit(text)
        path = parts.path
    return path.encode("latin-1"), parts.query.encode("latin-1")


# -- ASGI, in-process ---------------------------------------------------------------------------------

ASGI_PEER = ("203.0.113.9", 40000)


def asgi_scope(request: RawRequest) -> dict[str, Any]:
    """The HTTP scope uvicorn builds (h11 implementation), without its refusals."""
    raw_path, _, query = request.target.partition(b"?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.version.decode("latin-1").removeprefix("HTTP/"),
        "server": ("127.0.0.1", 8000),
        "client": ASGI_PEER,
        "scheme": "http",
        "method": request.method.decode("latin-1"),
        "root_path": "",
        "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
        "raw_path": raw_path,
        "query_string": query,
        "headers": [(k.lower(), v) for k, v in request.field_lines()],
        "state": {},
    }


def asgi_call(app: Any, request: RawRequest) -> Outcome:
    """Run one request through an ASGI application."""
    parts, cut_short = delivered_body(request)
    pending = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)
    ]
    if cut_short:
        pending[-1]["more_body"] = True
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(asgi_scope(request), receive, send))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) <= 1, sent
    if not starts:
        return Outcome(status=None)
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in starts[0]["headers"]]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Outcome(status=starts[0]["status"], headers=headers, body=body)


# -- WSGI, in-process ------------------------------------------------------------------------------------

WSGI_PEER = "203.0.113.9"


def wsgi_environ(request: RawRequest) -> dict[str, Any]:
    """The environ gunicorn builds, without its refusals; repeated fields joined with ``,``."""
    path, query = split_target(request.target)
    parts, _ = delivered_body(request)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("latin-1"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "RAW_URI": request.target.decode("latin-1"),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": request.version.decode("latin-1"),
        "REMOTE_ADDR": WSGI_PEER,
        "REMOTE_PORT": "40000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b"".join(parts)),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.field_lines():
        text = name.decode("latin-1").upper().replace("-", "_")
        key = text if text in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + text
        decoded = value.decode("latin-1")
        environ[key] = environ[key] + "," + decoded if key in environ else decoded
    return environ


def wsgi_call(app: Any, request: RawRequest) -> Outcome:
    """Run one request through a WSGI application as a server would (start_response, close)."""
    state: dict[str, Any] = {}
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        state["status"] = status
        state["headers"] = headers
        return written.append

    result = app(wsgi_environ(request), start_response)
    try:
        chunks = list(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Outcome(
        status=int(state["status"].split(" ", 1)[0]),
        headers=[(k.lower(), v) for k, v in state["headers"]],
        body=b"".join(written) + b"".join(chunks),
    )


# -- a real socket -------------------------------------------------------------------------------------

SOCKET_TIMEOUT = 5.0


def _read_response(sock: socket.socket, deadline: float) -> Outcome:
    buffer = b""

    def more() -> bool:
        nonlocal buffer
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return False
        buffer += data
        return bool(data)

    while b"\r\n\r\n" not in buffer:
        if not more():
            if not buffer:
                return Outcome(status=None)
            raise AssertionError(f"incomplete response head: {buffer[:200]!r}")
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1").strip().lower(), value.decode("latin-1").strip()))
    outcome = Outcome(status=status, headers=headers)
    buffer = rest
    length = outcome.get("content-length")
    if length is not None:
        while len(buffer) < int(length) and more():
            pass
        outcome.body = buffer[: int(length)]
    elif (outcome.get("transfer-encoding") or "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buffer and more():
                pass
            size_line, _, buffer = buffer.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buffer) < size + 2 and more():
                pass
            body += buffer[:size]
            buffer = buffer[size + 2 :]
            if size == 0:
                break
        outcome.body = body
    else:
        while more():
            pass
        outcome.body = buffer
    return outcome


def send_raw(port: int, data: bytes, *, half_close: bool = False) -> Outcome:
    """Send ``data`` to 127.0.0.1:``port`` on a fresh connection and read one response.

    ``half_close``: shut the sending side after the data (the client says it will send no more)."""
    deadline = time.monotonic() + SOCKET_TIMEOUT
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return _read_response(sock, deadline)
