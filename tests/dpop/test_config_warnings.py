"""Load-time and start-up signals around DPoP configuration (STANDARDS CFG-08; RFC 9449 §11.1).

* memory:// replay entries with several workers (``WEB_CONCURRENCY``) → a warning naming CFG-08;
* a DPoP request served in a process forked after the guard was built → one warning;
* Redis URIs are taken case-insensitively, plain http origins off loopback are warned about;
* two origins on one host with different path prefixes are both accepted for ``htu``;
* the UK Open Banking profile refuses DPoP (mutual TLS only, like FAPI 1.0 Advanced).
"""

from __future__ import annotations

import logging
import os

import pytest

from bankguard import ConfigurationError, Guard, Policy
from bankguard.testing import DPoPKey, TestIssuer, make_facts

NOW = 1_767_225_600.0
ISSUER = TestIssuer("https://as.bank.example", alg="ES256")


def _policy(**extra: object) -> Policy:
    data: dict[str, object] = {
        "external_origins": ["https://api.bank.example"],
        "tokens": {
            "issuers": [
                {
                    "issuer": ISSUER.issuer,
                    "audiences": ["https://api.bank.example"],
                    "algorithms": ["ES256"],
                    "jwks": ISSUER.jwks(),
                }
            ]
        },
        "routes": {"operations": [{"method": "GET", "path": "/accounts"}]},
        "dpop": {"enabled": True},
    }
    data.update(extra)
    return Policy.from_dict(data)


def test_CFG_08_memory_storage_with_several_workers_is_warned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        Guard(_policy())
    assert any("CFG-08" in r.getMessage() and "WEB_CONCURRENCY=4" in r.getMessage() for r in caplog.records)


def test_CFG_08_no_warning_with_one_worker(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        Guard(_policy())
    assert not any("CFG-08" in r.getMessage() for r in caplog.records)


def test_CFG_08_a_forked_worker_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    guard = Guard(_policy(), clock=lambda: NOW)
    assert guard.tokens is not None
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a process forked after the guard was built
    key = DPoPKey()
    token = ISSUER.mint(dpop_key=key, now=NOW)
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        for _ in range(3):
            proof = key.proof("GET", "https://api.bank.example/accounts", access_token=token, iat=NOW)
            facts = make_facts(
                "GET", "/accounts", headers=[("authorization", f"DPoP {token}"), ("dpop", proof)]
            )
            assert guard.decide(facts).allowed
    assert sum("forked worker" in r.getMessage() for r in caplog.records) == 1


def test_storage_uri_scheme_is_case_insensitive() -> None:
    policy = _policy(storage={"uri": "REDIS://127.0.0.1:6379/0"})
    assert policy.storage.uri == "redis://127.0.0.1:6379/0"
    guard = Guard(policy)
    guard.close()


def test_plain_http_origin_off_loopback_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        _policy(external_origins=["http://api.bank.example", "http://127.0.0.1:8000"])
    messages = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
    assert len(messages) == 1
    assert messages[0].startswith("policy: external origin http://api.bank.example is plain http")


def test_DPOP_11_two_prefixes_on_one_host_are_both_origins() -> None:
    policy = _policy(external_origins=["https://www.bank.example/v1", "https://www.bank.example/v2"])
    guard = Guard(policy, clock=lambda: NOW)
    key = DPoPKey()
    token = ISSUER.mint(dpop_key=key, now=NOW)
    for url in ("https://www.bank.example/v1/accounts", "https://www.bank.example/v2/accounts"):
        proof = key.proof("GET", url, access_token=token, iat=NOW)
        facts = make_facts("GET", "/accounts", headers=[("authorization", f"DPoP {token}"), ("dpop", proof)])
        assert guard.decide(facts).allowed, url
    proof = key.proof("GET", "https://www.bank.example/v3/accounts", access_token=token, iat=NOW)
    facts = make_facts("GET", "/accounts", headers=[("authorization", f"DPoP {token}"), ("dpop", proof)])
    assert guard.decide(facts).event.reason == "dpop.htu_path_mismatch"


@pytest.mark.parametrize("profile", ["obie", "fapi1-adv"])
def test_MTLS_06_mutual_tls_profiles_refuse_dpop(profile: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        _policy(profile=profile, dpop={"enabled": True, "algorithms": ["PS256", "ES256"]})
    assert [p.path for p in info.value.problems] == ["dpop.enabled"]
    assert "mutual TLS only" in str(info.value)
