"""Outbound HTTP for key sets, discovery metadata and introspection: small and strict.

* ``https://`` only, unless the policy sets ``insecure_http`` (tests on 127.0.0.1);
  certificates and host names are always verified, TLS 1.2 at least (FAPI 2.0 §5.2.1,
  CFG-03); no switch turns verification off.
* No redirects are followed (JWKS-02: a redirect could lead to another origin or to http).
* The host name is resolved once and the connection goes to a checked address:
  link-local (cloud metadata at 169.254.169.254), multicast, unspecified and reserved
  addresses are refused, so a hostile document or DNS answer cannot aim bankguard at them.
* The whole exchange -- connect, request, status line, headers and body -- is bounded by
  ``timeout``: each socket operation waits at most ``timeout``, and a watchdog shuts the socket
  down when the exchange as a whole passes it, so a server that drips its answer a byte at a
  time cannot hold a fetch (or the request waiting for it) open. Bodies beyond ``max_bytes`` are
  refused.
* Environment proxy settings are ignored: these calls go where the policy says.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

USER_AGENT = "bankguard"


class FetchError(Exception):
    """An outbound call failed; ``reason`` is a short code for logs and audit events."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved)


def _resolve(host: str, port: int, timeout: float) -> tuple[int, str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise FetchError("dns_failed") from None
    for family, _, _, _, sockaddr in infos:
        if _allowed(str(sockaddr[0])):
            return family, str(sockaddr[0])
    raise FetchError("address_refused")


class _Connection(http.client.HTTPSConnection):
    """An HTTP(S) connection to a pre-checked address, verifying the original host name."""

    def __init__(
        self, host: str, port: int, address: str, tls: ssl.SSLContext | None, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=tls or ssl.create_default_context())
        self._address = address
        self._tls = tls
        #: The connection's socket, kept after ``http.client`` hands it to a response it will close.
        self.opened: socket.socket | None = None

    def connect(self) -> None:
        sock = self.opened = socket.create_connection((self._address, self.port), self.timeout)
        if self._tls is not None:
            tls = self.sock = self.opened = self._tls.wrap_socket(
                sock, server_hostname=self.host, do_handshake_on_connect=False
            )
            tls.do_handshake()  # after the watchdog can see the socket (a dripped handshake)
            return
        self.sock = sock


def tls_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A verifying client context: system or given CAs, optional client certificate, TLS >= 1.2."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def request(
    method: str,
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    allow_http: bool = False,
    body: bytes | None = None,
    headers: Sequence[tuple[str, str]] = (),
    tls: ssl.SSLContext | None = None,
) -> HttpResponse:
    """One HTTP exchange under the rules above. Raises :class:`FetchError`, never anything else."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    if parts.scheme == "https":
        context = tls or tls_context()
    elif parts.scheme == "http" and allow_http:
        context = None
    else:
        raise FetchError("scheme_refused")
    host = parts.hostname
    if not host:
        raise FetchError("no_host")
    try:
        port = parts.port or (443 if context else 80)
    except ValueError:
        raise FetchError("bad_port") from None
    _, address = _resolve(host, port, timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _Connection(host, port, address, context, timeout)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = conn.opened
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request(method, target, body=body, headers={"User-Agent": USER_AGENT, **dict(headers)})
        response = conn.getresponse()
        try:
            chunks: list[bytes] = []
            size = 0
            while True:
                if time.monotonic() > deadline:
                    raise FetchError("timeout")
                chunk = response.read(min(65536, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError("too_large")
            if expired.is_set():  # the watchdog ended the body: it is not complete
                raise FetchError("timeout")
            return HttpResponse(
                status=response.status,
                headers={k.lower(): v for k, v in response.getheaders()},
                body=b"".join(chunks),
            )
        finally:
            response.close()
    except FetchError:
        raise
    except ssl.SSLError:
        raise FetchError("timeout" if expired.is_set() else "tls_failed") from None
    except TimeoutError:
        raise FetchError("timeout") from None
    except (OSError, http.client.HTTPException, ValueError):
        raise FetchError("timeout" if expired.is_set() else "connection_failed") from None
    finally:
        watchdog.cancel()
        conn.close()
