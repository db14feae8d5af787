"""What the rate limiter counts and refuses, through :meth:`Guard.decide` and :meth:`Guard.adecide`.

STANDARDS OWASP-14 (limits keyed on the verified identity only; a cheap pre-authentication limit
per client address), OB-21 / E8 (429 with ``Retry-After``), BG-07 (PSD2 RTS art. 36(5): at most
four unattended account reads per day), FAPI-11 (``x-fapi-customer-ip-address`` is a presence
signal only). Every refusal is checked for status, headers, problem document and audit event.

The counters live in the in-process memory store (``storage.uri: memory://``); limits are long
enough that no window rolls over while a test runs, so the counts are exact.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from bankguard import Guard, Policy
from bankguard.decision import Decision
from bankguard.errors import ConfigurationError
from bankguard.request import RequestFacts
from bankguard.stores import StoreOp
from bankguard.testing import EventCollector, TestIssuer, make_facts
from bankguard.tokens.jose import verify_signature

ISSUER_URL = "https://as.bank.example"
ISSUER = TestIssuer(ISSUER_URL, alg="ES256")
#: Same issuer name and key id, another key: its tokens claim any client but never verify.
FORGER = TestIssuer(ISSUER_URL, alg="ES256")
CLIENT = "tpp-client-1"
PEER = "198.51.100.7"
PROBLEM = "application/problem+json"
FIXED_IID = "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
STANDARD_MEMBERS = {"type", "title", "status", "detail", "interaction_id"}

OPERATIONS: list[dict[str, Any]] = [
    {"method": "GET", "path": "/accounts", "id": "GetAccounts", "scopes": ["accounts"]},
    {"method": "GET", "path": "/accounts/{AccountId}", "id": "GetAccount", "scopes": ["accounts"]},
    {"method": "GET", "path": "/accounts/{AccountId}/balances", "id": "GetBalances", "scopes": ["accounts"]},
    {
        "method": "GET",
        "path": "/accounts/{AccountId}/transactions",
        "id": "GetTransactions",
        "scopes": ["accounts"],
    },
    {"method": "POST", "path": "/payments", "id": "CreatePayment", "scopes": ["accounts"]},
    {"method": "GET", "path": "/status", "id": "Status", "public": True},
]

UNATTENDED = {"enabled": True, "operations": ["GetAccounts", "GetBalances", "GetTransactions"], "limit": 4}

Run = Callable[[Guard, RequestFacts], Decision]


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


def make_guard(ratelimit: dict[str, Any], *, store: Any = None, **top: Any) -> tuple[Guard, EventCollector]:
    events = EventCollector()
    return Guard(make_policy(ratelimit, **top), sink=events, store=store), events


def token(client: str = CLIENT, **claims: Any) -> str:
    return ISSUER.mint(claims={"client_id": client, **claims})


def tampered(jwt: str) -> str:
    """The token with the first character of its signature changed."""
    head, body, signature = jwt.split(".")
    return f"{head}.{body}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


def run_sync(guard: Guard, facts: RequestFacts) -> Decision:
    return guard.decide(facts)


def run_async(guard: Guard, facts: RequestFacts) -> Decision:
    return asyncio.run(guard.adecide(facts))


@pytest.fixture(params=["decide", "adecide"])
def run(request: pytest.FixtureRequest) -> Run:
    return run_sync if request.param == "decide" else run_async


def send(
    guard: Guard,
    target: str = "/accounts",
    *,
    bearer: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    peer: str | None = PEER,
    method: str = "GET",
    run: Run = run_sync,
) -> Decision:
    lines = list(headers)
    if bearer is not None:
        lines.append(("authorization", f"Bearer {bearer}"))
    return run(guard, make_facts(method, target, headers=lines, peer=peer))


def header(decision: Decision, name: str) -> str | None:
    values = [v for k, v in decision.response_headers if k == name]
    assert len(values) <= 1, values
    return values[0] if values else None


_ITEM = re.compile(r'"([^"]+)";r=(\d+);t=(\d+)')


def remaining(decision: Decision) -> dict[str, int]:
    """``r`` of every window in the decision's RateLimit field (``{}`` when there is none)."""
    value = header(decision, "ratelimit")
    if value is None:
        return {}
    return {name: int(r) for name, r, _ in _ITEM.findall(value)}


def assert_refused(
    guard: Guard, decision: Decision, *, status: int = 429, reason: str, window: int | None = None
) -> dict[str, Any]:
    """A refusal by the rate limiter: decision, audit event and the rendered problem."""
    assert not decision.allowed
    assert decision.denial is not None
    assert decision.denial.status == status
    event = decision.event
    assert (event.outcome, event.status, event.control, event.reason) == ("deny", status, "ratelimit", reason)
    problem = guard.problem(decision)
    assert problem.status == status
    headers = dict(problem.headers)
    assert len(problem.headers) == len(headers), "no header appears twice"
    assert headers["content-type"] == PROBLEM
    assert headers["x-fapi-interaction-id"] == decision.interaction_id
    assert headers["cache-control"] == "no-store"
    retry = headers["retry-after"]
    assert retry.isdigit(), retry
    assert int(retry) >= 1
    if window is not None:
        assert int(retry) <= window
    assert "www-authenticate" not in headers
    body: dict[str, Any] = json.loads(problem.body)
    assert body["status"] == status
    assert body["interaction_id"] == decision.interaction_id
    slug = "too-many-requests" if status == 429 else "service-unavailable"
    assert body["type"].endswith("/" + slug)
    return body


