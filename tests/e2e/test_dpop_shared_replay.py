"""DPoP proof replay across worker processes (DPOP-13, CFG-08): two real servers, one real Redis.

Two uvicorn processes serve the same small Starlette API (written to the test's temporary
directory), each building its own ``Guard`` from the same policy file. They are two replicas
of one API: the policy lists one external origin, ``https://api.bank.example``, for both, as a
load balancer terminating TLS in front of them would. A proof's ``htu`` is compared with that
configured origin, never with the ``Host`` the request carries, so the same proof is valid for
either process and the only difference between the two is the process that receives it.

* With ``storage: redis://127.0.0.1:6379/0`` (the redis-server scripts/test.sh starts) and a
  key prefix unique to the test run, a proof accepted by one process is refused by the other:
  401 ``invalid_dpop_proof``, and the refusing process's audit event gives ``dpop.replayed``.
  The replay marker is in Redis under the prefix; the keys are deleted at teardown.
* The control experiment, ``storage: memory://``, shows why the shared store is needed: each
  process then remembers only the proofs it has seen itself, so the same proof replayed on the
  other process is accepted, while a replay on the same process is still refused.

Each process writes its audit events (one JSON line per decision, allow and deny) to its own
file; requests carry a fresh ``x-fapi-interaction-id`` so that their event can be found. The
processes are started together, waited for with a bound, and always stopped at teardown.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bankguard.testing import DPoPKey, TestIssuer

from .conftest import (
    AUDIENCE,
    HOST,
    ISSUER,
    REQUEST_TIMEOUT,
    Service,
    free_ports,
    new_interaction_id,
    wait_until_answering,
)

pytestmark = pytest.mark.network

REDIS_URL = "redis://127.0.0.1:6379/0"
#: The one origin clients use for both processes: what every proof's ``htu`` names.
ORIGIN = AUDIENCE
ACCOUNTS = f"{ORIGIN}/accounts"
EVENT_TIMEOUT = 5.0  # seconds to wait for an audit event to appear in a process's file

APP_MODULE = '''\
"""A one-route API protected by bankguard, for tests/e2e/test_dpop_shared_replay.py.

The policy file is named by DPOP_E2E_POLICY; audit events (INFO for allow, WARNING for deny)
are written, one JSON line each, to the file named by DPOP_E2E_AUDIT. Responses say which
process answered.
"""

from __future__ import annotations

import logging
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bankguard import Policy, protect

handler = logging.FileHandler(os.environ["DPOP_E2E_AUDIT"], encoding="utf-8")
handler.setFormatter(logging.Formatter("%(message)s"))
audit = logging.getLogger("bankguard.audit")
audit.addHandler(handler)
audit.setLevel(logging.INFO)
audit.propagate = False


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "pid": os.getpid()})


async def accounts(request: Request) -> JSONResponse:
    return JSONResponse({"accounts": ["22289"], "pid": os.getpid()})


app = Starlette(routes=[Route("/health", health), Route("/accounts", accounts)])
app = protect(app, Policy.from_yaml(os.environ["DPOP_E2E_POLICY"]))
'''


def write_policy(directory: Path, issuer: TestIssuer, storage: str) -> Path:
    """DPoP on, one external origin, tokens from ``issuer`` (JWKS inline), ``storage`` as given."""
    policy = directory / "policy.yaml"
    policy.write_text(
        f"""\
# Two processes behind one origin, sharing (or not) their DPoP replay state.
profile: generic
external_origins: [{ORIGIN}]

routes:
  undeclared: deny
  operations:
    - {{id: GetHealth, method: GET, path: /health, public: true}}
    - {{id: GetAccounts, method: GET, path: /accounts, scopes: [accounts]}}

auth:
  realm: open-banking

tokens:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      algorithms: [ES256]
      jwks: {json.dumps(issuer.jwks())}

dpop:
  enabled: true
  algorithms: [ES256]

storage:
{storage}
audit:
  sink: logging
  logger: bankguard.audit
"""
    )
    return policy


# -- the processes -----------------------------------------------------------------------------


@dataclass
class Replica:
    """One server process: its URL, and the file its audit events go to."""

    name: str
    service: Service
    url: str
    audit_log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT)

    def audit_event(self, interaction_id: str) -> dict[str, Any]:
        """This process's audit event for the request with ``interaction_id`` (bounded wait)."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        while True:
            event = self.find_event(interaction_id)
            if event is not None:
                return event
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no audit event for {interaction_id} from {self.name}:\n"
                    f"--- {self.audit_log.name}\n{self._read()}\n{self.service.report()}",
                    pytrace=False,
                )
            time.sleep(0.02)

    def find_event(self, interaction_id: str) -> dict[str, Any] | None:
        for line in self._read().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(event, dict)
                and event.get("event") == "bankguard.decision"
                and event.get("interaction_id") == interaction_id
            ):
                return event
        return None

    def _read(self) -> str:
        return self.audit_log.read_text(errors="replace") if self.audit_log.exists() else ""


