"""OpenAPI contract enforcement cost, side by side with openapi-core and Connexion 3.

    python benchmarks/openapi.py            # full run (about a minute)
    python benchmarks/openapi.py --quick    # about ten seconds, for CI smoke runs

Also run by benchmarks/run.py. Needs the peers: ``pip install openapi-core 'connexion[uvicorn]'``.

Real specs (../shared/specs, or ``$BANKGUARD_SPECS``): the UK Open Banking Account and
Transaction API 4.0 (base path ``/open-banking/v4.0/aisp``) and, for a true payment initiation,
the Berlin Group NextGenPSD2 1.3.8 spec (``POST /psd2/v1/payments/sepa-credit-transfers``; the UK
account-information spec has no payment, its POST is ``/account-access-consents``).

Requests (each valid, with the headers and query parameters the spec declares):

* ``GET /accounts/{AccountId}/transactions`` with ``x-fapi-*`` headers, ``Authorization`` and
  ``fromBookingDateTime``/``toBookingDateTime``;
* ``POST /account-access-consents`` with an ``OBReadConsent1`` JSON body;
* ``POST /v1/payments/sepa-credit-transfers`` (Berlin Group) with a JSON credit transfer
  (``oneOf`` three payment schemas) and its ``X-Request-ID`` (uuid) and ``PSU-IP-Address`` (ipv4)
  headers. (Without ``TPP-Redirect-Preferred: true``: Connexion 3.3 does not convert boolean
  header parameters and refuses it, "'true' is not of type 'boolean'".)

Every figure comes from one run in which all contenders are interleaved slot by slot: each
slot calls every contender in turn (order reversed every other slot), so all see the same
machine noise; an added cost (``+``) is measured by alternating the two variants call by call.
Before timing, the long-lived objects (specs, apps, guards) are frozen out of the garbage
collector's scans (``gc.freeze``), for every contender alike. Per request:

* bankguard ``check``: :meth:`OperationContract.check_request` (parameters, media type, strict
  JSON parse, body schema) on a request the adapter has already parsed;
* bankguard ``decide +``: what enabling the contract adds to :meth:`Guard.decide`: the same guard
  (spec, token verified from cache) with and without its ``openapi`` check (the ``decide``
  column is the whole decision with it: request hygiene, route, token, contract, audit event);
* openapi-core ``validate`` (``OpenAPI.validate_request``) and ``unmarshal``
  (``OpenAPI.unmarshal_request``) on a request object built before timing (pre-parsed query
  and headers: the most favourable case for it); path finding included, as in its integrations;
* Connexion 3 ``+``: the same ``AsyncApp`` (security middleware and Swagger UI off in both),
  driven in-process through its ASGI interface, with its ``RequestValidationMiddleware`` minus
  without it; ``Cx`` and ``Cx noval`` are the two whole requests, ``Starlette`` a bare app's.

Responses: a valid 50-transaction ``OBReadTransaction6`` document (card payments, direct debits,
salary credits; 46.5 kB as compact JSON), checked to conform by bankguard, openapi-core and
Connexion before timing:

* bankguard ``minimise + validate``: :func:`bankguard.openapi.minimise.minimise` then
  :meth:`ResponseContract.validate` on the parsed document;
* bankguard ``finish``: :meth:`Guard.response_plan` then :meth:`ResponsePlan.finish` on the body
  bytes, as the adapters call it (JSON parse, minimise, validate; the body is sent as is when
  nothing changed); and, for bankguard alone, the same document with two undeclared properties
  per transaction and a card number, which are stripped and masked (re-serialised, audit event);
* openapi-core ``validate`` and ``unmarshal`` (``validate_response`` / ``unmarshal_response``, body
  bytes in);
* Connexion 3 ``+``: ``validate_responses=True`` minus ``False``, the handler returning the bytes.

Ratios are medians of per-round ratios (the first round warms up and is dropped). Spec load
times: bankguard ``load_contract`` on the four specs, openapi-core ``OpenAPI.from_file_path`` and
Connexion app construction (``add_api``, then the first request, which builds its middleware
stack) on the UK and Berlin Group specs. Targets from the issue are printed as met or above,
never asserted; ``--quick`` checks that every path works and asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import logging
import os
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import connexion
import yaml
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.request_validation import RequestValidationMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from werkzeug.datastructures import Headers as WerkzeugHeaders
from werkzeug.datastructures import ImmutableMultiDict

from bankguard import Guard, Policy
from bankguard.audit import EventCollector
from bankguard.openapi.contract import Contract, OperationContract, load_contract
from bankguard.openapi.minimise import compile_shape, minimise
from bankguard.request import Headers
from bankguard.testing import TestIssuer, make_facts

SPECS = Path(os.environ.get("BANKGUARD_SPECS", Path(__file__).resolve().parents[2] / "shared" / "specs"))
UK_SPEC = SPECS / "uk-ob" / "account-info-openapi.yaml"
BG_SPEC = SPECS / "berlin-group" / "psd2-api-1.3.8-2020-11-06v1.yaml"
ALL_SPECS = (
    ("UK OB account-info", UK_SPEC),
    ("Berlin Group PSD2", BG_SPEC),
    ("AU CDR banking", SPECS / "au-cdr" / "cds_banking.json"),
    ("BR OFB payments", SPECS / "br-ofb" / "payments_4.0.0.yml"),
)
UK_BASE = "/open-banking/v4.0/aisp"
BG_BASE = "/psd2"
HOST = "https://api.bank.example"
INTERACTION_ID = "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
ACCOUNT_ID = "22289"
#: openapi-core has no unmarshaller for ``format: uri`` (FormatterNotFoundError, so unmarshal_request
#: fails on the Berlin Group's TPP-Redirect-URI header): such values stay strings, as in bankguard.
CORE_CONFIG = Config(extra_format_unmarshallers={"uri": str})
#: Targets of the issue: how many times faster (or less added cost) bankguard must be.
TARGETS = {
    "request vs openapi-core": 20.0,
    "request vs Connexion": 5.0,
    "response vs openapi-core": 50.0,
    "response vs Connexion": 20.0,
}


# --------------------------------------------------------------------------------------------
# Fixtures: requests and documents


@dataclass(frozen=True)
class Req:
    """One HTTP request, in the forms each contender takes."""

    name: str
    spec: Path
    method: str
    template: str  # with the base path
    path: str
    path_params: dict[str, str]
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None = None
    host: str = HOST  # scheme and host (the Berlin Group spec's servers name theirs)

    @property
    def content_type(self) -> str | None:
        return dict(self.headers).get("content-type")

    def headers_with_length(self) -> tuple[tuple[str, str], ...]:
        """The header fields as a server hands them on, ``content-length`` added for a body."""
        if self.body is None:
            return self.headers
        return (*self.headers, ("content-length", str(len(self.body))))

    def asgi_scope(self) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "https",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": self.query.encode(),
            "headers": [(k.encode(), v.encode()) for k, v in self.headers_with_length()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 443),
        }


def _uk_headers(token: str, extra: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
    return (
        ("host", "api.bank.example"),
        ("accept", "application/json"),
        ("user-agent", "tpp-client/2.4 (+https://tpp.example)"),
        ("x-fapi-interaction-id", INTERACTION_ID),
        ("x-fapi-auth-date", "Sun, 01 Nov 2026 10:43:31 GMT"),
        ("x-fapi-customer-ip-address", "203.0.113.7"),
        ("authorization", f"Bearer {token}"),
        *extra,
    )


def requests(token: str) -> list[Req]:
    """The three requests measured (``token``: an access token the guard accepts)."""
    consent = {
        "Data": {
            "Permissions": [
                "ReadAccountsDetail",
                "ReadBalances",
                "ReadBeneficiariesDetail",
                "ReadDirectDebits",
                "ReadScheduledPaymentsDetail",
                "ReadStandingOrdersDetail",
                "ReadTransactionsCredits",
                "ReadTransactionsDebits",
                "ReadTransactionsDetail",
            ],
            "ExpirationDateTime": "2027-05-02T00:00:00+00:00",
            "TransactionFromDateTime": "2026-05-03T00:00:00+00:00",
            "TransactionToDateTime": "2026-12-03T00:00:00+00:00",
        },
        "Risk": {},
    }
    payment = {
        "endToEndIdentification": "E2E-2026-11-01-000481",
        "debtorAccount": {"iban": "DE40100100103307118608", "currency": "EUR"},
        "instructedAmount": {"currency": "EUR", "amount": "123.50"},
        "creditorAccount": {"iban": "DE02100100109307118603", "currency": "EUR"},
        "creditorAgent": "COBADEFFXXX",
        "creditorName": "Merchant123 GmbH",
        "creditorAddress": {
            "streetName": "Friedrichstrasse",
            "buildingNumber": "123",
            "townName": "Berlin",
            "postCode": "10117",
            "country": "DE",
        },
        "remittanceInformationUnstructured": "Ref Number Merchant 2026-481",
    }
    query = "fromBookingDateTime=2026-10-01T00:00:00Z&toBookingDateTime=2026-10-31T23:59:59Z"
    transactions = f"{UK_BASE}/accounts/{ACCOUNT_ID}/transactions"
    return [
        Req(
            "UK GET transactions",
            UK_SPEC,
            "GET",
            UK_BASE + "/accounts/{AccountId}/transactions",
            transactions,
            {"AccountId": ACCOUNT_ID},
            query,
            _uk_headers(token),
        ),
        Req(
            "UK POST consent",
            UK_SPEC,
            "POST",
            UK_BASE + "/account-access-consents",
            UK_BASE + "/account-access-consents",
            {},
            "",
            _uk_headers(token, (("content-type", "application/json"),)),
            json.dumps(consent).encode(),
        ),
        Req(
            "BG POST payment",
            BG_SPEC,
            "POST",
            BG_BASE + "/v1/{payment-service}/{payment-product}",
            BG_BASE + "/v1/payments/sepa-credit-transfers",
            {"payment-service": "payments", "payment-product": "sepa-credit-transfers"},
            "",
            (
                ("host", "api.testbank.com"),
                ("accept", "application/json"),
                ("user-agent", "tpp-client/2.4 (+https://tpp.example)"),
                ("content-type", "application/json"),
                ("x-request-id", "99391c7e-ad88-49ec-a2ad-99ddcb1f7721"),
                ("psu-ip-address", "192.168.8.78"),
                ("psu-ip-port", "443"),
                ("psu-user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Firefox/120.0"),
                ("tpp-redirect-uri", "https://tpp.example/cb?state=af0ifjsldkj"),
                ("authorization", f"Bearer {token}"),
            ),
            json.dumps(payment).encode(),
            "https://api.testbank.com",
        ),
    ]


_MERCHANTS = (
    ("TESCO STORES 3297", "5411", "LONDON"),
    ("PRET A MANGER", "5812", "LONDON"),
    ("TFL TRAVEL CH", "4111", "TFL.GOV.UK/CP"),
    ("AMAZON.CO.UK*2H4K81", "5942", "AMAZON.CO.UK"),
    ("SHELL KINGSWAY", "5541", "LONDON"),
)
_PAYEES = (
    ("BRITISH GAS", "40051512345678", "BG-REF-88412"),
    ("THAMES WATER", "20000055779911", "TW-00412-7"),
    ("LANDLORD J SMITH", "60161331926819", "RENT NOV"),
)


def transactions_document(count: int = 50, *, extra: bool = False) -> dict[str, Any]:
    """A valid ``OBReadTransaction6`` with ``count`` transactions (card payments, direct debits and
    a salary credit, as a current account shows them). ``extra``: add what a careless handler
    leaks (two undeclared properties per transaction, one full card number)."""
    out = []
    balance = 2_450_00
    for i in range(count):
        day = 31 - (i * 30) // count
        when = f"2026-10-{day:02d}T{8 + i % 12:02d}:{(i * 7) % 60:02d}:00+00:00"
        amount = 1_250_00 + i * 17 if i % 17 == 5 else 3_49 + (i * 1_31) % 120_00
        credit = i % 17 == 5
        balance += amount if credit else -amount
        tx: dict[str, Any] = {
            "AccountId": ACCOUNT_ID,
            "TransactionId": f"b7d3c9e2-{i:04x}-4a1f-9a3e-5c2d7e8f{i:04x}",
            "TransactionReference": f"REF{2026110000 + i}",
            "CreditDebitIndicator": "Credit" if credit else "Debit",
            "Status": "BOOK",
            "TransactionMutability": "Immutable",
            "BookingDateTime": when,
            "ValueDateTime": when,
            "Amount": {"Amount": f"{amount / 100:.2f}", "Currency": "GBP"},
            "Balance": {
                "CreditDebitIndicator": "Credit" if balance >= 0 else "Debit",
                "Type": "ITBD",
                "Amount": {"Amount": f"{abs(balance) / 100:.2f}", "Currency": "GBP"},
            },
        }
        if credit:
            tx["TransactionInformation"] = "SALARY ACME WIDGETS LTD NOV"
            tx["BankTransactionCode"] = {
                "Code": "ReceivedCreditTransfer",
                "SubCode": "DomesticCreditTransfer",
            }
            tx["ProprietaryBankTransactionCode"] = {"Code": "BGC", "Issuer": "AcmeBank"}
            tx["DebtorAccount"] = {
                "SchemeName": "UK.OBIE.SortCodeAccountNumber",
                # Not Luhn-valid: 1 in 10 sort code + account numbers is, and is masked as a PAN.
                "Identification": "80200110203344",
                "Name": "ACME WIDGETS LTD",
            }
            tx["CategoryPurposeCode"] = "SALA"
        elif i % 5 == 3:
            name, account, reference = _PAYEES[i % len(_PAYEES)]
            tx["TransactionInformation"] = f"DIRECT DEBIT {name} {reference}"
            tx["BankTransactionCode"] = {"Code": "IssuedDirectDebits", "SubCode": "DirectDebitPayment"}
            tx["ProprietaryBankTransactionCode"] = {"Code": "DD", "Issuer": "AcmeBank"}
            tx["CreditorAccount"] = {
                "SchemeName": "UK.OBIE.SortCodeAccountNumber",
                "Identification": account,
                "Name": name,
            }
            tx["CreditorAgent"] = {"SchemeName": "UK.OBIE.BICFI", "Identification": "NWBKGB2L"}
        else:
            name, mcc, town = _MERCHANTS[i % len(_MERCHANTS)]
            tx["TransactionInformation"] = f"CARD PAYMENT TO {name} ON 2026-10-{day:02d} {town}"
            tx["BankTransactionCode"] = {"Code": "IssuedCreditTransfers", "SubCode": "CardPayment"}
            tx["ProprietaryBankTransactionCode"] = {"Code": "POS", "Issuer": "AcmeBank"}
            tx["MerchantDetails"] = {"MerchantName": name, "MerchantCategoryCode": mcc}
            tx["CardInstrument"] = {
                "CardSchemeName": "VISA",
                "AuthorisationType": "Contactless" if i % 2 else "PIN",
                "Name": "MR J DOE",
                "Identification": "************4242",
            }
            tx["SupplementaryData"] = {"MerchantCity": town, "Channel": "POS"}
        if extra:
            tx["InternalLedgerId"] = f"LDG-{i:08d}"
            tx["FraudScore"] = 0.02 * (i % 7)
            if i == 7:
                tx["CardInstrument"]["Identification"] = "4111111111111111"  # leaked PAN
        out.append(tx)
    self_link = (
        f"{HOST}{UK_BASE}/accounts/{ACCOUNT_ID}/transactions"
        "?fromBookingDateTime=2026-10-01T00:00:00Z&toBookingDateTime=2026-10-31T23:59:59Z"
    )
    return {
        "Data": {"Transaction": out},
        "Links": {
            "Self": self_link + "&page=2",
            "First": self_link,
            "Prev": self_link,
            "Next": self_link + "&page=3",
        },
        "Meta": {
            "TotalPages": 3,
            "FirstAvailableDateTime": "2019-01-01T00:00:00+00:00",
            "LastAvailableDateTime": "2026-11-01T10:43:31+00:00",
        },
    }


# --------------------------------------------------------------------------------------------
# openapi-core: minimal request and response objects (its Request / Response protocols)


class CoreRequest:
    """openapi-core's request protocol, query and headers parsed before timing."""

    def __init__(self, req: Req) -> None:
        self.host_url = req.host
        self.path = req.path
        self.method = req.method.lower()
        self.body = req.body
        self.content_type = req.content_type or "application/octet-stream"
        query = [(k, v) for k, _, v in (p.partition("=") for p in req.query.split("&") if p)]
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(query),
            header=WerkzeugHeaders(list(req.headers_with_length())),
            cookie=ImmutableMultiDict(),
        )


