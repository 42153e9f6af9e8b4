"""Words a study's library file adds to the terminology (issue 18: ``value_sets:``): a
response word added to a shipped response scale and a vocabulary of the study's own, each
with codes and sources, written to FHIR with their codes, published by ``artefacts
--mapping`` and read back by ``tables --library``; what cannot be written within a required
binding is refused with the word and the fix."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest

from fhir_cart.cli import main
from fhir_cart.errors import ConfigError
from fhir_cart.library import Library
from fhir_cart.library.study_library import check_library_file
from fhir_cart.library.study_mapping import load_study_mapping

CANONICAL = "https://example.org/fhir/myeloma-study"
SYSTEM = f"{CANONICAL}/CodeSystem/study-concepts"
SEQ_NEG = (
    "{system: study, code: imwg-seq-mrd-neg, display: Sequencing MRD-negative, "
    'source: "IMWG 2016 response criteria, MRD categories; the study\'s own code", '
    "verified: true}"
)
SNOMED_CR = (
    '{system: snomed, code: "103338009", display: In full remission, '
    "source: mCODE ConditionStatusTrendMaxVS, verified: true}"
)
LIBRARY = f"""\
canonical: {CANONICAL}
code_system: study-concepts
attributes:
  bridging_outcome: {{label: Response to bridging, type: coded, value_set: bridging_outcome}}
concepts:
  bridging_note:
    label: Note on bridging therapy
    kind: observation
    value: {{type: text}}
    attributes: [bridging_outcome]
value_sets:
  disease_status:
    sequencing_mrd_negative:
      text: Sequencing MRD-negative (IMWG 2016)
      within: complete_remission
      codings:
        - {SNOMED_CR}
        - {SEQ_NEG}
  bridging_outcome:
    responded:
      text: Responded to bridging
      codings:
        - {{system: study, code: bridging-responded, display: Responded to bridging,
           source: the study protocol, verified: true}}
    not_responded:
      text: No response to bridging
      codings:
        - {{system: study, code: bridging-not-responded, display: No response to bridging,
           source: the study protocol, verified: true}}
"""
DATA = """\
id,sex,infusion,dx,response,note,bridging
P1,f,2021-01-10,MM,MRD-neg NGS,bridged,yes
P2,m,2021-02-11,MM,CR,bridged,no
"""
MAPPING = """\
centre: words
library: lib.yaml
anchor: cart_infusion
patients:
  source: data.csv
  columns: {study_id: id, sex: sex, anchor_date: infusion}
  values:
    sex: {f: female, m: male}
events:
  - concept: cart_infusion
    columns: {when_date: infusion}
  - concept: diagnosis
    columns: {value: dx}
    values:
      value: {MM: multiple_myeloma}
  - concept: disease_status
    columns: {value: response}
    values:
      value: {MRD-neg NGS: sequencing_mrd_negative, CR: complete_remission}
    constants: {when_day: 90}
  - concept: bridging_note
    columns: {value: note, bridging_outcome: bridging}
    values:
      bridging_outcome: {yes: responded, no: not_responded}
    constants: {when_day: -5}
"""


@pytest.fixture
def words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A study whose library file adds words, mapped to NDJSON in ``out``."""
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib.yaml").write_text(LIBRARY, encoding="utf-8")
    (tmp_path / "data.csv").write_text(DATA, encoding="utf-8")
    (tmp_path / "mapping.yaml").write_text(MAPPING, encoding="utf-8")
    assert main(["map", "data.csv", "-m", "mapping.yaml", "-o", str(tmp_path / "out")]) == 0
    return tmp_path


def ndjson(folder: Path, rtype: str) -> list[dict[str, object]]:
    lines = (folder / "out" / "ndjson" / f"{rtype}.ndjson").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _codes(node: object) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    if isinstance(node, dict):
        if "system" in node and "code" in node:
            found.add((str(node["system"]), str(node["code"])))
        for value in node.values():
            found |= _codes(value)
    elif isinstance(node, list):
        for value in node:
            found |= _codes(value)
    return found


