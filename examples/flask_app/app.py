"""The same Open Banking style API as ``examples/fastapi_app``, in Flask, protected by bankguard.

Serve it from the repository root with the development server or with gunicorn, with the demo
authorization server running (it publishes the keys that sign the access tokens; without it
every token is refused with 401), at http://127.0.0.1:8000, the origin ``policy.yaml`` names
for DPoP proofs::

    python examples/auth_server.py &
    flask --app examples/flask_app/app.py run --port 8000
    gunicorn examples.flask_app.app:app

:func:`bankguard.protect` wraps ``app.wsgi_app`` in place, so ``app`` stays the Flask object
and every request passes bankguard first. A request that breaks ``policy.yaml`` (next to this
file) or the API's OpenAPI contract it names (``examples/openapi.yaml``) is answered with
``application/problem+json`` before any view runs. On the way out, bankguard removes from the
JSON responses what the contract does not declare and masks card numbers (the views here
return the bank's records whole, internal fields and all). Every operation but ``GET /health``
needs an access token with the scope the contract's ``security`` names for the operation; for
two operations the scope is also declared here, with ``@require_scopes("accounts")`` below the
route decorator; bankguard enforces both before the view runs. The policy's ``fapi2`` profile
accepts only DPoP-bound tokens: ``Authorization: DPoP <token>`` with a fresh proof in the
``DPoP`` header, checked by bankguard before any view runs. Views read what bankguard
established (the operation, the interaction id, the verified principal, including
``principal.binding``) through :mod:`bankguard.integrations.flask`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask, request
from pydantic import ValidationError

from bankguard import Policy, protect, require_scopes
from bankguard.integrations.flask import current_context, current_principal, interaction_id
from examples import bank_data as bank

log = logging.getLogger(__name__)

#: BANKGUARD_POLICY names another policy file (the end-to-end tests use it); default: policy.yaml here.
POLICY = Path(os.environ.get("BANKGUARD_POLICY") or Path(__file__).with_name("policy.yaml"))

# No static folder: the contract (examples/openapi.yaml) declares the banking operations only.
app = Flask(__name__, static_folder=None)
app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the OB field order
app = protect(app, Policy.from_yaml(POLICY))


def served() -> None:
    """Log with bankguard's ids and the caller, so application logs join up with its audit events."""
    ctx = current_context()
    who = ctx.principal
    operation = ctx.operation.id if ctx.operation else None
    log.info(
        "%s served to %s",
        operation,
        who.client_id or "an anonymous caller",
        extra={
            "operation": operation,
            "interaction_id": ctx.interaction_id,
            "client_id": who.client_id,
            "subject": who.subject,
            "binding": who.binding,  # "dpop": the token is bound to the key that signed the proof
        },
    )


def last_arg(name: str) -> str | None:
    """A query parameter; of a repeated one the last value, as FastAPI takes it."""
    values = request.args.getlist(name)
    return values[-1] if values else None


@app.get("/health")
def get_health() -> dict[str, Any]:
    served()  # public: anonymous, whatever the request carries
    return bank.health_document()


# Scope ``accounts`` declared in the contract.


@app.get("/accounts")
def get_accounts() -> dict[str, Any]:
    served()
    return bank.accounts_document()


@app.get("/accounts/<AccountId>")
def get_account(AccountId: str) -> dict[str, Any]:  # the OB path parameter name
    found = bank.get_account(AccountId)
    served()
    return bank.account_document(found)


# Scope ``accounts`` declared in the contract and here, below the route decorator.


@app.get("/accounts/<AccountId>/balances")
@require_scopes("accounts")
def get_balances(AccountId: str) -> dict[str, Any]:
    found = bank.get_account(AccountId)
    served()
    return bank.balances_document(found)


@app.get("/accounts/<AccountId>/transactions")
@require_scopes("accounts")
def get_transactions(AccountId: str) -> dict[str, Any]:
    found = bank.get_account(AccountId)
    booked_from = bank.booking_time("fromBookingDateTime", last_arg("fromBookingDateTime"))
    booked_to = bank.booking_time("toBookingDateTime", last_arg("toBookingDateTime"))
    served()
    return bank.transactions_document(found, booked_from, booked_to)


# Scope ``payments`` declared in the contract.


@app.post("/domestic-payments")
def create_domestic_payment() -> tuple[dict[str, Any], int]:
    bank.require_json(request.content_type)
    try:
        document = json.loads(request.get_data())
    except ValueError:  # not JSON, or not UTF-8
        return bank.invalid_body([bank.NOT_JSON_ERROR], interaction_id()), 400
    payment = bank.DomesticPaymentRequest.model_validate(document)
    served()
    return bank.create_payment(payment, interaction_id(), current_principal().client_id), 201


# Errors the application itself answers, in the OB error format. Their ``Id`` is the
# interaction id bankguard echoes in the x-fapi-interaction-id response header.


@app.errorhandler(bank.UnknownAccount)
def unknown_account(exc: bank.UnknownAccount) -> tuple[dict[str, Any], int]:
    return bank.account_not_found(interaction_id()), 404


@app.errorhandler(bank.InvalidQuery)
def invalid_query(exc: bank.InvalidQuery) -> tuple[dict[str, Any], int]:
    return bank.invalid_query(exc.name, interaction_id()), 400


@app.errorhandler(bank.NotJson)
def not_json(exc: bank.NotJson) -> tuple[dict[str, Any], int]:
    return bank.unsupported_media_type(interaction_id()), 415


@app.errorhandler(ValidationError)
def invalid_request(exc: ValidationError) -> tuple[dict[str, Any], int]:
    return bank.invalid_body(exc.errors(), interaction_id()), 400
