"""Response data minimisation: what the response schema does not declare, what the caller may
not see, and card numbers, are taken out of a JSON response before it leaves.

PSD2 RTS art. 36(1)(a) and GDPR art. 5(1)(c) (data minimisation), PCI DSS v4.0 req. 3.4.1
(PAN masked when displayed: at most the BIN and the last four digits), OWASP API Security Top 10
2023 API3 (broken object property level authorisation).

Two steps. :func:`compile_shape` turns an OpenAPI schema object into a :class:`Shape` once (per
response declaration); :func:`minimise` applies a shape to one parsed JSON document and returns
the minimised document and a :class:`MinimiseReport` (counts and JSON pointers, never values).
On the response path, :func:`minimise_body` parses the body bytes too, and recognises the common
case -- a body the walk would leave as it is -- without the walk: a scan of the bytes finds no
card number, and the document passes the shape's *closed schema* (a JSON Schema that allows only
the names the walk keeps for this caller, compiled once per shape, see :func:`prepare`). The
result is the same either way; see the section "The response path" below.

Shapes
------
A shape is what the schema *declares*, for each object and array in the document:

* **Declared properties** are the union of ``properties`` over the schema and every branch of
  ``allOf``, ``anyOf`` and ``oneOf`` (recursively, through ``$ref``), the schemas a
  ``discriminator.mapping`` names (unless the schema is reached as an ``allOf`` parent, where
  the mapping names its derived schemas), and in OAS 3.1 ``if``/``then``/``else`` and
  ``dependentSchemas``. A property declared by several branches with different schemas gets the
  union of what they declare. A property whose schema is ``false`` is not declared; nor is a
  ``writeOnly`` one (OAS 3.0.3 §4.7.24.1: it SHOULD NOT be sent in a response).
* **Undeclared properties** are kept only when a ``patternProperties`` pattern matches the name
  (``re.search``, unanchored as in JSON Schema) or ``additionalProperties`` (in 3.1 also
  ``unevaluatedProperties``) is ``true`` or a schema; they then take that schema's shape.
  Without ``additionalProperties`` they are removed, whatever JSON Schema's default: this is a
  positive model, the response carries what the contract names. ``{"type": "object"}`` alone
  therefore keeps no properties.
* **Arrays**: elements take the ``items`` shape (``prefixItems`` in 3.1 for the leading
  positions, the draft-04 tuple form of ``items`` likewise). Elements are never removed.
* **Unconstrained schemas** -- no schema at all, ``true``, ``{}``, or a schema with nothing but
  annotations (``description``, ``title``, ``example``, ``nullable``, ``x-...``) -- declare
  anything: such a value passes through whole (card numbers are still masked). When such a
  schema is one branch among constrained ones (``allOf: [{$ref: X}, {description: ...}]``) it
  adds nothing. A schema that constrains anything else (``type: string``) declares no
  properties: an object found there is emptied, and array elements under a schema without
  ``items`` keep no properties either.
* In OAS 3.0 the siblings of a ``$ref`` are ignored (OAS 3.0.3 §4.7.26), except
  ``x-bankguard-scopes`` and ``writeOnly``, which are honoured wherever they stand; in 3.1 the
  siblings count (JSON Schema 2020-12 §8.2.3.1).

Recursive schemas compile (shapes are memoised by the schemas they come from, ``$ref`` targets
are resolved once per ref string), and the work is bounded: a schema needing more than
:data:`MAX_SHAPES` distinct shapes is refused with :class:`~bankguard.errors.ConfigurationError`,
as are unresolvable ``$ref`` s, circular ``$ref`` chains, malformed ``x-bankguard-scopes`` and
``patternProperties`` patterns Python's ``re`` cannot compile (ECMA-262 named groups
``(?<name>...)`` are accepted). Compile shapes when the spec loads, not while serving.

Scope-tied properties
---------------------
A property is kept only for callers holding *every* scope required of it. Requirements come from
two sources, and add up:

* ``x-bankguard-scopes: [scope, ...]`` (or one space-separated string) in the spec, on the
  property's schema, on the schema it refers to (``$ref``, ``allOf`` branches, and ``items`` of
  an array property), or on a schema that declares properties: every property it declares
  (itself or through its composition branches) then requires the scopes.
* ``scope_rules``: a mapping from a **schema location** to scopes. A location is a JSON pointer
  (RFC 6901: ``~`` written ``~0``, ``/`` written ``~1``) into the spec document, written the way a
  ``$ref`` is: ``#/components/schemas/OBAccount6/properties/Nickname`` (that property),
  ``#/components/schemas/OBCashAccount6_0`` (that schema: as if it carried
  ``x-bankguard-scopes``), ``#/components/schemas/X/allOf/1/properties/Y``,
  ``#/components/schemas/X/properties/Y/items``. Locations are known below every ``$ref``
  target and below the ``location`` passed to :func:`compile_shape`. A key without a file part
  (``#/...``) matches that pointer in every file of a multi-file spec; ``other.json#/...`` only in
  that file, as the ``$ref`` names it. :attr:`ShapeCompiler.matched_rules` tells which keys
  matched something, so a policy can warn about a key with a typo.

The scope names are compared as strings: pass OAuth2 scopes, consent permissions, or both, in
the ``scopes`` argument of :func:`minimise`.

The response path
-----------------
:func:`minimise_body` returns exactly what ``minimise(json.loads(body), ...)`` returns (and
raises what they raise). It skips the walk when both hold:

* **No card number can be in the body** (or ``reveal_pan``): the body is UTF-8, ASCII only and
  has no backslash, so every string and number stands in it as written, between quotes,
  brackets, commas, colons or white space; a scan of its runs of 13 or more digits, spaces and
  dashes with the same candidate and card-number rules as below finds none; and no float
  written with an exponent has a magnitude a card number could have (checked while parsing).
* **The document passes the closed schema** for the scopes the caller holds among those the
  shape names: objects carry only declared properties (scope-tied ones only when held),
  undeclared names only where ``additionalProperties`` keeps them (and no
  ``patternProperties`` exist), nothing declared ``false`` or ``writeOnly``, arrays follow
  ``items``/``prefixItems``, and no container is nested deeper than :data:`MAX_DEPTH`.
  Compiled with ``jsonschema-rs`` once per shape and per combination of held scopes (at most
  64), then cached on the shape; a shape needing more than :data:`MAX_CLOSED_DEFINITIONS`
  definitions (recursive schemas unroll per depth) always takes the walk.

The body is parsed first with ``orjson`` (about half the cost of :func:`json.loads` on a 46 kB
body), which gives the same document as :func:`json.loads` for every body it accepts, with two
exceptions: integers beyond 64 bits become floats, and nothing tells a float written with an
exponent (``4.111111111111111e15``, which the byte scan cannot see) from another. Both have a
magnitude of at least 10^12, so the closed schema used after ``orjson`` also refuses every
number of that magnitude; such documents, and bodies ``orjson`` refuses (``NaN``, lone
surrogates, ``1e400``, nesting past 1024), are parsed again by :func:`json.loads` and decided
exactly as described above.

Card numbers
------------
Unless ``reveal_pan``, every string value anywhere in the document (under declared properties
too, and the names of properties kept through ``additionalProperties``/``patternProperties``) is
searched for **candidate runs**: digits, optionally split into groups by a single space or
dash (``4111 1111 1111 1111``, ``4111-1111-1111-1111``), not adjacent to another letter or digit
(the word-boundary convention of card-data scanners: the digits inside an IBAN such as
``GB29NWBK60161331926819`` or a reference such as ``INV4111111111111111`` are not candidates),
nor to an asterisk (digits next to ``*`` belong to a number already masked; this keeps
minimisation idempotent).

Within a candidate, a sequence of whole groups is a **card number** when all three hold:

1. **Brand**: its first digits fall in a payment card brand's issuer identification number
   (IIN) range and its length is one that brand issues (ISO/IEC 7812-1; table
   :data:`CARD_BRANDS`): Visa 4 (13, 16, 19 digits); Mastercard 51-55 and 2221-2720 (16);
   American Express 34, 37 (15); Discover 6011, 644-649, 65 (16-19); JCB 3528-3589 (16-19);
   Diners Club 300-305, 36, 38-39 (14-19); UnionPay 62 (16-19); Maestro 50, 56-58 and the rest
   of 6 (13-19). Where ranges nest, the longest prefix decides (6011 is Discover's). Numbers
   starting with 0, 1, 7, 8 or 9 (and 2 outside 2221-2720, 3 outside the ranges above) are
   never card numbers: UK sort code + account numbers (``80200110203345``, 14 digits, one in
   ten Luhn-valid) are not masked.
2. **Luhn**: it passes the Luhn check (ISO/IEC 7812-1 annex B).
3. **Grouping**: it is one unbroken group, or printed the way card numbers are: every group of
   4-6 digits except the last, of 1-7 (``4111 1111 1111 1111``, ``3782 822463 10005``,
   ``3056 930902 5904``, ``6221 2600 0000 0000 007``). Identifiers grouped otherwise
   (``22289-20240509-004``, ``80-20-01 10203345``) are not card numbers, whatever their digits.

The sequence may be the whole candidate or part of it, so that ``2024-01-05 4111 1111 1111
1111`` masks the card number (and not the date). Masking keeps the first six and last four
digits of each and the separators, and replaces the other digits with ``*``:
``4111 11** **** 1111``. Overlapping matches are all masked (a chance match beside a card number
masks more, never less). An unbroken run of 20 or more digits is never a card number. A group
starts at most five sequences (a card number has at most 19 digits), so the work is linear.

JSON numbers are checked too: an integer (or an integral float) whose digits are a card number
(brand and Luhn, as above) becomes a *string*, ``"411111******1111"``. A schema typing the value
as a number then fails validation -- deliberately: a card number in a numeric field is better
refused than sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ..errors import ConfigurationError

__all__ = [
    "CLOSED",
    "MAX_CLOSED_DEFINITIONS",
    "MAX_DEPTH",
    "MAX_POINTERS",
    "MAX_SHAPES",
    "SCOPES_EXTENSION",
    "UNCONSTRAINED",
    "Dialect",
    "DocumentTooDeep",
    "CARD_BRANDS",
    "MinimiseReport",
    "Resolver",
    "Shape",
    "ShapeCompiler",
    "card_brand",
    "compile_shape",
    "is_card_number",
    "luhn_valid",
    "mask_pans",
    "minimise",
    "minimise_body",
    "prepare",
]

Resolver = Callable[[str], Mapping[str, Any]]
Dialect = Literal["oas30", "oas31"]

#: The spec extension that ties a property (or every property of a schema) to scopes.
SCOPES_EXTENSION = "x-bankguard-scopes"
#: Distinct shapes one compilation may build before the schema is refused as too complex.
MAX_SHAPES = 20_000
#: Deepest container nesting :func:`minimise` walks; deeper documents raise :class:`DocumentTooDeep`.
MAX_DEPTH = 256
#: How many JSON pointers a :class:`MinimiseReport` keeps per list.
MAX_POINTERS = 10
_MAX_POINTER_CHARS = 200
_MAX_REF_CHAIN = 64

# Keywords that do not by themselves constrain an instance: annotations (JSON Schema 2020-12
# §9, OAS 3.0.3 §4.7.24 fixed fields), plus the applicators whose effect comes from their branches.
_NEUTRAL = frozenset(
    {
        "title",
        "description",
        "example",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "nullable",
        "externalDocs",
        "xml",
        "discriminator",
        "$comment",
        "$id",
        "$schema",
        "$anchor",
        "$dynamicAnchor",
        "$defs",
        "definitions",
        "$vocabulary",
        "$ref",
        "$dynamicRef",
        "allOf",
        "anyOf",
        "oneOf",
        "if",
        "then",
        "else",
        "dependentSchemas",
    }
)
_SCHEMA_COMPONENTS = "#/components/schemas/"

Schema = Mapping[str, Any] | bool
_Node = tuple[Schema, str | None]  # a schema and its location (None when unknown)


class DocumentTooDeep(ValueError):
    """The document nests containers deeper than :data:`MAX_DEPTH`; it cannot be minimised."""


# --------------------------------------------------------------------------------------------
# Shapes


class Shape:
    """What a response schema declares for one value. Built by :func:`compile_shape`; read-only.

    Shapes form a graph (a recursive schema gives a cycle), so ``repr`` shows one level only.
    """

    __slots__ = (
        "_fast",
        "additional",
        "additional_scopes",
        "forbidden",
        "items",
        "patterns",
        "prefix_items",
        "properties",
        "property_scopes",
        "unconstrained",
    )

    def __init__(self) -> None:
        #: Anything goes: the value passes through whole (card numbers are still masked).
        self.unconstrained: bool = False
        #: Declared property name → its shape, for an object.
        self.properties: dict[str, Shape] = {}
        #: Property name → the scopes a caller needs (all of them); only names that need some.
        self.property_scopes: dict[str, frozenset[str]] = {}
        #: Names never kept, whatever else allows them: declared ``false`` or ``writeOnly``.
        self.forbidden: frozenset[str] = frozenset()
        #: ``patternProperties``: (compiled pattern, shape or None for ``false``, scopes), in order.
        self.patterns: tuple[tuple[re.Pattern[str], Shape | None, frozenset[str]], ...] = ()
        #: Shape of undeclared properties when ``additionalProperties`` allows them; None removes them.
        self.additional: Shape | None = None
        #: Scopes an undeclared property kept through ``additionalProperties`` needs.
        self.additional_scopes: frozenset[str] = frozenset()
        #: Shape of array elements (after ``prefix_items``).
        self.items: Shape = self
        #: Shapes of the leading array elements (``prefixItems``).
        self.prefix_items: tuple[Shape, ...] = ()
        self._fast: _FastPath | None = None

    def __repr__(self) -> str:
        if self.unconstrained:
            return "Shape(unconstrained)"
        parts = [f"properties={sorted(self.properties)!r}"]
        if self.property_scopes:
            scoped = {name: sorted(scopes) for name, scopes in self.property_scopes.items()}
            parts.append(f"property_scopes={scoped!r}")
        if self.patterns:
            parts.append(f"patterns={[p.pattern for p, _, _ in self.patterns]!r}")
        if self.additional is not None:
            parts.append("additional=" + ("unconstrained" if self.additional.unconstrained else "shape"))
        return f"Shape({', '.join(parts)})"


def _any_shape() -> Shape:
    shape = Shape()
    shape.unconstrained = True
    return shape


#: The shape of a value about which nothing is declared.
UNCONSTRAINED = _any_shape()
#: The shape of a value for which no properties are declared (its array elements neither).
CLOSED = Shape()


class _Parts:
    """What the schemas of one shape contribute, gathered across composition branches."""

    __slots__ = (
        "additional",
        "additional_scopes",
        "constrained",
        "items",
        "pattern_scopes",
        "patterns",
        "prefix",
        "prop_scopes",
        "props",
        "write_only",
    )

    def __init__(self) -> None:
        self.constrained = False
        self.props: dict[str, list[_Node]] = {}
        self.prop_scopes: dict[str, set[str]] = {}
        self.write_only: set[str] = set()
        self.patterns: dict[str, list[_Node]] = {}
        self.pattern_scopes: dict[str, set[str]] = {}
        self.additional: list[_Node] = []
        self.additional_scopes: set[str] = set()
        self.items: list[_Node] = []
        self.prefix: list[list[_Node]] = []


def _escape(segment: str) -> str:
    """RFC 6901 §3 reference token."""
    return segment.replace("~", "~0").replace("/", "~1")


def _join(loc: str | None, *segments: str) -> str | None:
    if loc is None:
        return None
    return loc + "".join("/" + _escape(s) for s in segments)


class ShapeCompiler:
    """Compiles shapes for the schemas of one spec, sharing the work between them.

    :param resolve: resolves a ``$ref`` string as written; refs found inside a resolved target
        are passed to the same resolver.
    :param dialect: ``oas30`` (draft-04 subset) or ``oas31`` (JSON Schema 2020-12).
    :param scope_rules: schema location → scopes (see the module documentation).
    """

    def __init__(
        self,
        resolve: Resolver,
        *,
        dialect: Dialect = "oas30",
        scope_rules: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        if dialect not in ("oas30", "oas31"):
            raise ConfigurationError(f"unknown dialect {dialect!r}; expected 'oas30' or 'oas31'")
        self._resolve = resolve
        self._dialect = dialect
        self._rules: dict[str, frozenset[str]] = {}
        for key, scopes in (scope_rules or {}).items():
            if isinstance(scopes, str):
                scopes = scopes.split()
            self._rules[key] = frozenset(scopes)
        self._matched: set[str] = set()
        self._targets: dict[str, Schema] = {}
        # shape memo: key → (shape, the nodes it came from; kept so their ids stay unique)
        self._shapes: dict[frozenset[tuple[int, str | None]], tuple[Shape, list[_Node]]] = {}
        # caches keyed by id(schema) keep the schema itself too, so the id cannot be reused
        self._own: dict[tuple[int, str | None], tuple[Schema, frozenset[str]]] = {}
        self._prop: dict[tuple[int, str | None], tuple[Schema, frozenset[str], bool]] = {}

    @property
    def matched_rules(self) -> frozenset[str]:
        """The ``scope_rules`` keys that matched a location in the schemas compiled so far."""
        return frozenset(self._matched)

    @property
    def unmatched_rules(self) -> frozenset[str]:
        """The ``scope_rules`` keys that matched nothing so far (a typo, or an unused schema)."""
        return frozenset(self._rules) - self._matched

    def compile(self, schema: Schema | None, *, location: str | None = None) -> Shape:
        """The shape of ``schema`` (None: no schema, anything passes).

        ``location``: where ``schema`` stands in the spec (``#/paths/~1accounts/get/...``), so that
        ``scope_rules`` can name places below it; refs make their own locations.
        """
        if schema is None:
            return UNCONSTRAINED
        shape = self._shape_of([(schema, location)])
        return CLOSED if shape is None else shape

    # -- references ---------------------------------------------------------------------------

    def _deref(self, ref: str, loc: str | None) -> Schema:
        target = self._targets.get(ref)
        if target is None:
            try:
                target = self._resolve(ref)
            except ConfigurationError:
                raise
            except Exception as exc:  # the resolver's own failure, named with the location
                raise ConfigurationError(f"cannot resolve $ref {ref!r}: {exc}", path=loc or ref) from exc
            if not isinstance(target, (Mapping, bool)):
                raise ConfigurationError(f"$ref {ref!r} does not point to a schema", path=loc or ref)
            self._targets[ref] = target
        return target

    def _normal(self, schema: Schema, loc: str | None) -> _Node:
        """Follow refs that add nothing of their own (``{"$ref": ...}``, maybe with annotations)."""
        for _ in range(_MAX_REF_CHAIN):
            if not isinstance(schema, Mapping):
                return schema, loc
            ref = schema.get("$ref")
            if not isinstance(ref, str) or self._own_scopes(schema, loc):
                return schema, loc
            if self._dialect == "oas31" and any(k not in _NEUTRAL and not k.startswith("x-") for k in schema):
                return schema, loc
            schema, loc = self._deref(ref, loc), ref
        raise ConfigurationError("$ref chain too long or circular", path=loc or "<schema>")

    # -- scopes -------------------------------------------------------------------------------

    def _own_scopes(self, schema: Schema, loc: str | None) -> frozenset[str]:
        """Scopes the schema itself requires: its extension, and a rule keyed by its location."""
        if not isinstance(schema, Mapping):
            return frozenset()
        key = (id(schema), loc)
        cached = self._own.get(key)
        if cached is not None:
            return cached[1]
        scopes: set[str] = set()
        value = schema.get(SCOPES_EXTENSION)
        if value is not None:
            if isinstance(value, str):
                value = value.split()
            if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and s for s in value):
                raise ConfigurationError(
                    f"{SCOPES_EXTENSION} must be a list of scope names",
                    path=_join(loc, SCOPES_EXTENSION) or "",
                )
            scopes.update(value)
        if loc is not None and self._rules:
            for candidate in (loc, loc[loc.find("#") :] if loc.find("#") > 0 else None):
                if candidate is not None and candidate in self._rules:
                    scopes |= self._rules[candidate]
                    self._matched.add(candidate)
        result = frozenset(scopes)
        self._own[key] = (schema, result)
        return result

    def _property_scopes(self, schema: Schema, loc: str | None) -> tuple[frozenset[str], bool]:
        """Scopes a property with this schema requires, and whether it is ``writeOnly``.

        Looks through ``$ref`` chains, ``allOf`` branches and (for scopes) ``items``.
        """
        if not isinstance(schema, Mapping):
            return frozenset(), False
        key = (id(schema), loc)
        cached = self._prop.get(key)
        if cached is not None:
            return cached[1], cached[2]
        self._prop[key] = (schema, frozenset(), False)  # a cycle adds nothing
        scopes = set(self._own_scopes(schema, loc))
        write_only = schema.get("writeOnly") is True
        ref = schema.get("$ref")
        if isinstance(ref, str):
            s, w = self._property_scopes(self._deref(ref, loc), ref)
            scopes |= s
            write_only = write_only or w
        branches = schema.get("allOf")
        if isinstance(branches, list):
            for i, branch in enumerate(branches):
                s, w = self._property_scopes(branch, _join(loc, "allOf", str(i)))
                scopes |= s
                write_only = write_only or w
        items = schema.get("items")
        if isinstance(items, Mapping):
            scopes |= self._property_scopes(items, _join(loc, "items"))[0]
        self._prop[key] = (schema, frozenset(scopes), write_only)
        return frozenset(scopes), write_only

    # -- shapes -------------------------------------------------------------------------------

    def _shape_of(self, nodes: list[_Node]) -> Shape | None:
        """The merged shape of ``nodes`` (a union); None when every one of them is ``false``."""
        normal = [self._normal(s, loc) for s, loc in nodes]
        normal = [n for n in normal if n[0] is not False]
        if not normal:
            return None
        with_loc = bool(self._rules)
        key = frozenset((id(s), loc if with_loc else None) for s, loc in normal)
        hit = self._shapes.get(key)
        if hit is not None:
            return hit[0]
        if len(self._shapes) >= MAX_SHAPES:
            raise ConfigurationError(
                f"schema too complex to minimise (more than {MAX_SHAPES} distinct shapes)",
                path=normal[0][1] or "<schema>",
            )
        shape = Shape()
        self._shapes[key] = (shape, normal)
        parts = _Parts()
        seen: set[tuple[int, str | None]] = set()
        for s, loc in normal:
            self._collect(s, loc, frozenset(), parts, seen)
        self._fill(shape, parts)
        return shape

    def _collect(
        self,
        schema: Schema,
        loc: str | None,
        inherited: frozenset[str],
        parts: _Parts,
        seen: set[tuple[int, str | None]],
        *,
        inheriting: bool = False,
    ) -> None:
        """Gather what ``schema`` declares into ``parts``.

        ``inheriting``: reached as an ``allOf`` branch, where a ``discriminator`` names the
        schemas derived from this one, not alternatives to it; its mapping is not followed.
        """
        if schema is True:
            return  # declares anything: adds nothing to a union
        if schema is False:
            parts.constrained = True
            return
        if not isinstance(schema, Mapping):
            raise ConfigurationError("a schema must be an object or a boolean", path=loc or "<schema>")
        key = (id(schema), loc)
        if key in seen:
            return
        seen.add(key)
        own = self._own_scopes(schema, loc)
        if own:
            inherited = inherited | own
        ref = schema.get("$ref")
        if isinstance(ref, str):
            self._collect(self._deref(ref, loc), ref, inherited, parts, seen, inheriting=inheriting)
            if self._dialect == "oas30":
                return  # OAS 3.0.3 §4.7.26: siblings of $ref are ignored
        if not parts.constrained and any(k not in _NEUTRAL and not k.startswith("x-") for k in schema):
            parts.constrained = True

        props = schema.get("properties")
        if isinstance(props, Mapping):
            for key_name, sub in props.items():
                name = str(key_name)  # YAML may read a name as a number; JSON names are strings
                sub_loc = _join(loc, "properties", name)
                parts.props.setdefault(name, []).append((sub, sub_loc))
                scopes, write_only = self._property_scopes(sub, sub_loc)
                parts.prop_scopes.setdefault(name, set()).update(inherited | scopes)
                if write_only:
                    parts.write_only.add(name)
        patterns = schema.get("patternProperties")
        if isinstance(patterns, Mapping):
            for key_pattern, sub in patterns.items():
                pattern = str(key_pattern)
                sub_loc = _join(loc, "patternProperties", pattern)
                parts.patterns.setdefault(pattern, []).append((sub, sub_loc))
                parts.pattern_scopes.setdefault(pattern, set()).update(
                    inherited | self._property_scopes(sub, sub_loc)[0]
                )
        for keyword in ("additionalProperties", "unevaluatedProperties"):
            if keyword in schema:
                sub = schema[keyword]
                sub_loc = _join(loc, keyword)
                parts.additional.append((sub, sub_loc))
                parts.additional_scopes.update(inherited | self._property_scopes(sub, sub_loc)[0])
                break  # unevaluatedProperties only stands in for an absent additionalProperties

        items, items_keyword = schema.get("items"), "items"
        prefix, prefix_keyword = schema.get("prefixItems"), "prefixItems"
        if isinstance(items, list):  # draft-04 tuple form
            prefix, prefix_keyword = items, "items"
            items, items_keyword = schema.get("additionalItems"), "additionalItems"
        if items is None and "unevaluatedItems" in schema:
            items, items_keyword = schema["unevaluatedItems"], "unevaluatedItems"
        if isinstance(prefix, list):
            for i, sub in enumerate(prefix):
                while len(parts.prefix) <= i:
                    parts.prefix.append([])
                parts.prefix[i].append((sub, _join(loc, prefix_keyword, str(i))))
        if isinstance(items, (Mapping, bool)):
            parts.items.append((items, _join(loc, items_keyword)))

        for keyword in ("allOf", "anyOf", "oneOf"):
            branches = schema.get(keyword)
            if isinstance(branches, list):
                for i, branch in enumerate(branches):
                    self._collect(
                        branch,
                        _join(loc, keyword, str(i)),
                        inherited,
                        parts,
                        seen,
                        inheriting=inheriting or keyword == "allOf",
                    )
        discriminator = schema.get("discriminator")
        if (
            not inheriting
            and isinstance(discriminator, Mapping)
            and isinstance(discriminator.get("mapping"), Mapping)
        ):
            for target in discriminator["mapping"].values():
                if isinstance(target, str):
                    # OAS 3.0.3 §4.7.25: a mapping value is a schema name or a reference
                    ref = target if ("#" in target or "/" in target) else _SCHEMA_COMPONENTS + target
                    self._collect(self._deref(ref, loc), ref, inherited, parts, seen)
        if self._dialect == "oas31":
            for keyword in ("if", "then", "else"):
                if keyword in schema:
                    self._collect(schema[keyword], _join(loc, keyword), inherited, parts, seen)
            dependent = schema.get("dependentSchemas")
            if isinstance(dependent, Mapping):
                for name, sub in dependent.items():
                    self._collect(sub, _join(loc, "dependentSchemas", str(name)), inherited, parts, seen)

    def _fill(self, shape: Shape, parts: _Parts) -> None:
        if not parts.constrained:
            shape.unconstrained = True
            return
        properties: dict[str, Shape] = {}
        scoped: dict[str, frozenset[str]] = {}
        forbidden: set[str] = set()
        for name, nodes in parts.props.items():
            sub = None if name in parts.write_only else self._shape_of(nodes)
            if sub is None:  # writeOnly, or false in every declaration
                forbidden.add(name)
                continue
            properties[name] = sub
            need = parts.prop_scopes.get(name)
            if need:
                scoped[name] = frozenset(need)
        shape.properties = properties
        shape.property_scopes = scoped
        shape.forbidden = frozenset(forbidden)
        shape.patterns = tuple(
            (
                _compile_pattern(pattern, nodes[0][1]),
                self._shape_of(nodes),
                frozenset(parts.pattern_scopes[pattern]),
            )
            for pattern, nodes in parts.patterns.items()
        )
        if parts.additional:
            shape.additional = self._shape_of(parts.additional)
            shape.additional_scopes = frozenset(parts.additional_scopes)
        items = self._shape_of(parts.items) if parts.items else None
        shape.items = CLOSED if items is None else items
        shape.prefix_items = tuple(
            CLOSED if (sub := self._shape_of(nodes)) is None else sub for nodes in parts.prefix
        )


def _compile_pattern(pattern: str, loc: str | None) -> re.Pattern[str]:
    """A ``patternProperties`` key as a Python pattern (ECMA-262 named groups translated)."""
    try:
        return re.compile(re.sub(r"\(\?<(?![=!])", "(?P<", pattern))
    except (re.error, TypeError) as exc:
        raise ConfigurationError(
            f"patternProperties pattern {pattern!r} cannot be compiled: {exc}", path=loc or "<schema>"
        ) from exc


def compile_shape(
    schema: Mapping[str, Any] | bool | None,
    resolve: Resolver,
    *,
    dialect: Dialect = "oas30",
    scope_rules: Mapping[str, frozenset[str]] | None = None,
    location: str | None = None,
) -> Shape:
    """Compile the shape of one response schema (see the module documentation).

    ``schema`` is the OAS schema object as written (``{"$ref": ...}`` is fine), or None when the
    response declares none (anything passes). Raises :class:`~bankguard.errors.ConfigurationError`
    for a schema that cannot be compiled. To compile many schemas of one spec, a
    :class:`ShapeCompiler` shares the work.
    """
    return ShapeCompiler(resolve, dialect=dialect, scope_rules=scope_rules).compile(schema, location=location)


# --------------------------------------------------------------------------------------------
# Card numbers

_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_LUHN_PLAIN = bytes(c - 48 if 48 <= c <= 57 else 0 for c in range(256))
_LUHN_DOUBLED = bytes(_DOUBLED[c - 48] if 48 <= c <= 57 else 0 for c in range(256))
# A run of digits, single spaces or dashes between groups, not touching a letter or digit
# (``[^\W_]``) nor an asterisk (a masked number); at least 13 digits. Each repetition
# consumes exactly one digit, so a search takes linear time.
_RUN = re.compile(r"(?<![^\W_])(?<!\*)\d(?:[ -]?\d){12,}(?![^\W_])(?!\*)")
_SEPARATOR = re.compile(r"[ -]")
_DIGIT = re.compile(r"\d")
# A card number's first six digits, the middle, and its last four digits (separators kept).
_EDGES = re.compile(r"(\d(?:[ -]?\d){5})(.*)((?:\d[ -]?){3}\d)\Z", re.DOTALL)
# The walk's pre-check, inlined for speed: an ASCII string holds a candidate only if, with
# spaces and dashes deleted and digits turned to "0" (all else to "x"), it holds 13 zeros in a
# row. One bytes.translate and a substring test cost a fraction of a regex scan. Other strings
# may hold non-ASCII decimal digits (or lone surrogates, which do not encode), and always go on
# to the scan.
_DIGITS_TO_ZERO = bytes(48 if 48 <= c <= 57 else 120 for c in range(256))
_THIRTEEN = b"0" * 13
_MIN_PAN = 10**12
_MAX_PAN = 10**19

_R12_19 = frozenset(range(12, 20))
_R14_19 = frozenset(range(14, 20))
_R16_19 = frozenset(range(16, 20))
#: Payment card brands by issuer identification number (IIN) range: (brand, first digits from,
#: to, allowed lengths). ISO/IEC 7812-1 numbers cards by IIN; the ranges and lengths are the
#: brands' published ones (as collected in the Wikipedia article "Payment card number", IIN
#: ranges table). Where ranges nest (6011 in Maestro's 6), the longest prefix decides.
CARD_BRANDS: tuple[tuple[str, int, int, frozenset[int]], ...] = (
    ("Visa", 4, 4, frozenset({13, 16, 19})),
    ("Mastercard", 51, 55, frozenset({16})),
    ("Mastercard", 2221, 2720, frozenset({16})),
    ("American Express", 34, 34, frozenset({15})),
    ("American Express", 37, 37, frozenset({15})),
    ("Discover", 6011, 6011, _R16_19),
    ("Discover", 644, 649, _R16_19),
    ("Discover", 65, 65, _R16_19),
    ("JCB", 3528, 3589, _R16_19),
    ("Diners Club", 300, 305, _R14_19),
    ("Diners Club", 36, 36, _R14_19),
    ("Diners Club", 38, 39, _R14_19),
    ("UnionPay", 62, 62, _R16_19),
    ("Maestro", 50, 50, _R12_19),
    ("Maestro", 56, 58, _R12_19),
    ("Maestro", 6, 6, _R12_19),
)


def _iin_table() -> tuple[tuple[str, frozenset[int]] | None, ...]:
    """:data:`CARD_BRANDS` as a lookup by the first four digits (0000-9999)."""
    slots: list[tuple[int, tuple[str, frozenset[int]]] | None] = [None] * 10_000
    for brand, low, high, lengths in CARD_BRANDS:
        width = len(str(low))
        scale = 10 ** (4 - width)
        for prefix in range(low, high + 1):
            for key in range(prefix * scale, (prefix + 1) * scale):
                current = slots[key]
                if current is None or current[0] < width:  # the longest prefix decides
                    slots[key] = (width, (brand, lengths))
    return tuple(None if slot is None else slot[1] for slot in slots)


_IIN = _iin_table()


def card_brand(digits: str) -> str | None:
    """The brand whose IIN range and allowed lengths (:data:`CARD_BRANDS`) fit ``digits`` (a
    string of decimal digits), without the Luhn check; None when none does (or under 13 digits,
    which this module never takes for a card number)."""
    if not 13 <= len(digits) <= 19 or not digits.isdecimal():
        return None
    entry = _IIN[int(digits[:4])]
    if entry is None or len(digits) not in entry[1]:
        return None
    return entry[0]


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of ISO/IEC 7812-1 annex B over a string of decimal digits.

    False for an empty string or one with anything but decimal digits.
    """
    if digits.isascii():
        data = digits.encode()
        if not data.isdigit():
            return False
        # Sum the digits from the right; every second one doubled (and its digits summed).
        total = sum(data[-1::-2].translate(_LUHN_PLAIN)) + sum(data[-2::-2].translate(_LUHN_DOUBLED))
        return total % 10 == 0
    if not digits.isdecimal():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        total += _DOUBLED[d] if i & 1 else d
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    """Whether a string of 13-19 decimal digits is a card number: its IIN range and length fit a
    brand of :data:`CARD_BRANDS` and it passes the Luhn check."""
    if not 13 <= len(digits) <= 19:
        return False
    entry = _IIN[int(digits[:4])] if digits[:4].isdecimal() else None
    return entry is not None and len(digits) in entry[1] and luhn_valid(digits)


def _pan_spans(run: str) -> list[tuple[int, int]]:
    """The card numbers in ``run`` (a candidate) as (start, end) spans, in order.

    A card number is a sequence of whole groups of the run that :func:`is_card_number` accepts
    and that is grouped like a printed card number: one group (unbroken digits), or groups of
    4-6 digits with a last group of 1-7 (4-4-4-4, 4-6-5, 4-6-4, 4-4-4-4-3, 4-4-5, ...). Matches
    may overlap; all are masked, so a chance match next to a card number cannot leave the card
    number's digits visible. As a card number has at most 19 digits, each group starts at most
    five candidate sequences: the work is linear in the run's length.
    """
    if run.isdecimal():  # one group: the common case (account numbers, unbroken card numbers)
        return [(0, len(run))] if is_card_number(run) else []
    groups = _SEPARATOR.split(run)
    spans: list[tuple[int, int]] = []
    start = 0
    for i, group in enumerate(groups):
        size = len(group)
        if size >= 13:
            if is_card_number(group):
                spans.append((start, start + size))
        elif 4 <= size <= 6:
            joined = group
            end = start + size
            for following in groups[i + 1 :]:
                joined += following
                end += 1 + len(following)
                if len(joined) > 19:
                    break
                if len(joined) >= 13 and len(following) <= 7 and is_card_number(joined):
                    spans.append((start, end))
                if not 4 <= len(following) <= 6:
                    break  # it cannot stand inside a grouped card number
        start += size + 1  # separators are single characters
    return spans


def _mask_text(text: str) -> str | None:
    """``text`` with its card numbers masked; None when it has none."""
    if text.isdecimal():  # all digits: account numbers, unbroken card numbers
        if is_card_number(text):
            return text[:6] + "*" * (len(text) - 10) + text[-4:]
        return None
    match = _RUN.search(text)
    if match is None:
        return None
    pieces: list[str] = []
    done = 0  # text before this index is in pieces
    while match is not None:
        run = match.group()
        spans = _pan_spans(run)
        if spans:
            pieces.append(text[done : match.start()])
            pieces.append(_mask_run(run, spans))
            done = match.end()
        match = _RUN.search(text, match.end())
    if not pieces:
        return None
    pieces.append(text[done:])
    return "".join(pieces)


def _mask_run(run: str, spans: list[tuple[int, int]]) -> str:
    """``run`` with the digits of ``spans`` masked (PCI DSS v4.0 3.4.1: at most the first six
    and the last four digits of a card number stay visible)."""
    if len(spans) == 1:
        start, end = spans[0]
        edges = _EDGES.match(run, start, end)
        if edges is not None:
            head, middle, tail = edges.groups()
            return run[:start] + head + _DIGIT.sub("*", middle) + tail + run[end:]
    chars = list(run)
    for start, end in spans:  # overlapping: mask the union
        digits = [k for k in range(start, end) if chars[k] not in " -"]
        for k in digits[6:-4]:
            chars[k] = "*"
    return "".join(chars)


def _mask_number(value: int | float) -> str | None:
    """The masked string for a JSON number that is a card number; None otherwise."""
    if isinstance(value, float):
        if not (_MIN_PAN <= abs(value) < _MAX_PAN) or not value.is_integer():
            return None
        value = int(value)
    magnitude = -value if value < 0 else value
    if not (_MIN_PAN <= magnitude < _MAX_PAN):
        return None
    digits = str(magnitude)
    if not is_card_number(digits):
        return None
    masked = digits[:6] + "*" * (len(digits) - 10) + digits[-4:]
    return "-" + masked if value < 0 else masked


def mask_pans(text: str) -> str:
    """``text`` with every card number masked to first six / last four (see the module docs)."""
    if len(text) < 13:
        return text
    masked = _mask_text(text)
    return text if masked is None else masked


# --------------------------------------------------------------------------------------------
# Minimisation


@dataclass(frozen=True, slots=True)
class MinimiseReport:
    """What :func:`minimise` changed: counts and JSON pointers (RFC 6901), never values.

    Pointers name the document as the caller received it, with card numbers masked in the
    property names too and characters that are not printable written ``\\uXXXX``; each is cut
    at 200 characters, and at most :data:`MAX_POINTERS` are kept.
    """

    #: Properties removed because the schema does not declare them (or declares them ``writeOnly``).
    removed_undeclared: int = 0
    #: Properties removed because the caller lacks a scope they are tied to.
    removed_unauthorised: int = 0
    #: Values (and property names) in which card numbers were masked.
    masked: int = 0
    #: The first removed properties, in document order (both kinds).
    pointers: tuple[str, ...] = ()
    #: The first masked values.
    masked_pointers: tuple[str, ...] = ()

    @property
    def removed(self) -> int:
        return self.removed_undeclared + self.removed_unauthorised

    @property
    def changed(self) -> bool:
        """Whether the minimised document differs from the input."""
        return bool(self.removed_undeclared or self.removed_unauthorised or self.masked)


_Path = tuple[Any, str | int] | None  # (parent path, segment); None is the root


def _pointer(path: _Path) -> str:
    """The RFC 6901 pointer of ``path``: card numbers in names masked, characters that are not
    printable written ``\\uXXXX``, cut at 200 characters."""
    segments: list[str] = []
    node = path
    while node is not None:
        node, segment = node
        segments.append(str(segment) if isinstance(segment, int) else _escape(mask_pans(segment)))
    pointer = "".join("/" + s for s in reversed(segments))
    if not pointer.isprintable():  # names chosen by users: no control characters in audit trails
        pointer = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in pointer)
    return pointer if len(pointer) <= _MAX_POINTER_CHARS else pointer[: _MAX_POINTER_CHARS - 1] + "…"


