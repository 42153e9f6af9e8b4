"""Writing the canonical tables (patients, events, other), and reading them back unchanged."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from fhir_cart.csv_safety import FORMULA_STARTS, safe_csv_cell, unescape_csv_cell
from fhir_cart.errors import Reject
from fhir_cart.library.concepts import ConceptsFile
from fhir_cart.library.study_mapping import load_study_mapping
from fhir_cart.records import Case, Event, PatientRecord, Value, When
from fhir_cart.study import read_study
from fhir_cart.writers import (
    EVENT_COLUMNS,
    OTHER_COLUMNS,
    StudyTableWriter,
    canonical_mapping,
    table_columns,
    table_rows,
    write_rejects,
    write_study,
)
from tests.strategies import cohorts
from tests.support import MAPPINGS


def _by_id(cases: list[Case]) -> list[Case]:
    return sorted(cases, key=lambda c: c.patient.study_id)


def _read_back(cases: list[Case], out: Path, fmt: str) -> list[Case]:
    written = write_study(cases, out, fmt)  # type: ignore[arg-type]
    path = out if fmt == "csv" else written[0]
    result = read_study(path, canonical_mapping("canonical") if fmt != "json" else None)
    assert result.rejects == []
    assert result.unmapped_columns == []
    return result.cases


def test_canonical_mapping_file_is_the_one_in_code() -> None:
    assert load_study_mapping(MAPPINGS / "centres" / "canonical.yaml") == canonical_mapping(
        "canonical"
    )


def test_canonical_tables_and_columns() -> None:
    columns = table_columns()
    assert list(columns) == ["patients", "events"]
    assert columns["patients"][:4] == ["study_id", "centre", "sex", "birth_date"]
    assert "age_at_diagnosis" in columns["patients"]
    events = columns["events"]
    assert events[: len(EVENT_COLUMNS)] == list(EVENT_COLUMNS)
    attributes = events[len(EVENT_COLUMNS) :]
    assert attributes == sorted(attributes)
    assert {"cycle", "intent", "cd19", "grade", "cell_dose"} <= set(attributes)
    assert {"when_earliest_day", "end_latest_day", "value_code", "origin"} <= set(events)


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "json"])
def test_fixtures_read_back_unchanged(
    tmp_path: Path, seed_cases: list[Case], centre_b_cases: list[Case], fmt: str
) -> None:
    cases = [*seed_cases, *centre_b_cases]
    assert _read_back(cases, tmp_path / "out", fmt) == cases


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cohort=cohorts(), fmt=st.sampled_from(["csv", "xlsx", "json"]))
def test_generated_cases_read_back_unchanged(
    tmp_path_factory: pytest.TempPathFactory, cohort: list[Case], fmt: str
) -> None:
    out = tmp_path_factory.mktemp("w")
    assert _by_id(_read_back(cohort, out, fmt)) == _by_id(cohort)


def test_csv_folder_has_a_file_per_table(tmp_path: Path, seed_cases: list[Case]) -> None:
    paths = write_study(seed_cases, tmp_path, "csv")
    assert paths == [tmp_path / "patients.csv", tmp_path / "events.csv"]
    with (tmp_path / "events.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == table_columns()["events"]
    assert len(rows) == sum(len(c.events) for c in seed_cases)
    cyclo = next(r for r in rows if r["concept"] == "cyclophosphamide")
    assert (cyclo["value_number"], cyclo["value_unit"], cyclo["intent"]) == (
        "500.0",
        "mg/m2",
        "lymphodepletion",
    )
    assert (cyclo["when_day"], cyclo["when_anchor"], cyclo["when_date"]) == (
        "-6",
        "cart_infusion",
        "2019-04-30",
    )


def test_workbook_has_a_sheet_per_table_and_real_dates(
    tmp_path: Path, seed_cases: list[Case]
) -> None:
    (path,) = write_study(seed_cases, tmp_path / "cohort.xlsx", "xlsx")
    assert path == tmp_path / "cohort.xlsx"
    book = load_workbook(path, read_only=True)
    assert book.sheetnames == ["patients", "events"]
    patients = list(book["patients"].iter_rows(values_only=True))
    assert list(patients[0]) == table_columns()["patients"]
    birth = patients[1][table_columns()["patients"].index("birth_date")]
    assert birth == dt.datetime(2011, 2, 14)
    book.close()
    assert write_study(seed_cases, tmp_path, "xlsx") == [tmp_path / "study.xlsx"]


def _case(**event: Any) -> Case:
    base: dict[str, Any] = {
        "event_id": "1.0",
        "concept": "hsct",
        "when": When(day=0, anchor="hsct"),
    }
    return Case(
        patient=PatientRecord(study_id="007", centre="x"), events=(Event(**{**base, **event}),)
    )


def test_text_that_looks_like_a_formula_stays_text(tmp_path: Path) -> None:
    case = _case(attributes={"conditioning": '=HYPERLINK("x")'})
    (path,) = write_study([case], tmp_path, "xlsx")
    book = load_workbook(path)
    column = table_columns()["events"].index("conditioning") + 1
    cell = book["events"].cell(row=2, column=column)
    assert (cell.value, cell.data_type) == ('=HYPERLINK("x")', "s")
    assert _read_back([case], tmp_path / "again", "xlsx") == [case]


OTHER = [
    {
        "study_id": "007",
        "resource_type": "Observation",
        "resource_id": "o1",
        "code_system": "http://loinc.org",
        "code": "718-7",
        "display": "Hemoglobin",
        "value": 12.5,
        "unit": "g/dL",
        "time": "2021-01-01",
        "reason": "no concept has this code",
    },
]


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_other_rows_are_written_when_given(tmp_path: Path, fmt: str) -> None:
    paths = write_study([_case()], tmp_path, fmt, other=OTHER)  # type: ignore[arg-type]
    if fmt == "csv":
        assert paths[-1] == tmp_path / "other.csv"
        with paths[-1].open(newline="") as handle:
            (row,) = csv.DictReader(handle)
        assert list(row) == list(OTHER_COLUMNS)
        assert (row["code"], row["value"]) == ("718-7", "12.5")
    elif fmt == "xlsx":
        book = load_workbook(paths[0], read_only=True)
        assert book.sheetnames == ["patients", "events", "other"]
        rows = list(book["other"].iter_rows(values_only=True))
        assert rows[1][OTHER_COLUMNS.index("display")] == "Hemoglobin"
    else:
        assert pq.read_table(tmp_path / "other.parquet").to_pylist()[0]["value"] == "12.5"
    # and the canonical tables still read back
    if fmt != "parquet":
        assert _read_back([_case()], tmp_path / "again", fmt) == [_case()]


def test_no_other_table_without_other_rows(tmp_path: Path) -> None:
    assert write_study([_case()], tmp_path, "csv") == [
        tmp_path / "patients.csv",
        tmp_path / "events.csv",
    ]


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_an_attribute_the_library_lacks_is_an_other_row_not_a_drop(
    tmp_path: Path, fmt: str
) -> None:
    """A study's own attribute read back without its library (issue 18: a pull crashed on
    it, leaving header-only CSVs): an ``other`` row with the fix, in both writers."""
    case = _case(attributes={"ward": "7B"})
    write_study([case], tmp_path / "whole", fmt)  # type: ignore[arg-type]
    streamed = StudyTableWriter(tmp_path / "streamed", fmt)  # type: ignore[arg-type]
    streamed.add_case(case)
    streamed.close()
    for folder in ("whole", "streamed"):
        rows = _other_rows(tmp_path / folder, fmt)
        assert [(r["code"], r["value"]) for r in rows] == [("ward", "7B")]
        assert "--library FILE" in str(rows[0]["reason"])
        assert "ward" not in _first_row(tmp_path / folder, fmt, "patients")
    assert streamed.undeclared == 1  # every format counts it (parquet and json too)


def _other_rows(folder: Path, fmt: str) -> list[dict[str, object]]:
    if fmt == "csv":
        with (folder / "other.csv").open(encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    if fmt == "parquet":
        return list(pq.read_table(folder / "other.parquet").to_pylist())
    book = load_workbook(folder / "study.xlsx")
    rows = list(book["other"].iter_rows(values_only=True))
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]  # type: ignore[arg-type]


def _first_row(folder: Path, fmt: str, table: str) -> dict[str, object]:
    if fmt == "csv":
        with (folder / f"{table}.csv").open(encoding="utf-8") as handle:
            return next(csv.DictReader(handle))
    if fmt == "parquet":
        return dict(pq.read_table(folder / f"{table}.parquet").to_pylist()[0])
    book = load_workbook(folder / "study.xlsx")
    rows = list(book[table].iter_rows(values_only=True))
    return dict(zip(rows[0], rows[1], strict=True))  # type: ignore[arg-type]


def test_a_studys_own_concepts_are_columns_and_read_back(tmp_path: Path) -> None:
    own = ConceptsFile.model_validate(
        {
            "attributes": {"ward": {"label": "Ward", "type": "text"}},
            "concepts": {
                "ferritin": {
                    "label": "Ferritin",
                    "kind": "observation",
                    "value": {"type": "quantity", "units": ["ug/L"]},
                    "attributes": ["ward"],
                }
            },
        }
    )
    mapping = canonical_mapping("own", extra=own)
    found = mapping.own_concepts()
    assert found is not None
    assert found.model_dump(include={"concepts", "attributes", "patient_attributes"}) == (
        own.model_dump()
    )
    from fhir_cart.library.study_mapping import default_library

    library = default_library(mapping)
    case = Case(
        patient=PatientRecord(study_id="A", centre="own"),
        events=(
            Event(
                event_id="f1",
                concept="ferritin",
                value=Value(number=350.0, unit="ug/L"),
                attributes={"ward": "7B"},
            ),
        ),
    )
    write_study([case], tmp_path, "csv", library=library)
    result = read_study(tmp_path, mapping)
    assert result.rejects == []
    assert result.cases == [case]


def _arrow_rows(table: str, cases: list[Case]) -> list[dict[str, Any]]:
    """The rows Parquet should give back: a date column that holds a year or a month
    ("2012") is ISO text throughout, else dates."""
    columns = table_columns()[table]
    rows = [
        {column: row.get(column) for column in columns}
        for name, row in table_rows(cases)
        if name == table
    ]
    for column in ("birth_date", "when_date", "end_date"):
        if any(isinstance(row.get(column), str) for row in rows):
            for row in rows:
                if isinstance(row.get(column), dt.date):
                    row[column] = row[column].isoformat()
    return rows


def test_parquet_gives_the_same_rows(
    tmp_path: Path, seed_cases: list[Case], centre_b_cases: list[Case]
) -> None:
    cases = [*seed_cases, *centre_b_cases]
    paths = write_study(cases, tmp_path, "parquet")
    assert paths == [tmp_path / "patients.parquet", tmp_path / "events.parquet"]
    for table in ("patients", "events"):
        read = pq.read_table(tmp_path / f"{table}.parquet")
        assert read.column_names == table_columns()[table]
        assert read.to_pylist() == _arrow_rows(table, cases), table


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohort=cohorts())
def test_parquet_gives_the_same_rows_generated(
    tmp_path_factory: pytest.TempPathFactory, cohort: list[Case]
) -> None:
    out = tmp_path_factory.mktemp("p")
    write_study(cohort, out, "parquet")
    for table in ("patients", "events"):
        assert pq.read_table(out / f"{table}.parquet").to_pylist() == _arrow_rows(table, cohort)


def test_empty_parquet_tables_keep_their_types(tmp_path: Path) -> None:
    write_study([Case(patient=PatientRecord(study_id="A", centre="x"))], tmp_path, "parquet")
    events = pq.read_table(tmp_path / "events.parquet")
    assert events.num_rows == 0
    types = {f.name: str(f.type) for f in events.schema}
    assert types["grade"] == "int64"
    assert types["cell_dose"] == "double"
    assert types["steroid_refractory"] == "bool"
    assert types["when_date"] == "date32[day]"
    assert types["when_day"] == "int32"
    assert types["value_number"] == "double"
    assert types["value_boolean"] == "bool"
    assert types["concept"] == "string"
    patients = pq.read_table(tmp_path / "patients.parquet").schema
    assert str(patients.field("age_at_diagnosis").type) == "double"


def test_json_is_the_case_list(tmp_path: Path, seed_cases: list[Case]) -> None:
    (path,) = write_study(seed_cases, tmp_path, "json")
    assert path == tmp_path / "study.json"
    assert read_study(path).cases == seed_cases
    paths = write_study(seed_cases, tmp_path / "o", "json", other=OTHER)
    assert [p.name for p in paths] == ["study.json", "study.other.json"]


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format 'ods'"):
        write_study([], tmp_path, "ods")  # type: ignore[arg-type]


def test_rejects_report(tmp_path: Path) -> None:
    rejects = [
        Reject("s.xlsx", 3, "MRD", "abc", "expected a number", "MRD"),
        Reject("c.json", None, None, None, 'not JSON, "quoted"'),
    ]
    path = write_rejects(rejects, tmp_path / "out" / "rejects.csv")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["source", "table", "row", "column", "value", "reason"],
        ["s.xlsx", "MRD", "3", "MRD", "abc", "expected a number"],
        ["c.json", "", "", "", "", 'not JSON, "quoted"'],
    ]


FORMULAS = ['=HYPERLINK("http://x.test","y")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]


@pytest.mark.parametrize("text", FORMULAS)
def test_csv_cells_that_look_like_formulas_are_escaped(tmp_path: Path, text: str) -> None:
    event = Event(
        event_id="1.0",
        concept="hsct",
        when=When(day=-3, anchor="hsct"),
        attributes={"conditioning": text},
    )
    case = Case(patient=PatientRecord(study_id="007", centre="x"), events=(event,))
    write_study([case], tmp_path, "csv")
    with (tmp_path / "events.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["conditioning"] == "'" + str(event.attributes["conditioning"])  # records strip
    assert row["when_day"] == "-3"  # numbers keep their sign
    (back,) = read_study(tmp_path, canonical_mapping("x")).cases
    assert back == case  # the reader undoes the escape: the round trip is the identity
    path = write_rejects([Reject(text, 2, text, text, text, text)], tmp_path / "rejects.csv")
    with path.open(newline="") as handle:
        (cells,) = list(csv.reader(handle))[1:]
    assert cells == ["'" + text, "'" + text, "2", "'" + text, "'" + text, "'" + text]


def test_unmapped_report_escapes_formulas(tmp_path: Path) -> None:
    from fhir_cart.mappers.from_fhir import Unmapped
    from fhir_cart.writers import write_unmapped

    item = Unmapped("=cmd|'/c calc'!A1", "@Observation", "-no code")
    with write_unmapped([item], tmp_path / "unmapped.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1] == ["'=cmd|'/c calc'!A1", "'@Observation", "'-no code"]


@given(st.text(alphabet="'=+-@\t\rab1 ", max_size=8))
def test_csv_escape_round_trips_any_text(text: str) -> None:
    written = safe_csv_cell(text)
    assert unescape_csv_cell(written) == text
    assert not written.startswith(FORMULA_STARTS)  # nothing a spreadsheet would run


@pytest.mark.parametrize("cell", ["''", "'tis", "'", "a'=b"])
def test_a_quote_that_escapes_no_formula_is_read_as_written(cell: str) -> None:
    assert safe_csv_cell(cell) == cell
    assert unescape_csv_cell(cell) == cell


def test_control_characters_are_escaped_in_a_workbook_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One control character broke the whole export (openpyxl refuses it): it is written as
    Excel writes it (_xHHHH_), a literal escape keeps its own, and the log says how many."""
    texts = ["Flu\x07 _x0041_ ok", "line\nbreak\ttab"]
    cases = [_case(event_id=f"1.{i}", attributes={"conditioning": t}) for i, t in enumerate(texts)]
    (path,) = write_study(cases, tmp_path, "xlsx")
    column = table_columns()["events"].index("conditioning") + 1
    sheet = load_workbook(path)["events"]
    assert [sheet.cell(row=r, column=column).value for r in (2, 3)] == [
        "Flu_x0007_ _x005F_x0041_ ok",
        "line\nbreak\ttab",
    ]
    assert "1 cell(s) held control characters" in caplog.text
    assert "Flu" not in caplog.text
