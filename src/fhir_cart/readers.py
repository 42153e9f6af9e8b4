"""Study files (CSV, XLSX, JSON) -> canonical :class:`~fhir_cart.records.Case` records.

Every rejected row or value becomes a :class:`~fhir_cart.errors.Reject` naming the file, the
table or sheet, the spreadsheet row (header = row 1), the column, the value and the reason.
A bad event rejects that event only; a bad patient rejects the patient and, with the reason
said, each of their events. Nothing disappears without a line in the report.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from fhir_cart.errors import InputError, Reject
from fhir_cart.records import (
    AdverseEvent,
    Case,
    DiseaseStatus,
    DrugAdministration,
    MrdResult,
    PatientRecord,
    ProcedureRecord,
    When,
)
from fhir_cart.study_mapping import StudyMapping, TableSpec

__all__ = ["ReadResult", "parse_mrd_result", "read_study"]

Row = dict[str, Any]

_INT_FIELDS = {"cycle", "grade"}
_FLOAT_FIELDS = {"age_at_diagnosis", "dose", "cell_dose", "value", "sensitivity"}
_MRD_RESULT = re.compile(
    r"^\s*(?P<cmp><=|>=|<|>)?\s*(?P<num>\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?)\s*(?P<pct>%)?\s*$"
)
_EVENT_MODELS: dict[str, type[BaseModel]] = {
    "drugs": DrugAdministration,
    "procedures": ProcedureRecord,
    "mrd": MrdResult,
    "statuses": DiseaseStatus,
    "adverse_events": AdverseEvent,
}
_WHEN_NAMES = {
    "patients": ("death", "last_follow_up"),
    "drugs": ("start", "end"),
    "procedures": ("when",),
    "mrd": ("when",),
    "statuses": ("when",),
    "adverse_events": ("when",),
}


@dataclass
class ReadResult:
    cases: list[Case] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


@dataclass
class _Where:
    source: str
    table: str
    row: int
    spec: TableSpec
    raw: Row

    def reject(self, fld: str | None, reason: str) -> Reject:
        column = self.spec.columns.get(fld, fld) if fld else None
        value = self.raw.get(column) if column else None
        shown = None if value is None else str(value)
        return Reject(self.source, self.row, column, shown, reason, self.table)


class _FieldError(ValueError):
    def __init__(self, fld: str, reason: str) -> None:
        super().__init__(reason)
        self.field = fld


# -- value conversion ----------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _to_date(value: Any, formats: tuple[str, ...]) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in formats:
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"not a date in the formats {', '.join(formats)}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip().replace(",", "."))
    except ValueError:
        raise ValueError("expected a number") from None


def _to_int(value: Any) -> int:
    number = _to_float(value)
    if not number.is_integer():
        raise ValueError("expected a whole number")
    return int(number)


def parse_mrd_result(text: Any, unit: str) -> dict[str, Any]:
    """'<0.01%' -> value 0.01, unit '%', comparator '<'; a bare number takes ``unit``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return {"value": float(text), "unit": "%" if unit == "percent" else "1"}
    match = _MRD_RESULT.match(str(text))
    if match is None:
        raise ValueError("expected an MRD result such as 'negative', '<0.01%', '0.3 %' or '1e-4'")
    pct = match["pct"] is not None or unit == "percent"
    out: dict[str, Any] = {
        "value": float(match["num"].replace(",", ".")),
        "unit": "%" if pct else "1",
    }
    if match["cmp"]:
        out["comparator"] = match["cmp"]
    return out


def _translate(spec: TableSpec, fld: str, value: Any) -> Any:
    words = spec.values.get(fld)
    if words is None or not isinstance(value, str | int | float):
        return value.strip() if isinstance(value, str) else value
    key = " ".join(str(value).split()).casefold()
    for source, canonical in words.items():
        if " ".join(source.split()).casefold() == key:
            return canonical
    return value.strip() if isinstance(value, str) else value


