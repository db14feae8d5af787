"""The OpenAPI contract through the guard and real adapters (ASGI under Starlette's TestClient,
WSGI under werkzeug's test client): routing from the spec, scopes from ``security``, request
validation with problem ``errors``, response minimisation before validation, PAN masking,
502 for invalid responses, pass-through of non-JSON and oversized bodies, audit events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from bankguard import BankGuardMiddleware, BankGuardWSGI, ConfigurationError, Guard, Policy
from bankguard.testing import EventCollector, TestIssuer

ISSUER = TestIssuer("https://as.bank.example", alg="ES256")
IID = "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"

SPEC = """
openapi: 3.0.3
info: {title: fixture, version: "1"}
servers: [{url: /v1}]
security: [{oauth: [accounts]}]
paths:
  /health:
    get:
      security: []
      responses: {"200": {description: ok}}
  /accounts/{AccountId}:
    get:
      operationId: GetAccount
      parameters:
        - {name: AccountId, in: path, required: true, schema: {type: string, maxLength: 10}}
        - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 50}}
        - {name: x-fapi-interaction-id, in: header, schema: {type: string, format: uuid}}
      responses:
        "200":
          description: the account
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Account"}
        "404":
          description: unknown
          content:
            application/json:
              schema: {type: object, properties: {Code: {type: string}}, additionalProperties: false}
  /cards:
    get:
      operationId: GetCards
      security: [{oauth: [cards]}, {oauth: [cards:read, accounts]}]
      responses:
        "200":
          description: cards
          content:
            application/json:
              schema:
                type: object
                additionalProperties: false
                properties:
                  Cards:
                    type: array
                    items:
                      type: object
                      additionalProperties: false
                      required: [Pan]
                      properties:
                        Pan: {type: string}
                        Holder: {type: string, x-bankguard-scopes: [cards:holder]}
  /payments:
    post:
      operationId: CreatePayment
      security: [{oauth: [payments]}]
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [Amount]
              additionalProperties: false
              properties:
                Amount: {type: string, pattern: "^\\\\d{1,13}\\\\.\\\\d{1,5}$"}
                Reference: {type: string, maxLength: 18}
      responses:
        "201":
          description: created
          content:
            application/json:
              schema:
                type: object
                required: [Id]
                properties: {Id: {type: string}}
                additionalProperties: false
  /statements/{StatementId}/file:
    get:
      operationId: GetStatementFile
      parameters:
        - {name: StatementId, in: path, required: true, schema: {type: string}}
      responses:
        "200":
          description: a PDF
          content: {application/pdf: {schema: {type: string, format: binary}}}
components:
  securitySchemes:
    oauth:
      type: oauth2
      flows:
        clientCredentials:
          tokenUrl: "https://as.bank.example/token"
          scopes: {accounts: a, cards: c, "cards:read": r, "cards:holder": h, payments: p}
  schemas:
    Account:
      type: object
      additionalProperties: false
      required: [AccountId, Currency]
      properties:
        AccountId: {type: string}
        Currency: {type: string, pattern: "^[A-Z]{3}$"}
        Nickname: {type: string}
