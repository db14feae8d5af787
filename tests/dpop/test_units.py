"""Unit tests of the pure DPoP building blocks (RFC 9449, RFC 3986 §6.2, RFC 7638).

* ``normal_htu`` / ``normal_path`` / ``request_path``: the RFC 3986 §6.2.2-6.2.3 normalisation
  DPOP-10 asks for (case, percent-encoding, dot segments, default ports, IPv6), what it refuses
  (userinfo, non-http schemes, broken escapes), and properties: idempotence, and equivalence of
  percent-encoded and plain unreserved characters;
* ``access_token_hash`` (STANDARDS §11 V2) and the RFC 7638 ``thumbprint`` (V1);
* ``NonceIssuer``: round trip, tampering, other keys, lifetime and clock skew on an injected
  clock, the nonce alphabet (RFC 9449 §8.1 ``NQCHAR``), uniqueness, key length;
* ``DPoPVerifier``: the parsed-key cache (one parse per key; a JWK with extra members is never
  served from it) and the replay key (a hash of the ``jti`` alone, DPOP-13).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from bankguard.policy_dpop import Origin
from bankguard.testing import DPoPKey
from bankguard.tokens import dpop as dpop_module
from bankguard.tokens.dpop import (
    DPoPVerifier,
    ProofError,
    access_token_hash,
    normal_htu,
    normal_path,
    request_path,
)
from bankguard.tokens.dpop_nonce import NonceIssuer
from bankguard.tokens.jose import JoseError
from bankguard.tokens.jwk import thumbprint, verification_key

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ORIGIN = "https://api.bank.example"
URL = ORIGIN + "/accounts"
TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
#: RFC 9449 §8.1: NQCHAR = %x21 / %x23-5B / %x5D-7E
NQCHAR = frozenset(chr(c) for c in (0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)))
PROPERTY = settings(max_examples=200, deadline=None)

CLIENT = DPoPKey("ES256")
OTHER = DPoPKey("ES256")


# -- normal_htu: RFC 3986 §6.2.2 / §6.2.3 -------------------------------------------------------------


def test_DPOP_10_rfc_example_equivalence() -> None:
    assert normal_htu("HTTPS://RS.example:443/a/./b?x=1#f") == normal_htu("https://rs.example/a/b")
    assert normal_htu("https://rs.example/a/b") == ("https", "rs.example", "/a/b")


@pytest.mark.parametrize(
    ("htu", "expected"),
    [
        pytest.param("HtTpS://Rs.Example/a", ("https", "rs.example", "/a"), id="scheme-host-case"),
        pytest.param("https://rs.example/A", ("https", "rs.example", "/A"), id="path-case-kept"),
        pytest.param("https://rs.example", ("https", "rs.example", "/"), id="empty-path"),
        pytest.param("https://rs.example?x=1", ("https", "rs.example", "/"), id="empty-path-query"),
        pytest.param("https://rs.example/a?b=1#c", ("https", "rs.example", "/a"), id="query-fragment"),
        pytest.param("https://rs.example/a#f?x", ("https", "rs.example", "/a"), id="fragment-first"),
        pytest.param("https://rs.example:443/", ("https", "rs.example", "/"), id="https-443"),
        pytest.param("http://rs.example:80/", ("http", "rs.example", "/"), id="http-80"),
        pytest.param("https://rs.example:/a", ("https", "rs.example", "/a"), id="empty-port"),
        pytest.param("https://rs.example:8443/", ("https", "rs.example:8443", "/"), id="https-8443"),
        pytest.param("https://rs.example:80/", ("https", "rs.example:80", "/"), id="https-80"),
        pytest.param("http://rs.example:443/", ("http", "rs.example:443", "/"), id="http-443"),
        pytest.param("https://[2001:DB8::1]/x", ("https", "[2001:db8::1]", "/x"), id="ipv6"),
        pytest.param("https://[2001:db8::1]:443/x", ("https", "[2001:db8::1]", "/x"), id="ipv6-default-port"),
        pytest.param("https://[2001:db8::1]:8443/x", ("https", "[2001:db8::1]:8443", "/x"), id="ipv6-port"),
        pytest.param("https://[::1]/", ("https", "[::1]", "/"), id="ipv6-loopback"),
        pytest.param("https://127.0.0.1:8443/a", ("https", "127.0.0.1:8443", "/a"), id="ipv4"),
        pytest.param("https://rs.example/%7e%7E", ("https", "rs.example", "/~~"), id="tilde-decoded"),
        pytest.param("https://rs.example/%41%2d%5F%2E", ("https", "rs.example", "/A-_."), id="unreserved"),
        pytest.param("https://rs.example/%c3%a9", ("https", "rs.example", "/%C3%A9"), id="hex-upper"),
        pytest.param("https://rs.example/a%2fb", ("https", "rs.example", "/a%2Fb"), id="slash-kept"),
        pytest.param("https://rs.example/a%3Fb%23c", ("https", "rs.example", "/a%3Fb%23c"), id="gen-delims"),
        pytest.param("https://rs.example/%25", ("https", "rs.example", "/%25"), id="percent-kept"),
        pytest.param("https://rs.example/a/./b/../c", ("https", "rs.example", "/a/c"), id="dots"),
        pytest.param("https://rs.example/a/b/..", ("https", "rs.example", "/a/"), id="trailing-dotdot"),
        pytest.param("https://rs.example/a/b/.", ("https", "rs.example", "/a/b/"), id="trailing-dot"),
        pytest.param("https://rs.example/../../a", ("https", "rs.example", "/a"), id="above-root"),
        pytest.param("https://rs.example/a/%2E%2e/b", ("https", "rs.example", "/b"), id="encoded-dots"),
        pytest.param("https://rs.example/a..b/.c", ("https", "rs.example", "/a..b/.c"), id="dots-in-names"),
        pytest.param("https://rs.example/a//b", ("https", "rs.example", "/a//b"), id="empty-segment-kept"),
        pytest.param(
            "https://rs.example/accounts/", ("https", "rs.example", "/accounts/"), id="trailing-slash"
        ),
        pytest.param("https://rs.example/a;p=1", ("https", "rs.example", "/a;p=1"), id="sub-delims"),
    ],
)
def test_DPOP_10_normal_htu(htu: str, expected: tuple[str, str, str]) -> None:
    assert normal_htu(htu) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("https://rs.example/accounts/", "https://rs.example/accounts", id="trailing-slash"),
        pytest.param("https://rs.example/a%2Fb", "https://rs.example/a/b", id="encoded-slash"),
        pytest.param("https://rs.example/A", "https://rs.example/a", id="path-case"),
        pytest.param("https://rs.example/", "https://other.example/", id="host"),
        pytest.param("https://rs.example/", "http://rs.example/", id="scheme"),
        pytest.param("https://rs.example:8443/", "https://rs.example/", id="port"),
        pytest.param("https://rs.example./", "https://rs.example/", id="trailing-dot-host"),
        pytest.param("https://rs.example/a%20b", "https://rs.example/a+b", id="plus-is-not-space"),
    ],
)
def test_DPOP_10_not_equivalent(a: str, b: str) -> None:
    assert normal_htu(a) is not None
    assert normal_htu(b) is not None
    assert normal_htu(a) != normal_htu(b)


@pytest.mark.parametrize(
    "htu",
    [
        pytest.param("https://user@rs.example/", id="user"),
        pytest.param("https://user:pw@rs.example/", id="user-password"),
        pytest.param("https://:pw@rs.example/", id="password"),
        pytest.param("https://@rs.example/", id="empty-userinfo"),
        pytest.param("https://rs.example@evil.example/", id="confusable-userinfo"),
        pytest.param("ftp://rs.example/", id="ftp"),
        pytest.param("wss://rs.example/", id="wss"),
        pytest.param("file:///etc/passwd", id="file"),
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("urn:ietf:x", id="urn"),
        pytest.param("/accounts", id="relative"),
        pytest.param("//rs.example/a", id="scheme-relative"),
        pytest.param("https:rs.example/a", id="no-authority"),
        pytest.param("https:///a", id="empty-host"),
        pytest.param("", id="empty"),
        pytest.param("https://rs.example/%zz", id="bad-escape"),
        pytest.param("https://rs.example/%4", id="short-escape"),
        pytest.param("https://rs.example/a%", id="trailing-percent"),
        pytest.param("https://rs.example/%g0", id="non-hex"),
        pytest.param("https://rs.example:0/", id="port-0"),
        pytest.param("https://rs.example:65536/", id="port-too-large"),
        pytest.param("https://rs.example:https/", id="port-name"),
        pytest.param("https://rs.example:-1/", id="port-negative"),
        pytest.param("https://[::1/", id="unclosed-ipv6"),
        pytest.param("https://rs.example/é", id="non-ascii"),
        pytest.param("https://rs.éxample/", id="non-ascii-host"),
        pytest.param("https://rs.example/a b", id="space"),
        pytest.param("https://rs.example/a\tb", id="tab"),
        pytest.param("https://rs.example/a\nb", id="newline"),
        pytest.param("https://rs.example/a\x00", id="nul"),
        pytest.param("https://rs.example\\@evil.example/", id="backslash"),
        pytest.param("https://rs.example/" + "a" * 5000, id="too-long"),
    ],
)
def test_DPOP_10_refused_htu(htu: str) -> None:
    assert normal_htu(htu) is None


# -- normal_path / request_path ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"", "/", id="empty"),
        pytest.param(b"/", "/", id="root"),
        pytest.param(b"/a%2fb", "/a%2Fb", id="encoded-slash"),
        pytest.param(b"/%7e", "/~", id="tilde"),
        pytest.param(b"/%c3%A9", "/%C3%A9", id="hex-upper"),
        pytest.param(b"/a b", "/a%20b", id="space-escaped"),
        pytest.param(b"/caf\xc3\xa9", "/caf%C3%A9", id="utf8-escaped"),
        pytest.param(b"/a/./b/../c/", "/a/c/", id="dots"),
        pytest.param(b"/%00", "/%00", id="nul-escape"),
        pytest.param(b"/\x00", "/%00", id="nul"),
        pytest.param(b'/a"<>', "/a%22%3C%3E", id="unsafe"),
    ],
)
def test_DPOP_10_normal_path(raw: bytes, expected: str) -> None:
    assert normal_path(raw) == expected


@pytest.mark.parametrize("raw", [b"/%zz", b"/%", b"/%2", b"/a%x1", b"/%%41"])
def test_DPOP_10_normal_path_refuses_broken_escapes(raw: bytes) -> None:
    assert normal_path(raw) is None


@pytest.mark.parametrize(
    ("raw", "decoded", "expected"),
    [
        pytest.param(b"/a%2Fb", "/a/b", "/a%2Fb", id="raw-wins"),
        pytest.param(b"/caf%c3%a9", "/café", "/caf%C3%A9", id="raw-escapes"),
        pytest.param(None, "/café", "/caf%C3%A9", id="decoded-escaped-again"),
        pytest.param(None, "/a b", "/a%20b", id="decoded-space"),
        pytest.param(None, "/accounts/", "/accounts/", id="decoded-trailing-slash"),
        pytest.param(b"*", "/x", "/x", id="raw-not-a-path"),
        pytest.param(b"https://rs.example/x", "/x", "/x", id="absolute-form"),
        pytest.param(b"/%zz", "/%zz", None, id="raw-broken"),
        pytest.param(None, "/\udcff", None, id="undecodable"),
    ],
)
def test_DPOP_10_request_path(raw: bytes | None, decoded: str, expected: str | None) -> None:
    assert request_path(raw, decoded) == expected


def test_DPOP_10_raw_and_decoded_request_paths_agree() -> None:
    for decoded in ("/accounts", "/accounts/123", "/café", "/a b/~x", "/a/"):
        raw = decoded.encode("utf-8")
        assert request_path(raw, decoded) == request_path(None, decoded)


# -- properties ---------------------------------------------------------------------------------------

_PATH_PIECES = st.sampled_from(
    [
        *"abcXYZ019-._~!$&'()*+,;=:@/",
        "%2F",
        "%2f",
        "%7e",
        "%7E",
        "%41",
        "%c3%a9",
        "%25",
        "%2E",
        ".",
        "..",
        " ",
        "é",
    ]
)
PATHS = st.lists(_PATH_PIECES, max_size=30).map(lambda pieces: "/" + "".join(pieces))


@PROPERTY
@given(path=PATHS)
def test_DPOP_10_normal_path_is_idempotent(path: str) -> None:
    once = normal_path(path.encode("utf-8"))
    assert once is not None
    assert once.isascii()
    assert once.startswith("/")
    assert normal_path(once.encode("ascii")) == once


@PROPERTY
@given(raw=st.binary(max_size=60))
def test_DPOP_10_normal_path_of_any_bytes_is_idempotent(raw: bytes) -> None:
    once = normal_path(b"/" + raw)
    if once is not None:
        assert normal_path(once.encode("ascii")) == once


@PROPERTY
@given(
    scheme=st.sampled_from(["https", "HTTPS", "http", "HtTp"]),
    host=st.sampled_from(["rs.example", "RS.Example", "127.0.0.1", "[2001:DB8::1]", "[::1]"]),
    port=st.sampled_from(["", ":", ":80", ":443", ":8443"]),
    path=PATHS.filter(lambda p: " " not in p and "é" not in p),
    tail=st.sampled_from(["", "?x=1", "#f", "?a#b"]),
)
def test_DPOP_10_normal_htu_is_idempotent(scheme: str, host: str, port: str, path: str, tail: str) -> None:
    once = normal_htu(f"{scheme}://{host}{port}{path}{tail}")
    assert once is not None
    again = normal_htu(f"{once[0]}://{once[1]}{once[2]}")
    assert again == once


def _encode(text: str, flags: list[bool], upper: list[bool]) -> str:
    out = []
    for c, encode, up in zip(text, flags, upper, strict=True):
        if encode:
            hexa = f"{ord(c):02x}"
            out.append("%" + (hexa.upper() if up else hexa))
        else:
            out.append(c)
    return "".join(out)


@st.composite
def unreserved_encodings(draw: st.DrawFn) -> tuple[str, str]:
    text = draw(st.text(alphabet=UNRESERVED + "/", min_size=1, max_size=40))
    flags = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    upper = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    flags = [
        f and c != "/" for f, c in zip(flags, text, strict=True)
    ]  # "/" is reserved: %2F is a different path
    return text, _encode(text, flags, upper)


@PROPERTY
@given(pair=unreserved_encodings())
def test_DPOP_10_percent_encoded_unreserved_is_equivalent(pair: tuple[str, str]) -> None:
    plain, encoded = pair
    assert normal_path(b"/" + encoded.encode()) == normal_path(b"/" + plain.encode())
    assert normal_htu(f"https://rs.example/{encoded}") == normal_htu(f"https://rs.example/{plain}")
    if "." not in plain:
        assert normal_path(b"/" + encoded.encode()) == "/" + plain


@PROPERTY
@given(c=st.sampled_from(":/?#[]@!$&'()*+,;=%\"<>\\^`{|} "), upper=st.booleans())
def test_DPOP_10_reserved_escapes_are_never_decoded(c: str, upper: bool) -> None:
    hexa = f"{ord(c):02x}"
    escaped = "%" + (hexa.upper() if upper else hexa)
    assert normal_path(f"/a{escaped}b".encode()) == f"/a%{hexa.upper()}b"


# -- access_token_hash and thumbprint (STANDARDS §11 V1, V2) -----------------------------------------


def test_DPOP_14_V2_access_token_hash() -> None:
    assert access_token_hash(TOKEN) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_DPOP_14_ath_is_over_the_exact_string() -> None:
    assert access_token_hash("abc=") != access_token_hash("abc")
    expected = base64.urlsafe_b64encode(hashlib.sha256(b"abc=").digest()).rstrip(b"=").decode()
    assert access_token_hash("abc=") == expected
    assert "=" not in access_token_hash("x")
    assert len(access_token_hash("x")) == 43


V1_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
}
V1_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def test_DPOP_15_V1_thumbprint() -> None:
    assert thumbprint(V1_JWK) == V1_JKT


def test_DPOP_15_thumbprint_uses_required_members_only() -> None:
    reordered = dict(reversed(list(V1_JWK.items())))
    assert thumbprint(reordered) == V1_JKT
    extra = {**V1_JWK, "kid": "k1", "alg": "ES256", "use": "sig", "d": "AAAA"}
    assert thumbprint(extra) == V1_JKT


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        pytest.param({k: v for k, v in V1_JWK.items() if k != "y"}, "jwk_member_missing", id="no-y"),
        pytest.param({**V1_JWK, "x": 1}, "jwk_member_missing", id="x-number"),
        pytest.param({"kty": "oct", "k": "AAAA"}, "jwk_kty_not_supported", id="oct"),
        pytest.param({"kty": "RSA", "n": "AQAB"}, "jwk_member_missing", id="rsa-no-e"),
    ],
)
def test_DPOP_15_thumbprint_refuses_incomplete_keys(jwk: dict[str, Any], reason: str) -> None:
    with pytest.raises(JoseError) as caught:
        thumbprint(jwk)
    assert caught.value.reason == reason


@pytest.mark.parametrize("alg", ["ES256", "PS256", "EdDSA"])
def test_DPOP_15_thumbprint_matches_an_independent_computation(alg: str) -> None:
    key = CLIENT if alg == "ES256" else DPoPKey(alg)
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
    jwk = key.public_jwk
    canonical = "{" + ",".join(f'"{m}":"{jwk[m]}"' for m in members[jwk["kty"]]) + "}"
    digest = hashlib.sha256(canonical.encode()).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert thumbprint(jwk) == key.thumbprint == expected


# -- NonceIssuer ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def issuer(clock: Clock, secret: bytes = b"k" * 32, lifetime: float = 300.0) -> NonceIssuer:
    return NonceIssuer(secret, lifetime=lifetime, rotate_after=120.0, clock=clock)


def test_DPOP_23_nonce_roundtrip() -> None:
    clock = Clock()
    nonces = issuer(clock)
    nonce = nonces.issue()
    assert nonces.age(nonce) == 0.0
    clock.now += 3.25
    assert nonces.age(nonce) == pytest.approx(3.25, abs=0.001)


def _unb64(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_DPOP_23_tampered_nonce_is_refused() -> None:
    nonces = issuer(Clock())
    nonce = nonces.issue()
    raw = _unb64(nonce)
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            tampered = _b64(raw[:i] + bytes([raw[i] ^ bit]) + raw[i + 1 :])
            assert tampered != nonce
            assert nonces.age(tampered) is None, (i, bit)
    for i, c in enumerate(nonce):
        replacement = "A" if c != "A" else "B"
        assert nonces.age(nonce[:i] + replacement + nonce[i + 1 :]) is None, i


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("A" * 44, id="zeros"),
        pytest.param("é" * 44, id="non-ascii"),
        pytest.param("=" * 44, id="padding"),
        pytest.param("eyJ7S_zG.eyJH0-Z.HX4w-7v", id="AS-nonce"),
    ],
)
def test_DPOP_25_foreign_values_are_not_nonces(value: str) -> None:
    assert issuer(Clock()).age(value) is None


def test_DPOP_25_nonce_of_another_key_is_refused() -> None:
    clock = Clock()
    ours, theirs = issuer(clock, b"a" * 32), issuer(clock, b"b" * 32)
    assert theirs.age(ours.issue()) is None
    assert ours.age(theirs.issue()) is None
    assert issuer(clock, b"a" * 32).age(ours.issue()) == 0.0  # same key: another replica accepts it


def test_DPOP_25_truncated_or_extended_nonce_is_refused() -> None:
    nonces = issuer(Clock())
    nonce = nonces.issue()
    for value in (nonce[:-1], nonce + "A", nonce + "=", " " + nonce, nonce[:-4]):
        assert nonces.age(value) is None


def test_DPOP_23_expired_nonce_is_refused() -> None:
    clock = Clock()
    nonces = issuer(clock, lifetime=300.0)
    nonce = nonces.issue()
    clock.now = NOW + 300.0
    assert nonces.age(nonce) == pytest.approx(300.0)
    clock.now = NOW + 300.01
    assert nonces.age(nonce) is None


def test_DPOP_23_nonce_from_the_future_is_refused() -> None:
    clock = Clock(NOW + 10)
    nonces = issuer(clock)
    far = nonces.issue()
    clock.now = NOW + 4
    near = nonces.issue()
    clock.now = NOW
    assert nonces.age(far) is None  # issued 10 s "ahead": beyond the tolerated replica skew
    assert nonces.age(near) == 0.0  # within it: counted as fresh


def test_DPOP_23_nonce_syntax() -> None:
    nonces = issuer(Clock())
    values = [nonces.issue() for _ in range(1000)]
    assert len(set(values)) == 1000  # the same clock tick, still all different
    for value in values:
        assert value
        assert set(value) <= NQCHAR
        assert set(value) <= B64URL


@pytest.mark.parametrize("size", [0, 1, 16, 31])
def test_DPOP_23_short_nonce_key_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        NonceIssuer(b"k" * size, lifetime=300, rotate_after=120)


def test_DPOP_23_nonce_key_of_32_bytes_is_accepted() -> None:
    assert issuer(Clock(), secrets.token_bytes(32)).issue()


# -- DPoPVerifier: key cache and replay key ----------------------------------------------------------------


def make_verifier(**kw: Any) -> DPoPVerifier:
    options: dict[str, Any] = {
        "algorithms": ("ES256", "PS256", "EdDSA"),
        "origins": (Origin("https", "api.bank.example"),),
        "max_age": 60.0,
        "future_skew": 10.0,
        "max_proof_bytes": 8192,
        "clock": lambda: NOW,
    }
    options.update(kw)
    return DPoPVerifier(**options)


def make_proof(key: DPoPKey = CLIENT, **kw: Any) -> str:
    kw.setdefault("iat", NOW)
    return key.proof("GET", URL, access_token=TOKEN, **kw)


def verify(verifier: DPoPVerifier, proof: str) -> Any:
    return verifier.verify(proof, method="GET", raw_path=b"/accounts", path="/accounts", access_token=TOKEN)


def refused(verifier: DPoPVerifier, proof: str) -> str:
    with pytest.raises(ProofError) as caught:
        verify(verifier, proof)
    return caught.value.reason


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every JWK the verifier parses into a key (calls of ``verification_key``)."""
    seen: list[dict[str, Any]] = []
    original = verification_key

    def counting(jwk: Any, allowed: frozenset[str]) -> Any:
        seen.append(dict(jwk))
        return original(jwk, allowed)

    monkeypatch.setattr(dpop_module, "verification_key", counting)
    return seen


