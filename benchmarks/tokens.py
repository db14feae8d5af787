"""Access-token verification cost, side by side with PyJWT and the bare signature check.

For each algorithm the same key pair and the same tokens serve three measurements:

* floor: ``cryptography`` verifying the token's signature over its signing input, no parsing;
* PyJWT: ``jwt.decode`` with the key, the algorithm, audience and issuer checks;
* bankguard, first sight: the token control on a token it has never seen (parse, header
  rules, key lookup, signature, claims, principal, cache insert);
* bankguard, repeated: the same control on a token it has verified before (cache hit).

Every round uses fresh tokens for the first-sight case, so the cache never helps it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bankguard import Guard, Policy
from bankguard.audit import EventCollector
from bankguard.controls import Credentials, State
from bankguard.decision import Operation
from bankguard.scopes import ScopeRequirement
from bankguard.testing import TestIssuer, make_facts
from bankguard.tokens.jose import b64url_decode

AUDIENCE = "https://api.bank.example"
ALGORITHMS = ("RS256", "PS256", "ES256")


def _floor(issuer: TestIssuer, alg: str) -> Callable[[str], None]:
    public = issuer._key.public_key()
    if alg == "RS256":
        return lambda token: public.verify(*_split(token), padding.PKCS1v15(), hashes.SHA256())
    if alg == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return lambda token: public.verify(*_split(token), pss, hashes.SHA256())

    def es(token: str) -> None:
        sig, data = _split(token)
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        public.verify(der, data, ec.ECDSA(hashes.SHA256()))

    return es


def _split(token: str) -> tuple[bytes, bytes]:
    head, payload, sig = token.split(".")
    return b64url_decode(sig), f"{head}.{payload}".encode()


def _mean_us(fn: Callable[[Any], Any], items: list[Any]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items) * 1e6


def _paired_us(
    a: Callable[[Any], Any], a_items: list[Any], b: Callable[[Any], Any], b_items: list[Any]
) -> tuple[float, float]:
    clock = time.perf_counter
    total_a = total_b = 0.0
    for x, y in zip(a_items, b_items, strict=True):
        t0 = clock()
        a(x)
        t1 = clock()
        b(y)
        t2 = clock()
        total_a += t1 - t0
        total_b += t2 - t1
    return total_a / len(a_items) * 1e6, total_b / len(b_items) * 1e6


def measure(rounds: int, n: int) -> list[tuple[str, float, float, float, float, float, float]]:
    """Per algorithm: (alg, floor µs, PyJWT µs, bankguard first-sight µs, bankguard repeated µs,
    median per-round ratio first/floor, median per-round ratio repeated/floor)."""
    rows = []
    for alg in ALGORITHMS:
        issuer = TestIssuer(alg=alg)
        policy = Policy.from_dict(
            {
                "tokens": {
                    "issuers": [
                        {
                            "issuer": issuer.issuer,
                            "audiences": [AUDIENCE],
                            "algorithms": [alg],
                            "jwks": issuer.jwks(),
                        }
                    ],
                    "cache_entries": 4 * n,
                },
                "routes": {"undeclared": "allow"},
            }
        )
        guard = Guard(policy, sink=EventCollector())
        check = guard.tokens
        if check is None:  # pragma: no cover - configured above
            raise SystemExit("token control missing")
        facts = make_facts("GET", "/accounts")
        operation = Operation(
            id="GET /accounts",
            method="GET",
            path="/accounts",
            scopes=("accounts",),
            requirement=ScopeRequirement(frozenset({"accounts"})),
        )
        public = issuer._key.public_key()
        floor = _floor(issuer, alg)

        def pyjwt_decode(token: str, public: Any = public, alg: str = alg, iss: str = issuer.issuer) -> None:
            pyjwt.decode(token, public, algorithms=[alg], audience=AUDIENCE, issuer=iss)

        def bankguard_check(state: State, check: Any = check, facts: Any = facts) -> None:
            if check.run(facts, state) is not None:
                raise SystemExit("unexpected I/O in the token check")

        samples: dict[str, list[float]] = {"floor": [], "pyjwt": [], "first": [], "repeat": []}
        ratios: dict[str, list[float]] = {"first": [], "repeat": []}
        for _ in range(rounds + 1):  # the first round warms up and is dropped
            fresh = [issuer.mint(scope="accounts") for _ in range(n)]
            # The request state the pipeline would hand the check (built before timing, like
            # the interaction id and route match that precede it).
            states = [
                State(interaction_id="b", operation=operation, credentials=Credentials("Bearer", t))
                for t in fresh
            ]
            # Floor and first sight are timed token by token, alternating, so both see the same
            # machine state; PyJWT and the repeated check run over the same tokens afterwards.
            floor_us, first_us = _paired_us(floor, fresh, bankguard_check, states)
            samples["floor"].append(floor_us)
            samples["first"].append(first_us)
            samples["pyjwt"].append(_mean_us(pyjwt_decode, fresh))
            samples["repeat"].append(_mean_us(bankguard_check, states))
            ratios["first"].append(first_us / floor_us)
            ratios["repeat"].append(samples["repeat"][-1] / floor_us)
        rows.append(
            (
                alg,
                *(statistics.median(samples[k][1:]) for k in ("floor", "pyjwt", "first", "repeat")),
                statistics.median(ratios["first"][1:]),
                statistics.median(ratios["repeat"][1:]),
            )
        )
        guard.close()
    return rows


def report(rounds: int, n: int) -> None:
    print(f"\naccess-token verification: {rounds} rounds x {n} fresh tokens per algorithm (µs per token)")
    print("(x floor and % floor: median of the per-round ratios, each round measuring both side by side)")
    print(f"{'alg':<8}{'floor':>9}{'PyJWT':>9}{'first':>9}{'x floor':>9}{'repeat':>9}{'% floor':>9}")
    for alg, floor, pyjwt_us, first, repeat, first_ratio, repeat_ratio in measure(rounds, n):
        print(
            f"{alg:<8}{floor:>9.1f}{pyjwt_us:>9.1f}{first:>9.1f}{first_ratio:>9.2f}{repeat:>9.2f}"
            f"{100 * repeat_ratio:>8.1f}%"
        )
