"""Peer check of the API contract (issue 6, point 6): schemathesis against both examples.

schemathesis reads ``examples/openapi.yaml``, generates requests for every operation -- requests
that keep the contract, and requests that break it (``generation.mode: all``) -- and sends them
to real servers: the FastAPI example under uvicorn and the Flask example under gunicorn, each in
its own process on a free port of 127.0.0.1, protected by bankguard with its example policy
(written to a temporary directory with the ports of this run). Every response must pass:

* ``not_a_server_error``: no 5xx -- neither from the apps nor from bankguard, whose 502
  ``response-invalid`` would mean an app response broke the contract even after minimisation;
* ``status_code_conformance``: the status is one the operation declares;
* ``content_type_conformance`` and ``response_schema_conformance`` (formats included): the body
  is of a declared media type and valid against its schema -- for the apps' answers as bankguard
  minimised them, and for bankguard's own problem documents;
* ``response_headers_conformance``: the declared headers (``x-fapi-interaction-id``, a UUID;
  ``WWW-Authenticate`` on 401/403) are present and valid;
* ``negative_data_rejection``: a request that breaks the contract is refused with a 4xx, which
  here is bankguard's request validation at work (the apps check less than the contract says);
* ``positive_data_acceptance``: a request that keeps the contract is not refused (2xx, or the
  apps' 404 for an account that does not exist): bankguard's checks, request hygiene included,
  refuse nothing the contract allows.

Every request carries a DPoP-bound access token (RFC 9449) of the demo authorization server
(``examples/auth_server.py``, in this process on a free port): ``Authorization: DPoP <token>``
and a fresh proof for the request's method and URL (see :class:`DPoPAuth`). The token grants
``accounts`` and ``payments``, so every operation is reachable; a last test per app checks that
every operation was answered 2xx at least once and that no request was refused for its
credentials.

The run is bounded and repeatable: at most :data:`MAX_EXAMPLES` generated cases per operation and
phase, a fixed seed, derandomised generation, no example database, no shrinking (about 460
requests per app).
"""

from __future__ import annotations

import collections
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import requests
import requests.auth
import schemathesis
import yaml
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from bankguard.testing import DPoPKey

from .conftest import HOST, ROOT, Service, app_command, free_ports, wait_until_answering

pytestmark = pytest.mark.network

SPEC = ROOT / "examples" / "openapi.yaml"
MAX_EXAMPLES = 25
SEED = 20261122
#: The checks of this peer check (schemathesis names).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
)
CONFIG: dict[str, Any] = {
    "seed": SEED,
    "generation": {
        "mode": "all",  # valid requests, and requests that break the contract
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",
        "no-shrink": True,
    },
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},
    },
    "checks": {
        "enabled": False,
        **{name: {"enabled": True} for name in CHECKS},
        "response_schema_conformance": {"enabled": True, "validate-formats": True},
    },
    "request-timeout": 10,
}


@dataclass(frozen=True)
class Example:
    """An example app running in its own process, with the policy written for this run."""

    name: str
    url: str
    service: Service


@pytest.fixture(scope="module")
def authorization_server() -> Iterator[Any]:
    """The demo authorization server on a free port, in this process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        auth_server = importlib.import_module("examples.auth_server")
        with auth_server.running(HOST, 0) as server:
            yield server


def write_policy(app: str, directory: Path, issuer: str, origin: str) -> Path:
    """The example's own policy, with this run's issuer and origin and the contract's full path."""
    policy = yaml.safe_load((ROOT / "examples" / f"{app}_app" / "policy.yaml").read_text())
    (entry,) = policy["tokens"]["issuers"]
    entry.update(issuer=issuer, jwks_uri=f"{issuer}/jwks")
    policy["external_origins"] = [origin]
    policy["openapi"]["spec"] = str(SPEC)
    # Hundreds of requests in seconds from one client: the contract is under test, not the limits.
    policy["ratelimit"]["tiers"] = {"default": "100000/minute"}
    policy["ratelimit"]["operations"] = {}
    policy["ratelimit"]["preauth"] = {"limits": "100000/second"}
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


@pytest.fixture(scope="module", params=["fastapi", "flask"])
def example(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, authorization_server: Any
) -> Iterator[Example]:
    """FastAPI under uvicorn, or Flask under gunicorn, protected by bankguard; stopped after."""
    app: str = request.param
    directory = tmp_path_factory.mktemp(f"schemathesis-{app}")
    (port,) = free_ports(1)
    url = f"http://{HOST}:{port}"
    policy = write_policy(app, directory, authorization_server.url, url)
    env = {**os.environ, "BANKGUARD_POLICY": str(policy), "PYTHONUNBUFFERED": "1"}
    env.pop("FORWARDED_ALLOW_IPS", None)
    service = Service.start(f"{app} app", app_command(app, port), directory / "app.log", env)
    try:
        with httpx.Client(timeout=10.0) as probe:
            wait_until_answering(service, f"{url}/health", probe)
        yield Example(app, url, service)
    finally:
        service.stop()