def assert_allowed(decision: Decision) -> None:
    assert decision.allowed, decision.event
    assert decision.event.outcome == "allow"
    assert decision.event.reason is None


# -- OWASP-14: only a verified identity is counted ------------------------------------------------


def test_OWASP_14_invalid_tokens_do_not_spend_the_claimed_tpps_quota(run: Run) -> None:
    guard, events = make_guard({"strategy": "fixed-window", "tiers": {"default": "3/hour"}})
    flood = [
        (FORGER.mint(claims={"client_id": CLIENT}), "token.signature_invalid"),
        (ISSUER.mint(claims={"client_id": CLIENT}, now=1_000_000_000), "token.expired"),
        (
            ISSUER.mint(claims={"client_id": CLIENT}, audience="https://other.example"),
            "token.audience_mismatch",
        ),
        (tampered(token()), "token.signature_invalid"),
    ]
    for bad, reason in flood * 5:
        decision = send(guard, bearer=bad, run=run)
        assert not decision.allowed
        assert (decision.event.status, decision.event.control, decision.event.reason) == (
            401,
            "tokens",
            reason,
        )
        assert decision.event.client_id is None
        assert header(decision, "ratelimit") is None, "a refused credential is never counted"
    genuine = token()
    seen = [remaining(send(guard, bearer=genuine, run=run)) for _ in range(3)]
    assert seen == [{"tpp-3600s": 2}, {"tpp-3600s": 1}, {"tpp-3600s": 0}]
    body = assert_refused(
        guard, send(guard, bearer=genuine, run=run), reason="ratelimit.exceeded", window=3600
    )
    assert set(body) == STANDARD_MEMBERS
    assert events.events[-1].client_id == CLIENT


def test_OWASP_14_requests_without_credentials_are_not_counted_as_anyone() -> None:
    guard, _ = make_guard({"strategy": "fixed-window", "tiers": {"default": "2/hour"}})
    for _ in range(5):
        missing = send(guard)
        assert (missing.event.status, missing.event.reason) == (401, "token.missing")
        public = send(guard, "/status", bearer=token())  # a public operation verifies no token
        assert_allowed(public)
        assert header(public, "ratelimit") is None
        assert public.event.client_id is None
    genuine = token()
    assert remaining(send(guard, bearer=genuine)) == {"tpp-3600s": 1}
    assert remaining(send(guard, bearer=genuine)) == {"tpp-3600s": 0}
    assert_refused(guard, send(guard, bearer=genuine), reason="ratelimit.exceeded")


def test_OWASP_14_each_client_has_its_own_counter(run: Run) -> None:
    guard, events = make_guard({"strategy": "moving-window", "tiers": {"default": "2/hour"}})
    alice, bob = token("client-alice"), token("client-bob")
    assert_allowed(send(guard, bearer=alice, run=run))
    assert_allowed(send(guard, bearer=alice, run=run))
    assert_refused(guard, send(guard, bearer=alice, run=run), reason="ratelimit.exceeded", window=3600)
    assert events.events[-1].client_id == "client-alice"
    first = send(guard, bearer=bob, run=run)
    assert_allowed(first)
    assert remaining(first) == {"tpp-3600s": 1}
    assert_allowed(send(guard, bearer=bob, run=run))
    assert_refused(guard, send(guard, bearer=bob, run=run), reason="ratelimit.exceeded")


def test_OWASP_14_a_new_token_of_the_same_client_shares_its_counter() -> None:
    guard, _ = make_guard({"strategy": "fixed-window", "tiers": {"default": "3/hour"}})
    assert remaining(send(guard, bearer=token())) == {"tpp-3600s": 2}
    assert remaining(send(guard, bearer=token(sub="psu-2"))) == {"tpp-3600s": 1}
    assert remaining(send(guard, bearer=token(sub="psu-3"))) == {"tpp-3600s": 0}
    assert_refused(guard, send(guard, bearer=token(sub="psu-4")), reason="ratelimit.exceeded")


@pytest.mark.parametrize(("first", "second"), [("tpp/1", "tpp%2F1"), ("a b", "a%20b"), ("x/60", "x")])
def test_OWASP_14_client_ids_cannot_forge_each_others_counter_keys(first: str, second: str) -> None:
    guard, _ = make_guard({"strategy": "fixed-window", "tiers": {"default": "1/hour"}})
    assert_allowed(send(guard, bearer=token(first)))
    assert_refused(guard, send(guard, bearer=token(first)), reason="ratelimit.exceeded")
    assert_allowed(send(guard, bearer=token(second)))
    assert_refused(guard, send(guard, bearer=token(second)), reason="ratelimit.exceeded")


# -- tiers and per-operation limits ---------------------------------------------------------------


