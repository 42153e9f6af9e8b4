"""``fhir-cart mapping suggest``: a draft mapping for a table that has none, which loads
as written; an existing file is never overwritten unless asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_cart.cli import main
from fhir_cart.library.study_mapping import load_study_mapping
from tests.support import ROOT

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
