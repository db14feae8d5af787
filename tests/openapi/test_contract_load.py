"""load_contract: the four real specs, $ref resolution, documented defects and hard errors."""

from __future__ import annotations

import contextlib
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bankguard.errors import ConfigurationError
from bankguard.openapi.contract import Contract, OperationContract, load_contract
from bankguard.request import Headers

SPECS = Path("/work/shared/specs")


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def op_of(contract: Contract, method: str, path: str) -> OperationContract:
    for op in contract.operations:
        if op.method == method and op.path == path:
            return op
    raise AssertionError(f"no {method} {path}")


def body_check(op: OperationContract, doc: Any) -> list[tuple[str, str]]:
    found = op.check_request(
        path_params={},
        query="",
        headers=Headers(),
        body=json.dumps(doc).encode(),
        content_type="application/json",
    )
    return [(v.location, v.code) for v in found]


# --- the real specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "version", "operations", "base"),
    [
        ("uk-ob/account-info-openapi.yaml", "3.0.0", 29, "/open-banking/v4.0/aisp"),
        ("berlin-group/psd2-api-1.3.8-2020-11-06v1.yaml", "3.0.1", 38, "/psd2"),
        ("br-ofb/payments_4.0.0.yml", "3.0.0", 6, "/open-banking/payments/v4"),
        ("au-cdr/cds_banking.json", "3.0.3", 19, "/cds-au/v1"),
        ("au-cdr/cds_common.json", "3.0.3", 4, "/cds-au/v1"),
    ],
)
def test_real_specs_load(relative: str, version: str, operations: int, base: str) -> None:
    contract = load_contract(SPECS / relative)
    assert contract.version == version
    assert contract.dialect == "oas30"
    assert len(contract.operations) == operations
    assert contract.base_paths == (base,)
    assert all(op.path.startswith(base + "/") for op in contract.operations)
    assert contract.warnings == ()  # these published versions are clean (see specs/README.md)
    assert contract.load_seconds > 0
    strict = load_contract(SPECS / relative, strict=True)
    assert len(strict.operations) == operations


def test_uk_security_and_schemes() -> None:
    contract = load_contract(SPECS / "uk-ob" / "account-info-openapi.yaml")
    accounts = op_of(contract, "GET", "/open-banking/v4.0/aisp/accounts")
    assert accounts.operation_id == "GetAccounts"
    assert accounts.security == ((("PSUOAuth2Security", ("accounts",)),),)
    consent = op_of(contract, "POST", "/open-banking/v4.0/aisp/account-access-consents")
    assert consent.security == ((("TPPOAuth2Security", ("accounts",)),),)
    assert contract.security_schemes["PSUOAuth2Security"]["type"] == "oauth2"
    schema = contract.resolve("#/components/schemas/OBReadTransaction6")
    assert schema["required"] == ["Data"]


def test_berlin_optional_authentication() -> None:
    contract = load_contract(SPECS / "berlin-group" / "psd2-api-1.3.8-2020-11-06v1.yaml")
    op = op_of(contract, "GET", "/psd2/v1/accounts")
    assert op.security is not None
    assert () in op.security  # security: [{}, {BearerAuthOAuth: []}]: no authentication is one option
    assert (("BearerAuthOAuth", ()),) in op.security


def test_au_cdr_has_no_security_declared() -> None:
    contract = load_contract(SPECS / "au-cdr" / "cds_banking.json")
    assert contract.security_schemes == {}
    assert all(op.security is None for op in contract.operations)


def test_base_path_override() -> None:
    contract = load_contract(SPECS / "uk-ob" / "account-info-openapi.yaml", base_path="/api/")
    assert contract.base_paths == ("/api",)
    assert op_of(contract, "GET", "/api/accounts")
    contract = load_contract(SPECS / "uk-ob" / "account-info-openapi.yaml", base_path="")
    assert contract.base_paths == ("",)
    assert op_of(contract, "GET", "/accounts")


# --- references -------------------------------------------------------------------------------------


