"""Real nginx terminating mutual TLS in front of the example apps, on 127.0.0.x only.

The fixtures build, with ``cryptography``, a throw-away PKI (a CA, a server certificate for
127.0.0.1/localhost and two client certificates, A and B), an access-token issuer whose JWK Set
is written to a file, and a policy that reads the client certificate from the headers nginx
sets (``client_cert.source: nginx``) and believes them only from ``127.0.0.2``. Then they start:

* the FastAPI example under uvicorn, or the Flask example under gunicorn, on 127.0.0.1, with
  ``BANKGUARD_POLICY`` pointing at that policy;
* nginx with its own configuration in the test's temporary directory: TLS on 127.0.0.1 with
  ``ssl_verify_client optional``, proxying to the app from ``127.0.0.2`` (``proxy_bind``), the
  only trusted proxy, and overwriting ``X-SSL-Client-Cert`` / ``X-SSL-Client-Verify`` with
  ``$ssl_client_escaped_cert`` / ``$ssl_client_verify``.

A client that connects to the app directly connects from 127.0.0.1, which is not trusted.
Every process is started in its own session and stopped at teardown (terminate, bounded wait,
then kill the whole group). nginx is installed with apt-get when it is missing; when that is
not possible the tests fail, with the reason: nothing is skipped.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import grp
import hashlib
import importlib.metadata
import ipaddress
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bankguard.testing import TestIssuer

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
#: nginx connects to the apps from this address (proxy_bind); the policy trusts only it.
PROXY_HOST = "127.0.0.2"
ISSUER = "https://as.bank.example"
AUDIENCE = "https://api.bank.example"
START_TIMEOUT = 20.0  # seconds for a process to answer
STOP_TIMEOUT = 5.0  # seconds for a process to exit after SIGTERM (then SIGKILL)
INSTALL_TIMEOUT = 300.0  # seconds for apt-get, when nginx is missing
REQUEST_TIMEOUT = 10.0

APPS = {
    "fastapi": "examples.fastapi_app.app:app",
    "flask": "examples.flask_app.app:app",
}

# The example policy's operations (examples/*/policy.yaml); all but GET /health need a token.
OPERATIONS = """\
    - {id: GetHealth, method: GET, path: /health, public: true}
    - {id: GetAccounts, method: GET, path: /accounts, scopes: [accounts]}
    - {id: GetAccount, method: GET, path: "/accounts/{AccountId}", scopes: [accounts]}
    - {id: GetBalances, method: GET, path: "/accounts/{AccountId}/balances"}
    - {id: GetTransactions, method: GET, path: "/accounts/{AccountId}/transactions"}
    - {id: CreateDomesticPayment, method: POST, path: /domestic-payments, scopes: [payments]}
"""


# -- PKI --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A certificate and its key, as PEM files."""

    cert: x509.Certificate
    cert_file: Path
    key_file: Path

    @property
    def thumbprint(self) -> str:
        """``x5t#S256``: base64url(SHA-256(DER)) without padding (RFC 8705 §3.1)."""
        digest = hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def escaped_pem(self) -> str:
        """The certificate as nginx's ``$ssl_client_escaped_cert`` writes it (URL-encoded PEM)."""
        return quote(self.pem, safe="")


