"""Shared pieces of the property-based fuzz suite.

* :func:`check_decision` is the property every fuzz test asserts for each decision: an allow, or
  a precise 4xx problem document (status among the documented ones, ``application/problem+json``,
  ``type``/``title``/``status``, ``WWW-Authenticate`` on every 401, no CR/LF/NUL in any header),
  exactly one audit event whose outcome and status match, a reason code that ``docs/errors.md``
  lists with that status, and neither the raw token, the proof nor any other secret in the event,
  the problem body or its headers;
* :func:`verdict` reduces a decision to what an invariance property compares;
* JSON, base64url and header strategies, bounded so that each example stays cheap;
* the issuer, DPoP key and policy every token-related module shares.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bankguard import EventCollector, Guard, Policy
from bankguard.decision import Decision
from bankguard.testing import DPoPKey, TestIssuer

ERRORS_MD = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
PROBLEM = "application/problem+json"
TYPE_BASE = "https://bankguard.dev/problems/"
#: Statuses a refusal of client input may have (docs/errors.md); 5xx never.
CLIENT_ERRORS = frozenset({400, 401, 403, 404, 405, 413, 414, 415, 422, 429, 431})
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_PARAM = r'[a-z_]+="[\x20\x21\x23-\x5b\x5d-\x7e]*"'
#: A challenge as bankguard writes it; values hold only the characters RFC 6750 §3 allows.
CHALLENGE = re.compile(rf"(?:Bearer|DPoP)(?: {_PARAM}(?:, {_PARAM})*)?\Z")
UNSAFE = re.compile(r"[\r\n\x00]")

ISS = "https://as.bank.example"
AUDIENCE = "https://api.bank.example"
ORIGIN = "https://api.bank.example"
ISSUER = TestIssuer(ISS, alg="ES256", kid="k1")
KEY = DPoPKey("ES256")

#: Sizes shared by the modules; a test picks ``max_examples`` to fit the 90 s suite budget.
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=False,
    # Data-heavy strategies (JSON documents, certificates) legitimately draw a lot per example.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


def attempt(fn: Any, *args: Any, error: type[Exception], **kwargs: Any) -> tuple[Any, str | None]:
    """``(result, None)``, or ``(None, reason)`` when ``fn`` raised ``error`` (its ``reason``);
    any other exception propagates and fails the test."""
    try:
        return fn(*args, **kwargs), None
    except error as exc:
        reason = getattr(exc, "reason", None)
    assert isinstance(reason, str), reason
    return None, reason


# -- documented reason codes -------------------------------------------------------------------


def _documented() -> list[tuple[re.Pattern[str], int]]:
    """``(pattern, status)`` for each row of the reason code index of docs/errors.md."""
    text = ERRORS_MD.read_text(encoding="utf-8")
    section = text.split("## Reason code index", 1)[1].split("\n## ", 1)[0]
    rows: list[tuple[re.Pattern[str], int]] = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = line.split("|")
        status = re.match(r"\s*(\d{3})", cells[3])
        if status is None:
            continue
        for code in re.findall(r"`([^`]+)`", cells[1]):
            pattern = re.escape(code)
            pattern = re.sub(r"<[^>]+>", "[A-Za-z0-9_#:.-]+", pattern.replace(r"\<", "<").replace(r"\>", ">"))
            pattern = pattern.replace(r"\*", "[a-z0-9_]+")
            rows.append((re.compile(pattern + r"\Z"), int(status[1])))
    assert len(rows) > 100, "the reason code index of docs/errors.md was not found"
    return rows


DOCUMENTED = _documented()


def documented_statuses(reason: str) -> set[int]:
    return {status for pattern, status in DOCUMENTED if pattern.match(reason)}


# -- the decision property ------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What invariance properties compare: allowed, status, reason, and the problem's ``errors``."""

    allowed: bool
    status: int | None
    reason: str | None
    errors: tuple[tuple[str, str], ...] = ()


