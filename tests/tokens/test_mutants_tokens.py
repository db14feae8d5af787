"""Access-token checks that mutation testing (scripts/mutation.sh; docs/reliability.md) found unpinned.

Each test pins a behaviour of :mod:`bankguard.tokens.jwt`, :mod:`bankguard.tokens.jose`,
:mod:`bankguard.tokens.jwk` or :mod:`bankguard.controls.tokens` that the rest of the suite left
free to change; the docstrings name what a changed line would have let through.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bankguard import EventCollector, Guard, Policy
from bankguard.testing import TestIssuer, TestPKI, make_facts
from bankguard.tokens.jose import JoseError
from bankguard.tokens.jwk import load_jwks
from bankguard.tokens.keys import KeyIndex

from .test_token_control import (
    AUD,
    ISS,
    ISSUER,
    NOW,
    Clock,
    assert_problem,
    challenge_of,
    make_policy,
    request,
)

ROTATED = TestIssuer(ISS, alg="ES256", kid="ec-2")  # the issuer's next key, published later


class RotatingKeys:
    """A refreshable key source whose refresh publishes the next key (an issuer rotating keys)."""

    refreshable = True

    def __init__(self) -> None:
        self.index = _index(ISSUER)
        self.refreshes = 0

    def current(self) -> KeyIndex | None:
        return self.index

    def refresh_unknown_kid(self) -> bool:
        self.refreshes += 1
        self.index = _index(ISSUER, ROTATED)
        return True

    def close(self) -> None:
        return None


def _index(*issuers: TestIssuer) -> KeyIndex:
    keys, skipped = load_jwks({"keys": [i.public_jwk() for i in issuers]}, frozenset({"ES256"}))
    assert not skipped
    return KeyIndex(keys)


@pytest.fixture
def rotating(monkeypatch: pytest.MonkeyPatch) -> tuple[Guard, RotatingKeys, EventCollector]:
    events = EventCollector()
    guard = Guard(make_policy(), sink=events, clock=Clock())
    assert guard.tokens is not None
    assert guard.tokens.verifier is not None
    issuers = guard.tokens.verifier.issuers
    keys = RotatingKeys()
    monkeypatch.setitem(issuers, ISS, dataclasses.replace(issuers[ISS], keys=keys))
    return guard, keys, events


def _rotated_token(**claims: Any) -> str:
    scope = claims.pop("scope", "accounts")
    return ROTATED.mint(claims, now=NOW, audience=AUD, scope=scope)


def test_JWKS_04_scopes_are_checked_after_the_refresh_that_found_the_key(
    rotating: tuple[Guard, RotatingKeys, EventCollector],
) -> None:
    """A token verified only after a key refresh must still meet the operation's scopes (AUTH-03)."""
    guard, keys, events = rotating
    decision = request(guard, "POST", "/payments", token=_rotated_token(scope="accounts"))
    assert keys.refreshes == 1
    assert not decision.allowed
    assert (decision.event.status, decision.event.reason) == (403, "scope.insufficient")
    (challenge,) = challenge_of(guard, decision)
    assert challenge.startswith('Bearer realm="api", error="insufficient_scope"')
    assert challenge.endswith(', scope="payments"')
    assert assert_problem(guard, decision, 403)["type"].endswith("/insufficient-scope")
    assert [e.reason for e in events.events] == ["scope.insufficient"]


def test_JWKS_04_token_verified_after_a_refresh_is_remembered(
    rotating: tuple[Guard, RotatingKeys, EventCollector],
) -> None:
    guard, keys, _ = rotating
    token = _rotated_token()
    first = request(guard, token=token)
    second = request(guard, token=token)
    assert first.allowed
    assert second.allowed
    assert keys.refreshes == 1  # the second request is served from the verified-token cache
    assert second.context.principal.subject == "psu-1"
    assert second.context.principal.scopes == frozenset({"accounts"})


# -- EIDAS-06 / MTLS: the principal carries the certificate of *this* request ----------------------


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI()


def _eidas_guard(pki: TestPKI, tmp_path: Path, events: EventCollector, cache_entries: int = 10) -> Guard:
    roots, intermediates = tmp_path / "roots.pem", tmp_path / "intermediates.pem"
    roots.write_bytes(TestPKI.pem_bundle(pki.root))
    intermediates.write_bytes(TestPKI.pem_bundle(pki.intermediate))
    policy = Policy.from_dict(
        {
            "trusted_proxies": ["10.0.0.0/8"],
            "tokens": {
                "issuers": [
                    {"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"], "jwks": ISSUER.jwks()}
                ],
                "cache_entries": cache_entries,
            },
            "client_cert": {
                "source": "nginx",
                "trust_anchors": str(roots),
                "intermediates": str(intermediates),
                "identity": "eidas",
            },
            "routes": {"operations": [{"method": "GET", "path": "/accounts", "scopes": ["accounts"]}]},
        }
    )
    return Guard(policy, sink=events)


