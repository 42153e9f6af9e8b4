"""Units a study adds (issue 18: ``units:`` in its library file or inline in its mapping,
with ``value_sets:``): a new UCUM unit with its display and the spellings a table writes, or
synonyms for a shipped unit; cells so written are read as the unit and converted to the
concept's or attribute's unit; FHIR writes the unit's display. A key that is not UCUM, a new
unit without display, a shipped unit given another display and a spelling given to two
units are refused by ``library check`` and when the mapping is loaded."""

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

ADDITIONS = """\
canonical: https://example.org/fhir/units-study
units:
  "10*9/L": {display: billion per litre, synonyms: [G/L, Gpt/l]}
  "10*6/kg": {synonyms: [Mio/kg]}
value_sets:
  disease_status:
    sequencing_mrd_negative:
      text: Sequencing MRD-negative (IMWG 2016)
      within: complete_remission
      codings:
        - {system: snomed, code: "103338009", display: In full remission,
           source: mCODE ConditionStatusTrendMaxVS, verified: true}
        - {system: study, code: imwg-seq-mrd-neg, display: Sequencing MRD-negative,
           source: the study's own code, verified: true}
"""
CONCEPTS = """\
concepts:
  neutrophils:
    label: Neutrophil count
    kind: observation
    value: {type: quantity, units: ["10*9/L"]}
"""
DATA = """\
id,sex,infusion,dose,anc,anc_plain,response
P1,f,2021-01-10,2 Mio/kg,1.5 G/L,0.5,MRD-neg NGS
P2,m,2021-02-11,0.4 × 10^6/kg,1200 /uL,2,CR
"""
EVENTS = """\
anchor: cart_infusion
patients:
  source: data.csv
  columns: {study_id: id, sex: sex, anchor_date: infusion}
  values:
    sex: {f: female, m: male}
events:
  - concept: cart_infusion
    columns: {when_date: infusion, cell_dose: dose}
  - concept: neutrophils
    name: anc
    columns: {value: anc}
    constants: {when_day: 28}
  - concept: neutrophils
    name: anc-plain
    columns: {value: anc_plain}
    units: {value: [Gpt/l]}
    constants: {when_day: 30}
  - concept: disease_status
    columns: {value: response}
    values:
      value: {MRD-neg NGS: sequencing_mrd_negative, CR: complete_remission}
    constants: {when_day: 90}
"""


