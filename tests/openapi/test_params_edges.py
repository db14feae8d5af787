"""Request parameters at the edges of OAS 3.0/3.1 §4.7.12 styles and of schema-driven coercion:
matrix and label path values, exploded form objects with ``additionalProperties``, JSON
``content`` parameters, types that come only from ``enum``, ``[integer, number]`` unions."""

from __future__ import annotations

from pathlib import Path

import pytest

from bankguard.openapi.contract import Contract, OperationContract, load_contract
from bankguard.request import Headers

SPEC = """
openapi: 3.1.0
info: {title: params, version: "1"}
paths:
  /m/{id}:
    get:
      parameters:
        - {name: id, in: path, required: true, style: matrix, schema: {type: integer, minimum: 1}}
      responses: {"200": {description: ok}}
  /l/{point}:
    get:
      parameters:
        - name: point
          in: path
          required: true
          style: label
          explode: true
          schema: {type: object, properties: {x: {type: integer}, y: {type: integer}}}
      responses: {"200": {description: ok}}
  /q:
    get:
      parameters:
        - {name: level, in: query, schema: {enum: [1, 2, 3]}}
        - {name: mode, in: query, schema: {enum: [fast, slow, null]}}
        - {name: strict, in: query, schema: {enum: [true]}}
        - {name: ratio, in: query, schema: {enum: [0.5, 1.5]}}
        - {name: amount, in: query, schema: {type: [integer, number], maximum: 100}}
        - {name: count, in: query, schema: {oneOf: [{type: integer}, {type: string, pattern: "^all$"}]}}
        - {name: limit, in: query, schema: {type: integer}}
        - name: extra
          in: query
          schema:
            type: object
            additionalProperties: {type: integer, maximum: 9}
        - {name: anything, in: query, schema: true}
        - name: doc
          in: query
          content:
            application/json:
              schema: {type: object, properties: {n: {type: number}}}
      responses: {"200": {description: ok}}
"""


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> Contract:
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(SPEC)
    return load_contract(path)


def op_of(contract: Contract, path: str) -> OperationContract:
    return next(op for op in contract.operations if op.path == path)


def check(
    op: OperationContract, *, path: dict[str, str] | None = None, query: str = ""
) -> list[tuple[str, str]]:
    found = op.check_request(
        path_params=path or {}, query=query, headers=Headers(()), body=None, content_type=None
    )
    assert all(v.status == 400 for v in found)
    return [(v.location, v.code) for v in found]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (";id=5", []),
        (";id=0", [("path.id", "minimum")]),
        (";id=x", [("path.id", "type")]),
        (";id", [("path.id", "type")]),  # the empty value of a matrix parameter is not an integer
        ("5", [("path.id", "style")]),
        (";other=5", [("path.id", "style")]),
    ],
)
def test_matrix_path_parameter(contract: Contract, value: str, expected: list[tuple[str, str]]) -> None:
    assert check(op_of(contract, "/m/{id}"), path={"id": value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (".x=1.y=2", []),
        (".x=1.y=b", [("path.point/y", "type")]),
        (".x=1.y", [("path.point", "style")]),
        ("x=1.y=2", [("path.point", "style")]),
    ],
)
def test_exploded_label_object(contract: Contract, value: str, expected: list[tuple[str, str]]) -> None:
    assert check(op_of(contract, "/l/{point}"), path={"point": value}) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("level=2", []),
        ("level=4", [("query.level", "enum")]),
        ("level=two", [("query.level", "enum")]),
        ("mode=fast", []),
        ("mode=null", [("query.mode", "enum")]),  # a query string carries no JSON null
        ("strict=true", []),
        ("strict=false", [("query.strict", "enum")]),
        ("ratio=1.5", []),
        ("ratio=2.5", [("query.ratio", "enum")]),
    ],
)
def test_types_taken_from_enum_values(
    contract: Contract, query: str, expected: list[tuple[str, str]]
) -> None:
    assert check(op_of(contract, "/q"), query=query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("amount=42", []),
        ("amount=42.5", []),
        ("amount=101", [("query.amount", "maximum")]),
        ("amount=" + "9" * 400, [("query.amount", "type")]),  # beyond a float: kept as text
        ("amount=ten", [("query.amount", "type")]),
        ("count=3", []),
        ("count=all", []),
        ("count=some", [("query.count", "oneOf")]),
    ],
)
def test_integer_and_number_unions(contract: Contract, query: str, expected: list[tuple[str, str]]) -> None:
    assert check(op_of(contract, "/q"), query=query) == expected


