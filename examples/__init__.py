"""Example banking APIs protected by bankguard, a demo authorization server that issues their
access tokens (``auth_server.py``, not for production), and a demo that drives one of the APIs.

Run ``python examples/demo.py`` from the repository root.
"""

from __future__ import annotations