class CoreResponse:
    def __init__(self, body: bytes, status: int = 200) -> None:
        self.data = body
        self.status_code = status
        self.content_type = "application/json"
        self.headers = WerkzeugHeaders([("content-type", "application/json"), ("x-fapi-interaction-id", "x")])


# --------------------------------------------------------------------------------------------
# Connexion 3 and Starlette apps, driven through their ASGI interface


#: What the apps answer while requests are measured (a valid, empty OBReadTransaction6).
SMALL_BODY = b'{"Data":{}}'
_RESPONSE_HEADERS = {"Content-Type": "application/json", "x-fapi-interaction-id": INTERACTION_ID}


class Payload:
    """What a Connexion app's handlers answer (bytes, sent unchanged); switched between phases."""

    def __init__(self) -> None:
        self.body = SMALL_BODY


def connexion_app(
    spec: Path | dict[str, Any],
    payload: Payload,
    *,
    validate_requests: bool,
    validate_responses: bool = False,
) -> Any:
    """A Connexion ``AsyncApp`` for ``spec`` (a file, or the parsed document): every operation
    answers 200 with ``payload.body``. Security middleware off in every variant (its token checks
    are not what is measured), Swagger UI off."""

    async def handler(*args: Any, **kwargs: Any) -> Any:
        return Response(payload.body, headers=_RESPONSE_HEADERS)  # bytes: not re-serialised

    middlewares = [m for m in ConnexionMiddleware.default_middlewares if m is not SecurityMiddleware]
    if not validate_requests:
        middlewares.remove(RequestValidationMiddleware)
    app = connexion.AsyncApp(
        __name__, middlewares=middlewares, swagger_ui_options=SwaggerUIOptions(swagger_ui=False)
    )
    app.add_api(
        spec, resolver=Resolver(function_resolver=lambda _op: handler), validate_responses=validate_responses
    )
    return app