def test_OWASP_14_tpps_maps_an_identity_to_its_tier(run: Run) -> None:
    guard, _ = make_guard(
        {
            "strategy": "fixed-window",
            "tiers": {"default": "2/hour", "gold": "5/hour"},
            "tpps": {"gold-client": "gold"},
        }
    )
    gold, plain = token("gold-client"), token("plain-client")
    for expected in (4, 3, 2, 1, 0):
        decision = send(guard, bearer=gold, run=run)
        assert_allowed(decision)
        assert remaining(decision) == {"tpp-3600s": expected}
    assert_refused(guard, send(guard, bearer=gold, run=run), reason="ratelimit.exceeded")
    assert remaining(send(guard, bearer=plain, run=run)) == {"tpp-3600s": 1}
    assert_allowed(send(guard, bearer=plain, run=run))
    assert_refused(guard, send(guard, bearer=plain, run=run), reason="ratelimit.exceeded")


def test_operation_overrides_have_their_own_counters(run: Run) -> None:
    guard, _ = make_guard(
        {"strategy": "fixed-window", "tiers": {"default": "5/hour"}, "operations": {"GetBalances": "2/hour"}}
    )
    bearer = token()
    assert remaining(send(guard, "/accounts/a1/balances", bearer=bearer, run=run)) == {"op-3600s": 1}
    assert remaining(send(guard, "/accounts/a2/balances", bearer=bearer, run=run)) == {"op-3600s": 0}
    assert_refused(
        guard, send(guard, "/accounts/a1/balances", bearer=bearer, run=run), reason="ratelimit.exceeded"
    )
    # The balance reads spent nothing of the tier's window; other operations share that one.
    assert remaining(send(guard, "/accounts", bearer=bearer, run=run)) == {"tpp-3600s": 4}
    assert remaining(send(guard, "/accounts/a1/transactions", bearer=bearer, run=run)) == {"tpp-3600s": 3}
    # Another client has its own balance counter.
    assert remaining(send(guard, "/accounts/a1/balances", bearer=token("other"), run=run)) == {"op-3600s": 1}


def test_tier_operation_overrides_take_precedence_over_top_level_ones() -> None:
    guard, _ = make_guard(
        {
            "strategy": "fixed-window",
            "tiers": {
                "default": "10/hour",
                "gold": {"limits": "10/hour", "operations": {"GetBalances": "4/hour"}},
            },
            "tpps": {"gold-client": "gold"},
            "operations": {"GetBalances": "2/hour"},
        }
    )
    gold, plain = token("gold-client"), token("plain-client")
    assert [remaining(send(guard, "/accounts/a1/balances", bearer=gold)) for _ in range(4)] == [
        {"op-3600s": r} for r in (3, 2, 1, 0)
    ]
    assert_refused(guard, send(guard, "/accounts/a1/balances", bearer=gold), reason="ratelimit.exceeded")
    assert [remaining(send(guard, "/accounts/a1/balances", bearer=plain)) for _ in range(2)] == [
        {"op-3600s": 1},
        {"op-3600s": 0},
    ]
    assert_refused(guard, send(guard, "/accounts/a1/balances", bearer=plain), reason="ratelimit.exceeded")


def test_OB_21_the_shorter_window_refuses_first_with_its_own_retry_after() -> None:
    guard, _ = make_guard({"strategy": "fixed-window", "tiers": {"default": "3/minute; 5/hour"}})
    bearer = token()
    assert [remaining(send(guard, bearer=bearer)) for _ in range(3)] == [
        {"tpp-60s": 2, "tpp-3600s": 4},
        {"tpp-60s": 1, "tpp-3600s": 3},
        {"tpp-60s": 0, "tpp-3600s": 2},
    ]
    assert_refused(guard, send(guard, bearer=bearer), reason="ratelimit.exceeded", window=60)


def test_OB_21_the_longer_window_refuses_with_a_retry_after_beyond_the_shorter_one() -> None:
    guard, _ = make_guard({"strategy": "fixed-window", "tiers": {"default": "5/minute; 3/hour"}})
    bearer = token()
    for _ in range(3):
        assert_allowed(send(guard, bearer=bearer))
    decision = send(guard, bearer=bearer)
    assert_refused(guard, decision, reason="ratelimit.exceeded", window=3600)
    retry = int(dict(guard.problem(decision).headers)["retry-after"])
    assert retry > 60, "the hour window refused, so the client must wait for that one"


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
@pytest.mark.parametrize(("limit", "extra"), [(1, 2), (4, 3), (7, 1)])
def test_OB_21_each_strategy_admits_exactly_the_limit(
    strategy: str, limit: int, extra: int, run: Run
) -> None:
    guard, events = make_guard({"strategy": strategy, "tiers": {"default": f"{limit}/year"}})
    bearer = token()
    outcomes = [send(guard, bearer=bearer, run=run) for _ in range(limit + extra)]
    assert [d.allowed for d in outcomes] == [True] * limit + [False] * extra
    for decision in outcomes[limit:]:
        assert_refused(guard, decision, reason="ratelimit.exceeded", window=31104000)
    assert [e.outcome for e in events.events] == ["allow"] * limit + ["deny"] * extra


