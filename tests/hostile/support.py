"""Credentials for the catalogue's requests, and the checks every outcome must pass.

One token issuer and one DPoP key per test process; the policy carries the issuer's public keys
(also the served policy, so the servers verify the tokens this process mints).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from bankguard import AuditEvent, EventCollector, Policy
from bankguard.testing import DPoPKey, TestIssuer

from .apps import AUDIENCE, HANDLERS, ISSUER, ORIGIN, build_flask, build_starlette, policy_data
from .catalogue import CHALLENGING, PROBLEM_TYPES, Case, Expect, control_of
from .wire import Outcome, RawRequest, asgi_call, render, wsgi_call

PROBLEM = "application/problem+json"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
UNSAFE = re.compile(r"[\r\n\x00]")
RFC9562 = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}\Z"
)

ISSUER_KEY = TestIssuer(ISSUER)
DPOP_KEY = DPoPKey("ES256")
#: The peers allowed to forward a Client-Cert: the in-process peer and the served tests' client.
TRUSTED = ("127.0.0.1/32", "203.0.113.9/32")


def catalogue_policy(sink: Any = "logging") -> dict[str, Any]:
    return policy_data(ISSUER_KEY.jwks(), trusted=TRUSTED, sink=sink)


@functools.cache
def token(kind: str) -> str:
    """An access token: ``read``, ``write``, ``admin`` (their scope) or ``bound`` (read, DPoP-bound)."""
    if kind == "bound":
        return ISSUER_KEY.mint(scope="read", audience=AUDIENCE, dpop_key=DPOP_KEY, lifetime=600)
    return ISSUER_KEY.mint(scope=kind, audience=AUDIENCE, lifetime=600)


def placeholder(name: str, request: RawRequest) -> bytes:
    """``{read}`` and the other token kinds; ``{proof}``: a fresh DPoP proof for the request's method
    and path at the configured origin (``{proof:<origin>}``: at another origin) for the bound token."""
    if name == "proof" or name.startswith("proof:"):
        origin = name.partition(":")[2] or ORIGIN
        url = origin + request.path_bytes().decode("latin-1")
        return DPOP_KEY.proof(request.method.decode("latin-1"), url, access_token=token("bound")).encode()
    return token(name).encode("ascii")


def rendered(case: Case) -> RawRequest:
    return render(case.request, placeholder)


def ids(cases: list[Case]) -> list[str]:
    return [case.test_id for case in cases]


# -- checks ---------------------------------------------------------------------------------------------


def check_headers(outcome: Outcome, request: RawRequest) -> str:
    """Headers of any response that went through bankguard: no CR, LF or NUL anywhere, and exactly
    one interaction id, a UUID: the client's when it sent exactly one valid one, else a fresh one
    that is none of the values sent (FAPI-08, FAPI-10)."""
    for name, value in outcome.headers:
        assert not UNSAFE.search(name), name
        assert not UNSAFE.search(value), (name, value)
    iids = outcome.get_all("x-fapi-interaction-id")
    assert len(iids) == 1, outcome.headers
    assert UUID.match(iids[0]), iids
    sent = [v.decode("latin-1") for k, v in request.headers if k.lower() == b"x-fapi-interaction-id"]
    if len(sent) == 1 and RFC9562.match(sent[0]):
        assert iids[0] == sent[0]
    else:
        assert iids[0] not in sent
    return iids[0]


def check_refusal(expect: Expect, outcome: Outcome, request: RawRequest) -> str:
    """A bankguard problem response of the documented type; returns its interaction id."""
    assert outcome.status == expect.status, (outcome.status, outcome.body[:300])
    assert outcome.get("content-type") == PROBLEM, outcome.headers
    assert outcome.get("cache-control") == "no-store"
    assert outcome.get("x-content-type-options") == "nosniff"
    iid = check_headers(outcome, request)
    assert expect.reason is not None
    slug = PROBLEM_TYPES.get(expect.reason)
    assert slug is not None or expect.reason.endswith("."), f"no problem type listed for {expect.reason}"
    challenges = outcome.get_all("www-authenticate")
    if slug is not None:
        assert bool(challenges) == (slug in CHALLENGING), challenges
    if expect.status == 401:
        assert challenges, "a 401 carries WWW-Authenticate (RFC 9110 §15.5.2)"
    if expect.status == 405:
        assert outcome.get("allow")
    if expect.status == 429:
        assert outcome.get("retry-after")
    if request.method == b"HEAD":
        assert outcome.body == b""
        return iid
    document = json.loads(outcome.body)
    assert document["status"] == expect.status
    assert document["interaction_id"] == iid
    if slug is not None:
        assert document["type"] == f"https://bankguard.dev/problems/{slug}", document
    if expect.errors is not None:
        assert [(e["location"], e["check"]) for e in document["errors"]] == list(expect.errors), document
    return iid


def check_handled(expect: Expect, outcome: Outcome, request: RawRequest) -> dict[str, Any]:
    """The application's answer: the expected handler ran, under its own operation."""
    assert outcome.status == expect.status, (outcome.status, outcome.body[:300])
    assert outcome.get("content-type") == "application/json", outcome.headers
    check_headers(outcome, request)
    echo: dict[str, Any] = json.loads(outcome.body)
    assert echo["handler"] == expect.handler, echo
    assert echo["operation"] == HANDLERS[echo["handler"]], echo
    if expect.param is not None:
        assert echo["param"] == expect.param, echo
    return echo


