"""What the registry page shows, read from a registry build's folder (its reports) and the
registry's decisions file: pure readers, no request and no template.

Only pseudonymised outputs are read (``reports/``): record pseudonyms, encoded evidence,
protected values; never a centre's file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "HeatRow",
    "ReviewRow",
    "heat_map",
    "linked_pairs",
    "read_conflicts",
    "read_links",
    "read_review",
    "shade",
]


def _csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _json(path: Path) -> Any:
    return orjson.loads(path.read_bytes()) if path.is_file() else None


@dataclass(frozen=True)
class ReviewRow:
    left: str
    right: str
    probability: str
    reason: str
    agree: list[str]
    differ: list[str]
    missing: list[str]

    @property
    def pair(self) -> tuple[str, str]:
        return (min(self.left, self.right), max(self.left, self.right))


def _parts(text: str | None) -> list[str]:
    return [p for p in (text or "").split("; ") if p]


def read_review(out: Path) -> list[ReviewRow]:
    """``reports/review.csv``: the pairs for people to decide, with encoded evidence."""
    return [
        ReviewRow(
            r["left"],
            r["right"],
            r["probability"],
            r["reason"],
            _parts(r.get("agree")),
            _parts(r.get("differ")),
            _parts(r.get("missing")),
        )
        for r in _csv(out / "reports" / "review.csv")
    ]


def read_links(out: Path) -> list[dict[str, str]]:
    """``reports/links.csv`` rows (left, right, method, probability, taken)."""
    return _csv(out / "reports" / "links.csv")


def linked_pairs(rows: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The pairs of records linked, each once whichever order and however many methods
    found it (an identifier and a probabilistic link of one pair are one link)."""
    return {(min(a, b), max(a, b)) for a, b in rows}


def read_conflicts(out: Path) -> list[dict[str, Any]]:
    """``reports/conflicts.json``: patient, field, values by centre (protected), the rule
    that chose, the centre chosen and the result."""
    found = _json(out / "reports" / "conflicts.json")
    return list(found) if isinstance(found, list) else []


@dataclass(frozen=True)
class HeatRow:
    variable: str
    cells: list[float | None]
    """One per centre, in the order of the map's centres (None: the centre has no figure)."""


def heat_map(quality: dict[str, Any] | None) -> tuple[list[str], list[HeatRow]]:
    """Centres (columns) and one row per variable with each centre's completeness
    (``reports/quality.json``), variables sorted by name."""
    if not quality:
        return [], []
    centres = sorted(quality)
    per = {c: dict(quality[c].get("completeness") or {}) for c in centres}
    names = sorted({v for c in centres for v in per[c]})
    return centres, [HeatRow(v, [per[c].get(v) for c in centres]) for v in names]


def read_quality(out: Path) -> dict[str, Any] | None:
    found = _json(out / "reports" / "quality.json")
    return found if isinstance(found, dict) else None


def shade(value: float | None) -> str:
    """The heat map's CSS class for a share: ``q0`` (none) to ``q5`` (all); ``qn`` when
    there is no figure. Text colours in app.css keep every class above 4.5:1 contrast."""
    if value is None:
        return "qn"
    return f"q{min(5, int(value * 5 + 0.9999))}" if value > 0 else "q0"
