"""The response path of the OpenAPI contract: minimise, then validate, one JSON response body.

Sans-IO like the decision core: an adapter asks :meth:`bankguard.Guard.response_plan` at the
start of a response whether to buffer it; with a plan it collects the body (up to the plan's
cap) and hands it to :meth:`ResponsePlan.finish`, which returns the status, headers and body
to send. Order matters (issue: data minimisation before validation): properties the schema
does not declare, and properties the caller's scopes do not cover, are removed first, card
numbers are masked, and only then is the result validated, so a handler returning extra fields
under a closed schema (``additionalProperties: false``) has them stripped, not its response
replaced. A response that still fails its schema is replaced by a 502 problem under
``openapi.responses.mode: enforce`` (and in the sampled share under ``sample``), or sent as the
application wrote it under ``report``; each case writes an audit event.

Non-JSON bodies, responses without a declared JSON schema, bodies above
``openapi.responses.max_body_bytes`` and HEAD responses pass through untouched.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .errors import ResponseInvalid

if TYPE_CHECKING:
    from .decision import Decision
    from .guard import Guard
    from .openapi.minimise import MinimiseReport

Header = tuple[str, str]


def media_type(headers: list[Header]) -> str | None:
    """The response's media type, lower case, without parameters."""
    for name, value in headers:
        if name.lower() == "content-type":
            return value.split(";", 1)[0].strip().lower()
    return None


def is_json(mime: str | None) -> bool:
    return mime is not None and (mime == "application/json" or mime.endswith("+json"))


@dataclass(slots=True)
class ResponseOutcome:
    status: int
    headers: list[Header]
    body: bytes


class ResponsePlan:
    """What to do with one buffered JSON response. Built per response, used once."""

    __slots__ = ("_decision", "_guard", "contract", "headers", "limit", "shape", "status", "validate")

    def __init__(
        self,
        guard: Guard,
        decision: Decision,
        contract: Any,
        shape: Any,
        status: int,
        headers: list[Header],
        *,
        validate: bool,
    ) -> None:
        self._guard = guard
        self._decision = decision
        self.contract = contract
        self.shape = shape
        self.status = status
        self.headers = headers
        self.validate = validate
        #: Bodies larger than this pass through untouched (see :meth:`overflow`).
        self.limit = guard.policy.openapi.responses.max_body_bytes

    def overflow(self) -> None:
        """The body outgrew the buffer: it is sent untouched; the audit trail says so."""
        self._guard.response_event(
            self._decision, outcome="report", status=self.status, reason="openapi.response_not_buffered"
        )

    def finish(self, body: bytes) -> ResponseOutcome:
        from .openapi.minimise import DocumentTooDeep, minimise_body

        guard, decision = self._guard, self._decision
        policy = guard.policy.openapi
        if self.contract is None:
            return self._invalid(body, [f"(status {self.status} not declared)"])
        principal = decision.context.principal
        reveal = not policy.minimise.mask_pan or bool(
            principal.scopes & frozenset(policy.minimise.reveal_pan_scopes)
        )
        try:
            # Parse and minimise; a body the walk would leave as it is (the common case) is
            # recognised by one closed-schema check and costs no walk.
            minimised, report = minimise_body(body, self.shape, scopes=principal.scopes, reveal_pan=reveal)
        except DocumentTooDeep:
            return self._invalid(body, ["(body nests too deeply)"])
        except (ValueError, RecursionError):
            return self._invalid(body, ["(body is not JSON)"])
        changed = report.changed
        errors = self.contract.validate(minimised) if self.validate else []
        if errors:
            return self._invalid(body, errors)
        if not changed:
            return ResponseOutcome(self.status, self.headers, body)
        # Removals and maskings both leave evidence (PCI-DSS 4.0 §3.4.1, §10.2); under report the
        # application's body goes out as it wrote it.
        report_only = policy.responses.mode == "report"
        guard.response_event(
            decision,
            outcome="report" if report_only else "allow",
            status=self.status,
            reason="openapi.response_minimised",
            notes=_notes(report),
        )
        if report_only:
            return ResponseOutcome(self.status, self.headers, body)
        new_body = _serialise(minimised)
        return ResponseOutcome(self.status, _with_length(self.headers, len(new_body)), new_body)

    def _invalid(self, body: bytes, errors: list[str]) -> ResponseOutcome:
        guard, decision = self._guard, self._decision
        notes = tuple(f"openapi.response{pointer}" for pointer in errors[:20])
        if guard.policy.openapi.responses.mode == "report":
            guard.response_event(
                decision, outcome="report", status=502, reason="openapi.response_invalid", notes=notes
            )
            return ResponseOutcome(self.status, self.headers, body)
        denial = ResponseInvalid("openapi.response_invalid")
        denial.control = "openapi"
        guard.response_event(decision, outcome="deny", status=502, reason=denial.reason, notes=notes)
        problem = guard.renderer.render(denial, decision.interaction_id)
        merged = guard.merge_response_headers(list(problem.headers), decision)
        return ResponseOutcome(problem.status, merged, problem.body)


def sampled(mode: str, rate: float) -> bool:
    """Whether this response is validated: always, except a ``rate`` share under ``sample``."""
    return mode != "sample" or random.random() < rate  # noqa: S311 - picks which responses to validate, not a secret  # nosec B311


def _notes(report: MinimiseReport) -> tuple[str, ...]:
    return (
        f"openapi.removed_undeclared:{report.removed_undeclared}",
        f"openapi.removed_unauthorised:{report.removed_unauthorised}",
        f"openapi.masked:{report.masked}",
        *(f"openapi.removed{pointer}" for pointer in report.pointers[:10]),
    )


def _serialise(document: Any) -> bytes:
    """The minimised document as compact UTF-8 JSON. ``orjson`` writes what ``json.dumps``
    (``ensure_ascii=False``, compact separators) writes, ten times faster, except that it writes
    a non-finite float (``NaN``, ``Infinity``, ``1e400`` as parsed) as ``null`` and refuses
    integers beyond 64 bits and lone surrogates. So its output is used only when it holds no
    ``null`` at all; otherwise ``json.dumps`` writes the body, exactly."""
    try:
        out = orjson.dumps(document)
    except TypeError:  # orjson.JSONEncodeError: a big integer or a lone surrogate
        pass
    else:
        if b"null" not in out:
            return out
    # ASCII with \u escapes: a lone surrogate (json.loads accepts "\ud800") has no UTF-8 form.
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def _with_length(headers: list[Header], length: int) -> list[Header]:
    out = [(k, v) for k, v in headers if k.lower() != "content-length"]
    out.append(("content-length", str(length)))
    return out
