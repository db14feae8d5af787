"""An RFC 7662 introspection endpoint that fails, through real applications (STANDARDS INTRO-02,
INTRO-04, INTRO-05; docs/tokens.md "Introspection"; docs/errors.md "service-unavailable").

The endpoint is a :class:`~tests.faults.conftest.FaultServer` on 127.0.0.1. Documented behaviour:

* no usable answer (connection refused, no answer within ``timeout``, a status other than 200, a
  body above ``max_bytes``): 503 ``service-unavailable``, ``Retry-After: 5``, no
  ``WWW-Authenticate``, audited as ``token.introspection_unavailable:<reason>``; failures are not
  cached, so the first request after the endpoint is repaired is served;
* a 200 whose body is not a JSON object, or whose ``active`` is anything but ``true``: 401
  ``invalid-token`` (``token.inactive``), remembered for ``negative_cache_ttl``;
* an active result is reused for ``cache_ttl`` and never beyond its ``exp``, also while the
  endpoint is down.

Cache lifetimes run on a clock injected into the guard (``Guard(policy, clock=...)``), so no test
waits for a cache entry to expire. Recovery times (repair to first 200) are kept as the user
property ``recovery_s``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import pytest

from bankguard.testing import EventCollector

from .conftest import (
    ORIGIN,
    Answer,
    FaultServer,
    Reply,
    Served,
    alternating,
    assert_allowed,
    assert_allowed_event,
    assert_denied_event,
    assert_invalid_token,
    assert_unavailable,
    make_policy,
    until,
)

pytestmark = pytest.mark.network

AS = "https://as.bank.example"
SECRET_ENV = "BANKGUARD_FAULTS_INTROSPECTION_SECRET"
SECRET = "s3cret value"
TIMEOUT = 1.0
CACHE_TTL = 60.0
NEGATIVE_TTL = 10.0


class Clock:
    """The guard's clock: the wall clock plus an offset a test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def introspection_policy(events: EventCollector, server: FaultServer) -> Any:
    return make_policy(
        events,
        tokens={
            "introspection": {
                "endpoint": server.url("/introspect"),
                "client_id": "accounts-api",
                "client_secret_env": SECRET_ENV,
                "insecure_http": True,
                "issuer": AS,
                "audiences": [ORIGIN],
                "timeout": TIMEOUT,
                "cache_ttl": CACHE_TTL,
                "negative_cache_ttl": NEGATIVE_TTL,
                "max_bytes": "4KiB",
            }
        },
    )


def active(lifetime: float = 300, now: float | None = None, **claims: Any) -> Answer:
    issued = time.time() if now is None else now
    return Answer.json(
        {
            "active": True,
            "iss": AS,
            "aud": ORIGIN,
            "sub": "psu-1",
            "client_id": "tpp-client-1",
            "scope": "accounts",
            "iat": int(issued),
            "exp": int(issued + lifetime),
            **claims,
        }
    )


def opaque(n: int = 0) -> dict[str, str]:
    return {"authorization": f"Bearer opaque-token-{n}-{time.monotonic_ns()}"}


def assert_introspection_unavailable(events: EventCollector, reply: Reply, reason: str) -> None:
    assert_unavailable(reply, "service-unavailable", retry_after=5)
    assert_denied_event(events, reply, "tokens", f"token.introspection_unavailable:{reason}")


UNAVAILABLE = [
    pytest.param(None, "connection_failed", id="connection-refused"),
    pytest.param(Answer.json({"active": True}, delay=TIMEOUT * 4), "timeout", id="timeout"),
    pytest.param(Answer(b"<html>Internal Server Error</html>", status=500), "status_500", id="status-500"),
    pytest.param(Answer.json({"active": True}, status=503), "status_503", id="status-503"),
    pytest.param(
        Answer(b"", status=302, headers=(("Location", "http://evil.example/"),)), "status_302", id="302"
    ),
    pytest.param(Answer.json({"active": True, "pad": "x" * 8192}), "too_large", id="above-max-bytes"),
]


@pytest.mark.parametrize(("answer", "reason"), UNAVAILABLE)
def test_INTRO_05_no_usable_answer_is_503_never_cached_and_recovers(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    record: Callable[[str, object], None],
    answer: Answer | None,
    reason: str,
) -> None:
    server = http_servers(answer, running=answer is not None)
    app = serve(introspection_policy(events, server))
    token = opaque()
    for _ in range(2):  # a failure is not cached: the second request asks again
        assert_introspection_unavailable(events, app.get(token), reason)
    if answer is not None:
        assert server.hits == 2
        seen = server.requests[-1]
        assert (seen.method, seen.path) == ("POST", "/introspect")
        assert parse_qs(seen.body.decode()) == {
            "token": [token["authorization"].removeprefix("Bearer ")],
            "token_type_hint": ["access_token"],
        }
        basic = base64.b64encode(b"accounts-api:s3cret+value").decode()
        assert seen.headers["authorization"] == f"Basic {basic}"
    started = time.monotonic()
    if answer is None:
        server.start()
    server.answer = active()
    reply = app.get(token)
    record("recovery_s", round(time.monotonic() - started, 3))
    assert_allowed(reply)
    assert_allowed_event(events, reply)
    assert len(events.events) == 3


