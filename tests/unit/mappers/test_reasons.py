"""Purpose separate from drug (issue 18, item 4): why a drug was given is its own value; the
mCODE cancer-medication profile and reasonReference follow the reason, not the drug."""

from __future__ import annotations

from typing import Any

from fhir_cart.mappers.context import mapping_context
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.mappers.to_fhir import case_to_fhir
from fhir_cart.records import Case, Event, PatientRecord, Value

CANCER_PROFILE = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-related-medication-administration"


def _case() -> Case:
    def drug(event_id: str, concept: str, reason: str | None = None) -> Event:
        attributes = {"reason": reason} if reason else {}
        return Event(event_id=event_id, concept=concept, attributes=attributes)

    return Case(
        patient=PatientRecord(study_id="P1", centre="test"),
        events=(
            Event(event_id="dx", concept="diagnosis", value=Value(code="b_all")),
            drug("ptcy", "cyclophosphamide", "gvhd_prophylaxis"),
            drug("csa", "ciclosporin", "gvhd_prophylaxis"),
            drug("ld", "cyclophosphamide", "lymphodepletion"),
            drug("toci", "tocilizumab", "crs_treatment"),
            drug("steroids", "corticosteroids"),
            drug("flu", "fludarabine"),
            drug("blina", "blinatumomab", "cancer_treatment"),
        ),
    )


def _by_event(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for resource in resources:
        if resource["resourceType"] == "MedicationAdministration":
            out[resource["identifier"][0]["value"].split("/")[1]] = resource
    return out


def test_the_profile_and_reason_reference_follow_the_reason_not_the_drug() -> None:
    found = _by_event(case_to_fhir(mapping_context(ref_style="relative"), _case()))
    claims = {k: CANCER_PROFILE in r.get("meta", {}).get("profile", []) for k, r in found.items()}
    points = {k: "reasonReference" in r for k, r in found.items()}
    # post-transplant cyclophosphamide and ciclosporin in the same role: neither is cancer-related
    about_cancer = {
        "ptcy": False,
        "csa": False,
        "ld": True,
        "toci": False,
        "steroids": False,
        "flu": True,
        "blina": True,
    }
    assert claims == about_cancer
    assert points == about_cancer
    reasons = {
        k: [c["coding"][0]["code"] for c in r.get("reasonCode", [])] for k, r in found.items()
    }
    assert reasons["ptcy"] == reasons["csa"] == ["reason-gvhd-prophylaxis"]
    assert reasons["toci"] == ["reason-crs-treatment"]
    assert reasons["steroids"] == reasons["flu"] == []


def test_the_reason_comes_back_from_fhir() -> None:
    ctx = mapping_context(ref_style="relative")
    case = _case()
    back = cases_from_fhir(ctx, case_to_fhir(ctx, case))
    reasons = {e.event_id: e.attributes.get("reason") for e in back.cases[0].events}
    assert reasons == {e.event_id: e.attributes.get("reason") for e in case.events}
