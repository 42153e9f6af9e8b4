"""ReverseStream (a pull maps resources as they arrive) gives exactly what cases_from_fhir
gives for the same resources in the same order: same cases, unmapped list and other rows, in
the same order, however the resources arrived (patients after their resources, specimens
after their observations, in any batches); and anything else it is given (a resource twice,
one it was not given, a specimen left out) is mapped by cases_from_fhir itself."""

from __future__ import annotations

import random
from typing import Any

import pytest

from fhir_cart.bundle import map_cases
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import ReverseResult, ReverseStream, cases_from_fhir
from fhir_cart.records import Case

Json = dict[str, Any]
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"


def _on(resource: Json, patient: str) -> Json:
    return {**resource, "subject": {"reference": f"Patient/{patient}"}}


def _resources(ctx: MappingContext, seed_cases: list[Case]) -> list[Json]:
    """The seed cohort as a server holds it, with resources from an EHR beside it: ones that
    match no concept, malformed ones, a patient that cannot be read, resources of no
    patient, specimens used, unused and of an unknown type, one observation naming another
    patient's specimen, two patients with one study id."""
    relative = ctx.with_style("relative")
    out = [r for resources in map_cases(relative, seed_cases) for r in resources]
    seed_identifier = next(r for r in out if r["resourceType"] == "Patient")["identifier"]
    chim = {"coding": [{"system": ctx.concepts.local_system, "code": "chimerism"}]}
    blood = ctx.terminology.concept("specimen", "peripheral_blood")
    out += [
        {"resourceType": "Patient", "id": "ehr-1", "gender": "female", "birthDate": "2010-02-03"},
        {"resourceType": "Patient", "id": "ehr-2", "gender": "male"},
        {"resourceType": "Patient", "id": "ehr-bad", "birthDate": "2010-02-30"},  # no such day
        {"resourceType": "Patient", "id": "twin-a", "identifier": seed_identifier},
        {"resourceType": "Patient", "id": "twin-b", "identifier": seed_identifier},
        _on(
            {
                "resourceType": "Observation",
                "id": "hb",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "718-7", "display": "Hemoglobin"}]},
                "valueQuantity": {"value": 6.7, "unit": "g/dL", "code": "g/dL"},
                "effectiveDateTime": "2024-01-04",
            },
            "ehr-1",
        ),
        _on({"resourceType": "Observation", "id": "bad1", "code": "718-7"}, "ehr-1"),
        _on(
            {
                "resourceType": "Condition",
                "id": "c9",
                "onsetDateTime": "2020-01-01",
                "code": {"coding": [{"system": SCT, "code": "277571004"}]},
            },
            "gone",
        ),
        _on(
            {
                "resourceType": "Condition",
                "id": "c8",
                "onsetDateTime": "2020-01-01",
                "code": {"coding": [{"system": SCT, "code": "277571004"}]},
            },
            "ehr-bad",
        ),
        _on({"resourceType": "Encounter", "id": "e1"}, "ehr-2"),
        _on(
            {
                "resourceType": "Observation",
                "id": "chim1",
                "status": "final",
                "code": chim,
                "valueQuantity": {"value": 98, "code": "%"},
                "specimen": {"reference": "Specimen/s1"},
            },
            "ehr-1",
        ),
        _on(
            {
                "resourceType": "Observation",
                "id": "chim2",
                "status": "final",
                "code": chim,
                "valueQuantity": {"value": 97, "code": "%"},
                "specimen": {"reference": "Specimen/s9"},
            },
            "ehr-2",
        ),  # ehr-1's specimen
        _on(
            {
                "resourceType": "Observation",
                "id": "chim3",
                "status": "final",
                "code": chim,
                "valueQuantity": {"value": 96, "code": "%"},
                "specimen": {"reference": "Specimen/s2"},
            },
            "ehr-2",
        ),  # unknown type
        _on(
            {
                "resourceType": "Observation",
                "id": "chim4",
                "status": "final",
                "code": chim,
                "valueQuantity": {"value": 96, "code": "%"},
            },
            "twin-a",
        ),
        _on(
            {
                "resourceType": "Observation",
                "id": "chim5",
                "status": "final",
                "code": chim,
                "valueQuantity": {"value": 95, "code": "%"},
            },
            "twin-b",
        ),
        _on({"resourceType": "Specimen", "id": "s1", "type": blood}, "ehr-1"),
        _on({"resourceType": "Specimen", "id": "s9", "type": blood}, "ehr-1"),
        _on({"resourceType": "Specimen", "id": "s2", "type": {"text": "lung"}}, "ehr-2"),
        _on({"resourceType": "Specimen", "id": "s3", "type": blood}, "ehr-2"),  # unused
    ]
    return sorted(out, key=lambda r: (r["resourceType"], r["id"]))  # the cache's order


def _same(got: ReverseResult, want: ReverseResult) -> None:
    assert got.cases == want.cases
    assert got.unmapped == want.unmapped
    assert got.other == want.other


@pytest.mark.parametrize("seed", range(6))
def test_any_arrival_order_gives_what_cases_from_fhir_gives(
    ctx: MappingContext, seed_cases: list[Case], seed: int
) -> None:
    resources = _resources(ctx, seed_cases)
    want = cases_from_fhir(ctx, resources, default_centre="ehr")
    assert want.unmapped  # the data covers them
    assert want.other
    assert len(want.cases) > 10
    arrived = list(resources)
    random.Random(seed).shuffle(arrived)
    stream = ReverseStream(ctx, default_centre="ehr")
    size = 1 + seed * 7
    for start in range(0, len(arrived), size):
        stream.add(arrived[start : start + size])
    _same(stream.result(resources), want)


def test_a_subset_without_some_events_is_mapped_alike(
    ctx: MappingContext, seed_cases: list[Case]
) -> None:
    resources = _resources(ctx, seed_cases)
    stream = ReverseStream(ctx)
    stream.add(resources)
    fewer = [r for r in resources if r["id"] not in ("chim1", "hb", "c9")]
    _same(stream.result(fewer), cases_from_fhir(ctx, fewer))


@pytest.mark.parametrize("case", ["twice", "not added", "specimen left out", "patient left out"])
def test_anything_else_is_mapped_by_cases_from_fhir(
    ctx: MappingContext, seed_cases: list[Case], case: str
) -> None:
    resources = _resources(ctx, seed_cases)
    stream = ReverseStream(ctx)
    stream.add(resources)
    final = resources
    if case == "twice":  # a later version of one resource: cases_from_fhir maps that one
        changed = {**resources[-1], "type": {"text": "changed"}}
        stream.add([changed])
        final = [*resources[:-1], changed]
    elif case == "not added":
        final = [*resources, {"resourceType": "Patient", "id": "late", "gender": "male"}]
    elif case == "specimen left out":
        final = [r for r in resources if r["id"] != "s1"]
    else:
        final = [r for r in resources if r["id"] != "ehr-1"]
    _same(stream.result(final), cases_from_fhir(ctx, final))
