"""CRL sources at their edges, with the outbound fetch replaced by an in-memory table: a rolled
back cRLNumber, one refused CRL among several, a start-up deadline shared by several URLs,
closing and forking (EIDAS-01, BG-05; RFC 5280 §5.1.2.4, §5.2.3)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import bankguard.mtls.crl as crl_module
from bankguard._pki_testing import TestPKI
from bankguard.mtls.crl import CrlSource
from bankguard.mtls.validation import CertificateValidator
from bankguard.tokens._http import FetchError, HttpResponse

URL_A = "https://crl.qtsp.example/a.crl"
URL_B = "https://crl.qtsp.example/b.crl"


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def numbered_crl(pki: TestPKI, number: int, *, last_update: dt.datetime) -> x509.CertificateRevocationList:
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.intermediate.subject)
        .last_update(last_update)
        .next_update(pki.now + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(number), critical=False)
        .sign(pki.intermediate_key, hashes.SHA256())
    )


class FakeFetch:
    """Stands in for ``bankguard.tokens._http.request``: a body (or a FetchError) per URL."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes | FetchError] = {}
        self.calls: list[tuple[str, float]] = []
        self.delay = 0.0

    def __call__(self, method: str, url: str, *, timeout: float, **kw: Any) -> HttpResponse:
        self.calls.append((url, timeout))
        if self.delay:
            time.sleep(self.delay)
        found = self.bodies[url]
        if isinstance(found, FetchError):
            raise found
        return HttpResponse(200, {"content-type": "application/pkix-crl"}, found)


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI()


@pytest.fixture
def fetch(monkeypatch: pytest.MonkeyPatch) -> FakeFetch:
    fake = FakeFetch()
    monkeypatch.setattr(crl_module, "request", fake)
    return fake


@pytest.fixture
def sources() -> Iterator[list[CrlSource]]:
    made: list[CrlSource] = []
    yield made
    for source in made:
        source.close()


class Recorder:
    def __init__(self, validator: CertificateValidator | None = None) -> None:
        self.validator = validator
        self.calls: list[list[bytes]] = []

    def __call__(self, crls: Sequence[x509.CertificateRevocationList]) -> None:
        if self.validator is not None:
            self.validator.update_crls(crls)  # ValueError: refused
        self.calls.append([der(c) for c in crls])


def test_at_least_one_url_is_required() -> None:
    with pytest.raises(ValueError, match="at least one CRL URL"):
        CrlSource([], Recorder(), refresh=60, start=False)


def test_repr_names_the_urls_and_completeness(
    fetch: FakeFetch, pki: TestPKI, sources: list[CrlSource]
) -> None:
    fetch.bodies[URL_A] = der(pki.crl())
    source = CrlSource([URL_A, URL_A], Recorder(), refresh=3600, start=False)
    sources.append(source)
    assert repr(source) == f"CrlSource(urls=[{URL_A!r}], complete=False)"  # duplicates dropped
    source.refresh_now()
    assert repr(source) == f"CrlSource(urls=[{URL_A!r}], complete=True)"


def test_EIDAS_01_rolled_back_crl_number_is_refused(
    fetch: FakeFetch, pki: TestPKI, sources: list[CrlSource]
) -> None:
    """Same lastUpdate, lower cRLNumber: an older CRL replayed over http must not replace the current one."""
    when = pki.now - dt.timedelta(minutes=5)
    current = numbered_crl(pki, 7, last_update=when)
    fetch.bodies[URL_A] = der(current)
    recorder = Recorder()
    source = CrlSource([URL_A], recorder, refresh=3600, start=False)
    sources.append(source)
    assert source.refresh_now() is True
    fetch.bodies[URL_A] = der(numbered_crl(pki, 6, last_update=when))
    assert source.refresh_now() is False
    assert source.last_error == f"{URL_A}: older_than_current"
    assert recorder.calls == [[der(current)]]
    assert source.complete  # the last good CRL stays in force
    fetch.bodies[URL_A] = der(numbered_crl(pki, 8, last_update=when))
    assert source.refresh_now() is True
    assert source.last_error is None