def test_DPOP_28_same_key_is_parsed_once(parses: list[dict[str, Any]]) -> None:
    verifier = make_verifier()
    for _ in range(5):
        assert verify(verifier, make_proof()).jkt == CLIENT.thumbprint
    assert len(verifier._keys) == 1
    assert len(parses) == 1
    assert verify(verifier, make_proof(OTHER)).jkt == OTHER.thumbprint
    assert len(verifier._keys) == 2
    assert len(parses) == 2


def _ec_d(key: DPoPKey) -> str:
    return _b64(key._key.private_numbers().private_value.to_bytes(32, "big"))


def test_DPOP_06_jwk_with_d_is_never_served_from_the_cache(parses: list[dict[str, Any]]) -> None:
    verifier = make_verifier()
    verify(verifier, make_proof())
    assert len(verifier._keys) == 1
    with_d = make_proof(header={"jwk": {**CLIENT.public_jwk, "d": _ec_d(CLIENT)}})
    assert refused(verifier, with_d) == "dpop.jwk_private_material"
    assert len(verifier._keys) == 1
    verify(verifier, make_proof())  # the clean key is still served from the cache
    assert len(parses) == 1


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        pytest.param({"p": "AQAB"}, "dpop.jwk_private_material", id="p"),
        pytest.param({"k": "AQAB"}, "dpop.jwk_private_material", id="k"),
        pytest.param({"alg": "ES384"}, "dpop.jwk_alg_mismatch", id="alg-ES384"),
        pytest.param({"alg": "none"}, "dpop.jwk_alg_mismatch", id="alg-none"),
        pytest.param({"use": "enc"}, "dpop.jwk_not_for_signatures", id="use-enc"),
        pytest.param({"key_ops": ["sign"]}, "dpop.jwk_not_for_verification", id="key-ops-sign"),
        pytest.param({"kid": 7}, "dpop.jwk_kid_not_string", id="kid-number"),
    ],
)
def test_DPOP_06_cached_key_with_extra_members_is_checked_again(extra: dict[str, Any], reason: str) -> None:
    verifier = make_verifier()
    verify(verifier, make_proof())
    assert refused(verifier, make_proof(header={"jwk": {**CLIENT.public_jwk, **extra}})) == reason
    assert len(verifier._keys) == 1


