"""A study's own library file, named from its mapping file and overlaid on the shipped
library without copying it (issue 18 item 1, its core): concepts added there work in that
study's mapping, study file and summary."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest

from fhir_cart.application import Application
from fhir_cart.cli import main
from fhir_cart.errors import ConfigError
from fhir_cart.library import Library
from fhir_cart.library.study_mapping import load_study_mapping
from fhir_cart.settings import Settings
from tests.conftest import MAPPINGS, SEED_FILE, SEED_MAPPING

ADDITIONS = """\
concepts:
  bridging_note:
    label: Note on bridging therapy
    kind: observation
    value: {type: text}
"""
MEASURE = """\
  - id: bridging_notes
    label: Patients with a note on bridging therapy
    count: {event: {concept: bridging_note}}
"""


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with the seed mapping naming ``library: additions.yaml`` and a study
    file whose last measure counts the added concept."""
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "additions.yaml").write_text(ADDITIONS, encoding="utf-8")
    text = SEED_MAPPING.read_text(encoding="utf-8")
    mapping = text.replace("study: seed\n", "study: study.yaml\nlibrary: additions.yaml\n", 1)
    (tmp_path / "mapping.yaml").write_text(mapping, encoding="utf-8")
    seed_study = (MAPPINGS / "studies" / "seed.yaml").read_text(encoding="utf-8")
    assert seed_study.count("\nmeasures:\n") == 1
    added = seed_study.replace("\nmeasures:\n", "\nmeasures:\n" + MEASURE, 1)
    (tmp_path / "study.yaml").write_text(added, encoding="utf-8")
    return tmp_path


def test_the_added_concept_is_known_to_the_mapping_and_its_study(study: Path) -> None:
    mapping = load_study_mapping(study / "mapping.yaml")
    assert mapping.library == str(study / "additions.yaml")  # from the mapping's folder
    application = Application(Settings(data_dir=study))
    assert application.library.for_mapping(mapping).has("bridging_note")
    assert not application.library.concepts().has("bridging_note")  # overlaid, not copied
    assert application.mapping_context(mapping).concepts.has("bridging_note")
    definition = application.study(mapping.study or "", mapping)
    assert definition.measures[0].id == "bridging_notes"
    with pytest.raises(ConfigError, match=r"unknown concept 'bridging_note'"):
        application.study(mapping.study or "")  # the study file alone does not know it


