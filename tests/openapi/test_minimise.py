"""Response minimisation (:mod:`bankguard.openapi.minimise`): undeclared and unauthorised
properties removed, card numbers masked, the input never changed.

Schemas come from small component dictionaries with a resolver written here, and from the UK
Open Banking Account and Transaction spec in ``../shared/specs/uk-ob/`` (loaded with PyYAML,
its ``#/components/...`` pointers resolved here too, independently of the contract module).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bankguard.errors import ConfigurationError
from bankguard.openapi import minimise as minimise_module
from bankguard.openapi.minimise import (
    MAX_DEPTH,
    MAX_POINTERS,
    DocumentTooDeep,
    MinimiseReport,
    Shape,
    ShapeCompiler,
    compile_shape,
    luhn_valid,
    mask_pans,
    minimise,
)

UK_SPEC = Path(__file__).resolve().parents[3] / "shared" / "specs" / "uk-ob" / "account-info-openapi.yaml"
NO_SCOPES: frozenset[str] = frozenset()


# -- helpers ----------------------------------------------------------------------------------


def pointer_resolver(document: Mapping[str, Any], prefix: str = ""):
    """Resolve ``#/a/b`` (RFC 6901) in ``document``; with ``prefix``, also ``prefix#/a/b``."""

    def resolve(ref: str) -> Mapping[str, Any]:
        file, _, fragment = ref.partition("#")
        if file not in ("", prefix):
            raise KeyError(ref)
        node: Any = document
        for token in fragment.split("/")[1:]:
            node = node[token.replace("~1", "/").replace("~0", "~")]
        return node

    return resolve


def shape_of(schema: Any, schemas: Mapping[str, Any] | None = None, **options: Any) -> Shape:
    return compile_shape(
        schema, pointer_resolver({"components": {"schemas": dict(schemas or {})}}), **options
    )


def strip(document: Any, shape: Shape, scopes: frozenset[str] = NO_SCOPES) -> Any:
    """Minimise with card numbers revealed: only removal is under test."""
    return minimise(document, shape, scopes=scopes, reveal_pan=True)[0]


def mask(document: Any, shape: Shape | None = None) -> tuple[Any, MinimiseReport]:
    return minimise(document, shape or shape_of(None), scopes=NO_SCOPES, reveal_pan=False)


