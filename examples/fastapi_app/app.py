"""An Open Banking style API in FastAPI, protected by bankguard.

Serve it from the repository root, with the demo authorization server running (it publishes the
keys that sign the access tokens; without it every token is refused with 401), at
http://127.0.0.1:8000 (uvicorn's default), the origin ``policy.yaml`` names for DPoP proofs::

    python examples/auth_server.py &
    uvicorn examples.fastapi_app.app:app

bankguard runs in front of every route. A request that breaks ``policy.yaml`` (next to this
file) or the API's OpenAPI contract it names (``examples/openapi.yaml``) is answered with
``application/problem+json`` before any code here runs, and every decision, allow or deny, is
written as one JSON line to the ``bankguard.audit`` logger. On the way out, bankguard removes
from the JSON responses what the contract does not declare and masks card numbers (the
handlers here return the bank's records whole, internal fields and all).
Every operation but ``GET /health`` needs an access token from the issuer the policy names,
with the scope the contract's ``security`` names for the operation; for two operations the
scope is also declared here, next to the handler, in the two ways FastAPI code can say it:

* ``Security(bearer, scopes=["accounts"])``, a FastAPI security dependency (balances);
* ``@require_scopes("accounts")`` below the route decorator (transactions).

bankguard enforces both before the handler runs, in the same decision as the rest of the
policy. The policy's ``fapi2`` profile accepts only DPoP-bound tokens: ``Authorization: DPoP
<token>`` with a fresh proof in the ``DPoP`` header, checked by bankguard before the app runs;
``bearer`` is only the name of the security dependency and yields the principal whichever
scheme the client used. Handlers read what bankguard established (the operation, the
``x-fapi-interaction-id`` and the verified principal, including ``principal.binding``) through
the dependencies in :mod:`bankguard.integrations.fastapi`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bankguard import Policy, Principal, SecurityContext, get_context, protect, require_scopes
from bankguard.integrations.fastapi import bearer, principal, security_context
from examples import bank_data as bank

log = logging.getLogger(__name__)

#: BANKGUARD_POLICY names another policy file (the end-to-end tests use it); default: policy.yaml here.
POLICY = Path(os.environ.get("BANKGUARD_POLICY") or Path(__file__).with_name("policy.yaml"))

# No /docs, /redoc or /openapi.json: examples/openapi.yaml is the API's contract, its operations
# are the banking operations only, and bankguard would answer 404 for anything else anyway.
app = FastAPI(title="Example bank", docs_url=None, redoc_url=None, openapi_url=None)
app = protect(app, Policy.from_yaml(POLICY))

#: What bankguard established about this request: operation, interaction id, principal.
Context = Annotated[SecurityContext, Depends(security_context)]
#: Who is calling: the verified access token's subject, client id and scopes.
Caller = Annotated[Principal, Depends(principal)]
#: The same, for a token that must grant ``accounts`` (declared here, as in the contract).
AccountsReader = Annotated[Principal, Security(bearer, scopes=["accounts"])]


def account(AccountId: str) -> dict[str, Any]:
    """Dependency: the account named in the ``{AccountId}`` path parameter (the OB name).

    An unknown id raises :class:`~examples.bank_data.UnknownAccount`, answered 404 below."""
    return bank.get_account(AccountId)


Account = Annotated[dict[str, Any], Depends(account)]


def served(ctx: SecurityContext, who: Principal) -> None:
    """Log with bankguard's ids and the caller, so application logs join up with its audit events."""
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


@app.get("/health")
async def get_health(ctx: Context, who: Caller) -> dict[str, Any]:
    served(ctx, who)  # public: anonymous, whatever the request carries
    return bank.health_document()


# Scope ``accounts`` declared in the contract.


@app.get("/accounts")
async def get_accounts(ctx: Context, who: Caller) -> dict[str, Any]:
    served(ctx, who)
    return bank.accounts_document()


@app.get("/accounts/{AccountId}")
async def get_account(found: Account, ctx: Context, who: Caller) -> dict[str, Any]:
    served(ctx, who)
    return bank.account_document(found)


# Scope ``accounts`` declared in the contract and here: with a security dependency...


@app.get("/accounts/{AccountId}/balances")
async def get_balances(found: Account, ctx: Context, who: AccountsReader) -> dict[str, Any]:
    served(ctx, who)
    return bank.balances_document(found)


# ...or with require_scopes, below the route decorator.


@app.get("/accounts/{AccountId}/transactions")
@require_scopes("accounts")
async def get_transactions(
    found: Account,
    ctx: Context,
    who: Caller,
    fromBookingDateTime: Annotated[str | None, Query()] = None,  # the OB query parameter names
    toBookingDateTime: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    booked_from = bank.booking_time("fromBookingDateTime", fromBookingDateTime)
    booked_to = bank.booking_time("toBookingDateTime", toBookingDateTime)
    served(ctx, who)
    return bank.transactions_document(found, booked_from, booked_to)


def json_body(request: Request) -> None:
    """Dependency: refuse bodies not sent as JSON (FastAPI would otherwise try to validate them)."""
    bank.require_json(request.headers.get("content-type"))


# Scope ``payments`` declared in the contract.


@app.post("/domestic-payments", status_code=201, dependencies=[Depends(json_body)])
async def create_domestic_payment(
    payment: bank.DomesticPaymentRequest, ctx: Context, who: Caller
) -> dict[str, Any]:
    served(ctx, who)
    return bank.create_payment(payment, ctx.interaction_id, who.client_id)


# Errors the application itself answers, in the OB error format. Their ``Id`` is the
# interaction id bankguard echoes in the x-fapi-interaction-id response header.


@app.exception_handler(bank.UnknownAccount)
async def unknown_account(request: Request, exc: bank.UnknownAccount) -> JSONResponse:
    body = bank.account_not_found(get_context(request.scope).interaction_id)
    return JSONResponse(body, status_code=404)


@app.exception_handler(bank.InvalidQuery)
async def invalid_query(request: Request, exc: bank.InvalidQuery) -> JSONResponse:
    body = bank.invalid_query(exc.name, get_context(request.scope).interaction_id)
    return JSONResponse(body, status_code=400)


@app.exception_handler(bank.NotJson)
async def not_json(request: Request, exc: bank.NotJson) -> JSONResponse:
    body = bank.unsupported_media_type(get_context(request.scope).interaction_id)
    return JSONResponse(body, status_code=415)


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    body = bank.invalid_body(exc.errors(), get_context(request.scope).interaction_id)
    return JSONResponse(body, status_code=400)
