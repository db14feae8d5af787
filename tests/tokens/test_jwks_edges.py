"""Remote key sets at their edges, with the outbound fetch replaced by an in-memory table: one
timeout shared by discovery and the key set, an empty key set, a failing key-change listener,
staleness alarmed once, and a source started after it was loaded (JWKS-01, JWKS-05, JWKS-06)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

import bankguard.tokens.jwks as jwks_module
from bankguard.policy_tokens import JwksRefreshPolicy
from bankguard.testing import TestIssuer
from bankguard.tokens._http import FetchError, HttpResponse
from bankguard.tokens.jwks import RemoteKeySource

ISS = "https://as.bank.example"
JWKS_URI = "https://as.bank.example/jwks"
DISCOVERY = "https://as.bank.example/.well-known/openid-configuration"
ALLOWED = frozenset({"ES256"})


class FakeFetch:
    """Stands in for ``bankguard.tokens._http.request``: a JSON body (or a FetchError) per URL."""

    def __init__(self) -> None:
        self.bodies: dict[str, Any] = {}
        self.calls: list[str] = []
        self.delay: dict[str, float] = {}

    def __call__(self, method: str, url: str, **kw: Any) -> HttpResponse:
        self.calls.append(url)
        if url in self.delay:
            time.sleep(self.delay[url])
        found = self.bodies[url]
        if isinstance(found, FetchError):
            raise found
        return HttpResponse(200, {"content-type": "application/json"}, json.dumps(found).encode())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fetch(monkeypatch: pytest.MonkeyPatch) -> FakeFetch:
    fake = FakeFetch()
    monkeypatch.setattr(jwks_module, "request", fake)
    return fake


@pytest.fixture
def made() -> Iterator[list[RemoteKeySource]]:
    sources: list[RemoteKeySource] = []
    yield sources
    for source in sources:
        source.close()


def make(made: list[RemoteKeySource], **kw: Any) -> RemoteKeySource:
    kw.setdefault("start", False)
    source = RemoteKeySource(ISS, ALLOWED, **kw)
    made.append(source)
    return source


def test_JWKS_01_discovery_and_key_set_share_one_timeout(
    fetch: FakeFetch, made: list[RemoteKeySource]
) -> None:
    fetch.bodies[DISCOVERY] = {"issuer": ISS, "jwks_uri": JWKS_URI}
    fetch.bodies[JWKS_URI] = TestIssuer(ISS).jwks()
    fetch.delay[DISCOVERY] = 0.06  # discovery uses up the whole fetch time
    source = make(made, discovery=DISCOVERY, refresh=JwksRefreshPolicy(timeout=0.05))
    assert source.refresh_if_due() is True
    assert fetch.calls == [DISCOVERY]  # the key set is never asked for
    assert source.last_error == "timeout"
    assert source.current() is None


def test_JWKS_03_key_set_without_usable_keys_is_loaded_empty_and_warned(
    fetch: FakeFetch, made: list[RemoteKeySource], caplog: pytest.LogCaptureFixture
) -> None:
    fetch.bodies[JWKS_URI] = {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        source = make(made, jwks_uri=JWKS_URI)
        source.refresh_if_due()
    index = source.current()
    assert index is not None
    assert len(index) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("the key set holds no usable key" in m for m in messages)
    assert repr(source) == f"RemoteKeySource(issuer={ISS!r}, KeyIndex(kids=[], keys=0))"


def test_repr_before_any_key_set(made: list[RemoteKeySource]) -> None:
    source = make(made, jwks_uri=JWKS_URI)
    assert repr(source) == f"RemoteKeySource(issuer={ISS!r}, None)"


def test_JWKS_06_a_failing_key_change_listener_does_not_stop_the_others(
    fetch: FakeFetch, made: list[RemoteKeySource], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    first, second = TestIssuer(ISS, kid="a"), TestIssuer(ISS, kid="b")
    fetch.bodies[JWKS_URI] = first.jwks()
    source = make(made, jwks_uri=JWKS_URI, clock=clock)
    source.refresh_if_due()
    called: list[str] = []

    def broken() -> None:
        raise RuntimeError("listener bug")

    source.listeners.extend([broken, lambda: called.append("cache emptied")])
    fetch.bodies[JWKS_URI] = second.jwks()  # rotation
    with caplog.at_level(logging.ERROR, logger="bankguard"):
        assert source.refresh_unknown_kid() is True
    assert called == ["cache emptied"]
    assert any("key-change listener failed" in r.getMessage() for r in caplog.records)
    index = source.current()
    assert index is not None
    assert index.knows("b")
    assert not index.knows("a")


def test_JWKS_05_staleness_is_alarmed_once(
    fetch: FakeFetch, made: list[RemoteKeySource], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    fetch.bodies[JWKS_URI] = TestIssuer(ISS).jwks()
    refresh = JwksRefreshPolicy(min_ttl=300, max_ttl=600, max_stale=3600)
    source = make(made, jwks_uri=JWKS_URI, clock=clock, refresh=refresh)
    source.refresh_if_due()
    notified: list[int] = []
    source.listeners.append(lambda: notified.append(1))
    fetch.bodies[JWKS_URI] = FetchError("connection_failed")
    clock.now += 3601
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        assert source.refresh_if_due() is True
        clock.now += 600
        assert source.refresh_if_due() is True
    assert source.current() is None  # fail closed
    stale = [r for r in caplog.records if "stale beyond max_stale" in r.getMessage()]
    assert len(stale) == 1
    assert notified == [1]
    assert source.last_error == "connection_failed"


def test_start_after_loading_fetches_no_more(fetch: FakeFetch, made: list[RemoteKeySource]) -> None:
    fetch.bodies[JWKS_URI] = TestIssuer(ISS).jwks()
    source = make(made, jwks_uri=JWKS_URI)
    source.refresh_if_due()
    assert fetch.calls == [JWKS_URI]
    source.start()  # keys already loaded: only the refresh thread starts
    assert fetch.calls == [JWKS_URI]
    assert source._thread is not None
    assert source._thread.is_alive()
    source.start()  # started already: nothing happens
    source.close()
    assert not source._thread.is_alive()


def test_fork_gives_the_child_a_fresh_restart_lock() -> None:
    held = jwks_module._restart_lock
    with held:
        jwks_module._fresh_restart_lock()
        assert jwks_module._restart_lock is not held
        assert not jwks_module._restart_lock.locked()
    jwks_module._restart_lock = held
