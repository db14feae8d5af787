"""BankGuardMiddleware on the response path of the OpenAPI contract: a JSON body sent in several
``http.response.body`` messages is held until the last one, then minimised as one document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bankguard import BankGuardMiddleware, EventCollector, Guard, Policy

from .conftest import asgi_request

SPEC = """
openapi: 3.0.3
info: {title: edges, version: "1"}
security: []
paths:
  /accounts/{AccountId}:
    get:
      parameters:
        - {name: AccountId, in: path, required: true, schema: {type: string}}
      responses:
        "200":
          description: the account
          content:
            application/json:
              schema:
                type: object
                additionalProperties: false
                properties: {AccountId: {type: string}, Currency: {type: string}}
"""


def test_json_body_in_several_messages_is_minimised_as_one_document(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    events = EventCollector()
    guard = Guard(Policy.from_dict({"openapi": {"spec": str(spec)}}), sink=events)
    parts = [b'{"AccountId":"a1",', b'"Currency":"GBP",', b'"InternalRiskScore":7}']

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})

    response = asgi_request(BankGuardMiddleware(app, guard=guard), "GET", "/accounts/a1")
    assert response.status == 200
    assert response.json() == {"AccountId": "a1", "Currency": "GBP"}
    assert response.get("content-length") == str(len(response.raw_body))
    assert events.events[-1].reason == "openapi.response_minimised"
