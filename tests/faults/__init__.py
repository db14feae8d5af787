"""Fault injection against real dependency servers on 127.0.0.1 (key sets, introspection, Redis, CRLs)."""

from __future__ import annotations