def _too_deep() -> DocumentTooDeep:
    return DocumentTooDeep(f"the document nests containers deeper than {MAX_DEPTH} levels")


class _Walk:
    """One minimisation: the caller's scopes, the counters, and the walk over the document.

    The two shape walks (:meth:`object`, :meth:`array`) inline the common leaf cases for speed.
    Every walk copies a container only once something in it changes, so unchanged subtrees are
    shared with the input and a conforming document costs no allocation.
    """

    __slots__ = ("mask", "masked", "masked_at", "removed_at", "scopes", "unauthorised", "undeclared")

    def __init__(self, scopes: frozenset[str], mask: bool) -> None:
        self.scopes = scopes
        self.mask = mask
        self.undeclared = 0
        self.unauthorised = 0
        self.masked = 0
        self.removed_at: list[str] = []
        self.masked_at: list[str] = []

    def removed(self, path: _Path, key: Any, *, unauthorised: bool) -> None:
        if unauthorised:
            self.unauthorised += 1
        else:
            self.undeclared += 1
        if len(self.removed_at) < MAX_POINTERS:
            self.removed_at.append(_pointer((path, key if isinstance(key, (str, int)) else repr(key))))

    def masked_here(self, path: _Path) -> None:
        self.masked += 1
        if len(self.masked_at) < MAX_POINTERS:
            self.masked_at.append(_pointer(path))

    def object(self, obj: Mapping[Any, Any], shape: Shape, path: _Path, depth: int) -> Any:
        if shape.unconstrained:
            return self.loose(obj, path, depth) if self.mask else obj
        if depth > MAX_DEPTH:
            raise _too_deep()
        props = shape.properties
        scoped = shape.property_scopes
        mask = self.mask
        out: dict[Any, Any] | None = None
        for key, value in obj.items():
            sub = props.get(key)
            if sub is None or (scoped and key in scoped):
                out = self.rare_property(obj, key, value, sub, shape, out, path, depth)
                continue
            new = value
            kind = type(value)
            if kind is str:
                if (
                    mask
                    and len(value) >= 13
                    and (not value.isascii() or _THIRTEEN in value.encode().translate(_DIGITS_TO_ZERO, b" -"))
                ):
                    new = self.leaf(value, (path, key))
            elif kind is dict:
                new = self.object(value, sub, (path, key), depth + 1)
            elif kind is list:
                new = self.array(value, sub, (path, key), depth + 1)
            elif kind is int:
                if mask and (value >= _MIN_PAN or value <= -_MIN_PAN):
                    new = self.leaf(value, (path, key))
            elif value is not None and kind is not bool:
                new = self.other(value, sub, (path, key), depth)
            if new is not value:
                if out is None:
                    out = dict(obj)
                out[key] = new
        return obj if out is None else out

    def rare_property(
        self,
        obj: Mapping[Any, Any],
        key: Any,
        value: Any,
        sub: Shape | None,
        shape: Shape,
        out: dict[Any, Any] | None,
        path: _Path,
        depth: int,
    ) -> dict[Any, Any] | None:
        """An undeclared or scope-tied property: removed, or kept (maybe renamed). Returns ``out``."""
        out_key = key
        if sub is None:
            sub, need, out_key = self.undeclared_property(key, shape)
            unauthorised = sub is not None
        else:
            need = shape.property_scopes[key]
            unauthorised = True
        if sub is None or not need <= self.scopes:
            self.removed(path, key, unauthorised=unauthorised)
            if out is None:
                out = dict(obj)
            del out[key]
            return out
        if out_key is not key:
            self.masked_here((path, out_key))
        if isinstance(value, Mapping):
            new = self.object(value, sub, (path, out_key), depth + 1)
        elif isinstance(value, (list, tuple)):
            new = self.array(value, sub, (path, out_key), depth + 1)
        else:
            new = self.leaf(value, (path, out_key)) if self.mask else value
        if out_key is not key:  # a masked name: rebuild to keep the order
            source = obj if out is None else out
            return {(out_key if k is key else k): (new if k is key else v) for k, v in source.items()}
        if new is not value:
            if out is None:
                out = dict(obj)
            out[key] = new
        return out

    def undeclared_property(self, key: Any, shape: Shape) -> tuple[Shape | None, frozenset[str], Any]:
        """Shape, required scopes and output name of an undeclared property (no shape: remove it).

        The name is masked before the patterns see it, so minimising twice changes nothing more.
        """
        out_key = key
        if key in shape.forbidden:
            return None, frozenset(), key
        if isinstance(key, str) and shape.patterns:
            if self.mask and len(key) >= 13:
                out_key = mask_pans(key)
            matched: tuple[Shape, frozenset[str]] | None = None
            for pattern, sub, need in shape.patterns:
                if pattern.search(out_key):
                    if sub is None:  # a false pattern forbids the name
                        return None, frozenset(), out_key
                    if matched is None:
                        matched = (sub, need)
            if matched is not None:
                return matched[0], matched[1], out_key
        elif isinstance(key, str) and self.mask and len(key) >= 13:
            out_key = mask_pans(key)
        if shape.additional is not None:
            return shape.additional, shape.additional_scopes, out_key
        return None, frozenset(), out_key

    def array(self, arr: list[Any] | tuple[Any, ...], shape: Shape, path: _Path, depth: int) -> Any:
        if shape.unconstrained:
            return self.loose(arr, path, depth) if self.mask else arr
        if depth > MAX_DEPTH:
            raise _too_deep()
        prefix = shape.prefix_items
        leading = len(prefix)
        items = shape.items
        mask = self.mask
        out: list[Any] | None = None
        for index, value in enumerate(arr):
            sub = prefix[index] if index < leading else items
            new = value
            kind = type(value)
            if kind is dict:
                new = self.object(value, sub, (path, index), depth + 1)
            elif kind is str:
                if (
                    mask
                    and len(value) >= 13
                    and (not value.isascii() or _THIRTEEN in value.encode().translate(_DIGITS_TO_ZERO, b" -"))
                ):
                    new = self.leaf(value, (path, index))
            elif kind is list:
                new = self.array(value, sub, (path, index), depth + 1)
            elif kind is int:
                if mask and (value >= _MIN_PAN or value <= -_MIN_PAN):
                    new = self.leaf(value, (path, index))
            elif value is not None and kind is not bool:
                new = self.other(value, sub, (path, index), depth)
            if new is not value:
                if out is None:
                    out = list(arr)
                out[index] = new
        return arr if out is None else out

    def other(self, value: Any, shape: Shape, path: _Path, depth: int) -> Any:
        """Floats, and types json.loads does not make (subclasses, tuples); others pass through."""
        if isinstance(value, Mapping):
            return self.object(value, shape, path, depth + 1)
        if isinstance(value, (list, tuple)):
            return self.array(value, shape, path, depth + 1)
        return self.leaf(value, path) if self.mask else value

    def leaf(self, value: Any, path: _Path) -> Any:
        """A scalar with its card numbers masked (a card-number JSON number becomes a string)."""
        if isinstance(value, str):
            masked = _mask_text(value) if len(value) >= 13 else None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            masked = _mask_number(value)
        else:
            return value
        if masked is None:
            return value
        self.masked_here(path)
        return masked

    def loose(self, value: Any, path: _Path, depth: int) -> Any:
        """An unconstrained container: only card numbers are masked, in values and names."""
        if depth > MAX_DEPTH:
            raise _too_deep()
        if isinstance(value, Mapping):
            out: dict[Any, Any] | None = None
            for key, item in value.items():
                out_key = key
                if isinstance(key, str) and len(key) >= 13:
                    out_key = mask_pans(key)
                    if out_key is not key:
                        self.masked_here((path, out_key))
                new = self.loose_item(item, (path, out_key), depth)
                if out is None and (new is not item or out_key is not key):
                    out = _prefix(value, key)
                if out is not None:
                    out[out_key] = new
            return value if out is None else out
        items: list[Any] | None = None
        for index, item in enumerate(value):
            new = self.loose_item(item, (path, index), depth)
            if new is not item:
                if items is None:
                    items = list(value)
                items[index] = new
        return value if items is None else items

    def loose_item(self, value: Any, path: _Path, depth: int) -> Any:
        if isinstance(value, (Mapping, list, tuple)):
            return self.loose(value, path, depth + 1)
        return self.leaf(value, path)


