"""A tiny OAuth 2.0 authorization server for the examples. NOT FOR PRODUCTION.

It exists so that the example APIs can be called with real, signed access tokens. Run it alone
from the repository root (it stays up until Ctrl-C)::

    .venv/bin/python examples/auth_server.py              # http://127.0.0.1:8765
    .venv/bin/python examples/auth_server.py --port 9000  # another port (see below)

    curl -s http://127.0.0.1:8765/jwks
    curl -s -d grant_type=client_credentials -d client_id=aisp-demo -d scope=accounts \\
        http://127.0.0.1:8765/token                      # an unbound Bearer token

``examples/demo.py`` starts it in a thread with :func:`running`, and asks for DPoP-bound tokens.

* At every start it makes a new ES256 key pair in memory with :class:`bankguard.testing.TestIssuer`
  (no key is ever written to disk); the key id is the key's RFC 7638 thumbprint, so tokens of an
  earlier run name a key the APIs no longer know.
* ``GET /jwks`` serves the public JWK Set (``Cache-Control: public, max-age=300``);
  ``GET /.well-known/oauth-authorization-server`` serves RFC 8414 metadata.
* ``POST /token`` takes a ``client_credentials`` form (``grant_type``, ``client_id``, optional
  ``scope``) and answers an RFC 6749 §5.1 token response holding an RFC 9068 JWT access token
  for the audience ``https://api.bank.example``. ``sub`` is the client id, as RFC 9068 §2.2
  says for grants without a resource owner.
* With one ``DPoP`` header holding a valid proof (RFC 9449 §5) the token is bound to the
  proof's key (``cnf.jkt``, its RFC 7638 thumbprint) and ``token_type`` is ``DPoP``; the
  example APIs (profile ``fapi2``) accept only such tokens. Without the header the token is an
  unbound ``Bearer`` token, which the demo uses to show that the APIs refuse it. A proof must
  be a compact JWS with ``typ`` ``dpop+jwt``, an ``alg`` of ES256, PS256 or EdDSA and a public
  ``jwk`` whose key verifies the signature; ``htm`` ``POST``; ``htu`` this token endpoint's URL;
  ``iat`` at most 60 s old (10 s ahead at most); a ``jti`` not used before. Refusals are
  400 ``invalid_dpop_proof``.

What makes it unfit for anything but a demo: clients do not authenticate (no secret, no
private_key_jwt, no mTLS); there is no PSU, no consent and no authorization code flow; it
issues unbound tokens to any client that sends no proof; it offers no DPoP nonces and keeps
the used proofs' ``jti`` in its own memory only; it speaks plain HTTP; and ``POST /token``
accepts a demo-only ``lifetime`` parameter, whose negative values give tokens that have already
expired, so that the demo can show their refusal.

The example policies name ``http://127.0.0.1:8765`` as issuer and JWKS location. On another
port the issuer becomes ``http://127.0.0.1:<port>``, and a policy must say so to trust it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from bankguard.testing import TestIssuer

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
AUDIENCE = "https://api.bank.example"
ALGORITHM = "ES256"
#: The demo clients and the scopes each may ask for. ``aisp`` reads accounts (an account
#: information service provider), ``pisp`` initiates payments, ``tpp`` does both.
CLIENTS: Mapping[str, frozenset[str]] = {
    "aisp-demo": frozenset({"accounts"}),
    "pisp-demo": frozenset({"payments"}),
    "tpp-demo": frozenset({"accounts", "payments"}),
}
SCOPES = ("accounts", "payments")
TOKEN_LIFETIME = 300  # seconds
MAX_LIFETIME = 3600  # bound of the demo-only ``lifetime`` parameter, both ways
JWKS_MAX_AGE = 300  # seconds; the APIs refetch the key set about this often
MAX_FORM_BYTES = 4096
CLIENT_TIMEOUT = 10.0  # seconds a connection may stall before it is dropped
STOP_TIMEOUT = 10.0  # seconds to wait for the server thread to stop


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public EC, RSA or OKP key."""
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
    required = {name: jwk[name] for name in members[jwk["kty"]]}
    return _b64(hashlib.sha256(json.dumps(required, separators=(",", ":"), sort_keys=True).encode()).digest())


