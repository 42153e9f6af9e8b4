"""Conflicts are disagreements (issue 19): a value or detail one centre lacks is
completeness, counted per centre, never a conflict; a conflict says which rule chose."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from fhir_cart.records import Case, Value
from fhir_cart.registry.build import build_registry
from fhir_cart.registry.merge import merge_patient
from tests.registry_helpers import KEY, definition, event, patient, reader_of, three_centres

DAY = dt.date(2019, 3, 7)


def infusion(date: dt.date | None, **attributes: object) -> object:
    return event("cart", "cart_infusion", date, attributes=attributes)


def merged(tmp_path: Path, *members: Case):  # type: ignore[no-untyped-def]
    return merge_patient("r1", members, definition(tmp_path))


def test_a_detail_one_centre_lacks_is_no_conflict(tmp_path: Path) -> None:
    result = merged(
        tmp_path,
        patient(
            "berlin", "B", infusion(DAY, cell_dose=2.5), sex="female", attributes={"weight_kg": 30}
        ),
        patient("london", "L", infusion(DAY), sex="unknown"),
        patient("rotterdam", "R", infusion(None, cell_dose=2.5)),
    )
    assert result.conflicts == []
    assert sorted(result.gaps) == [
        ("london", "attributes.weight_kg"),
        ("london", "cart_infusion"),
        ("london", "sex"),
        ("rotterdam", "attributes.weight_kg"),
        ("rotterdam", "cart_infusion"),
        ("rotterdam", "sex"),
    ]


def test_a_fact_both_centres_state_differently_is_a_conflict(tmp_path: Path) -> None:
    """London lacks the dose but states another date: a disagreement, whatever it lacks."""
    result = merged(
        tmp_path,
        patient("berlin", "B", infusion(DAY, cell_dose=2.5), sex="female"),
        patient("london", "L", infusion(DAY + dt.timedelta(days=2)), sex="male"),
    )
    assert sorted((c.field, c.rule, c.chosen) for c in result.conflicts) == [
        ("cart_infusion", "prefer treating", "london"),
        ("sex", "prefer treating", "london"),
    ]


def test_a_different_value_of_a_detail_is_a_conflict(tmp_path: Path) -> None:
    result = merged(
        tmp_path,
        patient("berlin", "B", infusion(DAY, cell_dose=2.5)),
        patient("rotterdam", "R", infusion(DAY, cell_dose=3.1)),
    )
    assert [c.field for c in result.conflicts] == ["cart_infusion"]


def test_a_different_count_of_a_once_only_fact_is_a_conflict(tmp_path: Path) -> None:
    second = event("cart-2", "cart_infusion", DAY + dt.timedelta(days=40))
    result = merged(
        tmp_path,
        patient("berlin", "B", infusion(DAY)),
        patient("rotterdam", "R", infusion(DAY), second),
    )
    assert [c.field for c in result.conflicts] == ["cart_infusion"]


def test_value_missing_at_one_centre_is_no_conflict(tmp_path: Path) -> None:
    coded = event("dx", "diagnosis", DAY, value=Value(code="b_all"))
    bare = event("dx", "diagnosis", DAY)
    other = event("dx", "diagnosis", DAY, value=Value(code="aml"))
    assert (
        merged(tmp_path, patient("berlin", "B", coded), patient("london", "L", bare)).conflicts
        == []
    )
    assert (
        len(
            merged(tmp_path, patient("berlin", "B", coded), patient("london", "L", other)).conflicts
        )
        == 1
    )


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_quality_counts_what_a_centre_lacks_that_a_linked_centre_has(tmp_path: Path) -> None:
    cases = three_centres()
    # Ben at Rotterdam: no sex recorded (Berlin has one)
    ben = cases["rotterdam"][0]
    cases["rotterdam"][0] = ben.model_copy(
        update={"patient": ben.patient.model_copy(update={"sex": None})}
    )
    result = build_registry(
        definition(tmp_path), tmp_path / "out", key=KEY, reader=reader_of(cases)
    )
    assert result.registry is not None
    assert {r["field"] for r in result.registry.conflicts} == {"diagnosis", "cart_infusion"}
    gaps = result.registry.quality["rotterdam"]["missing_where_a_linked_centre_has"]
    assert gaps == {"sex": 1}
    # Anna was not infused at Berlin, which referred her; London infused her
    berlin = result.registry.quality["berlin"]["missing_where_a_linked_centre_has"]
    assert berlin == {"cart_infusion": 1}