@dataclass(frozen=True)
class PKI:
    ca_file: Path
    server: Identity
    client_a: Identity
    client_b: Identity


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bankguard e2e tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def make_pki(directory: Path) -> PKI:
    now = dt.datetime.now(dt.timezone.utc)
    not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("bankguard e2e test CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(name: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_file)
        return Identity(cert, cert_file, key_file)

    server = leaf(
        "server",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))],
    )
    client_a = leaf("client-a", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    client_b = leaf("client-b", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return PKI(ca_file=ca_file, server=server, client_a=client_a, client_b=client_b)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def issuer() -> TestIssuer:
    return TestIssuer(ISSUER, alg="ES256")


# -- policy -----------------------------------------------------------------------------------


def write_policy(directory: Path, issuer: TestIssuer, *, require_sender_constraint: bool = False) -> Path:
    """The test policy: the example's operations, tokens from ``issuer``, certificates from nginx."""
    jwks_file = directory / "jwks.json"
    jwks_file.write_text(json.dumps(issuer.jwks()))
    strict = "  require_sender_constraint: true\n" if require_sender_constraint else ""
    policy = directory / "policy.yaml"
    policy.write_text(
        f"""\
# bankguard behind nginx terminating mutual TLS (tests/e2e).
profile: generic
# nginx connects from here (proxy_bind): the only peer whose certificate headers are believed.
trusted_proxies: [{PROXY_HOST}/32]

routes:
  undeclared: deny
  operations:
{OPERATIONS}
auth:
  realm: open-banking

tokens:
{strict}  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      algorithms: [ES256]
      jwks_file: {jwks_file}

client_cert:
  source: nginx
  header: x-ssl-client-cert # proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
  verify_header: x-ssl-client-verify # proxy_set_header X-SSL-Client-Verify $ssl_client_verify;

audit:
  sink: logging # denials are WARNING records: with no handler configured, they go to stderr
  logger: bankguard.audit
"""
    )
    return policy


# -- processes --------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (bound together, so that none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for s in sockets:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in sockets]


@dataclass
class Service:
    """A process started for a test, its combined output in ``log``."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    #: Other files the process writes to (nginx's error log), shown when it fails.
    extra_logs: tuple[Path, ...] = ()

    @classmethod
    def start(
        cls,
        name: str,
        argv: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        extra_logs: tuple[Path, ...] = (),
    ) -> Service:
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter, or nginx
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() can end it with its workers
            )
        return cls(name, proc, log, extra_logs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def report(self) -> str:
        """Everything the process wrote, for a failure message."""
        parts = [f"--- {self.log.name}\n{self.output()}"]
        parts += [f"--- {p.name}\n{p.read_text(errors='replace')}" for p in self.extra_logs if p.exists()]
        return "\n".join(parts)

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # Not reaped yet, so the group id is still ours: end the process and its workers.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT)


def wait_until_answering(service: Service, url: str, client: httpx.Client) -> None:
    """Poll ``url`` until it answers 200; fail with the process output if it dies or times out."""
    deadline = time.monotonic() + START_TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        if not service.running():
            pytest.fail(
                f"{service.name} exited with {service.proc.returncode} before answering:\n{service.report()}",
                pytrace=False,
            )
        try:
            response = client.get(url, timeout=1.0)
            if response.status_code == 200:
                return
            last = f"status {response.status_code}"
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.1)
    pytest.fail(
        f"{service.name} did not answer {url} within {START_TIMEOUT:.0f} s ({last}):\n{service.report()}",
        pytrace=False,
    )


def app_command(app: str, port: int) -> list[str]:
    if app == "fastapi":
        # --no-proxy-headers: uvicorn would otherwise take the client address from
        # X-Forwarded-For on connections from 127.0.0.1 (its default --forwarded-allow-ips), so a
        # direct client could pose as the trusted proxy. bankguard reads forwarding headers itself.
        return [
            sys.executable,
            "-m",
            "uvicorn",
            APPS[app],
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-proxy-headers",
        ]
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-b",
        f"{HOST}:{port}",
        "-w",
        "1",
        "--graceful-timeout",
        "3",
        APPS[app],
    ]
    if distribution_version("gunicorn") >= (25, 1):
        argv[-1:-1] = ["--no-control-socket"]  # else it would open ~/.gunicorn/gunicorn.ctl
    return argv


def distribution_version(distribution: str) -> tuple[int, ...]:
    parts = []
    for part in importlib.metadata.version(distribution).split(".")[:2]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        parts.append(int(digits or 0))
    return tuple(parts)


# -- nginx ------------------------------------------------------------------------------------


def _which_nginx() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")


@pytest.fixture(scope="session")
def nginx() -> str:
    """The nginx binary; installed with apt-get when missing (bounded), else the tests fail."""
    found = _which_nginx()
    if found:
        return found
    apt_get = shutil.which("apt-get")
    if apt_get is None or os.geteuid() != 0:
        pytest.fail(
            "nginx is not installed and cannot be installed here (needs apt-get and root). "
            "Install it (Debian/Ubuntu: apt-get install nginx) to run the end-to-end tests.",
            pytrace=False,
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    output = []
    for argv in ([apt_get, "update", "-qq"], [apt_get, "install", "-y", "-qq", "nginx"]):
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv
                argv, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"nginx is missing and `{' '.join(argv)}` took over {INSTALL_TIMEOUT:.0f} s")
        output.append(done.stdout + done.stderr)
        if done.returncode != 0:
            break
    found = _which_nginx()
    if found is None:
        pytest.fail(
            "nginx is missing and installing it with apt-get failed:\n" + "\n".join(output), pytrace=False
        )
    return found


def nginx_config(directory: Path, pki: PKI, port: int, app_port: int) -> str:
    user = ""
    if os.geteuid() == 0:
        # A master started by root runs its workers as this user; name its group explicitly
        # (nginx's default group "nobody" does not exist everywhere).
        nobody = pwd.getpwnam("nobody")
        user = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
    temp = directory / "temp"
    return f"""\
# nginx terminating mutual TLS in front of a bankguard-protected app (tests/e2e).
daemon off;
{user}
worker_processes 1;
pid "{directory}/nginx.pid";
error_log "{directory}/error.log" notice;

events {{
    worker_connections 64;
}}

http {{
    access_log off;
    # Everything nginx writes stays in the test's directory; bodies and responses stay in memory.
    client_body_temp_path "{temp}/client_body";
    proxy_temp_path "{temp}/proxy";
    fastcgi_temp_path "{temp}/fastcgi";
    uwsgi_temp_path "{temp}/uwsgi";
    scgi_temp_path "{temp}/scgi";
    client_max_body_size 64k;
    client_body_buffer_size 64k;
    proxy_max_temp_file_size 0;

    server {{
        listen {HOST}:{port} ssl;
        server_name localhost;

        ssl_certificate "{pki.server.cert_file}";
        ssl_certificate_key "{pki.server.key_file}";
        ssl_protocols TLSv1.2 TLSv1.3;

        # Ask for a client certificate and verify it against this CA. "optional": requests
        # without one still reach the app (which then refuses certificate-bound tokens).
        ssl_client_certificate "{pki.ca_file}";
        ssl_verify_client optional;

        location / {{
            proxy_pass http://{HOST}:{app_port};
            # Connect from the one address the policy trusts (trusted_proxies).
            proxy_bind {PROXY_HOST};
            # Set, and so overwrite, whatever the client sent under these names. An empty value
            # (no certificate) removes the header.
            proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
            proxy_set_header X-SSL-Client-Verify $ssl_client_verify;
            proxy_set_header Host $host;
        }}
    }}
}}
"""


# -- a deployment: app + nginx ----------------------------------------------------------------


@dataclass
class Deployment:
    app: str
    pki: PKI
    app_service: Service
    nginx_service: Service
    #: The app itself, bypassing nginx (plain HTTP on 127.0.0.1).
    app_url: str
    #: nginx: HTTPS with an optional client certificate.
    proxy_url: str

    def https(self, cert: Identity | None) -> httpx.Client:
        """An HTTPS client to nginx that trusts the test CA and presents ``cert`` (if any)."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        if cert is not None:
            context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
        return httpx.Client(base_url=self.proxy_url, verify=context, timeout=REQUEST_TIMEOUT)

    def direct(self) -> httpx.Client:
        """A plain HTTP client to the app, connecting from 127.0.0.1 (not a trusted proxy)."""
        transport = httpx.HTTPTransport(local_address=HOST)
        return httpx.Client(base_url=self.app_url, transport=transport, timeout=REQUEST_TIMEOUT)

    def audit_event(self, wanted: str, timeout: float = 5.0) -> dict[str, Any]:
        """The audit event (a JSON line on the app's stderr) of the request with interaction id ``wanted``."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.app_service.output().splitlines():
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "bankguard.decision" and event.get("interaction_id") == wanted:
                    return dict(event)
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no audit event for {wanted} in the {self.app} app's output:\n"
                    + self.app_service.report()
                )
            time.sleep(0.05)


def new_interaction_id() -> str:
    return str(uuid.uuid4())


@contextlib.contextmanager
def deployed(app: str, directory: Path, pki: PKI, nginx_binary: str, policy: Path) -> Iterator[Deployment]:
    """Start ``app`` with ``policy`` and nginx in front of it; stop both on exit."""
    app_port, proxy_port = free_ports(2)
    env = {**os.environ, "BANKGUARD_POLICY": str(policy), "PYTHONUNBUFFERED": "1"}
    env.pop("FORWARDED_ALLOW_IPS", None)
    services: list[Service] = []
    try:
        app_service = Service.start(f"{app} app", app_command(app, app_port), directory / "app.log", env)
        services.append(app_service)
        app_url = f"http://{HOST}:{app_port}"
        with httpx.Client(timeout=REQUEST_TIMEOUT) as probe:
            wait_until_answering(app_service, f"{app_url}/health", probe)

        (directory / "temp").mkdir(exist_ok=True)
        conf = directory / "nginx.conf"
        conf.write_text(nginx_config(directory, pki, proxy_port, app_port))
        nginx_service = Service.start(
            "nginx",
            [nginx_binary, "-e", str(directory / "error.log"), "-p", str(directory), "-c", str(conf)],
            directory / "nginx.out",
            extra_logs=(directory / "error.log",),
        )
        services.append(nginx_service)
        deployment = Deployment(
            app=app,
            pki=pki,
            app_service=app_service,
            nginx_service=nginx_service,
            app_url=app_url,
            proxy_url=f"https://{HOST}:{proxy_port}",
        )
        with deployment.https(None) as probe:
            wait_until_answering(nginx_service, f"{deployment.proxy_url}/health", probe)
        yield deployment
    finally:
        for service in reversed(services):
            service.stop()


@pytest.fixture(scope="module", params=sorted(APPS))
def deployment(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pki: PKI,
    issuer: TestIssuer,
    nginx: str,
) -> Iterator[Deployment]:
    """An example app (FastAPI under uvicorn, Flask under gunicorn) behind nginx with mTLS."""
    app: str = request.param
    directory = tmp_path_factory.mktemp(f"{app}-generic")
    with deployed(app, directory, pki, nginx, write_policy(directory, issuer)) as running:
        yield running


@pytest.fixture(scope="module", params=sorted(APPS))
def strict_deployment(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pki: PKI,
    issuer: TestIssuer,
    nginx: str,
) -> Iterator[Deployment]:
    """The same, with ``tokens.require_sender_constraint: true``."""
    app: str = request.param
    directory = tmp_path_factory.mktemp(f"{app}-strict")
    policy = write_policy(directory, issuer, require_sender_constraint=True)
    with deployed(app, directory, pki, nginx, policy) as running:
        yield running


#: schemathesis supports Python 3.11 and later only; on 3.10 its peer check cannot run at all
#: (the dev extra does not install it there), so the module is not collected.
collect_ignore = ["test_schemathesis.py"] if sys.version_info < (3, 11) else []
