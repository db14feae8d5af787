"""Behavioural tests of the per-TPP rate limiter (policy section ``ratelimit``)."""

from __future__ import annotations
