"""Open case records -> the canonical tables (CSV folder, XLSX workbook, Parquet, JSON).

Two tables hold every case: ``patients`` (study_id, centre, sex, birth_date, then one column
per patient attribute of the concept library) and ``events`` (one row per event: its id,
concept, times as ``when_*``/``end_*`` columns, value as ``value_*`` columns, source text,
origin, then one column per attribute key of the library, sorted). A third table, ``other``,
holds what a pull found that matches no concept (written only when given). A CSV folder
holds ``<table>.csv``, a workbook a sheet ``<table>``, a Parquet folder ``<table>.parquet``
(typed columns even when empty). :func:`canonical_mapping` reads the CSV folder and the
workbook back, so ``read_study(write_study(cases))`` gives the same cases (XLSX stores
numbers with 15 significant digits, as Excel does; CSV, JSON and Parquet keep every digit).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from fhir_cart.csv_safety import csv_writer, xlsx_book
from fhir_cart.errors import Reject
from fhir_cart.library.concepts import ConceptLibrary, ConceptsFile
from fhir_cart.library.study_mapping import EventSpec, PatientSpec, StudyMapping
from fhir_cart.records import Case, Event, Precision, When, date_text

if TYPE_CHECKING:
    from fhir_cart.mappers.from_fhir import Unmapped

log = logging.getLogger(__name__)

__all__ = [
    "EVENT_COLUMNS",
    "FORMATS",
    "OTHER_COLUMNS",
    "PATIENT_COLUMNS",
    "StudyTableWriter",
    "UnmappedWriter",
    "canonical_mapping",
    "table_columns",
    "table_rows",
    "write_rejects",
    "write_study",
    "write_unmapped",
]

Format = Literal["csv", "xlsx", "json", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "xlsx", "json", "parquet")
Row = dict[str, Any]

PATIENT_COLUMNS: tuple[str, ...] = ("study_id", "centre", "sex", "birth_date")
"""Fixed columns of ``patients`` (patient attributes follow)."""
_TIME_PARTS = ("date", "day", "anchor", "earliest_day", "latest_day")
_VALUE_PARTS = ("number", "unit", "comparator", "low", "high", "code", "boolean", "text")
EVENT_COLUMNS: tuple[str, ...] = (
    "study_id",
    "event_id",
    "concept",
    *(f"when_{p}" for p in _TIME_PARTS),
    *(f"end_{p}" for p in _TIME_PARTS),
    *(f"value_{p}" for p in _VALUE_PARTS),
    "source_text",
    "origin",
    "assumed",
    "status",
)
"""Fixed columns of ``events`` (attribute keys follow, sorted)."""
OTHER_COLUMNS: tuple[str, ...] = (
    "study_id",
    "resource_type",
    "resource_id",
    "code_system",
    "code",
    "display",
    "value",
    "unit",
    "time",
    "reason",
)
"""Columns of ``other``: pulled resources that match no concept."""


CANONICAL_DATE_FORMATS: tuple[str, ...] = ("%Y-%m-%d", "%Y-%m", "%Y")
"""How the tables write dates: a day, or a month or a year the source gave no day for."""


def _library(library: ConceptLibrary | None) -> ConceptLibrary:
    if library is not None:
        return library
    from fhir_cart.library.study_mapping import default_library

    return default_library()


def table_columns(library: ConceptLibrary | None = None) -> dict[str, list[str]]:
    """Columns of ``patients`` and ``events`` for a concept library (default: shared)."""
    data = _library(library).data
    return {
        "patients": [*PATIENT_COLUMNS, *data.patient_attributes],
        "events": [*EVENT_COLUMNS, *sorted(data.attributes)],
    }


_OWN_KEYS = {"concepts", "attributes", "patient_attributes"}


def canonical_mapping(centre: str = "canonical", extra: ConceptsFile | None = None) -> StudyMapping:
    """The mapping that reads what :func:`write_study` writes (CSV folder or XLSX);
    ``extra``: the study's own concepts and attributes (their columns are read too)."""
    from fhir_cart.library.concepts import merge_concepts

    shared = _library(None).data
    merged = merge_concepts(shared, extra)
    patients = [*PATIENT_COLUMNS, *merged.patient_attributes]
    events = [*EVENT_COLUMNS, *sorted(merged.attributes)]
    own = {} if extra is None else extra.model_dump(exclude_defaults=True, include=_OWN_KEYS)
    return StudyMapping(
        centre=centre,
        date_formats=CANONICAL_DATE_FORMATS,
        patients=PatientSpec(source="patients", columns={c: c for c in patients}),
        events=(
            EventSpec(
                name="events",
                source="events",
                columns={c: c for c in events},
                # tables written before these columns existed: the attribute columns grow
                # with the library, so a table without one of them has none of it
                optional=("assumed", "status", *sorted(merged.attributes)),
            ),
        ),
        **own,
    )


