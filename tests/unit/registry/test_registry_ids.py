"""Registry ids that last (issue 19): kept when records join, retired and never reused when
a patient splits, a crosswalk of every retired id."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from fhir_cart.records import Case
from fhir_cart.registry.build import build_registry
from fhir_cart.registry.ids import IdLedger, Retired, assign_ids
from fhir_cart.registry.pseudonyms import Pseudonymiser
from tests.registry_helpers import KEY, definition, diagnosis, patient, reader_of, three_centres

PSEUDONYMS = Pseudonymiser(KEY)


def test_a_record_that_joins_keeps_the_patients_id() -> None:
    """The joining record's pseudonym is the smallest: an id named after the smallest
    member (as before) would change."""
    first, ledger = assign_ids([["p5", "p7"], ["p6"]], None, PSEUDONYMS)
    again, later = assign_ids([["p1", "p5", "p7"], ["p6"]], ledger, PSEUDONYMS)
    assert again == first
    assert later.patients[first[0]] == ("p1", "p5", "p7")
    assert later.retired == {}


def test_a_record_that_leaves_does_not_change_the_id() -> None:
    first, ledger = assign_ids([["p1", "p5", "p7"]], None, PSEUDONYMS)
    again, later = assign_ids([["p5", "p7"], ["p1"]], ledger, PSEUDONYMS)
    assert again[0] != first[0]  # p1 now alone: split, so the id is retired
    assert later.retired[first[0]].reason == "split"
    kept, _ = assign_ids([["p5", "p7"]], ledger, PSEUDONYMS)
    assert kept == first  # p1 gone from the data: the rest is still the same patient


def test_a_split_retires_the_id_and_never_gives_it_again() -> None:
    first, ledger = assign_ids([["p1", "p2"]], None, PSEUDONYMS)
    split, later = assign_ids([["p1"], ["p2"]], ledger, PSEUDONYMS)
    assert first[0] not in split
    assert later.retired[first[0]] == Retired(tuple(sorted(split)), "split")
    # joined again: one of the two patients' ids is kept, never the retired one
    joined, last = assign_ids([["p1", "p2"]], later, PSEUDONYMS)
    assert joined[0] in split
    assert last.retired[first[0]].reason == "split"
    assert {r.reason for r in last.retired.values()} == {"split", "merged"}
    # and a patient of records never seen is not given it either, even when its smallest
    # record is the one the retired id was first named after
    alone, _ = assign_ids([["p1"], ["p2"]], IdLedger(later.key, {}, later.retired), PSEUDONYMS)
    assert first[0] not in alone


def test_two_patients_found_to_be_one_keep_the_larger_ones_id() -> None:
    first, ledger = assign_ids([["p1"], ["p2", "p3"]], None, PSEUDONYMS)
    merged, later = assign_ids([["p1", "p2", "p3"]], ledger, PSEUDONYMS)
    assert merged == [first[1]]
    assert later.retired == {first[0]: Retired((first[1],), "merged")}


def test_a_ledger_of_another_key_is_not_used() -> None:
    _, ledger = assign_ids([["p1", "p2"]], None, PSEUDONYMS)
    other = IdLedger("another-key", ledger.patients)
    ids, later = assign_ids([["p0", "p1", "p2"]], other, PSEUDONYMS)
    assert ids != list(ledger.patients)
    assert later.key == PSEUDONYMS.fingerprint()


def _crosswalk(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((out / "reports" / "crosswalk.csv").read_text())))


def _anna_at(cases: dict[str, list[Case]], centre: str) -> Case:
    """Anna (Berlin B-01, London L7) at one more centre, under a patient number whose
    pseudonym is smaller than both of hers."""
    numbers = (f"X{n}" for n in range(10_000))
    smallest = min(PSEUDONYMS.patient("berlin", "B-01"), PSEUDONYMS.patient("london", "L7"))
    number = next(n for n in numbers if PSEUDONYMS.patient(centre, n) < smallest)
    london = cases["london"][0]
    return london.model_copy(
        update={"patient": london.patient.model_copy(update={"centre": centre, "study_id": number})}
    )


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_build_keeps_ids_when_a_new_centre_record_joins(tmp_path: Path) -> None:
    cases = three_centres()
    registry = definition(tmp_path)
    out = tmp_path / "out"
    first = build_registry(registry, out, key=KEY, reader=reader_of(cases))
    assert first.registry is not None
    before = {tuple(m.centres): m.case.patient.study_id for m in first.registry.merged}
    cases["rotterdam"].append(_anna_at(cases, "rotterdam"))
    (tmp_path / "inputs" / "rotterdam.csv").write_text("synthetic rotterdam, Anna too\n")
    second = build_registry(registry, out, key=KEY, reader=reader_of(cases))
    assert second.registry is not None
    after = {tuple(m.centres): m.case.patient.study_id for m in second.registry.merged}
    assert after[("berlin", "london", "rotterdam")] == before[("berlin", "london")]
    assert set(after.values()) == set(before.values())
    assert _crosswalk(out) == []
    ledger = json.loads((out / "registry-ids.json").read_text())
    assert sorted(ledger["patients"]) == sorted(after.values())


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_ids_last_across_builds_into_new_folders_with_one_work_folder(tmp_path: Path) -> None:
    """The service builds each job into a new folder: the work folder's copy of the ledger
    keeps the ids (issue 19, item 4)."""
    cases = three_centres()
    registry = definition(tmp_path)
    work = tmp_path / "work"
    first = build_registry(registry, tmp_path / "job1", key=KEY, reader=reader_of(cases), work=work)
    assert first.registry is not None
    before = {tuple(m.centres): m.case.patient.study_id for m in first.registry.merged}
    assert (work / "registry-ids.json").read_bytes() == (
        tmp_path / "job1" / "registry-ids.json"
    ).read_bytes()
    cases["rotterdam"].append(_anna_at(cases, "rotterdam"))
    (tmp_path / "inputs" / "rotterdam.csv").write_text("synthetic rotterdam, Anna too\n")
    second = build_registry(
        registry, tmp_path / "job2", key=KEY, reader=reader_of(cases), work=work
    )
    assert second.registry is not None
    after = {tuple(m.centres): m.case.patient.study_id for m in second.registry.merged}
    assert after[("berlin", "london", "rotterdam")] == before[("berlin", "london")]
    assert set(after.values()) == set(before.values())


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_build_retires_the_id_of_a_patient_that_splits(tmp_path: Path) -> None:
    """Ben is linked by his national id; typed differently at Rotterdam (and with other
    dates, so nothing else links him) he is two patients: his id is retired, listed in the
    crosswalk with both successors, and neither reuses it."""
    cases = three_centres()
    registry = definition(tmp_path)
    out = tmp_path / "out"
    first = build_registry(registry, out, key=KEY, reader=reader_of(cases))
    assert first.registry is not None
    ben = next(
        m.case.patient.study_id
        for m in first.registry.merged
        if m.centres == ("berlin", "rotterdam")
    )
    rotterdam = cases["rotterdam"][0]
    cases["rotterdam"][0] = patient(
        "rotterdam",
        "R-100",
        diagnosis(dt.date(2014, 4, 4)),
        sex="male",
        birth_date=dt.date(2001, 1, 1),
        attributes={"national_id": "999"},
    )
    assert rotterdam.patient.study_id == "R-100"
    (tmp_path / "inputs" / "rotterdam.csv").write_text("synthetic rotterdam, Ben retyped\n")
    second = build_registry(registry, out, key=KEY, reader=reader_of(cases))
    assert second.registry is not None
    ids = {m.case.patient.study_id for m in second.registry.merged}
    assert ben not in ids
    rows = _crosswalk(out)
    assert {r["old_id"] for r in rows} == {ben}
    assert {r["change"] for r in rows} == {"split"}
    successors = {r["new_id"] for r in rows}
    assert len(successors) == 2
    assert successors <= ids
    assert all(KEY.decode() not in r["new_id"] and "R-100" not in r["new_id"] for r in rows)
