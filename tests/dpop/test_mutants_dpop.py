"""DPoP checks that mutation testing (scripts/mutation.sh; docs/reliability.md) found unpinned.

Each test pins a behaviour of :mod:`bankguard.tokens.dpop` or :mod:`bankguard.tokens.dpop_nonce`
that the rest of the suite left free to change:

* DPOP-10: the request path a server hands over already decoded is escaped again before it is
  normalised, so a literal ``%`` never turns into an escape, and dot-segments of a relative path
  are removed segment by segment (RFC 3986 §5.2.4);
* DPOP-28: a proof of exactly ``max_proof_bytes`` is accepted, one byte more is 431;
* DPOP-15: with a client certificate in play, the key binding of every DPoP request is checked,
  never skipped because an earlier request with the same token and certificate passed;
* INTRO-03 / INTRO-05: an introspected token must grant the operation's scopes, its claims are
  checked locally, its principal carries what introspection said; an unreachable endpoint is 503
  with ``Retry-After``;
* DPOP-23 / DPOP-25: the nonce format is fixed (a version byte, the issue time in milliseconds,
  8 random bytes, the first 16 bytes of HMAC-SHA256 under a key derived from the configured
  secret), so replicas and restarts of any version agree on it; the clock skew tolerated between
  replicas is inclusive.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization

from bankguard import Guard
from bankguard.testing import TestPKI, make_facts
from bankguard.tokens.dpop import request_path
from bankguard.tokens.jose import b64url_encode

from . import test_standards as std
from .test_units import NOW, Clock, issuer

SECRET = b"k" * 32


# -- DPOP-10: paths handed over decoded --------------------------------------------------------------


@pytest.mark.parametrize(
    ("decoded", "expected"),
    [
        pytest.param("/100%", "/100%25", id="trailing-percent"),
        pytest.param("/a%41", "/a%2541", id="percent-then-hex"),
        pytest.param("/a%2Fb", "/a%252Fb", id="escaped-slash-text"),
    ],
)
def test_DPOP_10_literal_percent_in_a_decoded_path_stays_a_percent(decoded: str, expected: str) -> None:
    assert request_path(None, decoded) == expected
    # the same request with its raw path: the percent sign arrives escaped
    assert request_path(expected.encode("ascii"), decoded) == expected


@pytest.mark.parametrize(
    ("decoded", "expected"),
    [
        pytest.param("a/./b", "/a/b", id="dot"),
        pytest.param("a/../b", "/b", id="dot-dot"),
        pytest.param("a/b/..", "/a/", id="trailing-dot-dot"),
    ],
)
def test_DPOP_10_relative_decoded_path_loses_its_dot_segments(decoded: str, expected: str) -> None:
    assert request_path(None, decoded) == expected


# -- DPOP-23 / DPOP-25: the nonce format -------------------------------------------------------------


def _nonce(secret: bytes, issued_ms: int, random: bytes = b"\x07" * 8, version: bytes = b"\x01") -> str:
    """A nonce built from the documented format alone, as another replica would build it."""
    key = hmac.new(secret, b"bankguard dpop-nonce v1", hashlib.sha256).digest()
    body = struct.pack(">cQ8s", version, issued_ms, random)
    return b64url_encode(body + hmac.new(key, body, hashlib.sha256).digest()[:16])


def test_DPOP_25_nonce_built_from_the_format_is_accepted() -> None:
    clock = Clock()
    nonces = issuer(clock, SECRET)
    nonce = _nonce(SECRET, int(NOW * 1000) - 2500)
    assert nonces.age(nonce) == pytest.approx(2.5)


def test_DPOP_25_nonce_tag_needs_the_derived_key() -> None:
    nonces = issuer(Clock(), SECRET)
    issued = int(NOW * 1000)
    body = struct.pack(">cQ8s", b"\x01", issued, b"\x07" * 8)
    raw_secret_tag = hmac.new(SECRET, body, hashlib.sha256).digest()[:16]  # the secret used directly
    assert nonces.age(b64url_encode(body + raw_secret_tag)) is None
    assert nonces.age(_nonce(SECRET, issued, version=b"\x02")) is None  # an unknown version


def test_DPOP_23_issued_nonce_has_the_documented_layout() -> None:
    nonces = issuer(Clock(), SECRET)
    nonce = nonces.issue()
    assert len(nonce) == 44
    decoded = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    version, issued_ms, random = struct.unpack(">cQ8s", decoded[:17])
    assert (version, issued_ms) == (b"\x01", int(NOW * 1000))
    assert nonce == _nonce(SECRET, issued_ms, random)


def test_DPOP_23_replica_skew_of_exactly_five_seconds_is_tolerated() -> None:
    clock = Clock()
    nonces = issuer(clock, SECRET)
    ahead = _nonce(SECRET, int(NOW * 1000) + 5000)  # issued by a replica 5 s ahead
    assert nonces.age(ahead) == 0.0
    assert nonces.age(_nonce(SECRET, int(NOW * 1000) + 5001)) is None


# -- DPOP-28: the proof size cap is inclusive -----------------------------------------------------------


def test_DPOP_28_proof_of_exactly_the_cap_is_accepted() -> None:
    token = std.mint()
    proof = std.proof(token=token, claims={"pad": "p" * 1200})
    at_cap = std.make_guard(std.make_policy(dpop={"max_proof_bytes": len(proof)}))
    decision = std.decide(at_cap, std.dpop_headers(token, proof))
    assert decision.allowed, decision.event
    below = std.make_guard(std.make_policy(dpop={"max_proof_bytes": len(proof) - 1}))
    refused = std.decide(below, std.dpop_headers(token, proof))
    assert (refused.event.status, refused.event.reason) == (431, "dpop.proof_too_large")


# -- DPOP-15 with a certificate: the key binding is checked on every request ---------------------------


def test_DPOP_15_key_binding_is_checked_again_with_a_remembered_certificate(tmp_path: Path) -> None:
    """With a client certificate (and a TPP identity) in play, what one DPoP request established is
    never reused to skip the key-binding check of the next: a proof by another key is refused."""
    pki = TestPKI()
    roots, intermediates = tmp_path / "roots.pem", tmp_path / "inter.pem"
    roots.write_bytes(TestPKI.pem_bundle(pki.root))
    intermediates.write_bytes(TestPKI.pem_bundle(pki.intermediate))
    cert, _ = pki.leaf()
    guard = std.make_guard(
        std.make_policy(
            trusted_proxies=["127.0.0.0/8"],
            client_cert={
                "source": "nginx",
                "trust_anchors": str(roots),
                "intermediates": str(intermediates),
                "identity": "eidas",
            },
        )
    )
    certificate = (
        "x-ssl-client-cert",
        quote(cert.public_bytes(serialization.Encoding.PEM).decode(), safe=""),
    )
    token = std.mint(std.KEY)
    first = std.decide(guard, [*std.dpop_headers(token, std.proof(token=token)), certificate])
    assert first.allowed, first.event
    assert (first.context.principal.binding, first.context.principal.tpp_id) == ("dpop", "PSDGB-FCA-123456")
    stolen = std.decide(guard, [*std.dpop_headers(token, std.proof(std.OTHER_KEY, token=token)), certificate])
    assert not stolen.allowed
    assert (stolen.event.status, stolen.event.reason) == (401, "token.dpop_key_mismatch")
    again = std.decide(guard, [*std.dpop_headers(token, std.proof(token=token)), certificate])
    assert again.allowed, again.event


# -- INTRO-03: introspected tokens get the local checks ---------------------------------------------


@pytest.fixture
def introspection(monkeypatch: pytest.MonkeyPatch) -> Iterator[std.IntrospectionServer]:
    monkeypatch.setenv(std.INTROSPECTION_ENV, "rs-secret")
    server = std.IntrospectionServer()
    yield server
    server.stop()


def _introspection_guard(url: str, **checks: Any) -> Guard:
    """Bearer tokens verified by introspection at ``url``; ``checks``: ``issuer``, ``audiences``."""
    config = {
        "endpoint": url,
        "client_id": "rs",
        "client_secret_env": std.INTROSPECTION_ENV,
        "insecure_http": True,
        "timeout": "2s",
        **checks,
    }
    return std.make_guard(std.make_policy(tokens={"introspection": config}))


@pytest.mark.network
def test_INTRO_03_introspected_token_must_grant_the_operation_scopes(
    introspection: std.IntrospectionServer,
) -> None:
    guard = std.introspection_guard(introspection)
    introspection.answers["opaque-payments"] = std.active(None, None, scope="payments")
    decision = std.decide(guard, [("authorization", "Bearer opaque-payments")])
    assert not decision.allowed
    assert (decision.event.status, decision.event.reason) == (403, "scope.insufficient")
    (challenge,) = [v for k, v in guard.problem(decision).headers if k == "www-authenticate"]
    assert challenge.endswith('scope="accounts"')


@pytest.mark.network
@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"aud": "https://other-rs.example"}, id="audience"),
        pytest.param({"exp": int(std.NOW) - 60}, id="expired"),
        pytest.param({"iss": "https://other-as.example"}, id="issuer"),
    ],
)
def test_INTRO_03_introspected_claims_are_checked_locally(
    introspection: std.IntrospectionServer, claims: dict[str, Any]
) -> None:
    guard = _introspection_guard(introspection.url, issuer=std.ISS, audiences=[std.ORIGIN])
    introspection.answers["opaque"] = std.active(None, None, **{"iss": std.ISS, "aud": std.ORIGIN, **claims})
    decision = std.decide(guard, [("authorization", "Bearer opaque")])
    assert not decision.allowed
    assert decision.event.status == 401
    assert decision.event.reason.startswith("token.")


@pytest.mark.network
def test_INTRO_03_introspected_principal(introspection: std.IntrospectionServer) -> None:
    guard = std.introspection_guard(introspection)
    introspection.answers["opaque"] = std.active(None, None, scope="accounts payments", acr="sca")
    decision = std.decide(guard, [("authorization", "Bearer opaque")])
    assert decision.allowed, decision.event
    principal = decision.context.principal
    assert (principal.subject, principal.client_id) == ("psu-1", "tpp")
    assert principal.scopes == frozenset({"accounts", "payments"})
    assert principal.claims["acr"] == "sca"
    assert principal.binding is None


@pytest.mark.network
def test_INTRO_05_unreachable_introspection_is_503_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(std.INTROSPECTION_ENV, "rs-secret")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    guard = _introspection_guard(f"http://127.0.0.1:{port}/introspect")
    decision = std.decide(guard, [("authorization", "Bearer opaque")])
    assert not decision.allowed
    assert decision.event.status == 503
    assert decision.event.reason.startswith("token.introspection_unavailable:")
    response = guard.problem(decision)
    assert response.status == 503
    assert dict(response.headers)["retry-after"] == "5"


def test_DPOP_10_without_a_raw_path_the_decoded_path_is_compared() -> None:
    """A WSGI server gives only the decoded path: the proof's ``htu`` is compared with it."""
    guard = std.make_guard()
    token = std.mint()
    facts = make_facts("GET", "/accounts", headers=std.dpop_headers(token, std.proof(token=token)))
    decision = guard.decide(dataclasses.replace(facts, raw_path=None))
    assert decision.allowed, decision.event
    other = make_facts("GET", "/accounts/1", headers=std.dpop_headers(token, std.proof(token=token)))
    refused = guard.decide(dataclasses.replace(other, raw_path=None))
    assert (refused.event.status, refused.event.reason) == (401, "dpop.htu_path_mismatch")