def test_exploded_form_object_takes_the_undeclared_query_keys(contract: Contract) -> None:
    op = op_of(contract, "/q")
    assert check(op, query="a=1&b=9&limit=5") == []  # limit belongs to its own parameter
    assert check(op, query="a=1&b=10") == [("query.extra/b", "maximum")]
    assert check(op, query="a=x&limit=5") == [("query.extra/a", "type")]
    assert check(op, query="limit=x") == [("query.limit", "type")]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("%7B%22n%22%3A1%7D", []),
        ("%7B%22n%22%3ANaN%7D", [("query.doc", "not_json")]),  # JSON has no NaN (RFC 8259 §6)
        ("%7B%22n%22%3A-Infinity%7D", [("query.doc", "not_json")]),
        ("%7B%22n%22%3A%22x%22%7D", [("query.doc/n", "type")]),
    ],
)
def test_json_content_parameter(contract: Contract, doc: str, expected: list[tuple[str, str]]) -> None:
    assert check(op_of(contract, "/q"), query=f"doc={doc}") == expected


def test_boolean_true_schema_admits_any_value(contract: Contract) -> None:
    assert check(op_of(contract, "/q"), query="anything=%7B%22x%22%3A1%7D") == []
    assert check(op_of(contract, "/q"), query="anything=42") == []


def test_parameter_schema_through_a_reference_chain(tmp_path: Path) -> None:
    spec = tmp_path / "refs.yaml"
    spec.write_text(
        """
openapi: 3.0.3
info: {title: refs, version: "1"}
paths:
  /r:
    get:
      parameters:
        - {name: n, in: query, schema: {$ref: '#/components/schemas/A'}}
      responses: {"200": {description: ok}}
components:
  schemas:
    A: {$ref: '#/components/schemas/B'}
    B: {type: integer, maximum: 3}
"""
    )
    op = op_of(load_contract(spec), "/r")
    assert check(op, query="n=3") == []
    assert check(op, query="n=4") == [("query.n", "maximum")]
    assert check(op, query="n=x") == [("query.n", "type")]


def test_parameter_without_a_schema_is_checked_for_presence_only(tmp_path: Path) -> None:
    spec = tmp_path / "bare.yaml"
    spec.write_text(
        """
openapi: 3.0.3
info: {title: bare, version: "1"}
paths:
  /r:
    get:
      parameters:
        - {name: n, in: query, required: true}
      responses: {"200": {description: ok}}
"""
    )
    contract = load_contract(spec)
    assert contract.warnings == (
        "paths./r.get.parameters[0]: a parameter needs a schema, or content with one media type "
        "(OAS §4.7.12.2); only its presence is checked",
    )
    op = op_of(contract, "/r")
    assert check(op, query="n=anything") == []
    assert check(op, query="") == [("query.n", "required")]


def test_reference_cycle_in_a_parameter_schema_terminates(tmp_path: Path) -> None:
    """A schema made only of references to itself constrains nothing; checking it must not loop."""
    spec = tmp_path / "cycle.yaml"
    spec.write_text(
        """
openapi: 3.0.3
info: {title: cycle, version: "1"}
paths:
  /r:
    get:
      parameters:
        - {name: n, in: query, schema: {$ref: '#/components/schemas/A'}}
      responses: {"200": {description: ok}}
components:
  schemas:
    A: {$ref: '#/components/schemas/B'}
    B: {$ref: '#/components/schemas/A'}
"""
    )
    op = op_of(load_contract(spec), "/r")
    assert check(op, query="n=1") == []
    assert check(op, query="n=x&n=y") == [("query.n", "duplicate")]