def test_relative_file_refs_resolve_against_their_own_file(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        """
        openapi: 3.0.3
        info: {title: refs, version: "1"}
        paths:
          /accounts:
            $ref: 'paths/accounts.yaml'
        components:
          schemas:
            Money: {type: string, pattern: '^[0-9]+\\.[0-9]{2}$'}
        """,
        "api/root.yaml",
    )
    write(
        tmp_path,
        """
        post:
          requestBody:
            content:
              application/json:
                schema: {$ref: '../../common/defs.json#/components/schemas/Account'}
          responses:
            "201": {$ref: '../../common/defs.json#/components/responses/Created'}
        """,
        "api/paths/accounts.yaml",
    )
    defs = {
        "components": {
            "schemas": {
                "Account": {
                    "type": "object",
                    "required": ["id", "balance"],
                    "properties": {
                        "id": {"$ref": "#/components/schemas/Id"},
                        "balance": {"$ref": "../api/root.yaml#/components/schemas/Money"},
                        "owner": {"$ref": "people/person.json"},
                    },
                },
                "Id": {"type": "string", "minLength": 2},
            },
            "responses": {
                "Created": {
                    "description": "created",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Account"}}},
                }
            },
        }
    }
    write(tmp_path, json.dumps(defs), "common/defs.json")
    write(tmp_path, json.dumps({"type": "object", "required": ["name"]}), "common/people/person.json")
    contract = load_contract(root)
    assert contract.warnings == ()
    op = op_of(contract, "POST", "/accounts")
    assert body_check(op, {"id": "ab", "balance": "1.00", "owner": {"name": "x"}}) == []
    assert sorted(body_check(op, {"id": "a", "balance": "1", "owner": {}})) == [
        ("body/balance", "pattern"),
        ("body/id", "minLength"),
        ("body/owner/name", "required"),
    ]
    response = op.response(201, "application/json")
    assert response is not None
    assert response.validate({"id": "ab", "balance": "x"}) == ["/balance"]
    # The resolver takes any ref found anywhere in the tree: refs of other files were rewritten
    # relative to the root file at load.
    account = contract.resolve("../common/defs.json#/components/schemas/Account")
    assert account["properties"]["id"] == {"$ref": "../common/defs.json#/components/schemas/Id"}
    assert contract.resolve(account["properties"]["id"]["$ref"]) == {"type": "string", "minLength": 2}
    assert contract.resolve(account["properties"]["balance"]["$ref"])["pattern"].startswith("^")
    assert contract.resolve(account["properties"]["owner"]["$ref"]) == {
        "type": "object",
        "required": ["name"],
    }
    assert response.schema == {"$ref": "../common/defs.json#/components/schemas/Account"}
    assert response.resolve(response.schema["$ref"]) is account
    # Refs outside the loaded tree are unknown: resolving never reads another file after load.
    write(tmp_path, "{}", "api/late.json")
    for unknown in ("#/components/schemas/Nope", "late.json", "../common/defs.json#/nope"):
        with pytest.raises(KeyError):
            contract.resolve(unknown)


