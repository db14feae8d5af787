"""Fuzzing ``x-fapi-interaction-id``: any string, any number of field lines.

Properties (STANDARDS FAPI-08, FAPI-10; docs/policy.md ``interaction_id``; docs/errors.md
``invalid-interaction-id``):

* exactly one value that is an RFC 9562 UUID (8-4-4-4-12 hex, version 1-8, variant ``10``, checked
  here with :mod:`uuid`) is echoed verbatim in the response header, the problem body and the audit
  event; anything else is never reflected: a fresh version-4 UUID is used instead;
* with ``invalid: replace`` (the generic default) the header never changes the decision: the
  verdict equals that of the same request without it;
* with ``invalid: reject`` an invalid value is 400 ``interaction_id.invalid``, a repeated header
  400 ``interaction_id.duplicate``; a valid one changes nothing.
"""

from __future__ import annotations

import json
import uuid

from hypothesis import example, given
from hypothesis import strategies as st

from bankguard.testing import make_facts

from .conftest import ISSUER, check_decision, fuzz, new_guard, token_policy

REPLACE = new_guard(token_policy())
REJECT = new_guard(token_policy(interaction_id={"invalid": "reject"}))
TOKEN = ISSUER.mint(lifetime=3600)


def is_rfc9562(value: str) -> bool:
    """Canonical 8-4-4-4-12 text of a UUID with version 1-8 and the RFC 9562 variant."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return (
        len(value) == 36
        and str(parsed) == value.lower()
        and parsed.variant == uuid.RFC_4122
        and 1 <= int(value[14], 16) <= 8
    )


def _variant(u: uuid.UUID, form: str) -> str:
    text = str(u)
    return {
        "plain": text,
        "upper": text.upper(),
        "braces": "{" + text + "}",
        "urn": u.urn,
        "hex": u.hex,
        "version0": text[:14] + "0" + text[15:],
        "version9": text[:14] + "9" + text[15:],
        "variant-c": text[:19] + "c" + text[20:],
        "variant-7": text[:19] + "7" + text[20:],
        "newline": text + "\n",
        "space": " " + text,
        "fullwidth": text.replace("1", "\uff11"),
        "nil": "00000000-0000-0000-0000-000000000000",
        "max": "ffffffff-ffff-ffff-ffff-ffffffffffff",
    }[form]


uuids = st.builds(
    _variant,
    st.uuids(),
    st.sampled_from(
        [
            "plain",
            "plain",
            "plain",
            "upper",
            "braces",
            "urn",
            "hex",
            "version0",
            "version9",
            "variant-c",
            "variant-7",
            "newline",
            "space",
            "fullwidth",
            "nil",
            "max",
        ]
    ),
)
values = st.one_of(
    uuids, st.text(max_size=40), st.text(st.sampled_from("0123456789abcdefABCDEF-"), max_size=40)
)


@fuzz(300)
@given(
    lines=st.lists(values, max_size=3),
    reject=st.booleans(),
    path=st.sampled_from(["/accounts", "/health", "/nowhere"]),
    name=st.sampled_from(["x-fapi-interaction-id", "X-FAPI-Interaction-ID"]),
)
@example(
    lines=["c770aef3-6784-41f7-8e0e-ff5f97bddb3a"],
    reject=True,
    path="/accounts",
    name="x-fapi-interaction-id",
)
@example(
    lines=["c770aef3-6784-41f7-8e0e-ff5f97bddb3a\n"],
    reject=True,
    path="/accounts",
    name="x-fapi-interaction-id",
)
def test_FAPI_08_10_interaction_id_values(lines: list[str], reject: bool, path: str, name: str) -> None:
    guard, events = REJECT if reject else REPLACE
    auth = [("authorization", "Bearer " + TOKEN)]
    before = len(events.events)
    baseline = check_decision(guard, events, before, guard.decide(make_facts("GET", path, headers=auth)))
    headers = auth + [(name, line) for line in lines]
    before = len(events.events)
    decision = guard.decide(make_facts("GET", path, headers=headers))
    verdict = check_decision(guard, events, before, decision, secrets=[TOKEN])
    echoed = len(lines) == 1 and is_rfc9562(lines[0])
    event = events.events[-1]
    if echoed:
        assert decision.interaction_id == lines[0]
        assert not event.interaction_id_generated
    else:
        generated = uuid.UUID(decision.interaction_id)
        assert generated.version == 4
        assert decision.interaction_id not in lines
        assert event.interaction_id_generated
    if not decision.allowed:
        # The only request-dependent member of the document is the interaction id (the
        # response header carries the same one, conftest.check_decision).
        document = json.loads(guard.problem(decision).body)
        assert document["interaction_id"] == decision.interaction_id
        assert set(document) == {"type", "title", "status", "detail", "interaction_id"}
    if echoed or not lines or not reject:
        assert verdict == baseline, (lines, verdict, baseline)
    elif len(lines) > 1:
        assert (verdict.status, verdict.reason) == (400, "interaction_id.duplicate")
    else:
        assert (verdict.status, verdict.reason) == (400, "interaction_id.invalid")
