"""Request hygiene, before anything is parsed: sizes, request target, method overrides.

* Header fields: total and per-line caps → 431 (RFC 6585 §5; OWASP API4).
* Request target (path + query) cap → 414 (RFC 9110 §15.5.15).
* Body cap → 413 (RFC 9110 §15.5.14). The adapters enforce it while reading, also
  for chunked bodies, and report ``body_too_large`` instead of buffering more.
* Paths that do not mean what they look like → 400: encoded ``/``, ``\\`` or NUL in
  the raw path, dot segments, backslashes or control characters after decoding.
  The application routes on the decoded path; refusing these keeps bankguard's
  route match and the framework's route match the same request.
* Method override headers (``X-HTTP-Method-Override`` and kin) or a ``_method``
  query parameter → 400, so a method cannot be swapped behind the checks (OWASP API5).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from ..errors import (
    HeaderFieldsTooLarge,
    MalformedRequest,
    MethodOverrideRefused,
    PayloadTooLarge,
    UriTooLong,
)
from ..policy import RequestPolicy
from ..request import RequestFacts
from . import State

OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c|00)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def has_param(query: str, name: str) -> bool:
    """Whether ``query`` has a parameter ``name``, also when the name is percent-encoded
    (``access%5Ftoken``): frameworks decode names before the application sees them."""
    if name not in query and "%" not in query:
        return False
    return name in query_keys(query)


def form_has_param(facts: RequestFacts, name: str) -> bool:
    """Whether an ``application/x-www-form-urlencoded`` body has a field ``name``."""
    body = facts.body
    if not body:
        return False
    ctype = (facts.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    return ctype == "application/x-www-form-urlencoded" and has_param(body.decode("latin-1"), name)


def query_keys(query: str) -> list[str]:
    """Decoded parameter names of a query string (``a=1&b`` → ``["a", "b"]``)."""
    keys = []
    for part in query.split("&"):
        if part:
            keys.append(unquote_plus(part.split("=", 1)[0], errors="replace"))
    return keys


class RequestCheck:
    name = "request"

    def __init__(self, policy: RequestPolicy) -> None:
        self.mode = policy.mode
        self.policy = policy

    def run(self, facts: RequestFacts, state: State) -> None:
        p = self.policy
        headers = facts.headers
        if headers.size > p.max_header_bytes:
            raise HeaderFieldsTooLarge("request.headers_too_large")
        if headers.largest_line > p.max_header_field_bytes:
            raise HeaderFieldsTooLarge("request.header_field_too_large")
        raw = facts.raw_path
        target = (len(raw) if raw is not None else len(facts.path)) + len(facts.query)
        if target > p.max_target_bytes:
            raise UriTooLong("request.target_too_long")
        if facts.framing_error:
            raise MalformedRequest(f"request.{facts.framing_error}")
        if facts.body_too_large:
            raise PayloadTooLarge("request.body_too_large")
        if not facts.method.isupper():
            # Methods are case-sensitive (RFC 9110 §9.1) but some servers upper-case them before
            # routing; a lower-case method could then reach an operation declared in upper case
            # without its checks. Every registered method is upper case.
            raise MalformedRequest("request.method_not_upper_case", detail="The request method is malformed.")
        self._check_path(facts)
        for name in OVERRIDE_HEADERS:
            if name in headers:
                raise MethodOverrideRefused("request.method_override_header")
        if has_param(facts.query, "_method") or form_has_param(facts, "_method"):
            raise MethodOverrideRefused("request.method_override_param")
        return None

    @staticmethod
    def _check_path(facts: RequestFacts) -> None:
        path = facts.path
        if not path.startswith("/"):
            raise MalformedRequest("request.path_not_absolute", detail="The request path is malformed.")
        if (
            facts.raw_path is not None
            and b"%" in facts.raw_path
            and _ENCODED_SEPARATOR.search(facts.raw_path)
        ):
            raise MalformedRequest("request.encoded_separator", detail="The request path is malformed.")
        if _CONTROL.search(path):
            raise MalformedRequest("request.path_control_character", detail="The request path is malformed.")
        if "/." in path:
            for segment in path.split("/"):
                if segment in (".", ".."):
                    raise MalformedRequest("request.dot_segment", detail="The request path is malformed.")