@dataclass
class Pair:
    """Two processes serving one API from one policy file."""

    a: Replica
    b: Replica


def start_replica(name: str, directory: Path, app_dir: Path, policy: Path, port: int) -> Replica:
    audit_log = directory / f"{name}-audit.jsonl"
    env = {
        **os.environ,
        "DPOP_E2E_POLICY": str(policy),
        "DPOP_E2E_AUDIT": str(audit_log),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("FORWARDED_ALLOW_IPS", None)
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "dpop_app:app",
        "--app-dir",
        str(app_dir),
        "--host",
        HOST,
        "--port",
        str(port),
        # bankguard reads forwarding headers itself, from trusted proxies only (none here).
        "--no-proxy-headers",
        "--log-level",
        "warning",
    ]
    service = Service.start(name, argv, directory / f"{name}.log", env)
    return Replica(name, service, f"http://{HOST}:{port}", audit_log)


@pytest.fixture(scope="module")
def raw_redis() -> Iterator[redis.Redis]:
    """A plain client, to check the replay markers and delete them afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.fail(
            f"no redis-server answers on 127.0.0.1:6379 ({exc}); run the suite with scripts/test.sh, "
            "which starts one, or start `redis-server --port 6379` yourself",
            pytrace=False,
        )
    yield client
    client.close()


@pytest.fixture(scope="module")
def redis_prefix(raw_redis: redis.Redis) -> Iterator[str]:
    """A key prefix of this test run only; its keys are deleted at the end."""
    prefix = f"bankguard-e2e-dpop:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(raw_redis.scan_iter(match=prefix + "*"))
    if keys:
        raw_redis.delete(*keys)


@dataclass
class Deployments:
    shared: Pair  # storage: redis
    separate: Pair  # storage: memory


@pytest.fixture(scope="module")
def deployments(
    tmp_path_factory: pytest.TempPathFactory, issuer: TestIssuer, redis_prefix: str
) -> Iterator[Deployments]:
    """Four processes, started together: a pair sharing Redis and a pair with memory stores."""
    directory = tmp_path_factory.mktemp("dpop-replicas")
    app_dir = directory / "app"
    app_dir.mkdir()
    (app_dir / "dpop_app.py").write_text(APP_MODULE)
    shared_dir, separate_dir = directory / "redis", directory / "memory"
    shared_dir.mkdir()
    separate_dir.mkdir()
    shared_policy = write_policy(
        shared_dir, issuer, f'  uri: {REDIS_URL}\n  prefix: "{redis_prefix}"\n  timeout: 2s\n'
    )
    separate_policy = write_policy(separate_dir, issuer, "  uri: memory://\n")
    ports = free_ports(4)
    replicas: list[Replica] = []
    try:
        for name, where, policy, port in (
            ("redis-A", shared_dir, shared_policy, ports[0]),
            ("redis-B", shared_dir, shared_policy, ports[1]),
            ("memory-A", separate_dir, separate_policy, ports[2]),
            ("memory-B", separate_dir, separate_policy, ports[3]),
        ):
            replicas.append(start_replica(name, where, app_dir, policy, port))
        with httpx.Client(timeout=REQUEST_TIMEOUT) as probe:
            for replica in replicas:
                wait_until_answering(replica.service, f"{replica.url}/health", probe)
        yield Deployments(shared=Pair(replicas[0], replicas[1]), separate=Pair(replicas[2], replicas[3]))
    finally:
        for replica in replicas:
            replica.service.stop()


# -- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """The ``Authorization`` and ``DPoP`` headers of one request, to send (and replay) as is."""

    token: str
    proof: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"DPoP {self.token}", "DPoP": self.proof}


def fresh(
    issuer: TestIssuer, key: DPoPKey, token: str | None = None, *, jti: str | None = None
) -> Credentials:
    """A token bound to ``key`` (or ``token``) and a new proof (a new ``jti``) for GET /accounts."""
    token = token or issuer.mint(audience=AUDIENCE, dpop_key=key)
    return Credentials(token, key.proof("GET", ACCOUNTS, access_token=token, jti=jti))


def get_accounts(replica: Replica, credentials: Credentials) -> tuple[httpx.Response, str]:
    interaction_id = new_interaction_id()
    with replica.client() as client:
        response = client.get(
            "/accounts", headers={**credentials.headers(), "x-fapi-interaction-id": interaction_id}
        )
    return response, interaction_id


def assert_accepted(replica: Replica, response: httpx.Response, interaction_id: str) -> None:
    assert response.status_code == 200, response.text
    # Answered by this replica's own process, not by some shared one.
    assert response.json()["pid"] == replica.service.proc.pid
    event = replica.audit_event(interaction_id)
    assert event["outcome"] == "allow", event
    assert event["operation"] == "GetAccounts", event


def assert_replay_refused(replica: Replica, response: httpx.Response, interaction_id: str) -> None:
    """401 ``invalid_dpop_proof`` (E3) to the client; ``dpop.replayed`` in the replica's audit event."""
    assert response.status_code == 401, response.text
    challenges = response.headers.get_list("www-authenticate")
    dpop = [c for c in challenges if c.startswith("DPoP ")]
    assert len(dpop) == 1, challenges
    assert 'error="invalid_dpop_proof"' in dpop[0], challenges
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("invalid-dpop-proof"), response.text
    assert response.headers["x-fapi-interaction-id"] == interaction_id
    event = replica.audit_event(interaction_id)
    assert event["outcome"] == "deny", event
    assert event["status"] == 401, event
    assert event["control"] == "tokens", event
    assert event["reason"] == "dpop.replayed", event


