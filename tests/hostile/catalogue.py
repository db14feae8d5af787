"""The hostile-input catalogue: one row per case, shared by the ASGI, WSGI and served tests.

Each :class:`Case` is a raw request (:class:`~.wire.RawRequest`) and what must come of it:

* :func:`refused`: bankguard refuses it before any handler runs: this status, an RFC 9457
  ``application/problem+json`` document of the problem type documented for the reason in
  docs/errors.md, and an audit event with this reason code;
* :func:`handled`: it reaches this handler, and bankguard checked it under the rules of that
  handler's operation (the handler echoes both, and the audit event names the same operation);
* :func:`server_refused`: (served rows only) the HTTP server refuses it itself, with its own
  non-problem response, before bankguard or the application see it; no audit event;
* :data:`NO_RESPONSE`: the client went away before the request was complete: no handler ran,
  no decision was made and nothing was answered.

An expectation is one for both adapters or a mapping ``{"asgi": ..., "wsgi": ...}`` where the
adapters legitimately see different requests (a WSGI server joins repeated header lines with
``,``; an ASGI server keeps them apart). Rows with ``served`` are also sent over a real socket to
uvicorn (``"uvicorn"``, the ASGI app) and gunicorn (``"gunicorn"``, the Flask app);
``served=SAME`` means: what the in-process ASGI and WSGI rows expect.

Whatever the row, no response may be a 5xx: a test fails on any.
:func:`markdown_table` renders the catalogue for docs/reliability.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .apps import HANDLERS, MAX_BODY, PREAUTH_LIMIT
from .wire import RawRequest

IID = b"c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
HOST = (b"Host", b"bank.example")
JSON = (b"Content-Type", b"application/json")


@dataclass(frozen=True)
class Expect:
    kind: str  # "guard" | "app" | "server" | "closed"
    status: int | None
    #: guard: the audit reason code; one ending in "." is a prefix (any reason of that control).
    reason: str | None = None
    #: app: the handler that must run (its operation is apps.HANDLERS[handler]).
    handler: str | None = None
    #: app: the path parameter the handler must have received.
    param: str | None = None
    #: guard: the problem document's ``errors`` member (OpenAPI refusals), as (location, check).
    errors: tuple[tuple[str, str], ...] | None = None
    #: guard: the operation whose rules refused it (audit ``operation``), where that is the point.
    operation: str | None = None


def refused(
    status: int,
    reason: str,
    errors: tuple[tuple[str, str], ...] | None = None,
    *,
    operation: str | None = None,
) -> Expect:
    return Expect("guard", status, reason=reason, errors=errors, operation=operation)


def handled(handler: str, status: int = 200, param: str | None = None) -> Expect:
    return Expect("app", status, handler=handler, param=param)


def server_refused(status: int = 400) -> Expect:
    return Expect("server", status)


NO_RESPONSE = Expect("closed", None)
SAME = "same"

Expectation = Expect | Mapping[str, Expect]


@dataclass(frozen=True)
class Case:
    id: str
    why: str
    request: RawRequest
    expect: Expectation
    #: Served over a socket: {"uvicorn": ..., "gunicorn": ...}, SAME, or None (in-process only).
    served: Mapping[str, Expect] | str | None = None
    #: STANDARDS check the row proves, if one applies (part of the test id).
    check: str | None = None
    #: The client shuts its sending side after the request (it will send nothing more).
    half_close: bool = False
    #: Send the request this many times; the expectation is for the last one.
    repeat: int = 1
    #: Shown as the input in the docs table instead of a summary of the request.
    summary: str | None = None

    @property
    def test_id(self) -> str:
        return f"{self.check}:{self.id}" if self.check else self.id

    def expected(self, adapter: str) -> Expect:
        if isinstance(self.expect, Expect):
            return self.expect
        return self.expect[adapter]

    def expected_served(self, server: str) -> Expect:
        assert self.served is not None
        if self.served == SAME:
            return self.expected({"uvicorn": "asgi", "gunicorn": "wsgi"}[server])
        assert isinstance(self.served, Mapping)
        return self.served[server]


#: The problem type (docs/errors.md) of each reason code the catalogue expects.
PROBLEM_TYPES = {
    "request.headers_too_large": "header-fields-too-large",
    "request.header_field_too_large": "header-fields-too-large",
    "request.target_too_long": "uri-too-long",
    "request.invalid_content_length": "malformed-request",
    "request.conflicting_content_length": "malformed-request",
    "request.incomplete_body": "malformed-request",
    "request.body_too_large": "payload-too-large",
    "request.path_not_absolute": "malformed-request",
    "request.encoded_separator": "malformed-request",
    "request.path_control_character": "malformed-request",
    "request.dot_segment": "malformed-request",
    "request.method_not_upper_case": "malformed-request",
    "request.method_override_header": "method-override-refused",
    "request.method_override_param": "method-override-refused",
    "interaction_id.invalid": "invalid-interaction-id",
    "interaction_id.duplicate": "invalid-interaction-id",
    "routes.undeclared_operation": "not-found",
    "routes.method_not_allowed": "method-not-allowed",
    "ratelimit.preauth_exceeded": "too-many-requests",
    "ratelimit.exceeded": "too-many-requests",
    "client_cert.duplicate": "malformed-client-certificate",
    "authorization.duplicate": "invalid-request",
    "authorization.malformed": "invalid-request",
    "token.missing": "authentication-required",
    "token.not_a_jwt": "invalid-token",
    "scope.insufficient": "insufficient-scope",
    "dpop.multiple_proofs": "invalid-dpop-proof",
    "dpop.htu_origin_mismatch": "invalid-dpop-proof",
    "openapi.request_invalid": "request-invalid",
    "openapi.content_type_not_declared": "unsupported-media-type",
}

#: Problem types that carry a WWW-Authenticate challenge (docs/errors.md, "WWW-Authenticate").
CHALLENGING = frozenset(
    {
        "authentication-required",
        "invalid-token",
        "invalid-dpop-proof",
        "use-dpop-nonce",
        "insufficient-scope",
        "invalid-request",
    }
)

#: The audit ``control`` of a reason code, by its prefix.
CONTROLS = {
    "request": "request",
    "interaction_id": "interaction_id",
    "routes": "routes",
    "ratelimit": "ratelimit",
    "client_cert": "client_cert",
    "authorization": "auth",
    "token": "tokens",
    "dpop": "tokens",
    "scope": "tokens",
    "openapi": "openapi",
}


def control_of(reason: str) -> str:
    return CONTROLS[reason.split(".", 1)[0]]


# -- request builders ---------------------------------------------------------------------------


def get(
    target: bytes,
    *headers: tuple[bytes, bytes],
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    host: bytes | None = HOST[1],
    body: bytes = b"",
) -> RawRequest:
    """A request without a body of its own; ``host`` None sends no Host line."""
    lines = (((b"Host", host),) if host is not None else ()) + headers
    return RawRequest(method=method, target=target, version=version, headers=lines, body=body)


def post(
    body: bytes,
    *headers: tuple[bytes, bytes],
    token: bytes = b"Bearer {write}",
    content_type: tuple[bytes, bytes] | None = JSON,
    framing: str = "auto",
    chunks: tuple[bytes, ...] = (),
    target: bytes = b"/items",
) -> RawRequest:
    lines: tuple[tuple[bytes, bytes], ...] = (HOST, (b"Authorization", token))
    if content_type is not None:
        lines += (content_type,)
    return RawRequest(
        method=b"POST", target=target, headers=lines + headers, body=body, framing=framing, chunks=chunks
    )


def bearer(kind: str) -> tuple[bytes, bytes]:
    return (b"Authorization", b"Bearer {" + kind.encode() + b"}")


NOT_JSON = (("body", "body_not_json"),)
VALID_ITEM = b'{"name":"a"}'


# -- the catalogue ---------------------------------------------------------------------------------

SIZE_CASES = [
    Case(
        "one-huge-header",
        "One 5000-byte field line is over max_header_field_bytes (4096): refused before anything parses it.",
        get(b"/public/status", (b"X-Pad", b"x" * 5000), (b"x-fapi-interaction-id", IID)),
        refused(431, "request.header_field_too_large"),
        served=SAME,
        check="OWASP-11",
        summary="`GET /public/status`, `X-Pad: <5000 bytes>`, a valid `x-fapi-interaction-id` (echoed)",
    ),
    Case(
        "many-headers",
        "95 short field lines add up to more than max_header_bytes (8192), each under the field cap; "
        "both servers pass them on (gunicorn allows 100 lines).",
        get(b"/public/status", *((b"X-Pad-%02d" % i, b"y" * 80) for i in range(95))),
        refused(431, "request.headers_too_large"),
        served=SAME,
        check="OWASP-11",
        summary="`GET /public/status`, 95 lines `X-Pad-NN: <80 bytes>`",
    ),
    Case(
        "huge-authorization",
        "An oversized credential is refused by size before the Authorization header is parsed.",
        get(b"/admin/users", (b"Authorization", b"Bearer " + b"A" * 5000)),
        refused(431, "request.header_field_too_large"),
        check="OWASP-11",
        summary="`GET /admin/users`, `Authorization: Bearer <5000 bytes>`",
    ),
    Case(
        "content-length-over-cap",
        "A declared length above max_body_bytes is refused without reading the body.",
        post(VALID_ITEM, (b"Content-Length", str(MAX_BODY + 1).encode()), framing="none"),
        refused(413, "request.body_too_large"),
        check="OWASP-10",
        summary=f"`POST /items`, `Content-Length: {MAX_BODY + 1}`, 12-byte body",
    ),
    Case(
        "content-length-huge-numeral",
        "A Content-Length of 20 digits counts as above any cap; it is never converted.",
        post(VALID_ITEM, (b"Content-Length", b"9" * 20), framing="none"),
        refused(413, "request.body_too_large"),
        check="OWASP-10",
        summary="`POST /items`, `Content-Length: 99999999999999999999`",
    ),
    Case(
        "chunked-over-cap",
        "A chunked body has no Content-Length; the cap holds while the body is read.",
        post(b"", framing="chunked", chunks=(b"[" * 20000, b"]" * 20000)),
        refused(413, "request.body_too_large"),
        served=SAME,
        check="OWASP-10",
        summary="`POST /items`, `Transfer-Encoding: chunked`, 40000 bytes in 2 chunks",
    ),
    Case(
        "content-length-smaller-than-body",
        "The server cuts the body at the declared length (the rest would be the next request); "
        "bankguard validates the 5 bytes the application would get.",
        post(VALID_ITEM, (b"Content-Length", b"5"), framing="none"),
        refused(400, "openapi.request_invalid", NOT_JSON),
        served=SAME,
        summary='`POST /items`, `Content-Length: 5`, body `{"name":"a"}` (12 bytes)',
    ),
    Case(
        "content-length-larger-than-body",
        "The client declares 100 bytes, sends 12 and closes: the message is incomplete (RFC 9112 §6.3) "
        "and must not reach the handler. Under ASGI the server reports the disconnect and nothing "
        "runs; under WSGI the input simply ends early.",
        post(VALID_ITEM, (b"Content-Length", b"100"), framing="none"),
        {"asgi": NO_RESPONSE, "wsgi": refused(400, "request.incomplete_body")},
        served=SAME,
        half_close=True,
        summary='`POST /items`, `Content-Length: 100`, body `{"name":"a"}` (12 bytes), then EOF',
    ),
    Case(
        "content-length-not-a-number",
        "A Content-Length that is not a decimal number makes the framing unknowable.",
        post(VALID_ITEM, (b"Content-Length", b"12abc"), framing="none"),
        refused(400, "request.invalid_content_length"),
        check="OWASP-10",
    ),
    Case(
        "content-length-conflicting",
        "Two Content-Length lines that differ (RFC 9110 §8.6); joined by a WSGI server into `12,13`.",
        post(VALID_ITEM + b" ", (b"Content-Length", b"12"), (b"content-length", b"13"), framing="none"),
        refused(400, "request.conflicting_content_length"),
    ),
    Case(
        "content-length-identical-twice",
        "Two identical Content-Length lines are one length (RFC 9110 §8.6); gunicorn refuses any repeat.",
        post(VALID_ITEM, (b"Content-Length", b"12"), (b"Content-Length", b"12"), framing="none"),
        handled("create_item", 201),
        served={"uvicorn": handled("create_item", 201), "gunicorn": server_refused()},
    ),
    Case(
        "content-length-and-chunked",
        "Content-Length and chunked together (a smuggling pattern): h11 reads the chunks, and bankguard "
        "checks exactly the bytes the application gets; gunicorn refuses the message. The in-process "
        "WSGI row keeps CONTENT_LENGTH (5), so only 5 bytes are read and validated.",
        post(b"", (b"Content-Length", b"5"), framing="chunked", chunks=(VALID_ITEM,)),
        {"asgi": handled("create_item", 201), "wsgi": refused(400, "openapi.request_invalid", NOT_JSON)},
        served={"uvicorn": handled("create_item", 201), "gunicorn": server_refused()},
        summary="`POST /items`, `Content-Length: 5` and `Transfer-Encoding: chunked`, one 12-byte chunk",
    ),
    Case(
        "long-query",
        "Path plus query over max_target_bytes (1024).",
        get(b"/public/status?q=" + b"a" * 1100),
        refused(414, "request.target_too_long"),
        summary="`GET /public/status?q=<1100 bytes>`",
    ),
    Case(
        "long-path-parameter",
        "A path parameter longer than the spec's maxLength (128).",
        get(b"/public/" + b"a" * 200),
        refused(400, "openapi.request_invalid", (("path.name", "maxLength"),)),
        summary="`GET /public/<200 bytes>`",
    ),
    Case(
        "json-nested-10k-arrays",
        "10 000 nested arrays (20 001 bytes, under the body cap): the parser's depth limit turns into "
        "400, not a RecursionError.",
        post(b"[" * 10000 + b"]" * 10000),
        refused(400, "openapi.request_invalid", NOT_JSON),
        summary="`POST /items`, body `[[[…]]]` 10 000 levels deep",
    ),
    Case(
        "json-nested-5k-objects",
        "5000 nested objects.",
        post(b'{"a":' * 5000 + b"1" + b"}" * 5000),
        refused(400, "openapi.request_invalid", NOT_JSON),
        summary='`POST /items`, body `{"a":{"a":…1}}` 5000 levels deep',
    ),
    Case(
        "json-nested-in-property",
        "10 000 nested arrays inside a declared property.",
        post(b'{"name":"a","tags":' + b"[" * 10000 + b"]" * 10000 + b"}"),
        refused(400, "openapi.request_invalid", NOT_JSON),
        summary='`POST /items`, body `{"name":"a","tags":[[[…]]]}` 10 000 levels deep',
    ),
    Case(
        "json-number-overflow",
        "1e400 is not a finite number (RFC 8259 §6 interoperability).",
        post(b'{"name":"a","amount":1e400}'),
        refused(400, "openapi.request_invalid", NOT_JSON),
    ),
    Case(
        "json-integer-5000-digits",
        "An integer longer than Python converts (4300 digits) is refused, not a ValueError escaping.",
        post(b'{"name":"a","amount":' + b"9" * 5000 + b"}"),
        refused(400, "openapi.request_invalid", NOT_JSON),
        summary='`POST /items`, body `{"name":"a","amount":999…}` (5000 digits)',
    ),
    Case(
        "json-number-above-maximum",
        "A large but finite number meets the schema's maximum.",
        post(b'{"name":"a","amount":1e308}'),
        refused(400, "openapi.request_invalid", (("body/amount", "maximum"),)),
    ),
    Case(
        "json-number-underflow",
        "A number with 20 000 fraction digits underflows to 0.0, a valid amount for bankguard and for "
        "the handler alike.",
        post(b'{"name":"a","amount":0.' + b"0" * 20000 + b"1}"),
        handled("create_item", 201),
        summary='`POST /items`, body `{"name":"a","amount":0.000…1}` (20 000 zeros)',
    ),
    Case(
        "json-long-string",
        "A 30 000-character string against maxLength 64.",
        post(b'{"name":"' + b"a" * 30000 + b'"}'),
        refused(400, "openapi.request_invalid", (("body/name", "maxLength"),)),
        summary='`POST /items`, body `{"name":"aaa…"}` (30 000 characters)',
    ),
    Case(
        "json-duplicate-member",
        "A second `name` would win in the handler's parser after the first passed the schema.",
        post(b'{"name":"a","name":"' + b"b" * 100 + b'"}'),
        refused(400, "openapi.request_invalid", (("body", "body_duplicate_member"),)),
        summary='`POST /items`, body `{"name":"a","name":"bbb…"}`',
    ),
    Case(
        "json-duplicate-member-escaped",
        "The duplicate spelt with an escape (`n\\u0061me`) is the same member.",
        post(b'{"name":"a","n\\u0061me":"' + b"b" * 100 + b'"}'),
        refused(400, "openapi.request_invalid", (("body", "body_duplicate_member"),)),
        summary='`POST /items`, body `{"name":"a","n\\u0061me":"bbb…"}`',
    ),
    Case(
        "get-with-body",
        "A body on an operation that declares none.",
        get(b"/public/status", JSON, body=b'{"q":"x"}'),
        refused(415, "openapi.content_type_not_declared", (("body", "body_not_allowed"),)),
    ),
]

ENCODING_CASES = [
    Case(
        "path-invalid-utf8-percent",
        "Percent-encoded bytes that are not UTF-8 decode to U+FFFD for bankguard and for the framework "
        "alike: the public handler runs, with the same parameter.",
        get(b"/public/%FF%FE"),
        handled("get_public_item", param="\ufffd\ufffd"),
    ),
    Case(
        "path-invalid-utf8-raw",
        "A raw 0xFF byte in the request line: both servers refuse it (RFC 9112 §3.2 allows only "
        "visible ASCII); a server that passed it on would get the public handler.",
        get(b"/public/\xff"),
        handled("get_public_item", param="\ufffd"),
        served={"uvicorn": server_refused(), "gunicorn": server_refused()},
    ),
    Case(
        "path-overlong-utf8-dots",
        "`%C0%AE` is an overlong encoding of `.`; it is invalid UTF-8, never a dot segment.",
        get(b"/public/%C0%AE%C0%AE/admin/users"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "path-overlong-utf8-slash",
        "`%C0%AF` is an overlong `/`; it stays inside the segment, so the public handler gets it as "
        "part of its parameter.",
        get(b"/public/x%C0%AFadmin"),
        handled("get_public_item", param="x\ufffd\ufffdadmin"),
    ),
    Case(
        "query-invalid-utf8-percent",
        "Invalid UTF-8 in a query value.",
        get(b"/public/status?q=%FF%FE"),
        handled("get_status"),
    ),
    Case(
        "query-invalid-utf8-raw",
        "A raw 0xFF byte in the query: both servers refuse the request line.",
        get(b"/public/status?q=\xff"),
        handled("get_status"),
        served={"uvicorn": server_refused(), "gunicorn": server_refused()},
    ),
    Case(
        "header-invalid-utf8",
        "obs-text in a header bankguard does not read.",
        get(b"/public/status", (b"X-Note", b"\xff\xfe")),
        handled("get_status"),
        served=SAME,
    ),
    Case(
        "authorization-invalid-utf8",
        "Bytes outside token68 in the credentials.",
        get(b"/admin/users", (b"Authorization", b"Bearer \xff\xfe")),
        refused(400, "authorization.malformed"),
        check="AUTH-06",
    ),
    Case(
        "interaction-id-invalid-utf8",
        "A non-UUID interaction id is refused (interaction_id.invalid: reject) and never reflected.",
        get(b"/public/status", (b"x-fapi-interaction-id", b"\xff")),
        refused(400, "interaction_id.invalid"),
        check="FAPI-10",
    ),
    Case(
        "body-invalid-utf8",
        "A JSON body that is not UTF-8 (RFC 8259 §8.1).",
        post(b'{"name":"\xff"}'),
        refused(400, "openapi.request_invalid", NOT_JSON),
    ),
    Case(
        "body-overlong-utf8",
        "An overlong UTF-8 sequence in a JSON string.",
        post(b'{"name":"\xc0\xae"}'),
        refused(400, "openapi.request_invalid", NOT_JSON),
    ),
    Case(
        "body-utf16",
        "UTF-16 JSON: the handler's json.loads(bytes) would detect and accept it, bankguard refuses "
        "it rather than validate something else than the handler reads.",
        post('{"name":"a"}'.encode("utf-16")),
        refused(400, "openapi.request_invalid", NOT_JSON),
        summary='`POST /items`, body `{"name":"a"}` in UTF-16 with BOM',
    ),
    Case(
        "body-utf8-bom",
        "A UTF-8 byte order mark before the JSON text (RFC 8259 §8.1: must not be added).",
        post(b'\xef\xbb\xbf{"name":"a"}'),
        refused(400, "openapi.request_invalid", NOT_JSON),
    ),
    Case(
        "path-nul-encoded",
        "`%00` in the path.",
        get(b"/public/%00"),
        refused(400, "request.encoded_separator"),
    ),
    Case(
        "path-nul-before-extension",
        "`%00` to cut the path short in a C-string layer.",
        get(b"/admin/users%00.json"),
        refused(400, "request.encoded_separator"),
    ),
    Case(
        "header-nul",
        "A NUL byte in a header bankguard does not read (ASGI scope level).",
        get(b"/public/status", (b"X-Note", b"a\x00b")),
        handled("get_status"),
    ),
    Case(
        "authorization-nul",
        "A NUL byte after the token.",
        get(b"/admin/users", (b"Authorization", b"Bearer {admin}\x00")),
        refused(400, "authorization.malformed"),
        check="AUTH-06",
    ),
    Case(
        "body-raw-nul",
        "A raw NUL inside a JSON string (control characters must be escaped).",
        post(b'{"name":"a\x00b"}'),
        refused(400, "openapi.request_invalid", NOT_JSON),
    ),
    Case(
        "body-escaped-nul",
        "An escaped NUL is a valid JSON string: it reaches the handler as sent.",
        post(b'{"name":"a\\u0000b"}'),
        handled("create_item", 201),
    ),
    Case(
        "interaction-id-crlf",
        "CR LF inside the interaction id (ASGI scope level): refused, and the response header is a fresh "
        "UUID, never the injected Set-Cookie.",
        get(b"/public/status", (b"x-fapi-interaction-id", IID + b"\r\nSet-Cookie: x=1")),
        refused(400, "interaction_id.invalid"),
        check="FAPI-10",
    ),
    Case(
        "authorization-crlf",
        "CR LF inside the credentials (ASGI scope level).",
        get(b"/admin/users", (b"Authorization", b"Bearer {admin}\r\nX-Injected: 1")),
        refused(400, "authorization.malformed"),
        check="AUTH-06",
    ),
    Case(
        "header-crlf",
        "CR LF in a header bankguard does not read (ASGI scope level): ignored.",
        get(b"/public/status", (b"X-Note", b"a\r\nX-Injected: 1")),
        handled("get_status"),
    ),
    Case(
        "host-crlf",
        "CR LF in Host (ASGI scope level): Host decides nothing in bankguard.",
        get(b"/public/status", host=b"bank.example\r\nX-Injected: 1"),
        handled("get_status"),
    ),
    Case(
        "authorization-obs-fold",
        "Credentials folded over two lines (obs-fold). Delivered as is, the value holds CR LF and is "
        "refused; h11 unfolds it into `Bearer <token>` (a valid admin token); gunicorn refuses the fold.",
        get(b"/admin/users", (b"Authorization", b"Bearer\r\n {admin}")),
        refused(400, "authorization.malformed"),
        served={"uvicorn": handled("list_users"), "gunicorn": server_refused()},
        summary="`GET /admin/users`, `Authorization: Bearer` CRLF SP `<admin token>`",
    ),
    Case(
        "path-tab-encoded",
        "An encoded TAB in the path is a control character.",
        get(b"/admin/users%09"),
        refused(400, "request.path_control_character"),
    ),
]

DUPLICATE_CASES = [
    Case(
        "two-authorization",
        "Two credentials: which one would the application read? (RFC 6750 §2; RFC 9110 §5.3)",
        get(b"/public/status", bearer("read"), bearer("admin"), (b"x-fapi-interaction-id", IID)),
        refused(400, "authorization.duplicate"),
        served=SAME,
        check="AUTH-06",
    ),
    Case(
        "authorization-name-case-variants",
        "`Authorization` and `AUTHORIZATION` are the same field (names are case-insensitive).",
        get(b"/admin/users", (b"Authorization", b"Bearer {admin}"), (b"AUTHORIZATION", b"Bearer {read}")),
        refused(400, "authorization.duplicate"),
        check="AUTH-06",
    ),
    Case(
        "authorization-name-upper-case",
        "One `AUTHORIZATION: BEARER` line is an ordinary credential.",
        get(b"/admin/users", (b"AUTHORIZATION", b"BEARER {admin}")),
        handled("list_users"),
        check="AUTH-06",
    ),
    Case(
        "two-dpop",
        "Two DPoP proofs (`DPoP` and `dpop`) with a DPoP-bound token.",
        get(b"/items/1", (b"Authorization", b"DPoP {bound}"), (b"DPoP", b"{proof}"), (b"dpop", b"{proof}")),
        refused(401, "dpop.multiple_proofs"),
        served=SAME,
        check="DPOP-01",
    ),
    Case(
        "two-content-type",
        "Two `application/json` lines. ASGI: bankguard validates with the first, the one Starlette "
        "reads. WSGI: joined into `application/json,application/json`, not a media type: 415. "
        "gunicorn refuses a repeated Content-Type itself.",
        post(VALID_ITEM, JSON),
        {
            "asgi": handled("create_item", 201),
            "wsgi": refused(
                415, "openapi.content_type_not_declared", (("header.content-type", "content_type"),)
            ),
        },
        served={"uvicorn": handled("create_item", 201), "gunicorn": server_refused()},
    ),
    Case(
        "two-content-type-text-first",
        "`text/plain` then `application/json`: the first is what Starlette reads, and it is not declared.",
        post(VALID_ITEM, JSON, content_type=(b"Content-Type", b"text/plain")),
        refused(415, "openapi.content_type_not_declared", (("header.content-type", "content_type"),)),
    ),
    Case(
        "two-interaction-ids",
        "Two interaction ids, both valid UUIDs. ASGI sees two lines (duplicate); WSGI sees one joined "
        "value that is no UUID (invalid). Neither is echoed.",
        get(b"/public/status", (b"x-fapi-interaction-id", IID), (b"X-FAPI-Interaction-ID", IID)),
        {"asgi": refused(400, "interaction_id.duplicate"), "wsgi": refused(400, "interaction_id.invalid")},
        served=SAME,
        check="FAPI-10",
    ),
    Case(
        "two-client-cert",
        "Two `Client-Cert` lines from a trusted proxy (RFC 9440 §2.2: a singleton).",
        get(b"/public/status", (b"Client-Cert", b":AAAA:"), (b"client-cert", b":AAAA:")),
        refused(400, "client_cert.duplicate"),
        served=SAME,
        check="FWD-03",
    ),
    Case(
        "two-host",
        "Two Host lines. bankguard decides nothing on Host; both servers refuse the request (RFC 9112 §3.2).",
        get(b"/public/status", (b"Host", b"evil.example")),
        handled("get_status"),
        served={"uvicorn": server_refused(), "gunicorn": server_refused()},
    ),
]

PATH_CASES = [
    Case(
        "dot-dot-encoded",
        "`%2e%2e` decodes to a `..` segment: from the public prefix up to /admin/users.",
        get(b"/public/%2e%2e/admin/users", (b"x-fapi-interaction-id", IID)),
        refused(400, "request.dot_segment"),
        served=SAME,
    ),
    Case(
        "dot-dot-encoded-mixed-case",
        "Upper- and lower-case escapes (`%2E%2e`) decode alike.",
        get(b"/public/%2E%2e/admin/users"),
        refused(400, "request.dot_segment"),
    ),
    Case(
        "dot-dot-plain",
        "A literal `..` segment (servers do not resolve it; RFC 3986 §5.2.4 would).",
        get(b"/public/../admin/users"),
        refused(400, "request.dot_segment"),
    ),
    Case(
        "dot-dot-encoded-slash",
        "`..%2f`: an encoded slash hides the segment boundary from one decoder and not the other.",
        get(b"/public/..%2fadmin/users"),
        refused(400, "request.encoded_separator"),
        served=SAME,
    ),
    Case(
        "encoded-slash-in-segment",
        "`%2F` inside a segment: one parameter for a router on the raw path, two segments decoded.",
        get(b"/public/admin%2Fusers"),
        refused(400, "request.encoded_separator"),
    ),
    Case(
        "encoded-slashes-upper-case",
        "`%2F..%2F` all the way to the admin route.",
        get(b"/public/status%2F..%2F..%2Fadmin%2Fusers"),
        refused(400, "request.encoded_separator"),
    ),
    Case(
        "backslash-raw",
        "Backslashes, which some stacks treat as `/`.",
        get(b"/public\\..\\admin/users"),
        refused(400, "request.path_control_character"),
        served=SAME,
    ),
    Case(
        "backslash-encoded",
        "`%5C` (an encoded backslash).",
        get(b"/public/%5C..%5Cadmin/users"),
        refused(400, "request.encoded_separator"),
    ),
    Case(
        "matrix-on-static-route",
        "`;x=1` matrix parameter on the admin route: no router strips it, so no operation matches.",
        get(b"/admin/users;x=1"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "matrix-on-template-route",
        "`;x=1` inside a template parameter: the read route's rules apply (a token is needed).",
        get(b"/items/1;x=1"),
        refused(401, "token.missing", operation="GetItem"),
        served=SAME,
    ),
    Case(
        "matrix-on-template-route-with-token",
        "With a read token the read handler runs, with the matrix part in its parameter.",
        get(b"/items/1;jsessionid=x", bearer("read")),
        handled("get_item", param="1;jsessionid=x"),
    ),
    Case(
        "matrix-then-dot-dot",
        "`;/../../` after a public path.",
        get(b"/public/status;/../../admin/users"),
        refused(400, "request.dot_segment"),
    ),
    Case(
        "matrix-in-prefix",
        "`;x=1` on the public prefix.",
        get(b"/public;x=1/status"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "trailing-dot-protected",
        "A trailing dot (as in Windows file names) on the admin route.",
        get(b"/admin/users."),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "trailing-dot-public",
        "A trailing dot on the static public route falls into the public template, in both routers.",
        get(b"/public/status."),
        handled("get_public_item", param="status."),
    ),
    Case(
        "trailing-slash-protected",
        "A trailing slash: bankguard matches exactly, and answers before a framework would redirect.",
        get(b"/admin/users/"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "trailing-slash-public",
        "A trailing slash on a public route.",
        get(b"/public/status/"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "double-slash-leading",
        "`//admin/users` (gunicorn reads it as a path, not a network-path reference).",
        get(b"//admin/users"),
        refused(404, "routes.undeclared_operation"),
        served=SAME,
    ),
    Case(
        "double-slash-inner",
        "`/admin//users`: Werkzeug would redirect to the merged path, after bankguard answered.",
        get(b"/admin//users"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "double-slash-public-prefix",
        "`/public//admin/users`: an empty public parameter followed by the admin path.",
        get(b"/public//admin/users"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "percent-encoded-letters-no-token",
        "`/%61dmin/users` is /admin/users: the admin route's rules apply.",
        get(b"/%61dmin/users"),
        refused(401, "token.missing", operation="ListUsers"),
    ),
    Case(
        "percent-encoded-letters-read-token",
        "The encoded admin path with a read token: 403, the admin scope is needed.",
        get(b"/%61dmin/user%73", bearer("read")),
        refused(403, "scope.insufficient", operation="ListUsers"),
        served=SAME,
        check="OWASP-17",
    ),
    Case(
        "percent-encoded-letters-admin-token",
        "The encoded admin path with an admin token reaches the admin handler.",
        get(b"/%61dmin/users", bearer("admin")),
        handled("list_users"),
    ),
    Case(
        "percent-encoded-public",
        "`/public/%73tatus` is /public/status: the static route wins over the template in bankguard, "
        "Starlette (declared first) and Werkzeug (static rules first).",
        get(b"/public/%73tatus"),
        handled("get_status"),
    ),
    Case(
        "fullwidth-letter",
        "U+FF41 FULLWIDTH a: NFKC would make it /admin/users; nothing normalises it.",
        get(b"/%EF%BD%81dmin/users"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "fullwidth-dots",
        "U+FF0E FULLWIDTH FULL STOP twice: NFKC would make it `..`.",
        get(b"/public/%EF%BC%8E%EF%BC%8E/admin/users"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "division-slash",
        "U+2215 DIVISION SLASH looks like `/` but is a character of the segment.",
        get(b"/public/..%E2%88%95admin%E2%88%95users"),
        handled("get_public_item", param="..\u2215admin\u2215users"),
    ),
    Case(
        "zero-width-space",
        "U+200B ZERO WIDTH SPACE after the admin path.",
        get(b"/admin/users%E2%80%8B"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "dotless-i",
        "U+0131 LATIN SMALL LETTER DOTLESS I, which upper-cases to I.",
        get(b"/adm%C4%B1n/users"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "upper-case-path",
        "Paths are case-sensitive in bankguard and in both routers.",
        get(b"/ADMIN/USERS"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "encoded-space",
        "A trailing encoded space.",
        get(b"/admin/users%20"),
        refused(404, "routes.undeclared_operation"),
    ),
    Case(
        "fragment-in-target",
        "A fragment in the request target (clients must not send one). uvicorn keeps `#frag` in the "
        "path, and Starlette and bankguard both route it to the public template; gunicorn drops it, "
        "and Flask and bankguard both route to the static public route.",
        get(b"/public/status#frag"),
        {"asgi": handled("get_public_item", param="status#frag"), "wsgi": handled("get_status")},
        served=SAME,
    ),
    Case(
        "fragment-dot-dot",
        "`#/../../admin/users` after a public path: a dot segment where the fragment is kept, dropped "
        "with the fragment where it is not.",
        get(b"/public/status#/../../admin/users"),
        {"asgi": refused(400, "request.dot_segment"), "wsgi": handled("get_status")},
        served=SAME,
    ),
    Case(
        "query-looks-like-a-path",
        "`?/../../admin/users` is a query, not a path.",
        get(b"/public/status?/../../admin/users"),
        handled("get_status"),
    ),
    Case(
        "rewrite-headers",
        "X-Original-URL / X-Rewrite-URL name the admin route; neither framework nor bankguard uses them.",
        get(b"/public/status", (b"X-Original-URL", b"/admin/users"), (b"X-Rewrite-URL", b"/admin/users")),
        handled("get_status"),
    ),
    Case(
        "absolute-form-protected",
        "Absolute-form target. uvicorn puts the whole URL in `path`, which is not absolute: 400. "
        "gunicorn gives its path to Flask, and bankguard applies the admin route's rules to it.",
        get(b"http://bank.example/admin/users"),
        {
            "asgi": refused(400, "request.path_not_absolute"),
            "wsgi": refused(401, "token.missing", operation="ListUsers"),
        },
        served=SAME,
    ),
    Case(
        "absolute-form-foreign-host",
        "Absolute-form naming another host: the host part decides nothing.",
        get(b"http://evil.example/public/status"),
        {"asgi": refused(400, "request.path_not_absolute"), "wsgi": handled("get_status")},
    ),
    Case(
        "asterisk-form",
        "`OPTIONS *` (asterisk-form).",
        get(b"*", method=b"OPTIONS"),
        refused(400, "request.path_not_absolute"),
        served=SAME,
    ),
    Case(
        "authority-form",
        "`CONNECT bank.example:443` (authority-form).",
        get(b"bank.example:443", method=b"CONNECT"),
        refused(400, "request.path_not_absolute"),
    ),
]

METHOD_CASES = [
    Case(
        "override-header-on-post",
        "X-HTTP-Method-Override: GET on a valid write: refused, so the operation checked is always "
        "the one of the request line (neither framework honours the header either).",
        post(VALID_ITEM, (b"X-HTTP-Method-Override", b"GET")),
        refused(400, "request.method_override_header"),
        check="OWASP-18",
    ),
    Case(
        "override-header-x-http-method",
        "X-HTTP-Method: DELETE.",
        get(b"/items/1", bearer("read"), (b"X-HTTP-Method", b"DELETE")),
        refused(400, "request.method_override_header"),
        check="OWASP-18",
    ),
    Case(
        "override-header-x-method-override",
        "X-Method-Override: POST on a public route.",
        get(b"/public/status", (b"X-Method-Override", b"POST")),
        refused(400, "request.method_override_header"),
        check="OWASP-18",
    ),
    Case(
        "override-query",
        "`?_method=POST`.",
        get(b"/public/status?_method=POST"),
        refused(400, "request.method_override_param"),
        served=SAME,
        check="OWASP-18",
    ),
    Case(
        "override-query-encoded",
        "`?%5Fmethod=POST`: frameworks decode parameter names.",
        get(b"/public/status?%5Fmethod=POST"),
        refused(400, "request.method_override_param"),
        check="OWASP-18",
    ),
    Case(
        "override-form-field",
        "`_method` in a form body.",
        post(b"_method=GET&name=a", content_type=(b"Content-Type", b"application/x-www-form-urlencoded")),
        refused(400, "request.method_override_param"),
        check="OWASP-18",
    ),
    Case(
        "override-header-underscore",
        "X_HTTP_Method_Override. ASGI keeps the name as sent, a different header that no one reads: "
        "the public handler runs. A WSGI server that maps `_` like `-` makes it the override header: "
        "refused. gunicorn drops header names with `_`.",
        get(b"/public/status", (b"X_HTTP_Method_Override", b"DELETE")),
        {"asgi": handled("get_status"), "wsgi": refused(400, "request.method_override_header")},
        served={"uvicorn": handled("get_status"), "gunicorn": handled("get_status")},
        check="OWASP-18",
    ),
    Case(
        "method-lower-case",
        "`get`: methods are case-sensitive, and some servers upper-case them before routing.",
        get(b"/public/status", method=b"get"),
        refused(400, "request.method_not_upper_case"),
        check="OWASP-18",
    ),
    Case(
        "method-trace",
        "TRACE on the admin route.",
        get(b"/admin/users", method=b"TRACE"),
        refused(405, "routes.method_not_allowed"),
        check="OWASP-18",
    ),
    Case(
        "method-head-protected",
        "HEAD gets the GET operation's checks: 401 without a token, and no body.",
        get(b"/admin/users", method=b"HEAD"),
        refused(401, "token.missing", operation="ListUsers"),
        check="FAPI-17",
    ),
    Case(
        "method-unknown-long",
        "A 2000-character method. gunicorn refuses it itself.",
        get(b"/admin/users", method=b"A" * 2000),
        refused(405, "routes.method_not_allowed"),
        served={"uvicorn": refused(405, "routes.method_not_allowed"), "gunicorn": server_refused()},
        summary="`AAA…A /admin/users` (a 2000-character method)",
    ),
]

PROTOCOL_CASES = [
    Case(
        "http10-no-host-public",
        "HTTP/1.0 without Host (allowed in 1.0).",
        get(b"/public/status", version=b"HTTP/1.0", host=None),
        handled("get_status"),
        served=SAME,
    ),
    Case(
        "http10-no-host-protected",
        "HTTP/1.0 without Host on the admin route: its rules apply.",
        get(b"/admin/users", (b"x-fapi-interaction-id", IID), version=b"HTTP/1.0", host=None),
        refused(401, "token.missing", operation="ListUsers"),
        served=SAME,
    ),
    Case(
        "http11-no-host",
        "HTTP/1.1 without Host (RFC 9112 §3.2: must be refused by the server). h11 refuses it; gunicorn "
        "and the in-process rows pass it on, and bankguard does not need Host.",
        get(b"/public/status", host=None),
        handled("get_status"),
        served={"uvicorn": server_refused(), "gunicorn": handled("get_status")},
    ),
    Case(
        "host-with-port",
        "Host with a port.",
        get(b"/public/status", host=b"bank.example:8443"),
        handled("get_status"),
    ),
    Case(
        "host-odd-characters",
        "A Host with userinfo, an out-of-range port and a path.",
        get(b"/public/status", host=b"evil.example@x:99999/../admin"),
        handled("get_status"),
        served=SAME,
    ),
    Case(
        "host-does-not-choose-the-dpop-origin",
        "A proof for the configured origin is accepted whatever Host says.",
        get(b"/items/1", (b"Authorization", b"DPoP {bound}"), (b"DPoP", b"{proof}"), host=b"evil.example"),
        handled("get_item", param="1"),
        check="DPOP-11",
    ),
    Case(
        "host-cannot-make-a-foreign-proof-valid",
        "A proof made for the Host the client sends, not for the configured origin.",
        get(
            b"/items/1",
            (b"Authorization", b"DPoP {bound}"),
            (b"DPoP", b"{proof:https://evil.example}"),
            host=b"evil.example",
        ),
        refused(401, "dpop.htu_origin_mismatch"),
        check="DPOP-11",
    ),
]

RATE_CASES = [
    Case(
        "preauth-flood-of-duplicate-credentials",
        f"{PREAUTH_LIMIT + 1} requests with two Authorization lines from one address: each costs a "
        "counter, and the last is over the pre-authentication limit.",
        get(b"/items/1", bearer("read"), bearer("read")),
        refused(429, "ratelimit.preauth_exceeded", operation="GetItem"),
        repeat=PREAUTH_LIMIT + 1,
        check="OWASP-14",
        summary=f"{PREAUTH_LIMIT + 1} times `GET /items/1` with two `Authorization` lines",
    ),
    Case(
        "operation-limit-after-authentication",
        "Six valid writes in a minute against CreateItem's limit of 5 per client.",
        post(VALID_ITEM),
        refused(429, "ratelimit.exceeded"),
        repeat=6,
        check="OWASP-14",
        summary='6 times `POST /items` with a valid write token and `{"name":"a"}`',
    ),
]

CASES: list[Case] = [
    *SIZE_CASES,
    *ENCODING_CASES,
    *DUPLICATE_CASES,
    *PATH_CASES,
    *METHOD_CASES,
    *PROTOCOL_CASES,
    *RATE_CASES,
]

SERVED_CASES: list[Case] = [case for case in CASES if case.served is not None]


# -- the docs table ----------------------------------------------------------------------------------


def _show(data: bytes, limit: int = 60) -> str:
    """Bytes as readable text for a table cell: printable ASCII as is, the rest escaped."""
    escapes = {13: "\\r", 10: "\\n", 0x60: "\\x60", 0x7C: "\\x7c"}
    text = "".join(escapes.get(b, chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}") for b in data[:limit])
    return text + ("…" if len(data) > limit else "")


def summarize(request: RawRequest) -> str:
    """A short description of a raw request for the docs table (the Host line and, on a POST, the
    write token and ``Content-Type: application/json`` are left out: see :data:`TABLE_NOTE`)."""
    line = f"{_show(request.method, 16)} {_show(request.target)}"
    if request.version != b"HTTP/1.1":
        line += f" {request.version.decode()}"
    parts = [f"`{line}`"]
    defaults = (HOST, (b"Authorization", b"Bearer {write}"), JSON) if request.method == b"POST" else (HOST,)
    for i, (name, value) in enumerate(request.headers):
        if i >= len(defaults) or (name, value) != defaults[i]:  # the leading default lines are left out
            shown = _show(value, 40) if len(value) <= 60 else f"<{len(value)} bytes>"
            parts.append(f"`{_show(name, 30)}: {shown}`")
    if request.body:
        parts.append(f"body `{_show(request.body, 40)}`")
    if not any(name.lower() == b"host" for name, _ in request.headers):
        parts.append("no Host")
    return ", ".join(parts)


def _status(expect: Expect) -> str:
    if expect.kind == "closed":
        return "no response"
    if expect.kind == "server":
        return f"{expect.status} from the server"
    return str(expect.status)


def _reason(expect: Expect) -> str:
    if expect.kind == "guard":
        reason = str(expect.reason)
        text = f"`{reason}*` (any)" if reason.endswith(".") else f"`{reason}`"
        return text + (f" under {expect.operation}" if expect.operation else "")
    if expect.kind == "app":
        return f"allowed: `{expect.handler}` runs under {HANDLERS[str(expect.handler)]}"
    if expect.kind == "server":
        return "refused by the server, no audit event"
    return "client gone, no decision"


def _cell(case: Case, render: Callable[[Expect], str]) -> str:
    asgi, wsgi = render(case.expected("asgi")), render(case.expected("wsgi"))
    text = asgi if asgi == wsgi else f"ASGI: {asgi}; WSGI: {wsgi}"
    if case.served is not None:
        uvicorn = render(case.expected_served("uvicorn"))
        gunicorn = render(case.expected_served("gunicorn"))
        if (uvicorn, gunicorn) != (asgi, wsgi):
            text += f"; uvicorn: {uvicorn}; gunicorn: {gunicorn}"
    return text


TABLE_NOTE = (
    "`{read}`, `{write}`, `{admin}`: a valid access token with that scope; `{bound}`: a DPoP-bound "
    "read token; `{proof}`: a fresh DPoP proof for the request. Every request has `Host: bank.example` "
    "unless the row says otherwise; every `POST /items` carries a write token and "
    "`Content-Type: application/json` unless the row shows other values. (served): also sent over a "
    "socket to uvicorn and gunicorn."
)


def markdown_table(cases: list[Case] | None = None) -> str:
    """The catalogue as a markdown table: id, input, expected status, reason, why.

    Rows marked (served) also run over a socket against uvicorn and gunicorn; where those differ
    from the in-process ASGI and WSGI rows, the cell says so."""
    rows = ["| id | input | expected status | reason | why |", "|---|---|---|---|---|"]
    for case in cases if cases is not None else CASES:
        served = " (served)" if case.served is not None else ""
        summary = case.summary or summarize(case.request)
        why = case.why.replace("|", "\\|")
        status, reason = _cell(case, _status), _cell(case, _reason)
        rows.append(f"| `{case.test_id}`{served} | {summary} | {status} | {reason} | {why} |")
    return "\n".join(rows)


def _unique(cases: list[Case]) -> None:
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise ValueError(f"the catalogue has two rows with the id {case.id!r}")
        seen.add(case.id)


_unique(CASES)
