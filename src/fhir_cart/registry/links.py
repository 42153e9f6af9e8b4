"""A link between two centre records of one patient: what linkage produces, whichever
method found it (kept apart so the splink backend and the linkage module both use it
without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Link", "Method", "content_order"]

Method = Literal["decided", "identifier", "probabilistic"]


@dataclass(frozen=True, order=True)
class Link:
    left: str
    right: str
    probability: float
    method: Method
    evidence: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    """Each comparison's level for this pair (splink's gamma: -1 missing, 0 differs, up
    to the exact level), when it was asked for (the review band)."""


def content_order(record: Any) -> tuple[Any, ...]:
    """A linkage record's place in an order of what linkage compares (centre, sex, birth,
    dates), the pseudonym last: sorting by it does not depend on the key, except between
    records identical in every compared field."""
    dates = tuple("" if v is None else v.isoformat() for _, v in sorted(record.dates.items()))
    born = getattr(record, "birth_date", None)
    return (
        record.centre,
        record.sex or "",
        record.birth_year or 0,
        record.birth_month or 0,
        "" if born is None else born.isoformat(),
        dates,
        record.pseudonym,
    )
