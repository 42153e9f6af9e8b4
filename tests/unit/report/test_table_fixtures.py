"""The lymphoma/CLL and myeloma CAR-T tables of issue 18 (synthetic, in the shapes of published
tables: months with "+", bands, flat and per-kg doses, response scales): each maps with no
rejected row and no lost column and reproduces its study file's numbers from the file and
from its FHIR resources read back."""

from __future__ import annotations

import pytest

from fhir_cart.library.study_mapping import load_study_mapping
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.mappers.to_fhir import case_to_fhir
from fhir_cart.records import Case
from fhir_cart.study import read_study
from fhir_cart.summary import load_study, summarise
from tests.conftest import FIXTURES, MAPPINGS

TABLES = {
    "lymphoma_cart": FIXTURES / "lymphoma_cart",
    "myeloma_cart": FIXTURES / "myeloma_cart" / "myeloma_cart.csv",
}


def table_cases(name: str) -> list[Case]:
    result = read_study(TABLES[name], load_study_mapping(MAPPINGS / "centres" / f"{name}.yaml"))
    assert result.rejects == []
    assert result.unmapped_columns == []
    return result.cases


def disagreements(cases: list[Case], name: str) -> list[tuple[str, object, object]]:
    results = summarise(cases, load_study(name))
    assert all(r.expected is not None for r in results)
    return [(r.id, r.value, r.expected) for r in results if r.value != r.expected]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_table_maps_whole_and_gives_its_numbers(name: str) -> None:
    assert disagreements(table_cases(name), name) == []


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_numbers_survive_fhir_both_ways(name: str, ctx: MappingContext) -> None:
    cases = table_cases(name)
    resources = [r for case in cases for r in case_to_fhir(ctx, case)]
    back = cases_from_fhir(ctx, resources)
    assert back.unmapped == []
    assert back.other == []
    assert disagreements(back.cases, name) == []


def test_the_lymphoma_table_keeps_months_censoring_bands_and_doses() -> None:
    cases = {c.patient.study_id: c for c in table_cases("lymphoma_cart")}
    l01, l02 = cases["L01"], cases["L02"]
    # '30+' months: alive at day 913 (30 x 30.4375), no death
    assert [e.concept for e in l01.events if e.concept in ("death", "last_follow_up")] == [
        "last_follow_up"
    ]
    follow = l01.of("last_follow_up")[0].when
    assert follow is not None
    assert (follow.day, follow.stated, follow.stated_unit) == (913, 30, "mo")
    assert l01.of("icans")[0].attributes["grade"] == "3-4"
    assert l01.of("cart_infusion")[0].attributes["cell_dose"] == 2.0
    assert l02.of("cart_infusion")[0].attributes["cell_dose_flat"] == 100.0
    assert l02.of("death")[0].when.day == 335  # type: ignore[union-attr]  # 11 months
