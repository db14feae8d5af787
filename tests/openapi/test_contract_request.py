"""OperationContract.check_request: parameters, media types and bodies, on real and fixture specs."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bankguard.openapi.contract import Contract, OperationContract, Violation, load_contract
from bankguard.request import Headers

SPECS = Path("/work/shared/specs")
UK = SPECS / "uk-ob" / "account-info-openapi.yaml"
BERLIN = SPECS / "berlin-group" / "psd2-api-1.3.8-2020-11-06v1.yaml"
BRAZIL = SPECS / "br-ofb" / "payments_4.0.0.yml"
UK_BASE = "/open-banking/v4.0/aisp"


@pytest.fixture(scope="module")
def uk() -> Contract:
    return load_contract(UK)


@pytest.fixture(scope="module")
def berlin() -> Contract:
    return load_contract(BERLIN)


def op_of(contract: Contract, method: str, path: str) -> OperationContract:
    for op in contract.operations:
        if op.method == method and op.path == path:
            return op
    raise AssertionError(f"no {method} {path}")


def check(
    op: OperationContract,
    *,
    path: dict[str, str] | None = None,
    query: str = "",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
    content_type: str | None = None,
) -> list[tuple[str, str]]:
    found = op.check_request(
        path_params=path or {}, query=query, headers=Headers(headers), body=body, content_type=content_type
    )
    assert all(isinstance(v, Violation) for v in found)
    return [(v.location, v.code) for v in found]


def statuses(op: OperationContract, **kwargs: Any) -> list[int]:
    found = op.check_request(
        path_params=kwargs.get("path", {}),
        query=kwargs.get("query", ""),
        headers=Headers(kwargs.get("headers", ())),
        body=kwargs.get("body"),
        content_type=kwargs.get("content_type"),
    )
    return [v.status for v in found]


# --- the UK Account and Transaction API -----------------------------------------------------------

INTERACTION = ("x-fapi-interaction-id", "93bac548-d2de-4546-b106-880a5018460d")


def test_uk_transactions_get_conforms(uk: Contract) -> None:
    op = op_of(uk, "GET", f"{UK_BASE}/accounts/{{AccountId}}/transactions")
    query = "fromBookingDateTime=2017-01-01T00:00:00Z&toBookingDateTime=2017-12-31T23:59:59%2B01:00"
    assert check(op, path={"AccountId": "22289"}, query=query, headers=[INTERACTION]) == []


def test_uk_transactions_date_time_format(uk: Contract) -> None:
    op = op_of(uk, "GET", f"{UK_BASE}/accounts/{{AccountId}}/transactions")
    found = check(op, path={"AccountId": "22289"}, query="fromBookingDateTime=yesterday")
    assert found == [("query.fromBookingDateTime", "format")]
    # RFC 3339 requires the offset: the UK guidance's zone-less form is refused by format: date-time.
    found = check(op, path={"AccountId": "22289"}, query="toBookingDateTime=2017-01-01T00:00:00")
    assert found == [("query.toBookingDateTime", "format")]


def test_uk_parameter_pollution_and_empty_values(uk: Contract) -> None:
    op = op_of(uk, "GET", f"{UK_BASE}/accounts/{{AccountId}}/transactions")
    twice = "fromBookingDateTime=2017-01-01T00:00:00Z&fromBookingDateTime=2018-01-01T00:00:00Z"
    assert check(op, path={"AccountId": "1"}, query=twice) == [("query.fromBookingDateTime", "duplicate")]
    assert check(op, path={"AccountId": "1"}, query="fromBookingDateTime=") == [
        ("query.fromBookingDateTime", "empty")
    ]
    assert check(op, path={"AccountId": ""}) == [("path.AccountId", "empty")]
    header_twice = [INTERACTION, INTERACTION]
    assert check(op, path={"AccountId": "1"}, headers=header_twice) == [
        ("header.x-fapi-interaction-id", "duplicate")
    ]


def test_uk_unknown_query_parameters_pass(uk: Contract) -> None:
    op = op_of(uk, "GET", f"{UK_BASE}/accounts")
    assert check(op, query="utm_source=x&page=2") == []


def test_uk_authorization_parameter_is_ignored(uk: Contract) -> None:
    """The UK spec declares Authorization as a required header parameter; OAS 3.0.3 §4.7.12.1
    says such a definition SHALL be ignored (the token control checks the header)."""
    op = op_of(uk, "GET", f"{UK_BASE}/accounts")
    assert check(op) == []


def uk_consent() -> dict[str, Any]:
    return {
        "Data": {
            "Permissions": ["ReadAccountsDetail", "ReadBalances", "ReadTransactionsDetail"],
            "ExpirationDateTime": "2025-05-02T00:00:00+00:00",
            "TransactionFromDateTime": "2024-05-03T00:00:00+00:00",
            "TransactionToDateTime": "2025-12-03T00:00:00+00:00",
        },
        "Risk": {},
    }


def test_uk_consent_post_body(uk: Contract) -> None:
    op = op_of(uk, "POST", f"{UK_BASE}/account-access-consents")
    body = json.dumps(uk_consent()).encode()
    assert check(op, body=body, content_type="application/json; charset=utf-8") == []
    assert check(op, body=body, content_type="Application/JSON") == []
    bad = uk_consent()
    bad["Data"]["Permissions"] = ["ReadEverything"]
    bad["Data"]["ExpirationDateTime"] = "soon"
    del bad["Risk"]
    bad["Extra"] = "x"
    found = check(op, body=json.dumps(bad).encode(), content_type="application/json")
    assert ("body/Data/Permissions/0", "enum") in found
    assert ("body/Data/ExpirationDateTime", "format") in found
    assert ("body/Risk", "required") in found


def test_uk_consent_post_media_types(uk: Contract) -> None:
    op = op_of(uk, "POST", f"{UK_BASE}/account-access-consents")
    body = json.dumps(uk_consent()).encode()
    assert check(op, body=body, content_type="text/plain") == [("header.content-type", "content_type")]
    assert statuses(op, body=body, content_type="text/plain") == [415]
    assert check(op, body=body, content_type=None) == [("header.content-type", "content_type")]
    assert check(op, body=body, content_type="json") == [("header.content-type", "content_type")]
    # A declared non-JSON type (an encrypted JWE) is checked for its type only.
    assert check(op, body=b"eyJhbGciOi.x.y.z.w", content_type="application/jose+jwe") == []
    assert check(op, body=None, content_type=None) == [("body", "body_required")]
    assert check(op, body=b"", content_type="application/json") == [("body", "body_required")]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "body_not_json"),
        (b'{"Data": NaN}', "body_not_json"),
        (b'{"Data": 1e999}', "body_not_json"),
        (b"\xef\xbb\xbf{}", "body_not_json"),  # a UTF-8 byte order mark (RFC 8259 §8.1)
        (b'{"Data": "\xff"}', "body_not_json"),  # not UTF-8
        ('{"Data": 1}'.encode("utf-16"), "body_not_json"),
        (b"[" * 100_000, "body_not_json"),
        (b'{"Data": {}, "Data": {}}', "body_duplicate_member"),
        (b'{"Risk": {}, "Data": {"Permissions": ["ReadPAN"], "Permissions": []}}', "body_duplicate_member"),
    ],
)
def test_json_bodies_are_parsed_strictly(uk: Contract, body: bytes, code: str) -> None:
    op = op_of(uk, "POST", f"{UK_BASE}/account-access-consents")
    assert check(op, body=body, content_type="application/json") == [("body", code)]


def test_body_on_an_operation_without_one(uk: Contract) -> None:
    op = op_of(uk, "GET", f"{UK_BASE}/accounts")
    assert check(op, body=b"{}", content_type="application/json") == [("body", "body_not_allowed")]
    assert statuses(op, body=b"{}", content_type="application/json") == [415]
    assert check(op, body=b"", content_type="application/json") == []


def test_violations_never_carry_values(uk: Contract) -> None:
    op = op_of(uk, "POST", f"{UK_BASE}/account-access-consents")
    secret = "4111111111111111-SECRET"
    doc = {"Data": {"Permissions": [secret], "ExpirationDateTime": secret}, "Risk": {}, secret: secret}
    found = op.check_request(
        path_params={},
        query=f"x={secret}",
        headers=Headers([("x-fapi-interaction-id", secret), ("x-fapi-auth-date", secret)]),
        body=json.dumps(doc).encode(),
        content_type="application/json",
    )
    assert found
    assert all(secret not in v.location and secret not in v.code for v in found)


# --- Berlin Group NextGenPSD2 ------------------------------------------------------------------------

BG_HEADERS = [("x-request-id", "99391c7e-ad88-49ec-a2ad-99ddcb1f7721"), ("psu-ip-address", "192.168.8.78")]
BG_PAYMENT = {
    "instructedAmount": {"currency": "EUR", "amount": "123.50"},
    "debtorAccount": {"iban": "DE40100100103307118608"},
    "creditorName": "Merchant123",
    "creditorAccount": {"iban": "DE02100100109307118603"},
    "remittanceInformationUnstructured": "Ref Number Merchant",
}


def test_berlin_payment_initiation(berlin: Contract) -> None:
    op = op_of(berlin, "POST", "/psd2/v1/{payment-service}/{payment-product}")
    path = {"payment-service": "payments", "payment-product": "sepa-credit-transfers"}
    body = json.dumps(BG_PAYMENT).encode()
    assert check(op, path=path, headers=BG_HEADERS, body=body, content_type="application/json") == []
    # The spec's own example body conforms too.
    example = berlin.resolve("#/components/examples/paymentInitiationSctBody_payments_json")["value"]
    found = check(
        op, path=path, headers=BG_HEADERS, body=json.dumps(example).encode(), content_type="application/json"
    )
    assert found == []


def test_berlin_payment_initiation_violations(berlin: Contract) -> None:
    op = op_of(berlin, "POST", "/psd2/v1/{payment-service}/{payment-product}")
    path = {"payment-service": "loans", "payment-product": "sepa-credit-transfers"}
    headers = [("x-request-id", "not-a-uuid"), ("tpp-redirect-preferred", "maybe")]
    body = dict(BG_PAYMENT, instructedAmount={"currency": "EUR"})
    found = check(
        op, path=path, headers=headers, body=json.dumps(body).encode(), content_type="application/json"
    )
    assert ("path.payment-service", "enum") in found
    assert ("header.x-request-id", "format") in found
    assert ("header.psu-ip-address", "required") in found
    assert ("header.tpp-redirect-preferred", "type") in found
    assert ("body", "oneOf") in found


def test_berlin_boolean_header_is_coerced(berlin: Contract) -> None:
    op = op_of(berlin, "POST", "/psd2/v1/{payment-service}/{payment-product}")
    path = {"payment-service": "payments", "payment-product": "sepa-credit-transfers"}
    headers = [*BG_HEADERS, ("tpp-redirect-preferred", "true")]
    body = json.dumps(BG_PAYMENT).encode()
    assert check(op, path=path, headers=headers, body=body, content_type="application/json") == []


def test_berlin_xml_and_multipart_are_checked_for_type_only(berlin: Contract) -> None:
    op = op_of(berlin, "POST", "/psd2/v1/{payment-service}/{payment-product}")
    path = {"payment-service": "payments", "payment-product": "pain.001-sepa-credit-transfers"}
    assert check(op, path=path, headers=BG_HEADERS, body=b"<Document/>", content_type="application/xml") == []
    multipart = b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--\r\n"
    ct = "multipart/form-data; boundary=b"
    assert check(op, path=path, headers=BG_HEADERS, body=multipart, content_type=ct) == []


def test_brazil_jwt_bodies_are_checked_for_type_only() -> None:
    contract = load_contract(BRAZIL)
    posts = [op for op in contract.operations if op.method == "POST"]
    assert posts
    for op in posts:
        found = check(op, path={}, body=b"eyJ.eyJ.sig", content_type="application/jwt")
        assert not [f for f in found if f[0].startswith("body") or f[1] == "content_type"]
        found = check(op, path={}, body=b"{}", content_type="application/json")
        assert ("header.content-type", "content_type") in found


# --- fixture specs ---------------------------------------------------------------------------------

STYLES_SPEC = """
openapi: 3.0.3
info: {title: styles, version: "1"}
servers: [{url: "https://api.example.com/v1/"}]
paths:
  /items/{id}:
    parameters:
      - {name: id, in: path, required: true, schema: {type: integer, minimum: 1}}
    get:
      parameters:
        - {name: limit, in: query, schema: {type: integer, maximum: 100}}
        - {name: ratio, in: query, schema: {type: number}}
        - {name: flag, in: query, schema: {type: boolean}}
        - {name: since, in: query, schema: {type: string, format: date}}
        - {name: at, in: query, schema: {type: string, format: date-time}}
        - {name: ref, in: query, schema: {type: string, format: uuid}}
        - {name: status, in: query, schema: {type: string, enum: [open, closed]}}
        - {name: code, in: query, schema: {type: string, pattern: "^[A-Z]{3}$"}}
        - {name: big, in: query, schema: {type: integer, format: int32}}
        - {name: either, in: query, schema: {oneOf: [{type: integer}, {type: string, pattern: "^[a-z]+$"}]}}
        - {name: tags, in: query, schema: {type: array, items: {type: integer}}}
        - {name: ids, in: query, explode: false, schema: {type: array, items: {type: integer}, maxItems: 3}}
        - name: words
          in: query
          style: spaceDelimited
          explode: false
          schema: {type: array, items: {type: string}}
        - name: pipes
          in: query
          style: pipeDelimited
          explode: false
          schema: {type: array, items: {type: integer}}
        - name: filter
          in: query
          style: deepObject
          explode: true
          schema:
            type: object
            properties: {min: {type: integer}, max: {type: integer}}
            additionalProperties: false
        - name: point
          in: query
          explode: false
          schema: {type: object, properties: {x: {type: integer}, y: {type: integer}}, required: [x, y]}
        - name: page
          in: query
          schema:
            type: object
            properties: {pageNum: {type: integer}, pageSize: {type: integer, maximum: 50}}
        - {name: q, in: query, allowEmptyValue: true, schema: {type: string}}
        - name: json
          in: query
          content:
            application/json:
              schema: {type: object, required: [a], properties: {a: {type: integer}}}
        - {name: X-Request-Id, in: header, required: true, schema: {type: string, format: uuid}}
        - {name: X-Ids, in: header, schema: {type: array, items: {type: integer}}}
        - name: X-Dims
          in: header
          explode: true
          schema: {type: object, properties: {w: {type: integer}, h: {type: integer}}}
        - {name: X-Flag, in: header, schema: {type: boolean}}
        - {name: session, in: cookie, schema: {type: string, minLength: 4}}
        - name: prefs
          in: cookie
          explode: false
          schema: {type: array, items: {type: string, enum: [a, b]}}
        - {name: Accept, in: header, required: true, schema: {type: string}}
        - {name: Content-Type, in: header, required: true, schema: {type: string}}
        - {name: Authorization, in: header, required: true, schema: {type: string}}
      responses:
        "200": {description: ok}
  /label/{colors}/{point}:
    get:
      parameters:
        - {name: colors, in: path, required: true, style: label, schema: {type: array, items: {type: string}}}
        - name: point
          in: path
          required: true
          style: matrix
          explode: true
          schema: {type: object, properties: {x: {type: integer}, y: {type: integer}}}
      responses:
        "200": {description: ok}
  /matrix/{ids}/{dot}/{plain}:
    get:
      parameters:
        - name: ids
          in: path
          required: true
          style: matrix
          explode: true
          schema: {type: array, items: {type: integer}}
        - name: dot
          in: path
          required: true
          style: label
          explode: true
          schema: {type: array, items: {type: integer}}
        - {name: plain, in: path, required: true, schema: {type: object, properties: {a: {type: integer}}}}
      responses:
        "200": {description: ok}
