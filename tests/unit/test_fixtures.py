"""The fixtures: the seed cohort agrees with every fact of the paper (../shared/SEED.md),
computed here straight from the Case records; everything is labelled SYNTHETIC."""

from __future__ import annotations

import csv
import importlib.util
import statistics
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from fhir_cart.readers import read_study
from fhir_cart.records import Case, DiseaseStatus, MrdResult, When
from fhir_cart.study_mapping import load_study_mapping
from tests.conftest import FIXTURES, SEED_FILE, SEED_MAPPING


@pytest.fixture(scope="module")
def seed() -> list[Case]:
    result = read_study(SEED_FILE, load_study_mapping(SEED_MAPPING))
    assert result.rejects == []
    return result.cases


def _day(when: When) -> int:
    """Day after the CAR-T infusion (every seed time is relative to it)."""
    assert when.anchor == "cart_infusion"
    assert when.day is not None
    assert when.date is not None  # dated from the patient's infusion date
    return when.day


def _ids(cases: list[Case], keep: Any) -> set[str]:
    return {c.patient.study_id for c in cases if keep(c)}


def _blina_intents(case: Case) -> set[str | None]:
    return {d.intent for d in case.drugs if d.agent == "blinatumomab"}


def _blina_responses(case: Case) -> set[str | None]:
    return {d.response for d in case.drugs if d.agent == "blinatumomab"}


def _mrd(case: Case, timepoint: str) -> MrdResult:
    (result,) = [m for m in case.mrd if m.timepoint == timepoint]
    return result


def _status_on(case: Case, day: int) -> str | None:
    found = [s.status for s in case.statuses if _day(s.when) == day]
    return found[0] if len(found) == 1 else None


def _relapses(case: Case) -> list[DiseaseStatus]:
    return [s for s in case.statuses if s.status == "relapse" and _day(s.when) > 0]


def _latest_status(case: Case) -> DiseaseStatus:
    return max(case.statuses, key=lambda s: _day(s.when))


def _latest_mrd(case: Case) -> MrdResult:
    return max(case.mrd, key=lambda m: _day(m.when))


def test_seven_patients_one_centre(seed: list[Case]) -> None:
    assert [c.patient.study_id for c in seed] == [f"P0{i}" for i in range(1, 8)]
    assert {c.patient.centre for c in seed} == {"seed"}


def test_blinatumomab_before_apheresis_and_as_bridging(seed: list[Case]) -> None:
    debulking = _ids(seed, lambda c: "debulking" in _blina_intents(c))
    bridging = _ids(seed, lambda c: "bridging" in _blina_intents(c))
    assert len(debulking) == 6
    assert len(bridging) == 2
    assert debulking & bridging  # at least one child had both
    for case in seed:
        apheresis = _day(next(p.when for p in case.procedures if p.kind == "apheresis"))
        for drug in (d for d in case.drugs if d.agent == "blinatumomab"):
            assert drug.end is not None
            if drug.intent == "debulking":
                assert _day(drug.end) < apheresis
            else:
                assert apheresis < _day(drug.start)
                assert _day(drug.end) < 0


def test_all_responded_to_blinatumomab_but_one(seed: list[Case]) -> None:
    responders = _ids(seed, lambda c: "response" in _blina_responses(c))
    non_responders = _ids(seed, lambda c: _blina_responses(c) == {"no_response"})
    assert len(responders) == 6
    assert non_responders == {"P05"}


def test_at_infusion_all_in_cr_four_low_positive(seed: list[Case]) -> None:
    assert all(_status_on(c, 0) == "complete_remission" for c in seed)
    at_infusion = [_mrd(c, "infusion") for c in seed]
    assert {m.method for m in at_infusion} == {"pcr"}
    words = [m.qualitative for m in at_infusion]
    assert words.count("positive_below_quantification") == 4
    assert words.count("negative") == 3


def test_day_28_all_in_cr_six_negative(seed: list[Case]) -> None:
    assert all(_status_on(c, 28) == "complete_remission" for c in seed)
    words = [_mrd(c, "day_28").qualitative for c in seed]
    assert words.count("negative") == 6
    assert words.count("positive_below_quantification") == 1


def test_median_follow_up_497_days(seed: list[Case]) -> None:
    days = []
    for case in seed:
        assert case.patient.last_follow_up is not None
        days.append(_day(case.patient.last_follow_up))
    assert statistics.median(days) == 497


def test_three_cd19_negative_relapses_two_deaths(seed: list[Case]) -> None:
    relapsed = _ids(seed, lambda c: bool(_relapses(c)))
    assert len(relapsed) == 3
    assert all(s.cd19 == "negative" for c in seed for s in _relapses(c))
    dead = _ids(seed, lambda c: c.patient.death is not None)
    assert len(dead) == 2
    assert dead < relapsed
    for case in seed:
        if case.patient.death is not None:
            assert _day(case.patient.death) > _day(_relapses(case)[0].when)


