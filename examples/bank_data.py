"""In-memory bank shared by the FastAPI and the Flask example, so both answer with the same JSON.

Field names follow the UK Open Banking Read/Write API (v3.1 style): ``Data`` / ``Links`` /
``Meta`` envelopes, ``AccountId``, ``CreditDebitIndicator``, amounts as decimal strings and
``UK.OBIE.*`` error codes; ``examples/openapi.yaml`` is their contract. All names, sort codes,
account and card numbers are made up.

Like many a core banking system, this one keeps more in its records than an API may show: each
account carries the bank's internal risk rating, and card transactions the full card number.
The handlers return the records as they are; bankguard, enforcing the contract, removes what it
does not declare (``InternalRiskRating``) and masks card numbers to first six / last four
digits before a response leaves (PSD2 data minimisation, PCI DSS v4.0 req. 3.4.1).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CURRENCY = "GBP"
AS_OF = "2024-07-31T23:59:59+00:00"


def _account(
    account_id: str, sub_type: str, nickname: str, number: str, name: str, risk: str
) -> dict[str, Any]:
    return {
        "AccountId": account_id,
        "Status": "Enabled",
        "Currency": CURRENCY,
        "AccountType": "Personal",
        "AccountSubType": sub_type,
        "Nickname": nickname,
        "Account": [{"SchemeName": "UK.OBIE.SortCodeAccountNumber", "Identification": number, "Name": name}],
        # The bank's own assessment (anti-money-laundering / credit), never for third parties.
        # Not in the contract: bankguard strips it from every response.
        "InternalRiskRating": risk,
    }


ACCOUNTS: list[dict[str, Any]] = [
    _account("22289", "CurrentAccount", "Bills", "80200110203345", "Kevin Smith", "Medium"),
    _account("31820", "CurrentAccount", "Household", "80200110203348", "Kevin and Ann Smith", "Low"),
    _account("44910", "Savings", "Rainy day", "80200110203351", "Kevin Smith", "Low"),
]
_OPENING = {"22289": Decimal("312.18"), "31820": Decimal("412.75"), "44910": Decimal("1500.00")}
_CREDIT_LINE = {"22289": Decimal("500.00")}  # arranged overdraft, counted in the available balance
# The debit card of each current account, as the card system records it: the full card number
# (Luhn-valid, made up). bankguard masks it in responses (first six / last four digits).
_CARDS = {
    "22289": {
        "CardSchemeName": "VISA",
        "AuthorisationType": "Contactless",
        "Name": "Kevin Smith",
        "Identification": "4659432109876541",
    },
    "31820": {
        "CardSchemeName": "MasterCard",
        "AuthorisationType": "PIN",
        "Name": "Ann Smith",
        "Identification": "5355220012345678",
    },
}

# ISO 20022 style BankTransactionCode (Code, SubCode) by kind of transaction.
_CODES = {
    "in": ("ReceivedCreditTransfers", "DomesticCreditTransfer"),
    "out": ("IssuedCreditTransfers", "DomesticCreditTransfer"),
    "debit": ("IssuedDirectDebits", "DirectDebitPayment"),
    "card": ("CustomerCardTransactions", "PointOfSale"),
    "interest": ("ReceivedCreditTransfers", "Interest"),
}
# Monthly pattern per account: (day, information, signed amounts for May, June, July, kind).
_MONTHLY: dict[str, list[tuple[int, str, tuple[str, str, str], str]]] = {
    "22289": [
        (1, "Salary ACME Widgets Ltd", ("2450.00",) * 3, "in"),
        (2, "Rent Harbour Lettings", ("-1150.00",) * 3, "debit"),
        (6, "Card Greengrocer Leeds", ("-62.40", "-71.15", "-58.90"), "card"),
        (9, "Card Station Coffee", ("-3.80", "-4.10", "-3.80"), "card"),
        (15, "Northern Energy", ("-84.00", "-84.00", "-79.50"), "debit"),
        (20, "To Rainy day 44910", ("-200.00",) * 3, "out"),
        (24, "To Household 31820", ("-600.00",) * 3, "out"),
    ],
    "31820": [
        (3, "Leeds City Council Tax", ("-165.00",) * 3, "debit"),
        (12, "Card Supermarket 0412", ("-118.25", "-96.70", "-131.05"), "card"),
        (18, "Fibre Broadband", ("-35.99",) * 3, "debit"),
        (24, "From Bills 22289", ("600.00",) * 3, "in"),
    ],
    "44910": [
        (20, "From Bills 22289", ("200.00",) * 3, "in"),
        (30, "Interest", ("4.12", "4.67", "5.21"), "interest"),
    ],
}


def _money(value: Decimal) -> tuple[dict[str, str], str]:
    """An OB amount (always positive) and its CreditDebitIndicator."""
    return {"Amount": f"{abs(value):.2f}", "Currency": CURRENCY}, "Debit" if value < 0 else "Credit"


def _build_transactions() -> tuple[dict[str, list[dict[str, Any]]], dict[str, Decimal]]:
    transactions: dict[str, list[dict[str, Any]]] = {}
    closing: dict[str, Decimal] = {}
    for account_id, pattern in _MONTHLY.items():
        balance = _OPENING[account_id]
        rows: list[dict[str, Any]] = []
        for i, month in enumerate((5, 6, 7)):
            for day, information, amounts, kind in pattern:
                code, sub_code = _CODES[kind]
                value = Decimal(amounts[i])
                balance += value
                amount, indicator = _money(value)
                running, running_indicator = _money(balance)
                booked = f"2024-{month:02d}-{day:02d}T09:30:00+00:00"
                row: dict[str, Any] = {
                    "AccountId": account_id,
                    "TransactionId": f"{account_id}-2024{month:02d}{day:02d}-{len(rows) + 1:03d}",
                    "CreditDebitIndicator": indicator,
                    "Status": "Booked",
                    "BookingDateTime": booked,
                    "ValueDateTime": booked,
                    "TransactionInformation": information,
                    "Amount": amount,
                    "BankTransactionCode": {"Code": code, "SubCode": sub_code},
                }
                if kind == "card":
                    row["CardInstrument"] = dict(_CARDS[account_id])
                row["Balance"] = {
                    "Amount": running,
                    "CreditDebitIndicator": running_indicator,
                    "Type": "InterimBooked",
                }
                rows.append(row)
        transactions[account_id] = rows
        closing[account_id] = balance
    return transactions, closing


TRANSACTIONS, _CLOSING = _build_transactions()


class UnknownAccount(LookupError):
    """No account has this AccountId; the apps answer 404 with :func:`account_not_found`."""


def get_account(account_id: str) -> dict[str, Any]:
    for account in ACCOUNTS:
        if account["AccountId"] == account_id:
            return account
    raise UnknownAccount(account_id)


def envelope(data: dict[str, Any], self_link: str, **meta: Any) -> dict[str, Any]:
    """The OB response envelope. ``Links.Self`` is the path the resource was read from."""
    return {"Data": data, "Links": {"Self": self_link}, "Meta": meta}


def accounts_document() -> dict[str, Any]:
    return envelope({"Account": ACCOUNTS}, "/accounts", TotalPages=1)


def account_document(account: dict[str, Any]) -> dict[str, Any]:
    return envelope({"Account": [account]}, f"/accounts/{account['AccountId']}", TotalPages=1)


def balances_document(account: dict[str, Any]) -> dict[str, Any]:
    account_id = account["AccountId"]
    booked = _CLOSING[account_id]
    credit_line = _CREDIT_LINE.get(account_id, Decimal(0))
    balances = []
    for kind, value in (("InterimBooked", booked), ("InterimAvailable", booked + credit_line)):
        amount, indicator = _money(value)
        entry = {"AccountId": account_id, "Amount": amount, "CreditDebitIndicator": indicator}
        entry |= {"Type": kind, "DateTime": AS_OF}
        if kind == "InterimAvailable" and credit_line:
            entry["CreditLine"] = [{"Included": True, "Type": "Pre-Agreed", "Amount": _money(credit_line)[0]}]
        balances.append(entry)
    return envelope({"Balance": balances}, f"/accounts/{account_id}/balances", TotalPages=1)


class InvalidQuery(ValueError):
    """A query parameter the app cannot use; the apps answer 400 with :func:`invalid_query`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


