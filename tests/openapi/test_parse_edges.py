"""Reading OpenAPI documents (OAS 3.0.3 §4.6 / 3.1.0 §4.7, YAML 1.2 core schema): special floats,
merge keys, non-scalar keys, integers beyond Python's conversion limit, strict JSON, unreadable
paths. Each hard error names the document and says what is wrong."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bankguard.errors import ConfigurationError
from bankguard.openapi._parse import parse_document
from bankguard.openapi.contract import load_contract


def parsed(tmp_path: Path, name: str, text: str) -> tuple[object, list[object]]:
    path = tmp_path / name
    path.write_text(text)
    return parse_document(path, name)


def refused(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        parse_document(path, name)
    assert info.value.path == name
    return info.value.problems[0].message


def test_yaml_12_special_floats(tmp_path: Path) -> None:
    data, defects = parsed(tmp_path, "f.yaml", "x: [.inf, -.Inf, +.INF, .NaN, 1e3, -0.5]\n")
    assert isinstance(data, dict)
    values = data["x"]
    assert values[:3] == [math.inf, -math.inf, math.inf]
    assert math.isnan(values[3])
    assert values[4:] == [1000.0, -0.5]
    assert defects == []


def test_yaml_12_integers_and_strings(tmp_path: Path) -> None:
    data, _ = parsed(tmp_path, "i.yaml", "a: 0o17\nb: 0x1F\nc: yes\nd: 2024-01-01\ne: ~\nf: -0x1F\n")
    # YAML 1.2 core schema: octal and hex are unsigned; "yes" and dates stay strings.
    assert data == {"a": 15, "b": 31, "c": "yes", "d": "2024-01-01", "e": None, "f": "-0x1F"}


def test_merge_keys_and_explicit_keys_override_them(tmp_path: Path) -> None:
    text = "base: &b {p: 1, q: 2}\nm:\n  <<: *b\n  q: 3\nn:\n  <<: [{a: 1}, {b: 2}]\n  a: 5\n"
    data, defects = parsed(tmp_path, "m.yaml", text)
    assert data == {"base": {"p": 1, "q": 2}, "m": {"p": 1, "q": 3}, "n": {"a": 5, "b": 2}}
    assert defects == []  # overriding a merged key is not a duplicate


def test_duplicate_explicit_key_next_to_a_merge_is_a_defect(tmp_path: Path) -> None:
    data, defects = parsed(tmp_path, "d.yaml", "m:\n  <<: {a: 1}\n  b: 2\n  b: 3\n")
    assert data == {"m": {"a": 1, "b": 3}}
    assert [(d.key, d.kind, d.line) for d in defects] == [("b", "duplicate", 4)]  # type: ignore[attr-defined]


def test_non_scalar_mapping_key_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "k.yaml", "? [a, b]\n: 1\n")
    assert message == "not valid YAML or JSON at line 1, column 3: a mapping key must be a scalar"


def test_integer_beyond_the_conversion_limit_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "big.yaml", "maximum: " + "9" * 5000 + "\n")
    assert message.startswith("not valid YAML or JSON: ")


def test_json_file_with_nan_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, "s.json", '{"openapi": "3.1.0", "x": NaN}') == "not valid JSON: NaN is not JSON"


def test_json_looking_yaml_file_falls_back_to_yaml(tmp_path: Path) -> None:
    data, _ = parsed(tmp_path, "s.yaml", '{"a": NaN, b: 1}')
    assert data == {"a": "NaN", "b": 1}


def test_unreadable_spec_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_contract(tmp_path)  # a directory
    assert f"cannot read {str(tmp_path)!r}" in str(info.value)


def test_boolean_null_and_number_keys_are_read_as_strings_and_reported(tmp_path: Path) -> None:
    data, defects = parsed(tmp_path, "keys.yaml", "responses:\n  200: ok\n  true: yes\n  ~: nothing\n")
    assert data == {"responses": {"200": "ok", "true": "yes", "null": "nothing"}}
    found = [(d.key, d.kind, d.original) for d in defects]  # type: ignore[attr-defined]
    assert found == [("200", "number", 200), ("true", "number", True), ("null", "number", None)]


def test_json_file_with_a_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    message = refused(tmp_path, "s.json", '{\n  "openapi": "3.1.0",\n}')
    assert message == "not valid JSON at line 3, column 1: Expecting property name enclosed in double quotes"


def test_yaml_flow_mapping_is_read_as_yaml(tmp_path: Path) -> None:
    """A ``.yaml`` file that starts like JSON but is YAML (a flow mapping) is parsed as YAML."""
    data, defects = parsed(tmp_path, "flow.yaml", "{openapi: 3.1.0, info: {title: t, version: '1'}}\n")
    assert data == {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}}
    assert defects == []
