"""The check page's view of a study file: its sheets as a person sees them (row numbers as
in a spreadsheet, header row 1), with the cells a reject names marked, and each reject's
fix in words. Pure functions over the rows; reading the file is the one I/O."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from fhir_cart.errors import Reject

__all__ = ["Grid", "fix_for", "grids", "read_sheets"]

SHOWN_ROWS = 30
"""Rows shown of each sheet besides those with a reject."""
MAX_ROWS = 300


@dataclass
class Grid:
    name: str
    header: list[str]
    rows: list[tuple[int, list[str]]]
    bad: dict[tuple[int, str], list[Reject]] = field(default_factory=dict)
    bad_rows: set[int] = field(default_factory=set)
    hidden: int = 0
    """Rows of the sheet not shown (no reject on them)."""


def _text(cell: Any) -> str:
    if cell is None:
        return ""
    if hasattr(cell, "isoformat"):
        return str(cell.isoformat())
    return str(cell)


def read_sheets(
    path: Path, *, encoding: str = "utf-8-sig", delimiter: str = ","
) -> list[tuple[str, list[list[str]]]]:
    """(sheet or file name, rows as text) of a CSV or XLSX study file (at most
    :data:`MAX_ROWS` x 10 rows per sheet: the page shows a window of it)."""
    limit = MAX_ROWS * 10
    if path.suffix.lower() == ".csv":
        with path.open(encoding=encoding, newline="") as handle:
            rows = [list(r) for r in islice(csv.reader(handle, delimiter=delimiter), limit)]
        return [(path.name, rows)]
    if path.suffix.lower() != ".xlsx":
        return []
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        out = []
        for sheet in book.worksheets:
            cells = islice(sheet.iter_rows(values_only=True), limit)
            out.append((str(sheet.title), [[_text(c) for c in row] for row in cells]))
        return out
    finally:
        book.close()


def grids(
    sheets: Sequence[tuple[str, list[list[str]]]], rejects: Iterable[Reject], header_row: int = 1
) -> list[Grid]:
    """Each sheet with its rejected cells: every row with a reject, and the first
    :data:`SHOWN_ROWS` others."""
    rejects = list(rejects)
    out = []
    for name, rows in sheets:
        if len(rows) < header_row:
            continue
        header = [_text(c) for c in rows[header_row - 1]]
        mine = [r for r in rejects if r.table == name or r.source == name or len(sheets) == 1]
        grid = Grid(name, header, [])
        for reject in mine:
            if reject.row is not None:
                grid.bad_rows.add(reject.row)
                grid.bad.setdefault((reject.row, reject.column or ""), []).append(reject)
        for number, row in enumerate(rows[header_row:], start=header_row + 1):
            cells = [_text(c) for c in row] + [""] * (len(header) - len(row))
            if not any(cells):
                continue
            wanted = number in grid.bad_rows or len(grid.rows) < SHOWN_ROWS
            if wanted and len(grid.rows) < MAX_ROWS:
                grid.rows.append((number, cells))
                continue
            grid.hidden += 1
        out.append(grid)
    return out


_FIXES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"unknown word; expected one of"),
        "write one of the expected words, or add "
        "this word to the column's values in the mapping file",
    ),
    (re.compile(r"duplicate patient id"), "give each patient one row (merge or renumber)"),
    (
        re.compile(r"does not exist|not a date|date"),
        "write a real date in the mapping's date format",
    ),
    (re.compile(r"cannot exceed 100"), "write a percentage between 0 and 100"),
    (re.compile(r"expected one of"), "write one of the expected values"),
    (
        re.compile(r"no such sheet|file named in the mapping"),
        "name the sheet or file as the study file has it, in the mapping file",
    ),
    (re.compile(r"column"), "rename the column in the file, or the column in the mapping file"),
)


def fix_for(reject: Reject) -> str:
    """What to do about a reject, in words (from its reason; a general fix otherwise)."""
    for pattern, fix in _FIXES:
        if pattern.search(reject.reason):
            return fix
    return "correct the cell in the study file (or its mapping), then check again"
