"""The whole request path in-process: a bare app, each bankguard control alone, the full stack,
and the peer stack doing the same work by hand, against the cost floor of that work.

    python benchmarks/fullstack.py                     # full run (about two minutes)
    python benchmarks/fullstack.py --quick             # about fifteen seconds
    python benchmarks/fullstack.py --quick --check     # exit 1 when a ratio misses its target
    python benchmarks/fullstack.py --profile full-dpop # cProfile of one variant (top 10 by tottime)

Also run by benchmarks/run.py. Needs the peers (``pip install openapi-core connexion slowapi
Flask-Limiter pyjwt``) and, for the spec-load figure, the UK Open Banking Account and Transaction
spec (``../shared/specs/uk-ob/account-info-openapi.yaml``, or ``$BANKGUARD_SPECS``).

What is measured. The apps, policies, key material and requests are those of
``benchmarks/stack.py`` (its docstring lists the variants): the example bank's contract, ``GET
/accounts/22289/transactions`` answering 50 transactions (47.5 kB as the handler writes them, one
undeclared property per transaction and one full card number; 45.5 kB once minimised) and ``POST
/domestic-payments`` (a 368-byte payment, a 639-byte 201 answer). Each app is driven through its
own interface, without sockets: ASGI apps (Starlette) are awaited with a prepared ``scope`` and
``receive``/``send`` callables on one event loop, WSGI apps (Flask) called with a prepared
``environ``; the answer is collected whole. Requests are built before timing: for the DPoP
variants and the peers each carries a fresh proof (a replayed one would be refused).

Contenders, per interface and operation: ``bare``; each bankguard variant (``request``,
``bearer``, ``mtls``, ``dpop``, ``openapi``, ``ratelimit``: one control on its own, with the
always-on request checks; ``full-mtls`` and ``full-dpop``: everything together); the peers
(``peer openapi-core``, ``peer Connexion``: PyJWT for the access token on every request and for
the DPoP proof, binding and claims by hand, slowapi or Flask-Limiter, a hand-written redaction
pass, and openapi-core's ``validate_request``/``validate_response`` or Connexion 3's validation
middleware, see ``stack.peer_asgi``); with ``--integration`` (and in the full run) openapi-core's
own framework integration, which unmarshals (WSGI only, unless ``aioitertools`` is installed: its
Starlette middleware imports it). ``full-mtls: decide only`` and ``full-dpop: decide only`` are
``Guard.decide`` alone (a guard of the same policy, on request facts built before timing): the
decision pipeline without the adapter and the response path, to tell the two apart. In the WSGI
groups, ``adapters`` is the bare Flask app behind the two adapters that put the Connexion peer on
WSGI (``stack.AsgiInWsgi`` and ``stack.WsgiInAsgi``), to show what they add to that peer.

The floor, measured in the same rounds: the work no implementation can skip, with the fastest
tools at hand. ``floor`` (for ``full-dpop``): ``cryptography`` verifying the DPoP proof's ES256
signature (base64url decode, DER re-encoding, verify: as benchmarks/dpop.py) plus ``json.loads``
of the body (the response for GET, the request for POST) plus one ``jsonschema-rs`` validation
(Draft 4, formats on, ``is_valid``) of the parsed document against its compiled schema (the
minimised response for GET, the request body for POST). The access token's signature is not in
it: clients reuse their token, and a repeated token is verified once and then cached.
``floor, no signature`` (for ``full-mtls``): the same without the proof (token and certificate
are cached after their first use). ``floor +201`` (POST, shown, no target): also the 201 answer's
parse and validation, which bankguard does too.

Method. After one untimed sanity request per contender (status, body, audit events), rounds
run one after the other; in each round every contender of a group (interface x operation) runs
one batch, in an order reversed every other round, so all see the same machine noise. Batch
sizes are set from the first round (a warm-up, dropped) so that each batch takes about the same
time (``--quick``: 50 ms, full: 150 ms; at least two requests). Each batch is prepared just
before it runs; then everything that exists (apps, specs, the prepared requests) is frozen out of
the garbage collector's scans (``gc.collect``, ``gc.freeze``), so that a collection during the
batch costs what the requests allocate, as in a server, not what the benchmark holds (before
this, one --quick run in four measured the 8 µs bare ASGI app at 14 µs); collections still run.
``limits``' MemoryStorage cleanup timers are kept running as under steady traffic (see
benchmarks/ratelimit.py).
Figures are medians over rounds of µs per request; ratios are medians of per-round ratios;
``[a-b]`` is the range of a ratio over the rounds.

Checked after every batch, outside the timing: every answer is 200 (GET) or 201 (POST), every
bankguard decision was an allow (one audit event per request, plus one
``openapi.response_minimised`` event per minimised answer; the token bound as the variant says),
and every body is the expected one: minimising contenders (``openapi``, ``full-*`` and the peers)
answer the same minimised document, byte for byte, without the undeclared property and with the
card number masked; the others the handler's bytes. No contender measures a refusal.

Targets are printed as met or not met. With ``--check``, the process exits 1 when a ratio misses
its target by more than the noise margin of :data:`MARGINS` (relative; ratios only: the absolute
spec-load time is printed, never checked).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs
import stack  # benchmarks/stack.py, beside this script
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bankguard import Guard, guard_of
from bankguard.audit import EventCollector
from bankguard.testing import make_facts
from bankguard.tokens.jose import b64url_decode

SPECS = Path(os.environ.get("BANKGUARD_SPECS", stack.ROOT.parent / "shared" / "specs"))
UK_SPEC = SPECS / "uk-ob" / "account-info-openapi.yaml"
GET = ("GET", stack.TRANSACTIONS_PATH, b"")
POST = ("POST", stack.PAYMENTS_PATH, stack.PAYMENT_BODY)
LABELS = {"ASGI": "ASGI (Starlette)", "WSGI": "WSGI (Flask)"}

#: (name, variant, against, target, operation). Against "share": bare µs / variant µs, the
#: variant's throughput as a share of the bare app's, at least the target; against a peer: peer µs /
#: variant µs, how many times faster, at least the target; against a floor: (variant µs - bare µs) /
#: floor µs, the added cost in floors, at most the target.
TARGETS = (
    ("full-mtls throughput / bare", "full-mtls", "share", 0.50, "GET"),
    ("full-dpop throughput / bare", "full-dpop", "share", 0.50, "GET"),
    ("full-dpop / peer openapi-core", "full-dpop", "peer openapi-core", 300.0, "GET"),
    ("full-dpop / peer Connexion", "full-dpop", "peer Connexion", 15.0, "GET"),
    ("bearer (cached token) / bare", "bearer", "share", 0.90, "GET"),
    ("dpop (proof per request) / bare", "dpop", "share", 0.75, "GET"),
    ("full-dpop added / floor", "full-dpop", "floor", 1.5, "GET"),
    ("full-mtls added / floor, no signature", "full-mtls", "floor, no signature", 1.5, "GET"),
    ("full-dpop added / floor", "full-dpop", "floor", 1.5, "POST"),
    ("full-mtls added / floor, no signature", "full-mtls", "floor, no signature", 1.5, "POST"),
)
SPEC_LOAD_TARGET = 1.0  # seconds, UK spec load + compile (printed, never checked)
#: Noise margins of --check, relative to the target, by kind of ratio. Over three --quick runs on
#: an otherwise idle 2-core machine the medians moved between runs by up to 17% for the shares (the
#: ASGI ones are shares of a 7 µs app), 14% for the peer ratios (a peer batch is a few requests),
#: 16% for the floor ratios and 34% for the POST one without a signature (a 4 µs floor). Earlier,
#: one run in eight ran the minimisation path 1.7 times slower throughout (GET peer and floor ratios
#: off by up to 45%; decisions and floors were not slower): margins wide enough for that would hide
#: regressions, so a failed check is worth one re-run before it is believed.
MARGINS = {"share": 0.20, "peer": 0.25, "floor": 0.30}


# --------------------------------------------------------------------------------------------
# Contenders


def _scope(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
    fields = [("host", stack.HOST), *headers]
    if body:
        fields.append(("content-length", str(len(body))))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fields],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 443),
    }


def _environ(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": stack.HOST,
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": stack.HOST,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        if name in ("content-type", "content-length"):
            environ[name.upper().replace("-", "_")] = value
        else:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ


def _no_write(data: bytes) -> None:
    raise AssertionError("the apps measured never use WSGI's write()")


class _Receive:
    """One request's ``receive``: the body once, then a disconnect."""

    __slots__ = ("body", "sent")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.sent = False

    async def __call__(self) -> dict[str, Any]:
        if self.sent:
            return {"type": "http.disconnect"}
        self.sent = True
        return {"type": "http.request", "body": self.body, "more_body": False}


