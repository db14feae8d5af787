"""Shared builders for the full-stack benchmarks: key material, policies, apps, peers, requests.

Used in-process by ``benchmarks/fullstack.py`` and, through :func:`make_asgi` / :func:`make_wsgi`,
by benchmarks that serve the same apps from uvicorn or gunicorn in another process::

    python -c 'import sys; sys.path.insert(0, "benchmarks"); import stack, pathlib; \\
        stack.Material.create(pathlib.Path("/tmp/bench"))'
    BENCH_DIR=/tmp/bench BENCH_VARIANT=full-dpop \\
        uvicorn --app-dir benchmarks --factory stack:make_asgi --no-proxy-headers
    BENCH_DIR=/tmp/bench BENCH_VARIANT=full-mtls \\
        gunicorn --chdir benchmarks 'stack:make_wsgi()'

The API is the example bank's contract, ``examples/openapi.yaml``: ``GET
/accounts/{AccountId}/transactions`` answers :data:`TRANSACTIONS_BODY` (50 transactions, 45 kB,
with one property the contract does not declare in every transaction and one full card number,
so that minimisation has work), ``POST /domestic-payments`` takes :data:`PAYMENT_BODY` and answers
201 with :data:`PAYMENT_RESPONSE_BODY`. The handlers return those bytes as they are: whatever
else a request costs is the stack in front of them.

Variants (``BENCH_VARIANT``), each one app:

* ``bare``: the app alone (Starlette for ASGI, Flask for WSGI);
* bankguard, ``protect(app, policy(material, variant))``: ``request`` (request hygiene, interaction
  id and routes only, both operations public), ``bearer`` (a repeated, hence cached, unbound
  bearer token with the operation's scope), ``mtls`` (the client certificate from nginx's
  URL-encoded PEM header, from a trusted proxy, validated against the benchmark CA, and a
  certificate-bound token), ``dpop`` (a DPoP-bound token and a fresh proof per request),
  ``openapi`` (bearer token, then the contract: request validation, response minimisation and
  validation), ``ratelimit`` (bearer token, then a per-TPP limit of 10^9/minute), ``full-mtls``
  (certificate header, certificate-bound token, contract both ways, minimisation, per-TPP limit),
  ``full-dpop`` (the same with a DPoP-bound token and a proof per request; the certificate header
  is still read and validated, as the TPP's transport identity);
* peers doing the work of ``full-dpop`` by hand (``peer-openapi-core``, ``peer-connexion``, and
  ``peer-openapi-core-integration``, see :func:`peer_asgi`).

Material (:class:`Material`) is generated once with ``cryptography`` and written to a directory,
so that a server process and a load generator share it: CA and client certificate, the
authorization server's ES256 key and JWK Set, the client's DPoP key, and the three access tokens
(certificate-bound, DPoP-bound, unbound), valid for 30 days.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import hashlib
import io
import ipaddress
import json
import os
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bankguard import Policy, protect
from bankguard.testing import DPoPKey, sign_compact

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "openapi.yaml"
#: Where clients reach the API (DPoP ``htu``), and the audience of its access tokens.
ORIGIN = "https://api.bank.example"
HOST = "api.bank.example"
ISSUER = "https://as.bank.example"
AUDIENCE = ORIGIN
CLIENT_ID = "tpp-bench-1"
ACCOUNT_ID = "22289"
TRANSACTIONS_PATH = f"/accounts/{ACCOUNT_ID}/transactions"
PAYMENTS_PATH = "/domestic-payments"
INTERACTION_ID = "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
#: The per-TPP limit of the rate-limited variants and of the peers: never reached.
LIMIT = "1000000000/minute"
LIMIT_STRATEGY = "sliding-window-counter"
CERT_HEADER = "x-ssl-client-cert"
VERIFY_HEADER = "x-ssl-client-verify"
TOKEN_LIFETIME = 30 * 86400

BANKGUARD_VARIANTS = ("request", "bearer", "mtls", "dpop", "openapi", "ratelimit", "full-mtls", "full-dpop")
VARIANTS = ("bare", *BANKGUARD_VARIANTS)
PEER_KINDS = ("openapi-core", "connexion", "openapi-core-integration")
#: Variants that send a certificate header / a DPoP proof / which token each sends.
_CERT = frozenset({"mtls", "full-mtls", "full-dpop"})
_DPOP = frozenset({"dpop", "full-dpop"})
_TOKEN = {
    "bearer": "bearer",
    "openapi": "bearer",
    "ratelimit": "bearer",
    "mtls": "mtls",
    "full-mtls": "mtls",
    "dpop": "dpop",
    "full-dpop": "dpop",
}


# --------------------------------------------------------------------------------------------
# Documents


#: A full card number (Luhn-valid, made up) that leaks into one transaction; masked on the way out.
LEAKED_PAN = "4659432109876541"
MASKED_PAN = "465943******6541"
#: The property no transaction schema declares (the bank's internal ledger reference).
UNDECLARED = "InternalLedgerId"

_KINDS = (  # (information, Code, SubCode, card): statement narratives as a core system writes them
    (
        "CARD PAYMENT TO TESCO STORES 3297 ON {day} LEEDS GB; AUTH CODE {ref}; TERMINAL ID 00412377; "
        "MCC 5411 GROCERY STORES, SUPERMARKETS; CONTACTLESS; ORIGINAL AMOUNT {amount} GBP; CARD ENDING 6541; "
        "POSTED BY CARD SETTLEMENT BATCH {day} 23:00; DISPUTES: CALL 0345 600 6541",
        "CustomerCardTransactions",
        "PointOfSale",
        True,
    ),
    (
        "DIRECT DEBIT TO NORTHERN ENERGY LTD REF NE-00412-7-{ref}; ORIGINATOR ID 976123; COLLECTED UNDER "
        "THE DIRECT DEBIT GUARANTEE; MONTHLY PLAN PAYMENT FOR ELECTRICITY AND GAS AT 14 ASH GROVE LEEDS; "
        "ADVANCE NOTICE SENT {day}; AMOUNT {amount} GBP",
        "IssuedDirectDebits",
        "DirectDebitPayment",
        False,
    ),
    (
        "CARD PAYMENT TO STATION COFFEE LEEDS ON {day} AT LEEDS STATION CONCOURSE; AUTH CODE {ref}; MCC 5814 "
        "FAST FOOD RESTAURANTS; CONTACTLESS, NO CARDHOLDER VERIFICATION; ORIGINAL AMOUNT {amount} GBP; "
        "CARD ENDING 6541; POSTED BY CARD SETTLEMENT BATCH {day} 23:00",
        "CustomerCardTransactions",
        "PointOfSale",
        True,
    ),
    (
        "STANDING ORDER TO RAINY DAY SAVINGS ACCOUNT 44910 SORT CODE 80-20-01; REFERENCE SAVINGS {ref}; "
        "MONTHLY ON THE {day}; SET UP IN MOBILE BANKING; FASTER PAYMENTS SERVICE; AMOUNT {amount} GBP; "
        "NEXT PAYMENT DUE NEXT MONTH; CANCEL OR AMEND IN THE APP",
        "IssuedCreditTransfers",
        "DomesticCreditTransfer",
        False,
    ),
    (
        "SALARY FROM ACME WIDGETS LTD PAYROLL DEPARTMENT; BACS CREDIT REF PAYROLL-{ref}; PAY PERIOD ENDING "
        "{day}; EMPLOYEE NUMBER AW-0412; RECEIVED VIA BANKERS AUTOMATED CLEARING SERVICES; AMOUNT {amount} "
        "GBP; FUNDS AVAILABLE IMMEDIATELY; QUERIES TO YOUR EMPLOYER",
        "ReceivedCreditTransfers",
        "DomesticCreditTransfer",
        False,
    ),
)


def transactions_document(count: int = 50) -> dict[str, Any]:
    """``OBReadTransaction6`` of examples/openapi.yaml, in the shape examples/bank_data.py gives its
    rows (which has only 21 transactions per account, hence this generator), plus what a core
    banking system leaks: :data:`UNDECLARED` in every transaction and :data:`LEAKED_PAN` in one
    card transaction (the other card transactions carry an already masked number)."""
    rows = []
    balance = 312_18
    for i in range(count):
        info, code, sub_code, card = _KINDS[i % len(_KINDS)]
        day = f"2024-07-{1 + i * 30 // count:02d}"
        booked = f"{day}T{9 + i % 9:02d}:{(i * 7) % 60:02d}:00+00:00"
        credit = code == "ReceivedCreditTransfers"
        amount = 2450_00 if credit else 3_80 + (i * 1_31) % 120_00
        balance += amount if credit else -amount
        money = f"{amount / 100:.2f}"
        row: dict[str, Any] = {
            "AccountId": ACCOUNT_ID,
            "TransactionId": f"{ACCOUNT_ID}-{day.replace('-', '')}-{i + 1:03d}",
            "CreditDebitIndicator": "Credit" if credit else "Debit",
            "Status": "Booked",
            "BookingDateTime": booked,
            "ValueDateTime": booked,
            "TransactionInformation": info.format(day=day, ref=f"{(i * 7919) % 1_000_000:06d}", amount=money)
            + f"; BOOKED TO CURRENT ACCOUNT {ACCOUNT_ID} (BILLS), SORT CODE 80-20-01; STATEMENT PERIOD"
            f" JULY 2024; ENTRY {i + 1} OF {count}; SOURCE: CORE LEDGER",
            "Amount": {"Amount": money, "Currency": "GBP"},
            "BankTransactionCode": {"Code": code, "SubCode": sub_code},
        }
        if card:
            row["CardInstrument"] = {
                "CardSchemeName": "VISA",
                "AuthorisationType": "Contactless" if i % 2 else "PIN",
                "Name": "Kevin Smith",
                "Identification": LEAKED_PAN if i == 7 else "************6541",
            }
        row["Balance"] = {
            "Amount": {"Amount": f"{abs(balance) / 100:.2f}", "Currency": "GBP"},
            "CreditDebitIndicator": "Credit" if balance >= 0 else "Debit",
            "Type": "InterimBooked",
        }
        row[UNDECLARED] = f"LDG-{2024_0000 + i}-{(i * 7919) % 10_000:04d}"
        rows.append(row)
    return {
        "Data": {"Transaction": rows},
        "Links": {"Self": TRANSACTIONS_PATH},
        "Meta": {
            "TotalPages": 1,
            "FirstAvailableDateTime": rows[0]["BookingDateTime"],
            "LastAvailableDateTime": rows[-1]["BookingDateTime"],
        },
    }


def _compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


#: What the handlers return, as Python data: like any application, they serialise it on every
#: request (to exactly :data:`TRANSACTIONS_BODY`), so "bare" is an application doing its own
#: work, not a server answering constant bytes.
TRANSACTIONS_DOCUMENT: dict[str, Any] = transactions_document()
TRANSACTIONS_BODY: bytes = _compact(TRANSACTIONS_DOCUMENT)
_INITIATION = {
    "InstructionIdentification": "ACME412",
    "EndToEndIdentification": "FRESCO.21302.GFX.20",
    "InstructedAmount": {"Amount": "165.88", "Currency": "GBP"},
    "CreditorAccount": {
        "SchemeName": "UK.OBIE.SortCodeAccountNumber",
        "Identification": "08080021325698",
        "Name": "ACME Inc",
    },
    "RemittanceInformation": {"Reference": "FRESCO-101"},
}
#: ``OBWriteDomestic2``: the request body of ``POST /domestic-payments``.
PAYMENT_BODY: bytes = _compact({"Data": {"ConsentId": "PDC-58923", "Initiation": _INITIATION}, "Risk": {}})
#: ``OBWriteDomesticResponse5``: its 201 answer (valid as it is: nothing to minimise).
PAYMENT_RESPONSE_BODY: bytes = _compact(
    {
        "Data": {
            "DomesticPaymentId": "7f6c2a7e-5d3b-4c1e-9a4f-2b8d6e1c3a90",
            "ConsentId": "PDC-58923",
            "Status": "AcceptedSettlementInProcess",
            "CreationDateTime": "2024-07-31T10:43:31+00:00",
            "StatusUpdateDateTime": "2024-07-31T10:43:31+00:00",
            "Initiation": _INITIATION,
        },
        "Links": {"Self": "/domestic-payments/7f6c2a7e-5d3b-4c1e-9a4f-2b8d6e1c3a90"},
        "Meta": {},
    }
)


# --------------------------------------------------------------------------------------------
# Key material


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _ec_jwk(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint of an EC JWK (the ``cnf.jkt`` of a DPoP-bound token)."""
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    return _b64(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest())


