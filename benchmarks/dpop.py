"""Cost of one DPoP request (access token + proof), next to the two signature checks it needs.

    python benchmarks/dpop.py            # full run
    python benchmarks/dpop.py --quick    # a few hundred requests per case, for CI smoke runs

The issuer signs access tokens with ES256; the client signs proofs with ES256, PS256 or
EdDSA. For each proof algorithm one guard (DPoP on, ``memory://`` storage, a route that
needs a scope, the clock fixed) and the same key pairs serve, per request, side by side:

* floor: ``cryptography`` verifying the token's signature with the issuer's public key and
  the proof's signature with the client's public key, over their signing inputs, no parsing;
* bankguard: ``Guard.decide`` on the request: the whole pipeline, with the proof checks, the
  token, the key binding, the ``jti`` replay entry in the store and the audit event.

Two cases, reported separately:

* first sight: a token bankguard has never seen, a fresh one per request;
* repeat token: one token for every request (as a client reuses its token), a fresh proof
  per request; the verified token is cached, so the proof-signature-only floor is also shown.

Tokens, proofs and request facts are built before timing. Floor and bankguard alternate
request by request in every round; the first round warms up and is dropped. Every timed
decision is checked afterwards to be an allow: a refusal would measure the wrong path.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bankguard import Guard, Policy
from bankguard.audit import EventCollector
from bankguard.testing import DPoPKey, TestIssuer, make_facts
from bankguard.tokens.jose import b64url_decode

ORIGIN = "https://api.bank.example"
AUDIENCE = ORIGIN
PATH = "/accounts/22289/transactions"
URL = ORIGIN + PATH
ISSUER_ALG = "ES256"
PROOF_ALGORITHMS = ("ES256", "PS256", "EdDSA")
#: The guard's clock, fixed: every token and proof is minted for this instant.
NOW = float(int(time.time()))
#: Requirement of the 1.5x target: bankguard's cost over the two-signature floor.
TARGET = 1.5
HEADERS = [
    ("host", "api.bank.example"),
    ("accept", "application/json"),
    ("x-fapi-interaction-id", "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"),
    ("user-agent", "benchmark/1.0"),
]

Row = tuple[str, str, float, float, float, float | None]


def _policy(issuer: TestIssuer) -> Policy:
    return Policy.from_dict(
        {
            "external_origins": [ORIGIN],
            "tokens": {
                "issuers": [
                    {
                        "issuer": issuer.issuer,
                        "audiences": [AUDIENCE],
                        "algorithms": [ISSUER_ALG],
                        "jwks": issuer.jwks(),
                    }
                ]
            },
            "dpop": {"enabled": True, "algorithms": list(PROOF_ALGORITHMS)},
            "storage": {"uri": "memory://"},
            "routes": {
                "operations": [
                    {"method": "GET", "path": "/accounts/{AccountId}/transactions", "scopes": ["accounts"]}
                ]
            },
        }
    )


def _signature_check(public: Any, alg: str) -> Callable[[str], None]:
    """``cryptography`` verifying one compact JWS's signature over its signing input."""
    if alg == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return lambda jws: public.verify(*_split(jws), pss, hashes.SHA256())
    if alg == "EdDSA":
        return lambda jws: public.verify(*_split(jws))

    def es(jws: str) -> None:
        sig, data = _split(jws)
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        public.verify(der, data, ec.ECDSA(hashes.SHA256()))

    return es


def _split(jws: str) -> tuple[bytes, bytes]:
    head, payload, sig = jws.split(".")
    return b64url_decode(sig), f"{head}.{payload}".encode()


def _interleaved_us(fns: list[Callable[[Any], Any]], items: list[list[Any]]) -> list[float]:
    """Mean µs per call of each function, called in turn on its own item, request by request."""
    clock = time.perf_counter
    totals = [0.0] * len(fns)
    for row in zip(*items, strict=True):
        for i, (fn, item) in enumerate(zip(fns, row, strict=True)):
            t0 = clock()
            fn(item)
            totals[i] += clock() - t0
    return [total / len(items[0]) * 1e6 for total in totals]


def _facts(token: str, proof: str) -> Any:
    return make_facts("GET", PATH, headers=[*HEADERS, ("authorization", f"DPoP {token}"), ("dpop", proof)])


def _all_allowed(sink: EventCollector, n: int, what: str) -> None:
    """Every timed decision was an allow (checked after the timing, never inside it)."""
    outcomes = [(e.outcome, e.status, e.reason) for e in sink.events]
    refused = [o for o in outcomes if o[0] != "allow"]
    if len(outcomes) != n or refused:
        raise SystemExit(f"{what}: {len(outcomes)} decisions for {n} requests, refusals {refused[:3]}")
    sink.events.clear()


