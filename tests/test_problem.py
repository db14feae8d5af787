"""Rendering denials: RFC 9457 problem details and the RFC 6750 / RFC 9449 challenges (STANDARDS §0)."""

from __future__ import annotations

import json
import re

import pytest

from bankguard import EventCollector, Guard, Policy
from bankguard.errors import (
    AuthenticationRequired,
    BadRequest,
    Denied,
    Forbidden,
    HeaderFieldsTooLarge,
    InsufficientScope,
    InternalFault,
    InvalidInteractionId,
    InvalidRequest,
    InvalidToken,
    MalformedRequest,
    MethodNotAllowed,
    MethodOverrideRefused,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    UriTooLong,
)
from bankguard.problem import ProblemRenderer, ProblemResponse, Scheme, auth_param
from bankguard.testing import make_facts

IID = "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
BASE = "https://dev.bank.example/problems/"
BEARER = Scheme("Bearer", (("realm", "api"),))
DPOP = Scheme("DPoP", (("algs", "ES256 PS256 EdDSA"),))

RENDERER = ProblemRenderer(type_base=BASE, schemes=(BEARER, DPOP), interaction_header="x-fapi-interaction-id")

# Every Denied subclass, with the constructor arguments it needs and the extra header it adds.
DENIALS = [
    pytest.param(lambda: BadRequest("r"), 400, None, id="BadRequest"),
    pytest.param(lambda: MalformedRequest("r"), 400, None, id="MalformedRequest"),
    pytest.param(lambda: MethodOverrideRefused("r"), 400, None, id="MethodOverrideRefused"),
    pytest.param(lambda: InvalidInteractionId("r"), 400, None, id="InvalidInteractionId"),
    pytest.param(lambda: InvalidRequest("r"), 400, None, id="E6-InvalidRequest"),
    pytest.param(lambda: AuthenticationRequired("r"), 401, None, id="E1-AuthenticationRequired"),
    pytest.param(lambda: InvalidToken("r"), 401, None, id="E2-InvalidToken"),
    pytest.param(lambda: InsufficientScope("r", required=["a"]), 403, None, id="E5-InsufficientScope"),
    pytest.param(lambda: Forbidden("r"), 403, None, id="Forbidden"),
    pytest.param(lambda: NotFound("r"), 404, None, id="NotFound"),
    pytest.param(
        lambda: MethodNotAllowed("r", allowed=["GET", "HEAD"]), 405, ("allow", "GET, HEAD"), id="405"
    ),
    pytest.param(lambda: PayloadTooLarge("r"), 413, None, id="PayloadTooLarge"),
    pytest.param(lambda: UriTooLong("r"), 414, None, id="UriTooLong"),
    pytest.param(lambda: HeaderFieldsTooLarge("r"), 431, None, id="HeaderFieldsTooLarge"),
    pytest.param(lambda: TooManyRequests("r", retry_after=30), 429, ("retry-after", "30"), id="E8-429"),
    pytest.param(lambda: ServiceUnavailable("r", retry_after=5), 503, ("retry-after", "5"), id="503"),
    pytest.param(lambda: InternalFault("r"), 503, ("retry-after", "1"), id="InternalFault"),
]

_AUTH_PARAM = re.compile(r'([A-Za-z_]+)="([\x20\x21\x23-\x5b\x5d-\x7e]*)"(?:, |$)')


def header_values(response: ProblemResponse, name: str) -> list[str]:
    return [v for k, v in response.headers if k == name]


def header(response: ProblemResponse, name: str) -> str:
    (value,) = header_values(response, name)
    return value


def parse_challenge(challenge: str) -> tuple[str, dict[str, str]]:
    """``scheme k="v", k2="v2"`` → (scheme, params), insisting on RFC 6750 §3 syntax, each param once."""
    scheme, _, rest = challenge.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _AUTH_PARAM.match(rest, pos)
        assert m is not None, f"unparseable challenge {challenge!r}"
        assert m.group(1) not in params, f"{m.group(1)} repeated in {challenge!r}"
        params[m.group(1)] = m.group(2)
        pos = m.end()
    return scheme, params


def challenges(response: ProblemResponse) -> dict[str, dict[str, str]]:
    parsed = [parse_challenge(c) for c in header_values(response, "www-authenticate")]
    assert len({scheme for scheme, _ in parsed}) == len(parsed)
    return dict(parsed)


def with_scheme(denial: Denied, scheme: str | None) -> Denied:
    denial.scheme = scheme
    return denial


# -- body and common headers ----------------------------------------------------------------


