"""People decide the hard cases: must-link and cannot-link decisions on pairs of centre
records, kept in the registry's folder (``linkage.decisions``, default ``decisions.csv``
beside the registry file) and honoured by every build.

One row per pair: ``left, right`` (the two centre records' pseudonyms, as
``reports/review.csv`` and ``reports/links.csv`` name them), ``decision`` (``link`` or
``no-link``), ``by`` (who decided) and ``when`` (UTC, ISO 8601). The last row of a pair
wins, so a decision is changed by deciding again (``fhir-cart registry decide``). Nothing
in the file is a source value: the pseudonyms are keyed, so decisions made under one key
name nobody under another.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fhir_cart.csv_safety import csv_bytes
from fhir_cart.errors import ConfigError

__all__ = ["Decision", "check_decision", "parse_decisions", "read_decisions", "with_decision"]

HEADER = ("left", "right", "decision", "by", "when")
_PSEUDONYM = re.compile(r"^p[0-9a-f]{32}$")
_WHEN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class Decision:
    left: str
    right: str
    link: bool
    by: str
    when: str

    @property
    def pair(self) -> tuple[str, str]:
        return (min(self.left, self.right), max(self.left, self.right))

    def row(self) -> list[str]:
        left, right = self.pair
        return [left, right, "link" if self.link else "no-link", self.by, self.when]


def _checked(row: dict[str, str | None], where: str) -> Decision:
    def cell(column: str) -> str:
        return (row.get(column) or "").strip()

    for column in ("left", "right"):
        if not _PSEUDONYM.match(cell(column)):
            raise ConfigError(
                f"{where}, column {column}: {cell(column)!r} is not a record pseudonym "
                "(p and 32 hex digits, as reports/review.csv and reports/links.csv show)"
            )
    if cell("left") == cell("right"):
        raise ConfigError(f"{where}: left and right are the same record")
    decision: Literal["link", "no-link"] | str = cell("decision")
    if decision not in ("link", "no-link"):
        raise ConfigError(f"{where}, column decision: {decision!r}: write link or no-link")
    if not cell("by"):
        raise ConfigError(f"{where}, column by: empty: name who decided")
    if not _WHEN.match(cell("when")):
        raise ConfigError(
            f"{where}, column when: {cell('when')!r}: write the UTC time, e.g. 2026-12-07T14:00:00Z"
        )
    return Decision(cell("left"), cell("right"), decision == "link", cell("by"), cell("when"))


def check_decision(decision: Decision, where: str) -> Decision:
    """The decision, checked like a row of the file (ConfigError naming ``where``)."""
    return _checked(dict(zip(HEADER, decision.row(), strict=True)), where)


def parse_decisions(text: str, name: str) -> dict[tuple[str, str], Decision]:
    """Pair -> its last decision. ConfigError naming the file, row and column when a row
    is wrong."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in HEADER if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"{name}: no column {', '.join(missing)} (header: {','.join(HEADER)})")
    found: dict[tuple[str, str], Decision] = {}
    for number, row in enumerate(reader, start=2):
        decision = _checked(row, f"{name}, row {number}")
        found[decision.pair] = decision
    return found


def read_decisions(path: Path) -> dict[tuple[str, str], Decision]:
    """The decisions in ``path`` (none when there is no such file)."""
    if not path.exists():
        return {}
    return parse_decisions(path.read_text(encoding="utf-8"), path.name)


def with_decision(path: Path, decision: Decision) -> bytes:
    """The decisions file with ``decision`` in place of any earlier one on its pair."""
    found = read_decisions(path)
    found[decision.pair] = decision
    return csv_bytes(HEADER, (d.row() for _, d in sorted(found.items())))
