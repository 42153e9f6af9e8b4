"""Extensions on resources read as events (issue 18): one that no attribute reads is an
``other`` row (``ReverseResult.undeclared``, code_system ``extension``) naming the URL, the
resource, the value and the fix, which names the case: a published guide's extension
(mappings/profiles.yaml ``guide_extensions``) or an unknown one. A resource that is an
``other`` row itself gives no second row; fhir_cart's own output gives none."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cart.cli import main
from fhir_cart.mappers.context import MappingContext, mapping_context
from fhir_cart.mappers.from_fhir import (
    PatientByPatient,
    ReverseResult,
    ReverseStream,
    cases_from_fhir,
)
from fhir_cart.mappers.to_fhir import normalization_basis

Json = dict[str, Any]
MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition"
INTENT = f"{MCODE}/mcode-procedure-intent"
UNKNOWN = "https://registry.example.org/fhir/StructureDefinition/bridging-note"
RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
CURATIVE = {"coding": [{"system": "http://snomed.info/sct", "code": "373808002"}]}


@pytest.fixture(scope="module")
def ctx() -> MappingContext:
    return mapping_context()


def _resources(ctx: MappingContext) -> list[Json]:
    """A patient with a Procedure (apheresis, as mCODE's examples write intent on theirs),
    two MedicationAdministrations (one per m2 with the basis fhir_cart writes, one flat
    with a per-m2 basis its dose does not give) and an Observation no concept has."""
    subject = {"reference": "Patient/p1"}
    basis_m2 = normalization_basis(ctx, "mg/m2")
    return [
        {
            "resourceType": "Patient",
            "id": "p1",
            "extension": [{"url": RACE, "extension": [{"url": "text", "valueString": "Asian"}]}],
        },
        {
            "resourceType": "Procedure",
            "id": "pr1",
            "status": "completed",
            "subject": subject,
            "code": ctx.concepts.codeable("apheresis"),
            "performedDateTime": "2024-01-09",
            "extension": [
                {"url": INTENT, "valueCodeableConcept": CURATIVE},
                {"url": UNKNOWN, "valueString": "bridged"},
                {"url": ctx.ext("source-text"), "valueString": "leukapheresis"},
            ],
        },
        {
            "resourceType": "MedicationAdministration",
            "id": "ma-m2",
            "status": "completed",
            "subject": subject,
            "medicationCodeableConcept": ctx.concepts.codeable("fludarabine"),
            "effectiveDateTime": "2024-01-10",
            "dosage": {"dose": {"value": 30, "unit": "mg/m2", "code": "mg/m2"}},
            "extension": [basis_m2],
        },
        {
            "resourceType": "MedicationAdministration",
            "id": "ma-flat",
            "status": "completed",
            "subject": subject,
            "medicationCodeableConcept": ctx.concepts.codeable("fludarabine"),
            "effectiveDateTime": "2024-01-11",
            "dosage": {"dose": {"value": 54, "unit": "mg", "code": "mg"}},
            "extension": [copy.deepcopy(basis_m2)],
        },
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "subject": subject,
            "code": {"coding": [{"system": "http://loinc.org", "code": "0000-0"}]},
            "extension": [{"url": INTENT, "valueCodeableConcept": CURATIVE}],
        },
    ]


def _rows(result: ReverseResult) -> list[tuple[Any, ...]]:
    return [
        (r["study_id"], r["resource_type"], r["resource_id"], r["code_system"], r["code"])
        for r in result.undeclared
    ]


EXPECTED = [
    ("p1", "Patient", "p1", "extension", RACE),
    ("p1", "Procedure", "pr1", "extension", INTENT),
    ("p1", "Procedure", "pr1", "extension", UNKNOWN),
    (
        "p1",
        "MedicationAdministration",
        "ma-flat",
        "extension",
        f"{MCODE}/mcode-normalization-basis",
    ),
]


def test_unread_event_extensions_are_rows_once(ctx: MappingContext) -> None:
    result = cases_from_fhir(ctx, _resources(ctx))
    ((case),) = result.cases
    assert sorted(e.event_id for e in case.events) == [
        "medication-administration-ma-flat",
        "medication-administration-ma-m2",
        "procedure-pr1",
    ]
    assert _rows(result) == EXPECTED
    # the Observation is an other row itself: its extension is not a second row
    assert [(r["resource_type"], r["resource_id"]) for r in result.other] == [("Observation", "o1")]
    assert result.undeclared[1]["value"] == orjson.dumps(CURATIVE).decode()
    assert result.undeclared[2]["value"] == "bridged"
    assert result.undeclared[0]["value"] == '[{"url":"text","valueString":"Asian"}]'


def test_the_fix_names_the_case(ctx: MappingContext) -> None:
    """A guide's extension with a value: its guide and an attribute with its
    ``extension_url``; a guide's with nested parts: that an attribute cannot hold it; an
    unknown one: the study's library."""
    race, intent, unknown, basis = (
        r["reason"] for r in cases_from_fhir(ctx, _resources(ctx)).undeclared
    )
    assert f"extension {INTENT} of Procedure/pr1 not read: an extension of mCODE" in intent
    assert (
        "declare a coded attribute (`type: coded`, its `value_set` holding the codes it " in intent
    )
    assert f"carries) with `extension_url: {INTENT}`" in intent
    assert "give the study's library" not in intent
    assert "an extension of US Core" in race
    assert "nested parts and no single value" in race
    assert "of Procedure/pr1 not read: an extension of no guide fhir_cart knows" in unknown
    assert "give the study's library (--mapping M naming it with `library:`" in unknown
    assert "of MedicationAdministration/ma-flat not read: an extension of mCODE" in basis


def test_stream_and_patient_by_patient_give_the_same_rows(ctx: MappingContext) -> None:
    resources = _resources(ctx)
    stream = ReverseStream(ctx)
    for resource in reversed(resources):  # events before their patient: they wait
        stream.add([resource])
    assert _rows(stream.result(resources)) == _rows(cases_from_fhir(ctx, resources))
    one = PatientByPatient(ctx, {}, {})
    result = one.patient(resources[0], resources[1:])
    assert _rows(result) == EXPECTED


def test_a_case_that_fails_gives_no_extension_rows(ctx: MappingContext) -> None:
    """Two procedures whose ids make one event id: no valid case, the Patient is an other
    row itself, and neither its nor its events' extensions are rows besides."""
    resources = _resources(ctx)
    twin = copy.deepcopy(resources[1])
    resources[1]["id"], twin["id"] = "pr 1", "pr-1"  # both event id procedure-pr-1
    result = cases_from_fhir(ctx, [*resources, twin])
    assert result.cases == []
    assert ("Patient", "p1") in [(r["resource_type"], r["resource_id"]) for r in result.other]
    assert result.undeclared == []


def test_tables_prints_the_count_of_event_extension_rows(
    ctx: MappingContext, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ndjson"
    folder.mkdir()
    by_type: dict[str, list[bytes]] = {}
    for resource in _resources(ctx):
        by_type.setdefault(resource["resourceType"], []).append(orjson.dumps(resource))
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "tables"
    assert main(["tables", str(folder), "-o", str(out)]) == 0
    printed = " ".join(capsys.readouterr().err.split())
    assert "4 attribute values not in the concept library are rows of the `other` table" in printed
    assert "a published guide's extension (mCODE, US Core, IPS) needs an attribute" in printed
    other = (out / "other.csv").read_text()
    assert other.count(",extension,") == 4


@pytest.mark.parametrize(
    ("holder", "expected"),
    [
        ({"valueString": "x"}, "declare an attribute of `type: text` with `extension_url: "),
        ({"valueQuantity": {"value": 1}}, "declare an attribute of `type: quantity` (with its"),
        ({"valueInteger": 3}, "declare an attribute of `type: integer` with"),
        ({"valueCoding": {"code": "a"}}, "its valueCoding is of a type no attribute holds"),
    ],
)
def test_the_fix_names_the_attribute_that_can_hold_the_value(
    ctx: MappingContext, holder: Json, expected: str
) -> None:
    from fhir_cart.mappers.from_elements import unread_fix

    assert expected in unread_fix(ctx, {"url": INTENT, **holder})


FIX_LIBRARY = f"""\
attributes:
  procedure_intent:
    label: Procedure intent (mCODE)
    type: coded
    value_set: mcode_intent
    extension_url: {INTENT}
value_sets:
  mcode_intent:
    curative:
      text: Curative
      codings:
        - {{system: snomed, code: "373808002", display: Curative - procedure intent,
           source: the mCODE 4.0.0 examples' procedure intent, verified: false}}
"""


def test_the_fix_the_row_names_reads_the_extension_as_a_column(
    ctx: MappingContext, tmp_path: Path
) -> None:
    """The advice is true: a coded attribute with the guide extension's URL, in the study's
    library, reads it back as a column, and it is no longer a row."""
    folder = tmp_path / "ndjson"
    folder.mkdir()
    by_type: dict[str, list[bytes]] = {}
    for resource in _resources(ctx):
        by_type.setdefault(resource["resourceType"], []).append(orjson.dumps(resource))
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "lib.yaml").write_text(FIX_LIBRARY, encoding="utf-8")
    out = tmp_path / "tables"
    assert (
        main(["tables", str(folder), "-o", str(out), "--library", str(tmp_path / "lib.yaml")]) == 0
    )
    with (out / "events.csv").open(encoding="utf-8") as handle:
        events = {row["event_id"]: row for row in csv.DictReader(handle)}
    assert events["procedure-pr1"]["procedure_intent"] == "curative"
    assert INTENT not in (out / "other.csv").read_text()


def test_library_check_says_the_attribute_reads_a_guides_extension(tmp_path: Path) -> None:
    from fhir_cart.library import Library
    from fhir_cart.library.study_library import check_library_file

    (tmp_path / "lib.yaml").write_text(FIX_LIBRARY, encoding="utf-8")
    report = check_library_file(tmp_path / "lib.yaml", Library.default())
    assert report.problems == []
    assert (
        f"attribute procedure_intent (coded): extension {INTENT} (mCODE's: read and written "
        "as is, not published)"
    ) in report.notes