# -- pre-authentication limit ------------------------------------------------------------------


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The algorithm of every token signature the guard checks."""
    calls: list[str] = []

    def counting(key: Any, alg: str, signing_input: bytes, signature: bytes) -> None:
        calls.append(alg)
        verify_signature(key, alg, signing_input, signature)

    monkeypatch.setattr("bankguard.tokens.jwt.verify_signature", counting)
    return calls


def test_OWASP_14_preauth_limit_refuses_before_any_signature_is_verified(
    verifications: list[str], run: Run
) -> None:
    guard, events = make_guard({"tiers": {"default": "100/hour"}, "preauth": {"limits": "2/hour"}})
    first = send(guard, bearer=token(), run=run)
    assert_allowed(first)
    assert_allowed(send(guard, bearer=token(), run=run))
    assert len(verifications) == 2
    refused = send(guard, bearer=token(), run=run)  # a fresh token: it would need a signature check
    assert_refused(guard, refused, reason="ratelimit.preauth_exceeded", window=3600)
    assert verifications == ["ES256", "ES256"], "no signature is checked once the pre-auth limit refuses"
    event = events.events[-1]
    assert (event.client_id, event.subject, event.client_address) == (None, None, PEER)
    assert not refused.principal.authenticated
    assert all(e.control != "tokens" for e in events.events)
    # The refused request spent nothing of the TPP's quota either (2 of 100 used, from elsewhere).
    other_peer = send(guard, bearer=token(), peer="198.51.100.200", run=run)
    assert remaining(other_peer) == {"preauth-3600s": 1, "tpp-3600s": 97}


def test_OWASP_14_preauth_limit_counts_unauthenticated_requests_too() -> None:
    guard, events = make_guard({"tiers": {"default": "100/hour"}, "preauth": {"limits": "2/hour"}})
    assert send(guard).event.reason == "token.missing"
    assert send(guard, bearer="not-a-jwt").event.reason == "token.not_a_jwt"
    assert_refused(guard, send(guard, bearer=token()), reason="ratelimit.preauth_exceeded")
    assert_refused(guard, send(guard, "/status"), reason="ratelimit.preauth_exceeded")
    assert [e.status for e in events.events] == [401, 401, 429, 429]


def test_OWASP_14_preauth_refusal_is_cheap_even_for_a_flood(verifications: list[str]) -> None:
    guard, events = make_guard({"tiers": {"default": "100/hour"}, "preauth": {"limits": "1/hour"}})
    assert_allowed(send(guard, bearer=token()))
    for _ in range(20):
        decision = send(guard, bearer=FORGER.mint(claims={"client_id": CLIENT}))
        assert decision.event.reason == "ratelimit.preauth_exceeded"
    assert len(verifications) == 1
    assert {e.reason for e in events.events[1:]} == {"ratelimit.preauth_exceeded"}


def test_OWASP_14_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    guard, events = make_guard(
        {"tiers": {"default": "100/hour"}, "preauth": {"limits": "2/hour"}},
        trusted_proxies=["10.0.0.0/8"],
    )
    bearer = token()
    for i in (1, 2):
        assert_allowed(send(guard, bearer=bearer, headers=[("x-forwarded-for", f"203.0.113.{i}")]))
    refused = send(guard, bearer=bearer, headers=[("x-forwarded-for", "203.0.113.3")])
    assert_refused(guard, refused, reason="ratelimit.preauth_exceeded")
    assert {e.client_address for e in events.events} == {PEER}


def test_OWASP_14_forwarded_for_from_a_trusted_proxy_keys_on_the_client() -> None:
    guard, events = make_guard(
        {"tiers": {"default": "100/hour"}, "preauth": {"limits": "2/hour"}},
        trusted_proxies=["10.0.0.0/8"],
    )
    bearer = token()
    proxy = "10.1.2.3"

    def via_proxy(xff: str) -> Decision:
        return send(guard, bearer=bearer, peer=proxy, headers=[("x-forwarded-for", xff)])

    assert_allowed(via_proxy("203.0.113.1"))
    assert_allowed(via_proxy("203.0.113.1"))
    # A client cannot pick a fresh key by writing its own entries left of the proxy's.
    assert_refused(guard, via_proxy("192.0.2.99, 203.0.113.1"), reason="ratelimit.preauth_exceeded")
    assert events.events[-1].client_address == "203.0.113.1"
    # Another client behind the same proxy has its own counter; the proxy's address is not the key.
    other = via_proxy("203.0.113.2")
    assert_allowed(other)
    assert other.event.client_address == "203.0.113.2"
    assert remaining(other)["preauth-3600s"] == 1


@pytest.mark.parametrize(
    ("prefix", "shared", "separate"),
    [
        (64, ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::99"], "2001:db8:1:3::1"),
        (
            128,
            ["2001:db8:1:2::1", "2001:db8:1:2::1", "2001:0db8:0001:0002:0000:0000:0000:0001"],
            "2001:db8:1:2::2",
        ),
        (48, ["2001:db8:1:2::1", "2001:db8:1:3::1", "2001:db8:1:ffff::1"], "2001:db8:2::1"),
    ],
)
def test_OWASP_14_ipv6_clients_are_counted_per_network(prefix: int, shared: list[str], separate: str) -> None:
    guard, _ = make_guard(
        {"tiers": {"default": "100/hour"}, "preauth": {"limits": "2/hour", "ipv6_prefix": prefix}}
    )
    bearer = token()
    assert_allowed(send(guard, bearer=bearer, peer=shared[0]))
    assert_allowed(send(guard, bearer=bearer, peer=shared[1]))
    assert_refused(guard, send(guard, bearer=bearer, peer=shared[2]), reason="ratelimit.preauth_exceeded")
    decision = send(guard, bearer=bearer, peer=separate)
    assert_allowed(decision)
    assert remaining(decision)["preauth-3600s"] == 1


def test_OWASP_14_ipv4_mapped_ipv6_counts_as_the_ipv4_address() -> None:
    guard, _ = make_guard({"tiers": {"default": "100/hour"}, "preauth": {"limits": "2/hour"}})
    bearer = token()
    assert_allowed(send(guard, bearer=bearer, peer="::ffff:198.51.100.7"))
    assert_allowed(send(guard, bearer=bearer, peer="198.51.100.7"))
    assert_refused(
        guard, send(guard, bearer=bearer, peer="::ffff:c633:6407"), reason="ratelimit.preauth_exceeded"
    )
    # Mapped addresses are not lumped together in one IPv6 network.
    neighbour = send(guard, bearer=bearer, peer="::ffff:198.51.100.8")
    assert_allowed(neighbour)
    assert remaining(neighbour)["preauth-3600s"] == 1


def test_OWASP_14_distinct_ipv4_addresses_have_distinct_counters() -> None:
    guard, _ = make_guard({"tiers": {"default": "100/hour"}, "preauth": {"limits": "1/hour"}})
    bearer = token()
    for last in range(1, 6):
        assert_allowed(send(guard, bearer=bearer, peer=f"192.0.2.{last}"))
    assert_refused(guard, send(guard, bearer=bearer, peer="192.0.2.3"), reason="ratelimit.preauth_exceeded")


# -- BG-07: PSD2 RTS art. 36(5) unattended access ----------------------------------------------------


def test_BG_07_fifth_unattended_read_is_refused(run: Run) -> None:
    guard, events = make_guard({"tiers": {"default": "100/hour"}, "unattended": UNATTENDED})
    bearer = token()
    for expected in (3, 2, 1, 0):
        decision = send(guard, "/accounts/acc-1/balances", bearer=bearer, run=run)
        assert_allowed(decision)
        assert remaining(decision)["unattended"] == expected
    refused = send(guard, "/accounts/acc-1/balances", bearer=bearer, run=run)
    body = assert_refused(guard, refused, reason="ratelimit.unattended_exceeded", window=86400)
    assert set(body) == STANDARD_MEMBERS, "the generic shape adds no Berlin Group members"
    assert body["detail"] == "The number of accesses without the customer present was exceeded."
    assert events.events[-1].operation == "GetBalances"


def test_BG_07_the_cap_spans_every_listed_operation_on_the_account() -> None:
    guard, _ = make_guard({"tiers": {"default": "100/hour"}, "unattended": UNATTENDED})
    bearer = token()
    for target in ("/accounts/acc-1/balances", "/accounts/acc-1/transactions") * 2:
        assert_allowed(send(guard, target, bearer=bearer))
    refused = send(guard, "/accounts/acc-1/transactions", bearer=bearer)
    assert_refused(guard, refused, reason="ratelimit.unattended_exceeded")


@pytest.mark.parametrize(
    "presence",
    [
        ("x-fapi-customer-ip-address", "203.0.113.5"),
        ("X-FAPI-Customer-IP-Address", "2001:DB8::1893:25c8:1946"),
        ("psu-ip-address", "192.0.2.10"),
        ("PSU-IP-Address", "2001:db8::1"),
    ],
)
def test_BG_07_customer_present_requests_are_not_counted(presence: tuple[str, str]) -> None:
    guard, _ = make_guard({"tiers": {"default": "100/hour"}, "unattended": UNATTENDED})
    bearer = token()
    for _ in range(6):
        present = send(guard, "/accounts/acc-1/balances", bearer=bearer, headers=[presence])
        assert_allowed(present)
        assert "unattended" not in remaining(present)
    for _ in range(4):
        assert_allowed(send(guard, "/accounts/acc-1/balances", bearer=bearer))
    refused = send(guard, "/accounts/acc-1/balances", bearer=bearer)
    assert_refused(guard, refused, reason="ratelimit.unattended_exceeded")
    assert_allowed(send(guard, "/accounts/acc-1/balances", bearer=bearer, headers=[presence]))


def test_BG_07_counters_are_per_account() -> None:
    guard, _ = make_guard({"tiers": {"default": "100/hour"}, "unattended": UNATTENDED})
    bearer = token()
    for _ in range(4):
        assert_allowed(send(guard, "/accounts/acc-1/balances", bearer=bearer))
    assert_refused(
        guard, send(guard, "/accounts/acc-1/balances", bearer=bearer), reason="ratelimit.unattended_exceeded"
    )
    for expected in (3, 2, 1, 0):
        decision = send(guard, "/accounts/acc-2/balances", bearer=bearer)
        assert_allowed(decision)
        assert remaining(decision)["unattended"] == expected
    assert_refused(
        guard, send(guard, "/accounts/acc-2/balances", bearer=bearer), reason="ratelimit.unattended_exceeded"
    )


@pytest.mark.parametrize("claim", ["openbanking_intent_id", "consent_id"])
def test_BG_07_counters_are_per_consent(claim: str) -> None:
    """Each consent (named by a claim of the verified token) has its own count, even on an
    operation without an account in its path: one customer's unattended reads do not use up
    another's."""
    guard, _ = make_guard({"tiers": {"default": "100/hour"}, "unattended": UNATTENDED})
    for i in range(5):
        assert_allowed(send(guard, "/accounts", bearer=token(**{claim: f"consent-{i}", "sub": f"psu-{i}"})))
    bearer = token(**{claim: "consent-x"})
    for _ in range(4):
        assert_allowed(send(guard, "/accounts", bearer=bearer))
    assert_refused(guard, send(guard, "/accounts", bearer=bearer), reason="ratelimit.unattended_exceeded")