class DemoAuthorizationServer:
    """The demo authorization server, bound to ``host:port`` when constructed.

    Use :meth:`start` and :meth:`stop` (or :func:`running`) to serve it from a thread, or
    :meth:`serve_forever` in the foreground. :meth:`issue` is the token endpoint's logic.
    """

    def __init__(self, host: str = HOST, port: int = DEFAULT_PORT, *, quiet: bool = True) -> None:
        self.quiet = quiet
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))  # port 0: any free port
        self.httpd.daemon_threads = True  # a stalled client cannot hold up the shutdown
        try:
            bound = self.httpd.server_address[1]
            self.issuer = TestIssuer(f"http://{host}:{bound}", alg=ALGORITHM, kid=None)
            self.issuer.kid = thumbprint(self.issuer.public_jwk())
        except BaseException:
            self.httpd.server_close()
            raise
        self._thread: threading.Thread | None = None

    # -- where it is --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.issuer.issuer

    @property
    def jwks_uri(self) -> str:
        return f"{self.url}/jwks"

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/token"

    @property
    def kid(self) -> str:
        return str(self.issuer.kid)

    # -- what it serves -----------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        return self.issuer.jwks()

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        return {
            "issuer": self.url,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": self.jwks_uri,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["none"],  # demo only
            "scopes_supported": list(SCOPES),
        }

    def issue(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The token response for a ``/token`` form; raises :class:`OAuthError`."""
        if form.get("grant_type") != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", "only grant_type=client_credentials")
        client_id = form.get("client_id", "")
        allowed = CLIENTS.get(client_id)
        if allowed is None:
            # 400, not 401: a 401 would have to offer an authentication scheme, and these demo
            # clients have none (RFC 6749 §5.2 allows either).
            raise OAuthError(400, "invalid_client", "unknown client_id")
        requested = form.get("scope")
        scopes = allowed if requested is None else frozenset(requested.split(" "))
        if not scopes or not scopes <= allowed:
            raise OAuthError(400, "invalid_scope", f"{client_id} may ask for: {' '.join(sorted(allowed))}")
        lifetime = TOKEN_LIFETIME
        if "lifetime" in form:  # demo only: lets the demo show an expired token being refused
            try:
                lifetime = int(form["lifetime"])
            except ValueError:
                lifetime = 0
            if lifetime == 0 or abs(lifetime) > MAX_LIFETIME:
                raise OAuthError(
                    400, "invalid_request", f"lifetime: a non-zero number of seconds up to {MAX_LIFETIME}"
                )
        now = int(time.time())
        # A negative lifetime: a token of the usual lifetime that expired -lifetime seconds ago.
        issued = now if lifetime > 0 else now + lifetime - TOKEN_LIFETIME
        expires = now + lifetime
        scope = " ".join(sorted(scopes))
        token = self.issuer.mint(
            {"sub": client_id, "client_id": client_id},
            audience=AUDIENCE,
            scope=scope,
            lifetime=expires - issued,
            now=issued,
        )
        return {"access_token": token, "token_type": "Bearer", "expires_in": lifetime, "scope": scope}

    # -- running it ---------------------------------------------------------------------------

    def __enter__(self) -> DemoAuthorizationServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Serve from a daemon thread."""
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="demo-auth-server", daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        self.httpd.serve_forever(0.5)

    def stop(self) -> None:
        """Stop serving (bounded wait) and close the listening socket."""
        if self._thread is not None:
            stopper = threading.Thread(target=self.httpd.shutdown, daemon=True)
            stopper.start()
            stopper.join(STOP_TIMEOUT)
            self._thread.join(STOP_TIMEOUT)
            self._thread = None
        self.httpd.server_close()


@contextlib.contextmanager
def running(host: str = HOST, port: int = DEFAULT_PORT) -> Iterator[DemoAuthorizationServer]:
    """The demo authorization server, serving from a thread for the duration of the block."""
    with DemoAuthorizationServer(host, port) as server:
        yield server


def _handler(server: DemoAuthorizationServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT

        def version_string(self) -> str:
            return "demo-auth-server"

        def do_GET(self) -> None:
            if self.path == "/jwks":
                self._json(200, server.jwks(), cache=f"public, max-age={JWKS_MAX_AGE}")
            elif self.path == "/.well-known/oauth-authorization-server":
                self._json(200, server.metadata(), cache=f"public, max-age={JWKS_MAX_AGE}")
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            if self.path != "/token":
                self._json(404, {"error": "not_found"})
                return
            try:
                response = server.issue(self._form())
            except OAuthError as exc:
                body = {"error": exc.error, "error_description": exc.description}
                self._json(exc.status, body)
                return
            self._json(200, response, headers=[("Pragma", "no-cache")])

        def _form(self) -> dict[str, str]:
            mime = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if mime != "application/x-www-form-urlencoded":
                raise OAuthError(400, "invalid_request", "send an application/x-www-form-urlencoded body")
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise OAuthError(400, "invalid_request", "Content-Length is required") from None
            if not 0 <= length <= MAX_FORM_BYTES:
                raise OAuthError(400, "invalid_request", f"the form is limited to {MAX_FORM_BYTES} bytes")
            try:
                text = self.rfile.read(length).decode("ascii")
                pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
            except (UnicodeDecodeError, ValueError):
                raise OAuthError(400, "invalid_request", "the form is not valid") from None
            form = dict(pairs)
            if len(form) != len(pairs):  # RFC 6749 §3.2: no parameter may appear twice
                raise OAuthError(400, "invalid_request", "a parameter is repeated")
            return form

        def _json(
            self,
            status: int,
            document: Any,
            *,
            cache: str = "no-store",
            headers: list[tuple[str, str]] | None = None,
        ) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", cache)
            for name, value in headers or ():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            if not server.quiet:
                super().log_message(format, *args)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A demo authorization server for the examples (not for production)."
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (default {DEFAULT_PORT})"
    )
    args = parser.parse_args(argv)
    try:
        server = DemoAuthorizationServer(HOST, args.port, quiet=False)
    except OSError as exc:
        print(f"cannot listen on {HOST}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"demo authorization server (NOT for production), issuer {server.url}")
    print(f"  JWK Set:        GET  {server.jwks_uri}   (key id {server.kid})")
    print(f"  token endpoint: POST {server.token_endpoint}")
    for client, scopes in CLIENTS.items():
        print(f"  client {client:<10} may ask for scope {' '.join(sorted(scopes))}")
    print("Ctrl-C stops it.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
