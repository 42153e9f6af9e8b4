"""Study files end to end: fixtures read with their mappings, written as canonical tables and
read back unchanged. (The FHIR and summary parts of this file belong to the mapper and
summary work and live with it.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_cart.errors import ConfigError
from fhir_cart.library.study_mapping import load_study_mapping
from fhir_cart.records import Case, When
from fhir_cart.study import read_study
from fhir_cart.writers import canonical_mapping, write_study
from tests.strategies import cohorts
from tests.support import (
    CENTRE_B_FILE,
    CENTRE_B_MAPPING,
    FIXTURES,
    MAPPINGS,
    SEED_FILE,
    SEED_MAPPING,
)


def _by_id(cases: list[Case]) -> list[Case]:
    return sorted(cases, key=lambda c: c.patient.study_id)


def test_seed_has_seven_patients_and_their_events(seed_cases: list[Case]) -> None:
    assert [c.patient.study_id for c in seed_cases] == [f"P0{n}" for n in range(1, 8)]
    counts = {
        key: sum(len(c.of(key)) for c in seed_cases)
        for key in (
            "diagnosis",
            "death",
            "last_follow_up",
            "cart_infusion",
            "hsct",
            "blinatumomab",
            "chemotherapy",
            "crs",
            "icans",
        )
    }
    assert counts == {
        "diagnosis": 7,
        "death": 2,
        "last_follow_up": 7,
        "cart_infusion": 7,
        "hsct": 1,
        "blinatumomab": 8,
        "chemotherapy": 2,
        "crs": 4,
        "icans": 1,
    }
    relapses = [
        c.patient.study_id
        for c in seed_cases
        for e in c.of("disease_status")
        if e.value and e.value.code == "relapse"
    ]
    assert relapses == ["P02", "P04", "P05"]


def test_seed_relative_days_also_get_dates(seed_cases: list[Case]) -> None:
    p01 = next(c for c in seed_cases if c.patient.study_id == "P01")
    (infusion,) = p01.of("cart_infusion")
    assert infusion.when == When(date=dt.date(2019, 5, 6), day=0, anchor="cart_infusion")
    (death_or_fu,) = p01.of("death", "last_follow_up")
    assert death_or_fu.when == When(date=dt.date(2020, 9, 14), day=497, anchor="cart_infusion")


def test_centre_b_dates_stay_dates(centre_b_cases: list[Case]) -> None:
    b101 = next(c for c in centre_b_cases if c.patient.study_id == "B-101")
    assert all(e.when is None or e.when.day is None for e in b101.events)
    (blina,) = b101.of("blinatumomab")
    assert (blina.when, blina.end) == (
        When(date=dt.date(2021, 3, 2)),
        When(date=dt.date(2021, 3, 30)),
    )
    assert blina.attributes == {"intent": "debulking", "cycle": 1}


@pytest.mark.parametrize(
    ("path", "mapping"), [(SEED_FILE, SEED_MAPPING), (CENTRE_B_FILE, CENTRE_B_MAPPING)]
)
def test_fixtures_have_no_unmapped_columns(path: Path, mapping: Path) -> None:
    assert read_study(path, load_study_mapping(mapping)).unmapped_columns == []


def test_mapping_file_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("centre: x\npatients:\n  columns: {study_idd: ID}\n")
    with pytest.raises(ConfigError, match="study_id"):
        load_study_mapping(bad)
    bad.write_text("centre: Not Valid\npatients: {columns: {study_id: ID}}\n")
    with pytest.raises(ConfigError, match="centre"):
        load_study_mapping(bad)


def test_bad_rows_are_accounted_for() -> None:
    result = read_study(
        FIXTURES / "bad" / "tables", load_study_mapping(MAPPINGS / "centres" / "bad.yaml")
    )
    kept_mrd = sum(len(c.of("mrd")) for c in result.cases)
    assert kept_mrd + sum(r.table == "mrd" for r in result.rejects) == 5
    assert len(result.cases) + sum(r.table == "patients" for r in result.rejects) == 4


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "json"])
def test_write_then_read_is_identity_on_fixtures(
    tmp_path: Path, seed_cases: list[Case], centre_b_cases: list[Case], fmt: str
) -> None:
    cases = [*seed_cases, *centre_b_cases]
    written = write_study(cases, tmp_path, fmt)  # type: ignore[arg-type]
    path = tmp_path if fmt == "csv" else written[0]
    result = read_study(path, canonical_mapping("seed"))
    assert result.rejects == []
    assert result.cases == cases


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
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
    cases = result.cases
    assert _by_id(cases) == _by_id(cohort)


def test_parquet_tables_hold_every_row(tmp_path: Path, seed_cases: list[Case]) -> None:
    write_study(seed_cases, tmp_path, "parquet")
    patients = pq.read_table(tmp_path / "patients.parquet").to_pylist()
    assert [p["study_id"] for p in patients] == [c.patient.study_id for c in seed_cases]
    events = pq.read_table(tmp_path / "events.parquet")
    assert events.num_rows == sum(len(c.events) for c in seed_cases)