def replay_markers(raw_redis: redis.Redis, prefix: str) -> list[bytes]:
    return sorted(raw_redis.scan_iter(match=prefix + "dpop:jti:*"))


# -- storage: redis ----------------------------------------------------------------------------


def test_DPOP_13_proof_replayed_on_another_process_sharing_redis_is_refused(
    deployments: Deployments, issuer: TestIssuer, raw_redis: redis.Redis, redis_prefix: str
) -> None:
    a, b = deployments.shared.a, deployments.shared.b
    assert a.service.proc.pid != b.service.proc.pid
    key = DPoPKey("ES256")
    jti = f"replica-test-{uuid.uuid4()}"
    credentials = fresh(issuer, key, jti=jti)
    before = set(replay_markers(raw_redis, redis_prefix))

    response, interaction_id = get_accounts(a, credentials)
    assert_accepted(a, response, interaction_id)
    # A recorded the proof's jti in Redis, under the run's prefix, for the acceptance window.
    added = set(replay_markers(raw_redis, redis_prefix)) - before
    assert len(added) == 1, added
    (marker,) = added
    assert jti.encode() not in marker  # a hash of the jti, never the jti or the proof
    assert 0 < raw_redis.pttl(marker) <= (60 + 10 + 1) * 1000  # max_age + future_skew + 1 s

    # The very same headers on the other process: refused because the proof was used (on A).
    response, interaction_id = get_accounts(b, credentials)
    assert_replay_refused(b, response, interaction_id)
    assert a.find_event(interaction_id) is None  # B decided alone

    # B accepts a fresh proof for the same token: the refusal above was the replay only.
    response, interaction_id = get_accounts(b, fresh(issuer, key, credentials.token))
    assert_accepted(b, response, interaction_id)


def test_DPOP_13_proof_accepted_by_the_second_process_is_refused_on_the_first(
    deployments: Deployments, issuer: TestIssuer
) -> None:
    a, b = deployments.shared.a, deployments.shared.b
    credentials = fresh(issuer, DPoPKey("ES256"))

    response, interaction_id = get_accounts(b, credentials)
    assert_accepted(b, response, interaction_id)
    response, interaction_id = get_accounts(a, credentials)
    assert_replay_refused(a, response, interaction_id)
    # And again on B itself.
    response, interaction_id = get_accounts(b, credentials)
    assert_replay_refused(b, response, interaction_id)


# -- storage: memory (control experiment) ------------------------------------------------------


def test_CFG_08_memory_store_is_per_process_so_a_replay_on_another_process_gets_through(
    deployments: Deployments, issuer: TestIssuer
) -> None:
    """Why replicas need a shared store: with ``memory://`` each process remembers only its own
    proofs, so the proof A accepted is accepted again by B (the replay DPOP-13 forbids), while
    each process still refuses a replay of a proof it has itself seen."""
    a, b = deployments.separate.a, deployments.separate.b
    credentials = fresh(issuer, DPoPKey("ES256"))

    response, interaction_id = get_accounts(a, credentials)
    assert_accepted(a, response, interaction_id)
    response, interaction_id = get_accounts(b, credentials)
    assert_accepted(b, response, interaction_id)  # the cross-process replay is not detected

    response, interaction_id = get_accounts(a, credentials)
    assert_replay_refused(a, response, interaction_id)
    response, interaction_id = get_accounts(b, credentials)
    assert_replay_refused(b, response, interaction_id)