@dataclass
class Expect:
    """What every answer of a contender must be: a status and a body check (run on each distinct
    body; equal bodies are compared as bytes)."""

    status: int
    check: Callable[[bytes], None]


@dataclass
class Contender:
    """One thing measured in a group: an app (``asgi``/``wsgi``) with a request variant, or a
    function (``call``). ``samples``: mean µs per request, one per round (the first dropped)."""

    name: str
    kind: str
    target: Any
    variant: str = "bare"
    expect: Expect | None = None
    sink: EventCollector | None = None
    binding: str | None = None
    minimised: bool = False
    n: int = 3
    min_n: int = 2
    samples: list[float] = field(default_factory=list)


@dataclass
class Group:
    interface: str  # ASGI / WSGI
    method: str
    path: str
    body: bytes
    contenders: list[Contender]


class Runner:
    """Prepares, runs and checks batches of requests."""

    def __init__(self, material: stack.Material, loop: asyncio.AbstractEventLoop) -> None:
        self.material = material
        self.loop = loop
        self.messages: list[dict[str, Any]] = []
        self.statuses: list[str] = []
        self.bodies: list[bytes] = []

    # -- preparation (not timed)

    def prepare(self, group: Group, c: Contender, n: int) -> list[Any]:
        if c.kind == "call":
            return [None] * n
        method, path, body = group.method, group.path, group.body
        if c.kind == "decide":
            out = []
            for _ in range(n):
                fields = [
                    ("host", stack.HOST),
                    *stack.request_headers(self.material, c.variant, method, path),
                ]
                if body:
                    fields.append(("content-length", str(len(body))))
                out.append(make_facts(method, path, headers=fields, body=body or None))
            return out
        fresh = c.variant in ("dpop", "full-dpop")  # a new proof per request
        headers = stack.request_headers(self.material, c.variant, method, path)
        items = []
        for _ in range(n):
            if fresh:
                headers = stack.request_headers(self.material, c.variant, method, path)
            if c.kind == "asgi":
                items.append((_scope(method, path, headers, body), _Receive(body)))
            else:
                environ = _environ(method, path, headers, body)
                environ["wsgi.input"] = io.BytesIO(body)
                items.append(environ)
        return items

    # -- timing

    async def _asgi(self, app: Any, items: list[Any]) -> float:
        messages = self.messages

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        clock = time.perf_counter
        t0 = clock()
        for scope, receive in items:
            await app(scope, receive, send)
        return clock() - t0

    def _wsgi(self, app: Any, items: list[Any]) -> float:
        statuses, bodies = self.statuses, self.bodies

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            statuses.append(status)
            return _no_write

        clock = time.perf_counter
        t0 = clock()
        for environ in items:
            result = app(environ, start_response)
            bodies.append(b"".join(result))
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return clock() - t0

    def _decide(self, guard: Guard, items: list[Any]) -> float:
        decide = guard.decide
        clock = time.perf_counter
        t0 = clock()
        for facts in items:
            decide(facts)
        return clock() - t0

    def _call(self, fn: Callable[[], Any], items: list[Any]) -> float:
        clock = time.perf_counter
        t0 = clock()
        for _ in items:
            fn()
        return clock() - t0

    def run(self, c: Contender, items: list[Any]) -> float:
        """Seconds for the batch; the answers are kept for :meth:`verify`."""
        self.messages.clear()
        self.statuses.clear()
        self.bodies.clear()
        if c.kind == "asgi":
            return self.loop.run_until_complete(self._asgi(c.target, items))
        if c.kind == "wsgi":
            return self._wsgi(c.target, items)
        if c.kind == "decide":
            return self._decide(c.target, items)
        return self._call(c.target, items)

    # -- checks (not timed)

    def answers(self, c: Contender) -> list[tuple[int, bytes]]:
        if c.kind == "wsgi":
            return [(int(s[:3]), b) for s, b in zip(self.statuses, self.bodies, strict=True)]
        out: list[tuple[int, bytes]] = []
        status, chunks = 0, []
        for message in self.messages:
            if message["type"] == "http.response.start":
                status, chunks = message["status"], []
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    out.append((status, b"".join(chunks)))
        return out

    def verify(self, group: Group, c: Contender, n: int) -> None:
        what = f"{group.interface} {group.method} {c.name}"
        if c.kind == "decide":
            self._events(what, c, n, minimisations=0)
            return
        if c.kind == "call" or c.expect is None:
            return
        answers = self.answers(c)
        if len(answers) != n:
            raise SystemExit(f"{what}: {len(answers)} answers to {n} requests")
        checked: set[bytes] = set()
        for status, body in answers:
            if status != c.expect.status:
                raise SystemExit(f"{what}: answered {status}, expected {c.expect.status}: {body[:300]!r}")
            if body not in checked:
                try:
                    c.expect.check(body)
                except AssertionError as exc:
                    raise SystemExit(f"{what}: unexpected body ({exc}): {body[:200]!r}") from None
                checked.add(body)
        self._events(what, c, n, minimisations=n if c.minimised and group.method == "GET" else 0)

    def _events(self, what: str, c: Contender, n: int, *, minimisations: int) -> None:
        """Every decision an allow (with the variant's token binding), and the minimisations."""
        if c.sink is None:
            return
        events = c.sink.events
        decisions = [e for e in events if e.reason != "openapi.response_minimised"]
        minimised = len(events) - len(decisions)
        refused = [(e.outcome, e.status, e.reason) for e in events if e.outcome != "allow"]
        wrong = [e.binding for e in decisions if e.binding != c.binding]
        if len(decisions) != n or refused or wrong or minimised != minimisations:
            raise SystemExit(
                f"{what}: {len(decisions)} decisions and {minimised} minimisations for {n} requests "
                f"(expected {minimisations}); refusals {refused[:2]}; bindings {wrong[:2]}"
            )
        events.clear()


