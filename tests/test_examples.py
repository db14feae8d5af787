"""The examples: the demo passes against real servers, each app matches its policy, both agree.

The example policies trust the demo authorization server at http://127.0.0.1:8765, accept
DPoP-bound tokens only (profile fapi2) and name http://127.0.0.1:8000 as the origin DPoP proofs
are made for. The demo starts its own servers on those ports (in a subprocess); the tests that
send tokens to the apps in-process start an authorization server here, after the demo tests, so
that the two never compete for the port.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import importlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bankguard import Policy, ScopeRequirement, cli
from bankguard.openapi.contract import Contract, load_contract
from bankguard.testing import DPoPKey, TestIssuer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
APPS = {"fastapi": "examples.fastapi_app.app", "flask": "examples.flask_app.app"}
POLICIES = {name: EXAMPLES / f"{name}_app" / "policy.yaml" for name in APPS}
SPEC = EXAMPLES / "openapi.yaml"  # the API's contract, named by both policies
HOST = "127.0.0.1"
AS_PORT = 8765  # the issuer the example policies trust
APP_PORT = 8000  # the policies' external origin, where the demo serves the app
ORIGIN = f"http://127.0.0.1:{APP_PORT}"
AUDIENCE = "https://api.bank.example"
TIMEOUT = 10.0


def examples_module(name: str, mp: pytest.MonkeyPatch) -> ModuleType:
    """Import ``examples.<name>`` the way ``uvicorn examples.fastapi_app.app:app`` does."""
    mp.syspath_prepend(str(ROOT))
    return importlib.import_module(f"examples.{name}")


def guard_of(name: str, app: Any) -> Any:
    """The Guard protect() built for an example app (to stop its key refresh thread)."""
    if name == "flask":
        return app.wsgi_app.guard
    # protect() wraps the stack Starlette builds; building it again gives the same guard.
    return (app.middleware_stack or app.build_middleware_stack()).guard


@contextlib.contextmanager
def imported_apps() -> Iterator[dict[str, Any]]:
    """Both example apps, imported afresh (so they fetch the issuer's keys now), closed after."""
    with pytest.MonkeyPatch.context() as mp:
        for module in APPS.values():
            mp.delitem(sys.modules, module, raising=False)
        apps = {
            name: examples_module(module.removeprefix("examples."), mp).app for name, module in APPS.items()
        }
        try:
            yield apps
        finally:
            for name, app in apps.items():
                guard_of(name, app).close()


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[str, Any]]:
    """The apps as ``uvicorn examples.fastapi_app.app:app`` loads them, whether the AS runs or not."""
    with imported_apps() as loaded:
        yield loaded


@pytest.fixture(scope="module")
def auth_server() -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as mp:
        yield examples_module("auth_server", mp)


def _b64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def exchange(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
) -> tuple[int, http.client.HTTPMessage, Any]:
    """One request; ``headers`` as a list may repeat a field."""
    conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        fields = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        for name, value in fields:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.headers, json.loads(response.read())
    finally:
        conn.close()


def post_token(
    port: int, form: dict[str, str] | str, proofs: tuple[str, ...] = ()
) -> tuple[int, http.client.HTTPMessage, Any]:
    """POST to /token, with each of ``proofs`` as a DPoP header line."""
    body = form if isinstance(form, str) else urlencode(form)
    headers = [("Content-Type", "application/x-www-form-urlencoded"), *(("DPoP", p) for p in proofs)]
    return exchange(port, "POST", "/token", body.encode(), headers)


