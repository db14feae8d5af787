"""Fuzzing the forwarded client-certificate headers: RFC 9440, Envoy XFCC and nginx escaped PEM.

Properties (STANDARDS FWD-01, FWD-03, FWD-04, FWD-08..FWD-11, FWD-13, MTLS-01..MTLS-03, MTLS-10;
docs/errors.md ``malformed-client-certificate``; docs/policy.md ``client_cert``):

* each parser returns None (no field), the certificate, or ``CertSourceError`` with a documented
  reason, whatever the field lines hold (random bytes, truncated or bit-flipped DER, base64url or
  padded base64, PEM with other line lengths, quoting games); an accepted value is in the strict
  form the docs give, and the certificate's DER re-encodes exactly and has the right thumbprint;
* XFCC: elements written with any quoting of ``,``/``;``/``=``/``"``/``\\`` in their values parse to
  the number of elements written; ``Hash`` must match, keys must not repeat;
* through the guard, from a trusted proxy, the decision is the one the parser's verdict implies
  for a certificate-bound token (allow, ``token.certificate_missing``/``_mismatch``, or the parser's
  400/431), the same on a repeated request (cached path) as on the first;
* from an untrusted peer the same header changes nothing: the decision equals that of the request
  without it, and the event notes ``client_cert.untrusted_header_ignored``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import event, example, given
from hypothesis import strategies as st

from bankguard import Policy
from bankguard._pki_testing import TestPKI
from bankguard.mtls.sources import (
    CertSourceError,
    PresentedCertificate,
    from_nginx,
    from_rfc9440,
    from_xfcc,
    thumbprint,
)
from bankguard.request import Headers
from bankguard.testing import make_facts

from .conftest import (
    AUDIENCE,
    ISS,
    ISSUER,
    attempt,
    check_decision,
    decide,
    documented_statuses,
    fuzz,
    header_text,
    new_guard,
)

PKI = TestPKI()
LEAF, _ = PKI.leaf("tpp.example")
OTHER, _ = PKI.self_signed("other.example")
DER = LEAF.public_bytes(serialization.Encoding.DER)
OTHER_DER = OTHER.public_bytes(serialization.Encoding.DER)
PEM = LEAF.public_bytes(serialization.Encoding.PEM).decode()
OTHER_PEM = OTHER.public_bytes(serialization.Encoding.PEM).decode()
PROXY = "10.1.2.3"
UNTRUSTED = st.sampled_from(
    ["203.0.113.9", "11.0.0.1", "2001:db8::1", "::ffff:203.0.113.9", "testclient", None]
)
BOUND = ISSUER.mint({"cnf": {"x5t#S256": thumbprint(DER)}}, lifetime=3600)
UNBOUND = ISSUER.mint(lifetime=3600)

CERT_REASONS = re.compile(r"(client_cert\.[a-z_]+|xfcc\.[a-z_]+|nginx\.[a-z_]+)\Z")


def policy(source: str, **cert: Any) -> Policy:
    return Policy.from_dict(
        {
            "trusted_proxies": ["10.0.0.0/8"],
            "tokens": {
                "issuers": [
                    {"issuer": ISS, "audiences": [AUDIENCE], "algorithms": ["ES256"], "jwks": ISSUER.jwks()}
                ]
            },
            "client_cert": {"source": source, **cert},
            "routes": {
                "operations": [
                    {"method": "GET", "path": "/accounts", "id": "listAccounts", "scopes": ["accounts"]},
                    {"method": "GET", "path": "/health", "id": "health", "public": True},
                ]
            },
        }
    )


GUARDS = {
    "rfc9440": new_guard(policy("rfc9440")),
    "xfcc": new_guard(policy("xfcc")),
    "xfcc2": new_guard(policy("xfcc", xfcc_elements=2)),
    "nginx": new_guard(policy("nginx")),
    "nginx-verify": new_guard(policy("nginx", verify_header="x-ssl-client-verify")),
}


def check_decision_secret(guard: Any, events: Any, before: int, decision: Any) -> Any:
    return check_decision(guard, events, before, decision, secrets=[BOUND])


def assert_certificate_ok(found: PresentedCertificate) -> None:
    """MTLS-03, MTLS-10: the DER re-encodes exactly; x5t#S256 is SHA-256 over it."""
    assert found.certificate.public_bytes(serialization.Encoding.DER) == found.der
    assert x509.load_der_x509_certificate(found.der).serial_number > 0
    expected = base64.urlsafe_b64encode(hashlib.sha256(found.der).digest()).rstrip(b"=").decode()
    assert found.thumbprint == expected