# --------------------------------------------------------------------------------------------
# Expected answers and the floor


def _expected_minimised() -> dict[str, Any]:
    document = stack.transactions_document()
    for row in document["Data"]["Transaction"]:
        del row[stack.UNDECLARED]
        card = row.get("CardInstrument")
        if card is not None and card["Identification"] == stack.LEAKED_PAN:
            card["Identification"] = stack.MASKED_PAN
    return document


MINIMISED = _expected_minimised()


def _minimised_body(body: bytes) -> None:
    text = body.decode()
    assert stack.UNDECLARED not in text, "an undeclared property was sent"
    assert stack.LEAKED_PAN not in text, "the card number was not masked"
    assert json.loads(body) == MINIMISED, "not the minimised document"


def _handler_body(expected: bytes) -> Callable[[bytes], None]:
    def check(body: bytes) -> None:
        assert body == expected, "not the handler's bytes"

    return check


def _payment_body(body: bytes) -> None:
    assert json.loads(body) == json.loads(stack.PAYMENT_RESPONSE_BODY), "not the 201 document"


def _es256_check(public: ec.EllipticCurvePublicKey) -> Callable[[str], None]:
    """``cryptography`` verifying a compact ES256 JWS over its signing input (as benchmarks/dpop.py)."""

    def verify(jws: str) -> None:
        head, payload, sig = jws.split(".")
        raw = b64url_decode(sig)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        public.verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))

    return verify