def _dpop_key(private: ec.EllipticCurvePrivateKey) -> DPoPKey:
    """A :class:`bankguard.testing.DPoPKey` around an existing key (its constructor makes a new one)."""
    key = DPoPKey.__new__(DPoPKey)
    key.alg = "ES256"
    key._key = private  # what DPoPKey.proof signs with
    key.public_jwk = _ec_jwk(private.public_key())
    key.thumbprint = jwk_thumbprint(key.public_jwk)
    return key


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bankguard benchmarks"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _pki() -> tuple[x509.Certificate, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA and a TPP client certificate (EC P-256, ``clientAuth``), as tests/e2e/conftest.py makes them."""
    now = dt.datetime.now(dt.timezone.utc)
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(seconds=TOKEN_LIFETIME)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("bankguard benchmark CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(CLIENT_ID))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca, leaf, key


@dataclass(frozen=True)
class Material:
    """Everything the variants and their clients need, generated once with ``cryptography``.

    Files in :attr:`directory`: ``ca.pem`` (the trust anchor of the certificate variants),
    ``client.pem`` / ``client.key`` (the TPP's certificate and key), ``issuer.key`` (the
    authorization server's ES256 key), ``jwks.json`` (its public JWK Set), ``dpop.key`` (the
    client's DPoP key) and ``tokens.json`` (the access tokens: ``mtls`` bound to the certificate
    with ``cnf.x5t#S256``, ``dpop`` bound to the DPoP key with ``cnf.jkt``, ``bearer`` unbound;
    scope ``accounts payments``, client_id :data:`CLIENT_ID`, valid for 30 days).
    """

    directory: Path
    ca: x509.Certificate
    client_cert: x509.Certificate
    client_key: ec.EllipticCurvePrivateKey
    issuer_key: ec.EllipticCurvePrivateKey
    dpop: DPoPKey
    tokens: Mapping[str, str]

    @classmethod
    def create(cls, directory: Path) -> Material:
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        ca, leaf, client_key = _pki()
        issuer_key = ec.generate_private_key(ec.SECP256R1())
        dpop = _dpop_key(ec.generate_private_key(ec.SECP256R1()))
        now = int(time.time()) - 60
        cert_thumbprint = _b64(hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).digest())
        tokens = {
            "bearer": _mint(issuer_key, now, None),
            "mtls": _mint(issuer_key, now, {"x5t#S256": cert_thumbprint}),
            "dpop": _mint(issuer_key, now, {"jkt": dpop.thumbprint}),
        }
        pem = serialization.Encoding.PEM
        files = {
            "ca.pem": ca.public_bytes(pem),
            "client.pem": leaf.public_bytes(pem),
            "client.key": _pem_key(client_key),
            "issuer.key": _pem_key(issuer_key),
            "dpop.key": _pem_key(dpop._key),
            "jwks.json": json.dumps(_jwks(issuer_key), indent=2).encode(),
            "tokens.json": json.dumps(tokens, indent=2).encode(),
        }
        for name, data in files.items():
            path = directory / name
            path.write_bytes(data)
            if name.endswith(".key"):
                path.chmod(0o600)
        return cls.load(directory)

    @classmethod
    def load(cls, directory: Path) -> Material:
        directory = Path(directory).resolve()

        def key(name: str) -> ec.EllipticCurvePrivateKey:
            loaded = serialization.load_pem_private_key((directory / name).read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{directory / name}: not an EC private key")
            return loaded

        return cls(
            directory=directory,
            ca=x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes()),
            client_cert=x509.load_pem_x509_certificate((directory / "client.pem").read_bytes()),
            client_key=key("client.key"),
            issuer_key=key("issuer.key"),
            dpop=_dpop_key(key("dpop.key")),
            tokens=json.loads((directory / "tokens.json").read_text()),
        )

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def jwks(self) -> dict[str, Any]:
        return _jwks(self.issuer_key)

    @property
    def cert_header(self) -> str:
        """The client certificate as nginx's ``$ssl_client_escaped_cert`` writes it (URL-encoded PEM)."""
        return quote(self.client_cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), safe="")