def test_DPOP_06_keys_with_extra_members_are_checked_once_per_distinct_header(
    parses: list[dict[str, Any]],
) -> None:
    verifier = make_verifier()
    verify(verifier, make_proof())
    with_kid = make_proof(header={"jwk": {**CLIENT.public_jwk, "kid": "client-1", "use": "sig"}})
    for _ in range(3):
        assert verify(verifier, with_kid).jkt == CLIENT.thumbprint
    # The key cache never serves a jwk with extra members; the exact header segment, once it
    # passed every check, is remembered as a whole.
    assert len(parses) == 2
    other = make_proof(header={"jwk": {**CLIENT.public_jwk, "kid": "client-2", "use": "sig"}})
    assert verify(verifier, other).jkt == CLIENT.thumbprint
    assert len(parses) == 3
    assert len(verifier._keys) == 1


def test_DPOP_06_a_remembered_header_never_admits_a_changed_one() -> None:
    verifier = make_verifier()
    verify(verifier, make_proof())
    with_d = make_proof(header={"jwk": {**CLIENT.public_jwk, "d": "AAAA"}})
    assert refused(verifier, with_d) == "dpop.jwk_private_material"
    assert refused(verifier, make_proof(header={"typ": "JWT"})) == "dpop.typ_not_dpop_jwt"
    assert (
        refused(verifier, make_proof(header={"jku": "https://evil.example/jwks"}))
        == "dpop.header_jku_refused"
    )