def test_recursive_schemas(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        openapi: 3.0.3
        info: {title: tree, version: "1"}
        paths:
          /tree:
            put:
              requestBody:
                content:
                  application/json: {schema: {$ref: '#/components/schemas/Node'}}
              responses:
                "200":
                  description: ok
                  content:
                    application/json: {schema: {$ref: '#/components/schemas/Node'}}
        components:
          schemas:
            Node:
              type: object
              required: [name]
              properties:
                name: {type: string}
                children: {type: array, items: {$ref: '#/components/schemas/Node'}}
                parent: {$ref: '#/components/schemas/Parent'}
            Parent: {$ref: '#/components/schemas/Node'}
        """,
    )
    contract = load_contract(path)
    op = op_of(contract, "PUT", "/tree")
    deep: dict[str, Any] = {"name": "leaf"}
    for i in range(200):
        deep = {"name": str(i), "children": [deep], "parent": {"name": "p"}}
    assert body_check(op, deep) == []
    deep["children"][0]["children"][0]["name"] = 5
    assert body_check(op, deep) == [("body/children/0/children/0/name", "type")]
    response = op.response(200, "application/json")
    assert response is not None
    assert response.validate({"children": [{"name": "x"}, {}]}) == ["/name", "/children/1/name"]


def test_json_spec_with_yaml_extension_and_yaml_core_schema(tmp_path: Path) -> None:
    """YAML 1.2 core schema: on/yes/no and dates stay strings (PyYAML would read them as 1.1)."""
    path = write(
        tmp_path,
        """
        openapi: 3.0.3
        info: {title: core, version: 2024-01-01}
        paths:
          /switch:
            post:
              requestBody:
                content:
                  application/json:
                    schema:
                      type: object
                      properties:
                        state: {type: string, enum: [on, off, yes, no, 2024-01-01]}
                        n: {type: integer, enum: [0o17, 0x1F, 012]}
              responses:
                "200": {description: ok}
        """,
    )
    contract = load_contract(path)
    op = op_of(contract, "POST", "/switch")
    for value in ("on", "off", "yes", "no", "2024-01-01"):
        assert body_check(op, {"state": value}) == []
    assert sorted(body_check(op, {"state": True})) == [("body/state", "enum"), ("body/state", "type")]
    for value in (15, 31, 12):
        assert body_check(op, {"n": value}) == []
    as_json = write(
        tmp_path, json.dumps({"openapi": "3.1.0", "info": {"title": "j", "version": "1"}}), "j.yaml"
    )
    assert load_contract(as_json).dialect == "oas31"


def test_servers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        openapi: 3.0.3
        info: {title: servers, version: "1"}
        servers:
          - url: 'https://{host}/api/{version}/'
            variables:
              host: {default: example.com}
              version: {default: v2, enum: [v1, v2]}
          - url: /api/v2
          - url: https://example.com
        paths:
          /a:
            get: {responses: {"200": {description: ok}}}
          /b:
            servers: [{url: /other}]
            get:
              responses: {"200": {description: ok}}
            post:
              servers: [{url: 'https://x.example/special/'}]
              responses: {"200": {description: ok}}
        """,
    )
    contract = load_contract(path)
    assert contract.base_paths == ("/api/v2", "")
    assert sorted((op.method, op.path) for op in contract.operations) == [
        ("GET", "/a"),
        ("GET", "/api/v2/a"),
        ("GET", "/other/b"),
        ("POST", "/special/b"),
    ]


# --- documented defects --------------------------------------------------------------------------

DEFECTS = """
openapi: 3.0.0
info: {title: defects, version: "1"}
paths:
  /accounts/{AccountId}:
    get:
      parameters:
        - {name: x-fapi-interaction-id, in: header, schema: {type: string, format: uuid}}
        - {name: AccountId, in: path, required: true, schema: {type: string}}
        - {name: X-FAPI-Interaction-Id, in: header, schema: {type: integer}}
        - {name: status, in: query, schema: {type: string, enum: [open, closed, open]}}
        - {name: sort, in: query, style: matrix, schema: {type: array, items: {type: string}}}
      responses:
        200:
          description: ok
          content:
            application/json:
              schema: {type: object}
        default: {description: error}
  /balances/{BalanceId}:
    get:
      parameters:
        - {name: Other, in: path, required: true, schema: {type: string}}
        - {name: limit, in: query}
      security:
        - NotDeclared: [read]
      responses:
        "2XX": {description: ok}
        "20X": {description: odd}
"""


