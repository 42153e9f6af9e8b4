"""docs/mapping-file.md's first example runs as written (issue 22 item 8: new users needed
one to four tries per table), and docs/service.md names every field of a pull job."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fhir_cart.cli import main
from fhir_cart.service import schemas as s
from tests.support import ROOT


def first_blocks() -> tuple[str, str]:
    text = (ROOT / "docs" / "mapping-file.md").read_text(encoding="utf-8")
    section = text.split("## A first mapping", 1)[1].split("\n## ", 1)[0]
    table = re.search(r"```csv\n(.*?)```", section, re.S)
    mapping = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert table is not None
    assert mapping is not None
    return table.group(1), mapping.group(1)


def test_the_first_mapping_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table, mapping = first_blocks()
    (tmp_path / "my-centre.csv").write_text(table, encoding="utf-8")
    (tmp_path / "my-centre.yaml").write_text(mapping, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    assert main(["map", "my-centre.csv", "-m", "my-centre.yaml", "-o", "out"]) == 0
    assert "reject" not in capsys.readouterr().err.lower()
    assert (
        main(["summary", "my-centre.csv", "-m", "my-centre.yaml", "--study", "seed", "--json"]) == 0
    )
    assert '"patients": 4' in capsys.readouterr().out
    assert (
        not (tmp_path / "out" / "rejects.csv").exists()
        or len((tmp_path / "out" / "rejects.csv").read_text().splitlines()) <= 1
    )


def test_the_first_mapping_says_where_keys_and_words_are() -> None:
    text = (ROOT / "docs" / "mapping-file.md").read_text(encoding="utf-8")
    section = text.split("## A first mapping", 1)[1].split("\n## ", 1)[0]
    assert "mappings/concepts.yaml" in section
    assert "mappings/terminology.yaml" in section


def test_service_md_names_every_field_of_a_pull_job() -> None:
    text = (ROOT / "docs" / "service.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `POST /jobs/pull`"))
    for field in s.PullRequest.model_fields:
        assert f'"{field}"' in row, field