def starlette_app(reqs: list[Req]) -> Starlette:
    async def endpoint(request: Any) -> Response:
        await request.body()
        return Response(SMALL_BODY, headers=_RESPONSE_HEADERS)

    def route(template: str) -> str:  # Starlette's parameter names must be identifiers
        return re.sub(r"\{[^}]*\}", lambda m: "{p" + str(m.start()) + "}", template)

    return Starlette(routes=[Route(route(r.template), endpoint, methods=[r.method]) for r in reqs])


class AsgiClient:
    """Calls an ASGI app with one prepared request and records the status (never raises)."""

    def __init__(self, app: Any, req: Req) -> None:
        self.app = app
        self.scope = req.asgi_scope()
        self.body = req.body or b""
        self.statuses: list[int] = []
        self.last_body = b""

    async def __call__(self) -> None:
        sent = False
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(dict(self.scope), receive, send)
        self.last_body = b"".join(chunks)

    def expect(self, status: int, what: str) -> None:
        got = set(self.statuses)
        if got != {status}:
            raise SystemExit(
                f"{what}: answered {sorted(got)}, expected only {status}: {self.last_body[:300]!r}"
            )
        self.statuses.clear()


# --------------------------------------------------------------------------------------------
# Interleaved measurement


@dataclass
class Contender:
    """One thing measured: ``fn`` called ``reps`` times in every ``every``-th slot. With a
    ``baseline``, the two alternate call by call (in alternating order) and both are recorded,
    the baseline as ``name + "-"``: their difference is what ``fn`` adds."""

    name: str
    fn: Callable[[], Any]
    reps: int = 1
    asynchronous: bool = False
    every: int = 1
    baseline: Callable[[], Any] | None = None
    samples: list[float] = field(default_factory=list)  # mean µs per call, one per round
    baseline_samples: list[float] = field(default_factory=list)


