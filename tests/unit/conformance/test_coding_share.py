"""The share of clinical CodeableConcepts without a standard code (issue 18, item 5):
anchor codes inside time extensions are not counted; a standard coding beside an own one
makes the concept standard; a text-only concept has none."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from fhir_cart.conformance.codings import (
    codeable_concepts,
    unverified_codings,
    without_standard_code,
    without_standard_code_by_code,
)

OWN = "https://fhir-cart.dev/fhir/CodeSystem/case-series"
SNOMED = "http://snomed.info/sct"
ROOT = Path(__file__).resolve().parents[3]


def _own(code: str) -> dict[str, object]:
    return {"coding": [{"system": OWN, "code": code}], "text": code}


RESOURCES = [
    {
        "resourceType": "Observation",
        "code": _own("mrd"),  # own only: without
        "valueCodeableConcept": {  # standard beside own: standard
            "coding": [{"system": SNOMED, "code": "260385009"}, {"system": OWN, "code": "x"}]
        },
        "valueQuantity": {"value": 1, "system": "http://unitsofmeasure.org", "code": "%"},
        "_effectiveDateTime": {
            "extension": [
                {
                    "url": "https://fhir-cart.dev/fhir/StructureDefinition/relative-day",
                    "extension": [
                        {"url": "day", "valueInteger": 28},
                        {"url": "anchor", "valueCodeableConcept": _own("cart-infusion")},
                    ],
                }
            ]
        },
    },
    {
        "resourceType": "Procedure",
        "code": {"coding": [{"system": SNOMED, "code": "1"}]},
        "usedCode": [{"text": "ACAD-CAR19"}],
    },  # text only: without
]


def test_counts_clinical_concepts_not_anchors() -> None:
    assert without_standard_code(RESOURCES, OWN) == (2, 4)
    assert without_standard_code(RESOURCES[:1], OWN) == (1, 2)  # own beside standard: standard
    assert without_standard_code(RESOURCES[1:], OWN) == (1, 2)  # text only: without
    texts = [c.get("text") for c in codeable_concepts(RESOURCES)]
    assert "cart-infusion" not in texts
    assert "ACAD-CAR19" in texts


def test_lists_what_the_concepts_without_a_standard_code_carry() -> None:
    assert without_standard_code_by_code(RESOURCES, OWN) == {"mrd": 1, "text: ACAD-CAR19": 1}
    unverified = frozenset({(SNOMED, "1")})
    found = without_standard_code_by_code(RESOURCES, OWN, unverified)
    assert found == {"mrd": 1, "text: ACAD-CAR19": 1, "1": 1}


TARGETS = {"seed": 0.10, "hsct": 0.15, "adult": 0.15, "lymphoma": 0.15, "myeloma": 0.15}
NOT_MET = {"seed": 53, "hsct": 63, "adult": 82}
"""Fixtures still above their target (issue 18 item 5): at most this many concepts without a
standard code, so the share cannot grow unnoticed; docs/library-coverage.md says which
concepts keep them up and why no code was found. Lower a figure (or move the fixture out)
when codes are added."""


@pytest.mark.slow
def test_each_fixture_meets_its_target_or_does_not_grow() -> None:
    script = runpy.run_path(str(ROOT / "scripts" / "coding-share.py"), run_name="coding_share")
    figures = script["shares"]()
    assert set(figures) == set(TARGETS)
    for name, (without, concepts, _, by_code) in figures.items():
        if name in NOT_MET:
            assert without <= NOT_MET[name], (name, by_code.most_common(8))
            assert without / concepts > TARGETS[name], f"{name} meets its target: move it out"
        else:
            assert without / concepts <= TARGETS[name], (name, by_code.most_common(8))


@pytest.mark.slow
def test_the_script_reports_each_fixture(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(ROOT / "scripts" / "coding-share.py"), run_name="__main__")
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert [line.split(":")[0] for line in lines] == [
        "seed",
        "hsct",
        "adult",
        "lymphoma",
        "myeloma",
    ]
    assert all("clinical CodeableConcepts without a standard code" in line for line in lines)


def test_an_unverified_standard_code_is_not_counted_as_standard() -> None:
    """A standard coding marked ``verified: false`` (not read in a published artefact) does
    not make a concept standard; the terminology's unverified codings are found by system."""
    from fhir_cart.library import Library

    procedure = RESOURCES[1]
    assert without_standard_code([procedure], OWN) == (1, 2)
    assert without_standard_code([procedure], OWN, frozenset({(SNOMED, "1")})) == (2, 2)
    data = Library.default().concepts().terminology.data
    found = unverified_codings(data.concepts, data.systems)
    assert (
        "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
        "C8644",
    ) in found  # read_only, unverified
    assert (
        "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
        "C143394",
    ) not in found  # verified
