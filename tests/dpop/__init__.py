"""DPoP tests (RFC 9449): STANDARDS §1 rows, attacks and nonces across workers."""

from __future__ import annotations
