"""bankguard demo: a scripted client against the example bank, showing bankguard's decisions.

Run it from the repository root::

    .venv/bin/python examples/demo.py            # FastAPI example under uvicorn
    .venv/bin/python examples/demo.py --flask    # Flask example under a WSGI server (wsgiref)

The example app runs in a background thread on 127.0.0.1, on a free port. The client is
:mod:`http.client`, which sends what it is told: repeated header lines, and targets such as
``/accounts/../admin`` exactly as written. For each request the demo prints what was sent, the
status, bankguard's decision as written to its audit log (the ``bankguard.audit`` logger), and
a summary of the response. It exits with 0 when every scenario got the expected answer, 1 if not.
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Any

from bankguard import AuditEvent, Policy

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT = 10.0  # seconds to wait for the server to listen
STOP_TIMEOUT = 10.0  # seconds to wait for it to stop
CLIENT_TIMEOUT = 10.0  # seconds per request
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CLIENT_INTERACTION_ID = "93bac548-d2de-4546-b106-880a5018460d"

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


# -- what the server side records --------------------------------------------------------------


class Recorder(logging.Handler):
    """Collects bankguard's audit events and the example apps' log lines, by interaction id.

    bankguard's default audit sink logs each decision on ``bankguard.audit`` and attaches the
    :class:`~bankguard.AuditEvent` to the record as ``bankguard_event``. The example apps log
    the operation and interaction id they read from bankguard on the ``examples`` logger.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.events: dict[str, AuditEvent] = {}
        self.app_saw: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "bankguard_event", None)
        if isinstance(event, AuditEvent):
            self.events[event.interaction_id] = event
        elif interaction_id := getattr(record, "interaction_id", None):
            self.app_saw[interaction_id] = str(getattr(record, "operation", None))


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    recorder = Recorder()
    loggers = [logging.getLogger(name) for name in ("bankguard.audit", "examples")]
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
def uvicorn_server(app: Any) -> Iterator[tuple[str, int]]:
    """Serve an ASGI app with uvicorn in a thread, on a socket bound to a free port."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield HOST, port
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()


@contextlib.contextmanager
def wsgi_server(app: Any) -> Iterator[tuple[str, int]]:
    """Serve a WSGI app with the standard library's wsgiref server in a thread."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        timeout = CLIENT_TIMEOUT  # a stalled connection cannot hold the server

        def log_message(self, format: str, *args: Any) -> None:  # no access log
            pass

    server = make_server(HOST, 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="wsgiref", daemon=True)
    thread.start()
    try:
        yield HOST, server.server_address[1]
    finally:
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(STOP_TIMEOUT)
        thread.join(STOP_TIMEOUT)
        server.server_close()


# -- scenarios ---------------------------------------------------------------------------------


@dataclass
class Result:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes
    event: AuditEvent | None
    #: The operation the app logged for this interaction id, read from bankguard's context.
    app_saw: str | None
    #: Lines the checks add to the printed report.
    notes: list[str] = field(default_factory=list)

    @property
    def interaction_id(self) -> str:
        return self.headers.get("x-fapi-interaction-id", "")

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
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    #: The bankguard control expected to refuse the request; None when bankguard lets it through.
    denied_by: str | None = None
    #: Describes the JSON the app answered with (one line, or a few separated by newlines).
    summary: Callable[[Any], str] | None = None
    #: Extra expectations; returns what went wrong, and may add lines to ``Result.notes``.
    check: Check | None = None
    #: Printed when run against a WSGI server.
    wsgi_note: str | None = None


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


def _header(name: str, must_contain: str) -> Check:
    def check(r: Result) -> list[str]:
        values = r.headers.get_all(name) or []
        r.notes.extend(f"{name}: {v}" for v in values)
        return [] if any(must_contain in v for v in values) else [f"no {name} header with {must_contain!r}"]

    return check