@pytest.fixture(params=["library", "inline"])
def study(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The same additions in a library file named by the mapping, or in the mapping itself."""
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text(DATA, encoding="utf-8")
    if request.param == "library":
        (tmp_path / "lib.yaml").write_text(ADDITIONS + CONCEPTS, encoding="utf-8")
        mapping = "centre: units\nlibrary: lib.yaml\n" + EVENTS
    else:
        mapping = "centre: units\n" + ADDITIONS + CONCEPTS + EVENTS
    (tmp_path / "mapping.yaml").write_text(mapping, encoding="utf-8")
    return tmp_path


def _map(folder: Path) -> Path:
    out = folder / "out"
    assert main(["map", "data.csv", "-m", "mapping.yaml", "-o", str(out)]) == 0
    return out / "ndjson"


def _resources(folder: Path, rtype: str) -> list[dict[str, object]]:
    lines = (folder / f"{rtype}.ndjson").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines]


def test_cells_in_an_added_unit_or_its_synonyms_are_read_and_converted(study: Path) -> None:
    ndjson = _map(study)
    counts = [
        o["valueQuantity"]
        for o in _resources(ndjson, "Observation")
        if "valueQuantity" in o and "10*9/L" in str(o)
    ]
    # 1.5 G/L; 1200 /uL converted; 0.5 and 2 in a column whose unit is the synonym Gpt/l
    assert sorted(q["value"] for q in counts) == [0.5, 1.2, 1.5, 2.0]  # type: ignore[index]
    assert {(q["unit"], q["code"]) for q in counts} == {  # type: ignore[index]
        ("billion per litre", "10*9/L")
    }
    doses = sorted(
        str(e.get("valueQuantity", {}).get("value"))  # type: ignore[union-attr]
        for p in _resources(ndjson, "Procedure")
        for e in p.get("extension", [])  # type: ignore[attr-defined]
        if "cell-dose" in str(e.get("url"))
    )
    assert doses == ["0.4", "2.0"]  # Mio/kg, a synonym of the shipped 10*6/kg


def test_the_inline_words_are_written_as_the_library_files_are(study: Path) -> None:
    ndjson = _map(study)
    status = [o for o in _resources(ndjson, "Observation") if "valueCodeableConcept" in o]
    first = status[0]["valueCodeableConcept"]
    assert first["text"] == "Sequencing MRD-negative (IMWG 2016)"  # type: ignore[index]
    assert [(c["system"], c["code"]) for c in first["coding"]] == [  # type: ignore[index]
        ("http://snomed.info/sct", "103338009"),
        ("https://example.org/fhir/units-study/CodeSystem/concepts", "imwg-seq-mrd-neg"),
    ]
    out = study / "tables"
    assert main(["tables", str(ndjson), "-o", str(out), "-m", "mapping.yaml"]) == 0
    with (out / "events.csv").open(encoding="utf-8") as handle:
        events = list(csv.DictReader(handle))
    words = [r["value_code"] for r in events if r["concept"] == "disease_status"]
    assert words == ["sequencing_mrd_negative", "complete_remission"]


def test_without_the_synonym_the_cell_is_refused(study: Path) -> None:
    """The synonym does the reading: without it 'G/L' is UCUM's gauss per litre."""
    for name in ("lib.yaml", "mapping.yaml"):
        path = study / name
        if path.exists():
            path.write_text(path.read_text().replace("G/L, ", ""), encoding="utf-8")
    assert main(["map", "data.csv", "-m", "mapping.yaml", "-o", str(study / "o2")]) != 0


REFUSALS = [
    (  # the added word without its own code: it would read back as complete_remission
        """        - {system: study, code: imwg-seq-mrd-neg, display: Sequencing MRD-negative,
           source: the study's own code, verified: true}
""",
        "",
        "value_sets.disease_status.sequencing_mrd_negative: every code of it is a code of "
        "word 'complete_remission' too, so written to FHIR it cannot be told from",
    ),
    (
        '"10*9/L": {display',
        '"Mio/L": {display',
        "units.Mio/L: 'Mio/L' is not a UCUM unit; the key is the unit's UCUM code",
    ),
    ("{display: billion per litre, ", "{", "units.10*9/L: a unit the shipped library lacks"),
    (
        '"10*6/kg": {synonyms',
        '"10*6/kg": {display: million per kilo, synonyms',
        "units.10*6/kg: a shipped unit, shown as 'million cells per kg'; give it only `synonyms:`",
    ),
    (
        "[Mio/kg]",
        "[Mio/kg, G/L]",
        "units.10*6/kg.synonyms: 'G/L' is already a synonym of '10*9/L'",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), REFUSALS)
def test_refused_in_the_library_file_and_inline_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str, expected: str
) -> None:
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    additions = ADDITIONS.replace(old, new, 1)
    assert additions != ADDITIONS
    (tmp_path / "data.csv").write_text(DATA, encoding="utf-8")
    (tmp_path / "lib.yaml").write_text(additions + CONCEPTS, encoding="utf-8")
    problems = check_library_file(tmp_path / "lib.yaml", Library.default()).problems
    assert any(expected in p for p in problems), problems
    for mapping in (
        "centre: units\nlibrary: lib.yaml\n" + EVENTS,
        "centre: units\n" + additions + CONCEPTS + EVENTS,
    ):
        (tmp_path / "mapping.yaml").write_text(mapping, encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_study_mapping(tmp_path / "mapping.yaml", Library.default())
        assert expected in caught.value.message
        assert str(tmp_path / "mapping.yaml") in caught.value.message


def test_library_check_notes_the_units_and_warns_of_a_ucum_synonym(tmp_path: Path) -> None:
    (tmp_path / "lib.yaml").write_text(ADDITIONS + CONCEPTS, encoding="utf-8")
    report = check_library_file(tmp_path / "lib.yaml", Library.default())
    assert report.problems == []
    assert report.warnings == [
        "units.10*9/L.synonyms: 'G/L' is itself a UCUM unit; cells written 'G/L' are read "
        "as '10*9/L'"
    ]
    assert "unit 10*9/L ('billion per litre'), read from G/L, Gpt/l" in report.notes
    assert "unit 10*6/kg (shipped, 'million cells per kg'), read from Mio/kg" in report.notes


def test_a_word_or_unit_in_both_the_mapping_and_its_library_file_is_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "data.csv").write_text(DATA, encoding="utf-8")
    (tmp_path / "lib.yaml").write_text(ADDITIONS + CONCEPTS, encoding="utf-8")
    mapping = "centre: units\nlibrary: lib.yaml\n" + ADDITIONS + EVENTS
    (tmp_path / "mapping.yaml").write_text(mapping, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_study_mapping(tmp_path / "mapping.yaml", Library.default())
    assert (
        "units.10*6/kg, units.10*9/L, value_sets.disease_status.sequencing_mrd_negative, "
        "canonical: defined both in the mapping and in its library file"
    ) in caught.value.message


def test_a_cell_in_another_quantity_is_refused_against_the_columns_synonym_unit(
    study: Path,
) -> None:
    """The column's unit, written as a synonym (Gpt/l), is the unit a cell must measure."""
    data = (study / "data.csv").read_text().replace(",0.5,", ",3 mg,")
    (study / "data.csv").write_text(data, encoding="utf-8")
    assert main(["map", "data.csv", "-m", "mapping.yaml", "-o", str(study / "o3")]) == 3
    rejects = (study / "o3" / "rejects.csv").read_text()
    assert "unit 'mg' does not measure what this column's unit '10*9/L' measures" in rejects


def test_a_study_terminology_keeps_the_settings_and_shares_the_unverified_codes() -> None:
    """A study's words and units make a new terminology over the added data: it reads as
    the shipped one does (strict, date, country, text reading), and an unverified code it
    emits is reported with the run's others (the set is shared, not copied)."""
    import datetime as dt

    from fhir_cart.library.terminology import load_terminology

    base = load_terminology(strict=True, as_of=dt.date(2024, 5, 1), country="DE")
    base.read_text = True
    out = base.over(base.data)
    assert (out.strict, out.as_of, out.country, out.read_text) == (
        True,
        dt.date(2024, 5, 1),
        "DE",
        True,
    )
    out.unverified_used.add(("http://example.org/cs", "x", "X"))
    assert ("http://example.org/cs", "x", "X") in base.unverified_used
