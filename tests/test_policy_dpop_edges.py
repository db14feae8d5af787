"""Load-time checks of ``external_origins``, ``dpop`` and ``storage``: each refused value names
its YAML path (DPOP-11, DPOP-12, CFG-06, CFG-07, CFG-08)."""

from __future__ import annotations

from typing import Any

import pytest

from bankguard import Policy
from bankguard.errors import ConfigurationError
from bankguard.policy_dpop import Origin, StoragePolicy, parse_origins

JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43}]}
TOKENS = {
    "issuers": [
        {
            "issuer": "https://as.bank.example",
            "audiences": ["https://api.bank.example"],
            "algorithms": ["ES256"],
            "jwks": JWKS,
        }
    ]
}


def problems_of(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigurationError) as info:
        Policy.from_dict(data)
    return {p.path: p.message for p in info.value.problems}


# -- external origins (DPOP-11) ------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://api.bank.example:99999", "https://[::1"])
def test_DPOP_11_origin_that_does_not_parse(url: str) -> None:
    assert problems_of({"external_origins": [url]}) == {"external_origins[0]": f"{url!r} is not a valid URL"}


def test_DPOP_11_origin_with_port_zero() -> None:
    found = problems_of({"external_origins": ["https://api.bank.example", "https://api.bank.example:0"]})
    assert found == {"external_origins[1]": "'https://api.bank.example:0' has an invalid port"}


@pytest.mark.parametrize(
    "url", ["https://api.bank.example/a/./b", "https://api.bank.example/a/../b", "https://h//a"]
)
def test_DPOP_11_origin_path_prefix_must_be_normal(url: str) -> None:
    found = problems_of({"external_origins": [url]})
    assert found == {"external_origins[0]": f"{url!r}: the path prefix must be in normal form"}


def test_DPOP_11_origin_listed_twice_after_normalisation() -> None:
    found = problems_of({"external_origins": ["https://API.bank.example:443/", "https://api.bank.example"]})
    assert found == {"external_origins": "lists an origin twice"}


def test_DPOP_11_origins_are_normalised() -> None:
    origins = parse_origins(
        ["HTTPS://API.Bank.Example:443/v1/", "http://[::1]:8080", Origin("https", "x.example")], "o"
    )
    assert [str(o) for o in origins] == [
        "https://api.bank.example/v1",
        "http://[::1]:8080",
        "https://x.example",
    ]


# -- dpop ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["ES256", []])
def test_CFG_06_dpop_algorithms_must_be_a_list(value: object) -> None:
    found = problems_of({"dpop": {"algorithms": value}})
    assert found == {
        "dpop.algorithms": "expected a non-empty list of asymmetric JWS algorithms, e.g. [ES256, PS256]"
    }


def test_DPOP_05_dpop_algorithm_listed_twice() -> None:
    found = problems_of({"dpop": {"algorithms": ["ES256", "PS256", "ES256"]}})
    assert found == {"dpop.algorithms[2]": "ES256 is listed twice"}


def test_DPOP_05_dpop_refuses_symmetric_algorithms() -> None:
    found = problems_of({"dpop": {"algorithms": ["HS256"]}})
    assert list(found) == ["dpop.algorithms[0]"]
    assert "not an asymmetric JWS algorithm" in found["dpop.algorithms[0]"]


# -- storage (CFG-08) ---------------------------------------------------------------------------


def test_storage_uri_must_be_a_string() -> None:
    found = problems_of({"storage": {"uri": 6379}})
    assert found == {
        "storage.uri": "expected a storage URI such as memory:// or redis://host:6379/0, got 6379"
    }


@pytest.mark.parametrize("uri", ["localhost:6379", "memcached://cache:11211", ""])
def test_storage_uri_scheme_must_be_known(uri: str) -> None:
    found = problems_of({"storage": {"uri": uri}})
    assert list(found) == ["storage.uri"]
    assert found["storage.uri"].startswith("use memory://, redis://")


def test_memory_storage_takes_no_host() -> None:
    assert problems_of({"storage": {"uri": "memory://cache"}}) == {
        "storage.uri": "memory:// takes no host or options"
    }


def test_storage_uri_must_not_contain_whitespace() -> None:
    assert problems_of({"storage": {"uri": "redis://cache:6379/0 "}}) == {
        "storage.uri": "must not contain whitespace"
    }


def test_storage_scheme_is_lower_cased_and_marks_shared_state() -> None:
    storage = Policy.from_dict({"storage": {"uri": "REDIS://cache:6379/0"}}).storage
    assert storage.uri == "redis://cache:6379/0"
    assert storage.shared
    assert not StoragePolicy().shared


def test_storage_limits_are_checked_together() -> None:
    found = problems_of({"storage": {"timeout": "6s", "max_entries": 999, "prefix": "bank guard:"}})
    assert found == {
        "storage.timeout": "must be between 0 and 5 seconds",
        "storage.max_entries": "must be at least 1000",
        "storage.prefix": "must be a non-empty string without whitespace",
    }
    assert problems_of({"storage": {"prefix": ""}}) == {
        "storage.prefix": "must be a non-empty string without whitespace"
    }


def test_storage_uri_is_kept_out_of_repr() -> None:
    storage = StoragePolicy(uri="redis://:hunter2@cache:6379/0")
    assert "hunter2" not in repr(storage)


def test_dpop_with_memory_storage_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="bankguard"):
        Policy.from_dict(
            {"tokens": TOKENS, "external_origins": ["https://api.bank.example"], "dpop": {"enabled": True}}
        )
    assert any("DPoP replay entries are kept in memory://" in r.getMessage() for r in caplog.records)
