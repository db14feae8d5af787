"""DPoP nonces across workers (RFC 9449 §8, §9; STANDARDS DPOP-23, DPOP-25).

Nonces are stateless and HMAC-tagged, so every worker that holds the same key accepts the
nonces any of them issued, with no shared store, while a server with another key (another API,
the authorization server) refuses them. Each ``Guard`` below stands for one worker process: it
shares nothing in memory with the other.
"""

from __future__ import annotations

import pytest

from bankguard import Guard, Policy
from bankguard.testing import DPoPKey, TestIssuer, make_facts

NOW = 1_767_225_600.0
ORIGIN = "https://api.bank.example"
ISSUER = TestIssuer("https://as.bank.example", alg="ES256")


def _policy(monkeypatch: pytest.MonkeyPatch, secret: str) -> Policy:
    monkeypatch.setenv("DPOP_NONCE_KEY", secret)
    return Policy.from_dict(
        {
            "profile": "fapi2",
            "external_origins": [ORIGIN],
            "tokens": {
                "issuers": [
                    {
                        "issuer": ISSUER.issuer,
                        "audiences": [ORIGIN],
                        "algorithms": ["ES256"],
                        "jwks": ISSUER.jwks(),
                    }
                ]
            },
            "routes": {"operations": [{"method": "GET", "path": "/accounts", "scopes": ["accounts"]}]},
            "dpop": {"enabled": True, "nonce": {"enabled": True, "secret_env": "DPOP_NONCE_KEY"}},
        }
    )


def _request(guard: Guard, key: DPoPKey, token: str, nonce: str | None) -> tuple[int, dict[str, str], str]:
    proof = key.proof("GET", f"{ORIGIN}/accounts", access_token=token, nonce=nonce, iat=NOW)
    decision = guard.decide(
        make_facts("GET", "/accounts", headers=[("authorization", f"DPoP {token}"), ("dpop", proof)])
    )
    if decision.allowed:
        return 200, dict(decision.response_headers), decision.event.reason or ""
    problem = guard.problem(decision)
    return problem.status, dict(problem.headers), decision.event.reason or ""


def test_DPOP_23_nonce_issued_by_one_worker_is_accepted_by_another(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "k" * 48
    worker_a = Guard(_policy(monkeypatch, secret), clock=lambda: NOW)
    worker_b = Guard(_policy(monkeypatch, secret), clock=lambda: NOW)
    key = DPoPKey("ES256")
    token = ISSUER.mint(dpop_key=key, now=NOW)

    status, headers, reason = _request(worker_a, key, token, None)
    assert (status, reason) == (401, "dpop.nonce_missing")
    assert 'error="use_dpop_nonce"' in headers["www-authenticate"]
    nonce = headers["dpop-nonce"]

    status, _, reason = _request(worker_b, key, token, nonce)
    assert (status, reason) == (200, "")
    status, _, reason = _request(worker_a, key, token, nonce)
    assert (status, reason) == (200, "")


def test_DPOP_25_nonce_of_a_server_with_another_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    other_api = Guard(_policy(monkeypatch, "o" * 48), clock=lambda: NOW)
    this_api = Guard(_policy(monkeypatch, "k" * 48), clock=lambda: NOW)
    key = DPoPKey("ES256")
    token = ISSUER.mint(dpop_key=key, now=NOW)
    _, headers, _ = _request(other_api, key, token, None)
    foreign = headers["dpop-nonce"]

    status, headers, reason = _request(this_api, key, token, foreign)
    assert (status, reason) == (401, "dpop.nonce_invalid")
    assert 'error="use_dpop_nonce"' in headers["www-authenticate"]
    assert headers["dpop-nonce"] != foreign
    assert headers["cache-control"] == "no-store"