def scenarios() -> list[Scenario]:
    payment = json.dumps(PAYMENT).encode()
    oversized = dict(PAYMENT, Risk={"PaymentContextCode": "EcommerceGoods", "Notes": "x" * 40_000})
    return [
        Scenario("List accounts", "GET", "/accounts", 200, summary=_accounts),
        Scenario("Read one account", "GET", "/accounts/22289", 200, summary=_account),
        Scenario("Read its balances", "GET", "/accounts/22289/balances", 200, summary=_balances),
        Scenario("Read its transactions", "GET", "/accounts/22289/transactions", 200, summary=_transactions),
        Scenario(
            "Unknown AccountId: bankguard allows, the app answers 404",
            "GET",
            "/accounts/99999",
            404,
            summary=_app_error,
            check=_error_id_is_interaction_id,
        ),
        Scenario(
            "Create a domestic payment",
            "POST",
            "/domestic-payments",
            201,
            headers=(JSON,),
            body=payment,
            summary=_payment,
        ),
        Scenario(
            "A valid x-fapi-interaction-id is echoed",
            "GET",
            "/accounts",
            200,
            headers=(("x-fapi-interaction-id", CLIENT_INTERACTION_ID),),
            check=_echoed,
        ),
        Scenario(
            "An invalid x-fapi-interaction-id is replaced",
            "GET",
            "/accounts",
            200,
            headers=(("x-fapi-interaction-id", "<script>alert(1)</script>"),),
            check=_replaced,
        ),
        Scenario("Undeclared path", "GET", "/admin", 404, denied_by="routes"),
        Scenario(
            "Declared path, undeclared method",
            "DELETE",
            "/accounts/22289",
            405,
            denied_by="routes",
            check=_header("Allow", "GET"),
        ),
        Scenario(
            "Payment body over the 16 KiB cap",
            "POST",
            "/domestic-payments",
            413,
            headers=(JSON,),
            body=json.dumps(oversized).encode(),
            denied_by="request",
        ),
        Scenario(
            "A 7000-byte header line (cap 6 KiB)",
            "GET",
            "/accounts",
            431,
            headers=(("X-Padding", "p" * 7000),),
            denied_by="request",
        ),
        Scenario(
            "Dot segments in the path, sent raw",
            "GET",
            "/accounts/../admin",
            400,
            denied_by="request",
        ),
        Scenario(
            "Method override header",
            "GET",
            "/accounts/22289",
            400,
            headers=(("X-HTTP-Method-Override", "DELETE"),),
            denied_by="request",
        ),
        Scenario(
            "Access token in the query string",
            "GET",
            "/accounts?access_token=demo-not-a-real-token",
            401,
            denied_by="auth",
            check=_header("WWW-Authenticate", "Bearer"),
        ),
        Scenario(
            "Two Authorization header lines",
            "GET",
            "/accounts",
            400,
            headers=(("Authorization", "Bearer demo-one"), ("Authorization", "Bearer demo-two")),
            denied_by="auth",
            check=_header("WWW-Authenticate", 'error="invalid_request"'),
            wsgi_note="the WSGI server joined the two lines with ','; bankguard still sees two",
        ),
    ]


# -- running them ------------------------------------------------------------------------------


def send(host: str, port: int, s: Scenario, recorder: Recorder) -> Result:
    conn = http.client.HTTPConnection(host, port, timeout=CLIENT_TIMEOUT)
    try:
        conn.putrequest(s.method, s.target, skip_accept_encoding=True)
        for name, value in s.headers:
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
    )


