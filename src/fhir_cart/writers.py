"""Canonical case records -> study tables (CSV folder, XLSX workbook, Parquet, JSON).

The canonical layout has one table per record kind (patients, drugs, procedures, mrd,
statuses, adverse_events) with one column per canonical field; a time is three columns
``<name>_date``, ``<name>_day``, ``<name>_anchor``. A CSV folder holds ``<table>.csv``, a
workbook a sheet ``<table>``, a Parquet folder ``<table>.parquet`` (typed columns even when
empty). :func:`canonical_mapping` reads the CSV folder and the workbook back, so
``read_study(write_study(cases))`` gives the same cases (XLSX stores numbers with 15
significant digits, as Excel does; CSV, JSON and Parquet keep every digit).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import orjson

from fhir_cart.csv_safety import safe_csv_cell
from fhir_cart.errors import Reject
from fhir_cart.records import Case, When
from fhir_cart.study_mapping import TABLE_FIELDS, StudyMapping, TableSpec

__all__ = ["FORMATS", "canonical_mapping", "table_rows", "write_rejects", "write_study"]

Format = Literal["csv", "xlsx", "json", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "xlsx", "json", "parquet")

_DROP = {"result", "anchor_date"}
COLUMNS: dict[str, list[str]] = {
    table: [f for f in fields if f not in _DROP] for table, fields in TABLE_FIELDS.items()
}


def canonical_mapping(centre: str = "canonical") -> StudyMapping:
    """The mapping that reads what :func:`write_study` writes (CSV folder or XLSX)."""
    tables = {
        table: TableSpec(source=table, columns={c: c for c in cols})
        for table, cols in COLUMNS.items()
    }
    return StudyMapping(centre=centre, layout="tables", tables=tables)


def _when_cells(name: str, when: When | None) -> dict[str, Any]:
    if when is None:
        return {}
    return {f"{name}_date": when.date, f"{name}_day": when.day, f"{name}_anchor": when.anchor}


def _record_row(record: Any, study_id: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {} if study_id is None else {"study_id": study_id}
    for name, value in record:
        if isinstance(value, When):
            row.update(_when_cells(name, value))
        elif value is not None:
            row[name] = value
    return row


def table_rows(cases: Iterable[Case]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(table, row) for every record, patients first within each case."""
    for case in cases:
        sid = case.patient.study_id
        yield "patients", _record_row(case.patient, None)
        for table, events in zip(
            ("drugs", "procedures", "mrd", "statuses", "adverse_events"),
            (case.drugs, case.procedures, case.mrd, case.statuses, case.adverse_events),
            strict=True,
        ):
            for event in events:
                yield table, _record_row(event, sid)


def _text_cell(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _write_csv(cases: Iterable[Case], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    handles = {t: (out / f"{t}.csv").open("w", newline="", encoding="utf-8") for t in COLUMNS}
    try:
        writers = {t: csv.DictWriter(h, COLUMNS[t]) for t, h in handles.items()}
        for w in writers.values():
            w.writeheader()
        for table, row in table_rows(cases):
            writers[table].writerow({k: safe_csv_cell(_text_cell(v)) for k, v in row.items()})
    finally:
        for handle in handles.values():
            handle.close()
    return [out / f"{t}.csv" for t in COLUMNS]


def _xlsx_cell(sheet: Any, value: Any) -> Any:
    """Text starting with '=' stays text: openpyxl would otherwise store it as a formula."""
    if isinstance(value, str) and value.startswith("="):
        from openpyxl.cell import WriteOnlyCell

        cell = WriteOnlyCell(sheet, value)
        cell.data_type = "s"
        return cell
    return value


def _write_xlsx(cases: Iterable[Case], out: Path) -> list[Path]:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheets = {t: book.create_sheet(t) for t in COLUMNS}
    for table, sheet in sheets.items():
        sheet.append(COLUMNS[table])
    # Dates go in as real date cells, so Excel users can sort and compute with them.
    for table, row in table_rows(cases):
        sheet = sheets[table]
        sheet.append([_xlsx_cell(sheet, row.get(c)) for c in COLUMNS[table]])
    path = out if out.suffix == ".xlsx" else out / "study.xlsx"
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return [path]


def _write_json(cases: Iterable[Case], out: Path) -> list[Path]:
    path = out if out.suffix == ".json" else out / "study.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = [c.model_dump(mode="json", exclude_none=True) for c in cases]
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return [path]


def _arrow_type(column: str) -> Any:
    import pyarrow as pa

    if column.endswith("_date") or column in ("birth_date", "diagnosis_date"):
        return pa.date32()
    if column.endswith("_day") or column in ("cycle", "grade"):
        return pa.int32()
    if column in ("age_at_diagnosis", "dose", "cell_dose", "value", "sensitivity"):
        return pa.float64()
    return pa.string()


def _write_parquet(cases: Iterable[Case], out: Path) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    columns: dict[str, dict[str, list[Any]]] = {
        t: {c: [] for c in cols} for t, cols in COLUMNS.items()
    }
    for table, row in table_rows(cases):
        for column, values in columns[table].items():
            values.append(row.get(column))
    paths = []
    for table, data in columns.items():
        schema = pa.schema([(c, _arrow_type(c)) for c in COLUMNS[table]])
        pq.write_table(pa.table(data, schema=schema), out / f"{table}.parquet")
        paths.append(out / f"{table}.parquet")
    return paths


def write_study(cases: Iterable[Case], out: Path, fmt: Format) -> list[Path]:
    """Write cases in the canonical tables layout; returns the files written.

    ``csv`` and ``parquet`` write one file per table into the folder ``out``; ``xlsx`` and
    ``json`` write ``out`` itself when it ends in ``.xlsx``/``.json``, else
    ``out/study.xlsx``/``out/study.json``."""
    writer = {
        "csv": _write_csv,
        "xlsx": _write_xlsx,
        "json": _write_json,
        "parquet": _write_parquet,
    }.get(fmt)
    if writer is None:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return writer(cases, out)


def write_rejects(rejects: Iterable[Reject], path: Path) -> Path:
    """The reject report as CSV: source, table, row, column, value, reason."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["source", "table", "row", "column", "value", "reason"])
        writer.writeheader()
        for reject in rejects:
            writer.writerow({k: safe_csv_cell(v) for k, v in reject.as_dict().items()})
    return path