def parse(fn: Any, headers: list[tuple[str, str]], **kwargs: Any) -> tuple[str, Any]:
    """``("none", None)``, ``("cert", PresentedCertificate)`` or ``("error", reason)``."""
    found, reason = attempt(fn, Headers(headers), error=CertSourceError, **kwargs)
    if reason is not None:
        assert CERT_REASONS.match(reason), reason
        assert documented_statuses(reason) & {400, 431}, f"undocumented reason {reason!r}"
        return "error", reason
    if found is None:
        return "none", None
    assert_certificate_ok(found)
    return "cert", found


# -- DER and base64 mutations ---------------------------------------------------------------------

ders = st.one_of(
    st.just(DER),
    st.just(DER),
    st.just(DER),
    st.just(OTHER_DER),
    st.builds(lambda n: DER[:n], st.integers(0, len(DER) - 1)),
    st.builds(
        lambda i, b: DER[:i] + bytes([b]) + DER[i + 1 :], st.integers(0, len(DER) - 1), st.integers(0, 255)
    ),
    st.builds(lambda extra: DER + extra, st.binary(min_size=1, max_size=8)),
    st.binary(max_size=200),
    st.sampled_from([b"", b"\x30\x00", b"\x30\x80\x00\x00", b"\x30\x82\xff\xff"]),
)


def std_b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@st.composite
def byte_sequences(draw: st.DrawFn) -> str:
    """RFC 8941 §3.3.5 Byte Sequences of DER, with the mistakes the docs list."""
    der = draw(ders)
    text = std_b64(der)
    form = draw(
        st.sampled_from(
            ["plain", "plain", "unpadded", "url", "spaces", "params", "no-colons", "pem", "inner-ws"]
        )
    )
    if form == "unpadded":
        text = text.rstrip("=")
    elif form == "url":
        text = base64.urlsafe_b64encode(der).decode()
    elif form == "inner-ws":
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.sampled_from([" ", "\t", "\n", "\r\n"])) + text[i:]
    value = f":{text}:"
    if form == "spaces":
        value = " " + value + "  "
    elif form == "params":
        value += draw(st.sampled_from([";a=1", ";x", ", :AA==:", ","]))
    elif form == "no-colons":
        value = text
    elif form == "pem":
        value = PEM.replace("\n", " ")
    return value


@fuzz(250)
@given(
    cert=st.lists(byte_sequences(), min_size=1, max_size=1)
    | st.lists(st.one_of(byte_sequences(), header_text), max_size=2),
    chain=st.just([]) | st.lists(st.one_of(byte_sequences(), header_text), max_size=2),
)
@example(cert=[f":{std_b64(DER)}:"], chain=[])
@example(cert=[f":{std_b64(DER).rstrip('=')}:"], chain=[f":{std_b64(OTHER_DER)}:"])
@example(cert=[], chain=[f":{std_b64(OTHER_DER)}:"])
def test_FWD_03_04_client_cert_byte_sequences(cert: list[str], chain: list[str]) -> None:
    headers = [("client-cert", v) for v in cert] + [("client-cert-chain", v) for v in chain]
    kind, found = parse(from_rfc9440, headers)
    event(f"rfc9440 {kind} {found if kind == 'error' else ''}")
    if not cert:
        assert (kind, found) == (
            ("error", "client_cert.chain_without_certificate") if chain else ("none", None)
        )
    if kind == "cert":
        value = cert[0].strip(" ")
        assert len(cert) == 1, value
        assert re.fullmatch(r":[A-Za-z0-9+/]*={0,2}:", value), value
        assert base64.b64decode(value[1:-1] + "=" * (-len(value[1:-1]) % 4)) == found.der
    _through_the_guard("rfc9440", headers, kind, found)


# -- nginx -------------------------------------------------------------------------------------------


@st.composite
def pem_texts(draw: st.DrawFn) -> str:
    der = draw(ders)
    body = std_b64(der)
    width = draw(st.sampled_from([64, 64, 64, 76, 63, 65]))
    lines = [body[i : i + width] for i in range(0, len(body), width)] or [""]
    label = draw(
        st.sampled_from(
            ["CERTIFICATE", "CERTIFICATE", "CERTIFICATE", "X509 CRL", "certificate", "PUBLIC KEY"]
        )
    )
    text = f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"
    form = draw(
        st.sampled_from(["plain", "plain", "crlf", "no-end", "two", "trailing-space", "leading-ws", "cut"])
    )
    if form == "crlf":
        text = text.replace("\n", "\r\n")
    elif form == "no-end":
        text = text.split("-----END")[0]
    elif form == "two":
        text += OTHER_PEM
    elif form == "trailing-space":
        text = text.replace("\n", " \n", 1)
    elif form == "leading-ws":
        text = " " + text
    elif form == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    return text