def test_BG_07_counters_are_per_tpp() -> None:
    guard, _ = make_guard({"tiers": {"default": "100/hour"}, "unattended": UNATTENDED})
    for _ in range(4):
        assert_allowed(send(guard, "/accounts/acc-1/balances", bearer=token("tpp-a")))
    assert_refused(
        guard,
        send(guard, "/accounts/acc-1/balances", bearer=token("tpp-a")),
        reason="ratelimit.unattended_exceeded",
    )
    decision = send(guard, "/accounts/acc-1/balances", bearer=token("tpp-b"))
    assert_allowed(decision)
    assert remaining(decision)["unattended"] == 3


def test_BG_07_unlisted_operations_are_not_capped() -> None:
    guard, _ = make_guard({"tiers": {"default": "100/hour"}, "unattended": UNATTENDED})
    bearer = token()
    for _ in range(8):
        decision = send(guard, "/accounts/acc-1", bearer=bearer)
        assert_allowed(decision)
        assert "unattended" not in remaining(decision)
    for _ in range(8):
        assert_allowed(send(guard, "/payments", bearer=bearer, method="POST"))


def test_BG_07_berlin_group_error_adds_access_exceeded(run: Run) -> None:
    guard, _ = make_guard(
        {"tiers": {"default": "100/hour"}, "unattended": {**UNATTENDED, "error": "berlin-group"}}
    )
    bearer = token()
    for _ in range(4):
        assert_allowed(send(guard, "/accounts", bearer=bearer, run=run))
    body = assert_refused(
        guard, send(guard, "/accounts", bearer=bearer, run=run), reason="ratelimit.unattended_exceeded"
    )
    assert set(body) == STANDARD_MEMBERS | {"tppMessages"}
    assert body["tppMessages"] == [
        {
            "category": "ERROR",
            "code": "ACCESS_EXCEEDED",
            "text": "The number of accesses without the customer present was exceeded.",
        }
    ]