INACTIVE = [
    pytest.param(Answer.json({"active": False}), id="active-false"),
    pytest.param(Answer.json({"active": "true", "sub": "psu-1"}), id="active-string"),
    pytest.param(Answer.json({"active": 1}), id="active-number"),
    pytest.param(Answer.json({"sub": "psu-1", "scope": "accounts"}), id="active-absent"),
    pytest.param(Answer(b"not json at all", content_type="text/plain"), id="not-json"),
    pytest.param(Answer(b"<html><body>Login</body></html>", content_type="text/html"), id="html-200"),
    pytest.param(Answer.json([{"active": True}]), id="json-array"),
    pytest.param(Answer(b'{"active": true, "active": true}'), id="duplicate-member"),
]


@pytest.mark.parametrize(("kind", "answer"), alternating(INACTIVE))
def test_INTRO_02_inactive_or_garbage_200_is_401_negatively_cached_then_recovers(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    clock: Clock,
    answer: Answer,
) -> None:
    server = http_servers(answer)
    app = serve(introspection_policy(events, server), clock=clock)
    token = opaque()
    first = app.get(token)
    assert_invalid_token(first)
    assert_denied_event(events, first, "tokens", "token.inactive")
    server.answer = active()
    again = app.get(token)  # within negative_cache_ttl: the remembered answer, no new request
    assert_invalid_token(again)
    assert_denied_event(events, again, "tokens", "token.inactive")
    assert server.hits == 1
    clock.advance(NEGATIVE_TTL)
    recovered = app.get(token)
    assert_allowed(recovered)
    assert_allowed_event(events, recovered)
    assert server.hits == 2
    assert len(events.events) == 3


def test_INTRO_04_cached_active_result_outlives_an_outage_for_cache_ttl_only(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    clock: Clock,
    record: Callable[[str, object], None],
) -> None:
    server = http_servers(active())
    app = serve(introspection_policy(events, server), clock=clock)
    token = opaque()
    assert_allowed(app.get(token))
    server.stop()
    cached = app.get(token)  # no request: the active result is reused
    assert_allowed(cached)
    assert_allowed_event(events, cached)
    assert server.hits == 1
    clock.advance(CACHE_TTL)
    assert_introspection_unavailable(events, app.get(token), "connection_failed")
    other = opaque(1)  # another token was never seen: 503 as well, nothing is assumed
    assert_introspection_unavailable(events, app.get(other), "connection_failed")
    started = time.monotonic()
    server.start()
    reply = app.get(token)
    record("recovery_s", round(time.monotonic() - started, 3))
    assert_allowed(reply)
    assert len(events.events) == 5


def test_INTRO_04_active_result_is_not_reused_beyond_its_exp_while_the_endpoint_is_down(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    clock: Clock,
) -> None:
    server = http_servers(active(lifetime=5))  # exp in 5 s, far below cache_ttl
    app = serve(introspection_policy(events, server), clock=clock)
    token = opaque()
    assert_allowed(app.get(token))
    server.stop()
    clock.advance(4)
    assert_allowed(app.get(token))
    clock.advance(2)  # past exp: the cache entry ends with it, and the endpoint is down
    assert_introspection_unavailable(events, app.get(token), "connection_failed")
    assert server.hits == 1


@pytest.mark.parametrize("kind", ["asgi"])
def test_INTRO_05_dripping_endless_body_is_abandoned_at_the_timeout(
    serve: Callable[..., Served], http_servers: Callable[..., FaultServer], events: EventCollector
) -> None:
    """tokens.md "Outbound HTTP": the body read stops once ``timeout`` has passed since the request
    began. The endpoint answers 200 and then drips its body one byte every 20 ms for 4 s (the
    ``timeout`` is 1 s). The request must get its 503 (``:timeout``) with the introspection
    abandoned at the timeout, the connection closed before the server stops dripping."""
    server = http_servers(Answer(b'{"active": true', drip=4.0))
    app = serve(introspection_policy(events, server))
    assert_introspection_unavailable(events, app.get(opaque()), "timeout")
    assert until(lambda: len(server.drips) == 1)
    assert server.drips == [True], "the request waited for the dripping body to end"