# -- rows ------------------------------------------------------------------------------------


def _date_cell(date: dt.date | None, precision: Precision) -> dt.date | str | None:
    """A day as a date (a date cell in XLSX, date32 in Parquet); a year or a month as the
    ISO text at its precision ("2012", "2012-05"), never as its first day."""
    if date is None or precision == "day":
        return date
    return date_text(date, precision)


def _add_time(row: Row, when: When, columns: tuple[str, ...]) -> None:
    """A time's cells (``columns``: its ``*_date``, ``*_day``, ``*_anchor``,
    ``*_earliest_day`` and ``*_latest_day`` column) written into ``row``."""
    date, day, anchor, earliest, latest = columns
    row[date] = _date_cell(when.date, when.precision)
    row[day] = when.day
    row[anchor] = when.anchor
    row[earliest] = when.earliest_day
    row[latest] = when.latest_day


_WHEN = tuple(f"when_{part}" for part in _TIME_PARTS)
_END = tuple(f"end_{part}" for part in _TIME_PARTS)


def _event_row(study_id: str, event: Event) -> Row:
    """An event's cells, keys in column order then its attributes, None left out (written
    out field by field: this runs once per event of every table written)."""
    row: Row = {"study_id": study_id, "event_id": event.event_id, "concept": event.concept}
    if event.when is not None:
        _add_time(row, event.when, _WHEN)
    if event.end is not None:
        _add_time(row, event.end, _END)
    value = event.value
    if value is not None:
        row["value_number"] = value.number
        row["value_unit"] = value.unit
        row["value_comparator"] = value.comparator
        row["value_low"] = value.low
        row["value_high"] = value.high
        row["value_code"] = value.code
        row["value_boolean"] = value.boolean
        row["value_text"] = value.text
    row["source_text"] = event.source_text
    row["origin"] = event.origin
    row["assumed"] = event.assumed
    row["status"] = event.status
    row.update(event.attributes)
    return {k: v for k, v in row.items() if v is not None}


def _patient_row(case: Case) -> Row:
    patient = case.patient
    row: Row = {"study_id": patient.study_id, "centre": patient.centre}
    birth = _date_cell(patient.birth_date, patient.birth_precision)
    row.update(sex=patient.sex, birth_date=birth, **patient.attributes)
    return {k: v for k, v in row.items() if v is not None}


def _unknown(row: Row, columns: list[str], what: str) -> None:
    extra = sorted(set(row) - set(columns))
    if extra:
        raise ValueError(
            f"{what}: {', '.join(extra)} not in the concept library; "
            "pass the library that defines them"
        )


UNDECLARED_FIX = (
    "not in the concept library read with; give the study's library "
    "(--mapping M naming it with `library:`, or --library FILE) to get it as a column"
)


def _undeclared(row: Row, columns: frozenset[str], sid: str, what: str) -> Iterator[Row]:
    """The attributes of ``row`` the library does not declare (a study's own, read back
    without its library file), each as an ``other`` row, taken out of ``row``: kept with
    the reason and the fix, never dropped and never a crash half way through a pull."""
    for key in sorted(set(row) - columns):
        value = row.pop(key)
        yield {
            "study_id": sid,
            "resource_type": what,
            "code_system": "attribute",
            "code": key,
            "value": None if value is None else str(value),
            "reason": f"attribute {key!r} {UNDECLARED_FIX}",
        }


def table_rows(
    cases: Iterable[Case], library: ConceptLibrary | None = None
) -> Iterator[tuple[str, Row]]:
    """(table, row) for every patient and event, patients first within each case; an
    attribute the library does not define becomes an ``other`` row (nothing is dropped)."""
    columns = table_columns(library)
    for case in cases:
        yield from _case_rows(case, columns)