def _jwks(issuer_key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return {"keys": [{**_ec_jwk(issuer_key.public_key()), "use": "sig", "alg": "ES256", "kid": "bench-1"}]}


def _mint(key: ec.EllipticCurvePrivateKey, now: int, cnf: dict[str, str] | None) -> str:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "psu-1",
        "aud": AUDIENCE,
        "client_id": CLIENT_ID,
        "iat": now,
        "exp": now + TOKEN_LIFETIME,
        "jti": secrets.token_urlsafe(12),
        "scope": "accounts payments",
    }
    if cnf is not None:
        claims["cnf"] = cnf
    return sign_compact({"alg": "ES256", "typ": "at+jwt", "kid": "bench-1"}, claims, key, "ES256")


# --------------------------------------------------------------------------------------------
# bankguard policies


def policy(
    material: Material,
    variant: str,
    *,
    storage_uri: str = "memory://",
    sink: Callable[[Any], None] | None = None,
) -> Policy:
    """The bankguard policy of ``variant`` (see the module docstring). ``sink``: an audit sink
    callable (default: the policy's logging sink, ``bankguard.audit`` at INFO for allows)."""
    if variant not in BANKGUARD_VARIANTS:
        raise ValueError(f"no bankguard policy for variant {variant!r} (one of {BANKGUARD_VARIANTS})")
    data: dict[str, Any] = {
        "external_origins": [ORIGIN],
        "trusted_proxies": ["127.0.0.0/8"],
        "storage": {"uri": storage_uri},
    }
    if sink is not None:
        data["audit"] = {"sink": sink}
    public = variant == "request"
    if not public:
        data["tokens"] = {
            "issuers": [
                {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["ES256"], "jwks": material.jwks}
            ]
        }
    if variant in ("openapi", "full-mtls", "full-dpop"):
        data["openapi"] = {"spec": str(SPEC)}  # operations, scopes, request and response checks
    else:
        data["routes"] = {
            "operations": [
                {
                    "id": "GetTransactions",
                    "method": "GET",
                    "path": "/accounts/{AccountId}/transactions",
                    **({"public": True} if public else {"scopes": ["accounts"]}),
                },
                {
                    "id": "CreateDomesticPayment",
                    "method": "POST",
                    "path": PAYMENTS_PATH,
                    **({"public": True} if public else {"scopes": ["payments"]}),
                },
            ]
        }
    if variant in _CERT or variant in _DPOP:
        data["profile"] = "fapi2"  # sender-constrained tokens only
    if variant in _CERT:
        data["client_cert"] = {
            "source": "nginx",
            "verify_header": VERIFY_HEADER,
            "trust_anchors": str(material.ca_file),
        }
    if variant in _DPOP:
        data["dpop"] = {"enabled": True}
    if variant in ("ratelimit", "full-mtls", "full-dpop"):
        data["ratelimit"] = {"enabled": True, "strategy": LIMIT_STRATEGY, "tiers": {"default": LIMIT}}
    return Policy.from_dict(data)