@st.composite
def escaped_pems(draw: st.DrawFn) -> str:
    text = draw(pem_texts())
    form = draw(
        st.sampled_from(["quote", "quote", "quote-plus", "raw", "bad-percent", "lower-hex", "unicode"])
    )
    if form == "quote":
        return quote(text, safe="")
    if form == "quote-plus":
        return quote(text, safe="+/=")
    if form == "bad-percent":
        encoded = quote(text, safe="")
        i = draw(st.integers(0, len(encoded)))
        return encoded[:i] + draw(st.sampled_from(["%", "%G0", "%0", "%%"])) + encoded[i:]
    if form == "lower-hex":
        return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(text, safe=""))
    if form == "unicode":
        return quote(text, safe="") + "é"
    return text


verify_values = st.one_of(
    st.sampled_from(
        ["SUCCESS", "SUCCESS", "NONE", "FAILED:certificate has expired", "FAILED:a, b", "success", ""]
    ),
    header_text,
)


@fuzz(250)
@given(
    values=st.lists(st.one_of(escaped_pems(), header_text), max_size=2),
    verify=st.lists(verify_values, max_size=2),
    with_verify=st.booleans(),
)
@example(values=[quote(PEM, safe="")], verify=["SUCCESS"], with_verify=True)
@example(values=[""], verify=["SUCCESS"], with_verify=True)  # fails: undocumented nginx.missing_certificate
def test_FWD_11_nginx_escaped_pem(values: list[str], verify: list[str], with_verify: bool) -> None:
    headers = [("x-ssl-client-cert", v) for v in values]
    if with_verify:
        headers += [("x-ssl-client-verify", v) for v in verify]
    kwargs = {"verify_name": "x-ssl-client-verify"} if with_verify else {}
    kind, found = parse(from_nginx, headers, **kwargs)
    event(f"nginx {kind} {found if kind == 'error' else ''}")
    if kind == "cert":
        assert len(values) == 1
        assert "," not in values[0]
        assert re.fullmatch(r"(?:[\x21-\x24\x26-\x7e]|%[0-9A-Fa-f]{2})+", values[0]), values[0]
        if with_verify:
            assert verify == ["SUCCESS"]
    if not values:
        # docs/policy.md: a verify header without a certificate header counts as no certificate
        # (the control reads the source only when the certificate header is present).
        kind, found = "none", None
    _through_the_guard("nginx-verify" if with_verify else "nginx", headers, kind, found)


# -- Envoy XFCC --------------------------------------------------------------------------------------

xfcc_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\x7f"), max_size=16
)