async def _run(c: Contender, totals: list[float], slot: int) -> None:
    clock = time.perf_counter
    fn, base = c.fn, c.baseline
    # Which of fn and baseline goes first alternates call by call, starting with each in turn
    # from slot to slot: the first call after another contender finds colder caches.
    for rep in range(slot % 2, c.reps + slot % 2):
        if base is None:
            t0 = clock()
            if c.asynchronous:
                await fn()
            else:
                fn()
            totals[0] += clock() - t0
            continue
        first, second = (fn, base) if rep % 2 == 0 else (base, fn)
        t0 = clock()
        if c.asynchronous:
            await first()
            t1 = clock()
            await second()
        else:
            first()
            t1 = clock()
            second()
        t2 = clock()
        totals[0] += t1 - t0 if rep % 2 == 0 else t2 - t1
        totals[1] += t2 - t1 if rep % 2 == 0 else t1 - t0


async def _round(contenders: list[Contender], slots: int) -> None:
    totals = [[0.0, 0.0] for _ in contenders]
    calls = [0] * len(contenders)
    for slot in range(slots):
        order = list(enumerate(contenders))
        if slot % 2:
            order.reverse()
        for i, c in order:
            if slot % c.every == 0:
                await _run(c, totals[i], slot)
                calls[i] += c.reps
    for i, c in enumerate(contenders):
        c.samples.append(totals[i][0] / calls[i] * 1e6)
        if c.baseline is not None:
            c.baseline_samples.append(totals[i][1] / calls[i] * 1e6)


