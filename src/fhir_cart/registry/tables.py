"""Registry tables as Arrow: ``patients`` and ``events`` in the canonical column order
(spec §3) with the registry's own columns (``centre`` partitions them: the centre an event
came from, a patient's most trusted centre; ``centres`` lists every centre of a patient).

Written as Parquet partitioned by centre (``<table>/centre=<id>/part-0.parquet``, hive
style), and optionally as one CSV per table and one XLSX workbook. Rows are sorted and the
writers are given no clock, so the same registry gives the same bytes."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fhir_cart import csv_safety as safe
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.records import Case, Event, When
from fhir_cart.registry.files import write_atomically

__all__ = [
    "EVENT_COLUMNS",
    "TableBuilder",
    "add_events",
    "add_patient",
    "event_builder",
    "event_table",
    "patient_builder",
    "patient_table",
    "write_tables",
]

EVENT_COLUMNS = (
    "study_id",
    "event_id",
    "concept",
    "when_date",
    "when_day",
    "when_anchor",
    "when_earliest_day",
    "when_latest_day",
    "end_date",
    "end_day",
    "end_anchor",
    "end_earliest_day",
    "end_latest_day",
    "value_number",
    "value_unit",
    "value_comparator",
    "value_low",
    "value_high",
    "value_code",
    "value_boolean",
    "value_text",
    "source_text",
    "origin",
    "assumed",
    "status",
)
_INT = {
    "when_day",
    "when_earliest_day",
    "when_latest_day",
    "end_day",
    "end_earliest_day",
    "end_latest_day",
}
_FLOAT = {"value_number", "value_low", "value_high"}
_TYPES = {
    "integer": pa.int64(),
    "number": pa.float64(),
    "quantity": pa.float64(),
    "boolean": pa.bool_(),
}


def _when(prefix: str, when: When | None) -> dict[str, Any]:
    return {
        f"{prefix}_date": None if when is None else when.date_text,
        f"{prefix}_day": None if when is None else when.day,
        f"{prefix}_anchor": None if when is None else when.anchor,
        f"{prefix}_earliest_day": None if when is None else when.earliest_day,
        f"{prefix}_latest_day": None if when is None else when.latest_day,
    }


def _event_row(study_id: str, event: Event) -> dict[str, Any]:
    value = event.value
    row: dict[str, Any] = {
        "study_id": study_id,
        "event_id": event.event_id,
        "concept": event.concept,
    }
    row |= _when("when", event.when) | _when("end", event.end)
    for name in ("number", "unit", "comparator", "low", "high", "code", "boolean", "text"):
        row[f"value_{name}"] = None if value is None else getattr(value, name)
    row |= {
        "source_text": event.source_text,
        "origin": event.origin,
        "assumed": event.assumed,
        "status": event.status,
    }
    return row | dict(event.attributes)


def _type(key: str, library: ConceptLibrary | None) -> pa.DataType:
    if library is None:
        return pa.string()
    try:
        return _TYPES.get(library.attribute(key).type, pa.string())
    except KeyError:
        return pa.string()


def _column(values: list[Any], kind: pa.DataType) -> pa.Array:
    if kind == pa.int64() and any(isinstance(v, str) for v in values):
        kind = pa.string()  # a band ('3-4') of a whole-number attribute: the column is text
    if kind == pa.string():
        values = [None if v is None else str(v) for v in values]
    return pa.array(values, type=kind)


class TableBuilder:
    """A registry table gathered row by row, as Arrow every ``chunk`` rows (never a list of
    every row's dict): the columns are ``fixed`` then the sorted attribute keys (``known``
    and every row's own), typed as :func:`event_table` and :func:`patient_table` type them,
    so the table is the one those give for the same rows."""

    def __init__(
        self,
        fixed: Sequence[str],
        types: dict[str, pa.DataType],
        known: set[str],
        library: ConceptLibrary | None,
        chunk: int = 20_000,
    ) -> None:
        self._fixed, self._types, self._library = list(fixed), types, library
        self._attributes: set[str] = set(known)
        self._rows: list[dict[str, Any]] = []
        self._chunks: list[tuple[int, dict[str, pa.Array]]] = []
        self._chunk = chunk

    def add(self, row: dict[str, Any], attributes: Iterable[str]) -> None:
        """One row; ``attributes``: its attribute keys (columns after the fixed ones)."""
        self._attributes.update(attributes)
        self._rows.append(row)
        if len(self._rows) >= self._chunk:
            self._flush()

    def _kind(self, column: str) -> pa.DataType:
        if column in self._attributes:
            return _type(column, self._library)
        return self._types.get(column, pa.string())

    def _flush(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        keys = {k for r in rows for k in r}
        arrays = {c: _column([r.get(c) for r in rows], self._kind(c)) for c in sorted(keys)}
        self._chunks.append((len(rows), arrays))

    def table(self) -> pa.Table:
        """The whole table (one chunk per column, as from one list of rows)."""
        self._flush()
        columns = [*self._fixed, *sorted(self._attributes)]
        arrays = []
        for name in columns:
            parts = [(n, found.get(name)) for n, found in self._chunks]
            kinds = {a.type for _, a in parts if a is not None and a.type != pa.null()}
            kind = self._kind(name)
            if kind == pa.int64() and pa.string() in kinds:
                kind = pa.string()  # a band in some chunk: the whole column is text
            pieces = [
                pa.nulls(n, type=kind) if a is None else a.cast(kind) if a.type != kind else a
                for n, a in parts
            ]
            arrays.append(pa.chunked_array(pieces, type=kind).combine_chunks())
        return pa.Table.from_arrays(arrays, names=columns)


def event_builder(library: ConceptLibrary | None) -> TableBuilder:
    """The events table's builder; rows from :func:`event_rows`."""
    known = set(library.data.attributes) if library is not None else set()
    types = {c: pa.int64() for c in _INT} | {c: pa.float64() for c in _FLOAT}
    return TableBuilder(
        ["centre", *EVENT_COLUMNS], types | {"value_boolean": pa.bool_()}, known, library
    )


def add_events(builder: TableBuilder, case: Case, sources: dict[str, str]) -> None:
    """A registry patient's events, sorted; ``sources``: event id -> its centre."""
    for event in sorted(case.events, key=lambda e: e.event_id):
        row = _event_row(case.patient.study_id, event)
        centre = sources.get(event.event_id, case.patient.centre)
        builder.add(row | {"centre": centre}, event.attributes)


def patient_builder(library: ConceptLibrary | None) -> TableBuilder:
    """The patients table's builder; rows from :func:`add_patient`."""
    known = set(library.data.patient_attributes) if library is not None else set()
    return TableBuilder(["centre", "study_id", "centres", "sex", "birth_date"], {}, known, library)


def add_patient(builder: TableBuilder, case: Case, centres: Sequence[str]) -> None:
    """A registry patient's row; ``centres``: theirs, most trusted first."""
    patient = case.patient
    centres = list(centres or [patient.centre])
    row = {
        "centre": centres[0],
        "study_id": patient.study_id,
        "centres": ";".join(sorted(centres)),
        "sex": patient.sex,
        "birth_date": patient.birth_text,
        **patient.attributes,
    }
    builder.add(row, patient.attributes)


def event_table(
    cases: Sequence[Case], source_of: dict[str, dict[str, str]], library: ConceptLibrary | None
) -> pa.Table:
    """Events of registry patients; ``source_of[patient][event_id]`` is the centre."""
    builder = event_builder(library)
    for case in sorted(cases, key=lambda c: c.patient.study_id):
        add_events(builder, case, source_of.get(case.patient.study_id, {}))
    return builder.table()


def patient_table(
    cases: Sequence[Case], centres_of: dict[str, Sequence[str]], library: ConceptLibrary | None
) -> pa.Table:
    """Registry patients; ``centres_of[patient]`` are their centres, most trusted first."""
    builder = patient_builder(library)
    for case in sorted(cases, key=lambda c: c.patient.study_id):
        add_patient(builder, case, centres_of.get(case.patient.study_id, [case.patient.centre]))
    return builder.table()


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` unless it already holds them; atomically (a temporary file
    beside it, then ``os.replace``), so a kill mid-write leaves the old file or the new one,
    never a truncated one."""
    if path.exists() and path.read_bytes() == data:
        return
    write_atomically(path, data)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    """Through the project's one safe writer (formula-looking text escaped)."""
    return safe.csv_bytes(table.column_names, (row.values() for row in table.to_pylist()))


def xlsx_bytes(tables: dict[str, pa.Table]) -> bytes:
    """Through the project's one safe writer (text cells are strings, never formulas)."""
    import datetime as dt

    # no clock in the file, so two builds give the same bytes
    book = safe.xlsx_book(created=dt.datetime(2000, 1, 1))
    for name, table in tables.items():
        book.sheet(name, table.column_names)
        for row in table.to_pylist():
            book.append(name, row.values())
    return _zip_normalised(book.to_bytes())


def _zip_normalised(data: bytes) -> bytes:
    """The same zip with every member's timestamp fixed (openpyxl stamps the clock)."""
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(data))
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            content = source.read(item.filename)
            if item.filename == "docProps/core.xml":  # openpyxl stamps the save time here
                content = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>2000-01-01T00:00:00Z", content
                )
            target.writestr(info, content)
    return sink.getvalue()


def write_tables(out: Path, tables: dict[str, pa.Table], formats: Sequence[str]) -> list[Path]:
    """Parquet per table partitioned by centre; CSV and XLSX pooled. Returns the files."""
    written: list[Path] = []
    for name, table in tables.items():
        centres = sorted(set(table.column("centre").to_pylist()))
        folder = out / name
        for centre in centres:
            part = table.filter(pc.equal(table.column("centre"), centre)).drop(["centre"])
            path = folder / f"centre={centre}" / "part-0.parquet"
            _write_if_changed(path, parquet_bytes(part))
            written.append(path)
        _remove_stale(folder, {f"centre={c}" for c in centres})
        if "csv" in formats:
            path = out / f"{name}.csv"
            _write_if_changed(path, csv_bytes(table))
            written.append(path)
    if "xlsx" in formats:
        path = out / "registry.xlsx"
        _write_if_changed(path, xlsx_bytes(tables))
        written.append(path)
    return written


def _remove_stale(folder: Path, keep: set[str]) -> None:
    if not folder.exists():
        return
    for child in folder.iterdir():
        if child.is_dir() and child.name not in keep:
            for file in child.iterdir():
                file.unlink()
            child.rmdir()