def _case_rows(case: Case, columns: dict[str, list[str]]) -> Iterator[tuple[str, Row]]:
    sid = case.patient.study_id
    row = _patient_row(case)
    patients = frozenset(columns["patients"])
    undeclared: list[Row] = []
    if not patients.issuperset(row):
        undeclared += _undeclared(row, patients, sid, "Patient")
    yield "patients", row
    events = frozenset(columns["events"])
    for event in case.events:
        row = _event_row(sid, event)
        if not events.issuperset(row):
            where = f"{event.origin or event.concept} event {event.event_id}"
            undeclared += _undeclared(row, events, sid, where)
        yield "events", row
    for found in undeclared:
        yield "other", found


def has_undeclared(cases: Iterable[Case], library: ConceptLibrary | None = None) -> bool:
    """Whether any patient or event carries an attribute ``library`` does not define."""
    columns = table_columns(library)
    patients, events = frozenset(columns["patients"]), frozenset(columns["events"])
    return any(
        not patients.issuperset(case.patient.attributes)
        or any(not events.issuperset(e.attributes) for e in case.events)
        for case in cases
    )


def _all_rows(
    cases: Iterable[Case], library: ConceptLibrary | None, other: list[Row]
) -> Iterator[tuple[str, Row]]:
    yield from table_rows(cases, library)
    known = frozenset(OTHER_COLUMNS)
    for row in other:
        if not known.issuperset(row):
            _unknown(row, list(OTHER_COLUMNS), "other")
        yield "other", row


def _tables(
    library: ConceptLibrary | None, other: list[Row], undeclared: bool = False
) -> dict[str, list[str]]:
    tables = table_columns(library)
    if other or undeclared:
        tables["other"] = list(OTHER_COLUMNS)
    return tables


# -- formats ---------------------------------------------------------------------------------


