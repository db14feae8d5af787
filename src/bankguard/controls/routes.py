"""Operation matching: which declared operation does this request address?

Deny by default (OWASP API5/API9): a path that matches no declared template → 404;
a path that exists with another method → 405 with ``Allow`` (RFC 9110 §15.5.6).
``HEAD`` is admitted where ``GET`` is declared (RFC 9110 §9.3.2), so HEAD never
reaches an operation without GET's checks. Templates are compiled once; static
paths are a dictionary lookup. Matching uses the decoded path, the same one the
application's router sees; :mod:`.request` has already refused paths whose raw
and decoded forms could route differently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from ..decision import Operation
from ..errors import MethodNotAllowed, NotFound
from ..policy import RouteSpec, RoutesPolicy
from ..request import RequestFacts
from ..scopes import ScopeRequirement
from . import State

_PARAM = re.compile(r"\{([^{}/]*)\}")


@dataclass(frozen=True, slots=True)
class _Template:
    regex: re.Pattern[str]
    methods: Mapping[str, Operation]


def compile_template(path: str) -> re.Pattern[str]:
    """``/accounts/{AccountId}`` → a regex whose groups are the parameters (one non-empty segment each)."""
    out = []
    pos = 0
    for i, m in enumerate(_PARAM.finditer(path)):
        out.append(re.escape(path[pos : m.start()]))
        out.append(f"(?P<p{i}>[^/]+)")
        pos = m.end()
    out.append(re.escape(path[pos:]))
    return re.compile("^" + "".join(out) + r"\Z")


def _operation(spec: RouteSpec) -> Operation:
    return Operation(
        id=spec.operation_id,
        method=spec.method,
        path=spec.path,
        public=spec.public,
        scopes=spec.scopes,
        any_scopes=spec.any_scopes,
        requirement=ScopeRequirement(
            frozenset(spec.scopes), (frozenset(spec.any_scopes),) if spec.any_scopes else ()
        )
        or None,
        roles=spec.roles,
    )


class RouteTable:
    """All declared operations, compiled once."""

    def __init__(self, specs: tuple[RouteSpec, ...], extra: Iterable[Operation] = ()) -> None:
        static: dict[str, dict[str, Operation]] = {}
        templated: dict[str, dict[str, Operation]] = {}
        operations = list(extra)  # from the OpenAPI spec, already merged with the policy's
        taken = {(op.method, op.path) for op in operations}
        operations += [_operation(s) for s in specs if (s.method, s.path) not in taken]
        #: Every declared operation.
        self.operations: tuple[Operation, ...] = tuple(operations)
        for op in operations:
            target = templated if _PARAM.search(op.path) else static
            target.setdefault(op.path, {})[op.method] = op
        self._static = static
        # Literal segments beat parameters: sort templates by their number of parameters.
        self._templates = [
            (_PARAM.findall(path), _Template(compile_template(path), methods))
            for path, methods in sorted(templated.items(), key=lambda kv: len(_PARAM.findall(kv[0])))
        ]

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation and its path parameters, or None when no declared path matches.

        Like the frameworks' routers, the first path that matches *and* has the method
        wins; when paths match but none has the method, 405 lists the methods they have.
        """
        allowed: set[str] = set()
        for methods, params in self._candidates(path):
            op = methods.get(method)
            if op is None and method == "HEAD":
                op = methods.get("GET")
            if op is not None:
                return op, params
            allowed.update(methods)
            if "GET" in methods:
                allowed.add("HEAD")
        if allowed:
            raise MethodNotAllowed("routes.method_not_allowed", allowed=sorted(allowed))
        return None

    def _candidates(self, path: str) -> Iterator[tuple[Mapping[str, Operation], dict[str, str]]]:
        """Declared paths matching ``path``: the static one first, then templates, fewest parameters first."""
        methods = self._static.get(path)
        if methods is not None:
            yield methods, {}
        for names, template in self._templates:
            m = template.regex.match(path)
            if m is not None:
                yield template.methods, dict(zip(names, m.groups(), strict=True))


class RouteCheck:
    name = "routes"

    def __init__(self, policy: RoutesPolicy, extra: Iterable[Operation] = ()) -> None:
        self.mode = policy.mode
        self.deny_undeclared = policy.undeclared == "deny"
        self.table = RouteTable(policy.operations, extra)

    def run(self, facts: RequestFacts, state: State) -> None:
        try:
            found = self.table.match(facts.method, facts.path)
        except MethodNotAllowed:
            if self.deny_undeclared:
                raise
            return None
        if found is None:
            if self.deny_undeclared:
                raise NotFound("routes.undeclared_operation")
            return None
        state.operation, state.path_params = found
        return None
