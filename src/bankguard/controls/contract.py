"""The OpenAPI contract control (policy section ``openapi``; audit control ``openapi``).

When the policy names a spec, the spec's operations join the route table (positive security
model: what the spec does not declare is refused by the ``routes`` control, unless
``routes.undeclared: allow``), each operation's ``security`` becomes its scope requirement
(OAS 3.0 §4.7.10 / 3.1 §4.8.10: the alternatives of the list, the scopes of each OAuth2
requirement), and after the token control this check validates the request against the
operation: path, query, header and cookie parameters, the body's media type and its JSON
schema. A violation is 400 ``request-invalid`` (415 for an undeclared media type) whose
problem lists the failed locations and checks, never the submitted values.

Which operations need a token: an operation whose effective ``security`` is absent (neither
the operation nor the spec declares any) needs a verified token without particular scopes
(deny by default); an explicit ``security: []`` or an empty alternative (``- {}``) makes it
public; otherwise the token must grant every scope of one alternative.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ..decision import Operation
from ..errors import ConfigurationError, RequestInvalid, UnsupportedMediaType
from ..policy import Policy, RouteSpec
from ..request import RequestFacts
from ..scopes import ScopeRequirement
from . import State

log = logging.getLogger("bankguard")

#: At most this many failed locations are listed in a problem and noted in the audit event.
MAX_LISTED = 20


def load_policy_contract(policy: Policy) -> Any:
    """The compiled contract of ``policy.openapi.spec`` (None when no spec is configured)."""
    section = policy.openapi
    if section.spec is None:
        return None
    from ..openapi.contract import load_contract

    contract = load_contract(
        section.spec,
        base_path=section.base_path,
        strict=section.strict,
        query_date_time_without_offset=section.query_date_time_without_offset,
    )
    for warning in contract.warnings:
        log.warning("bankguard: openapi spec %s: %s", section.spec, warning)
    return contract


def requirement_of_security(
    security: Any, schemes: Any, *, scopes: bool
) -> tuple[bool, ScopeRequirement | None]:
    """``(public, requirement)`` for an operation's effective ``security``."""
    if security is None:
        return False, ScopeRequirement(authenticated=True)  # deny by default: a token is needed
    if not security or any(len(alternative) == 0 for alternative in security):
        return True, None  # security: [] or an empty alternative: authentication is optional
    if not scopes:
        return False, ScopeRequirement(authenticated=True)
    alternatives = []
    for alternative in security:
        needed: set[str] = set()
        for scheme, names in alternative:
            kind = (schemes.get(scheme) or {}).get("type")
            if kind in ("oauth2", "openIdConnect"):
                needed.update(names)
        alternatives.append(frozenset(needed))
    if any(not alt for alt in alternatives):
        return False, ScopeRequirement(authenticated=True)  # one alternative needs no scope
    distinct = tuple(dict.fromkeys(alternatives))
    if len(distinct) == 1:
        return False, ScopeRequirement(distinct[0], authenticated=True)
    return False, ScopeRequirement(authenticated=True, one_of=distinct)


def contract_operations(policy: Policy, contract: Any) -> list[Operation]:
    """The spec's operations as route-table entries, merged with the policy's own declarations
    for the same method and path (which may add roles and scopes, or make it public)."""
    declared = {(r.method, r.path): r for r in policy.routes.operations}
    out: list[Operation] = []
    seen: set[tuple[str, str]] = set()
    for op in contract.operations:
        key = (op.method, op.path)
        if key in seen:
            raise ConfigurationError(f"{op.method} {op.path} is declared twice", path="openapi.spec")
        seen.add(key)
        public, requirement = requirement_of_security(
            op.security, contract.security_schemes, scopes=policy.openapi.scopes_from_spec
        )
        spec: RouteSpec | None = declared.get(key)
        roles: tuple[str, ...] = ()
        if spec is not None:
            public = public or spec.public
            policy_requirement = ScopeRequirement(
                frozenset(spec.scopes), (frozenset(spec.any_scopes),) if spec.any_scopes else ()
            )
            requirement = policy_requirement.merge(requirement) if policy_requirement else requirement
            roles = spec.roles
        out.append(
            Operation(
                id=op.operation_id or (spec.operation_id if spec is not None else f"{op.method} {op.path}"),
                method=op.method,
                path=op.path,
                public=public,
                scopes=tuple(sorted(requirement.all_of)) if requirement else (),
                requirement=None if public else requirement,
                roles=roles,
                contract=op,
            )
        )
    return out


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _safe(location: str) -> str:
    """A location fit for a problem and an audit note: a property name the client chose (allowed
    by ``additionalProperties``) may hold anything, so control characters go and card numbers
    are masked."""
    from ..openapi.minimise import mask_pans

    return mask_pans(_UNPRINTABLE.sub("?", location))[:256]


def checked_operations(policy: Policy, contract: Any) -> list[Operation]:
    """The spec's operations for the route table; ConfigurationError when some need a token and
    the policy can verify none (also run by ``bankguard check-policy``)."""
    operations = contract_operations(policy, contract)
    if not policy.tokens.configured:
        needy = [f"{op.method} {op.path}" for op in operations if not op.public]
        if needy:
            count = (
                f"{len(needy)} operations of the spec need"
                if len(needy) > 1
                else "1 operation of the spec needs"
            )
            raise ConfigurationError(
                f"{count} a token (first: {needy[0]}); configure tokens.issuers or tokens.introspection",
                path="openapi.spec",
            )
    return operations


class ContractCheck:
    name = "openapi"

    def __init__(self, policy: Policy) -> None:
        self.mode = policy.openapi.mode

    def run(self, facts: RequestFacts, state: State) -> None:
        op = state.operation
        contract = op.contract if op is not None else None
        if contract is None:
            return None
        violations = contract.check_request(
            path_params=state.path_params,
            query=facts.query,
            headers=facts.headers,
            body=facts.body,
            content_type=facts.headers.get("content-type"),
        )
        if not violations:
            return None
        shown = [(_safe(v.location), v.code) for v in violations[:MAX_LISTED]]
        listed = [{"location": location, "check": code} for location, code in shown]
        state.notes.extend(f"openapi.{location}:{code}" for location, code in shown)
        denial: RequestInvalid | UnsupportedMediaType
        if any(v.status == 415 for v in violations):
            denial = UnsupportedMediaType("openapi.content_type_not_declared")
        else:
            denial = RequestInvalid("openapi.request_invalid")
        denial.extensions["errors"] = listed
        raise denial