def test_defects_are_warnings(tmp_path: Path) -> None:
    contract = load_contract(write(tmp_path, DEFECTS))
    warnings = contract.warnings
    expected = [
        "paths./accounts/{AccountId}.get.parameters[2]: "
        "parameter X-FAPI-Interaction-Id (header) declared twice; "
        "the first is used",
        "paths./accounts/{AccountId}.get.parameters[3].schema.enum[2]: enum value 'open' is listed twice; "
        "the duplicate is ignored",
        "paths./accounts/{AccountId}.get.responses (line 13): response code 200 is not a string",
        "paths./accounts/{AccountId}.get.parameters[4]: style 'matrix' is not defined for query parameters",
        "paths./balances/{BalanceId}.get: path parameter {BalanceId} is not declared",
        "paths./balances/{BalanceId}.get: parameter Other (path) is not in the path template; ignored",
        "paths./balances/{BalanceId}.get.parameters[1]: a parameter needs a schema",
        "paths./balances/{BalanceId}.get.security[0].NotDeclared: "
        "security scheme 'NotDeclared' is not declared",
        "paths./balances/{BalanceId}.get.responses.20X: response code '20X' is not a status code",
    ]
    for text in expected:
        assert any(w.startswith(text) for w in warnings), (text, warnings)
    assert len(warnings) == len(expected)
    op = op_of(contract, "GET", "/accounts/{AccountId}")
    # The first declaration of the duplicated header wins (a uuid, not an integer).
    found = op.check_request(
        path_params={"AccountId": "1"},
        query="",
        headers=Headers([("x-fapi-interaction-id", "5")]),
        body=None,
        content_type=None,
    )
    assert [(v.location, v.code) for v in found] == [("header.x-fapi-interaction-id", "format")]
    # The integer response code is read as the string "200".
    response = op.response(200, "application/json")
    assert response is not None
    assert response.validate([]) == [""]
    balances = op_of(contract, "GET", "/balances/{BalanceId}")
    assert balances.response(204, None) is not None
    assert balances.response(209, None) is not None
    assert balances.response(404, None) is None
    found = balances.check_request(
        path_params={"BalanceId": "x"}, query="", headers=Headers(), body=None, content_type=None
    )
    assert found == []


STRICT_CASES = {
    "duplicate parameter": (
        """
        - {name: x-id, in: header, schema: {type: string}}
        - {name: X-Id, in: header, schema: {type: integer}}
        """,
        "'200'",
        "paths./a.get.parameters[1]",
        "declared twice",
    ),
    "duplicate enum value": (
        "- {name: s, in: query, schema: {type: string, enum: [a, b, a]}}",
        "'200'",
        "paths./a.get.parameters[0].schema.enum[2]",
        "listed twice",
    ),
    "integer response code": (
        "- {name: s, in: query, schema: {type: string}}",
        "200",
        "paths./a.get.responses (line 9)",
        "response code 200 is not a string",
    ),
}


@pytest.mark.parametrize("case", sorted(STRICT_CASES))
def test_defects_are_errors_when_strict(tmp_path: Path, case: str) -> None:
    parameters, code, where, message = STRICT_CASES[case]
    params = textwrap.indent(textwrap.dedent(parameters).strip(), " " * 8)
    text = f"""openapi: 3.0.3
info: {{title: strict, version: "1"}}
paths:
  /a:
    get:
      parameters:
{params}
      responses:
        {code}: {{description: ok}}
"""
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    warnings = load_contract(path).warnings
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{where}: ")
    with pytest.raises(ConfigurationError) as info:
        load_contract(path, strict=True)
    assert info.value.path == where
    assert message in str(info.value)


def test_duplicate_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        openapi: 3.0.3
        info: {title: dup, version: "1"}
        paths:
          /a:
            get:
              summary: first
              summary: second
              responses:
                "200": {description: ok}
        """,
    )
    contract = load_contract(path)
    assert contract.warnings == (
        "paths./a.get (line 7): key 'summary' appears twice in one mapping; the last value is used",
    )
    with pytest.raises(ConfigurationError, match="summary"):
        load_contract(path, strict=True)
    as_json = tmp_path / "dup.json"
    as_json.write_text(
        '{"openapi": "3.0.3", "info": {"title": "j", "version": "1"}, '
        '"paths": {"/a": {"get": {"responses": {"200": {"description": "a"}, "200": {"description": "b"}}}}}}'
    )
    assert load_contract(as_json).warnings == (
        "paths./a.get.responses: key '200' appears twice in one mapping; the last value is used",
    )


def test_duplicate_keys_in_examples_are_named_by_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        openapi: 3.0.3
        info: {title: dup, version: "1"}
        paths:
          /a:
            get:
              responses:
                "200":
                  description: ok
                  content:
                    application/json:
                      example: {a: 1, a: 2}
        """,
    )
    assert load_contract(path).warnings == (
        "spec.yaml (line 11): key 'a' appears twice in one mapping; the last value is used",
    )