def _prefix(obj: Mapping[Any, Any], stop: Any) -> dict[Any, Any]:
    """A new dict with the items of ``obj`` before the key ``stop`` (which is in ``obj``)."""
    out: dict[Any, Any] = {}
    for key in obj:
        if key is stop:
            break
        out[key] = obj[key]
    return out


def minimise(
    document: Any, shape: Shape, *, scopes: frozenset[str], reveal_pan: bool
) -> tuple[Any, MinimiseReport]:
    """Minimise a parsed JSON document (what :func:`json.loads` returns) against ``shape``.

    Removes the properties ``shape`` does not declare and those tied to scopes missing from
    ``scopes``, at every level; masks card numbers unless ``reveal_pan``. Properties keep their
    order. The input is never changed: containers that change are copied, unchanged subtrees are
    shared with the input -- the result *is* ``document`` when nothing changed -- so treat both
    as read-only afterwards. Raises :class:`DocumentTooDeep` for a document nested deeper than
    :data:`MAX_DEPTH` (fail closed: do not send it).
    """
    walk = _Walk(scopes, not reveal_pan)
    if isinstance(document, Mapping):
        result = walk.object(document, shape, None, 0)
    elif isinstance(document, (list, tuple)):
        result = walk.array(document, shape, None, 0)
    elif walk.mask:
        result = walk.leaf(document, None)
    else:
        result = document
    report = MinimiseReport(
        removed_undeclared=walk.undeclared,
        removed_unauthorised=walk.unauthorised,
        masked=walk.masked,
        pointers=tuple(walk.removed_at),
        masked_pointers=tuple(walk.masked_at),
    )
    return result, report


