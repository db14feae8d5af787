"""The decision core: the generator driver (sync and async), fail-closed handling, report mode,
audit events, client address and the interaction id."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import uuid
from collections.abc import Generator
from typing import Any

import pytest

from bankguard import Decision, EventCollector, Guard, Policy
from bankguard.controls import State
from bankguard.errors import BadRequest, ConfigurationError, InternalFault, InvalidInteractionId
from bankguard.guard import client_address, default_checks
from bankguard.request import RequestFacts
from bankguard.stores import Incr, MemoryStore, SetIfAbsent, StoreOp
from bankguard.testing import make_facts

IID = "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
TOKEN = "eyJhbGciOiJQUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVlLTk4NzY1"


def policy(**data: Any) -> Policy:
    base: dict[str, Any] = {
        "routes": {
            "operations": [
                {"method": "GET", "path": "/accounts", "public": True},
                {"method": "POST", "path": "/payments", "public": True},
            ]
        }
    }
    return Policy.from_dict({**base, **data})


class ReplayCheck:
    """Refuses the second use of an ``x-idempotency-key`` value (a custom check with store ops).

    It counts every use (``Incr``) and claims the key (``SetIfAbsent``); a lost claim is a replay.
    """

    def __init__(self, name: str = "replay", mode: str = "enforce") -> None:
        self.name = name
        self.mode = mode

    def run(self, facts: RequestFacts, state: State) -> Generator[StoreOp, Any, None] | None:
        key = facts.headers.get("x-idempotency-key")
        if key is None:
            return None
        return self._flow(key)

    def _flow(self, key: str) -> Generator[StoreOp, Any, None]:
        uses = yield Incr(f"uses:{key}", ttl=300)
        claimed = yield SetIfAbsent(f"claim:{key}", "1", ttl=300)
        if not claimed:
            raise BadRequest("replay.reused", detail=f"Used {uses} times.")


class ExplodingCheck:
    name = "explode"

    def __init__(self, mode: str = "enforce", after_store_op: bool = False) -> None:
        self.mode = mode
        self.after_store_op = after_store_op

    def run(self, facts: RequestFacts, state: State) -> Generator[StoreOp, Any, None] | None:
        if self.after_store_op:
            return self._flow()
        raise RuntimeError("bug in a check")

    def _flow(self) -> Generator[StoreOp, Any, None]:
        yield Incr("x", ttl=1)
        raise KeyError("bug after a store op")


class AsyncMemoryStore:
    """An async-only store (like a redis.asyncio client): it has no ``execute``."""

    def __init__(self) -> None:
        self._inner = MemoryStore()
        self.ops: list[StoreOp] = []

    async def aexecute(self, op: StoreOp) -> object:
        await asyncio.sleep(0)
        self.ops.append(op)
        return self._inner.execute(op)


class RecordingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[StoreOp] = []

    def execute(self, op: StoreOp) -> object:
        self.ops.append(op)
        return super().execute(op)


class SyncOnlyStore:
    def execute(self, op: StoreOp) -> object:
        return True


class BrokenStore:
    def execute(self, op: StoreOp) -> object:
        raise ConnectionError("store unreachable")

    async def aexecute(self, op: StoreOp) -> object:
        raise ConnectionError("store unreachable")


def replay_guard(events: EventCollector, mode: str = "enforce", **policy_data: Any) -> Guard:
    p = policy(**policy_data)
    return Guard(p, checks=[*default_checks(p), ReplayCheck(mode=mode)], sink=events)


def outcome(decision: Decision) -> tuple[object, ...]:
    event = decision.event
    denial = decision.denial
    return (
        decision.allowed,
        denial.status if denial else None,
        denial.reason if denial else None,
        event.outcome,
        event.status,
        event.control,
        event.reason,
        event.reports,
    )


REPLAY_SCENARIO = [
    make_facts("POST", "/payments", headers=[("x-idempotency-key", "k1")]),
    make_facts("POST", "/payments", headers=[("x-idempotency-key", "k2")]),
    make_facts("POST", "/payments", headers=[("x-idempotency-key", "k1")]),
    make_facts("GET", "/accounts"),
    make_facts("POST", "/payments", headers=[("x-idempotency-key", "k1")]),
    make_facts("DELETE", "/payments", headers=[("x-idempotency-key", "k3")]),
    make_facts("POST", "/payments", headers=[("x-idempotency-key", "k3")]),
]


# -- the generator driver --------------------------------------------------------------------


def test_custom_check_with_store_ops_denies_a_replay():
    events = EventCollector()
    g = replay_guard(events)
    first = g.decide(REPLAY_SCENARIO[0])
    second = g.decide(REPLAY_SCENARIO[2])
    assert first.allowed
    assert not second.allowed
    assert isinstance(second.denial, BadRequest)
    assert (second.denial.control, second.denial.reason) == ("replay", "replay.reused")
    assert second.denial.detail == "Used 2 times."
    assert [e.outcome for e in events.events] == ["allow", "deny"]


def test_sync_and_async_drivers_give_identical_decisions():
    sync_store, async_store = RecordingStore(), AsyncMemoryStore()
    sync_guard = replay_guard(EventCollector())
    async_guard = replay_guard(EventCollector())
    sync = [outcome(sync_guard.decide(f, store=sync_store)) for f in REPLAY_SCENARIO]

    async def run_all() -> list[tuple[object, ...]]:
        return [outcome(await async_guard.adecide(f, store=async_store)) for f in REPLAY_SCENARIO]

    assert asyncio.run(run_all()) == sync
    assert sync_store.ops == async_store.ops
    assert [allowed for allowed, *_ in sync] == [True, True, False, True, False, False, True]
    assert sync[5][1] == 405  # routes denies before the replay check consumes the key


def test_adecide_drives_the_default_memory_store():
    g = replay_guard(EventCollector())

    async def twice() -> list[bool]:
        return [(await g.adecide(REPLAY_SCENARIO[0])).allowed for _ in range(2)]

    assert asyncio.run(twice()) == [True, False]
    assert g.decide(REPLAY_SCENARIO[0]).allowed is False  # decide() shares the guard's store


def drive(g: Guard, facts: RequestFacts, store: Any, driver: str) -> Decision:
    if driver == "sync":
        return g.decide(facts, store=store)
    return asyncio.run(g.adecide(facts, store=store))


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_store_failure_fails_closed_with_503(driver, caplog):
    events = EventCollector()
    g = replay_guard(events)
    with caplog.at_level(logging.ERROR, logger="bankguard"):
        decision = drive(g, REPLAY_SCENARIO[0], BrokenStore(), driver)
    assert not decision.allowed
    assert isinstance(decision.denial, InternalFault)
    assert decision.denial.reason == "replay.store_failure"
    (event,) = events.events
    assert (event.outcome, event.status, event.control, event.reason) == (
        "deny",
        503,
        "replay",
        "replay.store_failure",
    )
    response = g.problem(decision)
    assert response.status == 503
    assert ("retry-after", "1") in response.headers
    assert "store_failure" in caplog.text


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_store_without_the_needed_face_fails_closed(driver):
    # A sync-only store under adecide (or the reverse) is a store failure, never an allow.
    store: Any = AsyncMemoryStore() if driver == "sync" else SyncOnlyStore()
    decision = drive(replay_guard(EventCollector()), REPLAY_SCENARIO[0], store, driver)
    assert not decision.allowed
    assert decision.denial is not None
    assert decision.denial.reason == "replay.store_failure"


@pytest.mark.parametrize("after_store_op", [False, True], ids=["in-run", "in-generator"])
@pytest.mark.parametrize("driver", ["sync", "async"])
def test_check_that_raises_fails_closed_with_503(driver, after_store_op, caplog):
    events = EventCollector()
    g = Guard(policy(), checks=[ExplodingCheck(after_store_op=after_store_op)], sink=events)
    with caplog.at_level(logging.ERROR, logger="bankguard"):
        decision = drive(g, make_facts("GET", "/accounts"), MemoryStore(), driver)
    assert not decision.allowed
    assert isinstance(decision.denial, InternalFault)
    assert decision.denial.status == 503
    assert decision.denial.reason == "explode.internal_error"
    (event,) = events.events
    assert (event.outcome, event.control, event.reason) == ("deny", "explode", "explode.internal_error")
    assert any(r.exc_info for r in caplog.records)  # the traceback is logged, not sent


def test_checks_after_a_denial_do_not_run():
    events = EventCollector()
    store = RecordingStore()
    g = replay_guard(events)
    decision = g.decide(make_facts("POST", "/nowhere", headers=[("x-idempotency-key", "k")]), store=store)
    assert decision.denial is not None
    assert decision.denial.status == 404
    assert store.ops == []


# -- report mode -------------------------------------------------------------------------------


def test_report_mode_check_denial_lets_the_request_through():
    events = EventCollector()
    g = replay_guard(events, mode="report")
    g.decide(REPLAY_SCENARIO[0])
    decision = g.decide(REPLAY_SCENARIO[0])
    assert decision.allowed
    assert decision.denial is None
    event = events.events[-1]
    assert event is decision.event
    assert (event.outcome, event.status, event.control, event.reason) == (
        "report",
        400,
        "replay",
        "replay.reused",
    )
    assert event.to_dict()["reports"] == ["replay:replay.reused"]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_report_mode_store_failure_is_reported_not_enforced(driver):
    events = EventCollector()
    decision = drive(replay_guard(events, mode="report"), REPLAY_SCENARIO[0], BrokenStore(), driver)
    assert decision.allowed
    assert events.events[0].outcome == "report"
    assert events.events[0].reports == ("replay:replay.store_failure",)


def test_report_mode_builtin_control_and_later_enforced_denial():
    events = EventCollector()
    p = policy(routes={"mode": "report"})
    g = Guard(p, sink=events)
    reported = g.decide(make_facts("GET", "/undeclared"))
    assert reported.allowed
    assert (reported.event.outcome, reported.event.status) == ("report", 404)
    assert reported.event.reports == ("routes:routes.undeclared_operation",)
    denied = g.decide(make_facts("GET", "/undeclared", headers=[("authorization", "Bearer a b")]))
    assert not denied.allowed
    assert (denied.event.outcome, denied.event.status, denied.event.reason) == (
        "deny",
        400,
        "authorization.malformed",
    )
    assert denied.event.reports == ("routes:routes.undeclared_operation",)


# -- audit events ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "outcome_", "status"),
    [
        pytest.param(make_facts("GET", "/accounts"), "allow", None, id="allow"),
        pytest.param(make_facts("GET", "/nowhere"), "deny", 404, id="deny-404"),
        pytest.param(make_facts("GET", "/accounts?access_token=x"), "deny", 401, id="deny-401"),
        pytest.param(
            make_facts("GET", "/accounts", headers=[("x-http-method", "PUT")]), "deny", 400, id="400"
        ),
    ],
)
def test_one_audit_event_per_decision(facts, outcome_, status):
    events = EventCollector()
    decision = Guard(policy(), sink=events).decide(facts)
    assert events.events == [decision.event]
    event = decision.event
    assert (event.outcome, event.status) == (outcome_, status)
    assert event.interaction_id == decision.interaction_id
    assert (event.method, event.path, event.peer) == (facts.method, facts.path, "127.0.0.1")
    assert event.to_dict()["event"] == "bankguard.decision"


def test_allowed_event_names_the_operation():
    decision = Guard(policy(), sink=EventCollector()).decide(make_facts("HEAD", "/accounts"))
    assert decision.allowed
    assert decision.event.operation == "GET /accounts"
    assert (decision.event.control, decision.event.reason) == (None, None)


@pytest.mark.parametrize(
    "facts",
    [
        pytest.param(
            make_facts("GET", "/accounts", headers=[("authorization", f"Bearer {TOKEN}")]), id="allow"
        ),
        pytest.param(
            make_facts(
                "GET", f"/accounts?access_token={TOKEN}", headers=[("authorization", f"Bearer {TOKEN}")]
            ),
            id="two-methods",
        ),
        pytest.param(make_facts("GET", f"/accounts?access_token={TOKEN}&debug=1"), id="query-only"),
        pytest.param(
            make_facts(
                "GET", "/accounts", headers=[("authorization", f"Bearer {TOKEN}"), ("authorization", "x")]
            ),
            id="duplicate",
        ),
        pytest.param(
            make_facts("GET", "/accounts", headers=[("authorization", f"DPoP {TOKEN} x")]), id="malformed"
        ),
        pytest.param(
            make_facts(
                "POST",
                "/payments",
                headers=[("content-type", "application/x-www-form-urlencoded")],
                body=f"access_token={TOKEN}".encode(),
            ),
            id="form-body",
        ),
    ],
)
def test_AUTH_09_events_never_contain_the_token_or_query(facts, caplog):
    events = EventCollector()
    with caplog.at_level(logging.DEBUG):
        Guard(policy(), sink=events).decide(facts)  # collector sink
        Guard(policy()).decide(facts)  # default logging sink
    (event,) = events.events
    text = event.to_json()
    assert TOKEN not in text
    assert "access_token" not in text
    assert "debug=1" not in text
    assert TOKEN not in caplog.text
    assert "access_token" not in caplog.text
    assert TOKEN not in repr(facts)
    assert any(r.name == "bankguard.audit" for r in caplog.records)


# -- client address ------------------------------------------------------------------------------

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        pytest.param("203.0.113.9", ["198.51.100.1"], "203.0.113.9", id="untrusted-peer-ignores-xff"),
        pytest.param("10.0.0.5", [], "10.0.0.5", id="trusted-peer-no-xff"),
        pytest.param("10.0.0.5", ["198.51.100.1"], "198.51.100.1", id="one-hop"),
        pytest.param("10.0.0.5", ["198.51.100.1, 10.0.0.7"], "198.51.100.1", id="two-proxies"),
        pytest.param("10.0.0.5", ["6.6.6.6, 198.51.100.1"], "198.51.100.1", id="spoofed-left-entry"),
        pytest.param("10.0.0.5", ["6.6.6.6", "198.51.100.1, 10.1.1.1"], "198.51.100.1", id="several-lines"),
        pytest.param("10.0.0.5", ["10.9.9.9, 198.51.100.1"], "198.51.100.1", id="trusted-left-of-client"),
        pytest.param("10.0.0.5", ["198.51.100.1, garbage"], "10.0.0.5", id="unparseable-stops"),
        pytest.param("10.0.0.5", ["198.51.100.1, "], "10.0.0.5", id="empty-entry-stops"),
        pytest.param("10.0.0.5", ["10.0.0.9"], "10.0.0.9", id="all-trusted"),
        pytest.param("2001:db8::1", ["2001:db8::2, 2001:db9::7"], "2001:db9::7", id="ipv6"),
        pytest.param("::ffff:10.0.0.5", ["198.51.100.1"], "198.51.100.1", id="ipv4-mapped-peer"),
        pytest.param(None, ["198.51.100.1"], None, id="no-peer"),
        pytest.param("unix-socket", ["198.51.100.1"], "unix-socket", id="non-ip-peer"),
    ],
)
def test_client_address_rightmost_untrusted(peer, forwarded, expected):
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_client_address_without_trusted_proxies_is_the_peer():
    assert client_address("10.0.0.5", ["198.51.100.1"], ()) == "10.0.0.5"


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        pytest.param(["10.0.0.0/8"], "198.51.100.1", id="trusted"),
        pytest.param([], "10.0.0.5", id="untrusted"),
    ],
)
def test_guard_records_the_client_address(trusted, expected):
    events = EventCollector()
    g = Guard(policy(trusted_proxies=trusted), sink=events)
    facts = make_facts(
        "GET", "/accounts", peer="10.0.0.5", headers=[("x-forwarded-for", "6.6.6.6, 198.51.100.1")]
    )
    decision = g.decide(facts)
    assert decision.event.client_address == expected
    assert decision.event.peer == "10.0.0.5"


# -- interaction id --------------------------------------------------------------------------------


def response_iid(g: Guard, decision: Decision) -> str:
    headers = dict(decision.response_headers)
    if not decision.allowed:
        problem = dict(g.problem(decision).headers)
        assert problem["x-fapi-interaction-id"] == headers["x-fapi-interaction-id"]
    return headers["x-fapi-interaction-id"]


@pytest.mark.parametrize(
    ("target", "allowed"),
    [pytest.param("/accounts", True, id="2xx"), pytest.param("/accounts?access_token=x", False, id="401")],
)
@pytest.mark.parametrize(
    "value", [IID, IID.upper(), "0f0a2a43-49c3-1c53-8b6c-1c1f14a0e5d9"], ids=["lower", "upper", "v1"]
)
def test_FAPI_08_valid_interaction_id_is_echoed_verbatim(value, target, allowed):
    events = EventCollector()
    g = Guard(policy(), sink=events)
    decision = g.decide(make_facts("GET", target, headers=[("x-fapi-interaction-id", value)]))
    assert decision.allowed is allowed
    assert response_iid(g, decision) == value
    assert decision.interaction_id == value
    assert events.events[0].interaction_id == value
    assert events.events[0].interaction_id_generated is False


@pytest.mark.parametrize("target", ["/accounts", "/nowhere"])
def test_FAPI_08_missing_interaction_id_gets_a_uuid4(target):
    events = EventCollector()
    g = Guard(policy(), sink=events)
    first = g.decide(make_facts("GET", target))
    second = g.decide(make_facts("GET", target))
    iid = response_iid(g, first)
    assert uuid.UUID(iid).version == 4
    assert str(uuid.UUID(iid)) == iid
    assert iid != response_iid(g, second)
    assert events.events[0].interaction_id == iid
    assert events.events[0].interaction_id_generated is True


BAD_IDS = [
    pytest.param([f"{IID}\r\nSet-Cookie: a=b"], id="crlf"),
    pytest.param(["abc\r\nSet-Cookie:x"], id="crlf-short"),
    pytest.param(["not-a-uuid"], id="text"),
    pytest.param([f" {IID}"], id="leading-space"),
    pytest.param([IID + "0"], id="too-long"),
    pytest.param([IID.replace("-", "")], id="no-dashes"),
    pytest.param(["c770aef3-6784-41f7-8e0e-ff5f97bddb3\u0430"], id="homoglyph"),
    pytest.param(["00000000-0000-0000-0000-000000000000"], id="nil"),
    pytest.param(["c770aef3-6784-41f7-0e0e-ff5f97bddb3a"], id="ncs-variant"),
    pytest.param([IID, "0f0a2a43-49c3-4c53-8b6c-1c1f14a0e5d9"], id="duplicate"),
]


@pytest.mark.parametrize("values", BAD_IDS)
def test_FAPI_10_crlf_never_reflected(values):
    events = EventCollector()
    g = Guard(policy(), sink=events)
    decision = g.decide(
        make_facts("GET", "/accounts", headers=[("x-fapi-interaction-id", v) for v in values])
    )
    assert decision.allowed  # generic profile: replace
    iid = response_iid(g, decision)
    assert iid not in values
    assert uuid.UUID(iid).version == 4
    assert all("\r" not in v and "\n" not in v for _, v in decision.response_headers)
    assert events.events[0].interaction_id == iid
    assert events.events[0].interaction_id_generated is True


@pytest.mark.parametrize("values", BAD_IDS)
@pytest.mark.parametrize(
    "profile_data", [{"profile": "obie"}, {"interaction_id": {"invalid": "reject"}}], ids=["obie", "explicit"]
)
def test_FAPI_10_reject_mode_answers_400(values, profile_data):
    events = EventCollector()
    g = Guard(policy(**profile_data), sink=events)
    decision = g.decide(
        make_facts("GET", "/accounts", headers=[("x-fapi-interaction-id", v) for v in values])
    )
    assert not decision.allowed
    assert isinstance(decision.denial, InvalidInteractionId)
    expected_reason = "interaction_id.duplicate" if len(values) > 1 else "interaction_id.invalid"
    assert decision.denial.reason == expected_reason
    response = g.problem(decision)
    assert response.status == 400
    iid = response_iid(g, decision)
    assert iid not in values
    assert uuid.UUID(iid).version == 4
    assert json.loads(response.body)["interaction_id"] == iid
    assert all("\r" not in v and "\n" not in v for _, v in response.headers)
    assert events.events[0].reason == expected_reason


def test_FAPI_08_size_limit_denial_still_echoes_the_id():
    # The id is resolved before the first check, so even a 431 carries the client's id.
    g = Guard(
        policy(request={"max_header_bytes": 1024, "max_header_field_bytes": 1024}), sink=EventCollector()
    )
    facts = make_facts("GET", "/accounts", headers=[("x-fapi-interaction-id", IID), ("x-big", "a" * 2000)])
    decision = g.decide(facts)
    assert decision.denial is not None
    assert decision.denial.status == 431
    assert response_iid(g, decision) == IID


def test_size_limits_are_checked_before_the_interaction_id():
    g = Guard(policy(profile="obie", request={"max_header_field_bytes": 1024}), sink=EventCollector())
    facts = make_facts("GET", "/accounts", headers=[("x-fapi-interaction-id", "bad"), ("x-big", "a" * 2000)])
    decision = g.decide(facts)
    assert decision.denial is not None
    assert (decision.denial.status, decision.event.control) == (431, "request")
    assert response_iid(g, decision) != "bad"


def test_FAPI_10_custom_header_name():
    g = Guard(policy(interaction_id={"header": "X-Request-ID"}), sink=EventCollector())
    decision = g.decide(make_facts("GET", "/accounts", headers=[("x-request-id", IID)]))
    assert dict(decision.response_headers)["x-request-id"] == IID


# -- response headers ---------------------------------------------------------------------------


def test_merge_response_headers_sets_the_interaction_id_and_strips_client_cert():
    g = Guard(policy(), sink=EventCollector())
    decision = g.decide(make_facts("GET", "/accounts", headers=[("x-fapi-interaction-id", IID)]))
    merged = g.merge_response_headers(
        [
            ("Content-Type", "application/json"),
            ("X-FAPI-Interaction-ID", "forged"),
            ("Client-Cert", ":abc:"),
            ("Cache-Control", "max-age=60"),
        ],
        decision,
    )
    assert merged == [
        ("Content-Type", "application/json"),
        ("Cache-Control", "max-age=60"),
        ("x-fapi-interaction-id", IID),
        ("x-content-type-options", "nosniff"),
    ]


def test_guard_with_unresolvable_sink_is_a_configuration_error():
    p = Policy.from_dict({"audit": {"sink": "no_such_module_for_bankguard:sink"}})
    with pytest.raises(ConfigurationError) as info:
        Guard(p)
    assert info.value.path == "audit.sink"