def test_the_added_words_are_written_with_their_codes(words: Path) -> None:
    status = [
        o
        for o in ndjson(words, "Observation")
        if "valueCodeableConcept" in o and "bridged" not in str(o)
    ]
    assert len(status) == 2
    first = status[0]["valueCodeableConcept"]
    assert first["text"] == "Sequencing MRD-negative (IMWG 2016)"  # type: ignore[index]
    assert [(c["system"], c["code"]) for c in first["coding"]] == [  # type: ignore[index]
        ("http://snomed.info/sct", "103338009"),
        (SYSTEM, "imwg-seq-mrd-neg"),
    ]
    notes = [o for o in ndjson(words, "Observation") if "bridged" in str(o)]
    assert (SYSTEM, "bridging-responded") in _codes(notes[0])
    assert (SYSTEM, "bridging-not-responded") in _codes(notes[1])
    # the added word sets the cancer Condition's status its broader word sets
    (condition,) = [c for c in ndjson(words, "Condition") if "P1" in str(c)]
    assert _codes(condition["clinicalStatus"]) == {  # type: ignore[arg-type]
        ("http://terminology.hl7.org/CodeSystem/condition-clinical", "remission")
    }


@pytest.mark.parametrize("how", [["-m", "mapping.yaml"], ["--library", "lib.yaml"]])
def test_tables_read_the_added_words_back(words: Path, how: list[str]) -> None:
    out = words / "tables"
    assert main(["tables", str(words / "out" / "ndjson"), "-o", str(out), *how]) == 0
    events = _csv(out / "events.csv")
    status = [r["value_code"] for r in events if r["concept"] == "disease_status"]
    assert status == ["sequencing_mrd_negative", "complete_remission"]
    notes = [r["bridging_outcome"] for r in events if r["concept"] == "bridging_note"]
    assert notes == ["responded", "not_responded"]


def test_without_the_library_the_added_word_reads_as_its_broader_word(words: Path) -> None:
    out = words / "tables"
    assert main(["tables", str(words / "out" / "ndjson"), "-o", str(out)]) == 0
    events = _csv(out / "events.csv")
    status = [r["value_code"] for r in events if r["concept"] == "disease_status"]
    assert status == ["complete_remission", "complete_remission"]


def test_artefacts_publish_the_words_in_the_study_code_system_and_value_sets(
    words: Path,
) -> None:
    out = words / "art"
    assert main(["artefacts", "--mapping", "mapping.yaml", "--out", str(out)]) == 0
    package = out / "package"
    resources = {p.name: orjson.loads(p.read_bytes()) for p in package.glob("*-*.json")}
    system = resources["CodeSystem-study-concepts.json"]
    assert system["url"] == SYSTEM
    assert {c["code"] for c in system["concept"]} == {
        "bridging_note",
        "imwg-seq-mrd-neg",
        "bridging-responded",
        "bridging-not-responded",
    }
    status = resources["ValueSet-disease-status.json"]
    assert status["url"] == f"{CANONICAL}/ValueSet/disease-status"
    included = {
        (i["system"], c["code"]) for i in status["compose"]["include"] for c in i["concept"]
    }
    assert (SYSTEM, "imwg-seq-mrd-neg") in included
    assert ("http://snomed.info/sct", "103338009") in included  # the shipped words too
    outcome = resources["StructureDefinition-bridging-outcome.json"]
    (value,) = [e for e in outcome["differential"]["element"] if e["id"] == "Extension.value[x]"]
    assert value["binding"] == {
        "strength": "required",
        "valueSet": f"{CANONICAL}/ValueSet/bridging-outcome",
    }
    assert "ValueSet-bridging-outcome.json" in resources
    used = _codes(ndjson(words, "Observation"))
    published = {
        (i["system"], c["code"])
        for r in resources.values()
        if r["resourceType"] == "ValueSet"
        for i in r["compose"]["include"]
        for c in i.get("concept", ())
    }
    assert {u for u in used if u[0] == SYSTEM and u[1] != "bridging_note"} <= published
    # the mapping's local words map to the added words' codes (they were left out)
    (concept_map,) = [r for r in resources.values() if r["resourceType"] == "ConceptMap"]
    mapped = {
        (e["code"], group["target"], e["target"][0]["code"])
        for group in concept_map["group"]
        for e in group["element"]
    }
    assert ("mrd-neg ngs", SYSTEM, "imwg-seq-mrd-neg") in mapped
    assert ("yes", SYSTEM, "bridging-responded") in mapped
    targets = resources["ValueSet-centre-words-targets.json"]["compose"]["include"]
    assert {"valueSet": [f"{CANONICAL}/ValueSet/disease-status"]} in targets