def test_BG_07_configured_limit_and_presence_headers() -> None:
    guard, _ = make_guard(
        {
            "tiers": {"default": "100/hour"},
            "unattended": {**UNATTENDED, "limit": 2, "presence_headers": ["X-Customer-Present"]},
        }
    )
    bearer = token()
    assert_allowed(send(guard, "/accounts", bearer=bearer, headers=[("x-customer-present", "198.51.100.9")]))
    # Only the configured header signals presence now.
    assert_allowed(send(guard, "/accounts", bearer=bearer, headers=[("psu-ip-address", "192.0.2.1")]))
    assert_allowed(send(guard, "/accounts", bearer=bearer))
    refused = send(guard, "/accounts", bearer=bearer, headers=[("x-fapi-customer-ip-address", "192.0.2.1")])
    assert_refused(guard, refused, reason="ratelimit.unattended_exceeded")


def test_BG_07_the_tier_limit_still_applies_to_unattended_reads() -> None:
    guard, _ = make_guard(
        {"strategy": "fixed-window", "tiers": {"default": "2/hour"}, "unattended": UNATTENDED}
    )
    bearer = token()
    assert remaining(send(guard, "/accounts", bearer=bearer)) == {"tpp-3600s": 1, "unattended": 3}
    assert remaining(send(guard, "/accounts", bearer=bearer)) == {"tpp-3600s": 0, "unattended": 2}
    assert_refused(guard, send(guard, "/accounts", bearer=bearer), reason="ratelimit.exceeded")