def evaluate(s: Scenario, r: Result) -> list[str]:
    problems = [] if r.status == s.expect else [f"expected {s.expect}, got {r.status}"]
    if r.event is None:
        return [*problems, "no audit event for this request's interaction id"]
    outcome = f"audit says {r.event.outcome} {r.event.control or ''}".rstrip()
    if s.denied_by is not None:
        if r.event.outcome != "deny" or r.event.control != s.denied_by:
            problems.append(f"expected a denial by {s.denied_by}, {outcome}")
        if r.headers.get_content_type() != "application/problem+json":
            problems.append("the denial is not application/problem+json")
    elif r.event.outcome != "allow":
        problems.append(f"expected bankguard to allow, {outcome} ({r.event.reason})")
    elif 200 <= r.status < 300 and r.app_saw != r.event.operation:
        problems.append(f"the app saw operation {r.app_saw!r}, bankguard matched {r.event.operation!r}")
    if "no-store" not in r.headers.get("Cache-Control", ""):
        problems.append("Cache-Control: no-store is missing")
    if s.check is not None:
        problems += s.check(r)
    return problems


def _elide(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def report(n: int, s: Scenario, r: Result, problems: list[str], wsgi: bool) -> None:
    verdict = f"{r.status} {r.reason}"
    if problems:
        verdict += "  FAIL" if r.status == s.expect else f"  FAIL (expected {s.expect})"
    print(f"[{n:2}] {s.title:<62} {verdict}")
    print(f"     > {s.method} {s.target}")
    for name, value in s.headers:
        shown = value if len(value) <= 60 else f"{value[:16]}... ({len(value)} bytes)"
        print(f"     > {name}: {shown}")
    if s.body is not None:
        print(f"     > ({len(s.body)} bytes of JSON)")
    event = r.event
    if event is not None and event.outcome == "allow":
        print(f"     bankguard: allow, operation {event.operation}")
    elif event is not None:
        print(f"     bankguard: {event.outcome} by {event.control}, reason {event.reason}")
    lines = []
    doc = r.json()
    if s.summary is not None and isinstance(doc, dict):
        with contextlib.suppress(KeyError, IndexError, TypeError):
            lines += s.summary(doc).splitlines()
    elif r.headers.get_content_type() == "application/problem+json" and isinstance(doc, dict):
        slug = str(doc.get("type", "")).rsplit("/", 1)[-1]
        lines.append(f'problem "{doc.get("title")}" (type {slug})')
    lines += r.notes
    for i, line in enumerate(lines):
        print(f"     {'response:' if i == 0 else '':<10} {_elide(line)}")
    if wsgi and s.wsgi_note:
        print(f"     note: {s.wsgi_note}")
    for problem in problems:
        print(f"     FAIL: {problem}")


def run(host: str, port: int, recorder: Recorder, *, wsgi: bool) -> list[str]:
    """Send every scenario and print what happened; return one line per scenario that went wrong."""
    failed = []
    for n, s in enumerate(scenarios(), 1):
        try:
            result = send(host, port, s, recorder)
        except OSError as exc:
            print(f"[{n:2}] {s.title:<62} no answer\n     FAIL: {type(exc).__name__}: {exc}")
            failed.append(f"[{n}] {s.title}: no answer ({exc})")
            continue
        problems = evaluate(s, result)
        report(n, s, result, problems, wsgi)
        if problems:
            failed.append(f"[{n}] {s.title}: " + "; ".join(problems))
    return failed


def load_app(module: str) -> Any:
    if str(ROOT) not in sys.path:  # run as a script: make ``examples`` importable
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(module).app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--flask", action="store_true", help="run the Flask example under wsgiref")
    args = parser.parse_args(argv)
    if args.flask:
        name, module, serve, server = "Flask", "examples.flask_app.app", wsgi_server, "wsgiref"
    else:
        name, module, serve, server = "FastAPI", "examples.fastapi_app.app", uvicorn_server, "uvicorn"
    app = load_app(module)
    policy = Path(module.replace(".", "/")).parent / "policy.yaml"
    problem_types = Policy.from_yaml(ROOT / policy).problems.type_base
    total = len(scenarios())
    with recording() as recorder, serve(app) as (host, port):
        print(f"bankguard demo: the {name} example under {server} at http://{host}:{port}")
        print(f"policy {policy}; decisions read back from the 'bankguard.audit' logger")
        print(f"problem types under {problem_types}\n")
        failed = run(host, port, recorder, wsgi=args.flask)
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
