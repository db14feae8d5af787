"""The schema engine, as the contract compiles it, against the official JSON-Schema-Test-Suite.

Every test case of ``draft4`` (the dialect of OAS 3.0 schemas) and ``draft2020-12`` (OAS 3.1)
runs through the contract's own compile path: :class:`~bankguard.openapi._schema.Translator`
with the OpenAPI rules on (``oas=True``: the OAS 3.0 translation for draft 4, the 3.1 one for
2020-12; on plain JSON Schema it changes nothing that alters a result) and then
:func:`~bankguard.openapi._schema.compile_translated` with the contract's options (formats
asserted, no network). Both directions are run (requests add the ``readOnly`` keyword,
responses ``writeOnly``).

Covered: every required test file of both drafts, and ``optional/format/`` (the contract
asserts formats). The other ``optional/`` files (bignum, ecmascript-regex, ...) are not run:
they test behaviour the specification leaves open. Remote references
(``http://localhost:1234/...``) are served from the suite's own ``remotes/`` directory through
the compile path's ``retriever`` hook; nothing touches the network.

The suite is fetched by ``scripts/fetch_json_schema_suite.sh`` into ``.cache/``; without it the
test fails (it is never skipped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bankguard.openapi._schema import Dialect, Direction, compile_schema

SUITE = Path(__file__).resolve().parents[2] / ".cache" / "json-schema-test-suite"
DIALECTS: dict[str, Dialect] = {"draft4": "oas30", "draft2020-12": "oas31"}

_FORMATS_ASSERTED = (
    "the contract asserts formats (issue 6: date-time, date, uuid, ...; OAS 3.0.3 §4.7.24.4 "
    "lets a validator do so), while draft 2020-12 makes format an annotation by default; the "
    "asserting behaviour is checked by optional/format/ instead"
)
#: Formats whose "invalid ... string is only an annotation by default" test (draft2020-12/format.json)
#: expects a pass the contract refuses, on purpose.
_ASSERTED_FORMATS = (
    "email",
    "idn-email",
    "regex",
    "ipv4",
    "ipv6",
    "idn-hostname",
    "hostname",
    "date",
    "date-time",
    "time",
    "json-pointer",
    "relative-json-pointer",
    "iri",
    "iri-reference",
    "uri",
    "uri-reference",
    "uri-template",
    "uuid",
    "duration",
)
#: (file, case, test) -> why the contract legitimately differs from the suite's expectation.
EXCLUDED: dict[tuple[str, str, str], str] = {
    (
        "draft2020-12/format.json",
        f"{name} format",
        f"invalid {name} string is only an annotation by default",
    ): _FORMATS_ASSERTED
    for name in _ASSERTED_FORMATS
}

_MISSING = "<suite missing>"


def _files() -> list[str]:
    tests = SUITE / "tests"
    found: list[str] = []
    for draft in DIALECTS:
        base = tests / draft
        found += sorted(p.relative_to(tests).as_posix() for p in base.glob("*.json"))
        found += sorted(
            p.relative_to(tests).as_posix() for p in (base / "optional" / "format").glob("*.json")
        )
    return found or [_MISSING]


def _require_suite() -> None:
    if not (SUITE / "tests" / "draft4").is_dir() or not (SUITE / "tests" / "draft2020-12").is_dir():
        pytest.fail(
            f"the JSON-Schema-Test-Suite is missing at {SUITE}; run scripts/fetch_json_schema_suite.sh",
            pytrace=False,
        )


def _remotes() -> dict[str, Any]:
    base = SUITE / "remotes"
    return {
        "http://localhost:1234/" + p.relative_to(base).as_posix(): json.loads(p.read_text("utf-8"))
        for p in base.rglob("*.json")
    }


def _run(relative: str, direction: Direction) -> tuple[list[str], set[tuple[str, str, str]], int]:
    """Mismatches (not excluded), the exclusions that did apply, and the number of tests run."""
    dialect = DIALECTS[relative.split("/", 1)[0]]
    remotes = _remotes()

    def retrieve(uri: str) -> Any:
        return remotes[uri.split("#", 1)[0]]

    mismatches: list[str] = []
    applied: set[tuple[str, str, str]] = set()
    count = 0
    for case in json.loads((SUITE / "tests" / relative).read_text("utf-8")):
        validator = compile_schema(case["schema"], dialect=dialect, direction=direction, retriever=retrieve)
        for test in case["tests"]:
            count += 1
            key = (relative, case["description"], test["description"])
            got = validator.is_valid(test["data"])
            if got == test["valid"]:
                continue
            if key in EXCLUDED:
                applied.add(key)
            else:
                mismatches.append(f"{case['description']} / {test['description']}: expected {test['valid']}")
    return mismatches, applied, count


@pytest.mark.parametrize("direction", ["request", "response"])
@pytest.mark.parametrize("relative", _files())
def test_suite_file(relative: str, direction: Direction) -> None:
    _require_suite()
    assert relative != _MISSING
    mismatches, applied, count = _run(relative, direction)
    assert count > 0
    assert not mismatches, f"{relative}: the engine disagrees with the suite:\n" + "\n".join(mismatches)
    stale = {k for k in EXCLUDED if k[0] == relative} - applied
    assert not stale, f"exclusions that no longer differ (remove them): {sorted(stale)}"


def test_suite_covers_both_dialects() -> None:
    _require_suite()
    files = _files()
    assert sum(f.startswith("draft4/") for f in files) >= 30
    assert sum(f.startswith("draft2020-12/") for f in files) >= 45
    assert any(f.startswith("draft4/optional/format/") for f in files)
    assert any(f.startswith("draft2020-12/optional/format/") for f in files)


def test_translation_is_identity_on_plain_draft4_schemas() -> None:
    """The OAS 3.0 rules leave plain draft-4 schemas as they are, except dropping the siblings
    of ``$ref`` (which draft 4 ignores as well): the suite runs the real translation."""
    from bankguard.openapi._schema import Translator

    _require_suite()
    changed = []
    for path in sorted((SUITE / "tests" / "draft4").glob("*.json")):
        for case in json.loads(path.read_text("utf-8")):
            schema = case["schema"]
            translated = Translator("oas30", "response").schema(schema)
            if translated != schema and not _only_ref_siblings(schema, translated):
                changed.append(f"{path.name}: {case['description']}")
    assert not changed


def _only_ref_siblings(original: Any, translated: Any) -> bool:
    if isinstance(original, dict) and isinstance(translated, dict):
        if "$ref" in original:
            return translated == {"$ref": original["$ref"]}
        if original.keys() != translated.keys():
            return False
        return all(_only_ref_siblings(original[k], translated[k]) for k in original)
    if isinstance(original, list) and isinstance(translated, list):
        return len(original) == len(translated) and all(
            _only_ref_siblings(a, b) for a, b in zip(original, translated, strict=True)
        )
    return original == translated
