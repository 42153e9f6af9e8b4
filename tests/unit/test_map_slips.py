"""Map-side slips stop where they happen (issue 17, item 6; issue 20's input findings): every
error shows its whole list, in the CLI and in the service's problem documents alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.cli import main
from fhir_cart.service.app import create_app
from fhir_cart.settings import Settings
from tests.conftest import CENTRE_B_FILE, CENTRE_B_MAPPING

KEY = {"X-API-Key": "k-123"}


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        api_keys=[SecretStr("k-123")],
    )  # fmt: skip


def _centre_b(tmp_path: Path, old: str, new: str, *, rows: int | None = None) -> Path:
    """centre_b.csv with ``old`` replaced by ``new`` (in the header or the rows); ``rows``:
    keep only that many data rows."""
    lines = CENTRE_B_FILE.read_text(encoding="utf-8").splitlines()
    if rows is not None:
        lines = lines[: 1 + rows]
    text = "\n".join(lines) + "\n"
    assert old in text
    path = tmp_path / "centre_b.csv"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _upload(tmp_path: Path, study: Path, mapping: str = "centre_b") -> tuple[int, dict]:  # type: ignore[type-arg]
    with TestClient(create_app(_settings(tmp_path), run_workers=False)) as client:
        with study.open("rb") as handle:
            answer = client.post("/uploads", headers=KEY, data={"mapping": mapping},
                                 files={"file": (study.name, handle)})  # fmt: skip
    return answer.status_code, answer.json()


# -- 1. every InputError shows its whole list ------------------------------------------------


def test_a_misspelt_column_names_the_column_spec_and_close_match_in_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _centre_b(tmp_path, ",Birth,", ",Brith,")
    code = main(["map", str(study), "-m", str(CENTRE_B_MAPPING), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 3
    assert "the mapping does not fit the file" in err
    assert "column 'Birth'" in err
    assert "patients.birth_date" in err
    assert "did you mean 'Brith'?" in err


def test_a_misspelt_column_names_the_column_spec_and_close_match_in_the_service(
    tmp_path: Path,
) -> None:
    status, body = _upload(tmp_path, _centre_b(tmp_path, ",Birth,", ",Brith,"))
    assert status == 422
    assert "column 'Birth'" in body["detail"]
    assert "did you mean 'Brith'?" in body["detail"]
    assert body["errors"] == [
        {
            "source": "study.csv", "table": "patients", "row": 1, "column": "Birth",
            "value": None,
            "reason": "column for patients.birth_date is not in the header; "
            "did you mean 'Brith'?",
        }
    ]  # fmt: skip
