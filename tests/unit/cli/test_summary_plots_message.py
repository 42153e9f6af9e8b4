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
