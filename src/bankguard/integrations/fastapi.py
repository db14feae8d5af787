"""FastAPI / Starlette helpers: dependencies yielding what bankguard verified.

from fastapi import Depends, FastAPI
from bankguard import Policy, Principal, protect
from bankguard.integrations.fastapi import principal

app = protect(FastAPI(), Policy.from_yaml("policy.yaml"))

@app.get("/accounts")
async def accounts(who: Principal = Depends(principal)): ...
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from ..context import get_context
from ..decision import Principal, SecurityContext


def security_context(connection: HTTPConnection) -> SecurityContext:
    """Dependency: the bankguard context of this request."""
    return get_context(connection.scope)


def principal(connection: HTTPConnection) -> Principal:
    """Dependency: the verified principal of this request."""
    return get_context(connection.scope).principal


def interaction_id(connection: HTTPConnection) -> str:
    """Dependency: the ``x-fapi-interaction-id`` bankguard echoes on the response."""
    return get_context(connection.scope).interaction_id


__all__ = ["interaction_id", "principal", "security_context"]