def test_EIDAS_01_one_refused_crl_does_not_block_the_others(
    fetch: FakeFetch, pki: TestPKI, sources: list[CrlSource], caplog: pytest.LogCaptureFixture
) -> None:
    validator = CertificateValidator(anchors=[pki.root], intermediates=[pki.intermediate])
    forged = pki.crl(signing_key=ec.generate_private_key(ec.SECP256R1()))
    good = pki.crl([4242])
    fetch.bodies.update({URL_A: der(good), URL_B: der(forged)})
    recorder = Recorder(validator)
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        source = CrlSource([URL_A, URL_B], recorder, refresh=3600, start=False)
        sources.append(source)
        assert source.refresh_now() is True  # URL_A's CRL applies on its own
    assert recorder.calls == [[der(good)]]
    assert not source.complete  # URL_B never gave a CRL that verified
    assert source.last_error is not None
    assert source.last_error.startswith(f"{URL_B}: refused (")
    assert any(URL_B in r.getMessage() for r in caplog.records)


def test_EIDAS_01_every_crl_refused_changes_nothing(
    fetch: FakeFetch, pki: TestPKI, sources: list[CrlSource]
) -> None:
    validator = CertificateValidator(anchors=[pki.root], intermediates=[pki.intermediate])
    other_key = ec.generate_private_key(ec.SECP256R1())
    fetch.bodies.update(
        {URL_A: der(pki.crl(signing_key=other_key)), URL_B: der(pki.crl(signing_key=other_key))}
    )
    source = CrlSource([URL_A, URL_B], Recorder(validator), refresh=3600, start=False)
    sources.append(source)
    assert source.refresh_now() is False
    assert not source.complete
    assert source.last_error is not None
    assert source.last_error.startswith(f"{URL_B}: refused (")


def test_start_up_deadline_is_shared_by_every_url(
    fetch: FakeFetch, pki: TestPKI, sources: list[CrlSource], caplog: pytest.LogCaptureFixture
) -> None:
    fetch.bodies.update({URL_A: der(pki.crl()), URL_B: der(pki.crl())})
    fetch.delay = 0.06  # the first fetch uses up the whole start-up time
    with caplog.at_level(logging.ERROR, logger="bankguard"):
        source = CrlSource([URL_A, URL_B], Recorder(), refresh=3600, timeout=0.05)
    sources.append(source)
    assert fetch.calls[0][0] == URL_A
    assert fetch.calls[0][1] <= 0.05  # the start-up deadline bounds the first fetch too
    assert URL_B not in [url for url, _ in fetch.calls[:2]]  # no time left: never asked
    assert source.last_error == f"{URL_B}: timeout"
    assert not source.complete
    assert any("no CRL yet from" in r.getMessage() and URL_B in r.getMessage() for r in caplog.records)


def test_start_is_idempotent_and_closed_sources_fetch_nothing(
    fetch: FakeFetch, pki: TestPKI, sources: list[CrlSource]
) -> None:
    fetch.bodies[URL_A] = der(pki.crl())
    source = CrlSource([URL_A], Recorder(), refresh=3600)
    sources.append(source)
    thread = source._thread
    source.start()  # already started: no second fetch, no second thread
    assert source.fetch_count == 1
    assert source._thread is thread
    source.close()
    assert source.refresh_now() is False
    assert source.fetch_count == 1
    source.start()
    assert source.fetch_count == 1


def test_refresh_after_fork_without_a_thread(
    fetch: FakeFetch, pki: TestPKI, sources: list[CrlSource]
) -> None:
    fetch.bodies[URL_A] = der(pki.crl())
    source = CrlSource([URL_A], Recorder(), refresh=3600, start=False)
    sources.append(source)
    source._pid = -1  # as seen from a forked child
    assert source.refresh_now() is True
    assert source._thread is None  # never started: no thread is spawned in the child either
    assert source.complete


def test_fork_gives_the_child_a_fresh_restart_lock() -> None:
    held = crl_module._restart_lock
    with held:  # held by a parent thread at fork time: the child must not inherit it locked
        crl_module._fresh_restart_lock()
        assert crl_module._restart_lock is not held
        assert not crl_module._restart_lock.locked()
    crl_module._restart_lock = held


def test_fetch_failures_are_reported_per_url(
    fetch: FakeFetch, pki: TestPKI, sources: list[CrlSource]
) -> None:
    fetch.bodies.update({URL_A: der(pki.crl()), URL_B: FetchError("connection_failed")})
    source = CrlSource([URL_A, URL_B], Recorder(), refresh=3600, start=False)
    sources.append(source)
    assert source.refresh_now() is True
    assert source.last_error == f"{URL_B}: connection_failed"
    assert not source.complete
