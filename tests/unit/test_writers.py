"""Writing the canonical tables layout, and reading it back unchanged."""

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

from fhir_cart.errors import Reject
from fhir_cart.readers import read_study
from fhir_cart.records import Case, PatientRecord, ProcedureRecord, When
from fhir_cart.study_mapping import TABLES, load_study_mapping
from fhir_cart.writers import COLUMNS, canonical_mapping, table_rows, write_rejects, write_study
from tests.conftest import MAPPINGS
from tests.roundtrip import unescaped
from tests.strategies import cohorts


def _by_id(cases: list[Case]) -> list[Case]:
    return sorted(cases, key=lambda c: c.patient.study_id)


def _read_back(cases: list[Case], out: Path, fmt: str) -> list[Case]:
    written = write_study(cases, out, fmt)  # type: ignore[arg-type]
    path = out if fmt == "csv" else written[0]
    result = read_study(path, canonical_mapping("canonical") if fmt != "json" else None)
    assert result.rejects == []
    return [unescaped(c) for c in result.cases] if fmt == "csv" else result.cases


def test_canonical_mapping_file_is_the_one_in_code() -> None:
    assert load_study_mapping(MAPPINGS / "centres" / "canonical.yaml") == canonical_mapping(
        "canonical"
    )


def test_canonical_tables_and_columns() -> None:
    assert tuple(COLUMNS) == TABLES
    for table, columns in COLUMNS.items():
        assert columns[0] == "study_id", table
    assert "anchor_date" not in COLUMNS["patients"]
    assert "result" not in COLUMNS["mrd"]
    assert {"start_date", "start_day", "start_anchor"} <= set(COLUMNS["drugs"])


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "json"])
def test_fixtures_read_back_unchanged(
    tmp_path: Path, seed_cases: list[Case], centre_b_cases: list[Case], fmt: str
) -> None:
    cases = [*seed_cases, *centre_b_cases]
    assert _read_back(cases, tmp_path / "out", fmt) == cases


