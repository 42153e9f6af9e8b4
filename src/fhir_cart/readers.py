"""Study files (XLSX, CSV, a folder of CSVs, canonical JSON) -> canonical :class:`Case` records.

Every rejected row or value becomes a :class:`~fhir_cart.errors.Reject` naming the file, the
sheet (xlsx) or canonical table (CSV), the spreadsheet row (header = row 1), the column, the
value and what was expected. A bad event rejects that event only; a bad patient row rejects
the patient and, with the reason said, each of their events. Nothing disappears without a line
in the report. A mapping that does not fit the file (a column it names is not in the header, a
sheet or file is missing) is an :class:`~fhir_cart.errors.InputError` before any row is read.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from fhir_cart.errors import ConfigError, InputError, Reject
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
from fhir_cart.study_mapping import (
    EVENT_TABLES,
    NUMBER_UNITS,
    StudyMapping,
    TableSpec,
    field_words,
    normalise_word,
    validation_reason,
)

__all__ = ["ReadResult", "parse_mrd_result", "read_study"]

Row = dict[str, Any]

_INT_FIELDS = frozenset({"cycle", "grade"})
_FLOAT_FIELDS = frozenset({"age_at_diagnosis", "dose", "cell_dose", "value", "sensitivity"})
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
# Field blamed for a whole-record check (e.g. "a percentage cannot exceed 100").
_RECORD_CHECK_FIELDS = {
    "mrd": ("result", "value", "qualitative"),
    "drugs": ("dose", "dose_unit"),
    "procedures": ("kind", "cell_dose"),
}
_PENDING_ID = "pending"


@dataclass
class ReadResult:
    """What a study file gave: the cases read, and every row or value rejected."""

    cases: list[Case] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


class _FieldError(ValueError):
    def __init__(self, fld: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = fld


# -- values ---------------------------------------------------------------------------------


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
    raise ValueError(f"not a date; expected one written as {' or '.join(formats)}")


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


def _to_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    return str(value).strip()


def _convert(fld: str, value: Any, formats: tuple[str, ...]) -> Any:
    if fld.endswith("_date"):
        return _to_date(value, formats)
    if fld.endswith("_day") or fld in _INT_FIELDS:
        return _to_int(value)
    if fld in _FLOAT_FIELDS:
        return _to_float(value)
    return _to_text(value)


def parse_mrd_result(text: Any, unit: str) -> dict[str, Any]:
    """'<0.01%' -> value 0.01, unit '%', comparator '<'. A number without '%' is in ``unit``
    ('percent' or 'fraction'); a decimal comma is read as a decimal point."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return {"value": float(text), "unit": "%" if unit == "percent" else "1"}
    match = _MRD_RESULT.match(str(text))
    if match is None:
        raise ValueError(
            "expected an MRD result: a word listed under values.result "
            "(or negative, positive_below_quantification, positive), "
            "or a number such as '<0.01%', '0.3 %' or '1e-4'"
        )
    pct = match["pct"] is not None or unit == "percent"
    out: dict[str, Any] = {
        "value": float(match["num"].replace(",", ".")),
        "unit": "%" if pct else "1",
    }
    if match["cmp"]:
        out["comparator"] = match["cmp"]
    return out


# -- a table spec made ready to read rows ----------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """One spec of one canonical table, with its vocabulary and constants prepared."""

    table: str
    spec: TableSpec
    words: dict[str, dict[str, str]]
    constants: dict[str, Any]

    @property
    def columns(self) -> dict[str, str]:
        return self.spec.columns


def _plan(table: str, spec: TableSpec, mapping: StudyMapping, where: str) -> _Plan:
    words: dict[str, dict[str, str]] = {}
    for fld in set(spec.columns) | set(spec.values):
        lookup = {normalise_word(w): w for w in field_words(table, fld)}
        lookup.update({normalise_word(k): v for k, v in spec.values.get(fld, {}).items()})
        if lookup:
            words[fld] = lookup
    constants: dict[str, Any] = {}
    for fld, value in spec.constants.items():
        try:
            constants[fld] = _convert(fld, value, mapping.date_formats)
        except ValueError as exc:
            raise ConfigError(f"{where}.constants.{fld}: {value!r}: {exc}") from exc
    return _Plan(table, spec, words, constants)