def measure_rounds(
    loop: asyncio.AbstractEventLoop, contenders: list[Contender], rounds: int, slots: int
) -> dict[str, list[float]]:
    """Per contender (and baseline), mean µs per call in each round after the first (a warm-up,
    dropped). The long-lived objects built so far (specs, apps, guards) are frozen out of the
    garbage collector's scans, so a collection costs what the measured calls allocate, not what
    the peers' loaded specs hold; collections still run, as in production."""
    gc.collect()
    gc.freeze()
    try:
        for _ in range(rounds + 1):
            loop.run_until_complete(_round(contenders, slots))
    finally:
        gc.unfreeze()
    out = {c.name: c.samples[1:] for c in contenders}
    out.update({c.name + "-": c.baseline_samples[1:] for c in contenders if c.baseline is not None})
    return out


def med(values: list[float]) -> float:
    return statistics.median(values)


def ratio(num: list[float], den: list[float]) -> float:
    """Median of per-round ratios."""
    return statistics.median(n / d for n, d in zip(num, den, strict=True))


def diff(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


# --------------------------------------------------------------------------------------------
# Guards


def _guard(spec: Path, issuer: TestIssuer, sink: EventCollector) -> Guard:
    policy = Policy.from_dict(
        {
            "openapi": {"spec": str(spec)},
            "tokens": {
                "issuers": [
                    {
                        "issuer": issuer.issuer,
                        "audiences": ["https://api.bank.example"],
                        "algorithms": [issuer.alg],
                        "jwks": issuer.jwks(),
                    }
                ]
            },
        }
    )
    return Guard(policy, sink=sink)


def _without_contract_check(guard: Guard, sink: EventCollector) -> Guard:
    """The same guard (same contract, routes and token check) without its ``openapi`` check."""
    return Guard(guard.policy, checks=[c for c in guard.checks if c.name != "openapi"], sink=sink)


def _operation(contract: Contract, req: Req) -> OperationContract:
    for op in contract.operations:
        if op.method == req.method and op.path == req.template:
            return op
    raise SystemExit(f"{req.method} {req.template} is not in the contract")


def _all_allowed(sink: EventCollector, what: str) -> None:
    refused = [(e.outcome, e.status, e.reason, e.notes) for e in sink.events if e.outcome != "allow"]
    if refused:
        raise SystemExit(f"{what}: {len(refused)} decisions were not allowed: {refused[:2]}")
    sink.events.clear()


# --------------------------------------------------------------------------------------------
# The measurements


@dataclass
class Setup:
    loop: asyncio.AbstractEventLoop
    issuer: TestIssuer
    token: str
    sink: EventCollector
    guards: dict[Path, tuple[Guard, Guard]]
    core: dict[Path, Any]
    loads: dict[str, list[float]]
    payload: Payload = field(default_factory=Payload)
    connexion: dict[tuple[Path, bool, bool], Any] = field(default_factory=dict)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def measure_loads(setup: Setup, repeats: int) -> None:
    """Spec load times (seconds): bankguard on the four specs, the peers on UK and Berlin Group."""
    for label, spec in ALL_SPECS:
        setup.loads[f"bankguard load_contract, {label}"] = [
            _timed(lambda spec=spec: load_contract(spec))[1] for _ in range(repeats)
        ]
    for label, spec in ALL_SPECS[:2]:
        times, first = [], []
        for _ in range(repeats):
            api, seconds = _timed(lambda spec=spec: OpenAPI.from_file_path(str(spec), config=CORE_CONFIG))
            times.append(seconds)
            req = next(r for r in requests(setup.token) if r.spec == spec)
            first.append(_timed(lambda api=api, req=req: api.validate_request(CoreRequest(req)))[1])
        setup.core[spec] = api
        setup.loads[f"openapi-core from_file_path, {label}"] = times
        setup.loads[f"openapi-core first validate_request, {label}"] = first


def build_connexion_apps(setup: Setup, repeats: int) -> None:
    """The Connexion apps measured: per spec with and without request validation, and for the UK
    spec one with response validation (and no request validation). Connexion's spec load is timed
    from construction from the file to its first answer (its middleware stack is built then),
    ``repeats`` times per spec."""
    reqs = requests(setup.token)
    variants = [(req.spec, True, False) for req in (reqs[0], reqs[2])]
    variants += [(req.spec, False, False) for req in (reqs[0], reqs[2])]
    variants.append((UK_SPEC, False, True))
    parsed: dict[Path, dict[str, Any]] = {}
    for spec, validate_requests, validate_responses in variants:
        req = next(r for r in reqs if r.spec == spec)
        # The first app of each spec loads the file (timed: Connexion's spec load); the others get
        # a copy of the parsed document (Connexion parses YAML with PyYAML's pure-Python loader).
        source: Path | dict[str, Any] = copy.deepcopy(parsed[spec]) if spec in parsed else spec
        t0 = time.perf_counter()
        app = connexion_app(
            source, setup.payload, validate_requests=validate_requests, validate_responses=validate_responses
        )
        client = AsgiClient(app, req)
        setup.loop.run_until_complete(client())
        seconds = time.perf_counter() - t0
        client.expect(200, f"Connexion {req.name}")
        setup.connexion[spec, validate_requests, validate_responses] = app
        if spec not in parsed:
            times = [seconds]
            for _ in range(repeats - 1):
                t0 = time.perf_counter()
                other = AsgiClient(connexion_app(spec, setup.payload, validate_requests=True), req)
                setup.loop.run_until_complete(other())
                times.append(time.perf_counter() - t0)
                other.expect(200, f"Connexion {req.name}")
            label = "UK OB account-info" if spec == UK_SPEC else "Berlin Group PSD2"
            setup.loads[f"Connexion AsyncApp + add_api(file) + first request, {label}"] = times
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            parsed[spec] = yaml.load(spec.read_text(), Loader=loader)  # noqa: S506 - a safe loader


Row = dict[str, Any]


def measure_requests(setup: Setup, rounds: int, slots: int) -> list[Row]:
    rows = []
    reqs = requests(setup.token)
    bare = starlette_app(reqs)
    setup.payload.body = SMALL_BODY
    for req in reqs:
        with_check, without = setup.guards[req.spec]
        op = _operation(with_check.contract, req)
        headers = Headers(req.headers_with_length())

        def check(op: OperationContract = op, req: Req = req, headers: Headers = headers) -> Any:
            return op.check_request(
                path_params=req.path_params,
                query=req.query,
                headers=headers,
                body=req.body,
                content_type=req.content_type,
            )

        if check():
            raise SystemExit(f"{req.name}: bankguard refuses the request: {check()}")
        facts = make_facts(
            req.method,
            f"{req.path}?{req.query}" if req.query else req.path,
            headers=req.headers_with_length(),
            body=req.body,
        )
        for guard in (with_check, without):
            if not guard.decide(facts).allowed:
                raise SystemExit(f"{req.name}: the guard refuses the request: {setup.sink.events[-1]}")
        _refusal_check(with_check, req, setup.sink)
        api = setup.core[req.spec]
        core_req = CoreRequest(req)
        api.validate_request(core_req)  # raises if openapi-core finds the request invalid
        unmarshalled = api.unmarshal_request(core_req)
        if unmarshalled.errors:
            raise SystemExit(f"{req.name}: openapi-core unmarshal errors {unmarshalled.errors}")
        full = AsgiClient(setup.connexion[req.spec, True, False], req)
        plain = AsgiClient(setup.connexion[req.spec, False, False], req)
        starlette = AsgiClient(bare, req)
        contenders = [
            Contender("check", check, reps=20),
            Contender(
                "decide",
                lambda g=with_check, f=facts: g.decide(f),
                reps=10,
                baseline=lambda g=without, f=facts: g.decide(f),
            ),
            Contender("core", lambda a=api, r=core_req: a.validate_request(r)),
            Contender("core-unmarshal", lambda a=api, r=core_req: a.unmarshal_request(r)),
            Contender("cx", full, reps=2, asynchronous=True, baseline=plain),
            Contender("starlette", starlette, reps=2, asynchronous=True),
        ]
        s = measure_rounds(setup.loop, contenders, rounds, slots)
        _all_allowed(setup.sink, req.name)
        for client, what in (
            (full, "Connexion"),
            (plain, "Connexion without validation"),
            (starlette, "Starlette"),
        ):
            client.expect(200, f"{req.name}, {what}")
        added = diff(s["decide"], s["decide-"])
        cx_added = diff(s["cx"], s["cx-"])
        rows.append(
            {
                "name": req.name,
                "check": med(s["check"]),
                "decide": med(s["decide"]),
                "added": med(added),
                "core": med(s["core"]),
                "core_unmarshal": med(s["core-unmarshal"]),
                "cx": med(s["cx"]),
                "cx_plain": med(s["cx-"]),
                "cx_added": med(cx_added),
                "starlette": med(s["starlette"]),
                "core_x_check": ratio(s["core"], s["check"]),
                "core_x_added": ratio(s["core"], added),
                "unmarshal_x_check": ratio(s["core-unmarshal"], s["check"]),
                "cx_x_check": ratio(cx_added, s["check"]),
                "cx_x_added": ratio(cx_added, added),
            }
        )
    return rows


def _refusal_check(guard: Guard, req: Req, sink: EventCollector) -> None:
    """The guard measured does enforce the contract: a malformed request is refused with 400."""
    if req.method == "GET":
        bad = make_facts(req.method, f"{req.path}?fromBookingDateTime=yesterday", headers=req.headers)
    else:
        bad = make_facts(req.method, req.path, headers=req.headers, body=b'{"Data": {}}')
    decision = guard.decide(bad)
    if decision.allowed or decision.event.status != 400:
        raise SystemExit(f"{req.name}: a malformed request was not refused: {decision.event}")
    sink.events.clear()


def measure_responses(setup: Setup, rounds: int, slots: int) -> Row:
    req = requests(setup.token)[0]
    document = transactions_document()
    body = json.dumps(document, separators=(",", ":")).encode()
    leaky = json.dumps(transactions_document(extra=True), separators=(",", ":")).encode()
    guard, _ = setup.guards[UK_SPEC]
    op = _operation(guard.contract, req)
    declared = op.response(200, "application/json")
    if declared is None:
        raise SystemExit("no declared 200 application/json response")
    shape = compile_shape(declared.schema, declared.resolve, dialect=declared.dialect)
    scopes = frozenset({"accounts"})

    def minimise_validate() -> list[str]:
        minimised, _ = minimise(document, shape, scopes=scopes, reveal_pan=False)
        return declared.validate(minimised)

    facts = make_facts(req.method, f"{req.path}?{req.query}", headers=req.headers)
    decision = guard.decide(facts)
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]

    def finish(body: bytes = body) -> Any:
        plan = guard.response_plan(decision, 200, headers)
        assert plan is not None
        return plan.finish(body)

    # Sanity: the document conforms (bankguard, openapi-core, Connexion); minimisation leaves it
    # as it is; the leaky variant is stripped, masked and then conforms.
    if declared.validate(document) or minimise_validate():
        raise SystemExit(f"the 50-transaction document does not conform: {declared.validate(document)}")
    outcome = finish()
    if outcome.status != 200 or outcome.body is not body:
        raise SystemExit(f"finish changed a conforming document: {outcome.status} {outcome.body[:200]!r}")
    stripped = finish(leaky)
    cleaned = json.loads(stripped.body)
    if (
        stripped.status != 200
        or "InternalLedgerId" in stripped.body.decode()
        or "4111111111111111" in str(cleaned)
    ):
        raise SystemExit(f"the leaky document was not minimised: {stripped.status} {stripped.body[:300]!r}")
    api = setup.core[UK_SPEC]
    core_req, core_resp = CoreRequest(req), CoreResponse(body)
    api.validate_response(core_req, core_resp)  # raises when invalid
    checked = AsgiClient(setup.connexion[UK_SPEC, False, True], req)
    unchecked = AsgiClient(setup.connexion[UK_SPEC, False, False], req)
    setup.payload.body = leaky
    setup.loop.run_until_complete(checked())
    checked.expect(500, "Connexion validate_responses on a non-conforming document")
    setup.payload.body = body
    for client in (checked, unchecked):
        setup.loop.run_until_complete(client())
        client.expect(200, "Connexion on the 50-transaction document")
        if client.last_body != body:
            raise SystemExit("Connexion changed the response body")
    setup.sink.events.clear()
    contenders = [
        Contender("minimise+validate", minimise_validate, reps=10),
        Contender("finish", finish, reps=10),
        Contender("finish-leaky", lambda: finish(leaky), reps=5),
        Contender("core", lambda: api.validate_response(core_req, core_resp)),
        Contender("cx", checked, asynchronous=True, baseline=unchecked),
        Contender("core-unmarshal", lambda: api.unmarshal_response(core_req, core_resp), every=slots),
    ]
    s = measure_rounds(setup.loop, contenders, rounds, slots)
    checked.expect(200, "Connexion, response validation")
    unchecked.expect(200, "Connexion, no response validation")
    setup.sink.events.clear()
    cx_added = diff(s["cx"], s["cx-"])
    return {
        "size": len(body),
        "leaky_size": len(leaky),
        "minimise_validate": med(s["minimise+validate"]),
        "finish": med(s["finish"]),
        "finish_leaky": med(s["finish-leaky"]),
        "core": med(s["core"]),
        "core_unmarshal": med(s["core-unmarshal"]),
        "cx_added": med(cx_added),
        "core_x_mv": ratio(s["core"], s["minimise+validate"]),
        "core_x_finish": ratio(s["core"], s["finish"]),
        "unmarshal_x_finish": ratio(s["core-unmarshal"], s["finish"]),
        "cx_x_mv": ratio(cx_added, s["minimise+validate"]),
        "cx_x_finish": ratio(cx_added, s["finish"]),
    }