# --------------------------------------------------------------------------------------------
# The response path: one JSON body, parsed, minimised, with a fast path for the common case

#: At most this many definitions in one closed schema (:func:`prepare`); larger shapes (deeply
#: recursive schemas) always take the walk.
MAX_CLOSED_DEFINITIONS = 20_000
#: Closed schemas kept per shape, one per distinct set of the shape's scopes a caller holds.
_MAX_VARIANTS = 64
_EMPTY_REPORT = MinimiseReport()
_NOT_A_CONTAINER: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}


class _BigFloat(Exception):
    """A JSON number parsed as a float that :func:`_mask_number` would look at."""


def _parse_float(text: str) -> float:
    value = float(text)
    if _MIN_PAN <= abs(value) < _MAX_PAN and value.is_integer():
        raise _BigFloat
    return value


_WATCHING_DECODER = json.JSONDecoder(parse_float=_parse_float)


class _FastPath:
    """A shape's closed schemas (built by :func:`prepare`), and the scopes the shape names."""

    __slots__ = ("scopes", "usable", "validators")

    def __init__(self, scopes: frozenset[str], usable: bool) -> None:
        #: Every scope some property of the shape (at any depth) is tied to.
        self.scopes = scopes
        #: False when the shape is too large for a closed schema: the walk always runs.
        self.usable = usable
        #: (held scopes, a subset of :attr:`scopes`; guarded) → the compiled closed schema.
        self.validators: dict[tuple[frozenset[str], bool], Any] = {}