def test_nullable_in_oas31_is_a_defect(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        openapi: 3.1.0
        info: {title: n, version: "1"}
        paths:
          /a:
            post:
              requestBody:
                content:
                  application/json: {schema: {$ref: '#/components/schemas/A'}}
        components:
          schemas:
            A: {type: object, properties: {b: {type: string, nullable: true}}}
        """,
    )
    contract = load_contract(path)
    assert contract.warnings == (
        "components.schemas.A.properties.b: "
        "nullable is not an OAS 3.1 keyword (use type: [..., 'null']); ignored",
    )
    assert body_check(op_of(contract, "POST", "/a"), {"b": None}) == [("body/b", "type")]


# --- hard errors ----------------------------------------------------------------------------------

MINIMAL = 'openapi: 3.0.3\ninfo: {title: t, version: "1"}\n'


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a: [1, 2\n", "spec.yaml", "not valid YAML or JSON at line 2"),
        ("- 1\n- 2\n", "spec.yaml", "must be an object, not an array"),
        ("just text\n", "spec.yaml", "must be an object, not a string"),
        ("", "spec.yaml", "must be an object, not null"),
        ("info: {}\n", "openapi", "missing"),
        ("openapi: 3.0\n", "openapi", "missing, or not a version string"),
        ("openapi: '2.0'\n", "openapi", "version '2.0' is not supported"),
        ("openapi: 3.2.0\n", "openapi", "version '3.2.0' is not supported"),
        ("swagger: '2.0'\n", "swagger", "OpenAPI 2.0 (Swagger) is not supported"),
        ("openapi: 3.0.3\nx: !!python/object:os.system {}\n", "spec.yaml", "not allowed"),
        ("openapi: 3.0.3\nx: !!binary aGVsbG8=\n", "spec.yaml", "not allowed"),
        ("openapi: 3.0.3\n? [a, b]\n: c\n", "spec.yaml", "mapping key must be a scalar"),
        (MINIMAL + "paths:\n  accounts: {}\n", "paths.accounts", "malformed path template"),
        (MINIMAL + "paths:\n  /a/{b: {}\n", "paths./a/{b", "malformed path template"),
        (MINIMAL + "paths:\n  /a/{}/c: {}\n", "paths./a/{}/c", "malformed path template"),
        (MINIMAL + "paths:\n  /a?x=1: {}\n", "paths./a?x=1", "malformed path template"),
        (MINIMAL + "paths:\n  /a/{x}/{x}: {}\n", "paths./a/{x}/{x}", "appears twice"),
        (
            MINIMAL + "paths:\n  /a:\n    get:\n      parameters: [{$ref: '#/components/parameters/Nope'}]\n",
            "paths./a.get.parameters[0].$ref",
            "'#/components/parameters/Nope' cannot be resolved",
        ),
        (
            MINIMAL + "paths:\n  /a: {$ref: 'missing.yaml'}\n",
            "paths./a.$ref",
            "'missing.yaml' cannot be resolved: no file",
        ),
        (
            MINIMAL + "paths:\n  /a: {$ref: 'https://example.com/a.yaml'}\n",
            "paths./a.$ref",
            "only local and relative-file references",
        ),
        (
            MINIMAL + "components:\n  schemas:\n    A: {$ref: '#anchor'}\n",
            "components.schemas.A.$ref",
            "anchor",
        ),
        (
            MINIMAL + "components:\n  schemas:\n    A: {$ref: 5}\n",
            "components.schemas.A.$ref",
            "must be a string",
        ),
        (
            MINIMAL
            + "paths:\n  /a:\n    get:\n      parameters: [{$ref: '#/x'}]\n"
            + "x: {$ref: '#/y'}\ny: {$ref: '#/x'}\n",
            "paths./a.get.parameters[0]",
            "cyclic",
        ),
        (
            MINIMAL
            + "paths:\n  /a:\n    post:\n      requestBody:\n        content:\n          application/json:\n"
            "            schema: {type: string, pattern: '[a-'}\n",
            "paths./a.post.requestBody.content.application/json.schema",
            "invalid schema",
        ),
        (
            MINIMAL
            + "paths:\n  /a:\n    post:\n      requestBody:\n        content:\n          application/json:\n"
            "            schema: {$ref: '#/components/schemas/A'}\n"
            "components:\n  schemas:\n    A: {type: object, properties: {b: {minLength: '1'}}}\n",
            "components.schemas.A",
            "invalid schema",
        ),
        (
            MINIMAL + "paths:\n  /a:\n    get:\n      parameters: [{in: query}]\n",
            "paths./a.get.parameters[0]",
            "needs a name",
        ),
        (MINIMAL + "paths:\n  /a:\n    get: []\n", "paths./a.get", "must be an object"),
        (
            MINIMAL + "paths:\n  /a:\n    post:\n      requestBody: {}\n",
            "paths./a.post.requestBody.content",
            "must be an object",
        ),
        (MINIMAL + "security: {a: []}\n", "security", "must be an array"),
        (MINIMAL + "servers: [{description: x}]\n", "servers[0]", "needs a url"),
    ],
)
def test_hard_errors_name_the_location(tmp_path: Path, text: str, where: str, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        load_contract(path)
    assert info.value.path == where, str(info.value)
    assert message in str(info.value)


def test_yaml_alias_cycle_in_a_schema(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        openapi: 3.0.3
        info: {title: t, version: "1"}
        paths:
          /a:
            post:
              requestBody:
                content:
                  application/json:
                    schema: &loop {type: object, properties: {self: *loop}}
        """,
    )
    with pytest.raises(ConfigurationError, match="contains itself"):
        load_contract(path)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_contract(tmp_path / "absent.yaml")
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_contract(tmp_path)
    binary = tmp_path / "spec.yaml"
    binary.write_bytes(b"openapi: \xff\xfe\n")
    with pytest.raises(ConfigurationError, match="not UTF-8"):
        load_contract(binary)
    broken = tmp_path / "spec.json"
    broken.write_text('{"openapi": "3.0.3",}')
    with pytest.raises(ConfigurationError, match="not valid JSON at line 1"):
        load_contract(broken)
    nan = tmp_path / "nan.json"
    nan.write_text('{"openapi": NaN}')
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_contract(nan)


