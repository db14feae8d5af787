"""Fuzzing the ``Authorization`` and ``DPoP`` request headers through :meth:`Guard.decide`.

Properties (STANDARDS AUTH-01, AUTH-04..AUTH-06, DPOP-01, DPOP-02, DPOP-13, DPOP-17, DPOP-21,
DPOP-29, OWASP-14; docs/errors.md ``invalid-request``, ``authentication-required``,
``invalid-dpop-proof``; docs/policy.md ``trusted_proxies``):

* every combination of field lines, schemes, separators, token68 text and trailing bytes ends in an
  allow or a documented 4xx problem (``conftest.check_decision``); the ``auth`` control's verdict
  equals an independent reading of RFC 9110 §11.4 ``scheme SP token68``, and only a token exactly
  as the issuer minted it is accepted;
* the scheme's case, the case of header names and unrelated header fields never change a decision;
* an ``access_token`` in the query or a form body, however its name is percent-encoded, is refused
  (401 alone, 400 next to an ``Authorization`` header); in a JSON body it is not a parameter;
* a ``DPoP`` proof header is accepted exactly when it is the one untouched valid proof;
* refusals inside the token control neither use up the proof's ``jti`` nor spend the rate-limit
  quota of the ``client_id`` the token claims; ``X-Forwarded-For`` from a peer that is not a
  trusted proxy does not change what the pre-authentication limit counts.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import event, example, given
from hypothesis import strategies as st

from bankguard.stores import Get
from bankguard.testing import DPoPKey, make_facts

from .conftest import (
    B64URL,
    ISSUER,
    KEY,
    ORIGIN,
    b64url,
    decide,
    fuzz,
    header_text,
    new_guard,
    token_policy,
    unrelated_header,
)

GUARD, EVENTS = new_guard(token_policy())
URL = ORIGIN + "/accounts"
OTHER_KEY = DPoPKey("ES256")

#: RFC 9110 §11.4 credentials, written out independently of the implementation.
TCHAR = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
TOKEN68 = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/")


def credentials(value: str) -> tuple[str, str] | None:
    """``(scheme, token68)`` when ``value`` is exactly ``scheme SP token68``, else None."""
    scheme, space, token = value.partition(" ")
    if not space or not scheme or not set(scheme) <= TCHAR:
        return None
    body = token.rstrip("=")
    if not body or not set(body) <= TOKEN68:
        return None
    return scheme, token


def flip_case(text: str, mask: int) -> str:
    return "".join(c.upper() if mask >> i & 1 else c.lower() for i, c in enumerate(text))


# -- strategies -----------------------------------------------------------------------------------

schemes = st.one_of(
    st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR"]),
    st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR", "DPoP", "dpop", "DPOP", "Basic", "MAC", ""]),
    st.text(st.sampled_from(sorted(TCHAR)), min_size=1, max_size=8),
    header_text,
)
separators = st.sampled_from([" ", " ", " ", "  ", "\t", "", " \t", "\u00a0"])
token68 = st.text(st.sampled_from(sorted(TOKEN68)), min_size=1, max_size=40) | st.builds(
    lambda t, n: t + "=" * n, st.text(st.sampled_from(B64URL), min_size=1, max_size=40), st.integers(1, 3)
)
suffixes = st.one_of(
    st.just(""),
    st.just(""),
    st.sampled_from(["\n", "\r\n", " ", ",", ", Bearer x", " extra", "=", "==", "\x00", "a=b", "."]),
)
#: Every token minted by the issuer for these tests: the only credentials that can verify.
MINTED: set[str] = set()


@st.composite
def authorization_values(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["valid", "token68", "text", "jwt-ish"]))
    if kind == "valid":
        credential = ISSUER.mint()
        MINTED.add(credential)
    elif kind == "token68":
        credential = draw(token68)
    elif kind == "jwt-ish":
        parts = draw(st.lists(st.text(st.sampled_from(B64URL + "=+/"), max_size=12), min_size=1, max_size=6))
        credential = ".".join(parts)
    else:
        credential = draw(header_text)
    return draw(schemes) + draw(separators) + credential + draw(suffixes)


# -- the Authorization header -------------------------------------------------------------------


def expected_auth(lines: list[str]) -> str | None:
    """The ``auth`` control's reason for ``lines`` (None: it lets the request through)."""
    if len(lines) > 1:
        return "authorization.duplicate"
    if not lines:
        return None
    if credentials(lines[0]) is None:
        return "authorization.duplicate" if "," in lines[0] else "authorization.malformed"
    return None


