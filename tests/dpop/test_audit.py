"""What audit events say about DPoP requests (STANDARDS AUTH-09; docs/security.md).

An accepted DPoP request records ``binding: dpop``; no event ever holds the access token, the
proof, the ``jti`` or the proof key's thumbprint.
"""

from __future__ import annotations

import json

from bankguard import Guard, Policy
from bankguard.testing import DPoPKey, EventCollector, TestIssuer, make_facts

NOW = 1_767_225_600.0
ORIGIN = "https://api.bank.example"
ISSUER = TestIssuer("https://as.bank.example", alg="ES256")
POLICY = Policy.from_dict(
    {
        "profile": "fapi2",
        "external_origins": [ORIGIN],
        "tokens": {
            "issuers": [
                {
                    "issuer": ISSUER.issuer,
                    "audiences": [ORIGIN],
                    "algorithms": ["ES256"],
                    "jwks": ISSUER.jwks(),
                }
            ]
        },
        "routes": {"operations": [{"method": "GET", "path": "/accounts", "scopes": ["accounts"]}]},
        "dpop": {"enabled": True},
    }
)


def test_AUTH_09_dpop_events_carry_the_binding_and_no_secrets() -> None:
    events = EventCollector()
    guard = Guard(POLICY, sink=events, clock=lambda: NOW)
    key = DPoPKey("ES256")
    token = ISSUER.mint(dpop_key=key, now=NOW)
    proof = key.proof("GET", f"{ORIGIN}/accounts", access_token=token, iat=NOW, jti="jti-audit-1")
    headers = [("authorization", f"DPoP {token}"), ("dpop", proof)]

    assert guard.decide(make_facts("GET", "/accounts", headers=headers)).allowed
    replay = guard.decide(make_facts("GET", "/accounts", headers=headers))
    assert not replay.allowed

    allowed, denied = events.events
    assert (allowed.outcome, allowed.binding, allowed.client_id) == ("allow", "dpop", "tpp-client-1")
    assert (denied.outcome, denied.reason) == ("deny", "dpop.replayed")
    for event in events.events:
        text = event.to_json()
        for secret in (token, proof, "jti-audit-1", key.thumbprint, *token.split("."), *proof.split(".")):
            assert secret not in text
        assert json.loads(text)["binding"] in ("dpop", None)


def test_bearer_events_have_no_binding() -> None:
    events = EventCollector()
    guard = Guard(POLICY, sink=events, clock=lambda: NOW)
    decision = guard.decide(make_facts("GET", "/accounts", headers=[("authorization", "Bearer x.y.z")]))
    assert not decision.allowed
    assert events.events[0].binding is None