# --------------------------------------------------------------------------------------------
# The apps


def _starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def transactions(request: Request) -> Response:
        return Response(_compact(TRANSACTIONS_DOCUMENT), media_type="application/json")

    async def payment(request: Request) -> Response:
        await request.body()
        return Response(PAYMENT_RESPONSE_BODY, status_code=201, media_type="application/json")

    return Starlette(
        routes=[
            Route("/accounts/{AccountId}/transactions", transactions, methods=["GET"]),
            Route(PAYMENTS_PATH, payment, methods=["POST"]),
        ]
    )


_FLASK_NAMES = iter(range(1_000_000))


def _flask_app() -> Any:
    from flask import Flask, Response, request

    app = Flask(f"bench_{next(_FLASK_NAMES)}")

    @app.get("/accounts/<AccountId>/transactions")
    def transactions(AccountId: str) -> Response:
        return Response(_compact(TRANSACTIONS_DOCUMENT), mimetype="application/json")

    @app.post(PAYMENTS_PATH)
    def payment() -> Response:
        request.get_data()
        return Response(PAYMENT_RESPONSE_BODY, status=201, mimetype="application/json")

    return app


def asgi_app(
    variant: str,
    material: Material | None = None,
    *,
    storage_uri: str = "memory://",
    sink: Callable[[Any], None] | None = None,
) -> Any:
    """A Starlette app serving the two operations; ``bare`` as it is, any other variant wrapped by
    ``bankguard.protect(app, policy(material, variant))``."""
    app = _starlette_app()
    if variant == "bare":
        return app
    if material is None:
        raise ValueError(f"variant {variant!r} needs the material")
    return protect(app, policy(material, variant, storage_uri=storage_uri, sink=sink))


def wsgi_app(
    variant: str,
    material: Material | None = None,
    *,
    storage_uri: str = "memory://",
    sink: Callable[[Any], None] | None = None,
) -> Any:
    """A Flask app serving the two operations, as :func:`asgi_app`."""
    app = _flask_app()
    if variant == "bare":
        return app
    if material is None:
        raise ValueError(f"variant {variant!r} needs the material")
    return protect(app, policy(material, variant, storage_uri=storage_uri, sink=sink))


# --------------------------------------------------------------------------------------------
# Requests


def request_headers(material: Material, variant: str, method: str, url: str) -> list[tuple[str, str]]:
    """The header fields a client of ``variant`` sends for ``method url`` beyond those its HTTP
    library sets itself (``Host``, ``Content-Length``): ``Authorization`` (``Bearer`` or ``DPoP``),
    a fresh DPoP proof for each call of a DPoP variant, nginx's client-certificate and verify
    headers for a certificate variant, ``x-fapi-interaction-id``, and ``Content-Type`` for a POST.
    ``url`` is the URL the client uses (a path is taken relative to :data:`ORIGIN`); behind a proxy
    or on another port, pass the external URL, which the DPoP proof names. Peer variants
    (``peer-...``) take what ``full-dpop`` takes."""
    if variant.startswith("peer-"):
        variant = "full-dpop"
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    if url.startswith("/"):
        url = ORIGIN + url
    headers = [
        ("accept", "application/json"),
        ("user-agent", "tpp-client/2.4 (+https://tpp.example)"),
        ("x-fapi-interaction-id", INTERACTION_ID),
    ]
    if method == "POST":
        headers.append(("content-type", "application/json"))
    kind = _TOKEN.get(variant)
    if kind is not None:
        token = material.tokens[kind]
        if variant in _DPOP:
            headers.append(("authorization", f"DPoP {token}"))
            headers.append(("dpop", material.dpop.proof(method, url, access_token=token)))
        else:
            headers.append(("authorization", f"Bearer {token}"))
    if variant in _CERT:
        headers.append((CERT_HEADER, material.cert_header))
        headers.append((VERIFY_HEADER, "SUCCESS"))
    return headers


