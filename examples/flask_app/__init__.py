"""The example Open Banking style API in Flask: ``flask --app examples/flask_app/app.py run --port 8000``."""

from __future__ import annotations