class _TooLarge(Exception):
    pass


def _shape_scopes(shape: Shape) -> frozenset[str]:
    """Every scope a property reachable from ``shape`` is tied to."""
    seen: set[int] = set()
    stack = [shape]
    found: set[str] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for need in node.property_scopes.values():
            found |= need
        found |= node.additional_scopes
        stack.extend(node.properties.values())
        for _, sub, need in node.patterns:
            found |= need
            if sub is not None:
                stack.append(sub)
        if node.additional is not None:
            stack.append(node.additional)
        stack.append(node.items)
        stack.extend(node.prefix_items)
    return frozenset(found)


#: What :func:`_closed_schema` refuses everywhere when ``guarded``: numbers whose value ``orjson``
#: may give differently from :func:`json.loads` (see "The response path").
_LARGE_NUMBER: dict[str, Any] = {"type": "number", "anyOf": [{"minimum": _MIN_PAN}, {"maximum": -_MIN_PAN}]}
_NOT_A_CONTAINER_GUARDED: dict[str, Any] = {**_NOT_A_CONTAINER, "not": _LARGE_NUMBER}


def _closed_schema(shape: Shape, held: frozenset[str], guarded: bool = False) -> dict[str, Any]:
    """A JSON Schema (2020-12) accepted only by documents :func:`minimise` leaves unchanged (with
    ``reveal_pan``, for a caller holding ``held`` of the shape's scopes).

    Objects may carry only the names the walk keeps: declared properties whose scopes are held,
    and undeclared ones only where ``additionalProperties`` keeps them for this caller (not
    where ``patternProperties`` exist: such objects take the walk). Arrays' elements follow
    ``items``/``prefixItems``. The schema is stricter than the walk in one respect: containers
    nested deeper than :data:`MAX_DEPTH` are refused even where the walk would not look (unless
    it raises :class:`DocumentTooDeep`, the walk decides). Definitions are keyed by shape and
    depth, so recursive shapes unroll to :data:`MAX_DEPTH` levels at most. ``guarded`` also
    refuses numbers of magnitude 10^12 or more, anywhere (for documents ``orjson`` parsed).
    """
    names: dict[tuple[int, int], str] = {}
    defs: dict[str, Any] = {}
    queue: list[tuple[Shape, int, str]] = []

    def ref(node: Shape, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            return _NOT_A_CONTAINER_GUARDED if guarded else _NOT_A_CONTAINER
        key = (id(node), depth)
        name = names.get(key)
        if name is None:
            if len(names) >= MAX_CLOSED_DEFINITIONS:
                raise _TooLarge
            name = names[key] = f"s{len(names)}"
            queue.append((node, depth, name))
        return {"$ref": "#/$defs/" + name}

    root = ref(shape, 0)
    while queue:
        node, depth, name = queue.pop()
        child = depth + 1
        if node.unconstrained:
            below = ref(node, child)
            defs[name] = {"additionalProperties": below, "items": below}
            if guarded:
                defs[name]["not"] = _LARGE_NUMBER
            continue
        properties: dict[str, Any] = {}
        for key, sub in node.properties.items():
            need = node.property_scopes.get(key)
            properties[key] = False if need and not need <= held else ref(sub, child)
        for key in node.forbidden:
            properties[key] = False
        additional: Any = False
        if not node.patterns and node.additional is not None and node.additional_scopes <= held:
            additional = ref(node.additional, child)
        schema: dict[str, Any] = {
            "properties": properties,
            "additionalProperties": additional,
            "items": ref(node.items, child),
        }
        if node.prefix_items:
            schema["prefixItems"] = [ref(sub, child) for sub in node.prefix_items]
        if guarded:
            schema["not"] = _LARGE_NUMBER
        defs[name] = schema
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **root, "$defs": defs}


