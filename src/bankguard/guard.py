"""The decision core: an ordered pipeline of checks turning RequestFacts into a Decision.

The pipeline is one generator, :meth:`Guard.flow`. Checks that need shared state
yield store operations through it; :meth:`Guard.decide` drives it with a sync store
(WSGI) and :meth:`Guard.adecide` with an async store (ASGI). The decision logic exists
once. This module imports no web framework and does no I/O of its own.

Order (STANDARDS §0, "recommended evaluation order"): request hygiene and size
limits, interaction id, operation match, credentials. The interaction id itself is
resolved before the first check, so even a 431 echoes the client's valid id. Later controls (certificates,
tokens, binding, scopes, rate limits, contract) slot in after these.

Fail closed: an exception escaping a check is logged with its traceback on the
``bankguard`` logger and turns into a 503 problem (:class:`~bankguard.errors.InternalFault`),
never a 500 and never an allow. A check in ``report`` mode that would deny (or fails)
is recorded on the audit event and the request continues.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from datetime import datetime, timezone
from typing import Any

from .audit import AuditEvent, Outcome, Sink, emit, resolve_sink
from .controls import Check, State
from .controls.auth import AuthCheck
from .controls.contract import ContractCheck, checked_operations, load_policy_contract
from .controls.interaction import InteractionIdCheck
from .controls.interaction import resolve as resolve_interaction_id
from .controls.ratelimit import RATELIMIT_HEADERS, PreAuthLimitCheck, TppLimitCheck
from .controls.request import RequestCheck
from .controls.routes import RouteCheck
from .controls.tokens import TokenCheck
from .decision import Decision, Principal, SecurityContext
from .errors import Denied, InternalFault
from .policy import Network, Policy
from .problem import ProblemRenderer, ProblemResponse, Scheme
from .request import RequestFacts
from .responses import ResponsePlan, is_json, media_type, sampled
from .stores import AsyncStore, Call, StoreFailure, StoreOp, SyncStore
from .tokens.jwt import VerifiedToken
from .tokens.runtime import build_dpop, build_introspection, build_store, build_verifier, close_sources

log = logging.getLogger("bankguard")

#: Response headers bankguard never lets through (RFC 9440 §2.2-2.3, FWD-06).
STRIPPED_RESPONSE_HEADERS = frozenset({"client-cert", "client-cert-chain"})

Flow = Generator[StoreOp, Any, Decision]


def default_checks(policy: Policy, tokens: TokenCheck | None = None, contract: Any = None) -> list[Check]:
    """The built-in checks, in evaluation order."""
    operations = checked_operations(policy, contract) if contract is not None else []
    routes = RouteCheck(policy.routes, operations)
    checks: list[Check] = [RequestCheck(policy.request), InteractionIdCheck(policy.interaction_id), routes]
    limited = policy.ratelimit.enabled
    if limited and policy.ratelimit.preauth.limits is not None:
        # Before any certificate or token is verified: a flood costs a counter, not a signature check.
        checks.append(PreAuthLimitCheck(policy))
    if policy.client_cert.source != "none":
        from .controls.mtls import ClientCertCheck

        checks.append(ClientCertCheck(policy))
    checks.append(AuthCheck(policy.auth))
    if tokens is not None:
        checks.append(tokens)
    if limited:
        # After the credentials are verified: only a verified identity is counted (OWASP-14).
        checks.append(TppLimitCheck(policy, [op.id for op in routes.table.operations]))
    if contract is not None:
        checks.append(ContractCheck(policy))
    return checks


def client_address(peer: str | None, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str | None:
    """The client's address: the peer, unless the peer is a trusted proxy.

    Then ``X-Forwarded-For`` is walked from the right, skipping trusted proxies; the
    first address not in ``trusted`` is the client. Entries a client could have
    written (left of that) are never used. Unparseable entries end the walk.
    """
    if peer is None or not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for line in forwarded_for for h in line.split(",")]
    current = peer
    for hop in reversed(hops):
        if not _in(current, trusted):
            break
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        current = hop
    return current


@functools.lru_cache(maxsize=4096)
def _in(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether ``address`` is in one of ``networks`` (cached: the same proxies and clients come
    back request after request; the key is the address text, bounded)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # dual-stack servers report IPv4 peers as ::ffff:a.b.c.d
    return any(ip in net for net in networks)


def _step(gen: Flow, result: object, error: StoreFailure | None) -> StoreOp | Decision:
    """Advance the pipeline by one store operation; the Decision when it is done."""
    try:
        if error is not None:
            return gen.throw(error)
        return gen.send(result)
    except StopIteration as stop:
        decision: Decision = stop.value
        return decision


def _warn_if_workers(tokens: TokenCheck | None, policy: Policy) -> None:
    """STANDARDS CFG-08: process-local replay entries with several workers let a DPoP proof be
    replayed once on each other worker. Warn when the environment says there are several
    (``WEB_CONCURRENCY``, read by uvicorn and gunicorn), and when requests are served by a process
    forked after the guard was built (gunicorn ``--preload``)."""
    workers = os.environ.get("WEB_CONCURRENCY", "")
    if workers.isdigit() and int(workers) > 1:
        if policy.dpop.enabled:
            log.warning(
                "bankguard: WEB_CONCURRENCY=%s with storage memory://: a DPoP proof accepted by one "
                "worker can be replayed on another; set storage.uri to a Redis URL (CFG-08)",
                workers,
            )
        if policy.ratelimit.enabled:
            log.warning(
                "bankguard: WEB_CONCURRENCY=%s with storage memory://: each worker counts its own "
                "requests, so a TPP gets up to %s times its rate limit; set storage.uri to a Redis URL",
                workers,
                workers,
            )
    if tokens is not None:
        tokens.warn_on_fork = True


def _failure(exc: Exception, op: StoreOp) -> StoreFailure:
    failure = StoreFailure(f"{type(exc).__name__} during {type(op).__name__}")
    failure.__cause__ = exc  # logged with the check's failure, so operators see why (never audited)
    return failure


_SECOND: list[tuple[int, str]] = [(-1, "")]  # the last whole second and its text, swapped atomically


def _now() -> str:
    """The current UTC time as ISO 8601 with milliseconds (``2026-11-22T02:41:40.728Z``)."""
    now = time.time()
    second = int(now)
    cached = _SECOND[0]
    if cached[0] != second:
        cached = (second, datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
        _SECOND[0] = cached
    return f"{cached[1]}.{int((now - second) * 1000):03d}Z"


class Guard:
    """Decides about requests under one policy. Build once; thread- and task-safe.

    :param policy: the policy.
    :param checks: the pipeline; defaults to :func:`default_checks`. Extra checks
        follow the :class:`~bankguard.controls.Check` protocol.
    :param sink: where audit events go; defaults to the policy's ``audit.sink``.
    :param store: store used by checks that need shared state; defaults to the one the
        policy's ``storage.uri`` names (a process-local :class:`~bankguard.stores.MemoryStore`
        for ``memory://``, a :class:`~bankguard.stores_redis.RedisStore` for Redis).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        checks: Sequence[Check] | None = None,
        sink: Sink | None = None,
        store: SyncStore | AsyncStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        # Always present: with no issuer configured it still refuses requests for which the
        # application declared scopes (require_scopes), rather than letting them through.
        self.tokens: TokenCheck | None = TokenCheck(
            policy,
            verifier=build_verifier(policy.tokens, clock),
            introspection=build_introspection(policy.tokens, clock),
            dpop=build_dpop(policy, clock),
            clock=clock,
        )
        #: The compiled OpenAPI contract (None without ``openapi.spec``).
        self.contract: Any = load_policy_contract(policy)
        #: Compiled minimisation shapes per declared response, all built now (never while serving).
        self._shapes: dict[int, Any] = self._compile_shapes() if self.contract is not None else {}
        self.checks: tuple[Check, ...] = tuple(
            default_checks(policy, self.tokens, self.contract) if checks is None else checks
        )
        self.sink: Sink = sink if sink is not None else resolve_sink(policy.audit)
        self.store = store if store is not None else build_store(policy.storage)
        for check in self.checks:
            bind = getattr(check, "bind_store", None)
            if callable(bind):
                bind(self.store)
        if (policy.dpop.enabled or policy.ratelimit.enabled) and store is None and not policy.storage.shared:
            _warn_if_workers(self.tokens if policy.dpop.enabled else None, policy)
        self.interaction_header = policy.interaction_id.header
        schemes = [Scheme("Bearer", (("realm", policy.auth.realm),))]
        if policy.dpop.enabled:
            # RFC 9449 §7.1: algs lists exactly the algorithms proofs are verified with (CFG-06).
            schemes.append(Scheme("DPoP", (("algs", " ".join(policy.dpop.algorithms)),)))
        self.renderer = ProblemRenderer(
            type_base=policy.problems.type_base,
            schemes=tuple(schemes),
            interaction_header=self.interaction_header,
        )
        extra: list[tuple[str, str]] = [("cache-control", policy.response_headers.cache_control)]
        if policy.response_headers.nosniff:
            extra.append(("x-content-type-options", "nosniff"))
        self._defaults = tuple(extra)

    def __repr__(self) -> str:
        return f"Guard(checks={[c.name for c in self.checks]!r})"

    def close(self) -> None:
        """Stop background work (key and CRL refresh threads) and close the store's connections.
        The guard refuses nothing after this; it simply stops refreshing, so cached keys and CRLs
        age out and then fail closed."""
        if self.tokens is not None:
            close_sources(self.tokens.verifier)
        close_store = getattr(self.store, "close", None)
        if callable(close_store):
            close_store()
        for check in self.checks:
            close = getattr(check, "close", None)
            if callable(close):
                close()

    def evict_token(self, token: str) -> bool:
        """Revocation hook: forget a verified (or introspected) token so its next use is checked again."""
        if self.tokens is None:
            return False
        evicted = self.tokens.cache.evict(token)
        if self.tokens.introspection is not None:
            evicted = bool(self.tokens.introspection.evict(token)) or evicted
        return evicted

    def evict_tokens(self, predicate: Callable[[VerifiedToken], bool]) -> int:
        """Revocation hook: forget every cached token matching ``predicate`` (a ``jti``, a client...)."""
        return self.tokens.cache.evict_where(predicate) if self.tokens is not None else 0

    # -- the pipeline ----------------------------------------------------------------

    def flow(self, facts: RequestFacts) -> Flow:
        """The decision as a generator of store operations; returns the Decision."""
        started = time.perf_counter()
        iid, generated, problem = resolve_interaction_id(facts.headers, self.interaction_header)
        state = State(interaction_id=iid, interaction_id_generated=generated, interaction_problem=problem)
        denial: Denied | None = None
        reports: list[Denied] = []
        try:
            state.client_address = client_address(
                facts.peer, facts.headers.get_all("x-forwarded-for"), self.policy.trusted_proxies
            )
        except Exception:  # pragma: no cover - defensive: addresses are validated above
            log.exception("bankguard: client address resolution failed")
        for check in self.checks:
            try:
                sub = check.run(facts, state)
                if sub is not None:
                    yield from sub
            except Denied as exc:
                exc.control = check.name
                if exc.scheme is None and state.credentials is not None:
                    exc.scheme = state.credentials.scheme
                if check.mode == "report":
                    reports.append(exc)
                    continue
                denial = exc
                break
            except Exception as exc:
                kind = "store_failure" if isinstance(exc, StoreFailure) else "internal_error"
                log.exception("bankguard: check %r failed (%s)", check.name, kind)
                fault = InternalFault(f"{check.name}.{kind}")
                fault.control = check.name
                if check.mode == "report":
                    reports.append(fault)
                    continue
                denial = fault
                break
        return self._finish(facts, state, denial, reports, started)

    def _finish(
        self,
        facts: RequestFacts,
        state: State,
        denial: Denied | None,
        reports: list[Denied],
        started: float,
    ) -> Decision:
        principal = state.principal
        if state.tpp_id is not None and principal.tpp_id is None:
            # A request without a token: the principal is the TPP its certificate identifies.
            principal = Principal(tpp_id=state.tpp_id, roles=state.roles)
        context = SecurityContext(
            principal=principal,
            operation=state.operation,
            interaction_id=state.interaction_id,
            path_params=state.path_params,
            guard=self,
        )
        first = denial or (reports[0] if reports else None)
        event = AuditEvent(
            time=_now(),
            outcome="deny" if denial else ("report" if reports else "allow"),
            status=first.status if first else None,
            control=first.control if first else None,
            reason=first.reason if first else None,
            interaction_id=state.interaction_id,
            interaction_id_generated=state.interaction_id_generated,
            method=facts.method[:16],
            path=facts.path[:512],
            operation=state.operation.id if state.operation else None,
            peer=facts.peer,
            client_address=state.client_address,
            client_id=principal.client_id,
            tpp_id=principal.tpp_id or state.tpp_id,
            subject=principal.subject,
            binding=principal.binding,
            reports=tuple(f"{r.control}:{r.reason}" for r in reports),
            notes=tuple(state.notes),
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        emit(self.sink, event)
        return Decision(
            allowed=denial is None,
            context=context,
            response_headers=(
                (self.interaction_header, state.interaction_id),
                *state.response_headers,
                *self._defaults,
            ),
            event=event,
            denial=denial,
        )

    # -- drivers ---------------------------------------------------------------------

    def decide(self, facts: RequestFacts, store: SyncStore | None = None) -> Decision:
        """Run the pipeline with a sync store (WSGI, tests)."""
        target: Any = store if store is not None else self.store
        gen = self.flow(facts)
        step = _step(gen, None, None)
        while not isinstance(step, Decision):
            try:
                result = step.fn() if isinstance(step, Call) else target.execute(step)
            except Exception as exc:
                step = _step(gen, None, _failure(exc, step))
            else:
                step = _step(gen, result, None)
        return step

    async def adecide(self, facts: RequestFacts, store: AsyncStore | None = None) -> Decision:
        """Run the pipeline with an async store (ASGI)."""
        target: Any = store if store is not None else self.store
        gen = self.flow(facts)
        step = _step(gen, None, None)
        while not isinstance(step, Decision):
            try:
                if isinstance(step, Call):
                    result = await asyncio.to_thread(step.fn)
                else:
                    result = await target.aexecute(step)
            except Exception as exc:
                step = _step(gen, None, _failure(exc, step))
            else:
                step = _step(gen, result, None)
        return step

    # -- responses -------------------------------------------------------------------

    def problem(self, decision: Decision, *, head: bool = False) -> ProblemResponse:
        """The error response of a denied decision."""
        if decision.denial is None:
            raise ValueError("the decision allows the request")
        return self.renderer.render(decision.denial, decision.interaction_id, head=head)

    def late_denial(
        self, context: SecurityContext, denial: Denied, *, method: str = "", path: str = ""
    ) -> ProblemResponse:
        """Audit and render a refusal raised after the decision, inside the application
        (``require_scopes`` checked at call time, ``Security(bearer, scopes=...)``)."""
        self._late_event(context, denial, "deny", method, path)
        return self.renderer.render(denial, context.interaction_id, head=method == "HEAD")

    def late_report(self, context: SecurityContext, denial: Denied) -> None:
        """Audit a call-time refusal of a control in report mode (recorded, not enforced)."""
        self._late_event(context, denial, "report", "", "")

    def _late_event(
        self, context: SecurityContext, denial: Denied, outcome: Outcome, method: str, path: str
    ) -> None:
        principal = context.principal
        emit(
            self.sink,
            AuditEvent(
                time=_now(),
                outcome=outcome,
                status=denial.status,
                control=denial.control or "scopes",
                reason=denial.reason,
                interaction_id=context.interaction_id,
                interaction_id_generated=False,
                method=method[:16],
                path=path[:512],
                operation=context.operation.id if context.operation else None,
                peer=None,
                client_address=None,
                client_id=principal.client_id,
                tpp_id=principal.tpp_id,
                subject=principal.subject,
                binding=principal.binding,
            ),
        )

    # -- the response path (OpenAPI contract) ---------------------------------------------

    def response_plan(
        self, decision: Decision, status: int, headers: list[tuple[str, str]], *, head: bool = False
    ) -> ResponsePlan | None:
        """Whether (and how) to buffer, minimise and validate this response; None: send it as is."""
        if self.contract is None or head or not decision.allowed:
            return None
        operation = decision.context.operation
        contract = operation.contract if operation is not None else None
        if contract is None:
            return None
        mime = media_type(headers)
        if not is_json(mime):
            return None  # non-JSON bodies pass through untouched
        responses = self.policy.openapi.responses
        declared = contract.response(status, mime)
        if declared is None:
            return ResponsePlan(self, decision, None, None, status, headers, validate=True)
        if declared.schema is None:
            return None
        shape = self._shapes.get(id(declared))
        if shape is None:  # pragma: no cover - every declared response was compiled when built
            return ResponsePlan(self, decision, None, None, status, headers, validate=True)
        validate = sampled(responses.mode, responses.sample_rate)
        return ResponsePlan(self, decision, declared, shape, status, headers, validate=validate)

    def _compile_shapes(self) -> dict[int, Any]:
        """The minimisation shape of every declared response body, with one shared compiler."""
        from .openapi.minimise import ShapeCompiler, prepare

        rules = {k: frozenset(v) for k, v in self.policy.openapi.minimise.property_scopes}
        compiler = ShapeCompiler(self.contract.resolve, dialect=self.contract.dialect, scope_rules=rules)
        shapes: dict[int, Any] = {}
        for operation in self.contract.operations:
            for declared in operation.declared_responses():
                if declared.schema is not None:
                    shape = compiler.compile(declared.schema)
                    prepare(shape)  # the closed-schema fast path, compiled now rather than on first use
                    shapes[id(declared)] = shape
        for rule in sorted(compiler.unmatched_rules):
            log.warning("bankguard: openapi.minimise.property_scopes %s names no property of the spec", rule)
        return shapes

    def response_event(
        self,
        decision: Decision,
        *,
        outcome: Outcome,
        status: int,
        reason: str,
        notes: tuple[str, ...] = (),
    ) -> None:
        """Audit what the response path did to a response (minimised, replaced, reported)."""
        principal = decision.context.principal
        first = decision.event
        emit(
            self.sink,
            AuditEvent(
                time=_now(),
                outcome=outcome,
                status=status,
                control="openapi",
                reason=reason,
                interaction_id=decision.interaction_id,
                interaction_id_generated=first.interaction_id_generated,
                method=first.method,
                path=first.path,
                operation=first.operation,
                peer=first.peer,
                client_address=first.client_address,
                client_id=principal.client_id,
                tpp_id=principal.tpp_id,
                subject=principal.subject,
                binding=principal.binding,
                notes=notes,
            ),
        )

    def fault(self, reason: str, *, head: bool = False) -> ProblemResponse:
        """A fail-closed 503 for a failure outside the pipeline (e.g. in an adapter)."""
        interaction_id = self.fault_event(reason, status=503)
        return self.renderer.render(InternalFault(reason), interaction_id, head=head)

    def fault_event(self, reason: str, *, status: int, method: str = "", path: str = "") -> str:
        """Audit a refusal decided by an adapter itself; returns the interaction id used."""
        interaction_id = str(uuid.uuid4())
        emit(
            self.sink,
            AuditEvent(
                time=_now(),
                outcome="deny",
                status=status,
                control="adapter",
                reason=reason,
                interaction_id=interaction_id,
                interaction_id_generated=True,
                method=method[:16],
                path=path[:512],
                operation=None,
                peer=None,
                client_address=None,
            ),
        )
        return interaction_id

    def merge_response_headers(
        self, headers: list[tuple[str, str]], decision: Decision
    ) -> list[tuple[str, str]]:
        """The app's response headers plus bankguard's: the interaction id is set (replacing any
        the app set), defaults are added when absent, ``Client-Cert*`` fields are dropped."""
        iid = self.interaction_header
        forced = {iid}
        ours = decision.response_headers
        forced.update(name for name, _ in ours if name in RATELIMIT_HEADERS)
        ours_nonce = any(name == "dpop-nonce" for name, _ in ours)
        if ours_nonce or any(k.lower() == "dpop-nonce" for k, _ in headers):
            # A response carrying a DPoP-Nonce is not cached (RFC 9449 §8.2) and carries one only
            # (§8): bankguard's rotated nonce replaces the application's, else the first is kept.
            forced.add("cache-control")
            ours = (*((n, v) for n, v in ours if n != "cache-control"), ("cache-control", "no-store"))
            if ours_nonce:
                forced.add("dpop-nonce")
            else:
                first = next(i for i, (k, _) in enumerate(headers) if k.lower() == "dpop-nonce")
                headers = [h for i, h in enumerate(headers) if i == first or h[0].lower() != "dpop-nonce"]
        out = [
            (k, v)
            for k, v in headers
            if k.lower() not in STRIPPED_RESPONSE_HEADERS and k.lower() not in forced
        ]
        present = {k.lower() for k, _ in out}
        for name, value in ours:
            if name in forced or name not in present:
                out.append((name, value))
        return out
