"""The one patient-reference parser, on every reference form the spec allows."""

from __future__ import annotations

import pytest

from fhir_cart.references import patient_id, subject_patient_id


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/p1", "p1"),
        ("Patient/p1/_history/3", "p1"),
        ("https://fhir.example/r4/Patient/p1", "p1"),
        ("https://fhir.example/r4/Patient/p1/_history/3", "p1"),
        ("Patient/A-1.b", "A-1.b"),
        ("Group/p1", None),
        ("Observation/Patient", None),
        ("urn:uuid:6f1c", None),
        ("#p1", None),
        ("p1", None),
        ("Patient/", None),
        ("Patient/p 1", None),
        ("", None),
        (None, None),
    ],
)
def test_patient_id(reference: str | None, expected: str | None) -> None:
    assert patient_id(reference) == expected


def test_subject_or_patient_element() -> None:
    assert subject_patient_id({"subject": {"reference": "Patient/p1/_history/3"}}) == "p1"
    assert subject_patient_id({"patient": {"reference": "Patient/p2"}}) == "p2"
    assert subject_patient_id({"subject": {"reference": "Group/g"}}) is None
    assert subject_patient_id({"subject": {"display": "someone"}}) is None
    assert subject_patient_id({}) is None
