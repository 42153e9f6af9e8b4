"""Golden files: each resource kind's exact FHIR output, compared as parsed JSON.

Regenerate with `.venv/bin/python scripts/update-golden.py` and review the diff.
input.json is a Case dump, output.json the resources (relative references, terminology as of
2026-01-01).
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.records import Case
from tests.fhir_schema import SchemaChecker
from tests.support import ROOT
from tests.unit.mappers.test_mappers import normalise

sys.path.insert(0, str(ROOT / "scripts"))
update_golden = __import__("update-golden")

GOLDEN = ROOT / "tests" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def _output(name: str) -> list[dict[str, object]]:
    return orjson.loads((GOLDEN / name / "output.json").read_bytes())  # type: ignore[no-any-return]


def _input(name: str) -> Case:
    return Case.model_validate_json((GOLDEN / name / "input.json").read_bytes())


def test_every_resource_kind_has_a_golden_case() -> None:
    kinds = {str(r["resourceType"]) for name in CASES for r in _output(name)}
    assert kinds == {
        "Patient",
        "Condition",
        "MedicationAdministration",
        "Procedure",
        "Observation",
        "AdverseEvent",
    }


@pytest.mark.parametrize("name", CASES)
def test_output_matches_golden(name: str) -> None:
    assert update_golden.render(_input(name)) == _output(name)


@pytest.mark.parametrize("name", CASES)
def test_golden_output_is_valid_r4_by_both_checks(name: str, fhir_schema_path: Path) -> None:
    checker = SchemaChecker(fhir_schema_path)
    for resource in _output(name):
        assert checker.errors(resource) == []
        get_fhir_model_class(str(resource["resourceType"])).model_validate(resource)


@pytest.mark.parametrize("name", CASES)
def test_golden_output_maps_back_to_its_input(name: str, ctx: MappingContext) -> None:
    result = cases_from_fhir(ctx, _output(name))
    assert result.unmapped == []
    assert result.other == []
    assert result.cases == [normalise(_input(name))]


def test_golden_folder_is_complete() -> None:
    for name in CASES:
        assert (GOLDEN / name / "input.json").is_file()
        assert Path(GOLDEN / name / "output.json").is_file()
