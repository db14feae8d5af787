"""Fuzzing the DPoP proof's claims and the ``htu`` comparison (RFC 9449 §4.2, §4.3; RFC 3986 §6.2).

Properties (STANDARDS DPOP-03, DPOP-09..DPOP-14, DPOP-30; docs/dpop.md "Origins and htu"):

* a proof whose claims are of any JSON type is accepted exactly when ``jti`` is a non-empty
  string of at most 256 characters, ``htm`` is the method, ``htu`` names the request's URL,
  ``iat`` is a number inside the window (60 s back, 10 s ahead) and ``ath`` is the token's hash;
  otherwise it is a 401 ``dpop.*`` refusal;
* ``htu`` spellings that RFC 3986 §6.2.2-6.2.3 makes equal to the request URL (scheme and host
  case, the default port, query, fragment, escaped unreserved characters, hex case, dot-segments)
  are accepted; adding one difference the docs keep (a trailing ``/``, ``%2F`` for ``/``, another
  scheme, host, port or path) makes the proof refused with ``dpop.htu_*``.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote

from hypothesis import event, given
from hypothesis import strategies as st

from bankguard.request import Headers, RequestFacts
from bankguard.tokens.dpop import access_token_hash

from .conftest import ISSUER, KEY, check_decision, fuzz, json_values, new_guard, token_policy

GUARD, EVENTS = new_guard(token_policy())
HOST = "api.bank.example"
UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
#: Raw request paths (as sent) and their segments after the ``/accounts`` prefix.
PATHS = [
    "/accounts",
    "/accounts/a-1",
    "/accounts/~x.y_z",
    "/accounts/a%20b",
    "/accounts/%C3%A9t%C3%A9",
    "/accounts/a:b@c",
]


def decide(
    raw_path: str,
    headers: list[tuple[str, str]],
    secrets: list[str],
    guard: Any = GUARD,
    events: Any = EVENTS,
) -> Any:
    facts = RequestFacts(
        method="GET",
        scheme="https",
        path=unquote(raw_path),
        raw_path=raw_path.encode("ascii"),
        headers=Headers(headers),
        peer="203.0.113.9",
    )
    before = len(events.events)
    return check_decision(guard, events, before, guard.decide(facts), secrets=secrets)


# -- claims of every type -----------------------------------------------------------------------------

ABSENT = object()


@fuzz(250)
@given(
    changes=st.dictionaries(
        st.sampled_from(["jti", "htm", "htu", "iat", "ath"]),
        st.one_of(
            st.sampled_from(
                ["", "x" * 256, "x" * 257, "GET", "get", "POST", " GET", "https://api.bank.example/accounts"]
            ),
            st.sampled_from([-3600, -90, -30, 0, 5, 9, 30, 3600, 1e300, True, None, "0"]).map(
                lambda v: v if not isinstance(v, int) or isinstance(v, bool) else ("iat+", v)
            ),
            json_values,
            st.just(ABSENT),
        ),
        max_size=3,
    ),
    extra=st.dictionaries(st.text(max_size=6), json_values, max_size=2),
)
def test_DPOP_03_12_14_claims_of_every_type(changes: dict[str, Any], extra: dict[str, Any]) -> None:
    guard, events = new_guard(token_policy())  # a fresh replay store: fixed jti values recur
    token = ISSUER.mint(dpop_key=KEY)
    now = time.time()
    claims: dict[str, Any] = {
        "jti": f"j-{now}-{id(changes)}",
        "htm": "GET",
        "htu": f"https://{HOST}/accounts",
        "iat": int(now),
        "ath": access_token_hash(token),
    }
    for name, value in extra.items():
        claims.setdefault(name, value)
    removed = []
    for name, value in changes.items():
        if value is ABSENT:
            removed.append(name)
        elif isinstance(value, tuple):
            claims[name] = int(now) + value[1] if name == "iat" else value[1]
        else:
            claims[name] = value
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.public_jwk}
    body = {k: v for k, v in claims.items() if k not in removed}
    from bankguard.testing import sign_compact

    proof = sign_compact(header, body, KEY._key, "ES256")  # the private key: a null claim must be sendable
    verdict = decide(
        "/accounts", [("authorization", "DPoP " + token), ("dpop", proof)], [token, proof], guard, events
    )
    jti, htm, htu, iat, ath = (body.get(k) for k in ("jti", "htm", "htu", "iat", "ath"))
    expected = (
        isinstance(jti, str)
        and 0 < len(jti) <= 256
        and htm == "GET"
        and htu == f"https://{HOST}/accounts"
        and not isinstance(iat, bool)
        and isinstance(iat, (int, float))
        and now - 55 <= iat <= now + 9
        and ath == access_token_hash(token)
    )
    event("accept" if expected else str(verdict.reason))
    if expected:
        assert verdict.allowed, (body, verdict)
    else:
        assert verdict.status == 401, (body, verdict)
        assert (verdict.reason or "").startswith("dpop."), (body, verdict)


# -- htu: RFC 3986 equivalence ------------------------------------------------------------------------


def _escape_unreserved(segment: str, at: int, lower: bool) -> str:
    """Percent-encode one unreserved character of ``segment`` (a spelling RFC 3986 §6.2.2.2 equates)."""
    inside = {j for j, c in enumerate(segment) if c == "%" for j in (j + 1, j + 2)}
    spots = [i for i, c in enumerate(segment) if c in UNRESERVED and i not in inside]
    if not spots:
        return segment
    i = spots[at % len(spots)]
    escape = f"%{ord(segment[i]):02X}"
    return segment[:i] + (escape.lower() if lower else escape) + segment[i + 1 :]


EQUAL = [
    "scheme-case",
    "host-case",
    "default-port",
    "query",
    "fragment",
    "escape",
    "escape-lower",
    "dot",
    "dotdot",
    "hex-case",
]
DIFFERENT = [
    "trailing-slash",
    "http",
    "port",
    "host",
    "encoded-slash",
    "path-case",
    "drop-segment",
    "extra-segment",
]


def build_htu(raw_path: str, equal: list[tuple[str, int]], different: str | None) -> str:
    scheme, host, port, query, fragment = "https", HOST, "", "", ""
    segments = raw_path.split("/")[1:]
    if different == "path-case":
        segments[0] = "Accounts"
    for op, at in equal:
        if op == "scheme-case":
            scheme = "HTTPS" if at % 2 else "hTtPs"
        elif op == "host-case":
            host = HOST.upper() if at % 2 else "Api.Bank.EXAMPLE"
        elif op == "default-port":
            port = ":443"
        elif op == "query":
            query = "?a=1&htu=/other"
        elif op == "fragment":
            fragment = "#/other"
        elif op in ("escape", "escape-lower"):
            j = at % len(segments)
            segments[j] = _escape_unreserved(segments[j], at, op == "escape-lower")
        elif op == "hex-case":
            segments = [s.replace("%C3", "%c3").replace("%A9", "%a9") for s in segments]
        elif op == "dot":
            # Before a segment: a final "/." would read as a trailing "/" (RFC 3986 §5.2.4).
            segments.insert(at % len(segments), ".")
        elif op == "dotdot":
            j = at % len(segments)
            segments[j:j] = ["x", ".."]
    path = "/" + "/".join(segments)
    if different == "trailing-slash":
        path += "/"
    elif different == "http":
        scheme = "http"
    elif different == "port":
        port = ":8443"
    elif different == "host":
        host = "other.bank.example"
    elif different == "encoded-slash":
        head, _, tail = path.rpartition("/")
        path = f"{head}%2F{tail}" if head else path + "%2F"
    elif different == "drop-segment":
        path = path.rsplit("/", 1)[0] or "/"
    elif different == "extra-segment":
        path += "/more"
    return f"{scheme}://{host}{port}{path}{query}{fragment}"


@fuzz(250)
@given(
    raw_path=st.sampled_from(PATHS),
    equal=st.lists(st.tuples(st.sampled_from(EQUAL), st.integers(0, 100)), max_size=5),
    different=st.none() | st.sampled_from(DIFFERENT),
)
def test_DPOP_10_11_30_htu_equivalence(
    raw_path: str, equal: list[tuple[str, int]], different: str | None
) -> None:
    if different == "drop-segment" and raw_path == "/accounts":
        different = "extra-segment"
    htu = build_htu(raw_path, equal, different)
    token = ISSUER.mint(dpop_key=KEY)
    proof = KEY.proof("GET", "https://unused.example/", access_token=token, claims={"htu": htu})
    verdict = decide(raw_path, [("authorization", "DPoP " + token), ("dpop", proof)], [token, proof])
    event(f"{different} {verdict.reason}")
    if different is None:
        assert verdict.allowed, (htu, raw_path, verdict)
    else:
        assert verdict.reason in ("dpop.htu_origin_mismatch", "dpop.htu_path_mismatch", "dpop.htu_invalid"), (
            htu,
            raw_path,
            verdict,
        )
