"""bankguard demo: a scripted client against the example bank, showing bankguard's decisions.

Run it from the repository root::

    .venv/bin/python examples/demo.py            # FastAPI example under uvicorn
    .venv/bin/python examples/demo.py --flask    # Flask example under a WSGI server (wsgiref)

First the demo starts the demo authorization server (``examples/auth_server.py``, not for
production) on 127.0.0.1:8765, the issuer the example policies trust. Then the example app, which
fetches the issuer's public keys as bankguard starts, runs in a background thread at the origin
its policy names in ``external_origins`` (http://127.0.0.1:8000), since DPoP proofs are made for
that URL.

The scripted client uses DPoP (RFC 9449), as the policies' ``fapi2`` profile requires: each demo
client holds a key pair (:class:`bankguard.testing.DPoPKey`, in memory), sends a DPoP proof of it
when it asks the authorization server for a token, so that the token is bound to the key
(``cnf.jkt``), and calls the API with ``Authorization: DPoP <token>`` and a fresh proof for that
request in the ``DPoP`` header. The demo also makes bad tokens itself (from another issuer,
forged, tampered with, unsigned), replays, misdirects and omits proofs, and sends tokens with the
wrong scheme. It sends its scenarios with :mod:`http.client`, which sends what it is told:
repeated header lines, and targets such as ``/accounts/../admin`` exactly as written.

For each request the demo prints what was sent (tokens and proofs described, never in full), the
status, bankguard's decision as written to its audit log (the ``bankguard.audit`` logger), what
the app saw of the caller, what bankguard did to the response under the API's OpenAPI contract
(``examples/openapi.yaml``: undeclared properties removed, card numbers masked), the
``WWW-Authenticate`` challenges of a refusal, and a summary of the response. It exits with 0
when every scenario got the expected answer, 1 if not. Both servers are stopped before it exits.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import http.client
import importlib
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from bankguard import AuditEvent, Policy
from bankguard.testing import DPoPKey, TestIssuer
from bankguard.tokens.jwk import thumbprint

if TYPE_CHECKING:
    from examples.auth_server import DemoAuthorizationServer

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT = 10.0  # seconds to wait for the server to listen
STOP_TIMEOUT = 10.0  # seconds to wait for it to stop
CLIENT_TIMEOUT = 10.0  # seconds per request
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CLIENT_INTERACTION_ID = "93bac548-d2de-4546-b106-880a5018460d"
REALM_CHALLENGE = 'Bearer realm="open-banking"'
DPOP_CHALLENGE = 'DPoP algs="ES256 PS256 EdDSA"'  # the proof algorithms the policies accept
AUDIENCE = "https://api.bank.example"  # the example APIs' identifier in the policies

PAYMENT = {
    "Data": {
        "ConsentId": "PDC-58923",
        "Initiation": {
            "InstructionIdentification": "ACME412",
            "EndToEndIdentification": "FRESCO.21302.GFX.20",
            "InstructedAmount": {"Amount": "165.88", "Currency": "GBP"},
            "CreditorAccount": {
                "SchemeName": "UK.OBIE.SortCodeAccountNumber",
                "Identification": "08080021325698",
                "Name": "ACME Inc",
            },
            "RemittanceInformation": {"Reference": "FRESCO-101"},
        },
    },
    "Risk": {},
}
JSON = ("Content-Type", "application/json")


def examples_module(name: str) -> ModuleType:
    """Import ``examples.<name>``; run as a script, make the ``examples`` package importable first."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"examples.{name}")


# -- what the server side records --------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """What the example app logged about a request it served, read from bankguard's context."""

    operation: str | None
    client_id: str | None
    #: How the token was sender-constrained (``principal.binding``): ``dpop``, ``mtls`` or None.
    binding: str | None


class Recorder(logging.Handler):
    """Collects bankguard's audit events, its operational log and the example apps' log lines.

    bankguard's default audit sink logs each decision on ``bankguard.audit`` and attaches the
    :class:`~bankguard.AuditEvent` to the record as ``bankguard_event``. What the OpenAPI contract
    did to a response (properties removed, a response replaced) is a second event for the same
    interaction id, with a reason ``openapi.response_*``; those are kept apart. Operational messages
    (policy warnings, key set fetches) go to the ``bankguard`` logger. The example apps log the
    operation, interaction id, client id and token binding they read from bankguard on the
    ``examples`` logger.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.events: dict[str, AuditEvent] = {}
        #: Events about responses (the contract's response path), by interaction id.
        self.response_events: dict[str, list[AuditEvent]] = {}
        self.app_saw: dict[str, Served] = {}
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "bankguard_event", None)
        if isinstance(event, AuditEvent):
            if (event.reason or "").startswith("openapi.response"):
                self.response_events.setdefault(event.interaction_id, []).append(event)
            else:
                self.events[event.interaction_id] = event
        elif interaction_id := getattr(record, "interaction_id", None):
            served = Served(
                getattr(record, "operation", None),
                getattr(record, "client_id", None),
                getattr(record, "binding", None),
            )
            self.app_saw[interaction_id] = served
        elif record.name == "bankguard" or record.name.startswith("bankguard."):
            self.messages.append(f"{record.levelname} {record.getMessage()}")

    def new_messages(self, seen: int) -> list[str]:
        return list(dict.fromkeys(self.messages[seen:]))  # in order, repeats once


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    recorder = Recorder()
    loggers = [logging.getLogger(name) for name in ("bankguard", "bankguard.audit", "examples")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(recorder)
        lg.setLevel(logging.INFO)  # allow events are logged at INFO
        lg.propagate = False  # keep the JSON lines off the terminal; the demo prints its own
    try:
        yield recorder
    finally:
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(recorder)
            lg.setLevel(level)
            lg.propagate = propagate


# -- servers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def uvicorn_server(app: Any, host: str, port: int) -> Iterator[tuple[str, int]]:
    """Serve an ASGI app with uvicorn in a thread, on ``host:port``."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: past runs' TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield host, port
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()


