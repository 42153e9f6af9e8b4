"""Feeds: each patient's rows of an event sheet or file together, so that a study is read
patient by patient (see the comment below for how each kind of source is fed)."""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

import orjson

from fhir_cart.study.plan import _Plan
from fhir_cart.study.sources import _blank_text, _csv_rows, _Sheet
from fhir_cart.study.values import Row, _blank, _to_text

# -- streaming: each patient's rows together -----------------------------------------------------
#
# A study in long format keeps events in their own sheet or file, where one patient's rows may
# be anywhere. To read patient by patient, each event source is a *feed* that hands over the
# rows of one patient id at a time:
#
# - a CSV file whose rows come grouped by patient in the patient table's order (checked by a
#   first pass over the patient id column only, holding nothing) is read once, alongside
#   the patient table (_MergedFeed): flat memory;
# - any other CSV file is sorted by patient id on disk, in a temporary SQLite database, and
#   each patient's rows are fetched by id (_SortedFeed): flat memory, one more pass;
# - a workbook sheet, which is held in memory anyway, is indexed by patient id (_IndexedFeed).
#
# Rows of no patient (a blank or unknown id) are read after the last patient: they are
# rejected. Rejects are sorted back into file order at the end. Patient ids that repeat in
# the patient table, or a patient id set by a word or a constant of the mapping, make the
# reader hold the whole file (the result depends on every row): those files are read as
# before streaming, by _Assembly over all rows.


class _Feed(Protocol):
    def take(self, sid: str) -> Iterable[tuple[int, Row]]: ...

    def loose(self) -> Iterable[tuple[int, Row]]: ...


def _sid(cell: Any) -> str | None:
    return None if _blank(cell) else _to_text(cell)


class _MergedFeed:
    """A source whose rows come grouped by patient, in the patient table's order."""

    def __init__(self, sheet: _Sheet, column: str) -> None:
        self._rows = sheet.rows()
        self._column = column
        self._next = next(self._rows, None)

    def take(self, sid: str) -> list[tuple[int, Row]]:
        out: list[tuple[int, Row]] = []
        column = self._column
        while self._next is not None:
            cell = self._next[1].get(column)
            if not _blank(cell) and _to_text(cell) != sid:
                break
            out.append(self._next)  # a row without a patient id is rejected where it is
            self._next = next(self._rows, None)
        return out

    def loose(self) -> list[tuple[int, Row]]:
        rest = [] if self._next is None else [self._next]
        rest.extend(self._rows)
        self._next = None
        return rest


class _IndexedFeed:
    """A source held in memory (a workbook sheet), its rows indexed by patient id."""

    def __init__(self, sheet: _Sheet, column: str) -> None:
        self._by_sid: dict[str | None, list[tuple[int, Row]]] = defaultdict(list)
        for number, raw in sheet.rows():
            self._by_sid[_sid(raw.get(column))].append((number, raw))

    def take(self, sid: str) -> list[tuple[int, Row]]:
        return self._by_sid.pop(sid, [])

    def loose(self) -> list[tuple[int, Row]]:
        rest = sorted((r for rows in self._by_sid.values() for r in rows), key=itemgetter(0))
        self._by_sid.clear()
        return rest