def test_the_non_responder_is_rescued_by_hsct(seed: list[Case]) -> None:
    (p05,) = [c for c in seed if _blina_responses(c) == {"no_response"}]
    relapse = _day(_relapses(p05)[0].when)
    blocks = [d for d in p05.drugs if d.agent == "chemotherapy_block_hib"]
    assert blocks
    assert all(d.intent == "salvage" and _day(d.start) > relapse for d in blocks)
    (hsct,) = [p for p in p05.procedures if p.kind == "hsct"]
    assert hsct.donor_type is not None
    assert hsct.conditioning
    assert _day(hsct.when) > max(_day(d.start) for d in blocks)
    assert p05.patient.death is None
    assert _latest_status(p05).status == "complete_remission"
    final = _latest_mrd(p05)
    assert (final.timepoint, final.qualitative) == ("follow_up", "positive_below_quantification")


def test_four_alive_in_cr_and_mrd_negative_at_last_follow_up(seed: list[Case]) -> None:
    well = _ids(
        seed,
        lambda c: (
            c.patient.death is None
            and _latest_status(c).status == "complete_remission"
            and _latest_mrd(c).qualitative == "negative"
        ),
    )
    never_relapsed = _ids(seed, lambda c: not _relapses(c))
    assert well == never_relapsed
    assert len(well) == 4


def test_every_patient_has_the_cart_pathway(seed: list[Case]) -> None:
    for case in seed:
        kinds = [p.kind for p in case.procedures]
        assert kinds.count("apheresis") == 1
        assert kinds.count("cart_infusion") == 1
        (cart,) = [p for p in case.procedures if p.kind == "cart_infusion"]
        assert (_day(cart.when), cart.product, cart.cell_dose_unit) == (
            0,
            "tisagenlecleucel",
            "10*6/kg",
        )
        assert cart.cell_dose is not None
        assert 0.1 <= cart.cell_dose <= 5
        ld = {d.agent: d for d in case.drugs if d.intent == "lymphodepletion"}
        assert set(ld) == {"fludarabine", "cyclophosphamide"}
        assert {d.dose_unit for d in ld.values()} == {"mg/m2"}
        for drug in (d for d in case.drugs if d.agent == "blinatumomab"):
            assert (drug.dose, drug.dose_unit) == (15, "ug/m2/d")


def test_patients_are_described(seed: list[Case]) -> None:
    for case in seed:
        patient = case.patient
        assert patient.sex in ("female", "male")
        assert patient.birth_date is not None
        assert patient.diagnosis_date is not None
        assert patient.age_at_diagnosis is not None
        years = (patient.diagnosis_date - patient.birth_date).days / 365.25
        assert abs(years - patient.age_at_diagnosis) < 0.1
        assert patient.disease_state in ("relapsed", "refractory", "relapsed_refractory")
        assert patient.diagnosis == "b_all"


def test_a_few_graded_crs_and_icans(seed: list[Case]) -> None:
    events = [(e.kind, e.grade) for c in seed for e in c.adverse_events]
    assert {kind for kind, _ in events} == {"crs", "icans"}
    assert 3 <= len(events) <= 10
    assert all(1 <= grade <= 5 for _, grade in events)


def test_workbook_is_what_the_generator_builds(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_seed", FIXTURES / "seed" / "make_seed.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(tmp_path / "seed.xlsx")
    built, shipped = load_workbook(tmp_path / "seed.xlsx"), load_workbook(SEED_FILE)
    assert built.sheetnames == shipped.sheetnames
    for name in shipped.sheetnames:
        rows = list(shipped[name].iter_rows(values_only=True))
        assert list(built[name].iter_rows(values_only=True)) == rows, name


def test_everything_is_labelled_synthetic() -> None:
    assert "SYNTHETIC" in (FIXTURES / "README.md").read_text()
    book = load_workbook(SEED_FILE, read_only=True)
    assert book.sheetnames[0] == "README"
    first = next(book["README"].iter_rows(values_only=True))[0]
    assert isinstance(first, str)
    assert first.startswith("SYNTHETIC")
    book.close()
    for path in FIXTURES.rglob("*.csv"):
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        note = next(k for k in rows[0] if k.lower() == "note")
        assert all("SYNTHETIC" in row[note] for row in rows), path


def test_centre_b_is_a_second_small_cohort(centre_b_cases: list[Case]) -> None:
    assert len(centre_b_cases) == 4
    assert {c.patient.centre for c in centre_b_cases} == {"centre-b"}
    for case in centre_b_cases:
        for _, events in case.event_lists():
            for event in events:
                when = getattr(event, "when", None) or event.start  # type: ignore[union-attr]
                assert when.date is not None
                assert when.day is None
        assert {m.method for m in case.mrd} == {"flow"}
        assert all(m.unit == "%" for m in case.mrd)