@fuzz(300)
@given(
    lines=st.lists(authorization_values(), min_size=1, max_size=1)
    | st.lists(authorization_values(), max_size=3),
    path=st.sampled_from(["/accounts", "/accounts", "/health"]),
)
@example(lines=["Bearer abc\n"], path="/accounts")
@example(lines=["Bearer abc\r\nX-Injected: 1"], path="/accounts")
@example(lines=["Bearer a b"], path="/accounts")
@example(lines=["Bearer =abc"], path="/accounts")
@example(lines=["Bearer"], path="/accounts")
def test_AUTH_06_authorization_field_lines(lines: list[str], path: str) -> None:
    headers = [("authorization", line) for line in lines]
    verdict = decide(GUARD, EVENTS, make_facts("GET", path, headers=headers), secrets=lines)
    event(str(verdict.reason))
    expected = expected_auth(lines)
    if expected is not None:
        assert (verdict.status, verdict.reason) == (400, expected), lines
        return
    if path == "/health":
        assert verdict.allowed  # a public operation: a well-formed token is not even read
        return
    if not lines:
        assert verdict.reason == "token.missing"
        return
    scheme, token = credentials(lines[0]) or ("", "")
    if scheme.lower() == "dpop":
        assert verdict.reason == "dpop.proof_missing"  # no DPoP header was sent (DPOP-17)
    elif scheme.lower() != "bearer":
        assert verdict.reason == "token.unsupported_scheme"
    else:
        # Only a token minted by the issuer, exactly as minted, verifies; the rest is a token.* refusal.
        assert verdict.allowed == (token in MINTED), (lines, verdict)
        if not verdict.allowed:
            assert verdict.status == 401
            assert (verdict.reason or "").startswith("token.")


@fuzz(150)
@given(
    mask=st.integers(0, 2**8 - 1),
    dpop=st.booleans(),
    valid=st.booleans(),
    path=st.sampled_from(["/accounts", "/payments", "/health"]),
)
def test_AUTH_06_scheme_case_does_not_change_the_decision(
    mask: int, dpop: bool, valid: bool, path: str
) -> None:
    method = "POST" if path == "/payments" else "GET"
    token = ISSUER.mint(dpop_key=KEY if dpop else None)
    if not valid:
        token = token[:-2] + ("AA" if token[-2:] != "AA" else "BA")
    verdicts = []
    for scheme in ("DPoP" if dpop else "Bearer", flip_case("dpop" if dpop else "bearer", mask)):
        headers = [("authorization", f"{scheme} {token}")]
        if dpop:
            headers.append(("dpop", KEY.proof(method, ORIGIN + path, access_token=token)))
        verdicts.append(
            decide(GUARD, EVENTS, make_facts(method, path, headers=headers), secrets=[token, headers[-1][1]])
        )
    assert verdicts[0] == verdicts[1]


# -- invariance: unrelated headers and header-name case -------------------------------------------


COMMON = [("x-fapi-interaction-id", "c770aef3-6784-41f7-8e0e-ff5f97bddb3a")]


@st.composite
def base_requests(draw: st.DrawFn) -> tuple[str, str, str]:
    """``(kind of credentials, method, path)``: valid or broken credentials, allowed or refused;
    :func:`_credentials` makes fresh ones for each presentation (a proof is single-use)."""
    kind = draw(st.sampled_from(["bearer", "bearer-bad", "none", "dpop", "dpop-bad", "basic", "scope"]))
    path = (
        "/payments" if kind == "scope" else draw(st.sampled_from(["/accounts", "/accounts/a-1", "/health"]))
    )
    return kind, "POST" if path == "/payments" else "GET", path


