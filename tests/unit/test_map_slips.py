"""Map-side slips stop where they happen (issue 17, item 6; issue 20's input findings): every
error shows its whole list, in the CLI and in the service's problem documents alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.cli import main
from fhir_cart.errors import InputError
from fhir_cart.readers import ReadResult, read_study
from fhir_cart.service.app import create_app
from fhir_cart.settings import Settings
from fhir_cart.study_mapping import StudyMapping
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


# -- 8. numbers a double cannot hold; a file with no data rows --------------------------------


def _events(tmp_path: Path, rows: str, spec: dict[str, Any], **top: Any) -> ReadResult:
    """A folder with patients.csv (A, B) and events.csv; ``spec`` reads events.csv."""
    folder = tmp_path / "study"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "patients.csv").write_text("ID\nA\nB\n", encoding="utf-8")
    (folder / "events.csv").write_text(rows, encoding="utf-8")
    spec = {"source": "events", **spec, "columns": {"study_id": "ID", **spec["columns"]}}
    data = {"centre": "test", "anchor": "cart_infusion",
            "patients": {"source": "patients", "columns": {"study_id": "ID"}},
            "events": [spec], **top}  # fmt: skip
    return read_study(folder, StudyMapping.model_validate(data))


@pytest.mark.parametrize(
    ("cell", "says"),
    [
        ("1e309", "too large"),
        ("<1e-400", "too small"),
        ("-1e400 %", "too large"),
        ("0,0000e-999", None),  # a true zero stays 0
    ],
)
def test_numbers_a_double_cannot_hold_are_rejects_with_their_place(
    tmp_path: Path, cell: str, says: str | None
) -> None:
    result = _events(tmp_path, f"ID,MRD\nA,{cell}\n", {"concept": "mrd", "columns": {"value": "MRD"}})
    if says is None:
        assert result.rejects == []
        assert result.cases[0].events[0].value.number == 0.0  # type: ignore[union-attr]
        return
    assert [(r.source, r.row, r.column, r.value) for r in result.rejects] == [
        ("events.csv", 2, "MRD", cell)
    ]
    assert says in result.rejects[0].reason
    assert "check the cell" in result.rejects[0].reason
    assert result.cases[0].events == ()


@pytest.mark.parametrize("cell", ["inf", "nan", "1e999", "-Infinity"])
def test_canonical_numbers_must_be_finite(tmp_path: Path, cell: str) -> None:
    result = _events(tmp_path, f"ID,N\nA,{cell}\n",
                     {"concept": "mrd", "columns": {"value_number": "N"}})  # fmt: skip
    assert [(r.row, r.column, r.value) for r in result.rejects] == [(2, "N", cell)]


def test_a_header_only_file_is_an_error_in_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _centre_b(tmp_path, "Patient,", "Patient,", rows=0)
    code = main(["map", str(study), "-m", str(CENTRE_B_MAPPING), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 3
    assert "centre_b.csv" in err
    assert "no patient rows below the header (row 1)" in err
    assert not (tmp_path / "o" / "ndjson").exists()


def test_a_header_only_file_is_an_error_in_the_service(tmp_path: Path) -> None:
    status, body = _upload(tmp_path, _centre_b(tmp_path, "Patient,", "Patient,", rows=0))
    assert status == 422
    assert "no patient rows below the header (row 1)" in body["detail"]
    assert body["errors"][0]["source"] == "study.csv"


def test_a_file_whose_rows_are_all_blank_is_an_error_too(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no patient rows"):
        folder = tmp_path / "blank"
        folder.mkdir()
        (folder / "patients.csv").write_text("ID\n\n , \n", encoding="utf-8")
        mapping = {"centre": "test", "patients": {"source": "patients", "columns": {"study_id": "ID"}}}
        read_study(folder, StudyMapping.model_validate(mapping))
