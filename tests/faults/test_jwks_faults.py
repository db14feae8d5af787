"""A remote JWK Set (``jwks_uri``) that fails, through real applications (STANDARDS JWKS-02, JWKS-04,
JWKS-05; docs/tokens.md "The key refresh model", "Outbound HTTP"; docs/errors.md "Fail closed").

The key set is served by a :class:`~tests.faults.conftest.FaultServer` on 127.0.0.1 that refuses
connections, answers late, answers garbage or an error status, sends a body above
``refresh.max_bytes`` or drips a body that never ends. The documented behaviour checked for each:

* no usable key set (never loaded, or stale beyond ``refresh.max_stale``): every token of the issuer
  gets 401 ``invalid-token`` with the ``Bearer`` ``invalid_token`` challenge, audited as
  ``token.keys_unavailable``; the fetch failure's own code (``connection_failed``, ``timeout``,
  ``status_500``, ``document_not_json``, ``jwks_not_a_key_set``, ``too_large``, ...) is logged on the
  ``bankguard`` logger, never put in the response;
* a failed refresh after a good load keeps the last good keys verifying until ``max_stale``;
* never a 500, and exactly one audit event per request;
* recovery without restarting the application: with ``refresh.cooldown: 0`` every request that
  finds no usable keys forces one refetch, so the first request after the endpoint is healthy
  again is served. The time from the repair to the first 200 is kept as the user property
  ``recovery_s``.

The key source's clock cannot be injected through the guard (it reads ``time.monotonic``), so the
staleness tests use a ``max_stale`` of 1.5 s and poll for the moment it passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from bankguard.testing import EventCollector, TestIssuer
from bankguard.tokens.jwks import RemoteKeySource

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
    make_policy,
    until,
)

pytestmark = pytest.mark.network

ISSUER = TestIssuer("https://as.bank.example", alg="ES256", kid="k1")
#: The same issuer after a key rotation: a second key, published next to the first.
ROTATED = TestIssuer("https://as.bank.example", alg="ES256", kid="k2")
TIMEOUT = 1.0  # refresh.timeout of every policy here
#: No scheduled refresh during a test (min_ttl): fetches happen at start-up, when a request finds no
#: usable key or an unknown kid (cooldown 0: every such request may refetch), and as retries after
#: a failure.
REFRESH = {"timeout": TIMEOUT, "cooldown": 0, "min_ttl": 300, "max_ttl": 300, "max_bytes": "16KiB"}

GARBAGE = [
    pytest.param(Answer(b"this is not JSON", content_type="text/plain"), "document_not_json", id="not-json"),
    pytest.param(Answer.json({"issuer": ISSUER.issuer}), "jwks_not_a_key_set", id="json-not-a-key-set"),
    pytest.param(Answer.json({"keys": "k1"}), "jwks_not_a_key_set", id="keys-not-a-list"),
    pytest.param(Answer.json([ISSUER.public_jwk()]), "document_not_object", id="json-array"),
    pytest.param(
        Answer(b"<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"),
        "document_not_json",
        id="html-error-page-200",
    ),
    pytest.param(
        Answer(b"<html>Internal Server Error</html>", status=500, content_type="text/html"),
        "status_500",
        id="status-500",
    ),
    pytest.param(
        Answer.json({"keys": []}, status=503, headers=(("Retry-After", "120"),)),
        "status_503",
        id="status-503",
    ),
    pytest.param(Answer.json(ISSUER.jwks(), status=302), "status_302", id="redirect"),
]


def jwks_policy(events: EventCollector, server: FaultServer, **refresh: Any) -> Any:
    issuer = {
        "issuer": ISSUER.issuer,
        "audiences": [ORIGIN],
        "algorithms": ["ES256"],
        "jwks_uri": server.url("/jwks"),
        "insecure_http": True,
        "refresh": {**REFRESH, **refresh},
    }
    return make_policy(events, tokens={"issuers": [issuer]})


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def key_source(app: Served) -> RemoteKeySource:
    tokens = app.guard.tokens
    assert tokens is not None
    assert tokens.verifier is not None
    source = tokens.verifier.issuers[ISSUER.issuer].keys
    assert isinstance(source, RemoteKeySource)
    return source


def logged(caplog: pytest.LogCaptureFixture, level: int, text: str) -> bool:
    return any(
        r.levelno == level and r.name == "bankguard" and text in r.getMessage() for r in caplog.records
    )


def assert_keys_unavailable(events: EventCollector, reply: Reply) -> None:
    assert_invalid_token(reply)
    assert_denied_event(events, reply, "tokens", "token.keys_unavailable")


def recover(
    app: Served, events: EventCollector, repair: Callable[[], None], record: Callable[[str, object], None]
) -> None:
    """Repair the endpoint; the next request (a fresh token) is served without a restart."""
    started = time.monotonic()
    repair()
    reply = app.get(bearer(ISSUER.mint()))
    record("recovery_s", round(time.monotonic() - started, 3))
    assert_allowed(reply)
    assert_allowed_event(events, reply)


# -- not available at start-up ------------------------------------------------------------------


def test_JWKS_05_endpoint_down_at_start_fails_closed_then_recovers(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    caplog: pytest.LogCaptureFixture,
    record: Callable[[str, object], None],
) -> None:
    server = http_servers(Answer.json(ISSUER.jwks()), running=False)  # connection refused
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        app = serve(jwks_policy(events, server))
        assert logged(
            caplog, logging.ERROR, f"jwks: no keys for issuer {ISSUER.issuer} (connection_failed); its tokens"
        )
        assert events.events == []  # building the app decides nothing
        caplog.clear()
        for _ in range(2):  # each request forces one refetch, which fails too
            assert_keys_unavailable(events, app.get(bearer(ISSUER.mint())))
        assert logged(caplog, logging.WARNING, "refreshing the keys of https://as.bank.example failed: ")
    recover(app, events, server.start, record)
    assert len(events.events) == 3


@pytest.mark.parametrize(("kind", "answer", "reason"), alternating(GARBAGE))
def test_JWKS_05_garbage_at_start_fails_closed_then_recovers(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    caplog: pytest.LogCaptureFixture,
    record: Callable[[str, object], None],
    answer: Answer,
    reason: str,
) -> None:
    server = http_servers(answer)
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        app = serve(jwks_policy(events, server))
        assert logged(caplog, logging.ERROR, f"jwks: no keys for issuer {ISSUER.issuer} ({reason})")
        caplog.clear()
        reply = app.get(bearer(ISSUER.mint()))
        assert logged(caplog, logging.WARNING, f"refreshing the keys of {ISSUER.issuer} failed: {reason}")
    assert_keys_unavailable(events, reply)
    assert reason not in reply.body.decode()  # the cause is logged, never sent

    def repair() -> None:
        server.answer = Answer.json(ISSUER.jwks())

    recover(app, events, repair, record)
    assert len(events.events) == 2


def test_JWKS_02_slow_endpoint_times_out_then_recovers(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    caplog: pytest.LogCaptureFixture,
    record: Callable[[str, object], None],
) -> None:
    server = http_servers(Answer.json(ISSUER.jwks(), delay=TIMEOUT * 4))  # answers after 4 s
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        app = serve(jwks_policy(events, server))
        assert logged(caplog, logging.ERROR, f"jwks: no keys for issuer {ISSUER.issuer} (timeout)")
        caplog.clear()
        reply = app.get(bearer(ISSUER.mint()))
        assert logged(caplog, logging.WARNING, f"refreshing the keys of {ISSUER.issuer} failed: timeout")
    assert_keys_unavailable(events, reply)

    def repair() -> None:
        server.answer = Answer.json(ISSUER.jwks())

    recover(app, events, repair, record)


def test_JWKS_02_body_above_max_bytes_is_refused_then_recovers(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    caplog: pytest.LogCaptureFixture,
    record: Callable[[str, object], None],
) -> None:
    padded = {"keys": [ISSUER.public_jwk()], "padding": "x" * 64 * 1024}  # valid JSON, 64 KiB > 16 KiB
    server = http_servers(Answer.json(padded))
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        app = serve(jwks_policy(events, server))
        assert logged(caplog, logging.ERROR, f"jwks: no keys for issuer {ISSUER.issuer} (too_large)")
        caplog.clear()
        reply = app.get(bearer(ISSUER.mint()))
        assert logged(caplog, logging.WARNING, f"refreshing the keys of {ISSUER.issuer} failed: too_large")
    assert_keys_unavailable(events, reply)

    def repair() -> None:
        server.answer = Answer.json(ISSUER.jwks())

    recover(app, events, repair, record)


@pytest.mark.parametrize("kind", ["wsgi"])
def test_JWKS_02_dripping_endless_body_is_abandoned_at_the_timeout(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    caplog: pytest.LogCaptureFixture,
    record: Callable[[str, object], None],
) -> None:
    """tokens.md "Outbound HTTP": "the body read also stops once `timeout` has passed since the
    request began". The server sends a 200 whose body never ends (one byte every 20 ms, for 4 s,
    far longer than the 1 s ``refresh.timeout``); the fetch must give up (``timeout``), hanging up
    on the server before it stops dripping by itself."""
    server = http_servers(Answer(b'{"keys": [', drip=4.0))
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        app = serve(jwks_policy(events, server))
        reply = app.get(bearer(ISSUER.mint()))
    assert_keys_unavailable(events, reply)
    assert logged(caplog, logging.ERROR, f"jwks: no keys for issuer {ISSUER.issuer} (timeout)")
    assert until(lambda: len(server.drips) == server.hits)
    assert server.drips == [True] * server.hits, "the client read the dripping body to its end"

    def repair() -> None:
        server.answer = Answer.json(ISSUER.jwks())

    recover(app, events, repair, record)


# -- failing after a good load --------------------------------------------------------------------


def test_JWKS_05_down_after_good_load_keeps_last_keys_until_max_stale_then_recovers(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    caplog: pytest.LogCaptureFixture,
    record: Callable[[str, object], None],
) -> None:
    server = http_servers(Answer.json(ISSUER.jwks()))
    app = serve(jwks_policy(events, server, max_stale=1.5))
    replies = [app.get(bearer(ISSUER.mint()))]
    assert_allowed(replies[0])
    server.stop()  # connection refused from now on
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        # The last good set keeps verifying fresh tokens (no fetch is needed for a known kid)...
        known = app.get(bearer(ISSUER.mint()))
        assert_allowed(known)
        assert_allowed_event(events, known)
        # ...while a new kid forces a refetch, which fails: that token is refused.
        unknown = app.get(bearer(ROTATED.mint()))
        assert_invalid_token(unknown)
        assert_denied_event(events, unknown, "tokens", "token.kid_unknown")
        assert logged(
            caplog, logging.WARNING, f"refreshing the keys of {ISSUER.issuer} failed: connection_failed"
        )

        # Fresh tokens until max_stale has passed: served, then refused.
        def refused() -> bool:
            replies.append(app.get(bearer(ISSUER.mint())))
            return replies[-1].status != 200

        assert until(refused, timeout=5.0, step=0.05)
        assert logged(caplog, logging.ERROR, f"jwks: keys of {ISSUER.issuer} are stale beyond max_stale")
    for reply in replies[1:-1]:
        assert_allowed(reply)
    assert_keys_unavailable(events, replies[-1])
    assert_keys_unavailable(events, app.get(bearer(ISSUER.mint())))
    recover(app, events, server.start, record)
    assert len(events.events) == len(replies) + 4


@pytest.mark.parametrize("kind", ["asgi"])
def test_JWKS_05_token_verified_before_is_refused_once_keys_are_stale_beyond_max_stale(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
) -> None:
    """security.md: the last good keys serve "for at most `refresh.max_stale`; then every token of
    that issuer is refused with 401"; tokens.md: when the key set "goes stale beyond `max_stale`, the
    whole [verified-token] cache is emptied". A token verified while the keys were fresh must not be
    accepted from the cache once they are stale, whether or not a failed fetch noticed it yet."""
    server = http_servers(Answer.json(ISSUER.jwks()))
    # Retries after a failure wait cooldown x 2^n (here 3 s, below min_ttl): the first retry after
    # max_stale comes well after the moment it passes.
    app = serve(jwks_policy(events, server, max_stale=1.5, cooldown=3, min_ttl=5))
    token = ISSUER.mint()
    assert_allowed(app.get(bearer(token)))
    server.stop()
    source = key_source(app)
    assert until(lambda: source.current() is None, timeout=5.0)  # stale beyond max_stale
    reply = app.get(bearer(token))
    assert_keys_unavailable(events, reply)


def test_JWKS_05_garbage_after_good_load_keeps_last_keys_and_rotation_resumes(
    serve: Callable[..., Served],
    http_servers: Callable[..., FaultServer],
    events: EventCollector,
    caplog: pytest.LogCaptureFixture,
    record: Callable[[str, object], None],
) -> None:
    server = http_servers(Answer.json(ISSUER.jwks()))
    app = serve(jwks_policy(events, server))
    assert_allowed(app.get(bearer(ISSUER.mint())))
    faults = [
        (Answer(b"<html>oops</html>", status=500, content_type="text/html"), "status_500"),
        (Answer(b"not json"), "document_not_json"),
        (Answer.json({"no": "keys"}), "jwks_not_a_key_set"),
        (Answer.json({"keys": [ROTATED.public_jwk()], "pad": "x" * 32 * 1024}), "too_large"),
        (Answer.json(ISSUER.jwks(), delay=TIMEOUT * 3), "timeout"),
    ]
    for answer, reason in faults:
        server.answer = answer
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bankguard"):
            unknown = app.get(bearer(ROTATED.mint()))  # forces a refetch, which fails
        assert logged(caplog, logging.WARNING, f"refreshing the keys of {ISSUER.issuer} failed: {reason}")
        assert_invalid_token(unknown)
        assert_denied_event(events, unknown, "tokens", "token.kid_unknown")
        known = app.get(bearer(ISSUER.mint()))  # the last good set still verifies
        assert_allowed(known)
        assert_allowed_event(events, known)
    started = time.monotonic()
    server.answer = Answer.json({"keys": [ISSUER.public_jwk(), ROTATED.public_jwk()]})
    rotated = app.get(bearer(ROTATED.mint()))
    record("recovery_s", round(time.monotonic() - started, 3))
    assert_allowed(rotated)
    assert len(events.events) == 1 + 2 * len(faults) + 1
