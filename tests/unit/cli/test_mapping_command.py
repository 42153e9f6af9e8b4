"""``fhir-cart mapping suggest``: a draft mapping for a table that has none, which loads
as written; an existing file is never overwritten unless asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_cart.cli import main
from fhir_cart.library.study_mapping import load_study_mapping
from tests.support import ROOT
from tests.support.study_library import STUDY_LIBRARY

TABLE = ROOT / "fixtures" / "hsct_series" / "hsct_series.csv"


def test_suggest_writes_a_draft_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "draft.yaml"
    assert main(["mapping", "suggest", str(TABLE), "--out", str(out), "--anchor", "hsct"]) == 0
    mapping = load_study_mapping(out)
    assert (mapping.centre, mapping.anchor) == ("hsct-series", "hsct")
    assert mapping.patients.columns["study_id"] == "Patient"
    text = out.read_text(encoding="utf-8")
    assert "# Left for you (not sure; under ignore: until you map them):" in text
    assert "'Remission before HSCT'" in text
    said = capsys.readouterr()
    assert "left for you" in said.out
    assert "column(s) mapped" in said.err


def test_an_existing_file_is_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "draft.yaml"
    out.write_text("mine\n", encoding="utf-8")
    assert main(["mapping", "suggest", str(TABLE), "--out", str(out)]) == 2
    assert out.read_text(encoding="utf-8") == "mine\n"
    assert "give --force" in capsys.readouterr().err
    assert main(["mapping", "suggest", str(TABLE), "--out", str(out), "--force"]) == 0


STUDY_TABLE = """\
id,sex,infusion,response,bridging
P1,f,2021-01-10,MRD-neg NGS,bridged
P2,m,2021-02-11,CR,bridged
P3,f,2021-03-12,MRD-neg NGS,none
P4,m,2021-04-13,PR,bridged
"""


def test_with_a_study_library_its_concepts_and_words_are_suggested(tmp_path: Path) -> None:
    """The study's concept (by its synonym) and its added word (by its synonym) are chosen
    as shipped ones are, and the draft names the library file, from its own folder."""
    (tmp_path / "table.csv").write_text(STUDY_TABLE, encoding="utf-8")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "study.yaml").write_text(STUDY_LIBRARY, encoding="utf-8")
    out = tmp_path / "drafts" / "draft.yaml"
    table = str(tmp_path / "table.csv")
    library = ["--library", str(tmp_path / "lib" / "study.yaml")]
    assert main(["mapping", "suggest", table, "--out", str(out), *library]) == 0
    mapping = load_study_mapping(out)
    assert mapping.library == str(tmp_path / "drafts" / "../lib/study.yaml")
    specs = {spec.concept: spec for spec in mapping.events}
    assert specs["bridging_note"].columns == {"value": "bridging"}
    words = specs["disease_status"].values["value"]
    assert words["mrd-neg ngs"] == "sequencing_mrd_negative"
    # without it, neither is known: the column is left, the word untranslated
    plain = tmp_path / "plain.yaml"
    assert main(["mapping", "suggest", table, "--out", str(plain)]) == 0
    text = plain.read_text(encoding="utf-8")
    assert "bridging: not mapped in the mapping assistant" in text
    assert "sequencing_mrd_negative" not in text
