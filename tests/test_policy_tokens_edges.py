"""The ``tokens`` policy section: issuers, key refresh and introspection settings that are
refused at load time, each with the YAML path of the offending key (CFG-05, CFG-07, JWT-24,
JWKS-02/04, RFC 7662 §2.1, RFC 8725 §3.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bankguard import Policy
from bankguard.errors import ConfigurationError

JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43}]}
SECRET_ENV = "BANKGUARD_EDGES_SECRET"


def issuer(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "issuer": "https://as.bank.example",
        "audiences": ["https://api.bank.example"],
        "algorithms": ["ES256"],
        "jwks": JWKS,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def introspection(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "endpoint": "https://as.bank.example/introspect",
        "client_id": "rs",
        "client_secret_env": SECRET_ENV,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def problems_of(tokens: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigurationError) as info:
        Policy.from_dict({"tokens": tokens})
    return {p.path: p.message for p in info.value.problems}


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SECRET_ENV, "s" * 64)
    return SECRET_ENV


# -- issuers ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["ES256", [], {"ES256": True}])
def test_CFG_05_algorithms_must_be_a_non_empty_list(value: object) -> None:
    found = problems_of({"issuers": [issuer(algorithms=value)]})
    assert list(found) == ["tokens.issuers[0].algorithms"]
    assert found["tokens.issuers[0].algorithms"].startswith("expected a non-empty list of JWS algorithms")


@pytest.mark.parametrize("alg", ["none", "es256", 256])
def test_CFG_05_unknown_algorithm_names_its_index(alg: object) -> None:
    found = problems_of({"issuers": [issuer(algorithms=["PS256", alg])]})
    assert list(found) == ["tokens.issuers[0].algorithms[1]"]
    assert "is not a supported algorithm" in found["tokens.issuers[0].algorithms[1]"]


def test_JWKS_02_min_ttl_must_not_exceed_max_ttl() -> None:
    found = problems_of({"issuers": [issuer(refresh={"min_ttl": "2h", "max_ttl": "1h"})]})
    assert found == {"tokens.issuers[0].refresh.min_ttl": "must not exceed max_ttl"}


@pytest.mark.parametrize("timeout", [0, "31s"])
def test_jwks_fetch_timeout_is_bounded(timeout: object) -> None:
    found = problems_of({"issuers": [issuer(refresh={"timeout": timeout})]})
    assert found == {"tokens.issuers[0].refresh.timeout": "must be between 0 and 30 seconds"}


def test_an_issuer_without_a_key_source_is_refused() -> None:
    found = problems_of({"issuers": [issuer(jwks=None)]})
    message = "name exactly one key source: jwks_uri, discovery, jwks_file, jwks or hmac_secret_env"
    assert found == {"tokens.issuers[0]": message}


def test_an_issuer_with_two_key_sources_is_refused() -> None:
    found = problems_of({"issuers": [issuer(jwks_uri="https://as.bank.example/jwks")]})
    assert found["tokens.issuers[0]"].endswith("(found jwks_uri, jwks)")


def test_empty_issuer_and_audiences_are_refused() -> None:
    found = problems_of({"issuers": [issuer(issuer="", audiences=["https://api.bank.example", ""])]})
    assert found == {
        "tokens.issuers[0].issuer": "must not be empty",
        "tokens.issuers[0].audiences": "list at least one non-empty audience",
    }
    found = problems_of({"issuers": [issuer(audiences=[])]})
    assert found == {"tokens.issuers[0].audiences": "list at least one non-empty audience"}


def test_ATK_30_shared_secret_verifies_only_hs_algorithms(secret: str) -> None:
    found = problems_of({"issuers": [issuer(jwks=None, hmac_secret_env=secret, algorithms=["ES256"])]})
    assert found == {"tokens.issuers[0].hmac_secret_env": "a shared secret verifies HS* algorithms only"}


def test_JWT_10_typ_list_must_not_be_empty() -> None:
    found = problems_of({"issuers": [issuer(typ=[])]})
    assert found == {"tokens.issuers[0].typ": "list at least one accepted typ, normally at+jwt"}


def test_JWT_10_extra_typ_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="bankguard"):
        policy = Policy.from_dict({"tokens": {"issuers": [issuer(typ=["at+jwt", "JWT"])]}})
    assert policy.tokens.issuers[0].typ == ("at+jwt", "JWT")
    assert any("JWT-10" in r.getMessage() for r in caplog.records)


def test_CFG_03_plain_http_discovery_is_refused_without_insecure_http() -> None:
    found = problems_of({"issuers": [issuer(jwks=None, discovery="http://127.0.0.1:1/.well-known/x")]})
    assert found == {
        "tokens.issuers[0].discovery": "must be https:// (set insecure_http: true for local tests only)"
    }


def test_repeated_issuer_names_the_first_occurrence() -> None:
    found = problems_of({"issuers": [issuer(), issuer(audiences=["other"])]})
    assert found == {"tokens.issuers[1].issuer": "repeats issuers[0]"}


def test_cache_entries_must_not_be_negative() -> None:
    found = problems_of({"issuers": [issuer()], "cache_entries": -1})
    assert found == {"tokens.cache_entries": "must not be negative"}


def test_CFG_07_leeway_future_iat_and_token_size_bounds() -> None:
    found = problems_of(
        {"issuers": [issuer()], "leeway": "301s", "max_future_iat": 61, "max_token_bytes": "100KiB"}
    )
    assert set(found) == {"tokens.leeway", "tokens.max_future_iat", "tokens.max_token_bytes"}


# -- introspection ---------------------------------------------------------------------


def test_client_secret_auth_needs_a_variable_name() -> None:
    found = problems_of({"introspection": introspection(client_secret_env=None)})
    assert found == {"tokens.introspection.client_secret_env": "client_secret_basic needs client_secret_env"}


def test_client_secret_variable_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    found = problems_of({"introspection": introspection(auth="client_secret_post")})
    assert found == {
        "tokens.introspection.client_secret_env": f"environment variable {SECRET_ENV} is not set"
    }


def test_tls_client_auth_needs_https() -> None:
    found = problems_of(
        {
            "introspection": introspection(
                endpoint="http://127.0.0.1:9/introspect", auth="tls_client_auth", insecure_http=True
            )
        }
    )
    assert found == {"tokens.introspection.endpoint": "tls_client_auth needs an https:// endpoint"}


def test_tls_client_auth_needs_certificate_and_key(tmp_path: Path) -> None:
    cert = tmp_path / "rs.pem"
    cert.write_text("x")
    found = problems_of({"introspection": introspection(auth="tls_client_auth", client_cert_file=str(cert))})
    assert found == {
        "tokens.introspection.auth": "tls_client_auth needs client_cert_file and client_key_file"
    }


def test_tls_client_auth_with_both_files_loads(tmp_path: Path) -> None:
    cert, key = tmp_path / "rs.pem", tmp_path / "rs.key"
    cert.write_text("x")
    key.write_text("y")
    policy = Policy.from_dict(
        {
            "tokens": {
                "introspection": introspection(
                    auth="tls_client_auth", client_cert_file=str(cert), client_key_file=str(key)
                )
            }
        }
    )
    assert policy.tokens.introspection is not None
    assert policy.tokens.introspection.client_key_file == str(key)


def test_CFG_03_plain_http_endpoint_is_refused_without_insecure_http(secret: str) -> None:
    found = problems_of({"introspection": introspection(endpoint="http://127.0.0.1:9/introspect")})
    assert found == {
        "tokens.introspection.endpoint": "must be https:// (set insecure_http: true for local tests only)"
    }


def test_introspection_cache_and_timeout_bounds(secret: str) -> None:
    found = problems_of({"introspection": introspection(negative_cache_ttl="61s", timeout=0)})
    assert found == {
        "tokens.introspection.negative_cache_ttl": "must be at most 60 seconds",
        "tokens.introspection.timeout": "must be between 0 and 30 seconds",
    }
