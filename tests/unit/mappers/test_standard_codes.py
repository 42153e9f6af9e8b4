"""Standard codes written beside the own ones (issue 18 item 5): each is written, a resource
that carries only the standard code is read back as the same word, and the own code stays
beside it (data written before carry only that)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fhir_cart.library import shipped_folder
from fhir_cart.library.terminology import load_terminology
from fhir_cart.mappers.context import MappingContext, mapping_context
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.mappers.to_fhir import case_to_fhir
from fhir_cart.records import Case, Event, PatientRecord, Value, When

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
ATC = "http://www.whocc.no/atc"
OWN = "https://fhir-cart.dev/fhir/CodeSystem/case-series"


def _ctx(day: dt.date = dt.date(2026, 1, 1)) -> MappingContext:
    terms = load_terminology(shipped_folder() / "terminology.yaml", as_of=day)
    return mapping_context(terminology=terms, ref_style="relative")


def _case(*events: Event) -> Case:
    return Case(patient=PatientRecord(study_id="P1", centre="c1"), events=events)


def _codes(codeable: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in codeable["coding"]}


def _alone(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _of_type(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == kind]


def test_gvhd_events_carry_snomed_and_icd10cm_beside_the_own_code() -> None:
    ctx = _ctx()
    day = When(date=dt.date(2024, 3, 1))
    case = _case(
        Event(event_id="a", concept="acute_gvhd", when=day, attributes={"grade": 2}),
        Event(event_id="c", concept="chronic_gvhd", when=day),
    )
    events = [_codes(r["event"]) for r in _of_type(case_to_fhir(ctx, case), "AdverseEvent")]
    assert {(SNOMED, "402355000"), (ICD10CM, "D89.810"), (OWN, "acute-gvhd")} in events
    assert {(SNOMED, "402356004"), (ICD10CM, "D89.811"), (OWN, "chronic-gvhd")} in events
    kinds = ("adverse_event",)
    assert ctx.concepts.classify(_alone(SNOMED, "402355000"), kinds) == "acute_gvhd"
    assert ctx.concepts.classify(_alone(ICD10CM, "D89.811"), kinds) == "chronic_gvhd"
    assert ctx.concepts.classify(_alone(OWN, "acute-gvhd"), kinds) == "acute_gvhd"


def test_ctcae_codes_of_infection_and_tumour_lysis_read_back() -> None:
    ctx = _ctx()
    kinds = ("adverse_event",)
    infection = ctx.concepts.codeable("infection")
    assert (NCIT, "C143581") in _codes(infection)  # Infections and infestations - Other
    assert ctx.concepts.classify(_alone(NCIT, "C143581"), kinds) == "infection"
    assert (NCIT, "C146688") in _codes(ctx.concepts.codeable("tumour_lysis_syndrome"))
    assert ctx.concepts.classify(_alone(NCIT, "C146688"), kinds) == "tumour_lysis_syndrome"


def test_myeloma_diagnosis_is_written_with_snomed_and_read_back_from_it() -> None:
    ctx = _ctx()
    case = _case(Event(event_id="dx", concept="diagnosis", value=Value(code="multiple_myeloma")))
    resources = case_to_fhir(ctx, case)
    (condition,) = _of_type(resources, "Condition")
    assert {(SNOMED, "109989006"), (OWN, "dx-mm")} <= _codes(condition["code"])
    assert not any(s == ICD10CM for s, _ in _codes(condition["code"]))  # C90.0x: a state
    assert ctx.terminology.word("diagnosis", _alone(SNOMED, "109989006")) == "multiple_myeloma"
    condition["code"] = _alone(SNOMED, "109989006")  # as another system would send it
    (read,) = cases_from_fhir(ctx, resources).cases
    assert [e.value.code for e in read.events if e.value] == ["multiple_myeloma"]


def test_gvhd_as_cause_of_death_has_its_snomed_code() -> None:
    ctx = _ctx()
    codeable = ctx.terminology.concept("death_cause", "gvhd")
    assert {(SNOMED, "234646005"), (OWN, "cause-gvhd")} <= _codes(codeable)
    assert ctx.terminology.word("death_cause", _alone(SNOMED, "234646005")) == "gvhd"


def test_cart_product_atc_codes_follow_their_dated_history() -> None:
    def codes(day: dt.date, word: str) -> set[tuple[str, str]]:
        return _codes(_ctx(day).terminology.concept("cart_product", word))

    assert (ATC, "L01XX70") in codes(dt.date(2022, 6, 1), "axicabtagene_ciloleucel")
    assert (ATC, "L01XL03") not in codes(dt.date(2022, 6, 1), "axicabtagene_ciloleucel")
    after = codes(dt.date(2023, 6, 1), "axicabtagene_ciloleucel")
    assert (ATC, "L01XL03") in after
    assert (ATC, "L01XX70") not in after
    assert (OWN, "prod-axicabtagene") in after
    expected = {
        "brexucabtagene_autoleucel": "L01XL06",
        "lisocabtagene_maraleucel": "L01XL08",
        "idecabtagene_vicleucel": "L01XL07",
        "ciltacabtagene_autoleucel": "L01XL05",
    }
    ctx = _ctx()
    for word, code in expected.items():
        assert (ATC, code) in codes(dt.date(2026, 1, 1), word)
        assert ctx.terminology.word("cart_product", _alone(ATC, code)) == word
    assert not any(s == ATC for s, _ in codes(dt.date(2026, 1, 1), "obecabtagene_autoleucel"))
