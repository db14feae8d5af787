"""Interoperability: bankguard accepts DPoP proofs made by an independent client (RFC 9449).

The proofs here are made by ``requests-oauth2client`` (keys and JWS by ``jwskate``), not by
:mod:`bankguard.testing`, so a shared misreading of RFC 9449 between bankguard's verifier and
its own test helpers cannot hide:

* in process, through :meth:`Guard.decide` on a fixed clock: the library's proofs for ES256,
  PS256 (the library's default 4096-bit key) and EdDSA (Ed25519) are accepted with a token
  bound to the library's ``dpop_jkt``, which equals bankguard's RFC 7638 thumbprint
  (DPOP-15); the library's proofs for another method, URL, origin, token or key are refused
  with the audit reason of the failed check (DPOP-09, DPOP-10, DPOP-11, DPOP-14, DPOP-15);
* over real HTTP on 127.0.0.1: a FastAPI app protected with :func:`bankguard.protect` under
  uvicorn (in a thread, on a free port, stopped at the end of each test), called with
  ``requests`` and the library's ``DPoPToken`` auth: accepted (GET, GET with a query, POST);
  the same proof sent twice is refused the second time (DPOP-13); with server nonces, the
  library's first request gets ``use_dpop_nonce`` and a ``DPoP-Nonce``, and its automatic
  retry with that nonce is accepted (DPOP-23);
* STANDARDS §11 vectors V1 (thumbprint) and V2 (``ath``) computed by bankguard and by the
  library, and a proof from bankguard's test helper verified by the library's own validator.

The RFC 9449 §4.2 / §7.1 example proof JWS is not checked here: no installed package ships its
text.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwskate
import pytest
import requests
import uvicorn
from fastapi import FastAPI, Request
from requests.adapters import HTTPAdapter
from requests_oauth2client import DPoPKey as ClientKey
from requests_oauth2client import DPoPToken, validate_dpop_proof

from bankguard import EventCollector, Guard, Policy, get_context, protect
from bankguard.decision import Decision
from bankguard.testing import DPoPKey, TestIssuer, make_facts
from bankguard.tokens.dpop import access_token_hash
from bankguard.tokens.jwk import thumbprint

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ORIGIN = "https://api.bank.example"
ACCOUNTS = f"{ORIGIN}/accounts"
ISS = "https://as.bank.example"
ALGS = ("ES256", "PS256", "EdDSA")
HOST = "127.0.0.1"
NONCE_ENV = "BANKGUARD_TEST_INTEROP_DPOP_NONCE_KEY"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0

ISSUER = TestIssuer(ISS, alg="ES256", kid="interop-1")

OPERATIONS: list[dict[str, Any]] = [
    {"method": "GET", "path": "/accounts", "id": "listAccounts", "scopes": ["accounts"]},
    {"method": "POST", "path": "/payments", "id": "createPayment", "scopes": ["accounts"]},
]

# STANDARDS §11.
V1_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
}
V1_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
V2_TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
V2_ATH = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


# -- helpers -----------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy_data(*, origin: str = ORIGIN, sink: Any = None, nonce: bool = False) -> dict[str, Any]:
    dpop: dict[str, Any] = {"enabled": True}
    if nonce:
        dpop["nonce"] = {"enabled": True, "secret_env": NONCE_ENV}
    data: dict[str, Any] = {
        "profile": "generic",
        "routes": {"operations": OPERATIONS},
        "tokens": {
            "issuers": [
                {"issuer": ISS, "audiences": [ORIGIN], "algorithms": ["ES256"], "jwks": ISSUER.jwks()}
            ]
        },
        "external_origins": [origin],
        "dpop": dpop,
    }
    if sink is not None:
        data["audit"] = {"sink": sink}
    return data


def client_key(alg: str, *, now: float | None = NOW) -> ClientKey:
    """A library DPoP key; with ``now``, its proofs carry that ``iat`` (the library's own hook)."""
    if now is None:
        return ClientKey.generate(alg=alg)
    return ClientKey.generate(alg=alg, iat_generator=lambda: int(now))


def bound_token(key: ClientKey, *, now: float = NOW) -> str:
    """A token from ISSUER bound (``cnf.jkt``) to the library key's own thumbprint."""
    return ISSUER.mint({"cnf": {"jkt": key.dpop_jkt}}, now=now, audience=ORIGIN, lifetime=3600)


def library_ath(token: str) -> str:
    """``ath`` as the library computes it: from the proof it adds to a real ``requests`` request."""
    prepared = requests.Request(
        "GET", ACCOUNTS, auth=DPoPToken(token, _dpop_key=client_key("ES256"))
    ).prepare()
    ath = jwskate.SignedJwt(prepared.headers["DPoP"]).claims["ath"]
    assert isinstance(ath, str)
    return ath


def decide(guard: Guard, method: str, target: str, token: str, proof: object) -> Decision:
    return guard.decide(
        make_facts(method, target, headers=[("authorization", f"DPoP {token}"), ("dpop", str(proof))])
    )


def challenge_params(challenge: str) -> dict[str, str]:
    """``k="v"`` parameters of one challenge (values in these tests hold no quotes or commas)."""
    _, _, rest = challenge.partition(" ")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        name, _, value = item.partition("=")
        params[name.strip()] = value.strip().strip('"')
    return params


@pytest.fixture(scope="module")
def keys() -> dict[str, ClientKey]:
    """One library key per algorithm (the PS256 one is the library's default 4096-bit RSA)."""
    return {alg: client_key(alg) for alg in ALGS}


@pytest.fixture
def events() -> EventCollector:
    return EventCollector()


@pytest.fixture
def guard(events: EventCollector) -> Guard:
    return Guard(Policy.from_dict(policy_data()), sink=events, clock=Clock())


# -- in process: library proofs through Guard.decide --------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_DPOP_15_interop_thumbprint_matches_library(keys: dict[str, ClientKey], alg: str) -> None:
    key = keys[alg]
    public = key.public_jwk.to_dict()
    assert public["kty"] == {"ES256": "EC", "PS256": "RSA", "EdDSA": "OKP"}[alg]
    assert "d" not in public
    assert thumbprint(public) == key.dpop_jkt


@pytest.mark.parametrize("alg", ALGS)
def test_DPOP_17_interop_library_proof_is_accepted(
    keys: dict[str, ClientKey], guard: Guard, events: EventCollector, alg: str
) -> None:
    key = keys[alg]
    token = bound_token(key)
    proof = key.proof("GET", ACCOUNTS, ath=access_token_hash(token))
    assert proof.headers["alg"] == alg
    assert proof.headers["typ"] == "dpop+jwt"

    decision = decide(guard, "GET", "/accounts", token, proof)

    assert decision.allowed, decision.event.reason
    assert decision.principal.binding == "dpop"
    assert decision.principal.subject == "psu-1"
    assert decision.principal.scopes == frozenset({"accounts"})
    assert [(e.outcome, e.reason) for e in events.events] == [("allow", None)]


def test_DPOP_10_interop_library_drops_query_from_htu(keys: dict[str, ClientKey], guard: Guard) -> None:
    key = keys["ES256"]
    token = bound_token(key)
    proof = key.proof("GET", f"{ACCOUNTS}?page=2#top", ath=access_token_hash(token))
    assert proof.claims["htu"] == ACCOUNTS
    decision = decide(guard, "GET", "/accounts?page=2", token, proof)
    assert decision.allowed, decision.event.reason


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize(
    ("htm", "htu", "reason"),
    [
        pytest.param("POST", ACCOUNTS, "dpop.htm_mismatch", id="DPOP-09-method"),
        pytest.param("GET", f"{ORIGIN}/payments", "dpop.htu_path_mismatch", id="DPOP-10-path"),
        pytest.param("GET", f"{ACCOUNTS}/", "dpop.htu_path_mismatch", id="DPOP-10-trailing-slash"),
        pytest.param(
            "GET", "https://other.bank.example/accounts", "dpop.htu_origin_mismatch", id="DPOP-11-origin"
        ),
    ],
)
def test_DPOP_09_10_11_interop_library_proof_for_another_request_is_refused(
    keys: dict[str, ClientKey],
    guard: Guard,
    events: EventCollector,
    alg: str,
    htm: str,
    htu: str,
    reason: str,
) -> None:
    key = keys[alg]
    token = bound_token(key)
    decision = decide(guard, "GET", "/accounts", token, key.proof(htm, htu, ath=access_token_hash(token)))
    assert_refused(guard, decision, events, reason, "invalid_dpop_proof")


@pytest.mark.parametrize("alg", ALGS)
def test_DPOP_14_interop_library_proof_for_another_token_is_refused(
    keys: dict[str, ClientKey], guard: Guard, events: EventCollector, alg: str
) -> None:
    key = keys[alg]
    token, other = bound_token(key), bound_token(key)
    assert token != other
    decision = decide(
        guard, "GET", "/accounts", token, key.proof("GET", ACCOUNTS, ath=access_token_hash(other))
    )
    assert_refused(guard, decision, events, "dpop.ath_mismatch", "invalid_dpop_proof")


@pytest.mark.parametrize("alg", ALGS)
def test_DPOP_14_interop_library_proof_without_ath_is_refused(
    keys: dict[str, ClientKey], guard: Guard, events: EventCollector, alg: str
) -> None:
    key = keys[alg]
    token = bound_token(key)
    proof = key.proof("GET", ACCOUNTS)
    assert "ath" not in proof.claims
    decision = decide(guard, "GET", "/accounts", token, proof)
    assert_refused(guard, decision, events, "dpop.ath_missing", "invalid_dpop_proof")


@pytest.mark.parametrize("alg", ALGS)
def test_DPOP_15_interop_library_proof_by_another_key_is_refused(
    keys: dict[str, ClientKey], guard: Guard, events: EventCollector, alg: str
) -> None:
    """Token bound to the ES256 library key; a valid proof signed by another library key."""
    bound_to = keys["ES256"] if alg != "ES256" else client_key("ES256")
    token = bound_token(bound_to)
    key = keys[alg]
    assert key.dpop_jkt != bound_to.dpop_jkt
    decision = decide(
        guard, "GET", "/accounts", token, key.proof("GET", ACCOUNTS, ath=access_token_hash(token))
    )
    assert_refused(guard, decision, events, "token.dpop_key_mismatch", "invalid_token")


def assert_refused(guard: Guard, decision: Decision, events: EventCollector, reason: str, error: str) -> None:
    assert not decision.allowed
    assert (decision.event.status, decision.event.control, decision.event.reason) == (401, "tokens", reason)
    assert events.events == [decision.event]
    response = guard.problem(decision)
    assert response.status == 401
    challenges = [v for k, v in response.headers if k == "www-authenticate"]
    assert len(challenges) == 1, challenges
    assert challenges[0].startswith("DPoP ")
    params = challenge_params(challenges[0])
    assert params["algs"] == " ".join(ALGS)
    assert params["error"] == error
    assert params["error_description"]
    assert dict(response.headers)["content-type"] == "application/problem+json"
    assert json.loads(response.body)["type"].endswith("/" + error.replace("_", "-"))


# -- STANDARDS §11 vectors ---------------------------------------------------------------------


def test_DPOP_15_V1_thumbprint_by_bankguard_and_jwskate() -> None:
    assert thumbprint(V1_JWK) == V1_JKT
    assert jwskate.Jwk(V1_JWK).thumbprint() == V1_JKT
    # Member order and extra public members do not change it (RFC 7638 §3.2, §3.3).
    reordered = {
        "y": V1_JWK["y"],
        "x": V1_JWK["x"],
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "use": "sig",
    }
    assert thumbprint(reordered) == V1_JKT
    assert jwskate.Jwk(reordered).thumbprint() == V1_JKT


def test_DPOP_14_V2_ath_by_bankguard_and_library() -> None:
    assert access_token_hash(V2_TOKEN) == V2_ATH
    assert library_ath(V2_TOKEN) == V2_ATH


def test_DPOP_14_interop_ath_agrees_with_library_on_issued_tokens() -> None:
    token = ISSUER.mint(now=NOW, audience=ORIGIN)
    assert library_ath(token) == access_token_hash(token)


def test_DPOP_interop_bankguard_helper_proof_verifies_with_library() -> None:
    """The reverse direction: the helper bankguard's own tests use makes standard proofs."""
    key = DPoPKey("ES256")
    token = ISSUER.mint(audience=ORIGIN, dpop_key=key)
    proof = key.proof("GET", ACCOUNTS, access_token=token)
    # algs, not alg: the library's validator ignores ``alg`` when ``algs`` keeps its default.
    verified = validate_dpop_proof(
        proof, htm="GET", htu=ACCOUNTS, ath=access_token_hash(token), algs=("ES256",)
    )
    assert verified.headers["jwk"] == key.public_jwk
    assert jwskate.Jwk(key.public_jwk).thumbprint() == key.thumbprint


# -- over real HTTP: uvicorn on 127.0.0.1, requests with the library's DPoPToken ---------------


@dataclass
class Served:
    origin: str
    events: EventCollector


def make_app() -> FastAPI:
    app = FastAPI()

    def who(request: Request) -> dict[str, Any]:
        principal = get_context(request.scope).principal
        return {"subject": principal.subject, "binding": principal.binding}

    @app.get("/accounts")
    def accounts(request: Request) -> dict[str, Any]:
        return {**who(request), "query": dict(request.query_params)}

    @app.post("/payments")
    async def payments(request: Request) -> dict[str, Any]:
        return {**who(request), "received": len(await request.body())}

    return app


@contextlib.contextmanager
def served(monkeypatch: pytest.MonkeyPatch, *, nonce: bool = False) -> Iterator[Served]:
    """The protected app under uvicorn in a thread, on a socket bound to a free port."""
    if nonce:
        monkeypatch.setenv(NONCE_ENV, "interop-nonce-key-" + uuid.uuid4().hex)  # read at policy load
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    origin = f"http://{HOST}:{sock.getsockname()[1]}"
    events = EventCollector()
    app = protect(make_app(), Policy.from_dict(policy_data(origin=origin, sink=events, nonce=nonce)))
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", ws="none", proxy_headers=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-interop", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            assert thread.is_alive(), "uvicorn exited before it started"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield Served(origin, events)
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


class RecordingAdapter(HTTPAdapter):
    """Keeps every response, including the ones the DPoP auth's retry hook replaces."""

    def __init__(self) -> None:
        super().__init__(max_retries=0)
        self.responses: list[requests.Response] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        response = super().send(request, *args, **kwargs)
        self.responses.append(response)
        return response


@contextlib.contextmanager
def session() -> Iterator[tuple[requests.Session, RecordingAdapter]]:
    adapter = RecordingAdapter()
    with requests.Session() as s:
        s.trust_env = False  # no proxy from the environment for 127.0.0.1
        s.mount("http://", adapter)
        yield s, adapter


def raw_values(response: requests.Response, name: str) -> list[str]:
    """Every field line ``name`` as received (``response.headers`` joins repeated lines)."""
    return [str(v) for v in response.raw.headers.getlist(name)]


@pytest.mark.network
@pytest.mark.parametrize("alg", ALGS)
def test_DPOP_17_interop_over_http_library_auth_is_accepted(
    monkeypatch: pytest.MonkeyPatch, keys: dict[str, ClientKey], alg: str
) -> None:
    key = ClientKey(keys[alg].private_key, alg=alg)  # the library's default iat: the real time
    token = bound_token(key, now=time.time())
    auth = DPoPToken(token, _dpop_key=key)
    with served(monkeypatch) as app, session() as (s, adapter):
        got = s.get(f"{app.origin}/accounts", params={"page": "2"}, auth=auth, timeout=REQUEST_TIMEOUT)
        assert got.status_code == 200, got.text
        assert got.json() == {"subject": "psu-1", "binding": "dpop", "query": {"page": "2"}}

        posted = s.post(f"{app.origin}/payments", json={"amount": "1.00"}, auth=auth, timeout=REQUEST_TIMEOUT)
        assert posted.status_code == 200, posted.text
        sent_body = posted.request.body
        assert isinstance(sent_body, bytes)
        assert posted.json() == {"subject": "psu-1", "binding": "dpop", "received": len(sent_body)}

        sent = [r.request for r in adapter.responses]
        assert [r.status_code for r in adapter.responses] == [200, 200]
        proofs = [jwskate.SignedJwt(str(p.headers["DPoP"])) for p in sent]
        assert [(p.claims["htm"], p.claims["htu"]) for p in proofs] == [
            ("GET", f"{app.origin}/accounts"),
            ("POST", f"{app.origin}/payments"),
        ]
        assert all(p.headers["alg"] == alg for p in proofs)
        assert [p.headers["Authorization"] for p in sent] == [f"DPoP {token}"] * 2
    assert [(e.outcome, e.method, e.operation) for e in app.events.events] == [
        ("allow", "GET", "listAccounts"),
        ("allow", "POST", "createPayment"),
    ]


@pytest.mark.network
def test_DPOP_13_interop_over_http_replayed_library_proof_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    key = client_key("ES256", now=None)
    token = bound_token(key, now=time.time())
    with served(monkeypatch) as app, session() as (s, _):
        url = f"{app.origin}/accounts"
        proof = str(key.proof("GET", url, ath=access_token_hash(token)))
        headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
        first = s.get(url, headers=headers, timeout=REQUEST_TIMEOUT)
        second = s.get(url, headers=headers, timeout=REQUEST_TIMEOUT)

    assert first.status_code == 200, first.text
    assert first.json()["binding"] == "dpop"
    assert second.status_code == 401
    (challenge,) = raw_values(second, "WWW-Authenticate")
    assert challenge.startswith("DPoP ")
    params = challenge_params(challenge)
    assert params["error_description"] == "The DPoP proof has been used before."
    assert (params["algs"], params["error"]) == (" ".join(ALGS), "invalid_dpop_proof")
    assert second.headers["Content-Type"] == "application/problem+json"
    assert second.headers["Cache-Control"] == "no-store"
    assert second.json()["type"].endswith("/invalid-dpop-proof")
    assert [(e.outcome, e.status, e.reason) for e in app.events.events] == [
        ("allow", None, None),
        ("deny", 401, "dpop.replayed"),
    ]


@pytest.mark.network
def test_DPOP_23_interop_over_http_library_retries_with_server_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    key = client_key("ES256", now=None)
    assert key.rs_nonce is None
    token = bound_token(key, now=time.time())
    with served(monkeypatch, nonce=True) as app, session() as (s, adapter):
        url = f"{app.origin}/accounts"
        final = s.get(url, auth=DPoPToken(token, _dpop_key=key), timeout=REQUEST_TIMEOUT)
        assert final.status_code == 200, final.text
        assert final.json()["binding"] == "dpop"

        # Next request: the library reuses the nonce it holds, no new challenge.
        again = s.get(url, auth=DPoPToken(token, _dpop_key=key), timeout=REQUEST_TIMEOUT)
        assert again.status_code == 200, again.text

    challenged, retried, reused = adapter.responses
    assert challenged.status_code == 401
    (challenge,) = raw_values(challenged, "WWW-Authenticate")
    assert challenge.startswith("DPoP ")
    params = challenge_params(challenge)
    assert (params["algs"], params["error"]) == (" ".join(ALGS), "use_dpop_nonce")
    assert challenged.headers["Cache-Control"] == "no-store"
    assert challenged.json()["type"].endswith("/use-dpop-nonce")
    (nonce,) = raw_values(challenged, "DPoP-Nonce")
    assert nonce
    assert "," not in nonce
    first_proof = jwskate.SignedJwt(str(challenged.request.headers["DPoP"]))
    assert "nonce" not in first_proof.claims

    assert retried is final
    retry_proof = jwskate.SignedJwt(str(retried.request.headers["DPoP"]))
    assert retry_proof.claims["nonce"] == nonce
    assert retry_proof.claims["jti"] != first_proof.claims["jti"]
    assert key.rs_nonce == nonce
    assert jwskate.SignedJwt(str(reused.request.headers["DPoP"])).claims["nonce"] == nonce
    assert "DPoP-Nonce" not in retried.headers  # fresh nonce: no rotation yet (RFC 9449 §8.2)

    assert [(e.outcome, e.status, e.reason) for e in app.events.events] == [
        ("deny", 401, "dpop.nonce_missing"),
        ("allow", None, None),
        ("allow", None, None),
    ]
