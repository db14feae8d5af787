"""Strict conversion of policy data: wrong types, sizes, durations, URLs and file names are
refused with the YAML path and a message saying what is allowed (ARCHITECTURE property 2),
and route declarations that contradict themselves are refused (CFG-09)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bankguard import Policy
from bankguard._config import build, option
from bankguard.errors import ConfigurationError

JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43}]}


def issuer(**overrides: Any) -> dict[str, Any]:
    return {
        "issuer": "https://as.bank.example",
        "audiences": ["https://api.bank.example"],
        "algorithms": ["ES256"],
        "jwks": JWKS,
        **overrides,
    }


def problems_of(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigurationError) as info:
        Policy.from_dict(data)
    return {p.path: p.message for p in info.value.problems}


# -- types ---------------------------------------------------------------------------------


def test_list_of_strings_given_a_string() -> None:
    found = problems_of({"tokens": {"issuers": [issuer(audiences="https://api.bank.example")]}})
    assert found == {"tokens.issuers[0].audiences": "expected a list of a string, got a string"}


def test_list_of_sections_given_a_mapping() -> None:
    found = problems_of({"tokens": {"issuers": issuer()}})
    assert found == {"tokens.issuers": "expected a list of a mapping, got a mapping"}


def test_every_bad_list_item_is_reported() -> None:
    found = problems_of({"tokens": {"issuers": [issuer(audiences=["ok", 1, None])]}})
    assert found == {
        "tokens.issuers[0].audiences[1]": "expected a string, got an integer",
        "tokens.issuers[0].audiences[2]": "expected a string, got null",
    }


def test_mapping_given_a_list() -> None:
    found = problems_of({"tokens": {"issuers": [issuer(jwks=[JWKS])]}})
    assert found == {"tokens.issuers[0].jwks": "expected a mapping of object, got a list"}


def test_mapping_keys_must_be_strings() -> None:
    found = problems_of({"tokens": {"issuers": [issuer(jwks={1: "x"})]}})
    assert found == {"tokens.issuers[0].jwks": "key 1 must be a string"}


@pytest.mark.parametrize(("value", "kind"), [("1", "a string"), (True, "a boolean"), (1.5, "a number")])
def test_integer_fields_refuse_other_types(value: object, kind: str) -> None:
    found = problems_of({"client_cert": {"source": "asgi-tls", "xfcc_elements": value}})
    assert found == {"client_cert.xfcc_elements": f"expected an integer, got {kind}"}


@pytest.mark.parametrize(("value", "kind"), [("0.5", "a string"), (False, "a boolean")])
def test_number_fields_refuse_other_types(value: object, kind: str) -> None:
    found = problems_of({"openapi": {"responses": {"sample_rate": value}}})
    assert found == {"openapi.responses.sample_rate": f"expected a number, got {kind}"}


def test_section_given_a_scalar() -> None:
    assert problems_of({"tokens": "yes"}) == {"tokens": "expected a mapping, got a string"}


# -- value parsers -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [10**9, "1000000000s", "11575d"])
def test_duration_beyond_the_maximum(value: object) -> None:
    found = problems_of({"client_cert": {"source": "asgi-tls", "crl_refresh": value}})
    assert found == {"client_cert.crl_refresh": "must be a non-negative number of seconds"}


def test_negative_duration() -> None:
    found = problems_of({"client_cert": {"source": "asgi-tls", "crl_refresh": -1}})
    assert found == {"client_cert.crl_refresh": "must be a non-negative number of seconds"}


@pytest.mark.parametrize("url", ["https://as.bank.example:70000/jwks", "https://[fe80::1/jwks"])
def test_url_that_does_not_parse(url: str) -> None:
    found = problems_of({"tokens": {"issuers": [issuer(jwks=None, jwks_uri=url)]}})
    assert found == {"tokens.issuers[0].jwks_uri": f"{url!r} is not a valid URL"}


@pytest.mark.parametrize(
    "url", ["https://as.bank.example:0/jwks", "https://as.bank.example/a b", "https://h/a\\b"]
)
def test_url_with_port_zero_or_whitespace(url: str) -> None:
    found = problems_of({"tokens": {"issuers": [issuer(jwks=None, jwks_uri=url)]}})
    assert found == {"tokens.issuers[0].jwks_uri": f"{url!r} is not a valid URL"}


@pytest.mark.parametrize("url", ["https://user:pw@as.bank.example/jwks", "https://as.bank.example/jwks#k"])
def test_url_with_credentials_or_fragment(url: str) -> None:
    found = problems_of({"tokens": {"issuers": [issuer(jwks=None, jwks_uri=url)]}})
    assert found == {"tokens.issuers[0].jwks_uri": f"{url!r} must not carry credentials or a fragment"}


def test_url_scheme_is_lower_cased() -> None:
    policy = Policy.from_dict(
        {"tokens": {"issuers": [issuer(jwks=None, jwks_uri="HTTPS://as.bank.example/k")]}}
    )
    assert policy.tokens.issuers[0].jwks_uri == "https://as.bank.example/k"


def test_file_name_must_be_text() -> None:
    found = problems_of({"client_cert": {"source": "asgi-tls", "trust_anchors": 42}})
    assert found == {"client_cert.trust_anchors": "expected a file name, got an integer"}


def test_file_name_must_not_be_empty() -> None:
    found = problems_of({"client_cert": {"source": "asgi-tls", "trust_anchors": ""}})
    assert found == {"client_cert.trust_anchors": "expected a file name"}


def test_relative_file_is_resolved_against_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "roots.pem").write_text("x")
    (tmp_path / "bankguard.yaml").write_text("client_cert: {source: asgi-tls, trust_anchors: roots.pem}\n")
    policy = Policy.from_yaml(tmp_path / "bankguard.yaml")
    assert policy.client_cert.trust_anchors == str(tmp_path / "roots.pem")


def test_relative_file_missing_names_the_resolved_path(tmp_path: Path) -> None:
    (tmp_path / "bankguard.yaml").write_text("client_cert: {source: asgi-tls, trust_anchors: roots.pem}\n")
    with pytest.raises(ConfigurationError) as info:
        Policy.from_yaml(tmp_path / "bankguard.yaml")
    assert info.value.path == "client_cert.trust_anchors"
    assert info.value.problems[0].message == f"no such file: {tmp_path / 'roots.pem'}"


# -- routes (CFG-09) -------------------------------------------------------------------------


def op(**extra: Any) -> dict[str, Any]:
    return {"method": "GET", "path": "/accounts", **extra}


def test_route_scopes_must_be_scope_tokens() -> None:
    found = problems_of(
        {"tokens": {"issuers": [issuer()]}, "routes": {"operations": [op(any_scopes=["a b"])]}}
    )
    assert found == {"routes.operations[0].any_scopes[0]": "'a b' is not a scope token (RFC 6749 §3.3)"}


def test_public_route_cannot_require_roles() -> None:
    found = problems_of(
        {
            "client_cert": {"source": "asgi-tls"},
            "routes": {"operations": [op(public=True, roles=["PSP_AI"])]},
        }
    )
    assert found["routes.operations[0].public"] == "a public operation cannot require PSD2 roles"


def test_route_roles_must_be_psd2_roles() -> None:
    found = problems_of({"tokens": {"issuers": [issuer()]}, "routes": {"operations": [op(roles=["PSP_XX"])]}})
    assert found == {
        "routes.operations[0].roles[0]": "'PSP_XX' is not a PSD2 role (PSP_AI, PSP_AS, PSP_IC, PSP_PI)"
    }


def test_EIDAS_route_roles_need_an_eidas_identity() -> None:
    found = problems_of({"tokens": {"issuers": [issuer()]}, "routes": {"operations": [op(roles=["PSP_AI"])]}})
    assert found == {"routes.operations[0].roles": "PSD2 roles need client_cert.identity: eidas"}


# -- policy authoring guards -----------------------------------------------------------------


def test_option_refuses_a_mutable_default() -> None:
    with pytest.raises(TypeError, match="default_factory"):
        option([])


def test_build_refuses_a_class_that_is_not_a_dataclass() -> None:
    with pytest.raises(TypeError, match="is not a dataclass"):
        build(dict, {})


def test_build_reports_a_missing_required_key() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Needs:
        name: str

    with pytest.raises(ConfigurationError) as info:
        build(Needs, {}, "section")
    assert [(p.path, p.message) for p in info.value.problems] == [("section.name", "is required")]
