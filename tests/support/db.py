"""Database snapshots for "nothing was written" assertions."""

from __future__ import annotations

from django.apps import apps


def row_counts() -> dict[str, int]:
    """The number of rows of every model, by label; compare two snapshots to prove no write."""
    return {m._meta.label: m._default_manager.count() for m in apps.get_models()}


def changed_counts(before: dict[str, int], after: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {
        k: (before.get(k, 0), after.get(k, 0))
        for k in before.keys() | after.keys()
        if before.get(k) != after.get(k)
    }