def _plans(mapping: StudyMapping) -> list[_Plan]:
    """Every spec, patients first; in a wide layout each group reads the patient id column."""
    plans = []
    for table in ("patients", *EVENT_TABLES):
        for index, spec in enumerate(mapping.specs().get(table, [])):
            if mapping.layout == "wide":
                where = "patient" if table == "patients" else f"events.{table}[{index}]"
                spec = _with_patient_id(spec, mapping)
            else:
                where = f"tables.{table}"
            plans.append(_plan(table, spec, mapping, where))
    return plans


def _with_patient_id(spec: TableSpec, mapping: StudyMapping) -> TableSpec:
    assert mapping.patient is not None
    if "study_id" in spec.columns:
        return spec
    columns = {"study_id": mapping.patient.columns["study_id"], **spec.columns}
    return spec.model_copy(update={"columns": columns})


# -- sources: sheets and CSV files, each read once -------------------------------------------


@dataclass(frozen=True)
class _Sheet:
    source: str
    """File name shown in rejects."""
    sheet: str | None
    """Sheet name (xlsx), None for CSV."""
    header_row: int
    header: list[str]
    rows: list[tuple[int, Row]]


def _read_rows(
    rows: Iterable[Iterable[Any]], header_row: int
) -> tuple[list[str], list[tuple[int, Row]]]:
    header: list[str] | None = None
    out: list[tuple[int, Row]] = []
    for number, values in enumerate(rows, start=1):
        cells = list(values)
        if number < header_row:
            continue
        if header is None:
            header = [_to_text(h) if h is not None else "" for h in cells]
            continue
        if all(_blank(v) for v in cells):
            continue
        out.append((number, dict(zip(header, cells, strict=False))))
    return header or [], out


class _Sources:
    """Finds and reads the sheet or CSV file of each spec (each at most once per read)."""

    def __init__(self, path: Path, mapping: StudyMapping, stack: ExitStack) -> None:
        self.path = path
        self.mapping = mapping
        self._stack = stack
        self._book: Any = None
        self._cache: dict[tuple[str, str | None, int], _Sheet] = {}

    def sheet(self, spec: TableSpec) -> _Sheet:
        wide = self.mapping.layout == "wide"
        name = self.mapping.source if wide else spec.source
        own = self.mapping.patient if wide and self.mapping.patient is not None else spec
        header_row = own.header_row or self.mapping.header_row
        xlsx = self.path.suffix.lower() == ".xlsx"
        file = self.path if xlsx else self._csv_path(name)
        key = (str(file), name, header_row)
        if key not in self._cache:
            title, rows = self._xlsx_rows(name) if xlsx else (None, _csv_rows(file, self.mapping))
            header, data = _read_rows(rows, header_row)
            self._cache[key] = _Sheet(file.name, title, header_row, header, data)
        return self._cache[key]

    def _xlsx_rows(self, sheet: str | None) -> tuple[str, Iterator[tuple[Any, ...]]]:
        book = self._workbook()
        if sheet is not None and sheet not in book.sheetnames:
            names = ", ".join(book.sheetnames)
            raise InputError(
                f"{self.path.name}: no sheet {sheet!r} (sheets: {names})",
                [Reject(self.path.name, None, None, sheet, f"no such sheet; sheets: {names}")],
            )
        worksheet = book[sheet] if sheet is not None else book.worksheets[0]
        return worksheet.title, iter(worksheet.iter_rows(values_only=True))

    def _workbook(self) -> Any:
        if self._book is None:
            from openpyxl import load_workbook

            self._book = load_workbook(self.path, read_only=True, data_only=True)
            self._stack.callback(self._book.close)
        return self._book

    def _csv_path(self, name: str | None) -> Path:
        if self.path.is_file():
            if self.path.suffix.lower() != ".csv":
                raise InputError(f"{self.path.name}: study files are .xlsx, .csv or .json", [])
            if name is None or name in (self.path.name, self.path.stem):
                return self.path
            folder = self.path.parent
        else:
            folder = self.path
        if name is None:
            raise InputError(f"{self.path}: a folder of CSVs needs a source file per table", [])
        for candidate in (folder / name, folder / f"{name}.csv"):
            if candidate.is_file():
                return candidate
        raise InputError(
            f"{folder / name}: file named in the mapping is missing",
            [Reject(name, None, None, None, f"file named in the mapping is not in {folder}")],
        )


def _csv_rows(path: Path, mapping: StudyMapping) -> Iterator[list[str]]:
    try:
        with path.open(newline="", encoding=mapping.encoding) as handle:
            yield from csv.reader(handle, delimiter=mapping.csv_delimiter)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path.name}: not {mapping.encoding} text ({exc.reason} at byte {exc.start}); "
            "set `encoding` in the mapping (e.g. cp1252)",
            [Reject(path.name, None, None, None, f"not {mapping.encoding} text")],
        ) from exc