def test_FAPI_11_customer_ip_address_is_not_a_rate_limit_identity() -> None:
    guard, _ = make_guard(
        {"strategy": "fixed-window", "tiers": {"default": "3/hour"}, "unattended": UNATTENDED}
    )
    bearer = token()
    seen = []
    for customer in ("203.0.113.5", "2001:DB8::1893:25c8:1946", "198.51.100.1"):
        decision = send(guard, "/accounts", bearer=bearer, headers=[("x-fapi-customer-ip-address", customer)])
        assert_allowed(decision)  # valid IPv4 and compressed IPv6 values are accepted
        seen.append(remaining(decision))
    assert seen == [{"tpp-3600s": 2}, {"tpp-3600s": 1}, {"tpp-3600s": 0}]
    refused = send(guard, "/accounts", bearer=bearer, headers=[("x-fapi-customer-ip-address", "192.0.2.200")])
    assert_refused(guard, refused, reason="ratelimit.exceeded")


# -- report mode -------------------------------------------------------------------------------------


def test_report_mode_allows_over_limit_requests_and_records_them(run: Run) -> None:
    guard, events = make_guard({"mode": "report", "strategy": "fixed-window", "tiers": {"default": "2/hour"}})
    bearer = token()
    decisions = [send(guard, bearer=bearer, run=run) for _ in range(4)]
    assert all(d.allowed and d.denial is None for d in decisions)
    assert [e.outcome for e in events.events] == ["allow", "allow", "report", "report"]
    for event in events.events[2:]:
        assert (event.status, event.control, event.reason) == (429, "ratelimit", "ratelimit.exceeded")
        assert event.reports == ("ratelimit:ratelimit.exceeded",)
    assert events.events[0].reports == ()
    assert remaining(decisions[-1]) == {"tpp-3600s": 0}


def test_report_mode_covers_the_preauth_and_unattended_limits() -> None:
    guard, events = make_guard(
        {
            "mode": "report",
            "tiers": {"default": "100/hour"},
            "preauth": {"limits": "1/hour"},
            "unattended": {**UNATTENDED, "limit": 1},
        }
    )
    bearer = token()
    assert_allowed(send(guard, "/accounts", bearer=bearer))
    second = send(guard, "/accounts", bearer=bearer)
    assert second.allowed
    event = events.events[-1]
    assert event.outcome == "report"
    assert event.reports == (
        "ratelimit:ratelimit.preauth_exceeded",
        "ratelimit:ratelimit.unattended_exceeded",
    )
    assert (event.status, event.control, event.reason) == (429, "ratelimit", "ratelimit.preauth_exceeded")
    assert event.client_id == CLIENT, "report mode lets the request go on to token verification"


# -- storage failure ---------------------------------------------------------------------------------


class BrokenStore:
    """A store that cannot answer (failure injection only)."""

    def __init__(self) -> None:
        self.calls: list[StoreOp] = []

    def execute(self, op: StoreOp) -> object:
        self.calls.append(op)
        raise ConnectionError("store unreachable")

    async def aexecute(self, op: StoreOp) -> object:
        self.calls.append(op)
        raise ConnectionError("store unreachable")


def test_storage_failure_fails_closed_by_default(run: Run) -> None:
    store = BrokenStore()
    guard, events = make_guard({"tiers": {"default": "100/hour"}}, store=store)
    decision = send(guard, bearer=token(), run=run)
    body = assert_refused(guard, decision, status=503, reason="ratelimit.storage_unavailable")
    assert dict(guard.problem(decision).headers)["retry-after"] == "1"
    assert set(body) == STANDARD_MEMBERS
    assert len(store.calls) == 1
    event = events.events[-1]
    assert event.client_id == CLIENT
    assert "ConnectionError" not in event.to_json()
    assert header(decision, "ratelimit") is None


def test_storage_failure_open_lets_the_request_through_and_notes_it(run: Run) -> None:
    store = BrokenStore()
    guard, events = make_guard({"on_storage_failure": "open", "tiers": {"default": "1/hour"}}, store=store)
    bearer = token()
    for _ in range(3):
        decision = send(guard, bearer=bearer, run=run)
        assert_allowed(decision)
        assert "ratelimit.storage_unavailable" in decision.event.notes
        assert header(decision, "ratelimit") is None
    assert len(store.calls) == 3
    assert [e.outcome for e in events.events] == ["allow"] * 3


def test_preauth_limit_holds_while_the_store_is_down() -> None:
    guard, _ = make_guard(
        {"on_storage_failure": "open", "tiers": {"default": "100/hour"}, "preauth": {"limits": "1/hour"}},
        store=BrokenStore(),
    )
    bearer = token()
    assert_allowed(send(guard, bearer=bearer))
    assert_refused(guard, send(guard, bearer=bearer), reason="ratelimit.preauth_exceeded")


def test_storage_failure_cause_is_logged_for_operators(caplog: pytest.LogCaptureFixture) -> None:
    guard, _ = make_guard({"tiers": {"default": "100/hour"}}, store=BrokenStore())
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        send(guard, bearer=token())
    messages = [r.getMessage() for r in caplog.records if "rate-limit store failed" in r.getMessage()]
    assert messages == [
        "bankguard: rate-limit store failed (ConnectionError: store unreachable); failing closed"
    ]