# -- the demo, against real servers on 127.0.0.1 --------------------------------------------


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own script, run with this interpreter
        [sys.executable, "-W", "error", str(EXAMPLES / "demo.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


DPOP = 'DPoP algs="ES256 PS256 EdDSA"'
BEARER = 'Bearer realm="open-banking"'

COMMON_LINES = [
    "demo authorization server (not for production) at http://127.0.0.1:8765",
    "bankguard logged at start-up: WARNING policy: issuer http://127.0.0.1:8765 allows plain http",
    # the clients' DPoP keys bind their tokens; one token is fetched without a proof
    "DPoP keys of the demo clients (ES256, in memory)",
    "client_id=aisp-demo scope=accounts               + DPoP proof 200: DPoP, cnf.jkt ",
    "client_id=pisp-demo scope=payments               + DPoP proof 200: DPoP, cnf.jkt ",
    "client_id=aisp-demo scope=accounts               no proof     200: Bearer, no cnf",
    # allowed, with the client and the binding the app read from bankguard
    "bankguard: allow, operation GetHealth\n     app: served an anonymous caller, principal.binding None\n",
    "> Authorization: DPoP <aisp-demo token, scope accounts>\n"
    "     > DPoP: <proof GET http://127.0.0.1:8000/accounts, jti ",
    "bankguard: allow, operation GetAccounts (client aisp-demo)\n"
    "     app: served client aisp-demo, principal.binding dpop\n",
    "bankguard: allow, operation GetBalances (client aisp-demo)",
    "bankguard: allow, operation GetTransactions (client aisp-demo)",
    "bankguard: allow, operation CreateDomesticPayment (client pisp-demo)\n"
    "     app: served client pisp-demo, principal.binding dpop\n",
    "x-fapi-interaction-id: 93bac548-d2de-4546-b106-880a5018460d (echoed)",
    "(new; not reflected)",
    "its Id is the x-fapi-interaction-id, read from bankguard",
    # refused for the token, with the challenges
    "bankguard: deny by tokens, reason token.missing\n",
    f"     WWW-Authenticate: {BEARER}\n     WWW-Authenticate: {DPOP}\n",  # bare: no error (RFC 6750 §3.1)
    "bankguard: deny by tokens, reason scope.insufficient (client aisp-demo)",
    "bankguard: deny by tokens, reason scope.insufficient (client pisp-demo)",
    f'{DPOP}, error="insufficient_scope", error_description=',
    'scope="payments"\n',
    'scope="accounts"\n',
    "bankguard: deny by tokens, reason token.expired",
    f'{DPOP}, error="invalid_token", error_description="The access token has expired."',
    "bankguard: deny by tokens, reason token.issuer_unknown",
    "bankguard: deny by tokens, reason token.signature_invalid",
    "bankguard: deny by tokens, reason token.signature_missing",
    "bankguard: deny by auth, reason authorization.token_outside_header",
    # refused for the request
    "bankguard: deny by routes, reason routes.undeclared_operation",
    "bankguard: deny by routes, reason routes.method_not_allowed",
    "Allow: GET, HEAD",
    "bankguard: deny by request, reason request.body_too_large",
    "bankguard: deny by request, reason request.header_field_too_large",
    "> GET /accounts/../admin",
    "bankguard: deny by request, reason request.dot_segment",
    "bankguard: deny by request, reason request.method_override_header",
    # the API's contract: responses minimised, requests validated
    "bankguard, response: openapi.response_minimised: removed 1 undeclared "
    "(/Data/Account/0/InternalRiskRating), 0 unauthorised",
    "InternalRiskRating: in the app's record, not in the contract: removed",
    "CardInstrument.Identification 465943******6541 (in full in the app's record)",
    "bankguard: deny by openapi, reason openapi.request_invalid (client aisp-demo)\n"
    '     response:  problem "Request does not match the API contract" (type request-invalid)\n'
    "                failed: query.fromBookingDateTime (format)\n",
    "bankguard: deny by openapi, reason openapi.request_invalid (client pisp-demo)",
    "failed: body/Data/Initiation/InstructedAmount/Amount (pattern)",
    "failed: body/Data (additionalProperties)",
]

#: The DPoP scenarios: title -> status, audit reason, the WWW-Authenticate lines (whole or start).
DPOP_SCENARIOS: dict[str, tuple[str, str | None, list[str]]] = {
    "DPoP: a fresh proof for this request": ("200 OK", None, []),
    "DPoP: the same proof sent again (replay)": (
        "401 Unauthorized",
        "dpop.replayed",
        [f'{DPOP}, error="invalid_dpop_proof", error_description="The DPoP proof has been used before."'],
    ),
    "DPoP: a proof made for another URL": (
        "401 Unauthorized",
        "dpop.htu_path_mismatch",
        [f'{DPOP}, error="invalid_dpop_proof", error_description="The DPoP proof was made for another URL."'],
    ),
    "DPoP: a proof for another server, Host header to match": (
        "401 Unauthorized",
        "dpop.htu_origin_mismatch",
        [f'{DPOP}, error="invalid_dpop_proof", error_description="The DPoP proof was made for another URL."'],
    ),
    "DPoP: no proof with the DPoP scheme": (
        "401 Unauthorized",
        "dpop.proof_missing",
        [f'{DPOP}, error="invalid_dpop_proof", '],
    ),
    "DPoP: a stolen token, with proofs of the thief's key": (
        "401 Unauthorized",
        "token.dpop_key_mismatch",
        [f'{DPOP}, error="invalid_token", error_description="Invalid DPoP key binding."'],
    ),
    "DPoP: the DPoP-bound token sent as a Bearer token": (
        "401 Unauthorized",
        "token.dpop_bound_presented_as_bearer",
        [f'{BEARER}, error="invalid_token", ', DPOP],  # both challenges, the error on Bearer
    ),
    "DPoP: an unbound token under the DPoP scheme": (
        "401 Unauthorized",
        "token.not_dpop_bound",
        [f'{DPOP}, error="invalid_token", '],
    ),
    "FAPI 2.0: an unbound Bearer token, otherwise valid": (
        "401 Unauthorized",
        "token.not_sender_constrained",
        [f'{BEARER}, error="invalid_token", '],
    ),
    "No access token": ("401 Unauthorized", "token.missing", [BEARER, DPOP]),
}


def scenario_blocks(stdout: str) -> dict[str, list[str]]:
    """The demo's report per scenario title: the verdict, then the block's lines."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        head = re.match(r"^\[\s*\d+\] (.{62}) (.*)$", line)
        if head:
            current = blocks.setdefault(head.group(1).rstrip(), [head.group(2)])
        elif current is not None and line.startswith("     "):
            current.append(line.strip())
        else:
            current = None
    return blocks


def check_dpop_scenarios(stdout: str) -> None:
    blocks = scenario_blocks(stdout)
    for title, (verdict, reason, challenges) in DPOP_SCENARIOS.items():
        block = blocks[title]
        assert block[0] == verdict, (title, block)
        if reason is None:
            assert "app: served client aisp-demo, principal.binding dpop" in block, (title, block)
        else:
            assert any(line.startswith(f"bankguard: deny by tokens, reason {reason}") for line in block)
        got = [line.removeprefix("WWW-Authenticate: ") for line in block if line.startswith("WWW-")]
        assert len(got) == len(challenges), (title, block)
        for line, want in zip(got, challenges, strict=True):
            assert line == want if not want.endswith(", ") else line.startswith(want), (title, line)
    # The replayed proof is the one the request before it sent: same jti, same key.
    jti = re.compile(r"^> DPoP: <proof GET http://127\.0\.0\.1:8000/accounts/31820, jti \S+, key \S+>")
    sent = [line for line in blocks["DPoP: a fresh proof for this request"] if jti.match(line)]
    replayed = [line for line in blocks["DPoP: the same proof sent again (replay)"] if jti.match(line)]
    assert sent
    assert sent == replayed
    # The thief's proofs are signed by another key than the client's.
    key = re.compile(r"^> DPoP: <proof .*, key (\S+)>")
    client = {
        m.group(1) for line in blocks["List accounts (scope in the contract)"] if (m := key.match(line))
    }
    thief = {
        m.group(1)
        for line in blocks["DPoP: a stolen token, with proofs of the thief's key"]
        if (m := key.match(line))
    }
    assert len(client) == len(thief) == 1
    assert client != thief
    assert "> DPoP:" not in "\n".join(blocks["DPoP: no proof with the DPoP scheme"])
    assert "> Host: api.attacker.example" in blocks["DPoP: a proof for another server, Host header to match"]
    # Tokens and proofs are described, never printed whole.
    assert not re.search(r"eyJ[\w-]+\.[\w-]+\.[\w-]+", stdout)


@pytest.mark.network
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            [],
            [
                "the FastAPI example under uvicorn at http://127.0.0.1:8000",
                "policy examples/fastapi_app/policy.yaml: profile fapi2, DPoP on",
                "reason authorization.duplicate",
                f'WWW-Authenticate: {BEARER}, error="invalid_request"',
            ],
            id="fastapi-uvicorn",
        ),
        pytest.param(
            ["--flask"],
            [
                "the Flask example under wsgiref at http://127.0.0.1:8000",
                "policy examples/flask_app/policy.yaml: profile fapi2, DPoP on",
                "reason authorization.duplicate",  # the WSGI server merged the two lines
                "note: the WSGI server joined the two lines",
            ],
            id="flask-wsgiref",
        ),
    ],
)
def test_demo_passes(args: list[str], expected: list[str]) -> None:
    proc = _demo(*args)
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert proc.stderr == "", output
    found = re.search(r"^All (\d+) scenarios got the expected answer\.$", proc.stdout, re.M)
    assert found, output
    assert int(found.group(1)) == len(re.findall(r"^\[\s*\d+\] ", proc.stdout, re.M)), output
    assert "FAIL" not in proc.stdout
    assert "logged during the run" not in proc.stdout, output  # no key refresh, no failure
    for line in COMMON_LINES + expected:
        assert line in proc.stdout, f"missing {line!r}\n{output}"
    check_dpop_scenarios(proc.stdout)


@pytest.mark.network
def test_demo_says_when_the_authorization_server_port_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past connections in TIME_WAIT
        taken.bind((HOST, AS_PORT))
        taken.listen()
        proc = _demo()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cannot start the demo authorization server on 127.0.0.1:8765" in proc.stdout
    assert proc.stderr == ""


@pytest.mark.network
def test_demo_says_when_the_app_port_is_taken() -> None:
    # The demo serves the app at the policy's external origin, which DPoP proofs name: no other port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((HOST, APP_PORT))
        taken.listen()
        proc = _demo()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cannot serve the FastAPI example at http://127.0.0.1:8000: [Errno" in proc.stdout
    assert "scenarios" not in proc.stdout
    assert proc.stderr == ""


# -- the demo authorization server ----------------------------------------------------------


@pytest.fixture(scope="module")
def authz(auth_server: ModuleType) -> Iterator[Any]:
    """A demo authorization server on a free port (not the policies' issuer)."""
    with auth_server.running(HOST, 0) as server:
        yield server


@pytest.mark.network
def test_auth_server_publishes_its_public_key(authz: Any, auth_server: ModuleType) -> None:
    port = authz.httpd.server_address[1]
    status, headers, jwks = exchange(port, "GET", "/jwks")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert "max-age=300" in headers["Cache-Control"]
    (key,) = jwks["keys"]
    assert key == {**key, "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": authz.kid}
    assert "d" not in key  # public only
    assert key["kid"] == auth_server.thumbprint(key)
    status, _, metadata = exchange(port, "GET", "/.well-known/oauth-authorization-server")
    assert status == 200
    assert metadata["issuer"] == authz.url == f"http://127.0.0.1:{port}"
    assert metadata["jwks_uri"] == f"{authz.url}/jwks"
    assert metadata["token_endpoint"] == f"{authz.url}/token"
    assert metadata["dpop_signing_alg_values_supported"] == ["ES256", "PS256", "EdDSA"]


@pytest.mark.network
@pytest.mark.parametrize(
    ("client_id", "scope", "granted"),
    [
        ("aisp-demo", "accounts", "accounts"),
        ("pisp-demo", "payments", "payments"),
        ("tpp-demo", "payments accounts", "accounts payments"),
        ("tpp-demo", None, "accounts payments"),  # no scope asked: all the client may have
    ],
)
def test_auth_server_issues_rfc9068_access_tokens(
    authz: Any, client_id: str, scope: str | None, granted: str
) -> None:
    form = {"grant_type": "client_credentials", "client_id": client_id}
    if scope is not None:
        form["scope"] = scope
    before = int(time.time())
    status, headers, answer = post_token(authz.httpd.server_address[1], form)
    assert status == 200, answer
    assert headers["Cache-Control"] == "no-store"  # RFC 6749 §5.1
    assert answer == {**answer, "token_type": "Bearer", "expires_in": 300, "scope": granted}
    header, claims = (_b64json(part) for part in answer["access_token"].split(".")[:2])
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": authz.kid}
    assert claims["iss"] == authz.url
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == claims["client_id"] == client_id
    assert claims["scope"] == granted
    assert before <= claims["iat"] <= time.time()
    assert claims["exp"] == claims["iat"] + 300
    assert claims["jti"]


@pytest.mark.network
def test_auth_server_lifetime_gives_an_expired_token(authz: Any) -> None:
    form = {"grant_type": "client_credentials", "client_id": "aisp-demo", "lifetime": "-120"}
    status, _, answer = post_token(authz.httpd.server_address[1], form)
    assert status == 200
    claims = _b64json(answer["access_token"].split(".")[1])
    assert claims["exp"] <= time.time() - 119
    assert claims["exp"] - claims["iat"] == 300


@pytest.mark.network
@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"grant_type": "client_credentials", "client_id": "mallory"}, 400, "invalid_client"),
        ({"grant_type": "client_credentials"}, 400, "invalid_client"),
        (
            {"grant_type": "client_credentials", "client_id": "aisp-demo", "scope": "payments"},
            400,
            "invalid_scope",
        ),
        ({"grant_type": "client_credentials", "client_id": "aisp-demo", "scope": ""}, 400, "invalid_scope"),
        ({"grant_type": "password", "client_id": "aisp-demo"}, 400, "unsupported_grant_type"),
        ({"client_id": "aisp-demo"}, 400, "unsupported_grant_type"),
        ("grant_type=client_credentials&client_id=aisp-demo&client_id=tpp-demo", 400, "invalid_request"),
        (
            {"grant_type": "client_credentials", "client_id": "aisp-demo", "lifetime": "0"},
            400,
            "invalid_request",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "aisp-demo", "lifetime": "86400"},
            400,
            "invalid_request",
        ),
    ],
)
def test_auth_server_refuses_bad_requests(
    authz: Any, form: dict[str, str] | str, status: int, error: str
) -> None:
    got, headers, answer = post_token(authz.httpd.server_address[1], form)
    assert (got, answer["error"]) == (status, error), answer
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.network
def test_auth_server_wants_a_form(authz: Any) -> None:
    body = json.dumps({"grant_type": "client_credentials", "client_id": "aisp-demo"}).encode()
    status, _, answer = exchange(
        authz.httpd.server_address[1], "POST", "/token", body, {"Content-Type": "application/json"}
    )
    assert (status, answer["error"]) == (400, "invalid_request")