"""

REQUEST_ID = ("x-request-id", "0b5fb7f9-9b3d-4f0c-8d6e-3c1f3a9b6a10")


@pytest.fixture(scope="module")
def styles(tmp_path_factory: pytest.TempPathFactory) -> Contract:
    path = tmp_path_factory.mktemp("styles") / "styles.yaml"
    path.write_text(STYLES_SPEC)
    contract = load_contract(path)
    assert contract.warnings == ()
    assert contract.base_paths == ("/v1",)
    return contract


def items(
    styles: Contract, query: str = "", headers: Iterable[tuple[str, str]] = (REQUEST_ID,), **kw: Any
) -> list[tuple[str, str]]:
    return check(
        op_of(styles, "GET", "/v1/items/{id}"),
        path=kw.pop("path", {"id": "7"}),
        query=query,
        headers=headers,
        **kw,
    )


def test_styles_valid_request(styles: Contract) -> None:
    query = (
        "limit=10&ratio=0.5&flag=true&since=2024-02-29&at=2024-01-01T10:00:00Z"
        "&ref=0b5fb7f9-9b3d-4f0c-8d6e-3c1f3a9b6a10&status=open&code=GBP&big=2147483647&either=abc"
        "&tags=1&tags=2&ids=1,2,3&words=a%20b&pipes=1|2&filter[min]=1&filter[max]=9"
        "&point=x,1,y,2&pageNum=1&pageSize=20&q=&json=%7B%22a%22%3A1%7D"
    )
    headers = [REQUEST_ID, ("x-ids", "1, 2"), ("x-ids", "3"), ("x-dims", "w=1,h=2"), ("x-flag", "false"),
               ("cookie", "session=abcd; prefs=a,b")]  # fmt: skip
    assert items(styles, query, headers) == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("limit=abc", [("query.limit", "type")]),
        ("limit=101", [("query.limit", "maximum")]),
        ("limit=1.5", [("query.limit", "type")]),
        ("limit=%EF%BC%91", [("query.limit", "type")]),  # a full-width digit is not an integer
        ("limit=" + "9" * 5000, [("query.limit", "type")]),  # beyond Python's int conversion limit
        ("ratio=NaN", [("query.ratio", "type")]),
        ("ratio=1e999", [("query.ratio", "type")]),
        ("ratio=-2.5e3", []),
        ("flag=yes", [("query.flag", "type")]),
        ("flag=True", [("query.flag", "type")]),
        ("since=2024-02-30", [("query.since", "format")]),
        ("at=2024-01-01", [("query.at", "format")]),
        ("ref=1234", [("query.ref", "format")]),
        ("status=pending", [("query.status", "enum")]),
        ("code=gbp", [("query.code", "pattern")]),
        ("big=2147483648", [("query.big", "maximum")]),
        ("either=42", []),
        ("either=ABC", [("query.either", "oneOf")]),
        ("tags=1&tags=x", [("query.tags/1", "type")]),
        ("ids=1,2,3,4", [("query.ids", "maxItems")]),
        ("ids=1&ids=2", [("query.ids", "duplicate")]),
        ("pipes=1|x", [("query.pipes/1", "type")]),
        ("filter[min]=x", [("query.filter/min", "type")]),
        ("filter[other]=1", [("query.filter", "additionalProperties")]),
        ("filter[a][b]=1", [("query.filter", "style")]),
        ("point=x,1,y", [("query.point", "style")]),
        ("point=x,1", [("query.point/y", "required")]),
        ("pageSize=51", [("query.page/pageSize", "maximum")]),
        ("q=", []),
        ("limit=", [("query.limit", "empty")]),
        ("flag", [("query.flag", "empty")]),
        ("json=%7B%7D", [("query.json/a", "required")]),
        ("json=%7B", [("query.json", "not_json")]),
    ],
)
def test_query_styles_and_types(styles: Contract, query: str, expected: list[tuple[str, str]]) -> None:
    assert items(styles, query) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], [("header.x-request-id", "required")]),
        ([("x-request-id", "nope")], [("header.x-request-id", "format")]),
        ([REQUEST_ID, ("x-ids", "1,x")], [("header.x-ids/1", "type")]),
        ([REQUEST_ID, ("x-dims", "w=1,h=x")], [("header.x-dims/h", "type")]),
        ([REQUEST_ID, ("x-dims", "w,1")], [("header.x-dims", "style")]),
        ([REQUEST_ID, ("x-flag", "1")], [("header.x-flag", "type")]),
        ([REQUEST_ID, ("cookie", "session=abc")], [("cookie.session", "minLength")]),
        ([REQUEST_ID, ("cookie", "prefs=a,c")], [("cookie.prefs/1", "enum")]),
        (
            [REQUEST_ID, ("cookie", "session=abcd"), ("cookie", "session=efgh")],
            [("cookie.session", "duplicate")],
        ),
        ([REQUEST_ID, ("cookie", 'session="abcd"; other=1')], []),
    ],
)
def test_header_and_cookie_parameters(
    styles: Contract, headers: list[tuple[str, str]], expected: list[tuple[str, str]]
) -> None:
    assert items(styles, headers=headers) == expected


def test_path_parameters(styles: Contract) -> None:
    assert items(styles, path={"id": "abc"}) == [("path.id", "type")]
    assert items(styles, path={"id": "0"}) == [("path.id", "minimum")]
    assert items(styles, path={}) == [("path.id", "required")]
    label = op_of(styles, "GET", "/v1/label/{colors}/{point}")
    assert check(label, path={"colors": ".blue,black", "point": ";x=1;y=2"}) == []
    assert check(label, path={"colors": "blue", "point": ";x=1;y=a"}) == [
        ("path.colors", "style"),
        ("path.point/y", "type"),
    ]
    matrix = op_of(styles, "GET", "/v1/matrix/{ids}/{dot}/{plain}")
    assert check(matrix, path={"ids": ";ids=1;ids=2", "dot": ".1.2", "plain": "a,1"}) == []
    found = check(matrix, path={"ids": ";ids=1;other=2", "dot": ".1.x", "plain": "a,x"})
    assert found == [("path.ids", "style"), ("path.dot/1", "type"), ("path.plain/a", "type")]


SCHEMAS_SPEC = """
openapi: 3.0.3
info: {title: schemas, version: "1"}
paths:
  /things:
    post:
      requestBody:
        required: true
        content:
          application/json: {schema: {$ref: '#/components/schemas/Thing'}}
          application/merge-patch+json: {schema: {$ref: '#/components/schemas/Thing'}}
          application/*: {schema: {type: object, required: [wild]}}
          text/plain: {}
      responses:
        "201": {description: created}
    put:
      requestBody:
        content:
          "*/*": {schema: {type: array}}
      responses:
        "204": {description: done}
