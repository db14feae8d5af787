"""OpenAPI contract tests: loading, request and response checks, JSON-Schema-Test-Suite conformance."""

from __future__ import annotations