# -- the demo authorization server and DPoP (RFC 9449 §5) -------------------------------------

AISP = {"grant_type": "client_credentials", "client_id": "aisp-demo", "scope": "accounts"}


@pytest.mark.network
@pytest.mark.parametrize("alg", ["ES256", "PS256", "EdDSA"])
def test_auth_server_binds_the_token_to_the_proof_key(authz: Any, alg: str) -> None:
    key = DPoPKey(alg)
    proof = key.proof("POST", authz.token_endpoint)
    status, headers, answer = post_token(authz.httpd.server_address[1], AISP, (proof,))
    assert status == 200, answer
    assert headers["Cache-Control"] == "no-store"
    assert answer == {**answer, "token_type": "DPoP", "expires_in": 300, "scope": "accounts"}
    claims = _b64json(answer["access_token"].split(".")[1])
    assert claims["cnf"] == {"jkt": key.thumbprint}


@pytest.mark.network
def test_auth_server_without_a_proof_issues_an_unbound_bearer_token(authz: Any) -> None:
    status, _, answer = post_token(authz.httpd.server_address[1], AISP)
    assert (status, answer["token_type"]) == (200, "Bearer")
    assert "cnf" not in _b64json(answer["access_token"].split(".")[1])


def _bad_proofs(endpoint: str) -> dict[str, str]:
    key = DPoPKey("ES256")
    now = time.time()
    private = {**key.public_jwk, "d": _b64url(b"x" * 32)}
    return {
        "not a JWS": "not-a-proof",
        "typ": key.proof("POST", endpoint, header={"typ": "JWT"}),
        "no signature": key.proof("POST", endpoint).rsplit(".", 1)[0] + ".",
        "alg not allowed": DPoPKey("ES384").proof("POST", endpoint),
        "alg none": key.proof("POST", endpoint, header={"alg": "none"}),
        "no jwk": key.proof("POST", endpoint, header={"jwk": None}),
        "private jwk": key.proof("POST", endpoint, header={"jwk": private}),
        "jwk of another key": key.proof("POST", endpoint, header={"jwk": DPoPKey("ES256").public_jwk}),
        "htm": key.proof("GET", endpoint),
        "htu": key.proof("POST", endpoint.replace("/token", "/other")),
        "htu origin": key.proof("POST", "http://as.attacker.example/token"),
        "no jti": key.proof("POST", endpoint, claims={"jti": None}),
        "no iat": key.proof("POST", endpoint, claims={"iat": None}),
        "old": key.proof("POST", endpoint, iat=now - 120),
        "future": key.proof("POST", endpoint, iat=now + 60),
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.mark.network
def test_auth_server_refuses_invalid_proofs(authz: Any) -> None:
    port = authz.httpd.server_address[1]
    for name, proof in _bad_proofs(authz.token_endpoint).items():
        status, headers, answer = post_token(port, AISP, (proof,))
        assert (status, answer["error"]) == (400, "invalid_dpop_proof"), name
        assert headers["Cache-Control"] == "no-store", name


@pytest.mark.network
def test_auth_server_accepts_each_proof_once(authz: Any) -> None:
    port = authz.httpd.server_address[1]
    proof = DPoPKey("ES256").proof("POST", authz.token_endpoint)
    assert post_token(port, AISP, (proof,))[0] == 200
    status, _, answer = post_token(port, AISP, (proof,))
    assert (status, answer["error"]) == (400, "invalid_dpop_proof")
    assert "used before" in answer["error_description"]


@pytest.mark.network
def test_auth_server_refused_form_does_not_use_up_the_proof(authz: Any) -> None:
    port = authz.httpd.server_address[1]
    proof = DPoPKey("ES256").proof("POST", authz.token_endpoint)
    status, _, answer = post_token(port, {**AISP, "scope": "payments"}, (proof,))
    assert (status, answer["error"]) == (400, "invalid_scope")
    assert post_token(port, AISP, (proof,))[0] == 200


@pytest.mark.network
def test_auth_server_wants_one_dpop_header(authz: Any) -> None:
    key = DPoPKey("ES256")
    proofs = (key.proof("POST", authz.token_endpoint), key.proof("POST", authz.token_endpoint))
    status, _, answer = post_token(authz.httpd.server_address[1], AISP, proofs)
    assert (status, answer["error"]) == (400, "invalid_dpop_proof")


# -- each app serves exactly the operations of its contract --------------------------------


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(SPEC)


def _without_implicit(routes: set[tuple[str, str]]) -> set[tuple[str, str]]:
    # bankguard admits HEAD where GET is declared; frameworks add HEAD / OPTIONS themselves.
    return {(method, path) for method, path in routes if method not in ("HEAD", "OPTIONS")}


def _app_routes(name: str, app: Any) -> set[tuple[str, str]]:
    if name == "fastapi":
        # Every route, not only APIRoutes: re-enabling /docs must show up here as drift.
        return {(m, route.path) for route in app.routes for m in getattr(route, "methods", None) or {"*"}}
    flask_param = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")  # <AccountId>, <int:n> -> {AccountId}
    return {
        (m, flask_param.sub(r"{\1}", rule.rule)) for rule in app.url_map.iter_rules() for m in rule.methods
    }


@pytest.mark.parametrize("name", list(APPS))
def test_app_routes_match_the_contract(name: str, apps: dict[str, Any], contract: Contract) -> None:
    declared = {(op.method, op.path) for op in contract.operations}
    served = _without_implicit(_app_routes(name, apps[name]))
    assert served - declared == set(), "routes the app serves but the contract does not declare"
    assert declared - served == set(), "operations the contract declares but the app does not serve"
    # The policy declares no operation of its own (it would only add what a contract cannot
    # say, such as PSD2 roles), so nothing in it can contradict the contract.
    policy = Policy.from_yaml(POLICIES[name])
    assert policy.routes.operations == ()
    assert policy.routes.undeclared == "deny"


def test_contract_loads_cleanly(contract: Contract) -> None:
    assert contract.version == "3.0.3"
    assert contract.warnings == ()
    assert load_contract(SPEC, strict=True).warnings == ()  # no tolerated defect either
    assert contract.base_paths == ("",)  # served at the origin's root
    assert {name: scheme["type"] for name, scheme in contract.security_schemes.items()} == {
        "TPPOAuth2Security": "oauth2"
    }
    assert [op.operation_id for op in contract.operations] == list(SCOPES)


def test_contract_is_a_valid_openapi_document() -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.readers import read_from_filename

    document, _ = read_from_filename(str(SPEC))
    validate(document)  # raises on an invalid document (OpenAPI 3.0 schema and semantics)


#: Where each operation's scopes are declared: (in the contract, in the app's code); None: public.
SCOPES: dict[str, tuple[set[str], set[str]] | None] = {
    "GetHealth": None,
    "GetAccounts": ({"accounts"}, set()),
    "GetAccount": ({"accounts"}, set()),
    "GetBalances": ({"accounts"}, {"accounts"}),
    "GetTransactions": ({"accounts"}, {"accounts"}),
    "CreateDomesticPayment": ({"payments"}, set()),
}


def _declared_in_code(name: str, app: Any, method: str, path: str) -> ScopeRequirement | None:
    """What the guard finds in the app's code for a request, with the resolver protect() uses."""
    if name == "fastapi":
        from bankguard.integrations.fastapi import scope_resolver

        scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
        return scope_resolver(app)(scope)
    from werkzeug.test import EnvironBuilder

    from bankguard.integrations.flask import scope_resolver as flask_resolver

    builder = EnvironBuilder(path=path, method=method)
    try:
        return flask_resolver(app)(builder.get_environ())
    finally:
        builder.close()


@pytest.mark.parametrize("name", list(APPS))
def test_scopes_are_declared_where_the_examples_say(
    name: str, apps: dict[str, Any], contract: Contract
) -> None:
    found: dict[str, tuple[set[str], set[str]] | None] = {}
    for op in contract.operations:
        path = op.path.replace("{AccountId}", "22289")
        in_code = _declared_in_code(name, apps[name], op.method, path)
        assert in_code is None or not in_code.any_of
        code = set(in_code.all_of) if in_code else set()
        # One alternative of one OAuth2 scheme each; security: [] makes GET /health public.
        assert op.security is not None
        if op.security == ():
            found[str(op.operation_id)] = None if not code else (set(), code)
            continue
        ((scheme, scopes),) = op.security[0]
        assert len(op.security) == 1
        assert scheme == "TPPOAuth2Security"
        found[str(op.operation_id)] = (set(scopes), code)
    assert found == SCOPES


@pytest.mark.parametrize("name", list(APPS))
def test_policy_passes_check_policy(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    # check-policy only loads the policy: the authorization server need not run.
    assert cli.main(["check-policy", str(POLICIES[name])]) == 0
    out = capsys.readouterr().out
    assert f"{POLICIES[name]}: OK" in out
    assert "undeclared: deny" in out
    # check-policy loads the contract too, so a broken spec fails here rather than at start-up.
    assert f"{SPEC}: OpenAPI 3.0.3, 6 operations" in out


def test_policies_are_the_same() -> None:
    fastapi, flask = (Policy.from_yaml(POLICIES[name]) for name in APPS)
    assert fastapi == flask
    (issuer,) = fastapi.tokens.issuers
    assert issuer.issuer == f"http://127.0.0.1:{AS_PORT}"
    assert issuer.jwks_uri == f"http://127.0.0.1:{AS_PORT}/jwks"
    assert issuer.audiences == (AUDIENCE,)
    assert issuer.algorithms == ("ES256",)
    # FAPI 2.0: sender-constrained tokens only, here with DPoP; proofs name the demo's origin.
    assert fastapi.profile == "fapi2"
    assert fastapi.tokens.require_sender_constraint is True
    assert fastapi.dpop.enabled
    assert [str(origin) for origin in fastapi.external_origins] == [ORIGIN]
    assert fastapi.storage.uri == "memory://"
    # Both name the same contract, enforced both ways; no client sees full card numbers.
    assert fastapi.openapi.spec == str(SPEC)
    assert (fastapi.openapi.mode, fastapi.openapi.responses.mode) == ("enforce", "enforce")
    assert fastapi.openapi.scopes_from_spec
    assert fastapi.openapi.minimise.mask_pan
    assert fastapi.openapi.minimise.reveal_pan_scopes == ()


def test_examples_serve_at_the_policy_origin() -> None:
    # The origin DPoP proofs are checked against is where the documented commands serve the apps.
    for name, command in (
        ("fastapi", "uvicorn examples.fastapi_app.app:app"),
        ("flask", "gunicorn examples.flask_app.app:app"),
    ):
        text = POLICIES[name].read_text()
        assert f"`{command}` listens by" in text
        assert "never with the Host header" in text
    assert "--port 8000" in (EXAMPLES / "flask_app" / "app.py").read_text()
    assert "comes with later releases" not in POLICIES["fastapi"].read_text()


# -- both apps answer the same, given the same token ----------------------------------------
# These start the demo authorization server on the policies' port, so they come last.

PAYMENT = {
    "Data": {
        "ConsentId": "PDC-1",
        "Initiation": {
            "InstructionIdentification": "I-1",
            "EndToEndIdentification": "E2E-1",
            "InstructedAmount": {"Amount": "10.50", "Currency": "GBP"},
            "CreditorAccount": {
                "SchemeName": "UK.OBIE.SortCodeAccountNumber",
                "Identification": "08080021325698",
                "Name": "ACME Inc",
            },
        },
    },
    "Risk": {},
}
BAD_PAYMENT: dict[str, Any] = copy.deepcopy(PAYMENT)
BAD_PAYMENT["Data"]["Initiation"]["InstructedAmount"]["Amount"] = "0"
BAD_PAYMENT["Data"]["Unexpected"] = True
del BAD_PAYMENT["Data"]["ConsentId"]
ZERO_PAYMENT: dict[str, Any] = copy.deepcopy(PAYMENT)
ZERO_PAYMENT["Data"]["Initiation"]["InstructedAmount"]["Amount"] = "0.00"
JSON = "application/json"
JULY = "/accounts/22289/transactions?fromBookingDateTime=2024-07-01T00:00:00Z"


@dataclass(frozen=True)
class Live:
    apps: dict[str, Any]
    tokens: dict[str, str]
    #: The DPoP key each token is bound to; a token without one is sent as Bearer.
    keys: dict[str, DPoPKey]

    def headers(self, token: str, method: str, target: str) -> dict[str, str]:
        """Authorization, with a fresh DPoP proof for ``method`` on the policy's origin."""
        key = self.keys.get(token)
        if key is None:
            return {"Authorization": f"Bearer {self.tokens[token]}"}
        proof = key.proof(method, ORIGIN + target, access_token=self.tokens[token])
        return {"Authorization": f"DPoP {self.tokens[token]}", "DPoP": proof}


@pytest.fixture(scope="module")
def live(auth_server: ModuleType) -> Iterator[Live]:
    """The demo authorization server on 127.0.0.1:8765, both apps loaded with its keys, tokens."""
    with auth_server.running(HOST, AS_PORT) as server, imported_apps() as loaded:
        clients = {client: DPoPKey("ES256") for client in ("aisp-demo", "pisp-demo", "tpp-demo")}
        tokens: dict[str, str] = {}
        keys: dict[str, DPoPKey] = {}
        for name, client_id, extra, bind in (
            ("accounts", "aisp-demo", {}, True),
            ("payments", "pisp-demo", {}, True),
            ("both", "tpp-demo", {}, True),
            ("expired", "aisp-demo", {"lifetime": "-120"}, True),
            ("unbound", "aisp-demo", {}, False),
        ):
            key = clients[client_id]
            proofs = (key.proof("POST", server.token_endpoint),) if bind else ()
            form = {"grant_type": "client_credentials", "client_id": client_id, **extra}
            status, _, answer = post_token(AS_PORT, form, proofs)
            assert status == 200, answer
            assert answer["token_type"] == ("DPoP" if bind else "Bearer")
            tokens[name] = answer["access_token"]
            if bind:
                keys[name] = key
        aisp = clients["aisp-demo"]
        claims = {"sub": "aisp-demo", "client_id": "aisp-demo"}
        impostor = TestIssuer(server.url, alg="ES256", kid=server.kid)
        tokens["forged"] = impostor.mint(claims, audience=AUDIENCE, scope="accounts payments", dpop_key=aisp)
        elsewhere = TestIssuer("https://auth.other-bank.example", alg="ES256")
        tokens["other_issuer"] = elsewhere.mint(
            claims, audience=AUDIENCE, scope="accounts payments", dpop_key=aisp
        )
        keys.update(forged=aisp, other_issuer=aisp)
        tokens["bound_as_bearer"] = tokens["accounts"]  # no key in keys: sent as Bearer
        tokens["unbound_as_dpop"] = tokens["unbound"]
        keys["unbound_as_dpop"] = aisp
        tokens["stolen"] = tokens["accounts"]
        keys["stolen"] = DPoPKey("ES256")  # the thief's
        yield Live(loaded, tokens, keys)


def _comparable(document: Any, interaction_id: str) -> Any:
    """Drop what differs per request; check that error Ids are the interaction id."""
    document = copy.deepcopy(document)
    for key in ("Id", "interaction_id"):  # OB error body, problem details
        if key in document:
            assert document.pop(key) == interaction_id
    data = document.get("Data", {})
    if "DomesticPaymentId" in data:
        assert document["Links"].pop("Self") == f"/domestic-payments/{data.pop('DomesticPaymentId')}"
        assert data.pop("CreationDateTime") == data.pop("StatusUpdateDateTime")
    return document


@pytest.mark.network
@pytest.mark.parametrize(
    ("method", "target", "body", "content_type", "token", "expect"),
    [
        ("GET", "/health", None, None, None, 200),
        ("GET", "/accounts", None, None, "accounts", 200),
        ("GET", "/accounts/22289", None, None, "both", 200),
        ("GET", "/accounts/31820/balances", None, None, "accounts", 200),
        ("GET", "/accounts/44910/transactions", None, None, "accounts", 200),
        ("GET", "/accounts/99999/transactions", None, None, "accounts", 404),  # the apps' own 404
        ("GET", f"{JULY}&toBookingDateTime=2024-07-10T00:00:00%2B01:00", None, None, "accounts", 200),
        ("POST", "/domestic-payments", PAYMENT, JSON, "payments", 201),
        # the contract's refusals (bankguard, after the token check)
        ("GET", "/accounts/22289/transactions?fromBookingDateTime=yesterday", None, None, "accounts", 400),
        ("GET", f"{JULY.replace('Z', '')}", None, None, "accounts", 400),  # a local time: no offset
        ("GET", "/accounts/22289/transactions?toBookingDateTime=2024-05-01", None, None, "accounts", 400),
        ("POST", "/domestic-payments", BAD_PAYMENT, JSON, "payments", 400),
        ("POST", "/domestic-payments", ZERO_PAYMENT, JSON, "payments", 400),
        ("POST", "/domestic-payments", "{not json", JSON, "payments", 400),
        ("POST", "/domestic-payments", [1, 2], JSON, "payments", 400),
        ("POST", "/domestic-payments", PAYMENT, "text/plain", "payments", 415),
        ("POST", "/domestic-payments", PAYMENT, "application/vnd.bank+json", "payments", 415),
        # bankguard's refusals
        ("GET", "/accounts", None, None, None, 401),
        ("GET", "/accounts/22289/balances", None, None, None, 401),  # scope declared in code only
        ("GET", "/accounts", None, None, "payments", 403),  # scope in the policy
        ("GET", "/accounts/22289/balances", None, None, "payments", 403),  # Security / require_scopes
        ("GET", "/accounts/22289/transactions", None, None, "payments", 403),  # require_scopes
        ("POST", "/domestic-payments", PAYMENT, JSON, "accounts", 403),
        ("GET", "/accounts", None, None, "expired", 401),
        ("GET", "/accounts", None, None, "forged", 401),
        ("GET", "/accounts", None, None, "other_issuer", 401),
        ("GET", "/admin", None, None, "accounts", 404),
        # DPoP: the binding to the proof's key, and FAPI 2.0's sender constraint
        ("GET", "/accounts", None, None, "bound_as_bearer", 401),
        ("GET", "/accounts", None, None, "unbound", 401),  # an unbound Bearer token
        ("GET", "/accounts", None, None, "unbound_as_dpop", 401),
        ("GET", "/accounts/22289/balances", None, None, "stolen", 401),
    ],
)
def test_both_apps_answer_alike(
    method: str,
    target: str,
    body: Any,
    content_type: str | None,
    token: str | None,
    expect: int,
    live: Live,
) -> None:
    from fastapi.testclient import TestClient

    raw = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    headers = {"Content-Type": content_type} if content_type else {}

    def credentials() -> dict[str, str]:  # a fresh proof for each request
        return {} if token is None else live.headers(token, method, target)

    # The test clients send Host: testserver and localhost; the proofs name the policy's origin.
    with TestClient(live.apps["fastapi"]) as client:
        a = client.request(method, target, content=raw, headers={**headers, **credentials()})
    b = (
        live.apps["flask"]
        .test_client()
        .open(target, method=method, data=raw, headers={**headers, **credentials()})
    )
    assert (a.status_code, b.status_code) == (expect, expect)
    assert a.headers["content-type"] == b.headers["content-type"]
    assert a.headers.get_list("www-authenticate") == b.headers.getlist("WWW-Authenticate")
    assert (expect in (401, 403)) == bool(b.headers.getlist("WWW-Authenticate"))
    assert _comparable(a.json(), a.headers["x-fapi-interaction-id"]) == _comparable(
        b.get_json(), b.headers["x-fapi-interaction-id"]
    )


# -- the bank's documents and the contract ------------------------------------------------


@pytest.fixture(scope="module")
def bank() -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as mp:
        yield examples_module("bank_data", mp)


def _documents(bank: ModuleType) -> list[tuple[str, int, Any]]:
    """(operationId, status, document) for every document the apps can answer with."""
    payment = bank.DomesticPaymentRequest.model_validate(PAYMENT)
    docs: list[tuple[str, int, Any]] = [
        ("GetHealth", 200, bank.health_document()),
        ("GetAccounts", 200, bank.accounts_document()),
        ("CreateDomesticPayment", 201, bank.create_payment(payment, "iid", "pisp-demo")),
        ("CreateDomesticPayment", 400, bank.invalid_body([bank.NOT_JSON_ERROR], "iid")),
        ("CreateDomesticPayment", 415, bank.unsupported_media_type("iid")),
        ("GetTransactions", 400, bank.invalid_query("fromBookingDateTime", "iid")),
    ]
    for op in ("GetAccount", "GetBalances", "GetTransactions"):
        docs.append((op, 404, bank.account_not_found("iid")))
    for account in bank.ACCOUNTS:
        docs += [
            ("GetAccount", 200, bank.account_document(account)),
            ("GetBalances", 200, bank.balances_document(account)),
            ("GetTransactions", 200, bank.transactions_document(account)),
        ]
    return docs


def test_every_document_conforms_once_minimised(contract: Contract, bank: ModuleType) -> None:
    from bankguard.openapi.minimise import compile_shape, minimise

    operations = {op.operation_id: op for op in contract.operations}
    removed: set[str] = set()
    for op, status, document in _documents(bank):
        declared = operations[op].response(status, "application/json")
        assert declared is not None, (op, status)
        shape = compile_shape(declared.schema, declared.resolve, dialect=declared.dialect)
        minimised, report = minimise(document, shape, scopes=frozenset(), reveal_pan=False)
        assert declared.validate(minimised) == [], (op, status)
        removed.update(pointer.rsplit("/", 1)[-1] for pointer in report.pointers)
        if "InternalRiskRating" not in json.dumps(document):
            assert declared.validate(document) == [], (op, status)  # valid as the app wrote it
    # The one thing the apps send that the contract does not declare is stripped, not refused.
    assert removed == {"InternalRiskRating"}


def _body_violations(contract: Contract, body: bytes) -> list[str]:
    from bankguard.request import Headers

    (op,) = [op for op in contract.operations if op.operation_id == "CreateDomesticPayment"]
    found = op.check_request(
        path_params={}, query="", headers=Headers([]), body=body, content_type="application/json"
    )
    return [f"{v.location}:{v.code}" for v in found]


def _mutated(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    document: dict[str, Any] = copy.deepcopy(PAYMENT)
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


_DELETE = object()
_INITIATION = ("Data", "Initiation")


@pytest.mark.parametrize(
    ("document", "contract_accepts", "model_accepts"),
    [
        (PAYMENT, True, True),
        (_mutated(("Risk",), _DELETE), True, True),
        (_mutated(("Risk",), {"PaymentContextCode": "EcommerceGoods"}), True, True),
        (_mutated((*_INITIATION, "RemittanceInformation"), {"Unstructured": "x" * 140}), True, True),
        (_mutated((*_INITIATION, "InstructedAmount", "Amount"), "1234567890123.12345"), True, True),
        # refused by both
        (_mutated(("Data", "ConsentId"), _DELETE), False, False),
        (_mutated(("Data", "Status"), "AcceptedSettlementCompleted"), False, False),  # mass assignment
        (_mutated((*_INITIATION, "InstructedAmount", "Amount"), "12,50"), False, False),
        (_mutated((*_INITIATION, "InstructedAmount", "Amount"), 12.5), False, False),
        (_mutated((*_INITIATION, "InstructedAmount", "Currency"), "gbp"), False, False),
        (_mutated((*_INITIATION, "InstructionIdentification"), "x" * 36), False, False),
        (_mutated((*_INITIATION, "CreditorAccount", "SchemeName"), "UK.OBIE.PAN"), False, False),
        (_mutated((*_INITIATION, "CreditorAccount", "Name"), _DELETE), False, False),
        (_mutated((*_INITIATION, "RemittanceInformation"), {"Reference": ""}), False, False),
        (_mutated(("Risk",), []), False, False),
        ([1, 2], False, False),
        (_mutated((*_INITIATION, "InstructedAmount", "Amount"), "0.00"), False, False),  # nothing to pay
        (_mutated((*_INITIATION, "InstructedAmount", "Amount"), "01.50"), False, False),
        (_mutated((*_INITIATION, "InstructedAmount", "Amount"), "0.00001"), True, True),
        # The model reads an explicit null as absent; the contract has no nullable members.
        (_mutated((*_INITIATION, "DebtorAccount"), None), False, True),
    ],
)
def test_payment_model_and_contract_agree(
    document: Any, contract_accepts: bool, model_accepts: bool, contract: Contract, bank: ModuleType
) -> None:
    from pydantic import ValidationError

    violations = _body_violations(contract, json.dumps(document).encode())
    assert (violations == []) == contract_accepts, violations
    try:
        bank.DomesticPaymentRequest.model_validate(document)
    except ValidationError:
        accepted = False
    else:
        accepted = True
    assert accepted == model_accepts


def test_model_amount_pattern_is_the_contract_s(bank: ModuleType) -> None:
    document = yaml.safe_load(SPEC.read_text())
    assert document["components"]["schemas"]["OBPositiveAmount"]["pattern"] == bank.POSITIVE_AMOUNT


@given(
    st.text(max_size=40)
    | st.from_regex(r"\A\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)\Z")
)
def test_booking_time_parses_rfc3339_or_refuses(bank: ModuleType, text: str) -> None:
    try:
        parsed = bank.booking_time("fromBookingDateTime", text)
    except bank.InvalidQuery as exc:
        refused: str | None = exc.name
        parsed = None
    else:
        refused = None
    if parsed is None:
        assert refused == "fromBookingDateTime"  # the parameter's name, never its value
        return
    assert parsed.tzinfo is not None  # comparable with the booking times, never naive
    assert parsed.year == int(text[:4])


@given(st.datetimes(timezones=st.timezones()))
def test_booking_time_reads_what_isoformat_writes(bank: ModuleType, moment: Any) -> None:
    text = moment.isoformat()
    if moment.utcoffset() is None or moment.utcoffset().seconds % 60 or moment.utcoffset().microseconds:
        return  # RFC 3339 offsets are whole minutes
    parsed = bank.booking_time("toBookingDateTime", text)
    # The same wall time and offset (compared as fields: zoneinfo may name times a DST gap skips).
    assert parsed.replace(tzinfo=None) == moment.replace(tzinfo=None)
    assert parsed.utcoffset() == moment.utcoffset()


@pytest.mark.network
def test_both_apps_minimise_their_responses(live: Live) -> None:
    from fastapi.testclient import TestClient

    responses = {}
    for target in ("/accounts", JULY):
        with TestClient(live.apps["fastapi"]) as client:
            a = client.get(target, headers=live.headers("accounts", "GET", target))
        b = live.apps["flask"].test_client().get(target, headers=live.headers("accounts", "GET", target))
        for response in (a, b):
            assert response.status_code == 200
            body = response.get_data() if hasattr(response, "get_data") else response.content
            assert response.headers["content-length"] == str(len(body))  # fixed after minimisation
        assert a.json() == b.get_json()
        responses[target] = a.json()
    # The internal rating every account record carries does not leave.
    accounts = responses["/accounts"]["Data"]["Account"]
    assert [a["AccountId"] for a in accounts] == ["22289", "31820", "44910"]
    assert not any("InternalRiskRating" in a for a in accounts)
    # Card numbers: first six and last four digits only (PCI DSS v4.0 req. 3.4.1).
    cards = [t["CardInstrument"] for t in responses[JULY]["Data"]["Transaction"] if "CardInstrument" in t]
    assert cards
    assert {c["Identification"] for c in cards} == {"465943******6541"}
    assert all(c["CardSchemeName"] == "VISA" for c in cards)
    # Not card numbers, though Luhn-valid or long digit runs: a UK sort code + account number and
    # the dash-grouped transaction ids come back whole.
    assert accounts[0]["Account"][0]["Identification"] == "80200110203345"
    ids = [t["TransactionId"] for t in responses[JULY]["Data"]["Transaction"]]
    assert ids
    assert not any("*" in i for i in ids)
