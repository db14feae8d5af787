"""The ``client_cert`` policy section: every contradiction is refused at load time, with the YAML
path of the offending key (ARCHITECTURE property 2; CFG-04; MTLS-07; EIDAS-05/06)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bankguard import Policy
from bankguard.errors import ConfigurationError
from bankguard.policy_mtls import ClientCertPolicy

PROXIES = ["10.0.0.0/8"]


def problems_of(client_cert: dict[str, Any], **top: Any) -> dict[str, str]:
    with pytest.raises(ConfigurationError) as info:
        Policy.from_dict({"client_cert": client_cert, **top})
    return {p.path: p.message for p in info.value.problems}


@pytest.fixture
def pem(tmp_path: Path) -> str:
    path = tmp_path / "anchors.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return str(path)


def test_crl_files_must_be_a_list(pem: str) -> None:
    found = problems_of({"source": "asgi-tls", "trust_anchors": pem, "crl_files": pem})
    assert found == {"client_cert.crl_files": "expected a list of file names"}


def test_crl_file_entries_name_their_index(pem: str, tmp_path: Path) -> None:
    found = problems_of(
        {"source": "asgi-tls", "trust_anchors": pem, "crl_files": [pem, str(tmp_path / "gone.crl")]}
    )
    assert list(found) == ["client_cert.crl_files[1]"]
    assert found["client_cert.crl_files[1]"].startswith("no such file:")


def test_crl_urls_must_be_a_list(pem: str) -> None:
    found = problems_of({"source": "asgi-tls", "trust_anchors": pem, "crl_urls": "https://ca.example/crl"})
    assert found == {"client_cert.crl_urls": "expected a list of URLs"}


def test_crl_url_entries_are_checked_as_urls(pem: str) -> None:
    found = problems_of({"source": "asgi-tls", "trust_anchors": pem, "crl_urls": ["ftp://ca.example/crl"]})
    assert list(found) == ["client_cert.crl_urls[0]"]
    assert "absolute https://" in found["client_cert.crl_urls[0]"]


def test_header_name_only_for_header_sources() -> None:
    found = problems_of({"source": "asgi-tls", "header": "x-client-cert"})
    assert found == {"client_cert.header": "only header sources use a header name, not asgi-tls"}


def test_FWD_11_verify_header_only_for_nginx() -> None:
    found = problems_of({"source": "xfcc", "verify_header": "x-ssl-client-verify"}, trusted_proxies=PROXIES)
    assert found == {"client_cert.verify_header": "only the nginx source has a verify header"}


def test_crl_refresh_must_be_positive(pem: str) -> None:
    found = problems_of({"source": "asgi-tls", "trust_anchors": pem, "crl_refresh": 0})
    assert found == {"client_cert.crl_refresh": "must be more than 0 seconds"}


def test_plain_http_crl_url_needs_crl_insecure_http(pem: str) -> None:
    found = problems_of(
        {
            "source": "asgi-tls",
            "trust_anchors": pem,
            "crl_urls": ["https://ca.example/a.crl", "http://ca.example/b.crl"],
            "crl_insecure_http": False,
        }
    )
    assert found == {"client_cert.crl_urls[1]": "is http:// but crl_insecure_http is false"}


def test_plain_http_crl_url_is_accepted_by_default(pem: str) -> None:
    policy = Policy.from_dict(
        {"client_cert": {"source": "asgi-tls", "trust_anchors": pem, "crl_urls": ["http://ca.example/b.crl"]}}
    )
    assert policy.client_cert.crl_urls == ("http://ca.example/b.crl",)


def test_FWD_08_xfcc_elements_at_least_one() -> None:
    found = problems_of({"source": "xfcc", "xfcc_elements": 0}, trusted_proxies=PROXIES)
    assert found == {"client_cert.xfcc_elements": "must be at least 1"}


def test_MTLS_07_eidas_identity_needs_trust_anchors() -> None:
    found = problems_of({"source": "asgi-tls", "identity": "eidas"})
    assert found == {"client_cert.identity": "an eIDAS identity needs trust_anchors (a validated chain)"}


def test_MTLS_07_intermediates_and_crls_need_trust_anchors(pem: str) -> None:
    found = problems_of({"source": "asgi-tls", "intermediates": pem})
    assert found == {"client_cert.trust_anchors": "intermediates and CRLs need trust_anchors"}
    found = problems_of({"source": "asgi-tls", "crl_urls": ["https://ca.example/crl"]})
    assert found == {"client_cert.trust_anchors": "intermediates and CRLs need trust_anchors"}


def test_EIDAS_05_require_qwac_needs_eidas_identity() -> None:
    found = problems_of({"source": "asgi-tls", "require_qwac": True})
    assert found == {"client_cert.require_qwac": "needs identity: eidas"}


def test_EIDAS_06_token_tpp_claim_needs_eidas_identity() -> None:
    found = problems_of({"source": "asgi-tls", "token_tpp_claim": "client_id"})
    assert found == {"client_cert.token_tpp_claim": "needs identity: eidas"}


def test_required_certificate_needs_a_source() -> None:
    found = problems_of({"required": True})
    assert found == {"client_cert.source": "name where the client certificate comes from"}


def test_every_contradiction_is_reported_in_one_pass(pem: str) -> None:
    found = problems_of(
        {
            "source": "none",
            "header": "x-cert",
            "verify_header": "x-verify",
            "xfcc_elements": 0,
            "require_qwac": True,
            "identity": "eidas",
        }
    )
    assert set(found) == {
        "client_cert.header",
        "client_cert.verify_header",
        "client_cert.xfcc_elements",
        "client_cert.identity",
        "client_cert.source",
    }


def test_python_construction_checks_the_same_rules() -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientCertPolicy(source="asgi-tls", require_qwac=True)
    assert info.value.path == "require_qwac"


def test_header_name_defaults_per_source_and_is_lower_cased() -> None:
    assert ClientCertPolicy(source="xfcc").header_name == "x-forwarded-client-cert"
    assert ClientCertPolicy(source="nginx", header="X-Client-PEM").header_name == "x-client-pem"
    assert ClientCertPolicy(source="asgi-tls").header_name == ""
