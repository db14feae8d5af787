"""Certificate-bound tokens (RFC 8705) end to end: a real HTTPS client, nginx, the example apps.

nginx terminates mutual TLS and forwards the client certificate in ``X-SSL-Client-Cert``
(``$ssl_client_escaped_cert``) from 127.0.0.2, the only trusted proxy; the FastAPI example runs
under uvicorn and the Flask example under gunicorn (see conftest.py). Every test runs against
both. What is shown:

* a token bound to certificate A (``cnf.x5t#S256``) is accepted with A, refused with B or with
  no certificate (401 ``invalid_token``);
* the certificate headers are believed only from the trusted proxy: sent straight to the app
  from 127.0.0.1 they are ignored, also with forwarding headers naming the proxy's address,
  and a client cannot smuggle its own through nginx (overwritten, or dropped with ``_``);
* an unbound token is accepted under the ``generic`` profile, and refused once
  ``tokens.require_sender_constraint`` is set.

Refusals are checked in the app's audit event too (the JSON line for the request's
``x-fapi-interaction-id``), which says which control refused, why, and from which peer.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bankguard.testing import TestIssuer

from .conftest import HOST, PROXY_HOST, Deployment, Identity, new_interaction_id

pytestmark = pytest.mark.network


def get_accounts(
    client: httpx.Client, token: str, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, str]:
    interaction_id = new_interaction_id()
    sent = {"Authorization": f"Bearer {token}", "x-fapi-interaction-id": interaction_id, **(headers or {})}
    return client.get("/accounts", headers=sent), interaction_id


def bound_to(issuer: TestIssuer, cert: Identity) -> str:
    return issuer.mint({"cnf": {"x5t#S256": cert.thumbprint}})


def assert_accepted(response: httpx.Response, interaction_id: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["x-fapi-interaction-id"] == interaction_id
    assert response.json()["Data"]["Account"]


def assert_invalid_token(
    deployment: Deployment, response: httpx.Response, interaction_id: str, reason: str, peer: str
) -> dict[str, Any]:
    """401 ``invalid_token`` for ``reason``, as the client sees it and as the audit event says."""
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer "), challenge
    assert 'error="invalid_token"' in challenge, challenge
    assert response.headers["content-type"].startswith("application/problem+json")
    event = deployment.audit_event(interaction_id)
    assert event["outcome"] == "deny", event
    assert event["status"] == 401, event
    assert event["control"] == "tokens", event
    assert event["reason"] == reason, event
    assert event["peer"] == peer, event
    return event


# -- through nginx, with real client certificates ----------------------------------------------


def test_bound_token_with_its_certificate_is_accepted(deployment: Deployment, issuer: TestIssuer) -> None:
    token = bound_to(issuer, deployment.pki.client_a)
    with deployment.https(deployment.pki.client_a) as client:
        response, interaction_id = get_accounts(client, token)
        assert_accepted(response, interaction_id)
        # Again on the same connection (the verified token and parsed certificate are cached).
        response, interaction_id = get_accounts(client, token)
        assert_accepted(response, interaction_id)


def test_bound_token_with_another_certificate_is_refused(deployment: Deployment, issuer: TestIssuer) -> None:
    token = bound_to(issuer, deployment.pki.client_a)
    with deployment.https(deployment.pki.client_b) as client:
        response, interaction_id = get_accounts(client, token)
    assert_invalid_token(deployment, response, interaction_id, "token.certificate_mismatch", PROXY_HOST)


def test_bound_token_without_a_certificate_is_refused(deployment: Deployment, issuer: TestIssuer) -> None:
    token = bound_to(issuer, deployment.pki.client_a)
    with deployment.https(None) as client:
        response, interaction_id = get_accounts(client, token)
    assert_invalid_token(deployment, response, interaction_id, "token.certificate_missing", PROXY_HOST)


@pytest.mark.parametrize(
    ("tls_cert", "expected"),
    [
        pytest.param("client_b", "token.certificate_mismatch", id="with-certificate-B"),
        pytest.param(None, "token.certificate_missing", id="without-certificate"),
    ],
)
@pytest.mark.parametrize("header", ["X-SSL-Client-Cert", "X_SSL_Client_Cert"], ids=["dash", "underscore"])
def test_client_cannot_send_its_own_certificate_header_through_nginx(
    deployment: Deployment, issuer: TestIssuer, tls_cert: str | None, expected: str, header: str
) -> None:
    """nginx overwrites the header with the certificate of the TLS connection (or removes it
    when there is none); the ``_`` spelling, which a WSGI server would file under the same
    ``HTTP_X_SSL_CLIENT_CERT`` key, is dropped by nginx (and by gunicorn)."""
    pki = deployment.pki
    token = bound_to(issuer, pki.client_a)
    spoofed = {header: pki.client_a.escaped_pem, header.replace("Cert", "Verify"): "SUCCESS"}
    cert = getattr(pki, tls_cert) if tls_cert else None
    with deployment.https(cert) as client:
        response, interaction_id = get_accounts(client, token, spoofed)
    assert_invalid_token(deployment, response, interaction_id, expected, PROXY_HOST)


def test_unbound_token_is_accepted_under_the_generic_profile(
    deployment: Deployment, issuer: TestIssuer
) -> None:
    token = issuer.mint()  # no cnf
    for cert in (deployment.pki.client_a, None):
        with deployment.https(cert) as client:
            response, interaction_id = get_accounts(client, token)
        assert_accepted(response, interaction_id)


# -- straight to the app, bypassing nginx ----------------------------------------------------------


@pytest.mark.parametrize(
    "forwarding",
    [
        pytest.param({}, id="certificate-headers"),
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless started with --no-proxy-headers.
        pytest.param({"X-Forwarded-For": PROXY_HOST}, id="x-forwarded-for-proxy"),
        pytest.param({"Forwarded": f"for={PROXY_HOST}"}, id="forwarded-proxy"),
        pytest.param({"X-Real-IP": PROXY_HOST}, id="x-real-ip-proxy"),
    ],
)
def test_certificate_header_sent_directly_to_the_app_is_not_trusted(
    deployment: Deployment, issuer: TestIssuer, forwarding: dict[str, str]
) -> None:
    pki = deployment.pki
    token = bound_to(issuer, pki.client_a)
    spoofed = {"X-SSL-Client-Cert": pki.client_a.escaped_pem, "X-SSL-Client-Verify": "SUCCESS", **forwarding}
    with deployment.direct() as client:
        response, interaction_id = get_accounts(client, token, spoofed)
    event = assert_invalid_token(deployment, response, interaction_id, "token.certificate_missing", HOST)
    assert "client_cert.untrusted_header_ignored" in event["notes"], event


# -- sender-constrained tokens required ------------------------------------------------------------


def test_unbound_token_is_refused_when_sender_constraint_is_required(
    strict_deployment: Deployment, issuer: TestIssuer
) -> None:
    pki = strict_deployment.pki
    with strict_deployment.https(pki.client_a) as client:
        response, interaction_id = get_accounts(client, issuer.mint())
        assert_invalid_token(
            strict_deployment, response, interaction_id, "token.not_sender_constrained", PROXY_HOST
        )
        response, interaction_id = get_accounts(client, bound_to(issuer, pki.client_a))
        assert_accepted(response, interaction_id)
