"""Exceptions raised by bankguard.

Two families exist. :class:`ConfigurationError` is raised while a policy is
loaded and never while a request is served. :class:`Denied` and its subclasses
are raised by the checks of the decision core; each one knows the HTTP status,
the RFC 6750 / RFC 9449 ``error`` code and the extra headers of its response,
and :mod:`bankguard.problem` renders it as RFC 9457 ``application/problem+json``.

The tree::

    BankGuardError
    ├── ConfigurationError                 policy rejected at load time (names the YAML path)
    └── Denied                             a request is refused
        ├── BadRequest                     400
        │   ├── MalformedRequest           400  unparseable framing: path, Content-Length, encoding
        │   ├── MethodOverrideRefused      400  X-HTTP-Method-Override and friends (OWASP API5)
        │   ├── InvalidInteractionId       400  x-fapi-interaction-id is not a UUID (FAPI1-B 6.2.2)
        │   ├── MalformedClientCertificate 400  a forwarded certificate header cannot be parsed (RFC 9440)
        │   ├── RequestInvalid             400  the request breaks the OpenAPI contract (parameters, body)
        │   └── InvalidRequest             400  invalid_request: ambiguous or malformed credentials
        ├── AuthenticationRequired         401  no credentials, or an unsupported scheme (E1)
        ├── InvalidToken                   401  invalid_token (E2)
        ├── InvalidDPoPProof               401  invalid_dpop_proof: the DPoP proof fails RFC 9449 §4.3 (E3)
        ├── UseDPoPNonce                   401  use_dpop_nonce: a fresh server nonce is needed (E4)
        ├── CertificateRequired            401  no client certificate where one is required
        ├── CertificateInvalid             401  the client certificate is not accepted (chain, dates, eIDAS)
        ├── InsufficientScope              403  insufficient_scope (E5)
        ├── Forbidden                      403  authorised identity, operation refused
        │   └── RoleInvalid                403  the certificate lacks a PSD2 role the operation needs
        ├── NotFound                       404  no declared operation at this path
        ├── MethodNotAllowed               405  the path exists, the method does not (adds Allow)
        ├── PayloadTooLarge                413
        ├── UnsupportedMediaType           415  a request body type the operation does not declare
        ├── UriTooLong                     414
        ├── HeaderFieldsTooLarge           431
        ├── TooManyRequests                429  (adds Retry-After)
        ├── ResponseInvalid                502  the application's response breaks the OpenAPI contract
        └── ServiceUnavailable             503  (adds Retry-After)
            └── InternalFault              503  bankguard itself failed; fail closed

Every denial carries two texts. ``detail`` goes to the client and is generic.
``reason`` is a short, stable code for the audit event (``authorization.duplicate``)
and may be precise; neither ever contains a token, key or certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class BankGuardError(Exception):
    """Base class of every exception bankguard raises."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem found in a policy: where it is and what is allowed."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<policy>'}: {self.message}"


class ConfigurationError(BankGuardError):
    """The policy is invalid. Raised at load time, never while serving.

    ``problems`` lists every problem found, each with the YAML path of the
    offending key (``routes.operations[2].method``) and what is allowed there.
    """

    def __init__(self, problems: Sequence[ConfigProblem] | str, path: str = "") -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem(path, problems)]
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        lines = [str(p) for p in self.problems]
        if len(lines) == 1:
            message = f"invalid policy: {lines[0]}"
        else:
            message = "invalid policy:\n" + "\n".join(f"  - {line}" for line in lines)
        super().__init__(message)

    @property
    def path(self) -> str:
        """The YAML path of the first problem."""
        return self.problems[0].path if self.problems else ""