@pytest.mark.parametrize(("factory", "status", "extra"), DENIALS)
def test_every_denial_renders_as_problem_json(factory, status, extra):
    denial = factory()
    response = RENDERER.render(denial, IID)
    assert response.status == status
    assert header(response, "content-type") == "application/problem+json"
    assert header(response, "content-length") == str(len(response.body))
    assert header(response, "cache-control") == "no-store"
    assert header(response, "x-content-type-options") == "nosniff"
    assert header(response, "x-fapi-interaction-id") == IID
    assert json.loads(response.body) == {
        "type": BASE + denial.slug,
        "title": denial.title,
        "status": status,
        "detail": denial.detail,
        "interaction_id": IID,
    }
    if extra is not None:
        assert header(response, extra[0]) == extra[1]
    assert bool(header_values(response, "www-authenticate")) == denial.challenge
    if status == 401:
        assert header_values(response, "www-authenticate")


@pytest.mark.parametrize(("factory", "status", "extra"), DENIALS)
def test_head_has_no_body_but_the_same_content_length(factory, status, extra):
    full = RENDERER.render(factory(), IID)
    head = RENDERER.render(factory(), IID, head=True)
    assert head.body == b""
    assert head.status == full.status
    assert head.headers == full.headers
    assert header(head, "content-length") == str(len(full.body))


def test_reason_never_reaches_the_body():
    response = RENDERER.render(InvalidRequest("authorization.multiple_methods"), IID)
    assert b"authorization" not in response.body
    assert all("multiple_methods" not in v for _, v in response.headers)


@pytest.mark.parametrize(
    ("status", "allowed", "expected"),
    [
        pytest.param(405, ["GET", "HEAD"], "GET, HEAD", id="get-head"),
        pytest.param(405, ["POST"], "POST", id="post"),
    ],
)
def test_AUTH_10_405_carries_allow(status, allowed, expected):
    response = RENDERER.render(MethodNotAllowed("routes.method_not_allowed", allowed=allowed), IID)
    assert response.status == status
    assert header(response, "allow") == expected


# -- WWW-Authenticate (STANDARDS §0) -----------------------------------------------------------


@pytest.mark.parametrize("tried", [None, "Bearer", "DPoP", "Basic"])
def test_AUTH_01_E1_offers_every_scheme_without_error(tried):
    response = RENDERER.render(with_scheme(AuthenticationRequired("authorization.missing"), tried), IID)
    assert response.status == 401
    assert header_values(response, "www-authenticate") == [
        'Bearer realm="api"',
        'DPoP algs="ES256 PS256 EdDSA"',
    ]
    assert all("error" not in params for params in challenges(response).values())


@pytest.mark.parametrize(
    ("tried", "schemes"),
    [
        pytest.param("Bearer", ["Bearer"], id="bearer"),
        pytest.param("bearer", ["Bearer"], id="case-insensitive"),
        pytest.param("DPoP", ["DPoP"], id="dpop"),
        pytest.param(None, ["Bearer", "DPoP"], id="none-tried"),
        pytest.param("Basic", ["Bearer", "DPoP"], id="unknown-scheme"),
    ],
)
def test_AUTH_07_E2_challenge_follows_the_scheme_tried(tried, schemes):
    response = RENDERER.render(with_scheme(InvalidToken("token.expired"), tried), IID)
    parsed = challenges(response)
    assert list(parsed) == schemes
    for params in parsed.values():
        assert params["error"] == "invalid_token"
        assert params["error_description"] == InvalidToken.detail
    if "DPoP" in parsed:
        assert parsed["DPoP"]["algs"] == "ES256 PS256 EdDSA"


def test_AUTH_03_E5_insufficient_scope_carries_scope():
    denial = with_scheme(InsufficientScope("scope.missing", required=["accounts", "payments"]), "DPoP")
    response = RENDERER.render(denial, IID)
    assert response.status == 403
    assert challenges(response) == {
        "DPoP": {
            "algs": "ES256 PS256 EdDSA",
            "error": "insufficient_scope",
            "error_description": InsufficientScope.detail,
            "scope": "accounts payments",
        }
    }


@pytest.mark.parametrize("tried", [None, "Bearer"])
def test_AUTH_06_E6_invalid_request_carries_error(tried):
    response = RENDERER.render(with_scheme(InvalidRequest("authorization.malformed"), tried), IID)
    assert response.status == 400
    parsed = challenges(response)
    assert list(parsed) == (["Bearer"] if tried else ["Bearer", "DPoP"])
    assert all(p["error"] == "invalid_request" for p in parsed.values())