def check_decision(
    guard: Guard,
    events: EventCollector,
    before: int,
    decision: Decision,
    *,
    secrets: Iterable[str] = (),
    head: bool = False,
) -> Verdict:
    """Assert the suite's property for one decision; return its :class:`Verdict`."""
    new = events.events[before:]
    assert len(new) == 1, f"expected one audit event, got {len(new)}"
    event = new[0]
    assert event.outcome == ("allow" if decision.allowed else "deny"), event
    serialised = event.to_json()
    long_secrets = [s for s in secrets if len(s) >= 16]
    for secret in long_secrets:
        assert secret not in serialised, "the audit event holds a credential"
    assert event.interaction_id == decision.interaction_id
    if decision.allowed:
        assert event.status is None
        assert event.reason is None
        assert event.control is None
        return Verdict(True, None, None)
    assert event.reason is not None
    assert event.control is not None
    if event.reason.startswith(("token.", "authorization.")) or (
        event.reason.startswith("dpop.") and event.reason != "dpop.replayed"
    ):
        # Claims of a token that did not verify never reach the event (nor any counter).
        assert event.client_id is None, event
        assert event.subject is None, event
    problem = guard.problem(decision, head=head)
    status = problem.status
    assert status in CLIENT_ERRORS, (status, event.reason)
    assert event.status == status
    assert status in documented_statuses(event.reason), f"undocumented reason {event.reason!r} ({status})"
    headers = list(problem.headers)
    for name, value in headers:
        assert not UNSAFE.search(name), (name, value)
        assert not UNSAFE.search(value), (name, value)
        value.encode("latin-1")
        for secret in long_secrets:
            assert secret not in value, "a response header holds a credential"
    assert [v for k, v in headers if k == "content-type"] == [PROBLEM]
    assert [v for k, v in headers if k == "cache-control"] == ["no-store"]
    iids = [v for k, v in headers if k == guard.interaction_header]
    assert iids == [decision.interaction_id]
    challenges = [v for k, v in headers if k == "www-authenticate"]
    if status == 401:
        assert challenges, f"401 without WWW-Authenticate ({event.reason})"
    for challenge in challenges:
        # RFC 6750 §3: quoted values of allowed characters only, each attribute at most once.
        match = CHALLENGE.match(challenge)
        assert match is not None, challenge
        names = re.findall(r'([a-z_]+)="', challenge)
        assert len(names) == len(set(names)), challenge
    if head:
        assert problem.body == b""
        return Verdict(False, status, event.reason)
    text = problem.body.decode("ascii")
    for secret in long_secrets:
        assert secret not in text, "the problem document holds a credential"
    document = json.loads(text)
    assert document["status"] == status
    assert isinstance(document["title"], str)
    assert document["title"]
    assert isinstance(document["type"], str)
    assert document["type"].startswith(TYPE_BASE)
    assert document["interaction_id"] == decision.interaction_id
    errors = tuple((e["location"], e["check"]) for e in document.get("errors", ()))
    return Verdict(False, status, event.reason, errors)


def decide(
    guard: Guard, events: EventCollector, facts: Any, *, secrets: Iterable[str] = (), head: bool = False
) -> Verdict:
    before = len(events.events)
    decision = guard.decide(facts)
    return check_decision(guard, events, before, decision, secrets=secrets, head=head)


# -- strategies ------------------------------------------------------------------------------------

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
#: Arbitrary JSON values, bounded in size (st.recursive; no from_schema).
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


def nested(depth: int, leaf: Any = 1) -> Any:
    """A JSON value nested ``depth`` levels deep (alternating arrays and objects)."""
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


#: Characters that matter to header parsers: separators, quotes, escapes, controls, non-ASCII.
tricky_char = st.sampled_from(list(" \t,;=:\"\\%+/.-_~!#$&'()*<>?@[]{}|^`\r\n\x00\x7f\x80\xa0\xff"))
header_text = st.text(
    st.one_of(tricky_char, st.characters(min_codepoint=0x20, max_codepoint=0x7E)), max_size=40
)
latin1_text = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=40)

#: Header names no control reads (checked against every name bankguard looks at).
READ_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "dpop",
        "x-fapi-interaction-id",
        "content-type",
        "content-length",
        "transfer-encoding",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-forwarded-for",
        "client-cert",
        "client-cert-chain",
        "x-forwarded-client-cert",
        "x-ssl-client-cert",
        "x-ssl-client-verify",
        "x-amzn-mtls-clientcert",
        "cookie",
        "host",
        "x-fapi-customer-ip-address",
        "psu-ip-address",
    }
)
unrelated_header = st.tuples(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=16).filter(
        lambda n: n not in READ_HEADERS
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
)


# -- policies ----------------------------------------------------------------------------------------

OPERATIONS: list[dict[str, Any]] = [
    {"method": "GET", "path": "/accounts", "id": "listAccounts", "scopes": ["accounts"]},
    {"method": "GET", "path": "/accounts/{AccountId}", "id": "getAccount", "scopes": ["accounts"]},
    {"method": "POST", "path": "/payments", "id": "createPayment", "scopes": ["payments"]},
    {"method": "GET", "path": "/health", "id": "health", "public": True},
    {"method": "POST", "path": "/callbacks", "id": "callback", "public": True},
]


def token_policy(**sections: Any) -> Policy:
    """Tokens from :data:`ISSUER` (ES256), DPoP on, the operations above."""
    data: dict[str, Any] = {
        "tokens": {
            "issuers": [
                {"issuer": ISS, "audiences": [AUDIENCE], "algorithms": ["ES256"], "jwks": ISSUER.jwks()}
            ]
        },
        "dpop": {"enabled": True},
        "external_origins": [ORIGIN],
        "routes": {"operations": OPERATIONS},
    }
    data.update(sections)
    return Policy.from_dict(data)


def new_guard(policy: Policy) -> tuple[Guard, EventCollector]:
    events = EventCollector()
    return Guard(policy, sink=events), events
