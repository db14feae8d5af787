"""Cost of the client-certificate path, next to one RS256 signature verification.

The cached path is what a busy API sees: the same TPP sends the same certificate (through
nginx, URL-encoded PEM in ``X-SSL-Client-Cert``) and the same certificate-bound token on
every request. Measured, per request, side by side in one run:

* floor: ``cryptography`` verifying one RS256 signature (what a token costs at first sight);
* certificate path: the client-certificate check (header lookup, cached parse, cached chain
  validation, cached eIDAS identity) plus the token check for a cached, certificate-bound
  token, minus the same token check for a cached unbound token without a certificate, i.e.
  what certificate extraction, validation and the binding check add.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bankguard import Guard, Policy
from bankguard.audit import EventCollector
from bankguard.controls import Credentials, State
from bankguard.mtls.sources import thumbprint
from bankguard.testing import TestIssuer, TestPKI, make_facts

AUDIENCE = "https://api.bank.example"


def _guard(issuer: TestIssuer, anchors: Path, intermediates: Path) -> Guard:
    return Guard(
        Policy.from_dict(
            {
                "trusted_proxies": ["10.0.0.0/8"],
                "tokens": {
                    "issuers": [
                        {
                            "issuer": issuer.issuer,
                            "audiences": [AUDIENCE],
                            "algorithms": ["RS256"],
                            "jwks": issuer.jwks(),
                        }
                    ]
                },
                "client_cert": {
                    "source": "nginx",
                    "trust_anchors": str(anchors),
                    "intermediates": str(intermediates),
                    "identity": "eidas",
                },
                "routes": {"operations": [{"method": "GET", "path": "/accounts", "roles": ["PSP_AI"]}]},
            }
        ),
        sink=EventCollector(),
    )


def measure(rounds: int, n: int) -> tuple[float, float, float]:
    """(RS256 floor µs, certificate path µs, ratio) as medians over rounds."""
    logging.getLogger("bankguard").setLevel(logging.ERROR)
    pki = TestPKI()
    cert, _ = pki.leaf(roles=("PSP_AI",))
    header = quote(cert.public_bytes(serialization.Encoding.PEM).decode(), safe="")
    issuer = TestIssuer(alg="RS256")
    with tempfile.TemporaryDirectory() as tmp:
        anchors, inter = Path(tmp, "roots.pem"), Path(tmp, "inter.pem")
        anchors.write_bytes(TestPKI.pem_bundle(pki.root))
        inter.write_bytes(TestPKI.pem_bundle(pki.intermediate))
        guard = _guard(issuer, anchors, inter)
    bound = issuer.mint({"cnf": {"x5t#S256": thumbprint(cert.public_bytes(serialization.Encoding.DER))}})
    unbound = issuer.mint()
    with_cert = make_facts("GET", "/accounts", headers=[("x-ssl-client-cert", header)], peer="10.1.2.3")
    without = make_facts("GET", "/accounts", peer="10.1.2.3")
    checks = {c.name: c for c in guard.checks}
    routes, cert_check, tokens = checks["routes"], checks["client_cert"], checks["tokens"]

    def state(token: str) -> State:
        s = State(interaction_id="b", credentials=Credentials("Bearer", token))
        routes.run(with_cert, s)
        return s

    # Warm the caches (parse, validation, identity, verified tokens) and check both paths pass.
    first = state(bound)
    cert_check.run(with_cert, first)
    tokens.run(with_cert, first)
    if first.principal.binding != "mtls" or first.principal.tpp_id != "PSDGB-FCA-123456":
        raise SystemExit("the certificate path did not bind the token")
    tokens.run(without, state(unbound))

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key()
    data = b"x" * 600
    signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    floors, costs = [], []
    for _ in range(rounds + 1):
        bound_states = [state(bound) for _ in range(n)]
        plain_states = [state(unbound) for _ in range(n)]
        t0 = time.perf_counter()
        for _ in range(n):
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        t1 = time.perf_counter()
        for s in bound_states:
            cert_check.run(with_cert, s)
            tokens.run(with_cert, s)
        t2 = time.perf_counter()
        for s in plain_states:
            tokens.run(without, s)
        t3 = time.perf_counter()
        floors.append((t1 - t0) / n * 1e6)
        costs.append(((t2 - t1) - (t3 - t2)) / n * 1e6)
    guard.close()
    ratios = [c / f for c, f in zip(costs[1:], floors[1:], strict=True)]
    return statistics.median(floors[1:]), statistics.median(costs[1:]), statistics.median(ratios)


def report(rounds: int, n: int) -> None:
    floor, cost, ratio = measure(rounds, n)
    print(f"\nclient certificate, cached path: {rounds} rounds x {n} requests (µs per request)")
    print(f"{'RS256 verify (floor)':<34}{floor:>9.2f}")
    print(f"{'certificate path (added)':<34}{cost:>9.2f}{100 * ratio:>8.1f}% of the floor")
