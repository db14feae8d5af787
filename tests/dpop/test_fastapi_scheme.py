"""FastAPI: the ``dpop`` security dependency documents the HTTP ``DPoP`` scheme (RFC 9449 §7.1)
in the generated OpenAPI and yields the principal of a DPoP-authenticated request; its scopes
are enforced by the guard like those of ``bearer``."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Security
from starlette.testclient import TestClient

from bankguard import Policy, Principal, protect
from bankguard.integrations.fastapi import bearer, dpop
from bankguard.testing import DPoPKey, EventCollector, TestIssuer

ORIGIN = "https://api.bank.example"
ISSUER = TestIssuer("https://as.bank.example", alg="ES256")


def _app(events: EventCollector) -> FastAPI:
    policy = Policy.from_dict(
        {
            "profile": "fapi2",
            "external_origins": [ORIGIN],
            "tokens": {
                "issuers": [
                    {
                        "issuer": ISSUER.issuer,
                        "audiences": [ORIGIN],
                        "algorithms": ["ES256"],
                        "jwks": ISSUER.jwks(),
                    }
                ]
            },
            "routes": {"operations": [{"method": "GET", "path": "/accounts"}]},
            "dpop": {"enabled": True},
            "audit": {"sink": events},
        }
    )
    app = FastAPI()

    @app.get("/accounts")
    def accounts(who: Annotated[Principal, Security(dpop, scopes=["accounts"])]) -> dict[str, object]:
        return {"client": who.client_id, "binding": who.binding}

    return protect(app, policy)


def test_dpop_dependency_documents_the_dpop_scheme() -> None:
    schema = _app(EventCollector()).openapi()
    assert schema["components"]["securitySchemes"]["bankguard-dpop"] == {"type": "http", "scheme": "DPoP"}
    assert schema["paths"]["/accounts"]["get"]["security"] == [{"bankguard-dpop": ["accounts"]}]
    assert bearer.model.scheme == "bearer"


def test_dpop_dependency_yields_the_principal_and_its_scopes_are_enforced() -> None:
    events = EventCollector()
    client = TestClient(_app(events), base_url=ORIGIN)
    key = DPoPKey("ES256")
    url = f"{ORIGIN}/accounts"

    token = ISSUER.mint(dpop_key=key, scope="accounts")
    ok = client.get(
        url, headers={"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", url, access_token=token)}
    )
    assert ok.status_code == 200
    assert ok.json() == {"client": "tpp-client-1", "binding": "dpop"}

    other = ISSUER.mint(dpop_key=key, scope="payments")
    refused = client.get(
        url, headers={"Authorization": f"DPoP {other}", "DPoP": key.proof("GET", url, access_token=other)}
    )
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"].startswith(
        'DPoP algs="ES256 PS256 EdDSA", error="insufficient_scope"'
    )
    assert [e.reason for e in events.events] == [None, "scope.insufficient"]
