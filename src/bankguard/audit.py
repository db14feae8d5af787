"""Structured security events: one per decision, allow and deny alike.

An :class:`AuditEvent` says when, which interaction, who (as far as verified), which
operation, which control decided, the outcome and a stable reason code. It never
holds tokens, keys, DPoP proofs, full certificates, request bodies or query strings:
the fields are a closed set and each is filled by bankguard from verified or
harmless data (FAPI 1.0 Baseline §6.2.1 item 12; RFC 6750 §5.3).

Events go to a *sink*, any callable taking an event. The default sink writes one
JSON object per event through :mod:`logging` (logger ``bankguard.audit``: INFO for
allow, WARNING for deny and report). A failing sink never fails the request; the
failure is logged on the ``bankguard`` logger.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .policy import AuditPolicy

log = logging.getLogger("bankguard")

Outcome = Literal["allow", "deny", "report"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One decision. Serialise with :meth:`to_dict` / :meth:`to_json`."""

    #: ISO 8601 UTC timestamp with milliseconds.
    time: str
    #: ``allow``; ``deny``; or ``report`` (allowed, but a report-mode control would deny).
    outcome: Outcome
    #: Status bankguard answered with (deny), or would have (report); None when allowed.
    status: int | None
    #: Control that denied (or reported), e.g. ``request``, ``routes``, ``auth``.
    control: str | None
    #: Stable reason code, e.g. ``request.body_too_large``. See docs/errors.md.
    reason: str | None
    interaction_id: str
    #: True when bankguard generated the interaction id (none or an invalid one was sent).
    interaction_id_generated: bool
    method: str
    #: Request path (decoded, truncated to 512 characters); never the query string.
    path: str
    operation: str | None
    #: Direct peer address.
    peer: str | None
    #: Client address: the peer, or the address a trusted proxy forwarded.
    client_address: str | None
    client_id: str | None = None
    tpp_id: str | None = None
    subject: str | None = None
    #: How the accepted token was sender-constrained: ``mtls``, ``dpop``, or None.
    binding: str | None = None
    #: Report-mode verdicts that did not block: ``control:reason`` each.
    reports: tuple[str, ...] = ()
    #: Observations that did not block, e.g. ``client_cert.untrusted_header_ignored``.
    notes: tuple[str, ...] = ()
    #: Time the decision took, in milliseconds.
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["event"] = "bankguard.decision"
        data["reports"] = list(self.reports)
        data["notes"] = list(self.notes)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=True)


Sink = Callable[[AuditEvent], None]


class LoggingSink:
    """Write each event as one JSON line through :mod:`logging`."""

    def __init__(self, logger: str = "bankguard.audit") -> None:
        self.logger = logging.getLogger(logger)

    def __call__(self, event: AuditEvent) -> None:
        level = logging.INFO if event.outcome == "allow" else logging.WARNING
        if self.logger.isEnabledFor(level):
            self.logger.log(level, event.to_json(), extra={"bankguard_event": event})

    def __repr__(self) -> str:
        return f"LoggingSink(logger={self.logger.name!r})"


def resolve_sink(policy: AuditPolicy) -> Sink:
    """Turn ``audit.sink`` into a callable; import errors are configuration errors."""
    spec = policy.sink
    if callable(spec):
        return spec
    if spec == "logging":
        return LoggingSink(policy.logger)
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot import {spec!r}: {exc}", path="audit.sink") from None
    if not callable(target):
        raise ConfigurationError(f"{spec!r} is not callable", path="audit.sink")
    sink: Sink = target
    return sink


def emit(sink: Sink, event: AuditEvent) -> None:
    """Deliver an event; a broken sink is logged and never fails the request."""
    try:
        sink(event)
    except Exception:
        log.exception("audit sink %r failed; event for %s lost", sink, event.interaction_id)


class EventCollector:
    """A sink that keeps events in memory (tests, demos)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def __call__(self, event: AuditEvent) -> None:
        self.events.append(event)

    def for_interaction(self, interaction_id: str) -> list[AuditEvent]:
        return [e for e in self.events if e.interaction_id == interaction_id]


@contextmanager
def capture_events(logger: str = "bankguard.audit") -> Iterator[list[dict[str, Any]]]:
    """Collect the events the ``logging`` sink writes, as dictionaries, while inside the block."""
    captured: list[dict[str, Any]] = []

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            event = getattr(record, "bankguard_event", None)
            if isinstance(event, AuditEvent):
                captured.append(event.to_dict())

    handler = _Handler(level=logging.DEBUG)
    target = logging.getLogger(logger)
    old_level = target.level
    target.addHandler(handler)
    if target.getEffectiveLevel() > logging.INFO:
        target.setLevel(logging.INFO)
    try:
        yield captured
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)