def check_event(expect: Expect, event: AuditEvent | dict[str, Any], outcome: Outcome) -> None:
    """The audit event of the decision agrees with the response."""
    data = event if isinstance(event, dict) else event.to_dict()
    if expect.kind == "app":
        assert data["outcome"] == "allow", data
        assert data["reason"] is None
        assert data["operation"] == HANDLERS[str(expect.handler)]
        return
    assert data["outcome"] == "deny", data
    assert data["status"] == expect.status
    assert expect.reason is not None
    if expect.reason.endswith("."):
        assert str(data["reason"]).startswith(expect.reason), data
    else:
        assert data["reason"] == expect.reason, data
    assert data["control"] == control_of(str(data["reason"])), data
    if expect.operation is not None:
        assert data["operation"] == expect.operation, data
    assert data["interaction_id"] == outcome.get("x-fapi-interaction-id")


def check_no_server_error(outcome: Outcome) -> None:
    assert outcome.status is None or outcome.status < 500, (outcome.status, outcome.body[:300])


# -- in-process runs ------------------------------------------------------------------------------------


def run_in_process(case: Case, adapter: str) -> None:
    """Send the case's request to a freshly built application (no counters or caches carried over from
    other rows) through ``adapter`` (``asgi``: Starlette, ``wsgi``: Flask) and check the outcome."""
    events = EventCollector()
    calls: list[str] = []
    policy = Policy.from_dict(catalogue_policy(sink=events))
    if adapter == "asgi":
        app: Any = build_starlette(policy, calls)
        call = asgi_call
    else:
        app = build_flask(policy, calls)
        call = wsgi_call
    for _ in range(case.repeat - 1):
        check_no_server_error(call(app, rendered(case)))
    calls.clear()
    events.events.clear()
    request = rendered(case)
    outcome = call(app, request)
    check_no_server_error(outcome)
    expect = case.expected(adapter)
    if expect.kind == "closed":
        assert outcome.status is None, (outcome.status, outcome.body[:300])
        assert calls == []
        assert events.events == []
        return
    if expect.kind == "guard":
        check_refusal(expect, outcome, request)
        assert calls == [], "a refused request reached a handler"
    else:
        check_handled(expect, outcome, request)
        assert calls == [expect.handler]
    assert len(events.events) == 1, events.events
    check_event(expect, events.events[0], outcome)