# --------------------------------------------------------------------------------------------
# The peer stack: the same work by hand and with the usual libraries


class PeerDenied(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class PeerAuth:
    """What ``full-dpop`` checks before the app runs, written by hand around PyJWT.

    * the client certificate: nginx's header, believed from a trusted proxy (127.0.0.0/8) only,
      next to ``x-ssl-client-verify: SUCCESS``; parsed with ``cryptography`` once per header value
      (a dict), then only its validity dates are checked;
    * the DPoP proof (RFC 9449 §4.3): one ``DPoP`` header, ``typ`` ``dpop+jwt``, ``alg`` ES256, a
      public ``jwk``; its signature verified with PyJWT (``jwt.decode_complete`` with the key from
      the header; keys are kept by thumbprint); ``htm``, ``htu`` (the external origin plus the
      path), ``iat`` within 60 s (10 s ahead), ``ath`` and an unseen ``jti`` (remembered 70 s);
    * the access token with PyJWT on every request (PyJWT has no cache): ES256 signature, ``typ``
      ``at+jwt``, ``iss``, ``aud``, ``exp``, ``iat``, required claims; ``cnf.jkt`` equal to the
      proof key's RFC 7638 thumbprint; the operation's scope.

    Returns the TPP identity (the token's ``client_id``) the rate limiter counts."""

    def __init__(self, material: Material) -> None:
        import jwt

        self._jwt = jwt
        self.issuer_key = material.issuer_key.public_key()
        self.trusted = (ipaddress.ip_network("127.0.0.0/8"),)
        self.certs: dict[str, float] = {}  # header value -> notAfter
        self.keys: dict[str, Any] = {}  # jwk thumbprint -> public key
        self.seen: dict[str, float] = {}  # proof jti -> when it may be forgotten
        self.lock = threading.Lock()

    def verify(self, method: str, path: str, headers: Mapping[str, str], peer: str | None) -> str:
        jwt = self._jwt
        now = time.time()
        cert = headers.get(CERT_HEADER)
        if cert is None or peer is None or not any(ipaddress.ip_address(peer) in n for n in self.trusted):
            raise PeerDenied(401, "certificate_required")
        if headers.get(VERIFY_HEADER) != "SUCCESS":
            raise PeerDenied(400, "certificate_not_verified")
        not_after = self.certs.get(cert)
        if not_after is None:
            parsed = x509.load_pem_x509_certificate(unquote(cert).encode("ascii"))
            not_after = parsed.not_valid_after_utc.timestamp()
            self.certs[cert] = not_after
        if now > not_after:
            raise PeerDenied(401, "certificate_expired")
        scheme, _, token = headers.get("authorization", "").partition(" ")
        proof = headers.get("dpop")
        if scheme.lower() != "dpop" or not token or proof is None:
            raise PeerDenied(401, "invalid_token")
        try:
            header = jwt.get_unverified_header(proof)
            jwk = header.get("jwk")
            if header.get("typ") != "dpop+jwt" or header.get("alg") != "ES256" or not isinstance(jwk, dict):
                raise PeerDenied(401, "invalid_dpop_proof")
            if "d" in jwk:
                raise PeerDenied(401, "invalid_dpop_proof")
            jkt = jwk_thumbprint(jwk)
            key = self.keys.get(jkt)
            if key is None:
                key = self.keys[jkt] = jwt.PyJWK(jwk, algorithm="ES256").key
            claims = jwt.decode(
                proof,
                key,
                algorithms=["ES256"],
                options={"require": ["jti", "htm", "htu", "iat"], "verify_aud": False, "verify_iat": False},
            )
            access = jwt.decode_complete(
                token,
                self.issuer_key,
                algorithms=["ES256"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["iss", "aud", "exp", "iat", "sub", "client_id", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise PeerDenied(401, "invalid_token") from exc
        if access["header"].get("typ") != "at+jwt":
            raise PeerDenied(401, "invalid_token")
        payload = access["payload"]
        iat = claims["iat"]
        if (
            claims["htm"] != method
            or claims["htu"] != ORIGIN + path
            or not isinstance(iat, (int, float))
            or not now - 60 <= iat <= now + 10
            or claims.get("ath") != _b64(hashlib.sha256(token.encode("ascii")).digest())
        ):
            raise PeerDenied(401, "invalid_dpop_proof")
        with self.lock:
            if claims["jti"] in self.seen:
                raise PeerDenied(401, "invalid_dpop_proof")
            if len(self.seen) > 100_000:
                self.seen = {j: t for j, t in self.seen.items() if t > now}
            self.seen[claims["jti"]] = now + 70
        if (payload.get("cnf") or {}).get("jkt") != jkt:
            raise PeerDenied(401, "invalid_token")
        needed = "payments" if method == "POST" else "accounts"
        if needed not in str(payload.get("scope", "")).split():
            raise PeerDenied(403, "insufficient_scope")
        client_id = payload["client_id"]
        if not isinstance(client_id, str):
            raise PeerDenied(401, "invalid_token")
        return client_id


_PAN = re.compile(r"(?<![0-9*])[0-9]{13,19}(?![0-9*])")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask_pans(text: str) -> str:
    """Card numbers (13-19 digits, Luhn-valid) masked to first six and last four digits."""
    if len(text) < 13:
        return text
    return _PAN.sub(
        lambda m: m[0][:6] + "*" * (len(m[0]) - 10) + m[0][-4:] if _luhn(m[0]) else m[0],
        text,
    )


def load_spec() -> dict[str, Any]:
    """examples/openapi.yaml with ``servers: [{url: /}]``: openapi-core matches the request's whole
    URL against the servers, and the example names http://127.0.0.1:8000 while the benchmarks
    serve it at https://api.bank.example (in-process) or on a 127.0.0.1 port."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(SPEC.read_text(), Loader=loader)  # noqa: S506 - a safe loader
    spec["servers"] = [{"url": "/"}]
    return spec


class Redactor:
    """The hand-written minimisation pass: walk the document along the response schema (``$ref``
    followed each time), drop every property the schema does not declare (unless
    ``additionalProperties`` allows it), mask card numbers in every string; then re-serialise."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec
        self.schemas: dict[tuple[str, int], Any] = {}
        for item in spec["paths"].values():
            for operation in item.values():
                if not isinstance(operation, dict) or "operationId" not in operation:
                    continue
                for status, response in operation.get("responses", {}).items():
                    response = self._resolve(response)
                    media = response.get("content", {}).get("application/json")
                    if media is not None and str(status).isdigit():
                        self.schemas[operation["operationId"], int(status)] = media["schema"]

    def _resolve(self, schema: Any) -> Any:
        while isinstance(schema, dict) and "$ref" in schema:
            node: Any = self.spec
            for part in schema["$ref"][2:].split("/"):
                node = node[part]
            schema = node
        return schema

    def redact(self, value: Any, schema: Any) -> Any:
        schema = self._resolve(schema)
        if isinstance(value, dict):
            props = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key in list(value):
                sub = props.get(key)
                if sub is None:
                    if not extra:
                        del value[key]
                        continue
                    sub = extra if isinstance(extra, dict) else {}
                value[key] = self.redact(value[key], sub)
            return value
        if isinstance(value, list):
            items = schema.get("items", {})
            return [self.redact(v, items) for v in value]
        if isinstance(value, str):
            return mask_pans(value)
        return value

    def body(self, operation: str, status: int, body: bytes) -> bytes:
        document = json.loads(body)
        self.redact(document, self.schemas[operation, status])
        return json.dumps(document, separators=(",", ":")).encode()


def _echo(headers: Mapping[str, str]) -> dict[str, str]:
    """The response's ``x-fapi-interaction-id`` (the contract requires it): the client's, or a new one."""
    return {"x-fapi-interaction-id": headers.get("x-fapi-interaction-id") or str(uuid.uuid4())}


def _problem(status: int, error: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"error": error}).encode()
    return status, [("content-type", "application/json"), ("content-length", str(len(body)))], body


# -- ASGI peers --------------------------------------------------------------------------------


class _PeerAuthASGI:
    """:class:`PeerAuth` as a pure ASGI middleware; the identity goes to ``scope["state"]["tpp"]``."""

    def __init__(self, app: Any, auth: PeerAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        try:
            tpp = self.auth.verify(scope["method"], scope["path"], headers, client[0] if client else None)
        except PeerDenied as exc:
            await _send(send, *_problem(exc.status, exc.error))
            return
        scope.setdefault("state", {})["tpp"] = tpp
        await self.app(scope, receive, send)


async def _send(send: Any, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


class _CoreResponse:
    """openapi-core's response protocol over the bytes the app sent."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], data: bytes) -> None:
        from werkzeug.datastructures import Headers as WerkzeugHeaders

        self.status_code = status
        self.data = data
        self.headers = WerkzeugHeaders([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])
        self.content_type = self.headers.get("content-type", "")


class _CoreValidateASGI:
    """openapi-core ``validate_request`` before the app and ``validate_response`` after it, with
    openapi-core's own Starlette request adapter; invalid: 400 / 500."""

    def __init__(self, app: Any, openapi: Any) -> None:
        self.app = app
        self.openapi = openapi

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from openapi_core.contrib.starlette.requests import StarletteOpenAPIRequest
        from starlette.requests import Request

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        core_request = StarletteOpenAPIRequest(Request(scope), body)
        try:
            self.openapi.validate_request(core_request)
        except Exception as exc:  # openapi-core's validation errors
            await _send(send, *_problem(400, f"request invalid: {type(exc).__name__}"))
            return
        sent = False
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def hold(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                held["start"] = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, replay, hold)
        start, data = held["start"], b"".join(chunks)
        try:
            self.openapi.validate_response(
                core_request, _CoreResponse(start["status"], start.get("headers", []), data)
            )
        except Exception as exc:
            await _send(send, *_problem(500, f"response invalid: {type(exc).__name__}"))
            return
        await send(start)
        await send({"type": "http.response.body", "body": data})


def _openapi_core(spec: dict[str, Any]) -> Any:
    import warnings

    from openapi_core import OpenAPI

    warnings.filterwarnings("ignore", module="openapi_core")  # "Unsupported scheme type" (oauth2)
    return OpenAPI.from_dict(spec)


def _peer_starlette(auth: PeerAuth, redactor: Redactor, storage_uri: str, middleware: list[Any]) -> Any:
    """The peer's Starlette app: ``middleware`` (outermost first) around slowapi-limited endpoints
    that pass the handler's bytes through the redaction pass."""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    limiter = Limiter(
        key_func=lambda request: request.state.tpp, storage_uri=storage_uri, strategy=LIMIT_STRATEGY
    )

    @limiter.limit(LIMIT)
    async def transactions(request: Request) -> Response:
        body = redactor.body("GetTransactions", 200, _compact(TRANSACTIONS_DOCUMENT))
        return Response(body, media_type="application/json", headers=_echo(request.headers))

    @limiter.limit(LIMIT)
    async def payment(request: Request) -> Response:
        await request.body()
        body = redactor.body("CreateDomesticPayment", 201, PAYMENT_RESPONSE_BODY)
        return Response(body, status_code=201, media_type="application/json", headers=_echo(request.headers))

    app = Starlette(
        routes=[
            Route("/accounts/{AccountId}/transactions", transactions, methods=["GET"]),
            Route(PAYMENTS_PATH, payment, methods=["POST"]),
        ],
        middleware=[Middleware(_PeerAuthASGI, auth=auth), *middleware],
    )
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app


def _connexion(app: Any, spec: dict[str, Any]) -> Any:
    """Connexion 3's middleware stack around ``app``: routing, request validation and response
    validation (``validate_responses=True``); its security middleware is left out (the peer
    checks tokens itself) and so is the Swagger UI."""
    from connexion import ConnexionMiddleware
    from connexion.middleware.security import SecurityMiddleware
    from connexion.options import SwaggerUIOptions
    from connexion.resolver import Resolver

    def unused(*args: Any, **kwargs: Any) -> None:  # the wrapped app routes the requests itself
        raise AssertionError("not called")

    middlewares = [m for m in ConnexionMiddleware.default_middlewares if m is not SecurityMiddleware]
    wrapped = ConnexionMiddleware(
        app, middlewares=middlewares, swagger_ui_options=SwaggerUIOptions(swagger_ui=False)
    )
    wrapped.add_api(
        copy.deepcopy(spec), resolver=Resolver(function_resolver=lambda _op: unused), validate_responses=True
    )
    return wrapped


def peer_asgi(kind: str, material: Material, *, storage_uri: str = "memory://") -> Any:
    """The peer stack doing ``full-dpop``'s work as an ASGI app (Starlette):

    * every kind: :class:`PeerAuth` (PyJWT for the token and the DPoP proof, the rest by hand) as
      a pure ASGI middleware, slowapi (``@limiter.limit`` on each endpoint, keyed by the TPP,
      ``limits`` sliding-window counter), and the hand-written :class:`Redactor` over the
      handler's bytes (parse, drop undeclared properties, mask card numbers, serialise);
    * ``openapi-core``: openapi-core ``validate_request`` / ``validate_response`` around the app
      (a pure ASGI middleware with openapi-core's Starlette request adapter): the same work as
      bankguard's checks, and openapi-core's cheapest way to do it;
    * ``openapi-core-integration``: openapi-core's own ``StarletteOpenAPIMiddleware``, which
      unmarshals request and response (typed values) rather than only validating them;
    * ``connexion``: Connexion 3's middleware stack around the app (``ConnexionMiddleware``,
      request validation and ``validate_responses=True``; its security middleware left out).
    """
    auth, spec = PeerAuth(material), load_spec()
    redactor = Redactor(spec)
    if kind == "openapi-core":
        from starlette.middleware import Middleware

        core = [Middleware(_CoreValidateASGI, openapi=_openapi_core(spec))]
        return _peer_starlette(auth, redactor, storage_uri, core)
    if kind == "openapi-core-integration":
        from openapi_core.contrib.starlette.middlewares import StarletteOpenAPIMiddleware
        from starlette.middleware import Middleware

        core = [Middleware(StarletteOpenAPIMiddleware, openapi=_openapi_core(spec))]
        return _peer_starlette(auth, redactor, storage_uri, core)
    if kind == "connexion":
        return _connexion(_peer_starlette(auth, redactor, storage_uri, []), spec)
    raise ValueError(f"unknown peer kind {kind!r} (one of {PEER_KINDS})")


# -- WSGI peers --------------------------------------------------------------------------------


def _peer_flask(auth: PeerAuth, redactor: Redactor, storage_uri: str, core: str | None, spec: Any) -> Any:
    """The peer's Flask app: :class:`PeerAuth` in a ``before_request`` hook, Flask-Limiter
    (``@limiter.limit`` on each view, keyed by the TPP), the :class:`Redactor` in the views, and
    with ``core`` openapi-core: ``"validate"`` (``validate_request`` in a ``before_request`` hook,
    ``validate_response`` in an ``after_request`` hook, with openapi-core's Flask adapters) or
    ``"integration"`` (its ``FlaskOpenAPIViewDecorator`` on each view, which unmarshals)."""
    from flask import Flask, Response, g, request
    from flask_limiter import Limiter

    app = Flask(f"peer_{next(_FLASK_NAMES)}")

    @app.before_request
    def authenticate() -> Any:
        try:
            g.tpp = auth.verify(request.method, request.path, request.headers, request.remote_addr)
        except PeerDenied as exc:
            status, headers, body = _problem(exc.status, exc.error)
            return Response(body, status=status, headers=headers)
        return None

    # Registered after the authentication hook, so its own before_request hook finds g.tpp.
    limiter = Limiter(lambda: g.tpp, app=app, storage_uri=storage_uri, strategy=LIMIT_STRATEGY)
    decorate: Callable[[Any], Any] = lambda view: view  # noqa: E731
    if core == "validate":
        from openapi_core.contrib.flask.requests import FlaskOpenAPIRequest
        from openapi_core.contrib.flask.responses import FlaskOpenAPIResponse

        openapi = _openapi_core(spec)

        @app.before_request
        def validate_request() -> Any:
            try:
                openapi.validate_request(FlaskOpenAPIRequest(request))
            except Exception as exc:
                status, headers, body = _problem(400, f"request invalid: {type(exc).__name__}")
                return Response(body, status=status, headers=headers)
            return None

        @app.after_request
        def validate_response(response: Response) -> Response:
            try:
                openapi.validate_response(FlaskOpenAPIRequest(request), FlaskOpenAPIResponse(response))
            except Exception as exc:
                status, headers, body = _problem(500, f"response invalid: {type(exc).__name__}")
                return Response(body, status=status, headers=headers)
            return response

    elif core == "integration":
        from openapi_core.contrib.flask.decorators import FlaskOpenAPIViewDecorator

        decorate = FlaskOpenAPIViewDecorator(_openapi_core(spec))

    @limiter.limit(LIMIT)
    @decorate
    def transactions(AccountId: str) -> Response:
        body = redactor.body("GetTransactions", 200, _compact(TRANSACTIONS_DOCUMENT))
        return Response(body, mimetype="application/json", headers=_echo(request.headers))

    @limiter.limit(LIMIT)
    @decorate
    def payment() -> Response:
        request.get_data()
        body = redactor.body("CreateDomesticPayment", 201, PAYMENT_RESPONSE_BODY)
        return Response(body, status=201, mimetype="application/json", headers=_echo(request.headers))

    app.add_url_rule("/accounts/<AccountId>/transactions", view_func=transactions, methods=["GET"])
    app.add_url_rule(PAYMENTS_PATH, view_func=payment, methods=["POST"])
    return app


def peer_wsgi(kind: str, material: Material, *, storage_uri: str = "memory://") -> Any:
    """The peer stack as a WSGI app (Flask; see :func:`_peer_flask` and :func:`peer_asgi`).

    ``connexion``: Connexion 3's validation exists only as ASGI middleware (its ``FlaskApp`` is
    ``ConnexionMiddleware`` around the Flask app, served by an ASGI server). Here the Flask peer
    sits behind the same middleware stack as in :func:`peer_asgi`, through :class:`WsgiInAsgi`
    (the WSGI app called inline in the event loop, no thread hop: cheaper than the ``a2wsgi``
    adapter ``FlaskApp`` uses), and the whole is offered as a WSGI app by :class:`AsgiInWsgi`
    (one event loop per thread). Both adapters together cost about 35 µs per request
    (``fullstack.py`` measures them around the bare Flask app: its ``adapters`` row), under 0.5% of
    what this peer costs."""
    auth, spec = PeerAuth(material), load_spec()
    redactor = Redactor(spec)
    if kind == "openapi-core":
        return _peer_flask(auth, redactor, storage_uri, "validate", spec)
    if kind == "openapi-core-integration":
        return _peer_flask(auth, redactor, storage_uri, "integration", spec)
    if kind == "connexion":
        flask = _peer_flask(auth, redactor, storage_uri, None, spec)
        return AsgiInWsgi(_connexion(WsgiInAsgi(flask.wsgi_app), spec))
    raise ValueError(f"unknown peer kind {kind!r} (one of {PEER_KINDS})")


class WsgiInAsgi:
    """A WSGI app as an ASGI app, called inline (the body read first, the answer sent whole)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = await _read_body(receive)
        server = scope.get("server") or ("127.0.0.1", 80)
        client = scope.get("client") or ("127.0.0.1", 0)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": scope.get("root_path", ""),
            "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
            "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
            "SERVER_NAME": server[0],
            "SERVER_PORT": str(server[1]),
            "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "REMOTE_ADDR": client[0],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            if name in ("content-type", "content-length"):
                environ[name.upper().replace("-", "_")] = value
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        answer: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer[:] = [int(status[:3]), headers]
            return lambda data: None

        result = self.app(environ, start_response)
        try:
            data = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        await _send(send, answer[0], answer[1], data)


class AsgiInWsgi:
    """An ASGI app as a WSGI app: each request runs to completion on the calling thread's own
    event loop (the body read first, the answer returned whole)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._local = threading.local()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        loop = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
        length = environ.get("CONTENT_LENGTH") or "0"
        body = environ["wsgi.input"].read(int(length)) if length.isdigit() else environ["wsgi.input"].read()
        headers = [
            (key[5:].replace("_", "-").lower().encode("latin-1"), value.encode("latin-1"))
            for key, value in environ.items()
            if key.startswith("HTTP_")
        ]
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers.append(
                    (key.replace("_", "-").lower().encode("latin-1"), environ[key].encode("latin-1"))
                )
        path = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1",
            "method": environ["REQUEST_METHOD"],
            "scheme": environ.get("wsgi.url_scheme", "http"),
            "path": path,
            "raw_path": environ.get("PATH_INFO", "/").encode("latin-1"),
            "root_path": environ.get("SCRIPT_NAME", ""),
            "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
            "headers": headers,
            "client": (environ.get("REMOTE_ADDR", "127.0.0.1"), int(environ.get("REMOTE_PORT") or 0)),
            "server": (environ.get("SERVER_NAME", "localhost"), int(environ.get("SERVER_PORT") or 80)),
        }
        done = False
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal done
            if done:
                return {"type": "http.disconnect"}
            done = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        loop.run_until_complete(self.app(scope, receive, send))
        status = start["status"]
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])],
        )
        return [b"".join(chunks)]


