"""The examples: the demo passes against real servers, each app matches its policy, both agree.

The example policies trust the demo authorization server at http://127.0.0.1:8765. The demo
starts its own (in a subprocess); the tests that send tokens to the apps in-process start one
here, after the demo tests, so that the two never compete for the port.
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

from bankguard import Policy, ScopeRequirement, cli
from bankguard.testing import TestIssuer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
APPS = {"fastapi": "examples.fastapi_app.app", "flask": "examples.flask_app.app"}
POLICIES = {name: EXAMPLES / f"{name}_app" / "policy.yaml" for name in APPS}
HOST = "127.0.0.1"
AS_PORT = 8765  # the issuer the example policies trust
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
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        return response.status, response.headers, json.loads(response.read())
    finally:
        conn.close()


def post_token(port: int, form: dict[str, str] | str) -> tuple[int, http.client.HTTPMessage, Any]:
    body = form if isinstance(form, str) else urlencode(form)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
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


COMMON_LINES = [
    "demo authorization server (not for production) at http://127.0.0.1:8765",
    "client_id=aisp-demo scope=accounts ",
    "bankguard logged at start-up: WARNING policy: issuer http://127.0.0.1:8765 allows plain http",
    # allowed, with the client the app read from bankguard
    "bankguard: allow, operation GetHealth\n",
    "bankguard: allow, operation GetAccounts (client aisp-demo)",
    "bankguard: allow, operation GetBalances (client aisp-demo)",
    "bankguard: allow, operation GetTransactions (client aisp-demo)",
    "bankguard: allow, operation CreateDomesticPayment (client pisp-demo)",
    "x-fapi-interaction-id: 93bac548-d2de-4546-b106-880a5018460d (echoed)",
    "(new; not reflected)",
    "its Id is the x-fapi-interaction-id, read from bankguard",
    # refused for the token, with the challenge
    "bankguard: deny by tokens, reason token.missing\n",
    '     WWW-Authenticate: Bearer realm="open-banking"\n',  # bare: no error (RFC 6750 §3.1)
    "bankguard: deny by tokens, reason scope.insufficient (client aisp-demo)",
    "bankguard: deny by tokens, reason scope.insufficient (client pisp-demo)",
    'error="insufficient_scope", error_description=',
    'scope="payments"\n',
    'scope="accounts"\n',
    "bankguard: deny by tokens, reason token.expired",
    'error="invalid_token", error_description="The access token has expired."',
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
]


@pytest.mark.network
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            [],
            ["the FastAPI example under uvicorn", "reason authorization.duplicate"],
            id="fastapi-uvicorn",
        ),
        pytest.param(
            ["--flask"],
            [
                "the Flask example under wsgiref",
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


# -- each app serves exactly the operations its policy declares -----------------------------


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
def test_app_routes_match_policy(name: str, apps: dict[str, Any]) -> None:
    declared = {(op.method, op.path) for op in Policy.from_yaml(POLICIES[name]).routes.operations}
    served = _without_implicit(_app_routes(name, apps[name]))
    assert served - declared == set(), "routes the app serves but the policy does not declare"
    assert declared - served == set(), "operations the policy declares but the app does not serve"


#: Where each operation's scopes are declared: (in the policy, in the app's code); None: public.
SCOPES: dict[str, tuple[set[str], set[str]] | None] = {
    "GetHealth": None,
    "GetAccounts": ({"accounts"}, set()),
    "GetAccount": ({"accounts"}, set()),
    "GetBalances": (set(), {"accounts"}),
    "GetTransactions": (set(), {"accounts"}),
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
def test_scopes_are_declared_where_the_examples_say(name: str, apps: dict[str, Any]) -> None:
    found: dict[str, tuple[set[str], set[str]] | None] = {}
    for op in Policy.from_yaml(POLICIES[name]).routes.operations:
        path = op.path.replace("{AccountId}", "22289")
        in_code = _declared_in_code(name, apps[name], op.method, path)
        assert in_code is None or not in_code.any_of
        code = set(in_code.all_of) if in_code else set()
        assert not op.any_scopes
        found[str(op.id)] = None if op.public and not code else (set(op.scopes), code)
    assert found == SCOPES


@pytest.mark.parametrize("name", list(APPS))
def test_policy_passes_check_policy(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    # check-policy only loads the policy: the authorization server need not run.
    assert cli.main(["check-policy", str(POLICIES[name])]) == 0
    out = capsys.readouterr().out
    assert f"{POLICIES[name]}: OK" in out
    assert "6 operations (1 public); undeclared: deny" in out


def test_policies_are_the_same() -> None:
    fastapi, flask = (Policy.from_yaml(POLICIES[name]) for name in APPS)
    assert fastapi == flask
    (issuer,) = fastapi.tokens.issuers
    assert issuer.issuer == f"http://127.0.0.1:{AS_PORT}"
    assert issuer.jwks_uri == f"http://127.0.0.1:{AS_PORT}/jwks"
    assert issuer.audiences == (AUDIENCE,)
    assert issuer.algorithms == ("ES256",)


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
JSON = "application/json"


@dataclass(frozen=True)
class Live:
    apps: dict[str, Any]
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def live(auth_server: ModuleType) -> Iterator[Live]:
    """The demo authorization server on 127.0.0.1:8765, both apps loaded with its keys, tokens."""
    with auth_server.running(HOST, AS_PORT) as server, imported_apps() as loaded:
        tokens = {}
        for name, client_id, extra in (
            ("accounts", "aisp-demo", {}),
            ("payments", "pisp-demo", {}),
            ("both", "tpp-demo", {}),
            ("expired", "aisp-demo", {"lifetime": "-120"}),
        ):
            status, _, answer = post_token(
                AS_PORT, {"grant_type": "client_credentials", "client_id": client_id, **extra}
            )
            assert status == 200, answer
            tokens[name] = answer["access_token"]
        claims = {"sub": "aisp-demo", "client_id": "aisp-demo"}
        impostor = TestIssuer(server.url, alg="ES256", kid=server.kid)
        tokens["forged"] = impostor.mint(claims, audience=AUDIENCE, scope="accounts payments")
        elsewhere = TestIssuer("https://auth.other-bank.example", alg="ES256")
        tokens["other_issuer"] = elsewhere.mint(claims, audience=AUDIENCE, scope="accounts payments")
        yield Live(loaded, tokens)


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
        ("POST", "/domestic-payments", PAYMENT, JSON, "payments", 201),
        ("POST", "/domestic-payments", BAD_PAYMENT, JSON, "payments", 400),
        ("POST", "/domestic-payments", "{not json", JSON, "payments", 400),
        ("POST", "/domestic-payments", [1, 2], JSON, "payments", 400),
        ("POST", "/domestic-payments", PAYMENT, "text/plain", "payments", 415),
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
    if token is not None:
        headers["Authorization"] = f"Bearer {live.tokens[token]}"
    with TestClient(live.apps["fastapi"]) as client:
        a = client.request(method, target, content=raw, headers=headers)
    b = live.apps["flask"].test_client().open(target, method=method, data=raw, headers=headers)
    assert (a.status_code, b.status_code) == (expect, expect)
    assert a.headers["content-type"] == b.headers["content-type"]
    assert a.headers.get_list("www-authenticate") == b.headers.getlist("WWW-Authenticate")
    assert (expect in (401, 403)) == bool(b.headers.getlist("WWW-Authenticate"))
    assert _comparable(a.json(), a.headers["x-fapi-interaction-id"]) == _comparable(
        b.get_json(), b.headers["x-fapi-interaction-id"]
    )
