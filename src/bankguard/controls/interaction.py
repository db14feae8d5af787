"""``x-fapi-interaction-id``: validate, echo or generate (FAPI 1.0 Baseline §6.2.1 items 11-12).

The guard generates a fresh RFC 4122 UUID for every request before any check runs,
so every response, errors included, carries an id. This check replaces it with the
client's id when that is a valid UUID (echoed verbatim, FAPI-08). An invalid value is
never reflected (FAPI-10): it is replaced, or the request is refused with 400 when
``interaction_id.invalid`` is ``reject`` (the ``fapi1-adv`` and ``obie`` default).
"""

from __future__ import annotations

import re

from ..errors import InvalidInteractionId
from ..policy import InteractionIdPolicy
from ..request import RequestFacts
from . import State

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_uuid(value: str) -> bool:
    return len(value) == 36 and _UUID.match(value) is not None


class InteractionIdCheck:
    name = "interaction_id"

    def __init__(self, policy: InteractionIdPolicy) -> None:
        self.mode = policy.mode
        self.header = policy.header
        self.reject = policy.invalid == "reject"

    def run(self, facts: RequestFacts, state: State) -> None:
        values = facts.headers.get_all(self.header)
        if not values:
            return None
        if len(values) == 1 and is_uuid(values[0]):
            state.interaction_id = values[0]
            state.interaction_id_generated = False
            return None
        if self.reject:
            reason = "interaction_id.duplicate" if len(values) > 1 else "interaction_id.invalid"
            raise InvalidInteractionId(reason)
        return None
