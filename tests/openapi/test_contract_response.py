"""OperationContract.response and ResponseContract.validate."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bankguard.openapi._schema import Dialect, compile_schema, failures
from bankguard.openapi.contract import Contract, OperationContract, ResponseContract, load_contract

UK = Path("/work/shared/specs/uk-ob/account-info-openapi.yaml")
UK_TRANSACTIONS = "/open-banking/v4.0/aisp/accounts/{AccountId}/transactions"


@pytest.fixture(scope="module")
def uk() -> Contract:
    return load_contract(UK)


def op_of(contract: Contract, method: str, path: str) -> OperationContract:
    for op in contract.operations:
        if op.method == method and op.path == path:
            return op
    raise AssertionError(f"no {method} {path}")


def uk_transaction(i: int) -> dict[str, Any]:
    """One richly populated OBTransaction6 (UK Account and Transaction API v4.0)."""
    agent = {
        "SchemeName": "UK.OBIE.BICFI",
        "Identification": "NWBKGB2L",
        "Name": "National Bank",
        "PostalAddress": {
            "AddressType": "BIZZ",
            "StreetName": "Bank Street",
            "BuildingNumber": "11",
            "PostCode": "EC2N 4AG",
            "TownName": "London",
            "Country": "GB",
        },
    }
    return {
        "AccountId": "22289",
        "TransactionId": f"tx-{i:06d}",
        "TransactionReference": f"Ref {i}",
        "StatementReference": ["002"],
        "CreditDebitIndicator": "Debit" if i % 3 else "Credit",
        "Status": "BOOK",
        "TransactionMutability": "Immutable",
        "BookingDateTime": "2024-05-01T10:43:07+00:00",
        "ValueDateTime": "2024-05-01T10:45:22+00:00",
        "TransactionInformation": "Cash from Aubrey at the corner shop on the high street",
        "AddressLine": "Coventry",
        "Amount": {"Amount": f"{10 + i}.{i % 100:02d}", "Currency": "GBP"},
        "ChargeAmount": {"Amount": "0.05", "Currency": "GBP"},
        "CurrencyExchange": {
            "SourceCurrency": "EUR",
            "TargetCurrency": "GBP",
            "UnitCurrency": "EUR",
            "ExchangeRate": 0.8576,
            "QuotationDate": "2024-05-01T10:43:07+00:00",
            "InstructedAmount": {"Amount": "20.00", "Currency": "EUR"},
        },
        "BankTransactionCode": {"Code": "ReceivedCreditTransfer", "SubCode": "DomesticCreditTransfer"},
        "ProprietaryBankTransactionCode": {"Code": "Transfer", "Issuer": "AlphaBank"},
        "Balance": {
            "CreditDebitIndicator": "Credit",
            "Type": "ITBD",
            "Amount": {"Amount": "230.00", "Currency": "GBP"},
        },
        "MerchantDetails": {"MerchantName": "Corner Shop", "MerchantCategoryCode": "5411"},
        "CreditorAgent": agent,
        "CreditorAccount": {
            "SchemeName": "UK.OBIE.SortCodeAccountNumber",
            "Identification": "80200112344562",
            "Name": "Mrs Jane Smith",
        },
        "DebtorAgent": agent,
        "DebtorAccount": {
            "SchemeName": "UK.OBIE.SortCodeAccountNumber",
            "Identification": "80200112344563",
            "Name": "Mr Ian Smith",
            "SecondaryIdentification": "0002",
        },
        "CardInstrument": {
            "CardSchemeName": "VISA",
            "AuthorisationType": "ConsumerDevice",
            "Name": "Mr Ian Smith",
            "Identification": "************1234",
        },
        "SupplementaryData": {},
    }


def uk_transactions(count: int = 50) -> dict[str, Any]:
    return {
        "Data": {"Transaction": [uk_transaction(i) for i in range(count)]},
        "Links": {"Self": "https://api.alphabank.com/open-banking/v4.0/aisp/accounts/22289/transactions"},
        "Meta": {
            "TotalPages": 1,
            "FirstAvailableDateTime": "2019-05-03T00:00:00+00:00",
            "LastAvailableDateTime": "2024-12-03T00:00:00+00:00",
        },
    }


def transactions_contract(uk: Contract) -> ResponseContract:
    response = op_of(uk, "GET", UK_TRANSACTIONS).response(200, "application/json; charset=utf-8")
    assert response is not None
    return response


def test_uk_fifty_transactions_conform(uk: Contract) -> None:
    doc = uk_transactions(50)
    assert len(json.dumps(doc)) > 40_000  # comparable to the 45 KB benchmark document
    response = transactions_contract(uk)
    assert response.dialect == "oas30"
    assert response.schema == {"$ref": "#/components/schemas/OBReadTransaction6"}
    assert response.resolve("#/components/schemas/OBReadTransaction6")["required"] == ["Data"]
    assert response.validate(doc) == []


def test_uk_failures_are_json_pointers_without_values(uk: Contract) -> None:
    doc = uk_transactions(50)
    doc["Data"]["Transaction"][3]["Amount"]["Amount"] = "12,50 SECRET"
    doc["Data"]["Transaction"][7]["Status"] = "SECRET"
    del doc["Data"]["Transaction"][9]["BookingDateTime"]
    doc["Data"]["Transaction"][11]["ValueDateTime"] = "yesterday"
    doc["Data"]["Transaction"][12]["CardInstrument"]["SECRET"] = "4111111111111111"
    doc["Links"]["Self"] = "not a uri"
    found = transactions_contract(uk).validate(doc)
    assert sorted(found) == [
        "/Data/Transaction/11/ValueDateTime",
        "/Data/Transaction/12/CardInstrument",
        "/Data/Transaction/3/Amount/Amount",
        "/Data/Transaction/7/Status",
        "/Data/Transaction/9/BookingDateTime",
        "/Links/Self",
    ]
    assert not [p for p in found if "SECRET" in p or "4111" in p]


def test_at_most_twenty_pointers(uk: Contract) -> None:
    doc = uk_transactions(50)
    for txn in doc["Data"]["Transaction"]:
        txn["Status"] = "BAD"
        txn["Amount"] = {}
    found = transactions_contract(uk).validate(doc)
    assert len(found) == 20
    assert len(set(found)) == 20


def test_pointer_escaping() -> None:
    validator = compile_schema(
        {"type": "object", "additionalProperties": {"type": "integer"}}, dialect="oas30", direction="response"
    )
    assert failures(validator, {"a/b~c": "x", "k" * 100: "y"}) == [
        ("/a~1b~0c", "type"),
        ("/" + "k" * 64 + "…", "type"),
    ]


@pytest.mark.parametrize("value", [{1: 2}, b"bytes", {"Data": {1}}, object()])
def test_documents_that_are_not_json_data(uk: Contract, value: Any) -> None:
    assert transactions_contract(uk).validate(value) == [""]


def test_uk_error_responses_and_content_negotiation(uk: Contract) -> None:
    op = op_of(uk, "GET", UK_TRANSACTIONS)
    error = op.response(400, "application/json")
    assert error is not None
    assert error.validate({"Code": "400", "Message": "bad", "Errors": [{"ErrorCode": "AC17"}]}) == []
    assert op.response(200, "application/jose+jwe") is not None
    assert op.response(200, "text/html") is None
    assert op.response(200, None) is None
    assert op.response(404, "application/json") is None  # not declared for this operation
    assert op.response(302, "application/json") is None


RESPONSES_SPEC = """
openapi: 3.0.3
info: {title: responses, version: "1"}
paths:
  /r:
    get:
      responses:
        "200":
          description: exact
          content:
            application/json: {schema: {$ref: '#/components/schemas/Account'}}
            application/*: {schema: {type: array}}
            "*/*": {schema: {type: string}}
        "2XX":
          description: range
          content:
            application/problem+json: {schema: {type: object, required: [range]}}
        "204": {description: no content}
        default:
          description: default
          content:
            application/json: {schema: {type: object, required: [default]}}
            text/plain: {}
