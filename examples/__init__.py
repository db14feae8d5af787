"""Example banking APIs protected by bankguard, and a demo that drives one of them.

Run ``python examples/demo.py`` from the repository root.
"""

from __future__ import annotations
