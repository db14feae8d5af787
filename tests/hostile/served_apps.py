"""The catalogue's applications as a server imports them (``tests.hostile.served_apps:asgi_app``
under uvicorn, ``tests.hostile.served_apps:wsgi_app`` under gunicorn).

The policy comes from the JSON file named by ``HOSTILE_POLICY`` (written by the test fixture,
with the public keys of the test's token issuer); each audit event is appended as one JSON line
to the file named by ``HOSTILE_AUDIT``, where the test reads it back.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from bankguard import AuditEvent, Policy

from .apps import build_flask, build_starlette

_LOCK = threading.Lock()


def write_event(event: AuditEvent) -> None:
    line = event.to_json() + "\n"
    with _LOCK, open(os.environ["HOSTILE_AUDIT"], "a", encoding="ascii") as out:
        out.write(line)


def _policy() -> Policy:
    with open(os.environ["HOSTILE_POLICY"], encoding="utf-8") as source:
        data: dict[str, Any] = json.load(source)
    data["audit"] = {"sink": write_event}
    return Policy.from_dict(data)


#: Handler names, as the apps record them (not read by the tests: the responses say it).
calls: list[str] = []

asgi_app = build_starlette(_policy(), calls)
wsgi_app = build_flask(_policy(), calls)