def test_a_full_memory_store_fails_as_the_policy_says() -> None:
    """Counters are bounded like every other entry of the memory store (storage.max_entries)."""
    guard, _ = make_guard({"tiers": {"default": "100/hour"}}, storage={"max_entries": 1000})
    for i in range(1000):
        assert_allowed(send(guard, bearer=token(f"client-{i}")))
    decision = send(guard, bearer=token("one-too-many"))
    assert_refused(guard, decision, status=503, reason="ratelimit.storage_unavailable")
    assert_allowed(send(guard, bearer=token("client-7")))  # known counters keep counting


def test_BG_07_keys_hold_no_consent_or_account_id() -> None:
    """Consent and account ids are personal data: the unattended counter is keyed on a digest."""
    guard, _ = make_guard({"tiers": {"default": "100/hour"}, "unattended": UNATTENDED})
    assert_allowed(
        send(guard, "/accounts/acc-secret-99/balances", bearer=token(openbanking_intent_id="c-77"))
    )
    limiter = guard.store._limits
    keys = [*limiter.storage.storage, *limiter.storage.events]
    assert any("unattended" in key for key in keys)
    assert not any("acc-secret-99" in key or "c-77" in key for key in keys)


def test_policy_repr_hides_a_redis_password() -> None:
    policy = Policy.from_dict({"storage": {"uri": "redis://user:s3cret@redis.internal:6379/0"}})
    assert "s3cret" not in repr(policy)
    assert policy.storage.uri == "redis://user:s3cret@redis.internal:6379/0"


def test_several_workers_with_memory_counters_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        make_guard({"tiers": {"default": "100/hour"}})
    assert any("4 times its rate limit" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("failure", ["closed", "open"])
def test_a_full_preauth_table_follows_the_storage_failure_policy(failure: str) -> None:
    """An address flood that fills the pre-authentication counters is a store failure: refused
    (503) or let through with a note, as ``on_storage_failure`` says; never an internal fault."""
    guard, events = make_guard(
        {"on_storage_failure": failure, "tiers": {"default": "100/hour"}, "preauth": {"limits": "5/second"}},
        storage={"max_entries": 1000},
    )
    for i in range(1000):
        send(guard, peer=f"10.{i // 250}.{i % 250}.1")
    decision = send(guard, bearer=token(), peer="192.0.2.200")
    if failure == "closed":
        assert_refused(guard, decision, status=503, reason="ratelimit.storage_unavailable")
    else:
        assert_allowed(decision)
        assert "ratelimit.storage_unavailable" in events.events[-1].notes


def test_BG_07_a_configured_key_makes_the_digest_keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``key_secret_env`` the consent/account digest is HMAC-SHA256 under that key: someone
    reading the store cannot test guessed account numbers; two keys give different counters."""
    keyed = {**UNATTENDED, "key_secret_env": "BG_TEST_RL_KEY"}
    monkeypatch.setenv("BG_TEST_RL_KEY", "k" * 32)
    first, _ = make_guard({"tiers": {"default": "100/hour"}, "unattended": keyed})
    monkeypatch.setenv("BG_TEST_RL_KEY", "j" * 32)
    second, _ = make_guard({"tiers": {"default": "100/hour"}, "unattended": keyed})
    plain, _ = make_guard({"tiers": {"default": "100/hour"}, "unattended": UNATTENDED})

    def unattended_keys(guard: Guard) -> set[str]:
        assert_allowed(send(guard, "/accounts/acc-1/balances", bearer=token(openbanking_intent_id="c-1")))
        storage = guard.store._limits.storage
        return {key for key in [*storage.storage, *storage.events] if "unattended" in key}

    keys = [unattended_keys(g) for g in (first, second, plain)]
    assert all(len(k) == 1 for k in keys)
    assert len(keys[0] | keys[1] | keys[2]) == 3


def test_BG_07_a_short_digest_key_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BG_TEST_RL_KEY", "short")
    with pytest.raises(ConfigurationError) as info:
        make_policy(
            {
                "tiers": {"default": "100/hour"},
                "unattended": {**UNATTENDED, "key_secret_env": "BG_TEST_RL_KEY"},
            }
        )
    assert info.value.problems[0].path == "ratelimit.unattended.key_secret_env"


@pytest.mark.parametrize("value", ["yes", "1", "999.1.1.1", "203.0.113.5, evil", " "])
def test_BG_07_a_presence_header_without_an_ip_address_is_no_presence(value: str) -> None:
    """Only a customer IP address signals presence (FAPI-11): any other value in the header
    cannot step around the cap."""
    guard, _ = make_guard({"tiers": {"default": "100/hour"}, "unattended": {**UNATTENDED, "limit": 1}})
    bearer = token()
    assert_allowed(send(guard, "/accounts", bearer=bearer, headers=[("x-fapi-customer-ip-address", value)]))
    refused = send(guard, "/accounts", bearer=bearer, headers=[("x-fapi-customer-ip-address", value)])
    assert_refused(guard, refused, reason="ratelimit.unattended_exceeded")
    ok = send(
        guard,
        "/accounts",
        bearer=bearer,
        headers=[("x-fapi-customer-ip-address", "2001:DB8::1893:25c8:1946")],
    )
    assert_allowed(ok)