def _csv_cell(value: Any) -> Any:
    """How one value is written in a CSV cell (the one place CSV cells are made)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    return value  # text is escaped by the safe writer; numbers stay numbers


def _write_csv(
    tables: dict[str, list[str]], rows: Iterable[tuple[str, Row]], out: Path
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {t: out / f"{t}.csv" for t in tables}
    handles = {t: p.open("w", newline="", encoding="utf-8") for t, p in paths.items()}
    # rows are sparse (an event fills a few of the columns): cells start blank, as None is
    # written, and only the row's own values are turned into text
    where = {t: {c: i for i, c in enumerate(columns)} for t, columns in tables.items()}
    try:
        writers = {t: csv_writer(h) for t, h in handles.items()}
        for table, writer in writers.items():
            writer.writerow(tables[table])
        for table, row in rows:
            index = where[table]
            cells = [(index[c], _csv_cell(v)) for c, v in row.items() if c in index]
            writers[table].write_sparse(len(index), cells)
    finally:
        for handle in handles.values():
            handle.close()
    return list(paths.values())


def _write_xlsx(
    tables: dict[str, list[str]], rows: Iterable[tuple[str, Row]], out: Path
) -> list[Path]:
    book = xlsx_book()
    for table, columns in tables.items():
        book.sheet(table, columns)
    # Dates go in as real date cells, so Excel users can sort and compute with them.
    for table, row in rows:
        book.append(table, [row.get(c) for c in tables[table]])
    path = out if out.suffix == ".xlsx" else out / "study.xlsx"
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    if book.escaped:
        log.warning(
            "%s: %d cell(s) held control characters, written as _xHHHH_ escapes "
            "(as Excel writes them)",
            path.name,
            book.escaped,
        )
    return [path]


def _write_json(cases: Iterable[Case], other: list[Row], out: Path) -> list[Path]:
    path = out if out.suffix == ".json" else out / "study.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = [c.model_dump(mode="json", exclude_none=True) for c in cases]
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    if not other:
        return [path]
    other_path = path.with_name(f"{path.stem}.other.json")
    other_path.write_bytes(orjson.dumps(other, option=orjson.OPT_INDENT_2, default=str))
    return [path, other_path]


_ARROW_FIXED = {
    **dict.fromkeys(("birth_date", "when_date", "end_date"), "date"),
    **{f"{t}_{p}": "int" for t in ("when", "end") for p in ("day", "earliest_day", "latest_day")},
    **dict.fromkeys(("value_number", "value_low", "value_high"), "number"),
    "value_boolean": "boolean",
}
_ARROW_ATTRIBUTE = {
    "integer": "int64",
    "number": "number",
    "quantity": "number",
    "boolean": "boolean",
}


def _arrow_type(column: str, table: str, library: ConceptLibrary) -> Any:
    import pyarrow as pa

    kind = _ARROW_FIXED.get(column) if table != "other" else None
    if kind is None and table != "other" and column not in EVENT_COLUMNS + PATIENT_COLUMNS:
        kind = _ARROW_ATTRIBUTE.get(library.attribute(column).type)
    types = {
        "date": pa.date32(),
        "int": pa.int32(),
        "int64": pa.int64(),
        "number": pa.float64(),
        "boolean": pa.bool_(),
    }
    return types.get(kind or "", pa.string())


def _write_parquet(
    tables: dict[str, list[str]],
    rows: Iterable[tuple[str, Row]],
    out: Path,
    library: ConceptLibrary,
) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    columns: dict[str, dict[str, list[Any]]] = {t: {c: [] for c in cs} for t, cs in tables.items()}
    for table, row in rows:
        for column, values in columns[table].items():
            value = row.get(column)
            values.append(str(value) if table == "other" and value is not None else value)
    paths = []
    for table, data in columns.items():
        types = {c: _arrow_type(c, table, library) for c in tables[table]}
        for column, values in data.items():
            if types[column] == pa.date32() and any(isinstance(v, str) for v in values):
                # a year or month ("2012") is no date32: the column is ISO text throughout
                data[column] = [v.isoformat() if isinstance(v, dt.date) else v for v in values]
                types[column] = pa.string()
            if types[column] == pa.int64() and any(isinstance(v, str) for v in values):
                # a band ('3-4') of a whole-number attribute: the column is text throughout
                data[column] = [None if v is None else str(v) for v in values]
                types[column] = pa.string()
        schema = pa.schema(list(types.items()))
        pq.write_table(pa.table(data, schema=schema), out / f"{table}.parquet")
        paths.append(out / f"{table}.parquet")
    return paths


def write_study(
    cases: Iterable[Case],
    out: Path,
    fmt: Format,
    library: ConceptLibrary | None = None,
    other: Iterable[Mapping[str, Any]] = (),
) -> list[Path]:
    """Write cases as the canonical tables; returns the files written.

    ``csv`` and ``parquet`` write one file per table into the folder ``out``; ``xlsx`` and
    ``json`` write ``out`` itself when it ends in ``.xlsx``/``.json``, else
    ``out/study.xlsx``/``out/study.json`` (JSON: the case list; ``other`` rows beside it in
    ``<name>.other.json``). ``library``: the concept library whose attributes are columns
    (default: the shared one); ``other``: pulled resources that match no concept."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    extra = [dict(row) for row in other]
    if fmt == "json":
        return _write_json(cases, extra, out)
    cases = list(cases)
    tables = _tables(library, extra, has_undeclared(cases, library))
    rows = _all_rows(cases, library, extra)
    if fmt == "csv":
        return _write_csv(tables, rows, out)
    if fmt == "xlsx":
        return _write_xlsx(tables, rows, out)
    return _write_parquet(tables, rows, out, _library(library))


def write_rejects(rejects: Iterable[Reject], path: Path) -> Path:
    """The reject report as CSV: source, table, row, column, value, reason."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        columns = ["source", "table", "row", "column", "value", "reason"]
        writer = csv_writer(handle)
        writer.writerow(columns)
        for reject in rejects:
            found = reject.as_dict()
            writer.writerow(found.get(c) for c in columns)
    return path


def write_unmapped(unmapped: Sequence[Unmapped], path: Path) -> Path:
    """What a pull could not map, as CSV: reference, resource_type, reason."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv_writer(handle)
        writer.writerow(["reference", "resource_type", "reason"])
        for item in unmapped:
            writer.writerow([item.reference, item.resource_type, item.reason])
    return path


