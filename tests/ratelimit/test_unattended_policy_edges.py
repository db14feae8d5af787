"""``ratelimit.unattended.consent_claims`` (PSD2 RTS art. 36(5)(b)): each refused value names its
YAML path."""

from __future__ import annotations

import pytest

from bankguard import Policy
from bankguard.errors import ConfigurationError


def problems_of(unattended: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ConfigurationError) as info:
        Policy.from_dict({"ratelimit": {"unattended": unattended}})
    return {p.path: p.message for p in info.value.problems}


@pytest.mark.parametrize("value", ["consent_id", {"consent_id": 1}])
def test_consent_claims_must_be_a_list(value: object) -> None:
    assert problems_of({"consent_claims": value}) == {
        "ratelimit.unattended.consent_claims": "expected a list of claim names"
    }


@pytest.mark.parametrize("item", ["", "c" * 65, 7])
def test_consent_claim_names_are_short_strings(item: object) -> None:
    assert problems_of({"consent_claims": ["consent_id", item]}) == {
        "ratelimit.unattended.consent_claims[1]": f"{item!r} is not a claim name"
    }


def test_consent_claims_in_order_of_preference() -> None:
    policy = Policy.from_dict({"ratelimit": {"unattended": {"consent_claims": ["intent", "consent_id"]}}})
    assert policy.ratelimit.unattended.consent_claims == ("intent", "consent_id")
