"""The checked-in conformance artefacts (api/fhir/) are what the mapping data generate,
valid FHIR R4 for independent validators, and cover everything the fixtures emit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from fhir_cart.cli import app
from fhir_cart.conformance.codings import iter_codings
from fhir_cart.mappers.context import mapping_context
from tests.fhir_schema import SchemaChecker
from tests.unit.conformance.test_conformance import MCODE, emitted, medplum_errors

ROOT = Path(__file__).resolve().parents[3]
API = ROOT / "api" / "fhir" / "package"
Json = dict[str, Any]
_VERSION_GAP = "'4.0.1' is not one of"


def _artefacts() -> list[Json]:
    return [
        orjson.loads(p.read_bytes())
        for p in sorted(API.glob("*.json"))
        if p.name not in ("package.json", ".index.json")
    ]


def _walk_urls(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("url"), str) and (
            "extension" in node or any(k.startswith("value") for k in node)
        ):
            found.add(node["url"])
        for value in node.values():
            found |= _walk_urls(value)
    elif isinstance(node, list):
        for item in node:
            found |= _walk_urls(item)
    return found


def test_checked_in_artefacts_equal_the_generated_ones() -> None:
    result = CliRunner().invoke(app, ["artefacts", "--check", "--out", str(API.parent)])
    assert result.exit_code == 0, result.output


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_the_check_fails_on_a_stale_artefact(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["artefacts", "--out", str(tmp_path)]).exit_code == 0
    cs = tmp_path / "package" / "CodeSystem-case-series.json"
    cs.write_bytes(cs.read_bytes().replace(b'"definition"', b'"definitio"', 1))
    result = runner.invoke(app, ["artefacts", "--check", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "package/CodeSystem-case-series.json" in result.output
    (tmp_path / "package" / "ValueSet-gone.json").write_text("{}")
    assert runner.invoke(app, ["artefacts", "--out", str(tmp_path)]).exit_code == 0
    assert not (tmp_path / "package" / "ValueSet-gone.json").exists()
    assert runner.invoke(app, ["artefacts", "--check", "--out", str(tmp_path)]).exit_code == 0


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_medplum_and_the_json_schema_find_no_error_in_the_artefacts(
    fhir_schema_path: Path,
) -> None:
    artefacts = _artefacts()
    assert {a["resourceType"] for a in artefacts} == {
        "StructureDefinition",
        "CodeSystem",
        "ValueSet",
        "ConceptMap",
        "ImplementationGuide",
    }
    assert medplum_errors(artefacts) == []
    schema = SchemaChecker(fhir_schema_path)
    # The HL7 R4 JSON Schema was built for 4.0.0: its FHIRVersion enum stops there, so it
    # refuses 4.0.1 (R4's technical correction) on every StructureDefinition, mCODE's too.
    mcode = MCODE / "StructureDefinition-mcode-cancer-patient.json"
    if mcode.exists():
        assert any(_VERSION_GAP in e for e in schema.errors(orjson.loads(mcode.read_bytes())))
    errors = [
        e
        for a in artefacts
        for e in schema.errors(a)
        if not (_VERSION_GAP in e and "fhirVersion" in e)  # ImplementationGuide: fhirVersion/0
    ]
    assert errors == []


def test_every_extension_emitted_has_a_structure_definition() -> None:
    base = mapping_context().profiles.extension_base
    defined = {a["url"] for a in _artefacts() if a["resourceType"] == "StructureDefinition"}
    used = {u for rs in emitted().values() for u in _walk_urls(rs) if u.startswith(base)}
    assert used, "the fixtures emit project extensions"
    assert used - defined == set()


def test_every_own_code_emitted_is_defined_in_the_code_system() -> None:
    cs = orjson.loads((API / "CodeSystem-case-series.json").read_bytes())
    defined = {c["code"]: c for c in cs["concept"]}
    assert all(c.get("definition") for c in cs["concept"])
    used = {
        c["code"] for rs in emitted().values() for c in iter_codings(rs) if c["system"] == cs["url"]
    }
    assert used
    assert used - set(defined) == set()


def test_every_vocabulary_has_a_value_set_and_every_centre_a_concept_map() -> None:
    ctx = mapping_context()
    names = {a["id"] for a in _artefacts() if a["resourceType"] == "ValueSet"}
    groups = {g.replace("_", "-") for g in ctx.terminology.data.concepts}
    assert groups <= names
    maps = {a["id"] for a in _artefacts() if a["resourceType"] == "ConceptMap"}
    assert {"centre-seed", "centre-centre-b", "centre-hsct-series", "centre-adult-cart"} <= maps
    seed = orjson.loads((API / "ConceptMap-centre-seed.json").read_bytes())
    relapse = [
        e for g in seed["group"] for e in g["element"] if e["code"] == "rel/ref"
    ]  # the seed's local word for relapsed and refractory B-ALL
    assert relapse, seed["group"][0]["element"][:3]
