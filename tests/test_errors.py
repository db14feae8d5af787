"""The exception tree: statuses, error codes, slugs, texts, and the tree drawn in the docstring."""

from __future__ import annotations

import inspect
import re

import pytest

from bankguard import errors
from bankguard.errors import (
    AuthenticationRequired,
    BadRequest,
    BankGuardError,
    CertificateInvalid,
    CertificateRequired,
    ConfigProblem,
    ConfigurationError,
    Denied,
    Forbidden,
    HeaderFieldsTooLarge,
    InsufficientScope,
    InternalFault,
    InvalidDPoPProof,
    InvalidInteractionId,
    InvalidRequest,
    InvalidToken,
    MalformedClientCertificate,
    MalformedRequest,
    MethodNotAllowed,
    MethodOverrideRefused,
    NotFound,
    PayloadTooLarge,
    RequestInvalid,
    ResponseInvalid,
    RoleInvalid,
    ServiceUnavailable,
    TooManyRequests,
    UnsupportedMediaType,
    UriTooLong,
    UseDPoPNonce,
)


def denied_classes() -> list[type[Denied]]:
    """Every public Denied subclass defined in bankguard.errors."""
    found: list[type[Denied]] = []
    stack = list(Denied.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__ == errors.__name__ and not cls.__name__.startswith("_"):
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


# class, status, error code, challenge, slug
TABLE = [
    pytest.param(BadRequest, 400, None, False, "bad-request", id="BadRequest"),
    pytest.param(MalformedRequest, 400, None, False, "malformed-request", id="MalformedRequest"),
    pytest.param(
        MethodOverrideRefused, 400, None, False, "method-override-refused", id="MethodOverrideRefused"
    ),
    pytest.param(InvalidInteractionId, 400, None, False, "invalid-interaction-id", id="InvalidInteractionId"),
    pytest.param(InvalidRequest, 400, "invalid_request", True, "invalid-request", id="E6-InvalidRequest"),
    pytest.param(AuthenticationRequired, 401, None, True, "authentication-required", id="E1-AuthRequired"),
    pytest.param(InvalidToken, 401, "invalid_token", True, "invalid-token", id="E2-InvalidToken"),
    pytest.param(
        InvalidDPoPProof, 401, "invalid_dpop_proof", True, "invalid-dpop-proof", id="E3-InvalidDPoPProof"
    ),
    pytest.param(UseDPoPNonce, 401, "use_dpop_nonce", True, "use-dpop-nonce", id="E4-UseDPoPNonce"),
    pytest.param(
        InsufficientScope, 403, "insufficient_scope", True, "insufficient-scope", id="E5-InsufficientScope"
    ),
    pytest.param(Forbidden, 403, None, False, "forbidden", id="Forbidden"),
    pytest.param(RoleInvalid, 403, None, False, "role-invalid", id="RoleInvalid"),
    pytest.param(
        MalformedClientCertificate,
        400,
        None,
        False,
        "malformed-client-certificate",
        id="MalformedClientCertificate",
    ),
    pytest.param(CertificateRequired, 401, None, True, "certificate-required", id="CertificateRequired"),
    pytest.param(CertificateInvalid, 401, None, True, "certificate-invalid", id="CertificateInvalid"),
    pytest.param(NotFound, 404, None, False, "not-found", id="NotFound"),
    pytest.param(MethodNotAllowed, 405, None, False, "method-not-allowed", id="MethodNotAllowed"),
    pytest.param(PayloadTooLarge, 413, None, False, "payload-too-large", id="PayloadTooLarge"),
    pytest.param(UriTooLong, 414, None, False, "uri-too-long", id="UriTooLong"),
    pytest.param(UnsupportedMediaType, 415, None, False, "unsupported-media-type", id="UnsupportedMediaType"),
    pytest.param(RequestInvalid, 400, None, False, "request-invalid", id="RequestInvalid"),
    pytest.param(ResponseInvalid, 502, None, False, "response-invalid", id="ResponseInvalid"),
    pytest.param(
        HeaderFieldsTooLarge, 431, None, False, "header-fields-too-large", id="HeaderFieldsTooLarge"
    ),
    pytest.param(TooManyRequests, 429, None, False, "too-many-requests", id="E8-TooManyRequests"),
    pytest.param(ServiceUnavailable, 503, None, False, "service-unavailable", id="ServiceUnavailable"),
    pytest.param(InternalFault, 503, None, False, "security-check-failed", id="InternalFault"),
]


def make(cls: type[Denied], reason: str = "test.reason") -> Denied:
    """An instance of ``cls`` with the keyword arguments its constructor requires."""
    if issubclass(cls, InternalFault):
        return cls(reason)
    if issubclass(cls, (TooManyRequests, ServiceUnavailable)):
        return cls(reason, retry_after=7)
    if issubclass(cls, InsufficientScope):
        return cls(reason, required=["accounts"])
    if issubclass(cls, MethodNotAllowed):
        return cls(reason, allowed=["GET", "HEAD"])
    if issubclass(cls, RoleInvalid):
        return cls(reason, required=["PSP_AI"])
    return cls(reason)


def test_table_covers_every_denied_subclass():
    assert [p.values[0] for p in sorted(TABLE, key=lambda p: p.values[0].__name__)] == denied_classes()


@pytest.mark.parametrize(("cls", "status", "error", "challenge", "slug"), TABLE)
def test_denied_class_attributes(cls, status, error, challenge, slug):
    denial = make(cls)
    assert (denial.status, denial.error, denial.challenge, denial.slug) == (status, error, challenge, slug)
    assert isinstance(denial, BankGuardError)
    assert denial.title
    assert denial.detail
    assert denial.reason == "test.reason"
    assert str(denial) == "test.reason"
    assert denial.control is None
    assert denial.scheme is None


def test_slugs_are_unique():
    slugs = [cls.slug for cls in denied_classes()]
    assert len(slugs) == len(set(slugs))
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", slug) for slug in slugs)


def test_every_401_carries_a_challenge():
    # RFC 9110 §15.5.2: a 401 response MUST send WWW-Authenticate.
    assert all(cls.challenge for cls in denied_classes() if cls.status == 401)


def test_error_codes_come_from_rfc_6750_and_rfc_9449():
    codes = {cls.error for cls in denied_classes()} - {None}
    assert codes <= {
        "invalid_request",
        "invalid_token",
        "insufficient_scope",
        "invalid_dpop_proof",  # RFC 9449 §7.1
        "use_dpop_nonce",  # RFC 9449 §8
    }
    assert all(cls.challenge for cls in denied_classes() if cls.error is not None)


@pytest.mark.parametrize(("cls", "status", "error", "challenge", "slug"), TABLE)
def test_client_detail_never_carries_the_reason(cls, status, error, challenge, slug):
    denial = make(cls, reason="authorization.duplicate")
    assert "authorization.duplicate" not in denial.detail
    assert "authorization.duplicate" not in denial.title


def test_detail_and_headers_can_be_given():
    denial = Forbidden("x.y", detail="Not for you.", headers=[("x-extra", "1")])
    assert denial.detail == "Not for you."
    assert denial.headers == (("x-extra", "1"),)
    assert Forbidden.detail == "The request was refused."


def test_repr_shows_reason_and_status_but_not_detail():
    denial = InvalidToken("token.expired", detail="secret detail")
    assert repr(denial) == "InvalidToken(reason='token.expired', status=401)"


def test_insufficient_scope_keeps_required_scopes():
    denial = InsufficientScope("scope.missing", required=["accounts", "payments"])
    assert denial.required == ("accounts", "payments")


def test_method_not_allowed_adds_allow():
    denial = MethodNotAllowed("routes.method_not_allowed", allowed=["GET", "HEAD", "POST"])
    assert denial.allowed == ("GET", "HEAD", "POST")
    assert denial.headers == (("allow", "GET, HEAD, POST"),)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param(30, "30", id="int"),
        pytest.param(-5, "0", id="negative"),
        pytest.param(2.9, "2", id="float"),
    ],
)
def test_retry_after_header(retry_after, expected):
    denial = TooManyRequests("ratelimit.exceeded", retry_after=retry_after, headers=[("ratelimit", "x")])
    assert denial.headers == (("retry-after", expected), ("ratelimit", "x"))


