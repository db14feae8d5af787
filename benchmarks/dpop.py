"""Cost of one DPoP request (access token + proof), next to the two signature checks it needs.

    python benchmarks/dpop.py            # full run
    python benchmarks/dpop.py --quick    # a few hundred requests per case, for CI smoke runs

The issuer signs access tokens with ES256; the client signs proofs with ES256, PS256 or
EdDSA. For each proof algorithm one guard (DPoP on, ``memory://`` storage, a route that
needs a scope, the clock fixed) and the same key pairs serve, per request, side by side:

* floor: ``cryptography`` verifying the token's signature with the issuer's public key and
  the proof's signature with the client's public key, over their signing inputs, no parsing;
* verification: what the issue's target is about, the token control on the request: the proof
  checks, the token (parse, signature, claims, cache), the key binding, the scope and the ``jti``
  replay entry in the ``memory://`` store (the request, route and ``Authorization`` checks before
  it run outside the timing);
* decide: ``Guard.decide`` on the request: the whole pipeline, the checks above plus request
  hygiene, the route, the interaction id and the audit event.

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
from bankguard.controls import State
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

Row = tuple[str, str, float, float, float, float, float]


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


def _prepared(guard: Guard, facts: Any) -> tuple[Any, State]:
    """The request and the state the checks before the token control leave (not timed)."""
    state = State(interaction_id="c770aef3-6784-41f7-8e0e-ff5f97bddb3a")
    for check in guard.checks:
        if check is guard.tokens:
            break
        check.run(facts, state)
    return facts, state


def _verification(guard: Guard) -> Callable[[tuple[Any, State]], None]:
    """The token control on one prepared request, its store operations run on the guard's store."""
    tokens, store = guard.tokens, guard.store
    assert tokens is not None

    def run(item: tuple[Any, State]) -> None:
        flow = tokens.run(*item)
        if flow is not None:
            result = None
            try:
                while True:
                    result = store.execute(flow.send(result))
            except StopIteration:
                pass

    return run


def _all_verified(items: list[tuple[Any, State]], what: str) -> None:
    """Every timed verification accepted a DPoP-bound principal (checked after the timing)."""
    bad = [s.principal for _, s in items if not s.principal.authenticated or s.principal.binding != "dpop"]
    if bad:
        raise SystemExit(f"{what}: {len(bad)} of {len(items)} verifications did not accept the request")


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
    """Per case and proof algorithm: (case, proof alg, floor µs, verification µs, its median
    per-round ratio to the floor, decide µs, its median per-round ratio to the floor)."""
    logging.getLogger("bankguard").setLevel(logging.ERROR)
    issuer = TestIssuer(alg=ISSUER_ALG)
    token_sig = _signature_check(issuer._key.public_key(), ISSUER_ALG)
    rows: dict[str, list[Row]] = {"first sight": [], "repeat token": []}
    for alg in PROOF_ALGORITHMS:
        client = DPoPKey(alg)
        proof_sig = _signature_check(client._key.public_key(), alg)
        sink = EventCollector()
        guard = Guard(_policy(issuer), sink=sink, clock=lambda: NOW)
        lifetime = 24 * 3600
        reused = issuer.mint(scope="accounts", now=NOW, lifetime=lifetime, dpop_key=client)
        _sanity(guard, sink, issuer, client, reused)
        verify = _verification(guard)

        def floor(pair: tuple[str, str], proof_sig: Callable[[str], None] = proof_sig) -> None:
            token_sig(pair[0])
            proof_sig(pair[1])

        samples: dict[str, dict[str, list[float]]] = {}
        for case in rows:
            samples[case] = {k: [] for k in ("floor", "verify", "decide", "rv", "rd")}
        for _ in range(rounds + 1):  # the first round warms up and is dropped
            for case, series in samples.items():
                # Two requests per slot, each with its own token (first sight) and proof: one
                # for the token control alone, one for the whole decision.
                if case == "repeat token":
                    tokens_ = [(reused, reused)] * n
                else:
                    tokens_ = [
                        (
                            issuer.mint(scope="accounts", now=NOW, lifetime=lifetime, dpop_key=client),
                            issuer.mint(scope="accounts", now=NOW, lifetime=lifetime, dpop_key=client),
                        )
                        for _ in range(n)
                    ]
                pairs = [(a, client.proof("GET", URL, access_token=a, iat=NOW)) for a, _ in tokens_]
                prepared = [_prepared(guard, _facts(*pair)) for pair in pairs]
                facts = [_facts(b, client.proof("GET", URL, access_token=b, iat=NOW)) for _, b in tokens_]
                floor_us, verify_us, decide_us = _interleaved_us(
                    [floor, verify, guard.decide], [pairs, prepared, facts]
                )
                _all_verified(prepared, f"{case}, {alg} proofs")
                _all_allowed(sink, n, f"{case}, {alg} proofs")
                series["floor"].append(floor_us)
                series["verify"].append(verify_us)
                series["decide"].append(decide_us)
                series["rv"].append(verify_us / floor_us)
                series["rd"].append(decide_us / floor_us)
        guard.close()
        for case, series in samples.items():
            med = {k: statistics.median(v[1:]) for k, v in series.items()}
            rows[case].append((case, alg, med["floor"], med["verify"], med["rv"], med["decide"], med["rd"]))
    return rows["first sight"] + rows["repeat token"]


def report(rounds: int, n: int) -> None:
    print(
        f"\nDPoP access token + proof: {rounds} rounds x {n} requests per case "
        f"(µs per request; token {ISSUER_ALG}, memory:// replay store)"
    )
    print("(floor: token signature + proof signature with cryptography; verification: the token")
    print(" control with proof, token, binding, scope and replay entry; decide: the whole pipeline")
    print(" with the audit event; x floor: median of per-round ratios, measured side by side;")
    print(f" target <= {TARGET:.1f}x floor for the verification)")
    print(
        f"{'case':<14}{'proof':<7}{'floor':>8}{'verification':>14}{'x floor':>9}{'target':>8}{'':>7}"
        f"{'decide':>9}{'x floor':>9}"
    )
    for case, alg, floor, verify, ratio, decide, decide_ratio in measure(rounds, n):
        status = "met" if ratio <= TARGET else "above"
        print(
            f"{case:<14}{alg:<7}{floor:>8.1f}{verify:>14.1f}{ratio:>9.2f}{TARGET:>8.2f}{status:>7}"
            f"{decide:>9.1f}{decide_ratio:>9.2f}"
        )


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