# --------------------------------------------------------------------------------------------
# Report


def report(rounds: int, slots: int, *, quick: bool = False) -> None:
    logging.getLogger("bankguard").setLevel(logging.ERROR)
    logging.getLogger("connexion").setLevel(logging.CRITICAL)  # refusals in the sanity checks
    warnings.filterwarnings("ignore", module="openapi_core")  # "Unsupported scheme type" (oauth2)
    loop = asyncio.new_event_loop()
    issuer = TestIssuer(alg="ES256")
    token = issuer.mint(scope="accounts", lifetime=3600)
    sink = EventCollector()
    guards = {}
    for spec in (UK_SPEC, BG_SPEC):
        with_check = _guard(spec, issuer, sink)
        guards[spec] = (with_check, _without_contract_check(with_check, sink))
    setup = Setup(loop, issuer, token, sink, guards, {}, {})
    try:
        measure_loads(setup, 1 if quick else 3)
        build_connexion_apps(setup, 1 if quick else 3)
        req_rows = measure_requests(setup, rounds, slots)
        resp = measure_responses(setup, rounds, max(2, slots // 4))
    finally:
        loop.close()
        for a, b in guards.values():
            a.close()
            b.close()
    print_report(rounds, slots, req_rows, resp, setup.loads)


def _ratio_line(label: str, value: float, target: str | None = None) -> None:
    if value <= 0:  # an added cost lost in the noise (a short --quick run on a busy machine)
        print(f"    {label:<42}{'n/a':>9}   (noise: run without --quick)")
        return
    if target is None:
        print(f"    {label:<42}{value:>8.1f}x")
        return
    want = TARGETS[target]
    print(f"    {label:<42}{value:>8.1f}x   target >= {want:.0f}x: {'met' if value >= want else 'above'}")


def print_report(
    rounds: int, slots: int, req_rows: list[Row], resp: Row, loads: dict[str, list[float]]
) -> None:
    print(f"\nOpenAPI contract, request validation: {rounds} rounds x {slots} slots (µs per request)")
    print("(check: OperationContract.check_request; decide +: what the openapi check adds to")
    print(" Guard.decide; openapi-core: validate_request / unmarshal_request; Connexion: AsyncApp")
    print(" with and without RequestValidationMiddleware, +: the difference; Starlette: bare app;")
    print(" ratios: medians of per-round ratios, all measured side by side)")
    print(
        f"{'request':<22}{'check':>8}{'decide':>8}{'decide +':>10}{'core val':>10}{'core unm':>10}"
        f"{'Cx':>8}{'Cx noval':>10}{'Cx +':>8}{'Starlette':>11}"
    )
    for r in req_rows:
        print(
            f"{r['name']:<22}{r['check']:>8.1f}{r['decide']:>8.1f}{r['added']:>10.1f}{r['core']:>10.0f}"
            f"{r['core_unmarshal']:>10.0f}{r['cx']:>8.0f}{r['cx_plain']:>10.0f}{r['cx_added']:>8.0f}"
            f"{r['starlette']:>11.0f}"
        )
    for r in req_rows:
        print(f"  {r['name']}")
        _ratio_line("openapi-core validate / check", r["core_x_check"], "request vs openapi-core")
        _ratio_line("openapi-core validate / decide +", r["core_x_added"], "request vs openapi-core")
        _ratio_line("openapi-core unmarshal / check", r["unmarshal_x_check"])
        _ratio_line("Connexion + / check", r["cx_x_check"], "request vs Connexion")
        _ratio_line("Connexion + / decide +", r["cx_x_added"], "request vs Connexion")
    print(
        f"\nOpenAPI contract, response: 50-transaction OBReadTransaction6, {resp['size'] / 1000:.1f} kB "
        f"(µs per response)"
    )
    rows = (
        ("bankguard full walk + validate (parsed; no fast path)", resp["minimise_validate"]),
        ("bankguard response_plan + finish (bytes)", resp["finish"]),
        ("bankguard finish, leaky variant (*)", resp["finish_leaky"]),
        ("openapi-core validate_response", resp["core"]),
        ("openapi-core unmarshal_response", resp["core_unmarshal"]),
        ("Connexion validate_responses +", resp["cx_added"]),
    )
    for label, value in rows:
        print(f"  {label:<42}{value:>10.1f}")
    print(
        f"  (*) {resp['leaky_size'] / 1000:.1f} kB: 100 undeclared properties stripped, 1 card number "
        "masked, re-serialised, audit event"
    )
    _ratio_line("openapi-core validate / finish", resp["core_x_finish"], "response vs openapi-core")
    _ratio_line("openapi-core validate / full walk", resp["core_x_mv"])
    _ratio_line("openapi-core unmarshal / finish", resp["unmarshal_x_finish"])
    _ratio_line("Connexion + / finish", resp["cx_x_finish"], "response vs Connexion")
    _ratio_line("Connexion + / full walk", resp["cx_x_mv"])
    print("\nspec load (ms, median)")
    for name, times in loads.items():
        print(f"  {name:<72}{1000 * med(times):>9.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few rounds, few slots")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--slots", type=int, default=None, help="interleaved slots per round")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 9)
    slots = args.slots or (8 if args.quick else 40)
    print(f"python {sys.version.split()[0]}")
    report(rounds, slots, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