def test_internal_fault_is_a_503_with_retry_after_1():
    fault = InternalFault("tokens.internal_error")
    assert isinstance(fault, ServiceUnavailable)
    assert fault.retry_after == 1
    assert fault.headers == (("retry-after", "1"),)


# -- the tree drawn in the module docstring ----------------------------------------------------

_TREE_LINE = re.compile(r"^([ │]*(?:[├└]── )?)(\w+)(?: +(\d{3}))?")


def drawn_tree() -> dict[str, tuple[str | None, int | None]]:
    """``{class name: (drawn parent, drawn status)}`` from the block after "The tree::"."""
    doc = inspect.getdoc(errors) or ""
    block = doc.split("The tree::", 1)[1].strip("\n").split("\n\n", 1)[0]
    tree: dict[str, tuple[str | None, int | None]] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name)
    for line in block.splitlines():
        m = _TREE_LINE.match(line)
        assert m is not None, line
        column, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= column:
            stack.pop()
        tree[name] = (stack[-1][1] if stack else None, int(m.group(3)) if m.group(3) else None)
        stack.append((column, name))
    return tree


def public_parent(cls: type) -> str:
    return next(base.__name__ for base in cls.__mro__[1:] if not base.__name__.startswith("_"))


def test_errors_docstring_names_every_denied_subclass():
    doc = inspect.getdoc(errors) or ""
    missing = [cls.__name__ for cls in denied_classes() if cls.__name__ not in doc]
    assert missing == []


def test_drawn_tree_matches_the_classes():
    tree = drawn_tree()
    assert set(tree) == {
        "BankGuardError",
        "ConfigurationError",
        "Denied",
        *(c.__name__ for c in denied_classes()),
    }
    for cls in [*denied_classes(), ConfigurationError, Denied]:
        parent, status = tree[cls.__name__]
        assert parent == public_parent(cls), cls.__name__
        if issubclass(cls, Denied) and cls is not Denied:
            assert status == cls.status, cls.__name__


# -- ConfigurationError --------------------------------------------------------------------------


def test_configuration_error_from_a_message_and_path():
    exc = ConfigurationError("must not exceed max_header_bytes", path="request.max_header_field_bytes")
    assert exc.problems == (
        ConfigProblem("request.max_header_field_bytes", "must not exceed max_header_bytes"),
    )
    assert exc.path == "request.max_header_field_bytes"
    assert str(exc) == "invalid policy: request.max_header_field_bytes: must not exceed max_header_bytes"
    assert isinstance(exc, BankGuardError)
    assert not isinstance(exc, Denied)


def test_configuration_error_lists_every_problem():
    exc = ConfigurationError([ConfigProblem("a", "bad"), ConfigProblem("b[1].c", "worse")])
    assert exc.path == "a"
    assert str(exc) == "invalid policy:\n  - a: bad\n  - b[1].c: worse"


def test_problem_without_a_path_names_the_policy():
    assert str(ConfigProblem("", "expected a mapping")) == "<policy>: expected a mapping"
    assert ConfigurationError([]).path == ""
