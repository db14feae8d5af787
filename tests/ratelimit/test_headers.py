"""Rate-limit response headers and 429 responses through real adapters.

``RateLimit-Policy`` and ``RateLimit`` follow draft-ietf-httpapi-ratelimit-headers-10: structured
field lists (RFC 8941) of ``"name";q=<int>;w=<int>`` and ``"name";r=<int>;t=<int>``. They are
parsed here with a strict parser, so a stray space, a missing parameter or a non-integer fails.
A refusal is a 429 ``application/problem+json`` with ``Retry-After`` and the interaction id
(STANDARDS OB-21, E8, FAPI-08), through :class:`~bankguard.BankGuardMiddleware` under
Starlette's ``TestClient`` and :class:`~bankguard.BankGuardWSGI` under Flask's test client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, jsonify
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bankguard import BankGuardMiddleware, BankGuardWSGI, Guard, Policy
from bankguard.decision import Decision
from bankguard.policy_ratelimit import MAX_WINDOW_SECONDS
from bankguard.testing import EventCollector, TestIssuer, make_facts

ISSUER = TestIssuer("https://as.bank.example", alg="ES256")
CLIENT = "tpp-client-1"
PEER = "198.51.100.7"
FIXED_IID = "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
PROBLEM = "application/problem+json"
#: What an application might send itself; bankguard's fields replace it.
APP_RATELIMIT = [("RateLimit-Policy", '"app";q=9999;w=1'), ("RateLimit", '"app";r=9998;t=1')]

OPERATIONS: list[dict[str, Any]] = [
    {"method": "GET", "path": "/accounts", "id": "GetAccounts", "scopes": ["accounts"]},
    {"method": "GET", "path": "/accounts/{AccountId}/balances", "id": "GetBalances", "scopes": ["accounts"]},
    {"method": "GET", "path": "/status", "id": "Status", "public": True},
]


def make_policy(ratelimit: dict[str, Any], **top: Any) -> Policy:
    return Policy.from_dict(
        {
            "tokens": {
                "issuers": [
                    {
                        "issuer": ISSUER.issuer,
                        "audiences": ["https://api.bank.example"],
                        "algorithms": ["ES256"],
                        "jwks": ISSUER.jwks(),
                    }
                ]
            },
            "routes": {"operations": OPERATIONS},
            "ratelimit": {"enabled": True, **ratelimit},
            **top,
        }
    )


def make_guard(ratelimit: dict[str, Any], **top: Any) -> tuple[Guard, EventCollector]:
    events = EventCollector()
    return Guard(make_policy(ratelimit, **top), sink=events), events


def token(client: str = CLIENT) -> str:
    return ISSUER.mint(claims={"client_id": client})


def decide(
    guard: Guard, target: str = "/accounts", *, bearer: str | None = None, peer: str = PEER
) -> Decision:
    headers = [("authorization", f"Bearer {bearer}")] if bearer is not None else []
    return guard.decide(make_facts("GET", target, headers=headers, peer=peer))


def values(headers: Any, name: str) -> list[str]:
    """Every value of ``name`` in a list of pairs (any case)."""
    return [v for k, v in headers if k.lower() == name]


def only(headers: Any, name: str) -> str:
    found = values(headers, name)
    assert len(found) == 1, (name, found)
    return found[0]


# -- a strict structured-field parser for the two fields ------------------------------------------

_STRING = r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"'
_PARAMS = r"((?:;[a-z*][a-z0-9_.*-]*=-?[0-9]{1,15})*)"
_MEMBER = re.compile(_STRING + _PARAMS)
_SEPARATOR = re.compile(r"[ \t]*,[ \t]*")


def parse_list(value: str) -> list[tuple[str, dict[str, int]]]:
    """An RFC 8941 list whose members are strings with integer parameters (nothing else)."""
    if not value or value != value.strip(" "):
        raise ValueError(f"not a structured-field list: {value!r}")
    members: list[tuple[str, dict[str, int]]] = []
    pos = 0
    while True:
        match = _MEMBER.match(value, pos)
        if match is None:
            raise ValueError(f"bad member at {pos} in {value!r}")
        params: dict[str, int] = {}
        for part in match.group(2).split(";")[1:]:
            key, _, number = part.partition("=")
            if key in params:
                raise ValueError(f"parameter {key} twice in {value!r}")
            params[key] = int(number)
        members.append((re.sub(r"\\(.)", r"\1", match.group(1)), params))
        pos = match.end()
        if pos == len(value):
            return members
        separator = _SEPARATOR.match(value, pos)
        if separator is None or separator.end() == len(value):
            raise ValueError(f"bad separator at {pos} in {value!r}")
        pos = separator.end()


def parse_policy(value: str) -> list[tuple[str, int, int]]:
    """``RateLimit-Policy``: ``(name, q, w)`` of every policy item."""
    out = []
    for name, params in parse_list(value):
        assert set(params) == {"q", "w"}, params
        assert params["q"] >= 1
        assert params["w"] >= 1
        out.append((name, params["q"], params["w"]))
    assert len({name for name, _, _ in out}) == len(out), "policy names are unique"
    return out


def parse_current(value: str) -> list[tuple[str, int, int]]:
    """``RateLimit``: ``(name, r, t)`` of every item."""
    out = []
    for name, params in parse_list(value):
        assert set(params) == {"r", "t"}, params
        assert params["r"] >= 0
        assert params["t"] >= 0
        out.append((name, params["r"], params["t"]))
    return out


def rate_limit_fields(headers: Any) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """Both fields, checked against each other: the same names, in order; t within w; r ≤ q."""
    policy = parse_policy(only(headers, "ratelimit-policy"))
    current = parse_current(only(headers, "ratelimit"))
    assert [name for name, _, _ in current] == [name for name, _, _ in policy]
    for (_, q, w), (_, r, t) in zip(policy, current, strict=True):
        assert 0 <= t <= w
        assert 0 <= r < q
    return policy, current


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ' "a";r=1;t=2',
        '"a";r=1;t=2,',
        '"a";r=1;t=2 "b";r=1;t=2',
        '"a";r=1.5;t=2',
        "a;r=1;t=2",
        '"a";r=1;r=2',
        '"a";R=1',
        '"a"; r=1',
        '"a";r="1"',
        '"a";r',
    ],
)
def test_the_parser_is_strict(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the parser raises nothing more specific
        parse_list(bad)


def test_the_parser_reads_lists() -> None:
    assert parse_list('"tpp-60s";q=10;w=60, "tpp-3600s";q=100;w=3600') == [
        ("tpp-60s", {"q": 10, "w": 60}),
        ("tpp-3600s", {"q": 100, "w": 3600}),
    ]
    assert parse_list('"a\\"b";r=0;t=0,"c";r=1;t=1') == [('a"b', {"r": 0, "t": 0}), ("c", {"r": 1, "t": 1})]


# -- the fields on successful responses --------------------------------------------------------------


def test_fields_name_every_configured_window() -> None:
    guard, _ = make_guard({"strategy": "fixed-window", "tiers": {"default": "3/minute; 5/hour; 100/day"}})
    decision = decide(guard, bearer=token())
    assert decision.allowed
    policy, current = rate_limit_fields(decision.response_headers)
    assert policy == [("tpp-60s", 3, 60), ("tpp-3600s", 5, 3600), ("tpp-86400s", 100, 86400)]
    assert [(name, r) for name, r, _ in current] == [("tpp-60s", 2), ("tpp-3600s", 4), ("tpp-86400s", 99)]


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
def test_r_decreases_by_one_per_request_and_t_stays_within_the_window(strategy: str) -> None:
    guard, _ = make_guard({"strategy": strategy, "tiers": {"default": "4/month; 6/year"}})
    bearer = token()
    seen = []
    for _ in range(4):
        decision = decide(guard, bearer=bearer)
        assert decision.allowed
        policy, current = rate_limit_fields(decision.response_headers)
        assert policy == [("tpp-2592000s", 4, 2592000), ("tpp-31104000s", 6, 31104000)]
        seen.append([r for _, r, _ in current])
    assert seen == [[3, 5], [2, 4], [1, 3], [0, 2]]


def test_operation_preauth_and_unattended_windows_are_listed_in_the_order_counted() -> None:
    guard, _ = make_guard(
        {
            "strategy": "fixed-window",
            "tiers": {"default": "100/hour"},
            "operations": {"GetBalances": "20/minute"},
            "preauth": {"limits": "50/second"},
            "unattended": {"enabled": True, "operations": ["GetBalances"], "limit": 4},
        }
    )
    decision = decide(guard, "/accounts/acc-1/balances", bearer=token())
    assert decision.allowed
    policy, current = rate_limit_fields(decision.response_headers)
    assert policy == [("preauth-1s", 50, 1), ("op-60s", 20, 60), ("unattended", 4, 86400)]
    assert [(name, r) for name, r, _ in current] == [("preauth-1s", 49), ("op-60s", 19), ("unattended", 3)]


def test_nothing_counted_means_no_fields() -> None:
    guard, _ = make_guard({"tiers": {"default": "100/hour"}})
    decision = decide(guard, "/status", bearer=token())  # public: no verified identity
    assert decision.allowed
    assert values(decision.response_headers, "ratelimit") == []
    assert values(decision.response_headers, "ratelimit-policy") == []


def test_headers_false_sends_no_fields() -> None:
    guard, _ = make_guard(
        {"headers": False, "tiers": {"default": "2/hour"}, "preauth": {"limits": "10/hour"}}
    )
    bearer = token()
    for _ in range(2):
        decision = decide(guard, bearer=bearer)
        assert decision.allowed
        assert values(decision.response_headers, "ratelimit") == []
        assert values(decision.response_headers, "ratelimit-policy") == []
    refused = decide(guard, bearer=bearer)
    assert not refused.allowed, "the limit is still enforced without the fields"
    assert refused.event.reason == "ratelimit.exceeded"


def test_merge_response_headers_replaces_the_applications_fields() -> None:
    guard, _ = make_guard({"strategy": "fixed-window", "tiers": {"default": "10/hour"}})
    decision = decide(guard, bearer=token())
    app_headers = [("Content-Type", "application/json"), *APP_RATELIMIT, ("ratelimit", '"x";r=1;t=1')]
    merged = guard.merge_response_headers(app_headers, decision)
    policy, current = rate_limit_fields(merged)
    assert policy == [("tpp-3600s", 10, 3600)]
    assert [(name, r) for name, r, _ in current] == [("tpp-3600s", 9)]
    assert only(merged, "content-type") == "application/json"
    assert only(merged, "x-fapi-interaction-id") == decision.interaction_id


# -- through the adapters ------------------------------------------------------------------------------


def starlette_app(calls: list[str], extra: list[tuple[str, str]]) -> Starlette:
    async def accounts(request: Request) -> JSONResponse:
        calls.append(request.url.path)
        response = JSONResponse({"Data": {"Account": []}})
        for name, value in extra:
            response.headers.append(name, value)
        return response

    return Starlette(routes=[Route("/accounts", accounts), Route("/accounts/{AccountId}/balances", accounts)])


def flask_app(calls: list[str], extra: list[tuple[str, str]]) -> Flask:
    app = Flask("ratelimit-bank")

    @app.get("/accounts")
    def accounts() -> Any:
        calls.append("/accounts")
        return jsonify({"Data": {"Account": []}}), 200, extra

    @app.get("/accounts/<account_id>/balances")
    def balances(account_id: str) -> Any:
        calls.append(f"/accounts/{account_id}/balances")
        return jsonify({"Data": {"Balance": []}}), 200, extra

    return app


class Served:
    """One protected application and a uniform way to call it."""

    def __init__(self, kind: str, guard: Guard, extra: list[tuple[str, str]]) -> None:
        self.kind = kind
        self.calls: list[str] = []
        if kind == "asgi":
            self._asgi = TestClient(
                BankGuardMiddleware(starlette_app(self.calls, extra), guard=guard),
                base_url="https://api.bank.example",
                client=(PEER, 50000),
            )
        else:
            app = flask_app(self.calls, extra)
            app.wsgi_app = BankGuardWSGI(app.wsgi_app, guard=guard)  # type: ignore[method-assign]
            self._wsgi = app.test_client()

    def get(self, target: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        if self.kind == "asgi":
            r = self._asgi.get(target, headers=headers)
            return r.status_code, list(r.headers.multi_items()), r.content
        w = self._wsgi.get(target, headers=headers, environ_base={"REMOTE_ADDR": PEER})
        return w.status_code, list(w.headers.items()), w.data

    def close(self) -> None:
        if self.kind == "asgi":
            self._asgi.close()


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(kind: str) -> Iterator[Any]:
    served: list[Served] = []

    def build(guard: Guard, extra: list[tuple[str, str]] | None = None) -> Served:
        app = Served(kind, guard, list(extra or []))
        served.append(app)
        return app

    yield build
    for app in served:
        app.close()


def test_OB_21_429_has_retry_after_and_interaction_id(serve: Any) -> None:
    guard, events = make_guard({"strategy": "fixed-window", "tiers": {"default": "2/minute"}})
    app = serve(guard)
    headers = {"Authorization": f"Bearer {token()}", "x-fapi-interaction-id": FIXED_IID}
    for _ in range(2):
        status, response_headers, _ = app.get("/accounts", headers)
        assert status == 200
        assert only(response_headers, "x-fapi-interaction-id") == FIXED_IID
    status, response_headers, body = app.get("/accounts", headers)
    assert status == 429
    assert only(response_headers, "content-type") == PROBLEM
    retry = only(response_headers, "retry-after")
    assert retry.isdigit()
    assert 1 <= int(retry) <= 60
    assert only(response_headers, "x-fapi-interaction-id") == FIXED_IID
    assert only(response_headers, "cache-control") == "no-store"
    assert values(response_headers, "www-authenticate") == []
    # The 429 says which window refused and how the others stand.
    policy_field, current = rate_limit_fields(response_headers)
    assert policy_field == [("tpp-60s", 2, 60)]
    assert [(name, r) for name, r, _ in current] == [("tpp-60s", 0)]
    document = json.loads(body)
    assert document == {
        "type": document["type"],
        "title": "Too Many Requests",
        "status": 429,
        "detail": "The request rate limit was exceeded.",
        "interaction_id": FIXED_IID,
    }
    assert document["type"].endswith("/too-many-requests")
    assert app.calls == ["/accounts", "/accounts"], "the application never sees a refused request"
    event = events.events[-1]
    assert (event.outcome, event.status, event.control, event.reason) == (
        "deny",
        429,
        "ratelimit",
        "ratelimit.exceeded",
    )
    assert (event.client_id, event.interaction_id, event.operation) == (CLIENT, FIXED_IID, "GetAccounts")


def test_FAPI_08_429_without_an_interaction_id_gets_a_fresh_uuid(serve: Any) -> None:
    guard, events = make_guard({"strategy": "fixed-window", "tiers": {"default": "1/minute"}})
    app = serve(guard)
    headers = {"Authorization": f"Bearer {token()}"}
    assert app.get("/accounts", headers)[0] == 200
    status, response_headers, body = app.get("/accounts", headers)
    assert status == 429
    iid = only(response_headers, "x-fapi-interaction-id")
    assert UUID_RE.match(iid)
    assert json.loads(body)["interaction_id"] == iid
    assert events.events[-1].interaction_id == iid
    assert events.events[-1].interaction_id_generated is True


def test_BG_07_429_access_exceeded_through_the_adapters(serve: Any) -> None:
    guard, events = make_guard(
        {
            "tiers": {"default": "100/hour"},
            "unattended": {
                "enabled": True,
                "operations": ["GetBalances"],
                "limit": 4,
                "error": "berlin-group",
            },
        }
    )
    app = serve(guard)
    headers = {"Authorization": f"Bearer {token()}"}
    for _ in range(4):
        assert app.get("/accounts/acc-1/balances", headers)[0] == 200
    assert app.get("/accounts/acc-1/balances", {**headers, "PSU-IP-Address": "192.0.2.1"})[0] == 200
    status, response_headers, body = app.get("/accounts/acc-1/balances", headers)
    assert status == 429
    assert only(response_headers, "content-type") == PROBLEM
    retry = only(response_headers, "retry-after")
    assert retry.isdigit()
    assert 1 <= int(retry) <= 86400
    document = json.loads(body)
    assert document["status"] == 429
    assert document["tppMessages"][0]["code"] == "ACCESS_EXCEEDED"
    assert document["tppMessages"][0]["category"] == "ERROR"
    assert events.events[-1].reason == "ratelimit.unattended_exceeded"
    assert len(app.calls) == 5


def test_successful_responses_carry_the_fields_through_the_adapters(serve: Any) -> None:
    guard, _ = make_guard({"strategy": "moving-window", "tiers": {"default": "5/minute; 50/hour"}})
    app = serve(guard)
    headers = {"Authorization": f"Bearer {token()}"}
    seen = []
    for _ in range(3):
        status, response_headers, _ = app.get("/accounts", headers)
        assert status == 200
        policy, current = rate_limit_fields(response_headers)
        assert policy == [("tpp-60s", 5, 60), ("tpp-3600s", 50, 3600)]
        seen.append([r for _, r, _ in current])
    assert seen == [[4, 49], [3, 48], [2, 47]]


def test_the_applications_own_ratelimit_fields_are_replaced(serve: Any) -> None:
    guard, _ = make_guard({"strategy": "fixed-window", "tiers": {"default": "10/hour"}})
    app = serve(guard, APP_RATELIMIT)
    status, response_headers, _ = app.get("/accounts", {"Authorization": f"Bearer {token()}"})
    assert status == 200
    policy, current = rate_limit_fields(response_headers)
    assert policy == [("tpp-3600s", 10, 3600)]
    assert [(name, r) for name, r, _ in current] == [("tpp-3600s", 9)]


def test_headers_false_sends_no_fields_through_the_adapters(serve: Any) -> None:
    guard, _ = make_guard({"headers": False, "tiers": {"default": "10/hour"}})
    app = serve(guard)
    status, response_headers, _ = app.get("/accounts", {"Authorization": f"Bearer {token()}"})
    assert status == 200
    assert values(response_headers, "ratelimit") == []
    assert values(response_headers, "ratelimit-policy") == []


def test_storage_failure_is_a_503_problem_through_the_adapters(serve: Any) -> None:
    class BrokenStore:
        def execute(self, op: object) -> object:
            raise TimeoutError("store timed out")

        async def aexecute(self, op: object) -> object:
            raise TimeoutError("store timed out")

    events = EventCollector()
    guard = Guard(make_policy({"tiers": {"default": "10/hour"}}), sink=events, store=BrokenStore())
    app = serve(guard)
    status, response_headers, body = app.get(
        "/accounts", {"Authorization": f"Bearer {token()}", "x-fapi-interaction-id": FIXED_IID}
    )
    assert status == 503
    assert only(response_headers, "content-type") == PROBLEM
    assert only(response_headers, "retry-after") == "1"
    assert only(response_headers, "x-fapi-interaction-id") == FIXED_IID
    assert json.loads(body)["status"] == 503
    assert app.calls == []
    event = events.events[-1]
    assert (event.outcome, event.status, event.control, event.reason) == (
        "deny",
        503,
        "ratelimit",
        "ratelimit.storage_unavailable",
    )


# -- r = limit - requests, for any limit ------------------------------------------------------------


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.integers(1, 40),
    extra=st.integers(0, 3),
    seconds=st.sampled_from([60, 3600, 86400, 31104000]),
)
def test_remaining_is_the_limit_minus_the_requests_made(limit: int, extra: int, seconds: int) -> None:
    guard, _ = make_guard({"strategy": "fixed-window", "tiers": {"default": f"{limit}/{seconds} seconds"}})
    bearer = token()
    for made in range(1, limit + extra + 1):
        decision = decide(guard, bearer=bearer)
        assert decision.allowed is (made <= limit)
        policy = parse_policy(only(decision.response_headers, "ratelimit-policy"))
        ((name, r, t),) = parse_current(only(decision.response_headers, "ratelimit"))
        assert policy == [(name, limit, seconds)]
        assert r == max(0, limit - made)
        assert 0 <= t <= seconds


WINDOWS = st.lists(
    st.tuples(st.integers(1, 10_000), st.integers(1, MAX_WINDOW_SECONDS)),
    min_size=1,
    max_size=8,
    unique_by=lambda window: window[1],
)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(windows=WINDOWS, strategy=st.sampled_from(["fixed-window", "moving-window"]))
def test_the_policy_field_lists_exactly_the_configured_windows(
    windows: list[tuple[int, int]], strategy: str
) -> None:
    text = "; ".join(f"{limit}/{seconds} seconds" for limit, seconds in windows)
    guard, _ = make_guard({"strategy": strategy, "tiers": {"default": text}})
    decision = decide(guard, bearer=token())
    assert decision.allowed
    policy = parse_policy(only(decision.response_headers, "ratelimit-policy"))
    current = parse_current(only(decision.response_headers, "ratelimit"))
    assert policy == [(f"tpp-{seconds}s", limit, seconds) for limit, seconds in windows]
    assert [(name, r) for name, r, _ in current] == [(f"tpp-{s}s", limit - 1) for limit, s in windows]
    assert all(0 <= t <= w for (_, _, w), (_, _, t) in zip(policy, current, strict=True))
