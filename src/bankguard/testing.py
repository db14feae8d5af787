"""Helpers for testing applications and policies that use bankguard.

* :func:`make_facts` builds a :class:`RequestFacts` without a server, to run a
  :class:`Guard` directly: ``Guard(policy, sink=events).decide(make_facts("GET", "/accounts"))``.
* :class:`EventCollector` is a sink that keeps events in a list.
* :func:`capture_events` collects what the default logging sink writes.
"""

from __future__ import annotations

from collections.abc import Iterable

from .audit import EventCollector, capture_events
from .request import Headers, RequestFacts


def make_facts(
    method: str = "GET",
    target: str = "/",
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
    peer: str | None = "127.0.0.1",
    scheme: str = "https",
) -> RequestFacts:
    """Request facts for ``method target`` (``target`` may carry a ``?query``)."""
    path, _, query = target.partition("?")
    return RequestFacts(
        method=method,
        scheme=scheme,
        path=path,
        raw_path=path.encode("latin-1"),
        query=query,
        headers=Headers(headers),
        peer=peer,
        body=body,
    )


__all__ = ["EventCollector", "capture_events", "make_facts"]
