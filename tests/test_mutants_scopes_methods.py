"""``require_scopes`` on a bound method (found while explaining a surviving mutant of
``bankguard.scopes.require_scopes``).

The decorator accepts bound methods on purpose (``inspect.ismethod`` selects the wrapping branch),
as in ``app.add_url_rule("/accounts", view_func=require_scopes("accounts")(controller.get))``;
marking the method object itself used to raise ``AttributeError`` (a bound method takes no
attributes): the declaration now goes on the method's function, which the method reads.
"""

from __future__ import annotations

import pytest

from bankguard import NotProtectedError, ScopeRequirement, require_scopes
from bankguard.scopes import requirement_of


class AccountsController:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def get(self) -> str:
        self.calls.append("get")
        return "ok"


def test_OWASP_17_decorated_bound_method_is_guarded() -> None:
    controller = AccountsController()
    guarded = require_scopes("accounts")(controller.get)
    assert requirement_of(guarded) == ScopeRequirement(frozenset({"accounts"}))
    with pytest.raises(NotProtectedError):
        guarded()
    assert controller.calls == []
