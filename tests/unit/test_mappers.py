"""Mappers: valid FHIR (two independent checks), lossless both ways, robust on EHR data."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings

from fhir_cart.bundle import map_cases, transaction_bundles
from fhir_cart.errors import TerminologyError
from fhir_cart.mappers.context import MappingContext, mapping_context
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.mappers.to_fhir import case_to_fhir
from fhir_cart.records import Case
from fhir_cart.terminology import load_terminology
from tests.conftest import MAPPINGS, ROOT
from tests.fhir_schema import SchemaChecker
from tests.strategies import cases as case_strategy

EVENT_FIELDS = ("drugs", "procedures", "mrd", "statuses", "adverse_events")


def normalise(case: Case) -> Case:
    """Events in event-id order: the order of rows carries no information."""
    update = {f: tuple(sorted(getattr(case, f), key=lambda e: e.event_id)) for f in EVENT_FIELDS}
    return case.model_copy(update=update)


@pytest.fixture(scope="module")
def schema(fhir_schema_path: Path) -> SchemaChecker:
    return SchemaChecker(fhir_schema_path)


def _validate_fhir_resources(resource: dict[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_seed_cohort_is_valid_r4_by_both_checks(
    ctx: MappingContext, seed_cases: list[Case], schema: SchemaChecker
) -> None:
    resources = [r for c in seed_cases for r in case_to_fhir(ctx, c)]
    assert len(resources) > 7 * 5
    problems = [e for r in resources for e in schema.errors(r)]
    assert problems == []
    for resource in resources:
        _validate_fhir_resources(resource)


@pytest.mark.parametrize("style", ["urn", "relative"])
def test_seed_and_centre_b_round_trip(
    ctx: MappingContext, seed_cases: list[Case], centre_b_cases: list[Case], style: str
) -> None:
    styled = ctx.with_style(style)  # type: ignore[arg-type]
    for cohort in (seed_cases, centre_b_cases):
        resources = [r for c in cohort for r in case_to_fhir(styled, c)]
        result = cases_from_fhir(ctx, resources)
        assert result.unmapped == []
        assert sorted(result.cases, key=lambda c: c.patient.study_id) == sorted(
            (normalise(c) for c in cohort), key=lambda c: c.patient.study_id
        )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=case_strategy())
def test_round_trip_record_fhir_record_is_identity(case: Case) -> None:
    ctx = _ctx()
    result = cases_from_fhir(ctx, case_to_fhir(ctx, case))
    assert result.unmapped == []
    assert result.cases == [normalise(case)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=case_strategy())
def test_generated_resources_are_valid_r4(case: Case) -> None:
    ctx = _ctx()
    checker = _checker()
    for resource in case_to_fhir(ctx, case):
        assert checker.errors(resource) == []
        _validate_fhir_resources(resource)


@settings(max_examples=60, deadline=None)
@given(case=case_strategy())
def test_round_trip_fhir_record_fhir_is_identity(case: Case) -> None:
    ctx = _ctx()
    first = sorted(case_to_fhir(ctx, case), key=lambda r: r["id"])
    again = cases_from_fhir(ctx, first).cases[0]
    second = sorted(case_to_fhir(ctx, again), key=lambda r: r["id"])
    assert first == second


_CTX: list[MappingContext] = []
_CHECKER: list[SchemaChecker] = []


def _ctx() -> MappingContext:
    if not _CTX:
        terms = load_terminology(MAPPINGS / "terminology.yaml", as_of=dt.date(2026, 1, 1))
        _CTX.append(mapping_context(terminology=terms))
    return _CTX[0]


def _checker() -> SchemaChecker:
    if not _CHECKER:
        _CHECKER.append(SchemaChecker(ROOT / ".cache" / "fhir.schema.json"))
    return _CHECKER[0]


def test_bundle_references_resolve_inside_the_bundle(
    ctx: MappingContext, seed_cases: list[Case]
) -> None:
    for bundle in transaction_bundles(map_cases(ctx, seed_cases), size=30):
        get_fhir_model_class("Bundle").model_validate(bundle)
        full_urls = {e["fullUrl"] for e in bundle["entry"]}
        for entry in bundle["entry"]:
            for ref in _references(entry["resource"]):
                if ref.startswith("#"):
                    contained = {"#" + c["id"] for c in entry["resource"].get("contained", [])}
                    assert ref in contained
                else:
                    assert ref in full_urls, f"{ref} does not resolve in the bundle"


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [r for v in node.values() for r in _references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _references(v)]
    return []


def test_bundles_keep_each_patient_together_and_respect_size(
    ctx: MappingContext, seed_cases: list[Case]
) -> None:
    per_patient = list(map_cases(ctx, seed_cases))
    bundles = list(transaction_bundles(per_patient, size=40))
    assert sum(len(b["entry"]) for b in bundles) == sum(len(p) for p in per_patient)
    for bundle in bundles:
        assert len(bundle["entry"]) <= 40
    owner = {}
    for number, bundle in enumerate(bundles):
        for entry in bundle["entry"]:
            subject = entry["resource"].get("subject", {}).get("reference", entry["fullUrl"])
            assert owner.setdefault(subject, number) == number


def test_entries_are_conditional_on_the_business_identifier(
    ctx: MappingContext, seed_cases: list[Case]
) -> None:
    bundle = next(transaction_bundles(map_cases(ctx, seed_cases[:1]), size=500))
    methods = {e["resource"]["resourceType"]: e["request"] for e in bundle["entry"]}
    assert methods["Patient"]["method"] == "PUT"
    assert methods["Patient"]["url"].startswith("Patient?identifier=https://fhir-cart.dev/")
    assert "%7CP01" in methods["Patient"]["url"]
    assert methods["AdverseEvent"]["url"].startswith("AdverseEvent/")
    created = next(transaction_bundles(map_cases(ctx, seed_cases[:1]), mode="create"))
    request = created["entry"][0]["request"]
    assert request["method"] == "POST"
    assert request["ifNoneExist"].startswith("identifier=")


def test_unknown_codes_and_orphans_are_listed_not_dropped(ctx: MappingContext) -> None:
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": "ehr-1", "gender": "female"},
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": "Patient/ehr-1"},
        },
        {
            "resourceType": "Procedure",
            "id": "p1",
            "status": "completed",
            "code": {"text": "Apheresis (leukapheresis for CAR-T manufacturing)"},
            "subject": {"reference": "Patient/ehr-1"},
            "performedDateTime": "2021-03",
        },
        {
            "resourceType": "Procedure",
            "id": "p2",
            "status": "completed",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "127788007"}]},
            "subject": {"reference": "Patient/ehr-1"},
            "performedDateTime": "2021-03-04T10:00:00Z",
        },
        {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/ehr-1"}},
        {"resourceType": "Condition", "id": "c9", "subject": {"reference": "Patient/gone"}},
    ]
    result = cases_from_fhir(ctx, resources, default_centre="ehr")
    reasons = {u.reference: u.reason for u in result.unmapped}
    assert set(reasons) == {"Observation/o1", "Procedure/p1", "Encounter/e1", "Condition/c9"}
    assert "not one fhir_cart maps" in reasons["Observation/o1"]
    assert "partial date" in reasons["Procedure/p1"]
    assert "references no patient" in reasons["Condition/c9"]
    (case,) = result.cases
    assert case.patient.study_id == "ehr-1"
    assert case.patient.centre == "ehr"
    (proc,) = case.procedures
    assert proc.kind == "apheresis"
    assert proc.event_id == "procedure-p2"
    assert proc.when.date == dt.date(2021, 3, 4)
    assert len(result.cases) + len(result.unmapped) + 1 == len(resources)  # + the mapped p2


def test_unverified_code_is_reported_and_refused_under_strict(seed_cases: list[Case]) -> None:
    ctx = mapping_context()
    case_to_fhir(ctx, seed_cases[0])
    assert ("procedure", "cart_infusion", "C126102") in ctx.terminology.unverified_used
    strict = mapping_context(strict=True)
    with pytest.raises(TerminologyError, match="C126102"):
        case_to_fhir(strict, seed_cases[0])


def test_atc_code_follows_its_dated_history() -> None:
    old = load_terminology(MAPPINGS / "terminology.yaml", as_of=dt.date(2021, 6, 1))
    new = load_terminology(MAPPINGS / "terminology.yaml", as_of=dt.date(2023, 6, 1))
    codes_old = {c["code"] for c in old.concept("agent", "blinatumomab")["coding"]}
    codes_new = {c["code"] for c in new.concept("agent", "blinatumomab")["coding"]}
    assert "L01XC19" in codes_old
    assert "L01FX07" not in codes_old
    assert "L01FX07" in codes_new
    assert "L01XC19" not in codes_new
    # both are understood when reading
    atc = "http://www.whocc.no/atc"
    assert new.word("agent", {"coding": [{"system": atc, "code": "L01XC19"}]}) == "blinatumomab"


def test_relapsed_and_relapsed_refractory_are_told_apart(ctx: MappingContext) -> None:
    terms = ctx.terminology
    for word in ("relapsed", "refractory", "relapsed_refractory"):
        assert terms.word("diagnosis_state", terms.concept("diagnosis_state", word)) == word


def test_own_code_system_is_valid_and_complete(
    ctx: MappingContext, seed_cases: list[Case], schema: SchemaChecker
) -> None:
    resource = ctx.terminology.code_system_resource()
    assert schema.errors(resource) == []
    _validate_fhir_resources(resource)
    defined = {c["code"] for c in resource["concept"]}
    used = {
        coding["code"]
        for case in seed_cases
        for r in case_to_fhir(ctx, case)
        for coding in _codings(r)
        if coding["system"] == resource["url"]
    }
    assert used
    assert used <= defined


def _codings(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        own = [node] if "system" in node and "code" in node else []
        return own + [c for v in node.values() for c in _codings(v)]
    if isinstance(node, list):
        return [c for v in node for c in _codings(v)]
    return []


def test_mappers_hold_no_literal_codes() -> None:
    sources = (ROOT / "src" / "fhir_cart" / "mappers").glob("*.py")
    pattern = re.compile(
        r"""["'](\d{6,}|\d{3,}-\d|[A-Z]\d{2}\.\d+|L0\d[A-Z]{2}\d{2}|C\d{5,})["']"""
    )
    for path in sources:
        text = path.read_text()
        assert not pattern.findall(text), f"literal code in {path.name}"
        assert "snomed.info" not in text
        assert "loinc.org" not in text
