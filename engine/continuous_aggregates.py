"""Continuous aggregates (CREATE MATERIALIZED VIEW over time_bucket), refreshed incrementally."""

from __future__ import annotations


def refresh_due(engine, namespace: str, name: str, table) -> None:
    """Refresh `table` if it is a continuous aggregate (background worker)."""
    return None
