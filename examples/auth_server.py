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
import contextlib
import json
import math
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from bankguard.testing import TestIssuer
from bankguard.tokens.dpop import normal_htu
from bankguard.tokens.jose import JoseError, check_key_for_alg, json_object, parse_compact, verify_signature
from bankguard.tokens.jwk import public_key_from_jwk, thumbprint

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
#: DPoP proofs at the token endpoint (RFC 9449 §5): the algorithms FAPI 2.0 allows, and bounds.
DPOP_ALGORITHMS = ("ES256", "PS256", "EdDSA")
DPOP_MAX_AGE = 60  # seconds a proof is accepted after its iat
DPOP_FUTURE_SKEW = 10  # seconds a proof's iat may be ahead of this server's clock
MAX_PROOF_BYTES = 8192
MAX_JTI_CHARS = 256
MAX_REMEMBERED_JTIS = 10_000  # used proofs kept for the acceptance window


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def _proof_error(description: str) -> OAuthError:
    return OAuthError(400, "invalid_dpop_proof", description)  # RFC 9449 §5


class DemoAuthorizationServer:
    """The demo authorization server, bound to ``host:port`` when constructed.

    Use :meth:`start` and :meth:`stop` (or :func:`running`) to serve it from a thread, or
    :meth:`serve_forever` in the foreground. :meth:`issue` is the token endpoint's logic and
    :meth:`check_proof` its DPoP proof check.
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
        #: jti of the proofs accepted within the acceptance window, and when each may be forgotten.
        self._used_jtis: dict[str, float] = {}
        self._jti_lock = threading.Lock()

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
            "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),  # RFC 9449 §5.1
        }

    def check_proof(self, proof: str) -> str:
        """Check a DPoP proof sent to the token endpoint (RFC 9449 §4.3, as far as a token
        endpoint needs it: no access token, no nonces); the thumbprint of its key, or
        :class:`OAuthError`."""
        try:
            jws = parse_compact(proof, MAX_PROOF_BYTES)
        except JoseError as exc:
            raise _proof_error(f"not a compact JWS ({exc.reason})") from None
        header = jws.header
        if not isinstance(header.get("typ"), str) or header["typ"].lower() != "dpop+jwt":
            raise _proof_error('typ must be "dpop+jwt"')
        alg = header.get("alg")
        if alg not in DPOP_ALGORITHMS:
            raise _proof_error(f"alg must be one of {', '.join(DPOP_ALGORITHMS)}")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise _proof_error("the header must hold the public key as jwk")
        try:
            key, algorithms = public_key_from_jwk(jwk)  # refuses private members
            if alg not in algorithms:
                raise JoseError("key_alg_mismatch")
            check_key_for_alg(key, alg)
            verify_signature(key, alg, jws.signing_input, jws.signature)
            jkt = thumbprint(jwk)
            claims = json_object(jws.payload, "payload")
        except JoseError as exc:
            raise _proof_error(f"the proof's key or signature is not valid ({exc.reason})") from None
        jti, iat = claims.get("jti"), claims.get("iat")
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise _proof_error("jti is required")
        if claims.get("htm") != "POST":
            raise _proof_error('htm must be "POST"')
        htu = claims.get("htu")
        if not isinstance(htu, str) or normal_htu(htu) != normal_htu(self.token_endpoint):
            raise _proof_error(f"htu must be {self.token_endpoint}")
        if isinstance(iat, bool) or not isinstance(iat, (int, float)) or not math.isfinite(iat):
            raise _proof_error("iat is required")
        now = time.time()
        if not now - DPOP_MAX_AGE <= iat <= now + DPOP_FUTURE_SKEW:
            raise _proof_error("iat is too old or in the future")
        with self._jti_lock:  # each proof once (RFC 9449 §11.1)
            for seen, until in list(self._used_jtis.items()):
                if until < now:
                    del self._used_jtis[seen]
            if jti in self._used_jtis:
                raise _proof_error("this proof has been used before")
            if len(self._used_jtis) >= MAX_REMEMBERED_JTIS:
                raise OAuthError(503, "temporarily_unavailable", "too many proofs; try again later")
            self._used_jtis[jti] = now + DPOP_MAX_AGE + DPOP_FUTURE_SKEW
        return jkt

    def issue(self, form: Mapping[str, str], dpop_proof: str | None = None) -> dict[str, Any]:
        """The token response for a ``/token`` form and the request's ``DPoP`` header, if any;
        raises :class:`OAuthError`."""
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
        # Checked once the form is valid, so that a proof is not used up by a refused request.
        jkt = None if dpop_proof is None else self.check_proof(dpop_proof)
        now = int(time.time())
        # A negative lifetime: a token of the usual lifetime that expired -lifetime seconds ago.
        issued = now if lifetime > 0 else now + lifetime - TOKEN_LIFETIME
        expires = now + lifetime
        scope = " ".join(sorted(scopes))
        claims: dict[str, Any] = {"sub": client_id, "client_id": client_id}
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}  # RFC 9449 §6.1: bound to the proof's key
        token = self.issuer.mint(
            claims, audience=AUDIENCE, scope=scope, lifetime=expires - issued, now=issued
        )
        token_type = "Bearer" if jkt is None else "DPoP"
        return {"access_token": token, "token_type": token_type, "expires_in": lifetime, "scope": scope}

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
                proofs = self.headers.get_all("DPoP") or []
                if len(proofs) > 1:
                    raise _proof_error("send one DPoP header")
                response = server.issue(self._form(), proofs[0] if proofs else None)
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
    print(f"  token endpoint: POST {server.token_endpoint}   (DPoP-bound tokens with a DPoP proof)")
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
