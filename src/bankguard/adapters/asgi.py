"""Pure ASGI middleware: every HTTP request goes through the guard before the app.

Trust model: the middleware reads the request as the ASGI server presents it. The
peer address is ``scope["client"]``; forwarding headers (``X-Forwarded-For``) are
believed only when that peer is in ``trusted_proxies``. Nothing else a client sends
is trusted until a control has verified it.

The body is read before the decision, bounded by ``request.max_body_bytes`` (also for
chunked bodies); what was read is replayed to the application unchanged.
WebSocket connections are refused (close code 1008): bankguard secures HTTP APIs and
would otherwise wave WebSocket traffic through unchecked. Lifespan and other scope
types pass through.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
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

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BankGuardMiddleware:
    """Wrap an ASGI application: ``app = BankGuardMiddleware(app, policy)``."""

    def __init__(
        self,
        app: ASGIApp,
        policy: Policy | None = None,
        *,
        guard: Guard | None = None,
        resolver: Callable[[Scope], ScopeRequirement | None] | None = None,
    ) -> None:
        if (policy is None) == (guard is None):
            raise TypeError("pass exactly one of policy or guard")
        self.app = app
        self.guard = guard if guard is not None else Guard(policy)  # type: ignore[arg-type]
        #: Finds the scopes the application declared for a request (``require_scopes``).
        self.resolver = resolver if resolver is not None else _app_level(app)

    def __repr__(self) -> str:
        return f"BankGuardMiddleware(app={self.app!r}, guard={self.guard!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            self.guard.fault_event(
                "adapter.websocket_refused", status=403, method="WEBSOCKET", path=scope.get("path", "")
            )
            await send({"type": "websocket.close", "code": 1008})
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = scope.get("method") == "HEAD"
        try:
            facts, prefix, more = await self._read(scope, receive)
            if facts is None:
                return  # the client disconnected while sending its body
            decision = await self.guard.adecide(facts)
        except Exception:
            log.exception("bankguard: ASGI adapter failed; refusing the request")
            await _send_problem(send, self.guard.fault("adapter.internal_error", head=head))
            return
        if not decision.allowed:
            await _send_problem(send, self.guard.problem(decision, head=head))
            return
        scope[CONTEXT_KEY] = decision.context
        started = False
        sender = self._sender(send, decision, head)

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await sender(message)

        try:
            with serving(decision.context):
                await self.app(scope, _replay(receive, prefix, more), tracking_send)
        except Denied as denial:
            # A check made at call time (require_scopes) refused the request inside the app.
            if started:
                raise
            response = self.guard.late_denial(
                decision.context, denial, method=scope.get("method", ""), path=scope.get("path", "")
            )
            await _send_problem(send, response)

    async def _read(self, scope: Scope, receive: Receive) -> tuple[RequestFacts | None, bytes | None, bool]:
        headers = Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ()))
        length, framing = parse_content_length(headers.get_all("content-length"))
        cap = self.guard.policy.request.max_body_bytes
        body: bytes | None = None
        more = False
        too_large = False
        if framing is None and length is not None and length > cap:
            too_large = True
        elif framing is None:
            # Always read: HTTP/2 and HTTP/3 bodies need no Content-Length, so the cap
            # must hold for whatever the server delivers.
            chunks: list[bytes] = []
            total = 0
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None, None, False
                chunk = message.get("body", b"")
                chunks.append(chunk)
                total += len(chunk)
                more = bool(message.get("more_body", False))
                if total > cap:
                    too_large = True
                    break
            body = b"".join(chunks)
        client = scope.get("client")
        raw_path = scope.get("raw_path")
        facts = RequestFacts(
            method=scope["method"],
            scheme=scope.get("scheme", "http"),
            path=scope.get("path", "/"),
            raw_path=raw_path.split(b"?", 1)[0] if isinstance(raw_path, bytes) else None,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            peer=client[0] if client else None,
            http_version=scope.get("http_version", "1.1"),
            body=None if too_large else body,
            body_too_large=too_large,
            framing_error=framing,
            requirements=self.resolver(scope) if self.resolver is not None else None,
            transport=(scope.get("extensions") or {}).get("tls"),
        )
        return facts, body, more

    def _sender(self, send: Send, decision: Decision, head: bool = False) -> Send:
        guard = self.guard
        buffered: dict[str, Any] = {}  # the held start message, while a response plan buffers

        async def sender(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())]
                merged = guard.merge_response_headers(headers, decision)
                message = dict(message)
                message["headers"] = _encode(merged)
                plan = guard.response_plan(decision, message["status"], merged, head=head)
                if plan is not None:
                    buffered.update(start=message, plan=plan, chunks=[], size=0)
                    return
            elif kind == "http.response.body" and buffered:
                plan = buffered["plan"]
                chunk = message.get("body", b"")
                more = bool(message.get("more_body", False))
                buffered["chunks"].append(chunk)
                buffered["size"] += len(chunk)
                if buffered["size"] > plan.limit:
                    # Too large to hold: what was held goes out untouched, then the rest streams.
                    plan.overflow()
                    start, body = buffered["start"], b"".join(buffered["chunks"])
                    buffered.clear()
                    await send(start)
                    await send({"type": "http.response.body", "body": body, "more_body": more})
                    return
                if more:
                    return
                outcome = plan.finish(b"".join(buffered["chunks"]))
                start = dict(buffered["start"], status=outcome.status, headers=_encode(outcome.headers))
                buffered.clear()
                await send(start)
                await send({"type": "http.response.body", "body": outcome.body, "more_body": False})
                return
            await send(message)

        return sender


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def _app_level(app: object) -> Callable[[Scope], ScopeRequirement | None] | None:
    """The resolver for an application wrapped directly: Starlette's routes when the app has
    them (so ``require_scopes`` on endpoints is seen, as with ``protect()``), else a
    requirement declared on the application object itself, for every request."""
    if hasattr(app, "routes") and hasattr(app, "router"):
        from ..integrations.starlette import scope_resolver

        return scope_resolver(app)
    declared = requirement_of(app)
    return None if declared is None else (lambda scope: declared)


def _replay(receive: Receive, prefix: bytes | None, more: bool) -> Receive:
    """Give the app the body bytes already read, then the rest of the stream."""
    if prefix is None:
        return receive
    pending: list[Message] = [{"type": "http.request", "body": prefix, "more_body": more}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


async def _send_problem(send: Send, response: ProblemResponse) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers],
        }
    )
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
