"""WSGI middleware: every request goes through the guard before the app.

Trust model: the peer address is ``REMOTE_ADDR``; ``X-Forwarded-For`` is believed only
when that peer is in ``trusted_proxies``. WSGI servers merge repeated header lines
into one comma-separated value and turn ``-`` into ``_`` in names, so a client can
send ``X_Foo`` where a proxy only sanitises ``X-Foo``; controls that read
proxy-set headers account for that.

The body is read before the decision, bounded by ``request.max_body_bytes`` (also for
chunked bodies, ``wsgi.input_terminated``); the bytes read are replayed to the
application through ``wsgi.input``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from types import TracebackType
from typing import Any

from ..context import serving
from ..decision import CONTEXT_KEY, Decision
from ..errors import Denied
from ..guard import Guard
from ..policy import Policy
from ..problem import ProblemResponse
from ..request import Headers, RequestFacts, parse_content_length
from ..scopes import ScopeRequirement, requirement_of

log = logging.getLogger("bankguard")

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def _headers(environ: Environ) -> Headers:
    items = []
    for key, value in environ.items():
        if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
            continue  # only a client's "Content_Type" spelling lands here; the real ones are CONTENT_*
        if key.startswith("HTTP_"):
            items.append((key[5:].replace("_", "-").lower(), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value != "":
            items.append((key.replace("_", "-").lower(), value))
    return Headers(items)


def _read_upto(stream: Any, n: int) -> bytes:
    """Read ``n`` bytes, or up to end of input; servers may return short reads."""
    chunks = []
    remaining = n
    while remaining > 0:
        data = stream.read(remaining)
        if not data:
            break
        chunks.append(data)
        remaining -= len(data)
    return b"".join(chunks)


def _decoded_path(path_info: str) -> str:
    """PEP 3333 gives the path as latin-1 text of the raw bytes; frameworks decode it as
    UTF-8 (as werkzeug does), and so must bankguard to match the same route."""
    try:
        return path_info.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return path_info


class _ChainedInput(io.RawIOBase):
    """Bytes already read, followed by the rest of the original input."""

    def __init__(self, prefix: bytes, rest: Any) -> None:
        self._prefix = io.BytesIO(prefix)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._prefix.readinto(buffer)
        if n:
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class BankGuardWSGI:
    """Wrap a WSGI application: ``app.wsgi_app = BankGuardWSGI(app.wsgi_app, policy)``."""

    def __init__(
        self,
        app: WSGIApp,
        policy: Policy | None = None,
        *,
        guard: Guard | None = None,
        resolver: Callable[[Environ], ScopeRequirement | None] | None = None,
    ) -> None:
        if (policy is None) == (guard is None):
            raise TypeError("pass exactly one of policy or guard")
        self.app = app
        self.guard = guard if guard is not None else Guard(policy)  # type: ignore[arg-type]
        #: Finds the scopes the application declared for a request (``require_scopes``): Flask's
        #: URL map when ``app`` is a Flask application's ``wsgi_app``, as with ``protect()``.
        declared = requirement_of(app)
        flask_app = getattr(app, "__self__", None)
        if resolver is None and flask_app is not None and hasattr(flask_app, "url_map"):
            from ..integrations.flask import install_error_handler, scope_resolver

            resolver = scope_resolver(flask_app)
            install_error_handler(flask_app)
        self.resolver = (
            resolver if resolver is not None else (None if declared is None else lambda e: declared)
        )

    def __repr__(self) -> str:
        return f"BankGuardWSGI(app={self.app!r}, guard={self.guard!r})"

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        head = environ.get("REQUEST_METHOD") == "HEAD"
        try:
            facts = self._facts(environ)
            decision = self.guard.decide(facts)
        except Exception:
            log.exception("bankguard: WSGI adapter failed; refusing the request")
            return _problem(start_response, self.guard.fault("adapter.internal_error", head=head))
        if not decision.allowed:
            return _problem(start_response, self.guard.problem(decision, head=head))
        environ[CONTEXT_KEY] = decision.context
        try:
            with serving(decision.context):
                if self.guard.contract is not None:
                    return self._contract_response(environ, start_response, decision, head)
                return self.app(environ, self._starter(start_response, decision))
        except Denied as denial:
            # A check made at call time (require_scopes) refused the request inside the app.
            response = self.guard.late_denial(
                decision.context,
                denial,
                method=environ.get("REQUEST_METHOD", ""),
                path=environ.get("PATH_INFO", ""),
            )
            return _problem(start_response, response)

    def _facts(self, environ: Environ) -> RequestFacts:
        headers = _headers(environ)
        cap = self.guard.policy.request.max_body_bytes
        raw_length = environ.get("CONTENT_LENGTH") or ""
        length, framing = parse_content_length([raw_length] if raw_length else [])
        body: bytes | None = None
        too_large = False
        stream = environ.get("wsgi.input")
        if framing is None and length is not None and length > cap:
            too_large = True
        elif framing is None and stream is not None and (length or environ.get("wsgi.input_terminated")):
            body = _read_upto(stream, min(length or cap + 1, cap + 1))
            if length is not None and len(body) < length:
                # The client closed before sending what it declared: an incomplete message
                # (RFC 9112 §6.3) never reaches the application, as under ASGI.
                framing, body = "incomplete_body", None
            elif len(body) > cap:
                too_large = True
                environ["wsgi.input"] = io.BufferedReader(_ChainedInput(body, stream))
            else:
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
        raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        raw_path = raw_uri.split("?", 1)[0].encode("latin-1") if isinstance(raw_uri, str) else None
        return RequestFacts(
            method=environ.get("REQUEST_METHOD", "GET"),
            scheme=environ.get("wsgi.url_scheme", "http"),
            path=_decoded_path(environ.get("PATH_INFO", "")) or "/",
            raw_path=raw_path,
            query=environ.get("QUERY_STRING", ""),
            headers=headers,
            peer=environ.get("REMOTE_ADDR") or None,
            http_version=str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).removeprefix("HTTP/"),
            body=None if too_large else body,
            body_too_large=too_large,
            framing_error=framing,
            requirements=self.resolver(environ) if self.resolver is not None else None,
            transport={k: v for k, v in environ.items() if k.startswith("SSL_CLIENT")}
            if "SSL_CLIENT_CERT" in environ
            else None,
        )

    def _starter(self, start_response: StartResponse, decision: Decision) -> StartResponse:
        guard = self.guard

        def starter(status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None) -> Any:
            merged = guard.merge_response_headers(list(headers), decision)
            if exc_info is not None:
                return start_response(status, merged, exc_info)
            return start_response(status, merged)

        return starter

    def _contract_response(
        self, environ: Environ, start_response: StartResponse, decision: Decision, head: bool
    ) -> Iterable[bytes]:
        """Run the app and, where the response plan asks for it, hold its JSON body to minimise and
        validate it (:mod:`bankguard.responses`) before anything is sent."""
        guard = self.guard
        held: dict[str, Any] = {}
        written: list[bytes] = []

        def starter(status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None) -> Any:
            merged = guard.merge_response_headers(list(headers), decision)
            code = int(status.split(" ", 1)[0]) if status[:3].isdigit() else 500
            plan = guard.response_plan(decision, code, merged, head=head)
            if plan is None:
                held.clear()
                held["plain"] = True
                if exc_info is not None:
                    return start_response(status, merged, exc_info)
                return start_response(status, merged)
            held.update(status=status, headers=merged, plan=plan)
            return written.append  # the legacy write() callable: into the buffer

        result = self.app(environ, starter)
        iterator = iter(result)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in iterator:
                if "plan" not in held:
                    # Not buffered (no plan): stream what came and the rest as the app sends it.
                    return _Streamed([*written, chunk], iterator, result)
                chunks.append(chunk)
                size += len(chunk)
                plan = held["plan"]
                if size + sum(map(len, written)) > plan.limit:
                    plan.overflow()
                    start_response(held["status"], held["headers"])
                    return _Streamed([*written, *chunks], iterator, result)
        except BaseException:
            _close(result)
            raise
        _close(result)
        if "plan" not in held:
            return [*written, *chunks]
        outcome = held["plan"].finish(b"".join([*written, *chunks]))
        try:
            phrase = HTTPStatus(outcome.status).phrase
        except ValueError:  # a status the application chose that Python does not name
            phrase = held["status"].split(" ", 1)[1] if " " in held["status"] else "Unknown"
        start_response(f"{outcome.status} {phrase}", outcome.headers)
        return [outcome.body]


class _Streamed:
    """Chunks already taken from the application's iterable, then the rest of it; closes it."""

    def __init__(self, first: list[bytes], rest: Iterator[bytes], result: Iterable[bytes]) -> None:
        self._first = first
        self._rest = rest
        self._result = result

    def __iter__(self) -> Iterator[bytes]:
        yield from self._first
        yield from self._rest

    def close(self) -> None:
        _close(self._result)


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if callable(close):
        close()


def _problem(start_response: StartResponse, response: ProblemResponse) -> list[bytes]:
    phrase = HTTPStatus(response.status).phrase
    start_response(f"{response.status} {phrase}", list(response.headers))
    return [response.body]