def _validator(spec: dict[str, Any], name: str) -> Any:
    """The compiled jsonschema-rs validator of one component schema (Draft 4, formats on)."""
    return jsonschema_rs.Draft4Validator(
        {"$ref": f"#/components/schemas/{name}", "components": spec["components"]},
        validate_formats=True,
        ignore_unknown_formats=True,
    )


def floors(material: stack.Material) -> dict[str, dict[str, Callable[[], Any]]]:
    """Per operation, the floor functions (each one request's unavoidable work)."""
    spec = stack.load_spec()
    response = _validator(spec, "OBReadTransaction6")
    payment = _validator(spec, "OBWriteDomestic2")
    answer = _validator(spec, "OBWriteDomesticResponse5")
    verify = _es256_check(material.dpop._key.public_key())
    token = material.tokens["dpop"]
    get_proof = material.dpop.proof("GET", stack.ORIGIN + stack.TRANSACTIONS_PATH, access_token=token)
    post_proof = material.dpop.proof("POST", stack.ORIGIN + stack.PAYMENTS_PATH, access_token=token)
    body, request, reply = stack.TRANSACTIONS_BODY, stack.PAYMENT_BODY, stack.PAYMENT_RESPONSE_BODY
    loads = json.loads
    # Sanity: the documents validated are valid, the handler's (unminimised) one is not.
    if not response.is_valid(MINIMISED) or response.is_valid(loads(body)):
        raise SystemExit("floor: the response schema does not tell the minimised document from the raw one")
    if not payment.is_valid(loads(request)) or not answer.is_valid(loads(reply)):
        raise SystemExit("floor: the payment or its answer does not validate")
    verify(get_proof)
    verify(post_proof)
    minimised = MINIMISED

    def get_floor() -> None:
        verify(get_proof)
        loads(body)
        response.is_valid(minimised)

    def get_unsigned() -> None:
        loads(body)
        response.is_valid(minimised)

    def post_floor() -> None:
        verify(post_proof)
        payment.is_valid(loads(request))

    def post_unsigned() -> None:
        payment.is_valid(loads(request))

    def post_full() -> None:
        verify(post_proof)
        payment.is_valid(loads(request))
        answer.is_valid(loads(reply))

    return {
        "GET": {"floor": get_floor, "floor, no signature": get_unsigned},
        "POST": {"floor": post_floor, "floor, no signature": post_unsigned, "floor +201": post_full},
    }