def _credentials(kind: str, method: str, path: str) -> list[tuple[str, str]]:
    if kind in ("bearer", "scope"):
        return [("authorization", "Bearer " + ISSUER.mint())]
    if kind == "bearer-bad":
        return [("authorization", "Bearer " + ISSUER.mint(audience="https://other.example"))]
    if kind == "basic":
        return [("authorization", "Basic dXNlcjpwYXNz")]
    if kind in ("dpop", "dpop-bad"):
        token = ISSUER.mint(dpop_key=KEY)
        signer = KEY if kind == "dpop" else OTHER_KEY
        return [
            ("authorization", "DPoP " + token),
            ("dpop", signer.proof(method, ORIGIN + path, access_token=token)),
        ]
    return []


def _secrets(headers: list[tuple[str, str]]) -> list[str]:
    return [v for k, v in headers if k.lower() in ("authorization", "dpop")]


@fuzz(150)
@given(
    base=base_requests(),
    extra=st.lists(unrelated_header, min_size=1, max_size=6),
    positions=st.lists(st.integers(0, 10), min_size=6, max_size=6),
)
def test_unrelated_headers_do_not_change_the_decision(
    base: tuple[str, str, str], extra: list[tuple[str, str]], positions: list[int]
) -> None:
    kind, method, path = base
    plain = COMMON + _credentials(kind, method, path)
    first = decide(GUARD, EVENTS, make_facts(method, path, headers=plain), secrets=_secrets(plain))
    noisy = COMMON + _credentials(kind, method, path)  # fresh credentials: a proof is single-use
    for (name, value), at in zip(extra, positions, strict=False):
        noisy.insert(at % (len(noisy) + 1), (name, value))
    second = decide(GUARD, EVENTS, make_facts(method, path, headers=noisy), secrets=_secrets(noisy))
    assert first == second, (kind, extra)


@fuzz(100)
@given(base=base_requests(), masks=st.lists(st.integers(0, 2**24 - 1), min_size=4, max_size=4))
def test_header_name_case_does_not_change_the_decision(base: tuple[str, str, str], masks: list[int]) -> None:
    kind, method, path = base
    plain = COMMON + _credentials(kind, method, path)
    first = decide(GUARD, EVENTS, make_facts(method, path, headers=plain), secrets=_secrets(plain))
    again = COMMON + _credentials(kind, method, path)
    cased = [(flip_case(name, mask), value) for (name, value), mask in zip(again, masks * 2, strict=False)]
    second = decide(GUARD, EVENTS, make_facts(method, path, headers=cased), secrets=_secrets(cased))
    assert first == second


# -- the DPoP header ---------------------------------------------------------------------------------


def _mutate(proof: str, op: str, at: int, char: str) -> str:
    i = at % (len(proof) + 1)
    if op == "flip":
        j = min(i, len(proof) - 1)
        replacement = B64URL[(B64URL.find(proof[j]) + 1) % len(B64URL)] if proof[j] != "." else "A"
        return proof[:j] + replacement + proof[j + 1 :]
    if op == "insert":
        return proof[:i] + char + proof[i:]
    if op == "delete":
        j = min(i, len(proof) - 1)
        return proof[:j] + proof[j + 1 :]
    if op == "pad":
        h, p, s = proof.split(".")
        return f"{h}.{p}=.{s}" if at % 2 else proof + "=="
    if op == "segments":
        parts = proof.split(".")
        return ".".join(parts[: at % 3] + parts + ["", "x"][: at % 3])
    if op == "swap":
        h, p, s = proof.split(".")
        return f"{p}.{h}.{s}"
    if op == "signature":
        h, p, _ = proof.split(".")
        return f"{h}.{p}.{b64url(char.encode() * (at % 80))}"
    return proof


proof_lines = st.lists(
    st.one_of(
        st.just("valid"),
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "pad", "segments", "swap", "signature"]),
            st.integers(0, 2000),
            st.sampled_from([*'=+/ \t.,A_-~\\"\x00\n', "é"]),
        ),
        header_text,
    ),
    max_size=3,
)


