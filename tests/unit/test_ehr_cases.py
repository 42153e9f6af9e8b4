"""The hostile EHR cases (fixtures/ehr/*.json, format in its README) mapped offline: every
resource of every file lands where its expectation says, with what it says. The same files
and the same check run through real servers in tests/integration."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import ReverseResult, ReverseStream, cases_from_fhir
from tests.ehr_cases import EhrCase, check, file_problems, load_cases

CASES = load_cases()


def test_there_are_cases() -> None:
    assert sum(len(c.resources) for c in CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_resource_has_an_expectation(case: EhrCase) -> None:
    assert file_problems(case) == []


def test_resource_ids_are_unique_across_files() -> None:
    keys = [f"{r['resourceType']}/{r['id']}" for c in CASES for r in c.resources]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_maps_as_expected(case: EhrCase, ctx: MappingContext) -> None:
    result = cases_from_fhir(ctx, copy.deepcopy(case.resources))
    assert check(result, case, ctx) == []


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_maps_the_same_as_it_arrives(case: EhrCase, ctx: MappingContext) -> None:
    """As a pull maps them: resources one by one, patients last."""
    resources = copy.deepcopy(case.resources)
    ordered = [r for r in resources if r["resourceType"] != "Patient"] + [
        r for r in resources if r["resourceType"] == "Patient"
    ]
    stream = ReverseStream(ctx)
    for resource in ordered:
        stream.add([resource])
    assert check(stream.result(ordered), case, ctx) == []


# -- the harness itself tells right from wrong ----------------------------------------------


def _case(tmp_path: Path, resources: list[dict[str, object]], expect: dict[str, object]) -> EhrCase:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"about": "t", "resources": resources, "expect": expect}))
    return load_cases(tmp_path)[0]


PATIENT = {"resourceType": "Patient", "id": "h-p1", "gender": "female", "birthDate": "2012-03-04"}
COND = {
    "resourceType": "Condition",
    "id": "h-c1",
    "subject": {"reference": "Patient/h-p1"},
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "277571004"}]},
    "onsetDateTime": "2019-05-02",
}


def test_check_reports_each_kind_of_mismatch(tmp_path: Path, ctx: MappingContext) -> None:
    case = _case(
        tmp_path,
        [PATIENT, COND],
        {
            "Patient/h-p1": {"in": "patients", "sex": "male"},
            "Condition/h-c1": {
                "in": "events",
                "concept": "diagnosis",
                "code": "aml",
                "date": "2019-05-02",
            },
        },
    )
    problems = check(cases_from_fhir(ctx, case.resources), case, ctx)
    assert problems == [
        "Patient/h-p1: sex is 'female', expected 'male'",
        "Condition/h-c1: code is 'b_all', expected 'aml'",
    ]


def test_check_finds_a_resource_in_the_wrong_place(tmp_path: Path, ctx: MappingContext) -> None:
    case = _case(
        tmp_path,
        [PATIENT, COND],
        {"Patient/h-p1": {"in": "patients"}, "Condition/h-c1": {"in": "excluded"}},
    )
    problems = check(cases_from_fhir(ctx, case.resources), case, ctx)
    assert problems == ["Condition/h-c1: not in excluded (found in neither)"]
    empty = check(ReverseResult(), case, ctx)
    assert any("is not in the cases" in p for p in empty)


def test_check_refuses_unknown_keys_and_missing_expectations(tmp_path: Path) -> None:
    case = _case(tmp_path, [PATIENT, COND], {"Patient/h-p1": {"in": "patients", "colour": "x"}})
    assert file_problems(case) == [
        "Condition/h-c1: no expectation",
        "Patient/h-p1: key 'colour' is not checked for in=patients (known: ['birth_date', 'sex'])",
    ]