# --------------------------------------------------------------------------------------------
# Building the groups


def _peer_name(kind: str) -> str:
    return {
        "openapi-core": "peer openapi-core",
        "connexion": "peer Connexion",
        "openapi-core-integration": "peer openapi-core integ.",
    }[kind]


def _integration_available(interface: str) -> bool:
    if interface == "WSGI":
        return True
    try:  # openapi-core's Starlette middleware needs aioitertools, not a dependency of this project
        import aioitertools  # noqa: F401
    except ImportError:
        return False
    return True


def build_groups(material: stack.Material, *, integration: bool) -> tuple[list[Group], list[Any]]:
    """The four groups (ASGI/WSGI x GET/POST) and the bankguard apps (to close their guards)."""
    fl = floors(material)
    groups, protected = [], []
    for interface in ("ASGI", "WSGI"):
        make = stack.asgi_app if interface == "ASGI" else stack.wsgi_app
        make_peer = stack.peer_asgi if interface == "ASGI" else stack.peer_wsgi
        kind = "asgi" if interface == "ASGI" else "wsgi"
        apps: dict[str, tuple[Any, EventCollector | None]] = {"bare": (make("bare"), None)}
        for variant in stack.BANKGUARD_VARIANTS:
            sink = EventCollector()
            app = make(variant, material, sink=sink)
            protected.append(app)
            apps[variant] = (app, sink)
        kinds = ["openapi-core", "connexion"]
        if integration and _integration_available(interface):
            kinds.append("openapi-core-integration")
        peers = {kind_: make_peer(kind_, material) for kind_ in kinds}
        adapters = None
        if interface == "WSGI":
            adapters = stack.AsgiInWsgi(stack.WsgiInAsgi(stack.wsgi_app("bare").wsgi_app))
        for method, path, body in (GET, POST):
            status = 200 if method == "GET" else 201
            binding = {"mtls": "mtls", "full-mtls": "mtls", "dpop": "dpop", "full-dpop": "dpop"}
            contenders = []
            for variant, (app, sink) in apps.items():
                minimised = variant in ("openapi", "full-mtls", "full-dpop")
                if method == "POST":
                    check = _handler_body(stack.PAYMENT_RESPONSE_BODY)
                elif minimised:
                    check = _minimised_body
                else:
                    check = _handler_body(stack.TRANSACTIONS_BODY)
                contenders.append(
                    Contender(
                        variant,
                        kind,
                        app,
                        variant,
                        Expect(status, check),
                        sink,
                        binding.get(variant),
                        minimised,
                    )
                )
            for variant in ("full-mtls", "full-dpop"):
                sink = EventCollector()
                guard = Guard(stack.policy(material, variant), sink=sink)
                protected.append(guard)
                contenders.append(
                    Contender(
                        f"{variant}: decide only", "decide", guard, variant, None, sink, binding[variant]
                    )
                )
            if adapters is not None:
                check = _handler_body(
                    stack.TRANSACTIONS_BODY if method == "GET" else stack.PAYMENT_RESPONSE_BODY
                )
                contenders.append(Contender("adapters", "wsgi", adapters, "bare", Expect(status, check)))
            for kind_, app in peers.items():
                check = _minimised_body if method == "GET" else _payment_body
                contenders.append(
                    Contender(
                        _peer_name(kind_),
                        kind,
                        app,
                        "full-dpop",
                        Expect(status, check),
                        min_n=1 if kind_ == "openapi-core-integration" else 2,
                    )
                )
            for name, fn in fl[method].items():
                contenders.append(Contender(name, "call", fn, n=20))
            groups.append(Group(interface, method, path, body, contenders))
    return groups, protected


# --------------------------------------------------------------------------------------------
# Measuring