def prepare(shape: Shape) -> None:
    """Build the fast path of ``shape`` for :func:`minimise_body` now (else at its first use).

    Compiles the closed schema (the variant used after ``orjson``) for a caller holding none of
    the shape's scopes, and for one holding them all; other combinations, and the unguarded
    variant used after a second parse, are compiled when first met. Call it when the spec loads,
    beside :func:`compile_shape`.
    """
    fast = _fast_path(shape)
    if fast.usable:
        _closed_validator(shape, fast, frozenset(), True)
        _closed_validator(shape, fast, fast.scopes, True)


def _fast_path(shape: Shape) -> _FastPath:
    fast = shape._fast
    if fast is None:
        fast = shape._fast = _FastPath(_shape_scopes(shape), True)
    return fast


def _closed_validator(shape: Shape, fast: _FastPath, held: frozenset[str], guarded: bool) -> Any:
    """The compiled closed schema for ``held`` (cached on the shape); None when unusable."""
    try:
        return fast.validators[held, guarded]
    except KeyError:
        pass
    if len(fast.validators) >= _MAX_VARIANTS:
        return None
    import jsonschema_rs

    try:
        validator: Any = jsonschema_rs.Draft202012Validator(_closed_schema(shape, held, guarded))
    except _TooLarge:
        fast.usable = False
        return None
    fast.validators[held, guarded] = validator
    return validator