components:
  schemas:
    Created: {type: string, format: date-time, readOnly: true}
    Note: {type: string}
    Thing:
      type: object
      required: [id, name, secret, created]
      additionalProperties: false
      x-internal: true
      properties:
        id: {type: string, format: uuid, readOnly: true}
        name: {type: string, maxLength: 10, example: Widget}
        secret: {type: string, writeOnly: true}
        created: {$ref: '#/components/schemas/Created'}
        nickname: {type: string, nullable: true}
        level: {type: string, enum: [low, high], nullable: true}
        count: {type: integer, format: int32}
        price: {type: number, minimum: 0, exclusiveMinimum: true}
        parent: {nullable: true, allOf: [{$ref: '#/components/schemas/Thing'}]}
        note: {$ref: '#/components/schemas/Note', maxLength: 1}
        pet: {$ref: '#/components/schemas/Pet'}
    Pet:
      oneOf: [{$ref: '#/components/schemas/Cat'}, {$ref: '#/components/schemas/Dog'}]
      discriminator:
        propertyName: kind
        mapping: {cat: '#/components/schemas/Cat', dog: '#/components/schemas/Dog'}
    Cat:
      type: object
      required: [kind, lives]
      properties: {kind: {type: string, enum: [cat]}, lives: {type: integer}}
    Dog:
      type: object
      required: [kind, bark]
      properties: {kind: {type: string, enum: [dog]}, bark: {type: boolean}}