class Denied(BankGuardError):
    """A request is refused. Subclasses set the class attributes below.

    :param reason: stable audit reason code, e.g. ``request.body_too_large``.
    :param detail: text for the client; defaults to the class ``detail``.
    :param headers: extra response headers specific to this denial.
    """

    status: int = 403
    #: RFC 6750 §3.1 / RFC 9449 §7.1 error code, or None (E1 carries none).
    error: str | None = None
    #: Whether the response carries a ``WWW-Authenticate`` challenge.
    challenge: bool = False
    #: Stable slug of the problem type; the ``type`` URI ends with it.
    slug: str = "forbidden"
    title: str = "Forbidden"
    detail: str = "The request was refused."

    def __init__(
        self,
        reason: str,
        *,
        detail: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        if detail is not None:
            self.detail = detail
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)
        #: The control that raised it; set by the guard.
        self.control: str | None = None
        #: The authentication scheme the client tried, if any (``Bearer``, ``DPoP``).
        self.scheme: str | None = None
        #: Also offer the other enabled schemes, without error, beside the tried one (a
        #: DPoP-bound token presented as Bearer, RFC 9449 §7.2).
        self.offer_all = False
        #: Extension members of the problem document (RFC 9457 §3.2), e.g. the failed locations
        #: of a contract violation; never submitted values, tokens or secrets.
        self.extensions: dict[str, object] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, status={self.status})"


class BadRequest(Denied):
    status = 400
    slug = "bad-request"
    title = "Bad Request"
    detail = "The request is malformed."


class MalformedRequest(BadRequest):
    slug = "malformed-request"
    title = "Malformed request"


class MethodOverrideRefused(BadRequest):
    slug = "method-override-refused"
    title = "Method override refused"
    detail = "Method override headers and parameters are not accepted."


class InvalidInteractionId(BadRequest):
    slug = "invalid-interaction-id"
    title = "Invalid interaction id"
    detail = "The x-fapi-interaction-id header must be one RFC 9562 (RFC 4122) UUID."


class InvalidRequest(BadRequest):
    """RFC 6750 §3.1 ``invalid_request`` (template E6)."""

    error = "invalid_request"
    challenge = True
    slug = "invalid-request"
    title = "Invalid request"
    detail = "The request carries malformed or ambiguous credentials."


class RequestInvalid(BadRequest):
    """The request does not conform to the operation's OpenAPI contract. The problem lists the
    failed locations (``errors``: location and check), never the submitted values."""

    slug = "request-invalid"
    title = "Request does not match the API contract"
    detail = "The request does not match the API's contract; see errors."


class ResponseInvalid(Denied):
    """The application's response does not conform to the declared response schema; it is
    replaced by this problem (RFC 9110 §15.6.3: the gateway got an invalid response)."""

    status = 502
    slug = "response-invalid"
    title = "Invalid response"
    detail = "The service produced a response that does not match the API's contract."


class MalformedClientCertificate(BadRequest):
    slug = "malformed-client-certificate"
    title = "Malformed client certificate"
    detail = "The forwarded client certificate could not be read."


class AuthenticationRequired(Denied):
    """No usable credentials (template E1): the challenge has no ``error``."""

    status = 401
    challenge = True
    slug = "authentication-required"
    title = "Authentication required"
    detail = "This operation requires an access token in the Authorization header."


class InvalidToken(Denied):
    """RFC 6750 §3.1 ``invalid_token`` (template E2)."""

    status = 401
    error = "invalid_token"
    challenge = True
    slug = "invalid-token"
    title = "Invalid access token"
    detail = "The access token is invalid, expired, revoked or not bound to this client."


class InvalidDPoPProof(Denied):
    """RFC 9449 §7.1 ``invalid_dpop_proof`` (template E3)."""

    status = 401
    error = "invalid_dpop_proof"
    challenge = True
    slug = "invalid-dpop-proof"
    title = "Invalid DPoP proof"
    detail = "The DPoP proof is missing or invalid."


class UseDPoPNonce(Denied):
    """RFC 9449 §8 ``use_dpop_nonce`` (template E4): retry with the nonce in ``DPoP-Nonce``."""

    status = 401
    error = "use_dpop_nonce"
    challenge = True
    slug = "use-dpop-nonce"
    title = "DPoP nonce required"
    detail = "Retry with a DPoP proof that carries the server's nonce (DPoP-Nonce)."