components:
  schemas:
    Account:
      type: object
      required: [id, password, balance]
      properties:
        id: {type: string, readOnly: true}
        password: {type: string, writeOnly: true}
        balance: {type: number, nullable: true}
        kind: {type: string, enum: [a, b], nullable: true}
"""


@pytest.fixture(scope="module")
def r_op(tmp_path_factory: pytest.TempPathFactory) -> OperationContract:
    path = tmp_path_factory.mktemp("responses") / "responses.yaml"
    path.write_text(textwrap.dedent(RESPONSES_SPEC))
    contract = load_contract(path)
    assert contract.warnings == ()
    return op_of(contract, "GET", "/r")


def test_status_precedence(r_op: OperationContract) -> None:
    exact = r_op.response(200, "application/json")
    assert exact is not None
    assert exact.validate({"id": "1", "balance": 1}) == []
    ranged = r_op.response(201, "application/problem+json")
    assert ranged is not None
    assert ranged.validate({}) == ["/range"]
    assert r_op.response(201, "application/json") is None  # 2XX declares only problem+json
    default = r_op.response(500, "application/json")
    assert default is not None
    assert default.validate({}) == ["/default"]
    no_content = r_op.response(204, None)
    assert no_content is not None
    assert no_content.schema is None
    assert no_content.validate({"anything": 1}) == []
    assert r_op.response(204, "application/json") is no_content
    plain = r_op.response(404, "text/plain; charset=utf-8")
    assert plain is not None
    assert plain.schema is None
    assert plain.validate("text") == []


def test_media_type_precedence(r_op: OperationContract) -> None:
    def check(content_type: str, document: Any) -> list[str] | None:
        response = r_op.response(200, content_type)
        return None if response is None else response.validate(document)

    assert check("application/json; charset=utf-8", {"id": "1", "balance": None}) == []
    assert check("APPLICATION/JSON", {"id": "1", "balance": "x"}) == ["/balance"]
    assert check("application/vnd.api+json", []) == []  # application/*
    assert check("application/vnd.api+json", {}) == [""]
    assert check("text/csv", "a,b") == []  # */*
    assert check("text/csv", 5) == [""]
    assert check("not a media type", {}) is None


def test_write_only_and_read_only_in_responses(r_op: OperationContract) -> None:
    response = r_op.response(200, "application/json")
    assert response is not None
    # writeOnly properties are not required in a response, and may not appear in one.
    assert response.validate({"id": "1", "balance": 0}) == []
    assert response.validate({"id": "1", "balance": 0, "password": "hunter2"}) == ["/password"]
    # readOnly properties stay required in responses.
    assert response.validate({"balance": 0}) == ["/id"]
    assert response.validate({"id": "1", "balance": 0, "kind": None}) == []
    assert response.validate({"id": "1", "balance": 0, "kind": "c"}) == ["/kind"]


def test_oas31_responses(tmp_path: Path) -> None:
    path = tmp_path / "v31.yaml"
    path.write_text(
        textwrap.dedent(
            """
            openapi: 3.1.0
            info: {title: v31, version: "1"}
            paths:
              /r:
                get:
                  responses:
                    "200":
                      description: ok
                      content:
                        application/json:
                          schema:
                            type: object
                            properties:
                              when: {type: string, format: date-time}
                              amount: {type: [string, "null"], pattern: '^[0-9]+$'}
                              secret: {type: string, writeOnly: true}
                            additionalProperties: false
            """
        )
    )
    contract = load_contract(path)
    response = op_of(contract, "GET", "/r").response(200, "application/json")
    assert response is not None
    assert response.dialect == "oas31"
    assert response.validate({"when": "2024-01-01T00:00:00Z", "amount": None}) == []
    assert sorted(response.validate({"when": "2024-01-01", "amount": "1.5", "secret": "x", "other": 1})) == [
        "",
        "/amount",
        "/secret",
        "/when",
    ]


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(document=_json)
def test_arbitrary_documents_yield_pointers_only(uk: Contract, document: Any) -> None:
    response = transactions_contract(uk)
    found = response.validate(document)
    assert len(found) <= 20
    assert all(p == "" or p.startswith("/") for p in found)


def test_mutated_uk_documents_are_reported(uk: Contract) -> None:
    """Every single-field mutation of a valid document is caught at (or above) its pointer."""
    response = transactions_contract(uk)
    base = uk_transactions(2)
    for key in ["Amount", "Status", "BookingDateTime", "CreditDebitIndicator", "AccountId"]:
        doc = copy.deepcopy(base)
        doc["Data"]["Transaction"][1][key] = 12345
        assert response.validate(doc) == [f"/Data/Transaction/1/{key}"]


@pytest.mark.parametrize("dialect", ["oas30", "oas31"])
@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("date-time", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00"),  # RFC 3339 §5.6: the offset is required
        ("date", "2024-02-29", "2023-02-29"),
        ("time", "10:43:07+00:00", "T10:43:07+00:00"),
        ("uuid", "0b5fb7f9-9b3d-4f0c-8d6e-3c1f3a9b6a10", "0b5fb7f99b3d4f0c8d6e3c1f3a9b6a10"),
        ("uri", "https://example.com/a", "not a uri"),
        ("ipv4", "192.0.2.1", "192.0.2"),
        ("email", "a@example.com", "a.example.com"),
    ],
)
def test_formats_are_asserted(dialect: Dialect, fmt: str, good: str, bad: str) -> None:
    validator = compile_schema({"type": "string", "format": fmt}, dialect=dialect, direction="response")
    assert validator.is_valid(good)
    assert not validator.is_valid(bad)
    assert validator.is_valid(5) is False  # type: string still applies
    unknown = compile_schema({"type": "string", "format": "url"}, dialect=dialect, direction="response")
    assert unknown.is_valid("anything")  # unknown formats (byte, url, float) are ignored