# RFC 3339 §5.6 date-time, with its offset (a local time would be ambiguous).
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z",
    re.ASCII,
)


def booking_time(name: str, value: str | None) -> datetime | None:
    """The ``fromBookingDateTime`` / ``toBookingDateTime`` query parameter: an RFC 3339 date-time.

    The contract says so too, and bankguard refuses other values first (400 request-invalid);
    the app checks again, so that it stays safe with the contract in ``report`` mode."""
    if value is None:
        return None
    m = _DATE_TIME.match(value)
    if m is None:
        raise InvalidQuery(name)
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    try:
        if m.group(8):
            zone = timezone.utc
        else:
            sign = -1 if m.group(9) == "-" else 1
            zone = timezone(sign * timedelta(hours=int(m.group(10)), minutes=int(m.group(11))))
        # A leap second (:60) counts as the last instant of its minute.
        return datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=zone)
    except (ValueError, OverflowError):  # no such day or time, an offset of 24 h or more
        raise InvalidQuery(name) from None


def transactions_document(
    account: dict[str, Any], booked_from: datetime | None = None, booked_to: datetime | None = None
) -> dict[str, Any]:
    """The account's transactions booked within ``[booked_from, booked_to]`` (both optional)."""
    every = TRANSACTIONS[account["AccountId"]]
    rows = [
        row
        for row in every
        if (booked_from is None or booked_from <= datetime.fromisoformat(row["BookingDateTime"]))
        and (booked_to is None or datetime.fromisoformat(row["BookingDateTime"]) <= booked_to)
    ]
    return envelope(
        {"Transaction": rows},
        f"/accounts/{account['AccountId']}/transactions",
        TotalPages=1,
        FirstAvailableDateTime=every[0]["BookingDateTime"],
        LastAvailableDateTime=every[-1]["BookingDateTime"],
    )