def _with_certificate(guard: Guard, token: str, cert: x509.Certificate) -> Any:
    header = ("x-ssl-client-cert", quote(cert.public_bytes(serialization.Encoding.PEM).decode(), safe=""))
    return guard.decide(
        make_facts(
            "GET", "/accounts", headers=[("authorization", f"Bearer {token}"), header], peer="10.1.2.3"
        )
    )


def test_EIDAS_06_one_token_with_two_tpp_certificates_gets_each_tpp_identity(
    pki: TestPKI, tmp_path: Path
) -> None:
    """The merged principal (token + certificate identity) is remembered per token *and* TPP:
    the same token presented with another TPP's certificate must never get the first TPP's identity."""
    cert_a, _ = pki.leaf("a.example", organization_identifier="PSDGB-FCA-111111", roles=("PSP_AI",))
    cert_b, _ = pki.leaf("b.example", organization_identifier="PSDGB-FCA-222222", roles=("PSP_AI", "PSP_PI"))
    events = EventCollector()
    guard = _eidas_guard(pki, tmp_path, events)
    token = ISSUER.mint(audience=AUD)
    seen = []
    for cert in (cert_a, cert_b, cert_a, cert_b):
        decision = _with_certificate(guard, token, cert)
        assert decision.allowed, events.events[-1].reason
        seen.append((decision.principal.tpp_id, decision.principal.roles, events.events[-1].tpp_id))
    a = ("PSDGB-FCA-111111", frozenset({"PSP_AI"}), "PSDGB-FCA-111111")
    b = ("PSDGB-FCA-222222", frozenset({"PSP_AI", "PSP_PI"}), "PSDGB-FCA-222222")
    assert seen == [a, b, a, b]


def test_OWASP_15_remembered_principals_stay_bounded(pki: TestPKI, tmp_path: Path) -> None:
    """More tokens than ``tokens.cache_entries`` with one TPP certificate: every request is still
    decided (the oldest remembered principal is dropped) and the memory stays bounded."""
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = _eidas_guard(pki, tmp_path, events, cache_entries=2)
    tokens = [ISSUER.mint(audience=AUD, claims={"sub": f"psu-{i}"}) for i in range(5)]
    for i, token in enumerate(tokens):
        decision = _with_certificate(guard, token, cert)
        assert decision.allowed, events.events[-1].reason
        assert (decision.principal.subject, decision.principal.tpp_id) == (f"psu-{i}", "PSDGB-FCA-123456")
    assert guard.tokens is not None
    assert len(guard.tokens._variants) <= 2


def _plain_mtls_guard(events: EventCollector) -> Guard:
    policy = Policy.from_dict(
        {
            "trusted_proxies": ["10.0.0.0/8"],
            "tokens": {
                "issuers": [
                    {"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"], "jwks": ISSUER.jwks()}
                ]
            },
            "client_cert": {"source": "nginx"},
            "routes": {"operations": [{"method": "GET", "path": "/accounts", "scopes": ["accounts"]}]},
        }
    )
    return Guard(policy, sink=events)


@pytest.mark.parametrize("x5t", ["\u00e9" * 43, 42, None, ["a"]], ids=["non-ascii", "number", "null", "list"])
def test_MTLS_03_malformed_certificate_thumbprint_in_the_token_is_a_mismatch(pki: TestPKI, x5t: Any) -> None:
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = _plain_mtls_guard(events)
    token = ISSUER.mint({"cnf": {"x5t#S256": x5t}}, audience=AUD)
    decision = _with_certificate(guard, token, cert)
    assert not decision.allowed
    assert (events.events[-1].status, events.events[-1].reason) == (401, "token.certificate_mismatch")


def test_AUTH_03_scopes_are_checked_on_a_remembered_token_and_certificate(
    pki: TestPKI, tmp_path: Path
) -> None:
    """The second request of the same token with the same certificate is answered from what the
    first established; it still gets the full 403 ``insufficient_scope`` challenge."""
    cert, _ = pki.leaf()
    events = EventCollector()
    guard = _eidas_guard(pki, tmp_path, events)
    token = ISSUER.mint(audience=AUD, scope="payments")
    for _ in range(2):
        decision = _with_certificate(guard, token, cert)
        assert not decision.allowed
        assert (decision.event.status, decision.event.reason) == (403, "scope.insufficient")
        (challenge,) = challenge_of(guard, decision)
        assert 'error="insufficient_scope"' in challenge
        assert challenge.endswith(', scope="accounts"')