class CertificateRequired(Denied):
    """No client certificate (over TLS or from a trusted proxy) where the policy requires one."""

    status = 401
    challenge = True
    slug = "certificate-required"
    title = "Client certificate required"
    detail = "This operation requires a TLS client certificate."


class CertificateInvalid(Denied):
    """The client certificate failed validation: chain, dates, revocation, usage or eIDAS content."""

    status = 401
    challenge = True
    slug = "certificate-invalid"
    title = "Client certificate not accepted"
    detail = "The TLS client certificate is not accepted."


class InsufficientScope(Denied):
    """RFC 6750 §3.1 ``insufficient_scope`` (template E5)."""

    status = 403
    error = "insufficient_scope"
    challenge = True
    slug = "insufficient-scope"
    title = "Insufficient scope"
    detail = "The access token does not grant the scope this operation requires."

    def __init__(
        self,
        reason: str,
        *,
        required: Sequence[str],
        detail: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(reason, detail=detail, headers=headers)
        self.required: tuple[str, ...] = tuple(required)


class Forbidden(Denied):
    pass


class RoleInvalid(Forbidden):
    """The client's eIDAS certificate does not hold a PSD2 role the operation needs (RTS Art. 34)."""

    slug = "role-invalid"
    title = "PSD2 role missing"
    detail = "The client certificate does not grant the PSD2 role this operation requires."

    def __init__(self, reason: str, *, required: Sequence[str], detail: str | None = None) -> None:
        super().__init__(reason, detail=detail)
        self.required: tuple[str, ...] = tuple(required)


class NotFound(Denied):
    status = 404
    slug = "not-found"
    title = "Not Found"
    detail = "No operation is declared at this path."


class MethodNotAllowed(Denied):
    status = 405
    slug = "method-not-allowed"
    title = "Method Not Allowed"
    detail = "The operation does not support this method."

    def __init__(self, reason: str, *, allowed: Sequence[str], detail: str | None = None) -> None:
        self.allowed: tuple[str, ...] = tuple(allowed)
        super().__init__(reason, detail=detail, headers=[("allow", ", ".join(self.allowed))])


class PayloadTooLarge(Denied):
    status = 413
    slug = "payload-too-large"
    title = "Content Too Large"
    detail = "The request body exceeds the permitted size."


class UnsupportedMediaType(Denied):
    """The request body's media type is not one the operation declares (RFC 9110 §15.5.16)."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"
    detail = "The request body's media type is not accepted by this operation."


class UriTooLong(Denied):
    status = 414
    slug = "uri-too-long"
    title = "URI Too Long"
    detail = "The request target exceeds the permitted length."


class HeaderFieldsTooLarge(Denied):
    status = 431
    slug = "header-fields-too-large"
    title = "Request Header Fields Too Large"
    detail = "The request header fields exceed the permitted size."


class _RetryAfter(Denied):
    """A denial that tells the client when to come back (RFC 9110 §10.2.3)."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: int,
        detail: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.retry_after = max(0, int(retry_after))
        super().__init__(reason, detail=detail, headers=[("retry-after", str(self.retry_after)), *headers])


class TooManyRequests(_RetryAfter):
    """Throttled (template E8, RFC 6585 §4)."""

    status = 429
    slug = "too-many-requests"
    title = "Too Many Requests"
    detail = "The request rate limit was exceeded."


class ServiceUnavailable(_RetryAfter):
    status = 503
    slug = "service-unavailable"
    title = "Service Unavailable"
    detail = "The request could not be verified right now; try again later."


class InternalFault(ServiceUnavailable):
    """bankguard could not reach a decision. The request is refused (fail closed)."""

    slug = "security-check-failed"
    title = "Security check failed"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, retry_after=1)