"""


@pytest.fixture(scope="module")
def things(tmp_path_factory: pytest.TempPathFactory) -> OperationContract:
    path = tmp_path_factory.mktemp("schemas") / "schemas.yaml"
    path.write_text(SCHEMAS_SPEC)
    contract = load_contract(path)
    assert contract.warnings == ()
    return op_of(contract, "POST", "/things")


def post(op: OperationContract, doc: Any, content_type: str = "application/json") -> list[tuple[str, str]]:
    return check(op, body=json.dumps(doc).encode(), content_type=content_type)


def test_read_only_properties_in_requests(things: OperationContract) -> None:
    # readOnly properties are not required in a request (OAS 3.0.3 §4.7.24, readOnly) ...
    assert post(things, {"name": "w", "secret": "s"}) == []
    # ... and a request that sets one is refused (mass assignment), directly or through a $ref.
    found = post(things, {"name": "w", "secret": "s", "id": "0b5fb7f9-9b3d-4f0c-8d6e-3c1f3a9b6a10"})
    assert found == [("body/id", "readOnly")]
    assert post(things, {"name": "w", "secret": "s", "created": "2024-01-01T00:00:00Z"}) == [
        ("body/created", "readOnly")
    ]
    # writeOnly properties stay required in requests.
    assert post(things, {"name": "w"}) == [("body/secret", "required")]


def test_nullable(things: OperationContract) -> None:
    base = {"name": "w", "secret": "s"}
    assert post(things, {**base, "nickname": None, "level": None, "parent": None}) == []
    assert post(things, {**base, "level": "mid"}) == [("body/level", "enum")]
    assert post(things, {**base, "name": None}) == [("body/name", "type")]
    assert post(things, {**base, "parent": {"name": 5, "secret": "s"}}) == [("body/parent", "anyOf")]


def test_oas30_keywords(things: OperationContract) -> None:
    base = {"name": "w", "secret": "s"}
    assert post(things, {**base, "price": 0}) == [("body/price", "exclusiveMinimum")]
    assert post(things, {**base, "price": 0.01, "count": 2**31 - 1}) == []
    assert post(things, {**base, "count": 2**31}) == [("body/count", "maximum")]
    assert post(things, {**base, "count": -(2**31) - 1}) == [("body/count", "minimum")]
    # Siblings of a $ref are ignored in OAS 3.0: maxLength: 1 beside the ref has no effect.
    assert post(things, {**base, "note": "a long note"}) == []
    assert post(things, {**base, "name": "a name that is too long"}) == [("body/name", "maxLength")]
    assert post(things, {**base, "other": 1}) == [("body", "additionalProperties")]


def test_discriminated_one_of(things: OperationContract) -> None:
    base = {"name": "w", "secret": "s"}
    assert post(things, {**base, "pet": {"kind": "cat", "lives": 9}}) == []
    assert post(things, {**base, "pet": {"kind": "dog", "bark": True}}) == []
    assert post(things, {**base, "pet": {"kind": "cat", "bark": True}}) == [("body/pet", "oneOf")]


def test_media_type_ranges(things: OperationContract) -> None:
    base = {"name": "w", "secret": "s"}
    assert post(things, base, "application/merge-patch+json") == []
    assert sorted(post(things, {"name": 1}, "application/merge-patch+json")) == [
        ("body/name", "type"),
        ("body/secret", "required"),
    ]
    # application/vnd.x+json is not declared: application/* applies, with its own schema.
    assert post(things, base, "application/vnd.x+json") == [("body/wild", "required")]
    assert post(things, base, "text/plain") == []
    assert post(things, base, "text/html") == [("header.content-type", "content_type")]
    # A range is no Content-Type (RFC 9110 §8.3): refused even where a range is declared.
    assert post(things, base, "application/*") == [("header.content-type", "content_type")]


def test_wildcard_media_type_and_optional_body(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SCHEMAS_SPEC)
    put = op_of(load_contract(path), "PUT", "/things")
    assert check(put) == []
    assert check(put, body=b"[1]", content_type="application/json") == []
    assert check(put, body=b"{}", content_type="application/json") == [("body", "type")]
    assert check(put, body=b"<x/>", content_type="application/xml") == []


OAS31_SPEC = """
openapi: 3.1.0
info: {title: v31, version: "1"}
paths:
  /v/{n}:
    post:
      parameters:
        - {name: n, in: path, required: true, schema: {type: [integer, "null"], exclusiveMinimum: 0}}
      requestBody:
        content:
          application/json:
            schema:
              $ref: '#/components/schemas/Item'
              required: [extra]
      responses:
        "200": {description: ok}
