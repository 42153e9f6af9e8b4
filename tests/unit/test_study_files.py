"""Readers, writers, mapping files, fixtures and the paper's numbers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_cart.bundle import map_cases
from fhir_cart.errors import ConfigError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.readers import parse_mrd_result, read_study
from fhir_cart.records import Case
from fhir_cart.study_mapping import load_study_mapping
from fhir_cart.summary import PAPER, summarise
from fhir_cart.writers import canonical_mapping, write_study
from tests.conftest import FIXTURES, MAPPINGS
from tests.roundtrip import unescaped
from tests.strategies import cohorts
from tests.unit.test_mappers import normalise


def _by_id(cases: list[Case]) -> list[Case]:
    return sorted((normalise(c) for c in cases), key=lambda c: c.patient.study_id)


def test_seed_summary_matches_the_paper(seed_cases: list[Case]) -> None:
    summary = summarise(seed_cases)
    for name, expected in PAPER.items():
        assert getattr(summary, name) == expected, name


def test_seed_summary_from_the_fhir_side_matches_the_paper(
    ctx: MappingContext, seed_cases: list[Case]
) -> None:
    resources = [r for rs in map_cases(ctx.with_style("relative"), seed_cases) for r in rs]
    result = cases_from_fhir(ctx, resources)
    assert result.unmapped == []
    summary = summarise(result.cases)
    for name, expected in PAPER.items():
        assert getattr(summary, name) == expected, name


def test_seed_relative_days_also_get_dates(seed_cases: list[Case]) -> None:
    p01 = next(c for c in seed_cases if c.patient.study_id == "P01")
    infusion = next(p for p in p01.procedures if p.kind == "cart_infusion")
    assert infusion.when.day == 0
    assert infusion.when.anchor == "cart_infusion"
    assert infusion.when.date == dt.date(2019, 5, 6)
    day28 = next(m for m in p01.mrd if m.timepoint == "day_28")
    assert day28.when.date == dt.date(2019, 6, 3)
    assert day28.qualitative == "negative"
    assert day28.method == "pcr"


def test_centre_b_reads_percentages_and_dates(centre_b_cases: list[Case]) -> None:
    b101 = next(c for c in centre_b_cases if c.patient.study_id == "B-101")
    assert b101.patient.centre == "centre-b"
    assert b101.patient.birth_date == dt.date(2012, 4, 3)
    infusion = next(m for m in b101.mrd if m.timepoint == "infusion")
    assert (infusion.value, infusion.unit, infusion.comparator) == (0.01, "%", "<")
    assert infusion.method == "flow"
    assert infusion.when.day is None
    b102 = next(c for c in centre_b_cases if c.patient.study_id == "B-102")
    assert not b102.drugs
    relapse = next(s for s in b102.statuses if s.status == "relapse")
    assert relapse.cd19 == "negative"
    assert relapse.when.date == dt.date(2022, 2, 11)
    b102_d28 = next(m for m in b102.mrd if m.timepoint == "day_28")
    assert (b102_d28.value, b102_d28.comparator) == (0.008, None)


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("<0.01%", "percent", {"value": 0.01, "unit": "%", "comparator": "<"}),
        ("0.008 %", "fraction", {"value": 0.008, "unit": "%"}),
        ("1e-4", "fraction", {"value": 1e-4, "unit": "1"}),
        ("<= 0,5", "percent", {"value": 0.5, "unit": "%", "comparator": "<="}),
        (0.3, "percent", {"value": 0.3, "unit": "%"}),
    ],
)
def test_mrd_result_parser(text: object, unit: str, expected: dict[str, object]) -> None:
    assert parse_mrd_result(text, unit) == expected


@pytest.mark.parametrize("text", ["abc", "0.1 % %", "1/1000", ""])
def test_mrd_result_parser_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="MRD result"):
        parse_mrd_result(text, "percent")


def test_bad_rows_are_reported_with_where_and_why() -> None:
    mapping = load_study_mapping(MAPPINGS / "centres" / "bad.yaml")
    result = read_study(FIXTURES / "bad" / "tables", mapping)
    got = {(r.source, r.row, r.column, r.value): r.reason for r in result.rejects}
    assert got[("patients.csv", 3, "birth_date", "2011-13-45")].startswith("not a date")
    assert "duplicate" in got[("patients.csv", 5, "study_id", "X3")]
    assert "MRD result" in got[("mrd.csv", 2, "result", "abc")]
    assert "cannot exceed 100" in got[("mrd.csv", 3, "result", "120%")]
    assert "no patient" in got[("mrd.csv", 5, "study_id", "X9")]
    assert "own row was rejected" in got[("mrd.csv", 6, "study_id", "X2")]
    # everything read is accounted for: 5 patient rows, 5 MRD rows
    kept_mrd = sum(len(c.mrd) for c in result.cases)
    assert kept_mrd + sum(r.table == "mrd" for r in result.rejects) == 5
    assert len(result.cases) + sum(r.table == "patients" for r in result.rejects) == 4


def test_mapping_file_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("centre: x\ntables:\n  patients:\n    columns: {study_idd: ID}\n")
    with pytest.raises(ConfigError, match="study_idd"):
        load_study_mapping(bad)
    bad.write_text("centre: Not Valid\ntables: {patients: {}}\n")
    with pytest.raises(ConfigError, match="centre"):
        load_study_mapping(bad)


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "json"])
def test_write_then_read_is_identity_on_fixtures(
    tmp_path: Path, seed_cases: list[Case], fmt: str
) -> None:
    (path,) = {p.parent if fmt == "csv" else p for p in write_study(seed_cases, tmp_path, fmt)}  # type: ignore[arg-type]
    result = read_study(path, canonical_mapping("seed"))
    assert result.rejects == []
    assert _by_id(result.cases) == _by_id(seed_cases)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cohort=cohorts(), fmt=st.sampled_from(["csv", "xlsx", "json"]))
def test_write_then_read_is_identity_generated(
    tmp_path_factory: pytest.TempPathFactory, cohort: list[Case], fmt: str
) -> None:
    out = tmp_path_factory.mktemp("w")
    written = write_study(cohort, out, fmt)  # type: ignore[arg-type]
    path = out if fmt == "csv" else written[0]
    result = read_study(path, canonical_mapping("gen"))
    assert result.rejects == []
    cases = [unescaped(c) for c in result.cases] if fmt == "csv" else result.cases
    assert _by_id(cases) == _by_id(cohort)


def test_parquet_tables_hold_every_row(tmp_path: Path, seed_cases: list[Case]) -> None:
    write_study(seed_cases, tmp_path, "parquet")
    patients = pq.read_table(tmp_path / "patients.parquet").to_pylist()
    assert sorted(p["study_id"] for p in patients) == [c.patient.study_id for c in seed_cases]
    mrd = pq.read_table(tmp_path / "mrd.parquet")
    assert mrd.num_rows == sum(len(c.mrd) for c in seed_cases)
    empty = pq.read_table(tmp_path / "adverse_events.parquet")
    assert str(empty.schema.field("grade").type) == "int32"
