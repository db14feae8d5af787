"""The example Open Banking style API in FastAPI: ``uvicorn examples.fastapi_app.app:app``."""

from __future__ import annotations
