"""The OpenAPI contract control at its edges: scopes from ``security`` (OAS 3.0 §4.7.10 /
3.1 §4.8.10) with non-OAuth schemes or ``scopes_from_spec: false``, policy declarations merged
into spec operations, operations two servers make identical, policy routes outside the spec,
and spec warnings at start-up (CFG-09, RFC 6750 §3.1)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from bankguard import EventCollector, Guard, Policy
from bankguard.errors import ConfigurationError
from bankguard.testing import TestIssuer, make_facts

ISSUER = TestIssuer("https://as.bank.example", alg="ES256")

SPEC = """
openapi: 3.0.3
info: {title: edges, version: "1"}
servers: [{url: /v1}]
security: [{oauth: [accounts]}]
paths:
  /accounts:
    get:
      operationId: ListAccounts
      responses: {"200": {description: ok}}
  /keys:
    get:
      operationId: ListKeys
      security: [{oauth: [keys]}, {apiKey: []}]
      responses: {"200": {description: ok}}
  /payments:
    post:
      operationId: CreatePayment
      security: [{oauth: [payments]}]
      responses: {"201": {description: created}}
components:
  securitySchemes:
    oauth:
      type: oauth2
      flows:
        clientCredentials:
          tokenUrl: "https://as.bank.example/token"
          scopes: {accounts: a, keys: k, payments: p, "payments:write": w}
    apiKey: {type: apiKey, in: header, name: X-Api-Key}
"""


def build(tmp_path: Path, spec: str = SPEC, **sections: Any) -> tuple[Guard, EventCollector]:
    path = tmp_path / "spec.yaml"
    path.write_text(spec)
    openapi = {"spec": str(path), **sections.pop("openapi", {})}
    policy = Policy.from_dict(
        {
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
            "openapi": openapi,
            **sections,
        }
    )
    events = EventCollector()
    return Guard(policy, sink=events), events


def decide(guard: Guard, method: str, path: str, scope: str | None) -> Any:
    headers = [] if scope is None else [("authorization", f"Bearer {ISSUER.mint(scope=scope)}")]
    return guard.decide(make_facts(method, path, headers=headers))


def test_SCOPE_alternative_without_oauth_scopes_needs_only_a_token(tmp_path: Path) -> None:
    """``[{oauth: [keys]}, {apiKey: []}]``: the second alternative names no scope, so any verified
    token satisfies the operation; bankguard does not verify API keys, it still needs the token."""
    guard, events = build(tmp_path)
    assert decide(guard, "GET", "/v1/keys", "unrelated").allowed
    refused = decide(guard, "GET", "/v1/keys", None)
    assert not refused.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (401, "token.missing")


def test_SCOPE_scopes_from_spec_off_means_token_only(tmp_path: Path) -> None:
    guard, events = build(tmp_path, openapi={"scopes_from_spec": False})
    assert decide(guard, "GET", "/v1/accounts", "unrelated").allowed
    assert not decide(guard, "GET", "/v1/accounts", None).allowed
    assert events.events[-1].status == 401


def test_SCOPE_policy_declaration_adds_scopes_to_a_spec_operation(tmp_path: Path) -> None:
    routes = {
        "operations": [
            {
                "method": "POST",
                "path": "/v1/payments",
                "id": "ignored",
                "any_scopes": ["payments:write", "admin"],
            }
        ]
    }
    guard, events = build(tmp_path, routes=routes)
    refused = decide(guard, "POST", "/v1/payments", "payments")
    assert not refused.allowed
    event = events.events[-1]
    assert (event.status, event.reason, event.operation) == (403, "scope.insufficient", "CreatePayment")
    challenge = dict(guard.problem(refused).headers)["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert decide(guard, "POST", "/v1/payments", "payments payments:write").allowed
    assert not decide(guard, "POST", "/v1/payments", "payments:write").allowed  # the spec's scope too


def test_policy_can_make_a_spec_operation_public(tmp_path: Path) -> None:
    routes = {"operations": [{"method": "GET", "path": "/v1/accounts", "public": True}]}
    guard, _ = build(tmp_path, routes=routes)
    decision = decide(guard, "GET", "/v1/accounts", None)
    assert decision.allowed
    assert not decision.principal.authenticated


def test_policy_route_outside_the_spec_is_not_contract_checked(tmp_path: Path) -> None:
    routes = {"operations": [{"method": "GET", "path": "/health", "public": True}]}
    guard, events = build(tmp_path, routes=routes)
    decision = guard.decide(make_facts("GET", "/health?anything=goes"))
    assert decision.allowed
    assert events.events[-1].operation == "GET /health"


def test_CFG_09_operations_two_servers_make_identical_are_refused(tmp_path: Path) -> None:
    spec = """
openapi: 3.0.3
info: {title: twice, version: "1"}
servers: [{url: /v1}, {url: /v1/x}]
security: []
paths:
  /x/a: {get: {responses: {"200": {description: ok}}}}
  /a: {get: {responses: {"200": {description: ok}}}}
"""
    with pytest.raises(ConfigurationError) as info:
        build(tmp_path, spec)
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("openapi.spec", "GET /v1/x/a is declared twice")
    ]


def test_spec_warnings_are_logged_when_the_guard_is_built(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = SPEC.replace(
        "      operationId: ListAccounts\n",
        "      operationId: ListAccounts\n      parameters: [{name: limit, in: query}]\n",
    )
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        build(tmp_path, spec)
    messages = [r.getMessage() for r in caplog.records]
    assert any("openapi spec" in m and "only its presence is checked" in m for m in messages)
