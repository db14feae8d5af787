"""bankguard: banking and Open Banking API security inside the Python process.

from bankguard import Policy, protect

app = protect(app, Policy.from_yaml("policy.yaml"))
"""

from __future__ import annotations

from .adapters import BankGuardMiddleware, BankGuardWSGI, guard_of, protect
from .audit import AuditEvent, EventCollector, LoggingSink
from .context import NotProtectedError, get_context, get_principal
from .decision import Decision, Operation, Principal, SecurityContext
from .errors import BankGuardError, ConfigurationError, Denied
from .guard import Guard
from .policy import (
    AuditPolicy,
    AuthPolicy,
    InteractionIdPolicy,
    Policy,
    ProblemsPolicy,
    RequestPolicy,
    ResponseHeadersPolicy,
    RouteSpec,
    RoutesPolicy,
)
from .request import Headers, RequestFacts
from .scopes import ScopeRequirement, require_scopes

__version__ = "0.1.0.dev0"

__all__ = [
    "AuditEvent",
    "AuditPolicy",
    "AuthPolicy",
    "BankGuardError",
    "BankGuardMiddleware",
    "BankGuardWSGI",
    "ConfigurationError",
    "Decision",
    "Denied",
    "EventCollector",
    "Guard",
    "Headers",
    "InteractionIdPolicy",
    "LoggingSink",
    "NotProtectedError",
    "Operation",
    "Policy",
    "Principal",
    "ProblemsPolicy",
    "RequestFacts",
    "RequestPolicy",
    "ResponseHeadersPolicy",
    "RouteSpec",
    "RoutesPolicy",
    "ScopeRequirement",
    "SecurityContext",
    "__version__",
    "get_context",
    "get_principal",
    "guard_of",
    "protect",
    "require_scopes",
]