"""

#: What the handlers return: extra fields beyond the closed schemas, a card number.
ACCOUNT = {"AccountId": "22289", "Currency": "GBP", "Nickname": "Bills", "InternalRiskScore": 7}
CARDS = {"Cards": [{"Pan": "4111111111111111", "Holder": "K Smith", "Cvv": "123"}]}


def _policy(tmp_path: Path, events: EventCollector, **openapi: Any) -> Policy:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    return Policy.from_dict(
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
            "openapi": {"spec": str(spec), **openapi},
            "audit": {"sink": events},
        }
    )


def _starlette(state: dict[str, Any]) -> Starlette:
    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def account(request: Request) -> Response:
        if request.path_params["AccountId"] == "missing":
            return JSONResponse({"Code": "404", "Detail": "internal detail"}, status_code=404)
        if request.path_params["AccountId"] == "broken":
            return JSONResponse({"AccountId": "broken", "Currency": "pounds"})
        if request.path_params["AccountId"] == "teapot":
            return JSONResponse({"Code": "418"}, status_code=418)
        return JSONResponse(state.get("account", ACCOUNT))

    async def cards(request: Request) -> Response:
        return JSONResponse(CARDS)

    async def payments(request: Request) -> Response:
        state["paid"] = await request.json()
        return JSONResponse({"Id": "p-1", "Echo": "extra"}, status_code=201)

    async def statement(request: Request) -> Response:
        return Response(b"%PDF-1.7 " + b"x" * 100, media_type="application/pdf")

    return Starlette(
        routes=[
            Route("/v1/health", health),
            Route("/v1/accounts/{AccountId}", account),
            Route("/v1/cards", cards),
            Route("/v1/payments", payments, methods=["POST"]),
            Route("/v1/statements/{StatementId}/file", statement),
        ]
    )


def _headers(scope: str = "accounts") -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.mint(scope=scope)}", "x-fapi-interaction-id": IID}


@pytest.fixture
def events() -> EventCollector:
    return EventCollector()


@pytest.fixture
def client(tmp_path: Path, events: EventCollector) -> TestClient:
    app = BankGuardMiddleware(_starlette({}), _policy(tmp_path, events))
    return TestClient(app, base_url="https://api.bank.example")


def test_OWASP_17_operations_come_from_the_spec(client: TestClient, events: EventCollector) -> None:
    assert client.get("/v1/health").text == "ok"  # security: [] → public
    refused = client.get("/v1/undeclared", headers=_headers())
    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/problem+json"
    wrong = client.delete("/v1/accounts/22289", headers=_headers())
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET, HEAD")
    assert client.get("/v1/accounts/22289").status_code == 401  # global security: a token is needed


def test_scopes_come_from_the_spec_security(client: TestClient) -> None:
    assert client.get("/v1/accounts/22289", headers=_headers("payments")).status_code == 403
    assert client.get("/v1/accounts/22289", headers=_headers("accounts")).status_code == 200
    # Two alternatives: [cards] or [cards:read, accounts].
    assert client.get("/v1/cards", headers=_headers("cards")).status_code == 200
    assert client.get("/v1/cards", headers=_headers("cards:read accounts")).status_code == 200
    refused = client.get("/v1/cards", headers=_headers("cards:read"))
    assert refused.status_code == 403
    assert 'scope="accounts cards:read"' in refused.headers["www-authenticate"]


def test_request_parameters_are_validated_without_echoing_values(
    client: TestClient, events: EventCollector
) -> None:
    response = client.get("/v1/accounts/22289?limit=500", headers=_headers())
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"].endswith("/request-invalid")
    assert problem["errors"] == [{"location": "query.limit", "check": "maximum"}]
    assert "500" not in response.text
    assert events.events[-1].reason == "openapi.request_invalid"
    assert events.events[-1].control == "openapi"
    bad_id = client.get("/v1/accounts/22289", headers={**_headers(), "x-fapi-interaction-id": "nope"})
    assert bad_id.status_code in (
        200,
        400,
    )  # invalid interaction ids are replaced before the contract sees them
    too_long = client.get("/v1/accounts/12345678901", headers=_headers())
    assert too_long.json()["errors"] == [{"location": "path.AccountId", "check": "maxLength"}]


def test_request_body_is_validated(tmp_path: Path, events: EventCollector) -> None:
    state: dict[str, Any] = {}
    client = TestClient(
        BankGuardMiddleware(_starlette(state), _policy(tmp_path, events)), base_url="https://api.bank.example"
    )
    ok = client.post("/v1/payments", headers=_headers("payments"), json={"Amount": "10.00"})
    assert ok.status_code == 201
    assert ok.json() == {"Id": "p-1"}  # "Echo" is not declared: stripped
    assert state["paid"] == {"Amount": "10.00"}
    bad = client.post("/v1/payments", headers=_headers("payments"), json={"Amount": "ten", "Extra": 1})
    assert bad.status_code == 400
    assert {(e["location"], e["check"]) for e in bad.json()["errors"]} >= {("body/Amount", "pattern")}
    assert "ten" not in bad.text
    missing = client.post("/v1/payments", headers=_headers("payments"))
    assert missing.status_code in (400, 415)
    media = client.post(
        "/v1/payments", headers={**_headers("payments"), "content-type": "text/plain"}, content=b"Amount=10"
    )
    assert media.status_code == 415
    assert media.json()["type"].endswith("/unsupported-media-type")


def test_undeclared_response_fields_are_stripped_before_validation(
    client: TestClient, events: EventCollector
) -> None:
    response = client.get("/v1/accounts/22289", headers=_headers())
    assert response.status_code == 200
    assert response.json() == {"AccountId": "22289", "Currency": "GBP", "Nickname": "Bills"}
    assert response.headers["content-length"] == str(len(response.content))
    minimised = [e for e in events.events if e.reason == "openapi.response_minimised"]
    assert len(minimised) == 1
    assert "openapi.removed/InternalRiskScore" in minimised[0].notes
    assert "7" not in " ".join(minimised[0].notes)


def test_card_numbers_are_masked_and_scope_tied_properties_removed(client: TestClient) -> None:
    response = client.get("/v1/cards", headers=_headers("cards"))
    assert response.json() == {"Cards": [{"Pan": "411111******1111"}]}
    holder = client.get("/v1/cards", headers=_headers("cards cards:holder"))
    assert holder.json() == {"Cards": [{"Pan": "411111******1111", "Holder": "K Smith"}]}


def test_card_numbers_revealed_to_the_configured_scope(tmp_path: Path, events: EventCollector) -> None:
    policy = _policy(tmp_path, events, minimise={"reveal_pan_scopes": ["cards:pan"]})
    client = TestClient(BankGuardMiddleware(_starlette({}), policy), base_url="https://api.bank.example")
    response = client.get("/v1/cards", headers=_headers("cards cards:pan"))
    assert response.json() == {"Cards": [{"Pan": "4111111111111111"}]}


def test_invalid_response_is_replaced_by_a_502(client: TestClient, events: EventCollector) -> None:
    response = client.get("/v1/accounts/broken", headers=_headers())
    assert response.status_code == 502
    assert response.json()["type"].endswith("/response-invalid")
    assert "pounds" not in response.text
    assert response.headers["x-fapi-interaction-id"] == IID
    event = events.events[-1]
    assert (event.outcome, event.status, event.control, event.reason) == (
        "deny",
        502,
        "openapi",
        "openapi.response_invalid",
    )
    assert "openapi.response/Currency" in event.notes


def test_undeclared_status_is_replaced_and_declared_error_minimised(client: TestClient) -> None:
    assert client.get("/v1/accounts/teapot", headers=_headers()).status_code == 502
    missing = client.get("/v1/accounts/missing", headers=_headers())
    assert (missing.status_code, missing.json()) == (404, {"Code": "404"})


def test_report_mode_sends_the_response_untouched(tmp_path: Path, events: EventCollector) -> None:
    policy = _policy(tmp_path, events, responses={"mode": "report"})
    client = TestClient(BankGuardMiddleware(_starlette({}), policy), base_url="https://api.bank.example")
    broken = client.get("/v1/accounts/broken", headers=_headers())
    assert (broken.status_code, broken.json()["Currency"]) == (200, "pounds")
    assert events.events[-1].outcome == "report"
    extra = client.get("/v1/accounts/22289", headers=_headers())
    assert extra.json()["InternalRiskScore"] == 7
    assert events.events[-1].reason == "openapi.response_minimised"


def test_non_json_and_oversized_bodies_pass_through(tmp_path: Path, events: EventCollector) -> None:
    state = {"account": {**ACCOUNT, "Padding": "p" * 4000}}
    policy = _policy(tmp_path, events, responses={"max_body_bytes": "1KiB"})
    client = TestClient(BankGuardMiddleware(_starlette(state), policy), base_url="https://api.bank.example")
    pdf = client.get("/v1/statements/s1/file", headers=_headers())
    assert pdf.content.startswith(b"%PDF")
    big = client.get("/v1/accounts/22289", headers=_headers())
    assert big.status_code == 200
    assert "Padding" in big.json()
    assert events.events[-1].reason == "openapi.response_not_buffered"


def test_OWASP_encoded_dot_segments_and_empty_parameters_are_refused(client: TestClient) -> None:
    dots = client.get("/v1/accounts/%2e%2e/cards", headers=_headers())
    assert dots.status_code in (400, 404)
    dots2 = client.get("/v1/accounts/%2E%2E", headers=_headers())
    assert dots2.status_code == 400
    empty = client.get("/v1/accounts/", headers=_headers())
    assert empty.status_code == 404


def test_same_contract_under_wsgi(tmp_path: Path, events: EventCollector) -> None:
    from flask import Flask, jsonify

    flask_app = Flask(__name__)

    @flask_app.get("/v1/accounts/<AccountId>")
    def account(AccountId: str) -> Any:
        return jsonify(ACCOUNT)

    @flask_app.get("/v1/cards")
    def cards() -> Any:
        return jsonify(CARDS)

    flask_app.wsgi_app = BankGuardWSGI(flask_app.wsgi_app, _policy(tmp_path, events))  # type: ignore[method-assign]
    client = flask_app.test_client()
    response = client.get("/v1/accounts/22289", headers=_headers(), base_url="https://api.bank.example")
    assert response.status_code == 200
    assert json.loads(response.data) == {"AccountId": "22289", "Currency": "GBP", "Nickname": "Bills"}
    assert response.headers["content-length"] == str(len(response.data))
    masked = client.get("/v1/cards", headers=_headers("cards"), base_url="https://api.bank.example")
    assert json.loads(masked.data) == {"Cards": [{"Pan": "411111******1111"}]}
    invalid = client.get(
        "/v1/accounts/22289?limit=0", headers=_headers(), base_url="https://api.bank.example"
    )
    assert invalid.status_code == 400


def test_spec_operations_needing_tokens_need_a_token_source(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    with pytest.raises(ConfigurationError) as info:
        Guard(Policy.from_dict({"openapi": {"spec": str(spec)}}))
    assert info.value.path == "openapi.spec"


def test_property_scopes_from_the_policy(tmp_path: Path, events: EventCollector) -> None:
    rule = {"#/components/schemas/Account/properties/Nickname": ["accounts:nickname"]}
    policy = _policy(tmp_path, events, minimise={"property_scopes": rule})
    client = TestClient(BankGuardMiddleware(_starlette({}), policy), base_url="https://api.bank.example")
    without = client.get("/v1/accounts/22289", headers=_headers())
    assert without.json() == {"AccountId": "22289", "Currency": "GBP"}
    granted = client.get("/v1/accounts/22289", headers=_headers("accounts accounts:nickname"))
    assert granted.json() == {"AccountId": "22289", "Currency": "GBP", "Nickname": "Bills"}


def test_a_property_scopes_rule_naming_nothing_is_warned(
    tmp_path: Path, events: EventCollector, caplog: pytest.LogCaptureFixture
) -> None:
    rule = {"#/components/schemas/Acount/properties/Nickname": ["accounts:nickname"]}
    with caplog.at_level("WARNING", logger="bankguard"):
        Guard(_policy(tmp_path, events, minimise={"property_scopes": rule}))
    assert any("names no property of the spec" in r.getMessage() for r in caplog.records)


def test_sample_mode_validates_the_configured_share(
    tmp_path: Path, events: EventCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bankguard.responses as responses

    policy = _policy(tmp_path, events, responses={"mode": "sample", "sample_rate": 0.25})
    client = TestClient(BankGuardMiddleware(_starlette({}), policy), base_url="https://api.bank.example")
    monkeypatch.setattr(responses.random, "random", lambda: 0.1)  # inside the sampled share
    assert client.get("/v1/accounts/broken", headers=_headers()).status_code == 502
    monkeypatch.setattr(responses.random, "random", lambda: 0.9)  # outside it: not validated
    unchecked = client.get("/v1/accounts/broken", headers=_headers())
    assert (unchecked.status_code, unchecked.json()["Currency"]) == (200, "pounds")
    # Minimisation applies to every response, sampled or not.
    assert "InternalRiskScore" not in client.get("/v1/accounts/22289", headers=_headers()).json()


def test_client_chosen_property_names_never_reach_problems_or_events_raw(
    client: TestClient, events: EventCollector
) -> None:
    body = json.dumps({"Amount": "10.00", "4111111111111111\nX-Injected: 1": 5})
    response = client.post(
        "/v1/payments",
        headers={**_headers("payments"), "content-type": "application/json"},
        content=body.encode(),
    )
    assert response.status_code == 400
    assert "4111111111111111" not in response.text
    assert "\n" not in json.dumps(response.json()["errors"]).replace("\\n", "")
    text = events.events[-1].to_json()
    assert "4111111111111111" not in text
    assert "X-Injected" not in response.text or "\\n" not in response.text


UK_SPEC = "/work/shared/specs/uk-ob/account-info-openapi.yaml"
UK_TRANSACTIONS = "/open-banking/v4.0/aisp/accounts/22289/transactions"


def _uk_policy(events: EventCollector, **openapi: Any) -> Policy:
    return Policy.from_dict(
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
            "openapi": {"spec": UK_SPEC, **openapi},
            "audit": {"sink": events},
        }
    )


@pytest.mark.parametrize(
    ("value", "strict", "lenient"),
    [
        ("2024-05-01T09:30:00", 400, 200),  # UK OB guidance: no offset
        ("2024-05-01T09:30:00.250", 400, 200),
        ("2024-05-01T09:30:00+01:00", 200, 200),  # RFC 3339
        ("2024-02-30T09:30:00", 400, 400),  # no such day
        ("2024-05-01", 400, 400),  # a date is not a date-time
        ("last Tuesday", 400, 400),
    ],
)
def test_uk_date_filters_without_an_offset_are_accepted_when_configured(
    events: EventCollector, value: str, strict: int, lenient: int
) -> None:
    from urllib.parse import quote

    from bankguard.testing import make_facts

    target = f"{UK_TRANSACTIONS}?fromBookingDateTime={quote(value)}"
    headers = [("authorization", f"Bearer {ISSUER.mint(scope='accounts')}"), ("x-fapi-interaction-id", IID)]
    for options, expected in (({}, strict), ({"query_date_time_without_offset": True}, lenient)):
        guard = Guard(_uk_policy(events, **options))
        decision = guard.decide(make_facts("GET", target, headers=headers))
        status = 200 if decision.allowed else decision.event.status
        assert status == expected, (value, options)
        if status == 400:
            assert "openapi.query.fromBookingDateTime:format" in decision.event.notes