def test_AUTH_08_error_description_sanitised():
    hostile = 'bad "token" \\ caf\u00e9 \u20ac\r\nSet-Cookie: a=b\x00\x7f'
    response = RENDERER.render(with_scheme(InvalidToken("token.bad", detail=hostile), "Bearer"), IID)
    (value,) = header_values(response, "www-authenticate")
    description = challenges(response)["Bearer"]["error_description"]
    for forbidden in ('"', "\\", "\u00e9", "\u20ac", "\r", "\n", "\x00", "\x7f"):
        assert forbidden not in description
    assert description == "bad token  caf Set-Cookie: a=b"
    assert value.isascii()
    assert "\\" not in value
    assert value.count('"') == 2 * len(parse_challenge(value)[1])
    # The body keeps the detail, JSON-escaped and ASCII.
    assert response.body.isascii()
    assert json.loads(response.body)["detail"] == hostile


def test_AUTH_08_every_param_value_is_sanitised():
    renderer = ProblemRenderer(
        type_base=BASE, schemes=(Scheme("Bearer", (("realm", 'a"b\\c\u00e9'),)),), interaction_header="x-id"
    )
    response = renderer.render(InsufficientScope("s", required=['x"y', "z\u00e9"]), IID)
    assert challenges(response)["Bearer"] == {
        "realm": "abc",
        "error": "insufficient_scope",
        "error_description": InsufficientScope.detail,
        "scope": "xy z",
    }


def test_auth_param_keeps_exactly_the_rfc_6750_characters():
    every = "".join(chr(c) for c in range(0x100))
    kept = auth_param(every)
    assert kept == "".join(chr(c) for c in [0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)])


def test_scheme_without_params_is_bare():
    assert Scheme("Bearer").challenge() == "Bearer"
    assert Scheme("Bearer").challenge((("error", "invalid_token"),)) == 'Bearer error="invalid_token"'


# -- through the guard ---------------------------------------------------------------------


def guard(**policy: object) -> Guard:
    data = {"routes": {"operations": [{"method": "GET", "path": "/accounts", "public": True}]}, **policy}
    return Guard(Policy.from_dict(data), sink=EventCollector())


def test_guard_problem_uses_the_policy():
    g = guard(problems={"type_base": "urn:bank:problems:"}, auth={"realm": "bank"})
    decision = g.decide(
        make_facts("GET", "/accounts?access_token=abc", headers=[("x-fapi-interaction-id", IID)])
    )
    response = g.problem(decision)
    assert response.status == 401
    assert json.loads(response.body) == {
        "type": "urn:bank:problems:authentication-required",
        "title": AuthenticationRequired.title,
        "status": 401,
        "detail": AuthenticationRequired.detail,
        "interaction_id": IID,
    }
    assert header_values(response, "www-authenticate") == ['Bearer realm="bank"']
    assert header(response, "x-fapi-interaction-id") == IID
    assert header(response, "cache-control") == "no-store"


def test_guard_problem_E6_uses_the_scheme_tried():
    g = guard()
    decision = g.decide(make_facts("GET", "/accounts", headers=[("authorization", "bearer a b")]))
    response = g.problem(decision)
    assert response.status == 400
    assert challenges(response) == {
        "Bearer": {"realm": "api", "error": "invalid_request", "error_description": InvalidRequest.detail}
    }


def test_guard_problem_head_and_405():
    g = guard()
    decision = g.decide(make_facts("DELETE", "/accounts"))
    full, head = g.problem(decision), g.problem(decision, head=True)
    assert full.status == head.status == 405
    assert header(full, "allow") == "GET, HEAD"
    assert head.body == b""
    assert header(head, "content-length") == str(len(full.body))
    assert header(head, "x-fapi-interaction-id") == decision.interaction_id


def test_guard_problem_refuses_an_allowed_decision():
    g = guard()
    decision = g.decide(make_facts("GET", "/accounts"))
    assert decision.allowed
    with pytest.raises(ValueError, match="allows the request"):
        g.problem(decision)


def test_guard_fault_is_a_fail_closed_503():
    events = EventCollector()
    g = Guard(Policy(), sink=events)
    response = g.fault("adapter.internal_error")
    assert response.status == 503
    assert header(response, "retry-after") == "1"
    assert json.loads(response.body)["type"].endswith("/security-check-failed")
    (event,) = events.events
    assert (event.outcome, event.status, event.control, event.reason) == (
        "deny",
        503,
        "adapter",
        "adapter.internal_error",
    )
    assert header(response, "x-fapi-interaction-id") == event.interaction_id