# --- arbitrary documents ----------------------------------------------------------------------------

_scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
_names = st.sampled_from(
    [
        "/a", "/a/{id}", "get", "post", "parameters", "name", "in", "query", "path", "header", "id", "schema",
        "type", "style", "explode", "required", "requestBody", "content", "application/json", "responses",
        "200", "default", "$ref", "#/components/schemas/A", "servers", "url", "security", "items", "enum",
        "nullable", "readOnly", "properties", "allOf", "components", "schemas", "A",
    ]
)  # fmt: skip
_node = st.recursive(
    _scalar | _names,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_names | st.text(max_size=4), kids, max_size=5),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=_node, components=_node, version=st.sampled_from(["3.0.3", "3.1.0"]))
def test_arbitrary_documents_load_or_raise_configuration_error(
    tmp_path: Path, paths: Any, components: Any, version: str
) -> None:
    doc = {
        "openapi": version,
        "info": {"title": "t", "version": "1"},
        "paths": paths,
        "components": components,
    }
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(doc))
    contract: Contract | None = None
    try:
        contract = load_contract(path)
    except ConfigurationError as exc:
        where = exc.path
    if contract is None:
        assert where  # every hard error names a location
        return
    for op in contract.operations:
        op.check_request(
            path_params={}, query="a=1", headers=Headers(), body=b"{}", content_type="application/json"
        )
        op.response(200, "application/json")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_arbitrary_text_loads_or_raises_configuration_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text("openapi: 3.0.3\ninfo: {title: t, version: '1'}\n" + text, encoding="utf-8")
    with contextlib.suppress(ConfigurationError):
        load_contract(path)