def test_library_check_reports_the_added_words(words: Path) -> None:
    report = check_library_file(words / "lib.yaml", Library.default())
    assert report.problems == []
    assert "adds 3 words to 2 vocabularies (value_sets)" in report.notes
    assert (
        "word sequencing_mrd_negative of shipped vocabulary disease_status, within "
        f"complete_remission: http://snomed.info/sct|103338009, {SYSTEM}|imwg-seq-mrd-neg"
    ) in report.notes
    assert any("value sets https://example.org" in n for n in report.notes)


def _refused(folder: Path, old: str, new: str) -> tuple[str, list[str]]:
    (folder / "lib.yaml").write_text(LIBRARY.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_study_mapping(folder / "mapping.yaml", Library.default())
    return caught.value.message, check_library_file(folder / "lib.yaml", Library.default()).problems


def test_a_word_outside_mcodes_required_binding_is_refused_with_the_fix(words: Path) -> None:
    message, problems = _refused(words, f"        - {SNOMED_CR}\n", "")
    expected = (
        "value_sets.disease_status.sequencing_mrd_negative: concept 'disease_status' writes "
        "the words of 'disease_status' into Observation.value[x] of profile 'disease_status', "
        "bound (required) to http://hl7.org/fhir/us/mcode/ValueSet/"
        "mcode-condition-status-trend-max-vs, and the word has no code in it "
        f"({SYSTEM}|imwg-seq-mrd-neg); add the coding of the status it falls under"
    )
    assert expected in message
    assert any(expected in p for p in problems)


def test_a_word_added_to_a_closed_shipped_extension_vocabulary_is_refused(words: Path) -> None:
    message, problems = _refused(
        words, "  bridging_outcome:\n    responded:", "  intent:\n    responded:"
    )
    assert "value_sets.intent: the shipped vocabulary 'intent' is the required binding" in message
    assert any("shipped extension of attribute 'intent'" in p for p in problems)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    sequencing_mrd_negative:",
            "    complete_remission:",
            "already a word of the shipped",
        ),
        (f"canonical: {CANONICAL}\n", "", "`system: study` is the study's own CodeSystem"),
        ("within: complete_remission", "within: cure", "within: no word 'cure'"),
        (
            '{system: snomed, code: "103338009"',
            '{system: snomedx, code: "103338009"',
            "unknown system key 'snomedx'",
        ),
    ],
)
def test_what_the_words_may_not_do(words: Path, old: str, new: str, expected: str) -> None:
    message, problems = _refused(words, old, new)
    assert expected in message
    assert any(expected in p for p in problems)


def test_the_example_of_the_mapping_reference_loads_and_checks(tmp_path: Path) -> None:
    """The `my-myeloma-library.yaml` block of docs/mapping-file.md: library check passes it
    with the notes of its words."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "mapping-file.md").read_text()
    block = text.split("# my-myeloma-library.yaml", 1)[1].split("```", 1)[0]
    (tmp_path / "lib.yaml").write_text(block.split("\n", 2)[2], encoding="utf-8")
    report = check_library_file(tmp_path / "lib.yaml", Library.default())
    assert report.problems == []
    assert "adds 3 words to 2 vocabularies (value_sets)" in report.notes


STUDY = """\
name: A study counting an added word
anchor: cart_infusion
measures:
  - id: seq_mrd_neg
    label: Sequencing MRD-negative
    count: {event: {concept: disease_status, value: sequencing_mrd_negative}}
  - id: cr_or_better
    label: Complete remission or better
    count: {event: {concept: disease_status, value: complete_remission}}
"""


def test_a_study_file_counts_the_added_word(
    words: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (words / "study.yaml").write_text(STUDY, encoding="utf-8")
    mapping = words / "mapping.yaml"
    mapping.write_text(
        mapping.read_text().replace("library: lib.yaml\n", "library: lib.yaml\nstudy: study.yaml\n")
    )
    assert main(["summary", "data.csv", "-m", "mapping.yaml", "--json"]) == 0
    found = orjson.loads(capsys.readouterr().out)
    assert (found["seq_mrd_neg"], found["cr_or_better"]) == (1, 1)
