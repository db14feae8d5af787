"""Static key sets and the token runtime built from the policy: JWKS files, unusable JWKs that are
skipped with a logged reason, oversized key sets, and start-up errors that name their policy path
(JWKS-01..05, JWT-12, RFC 7517 §4-5, RFC 7518 §6, RFC 8037 §2)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from bankguard import EventCollector, Guard, Policy
from bankguard.errors import ConfigurationError
from bankguard.testing import DPoPKey, TestIssuer, make_facts
from bankguard.tokens.keys import KeyIndex, StaticKeySource

ISSUER = TestIssuer("https://as.bank.example", alg="ES256", kid="k1")
AUDIENCE = "https://api.bank.example"


def issuer_policy(**source: Any) -> dict[str, Any]:
    return {"issuer": ISSUER.issuer, "audiences": [AUDIENCE], "algorithms": ["ES256"], **source}


def guard_for(tokens: dict[str, Any], **sections: Any) -> Guard:
    return Guard(
        Policy.from_dict(
            {"tokens": tokens, "routes": {"operations": [{"method": "GET", "path": "/a"}]}, **sections}
        ),
        sink=EventCollector(),
    )


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


# -- JWKS files --------------------------------------------------------------------------------


def test_JWKS_jwks_file_verifies_tokens(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(ISSUER.jwks()))
    guard = guard_for({"issuers": [issuer_policy(jwks_file=str(path))]})
    assert guard.decide(make_facts("GET", "/a", headers=bearer(ISSUER.mint()))).allowed
    other = TestIssuer(ISSUER.issuer, alg="ES256", kid="k1")
    assert not guard.decide(make_facts("GET", "/a", headers=bearer(other.mint()))).allowed


def test_JWKS_jwks_file_over_one_mebibyte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": ISSUER.jwks()["keys"], "padding": "x" * (1024 * 1024)}))
    with pytest.raises(ConfigurationError) as info:
        guard_for({"issuers": [issuer_policy(jwks_file=str(path))]})
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("tokens.issuers[0]", "cannot use the key set: jwks_too_large")
    ]


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"keys": {}}'])
def test_JWKS_jwks_file_that_is_not_a_key_set(tmp_path: Path, text: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        guard_for({"issuers": [issuer_policy(jwks_file=str(path))]})
    assert info.value.path == "tokens.issuers[0]"
    assert info.value.problems[0].message.startswith("cannot use the key set: ")


def test_JWKS_jwks_file_without_a_usable_key(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    with pytest.raises(ConfigurationError) as info:
        guard_for({"issuers": [issuer_policy(jwks_file=str(path))]})
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("tokens.issuers[0].jwks_file", "the key set holds no usable key for the listed algorithms")
    ]


# -- unusable keys are skipped, with the reason logged ----------------------------------------------


BAD_KEYS = [
    ("not a key", "not an object"),
    ({"kty": "RSA", "kid": "r", "n": "", "e": "AQAB"}, "jwk_n_empty"),
    ({"kty": "EC", "kid": "k", "crv": "secp256k1", "x": "AA", "y": "AA"}, "jwk_curve_not_supported"),
    ({"kty": "EC", "kid": "e1", "crv": "P-256", "x": 1, "y": "AA"}, "jwk_ec_coordinates"),
    ({"kty": "EC", "kid": "e2", "crv": "P-256", "x": "AAAA", "y": "AAAA"}, "jwk_ec_coordinates"),
    ({"kty": "OKP", "kid": "o", "crv": "Ed25519", "x": None}, "jwk_okp_x"),
    ({"kty": "oct", "kid": "s", "k": "c2VjcmV0"}, "jwk_private_material"),
    ({"kty": "XYZ", "kid": "u"}, "jwk_kty_not_supported"),
]


def test_JWKS_unusable_keys_are_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    document = {"keys": [key for key, _ in BAD_KEYS] + ISSUER.jwks()["keys"]}
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        guard = guard_for({"issuers": [issuer_policy(jwks=document)]})
    skipped = [r.getMessage() for r in caplog.records if "key skipped" in r.getMessage()]
    assert len(skipped) == len(BAD_KEYS)
    for message, (_, reason) in zip(skipped, BAD_KEYS, strict=True):
        assert message.endswith(reason), message
    # The good key still verifies.
    assert guard.decide(make_facts("GET", "/a", headers=bearer(ISSUER.mint()))).allowed


def test_JWKS_keys_beyond_the_cap_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    filler = {"kty": "oct", "k": "c2VjcmV0"}
    document = {"keys": ISSUER.jwks()["keys"] + [filler] * 64}
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        guard_for({"issuers": [issuer_policy(jwks=document)]})
    assert any(r.getMessage().endswith("keys beyond the first 64 ignored") for r in caplog.records)


def test_static_source_describes_itself_and_never_refetches() -> None:
    source, skipped = StaticKeySource.from_jwks(ISSUER.issuer, ISSUER.jwks(), frozenset({"ES256"}))
    assert skipped == []
    assert repr(source) == f"StaticKeySource(issuer={ISSUER.issuer!r}, KeyIndex(kids=['k1'], keys=1))"
    assert source.refresh_unknown_kid() is False
    index = source.current()
    assert isinstance(index, KeyIndex)
    assert len(index) == 1
    assert index.knows("k1")
    assert not index.knows("k2")


# -- the runtime built from the policy ----------------------------------------------------------------


def test_CFG_nonce_key_changed_after_loading_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BANKGUARD_EDGES_NONCE", "n" * 32)
    policy = Policy.from_dict(
        {
            "external_origins": ["https://api.bank.example"],
            "tokens": {"issuers": [issuer_policy(jwks=ISSUER.jwks())]},
            "dpop": {"enabled": True, "nonce": {"enabled": True, "secret_env": "BANKGUARD_EDGES_NONCE"}},
        }
    )
    monkeypatch.setenv("BANKGUARD_EDGES_NONCE", "short")
    with pytest.raises(ConfigurationError) as info:
        Guard(policy, sink=EventCollector())
    assert info.value.path == "dpop.nonce.secret_env"


def test_DPOP_23_nonce_mode_asks_for_a_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANKGUARD_EDGES_NONCE", "n" * 32)
    policy = Policy.from_dict(
        {
            "external_origins": ["https://api.bank.example"],
            "tokens": {"issuers": [issuer_policy(jwks=ISSUER.jwks())]},
            "dpop": {"enabled": True, "nonce": {"enabled": True, "secret_env": "BANKGUARD_EDGES_NONCE"}},
            "routes": {"operations": [{"method": "GET", "path": "/a"}]},
        }
    )
    guard = Guard(policy, sink=EventCollector())
    key = DPoPKey("ES256")
    token = ISSUER.mint(dpop_key=key)
    proof = key.proof("GET", "https://api.bank.example/a", access_token=token)
    decision = guard.decide(
        make_facts("GET", "/a", headers=[("authorization", f"DPoP {token}"), ("dpop", proof)])
    )
    assert not decision.allowed
    problem = guard.problem(decision)
    headers = dict(problem.headers)
    assert problem.status == 401
    assert 'error="use_dpop_nonce"' in headers["www-authenticate"]
    assert headers["dpop-nonce"]


def test_redis_storage_without_the_redis_package(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.from_dict({"storage": {"uri": "redis://127.0.0.1:1/0"}})
    monkeypatch.setitem(sys.modules, "bankguard.stores_redis", None)  # as if redis were not installed
    with pytest.raises(ConfigurationError) as info:
        Guard(policy, sink=EventCollector())
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("storage.uri", "a Redis storage needs the redis package: pip install 'bankguard[redis]'")
    ]


def test_closing_a_guard_with_introspection_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANKGUARD_EDGES_SECRET", "s" * 32)
    policy = Policy.from_dict(
        {
            "tokens": {
                "introspection": {
                    "endpoint": "https://as.bank.example/introspect",
                    "client_id": "rs",
                    "client_secret_env": "BANKGUARD_EDGES_SECRET",
                }
            }
        }
    )
    guard = Guard(policy, sink=EventCollector())
    guard.close()
    guard.close()  # idempotent
    assert guard.evict_token("opaque") is False
