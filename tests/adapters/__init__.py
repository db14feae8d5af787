"""Adapter tests: BankGuardMiddleware (ASGI), BankGuardWSGI and their parity."""

from __future__ import annotations
