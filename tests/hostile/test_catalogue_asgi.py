"""Every row of the hostile-input catalogue through the ASGI adapter: a Starlette application
protected with ``bankguard.protect``, given each request as uvicorn would present it."""

from __future__ import annotations

import pytest

from .catalogue import CASES, Case
from .support import ids, run_in_process


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_hostile_request_through_asgi(case: Case) -> None:
    run_in_process(case, "asgi")