# -- JWT-20 / JWT-27: claim types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"sub": 42}, "claim_type:sub", id="sub-number"),
        pytest.param({"sub": ""}, "claim_type:sub", id="sub-empty"),
        pytest.param({"client_id": ["tpp"]}, "claim_type:client_id", id="client-id-list"),
        pytest.param({"jti": 42}, "claim_type:jti", id="jti-number"),
        pytest.param({"jti": ""}, "claim_type:jti", id="jti-empty"),
    ],
)
def test_JWT_20_claims_of_the_wrong_type_are_refused(claims: dict[str, Any], reason: str) -> None:
    guard = Guard(make_policy(), sink=EventCollector(), clock=Clock())
    decision = request(guard, token=ISSUER.mint(claims, now=NOW, audience=AUD))
    assert not decision.allowed
    assert (decision.event.status, decision.event.reason) == (401, f"token.{reason}")


@pytest.mark.parametrize("name", ["iat", "nbf"])
def test_JWT_27_numeric_date_zero_as_a_float_is_a_date(name: str) -> None:
    guard = Guard(make_policy(), sink=EventCollector(), clock=Clock())
    decision = request(guard, token=ISSUER.mint({name: 0.0}, now=NOW, audience=AUD))
    assert decision.allowed, decision.event


# -- JWKS-03: reading key sets ---------------------------------------------------------------------------


@pytest.mark.parametrize("document", [[], "keys", {"keys": "x"}, {"keys": {}}, None], ids=str)
def test_JWKS_03_not_a_key_set(document: Any) -> None:
    with pytest.raises(JoseError) as refused:
        load_jwks(document, frozenset({"ES256"}))
    assert refused.value.reason == "jwks_not_a_key_set"


def test_JWKS_03_entries_that_are_not_objects_are_skipped_not_fatal() -> None:
    keys, skipped = load_jwks({"keys": [42, ISSUER.public_jwk(), "x"]}, frozenset({"ES256"}))
    assert [k.kid for k in keys] == ["ec-1"]
    assert skipped == ["keys[0]: not an object", "keys[2]: not an object"]


def test_JWKS_03_at_most_64_keys_are_read() -> None:
    jwk = ISSUER.public_jwk()
    keys, skipped = load_jwks({"keys": [jwk] * 64}, frozenset({"ES256"}))
    assert (len(keys), skipped) == (64, [])
    keys, skipped = load_jwks({"keys": [jwk] * 65}, frozenset({"ES256"}))
    assert (len(keys), skipped) == (64, ["keys beyond the first 64 ignored"])


@pytest.mark.parametrize(
    ("member", "value", "reason"),
    [
        pytest.param("n", "!!", "jwk_n_not_base64url", id="n-alphabet"),
        pytest.param("e", 65537, "jwk_e_not_string", id="e-number"),
        pytest.param("n", "", "jwk_n_empty", id="n-empty"),
    ],
)
def test_JWKS_03_skipped_rsa_key_reasons_name_the_member(member: str, value: Any, reason: str) -> None:
    jwk = {"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB", member: value}
    keys, skipped = load_jwks({"keys": [jwk]}, frozenset({"RS256"}))
    assert keys == []
    assert skipped == [f"keys[0] kid='r': {reason}"]


# -- JWKS-06: a key change drops remembered tokens ----------------------------------------------------


class WithdrawingKeys(RotatingKeys):
    """A key source that notifies its listeners when the issuer withdraws its key."""

    refreshable = False

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[Any] = []

    def withdraw(self) -> None:
        self.index = _index(ROTATED)
        for listener in self.listeners:
            listener()


def test_JWKS_06_withdrawn_key_stops_remembered_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """A verified token is remembered; when the issuer's key set changes (the source notifies its
    listeners), remembered tokens are dropped and a token of a withdrawn key is refused at once."""
    keys = WithdrawingKeys()
    monkeypatch.setattr("bankguard.tokens.runtime.key_source", lambda issuer, where: keys)
    guard = Guard(make_policy(), sink=EventCollector(), clock=Clock())
    token = ISSUER.mint(now=NOW, audience=AUD)
    assert request(guard, token=token).allowed
    assert request(guard, token=token).allowed  # remembered
    keys.withdraw()
    decision = request(guard, token=token)
    assert not decision.allowed
    assert (decision.event.status, decision.event.reason) == (401, "token.kid_unknown")


def test_AUTH_06_auth_in_report_mode_records_and_lets_through() -> None:
    events = EventCollector()
    guard = Guard(make_policy(), sink=events, clock=Clock())
    data = {
        "auth": {"mode": "report"},
        "routes": {"operations": [{"method": "GET", "path": "/health", "public": True}]},
    }
    reported = Guard(Policy.from_dict(data), sink=events, clock=Clock())
    twice = [("authorization", "Bearer a"), ("authorization", "Bearer b")]
    assert request(guard, "GET", "/health", headers=twice).event.status == 400
    decision = request(reported, "GET", "/health", headers=twice)
    assert decision.allowed
    assert "authorization.duplicate" in str(decision.event.reports)
