"""Golden files: each resource kind's exact FHIR output, compared as parsed JSON.

Regenerate with `.venv/bin/python scripts/update-golden.py` and review the diff.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.records import Case
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
update_golden = __import__("update-golden")

GOLDEN = ROOT / "tests" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def test_every_resource_kind_has_a_golden_case() -> None:
    kinds = set()
    for name in CASES:
        for resource in orjson.loads((GOLDEN / name / "output.json").read_bytes()):
            kinds.add(resource["resourceType"])
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
    case = Case.model_validate_json((GOLDEN / name / "input.json").read_bytes())
    expected = orjson.loads((GOLDEN / name / "output.json").read_bytes())
    assert update_golden.render(case) == expected


@pytest.mark.parametrize("name", CASES)
def test_golden_output_maps_back_to_its_input(name: str, ctx: object) -> None:
    case = Case.model_validate_json((GOLDEN / name / "input.json").read_bytes())
    resources = orjson.loads((GOLDEN / name / "output.json").read_bytes())
    result = cases_from_fhir(ctx, resources)  # type: ignore[arg-type]
    assert result.unmapped == []
    assert result.cases == [case]


def test_golden_folder_is_complete() -> None:
    for name in CASES:
        assert (GOLDEN / name / "input.json").is_file()
        assert Path(GOLDEN / name / "output.json").is_file()
