"""Audit delivery at its edges: a sink that raises never fails the request (ARCHITECTURE
property 4), events are found by interaction id, the logging sink describes itself, and
``capture_events`` lowers a silent logger's level only while it collects."""

from __future__ import annotations

import logging

import pytest

from bankguard import EventCollector, Guard, Policy
from bankguard.audit import LoggingSink, capture_events
from bankguard.testing import make_facts

IID = "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"


def public_policy(sink: object) -> Policy:
    return Policy.from_dict(
        {
            "routes": {"operations": [{"method": "GET", "path": "/status", "public": True}]},
            "audit": {"sink": sink},
        }
    )


def test_a_failing_sink_is_logged_and_the_request_still_decided(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: object) -> None:
        raise OSError("disk full")

    guard = Guard(public_policy(broken))
    with caplog.at_level(logging.ERROR, logger="bankguard"):
        allowed = guard.decide(make_facts("GET", "/status", headers=[("x-fapi-interaction-id", IID)]))
        refused = guard.decide(make_facts("GET", "/admin", headers=[("x-fapi-interaction-id", IID)]))
    assert allowed.allowed
    assert not refused.allowed
    assert guard.problem(refused).status == 404
    lost = [r for r in caplog.records if "event for" in r.getMessage() and "lost" in r.getMessage()]
    assert len(lost) == 2
    assert all(IID in r.getMessage() for r in lost)


def test_events_are_found_by_interaction_id() -> None:
    events = EventCollector()
    guard = Guard(public_policy(events))
    other = "0b5fb7f9-9b3d-4f0c-8d6e-3c1f3a9b6a10"
    guard.decide(make_facts("GET", "/status", headers=[("x-fapi-interaction-id", IID)]))
    guard.decide(make_facts("GET", "/status", headers=[("x-fapi-interaction-id", other)]))
    guard.decide(make_facts("GET", "/missing", headers=[("x-fapi-interaction-id", IID)]))
    found = events.for_interaction(IID)
    assert [(e.outcome, e.path) for e in found] == [("allow", "/status"), ("deny", "/missing")]
    assert events.for_interaction("unknown") == []


def test_logging_sink_names_its_logger() -> None:
    assert repr(LoggingSink("bank.audit")) == "LoggingSink(logger='bank.audit')"


def test_capture_events_collects_from_a_silent_logger_and_restores_it() -> None:
    logger = logging.getLogger("bankguard.edges.audit")
    logger.setLevel(logging.ERROR)
    guard = Guard(
        Policy.from_dict(
            {
                "routes": {"operations": [{"method": "GET", "path": "/status", "public": True}]},
                "audit": {"logger": "bankguard.edges.audit"},
            }
        )
    )
    logger.info("not an event")  # records without an event are ignored
    with capture_events("bankguard.edges.audit") as captured:
        logger.warning("still not an event")
        guard.decide(make_facts("GET", "/status"))
    assert [(e["outcome"], e["path"]) for e in captured] == [("allow", "/status")]
    assert logger.level == logging.ERROR


def test_capture_events_leaves_a_verbose_logger_as_it_is() -> None:
    logger = logging.getLogger("bankguard.edges.verbose")
    logger.setLevel(logging.DEBUG)
    with capture_events("bankguard.edges.verbose") as captured:
        assert logger.level == logging.DEBUG
    assert captured == []
    assert logger.level == logging.DEBUG