def sanity(runner: Runner, groups: list[Group]) -> None:
    """One untimed request per contender, checked like every batch (it also primes lazy setup:
    Connexion builds its middleware stack on the first request)."""
    for group in groups:
        for c in group.contenders:
            for _ in range(2):
                items = runner.prepare(group, c, 1)
                runner.run(c, items)
                runner.verify(group, c, 1)


def measure(runner: Runner, groups: list[Group], rounds: int, batch_seconds: float) -> None:
    """``rounds`` + 1 rounds; batch sizes come from the first (dropped) round's timings."""
    from ratelimit import steady_memory_storages  # benchmarks/ratelimit.py

    try:
        with steady_memory_storages():
            for r in range(rounds + 1):
                for group in groups:
                    order = group.contenders if r % 2 == 0 else group.contenders[::-1]
                    for c in order:
                        items = runner.prepare(group, c, c.n)
                        # What exists now (apps, specs, the prepared requests) is no work for the
                        # collector while the batch runs: it scans what the requests allocate.
                        gc.collect()
                        gc.freeze()
                        seconds = runner.run(c, items)
                        runner.verify(group, c, len(items))
                        c.samples.append(seconds / len(items) * 1e6)
                        if r == 0:  # size the batches of the rounds that count
                            c.n = max(c.min_n, min(20_000, round(batch_seconds / (seconds / len(items)))))
                        del items
                    gc.unfreeze()
    finally:
        gc.unfreeze()
    for group in groups:
        for c in group.contenders:
            del c.samples[0]