def health_document() -> dict[str, Any]:
    """``GET /health``, the one public operation: no token, no bank data."""
    return {"status": "ok"}


# -- payments --------------------------------------------------------------------------------


class _Strict(BaseModel):
    # Unknown fields are refused rather than ignored (OWASP API3, mass assignment).
    model_config = ConfigDict(extra="forbid")


#: An amount to pay: up to 13 digits before the point and 5 after, not zero, no leading zeros
#: (``OBPositiveAmount`` in examples/openapi.yaml; the same pattern).
POSITIVE_AMOUNT = (
    r"^(?:[1-9][0-9]{0,12}(?:\.[0-9]{1,5})?"
    r"|0\.(?:[1-9][0-9]{0,4}|0[1-9][0-9]{0,3}|00[1-9][0-9]{0,2}|000[1-9][0-9]?|0000[1-9]))$"
)


class OBAmount(_Strict):
    Amount: str = Field(pattern=POSITIVE_AMOUNT)
    Currency: str = Field(pattern=r"^[A-Z]{3}$")


class OBCashAccount(_Strict):
    SchemeName: Literal["UK.OBIE.SortCodeAccountNumber", "UK.OBIE.IBAN"]
    Identification: str = Field(min_length=1, max_length=256)
    Name: str = Field(min_length=1, max_length=350)


class OBRemittanceInformation(_Strict):
    Reference: str | None = Field(default=None, min_length=1, max_length=35)
    Unstructured: str | None = Field(default=None, min_length=1, max_length=140)


class OBInitiation(_Strict):
    InstructionIdentification: str = Field(min_length=1, max_length=35)
    EndToEndIdentification: str = Field(min_length=1, max_length=35)
    InstructedAmount: OBAmount
    DebtorAccount: OBCashAccount | None = None
    CreditorAccount: OBCashAccount
    RemittanceInformation: OBRemittanceInformation | None = None


