"""Every row of the hostile-input catalogue through the WSGI adapter: a Flask application protected
with ``bankguard.protect``, given each request as gunicorn would present it (without gunicorn's
own refusals)."""

from __future__ import annotations

import pytest

from .catalogue import CASES, Case
from .support import ids, run_in_process


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_hostile_request_through_wsgi(case: Case) -> None:
    run_in_process(case, "wsgi")