def med(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Ratio:
    name: str
    interface: str
    method: str
    values: list[float]
    target: float
    kind: str  # share / peer / floor
    #: Per round, the ratio an implementation whose added cost is exactly the floor would get
    #: (None: no floor applies, or the ratio is against the floor itself).
    ceiling: list[float] | None = None

    @property
    def value(self) -> float:
        return med(self.values)

    @property
    def met(self) -> bool:
        return self.value <= self.target if self.kind == "floor" else self.value >= self.target

    @property
    def within_margin(self) -> bool:
        margin = MARGINS[self.kind]
        if self.kind == "floor":
            return self.value <= self.target * (1 + margin)
        return self.value >= self.target * (1 - margin)


def ratios(groups: list[Group]) -> list[Ratio]:
    out = []
    for group in groups:
        s = {c.name: c.samples for c in group.contenders}
        bare = s["bare"]
        # The unavoidable work of each variant: the floors, and the proof signature alone for dpop.
        signature = [f - g for f, g in zip(s["floor"], s["floor, no signature"], strict=True)]
        unavoidable = {"full-mtls": s["floor, no signature"], "full-dpop": s["floor"], "dpop": signature}
        for name, variant, against, target, method in TARGETS:
            if method != group.method:
                continue
            full = s[variant]
            least = unavoidable.get(variant)
            ceiling = None
            if against == "share":
                values = [b / v for b, v in zip(bare, full, strict=True)]
                kind = "share"
                if least is not None:
                    ceiling = [b / (b + f) for b, f in zip(bare, least, strict=True)]
            elif against.startswith("peer"):
                values = [p / v for p, v in zip(s[against], full, strict=True)]
                kind = "peer"
                if least is not None:
                    ceiling = [p / (b + f) for p, b, f in zip(s[against], bare, least, strict=True)]
            else:
                values = [(v - b) / f for v, b, f in zip(full, bare, s[against], strict=True)]
                kind = "floor"
            out.append(Ratio(name, group.interface, group.method, values, target, kind, ceiling))
    return out


# --------------------------------------------------------------------------------------------
# Spec load


def spec_loads(material: stack.Material, repeats: int) -> dict[str, list[float]]:
    """Seconds: bankguard ``load_contract`` of the UK spec, and a ``Guard`` built on a policy naming
    it (read, compile validators and minimisation shapes) in this process; the same Guard build in a
    fresh interpreter (first-use imports included, interpreter start-up not)."""
    from bankguard import Guard, Policy
    from bankguard.openapi.contract import load_contract

    if not UK_SPEC.is_file():
        return {}
    policy = Policy.from_dict(
        {
            "openapi": {"spec": str(UK_SPEC)},
            "tokens": {
                "issuers": [
                    {
                        "issuer": stack.ISSUER,
                        "audiences": [stack.AUDIENCE],
                        "algorithms": ["ES256"],
                        "jwks": material.jwks,
                    }
                ]
            },
        }
    )
    out: dict[str, list[float]] = {"load_contract": [], "Guard build": [], "Guard build, fresh process": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        load_contract(UK_SPEC)
        t1 = time.perf_counter()
        Guard(policy, sink=EventCollector()).close()
        t2 = time.perf_counter()
        out["load_contract"].append(t1 - t0)
        out["Guard build"].append(t2 - t1)
    code = (
        "import json, sys, time\n"
        "t0 = time.perf_counter()\n"
        "from bankguard import Guard, Policy\n"
        "from bankguard.audit import EventCollector\n"
        "Guard(Policy.from_dict(json.loads(sys.argv[1])), sink=EventCollector()).close()\n"
        "print(time.perf_counter() - t0)\n"
    )
    data = {
        "openapi": {"spec": str(UK_SPEC)},
        "tokens": {
            "issuers": [
                {
                    "issuer": stack.ISSUER,
                    "audiences": [stack.AUDIENCE],
                    "algorithms": ["ES256"],
                    "jwks": material.jwks,
                }
            ]
        },
    }
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", code, json.dumps(data)], capture_output=True, text=True, check=True
    )
    out["Guard build, fresh process"].append(float(done.stdout.split()[-1]))
    return out


# --------------------------------------------------------------------------------------------
# Report


def print_groups(groups: list[Group], rounds: int) -> None:
    for group in groups:
        s = {c.name: c.samples for c in group.contenders}
        bare = med(s["bare"])
        size = len(stack.TRANSACTIONS_BODY) if group.method == "GET" else len(stack.PAYMENT_BODY)
        what = "50 transactions" if group.method == "GET" else "a domestic payment"
        print(
            f"\n{LABELS[group.interface]}: {group.method} {group.path} ({what}, "
            f"{size / 1000:.1f} kB), {rounds} rounds"
        )
        print(f"  {'contender':<26}{'µs/req':>10}{'req/s':>10}{'% bare':>9}{'+µs/req':>10}{'requests':>10}")
        for c in group.contenders:
            us = med(c.samples)
            if c.kind in ("call", "decide"):
                print(f"  {c.name:<26}{us:>10.1f}{'':>10}{'':>9}{'':>10}{c.n * rounds:>10}")
                continue
            share = 100 * med([b / v for b, v in zip(s["bare"], c.samples, strict=True)])
            added = us - bare
            print(
                f"  {c.name:<26}{us:>10.1f}{1e6 / us:>10,.0f}{share:>9.1f}"
                f"{'' if c.name == 'bare' else f'{added:.1f}':>10}{c.n * rounds:>10}"
            )


def print_ratios(found: list[Ratio]) -> None:
    print("\ntargets (medians of per-round ratios, [range over rounds]; added = µs over the bare app;")
    print(" 'at floor': the ratio of an implementation whose added cost were exactly the floor, in the")
    print(" same rounds: a target beyond it cannot be met in-process by anything that does the work)")
    for r in found:
        want = (
            f"<= {r.target:g}x"
            if r.kind == "floor"
            else (f">= {r.target:g}x" if r.kind == "peer" else f">= {r.target:.0%}")
        )
        value = f"{r.value:.2f}x" if r.kind != "share" else f"{r.value:.1%}"
        spread = (
            f"[{min(r.values):.2f}-{max(r.values):.2f}]"
            if r.kind != "share"
            else f"[{min(r.values):.1%}-{max(r.values):.1%}]"
        )
        label = f"{r.interface} {r.method} {r.name}"
        best = ""
        if r.ceiling is not None:
            top = med(r.ceiling)
            best = f"at floor {top:.1%}" if r.kind == "share" else f"at floor {top:.1f}x"
        verdict = "met" if r.met else "not met"
        print(f"  {label:<52}{value:>9}  {spread:<17} target {want:<8} {verdict:<8} {best}".rstrip())


def print_loads(loads: dict[str, list[float]]) -> None:
    if not loads:
        print(f"\nspec load: {UK_SPEC} not found, skipped")
        return
    print("\nUK Open Banking Account and Transaction spec, load + compile (s, median)")
    for name, times in loads.items():
        value = med(times)
        verdict = f"target < {SPEC_LOAD_TARGET:g} s: {'met' if value < SPEC_LOAD_TARGET else 'not met'}"
        print(f"  {name:<36}{value:>8.3f}   {verdict if name.startswith('Guard') else ''}".rstrip())


def check(found: list[Ratio]) -> int:
    """--check: 1 when a ratio misses its target by more than its kind's margin."""
    bad = [r for r in found if not r.within_margin]
    print(
        "\ncheck (margins: "
        + ", ".join(f"{kind} {margin:.0%}" for kind, margin in MARGINS.items())
        + f"): {len(found) - len(bad)} of {len(found)} ratios within their margin"
    )
    for r in bad:
        print(f"  FAILED {r.interface} {r.method} {r.name}: {r.value:.3f}, target {r.target:g}")
    return 1 if bad else 0


def report(
    rounds: int, batch_seconds: float, *, quick: bool = False, integration: bool | None = None
) -> list[Ratio]:
    """Measure and print; returns the target ratios (for --check)."""
    logging.getLogger("bankguard").setLevel(logging.ERROR)
    logging.getLogger("connexion").setLevel(logging.CRITICAL)
    logging.getLogger("flask-limiter").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="openapi_core")
    integration = not quick if integration is None else integration
    with tempfile.TemporaryDirectory() as tmp:
        material = stack.Material.create(Path(tmp))
        loads = spec_loads(material, 1 if quick else 3)
        loop = asyncio.new_event_loop()
        groups, protected = build_groups(material, integration=integration)
        runner = Runner(material, loop)
        try:
            sanity(runner, groups)
            measure(runner, groups, rounds, batch_seconds)
        finally:
            for app in protected:
                (app if isinstance(app, Guard) else guard_of(app)).close()
            loop.close()
    print(
        f"\nfull stack, in-process: {rounds} rounds, batches of about {batch_seconds * 1000:.0f} ms "
        "(µs per request, medians over rounds; see benchmarks/fullstack.py)"
    )
    print("(floor: ES256 proof signature + json.loads + jsonschema-rs validation of the document;")
    print(" 'no signature': without the proof, as full-mtls needs with its cached token and certificate;")
    print(" the access token's signature is in no floor: the repeated token is verified once, then cached)")
    print_groups(groups, rounds)
    found = ratios(groups)
    print_ratios(found)
    print_loads(loads)
    return found