class OBPaymentData(_Strict):
    ConsentId: str = Field(min_length=1, max_length=128)
    Initiation: OBInitiation


class DomesticPaymentRequest(_Strict):
    """``POST /domestic-payments`` request body (OBWriteDomestic2, trimmed)."""

    Data: OBPaymentData
    Risk: dict[str, Any] = Field(default_factory=dict)


_PAYMENTS: dict[str, dict[str, Any]] = {}
_PAYMENTS_LOCK = threading.Lock()


def create_payment(
    request: DomesticPaymentRequest, interaction_id: str, client_id: str | None
) -> dict[str, Any]:
    """Accept a payment; returns the 201 response document. The interaction id and the client id
    of the verified access token (the payment initiation service provider) are kept with the
    payment, so that support staff can find the request, and the provider, that created it."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    payment_id = str(uuid.uuid4())
    data = {
        "DomesticPaymentId": payment_id,
        "ConsentId": request.Data.ConsentId,
        "Status": "AcceptedSettlementInProcess",
        "CreationDateTime": now,
        "StatusUpdateDateTime": now,
        "Initiation": request.Data.Initiation.model_dump(exclude_none=True),
    }
    with _PAYMENTS_LOCK:
        _PAYMENTS[payment_id] = {"data": data, "interaction_id": interaction_id, "client_id": client_id}
    return envelope(data, f"/domestic-payments/{payment_id}")


# -- errors (OBErrorResponse1) ---------------------------------------------------------------


def error_document(code: str, message: str, errors: list[dict[str, str]], error_id: str) -> dict[str, Any]:
    """An OB error body; ``Id`` is the interaction id, so a complaint can be traced in the logs."""
    return {"Code": code, "Id": error_id, "Message": message, "Errors": errors}


def account_not_found(error_id: str) -> dict[str, Any]:
    # The id the client sent is not repeated back: error bodies never reflect request input.
    error = {"ErrorCode": "UK.OBIE.Resource.NotFound", "Message": "No account with this AccountId"}
    return error_document("404 NotFound", "Account not found", [error], error_id)


def invalid_query(name: str, error_id: str) -> dict[str, Any]:
    # The parameter is named, its value is not repeated back.
    error = {"ErrorCode": "UK.OBIE.Field.InvalidDate", "Message": "Not an RFC 3339 date-time", "Path": name}
    return error_document("400 BadRequest", "The query is invalid", [error], error_id)


class NotJson(ValueError):
    """The request body is not declared as JSON; the apps answer 415."""


def require_json(content_type: str | None) -> None:
    """Raise :class:`NotJson` unless the Content-Type is ``application/json`` or ``application/*+json``."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime != "application/json" and not (mime.startswith("application/") and mime.endswith("+json")):
        raise NotJson(mime)


def unsupported_media_type(error_id: str) -> dict[str, Any]:
    error = {"ErrorCode": "UK.OBIE.Header.Invalid", "Message": "Use application/json", "Path": "Content-Type"}
    return error_document("415 UnsupportedMediaType", "The request body must be JSON", [error], error_id)


_ERROR_CODES = {"missing": "UK.OBIE.Field.Missing", "extra_forbidden": "UK.OBIE.Field.Unexpected"}
#: The validation error of a body that is empty or not JSON at all.
NOT_JSON_ERROR = {"type": "json_invalid", "loc": ()}


def invalid_body(errors: Iterable[Mapping[str, Any]], error_id: str) -> dict[str, Any]:
    """Pydantic validation errors as an OB 400 body. The rejected values are not echoed."""
    details = []
    for err in errors:
        kind = str(err.get("type", ""))
        path = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        if kind == "json_invalid" or not path:  # about the body as a whole
            message = "The body must be a JSON object"
            details.append({"ErrorCode": "UK.OBIE.Field.Invalid", "Message": message})
            continue
        code = _ERROR_CODES.get(kind, "UK.OBIE.Field.Invalid")
        details.append({"ErrorCode": code, "Message": str(err.get("msg", "")), "Path": path})
    return error_document("400 BadRequest", "The request body is invalid", details, error_id)