def _header_problems(sheet: _Sheet, plan: _Plan) -> list[Reject]:
    """Columns the mapping names that the header lacks or holds twice."""
    problems = []
    for fld, column in plan.columns.items():
        count = sheet.header.count(column)
        if count == 1:
            continue
        if count > 1:
            reason = f"column for {fld} appears {count} times in the header"
        else:
            close = difflib.get_close_matches(column, [h for h in sheet.header if h], n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            reason = (
                f"column for {plan.table}.{fld} named in the mapping is not in the header{hint}"
            )
        problems.append(
            Reject(sheet.source, sheet.header_row, column, None, reason, sheet.sheet or plan.table)
        )
    return problems


# -- one row -> one record -------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """A source row being read, and how to blame one of its fields."""

    sheet: _Sheet
    plan: _Plan
    row: int
    raw: Row

    @property
    def table(self) -> str:
        return self.sheet.sheet or self.plan.table

    def reject(self, fld: str | None, reason: str) -> Reject:
        column = self.plan.columns.get(fld) if fld else None
        if column is not None:
            value = self.raw.get(column)
        else:
            column, value = fld, self.plan.constants.get(fld) if fld else None
        shown = None if _blank(value) else _to_text(value)
        return Reject(self.sheet.source, self.row, column, shown, reason, self.table)

    def first_mapped(self, *fields: str) -> str | None:
        return next((f for f in fields if f in self.plan.columns), fields[0] if fields else None)


def _translate(plan: _Plan, fld: str, value: Any) -> Any:
    lookup = plan.words.get(fld)
    if lookup is None:
        return value
    found = lookup.get(normalise_word(value))
    if found is not None:
        return found
    if fld == "result" or not field_words(plan.table, fld):
        return value
    listed = ", ".join(dict.fromkeys([*plan.spec.values.get(fld, {}), *lookup.values()]))
    raise _FieldError(fld, f"unknown word; expected one of {listed}")


def _mrd_fields(value: Any, mapping: StudyMapping) -> dict[str, Any]:
    if isinstance(value, str) and value in field_words("mrd", "result"):
        return {"qualitative": value}
    try:
        return parse_mrd_result(value, mapping.mrd_unit)
    except ValueError as exc:
        raise _FieldError("result", str(exc)) from None


def _flat(where: _Where, mapping: StudyMapping) -> dict[str, Any]:
    """Canonical field -> converted value for one row (constants fill blank cells)."""
    out: dict[str, Any] = dict(where.plan.constants)
    for fld, column in where.plan.columns.items():
        raw = where.raw.get(column)
        if _blank(raw):
            continue
        value = _translate(where.plan, fld, raw)
        if fld == "result":
            out.update(_mrd_fields(value, mapping))
            continue
        try:
            out[fld] = _convert(fld, value, mapping.date_formats)
        except ValueError as exc:
            raise _FieldError(fld, str(exc)) from None
    for number, unit_field in NUMBER_UNITS.get(where.plan.table, {}).items():
        unit = where.plan.spec.units.get(number)
        if unit is not None and number in out and unit_field not in out:
            out[unit_field] = unit
    return out


def _when(
    flat: dict[str, Any], name: str, mapping: StudyMapping, anchor_date: dt.date | None
) -> When | None:
    date = flat.pop(f"{name}_date", None)
    day = flat.pop(f"{name}_day", None)
    anchor = flat.pop(f"{name}_anchor", None) if day is not None else None
    flat.pop(f"{name}_anchor", None)
    if date is None and day is None:
        return None
    anchor = anchor or (mapping.anchor if day is not None else None)
    if day is not None and anchor == mapping.anchor and anchor_date is not None:
        derived = anchor_date + dt.timedelta(days=day)
        if date is None:
            date = derived
        elif date != derived:
            raise _FieldError(
                f"{name}_date",
                f"date {date} is day {(date - anchor_date).days} after the {anchor} date "
                f"{anchor_date}, but the row gives day {day}",
            )
    return When(date=date, day=day, anchor=anchor)


def _record(
    where: _Where, flat: dict[str, Any], mapping: StudyMapping, anchor_date: dt.date | None
) -> Any:
    for name in _WHEN_NAMES[where.plan.table]:
        try:
            when = _when(flat, name, mapping, anchor_date)
        except ValidationError as exc:
            blamed = where.first_mapped(f"{name}_date", f"{name}_day", f"{name}_anchor")
            raise _FieldError(blamed, validation_reason(exc)) from None
        if when is not None:
            flat[name] = when
    if where.plan.table == "patients":
        flat.pop("anchor_date", None)
        flat.setdefault("centre", mapping.centre)
        return PatientRecord(**flat)
    flat.pop("study_id", None)
    return _EVENT_MODELS[where.plan.table](**flat)


def _blamed_field(exc: ValidationError, where: _Where) -> str | None:
    loc = exc.errors()[0]["loc"]
    if not loc:
        return where.first_mapped(*_RECORD_CHECK_FIELDS.get(where.plan.table, ()))
    name = str(loc[0])
    if name in where.plan.columns or name in where.plan.constants:
        return name
    prefixed = [f for f in where.plan.columns if f.startswith(f"{name}_")]
    return prefixed[0] if prefixed else name


def _patient_id(where: _Where) -> str | None:
    column = where.plan.columns.get("study_id")
    value = where.raw.get(column) if column else None
    return None if _blank(value) else _to_text(value)


# -- the whole file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    where: _Where
    record: Any
    derived_id: bool


@dataclass
class _Assembly:
    mapping: StudyMapping
    patients: dict[str, PatientRecord] = field(default_factory=dict)
    anchor_dates: dict[str, dt.date | None] = field(default_factory=dict)
    patient_rows: dict[str, _Where] = field(default_factory=dict)
    rejected_patients: set[str] = field(default_factory=set)
    rejected_rows: set[tuple[str, int]] = field(default_factory=set)
    events: dict[str, list[_Event]] = field(default_factory=lambda: defaultdict(list))
    rejects: list[Reject] = field(default_factory=list)

    def patient(self, where: _Where) -> None:
        try:
            flat = _flat(where, self.mapping)
            sid = flat.get("study_id")
            if sid is None:
                raise _FieldError("study_id", "a patient row needs a patient id")
            if sid in self.patients:
                first = self.patient_rows[sid].row
                raise _FieldError("study_id", f"duplicate patient id (row {first} is kept)")
            anchor_date = flat.get("anchor_date")
            self.patients[sid] = _record(where, flat, self.mapping, anchor_date)
            self.anchor_dates[sid] = anchor_date
            self.patient_rows[sid] = where
        except _FieldError as exc:
            self._refuse_patient(where, exc.field, str(exc))
        except ValidationError as exc:
            self._refuse_patient(where, _blamed_field(exc, where), validation_reason(exc))

    def _refuse_patient(self, where: _Where, fld: str | None, reason: str) -> None:
        self.rejects.append(where.reject(fld, reason))
        self.rejected_rows.add((where.sheet.source, where.row))
        sid = _patient_id(where)
        if sid is not None and sid not in self.patients:
            self.rejected_patients.add(sid)

    def event(self, where: _Where) -> None:
        try:
            if (
                self.mapping.layout == "wide"
                and (where.sheet.source, where.row) in self.rejected_rows
            ):
                raise _FieldError("study_id", "the patient's own row was rejected")
            flat = _flat(where, self.mapping)
            sid = self._owner(flat.get("study_id"))
            derived = "event_id" not in flat
            flat.setdefault("event_id", _PENDING_ID)
            record = _record(where, flat, self.mapping, self.anchor_dates[sid])
            self.events[sid].append(_Event(where, record, derived))
        except _FieldError as exc:
            self.rejects.append(where.reject(exc.field, str(exc)))
        except ValidationError as exc:
            self.rejects.append(where.reject(_blamed_field(exc, where), validation_reason(exc)))

    def _owner(self, sid: str | None) -> str:
        if sid is None:
            raise _FieldError("study_id", "an event row needs a patient id")
        if sid in self.rejected_patients and sid not in self.patients:
            raise _FieldError("study_id", "the patient's own row was rejected")
        if sid not in self.patients:
            raise _FieldError("study_id", "no patient with this id in the patient table")
        return sid

    def cases(self) -> list[Case]:
        cases = []
        for sid, patient in self.patients.items():
            events = _with_event_ids(self.events.get(sid, []), self.rejects)
            by_table = {t: tuple(e.record for e in events if e.where.plan.table == t)
                        for t in EVENT_TABLES}  # fmt: skip
            try:
                cases.append(Case(patient=patient, **by_table))
            except ValidationError as exc:
                self._refuse_case(sid, events, validation_reason(exc))
        return cases

    def _refuse_case(self, sid: str, events: list[_Event], reason: str) -> None:
        self.rejects.append(self.patient_rows[sid].reject("study_id", reason))
        for event in events:
            self.rejects.append(event.where.reject("study_id", "the patient was rejected"))


# -- event ids -------------------------------------------------------------------------------


def _natural_key(table: str, record: Any) -> tuple[str, bool]:
    """Base of a derived event id, and whether it is always numbered (``cart_infusion-1``)."""
    if table == "drugs":
        cycle = f"-c{record.cycle}" if record.cycle is not None else ""
        return f"{record.agent}{cycle}", False
    if table == "mrd":
        return f"mrd-{record.timepoint}-{record.method}", False
    if table == "statuses":
        when = record.when
        return f"status-{record.status}-{when.day if when.day is not None else when.date}", False
    return str(record.kind), True


def _with_event_ids(events: list[_Event], rejects: list[Reject]) -> list[_Event]:
    """Derive missing event ids from each row's natural key; ids given in the file are kept
    and never reused. Deterministic: the same file gives the same ids on every read."""
    taken: dict[tuple[str, str], int] = {}
    kept: list[_Event] = []
    for event in events:
        key = (event.where.plan.table, event.record.event_id)
        if not event.derived_id and key in taken:
            reason = f"event id already used in row {taken[key]}"
            rejects.append(event.where.reject("event_id", reason))
            continue
        if not event.derived_id:
            taken[key] = event.where.row
        kept.append(event)
    return [_derive_id(e, taken) if e.derived_id else e for e in kept]


def _derive_id(event: _Event, taken: dict[tuple[str, str], int]) -> _Event:
    table = event.where.plan.table
    base, numbered = _natural_key(table, event.record)
    base = re.sub(r"[^A-Za-z0-9_\-\.]", "-", base)[:56]
    number = 1
    while True:
        candidate = f"{base}-{number}" if numbered or number > 1 else base
        if (table, candidate) not in taken:
            break
        number += 1
    taken[(table, candidate)] = event.where.row
    record = event.record.model_copy(update={"event_id": candidate})
    return _Event(event.where, record, derived_id=True)


# -- entry points ----------------------------------------------------------------------------


def _has_values(where: _Where) -> bool:
    """In a wide sheet an event group makes an event only when one of its cells is filled."""
    return any(
        not _blank(where.raw.get(column))
        for fld, column in where.plan.columns.items()
        if fld != "study_id"
    )


def _read_mapped(path: Path, mapping: StudyMapping) -> ReadResult:
    plans = _plans(mapping)
    acc = _Assembly(mapping)
    with ExitStack() as stack:
        sources = _Sources(path, mapping, stack)
        sheets = [sources.sheet(plan.spec) for plan in plans]
    problems = [p for sheet, plan in zip(sheets, plans, strict=True)
                for p in _header_problems(sheet, plan)]  # fmt: skip
    if problems:
        raise InputError(f"{path.name}: the mapping does not fit the file", problems)
    wide = mapping.layout == "wide"
    for sheet, plan in zip(sheets, plans, strict=True):
        for row, raw in sheet.rows:
            where = _Where(sheet, plan, row, raw)
            if plan.table == "patients":
                acc.patient(where)
            elif not wide or _has_values(where):
                acc.event(where)
    cases = acc.cases()
    return ReadResult(cases=cases, rejects=acc.rejects)


def _read_json(path: Path) -> ReadResult:
    result = ReadResult()
    try:
        items = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InputError(f"{path.name}: cannot read JSON ({exc})", []) from exc
    if not isinstance(items, list):
        raise InputError(f"{path.name}: expected a list of cases (the canonical JSON form)", [])
    for index, item in enumerate(items, start=1):
        try:
            result.cases.append(Case.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            column = ".".join(str(part) for part in first["loc"]) or None
            reason = validation_reason(exc)
            result.rejects.append(Reject(path.name, index, column, None, reason, "cases"))
    return result


def read_study(path: Path, mapping: StudyMapping | None = None) -> ReadResult:
    """Read a study file: .xlsx, .csv (one file or a folder of them) with a mapping, or the
    canonical .json (no mapping needed). Raises InputError when the file cannot be read at
    all; rows and values that cannot be read are returned as rejects."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder", [])
    if path.suffix.lower() == ".json":
        return _read_json(path)
    if mapping is None:
        raise InputError(f"{path.name}: a mapping file is needed for this file type", [])
    return _read_mapped(path, mapping)