class _SortedFeed:
    """A CSV file in any order, sorted by patient id on disk (a temporary SQLite file)."""

    def __init__(self, sheet: _Sheet, column: str, stack: ExitStack) -> None:
        import sqlite3
        import tempfile

        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="fhir-cart-sort-"))
        self._db = sqlite3.connect(Path(folder) / "rows.sqlite")
        stack.callback(self._db.close)
        self._header = sheet.header
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE r (sid TEXT, n INTEGER, cells BLOB, taken INTEGER)")
        index = len(sheet.header) - 1 - sheet.header[::-1].index(column)
        assert sheet.file is not None
        assert sheet.mapping is not None
        self._db.executemany(
            "INSERT INTO r VALUES (?, ?, ?, 0)",
            (
                (_sid(cells[index]) if index < len(cells) else None, n, orjson.dumps(cells))
                for n, cells in _numbered(_csv_rows(sheet.file, sheet.mapping), sheet.header_row)
            ),
        )
        self._db.execute("CREATE INDEX r_sid ON r (sid, n)")

    def _rows(self, found: Iterable[tuple[int, bytes]]) -> list[tuple[int, Row]]:
        header = self._header
        return [(n, dict(zip(header, orjson.loads(cells), strict=False))) for n, cells in found]

    def take(self, sid: str) -> list[tuple[int, Row]]:
        found = self._db.execute("SELECT n, cells FROM r WHERE sid = ? ORDER BY n", (sid,))
        rows = self._rows(found.fetchall())
        if rows:
            self._db.execute("UPDATE r SET taken = 1 WHERE sid = ?", (sid,))
        return rows

    def loose(self) -> list[tuple[int, Row]]:
        found = self._db.execute("SELECT n, cells FROM r WHERE taken = 0 ORDER BY n")
        return self._rows(found.fetchall())


def _numbered(rows: Iterable[list[str]], header_row: int) -> Iterator[tuple[int, list[str]]]:
    for number, cells in enumerate(rows, start=1):
        if number > header_row and not _blank_text(cells):
            yield number, cells


def _plain_sid(plan: _Plan) -> str | None:
    """The column of a spec's patient id when its cells are the ids as written (no word or
    constant of the mapping makes one)."""
    column = plan.spec.columns.get("study_id")
    if column is None or "study_id" in plan.words:
        return None
    if any(fld == "study_id" for fld, _ in plan.defaults):
        return None
    for targets in plan.words.values():
        if any(isinstance(t, dict) and "study_id" in t for t in targets.values()):
            return None
    return column


def _distinct(ids: Iterable[str | None]) -> bool:
    """No patient id twice (8 bytes a patient: hashes, sorted; a collision says no)."""
    hashes = array("q", (hash(i) for i in ids if i is not None))
    if len(hashes) < 100_000:
        return len(set(hashes)) == len(hashes)
    import numpy as np

    ordered = np.frombuffer(hashes, dtype=np.int64).copy()
    del hashes
    ordered.sort()
    return not bool((ordered[1:] == ordered[:-1]).any())


def _grouped(cells: Iterable[Any], patient_ids: Iterable[str | None]) -> bool:
    """Whether every non-blank id of ``cells`` is a patient's and they come grouped, in
    the patient table's order."""
    ids = (i for i in patient_ids if i is not None)
    current = next(ids, None)
    for cell in cells:
        if _blank(cell):
            continue
        sid = _to_text(cell)
        while sid != current:
            current = next(ids, None)
            if current is None:
                return False
    return True


def _feeds(plans: list[_Plan], sheets: list[_Sheet], stack: ExitStack) -> dict[int, _Feed] | None:
    """A feed for each event spec with its own sheet, or None when the file must be held."""
    patient_column = _plain_sid(plans[0])
    if patient_column is None:
        return None
    own = [
        (i, p, s) for i, (p, s) in enumerate(zip(plans, sheets, strict=True)) if i and p.own_sheet
    ]
    columns = {i: _plain_sid(p) for i, p, _ in own}
    if any(c is None for c in columns.values()):
        return None
    patients = sheets[0]
    if not _distinct(_sid(c) for c in patients.column(patient_column)):
        return None
    feeds: dict[int, _Feed] = {}
    for i, _, sheet in own:
        column = columns[i]
        assert column is not None
        if sheet.held is not None:
            feeds[i] = _IndexedFeed(sheet, column)
        elif _grouped(sheet.column(column), map(_sid, patients.column(patient_column))):
            feeds[i] = _MergedFeed(sheet, column)
        else:
            feeds[i] = _SortedFeed(sheet, column, stack)
    return feeds
