"""Property-based fuzzing of every parser that sees attacker input (hypothesis)."""

from __future__ import annotations
