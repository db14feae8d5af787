"""An Open Banking style API in FastAPI, protected by bankguard.

Serve it from the repository root::

    uvicorn examples.fastapi_app.app:app

bankguard runs in front of every route. A request that breaks ``policy.yaml`` (next to this
file) is answered with ``application/problem+json`` before any code here runs, and every
decision, allow or deny, is written as one JSON line to the ``bankguard.audit`` logger.
Handlers read what bankguard established (the operation and the ``x-fapi-interaction-id``)
through the dependencies in :mod:`bankguard.integrations.fastapi`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bankguard import Policy, SecurityContext, get_context, protect
from bankguard.integrations.fastapi import security_context
from examples import bank_data as bank

log = logging.getLogger(__name__)

POLICY = Path(__file__).with_name("policy.yaml")

# No /docs, /redoc or /openapi.json: the policy declares the banking operations only, and
# bankguard would answer 404 for anything else anyway.
app = FastAPI(title="Example bank", docs_url=None, redoc_url=None, openapi_url=None)
app = protect(app, Policy.from_yaml(POLICY))

#: What bankguard established about this request: operation, interaction id, principal.
Context = Annotated[SecurityContext, Depends(security_context)]


def account(AccountId: str) -> dict[str, Any]:
    """Dependency: the account named in the ``{AccountId}`` path parameter (the OB name).

    An unknown id raises :class:`~examples.bank_data.UnknownAccount`, answered 404 below."""
    return bank.get_account(AccountId)


Account = Annotated[dict[str, Any], Depends(account)]


def served(ctx: SecurityContext) -> None:
    """Log with bankguard's ids, so application logs join up with its audit events."""
    operation = ctx.operation.id if ctx.operation else None
    log.info("%s served", operation, extra={"operation": operation, "interaction_id": ctx.interaction_id})


@app.get("/accounts")
async def get_accounts(ctx: Context) -> dict[str, Any]:
    served(ctx)
    return bank.accounts_document()


@app.get("/accounts/{AccountId}")
async def get_account(found: Account, ctx: Context) -> dict[str, Any]:
    served(ctx)
    return bank.account_document(found)


@app.get("/accounts/{AccountId}/balances")
async def get_balances(found: Account, ctx: Context) -> dict[str, Any]:
    served(ctx)
    return bank.balances_document(found)


@app.get("/accounts/{AccountId}/transactions")
async def get_transactions(found: Account, ctx: Context) -> dict[str, Any]:
    served(ctx)
    return bank.transactions_document(found)


def json_body(request: Request) -> None:
    """Dependency: refuse bodies not sent as JSON (FastAPI would otherwise try to validate them)."""
    bank.require_json(request.headers.get("content-type"))


@app.post("/domestic-payments", status_code=201, dependencies=[Depends(json_body)])
async def create_domestic_payment(payment: bank.DomesticPaymentRequest, ctx: Context) -> dict[str, Any]:
    served(ctx)
    return bank.create_payment(payment, ctx.interaction_id)


# Errors the application itself answers, in the OB error format. Their ``Id`` is the
# interaction id bankguard echoes in the x-fapi-interaction-id response header.


@app.exception_handler(bank.UnknownAccount)
async def unknown_account(request: Request, exc: bank.UnknownAccount) -> JSONResponse:
    body = bank.account_not_found(get_context(request.scope).interaction_id)
    return JSONResponse(body, status_code=404)


@app.exception_handler(bank.NotJson)
async def not_json(request: Request, exc: bank.NotJson) -> JSONResponse:
    body = bank.unsupported_media_type(get_context(request.scope).interaction_id)
    return JSONResponse(body, status_code=415)


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    body = bank.invalid_body(exc.errors(), get_context(request.scope).interaction_id)
    return JSONResponse(body, status_code=400)
