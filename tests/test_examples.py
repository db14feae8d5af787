"""The examples: the demo passes against real servers, each app matches its policy, both agree."""

from __future__ import annotations

import copy
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bankguard import Policy, cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
APPS = {"fastapi": "examples.fastapi_app.app", "flask": "examples.flask_app.app"}
POLICIES = {name: EXAMPLES / f"{name}_app" / "policy.yaml" for name in APPS}


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Import an example module the way ``uvicorn examples.fastapi_app.app:app`` does."""
    monkeypatch.syspath_prepend(str(ROOT))

    def load(module: str) -> ModuleType:
        return importlib.import_module(module)

    return load


# -- the demo, against real servers on 127.0.0.1 --------------------------------------------


COMMON_LINES = [
    "bankguard: allow, operation GetAccounts",
    "bankguard: allow, operation GetTransactions",
    "bankguard: allow, operation CreateDomesticPayment",
    "x-fapi-interaction-id: 93bac548-d2de-4546-b106-880a5018460d (echoed)",
    "(new; not reflected)",
    "its Id is the x-fapi-interaction-id, read from bankguard",
    "bankguard: deny by routes, reason routes.undeclared_operation",
    "bankguard: deny by routes, reason routes.method_not_allowed",
    "Allow: GET, HEAD",
    "bankguard: deny by request, reason request.body_too_large",
    "bankguard: deny by request, reason request.header_field_too_large",
    "> GET /accounts/../admin",
    "bankguard: deny by request, reason request.dot_segment",
    "bankguard: deny by request, reason request.method_override_header",
    "bankguard: deny by auth, reason authorization.token_outside_header",
    'WWW-Authenticate: Bearer realm="open-banking"',
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
    proc = subprocess.run(  # noqa: S603 - our own script, run with this interpreter
        [sys.executable, "-W", "error", str(EXAMPLES / "demo.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert proc.stderr == "", output
    assert re.search(r"^All (\d+) scenarios got the expected answer\.$", proc.stdout, re.M), output
    assert "FAIL" not in proc.stdout
    for line in COMMON_LINES + expected:
        assert line in proc.stdout, f"missing {line!r}\n{output}"


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
def test_app_routes_match_policy(name: str, load: Any) -> None:
    app = load(APPS[name]).app
    declared = {(op.method, op.path) for op in Policy.from_yaml(POLICIES[name]).routes.operations}
    served = _without_implicit(_app_routes(name, app))
    assert served - declared == set(), "routes the app serves but the policy does not declare"
    assert declared - served == set(), "operations the policy declares but the app does not serve"


@pytest.mark.parametrize("name", list(APPS))
def test_policy_passes_check_policy(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-policy", str(POLICIES[name])]) == 0
    out = capsys.readouterr().out
    assert f"{POLICIES[name]}: OK" in out
    assert "5 operations (5 public); undeclared: deny" in out


def test_policies_are_the_same() -> None:
    assert Policy.from_yaml(POLICIES["fastapi"]) == Policy.from_yaml(POLICIES["flask"])


# -- both apps answer the same JSON ---------------------------------------------------------

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


@pytest.mark.parametrize(
    ("method", "target", "body", "content_type"),
    [
        ("GET", "/accounts", None, None),
        ("GET", "/accounts/22289", None, None),
        ("GET", "/accounts/31820/balances", None, None),
        ("GET", "/accounts/44910/transactions", None, None),
        ("GET", "/accounts/99999/transactions", None, None),  # the apps' own 404
        ("POST", "/domestic-payments", PAYMENT, JSON),
        ("POST", "/domestic-payments", BAD_PAYMENT, JSON),
        ("POST", "/domestic-payments", "{not json", JSON),
        ("POST", "/domestic-payments", [1, 2], JSON),
        ("POST", "/domestic-payments", PAYMENT, "text/plain"),
        ("GET", "/admin", None, None),  # bankguard's 404
    ],
)
def test_both_apps_answer_alike(
    method: str, target: str, body: Any, content_type: str | None, load: Any
) -> None:
    from fastapi.testclient import TestClient

    raw = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    with TestClient(load(APPS["fastapi"]).app) as client:
        a = client.request(method, target, content=raw, headers=headers)
    b = load(APPS["flask"]).app.test_client().open(target, method=method, data=raw, headers=headers)
    assert a.status_code == b.status_code
    assert a.headers["content-type"] == b.headers["content-type"]
    assert _comparable(a.json(), a.headers["x-fapi-interaction-id"]) == _comparable(
        b.get_json(), b.headers["x-fapi-interaction-id"]
    )