def _sanity(guard: Guard, sink: EventCollector, issuer: TestIssuer, client: DPoPKey, token: str) -> None:
    """The guard enforces what is measured: DPoP binding, the scope, the replay check."""
    proof = client.proof("GET", URL, access_token=token, iat=NOW)
    decision = guard.decide(_facts(token, proof))
    if not decision.allowed or decision.context.principal.binding != "dpop":
        raise SystemExit(f"DPoP request refused: {decision.event.reason}")
    expected = {
        "dpop.replayed": _facts(token, proof),
        "token.missing": make_facts("GET", PATH, headers=HEADERS),
        "dpop.proof_missing": make_facts("GET", PATH, headers=[*HEADERS, ("authorization", f"DPoP {token}")]),
    }
    other = issuer.mint(scope="payments", now=NOW, dpop_key=client)
    expected["scope.insufficient"] = _facts(other, client.proof("GET", URL, access_token=other, iat=NOW))
    for reason, facts in expected.items():
        got = guard.decide(facts)
        if got.allowed or got.event.reason != reason:
            raise SystemExit(f"expected a refusal {reason}, got {got.event.outcome} {got.event.reason}")
    sink.events.clear()


def measure(rounds: int, n: int) -> list[Row]:
    """Per proof algorithm and case: (case, proof alg, floor µs, bankguard µs, median per-round
    ratio bankguard/floor, median per-round ratio bankguard/proof-signature floor or None)."""
    logging.getLogger("bankguard").setLevel(logging.ERROR)
    issuer = TestIssuer(alg=ISSUER_ALG)
    token_sig = _signature_check(issuer._key.public_key(), ISSUER_ALG)
    first_rows: list[Row] = []
    repeat_rows: list[Row] = []
    for alg in PROOF_ALGORITHMS:
        client = DPoPKey(alg)
        proof_sig = _signature_check(client._key.public_key(), alg)
        sink = EventCollector()
        guard = Guard(_policy(issuer), sink=sink, clock=lambda: NOW)
        lifetime = 24 * 3600
        reused = issuer.mint(scope="accounts", now=NOW, lifetime=lifetime, dpop_key=client)
        _sanity(guard, sink, issuer, client, reused)

        def floor(pair: tuple[str, str], proof_sig: Callable[[str], None] = proof_sig) -> None:
            token_sig(pair[0])
            proof_sig(pair[1])

        def proof_only(pair: tuple[str, str], proof_sig: Callable[[str], None] = proof_sig) -> None:
            proof_sig(pair[1])

        decide = guard.decide
        samples: dict[str, list[float]] = {k: [] for k in ("floor1", "first", "floor2", "proof", "repeat")}
        ratios: dict[str, list[float]] = {"first": [], "repeat": [], "proof": []}
        for _ in range(rounds + 1):  # the first round warms up and is dropped
            # First sight: a fresh token and its proof per request.
            fresh = [
                issuer.mint(scope="accounts", now=NOW, lifetime=lifetime, dpop_key=client) for _ in range(n)
            ]
            pairs = [(t, client.proof("GET", URL, access_token=t, iat=NOW)) for t in fresh]
            facts = [_facts(t, p) for t, p in pairs]
            floor_us, first_us = _interleaved_us([floor, decide], [pairs, facts])
            _all_allowed(sink, n, f"first sight, {alg} proofs")
            samples["floor1"].append(floor_us)
            samples["first"].append(first_us)
            ratios["first"].append(first_us / floor_us)

            # Repeat token: the same token, a fresh proof per request.
            pairs = [(reused, client.proof("GET", URL, access_token=reused, iat=NOW)) for _ in range(n)]
            facts = [_facts(t, p) for t, p in pairs]
            floor_us, proof_us, repeat_us = _interleaved_us(
                [floor, proof_only, decide], [pairs, pairs, facts]
            )
            _all_allowed(sink, n, f"repeat token, {alg} proofs")
            samples["floor2"].append(floor_us)
            samples["proof"].append(proof_us)
            samples["repeat"].append(repeat_us)
            ratios["repeat"].append(repeat_us / floor_us)
            ratios["proof"].append(repeat_us / proof_us)
        guard.close()
        med = {k: statistics.median(v[1:]) for k, v in samples.items()}
        mr = {k: statistics.median(v[1:]) for k, v in ratios.items()}
        first_rows.append(("first sight", alg, med["floor1"], med["first"], mr["first"], None))
        repeat_rows.append(("repeat token", alg, med["floor2"], med["repeat"], mr["repeat"], mr["proof"]))
    return first_rows + repeat_rows


def report(rounds: int, n: int) -> None:
    print(
        f"\nDPoP access token + proof, Guard.decide: {rounds} rounds x {n} requests per case "
        f"(µs per request; token {ISSUER_ALG}, memory:// replay store)"
    )
    print("(floor: token signature + proof signature with cryptography; x floor: median of the")
    print(f" per-round ratios, each round measuring both side by side; target <= {TARGET:.1f}x floor;")
    print(" x proof sig: bankguard over the proof signature alone, for information)")
    print(
        f"{'case':<14}{'proof':<7}{'floor':>9}{'bankguard':>11}{'x floor':>9}{'target':>8}{'':>7}"
        f"{'x proof sig':>13}"
    )
    for case, alg, floor, cost, ratio, proof_ratio in measure(rounds, n):
        status = "met" if ratio <= TARGET else "above"
        extra = f"{proof_ratio:>13.2f}" if proof_ratio is not None else ""
        print(f"{case:<14}{alg:<7}{floor:>9.1f}{cost:>11.1f}{ratio:>9.2f}{TARGET:>8.2f}{status:>7}{extra}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few rounds, small batches")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--requests", type=int, default=None, help="requests per round and case")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    n = args.requests or (100 if args.quick else 1000)
    print(f"python {sys.version.split()[0]}")
    report(rounds, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