def _convert(fld: str, value: Any, mapping: StudyMapping) -> Any:
    if fld.endswith("_date"):
        return _to_date(value, mapping.date_formats)
    if fld.endswith("_day") or fld in _INT_FIELDS:
        return _to_int(value)
    if fld in _FLOAT_FIELDS:
        return _to_float(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _flat(where: _Where, mapping: StudyMapping) -> dict[str, Any]:
    """Canonical field -> converted value for one row (constants included)."""
    out: dict[str, Any] = dict(where.spec.constants)
    _read_columns(where, mapping, out)
    for fld, unit in where.spec.units.items():
        unit_field = _UNIT_FIELDS[fld]
        if fld in out and unit_field not in out:
            out[unit_field] = unit
    return out


_UNIT_FIELDS = {"dose": "dose_unit", "cell_dose": "cell_dose_unit", "value": "unit"}


def _read_columns(where: _Where, mapping: StudyMapping, out: dict[str, Any]) -> None:
    for fld, column in where.spec.columns.items():
        raw = where.raw.get(column)
        if _blank(raw):
            continue
        value = _translate(where.spec, fld, raw)
        if fld == "result":
            out.update(_mrd_fields(where.spec, value, mapping))
            continue
        try:
            out[fld] = _convert(fld, value, mapping)
        except ValueError as exc:
            raise _FieldError(fld, str(exc)) from None


def _mrd_fields(spec: TableSpec, value: Any, mapping: StudyMapping) -> dict[str, Any]:
    if value in ("negative", "positive", "positive_below_quantification"):
        return {"qualitative": value}
    try:
        return parse_mrd_result(value, mapping.mrd_unit)
    except ValueError as exc:
        raise _FieldError("result", str(exc)) from None


# -- building records ----------------------------------------------------------------------


def _when(flat: dict[str, Any], name: str, default_anchor: str, anchor_date: Any) -> When | None:
    date, day = flat.pop(f"{name}_date", None), flat.pop(f"{name}_day", None)
    anchor = flat.pop(f"{name}_anchor", None)
    if date is None and day is None:
        return None
    anchor = anchor or (default_anchor if day is not None else None)
    if date is None and day is not None and anchor == default_anchor and anchor_date:
        date = anchor_date + dt.timedelta(days=day)
    return When(date=date, day=day, anchor=anchor)


def _model(table: str, flat: dict[str, Any], mapping: StudyMapping, anchor_date: Any) -> Any:
    for name in _WHEN_NAMES[table]:
        try:
            when = _when(flat, name, mapping.anchor, anchor_date)
        except ValidationError as exc:
            raise _FieldError(f"{name}_date", _pydantic_reason(exc)) from None
        if when is not None:
            flat[name] = when
    if table == "patients":
        flat.pop("anchor_date", None)
        flat.setdefault("centre", mapping.centre)
        return PatientRecord(**flat)
    flat.pop("study_id", None)
    return _EVENT_MODELS[table](**flat)


def _pydantic_reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"{loc}: {first['msg']}" if loc else str(first["msg"])


# Field blamed for a whole-record check (e.g. "a percentage cannot exceed 100").
_RECORD_CHECK_FIELD = {"mrd": "result", "drugs": "dose", "procedures": "kind"}


def _field_of(exc: ValidationError, spec: TableSpec, table: str) -> str | None:
    loc = exc.errors()[0]["loc"]
    name = str(loc[0]) if loc else _RECORD_CHECK_FIELD.get(table, "")
    for fld in spec.columns:
        if fld == name or fld.startswith(name + "_"):
            return fld
    return name or None


def _event_id(table: str, flat: dict[str, Any], counters: dict[str, int]) -> str:
    if table == "drugs":
        base = str(flat.get("agent", "drug"))
        base += f"-c{flat['cycle']}" if "cycle" in flat else ""
    elif table == "mrd":
        base = f"mrd-{flat.get('timepoint', 'x')}-{flat.get('method', 'x')}"
    elif table == "statuses":
        day = flat.get("when_day", flat.get("when_date", "x"))
        base = f"status-{flat.get('status', 'x')}-{day}"
    else:
        base = str(flat.get("kind", table))
    base = re.sub(r"[^A-Za-z0-9_\-\.]", "-", base)[:56]
    counters[base] += 1
    n = counters[base]
    if table in ("procedures", "adverse_events"):
        return f"{base}-{n}"
    return base if n == 1 else f"{base}-{n}"


# -- sources -------------------------------------------------------------------------------


def _rows_xlsx(path: Path, sheet: str | None) -> Iterator[tuple[int, Row]]:
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise InputError(
                f"{path.name}: no sheet {sheet!r} (sheets: {', '.join(book.sheetnames)})",
                [Reject(path.name, None, None, sheet, "sheet named in the mapping is missing")],
            )
        ws = book[sheet] if sheet else book.worksheets[0]
        yield from _rows_of(ws.iter_rows(values_only=True))
    finally:
        book.close()


def _rows_csv(path: Path) -> Iterator[tuple[int, Row]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        yield from _rows_of(csv.reader(handle))


def _rows_of(rows: Any) -> Iterator[tuple[int, Row]]:
    header: list[str] | None = None
    for number, values in enumerate(rows, start=1):
        if header is None:
            header = [str(h).strip() if h is not None else "" for h in values]
            continue
        if all(_blank(v) for v in values):
            continue
        yield number, dict(zip(header, values, strict=False))


def _source_rows(path: Path, spec: TableSpec, mapping: StudyMapping) -> Iterator[tuple[int, Row]]:
    sheet = spec.source if mapping.layout == "tables" else mapping.source
    if path.is_dir():
        if not spec.source:
            raise InputError(f"{path}: table needs a source file name", [])
        csv_path = path / spec.source
        if not csv_path.exists():
            raise InputError(
                f"{csv_path}: file named in the mapping is missing",
                [Reject(str(csv_path), None, None, None, "file named in the mapping is missing")],
            )
        return _rows_csv(csv_path)
    if path.suffix.lower() == ".xlsx":
        return _rows_xlsx(path, sheet)
    if path.suffix.lower() == ".csv":
        return _rows_csv(path)
    raise InputError(f"{path}: unsupported study file type {path.suffix!r}", [])


# -- assembly ------------------------------------------------------------------------------


@dataclass
class _Assembly:
    patients: dict[str, PatientRecord] = field(default_factory=dict)
    anchor_dates: dict[str, Any] = field(default_factory=dict)
    patient_rows: dict[str, _Where] = field(default_factory=dict)
    rejected_patients: set[str] = field(default_factory=set)
    events: dict[str, dict[str, list[Any]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    counters: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    rejects: list[Reject] = field(default_factory=list)


def _read_patient(where: _Where, mapping: StudyMapping, acc: _Assembly) -> None:
    try:
        flat = _flat(where, mapping)
        sid = str(flat.get("study_id", ""))
        if not sid:
            raise _FieldError("study_id", "a patient row needs a study id")
        if sid in acc.patients:
            raise _FieldError("study_id", "duplicate patient id (the first row is kept)")
        anchor_date = flat.get("anchor_date")
        acc.patients[sid] = _model("patients", flat, mapping, anchor_date)
        acc.anchor_dates[sid] = anchor_date
        acc.patient_rows[sid] = where
    except _FieldError as exc:
        acc.rejects.append(where.reject(exc.field, str(exc)))
        _mark_rejected(where, acc)
    except ValidationError as exc:
        acc.rejects.append(
            where.reject(_field_of(exc, where.spec, where.table), _pydantic_reason(exc))
        )
        _mark_rejected(where, acc)


def _mark_rejected(where: _Where, acc: _Assembly) -> None:
    column = where.spec.columns.get("study_id")
    sid = where.raw.get(column) if column else None
    if not _blank(sid):
        key = str(int(sid)) if isinstance(sid, float) and sid.is_integer() else str(sid).strip()
        if key not in acc.patients:
            acc.rejected_patients.add(key)


def _read_event(where: _Where, mapping: StudyMapping, acc: _Assembly) -> None:
    try:
        flat = _flat(where, mapping)
        sid = str(flat.get("study_id", ""))
        if sid in acc.rejected_patients:
            raise _FieldError("study_id", "the patient's own row was rejected")
        if sid not in acc.patients:
            raise _FieldError("study_id", "no patient with this id in the patient table")
        if "event_id" not in flat:
            flat["event_id"] = _event_id(where.table, flat, acc.counters[sid])
        event = _model(where.table, flat, mapping, acc.anchor_dates.get(sid))
        acc.events[sid][where.table].append((where, event))
    except _FieldError as exc:
        acc.rejects.append(where.reject(exc.field, str(exc)))
    except ValidationError as exc:
        acc.rejects.append(
            where.reject(_field_of(exc, where.spec, where.table), _pydantic_reason(exc))
        )


def _wide_has_values(where: _Where) -> bool:
    cols = [c for f, c in where.spec.columns.items() if f != "study_id"]
    return any(not _blank(where.raw.get(c)) for c in cols)


def _cases(acc: _Assembly) -> list[Case]:
    cases = []
    for sid, patient in acc.patients.items():
        events = acc.events.get(sid, {})
        try:
            case = Case(
                patient=patient,
                **{t: tuple(e for _, e in events.get(t, ())) for t in _EVENT_MODELS},
            )
        except ValidationError as exc:
            where = acc.patient_rows[sid]
            acc.rejects.append(where.reject("study_id", _pydantic_reason(exc)))
            for table_events in events.values():
                for ev_where, _ in table_events:
                    acc.rejects.append(ev_where.reject(None, "the patient was rejected"))
            continue
        cases.append(case)
    return cases


def _read_mapped(path: Path, mapping: StudyMapping) -> ReadResult:
    acc = _Assembly()
    specs = mapping.specs()
    wide = mapping.layout == "wide"
    for table in ("patients", *_EVENT_MODELS):
        for spec in specs.get(table, []):
            source = spec.source if (path.is_dir() and spec.source) else path.name
            if wide:
                spec = _with_patient_id(spec, mapping)
            for row, raw in _source_rows(path, spec, mapping):
                where = _Where(source, table, row, spec, raw)
                if table == "patients":
                    _read_patient(where, mapping, acc)
                elif not wide or _wide_has_values(where):
                    _read_event(where, mapping, acc)
    cases = _cases(acc)
    return ReadResult(cases=cases, rejects=acc.rejects)


def _with_patient_id(spec: TableSpec, mapping: StudyMapping) -> TableSpec:
    """In a wide sheet every event group reads the patient id from the patient columns."""
    assert mapping.patient is not None
    if "study_id" in spec.columns:
        return spec
    columns = {"study_id": mapping.patient.columns["study_id"], **spec.columns}
    return spec.model_copy(update={"columns": columns, "source": mapping.source})


def _read_json(path: Path) -> ReadResult:
    result = ReadResult()
    try:
        items = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path.name}: not JSON ({exc})", []) from exc
    if not isinstance(items, list):
        raise InputError(f"{path.name}: expected a list of cases", [])
    for index, item in enumerate(items, start=1):
        try:
            result.cases.append(Case.model_validate(item))
        except ValidationError as exc:
            reason = _pydantic_reason(exc)
            result.rejects.append(Reject(path.name, index, None, None, reason, "cases"))
    return result


def read_study(path: Path, mapping: StudyMapping | None = None) -> ReadResult:
    """Read a study file (.xlsx, .csv, a folder of CSVs, or canonical .json)."""
    if path.suffix.lower() == ".json":
        return _read_json(path)
    if mapping is None:
        raise InputError(f"{path.name}: a mapping file is needed for this file type", [])
    return _read_mapped(path, mapping)
