"""`summary --plots` with a study that defines no plots says so (issue 22 item 8); it was
silent, and the folder stayed empty."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fhir_cart.cli import main
from tests.support import MAPPINGS, SEED_FILE, SEED_MAPPING

STUDIES = MAPPINGS / "studies"


def test_a_study_without_plots_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = yaml.safe_load((STUDIES / "seed.yaml").read_text(encoding="utf-8"))
    del study["plots"]
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(study, allow_unicode=True), encoding="utf-8")
    args = ["summary", str(SEED_FILE), "-m", str(SEED_MAPPING), "--study", str(bare)]
    assert main([*args, "--plots", str(tmp_path / "plots")]) == 0
    err = capsys.readouterr().err
    assert "no plots written" in err
    assert "defines none" in err
    assert not (tmp_path / "plots").exists() or not any((tmp_path / "plots").iterdir())


def _titles(folder: Path) -> str:
    """The SVG plots' text (matplotlib writes each string in a comment before its glyphs)."""
    import re

    return " ".join(
        " ".join(re.findall(r"<!-- (.*?) -->", svg.read_text(encoding="utf-8")))
        for svg in sorted(folder.glob("*.svg"))
    )


@pytest.mark.slow  # draws the seed's plots twice (PNG and SVG): 5-7 s, the full suite runs it
def test_summary_plots_name_the_file_unless_the_study_titles_are_asked_for(
    tmp_path: Path,
) -> None:
    """`summary --plots` drew the study file's own titles ("SYNTHETIC seed cohort") over any
    file it was given, another centre's included; the titles now name the file shown, and
    `--study-titles` keeps the study's own (for the study's own cohort)."""
    args = ["summary", str(SEED_FILE), "-m", str(SEED_MAPPING)]
    assert main([*args, "--plots", str(tmp_path / "file")]) == 0
    shown = _titles(tmp_path / "file")
    assert f"File {SEED_FILE.name} — course after" in shown
    assert f"patients of file {SEED_FILE.name}" in shown
    assert "SYNTHETIC seed cohort" not in shown
    assert main([*args, "--study-titles", "--plots", str(tmp_path / "own")]) == 0
    own = _titles(tmp_path / "own")
    assert "SYNTHETIC seed cohort" in own
    assert SEED_FILE.name not in own