class StudyTableWriter:
    """:func:`write_study`, fed case by case: CSV rows are appended to their files and XLSX
    rows go to a write-only workbook as they come, so memory does not grow with the cohort;
    Parquet and JSON keep the cases and write them at :meth:`close` (their writers need
    every row first). The files are those ``write_study(cases, out, fmt, other=rows)``
    writes for the same cases and rows (``other`` only when it has a row)."""

    def __init__(self, out: Path, fmt: Format, library: ConceptLibrary | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.out, self.fmt, self.library = out, fmt, library
        self.columns = table_columns(library)
        self._known = {t: frozenset(c) for t, c in self.columns.items()}
        self._known["other"] = frozenset(OTHER_COLUMNS)
        every = {**self.columns, "other": list(OTHER_COLUMNS)}
        self._where = {t: {c: i for i, c in enumerate(cs)} for t, cs in every.items()}
        self._cases: list[Case] = []
        self._other: list[Row] = []
        self.undeclared = 0
        """Attributes the library does not define, written as ``other`` rows (CSV, XLSX),
        and extensions no attribute has (:meth:`add_undeclared`, every format)."""
        self._csv: dict[str, tuple[Any, Any]] = {}
        self._book: Any = None
        if fmt == "csv":
            out.mkdir(parents=True, exist_ok=True)
            for table in self.columns:
                self._open_csv(table, self.columns[table])
        elif fmt == "xlsx":
            self._book = xlsx_book()
            for table, columns in self.columns.items():
                self._book.sheet(table, columns)
        self._sheets = set(self.columns)

    def _open_csv(self, table: str, columns: list[str]) -> None:
        handle = (self.out / f"{table}.csv").open("w", newline="", encoding="utf-8")
        writer = csv_writer(handle)
        writer.writerow(columns)
        self._csv[table] = (handle, writer)

    def _row(self, table: str, row: Row) -> None:
        if self.fmt == "csv":
            if table not in self._csv:
                self._open_csv(table, list(OTHER_COLUMNS))
            # rows are sparse (see _write_csv): only the row's own cells are visited
            self._csv[table][1].write_named(self._where[table], row, _csv_cell)
        else:
            if table not in self._sheets:
                self._book.sheet(table, list(OTHER_COLUMNS))
                self._sheets.add(table)
            columns = self.columns.get(table, list(OTHER_COLUMNS))
            self._book.append(table, [row.get(c) for c in columns])

    def add_case(self, case: Case) -> None:
        if self.fmt in ("json", "parquet"):
            self._cases.append(case)
            self.undeclared += len(set(case.patient.attributes) - self._known["patients"])
            events = self._known["events"]
            self.undeclared += sum(len(set(e.attributes) - events) for e in case.events)
            return
        for table, row in _case_rows(case, self.columns):
            self.undeclared += table == "other"
            self._row(table, row)

    def add_undeclared(self, row: Mapping[str, Any]) -> None:
        """An ``other`` row of what the library does not declare (an extension no attribute
        has), counted with :attr:`undeclared`."""
        self.undeclared += 1
        self.add_other(row)

    def add_other(self, row: Mapping[str, Any]) -> None:
        found = dict(row)
        if not self._known["other"].issuperset(found):
            _unknown(found, list(OTHER_COLUMNS), "other")
        if self.fmt in ("json", "parquet"):
            self._other.append(found)
            return
        self._row("other", found)

    def close(self) -> list[Path]:
        """Finish the files; the files written."""
        if self.fmt in ("json", "parquet"):
            return write_study(self._cases, self.out, self.fmt, self.library, self._other)
        if self.fmt == "csv":
            for handle, _ in self._csv.values():
                handle.close()
            return [self.out / f"{t}.csv" for t in self._csv]
        path = self.out if self.out.suffix == ".xlsx" else self.out / "study.xlsx"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._book.save(path)
        if self._book.escaped:
            log.warning(
                "%s: %d cell(s) held control characters, written as _xHHHH_ escapes "
                "(as Excel writes them)",
                path.name,
                self._book.escaped,
            )
        return [path]


class UnmappedWriter:
    """A list of resources with reasons (reference, resource_type, reason) as CSV, the file
    made when its first row comes (none for no rows), as ``write_unmapped`` writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None
        self._writer: Any = None

    def add(self, item: Any) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv_writer(self._handle)
            self._writer.writerow(["reference", "resource_type", "reason"])
        self._writer.writerow([item.reference, item.resource_type, item.reason])

    def close(self) -> Path | None:
        if self._handle is None:
            return None
        self._handle.close()
        return self.path