def xfcc_value(value: str, force_quotes: bool) -> str:
    if force_quotes or not value or re.search(r'[",;=\s\\]', value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


@st.composite
def xfcc_elements(draw: st.DrawFn, *, leaf: bool) -> str:
    """One element: ``key=value`` pairs, quoted where needed (and sometimes where not)."""
    pairs: list[tuple[str, str]] = []
    if leaf:
        pairs.append(("Cert", quote(PEM, safe="")))
        if draw(st.booleans()):
            pairs.append(("Hash", hashlib.sha256(DER).hexdigest()))
        if draw(st.booleans()):
            chain = PEM + draw(st.sampled_from(["", OTHER_PEM]))
            pairs.append(("Chain", quote(chain, safe="")))
    keys = st.sampled_from(["By", "Subject", "URI", "DNS", "DNS", "x-custom"])
    for key in draw(st.lists(keys, min_size=0 if leaf else 1, max_size=4)):
        if key == "Subject" and any(k == "Subject" for k, _ in pairs):
            continue
        pairs.append((key, draw(xfcc_text)))
    order = draw(st.permutations(range(len(pairs))))
    keys = [draw(st.sampled_from([k, k.lower(), k.upper()])) for k, _ in pairs]
    return ";".join(f"{keys[i]}={xfcc_value(pairs[i][1], draw(st.booleans()))}" for i in order)


@fuzz(200)
@given(
    first=xfcc_elements(leaf=True),
    others=st.lists(xfcc_elements(leaf=False), max_size=2),
    separator=st.sampled_from([",", ", ", " ,", " , ", ",\t"]),
)
def test_FWD_08_09_10_xfcc_quoting_and_element_count(first: str, others: list[str], separator: str) -> None:
    value = separator.join([first, *others])
    count = 1 + len(others)
    for expected in (1, 2):
        kind, found = parse(from_xfcc, [("x-forwarded-client-cert", value)], elements=expected)
        if count != expected:
            assert (kind, found) == ("error", "xfcc.element_count"), value
            continue
        assert kind == "cert", (value, found)
        assert found.der == DER  # the first element's Cert (the chain starts with it)
        _through_the_guard(
            "xfcc" if count == 1 else "xfcc2", [("x-forwarded-client-cert", value)], kind, found
        )


@st.composite
def broken_xfcc(draw: st.DrawFn) -> str:
    element = draw(xfcc_elements(leaf=True))
    form = draw(
        st.sampled_from(
            ["dup-cert", "dup-hash", "bad-hash", "short-hash", "hash-only", "unclosed", "cut", "ctl"]
        )
    )
    if form == "dup-cert":
        return element + ";cert=" + quote(OTHER_PEM, safe="")
    if form == "dup-hash":
        return (
            element + ";Hash=" + hashlib.sha256(DER).hexdigest() + ";HASH=" + hashlib.sha256(DER).hexdigest()
        )
    if form == "bad-hash":
        return re.sub(r"(?i)hash=[0-9a-f]+;?", "", element) + ";Hash=" + hashlib.sha256(OTHER_DER).hexdigest()
    if form == "short-hash":
        return element + ";Hash=abc"
    if form == "hash-only":
        return "Hash=" + hashlib.sha256(DER).hexdigest()
    if form == "unclosed":
        return element + ';Subject="a,b'
    if form == "cut":
        return element[: draw(st.integers(0, len(element)))]
    return element + ";By=" + draw(st.sampled_from(['"a\x00b"', '"a\nb"', "a\x01", '"\\\x00"']))


@fuzz(200)
@given(value=st.one_of(broken_xfcc(), header_text, st.lists(header_text, max_size=3).map(";".join)))
@example(value='Subject="a,b";Cert=' + quote(PEM, safe=""))
def test_FWD_09_xfcc_malformed_values(value: str) -> None:
    kind, found = parse(from_xfcc, [("x-forwarded-client-cert", value)])
    event(f"xfcc {kind} {found if kind == 'error' else ''}")
    if kind == "cert":
        first = re.split(r',(?=(?:[^"]*"[^"]*")*[^"]*$)', value)[0]
        assert re.search(r"(?i)(^|;)\s*(cert|chain)=", first), value
    _through_the_guard("xfcc", [("x-forwarded-client-cert", value)], kind, found)


# -- through the guard: trusted and untrusted peers -----------------------------------------------------


def _through_the_guard(name: str, headers: list[tuple[str, str]], kind: str, found: Any) -> None:
    guard, events = GUARDS[name]
    auth = [("authorization", "Bearer " + BOUND)]
    secrets = [BOUND, *(v for _, v in headers)]
    trusted = [
        decide(
            guard, events, make_facts("GET", "/accounts", headers=auth + headers, peer=PROXY), secrets=secrets
        )
    ]
    # The second identical request may be served from the control's caches: the same verdict.
    trusted.append(
        decide(
            guard, events, make_facts("GET", "/accounts", headers=auth + headers, peer=PROXY), secrets=secrets
        )
    )
    assert trusted[0] == trusted[1]
    verdict = trusted[0]
    if kind == "error":
        status = 431 if found == "client_cert.too_large" else 400
        assert (verdict.status, verdict.reason) == (status, found)
    elif kind == "none":
        assert verdict.reason == "token.certificate_missing"
    elif found.der == DER:
        assert verdict.allowed, verdict
    else:
        assert verdict.reason == "token.certificate_mismatch"


@fuzz(150)
@given(
    name=st.sampled_from(sorted(GUARDS)),
    value=st.one_of(byte_sequences(), escaped_pems(), broken_xfcc(), xfcc_elements(leaf=True), header_text),
    peer=UNTRUSTED,
    token=st.sampled_from(["bound", "unbound", "none"]),
    path=st.sampled_from(["/accounts", "/health"]),
)
@example(name="rfc9440", value=f":{std_b64(DER)}:", peer="203.0.113.9", token="bound", path="/accounts")
def test_FWD_01_untrusted_peers_certificate_headers_are_ignored(
    name: str, value: str, peer: str | None, token: str, path: str
) -> None:
    guard, events = GUARDS[name]
    header = {
        "rfc9440": "client-cert",
        "xfcc": "x-forwarded-client-cert",
        "xfcc2": "x-forwarded-client-cert",
        "nginx": "x-ssl-client-cert",
        "nginx-verify": "x-ssl-client-cert",
    }[name]
    auth = {
        "bound": [("authorization", "Bearer " + BOUND)],
        "unbound": [("authorization", "Bearer " + UNBOUND)],
    }
    base = auth.get(token, [])
    extra = [
        (header, value),
        ("client-cert-chain", f":{std_b64(OTHER_DER)}:"),
        ("x-ssl-client-verify", "SUCCESS"),
    ]
    secrets = [BOUND, UNBOUND, value]
    without = decide(guard, events, make_facts("GET", path, headers=base, peer=peer), secrets=secrets)
    with_header = decide(
        guard, events, make_facts("GET", path, headers=base + extra, peer=peer), secrets=secrets
    )
    assert with_header == without
    assert "client_cert.untrusted_header_ignored" in events.events[-1].notes
    if token == "bound" and path == "/accounts":
        assert without.reason == "token.certificate_missing"


def test_FWD_11_empty_certificate_header_next_to_success_has_a_documented_reason() -> None:
    """An empty ``X-SSL-Client-Cert`` from the trusted proxy next to ``SUCCESS`` is refused with a
    reason code that docs/errors.md does not list (``nginx.missing_certificate``)."""
    guard, events = GUARDS["nginx-verify"]
    headers = [
        ("authorization", "Bearer " + BOUND),
        ("x-ssl-client-cert", ""),
        ("x-ssl-client-verify", "SUCCESS"),
    ]
    verdict = decide(guard, events, make_facts("GET", "/accounts", headers=headers, peer=PROXY))
    assert not verdict.allowed


# -- the control's caches ---------------------------------------------------------------------------

HEADER_POOL: dict[str, list[tuple[str, str]]] = {
    "rfc9440": [
        ("client-cert", f":{std_b64(DER)}:"),
        ("client-cert", f":{std_b64(OTHER_DER)}:"),
        ("client-cert", f":{std_b64(DER[:-1])}:"),
        ("client-cert-chain", f":{std_b64(OTHER_DER)}:"),
        ("client-cert-chain", "garbage"),
    ],
    "nginx-verify": [
        ("x-ssl-client-cert", quote(PEM, safe="")),
        ("x-ssl-client-cert", quote(OTHER_PEM, safe="")),
        ("x-ssl-client-cert", "not-a-certificate"),
        ("x-ssl-client-verify", "SUCCESS"),
        ("x-ssl-client-verify", "FAILED:certificate has expired"),
        ("x-ssl-client-verify", "NONE"),
    ],
    "xfcc": [
        ("x-forwarded-client-cert", "Cert=" + quote(PEM, safe="")),
        ("x-forwarded-client-cert", "Cert=" + quote(OTHER_PEM, safe="")),
        (
            "x-forwarded-client-cert",
            "Hash=" + hashlib.sha256(OTHER_DER).hexdigest() + ";Cert=" + quote(PEM, safe=""),
        ),
        ("x-forwarded-client-cert", 'By=spiffe://proxy;Subject="a,b"'),
    ],
}


@fuzz(60)
@given(
    name=st.sampled_from(sorted(HEADER_POOL)),
    steps=st.lists(
        st.tuples(st.lists(st.integers(0, 5), max_size=3), st.sampled_from([PROXY, PROXY, "203.0.113.9"])),
        min_size=1,
        max_size=5,
    ),
)
def test_FWD_caches_change_no_decision(name: str, steps: list[tuple[list[int], str]]) -> None:
    """The control remembers parsed and accepted header values (docs/policy.md, "Certificate
    sources"); a guard that has seen other requests decides each request as a fresh guard does."""
    pool = HEADER_POOL[name]
    source, extra = (
        ("nginx", {"verify_header": "x-ssl-client-verify"}) if name == "nginx-verify" else (name, {})
    )
    warm, warm_events = GUARDS[name]
    for picks, peer in steps:
        headers = [("authorization", "Bearer " + BOUND)] + [pool[i % len(pool)] for i in picks]
        facts = make_facts("GET", "/accounts", headers=headers, peer=peer)
        fresh, fresh_events = new_guard(policy(source, **extra))
        before = len(fresh_events.events)
        expected = check_decision_secret(fresh, fresh_events, before, fresh.decide(facts))
        before = len(warm_events.events)
        assert check_decision_secret(warm, warm_events, before, warm.decide(facts)) == expected, headers