@settings(
    max_examples=40,
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
    assert paths == [tmp_path / f"{t}.csv" for t in TABLES]
    with (tmp_path / "mrd.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS["mrd"]
    assert len(rows) == sum(len(c.mrd) for c in seed_cases)
    first = rows[0]
    assert (first["when_day"], first["when_anchor"], first["unit"]) == ("-75", "cart_infusion", "%")
    assert first["when_date"] == "2019-02-20"


def test_workbook_has_a_sheet_per_table_and_real_dates(
    tmp_path: Path, seed_cases: list[Case]
) -> None:
    (path,) = write_study(seed_cases, tmp_path / "cohort.xlsx", "xlsx")
    assert path == tmp_path / "cohort.xlsx"
    book = load_workbook(path, read_only=True)
    assert book.sheetnames == list(TABLES)
    patients = list(book["patients"].iter_rows(values_only=True))
    assert list(patients[0]) == COLUMNS["patients"]
    birth = patients[1][COLUMNS["patients"].index("birth_date")]
    assert birth == dt.datetime(2011, 2, 14)
    book.close()
    assert write_study(seed_cases, tmp_path, "xlsx") == [tmp_path / "study.xlsx"]


def test_text_that_looks_like_a_formula_stays_text(tmp_path: Path) -> None:
    case = Case(
        patient=PatientRecord(study_id="007", centre="x"),
        procedures=(
            ProcedureRecord(event_id="1.0", kind="hsct", when=When(day=0, anchor="hsct"),
                            conditioning="=HYPERLINK(\"x\")"),
        ),
    )  # fmt: skip
    (path,) = write_study([case], tmp_path, "xlsx")
    book = load_workbook(path)
    column = COLUMNS["procedures"].index("conditioning") + 1
    cell = book["procedures"].cell(row=2, column=column)
    assert (cell.value, cell.data_type) == ('=HYPERLINK("x")', "s")
    assert _read_back([case], tmp_path / "again", "xlsx") == [case]


def _arrow_rows(table: str, cases: list[Case]) -> list[dict[str, Any]]:
    return [
        {column: row.get(column) for column in COLUMNS[table]}
        for name, row in table_rows(cases)
        if name == table
    ]


def test_parquet_gives_the_same_rows(
    tmp_path: Path, seed_cases: list[Case], centre_b_cases: list[Case]
) -> None:
    cases = [*seed_cases, *centre_b_cases]
    paths = write_study(cases, tmp_path, "parquet")
    assert paths == [tmp_path / f"{t}.parquet" for t in TABLES]
    for table in TABLES:
        read = pq.read_table(tmp_path / f"{table}.parquet")
        assert read.column_names == COLUMNS[table]
        assert read.to_pylist() == _arrow_rows(table, cases), table


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohort=cohorts())
def test_parquet_gives_the_same_rows_generated(
    tmp_path_factory: pytest.TempPathFactory, cohort: list[Case]
) -> None:
    out = tmp_path_factory.mktemp("p")
    write_study(cohort, out, "parquet")
    for table in TABLES:
        assert pq.read_table(out / f"{table}.parquet").to_pylist() == _arrow_rows(table, cohort)


def test_empty_parquet_tables_keep_their_types(tmp_path: Path) -> None:
    write_study([Case(patient=PatientRecord(study_id="A", centre="x"))], tmp_path, "parquet")
    events = pq.read_table(tmp_path / "adverse_events.parquet")
    assert events.num_rows == 0
    types = {f.name: str(f.type) for f in events.schema}
    assert types["grade"] == "int32"
    assert types["when_date"] == "date32[day]"
    assert types["kind"] == "string"
    mrd = pq.read_table(tmp_path / "mrd.parquet").schema
    assert str(mrd.field("value").type) == "double"


def test_json_is_the_case_list(tmp_path: Path, seed_cases: list[Case]) -> None:
    (path,) = write_study(seed_cases, tmp_path, "json")
    assert path == tmp_path / "study.json"
    assert read_study(path).cases == seed_cases


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format 'ods'"):
        write_study([], tmp_path, "ods")  # type: ignore[arg-type]


def test_rejects_report(tmp_path: Path) -> None:
    rejects = [
        Reject("s.xlsx", 3, "MRD", "abc", "expected an MRD result", "MRD"),
        Reject("c.json", None, None, None, 'not JSON, "quoted"'),
    ]
    path = write_rejects(rejects, tmp_path / "out" / "rejects.csv")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["source", "table", "row", "column", "value", "reason"],
        ["s.xlsx", "MRD", "3", "MRD", "abc", "expected an MRD result"],
        ["c.json", "", "", "", "", 'not JSON, "quoted"'],
    ]


FORMULAS = ['=HYPERLINK("http://x.test","y")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]


@pytest.mark.parametrize("text", FORMULAS)
def test_csv_cells_that_look_like_formulas_are_escaped(tmp_path: Path, text: str) -> None:
    case = Case(
        patient=PatientRecord(study_id="007", centre="x"),
        procedures=(
            ProcedureRecord(event_id="1.0", kind="hsct", when=When(day=-3, anchor="hsct"),
                            conditioning=text),
        ),
    )  # fmt: skip
    write_study([case], tmp_path, "csv")
    with (tmp_path / "procedures.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["conditioning"] == "'" + str(case.procedures[0].conditioning)  # records strip
    assert row["when_day"] == "-3"  # numbers keep their sign
    path = write_rejects([Reject(text, 2, text, text, text, text)], tmp_path / "rejects.csv")
    with path.open(newline="") as handle:
        (cells,) = list(csv.reader(handle))[1:]
    assert cells == ["'" + text, "'" + text, "2", "'" + text, "'" + text, "'" + text]


def test_unmapped_report_escapes_formulas(tmp_path: Path) -> None:
    from fhir_cart.mappers.from_fhir import Unmapped
    from fhir_cart.sync.service import write_unmapped

    item = Unmapped("=cmd|'/c calc'!A1", "@Observation", "-no code")
    with write_unmapped([item], tmp_path / "unmapped.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1] == ["'=cmd|'/c calc'!A1", "'@Observation", "'-no code"]