# --------------------------------------------------------------------------------------------
# Profile


def profile(variant: str, n: int) -> None:
    """cProfile of ``variant`` (or ``peer-<kind>``) serving ``n`` GET and ``n`` POST requests, ASGI
    then WSGI; the top 10 functions by own time. Requests are built before profiling."""
    logging.getLogger("bankguard").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="openapi_core")
    with tempfile.TemporaryDirectory() as tmp:
        material = stack.Material.create(Path(tmp))
        loop = asyncio.new_event_loop()
        runner = Runner(material, loop)
        for interface in ("ASGI", "WSGI"):
            kind = interface.lower()
            if variant.startswith("peer-"):
                maker = stack.peer_asgi if interface == "ASGI" else stack.peer_wsgi
                app = maker(variant[5:], material)
            else:
                app = (stack.asgi_app if interface == "ASGI" else stack.wsgi_app)(variant, material)
            for method, path, body in (GET, POST):
                group = Group(interface, method, path, body, [])
                c = Contender(variant, kind, app, variant if not variant.startswith("peer-") else "full-dpop")
                runner.run(c, runner.prepare(group, c, 20))  # warm
                items = runner.prepare(group, c, n)
                gc.collect()
                gc.freeze()  # as in measure(): the prepared requests are no work for the collector
                profiler = cProfile.Profile()
                profiler.enable()
                seconds = runner.run(c, items)
                profiler.disable()
                gc.unfreeze()
                statuses = {s for s, _ in runner.answers(c)}
                print(
                    f"\n{interface} {method} {path}, {variant}: {n} requests, {seconds / n * 1e6:.0f} µs "
                    f"per request under the profiler, answered {sorted(statuses)}"
                )
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(10)
                text = out.getvalue()
                print(text[text.index("   ncalls") :].rstrip())
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds of 50 ms batches (about 15 s)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--batch-ms", type=float, default=None, help="time per batch (sets its size)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a ratio misses its target margin")
    parser.add_argument(
        "--integration",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure openapi-core's own integration (default: in the full run only)",
    )
    parser.add_argument("--profile", metavar="VARIANT", help="profile one variant instead (e.g. full-dpop)")
    parser.add_argument("--profile-requests", type=int, default=300)
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}")
    if args.profile:
        profile(args.profile, args.profile_requests)
        return 0
    rounds = args.rounds or (3 if args.quick else 9)
    batch = (args.batch_ms or (50 if args.quick else 150)) / 1000
    found = report(rounds, batch, quick=args.quick, integration=args.integration)
    return check(found) if args.check else 0


if __name__ == "__main__":
    sys.exit(main())