@fuzz(300)
@given(lines=proof_lines, extra_case=st.booleans())
def test_DPOP_01_02_only_the_untouched_proof_is_accepted(lines: list[Any], extra_case: bool) -> None:
    token = ISSUER.mint(dpop_key=KEY)
    proof = KEY.proof("GET", URL, access_token=token)
    values = []
    for line in lines:
        if line == "valid":
            values.append(proof)
        elif isinstance(line, tuple):
            values.append(_mutate(proof, *line))
        else:
            values.append(line)
    names = ["dpop", "DPoP"] if extra_case else ["dpop"]
    headers = [("authorization", "DPoP " + token)] + [
        (names[i % len(names)], v) for i, v in enumerate(values)
    ]
    verdict = decide(GUARD, EVENTS, make_facts("GET", "/accounts", headers=headers), secrets=[token, proof])
    if not values:
        assert verdict.reason == "dpop.proof_missing"
    elif len(values) > 1 or "," in values[0]:
        assert verdict.reason == "dpop.multiple_proofs"
    elif values[0] == proof:
        assert verdict.allowed
    else:
        assert not verdict.allowed, verdict
        assert (verdict.reason or "").startswith("dpop."), verdict
        assert verdict.status == 401


# -- refusals spend nothing ------------------------------------------------------------------------

broken_tokens = st.sampled_from(
    ["signature", "expired", "audience", "unbound", "other-key", "scope", "typ", "issuer", "kid"]
)


def _broken(kind: str) -> str:
    if kind == "signature":
        token = ISSUER.mint(dpop_key=KEY)
        return token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBA")
    claims: dict[str, Any] = {
        "expired": {"exp": 1_000_000, "iat": 999_000},
        "issuer": {"iss": "https://as.bank.example/"},
    }.get(kind, {})
    header: dict[str, Any] = {"typ": "JWT"} if kind == "typ" else {"kid": "k2"} if kind == "kid" else {}
    return ISSUER.mint(
        claims,
        header=header,
        audience="https://other.example" if kind == "audience" else "https://api.bank.example",
        scope="payments" if kind == "scope" else "accounts",
        dpop_key=None if kind == "unbound" else OTHER_KEY if kind == "other-key" else KEY,
    )


@fuzz(80)
@given(kind=broken_tokens, jti=st.text(st.sampled_from(B64URL), min_size=1, max_size=40))
def test_DPOP_13_a_refused_request_does_not_use_up_the_jti(kind: str, jti: str) -> None:
    token = _broken(kind)
    proof = KEY.proof("GET", URL, access_token=token, jti=jti)
    headers = [("authorization", "DPoP " + token), ("dpop", proof)]
    verdict = decide(GUARD, EVENTS, make_facts("GET", "/accounts", headers=headers), secrets=[token, proof])
    assert not verdict.allowed
    assert verdict.reason is not None, verdict
    assert verdict.reason.startswith(("token.", "scope.")), verdict
    replay_key = "dpop:jti:" + b64url(hashlib.sha256(jti.encode()).digest())
    assert GUARD.store.execute(Get(replay_key)) is None


@fuzz(40)
@given(kinds=st.lists(broken_tokens, min_size=1, max_size=6), dpop=st.booleans())
def test_OWASP_14_unverified_client_ids_spend_no_quota(kinds: list[str], dpop: bool) -> None:
    guard, events = new_guard(token_policy(ratelimit={"enabled": True, "tiers": {"default": "2/hour"}}))
    for kind in kinds:
        if kind == "unbound" and not dpop:
            kind = "signature"  # an unbound token is a valid Bearer token
        token = _broken(kind)
        scheme = "DPoP" if dpop else "Bearer"
        headers = [("authorization", f"{scheme} {token}")]
        if dpop:
            headers.append(("dpop", KEY.proof("GET", URL, access_token=token)))
        verdict = decide(guard, events, make_facts("GET", "/accounts", headers=headers), secrets=[token])
        assert not verdict.allowed
        assert verdict.reason != "ratelimit.exceeded"
        assert events.events[-1].client_id is None or verdict.reason == "scope.insufficient"
    outcomes = []
    for _ in range(3):
        token = ISSUER.mint()  # the same client_id the broken tokens claimed (tpp-client-1)
        facts = make_facts("GET", "/accounts", headers=[("authorization", "Bearer " + token)])
        outcomes.append(decide(guard, events, facts, secrets=[token]).reason)
    assert outcomes == [None, None, "ratelimit.exceeded"]


