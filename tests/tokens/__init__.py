"""Access-token tests: JWS/JWT, key sets, introspection."""

from __future__ import annotations