# --------------------------------------------------------------------------------------------
# Factories for servers in another process


def _from_environment() -> tuple[str, Material | None, str]:
    variant = os.environ.get("BENCH_VARIANT", "bare")
    directory = os.environ.get("BENCH_DIR")
    storage = os.environ.get("BENCH_STORAGE", "memory://")
    if variant != "bare" and not directory:
        raise RuntimeError(f"BENCH_VARIANT={variant} needs BENCH_DIR (a directory Material.create wrote)")
    return variant, Material.load(Path(directory)) if directory else None, storage


def make_asgi() -> Any:
    """The ASGI app of ``$BENCH_VARIANT`` (a variant, or ``peer-<kind>``) with the material in
    ``$BENCH_DIR`` and the storage ``$BENCH_STORAGE`` (default ``memory://``; for bankguard's
    replay entries and counters and for slowapi's)."""
    variant, material, storage = _from_environment()
    if variant.startswith("peer-"):
        assert material is not None
        return peer_asgi(variant[5:], material, storage_uri=storage)
    return asgi_app(variant, material, storage_uri=storage)


def make_wsgi() -> Any:
    """The WSGI app of ``$BENCH_VARIANT``, as :func:`make_asgi` (``peer-connexion``: see
    :func:`peer_wsgi`)."""
    variant, material, storage = _from_environment()
    if variant.startswith("peer-"):
        assert material is not None
        return peer_wsgi(variant[5:], material, storage_uri=storage)
    return wsgi_app(variant, material, storage_uri=storage)