def test_DPOP_07_cached_key_is_not_reused_for_another_alg() -> None:
    verifier = make_verifier()
    verify(verifier, make_proof())
    assert refused(verifier, make_proof(header={"alg": "PS256"})) == "dpop.jwk_alg_not_allowed"
    assert refused(verifier, make_proof(header={"alg": "EdDSA"})) == "dpop.jwk_alg_not_allowed"


def test_DPOP_07_off_curve_point_after_the_cache_was_filled() -> None:
    verifier = make_verifier()
    verify(verifier, make_proof())
    y = _unb64(CLIENT.public_jwk["y"])
    bad = {**CLIENT.public_jwk, "y": _b64(y[:-1] + bytes([y[-1] ^ 1]))}
    assert refused(verifier, make_proof(header={"jwk": bad})) == "dpop.jwk_invalid"


def test_DPOP_28_key_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpop_module, "_KEY_CACHE_ENTRIES", 3)
    verifier = make_verifier()
    for _ in range(7):
        verify(verifier, make_proof(DPoPKey("ES256")))
        assert len(verifier._keys) <= 3


def _resigned(proof: str, key: DPoPKey) -> str:
    """The same header and claims with a fresh ECDSA signature."""
    h, p, _ = proof.split(".")
    signing_input = f"{h}.{p}".encode()
    r, s = decode_dss_signature(key._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return f"{h}.{p}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def test_DPOP_13_replay_key_depends_on_the_jti_alone() -> None:
    verifier = make_verifier()
    jti = secrets.token_urlsafe(16)
    first = make_proof(jti=jti)
    second = _resigned(first, CLIENT)
    assert second != first
    other_key = make_proof(OTHER, jti=jti)
    other_claims = make_proof(jti=jti, claims={"extra": 1}, iat=NOW - 5)
    keys = {verify(verifier, p).replay_key for p in (first, second, other_key, other_claims)}
    assert len(keys) == 1
    (key,) = keys
    assert jti not in key
    assert verify(verifier, make_proof(jti=jti + "x")).replay_key != key
    assert verify(verifier, make_proof()).replay_key != key


@PROPERTY
@given(a=st.text(min_size=1, max_size=256), b=st.text(min_size=1, max_size=256))
def test_DPOP_13_replay_keys_of_different_jtis_differ(a: str, b: str) -> None:
    verifier = make_verifier()
    key_a = verify(verifier, make_proof(jti=a)).replay_key
    key_b = verify(verifier, make_proof(jti=b)).replay_key
    assert (key_a == key_b) == (a == b)
    assert len(key_a) < 64


def test_DPOP_13_jti_length_cap() -> None:
    verifier = make_verifier()
    assert verify(verifier, make_proof(jti="j" * 256)).replay_key
    assert refused(verifier, make_proof(jti="j" * 257)) == "dpop.jti_too_long"


def test_DPOP_10_verifier_compares_the_raw_path() -> None:
    verifier = make_verifier()
    value = CLIENT.proof("GET", ORIGIN + "/a%2Fb", access_token=TOKEN, iat=NOW)
    ok = verifier.verify(value, method="GET", raw_path=b"/a%2fb", path="/a/b", access_token=TOKEN)
    assert ok.jkt == CLIENT.thumbprint
    with pytest.raises(ProofError) as caught:
        verifier.verify(value, method="GET", raw_path=b"/a/b", path="/a/b", access_token=TOKEN)
    assert caught.value.reason == "dpop.htu_path_mismatch"


def test_DPOP_11_origin_prefix() -> None:
    verifier = make_verifier(origins=(Origin("https", "api.bank.example", "/v1"),))
    value = CLIENT.proof("GET", ORIGIN + "/v1/accounts", access_token=TOKEN, iat=NOW)
    assert verify(verifier, value).jkt == CLIENT.thumbprint
    assert refused(verifier, make_proof()) == "dpop.htu_path_mismatch"


def test_DPOP_12_window_edges_on_the_verifier_clock() -> None:
    verifier = make_verifier()
    assert verify(verifier, make_proof(iat=NOW - 60)).iat == NOW - 60
    assert verify(verifier, make_proof(iat=NOW + 10)).iat == NOW + 10
    assert refused(verifier, make_proof(iat=NOW - 60.5)) == "dpop.iat_too_old"
    assert refused(verifier, make_proof(iat=NOW + 10.5)) == "dpop.iat_in_future"
    assert verifier.replay_ttl > 60 + 10


def test_DPOP_14_ath_is_checked_against_the_presented_token() -> None:
    verifier = make_verifier()
    value = make_proof()
    with pytest.raises(ProofError) as caught:
        verifier.verify(
            value, method="GET", raw_path=b"/accounts", path="/accounts", access_token=TOKEN + "="
        )
    assert caught.value.reason == "dpop.ath_mismatch"


def test_DPOP_28_proof_size_cap() -> None:
    verifier = make_verifier(max_proof_bytes=1024)
    assert refused(verifier, make_proof(claims={"pad": "x" * 1000})) == "dpop.proof_too_large"


def test_unit_proof_claims_json_is_what_was_signed() -> None:
    """Sanity check of the helper used above: the proof carries the ath of TOKEN (V2)."""
    payload = json.loads(_unb64(make_proof().split(".")[1]))
    assert payload["ath"] == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