components:
  schemas:
    Item:
      type: object
      properties:
        id: {type: string, readOnly: true}
        name: {type: [string, "null"], maxLength: 3}
        when: {type: string, format: date}
        ref: {type: string, format: uuid}
        tags: {type: array, prefixItems: [{const: first}], items: false}
      required: [id, name]
      unevaluatedProperties: false
"""


def test_oas31_request(tmp_path: Path) -> None:
    path = tmp_path / "v31.yaml"
    path.write_text(OAS31_SPEC)
    contract = load_contract(path)
    assert contract.dialect == "oas31"
    op = op_of(contract, "POST", "/v/{n}")

    def run(n: str, doc: Any) -> list[tuple[str, str]]:
        return check(op, path={"n": n}, body=json.dumps(doc).encode(), content_type="application/json")

    assert run("1", {"name": None, "extra": 1}) == [("body", "unevaluatedProperties")]
    assert run("1", {"name": "abc", "when": "2024-01-01", "ref": "0b5fb7f9-9b3d-4f0c-8d6e-3c1f3a9b6a10"}) == [
        ("body/extra", "required")
    ]
    assert sorted(run("0", {"name": "abcd", "id": "x"})) == [
        ("body/extra", "required"),
        ("body/id", "readOnly"),
        ("body/name", "maxLength"),
        ("path.n", "exclusiveMinimum"),
    ]
    assert sorted(run("1", {"name": "a", "when": "today", "ref": "x", "tags": ["first", "second"]})) == [
        ("body/extra", "required"),
        ("body/ref", "format"),
        ("body/tags/1", "falseSchema"),
        ("body/when", "format"),
    ]


# --- hostile input ------------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
_query = st.one_of(
    _text,
    st.lists(
        st.tuples(
            st.sampled_from(
                ["limit", "tags", "ids", "filter[min]", "filter[", "point", "json", "q", "words", "x"]
            ),
            _text,
        ),
        max_size=8,
    ).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)),
)
_header_names = st.sampled_from(
    ["x-request-id", "x-ids", "x-dims", "x-flag", "cookie", "content-type", "x-other"]
)
_headers = st.lists(st.tuples(_header_names, _text), max_size=6)
_content_types = st.one_of(
    st.none(),
    _text,
    st.sampled_from(["application/json", "application/x+json; charset=utf-8", "text/plain", "*/*"]),
)
_bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_text, kids, max_size=4),
        max_leaves=12,
    ).map(lambda doc: json.dumps(doc).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path_value=_text,
    query=_query,
    headers=_headers,
    body=_bodies,
    content_type=_content_types,
)
def test_hostile_requests_only_yield_violations(
    styles: Contract,
    uk: Contract,
    path_value: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    content_type: str | None,
) -> None:
    targets = [
        (op_of(styles, "GET", "/v1/items/{id}"), {"id": path_value}),
        (op_of(styles, "GET", "/v1/label/{colors}/{point}"), {"colors": path_value, "point": path_value}),
        (
            op_of(styles, "GET", "/v1/matrix/{ids}/{dot}/{plain}"),
            {"ids": path_value, "dot": path_value, "plain": path_value},
        ),
        (op_of(uk, "POST", f"{UK_BASE}/account-access-consents"), {}),
        (op_of(uk, "GET", f"{UK_BASE}/accounts/{{AccountId}}/transactions"), {"AccountId": path_value}),
    ]
    for op, path in targets:
        found = op.check_request(
            path_params=path, query=query, headers=Headers(headers), body=body, content_type=content_type
        )
        assert isinstance(found, list)
        assert len(found) <= 20
        for v in found:
            assert isinstance(v, Violation)
            assert v.status in (400, 415)
            assert v.code
            assert v.location