def test_credentials_grammar_matches_the_rfc_examples() -> None:
    """The oracle above reads RFC 9110 §11.4 as the examples of RFC 6750 §2.1 and RFC 9449 §7.1 do."""
    assert credentials("Bearer mF_9.B5f-4.1JqM") == ("Bearer", "mF_9.B5f-4.1JqM")
    assert credentials("DPoP Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU") is not None
    assert credentials("Bearer abc==") == ("Bearer", "abc==")
    for bad in ("Bearer a b", "Bearer  abc", "Bearer =abc", "Bearer abc\n", "Bearer", "Bearer a=b"):
        assert credentials(bad) is None, bad


# -- tokens outside the header ------------------------------------------------------------------------


def _spell(name: str, mask: int) -> str:
    """``name`` with some characters percent-encoded (either hex case), as a client may send it."""
    out = []
    for i, c in enumerate(name):
        if mask >> i & 1:
            escape = f"%{ord(c):02X}"
            out.append(escape.lower() if mask >> (i + 16) & 1 else escape)
        else:
            out.append(c)
    return "".join(out)


@fuzz(150)
@given(
    pairs=st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from(["access_token", "access_tokens", "Access_token", "page"]), header_text
            ),
            st.text(st.sampled_from(B64URL + "."), max_size=20),
        ),
        max_size=3,
    ),
    masks=st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3),
    where=st.sampled_from(["query", "form", "json-body"]),
    header=st.booleans(),
)
def test_AUTH_04_05_tokens_outside_the_header(
    pairs: list[tuple[str, str]], masks: list[int], where: str, header: bool
) -> None:
    spelled = [
        (_spell(k, m).replace("&", "%26").replace("=", "%3D"), v)
        for (k, v), m in zip(pairs, masks, strict=False)
    ]
    encoded = "&".join(f"{k}={v}" for k, v in spelled)
    # The names a framework's parser sees (RFC 3986 percent-decoding, "+" as space in forms).
    from urllib.parse import parse_qsl

    present = any(k == "access_token" for k, _ in parse_qsl(encoded, keep_blank_values=True))
    token = ISSUER.mint()
    headers = [("authorization", "Bearer " + token)] if header else []
    target, body = "/health", None
    if where == "query":
        target += "?" + encoded
    else:
        target = "/callbacks"
        body = encoded.encode()
        kind = "application/x-www-form-urlencoded" if where == "form" else "application/json"
        headers.append(("content-type", kind + draw_charset(masks[0])))
    verdict = decide(
        GUARD,
        EVENTS,
        make_facts("GET" if where == "query" else "POST", target, headers=headers, body=body),
        secrets=[token],
    )
    if present and where != "json-body":
        expected = "authorization.multiple_methods" if header else "authorization.token_outside_header"
        assert verdict.reason == expected, (encoded, verdict)
    else:
        assert verdict.allowed, (encoded, verdict)


def draw_charset(mask: int) -> str:
    return ["", "; charset=utf-8", ";charset=UTF-8", " ; q=1"][mask % 4]


addresses = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(
        ["10.0.0.7", "unknown", "", "198.51.100.1, 10.0.0.7", "::ffff:10.1.1.1", "garbage, 1.2.3.4"]
    ),
)


@fuzz(40)
@given(
    forwarded=st.lists(st.lists(addresses, max_size=2), min_size=4, max_size=4), trusted_peer=st.booleans()
)
def test_OWASP_14_forwarded_for_counts_only_from_trusted_proxies(
    forwarded: list[list[str]], trusted_peer: bool
) -> None:
    """The pre-authentication limit counts the client address; X-Forwarded-For is read only from a
    trusted proxy (docs/policy.md ``trusted_proxies``), so from any other peer it changes nothing."""
    guard, events = new_guard(
        token_policy(
            trusted_proxies=["10.0.0.0/8"],
            ratelimit={
                "enabled": True,
                "tiers": {"default": "100/minute"},
                "preauth": {"limits": "3/hour"},
            },
        )
    )
    peer = "10.9.9.9" if trusted_peer else "203.0.113.9"
    reasons = []
    for lines in forwarded:
        headers = [("x-forwarded-for", line) for line in lines]
        reasons.append(decide(guard, events, make_facts("GET", "/health", headers=headers, peer=peer)).reason)
        if not trusted_peer:
            assert events.events[-1].client_address == peer
    if not trusted_peer:
        assert reasons == [None, None, None, "ratelimit.preauth_exceeded"]