def _unchanged(shape: Shape, fast: _FastPath, scopes: frozenset[str], document: Any, guarded: bool) -> bool:
    """Whether ``document`` passes the closed schema for the caller's scopes."""
    held = scopes & fast.scopes if fast.scopes else frozenset()
    validator = _closed_validator(shape, fast, held, guarded)
    if validator is None:
        return False
    try:
        return bool(validator.is_valid(document))
    except Exception:  # anything the validator cannot read takes the walk
        return False


# Digits, spaces and dashes to "0", all else to "x": positions stay those of the body.
_RUN_TO_ZERO = bytes(48 if 48 <= c <= 57 or c in (32, 45) else 120 for c in range(256))
#: Runs of 13 or more digits, spaces and dashes the body scan looks at before it gives up and
#: lets the walk decide (deeply indented JSON has many runs of spaces).
_MAX_SCANNED_RUNS = 256


def _may_hold_pan(body: bytes) -> bool:
    """Whether a UTF-8 JSON body may hold something :func:`minimise` masks (a superset).

    In an ASCII body without a backslash, the text of every string (value or name) and of every
    number stands in the body as written, between characters that are neither letters, digits
    nor asterisks (quotes, ``:``, ``,``, brackets, white space). So the candidate runs the walk
    looks at are the candidate runs of the body itself, and :func:`_pan_spans` tells whether any
    of them holds a card number. The scan looks only at maximal runs of digits, spaces and
    dashes of 13 characters or more (one ``bytes.translate``, then ``find``). Bodies with other
    bytes (non-ASCII digits) or backslashes (escapes change what a string holds) are taken to
    hold one; floats written with an exponent are caught while parsing (:func:`_parse_float`).
    """
    if not body.isascii() or b"\\" in body:
        return True
    zeros = body.translate(_RUN_TO_ZERO)
    at = zeros.find(_THIRTEEN)
    scanned = 0
    while at >= 0:
        scanned += 1
        if scanned > _MAX_SCANNED_RUNS:  # give up locating; are there 13 digits at all?
            return _THIRTEEN in body.translate(_DIGITS_TO_ZERO, b" -")
        end = zeros.find(b"x", at)
        if end < 0:
            end = len(zeros)
        # The run starts at ``at`` (the search starts after the previous one); the characters
        # on either side are neither digits, spaces nor dashes.
        run = body[at:end]
        if len(run) - run.count(b" ") - run.count(b"-") < 13:
            pass  # fewer than 13 digits in all: no card number (narratives: "CALL 0345 600 6541")
        elif run.isdigit():  # the common case: account numbers, references
            before = body[at - 1 : at]
            after = body[end : end + 1]
            bounded = not (before.isalpha() or before == b"*" or after.isalpha() or after == b"*")
            if bounded and is_card_number(run.decode("ascii")):
                return True
        else:  # with the characters on either side, which the pattern's look-arounds read
            piece = body[max(at - 1, 0) : end + 1].decode("ascii")
            for match in _RUN.finditer(piece):
                if _pan_spans(match.group()):
                    return True
        at = zeros.find(_THIRTEEN, end)
    return False


