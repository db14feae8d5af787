"""Flask helpers: read the verified principal inside a view.

from bankguard import Policy, protect
from bankguard.integrations.flask import current_principal

app = protect(Flask(__name__), Policy.from_yaml("policy.yaml"))

@app.get("/accounts")
def accounts():
    principal = current_principal()
"""

from __future__ import annotations

from flask import request

from ..context import get_context
from ..decision import Principal, SecurityContext


def current_context() -> SecurityContext:
    """The bankguard context of the current Flask request."""
    return get_context(request.environ)


def current_principal() -> Principal:
    """The verified principal of the current Flask request."""
    return current_context().principal


def interaction_id() -> str:
    """The ``x-fapi-interaction-id`` bankguard echoes on the response."""
    return current_context().interaction_id


__all__ = ["current_context", "current_principal", "interaction_id"]