@contextlib.contextmanager
def wsgi_server(app: Any, host: str, port: int) -> Iterator[tuple[str, int]]:
    """Serve a WSGI app with the standard library's wsgiref server in a thread, on ``host:port``."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        timeout = CLIENT_TIMEOUT  # a stalled connection cannot hold the server

        def log_message(self, format: str, *args: Any) -> None:  # no access log
            pass

    server = make_server(host, port, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="wsgiref", daemon=True)
    thread.start()
    try:
        yield host, server.server_address[1]
    finally:
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(STOP_TIMEOUT)
        thread.join(STOP_TIMEOUT)
        server.server_close()


# -- access tokens and DPoP proofs -------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, read without verifying it: for display only."""
    claims: dict[str, Any] = json.loads(_unb64(token.split(".")[1]))
    return claims


def describe_proof(proof: str) -> str:
    """What a DPoP proof says, read without verifying it: for display only (never the proof)."""
    header: dict[str, Any] = json.loads(_unb64(proof.split(".")[0]))
    claims = claims_of(proof)
    return (
        f"<proof {claims['htm']} {claims['htu']}, jti {claims['jti'][:8]}, "
        f"key {thumbprint(header['jwk'])[:8]}> ({len(proof)} bytes)"
    )


@dataclass(frozen=True)
class Credential:
    """An access token the demo sends, how, and how it is described in the report.

    With ``key``, the token goes as ``Authorization: DPoP <token>`` with a fresh proof of that
    key for each request (RFC 9449 §7.1); without, as ``Authorization: Bearer <token>``.
    """

    label: str
    token: str
    key: DPoPKey | None = None
    #: The proofs made for this credential, oldest first (a scenario replays one).
    proofs: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def scheme(self) -> str:
        return "Bearer" if self.key is None else "DPoP"

    @property
    def header(self) -> tuple[str, str]:
        return ("Authorization", f"{self.scheme} {self.token}")

    def fresh_proof(self, method: str, url: str) -> str | None:
        """A new proof for ``method url`` and this token (``ath``), or None for a Bearer token."""
        if self.key is None:
            return None
        proof = self.key.proof(method, url, access_token=self.token)
        self.proofs.append(proof)
        return proof


@dataclass(frozen=True)
class Tokens:
    #: DPoP-bound tokens, each sent with proofs of its client's key.
    accounts: Credential
    payments: Credential
    expired: Credential
    other_issuer: Credential
    forged: Credential
    tampered: Credential
    unsigned: Credential
    #: The accounts token sent with proofs of another key: stolen, used by the thief.
    stolen: Credential
    #: The accounts token sent as a Bearer token, without a proof.
    bound_as_bearer: Credential
    #: A token issued without a DPoP proof, so not bound to a key: as Bearer, and under DPoP.
    unbound: Credential
    unbound_as_dpop: Credential