@dataclass(frozen=True)
class Credential:
    token: str
    key: DPoPKey


@pytest.fixture(scope="module")
def credential(authorization_server: Any) -> Credential:
    """A token for both scopes, bound to a DPoP key (RFC 9449 §5: a proof at the token endpoint)."""
    key = DPoPKey("ES256")
    response = httpx.post(
        authorization_server.token_endpoint,
        data={"grant_type": "client_credentials", "client_id": "tpp-demo", "scope": "accounts payments"},
        headers={"DPoP": key.proof("POST", authorization_server.token_endpoint)},
        timeout=10.0,
    )
    answer = response.json()
    assert response.status_code == 200, answer
    assert (answer["token_type"], answer["scope"]) == ("DPoP", "accounts payments")
    return Credential(answer["access_token"], key)


#: The contract as schemathesis loads it. Loaded here, not from a fixture: schemathesis' lazy
#: loader (``schemathesis.pytest.from_fixture``) sets ``Item._nodeid``, which pytest 9.2 no
#: longer has. Each test passes the running example's URL; :func:`dpop_session` tells the
#: authentication below which token, key and origin to use.
contract = schemathesis.openapi.from_path(SPEC, config=SchemathesisConfig.from_dict(CONFIG))
OPERATIONS = [result.ok() for result in contract.get_all_operations()]


@dataclass
class DPoPSession:
    credential: Credential | None = None
    origin: str | None = None


SESSION = DPoPSession()


@pytest.fixture(autouse=True)
def dpop_session(example: Example, credential: Credential) -> Iterator[DPoPSession]:
    SESSION.credential, SESSION.origin = credential, example.url
    try:
        yield SESSION
    finally:
        SESSION.credential = SESSION.origin = None


class DPoPAuth(requests.auth.AuthBase):
    """``Authorization: DPoP <token>`` and a proof made for this very request (RFC 9449 §7.1).

    Registered with schemathesis' auth extension as a ``requests`` auth, so the proof is made
    when requests sends the request, for its final method and URL. A ``get``/``set`` provider
    cannot do this: schemathesis applies it when a case is generated, and the coverage phase
    generates its cases when the tests are collected -- before any server or token exists, and
    long before the request is sent, while a proof is single-use (its ``jti``) and fresh for
    60 s only (``iat``).
    """

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        credential, origin = SESSION.credential, SESSION.origin
        assert credential is not None, "no example is running"
        assert origin is not None
        # The proof names the origin the policy names, and the path as sent (the query is left
        # out of htu by DPoPKey, RFC 9449 §4.2).
        htu = origin + urlsplit(request.url or "").path
        proof = credential.key.proof(request.method or "GET", htu, access_token=credential.token)
        request.headers["Authorization"] = f"DPoP {credential.token}"
        request.headers["DPoP"] = proof
        return request


contract.auth.set_from_requests(DPoPAuth())


#: Statuses answered, per example and operation: the run must reach every app handler.
ANSWERED: dict[str, dict[str, collections.Counter[int]]] = {}


@contract.parametrize()
def test_examples_keep_their_contract(case: Case, example: Example) -> None:
    try:
        response = case.call_and_validate(base_url=example.url)
    except BaseException:
        # What the server logged (bankguard's refusals are WARNING audit lines) helps the report.
        print(f"--- {example.name} app log\n{example.service.output()[-4000:]}")
        raise
    operations = ANSWERED.setdefault(example.name, {})
    operations.setdefault(case.operation.label, collections.Counter())[response.status_code] += 1


def test_every_operation_reached_the_app(example: Example) -> None:
    """The run above exercised the apps, not only bankguard's refusals: every operation was
    answered 2xx, and no request was refused for its token or proof (401/403)."""
    answered = ANSWERED.get(example.name, {})
    assert sorted(answered) == sorted(f"{op.method.upper()} {op.path}" for op in OPERATIONS)
    for operation, statuses in answered.items():
        assert any(200 <= status < 300 for status in statuses), (operation, statuses)
        assert not statuses.keys() & {401, 403}, (operation, statuses)
    total = sum(sum(statuses.values()) for statuses in answered.values())
    print(f"{example.name}: {total} requests; " + "; ".join(f"{k}: {dict(v)}" for k, v in answered.items()))