def with_check_digit(body: str) -> str:
    """``body`` plus its Luhn check digit (computed here, independently of the module)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def luhn_invalid(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


OBJ = {"type": "object"}


def obj(properties: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), **extra}


STR = {"type": "string"}


# -- undeclared properties ----------------------------------------------------------------------


def test_undeclared_properties_are_removed_at_every_level_keeping_order():
    shape = shape_of(obj({"z": STR, "a": obj({"y": STR, "b": STR}), "m": STR}))
    document = {"z": "1", "extra": 1, "a": {"y": "2", "hidden": {"x": 1}, "b": "3"}, "m": "4", "last": None}
    result = strip(document, shape)
    assert result == {"z": "1", "a": {"y": "2", "b": "3"}, "m": "4"}
    assert list(result) == ["z", "a", "m"]
    assert list(result["a"]) == ["y", "b"]


def test_arrays_of_objects_and_nested_arrays():
    item = obj({"id": STR, "tags": {"type": "array", "items": obj({"k": STR})}})
    shape = shape_of(obj({"list": {"type": "array", "items": item}}))
    document = {
        "list": [{"id": "1", "x": 1, "tags": [{"k": "a", "v": 2}, {"k": "b"}]}, {"id": "2"}, "str", 5]
    }
    assert strip(document, shape) == {
        "list": [{"id": "1", "tags": [{"k": "a"}, {"k": "b"}]}, {"id": "2"}, "str", 5]
    }


def test_nested_arrays_of_arrays():
    shape = shape_of({"type": "array", "items": {"type": "array", "items": obj({"a": STR})}})
    assert strip([[{"a": "1", "b": 2}], [], [{"c": 3}]], shape) == [[{"a": "1"}], [], [{}]]


def test_report_counts_and_pointers():
    shape = shape_of(obj({"a": obj({"b": STR}), "list": {"type": "array", "items": obj({"k": STR})}}))
    document = {"a": {"b": "x", "c/d": 1, "e~f": 2}, "list": [{"k": 1, "no": 2}], "top": 3}
    _, report = minimise(document, shape, scopes=NO_SCOPES, reveal_pan=True)
    assert report.removed_undeclared == 4
    assert report.removed_unauthorised == 0
    assert report.masked == 0
    assert report.removed == 4
    assert report.changed
    assert report.pointers == ("/a/c~1d", "/a/e~0f", "/list/0/no", "/top")  # RFC 6901 escaping


def test_report_keeps_the_first_pointers_only():
    shape = shape_of(obj({}))
    document = {f"k{i}": i for i in range(3 * MAX_POINTERS)}
    result, report = minimise(document, shape, scopes=NO_SCOPES, reveal_pan=True)
    assert result == {}
    assert report.removed_undeclared == 3 * MAX_POINTERS
    assert report.pointers == tuple(f"/k{i}" for i in range(MAX_POINTERS))


def test_all_of_any_of_one_of_declare_the_union():
    schemas = {
        "Base": obj({"id": STR}, additionalProperties=False),
        "Extra": obj({"note": STR}),
    }
    for keyword in ("allOf", "anyOf", "oneOf"):
        shape = shape_of(
            {keyword: [{"$ref": "#/components/schemas/Base"}, {"$ref": "#/components/schemas/Extra"}]},
            schemas,
        )
        assert strip({"id": "1", "note": "n", "secret": "s"}, shape) == {"id": "1", "note": "n"}, keyword


def test_composition_is_followed_recursively_and_beside_properties():
    schemas = {
        "A": {"allOf": [{"$ref": "#/components/schemas/B"}, obj({"a": STR})]},
        "B": {"oneOf": [obj({"b1": STR}), {"anyOf": [obj({"b2": STR})]}]},
    }
    shape = shape_of(obj({"own": STR}, allOf=[{"$ref": "#/components/schemas/A"}]), schemas)
    document = {"own": 1, "a": 2, "b1": 3, "b2": 4, "c": 5}
    assert strip(document, shape) == {"own": 1, "a": 2, "b1": 3, "b2": 4}


def test_branches_declaring_one_property_with_different_shapes_are_merged():
    shape = shape_of(
        {
            "oneOf": [
                obj({"p": obj({"x": STR})}),
                obj({"p": obj({"y": STR}, additionalProperties=False)}),
                obj({"p": STR}),
            ]
        }
    )
    assert strip({"p": {"x": 1, "y": 2, "z": 3}}, shape) == {"p": {"x": 1, "y": 2}}


def test_composition_inside_arrays():
    shape = shape_of({"type": "array", "items": {"allOf": [obj({"a": STR}), obj({"b": STR})]}})
    assert strip([{"a": 1, "b": 2, "c": 3}], shape) == [{"a": 1, "b": 2}]


def test_additional_properties_true_keeps_undeclared_whole():
    shape = shape_of(obj({"a": STR}, additionalProperties=True))
    document = {"a": 1, "free": {"deep": [{"x": 1}]}, "other": "v"}
    assert strip(document, shape) == document


def test_additional_properties_schema_shapes_the_undeclared():
    shape = shape_of(obj({"a": STR}, additionalProperties=obj({"amount": STR})))
    document = {"a": 1, "GBP": {"amount": "1", "debug": 2}, "EUR": {"amount": "2"}}
    assert strip(document, shape) == {"a": 1, "GBP": {"amount": "1"}, "EUR": {"amount": "2"}}


def test_additional_properties_false_and_absent_remove_the_undeclared():
    for schema in (obj({"a": STR}, additionalProperties=False), obj({"a": STR}), OBJ):
        assert strip({"a": 1, "b": 2}, shape_of(schema)) == ({"a": 1} if "properties" in schema else {})


def test_additional_properties_empty_schema_is_unconstrained():
    shape = shape_of(obj({}, additionalProperties={}))
    assert strip({"x": {"y": [1, {"z": 2}]}}, shape) == {"x": {"y": [1, {"z": 2}]}}


def test_pattern_properties_keep_matching_names_with_their_shape():
    shape = shape_of(
        obj(
            {"id": STR},
            patternProperties={"^x-": STR, "[0-9]{3}$": obj({"v": STR}), "^(?<tag>t)_": {}},
            additionalProperties=False,
        )
    )
    document = {
        "id": 1,
        "x-trace": "t",
        "code-123": {"v": 1, "w": 2},
        "t_any": {"q": 1},
        "other": 1,
        "y-x-": 2,
    }
    assert strip(document, shape) == {"id": 1, "x-trace": "t", "code-123": {"v": 1}, "t_any": {"q": 1}}


def test_pattern_properties_before_additional_properties():
    shape = shape_of(
        obj({}, patternProperties={"^n_": obj({"a": STR})}, additionalProperties=obj({"b": STR}))
    )
    document = {"n_1": {"a": 1, "b": 2}, "other": {"a": 1, "b": 2}}
    assert strip(document, shape) == {"n_1": {"a": 1}, "other": {"b": 2}}


def test_recursive_schema_compiles_and_strips_every_level():
    schemas = {
        "Node": obj(
            {"name": STR, "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}
        )
    }
    shape = shape_of({"$ref": "#/components/schemas/Node"}, schemas)
    assert "Shape(" in repr(shape)  # a cyclic shape still has a finite repr

    def tree(depth: int) -> dict[str, Any]:
        node: dict[str, Any] = {"name": f"n{depth}", "junk": depth}
        if depth:
            node["children"] = [tree(depth - 1), tree(depth - 1)]
        return node

    def clean(depth: int) -> dict[str, Any]:
        node: dict[str, Any] = {"name": f"n{depth}"}
        if depth:
            node["children"] = [clean(depth - 1), clean(depth - 1)]
        return node

    assert strip(tree(6), shape) == clean(6)


def test_mutually_recursive_and_self_composed_schemas():
    schemas = {
        "A": obj({"b": {"$ref": "#/components/schemas/B"}, "a": STR}),
        "B": {"allOf": [{"$ref": "#/components/schemas/A"}, obj({"extra": STR})]},
        "Loop": {"allOf": [{"$ref": "#/components/schemas/Loop"}, obj({"x": STR})]},
    }
    shape = shape_of({"$ref": "#/components/schemas/A"}, schemas)
    document = {"a": 1, "z": 0, "b": {"a": 2, "extra": 3, "z": 0, "b": {"extra": 4, "z": 0}}}
    assert strip(document, shape) == {"a": 1, "b": {"a": 2, "extra": 3, "b": {"extra": 4}}}
    loop = shape_of({"$ref": "#/components/schemas/Loop"}, schemas)
    assert strip({"x": 1, "y": 2}, loop) == {"x": 1}


def test_no_schema_and_annotation_only_schemas_are_unconstrained():
    document = {"any": {"thing": [1, {"goes": True}]}}
    for schema in (None, {}, True, {"description": "free form", "x-note": 1}, {"allOf": [{}]}):
        assert strip(document, shape_of(schema)) is document


def test_annotation_only_branch_adds_nothing_to_a_constrained_union():
    schemas = {"X": obj({"a": STR}, additionalProperties=False)}
    shape = shape_of({"allOf": [{"$ref": "#/components/schemas/X"}, {"description": "the X"}]}, schemas)
    assert strip({"a": 1, "b": 2}, shape) == {"a": 1}


def test_object_under_a_scalar_schema_is_emptied():
    shape = shape_of(obj({"s": STR, "n": {"type": "integer"}, "list": {"type": "array"}}))
    document = {"s": {"leak": 1}, "n": [{"leak": 2}], "list": [{"leak": 3}, 4]}
    assert strip(document, shape) == {"s": {}, "n": [{}], "list": [{}, 4]}


def test_write_only_and_false_properties_are_removed():
    schemas = {"Password": {"type": "string", "writeOnly": True}}
    shape = shape_of(
        obj(
            {
                "name": STR,
                "password": {"$ref": "#/components/schemas/Password"},
                "pin": {"type": "string", "writeOnly": True},
                "never": False,
            }
        ),
        schemas,
    )
    result, report = minimise(
        {"name": "n", "password": "p", "pin": "1", "never": 1}, shape, scopes=NO_SCOPES, reveal_pan=True
    )
    assert result == {"name": "n"}
    assert report.removed_undeclared == 3


def test_false_and_write_only_names_stay_removed_when_additional_properties_allow_others():
    shape = shape_of(
        obj(
            {"no": False, "secret": {"type": "string", "writeOnly": True}},
            patternProperties={"^tmp_": False, "^x_": STR},
            additionalProperties=True,
        )
    )
    document = {"no": 1, "secret": 2, "tmp_a": 3, "x_a": 4, "other": 5}
    assert strip(document, shape) == {"x_a": 4, "other": 5}
    union = shape_of({"anyOf": [obj({"p": False}), obj({"p": STR})]})  # allowed by one branch
    assert strip({"p": 1}, union) == {"p": 1}


def test_oas30_ignores_ref_siblings_and_oas31_honours_them():
    schemas = {"X": obj({"a": STR}, additionalProperties=False)}
    schema = obj({"p": {"$ref": "#/components/schemas/X", "properties": {"b": STR}}})
    document = {"p": {"a": 1, "b": 2}}
    assert strip(document, shape_of(schema, schemas)) == {"p": {"a": 1}}
    assert strip(document, shape_of(schema, schemas, dialect="oas31")) == {"p": {"a": 1, "b": 2}}


def test_oas31_prefix_items_and_draft4_tuple_items():
    shape = shape_of(
        {"type": "array", "prefixItems": [obj({"a": STR}), obj({"b": STR})], "items": obj({"c": STR})},
        dialect="oas31",
    )
    document = [{"a": 1, "x": 0}, {"b": 2, "a": 0}, {"c": 3, "b": 0}, {"c": 4}]
    assert strip(document, shape) == [{"a": 1}, {"b": 2}, {"c": 3}, {"c": 4}]
    tuple_form = shape_of({"type": "array", "items": [obj({"a": STR})], "additionalItems": obj({"b": STR})})
    assert strip([{"a": 1, "b": 1}, {"a": 2, "b": 2}], tuple_form) == [{"a": 1}, {"b": 2}]


def test_oas31_boolean_schemas_conditionals_and_unevaluated_properties():
    shape = shape_of(
        {
            "type": "object",
            "properties": {"kind": STR, "any": True, "no": False},
            "if": obj({"kind": {"const": "card"}}),
            "then": obj({"last4": STR}),
            "else": obj({"iban": STR}),
            "dependentSchemas": {"kind": obj({"since": STR})},
            "unevaluatedProperties": obj({"v": STR}),
        },
        dialect="oas31",
    )
    document = {
        "kind": "card",
        "any": {"x": [1]},
        "no": 1,
        "last4": "1",
        "iban": "2",
        "since": "3",
        "u": {"v": 1, "w": 2},
    }
    expected = {"kind": "card", "any": {"x": [1]}, "last4": "1", "iban": "2", "since": "3", "u": {"v": 1}}
    assert strip(document, shape) == expected


def test_discriminator_mapping_declares_the_derived_schemas():
    schemas = {
        "Pet": obj(
            {"petType": STR, "name": STR},
            discriminator={
                "propertyName": "petType",
                "mapping": {"cat": "#/components/schemas/Cat", "dog": "Dog"},
            },
        ),
        "Cat": {"allOf": [{"$ref": "#/components/schemas/Pet"}, obj({"purrs": {"type": "boolean"}})]},
        "Dog": {"allOf": [{"$ref": "#/components/schemas/Pet"}, obj({"barks": {"type": "boolean"}})]},
    }
    pet = shape_of({"$ref": "#/components/schemas/Pet"}, schemas)
    document = {"petType": "cat", "name": "Tom", "purrs": True, "barks": False, "owner": "x"}
    assert strip(document, pet) == {"petType": "cat", "name": "Tom", "purrs": True, "barks": False}
    cat = shape_of({"$ref": "#/components/schemas/Cat"}, schemas)  # a Cat does not declare Dog's properties
    assert strip(document, cat) == {"petType": "cat", "name": "Tom", "purrs": True}


# -- scope-tied properties ------------------------------------------------------------------------


def test_scopes_extension_on_a_property_needs_every_scope():
    shape = shape_of(obj({"a": STR, "secret": {"type": "string", "x-bankguard-scopes": ["s1", "s2"]}}))
    document = {"a": 1, "secret": "x"}
    assert strip(document, shape) == {"a": 1}
    assert strip(document, shape, frozenset({"s1"})) == {"a": 1}
    assert strip(document, shape, frozenset({"s1", "s2", "s3"})) == document
    _, report = minimise(document, shape, scopes=frozenset({"s2"}), reveal_pan=True)
    assert (report.removed_unauthorised, report.removed_undeclared, report.pointers) == (1, 0, ("/secret",))
    assert shape.property_scopes == {"secret": frozenset({"s1", "s2"})}


def test_scopes_extension_on_the_referenced_schema_its_ref_sibling_and_array_items():
    schemas = {"Pan": {"type": "string", "x-bankguard-scopes": "cards:read"}}
    ref = {"$ref": "#/components/schemas/Pan"}
    shape = shape_of(
        obj(
            {
                "direct": ref,
                "via_all_of": {"allOf": [ref]},
                "sibling": {"$ref": "#/components/schemas/Pan", "x-bankguard-scopes": ["extra"]},
                "list": {"type": "array", "items": ref},
                "open": STR,
            }
        ),
        schemas,
    )
    document = {"direct": 1, "via_all_of": 2, "sibling": 3, "list": [4], "open": 5}
    assert strip(document, shape) == {"open": 5}
    assert strip(document, shape, frozenset({"cards:read"})) == {
        "direct": 1,
        "via_all_of": 2,
        "list": [4],
        "open": 5,
    }
    assert strip(document, shape, frozenset({"cards:read", "extra"})) == document


def test_scopes_extension_on_a_schema_ties_every_property_it_declares():
    schemas = {
        "Basic": obj({"id": STR}),
        "Detail": obj({"balance": STR, "limit": STR}, **{"x-bankguard-scopes": ["detail"]}),
    }
    shape = shape_of(
        {"allOf": [{"$ref": "#/components/schemas/Basic"}, {"$ref": "#/components/schemas/Detail"}]}, schemas
    )
    document = {"id": 1, "balance": 2, "limit": 3}
    assert strip(document, shape) == {"id": 1}
    assert strip(document, shape, frozenset({"detail"})) == document


def test_scopes_on_additional_and_pattern_properties():
    shape = shape_of(
        obj(
            {"a": STR},
            patternProperties={"^p_": {"type": "string", "x-bankguard-scopes": ["p"]}},
            additionalProperties={"type": "string", "x-bankguard-scopes": ["q"]},
        )
    )
    document = {"a": 1, "p_x": 2, "other": 3}
    assert strip(document, shape) == {"a": 1}
    assert strip(document, shape, frozenset({"p"})) == {"a": 1, "p_x": 2}
    assert strip(document, shape, frozenset({"q"})) == {"a": 1, "other": 3}


def test_scope_rules_by_property_and_by_schema_location_add_to_the_extension():
    schemas = {
        "Account": obj(
            {
                "id": STR,
                "nickname": STR,
                "servicer": {"$ref": "#/components/schemas/Servicer"},
                "tagged": {"type": "string", "x-bankguard-scopes": ["t"]},
            }
        ),
        "Servicer": obj({"name": STR}),
    }
    rules = {
        "#/components/schemas/Account/properties/nickname": frozenset({"n"}),
        "#/components/schemas/Servicer": frozenset({"s"}),
        "#/components/schemas/Account/properties/tagged": frozenset({"u"}),
        "#/components/schemas/Typo/properties/x": frozenset({"z"}),
    }
    resolve = pointer_resolver({"components": {"schemas": schemas}})
    compiler = ShapeCompiler(resolve, scope_rules=rules)
    shape = compiler.compile({"$ref": "#/components/schemas/Account"})
    document = {"id": 1, "nickname": 2, "servicer": {"name": 3}, "tagged": 4}
    assert strip(document, shape) == {"id": 1}
    assert strip(document, shape, frozenset({"n", "s"})) == {"id": 1, "nickname": 2, "servicer": {"name": 3}}
    assert strip(document, shape, frozenset({"t"})) == {"id": 1}  # rule and extension add up
    assert strip(document, shape, frozenset({"n", "s", "t", "u"})) == document
    assert compiler.unmatched_rules == {"#/components/schemas/Typo/properties/x"}
    assert "#/components/schemas/Servicer" in compiler.matched_rules


def test_scope_rules_match_in_other_files_and_below_a_given_location():
    common = {"components": {"schemas": {"Amount": obj({"value": STR, "raw": STR})}}}
    resolve = pointer_resolver(common, prefix="common.json")
    schema = obj({"amount": {"$ref": "common.json#/components/schemas/Amount"}, "note": STR})
    rules = {
        "#/components/schemas/Amount/properties/raw": frozenset({"r"}),
        "#/paths/~1x/get/schema/properties/note": frozenset({"n"}),
    }
    shape = compile_shape(schema, resolve, scope_rules=rules, location="#/paths/~1x/get/schema")
    document = {"amount": {"value": 1, "raw": 2}, "note": 3}
    assert strip(document, shape) == {"amount": {"value": 1}}
    assert strip(document, shape, frozenset({"r", "n"})) == document
    exact = compile_shape(
        schema,
        resolve,
        scope_rules={"common.json#/components/schemas/Amount/properties/raw": frozenset({"r"})},
    )
    assert strip(document, exact) == {"amount": {"value": 1}, "note": 3}


def test_a_reused_compiler_is_not_confused_by_short_lived_schemas():
    compiler = ShapeCompiler(pointer_resolver({"components": {"schemas": {"X": obj({"p": STR})}}}))
    for i in range(200):  # temporary root wrappers, freed after each compile: their ids get reused
        scoped = i % 2 == 1
        root = {"$ref": "#/components/schemas/X", **({"x-bankguard-scopes": [f"s{i}"]} if scoped else {})}
        assert compiler.compile(root).property_scopes == ({"p": frozenset({f"s{i}"})} if scoped else {})


def test_property_names_yaml_reads_as_numbers_are_names():
    shape = shape_of(yaml.safe_load("type: object\nproperties:\n  200: {type: string}\n  x: {type: string}"))
    assert strip({"200": "ok", "x": 1, "404": 2}, shape) == {"200": "ok", "x": 1}


# -- compile errors ---------------------------------------------------------------------------------


def test_unresolvable_ref_names_the_location():
    with pytest.raises(ConfigurationError, match="Missing") as caught:
        shape_of(
            {"$ref": "#/components/schemas/A"}, {"A": obj({"b": {"$ref": "#/components/schemas/Missing"}})}
        )
    assert caught.value.path == "#/components/schemas/A/properties/b"


def test_circular_ref_chain_is_refused():
    with pytest.raises(ConfigurationError, match="circular"):
        shape_of(
            {"$ref": "#/components/schemas/A"},
            {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/A"}},
        )


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (obj({"a": {"x-bankguard-scopes": [1]}}), "x-bankguard-scopes"),
        (obj({"a": {"x-bankguard-scopes": {"s": 1}}}), "x-bankguard-scopes"),
        (obj({}, patternProperties={"([": STR}), "patternProperties"),
        (obj({"a": 5}), "schema must be"),
    ],
)
def test_malformed_schemas_are_refused(schema, message):
    with pytest.raises(ConfigurationError, match=message):
        shape_of(schema)


def test_unknown_dialect_is_refused():
    with pytest.raises(ConfigurationError, match="dialect"):
        compile_shape({}, pointer_resolver({}), dialect="oas20")  # type: ignore[arg-type]


def test_compilation_work_is_bounded(monkeypatch):
    monkeypatch.setattr(minimise_module, "MAX_SHAPES", 3)
    with pytest.raises(ConfigurationError, match="too complex"):
        shape_of(obj({"a": obj({"b": obj({"c": obj({"d": STR})})})}))


# -- card numbers ---------------------------------------------------------------------------------

VISA = "4111111111111111"
AMEX = "378282246310005"
VISA13 = "4222222222222"
PAN19 = with_check_digit("622126000000000000")
PAN20 = with_check_digit("6221260000000000000")  # Luhn-valid, but 20 digits
PAN12 = with_check_digit("42424242424")
FULLWIDTH_VISA = "".join(chr(0xFF10 + int(d)) for d in VISA)


def test_the_test_numbers_are_what_they_claim():
    assert [len(n) for n in (VISA, AMEX, VISA13, PAN19, PAN20, PAN12)] == [16, 15, 13, 19, 20, 12]
    assert all(luhn_valid(n) for n in (VISA, AMEX, VISA13, PAN19, PAN20, PAN12))
    assert not luhn_valid(luhn_invalid(VISA))
    assert not luhn_valid("")
    assert not luhn_valid("4111 1111")
    assert luhn_valid("".join(chr(0x0660 + int(d)) for d in VISA))  # Arabic-Indic digits are digits too


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (VISA, "411111******1111"),
        ("4111 1111 1111 1111", "4111 11** **** 1111"),
        ("4111-1111-1111-1111", "4111-11**-****-1111"),
        ("3782 822463 10005", "3782 82**** *0005"),
        (AMEX, "378282*****0005"),
        (VISA13, "422222***2222"),
        (PAN19, PAN19[:6] + "*" * 9 + PAN19[-4:]),
        ("Paid with card 4111-1111-1111-1111 today", "Paid with card 4111-11**-****-1111 today"),
        (f"card:{VISA}.", "card:411111******1111."),
        (f"{VISA} and {AMEX}", "411111******1111 and 378282*****0005"),
        # "01-05 4111 1111 1111" passes the Luhn check by chance, but is not grouped like a card
        ("2024-01-05 4111 1111 1111 1111", "2024-01-05 4111 11** **** 1111"),
        ("Ref 12 4111 1111 1111 1111", "Ref 12 4111 11** **** 1111"),
        (f"05 {VISA}", "05 411111******1111"),
        (FULLWIDTH_VISA, FULLWIDTH_VISA[:6] + "*" * 6 + FULLWIDTH_VISA[-4:]),
        (" ".join([VISA] * 40), " ".join(["411111******1111"] * 40)),  # many groups: each found
    ],
)
def test_card_numbers_are_masked_to_first_six_last_four(text, masked):
    assert mask_pans(text) == masked
    result, report = mask({"v": text})
    assert result == {"v": masked}
    assert report.masked == 1
    assert report.masked_pointers == ("/v",)


@pytest.mark.parametrize(
    "text",
    [
        PAN12,  # too short
        PAN20,  # too long to be a card number
        luhn_invalid(VISA),
        luhn_invalid(AMEX),
        "4111  1111  1111  1111",  # double spaces split the run into short groups
        f"INV{VISA}",  # glued to letters: a reference, not a card number
        f"{VISA}X",
        "GB29NWBK60161331926819",  # an IBAN
        "2024-01-05T10:43:07+00:00",
        "411111******1111",  # already masked
        "4111 11** **** 1111",
        f"{VISA}*",  # next to an asterisk: taken as masked
        "",
        "short 123",
    ],
)
def test_other_strings_are_left_alone(text):
    assert mask_pans(text) == text
    document = {"v": text}
    result, report = mask(document)
    assert result is document
    assert not report.changed


def test_strings_json_can_hold_are_handled():
    document = json.loads('{"\\ud800": "\\udfff 4111 1111 1111 1111", "n": "Zo\\u00eb \\ud83d\\ude00"}')
    result, report = mask(document)
    assert result == {"\ud800": "\udfff 4111 11** **** 1111", "n": "Zo\u00eb \U0001f600"}
    assert report.masked == 1
    assert strip(document, shape_of(obj({"n": STR}))) == {"n": "Zo\u00eb \U0001f600"}
    _, report = minimise(
        {"a\nb": 1, "\ud800": 2, "é" * 300: 3}, shape_of(OBJ), scopes=NO_SCOPES, reveal_pan=True
    )
    assert report.pointers == ("/a\\u000ab", "/\\ud800", "/" + "é" * 198 + "…")


def test_json_numbers_that_are_card_numbers_become_masked_strings():
    document = {
        "int": int(VISA),
        "negative": -int(VISA),
        "float": float(VISA13),
        "short": int(PAN12),
        "long": int(PAN20),
        "invalid": int(luhn_invalid(VISA)),
        "fraction": float(VISA13) + 0.5,
        "flag": True,
    }
    result, report = mask(document)
    assert result == {
        **document,
        "int": "411111******1111",
        "negative": "-411111******1111",
        "float": "422222***2222",
    }
    assert report.masked == 3


def test_masking_applies_under_declared_properties_in_arrays_and_at_the_root():
    shape = shape_of(obj({"pan": STR, "list": {"type": "array", "items": STR}, "n": {"type": "integer"}}))
    result, report = mask({"pan": VISA, "list": ["x", VISA], "n": int(AMEX)}, shape)
    assert result == {"pan": "411111******1111", "list": ["x", "411111******1111"], "n": "378282*****0005"}
    assert report.masked_pointers == ("/pan", "/list/1", "/n")
    assert mask(VISA)[0] == "411111******1111"
    assert mask(VISA)[1].masked_pointers == ("",)  # RFC 6901: the root
    assert mask(int(VISA))[0] == "411111******1111"
    assert mask([VISA])[0] == ["411111******1111"]


def test_reveal_pan_leaves_card_numbers():
    document = {"pan": VISA, "n": int(VISA), "free": {VISA: VISA}}
    result, report = minimise(document, shape_of(None), scopes=NO_SCOPES, reveal_pan=True)
    assert result is document
    assert report == MinimiseReport()


def test_card_numbers_in_free_form_names_are_masked_and_never_reported_in_clear():
    shape = shape_of(obj({"cards": obj({}, additionalProperties=obj({"limit": STR})), "free": {}}))
    document = {"cards": {VISA: {"limit": "1"}}, "free": {AMEX: [VISA]}, VISA13: 1}
    result, report = mask(document, shape)
    assert result == {
        "cards": {"411111******1111": {"limit": "1"}},
        "free": {"378282*****0005": ["411111******1111"]},
    }
    assert report.removed_undeclared == 1
    assert report.pointers == ("/422222***2222",)
    assert report.masked == 3
    assert all(VISA not in p and AMEX not in p for p in report.masked_pointers)


def test_card_number_names_are_masked_before_patterns_match():
    shape = shape_of(obj({}, patternProperties={"^[0-9]+$": STR, r"\*": STR}))
    result, _ = mask({VISA: "x", "123": "y"}, shape)
    assert result == {"411111******1111": "x", "123": "y"}
    assert strip({VISA: "x"}, shape) == {VISA: "x"}


TEST_PANS = {  # the brands' published test numbers
    "Visa": "4111111111111111",
    "Mastercard": "5555555555554444",
    "American Express": "378282246310005",
    "Discover": "6011111111111117",
    "JCB": "3530111333300000",
    "Diners Club": "30569309025904",
    "UnionPay": "6200000000000005",
}
MASTERCARD_2 = "2223003122003222"  # the 2-series range


@pytest.mark.parametrize("pan", [*TEST_PANS.values(), MASTERCARD_2])
def test_every_brand_is_masked_plain_grouped_and_as_a_number(pan):
    masked = pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
    assert mask_pans(pan) == masked
    assert mask_pans(f"card {pan}.") == f"card {masked}."
    assert mask({"n": int(pan)})[0] == {"n": masked}
    groups = {14: (4, 6, 4), 15: (4, 6, 5), 16: (4, 4, 4, 4)}[len(pan)]
    for separator in " -":
        parts, at = [], 0
        for size in groups:
            parts.append(pan[at : at + size])
            at += size
        grouped = separator.join(parts)
        assert "".join(ch for ch in mask_pans(grouped) if ch not in " -") == masked, grouped


def test_brands_by_iin_range_and_length():
    assert {minimise_module.card_brand(pan) for pan in TEST_PANS.values()} == set(TEST_PANS)
    assert minimise_module.card_brand(MASTERCARD_2) == "Mastercard"
    assert minimise_module.card_brand("4" * 15) is None  # Visa issues 13, 16 and 19 digits
    assert minimise_module.card_brand("34" + "0" * 14) is None  # American Express: 15 only
    assert minimise_module.card_brand("2720" + "0" * 12) == "Mastercard"
    assert minimise_module.card_brand("2721" + "0" * 12) is None
    assert minimise_module.card_brand("6011" + "0" * 9) is None  # Discover, too short...
    assert minimise_module.card_brand("6012" + "0" * 9) == "Maestro"  # ...Maestro: the rest of 6
    assert minimise_module.card_brand("3" * 12) is None  # under 13 digits


def test_uk_sort_code_and_account_number_is_not_a_card_number():
    # The UK spec's own example account identification (sort code + account number, 14 digits)
    # passes the Luhn check, as one in ten such numbers does; no card brand starts with 8.
    assert luhn_valid("80200110203345")
    for text in ("80200110203345", "80-20-01 10203345", "80 20 01 10203345"):
        assert mask_pans(text) == text
    document = {"Identification": "80200110203345", "n": 80200110203345}
    assert mask(document)[0] is document


def test_luhn_valid_numbers_outside_every_brand_are_left_alone():
    for body in ("8" + "0" * 12, "9" + "1" * 12, "1" * 13, "0" * 15, "7" + "2" * 16, "2" + "0" * 14):
        number = with_check_digit(body)
        assert luhn_valid(number)
        assert mask_pans(number) == number
        assert mask_pans(f"ref {number}") == f"ref {number}"


def test_identifiers_not_grouped_like_card_numbers_are_left_alone():
    assert luhn_valid("2228920240509")  # 13 digits in Mastercard's 2221-2720 range
    for text in (
        "22289-20240509-004",  # account, date, sequence
        "4111-11111111-1111",  # 4-8-4
        "41-11111111111111",  # 2-14
        "411 111 111 111 1111",  # groups of 3
        "4111111 111111111",  # 7-9
    ):
        assert mask_pans(text) == text, text


@pytest.mark.parametrize(
    "grouped",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "3782 822463 10005",  # 4-6-5
        "3056 930902 5904",  # 4-6-4
        "4222 2222 2222 2",  # 4-4-4-1 (Visa, 13)
        PAN19[:4] + " " + PAN19[4:8] + " " + PAN19[8:12] + " " + PAN19[12:16] + " " + PAN19[16:],  # 4-4-4-4-3
        "41111 11111 111111",  # 5-5-6
    ],
)
def test_card_like_groupings_are_masked(grouped):
    digits = grouped.replace(" ", "").replace("-", "")
    masked = mask_pans(grouped)
    assert masked.replace(" ", "").replace("-", "") == digits[:6] + "*" * (len(digits) - 10) + digits[-4:]
    assert [len(g) for g in masked.split()] == [len(g) for g in grouped.split()]


def test_a_chance_match_overlapping_a_card_number_masks_the_union():
    # "g 4111 1111 1111" is a Luhn-valid Visa number for one g: both it and the card are masked.
    first = next(g for g in (f"4{n:03d}" for n in range(1000)) if luhn_valid(g + "411111111111"))
    text = f"{first} 4111 1111 1111 1111"
    masked = mask_pans(text)
    assert masked == f"{first[:4]} 41** **** **** 1111"


# -- the input is never changed ----------------------------------------------------------------------


def test_input_is_not_mutated_and_unchanged_subtrees_are_shared():
    shape = shape_of(
        obj(
            {
                "keep": obj({"a": STR}),
                "change": obj({"a": STR}),
                "list": {"type": "array", "items": obj({"a": STR})},
            }
        )
    )
    document = {"keep": {"a": 1}, "change": {"a": 1, "b": 2}, "list": [{"a": 1}, {"a": VISA}], "x": 1}
    before = copy.deepcopy(document)
    result, _ = mask(document, shape)
    assert document == before
    assert result is not document
    assert result["keep"] is document["keep"]
    assert result["change"] is not document["change"]
    assert result["list"][0] is document["list"][0]
    assert result["list"][1] == {"a": "411111******1111"}
    nothing_to_do = {"keep": {"a": 1}}
    assert mask(nothing_to_do, shape)[0] is nothing_to_do


def test_mapping_subclasses_and_tuples_are_minimised_too():
    class Ordered(dict):
        pass

    shape = shape_of(obj({"a": {"type": "array", "items": obj({"b": STR})}}))
    document = Ordered(a=({"b": VISA, "c": 1},), z=1)
    result, report = mask(document, shape)
    assert result == {"a": [{"b": "411111******1111"}]}
    assert report.removed_undeclared == 2


def test_documents_nested_too_deep_are_refused():
    schemas = {"N": obj({"n": {"$ref": "#/components/schemas/N"}})}
    shape = shape_of({"$ref": "#/components/schemas/N"}, schemas)
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(MAX_DEPTH):
        node["n"] = {}
        node = node["n"]
    assert strip(deep, shape) is deep
    node["n"] = {}
    with pytest.raises(DocumentTooDeep):
        strip(deep, shape)
    with pytest.raises(DocumentTooDeep):
        mask(deep)


# -- the UK Open Banking spec ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uk_spec() -> dict[str, Any]:
    with UK_SPEC.open("rb") as handle:
        return yaml.load(handle, Loader=yaml.CSafeLoader)


@pytest.fixture(scope="module")
def uk_validator(uk_spec):
    root = {"$ref": "#/components/schemas/OBReadTransaction6", "components": uk_spec["components"]}
    return jsonschema_rs.Draft4Validator(root)


def uk_transaction(i: int) -> dict[str, Any]:
    return {
        "AccountId": "22289",
        "TransactionId": f"txn-{i:06d}",
        "TransactionReference": f"Ref {i}",
        "CreditDebitIndicator": "Debit",
        "Status": "BOOK",
        "BookingDateTime": "2024-01-05T10:43:07+00:00",
        "TransactionInformation": f"Card payment {i}",
        "Amount": {"Amount": f"{i}.50", "Currency": "GBP"},
        "BankTransactionCode": {"Code": "ReceivedCreditTransfer", "SubCode": "DomesticCreditTransfer"},
        "Balance": {
            "CreditDebitIndicator": "Credit",
            "Type": "ITBD",
            "Amount": {"Amount": "1230.00", "Currency": "GBP"},
        },
        "CreditorAccount": {
            "SchemeName": "UK.OBIE.SortCodeAccountNumber",
            "Identification": "80200110203346",
        },
        "CardInstrument": {"CardSchemeName": "VISA", "Identification": "4111********1111"},
        "SupplementaryData": {"Loyalty": {"Points": 12}},
    }


def uk_response(count: int = 3) -> dict[str, Any]:
    return {
        "Data": {"Transaction": [uk_transaction(i) for i in range(count)]},
        "Links": {"Self": "https://api.example.com/open-banking/v4.0/aisp/accounts/22289/transactions"},
        "Meta": {"TotalPages": 1},
    }


def test_uk_transactions_response_extra_fields_stripped_at_every_depth(uk_spec, uk_validator):
    responses = uk_spec["components"]["responses"]["200AccountsAccountIdTransactionsRead"]
    schema = responses["content"]["application/json; charset=utf-8"]["schema"]
    assert schema == {"$ref": "#/components/schemas/OBReadTransaction6"}
    shape = compile_shape(schema, pointer_resolver(uk_spec))
    clean = uk_response()
    assert uk_validator.is_valid(clean)

    dirty = copy.deepcopy(clean)
    dirty["Debug"] = {"trace": "abc"}
    dirty["Data"]["Cursor"] = "c1"
    dirty["Links"]["Internal"] = "http://10.0.0.1/"
    dirty["Meta"]["Shard"] = 7
    first = dirty["Data"]["Transaction"][0]
    first["InternalRiskScore"] = 17
    first["Amount"]["FxSpread"] = "0.02"
    first["Balance"]["Amount"]["Raw"] = 123000  # an inline schema without additionalProperties
    first["CreditorAccount"]["CustomerId"] = "C-42"
    dirty["Data"]["Transaction"][2]["CardInstrument"]["Pan"] = "4111 1111 1111 1111"
    assert not uk_validator.is_valid(dirty)

    result, report = minimise(dirty, shape, scopes=NO_SCOPES, reveal_pan=False)
    assert result == clean  # SupplementaryData (additionalProperties: true) kept whole
    assert uk_validator.is_valid(result)
    assert report.removed_undeclared == 9
    assert report.masked == 0  # the removed card number was never masked: it is gone
    assert set(report.pointers) == {
        "/Debug",
        "/Data/Cursor",
        "/Data/Transaction/0/InternalRiskScore",
        "/Data/Transaction/0/Amount/FxSpread",
        "/Data/Transaction/0/Balance/Amount/Raw",
        "/Data/Transaction/0/CreditorAccount/CustomerId",
        "/Data/Transaction/2/CardInstrument/Pan",
        "/Links/Internal",
        "/Meta/Shard",
    }
    assert report.pointers[-1] == "/Debug"  # document order: the walk is depth first


def test_uk_card_number_in_a_declared_field_is_masked_and_still_valid(uk_spec, uk_validator):
    shape = compile_shape({"$ref": "#/components/schemas/OBReadTransaction6"}, pointer_resolver(uk_spec))
    document = uk_response(2)
    document["Data"]["Transaction"][1]["CardInstrument"]["Identification"] = VISA
    result, report = minimise(document, shape, scopes=NO_SCOPES, reveal_pan=False)
    assert result["Data"]["Transaction"][1]["CardInstrument"]["Identification"] == "411111******1111"
    assert report.masked_pointers == ("/Data/Transaction/1/CardInstrument/Identification",)
    assert uk_validator.is_valid(result)
    assert document["Data"]["Transaction"][1]["CardInstrument"]["Identification"] == VISA


def test_uk_scope_rules_remove_properties_for_callers_without_them(uk_spec, uk_validator):
    rules = {
        "#/components/schemas/OBTransaction6/properties/CardInstrument": frozenset({"cards"}),
        "#/components/schemas/OBCashAccount6_0": frozenset({"counterparty"}),
    }
    compiler = ShapeCompiler(pointer_resolver(uk_spec), scope_rules=rules)
    shape = compiler.compile({"$ref": "#/components/schemas/OBReadTransaction6"})
    assert compiler.unmatched_rules == frozenset()
    document = uk_response(2)
    result, report = minimise(document, shape, scopes=frozenset({"accounts"}), reveal_pan=True)
    assert report.removed_unauthorised == 4
    for transaction in result["Data"]["Transaction"]:
        assert "CardInstrument" not in transaction
        assert "CreditorAccount" not in transaction
    assert uk_validator.is_valid(result)
    full, report = minimise(document, shape, scopes=frozenset({"cards", "counterparty"}), reveal_pan=True)
    assert full is document
    assert not report.changed


def test_every_uk_schema_and_response_compiles(uk_spec):
    compiler = ShapeCompiler(pointer_resolver(uk_spec))
    for name in uk_spec["components"]["schemas"]:
        assert isinstance(compiler.compile({"$ref": f"#/components/schemas/{name}"}), Shape)
    for response in uk_spec["components"]["responses"].values():
        for media in response.get("content", {}).values():
            compiler.compile(media.get("schema"))


# -- properties over arbitrary documents -----------------------------------------------------------

PROPERTY_SCHEMAS = {
    "Root": obj(
        {
            "a": STR,
            "b": obj({"c": STR, "d": {"type": "array", "items": {"$ref": "#/components/schemas/Root"}}}),
            "list": {"type": "array", "items": {"allOf": [obj({"a": STR}), obj({"n": {"type": "integer"}})]}},
            "map": obj({}, additionalProperties=obj({"v": STR}), patternProperties={"^p": {}}),
            "free": {},
            "scoped": {"type": "string", "x-bankguard-scopes": ["s"]},
        },
        additionalProperties=False,
    )
}
PROPERTY_SHAPE = shape_of({"$ref": "#/components/schemas/Root"}, PROPERTY_SCHEMAS)

_pans = st.sampled_from(
    [
        VISA,
        AMEX,
        VISA13,
        PAN19,
        PAN20,
        PAN12,
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "3782 822463 10005",
        "80200110203345",  # Luhn-valid, no brand
        "22289-20240509-004",
        *TEST_PANS.values(),
    ]
)
_texts = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="0123456789 -*x", max_size=40),
    st.builds(lambda a, p, b: a + p + b, st.text(" -:x1", max_size=4), _pans, st.text(" -:x1", max_size=4)),
)
_keys = st.one_of(
    st.sampled_from(["a", "b", "c", "d", "list", "n", "v", "map", "free", "scoped", "p1", "x"]), _texts
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**12, max_value=10**19),
    st.sampled_from([int(VISA), int(AMEX), float(VISA13)]),
    st.floats(allow_nan=False, allow_infinity=False),
    _texts,
)
_json = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_keys, children, max_size=5)),
    max_leaves=30,
)
_scopes = st.sampled_from([NO_SCOPES, frozenset({"s"})])
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _keys_within(before: Any, after: Any, masked_names: bool) -> None:
    """Every name in ``after`` comes from ``before`` (masked, when names may be masked)."""
    if isinstance(after, dict):
        assert isinstance(before, Mapping)
        origin = {mask_pans(k) if masked_names and isinstance(k, str) else k: k for k in before}
        for key, value in after.items():
            assert key in origin
            _keys_within(before[origin[key]], value, masked_names)
    elif isinstance(after, list):
        assert isinstance(before, (list, tuple))
        assert len(after) == len(before)
        for old, new in zip(before, after, strict=True):
            _keys_within(old, new, masked_names)


def _digits(document: Any) -> int:
    return sum(ch.isdecimal() for ch in json.dumps(document, ensure_ascii=False))


@_SETTINGS
@given(document=_json, scopes=_scopes, reveal=st.booleans())
def test_minimise_never_raises_and_keeps_names_within_the_input(document, scopes, reveal):
    before = copy.deepcopy(document)
    result, report = minimise(document, PROPERTY_SHAPE, scopes=scopes, reveal_pan=reveal)
    assert document == before
    _keys_within(document, result, masked_names=not reveal)
    assert isinstance(report, MinimiseReport)
    assert report.changed == (result is not document)


@_SETTINGS
@given(document=_json, scopes=_scopes, reveal=st.booleans())
def test_minimise_is_idempotent(document, scopes, reveal):
    once, _ = minimise(document, PROPERTY_SHAPE, scopes=scopes, reveal_pan=reveal)
    twice, report = minimise(once, PROPERTY_SHAPE, scopes=scopes, reveal_pan=reveal)
    assert twice is once
    assert not report.changed


@_SETTINGS
@given(document=_json, scopes=_scopes)
def test_minimise_never_shows_more_digits(document, scopes):
    result, _ = minimise(document, PROPERTY_SHAPE, scopes=scopes, reveal_pan=False)
    assert _digits(result) <= _digits(document)


@_SETTINGS
@given(document=_json)
def test_no_card_number_survives_masking(document):
    result, _ = minimise(document, shape_of(None), scopes=NO_SCOPES, reveal_pan=False)

    def strings(value: Any):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    for text in strings(result):
        assert mask_pans(text) == text
