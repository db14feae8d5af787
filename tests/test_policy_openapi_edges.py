"""Load-time checks of the ``openapi`` section: response validation limits, minimisation scopes
and the base path, each refused value named by its YAML path (CFG-09, OWASP API3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bankguard import Policy
from bankguard.errors import ConfigurationError
from bankguard.policy_openapi import MinimisePolicy, OpenApiPolicy

NICKNAME = "#/components/schemas/Account/properties/Nickname"


def problems_of(openapi: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigurationError) as info:
        Policy.from_dict({"openapi": openapi})
    return {p.path: p.message for p in info.value.problems}


@pytest.mark.parametrize("value", ["cards:full", {"cards:full": True}])
def test_reveal_pan_scopes_must_be_a_list(value: object) -> None:
    found = problems_of({"minimise": {"reveal_pan_scopes": value}})
    assert found == {"openapi.minimise.reveal_pan_scopes": "expected a list of scopes"}


@pytest.mark.parametrize("scope", ["cards full", 'cards"', "", 7])
def test_reveal_pan_scopes_entries_are_scope_tokens(scope: object) -> None:
    found = problems_of({"minimise": {"reveal_pan_scopes": ["cards", scope]}})
    assert found == {
        "openapi.minimise.reveal_pan_scopes[1]": f"{scope!r} is not a scope-token (RFC 6749 §3.3)"
    }


def test_property_scopes_must_be_a_mapping() -> None:
    found = problems_of({"minimise": {"property_scopes": [NICKNAME]}})
    assert found == {
        "openapi.minimise.property_scopes": "expected a mapping of schema locations to lists of scopes"
    }


def test_property_scopes_keys_are_schema_locations() -> None:
    found = problems_of({"minimise": {"property_scopes": {"Account.Nickname": ["accounts"]}}})
    assert list(found) == ["openapi.minimise.property_scopes"]
    assert found["openapi.minimise.property_scopes"].startswith("'Account.Nickname': a location such as")


def test_property_scopes_values_name_their_location() -> None:
    found = problems_of({"minimise": {"property_scopes": {NICKNAME: ["ok", "not ok"]}}})
    assert found == {
        f"openapi.minimise.property_scopes.{NICKNAME}[1]": "'not ok' is not a scope-token (RFC 6749 §3.3)"
    }


def test_property_scopes_are_kept_sorted_and_survive_a_rebuild() -> None:
    rules = {NICKNAME: ["accounts:nickname"], "#/components/schemas/Account/properties/Alias": ["a"]}
    minimise = Policy.from_dict({"openapi": {"minimise": {"property_scopes": rules}}}).openapi.minimise
    assert minimise.property_scopes == (
        ("#/components/schemas/Account/properties/Alias", ("a",)),
        (NICKNAME, ("accounts:nickname",)),
    )
    # Already converted pairs (e.g. dataclasses.replace) are accepted as they are.
    assert MinimisePolicy(property_scopes=minimise.property_scopes) == minimise


@pytest.mark.parametrize("rate", [0, 1.5])
def test_sample_rate_bounds(rate: float) -> None:
    found = problems_of({"responses": {"mode": "sample", "sample_rate": rate}})
    assert found == {"openapi.responses.sample_rate": "must be above 0 and at most 1"}


@pytest.mark.parametrize("size", ["1023B", "65MiB"])
def test_response_buffer_bounds(size: str) -> None:
    found = problems_of({"responses": {"max_body_bytes": size}})
    assert found == {"openapi.responses.max_body_bytes": "must be between 1 KiB and 64 MiB"}


@pytest.mark.parametrize("base_path", ["open-banking/v4.0", "/open-banking/v4.0/"])
def test_base_path_form(base_path: str) -> None:
    found = problems_of({"base_path": base_path})
    assert found == {
        "openapi.base_path": "must start with '/' and not end with one, e.g. /open-banking/v4.0/aisp"
    }


def test_root_base_path_is_allowed() -> None:
    assert Policy.from_dict({"openapi": {"base_path": "/"}}).openapi.base_path == "/"


def test_configured_only_with_a_spec(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("openapi: 3.0.3\n")
    assert not OpenApiPolicy().configured
    assert OpenApiPolicy(spec=str(spec)).configured
