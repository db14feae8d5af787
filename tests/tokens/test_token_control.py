"""The access-token control as applications meet it: HTTP shape, credentials, binding, cache.

* §0 templates E1/E2/E5/E6 and §4a AUTH-01..AUTH-09, through ``Guard.decide`` and through real
  adapters (:class:`~bankguard.BankGuardMiddleware` around a tiny ASGI app, and a FastAPI app
  under Starlette's TestClient): status, ``WWW-Authenticate``, problem document, audit event,
  and the application never running on a denial;
* JWT-29 (revocation through the cache-eviction hooks), JWT-32 / MTLS-06 / DPOP-18
  (sender-constrained tokens), the verified-token cache (hits, expiry on an injected clock,
  keyed by hash, bounded);
* fuzzing of the whole check: never a 5xx, never acceptance of a modified token.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import time
from typing import Annotated, Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from fastapi import Depends, FastAPI, Security
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from bankguard import (
    BankGuardMiddleware,
    ConfigurationError,
    EventCollector,
    Guard,
    Policy,
    Principal,
    get_context,
    protect,
    require_scopes,
)
from bankguard.decision import Decision
from bankguard.errors import InvalidToken
from bankguard.integrations.fastapi import bearer, principal
from bankguard.problem import ProblemRenderer, Scheme
from bankguard.scopes import ScopeRequirement
from bankguard.testing import TestIssuer, make_facts
from bankguard.tokens.cache import token_key
from bankguard.tokens.jwt import TokenError, VerifiedToken

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
AUD = "https://api.bank.example"
ISS = "https://as.bank.example"
PROBLEM = "application/problem+json"

ISSUER = TestIssuer(ISS, alg="ES256", kid="ec-1")

OPERATIONS = [
    {"method": "GET", "path": "/accounts", "id": "listAccounts", "scopes": ["accounts"]},
    {"method": "POST", "path": "/payments", "id": "createPayment", "scopes": ["payments"]},
    {"method": "GET", "path": "/me", "id": "me"},
    {"method": "GET", "path": "/health", "id": "health", "public": True},
]


def make_policy(profile: str = "generic", sink: Any = None, **tokens: Any) -> Policy:
    data: dict[str, Any] = {
        "profile": profile,
        "routes": {"operations": OPERATIONS},
        "tokens": {
            "issuers": [
                {
                    "issuer": ISS,
                    "audiences": [AUD],
                    "algorithms": ["ES256"],
                    "jwks": ISSUER.jwks(),
                }
            ],
            **tokens,
        },
    }
    if sink is not None:
        data["audit"] = {"sink": sink}
    return Policy.from_dict(data)


def mint(now: float = NOW, **claims: Any) -> str:
    scope = claims.pop("scope", "accounts")
    lifetime = claims.pop("lifetime", 300)
    return ISSUER.mint(claims, now=now, audience=AUD, scope=scope, lifetime=lifetime)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def events() -> EventCollector:
    return EventCollector()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(events: EventCollector, clock: Clock) -> Guard:
    return Guard(make_policy(), sink=events, clock=clock)


def request(
    guard: Guard,
    method: str = "GET",
    target: str = "/accounts",
    *,
    token: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> Decision:
    lines = list(headers or [])
    if token is not None:
        lines.append(("authorization", f"Bearer {token}"))
    return guard.decide(make_facts(method, target, headers=lines, body=body))


def challenge_of(guard: Guard, decision: Decision) -> list[str]:
    return [v for k, v in guard.problem(decision).headers if k == "www-authenticate"]


def auth_params(challenge: str) -> dict[str, str]:
    """Parse ``Scheme k="v", k="v"`` strictly enough for these tests (values have no quotes)."""
    _, _, rest = challenge.partition(" ")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split('",'))):
        name, _, value = item.partition("=")
        assert name not in params, f"{name} repeated in {challenge!r}"
        params[name] = value.strip('"')
    return params


def assert_problem(guard: Guard, decision: Decision, status: int) -> dict[str, Any]:
    response = guard.problem(decision)
    assert response.status == status
    headers = dict(response.headers)
    assert headers["content-type"] == PROBLEM
    assert headers["cache-control"] == "no-store"
    document: dict[str, Any] = json.loads(response.body)
    assert set(document) == {"type", "title", "status", "detail", "interaction_id"}
    assert document["status"] == status
    assert document["interaction_id"] == decision.interaction_id
    return document


# -- §0 templates through Guard.decide --------------------------------------------------------------


def test_AUTH_01_no_credentials_is_E1(guard: Guard, events: EventCollector) -> None:
    decision = request(guard)
    assert not decision.allowed
    assert (decision.event.status, decision.event.control, decision.event.reason) == (
        401,
        "tokens",
        "token.missing",
    )
    assert events.events == [decision.event]
    (challenge,) = challenge_of(guard, decision)
    assert challenge == 'Bearer realm="api"'
    assert "error" not in challenge
    assert assert_problem(guard, decision, 401)["type"].endswith("/authentication-required")


def test_AUTH_01_public_operation_needs_no_token(guard: Guard) -> None:
    assert request(guard, "GET", "/health").allowed


def test_AUTH_01_operation_without_scopes_still_needs_a_token(guard: Guard) -> None:
    assert request(guard, "GET", "/me").event.reason == "token.missing"
    assert request(guard, "GET", "/me", token=mint(scope=None)).allowed


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
        pytest.param("Digest abc", id="digest"),
        pytest.param("Token abc", id="token"),
    ],
)
def test_E1_unsupported_scheme(guard: Guard, authorization: str) -> None:
    decision = request(guard, headers=[("authorization", authorization)])
    assert (decision.event.status, decision.event.reason) == (401, "token.unsupported_scheme")
    assert challenge_of(guard, decision) == ['Bearer realm="api"']


def test_E1_dpop_scheme_until_dpop_is_enabled(guard: Guard) -> None:
    """A DPoP-bound token sent with the DPoP scheme: no DPoP control yet, so no credentials we take."""
    decision = request(guard, headers=[("authorization", f"DPoP {mint(cnf={'jkt': 'x'})}")])
    assert not decision.allowed
    assert (decision.event.status, decision.event.reason) == (401, "token.unsupported_scheme")
    assert all("error=" not in c for c in challenge_of(guard, decision))


def test_AUTH_02_invalid_token_is_E2(guard: Guard) -> None:
    decision = request(guard, token=mint(now=NOW - 3600))
    assert (decision.event.status, decision.event.control, decision.event.reason) == (
        401,
        "tokens",
        "token.expired",
    )
    (challenge,) = challenge_of(guard, decision)
    params = auth_params(challenge)
    assert challenge.startswith("Bearer ")
    assert params["error"] == "invalid_token"
    assert params["error_description"] == "The access token has expired."
    assert params["realm"] == "api"
    assert assert_problem(guard, decision, 401)["type"].endswith("/invalid-token")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param("not-a-jwt", "token.not_a_jwt", id="opaque"),
        pytest.param("e30.e30.AA", "token.alg_missing", id="empty-objects-jwt"),
        pytest.param(
            ISSUER.mint(now=NOW, audience="https://other.example"), "token.audience_mismatch", id="aud"
        ),
    ],
)
def test_AUTH_02_every_token_failure_is_invalid_token(guard: Guard, token: str, reason: str) -> None:
    decision = request(guard, token=token)
    assert (decision.event.status, decision.event.reason) == (401, reason)
    assert auth_params(challenge_of(guard, decision)[0])["error"] == "invalid_token"


def test_AUTH_03_insufficient_scope_is_E5(guard: Guard, events: EventCollector) -> None:
    decision = request(guard, "POST", "/payments", token=mint(scope="accounts"))
    assert (decision.event.status, decision.event.control, decision.event.reason) == (
        403,
        "tokens",
        "scope.insufficient",
    )
    (challenge,) = challenge_of(guard, decision)
    params = auth_params(challenge)
    assert challenge.startswith("Bearer ")
    assert (params["error"], params["scope"]) == ("insufficient_scope", "payments")
    assert assert_problem(guard, decision, 403)["type"].endswith("/insufficient-scope")
    # The caller is known even though refused: the audit event names it.
    assert (events.events[-1].client_id, events.events[-1].subject) == ("tpp-client-1", "psu-1")


def test_AUTH_03_application_declared_scopes_merge_with_the_policy(guard: Guard) -> None:
    facts = make_facts("GET", "/accounts", headers=[("authorization", f"Bearer {mint(scope='accounts')}")])
    declared = dataclasses.replace(facts, requirements=ScopeRequirement(frozenset({"accounts:read"})))
    decision = guard.decide(declared)
    assert (decision.event.status, decision.event.reason) == (403, "scope.insufficient")
    assert auth_params(challenge_of(guard, decision)[0])["scope"] == "accounts accounts:read"


@pytest.mark.parametrize(
    ("headers", "target", "body", "reason"),
    [
        pytest.param(
            [("authorization", "Bearer a b")], "/accounts", None, "authorization.malformed", id="two-tokens"
        ),
        pytest.param(
            [("authorization", "Bearer")], "/accounts", None, "authorization.malformed", id="no-token"
        ),
        pytest.param(
            [("authorization", "Bearer  tok")], "/accounts", None, "authorization.malformed", id="two-spaces"
        ),
        pytest.param(
            [("authorization", "Bearer\ttok")], "/accounts", None, "authorization.malformed", id="tab"
        ),
        pytest.param(
            [("authorization", "Bearer a"), ("authorization", "Bearer b")],
            "/accounts",
            None,
            "authorization.duplicate",
            id="two-lines",
        ),
        pytest.param(
            [("authorization", "Bearer a, Bearer b")],
            "/accounts",
            None,
            "authorization.duplicate",
            id="merged-lines",
        ),
        pytest.param(
            [("authorization", "Bearer tok")],
            "/accounts?access_token=tok",
            None,
            "authorization.multiple_methods",
            id="header-and-query",
        ),
        pytest.param(
            [("authorization", "Bearer tok"), ("content-type", "application/x-www-form-urlencoded")],
            "/accounts",
            b"access_token=tok",
            "authorization.multiple_methods",
            id="header-and-form",
        ),
    ],
)
def test_AUTH_04_06_malformed_or_ambiguous_credentials_are_E6(
    guard: Guard, headers: list[tuple[str, str]], target: str, body: bytes | None, reason: str
) -> None:
    decision = request(guard, "GET", target, headers=headers, body=body)
    assert not decision.allowed
    assert (decision.event.status, decision.event.control, decision.event.reason) == (400, "auth", reason)
    challenges = challenge_of(guard, decision)
    assert challenges
    assert all(auth_params(c)["error"] == "invalid_request" for c in challenges)
    assert_problem(guard, decision, 400)


def test_AUTH_05_token_only_in_the_query_is_E1(guard: Guard) -> None:
    decision = request(guard, "GET", f"/accounts?access_token={mint()}")
    assert not decision.allowed
    assert (decision.event.status, decision.event.reason) == (401, "authorization.token_outside_header")
    assert challenge_of(guard, decision) == ['Bearer realm="api"']


def test_AUTH_05_token_only_in_a_form_body_is_E1(guard: Guard) -> None:
    decision = request(
        guard,
        "POST",
        "/payments",
        headers=[("content-type", "application/x-www-form-urlencoded")],
        body=f"access_token={mint(scope='payments')}".encode(),
    )
    assert (decision.event.status, decision.event.reason) == (401, "authorization.token_outside_header")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_AUTH_06_scheme_is_case_insensitive(guard: Guard, scheme: str) -> None:
    decision = request(guard, headers=[("authorization", f"{scheme} {mint()}")])
    assert decision.allowed, decision.event


def test_AUTH_07_challenge_follows_the_scheme_presented(guard: Guard) -> None:
    decision = request(guard, headers=[("authorization", f"bearer {mint(now=NOW - 3600)}")])
    (challenge,) = challenge_of(guard, decision)
    assert challenge.startswith("Bearer ")
    assert auth_params(challenge)["error"] == "invalid_token"


def test_AUTH_06_proxy_authorization_is_never_read(guard: Guard) -> None:
    decision = request(guard, headers=[("proxy-authorization", f"Bearer {mint()}")])
    assert (decision.event.status, decision.event.reason) == (401, "token.missing")


@pytest.mark.parametrize("profile", ["generic", "fapi2", "fapi1-adv", "obie", "nextgenpsd2"])
def test_C2_C4_bearer_challenge_in_every_profile(profile: str, events: EventCollector) -> None:
    """STANDARDS §10 C2/C4: bodies may differ per profile, the RFC 6750 header is always there."""
    guard = Guard(make_policy(profile), sink=events, clock=lambda: NOW)
    missing = request(guard)
    assert missing.event.status == 401
    assert challenge_of(guard, missing) == ['Bearer realm="api"']
    expired = request(guard, token=mint(now=NOW - 3600))
    assert (expired.event.status, expired.event.reason) == (401, "token.expired")
    assert auth_params(challenge_of(guard, expired)[0])["error"] == "invalid_token"
    if profile in ("generic", "nextgenpsd2"):  # no sender constraint required: the scope check is reached
        narrow = request(guard, "POST", "/payments", token=mint(scope="accounts"))
        assert narrow.event.status == 403
        assert auth_params(challenge_of(guard, narrow)[0])["error"] == "insufficient_scope"


def test_AUTH_08_auth_param_values_are_sanitised() -> None:
    renderer = ProblemRenderer(
        type_base="https://bankguard.dev/problems/",
        schemes=(Scheme("Bearer", (("realm", "api"),)),),
        interaction_header="x-fapi-interaction-id",
    )
    denial = InvalidToken("token.x", detail='bad "quoted" \\ back\\slash, caf\u00e9 \r\n end')
    denial.scheme = "Bearer"
    (challenge,) = renderer.www_authenticate(denial)
    params = auth_params(challenge)
    assert params["error"] == "invalid_token"
    assert params["error_description"] == "bad quoted  backslash, caf  end"
    value = challenge.split("error_description=", 1)[1]
    assert value.count('"') == 2
    assert "\\" not in challenge
    assert all(0x20 <= ord(c) < 0x7F for c in challenge)


def test_AUTH_09_tokens_never_reach_events_logs_or_responses(
    guard: Guard, events: EventCollector, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = [
        mint(),
        mint(now=NOW - 3600),
        mint(scope="none"),
        mint(cnf={"jkt": "abc"}),
        mint()[:-4] + "AAAA",
    ]
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for token in tokens:
            decision = request(guard, token=token)
            seen.append(decision.event.to_json())
            seen.append(repr(decision))
            seen.append(repr(decision.context.principal))
            if not decision.allowed:
                response = guard.problem(decision)
                seen.append(response.body.decode())
                seen.extend(v for _, v in response.headers)
    seen.extend(r.getMessage() for r in caplog.records)
    seen.extend(e.to_json() for e in events.events)
    text = "\n".join(seen)
    for token in tokens:
        for part in token.split("."):
            assert part not in text
    assert len(events.events) == len(tokens)


# -- through real adapters ---------------------------------------------------------------------------


class TinyApp:
    """The smallest ASGI application: records each call and the principal bankguard gave it."""

    def __init__(self) -> None:
        self.calls: list[Principal] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append(get_context(scope).principal)
        body = json.dumps({"sub": get_context(scope).principal.subject}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def call_asgi(
    app: Any, method: str, target: str, headers: list[tuple[str, str]]
) -> tuple[int, list[tuple[str, str]], bytes]:
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("203.0.113.9", 40000),
        "server": ("api.bank.example", 443),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], [(k.decode(), v.decode()) for k, v in start["headers"]], body


@pytest.fixture
def asgi(events: EventCollector, clock: Clock) -> tuple[BankGuardMiddleware, TinyApp]:
    app = TinyApp()
    return BankGuardMiddleware(app, guard=Guard(make_policy(), sink=events, clock=clock)), app


def _header(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name]


@pytest.mark.parametrize(
    ("method", "target", "authorization", "status", "error", "reason"),
    [
        pytest.param("GET", "/accounts", None, 401, None, "token.missing", id="E1-none"),
        pytest.param("GET", "/accounts", "expired", 401, "invalid_token", "token.expired", id="E2-expired"),
        pytest.param(
            "GET", "/accounts", "alg-none", 401, "invalid_token", "token.alg_not_allowed", id="E2-none"
        ),
        pytest.param(
            "GET", "/accounts", "unknown-kid", 401, "invalid_token", "token.kid_unknown", id="E2-kid"
        ),
        pytest.param("POST", "/payments", "valid", 403, "insufficient_scope", "scope.insufficient", id="E5"),
        pytest.param(
            "GET", "/accounts", "Bearer a b", 400, "invalid_request", "authorization.malformed", id="E6"
        ),
        pytest.param(
            "GET",
            "/accounts",
            "dpop-bound",
            401,
            "invalid_token",
            "token.dpop_bound_presented_as_bearer",
            id="DPOP-18",
        ),
    ],
)
def test_asgi_middleware_denials(
    asgi: tuple[BankGuardMiddleware, TinyApp],
    events: EventCollector,
    method: str,
    target: str,
    authorization: str | None,
    status: int,
    error: str | None,
    reason: str,
) -> None:
    middleware, app = asgi
    token = {
        "expired": mint(now=NOW - 3600),
        "alg-none": ".".join(
            [
                base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode(),
                mint().split(".")[1],
                "AA",
            ]
        ),
        "unknown-kid": ISSUER.mint(header={"kid": "rotated-away"}, now=NOW, audience=AUD),
        "valid": mint(),
        "dpop-bound": mint(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
    }.get(authorization or "")
    headers = []
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    elif authorization is not None:
        headers.append(("Authorization", authorization))
    got_status, got_headers, body = call_asgi(middleware, method, target, headers)
    assert got_status == status
    assert app.calls == []
    assert _header(got_headers, "content-type") == [PROBLEM]
    document = json.loads(body)
    assert document["status"] == status
    assert document["interaction_id"] == _header(got_headers, "x-fapi-interaction-id")[0]
    (challenge,) = _header(got_headers, "www-authenticate")
    assert challenge.startswith("Bearer ")
    params = auth_params(challenge)
    assert params.get("error") == error
    if error == "insufficient_scope":
        assert params["scope"] == "payments"
    event = events.events[-1]
    assert (event.outcome, event.status, event.reason) == ("deny", status, reason)
    assert event.control == ("auth" if status == 400 else "tokens")


def test_asgi_middleware_lets_a_valid_token_through(
    asgi: tuple[BankGuardMiddleware, TinyApp], events: EventCollector
) -> None:
    middleware, app = asgi
    status, headers, body = call_asgi(middleware, "GET", "/accounts", [("Authorization", f"Bearer {mint()}")])
    assert status == 200
    assert json.loads(body) == {"sub": "psu-1"}
    (who,) = app.calls
    assert (who.authenticated, who.subject, who.client_id, who.scopes) == (
        True,
        "psu-1",
        "tpp-client-1",
        {"accounts"},
    )
    assert events.events[-1].outcome == "allow"
    assert _header(headers, "cache-control") == ["no-store"]


def _fastapi_app(events: EventCollector) -> tuple[FastAPI, list[str]]:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    calls: list[str] = []

    @app.get("/accounts")
    async def accounts(who: Annotated[Principal, Security(bearer, scopes=["accounts"])]) -> dict[str, Any]:
        calls.append("accounts")
        return {"sub": who.subject, "scopes": sorted(who.scopes)}

    @app.post("/payments")
    @require_scopes("payments")
    async def payments(who: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
        calls.append("payments")
        return {"client": who.client_id}

    @app.get("/me")
    @require_scopes("profile")
    async def me(who: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
        calls.append("me")
        return {"sub": who.subject}

    policy = Policy.from_dict(
        {
            "routes": {
                "operations": [
                    {"method": "GET", "path": "/accounts"},
                    {"method": "POST", "path": "/payments"},
                    {"method": "GET", "path": "/me"},
                ]
            },
            "tokens": {
                "issuers": [
                    {"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"], "jwks": ISSUER.jwks()}
                ]
            },
            "audit": {"sink": events},
        }
    )
    return protect(app, policy), calls


def test_fastapi_app_through_testclient(events: EventCollector) -> None:
    app, calls = _fastapi_app(events)
    good = ISSUER.mint(audience=AUD, scope="accounts payments")
    with TestClient(app) as client:
        ok = client.get("/accounts", headers={"Authorization": f"Bearer {good}"})
        assert ok.status_code == 200
        assert ok.json() == {"sub": "psu-1", "scopes": ["accounts", "payments"]}
        assert calls == ["accounts"]

        missing = client.get("/accounts")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        assert missing.headers["content-type"] == PROBLEM
        assert events.events[-1].reason == "token.missing"

        expired = ISSUER.mint(audience=AUD, now=time.time() - 3600)
        bad = client.get("/accounts", headers={"Authorization": f"Bearer {expired}"})
        assert bad.status_code == 401
        assert auth_params(bad.headers["www-authenticate"])["error"] == "invalid_token"
        assert bad.json()["status"] == 401
        assert events.events[-1].reason == "token.expired"

        narrow = ISSUER.mint(audience=AUD, scope="payments")
        refused = client.get("/accounts", headers={"Authorization": f"Bearer {narrow}"})
        assert refused.status_code == 403
        assert auth_params(refused.headers["www-authenticate"])["scope"] == "accounts"
        assert events.events[-1].reason == "scope.insufficient"

        paid = client.post("/payments", headers={"Authorization": f"Bearer {narrow}"})
        assert paid.status_code == 200
        assert paid.json() == {"client": "tpp-client-1"}

        me = client.get("/me", headers={"Authorization": f"Bearer {good}"})
        assert me.status_code == 403
        assert auth_params(me.headers["www-authenticate"])["scope"] == "profile"

        twice = client.get(
            "/accounts", headers=[("Authorization", f"Bearer {good}"), ("Authorization", f"Bearer {good}")]
        )
        assert twice.status_code == 400
        assert auth_params(twice.headers["www-authenticate"])["error"] == "invalid_request"
    assert calls == ["accounts", "payments"]


# -- JWT-29: revocation through the cache ----------------------------------------------------------


def _count_verifications(guard: Guard, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    tokens = guard.tokens
    assert tokens is not None
    assert tokens.verifier is not None
    original = tokens.verifier.verify
    calls: list[str] = []

    def counting(parsed: Any, index: Any) -> VerifiedToken:
        calls.append(parsed.claims.get("jti", ""))
        return original(parsed, index)

    monkeypatch.setattr(tokens.verifier, "verify", counting)
    return calls


def test_JWT_29_evicted_token_is_verified_again(guard: Guard, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_verifications(guard, monkeypatch)
    token = mint(jti="grant-1")
    assert request(guard, token=token).allowed
    assert request(guard, token=token).allowed
    assert calls == ["grant-1"]
    assert guard.evict_token(token) is True
    assert guard.evict_token(token) is False
    assert request(guard, token=token).allowed
    assert calls == ["grant-1", "grant-1"]


def test_JWT_29_revoked_grant_refused_once_evicted(guard: Guard, monkeypatch: pytest.MonkeyPatch) -> None:
    """A revocation source (consent store, denylist) that the verifier consults only helps once the
    cached verification is forgotten: evict, and the next use is decided afresh."""
    revoked: set[str] = set()
    tokens = guard.tokens
    assert tokens is not None
    assert tokens.verifier is not None
    original = tokens.verifier.verify

    def with_denylist(parsed: Any, index: Any) -> VerifiedToken:
        if parsed.claims.get("jti") in revoked:
            raise TokenError("revoked")
        return original(parsed, index)

    monkeypatch.setattr(tokens.verifier, "verify", with_denylist)
    a, b, c = (
        mint(jti="a", client_id="tpp-1"),
        mint(jti="b", client_id="tpp-1"),
        mint(jti="c", client_id="tpp-2"),
    )
    for token in (a, b, c):
        assert request(guard, token=token).allowed
    revoked.update({"a", "b"})
    assert request(guard, token=a).allowed  # still the cached verification
    assert guard.evict_tokens(lambda t: t.client_id == "tpp-1") == 2
    for token in (a, b):
        decision = request(guard, token=token)
        assert (decision.event.status, decision.event.reason) == (401, "token.revoked")
    assert request(guard, token=c).allowed
    assert guard.evict_tokens(lambda t: t.claims.get("jti") == "zzz") == 0


# -- JWT-32 / MTLS-06 / DPOP-18: sender constraint ---------------------------------------------------


def test_JWT_32_fapi2_refuses_unbound_tokens(events: EventCollector) -> None:
    guard = Guard(make_policy("fapi2"), sink=events, clock=lambda: NOW)
    assert guard.policy.tokens.require_sender_constraint is True
    for token in (mint(), mint(cnf={})):
        decision = request(guard, token=token)
        assert (decision.event.status, decision.event.control, decision.event.reason) == (
            401,
            "tokens",
            "token.not_sender_constrained",
        )
        assert auth_params(challenge_of(guard, decision)[0])["error"] == "invalid_token"


@pytest.mark.parametrize("profile", ["fapi2", "fapi1-adv", "obie"])
def test_MTLS_06_profiles_cannot_switch_sender_constraint_off(profile: str) -> None:
    with pytest.raises(ConfigurationError):
        make_policy(profile, require_sender_constraint=False)


def test_MTLS_06_generic_profile_can_require_sender_constraint(events: EventCollector) -> None:
    guard = Guard(make_policy(require_sender_constraint=True), sink=events, clock=lambda: NOW)
    assert request(guard, token=mint()).event.reason == "token.not_sender_constrained"
    assert request(Guard(make_policy(), clock=lambda: NOW, sink=events), token=mint()).allowed


@pytest.mark.parametrize("profile", ["generic", "fapi2"])
def test_DPOP_18_dpop_bound_token_as_bearer(profile: str, events: EventCollector) -> None:
    guard = Guard(make_policy(profile), sink=events, clock=lambda: NOW)
    token = mint(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
    for _ in range(2):  # also when the verification is cached
        decision = request(guard, token=token)
        assert (decision.event.status, decision.event.reason) == (401, "token.dpop_bound_presented_as_bearer")
        (challenge,) = challenge_of(guard, decision)
        assert challenge.startswith("Bearer ")
        assert auth_params(challenge)["error"] == "invalid_token"


@pytest.mark.parametrize("profile", ["generic", "fapi2"])
def test_MTLS_02_certificate_bound_token_refused_without_a_certificate(
    profile: str, events: EventCollector
) -> None:
    # No client certificate source is configured, so no certificate is ever presented.
    guard = Guard(make_policy(profile), sink=events, clock=lambda: NOW)
    for cnf, reason in (
        ({"x5t#S256": "A4DtL2JmUMhAsvJj5tKyn64SqzmuXbMrJa0n761y5v0"}, "token.certificate_missing"),
        ({"x5t#S256": "x", "jkt": "y"}, "token.dpop_bound_presented_as_bearer"),
    ):
        decision = request(guard, token=mint(cnf=cnf))
        assert not decision.allowed
        assert (decision.event.status, decision.event.reason) == (401, reason)


@pytest.mark.parametrize(
    "cnf",
    [
        pytest.param({"x5t": "3rS0XbWTQHmlXr8_dUIJ-Fv7e3E"}, id="sha1-x5t"),
        pytest.param({"jwk": {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}}, id="jwk"),
        pytest.param({"JKT": "upper-case-member"}, id="wrong-case-jkt"),
    ],
)
def test_JWT_32_fapi2_refuses_a_cnf_without_a_verifiable_binding(
    cnf: dict[str, Any], events: EventCollector
) -> None:
    """Under FAPI only sender-constrained tokens pass, and a Bearer presentation can only be
    bound by a certificate (``x5t#S256``). A ``cnf`` naming no method bankguard verifies is
    no sender constraint; the token must be refused like an unbound one (JWT-32, MTLS-06)."""
    guard = Guard(make_policy("fapi2"), sink=events, clock=lambda: NOW)
    decision = request(guard, token=mint(cnf=cnf))
    assert not decision.allowed, f"accepted under fapi2 as sender-constrained with cnf={cnf}"
    assert decision.event.status == 401
    assert auth_params(challenge_of(guard, decision)[0])["error"] == "invalid_token"


# -- the verified-token cache -----------------------------------------------------------------------


def test_cache_serves_a_repeated_token(guard: Guard, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_verifications(guard, monkeypatch)
    token = mint(jti="t-1")
    decisions = [request(guard, token=token) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert calls == ["t-1"]
    assert {d.context.principal.subject for d in decisions} == {"psu-1"}


def test_cache_skips_verification_on_a_hit_but_checks_the_keys_are_current(
    guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached token is not verified again; its issuer's keys are still checked to be current
    (not stale beyond max_stale, JWKS-05) on every hit."""
    tokens = guard.tokens
    assert tokens is not None
    verifier = tokens.verifier
    assert verifier is not None
    source = verifier.issuers[ISS].keys
    lookups: list[int] = []
    verifications: list[int] = []
    original_current, original_verify = source.current, verifier.verify

    def spying_current() -> Any:
        lookups.append(1)
        return original_current()

    def spying_verify(*args: Any, **kwargs: Any) -> Any:
        verifications.append(1)
        return original_verify(*args, **kwargs)

    monkeypatch.setattr(source, "current", spying_current)
    monkeypatch.setattr(verifier, "verify", spying_verify)
    token = mint()
    for _ in range(3):
        assert request(guard, token=token).allowed
    assert len(verifications) == 1
    assert len(lookups) == 3  # the first verification's, then one per cache hit


def test_cache_still_checks_scopes_per_operation(guard: Guard) -> None:
    token = mint(scope="accounts")
    assert request(guard, token=token).allowed
    decision = request(guard, "POST", "/payments", token=token)
    assert (decision.event.status, decision.event.reason) == (403, "scope.insufficient")


def test_cached_token_still_expires(guard: Guard, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_verifications(guard, monkeypatch)
    token = mint(lifetime=60, jti="short")
    assert request(guard, token=token).allowed
    clock.now = NOW + 60 + 29  # default leeway: 30 s
    assert request(guard, token=token).allowed
    assert calls == ["short"]
    clock.now = NOW + 60 + 30
    decision = request(guard, token=token)
    assert (decision.event.status, decision.event.reason) == (401, "token.expired")
    clock.now = NOW  # the expired entry was dropped: this use is verified afresh
    assert request(guard, token=token).allowed
    assert calls == ["short", "short", "short"]


def test_cached_token_expires_with_zero_leeway(events: EventCollector, clock: Clock) -> None:
    guard = Guard(make_policy(leeway=0), sink=events, clock=clock)
    token = mint(lifetime=10)
    assert request(guard, token=token).allowed
    clock.now = NOW + 9.999
    assert request(guard, token=token).allowed
    clock.now = NOW + 10
    assert request(guard, token=token).event.reason == "token.expired"


def test_cache_is_keyed_by_hash(guard: Guard) -> None:
    token = mint()
    assert request(guard, token=token).allowed
    cache = guard.tokens.cache  # type: ignore[union-attr]
    assert len(cache) == 1
    keys = list(cache._entries)
    assert keys == [hashlib.sha256(token.encode("ascii")).digest()]
    assert keys == [token_key(token)]
    assert token not in repr(cache._entries)
    assert all(token not in repr(v) for v in cache._entries.values())


def test_cache_does_not_keep_failures(guard: Guard, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_verifications(guard, monkeypatch)
    bad = ISSUER.mint({"jti": "bad"}, audience="https://other.example", now=NOW)
    for _ in range(3):
        assert request(guard, token=bad).event.reason == "token.audience_mismatch"
    assert calls == ["bad", "bad", "bad"]
    assert len(guard.tokens.cache) == 0  # type: ignore[union-attr]


def test_cache_is_bounded(events: EventCollector, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = Guard(make_policy(cache_entries=2), sink=events, clock=lambda: NOW)
    calls = _count_verifications(guard, monkeypatch)
    a, b, c = mint(jti="a"), mint(jti="b"), mint(jti="c")
    for token in (a, b, c):
        assert request(guard, token=token).allowed
    assert len(guard.tokens.cache) == 2  # type: ignore[union-attr]
    assert request(guard, token=c).allowed
    assert request(guard, token=a).allowed  # the oldest went first
    assert calls == ["a", "b", "c", "a"]


def test_cache_can_be_switched_off(events: EventCollector, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = Guard(make_policy(cache_entries=0), sink=events, clock=lambda: NOW)
    calls = _count_verifications(guard, monkeypatch)
    token = mint(jti="x")
    for _ in range(3):
        assert request(guard, token=token).allowed
    assert calls == ["x", "x", "x"]


def test_cache_entries_for_distinct_spellings_are_distinct(guard: Guard) -> None:
    """The high-S twin of an ES256 signature is another string, so another cache entry; evicting
    one spelling leaves the other (revocation by predicate catches both)."""
    token = mint(jti="twin")
    h, p, s = token.split(".")
    raw = base64.urlsafe_b64decode(s + "==")
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    high_s = (order - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")
    twin = f"{h}.{p}.{base64.urlsafe_b64encode(raw[:32] + high_s).rstrip(b'=').decode()}"
    assert request(guard, token=token).allowed
    assert request(guard, token=twin).allowed
    assert len(guard.tokens.cache) == 2  # type: ignore[union-attr]
    assert guard.evict_tokens(lambda t: t.claims.get("jti") == "twin") == 2


def test_report_mode_records_but_does_not_block(events: EventCollector) -> None:
    guard = Guard(make_policy(mode="report"), sink=events, clock=lambda: NOW)
    decision = request(guard, token=mint(now=NOW - 3600))
    assert decision.allowed
    assert decision.event.outcome == "report"
    assert decision.event.reports == ("tokens:token.expired",)
    assert not decision.context.principal.authenticated


# -- fuzzing the whole check -----------------------------------------------------------------------

FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
_FUZZ_EVENTS = EventCollector()
_FUZZ_GUARD = Guard(make_policy(), sink=_FUZZ_EVENTS, clock=lambda: NOW)
_VALID = mint(scope="accounts payments", jti="fuzz")


def _outcome(token: str) -> Decision:
    return _FUZZ_GUARD.decide(make_facts("GET", "/accounts", headers=[("authorization", f"Bearer {token}")]))


def _assert_refused(decision: Decision) -> None:
    assert not decision.allowed
    assert decision.event.status in (400, 401), decision.event
    assert decision.event.control in ("auth", "tokens")
    if decision.event.status == 401:
        assert decision.denial is not None
        assert decision.denial.error in ("invalid_token", None)
    response = _FUZZ_GUARD.problem(decision)
    assert response.status == decision.event.status


def test_fuzz_baseline() -> None:
    assert _outcome(_VALID).allowed


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_authorization_value(value: str) -> None:
    decision = _FUZZ_GUARD.decide(make_facts("GET", "/accounts", headers=[("authorization", value)]))
    _assert_refused(decision)


@FUZZ
@given(st.text(alphabet=st.sampled_from('AZaz09-_.=+/~!" '), max_size=400))
def test_fuzz_bearer_token68(text: str) -> None:
    _assert_refused(_outcome(text))


@FUZZ
@given(st.data())
def test_fuzz_mutated_valid_token(data: st.DataObject) -> None:
    chars = list(_VALID)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        i = data.draw(st.integers(0, len(chars) - 1), label="at")
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "dot"]), label="op")
        if op == "flip":
            chars[i] = data.draw(
                st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
            )
        elif op == "insert":
            chars.insert(i, data.draw(st.sampled_from("A_-=.")))
        elif op == "delete":
            del chars[i]
        else:
            chars[i] = "."
    token = "".join(chars)
    decision = _outcome(token)
    if token == _VALID:
        assert decision.allowed
    else:
        _assert_refused(decision)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=12)


@FUZZ
@given(
    st.sampled_from(["header", "payload"]),
    st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "iss", "aud", "exp", "scope", "cnf", "crit", "x"]),
        _SCALARS,
        min_size=1,
        max_size=3,
    ),
)
def test_fuzz_changed_json_keeps_the_old_signature(part: str, changes: dict[str, Any]) -> None:
    h, p, s = _VALID.split(".")
    segment = h if part == "header" else p
    document = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    document.update(changes)
    encoded = _b64(json.dumps(document, separators=(",", ":")).encode())
    token = f"{encoded}.{p}.{s}" if part == "header" else f"{h}.{encoded}.{s}"
    decision = _outcome(token)
    if token == _VALID:
        assert decision.allowed
    else:
        _assert_refused(decision)


def _sign_es256(key: ec.EllipticCurvePrivateKey, signing_input: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


_ATTACKER = ec.generate_private_key(ec.SECP256R1())


@FUZZ
@given(
    st.dictionaries(st.sampled_from(["alg", "typ", "kid", "jku", "jwk", "crit", "cty"]), _SCALARS, max_size=4)
)
def test_fuzz_attacker_signed_tokens_never_pass(head_changes: dict[str, Any]) -> None:
    head = {"alg": "ES256", "typ": "at+jwt", "kid": "ec-1", **head_changes}
    p = _VALID.split(".")[1]
    signing_input = f"{_b64(json.dumps(head).encode())}.{p}"
    token = f"{signing_input}.{_b64(_sign_es256(_ATTACKER, signing_input.encode()))}"
    _assert_refused(_outcome(token))
