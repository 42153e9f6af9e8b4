"""README's first command, run in a clean directory, finishes and prints the summary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_readme_first_command_runs_the_main_job(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo" in readme
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "all numbers the paper reports are reproduced" in done.stdout
    assert "Median follow-up (days after infusion)" in done.stdout
    assert (tmp_path / "fhir-cart-data" / "demo" / "pulled" / "patients.csv").is_file()
    assert "WARNING" not in done.stderr  # nothing alarming on the happy path
    assert list((tmp_path / "fhir-cart-data" / "demo").glob("*.lock-*")) == []
