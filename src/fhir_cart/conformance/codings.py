"""Count the codings of emitted resources by code system (the own-code share)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["coding_counts", "iter_codings", "own_share"]


def iter_codings(node: Any) -> Iterator[dict[str, Any]]:
    """Every Coding (an object with ``system`` and ``code``) anywhere in ``node``; Quantity
    units (which also have system and code) are not codings and are skipped."""
    if isinstance(node, dict):
        if "system" in node and "code" in node and "value" not in node and "unit" not in node:
            yield node
        for value in node.values():
            yield from iter_codings(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_codings(item)


def coding_counts(resources: Iterable[dict[str, Any]]) -> Counter[str]:
    """Number of codings per system URI over ``resources``."""
    return Counter(str(c["system"]) for r in resources for c in iter_codings(r))


def own_share(counts: Counter[str], own_system: str) -> float:
    total = sum(counts.values())
    return counts[own_system] / total if total else 0.0