def request_token(
    authz: DemoAuthorizationServer, form: dict[str, str], key: DPoPKey | None
) -> tuple[int, dict[str, Any]]:
    """POST a form to the authorization server's token endpoint, with a DPoP proof of ``key``
    (RFC 9449 §5) when one is given; the status and the JSON answer."""
    host, port = authz.httpd.server_address[:2]
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if key is not None:
        headers["DPoP"] = key.proof("POST", authz.token_endpoint)
    conn = http.client.HTTPConnection(str(host), int(port), timeout=CLIENT_TIMEOUT)
    try:
        conn.request("POST", "/token", urlencode(form), headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def get_tokens(authz: DemoAuthorizationServer) -> Tokens:
    """Tokens from the authorization server over HTTP, and bad ones made here."""
    keys = {"aisp-demo": DPoPKey("ES256"), "pisp-demo": DPoPKey("ES256")}
    print("DPoP keys of the demo clients (ES256, in memory), by RFC 7638 thumbprint:")
    for client_id, key in keys.items():
        print(f"  {client_id}: {key.thumbprint}")
    print(f"Access tokens from the demo authorization server, POST {authz.token_endpoint}")
    print("(a DPoP proof of the client's key binds the token to it: cnf.jkt is the key's thumbprint):")
    fetched: list[str] = []
    for client_id, scope, lifetime, bind in (
        ("aisp-demo", "accounts", None, True),
        ("pisp-demo", "payments", None, True),
        ("aisp-demo", "accounts", -120, True),  # demo-only option: a token that expired 2 minutes ago
        ("aisp-demo", "accounts", None, False),  # no DPoP header: an unbound Bearer token
    ):
        form = {"grant_type": "client_credentials", "client_id": client_id, "scope": scope}
        if lifetime is not None:
            form["lifetime"] = str(lifetime)
        status, answer = request_token(authz, form, keys[client_id] if bind else None)
        shown = " ".join(f"{k}={v}" for k, v in form.items() if k != "grant_type")
        if status != 200:
            raise RuntimeError(f"the authorization server answered {status} {answer} to {shown}")
        fetched.append(answer["access_token"])
        claims = claims_of(answer["access_token"])
        expiry = answer["expires_in"]
        expires = f"expires in {expiry} s" if expiry > 0 else f"expired {-expiry} s ago"
        jkt = claims.get("cnf", {}).get("jkt")
        bound = f"cnf.jkt {jkt[:8]}..." if jkt else "no cnf"
        proof = "+ DPoP proof" if bind else "no proof"
        print(f"  {shown:<48} {proof:<12} {status}: {answer['token_type']}, {bound}, {expires}")
    accounts, payments, expired, unbound = fetched

    # Made here, never issued by the authorization server; bound to the aisp-demo key, so that
    # bankguard gets past the proof and refuses the token itself.
    aisp = keys["aisp-demo"]
    elsewhere = TestIssuer("https://auth.other-bank.example", alg="ES256")
    impostor = TestIssuer(authz.url, alg="ES256", kid=authz.kid)  # its name and key id, another key
    claims = {"sub": "aisp-demo", "client_id": "aisp-demo"}
    header, _, signature = accounts.split(".")
    widened = dict(claims_of(accounts), scope="accounts payments")
    tampered = f"{header}.{_b64(json.dumps(widened, separators=(',', ':')).encode())}.{signature}"
    unsigned_header = _b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    thief = DPoPKey("ES256")
    tokens = Tokens(
        accounts=Credential("aisp-demo token, scope accounts", accounts, aisp),
        payments=Credential("pisp-demo token, scope payments", payments, keys["pisp-demo"]),
        expired=Credential("aisp-demo token, expired 2 minutes ago", expired, aisp),
        other_issuer=Credential(
            f"token of {elsewhere.issuer}",
            elsewhere.mint(claims, audience=AUDIENCE, scope="accounts payments", dpop_key=aisp),
            aisp,
        ),
        forged=Credential(
            "forged: the AS's iss and kid, another key",
            impostor.mint(claims, audience=AUDIENCE, scope="accounts payments", dpop_key=aisp),
            aisp,
        ),
        tampered=Credential("aisp-demo token, scope edited to 'accounts payments'", tampered, aisp),
        unsigned=Credential(
            'unsigned, alg "none"', f"{unsigned_header}.{_b64(json.dumps(widened).encode())}.", aisp
        ),
        stolen=Credential("aisp-demo token, stolen", accounts, thief),
        bound_as_bearer=Credential("aisp-demo token, DPoP-bound", accounts),
        unbound=Credential("aisp-demo token, unbound", unbound),
        unbound_as_dpop=Credential("aisp-demo token, unbound", unbound, aisp),
    )
    print("Made here, not by the authorization server (bound to the aisp-demo key):")
    for credential in (tokens.other_issuer, tokens.forged, tokens.tampered, tokens.unsigned):
        print(f"  {credential.label}")
    print(f"A thief's DPoP key, to use the stolen aisp-demo token: {thief.thumbprint}")
    print()
    return tokens


# -- scenarios ---------------------------------------------------------------------------------


@dataclass
class Result:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes
    event: AuditEvent | None
    #: What the app logged for this interaction id, read from bankguard's context.
    app_saw: Served | None
    #: The DPoP proof sent, if any.
    proof: str | None = None
    #: What bankguard did to the response under the contract (removed properties, replaced it).
    response_events: list[AuditEvent] = field(default_factory=list)
    #: Lines the checks add to the printed report.
    notes: list[str] = field(default_factory=list)

    @property
    def interaction_id(self) -> str:
        return self.headers.get("x-fapi-interaction-id", "")

    @property
    def challenges(self) -> list[str]:
        return self.headers.get_all("WWW-Authenticate") or []

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


Check = Callable[[Result], list[str]]


@dataclass(frozen=True)
class Scenario:
    title: str
    method: str
    target: str
    expect: int
    #: The access token sent in the Authorization header, with a fresh DPoP proof if it has a key.
    auth: Credential | None = None
    #: Makes the DPoP header instead, from the method and URL (None from it: no DPoP header).
    proof: Callable[[str, str], str | None] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    #: The bankguard control expected to refuse the request; None when bankguard lets it through.
    denied_by: str | None = None
    #: The reason code expected in the audit event of the refusal.
    reason: str | None = None
    #: Describes the JSON the app answered with (one line, or a few separated by newlines).
    summary: Callable[[Any], str] | None = None
    #: Extra expectations; returns what went wrong, and may add lines to ``Result.notes``.
    check: Check | None = None
    #: Printed when run against a WSGI server.
    wsgi_note: str | None = None
    #: Replaces ``check`` when run against a WSGI server.
    wsgi_check: Check | None = None

    def credentials(self, origin: str) -> tuple[tuple[str, str], ...]:
        """The Authorization and DPoP headers; a proof is made now, for the URL of this request
        at ``origin`` (the one the policy names)."""
        if self.auth is None:
            return ()
        url = origin + self.target
        proof = self.proof(self.method, url) if self.proof else self.auth.fresh_proof(self.method, url)
        return (self.auth.header,) + ((("DPoP", proof),) if proof is not None else ())


def _health(doc: Any) -> str:
    return f"status {doc['status']}"


def _accounts(doc: Any) -> str:
    accounts = doc["Data"]["Account"]
    return f"{len(accounts)} accounts: " + ", ".join(f"{a['AccountId']} {a['Nickname']}" for a in accounts)


def _account(doc: Any) -> str:
    a = doc["Data"]["Account"][0]
    scheme = a["Account"][0]  # the scheme and number that identify the account
    name = f"{a['AccountId']} {a['AccountSubType']} '{a['Nickname']}'"
    return f"{name}, {scheme['SchemeName']} {scheme['Identification']}"


def _balances(doc: Any) -> str:
    return "; ".join(
        f"{b['Type']} {b['Amount']['Amount']} {b['Amount']['Currency']} {b['CreditDebitIndicator']}"
        for b in doc["Data"]["Balance"]
    )


def _transactions(doc: Any) -> str:
    rows = doc["Data"]["Transaction"]
    last = rows[-1]
    sign = "-" if last["CreditDebitIndicator"] == "Debit" else "+"
    return (
        f"{len(rows)} transactions {rows[0]['BookingDateTime'][:10]}..{last['BookingDateTime'][:10]}; "
        f"latest '{last['TransactionInformation']}' {sign}{last['Amount']['Amount']}"
    )


def _payment(doc: Any) -> str:
    d = doc["Data"]
    return f"DomesticPaymentId {d['DomesticPaymentId']}\n{d['Status']}, created {d['CreationDateTime']}"


def _app_error(doc: Any) -> str:
    return f"the app's own error: {doc['Code']}, {doc['Errors'][0]['ErrorCode']}"


def _error_id_is_interaction_id(r: Result) -> list[str]:
    doc = r.json() or {}
    if doc.get("Id") != r.interaction_id:
        return ["the error Id is not the interaction id"]
    r.notes.append("its Id is the x-fapi-interaction-id, read from bankguard")
    return []


def _echoed(r: Result) -> list[str]:
    if r.interaction_id != CLIENT_INTERACTION_ID:
        return [f"x-fapi-interaction-id {r.interaction_id!r} is not the one sent"]
    r.notes.append(f"x-fapi-interaction-id: {r.interaction_id} (echoed)")
    return []


def _replaced(r: Result) -> list[str]:
    problems = []
    if not UUID.match(r.interaction_id):
        problems.append(f"x-fapi-interaction-id {r.interaction_id!r} is not a fresh UUID")
    if r.event is None or not r.event.interaction_id_generated:
        problems.append("the audit event does not say the id was generated")
    r.notes.append(f"x-fapi-interaction-id: {r.interaction_id} (new; not reflected)")
    return problems


def _minimised(r: Result, removed: str) -> list[str]:
    """The audit event of the response says which property was removed (never its value)."""
    events = [e for e in r.response_events if e.reason == "openapi.response_minimised"]
    if not events or f"openapi.removed{removed}" not in events[0].notes:
        return [f"no audit event about removing {removed}"]
    return []


def _internal_field_removed(r: Result) -> list[str]:
    doc = r.json() or {}
    accounts = doc.get("Data", {}).get("Account", [])
    record = examples_module("bank_data").get_account("44910")
    problems = [] if "InternalRiskRating" in record else ["the app's record has no InternalRiskRating"]
    if not accounts or any("InternalRiskRating" in a for a in accounts):
        problems.append("InternalRiskRating reached the client")
    problems += _minimised(r, "/Data/Account/0/InternalRiskRating")
    r.notes.append("InternalRiskRating: in the app's record, not in the contract: removed")
    return problems


PAN_MASKED = re.compile(r"^[0-9]{6}\*{6}[0-9]{4}$")


def _card_numbers_masked(r: Result) -> list[str]:
    doc = r.json() or {}
    rows = doc.get("Data", {}).get("Transaction", [])
    cards = [row["CardInstrument"]["Identification"] for row in rows if "CardInstrument" in row]
    full = {
        row["CardInstrument"]["Identification"]
        for row in examples_module("bank_data").TRANSACTIONS["22289"]
        if "CardInstrument" in row
    }
    problems = [] if cards else ["no card transaction in the response"]
    if not all(PAN_MASKED.match(card) for card in cards) or any(number in r.body.decode() for number in full):
        problems.append(f"card numbers not masked: {cards}")
    if cards:
        r.notes.append(f"CardInstrument.Identification {cards[0]} (in full in the app's record)")
    return problems


def _request_invalid(*expected: tuple[str, str]) -> Check:
    """The 400 problem lists exactly these failed (location, check) pairs."""

    def check(r: Result) -> list[str]:
        doc = r.json() or {}
        got = [(e.get("location"), e.get("check")) for e in doc.get("errors", [])]
        problems = (
            [] if sorted(got) == sorted(expected) else [f"expected the errors {list(expected)}, got {got}"]
        )
        if str(doc.get("type", "")).rsplit("/", 1)[-1] != "request-invalid":
            problems.append(f"the problem type is {doc.get('type')!r}")
        return problems

    return check


def _header(name: str, must_contain: str) -> Check:
    def check(r: Result) -> list[str]:
        values = r.headers.get_all(name) or []
        r.notes.extend(f"{name}: {v}" for v in values)
        return [] if any(must_contain in v for v in values) else [f"no {name} header with {must_contain!r}"]

    return check


Expected = str | tuple[str, ...]


def _challenges(*expected: Expected) -> Check:
    """The WWW-Authenticate challenges, in order (the report prints them for every refusal):
    a string is a whole challenge; a tuple, a challenge that starts with its first string and
    contains the others."""

    def matches(challenge: str, want: Expected) -> bool:
        if isinstance(want, str):
            return challenge == want
        return challenge.startswith(want[0]) and all(part in challenge for part in want[1:])

    def check(r: Result) -> list[str]:
        got = r.challenges
        if len(got) != len(expected) or not all(map(matches, got, expected)):
            return [f"expected the challenges {list(expected)}, got {got}"]
        return []

    return check


#: No usable credentials: every scheme is offered, without an error (RFC 6750 §3.1, RFC 9449 §7.1).
NO_CREDENTIALS = _challenges(REALM_CHALLENGE, DPOP_CHALLENGE)
#: A refused token sent with the DPoP scheme: the DPoP challenge carries the error.
DPOP_INVALID_TOKEN = _challenges((f"{DPOP_CHALLENGE}, ", 'error="invalid_token"'))
BEARER_INVALID_TOKEN = _challenges((f"{REALM_CHALLENGE}, ", 'error="invalid_token"'))
INVALID_PROOF = _challenges((f"{DPOP_CHALLENGE}, ", 'error="invalid_dpop_proof"'))


def scenarios(t: Tokens, origin: str) -> list[Scenario]:
    payment = json.dumps(PAYMENT).encode()
    # A decimal comma, a lower-case currency, and a status the client has no business setting
    # (mass assignment, OWASP API3).
    bad_payment = copy.deepcopy(PAYMENT)
    bad_payment["Data"]["Initiation"]["InstructedAmount"] = {"Amount": "165,88", "Currency": "gbp"}
    bad_payment["Data"]["Status"] = "AcceptedSettlementCompleted"
    oversized = dict(PAYMENT, Risk={"PaymentContextCode": "EcommerceGoods", "Notes": "x" * 40_000})
    aisp = t.accounts.key
    assert aisp is not None

    def replayed(method: str, url: str) -> str:
        return t.accounts.proofs[-1]  # the proof of the previous request, as it was sent

    def made_for(url: str) -> Callable[[str, str], str]:
        def proof(method: str, _: str) -> str:
            return aisp.proof(method, url, access_token=t.accounts.token)

        return proof

    attacker = "http://api.attacker.example"
    return [
        # Allowed.
        Scenario("Health check: public, no token", "GET", "/health", 200, summary=_health),
        Scenario(
            "List accounts (scope in the contract)",
            "GET",
            "/accounts",
            200,
            t.accounts,
            summary=_accounts,
        ),
        Scenario(
            "Read one account (counted against the client's rate limit)",
            "GET",
            "/accounts/22289",
            200,
            t.accounts,
            summary=_account,
            check=_header("RateLimit", '"tpp-60s";r='),
        ),
        Scenario(
            "Read its balances (scope in the contract and app.py)",
            "GET",
            "/accounts/22289/balances",
            200,
            t.accounts,
            summary=_balances,
        ),
        Scenario(
            "Read its transactions (scope in the contract and app.py)",
            "GET",
            "/accounts/22289/transactions",
            200,
            t.accounts,
            summary=_transactions,
        ),
        Scenario(
            "Unknown AccountId: bankguard allows, the app answers 404",
            "GET",
            "/accounts/99999",
            404,
            t.accounts,
            summary=_app_error,
            check=_error_id_is_interaction_id,
        ),
        Scenario(
            "Create a domestic payment",
            "POST",
            "/domestic-payments",
            201,
            t.payments,
            headers=(JSON,),
            body=payment,
            summary=_payment,
        ),
        # The API's OpenAPI contract (examples/openapi.yaml): responses minimised, requests validated.
        Scenario(
            "Contract: a field the contract does not declare is removed",
            "GET",
            "/accounts/44910",
            200,
            t.accounts,
            summary=_account,
            check=_internal_field_removed,
        ),
        Scenario(
            "Contract: card numbers are masked (first six, last four)",
            "GET",
            "/accounts/22289/transactions?fromBookingDateTime=2024-07-01T00:00:00Z"
            "&toBookingDateTime=2024-07-10T00:00:00Z",
            200,
            t.accounts,
            summary=_transactions,
            check=_card_numbers_masked,
        ),
        Scenario(
            "Contract: a booking date that is not a date-time",
            "GET",
            "/accounts/22289/transactions?fromBookingDateTime=last%20Tuesday",
            400,
            t.accounts,
            denied_by="openapi",
            reason="openapi.request_invalid",
            check=_request_invalid(("query.fromBookingDateTime", "format")),
        ),
        Scenario(
            "Contract: a payment that breaks the schema",
            "POST",
            "/domestic-payments",
            400,
            t.payments,
            headers=(JSON,),
            body=json.dumps(bad_payment).encode(),
            denied_by="openapi",
            reason="openapi.request_invalid",
            check=_request_invalid(
                ("body/Data", "additionalProperties"),
                ("body/Data/Initiation/InstructedAmount/Amount", "pattern"),
                ("body/Data/Initiation/InstructedAmount/Currency", "pattern"),
            ),
        ),
        Scenario(
            "A valid x-fapi-interaction-id is echoed",
            "GET",
            "/accounts",
            200,
            t.accounts,
            headers=(("x-fapi-interaction-id", CLIENT_INTERACTION_ID),),
            check=_echoed,
        ),
        Scenario(
            "An invalid x-fapi-interaction-id is replaced",
            "GET",
            "/accounts",
            200,
            t.accounts,
            headers=(("x-fapi-interaction-id", "<script>alert(1)</script>"),),
            check=_replaced,
        ),
        # Refused for DPoP: the token is bound to a key, each proof is for one request.
        Scenario(
            "DPoP: a fresh proof for this request",
            "GET",
            "/accounts/31820",
            200,
            t.accounts,
            summary=_account,
        ),
        Scenario(
            "DPoP: the same proof sent again (replay)",
            "GET",
            "/accounts/31820",
            401,
            t.accounts,
            proof=replayed,
            denied_by="tokens",
            reason="dpop.replayed",
            check=INVALID_PROOF,
        ),
        Scenario(
            "DPoP: a proof made for another URL",
            "GET",
            "/accounts/22289/transactions",
            401,
            t.accounts,
            proof=made_for(f"{origin}/accounts"),
            denied_by="tokens",
            reason="dpop.htu_path_mismatch",
            check=INVALID_PROOF,
        ),
        Scenario(
            "DPoP: a proof for another server, Host header to match",
            "GET",
            "/accounts",
            401,
            t.accounts,
            headers=(("Host", urlsplit(attacker).netloc),),
            proof=made_for(f"{attacker}/accounts"),
            denied_by="tokens",
            reason="dpop.htu_origin_mismatch",
            check=INVALID_PROOF,
        ),
        Scenario(
            "DPoP: no proof with the DPoP scheme",
            "GET",
            "/accounts",
            401,
            t.accounts,
            proof=lambda method, url: None,
            denied_by="tokens",
            reason="dpop.proof_missing",
            check=INVALID_PROOF,
        ),
        Scenario(
            "DPoP: a stolen token, with proofs of the thief's key",
            "GET",
            "/accounts",
            401,
            t.stolen,
            denied_by="tokens",
            reason="token.dpop_key_mismatch",
            check=DPOP_INVALID_TOKEN,
        ),
        Scenario(
            "DPoP: the DPoP-bound token sent as a Bearer token",
            "GET",
            "/accounts",
            401,
            t.bound_as_bearer,
            denied_by="tokens",
            reason="token.dpop_bound_presented_as_bearer",
            check=_challenges((f"{REALM_CHALLENGE}, ", 'error="invalid_token"'), DPOP_CHALLENGE),
        ),
        Scenario(
            "DPoP: an unbound token under the DPoP scheme",
            "GET",
            "/accounts",
            401,
            t.unbound_as_dpop,
            denied_by="tokens",
            reason="token.not_dpop_bound",
            check=DPOP_INVALID_TOKEN,
        ),
        Scenario(
            "FAPI 2.0: an unbound Bearer token, otherwise valid",
            "GET",
            "/accounts",
            401,
            t.unbound,
            denied_by="tokens",
            reason="token.not_sender_constrained",
            check=BEARER_INVALID_TOKEN,
        ),
        # Refused for the access token.
        Scenario(
            "No access token",
            "GET",
            "/accounts",
            401,
            denied_by="tokens",
            reason="token.missing",
            check=NO_CREDENTIALS,  # no error: nothing was tried (RFC 6750 §3.1)
        ),
        Scenario(
            "An accounts token cannot pay (scope in the contract)",
            "POST",
            "/domestic-payments",
            403,
            t.accounts,
            headers=(JSON,),
            body=payment,
            denied_by="tokens",
            reason="scope.insufficient",
            check=_challenges((f"{DPOP_CHALLENGE}, ", 'error="insufficient_scope"', 'scope="payments"')),
        ),
        Scenario(
            "A payments token cannot list accounts (scope in the contract)",
            "GET",
            "/accounts",
            403,
            t.payments,
            denied_by="tokens",
            reason="scope.insufficient",
            check=_challenges((f"{DPOP_CHALLENGE}, ", 'error="insufficient_scope"', 'scope="accounts"')),
        ),
        Scenario(
            "Nor read balances (contract and app.py, before the app runs)",
            "GET",
            "/accounts/22289/balances",
            403,
            t.payments,
            denied_by="tokens",
            reason="scope.insufficient",
            check=_challenges((f"{DPOP_CHALLENGE}, ", 'error="insufficient_scope"', 'scope="accounts"')),
        ),
        Scenario(
            "Expired access token",
            "GET",
            "/accounts",
            401,
            t.expired,
            denied_by="tokens",
            reason="token.expired",
            check=DPOP_INVALID_TOKEN,
        ),
        Scenario(
            "Token from an issuer the policy does not trust",
            "GET",
            "/accounts",
            401,
            t.other_issuer,
            denied_by="tokens",
            reason="token.issuer_unknown",
            check=DPOP_INVALID_TOKEN,
        ),
        Scenario(
            "Forged token: right issuer and kid, wrong key",
            "GET",
            "/accounts",
            401,
            t.forged,
            denied_by="tokens",
            reason="token.signature_invalid",
            check=DPOP_INVALID_TOKEN,
        ),
        Scenario(
            "Tampered token: scope widened to pay",
            "POST",
            "/domestic-payments",
            401,
            t.tampered,
            headers=(JSON,),
            body=payment,
            denied_by="tokens",
            reason="token.signature_invalid",
            check=DPOP_INVALID_TOKEN,
        ),
        Scenario(
            'Unsigned token (alg "none")',
            "GET",
            "/accounts",
            401,
            t.unsigned,
            denied_by="tokens",
            reason="token.signature_missing",
            check=DPOP_INVALID_TOKEN,
        ),
        Scenario(
            "Access token in the query string",
            "GET",
            f"/accounts?access_token={t.accounts.token}",
            401,
            denied_by="auth",
            reason="authorization.token_outside_header",
            check=NO_CREDENTIALS,
        ),
        Scenario(
            "Two Authorization header lines",
            "GET",
            "/accounts",
            400,
            headers=(t.accounts.header, t.payments.header),
            denied_by="auth",
            reason="authorization.duplicate",
            # Two lines: no scheme was used, so every challenge carries the error.
            check=_challenges(
                (f"{REALM_CHALLENGE}, ", 'error="invalid_request"'),
                (f"{DPOP_CHALLENGE}, ", 'error="invalid_request"'),
            ),
            wsgi_note="the WSGI server joined the two lines with ','; bankguard still sees two",
        ),
        # Refused for the request itself, whatever the token.
        Scenario("Undeclared path", "GET", "/admin", 404, t.accounts, denied_by="routes"),
        Scenario(
            "Declared path, undeclared method",
            "DELETE",
            "/accounts/22289",
            405,
            t.accounts,
            denied_by="routes",
            reason="routes.method_not_allowed",
            check=_header("Allow", "GET"),
        ),
        Scenario(
            "Payment body over the 16 KiB cap",
            "POST",
            "/domestic-payments",
            413,
            t.payments,
            headers=(JSON,),
            body=json.dumps(oversized).encode(),
            denied_by="request",
            reason="request.body_too_large",
        ),
        Scenario(
            "A 7000-byte header line (cap 6 KiB)",
            "GET",
            "/accounts",
            431,
            t.accounts,
            headers=(("X-Padding", "p" * 7000),),
            denied_by="request",
            reason="request.header_field_too_large",
        ),
        Scenario(
            "Dot segments in the path, sent raw",
            "GET",
            "/accounts/../admin",
            400,
            t.accounts,
            denied_by="request",
            reason="request.dot_segment",
        ),
        Scenario(
            "Method override header",
            "GET",
            "/accounts/22289",
            400,
            t.accounts,
            headers=(("X-HTTP-Method-Override", "DELETE"),),
            denied_by="request",
            reason="request.method_override_header",
        ),
    ]


# -- running them ------------------------------------------------------------------------------


def send(host: str, port: int, origin: str, s: Scenario, recorder: Recorder) -> Result:
    credentials = s.credentials(origin)
    headers = credentials + s.headers
    conn = http.client.HTTPConnection(host, port, timeout=CLIENT_TIMEOUT)
    try:
        own_host = any(name.lower() == "host" for name, _ in headers)
        conn.putrequest(s.method, s.target, skip_host=own_host, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if s.body is not None:
            conn.putheader("Content-Length", str(len(s.body)))
        conn.endheaders(s.body)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    interaction_id = response.headers.get("x-fapi-interaction-id", "")
    return Result(
        status=response.status,
        reason=response.reason,
        headers=response.headers,
        body=body,
        event=recorder.events.get(interaction_id),
        app_saw=recorder.app_saw.get(interaction_id),
        proof=next((value for name, value in credentials if name == "DPoP"), None),
        response_events=recorder.response_events.get(interaction_id, []),
    )


def evaluate(s: Scenario, r: Result, *, wsgi: bool) -> list[str]:
    problems = [] if r.status == s.expect else [f"expected {s.expect}, got {r.status}"]
    if r.event is None:
        return [*problems, "no audit event for this request's interaction id"]
    event = r.event
    outcome = f"audit says {event.outcome} {event.control or ''}".rstrip()
    if s.denied_by is not None:
        if event.outcome != "deny" or event.control != s.denied_by:
            problems.append(f"expected a denial by {s.denied_by}, {outcome}")
        if s.reason is not None and event.reason != s.reason:
            problems.append(f"expected the reason {s.reason}, audit says {event.reason}")
        if r.headers.get_content_type() != "application/problem+json":
            problems.append("the denial is not application/problem+json")
        if r.app_saw is not None:
            problems.append("the app ran for a request bankguard refused")
    elif event.outcome != "allow":
        problems.append(f"expected bankguard to allow, {outcome} ({event.reason})")
    elif 200 <= r.status < 300:
        if r.app_saw is None or r.app_saw.operation != event.operation:
            problems.append(f"the app saw {r.app_saw}, bankguard matched operation {event.operation!r}")
        elif r.app_saw.client_id != event.client_id:
            problems.append(f"the app saw client {r.app_saw.client_id!r}, bankguard {event.client_id!r}")
        elif s.auth is not None and s.auth.scheme == "DPoP" and r.app_saw.binding != "dpop":
            problems.append(f"the app saw principal.binding {r.app_saw.binding!r}, not 'dpop'")
    if "no-store" not in r.headers.get("Cache-Control", ""):
        problems.append("Cache-Control: no-store is missing")
    check = s.wsgi_check if wsgi and s.wsgi_check is not None else s.check
    if check is not None:
        problems += check(r)
    return problems


def _elide(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _decision(event: AuditEvent) -> str:
    if event.outcome == "allow":
        line = f"bankguard: allow, operation {event.operation}"
    else:
        line = f"bankguard: {event.outcome} by {event.control}, reason {event.reason}"
    if event.client_id:
        line += f" (client {event.client_id})"
    return line


def _response_decision(event: AuditEvent) -> str:
    """What the contract did to the response: counts and removed pointers, never values."""
    if event.outcome == "deny":
        return f"bankguard, response: replaced by a {event.status} problem, reason {event.reason}"
    counts = dict(
        note.removeprefix("openapi.").split(":", 1)
        for note in event.notes
        if note.startswith(("openapi.removed_", "openapi.masked:"))
    )
    removed = [
        note.removeprefix("openapi.removed") for note in event.notes if note.startswith("openapi.removed/")
    ]
    undeclared, unauthorised = counts.get("removed_undeclared", 0), counts.get("removed_unauthorised", 0)
    where = f" ({removed[0]}{f', +{len(removed) - 1}' if len(removed) > 1 else ''})" if removed else ""
    return (
        f"bankguard, response: {event.reason}: removed {undeclared} undeclared{where}, "
        f"{unauthorised} unauthorised; masked {counts.get('masked', 0)}"
    )


def report(n: int, s: Scenario, r: Result, problems: list[str], wsgi: bool) -> None:
    verdict = f"{r.status} {r.reason}"
    if problems:
        verdict += "  FAIL" if r.status == s.expect else f"  FAIL (expected {s.expect})"
    print(f"[{n:2}] {s.title:<62} {verdict}")
    print(f"     > {s.method} {_elide(s.target, 72)}")
    if s.auth is not None:  # tokens and proofs are described, never printed
        print(f"     > Authorization: {s.auth.scheme} <{s.auth.label}>")
        if r.proof is not None:
            print(f"     > DPoP: {describe_proof(r.proof)}")
    for name, value in s.headers:
        if name == "Authorization":
            value = f"{value[:24]}... ({len(value)} bytes)"
        shown = value if len(value) <= 60 else f"{value[:16]}... ({len(value)} bytes)"
        print(f"     > {name}: {shown}")
    if s.body is not None:
        print(f"     > ({len(s.body)} bytes of JSON)")
    if r.event is not None:
        print(f"     {_decision(r.event)}")
    if r.app_saw is not None:  # what the app read from bankguard's verified principal
        caller = f"client {r.app_saw.client_id}" if r.app_saw.client_id else "an anonymous caller"
        print(f"     app: served {caller}, principal.binding {r.app_saw.binding}")
    for event in r.response_events:  # what the contract did to the app's response
        print(f"     {_response_decision(event)}")
    lines = []
    doc = r.json()
    if s.summary is not None and isinstance(doc, dict):
        with contextlib.suppress(KeyError, IndexError, TypeError):
            lines += s.summary(doc).splitlines()
    elif r.headers.get_content_type() == "application/problem+json" and isinstance(doc, dict):
        slug = str(doc.get("type", "")).rsplit("/", 1)[-1]
        lines.append(f'problem "{doc.get("title")}" (type {slug})')
        lines += [f"failed: {e.get('location')} ({e.get('check')})" for e in doc.get("errors", [])]
    lines += r.notes
    for i, line in enumerate(lines):
        print(f"     {'response:' if i == 0 else '':<10} {_elide(line)}")
    for challenge in r.challenges:  # printed whole: it is what a client reads to recover
        print(f"     WWW-Authenticate: {challenge}")
    if wsgi and s.wsgi_note:
        print(f"     note: {s.wsgi_note}")
    for problem in problems:
        print(f"     FAIL: {problem}")


def run(host: str, port: int, origin: str, recorder: Recorder, tokens: Tokens, *, wsgi: bool) -> list[str]:
    """Send every scenario and print what happened; return one line per scenario that went wrong."""
    failed = []
    for n, s in enumerate(scenarios(tokens, origin), 1):
        try:
            result = send(host, port, origin, s, recorder)
        except OSError as exc:
            print(f"[{n:2}] {s.title:<62} no answer\n     FAIL: {type(exc).__name__}: {exc}")
            failed.append(f"[{n}] {s.title}: no answer ({exc})")
            continue
        problems = evaluate(s, result, wsgi=wsgi)
        report(n, s, result, problems, wsgi)
        if problems:
            failed.append(f"[{n}] {s.title}: " + "; ".join(problems))
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--flask", action="store_true", help="run the Flask example under wsgiref")
    args = parser.parse_args(argv)
    if args.flask:
        name, module, serve, server = "Flask", "flask_app", wsgi_server, "wsgiref"
    else:
        name, module, serve, server = "FastAPI", "fastapi_app", uvicorn_server, "uvicorn"
    auth_server = examples_module("auth_server")
    try:
        authz: DemoAuthorizationServer = auth_server.DemoAuthorizationServer(HOST, auth_server.DEFAULT_PORT)
    except OSError as exc:
        print(f"cannot start the demo authorization server on {HOST}:{auth_server.DEFAULT_PORT}: {exc}")
        print("Is another demo, or examples/auth_server.py, still running?")
        return 1
    with recording() as recorder, authz, contextlib.ExitStack() as stack:
        # The authorization server runs first: bankguard fetches its keys as the app is protected.
        app_module = examples_module(f"{module}.app")
        policy_file = Path(app_module.POLICY).resolve()
        policy = Policy.from_yaml(policy_file)
        # DPoP proofs name the URL they are made for, and bankguard compares it with the policy's
        # external_origins, never with the Host header. So the demo serves the app exactly at
        # the first origin the policy names (http://127.0.0.1:8000), and makes its proofs for it.
        origin = str(policy.external_origins[0])
        where = urlsplit(origin)
        if where.scheme != "http" or where.path or not where.hostname:
            print(f"cannot serve the example at {origin}: the demo serves http://host:port only")
            return 1
        try:
            host, port = stack.enter_context(serve(app_module.app, where.hostname, where.port or 80))
        except OSError as exc:
            print(f"cannot serve the {name} example at {origin}: {exc}")
            print("Is another demo, or an example app, still running there?")
            return 1
        shown = policy_file.relative_to(ROOT) if policy_file.is_relative_to(ROOT) else policy_file
        print(f"bankguard demo: the {name} example under {server} at {origin}")
        print(f"demo authorization server (not for production) at {authz.url}, key id {authz.kid}")
        dpop = "on" if policy.dpop.enabled else "off"
        print(f"policy {shown}: profile {policy.profile}, DPoP {dpop}")
        print("bankguard's decisions are read back from the 'bankguard.audit' logger")
        print(f"problem types under {policy.problems.type_base}")
        for message in recorder.new_messages(0):
            print(f"bankguard logged at start-up: {message}")
        seen = len(recorder.messages)
        print()
        tokens = get_tokens(authz)
        total = len(scenarios(tokens, origin))
        failed = run(host, port, origin, recorder, tokens, wsgi=args.flask)
        for message in recorder.new_messages(seen):
            print(f"bankguard logged during the run: {message}")
    print()
    if failed:
        print(f"{len(failed)} of {total} scenarios did not get the expected answer:")
        for line in failed:
            print(f"  {line}")
        return 1
    print(f"All {total} scenarios got the expected answer.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