def minimise_body(
    body: bytes, shape: Shape, *, scopes: frozenset[str], reveal_pan: bool
) -> tuple[Any, MinimiseReport]:
    """Parse a JSON response body (as :func:`json.loads` does) and :func:`minimise` it.

    Returns what :func:`minimise` returns for the parsed body -- the result *is* the parsed
    document when nothing changed. Raises :class:`ValueError` (:class:`json.JSONDecodeError`)
    or :class:`RecursionError` for a body that is not JSON, :class:`DocumentTooDeep` as
    :func:`minimise` does.

    Fast path: when the body cannot hold a card number (or ``reveal_pan``) and the parsed
    document passes the shape's closed schema (only names the walk keeps for this caller, see
    :func:`prepare`), the walk would change nothing and is skipped. Everything else takes the
    walk; the results are the same either way.
    """
    fast = _fast_path(shape)
    scanned: bool | None = None  # the byte scan's answer, once it has run (it costs ~0.1 ms)
    if fast.usable and (reveal_pan or not (scanned := _may_hold_pan(body))):
        try:
            document = orjson.loads(body)
        except ValueError:  # orjson.JSONDecodeError: json.loads decides below
            pass
        else:
            if _unchanged(shape, fast, scopes, document, True):
                return document, _EMPTY_REPORT
    may_mask = not reveal_pan
    if may_mask:
        encoding = json.detect_encoding(body)
        text = body.decode(encoding, "surrogatepass")  # as json.loads decodes bytes
        try:
            document = _WATCHING_DECODER.decode(text)
        except _BigFloat:
            document = json.loads(text)
        else:
            may_mask = encoding != "utf-8" or (_may_hold_pan(body) if scanned is None else scanned)
    else:
        document = json.loads(body)
    if not may_mask and fast.usable and _unchanged(shape, fast, scopes, document, False):
        return document, _EMPTY_REPORT
    return minimise(document, shape, scopes=scopes, reveal_pan=reveal_pan)
