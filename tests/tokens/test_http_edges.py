"""Outbound fetches (key sets, discovery, introspection, CRLs) refuse bad targets before any
connection: no host, a port out of range, a name that cannot be resolved, and cloud-metadata
addresses hidden in IPv4-mapped IPv6 form (JWKS-02, CFG-03). No request leaves 127.0.0.1."""

from __future__ import annotations

import pytest

from bankguard.tokens._http import FetchError, request


def reason(url: str) -> str:
    with pytest.raises(FetchError) as info:
        request("GET", url, timeout=1.0, max_bytes=1024, allow_http=True)
    return info.value.reason


def test_url_without_a_host() -> None:
    assert reason("https:///jwks") == "no_host"


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/jwks", "http://127.0.0.1:-1/jwks"])
def test_port_out_of_range(url: str) -> None:
    assert reason(url) == "bad_port"


def test_host_name_that_cannot_be_resolved() -> None:
    # An empty label fails IDNA encoding locally: no resolver is asked.
    assert reason("http://as..bank.example/jwks") == "dns_failed"


@pytest.mark.parametrize(
    "url",
    [
        "http://[::ffff:169.254.169.254]/latest/meta-data/",  # cloud metadata, IPv4-mapped
        "http://[::ffff:224.0.0.1]/jwks",  # multicast, IPv4-mapped
        "http://[fe80::1]/jwks",  # link-local
        "http://0.0.0.0/jwks",  # unspecified
    ],
)
def test_refused_addresses_are_never_contacted(url: str) -> None:
    assert reason(url) == "address_refused"


def test_plain_http_needs_allow_http() -> None:
    with pytest.raises(FetchError) as info:
        request("GET", "http://127.0.0.1:1/jwks", timeout=1.0, max_bytes=1024)
    assert info.value.reason == "scheme_refused"
