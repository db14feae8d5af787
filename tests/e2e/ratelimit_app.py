"""A small API protected by bankguard, served by tests/e2e/test_ratelimit_workers.py.

Two faces of the same three routes, built by factories so that nothing is imported or built
until a server process asks for it:

* ``asgi()``: Starlette, for ``uvicorn --factory ratelimit_app:asgi``;
* ``wsgi()``: Flask, for ``gunicorn 'ratelimit_app:wsgi()'`` (each worker builds its own guard).

Routes: ``GET /health`` and ``GET /whoami`` are public (no token, so no per-TPP limit);
``GET /accounts`` needs an access token and is counted against the TPP's tier. Every response
body names the process that produced it (``pid``).

Environment:

``RL_E2E_POLICY``
    The policy file.
``RL_E2E_AUDIT_DIR``
    A directory; each process appends its audit events, one JSON line per decision, to
    ``audit-<pid>.jsonl`` there, so the events of different workers never interleave.
``RL_E2E_HOLD``
    Seconds ``/accounts`` holds its worker before answering (default 0).

``/whoami`` always holds its worker for :data:`WHOAMI_HOLD`. A worker that is busy cannot
accept, so holding spreads concurrent requests over the workers of one server: that is how a
test learns the pids of all of them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from bankguard import Policy, protect

#: Seconds ``/whoami`` holds its worker (blocking, also under asyncio: the point is to be busy).
WHOAMI_HOLD = 0.1


def _hold() -> float:
    return float(os.environ.get("RL_E2E_HOLD", "0"))


def _audit_to_file() -> None:
    """Send this process's audit events to ``audit-<pid>.jsonl`` (once per process)."""
    audit = logging.getLogger("bankguard.audit")
    path = Path(os.environ["RL_E2E_AUDIT_DIR"]) / f"audit-{os.getpid()}.jsonl"
    if any(getattr(h, "baseFilename", None) == str(path) for h in audit.handlers):
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    audit.propagate = False


def _policy() -> Policy:
    _audit_to_file()
    return Policy.from_yaml(os.environ["RL_E2E_POLICY"])


def asgi() -> Any:
    """The Starlette face."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    hold = _hold()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "pid": os.getpid()})

    async def whoami(request: Request) -> JSONResponse:
        time.sleep(WHOAMI_HOLD)  # blocks this process's loop on purpose: another one must accept
        return JSONResponse({"pid": os.getpid()})

    async def accounts(request: Request) -> JSONResponse:
        if hold:
            time.sleep(hold)
        return JSONResponse({"accounts": ["22289"], "pid": os.getpid()})

    app = Starlette(routes=[Route("/health", health), Route("/whoami", whoami), Route("/accounts", accounts)])
    return protect(app, _policy())


def wsgi() -> Any:
    """The Flask face."""
    from flask import Flask

    hold = _hold()
    app = Flask(__name__, static_folder=None)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        time.sleep(WHOAMI_HOLD)
        return {"pid": os.getpid()}

    @app.get("/accounts")
    def accounts() -> dict[str, Any]:
        if hold:
            time.sleep(hold)
        return {"accounts": ["22289"], "pid": os.getpid()}

    return protect(app, _policy())