def test_summary_counts_a_measure_of_the_added_concept(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["summary", str(SEED_FILE), "-m", str(study / "mapping.yaml"), "--json"]
    assert main(args) == 0
    assert orjson.loads(capsys.readouterr().out)["bridging_notes"] == 0
    plain = study / "mapping.yaml"
    plain.write_text(plain.read_text().replace("library: additions.yaml\n", ""))
    assert main(args) == 2  # without its library file the study names an unknown concept


def test_a_library_file_may_not_redefine_what_the_mapping_or_the_shipped_library_has(
    study: Path,
) -> None:
    mapping = study / "mapping.yaml"
    inline = "concepts:\n  bridging_note:\n    label: Twice\n    kind: observation\n"
    mapping.write_text(mapping.read_text() + inline + "    value: {type: text}\n")
    with pytest.raises(ConfigError, match=r"bridging_note: defined both in the mapping and"):
        load_study_mapping(mapping)
    (study / "additions.yaml").write_text(ADDITIONS.replace("bridging_note", "cart_infusion"))
    mapping.write_text(mapping.read_text().split("concepts:\n")[0])
    with pytest.raises(ConfigError, match=r"cart_infusion"):
        load_study_mapping(mapping, Library.default())


def test_map_reads_the_study_anchor_with_the_added_concepts(study: Path) -> None:
    args = ["map", str(SEED_FILE), "-m", str(study / "mapping.yaml"), "-o", str(study / "out")]
    assert main(args) == 0


# -- a study library that travels: codes under its canonical, read back by them -------------

CANONICAL = "https://example.org/fhir/lymphoma-study"
TRAVELLING = f"""\
canonical: {CANONICAL}
code_system: study-concepts
attributes:
  bridging_regimen: {{label: Bridging regimen, type: text}}
patient_attributes:
  prior_lines: {{label: Prior lines of therapy, type: integer, min: 0}}
concepts:
  bridging_note:
    label: Note on bridging therapy
    kind: observation
    value: {{type: text}}
    attributes: [bridging_regimen]
"""
DATA = """\
id,sex,infusion,lines,note,regimen
P1,f,2021-01-10,3,bridged,R-GemOx
P2,m,2021-02-11,2,not bridged,
"""
OWN_MAPPING = """\
centre: libtest
library: lib.yaml
anchor: cart_infusion
patients:
  source: data.csv
  columns: {study_id: id, sex: sex, anchor_date: infusion, prior_lines: lines}
  values:
    sex: {f: female, m: male}
events:
  - concept: cart_infusion
    columns: {when_date: infusion}
  - concept: bridging_note
    columns: {value: note, bridging_regimen: regimen}
    constants: {when_day: -5}
"""


@pytest.fixture
def travelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A study with a library file under its own canonical, mapped to NDJSON in ``out``."""
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib.yaml").write_text(TRAVELLING, encoding="utf-8")
    (tmp_path / "data.csv").write_text(DATA, encoding="utf-8")
    (tmp_path / "mapping.yaml").write_text(OWN_MAPPING, encoding="utf-8")
    args = ["map", "data.csv", "-m", "mapping.yaml", "-o", str(tmp_path / "out")]
    assert main(args) == 0
    return tmp_path


def _ndjson(folder: Path, rtype: str) -> list[dict[str, object]]:
    lines = (folder / "out" / "ndjson" / f"{rtype}.ndjson").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_study_codes_and_extensions_are_under_its_canonical(travelling: Path) -> None:
    notes = [o for o in _ndjson(travelling, "Observation") if "bridged" in str(o)]
    assert [c["system"] for o in notes for c in o["code"]["coding"]] == [  # type: ignore[index]
        f"{CANONICAL}/CodeSystem/study-concepts"
    ] * 2
    urls = {e["url"] for p in _ndjson(travelling, "Patient") for e in p["extension"]}  # type: ignore[attr-defined]
    assert f"{CANONICAL}/StructureDefinition/prior-lines" in urls


@pytest.mark.parametrize("how", [["-m", "mapping.yaml"], ["--library", "lib.yaml"]])
def test_tables_read_the_added_concepts_back_by_their_codes(
    travelling: Path, how: list[str]
) -> None:
    out = travelling / "tables"
    assert main(["tables", str(travelling / "out" / "ndjson"), "-o", str(out), *how]) == 0
    assert [r["prior_lines"] for r in _csv(out / "patients.csv")] == ["3", "2"]
    notes = [r for r in _csv(out / "events.csv") if r["concept"] == "bridging_note"]
    assert [(r["value_text"], r["bridging_regimen"], r["when_day"]) for r in notes] == [
        ("bridged", "R-GemOx", "-5"),
        ("not bridged", "", "-5"),
    ]
    assert not (out / "other.csv").exists()


def test_without_the_library_the_added_concepts_are_other_rows_not_a_crash(
    travelling: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A patient attribute under the study's canonical, read without its library, is an
    ``other`` row naming the extension URL, the Patient and the fix (it was dropped without
    a word), and ``tables`` counts it as ``pull`` does."""
    out = travelling / "tables"
    assert main(["tables", str(travelling / "out" / "ndjson"), "-o", str(out)]) == 0
    other = _csv(out / "other.csv")
    url = f"{CANONICAL}/StructureDefinition/prior-lines"
    assert sorted(r["code"] for r in other) == ["bridging_note", "bridging_note", url, url]
    assert "prior_lines" not in _csv(out / "patients.csv")[0]
    unread = [r for r in other if r["code"] == url]
    assert [(r["study_id"], r["resource_type"], r["value"]) for r in unread] == [
        ("P1", "Patient", "3"),
        ("P2", "Patient", "2"),
    ]
    assert unread[0]["reason"].startswith(f"extension {url} of Patient/")
    assert (
        "give the study's library (--mapping M naming it with `library:`, or --library"
        in (unread[0]["reason"])
    )
    printed = " ".join(capsys.readouterr().err.split())
    assert (
        f"2 attribute values not in the concept library are rows of the `other` table in {out}"
        in printed
    )


def test_artefacts_publish_the_study_codes_and_extensions_under_its_canonical(
    travelling: Path,
) -> None:
    """Every code of the study's CodeSystem and every extension URL under its canonical
    that the mapped NDJSON uses is defined by ``artefacts --mapping``'s package."""
    out = travelling / "art"
    assert main(["artefacts", "--mapping", "mapping.yaml", "--out", str(out)]) == 0
    package = out / "package"
    manifest = orjson.loads((package / "package.json").read_bytes())
    assert manifest["canonical"] == CANONICAL
    resources = [orjson.loads(p.read_bytes()) for p in package.glob("*-*.json")]
    code_systems = [r for r in resources if r["resourceType"] == "CodeSystem"]
    systems = {r["url"]: {c["code"] for c in r["concept"]} for r in code_systems}
    extensions = {r["url"] for r in resources if r["resourceType"] == "StructureDefinition"}
    used_codes: set[tuple[str, str]] = set()
    used_urls: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if str(node.get("system", "")).startswith(CANONICAL):
                used_codes.add((node["system"], node["code"]))
            if str(node.get("url", "")).startswith(CANONICAL):
                used_urls.add(node["url"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for rtype in ("Patient", "Observation"):
        walk(_ndjson(travelling, rtype))
    assert used_codes == {(f"{CANONICAL}/CodeSystem/study-concepts", "bridging_note")}
    assert all(code in systems.get(system, set()) for system, code in used_codes)
    assert used_urls == {
        f"{CANONICAL}/StructureDefinition/bridging-regimen",
        f"{CANONICAL}/StructureDefinition/prior-lines",
    }
    assert used_urls <= extensions


UNDECLARED = {
    "resourceType": "Patient",
    "id": "p1",
    "extension": [
        {"url": "https://fhir-cart.dev/fhir/StructureDefinition/frailty-score", "valueInteger": 3},
        {"url": "https://example.org/fhir/StructureDefinition/karnofsky", "valueInteger": 80},
    ],
}


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_tables_counts_the_undeclared_attributes_as_pull_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """One undeclared attribute under fhir_cart's extension base, one extension under
    another URL: both rows of the ``other`` table, and ``tables`` says how many and where."""
    folder = tmp_path / "ndjson"
    folder.mkdir()
    (folder / "Patient.ndjson").write_bytes(orjson.dumps(UNDECLARED) + b"\n")
    out = tmp_path / "tables"
    assert main(["tables", str(folder), "-o", str(out), "-f", fmt]) == 0
    printed = " ".join(capsys.readouterr().err.split())
    assert "2 attribute values not in the concept library are rows of the `other` table" in (
        printed
    )
