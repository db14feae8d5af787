"""``x-fapi-interaction-id``: validate, echo or generate (FAPI 1.0 Baseline §6.2.1 items 11-12).

The guard resolves the id before any check runs (:func:`resolve`), so every response,
errors included, carries one: the client's id, echoed verbatim when it is one valid
RFC 4122 / RFC 9562 UUID (FAPI-08), or a fresh UUID4. An invalid or repeated value is
never reflected (FAPI-10). This check then refuses such a request with 400 when
``interaction_id.invalid`` is ``reject`` (the ``fapi1-adv`` and ``obie`` default).
"""

from __future__ import annotations

import re
import uuid

from ..errors import InvalidInteractionId
from ..policy import InteractionIdPolicy
from ..request import Headers, RequestFacts
from . import State

# 8-4-4-4-12 hex digits, version 1-8, variant 10xx (RFC 9562 §4.1-4.2).
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}\Z"
)


def is_uuid(value: str) -> bool:
    return len(value) == 36 and _UUID.match(value) is not None


def resolve(headers: Headers, header: str) -> tuple[str, bool, str | None]:
    """The interaction id to use, whether it was generated, and what was wrong with the client's."""
    values = headers.get_all(header)
    if len(values) == 1 and is_uuid(values[0]):
        return values[0], False, None
    problem = None
    if values:
        problem = "interaction_id.duplicate" if len(values) > 1 else "interaction_id.invalid"
    return str(uuid.uuid4()), True, problem


class InteractionIdCheck:
    name = "interaction_id"

    def __init__(self, policy: InteractionIdPolicy) -> None:
        self.mode = policy.mode
        self.reject = policy.invalid == "reject"
        self.detail = f"The {policy.header} header must be one RFC 9562 (RFC 4122) UUID."

    def run(self, facts: RequestFacts, state: State) -> None:
        if state.interaction_problem is not None and self.reject:
            raise InvalidInteractionId(state.interaction_problem, detail=self.detail)
        return None