_value = (
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4) | st.lists(st.integers(), max_size=2)
)
_type = st.sampled_from(
    ["string", "integer", "number", "boolean", "array", "object", "null", ["string", "null"], 5]
)
_schema = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "type": _type,
            "format": st.sampled_from(["date", "uuid", "int32", "date-time", "x"]),
            "enum": st.lists(_value, max_size=3),
            "nullable": _value,
            "readOnly": _value,
            "writeOnly": _value,
            "minimum": _value,
            "pattern": st.sampled_from(["^a", "[", "\\d+"]),
            "$ref": st.sampled_from(["#/components/schemas/A", "#/nope", "#/components/schemas"]),
            "required": st.lists(st.text(max_size=2), max_size=2),
        },
    ),
    lambda kids: st.fixed_dictionaries(
        {},
        optional={
            "properties": st.dictionaries(st.text(max_size=3), kids, max_size=3),
            "items": kids,
            "allOf": st.lists(kids, max_size=2),
            "oneOf": st.lists(kids, max_size=2),
            "additionalProperties": kids | st.booleans(),
            "type": _type,
            "nullable": _value,
        },
    ),
    max_leaves=10,
)
_media = st.dictionaries(
    st.sampled_from(
        ["application/json", "application/*", "*/*", "text/plain", "application/x+json; charset=utf-8", "x"]
    ),
    st.fixed_dictionaries({}, optional={"schema": _schema}),
    max_size=3,
)
_param = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["id", "q", "X-H", "c", ""]),
        "in": st.sampled_from(["path", "query", "header", "cookie", "body", 3]),
    },
    optional={
        "schema": _schema,
        "style": st.sampled_from(
            ["form", "simple", "label", "matrix", "deepObject", "spaceDelimited", "x", 1]
        ),
        "explode": _value,
        "required": _value,
        "allowEmptyValue": _value,
        "content": _media,
    },
)
_operation = st.fixed_dictionaries(
    {},
    optional={
        "parameters": st.lists(_param, max_size=4),
        "requestBody": st.fixed_dictionaries({"content": _media}, optional={"required": _value}),
        "responses": st.dictionaries(
            st.sampled_from(["200", "2XX", "default", "20X", "404"]),
            st.fixed_dictionaries({"description": st.just("d")}, optional={"content": _media}),
            max_size=3,
        ),
        "security": st.lists(
            st.dictionaries(st.sampled_from(["a", "b"]), st.lists(st.text(max_size=2), max_size=2)),
            max_size=2,
        ),
    },
)
_paths = st.dictionaries(
    st.sampled_from(["/a", "/a/{id}", "/b/{id}/{c}", "/{id}"]),
    st.fixed_dictionaries(
        {}, optional={"get": _operation, "post": _operation, "parameters": st.lists(_param, max_size=2)}
    ),
    max_size=3,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    paths=_paths,
    schema=_schema,
    version=st.sampled_from(["3.0.3", "3.1.0"]),
    text=st.text(max_size=20),
    body=st.binary(max_size=20),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x+json", None]),
)
def test_arbitrary_operations_load_and_check_or_raise_configuration_error(
    tmp_path: Path, paths: Any, schema: Any, version: str, text: str, body: bytes, content_type: str | None
) -> None:
    doc = {
        "openapi": version,
        "info": {"title": "t", "version": "1"},
        "paths": paths,
        "components": {"schemas": {"A": schema}, "securitySchemes": {"a": {"type": "oauth2"}}},
    }
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(doc))
    contract: Contract | None = None
    try:
        contract = load_contract(path)
    except ConfigurationError as exc:
        where = exc.path
    if contract is None:
        assert where  # every hard error names a location
        return
    headers = Headers([("x-h", text), ("cookie", text)])
    for op in contract.operations:
        for sent in (body, b'{"a": 1, "id": null}', b"[1]"):
            found = op.check_request(
                path_params={"id": "1", "c": text},
                query=text,
                headers=headers,
                body=sent,
                content_type=content_type,
            )
            assert all(v.status in (400, 415) for v in found)
        for status in (200, 201, 404, 500):
            response = op.response(status, content_type)
            if response is not None:
                assert len(response.validate({"a": [1, None, "x"]})) <= 20
