"""``Policy.summary()`` (what ``bankguard check-policy`` prints): client certificates, token
introspection, odd sizes, and storage URIs whose password must never be shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from bankguard import Policy

TOKENS = {
    "issuers": [
        {
            "issuer": "https://as.bank.example",
            "audiences": ["https://api.bank.example"],
            "algorithms": ["ES256"],
            "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43}]},
        }
    ]
}


def line(summary: str, prefix: str) -> str:
    found = [text for text in summary.splitlines() if text.strip().startswith(prefix)]
    assert len(found) == 1, summary
    return found[0]


def test_sizes_that_are_not_whole_kib_are_shown_in_bytes() -> None:
    summary = Policy.from_dict({"request": {"max_body_bytes": 1000, "max_header_bytes": "64KiB"}}).summary()
    request = line(summary, "request")
    assert "body <= 1000 B" in request
    assert "headers <= 64 KiB" in request


def test_client_certificate_source_header_and_chain(tmp_path: Path) -> None:
    anchors = tmp_path / "qwac-roots.pem"
    anchors.write_text("x")
    summary = Policy.from_dict(
        {
            "trusted_proxies": ["10.0.0.0/8"],
            "client_cert": {
                "source": "nginx",
                "trust_anchors": str(anchors),
                "identity": "eidas",
                "required": True,
            },
        }
    ).summary()
    assert line(summary, "client_cert") == (
        f"client_cert [enforce] source nginx (header x-ssl-client-cert); chain validated against {anchors}"
        "; identity eidas; required"
    )


def test_client_certificate_from_the_server_without_chain_validation() -> None:
    summary = Policy.from_dict({"client_cert": {"source": "asgi-tls", "mode": "report"}}).summary()
    assert line(summary, "client_cert") == "client_cert [report ] source asgi-tls; no chain validation"


def test_no_client_certificate_line_without_a_source() -> None:
    assert "client_cert" not in Policy.from_dict({}).summary()


def test_introspection_endpoint_and_client_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANKGUARD_SUMMARY_SECRET", "s" * 32)
    summary = Policy.from_dict(
        {
            "tokens": {
                "introspection": {
                    "endpoint": "https://as.bank.example/introspect",
                    "client_id": "rs",
                    "auth": "client_secret_post",
                    "client_secret_env": "BANKGUARD_SUMMARY_SECRET",
                }
            }
        }
    ).summary()
    assert "introspection https://as.bank.example/introspect (client_secret_post)" in summary
    assert "s" * 32 not in summary


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("redis://:hunter2@cache:6379/0", "redis://***@cache:6379/0"),
        ("rediss://bank:hunter2@cache:6380/1", "rediss://bank:***@cache:6380/1"),
        ("redis://bank:p@ss@cache:6379/0", "redis://bank:***@cache:6379/0"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_storage_password_is_never_shown(uri: str, shown: str) -> None:
    summary = Policy.from_dict({"tokens": TOKENS, "storage": {"uri": uri}}).summary()
    assert line(summary, "storage") == f"storage            {shown} (shared by every worker)"
    assert "hunter2" not in summary
    assert "p@ss" not in summary
