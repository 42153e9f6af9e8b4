"""The command line as a user meets it: outputs, exit codes and reject reports."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest

from fhir_cart.cli import main
from tests.support import FIXTURES, MAPPINGS, SEED_FILE, SEED_MAPPING


def test_map_writes_bundles_ndjson_codesystem_and_flags_unverified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unverified_mappings: Path
) -> None:
    assert main(["map", str(SEED_FILE), "-m", str(SEED_MAPPING), "-o", str(tmp_path)]) == 0
    ndjson = {p.name for p in (tmp_path / "ndjson").iterdir()}
    assert "Observation.ndjson" in ndjson
    assert "Patient.ndjson" in ndjson
    lines = (tmp_path / "ndjson" / "Patient.ndjson").read_bytes().splitlines()
    assert len(lines) == 7
    bundle = orjson.loads((tmp_path / "bundles" / "bundle-0001.json").read_bytes())
    assert bundle["type"] == "transaction"
    unverified = orjson.loads((tmp_path / "unverified-codes.json").read_bytes())
    assert "C126102" in {u["code"] for u in unverified}
    assert "unverified code C126102" in capsys.readouterr().err


def test_map_refuses_unverified_codes_under_strict(
    tmp_path: Path, unverified_mappings: Path
) -> None:
    args = ["map", str(SEED_FILE), "-m", str(SEED_MAPPING), "-o", str(tmp_path), "--strict"]
    assert main(args) == 4


def test_the_shipped_library_maps_the_seed_under_strict(tmp_path: Path) -> None:
    """Every code the seed needs is verified (no unverified code left in mappings/)."""
    args = ["map", str(SEED_FILE), "-m", str(SEED_MAPPING), "-o", str(tmp_path), "--strict"]
    assert main(args) == 0
    assert not (tmp_path / "unverified-codes.json").exists()


def test_rejected_rows_stop_the_run_unless_told_to_continue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [str(FIXTURES / "bad" / "tables"), "-m", str(MAPPINGS / "centres" / "bad.yaml")]
    assert main(["map", *bad, "-o", str(tmp_path / "a")]) == 3
    err = capsys.readouterr().err
    assert "patients.csv [patients] row 3 column 'birth_date'" in err
    with (tmp_path / "a" / "rejects.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6  # 2 bad patient rows (their follow-up with them), 4 MRD rows
    assert main(["map", *bad, "-o", str(tmp_path / "b"), "--continue-on-error"]) == 0
    assert (tmp_path / "b" / "rejects.csv").exists()
    assert (tmp_path / "b" / "ndjson" / "Patient.ndjson").read_bytes().count(b"\n") == 2


def test_summary_from_ndjson_matches_the_paper(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["map", str(SEED_FILE), "-m", str(SEED_MAPPING), "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["summary", str(tmp_path / "ndjson"), "--json", "--study", "seed"]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert summary["median_follow_up_days"] == 497
    assert summary["relapses_cd19_negative"] == 3
    # without a study definition there is nothing to summarise by: a clear usage error
    assert main(["summary", str(tmp_path / "ndjson")]) == 2
    assert "--study" in capsys.readouterr().err


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_summary_plots_are_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["summary", str(SEED_FILE), "-m", str(SEED_MAPPING), "--plots", str(tmp_path)]
    assert main(args) == 0
    for name in ("swimmer.png", "swimmer.svg", "km.png", "km.svg"):
        assert (tmp_path / name).stat().st_size > 1000, name
    assert (tmp_path / "swimmer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Marschollek" in capsys.readouterr().out


def test_usage_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["map", str(tmp_path / "missing.xlsx"), "-o", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["map", str(SEED_FILE), "-o", str(tmp_path)]) == 2  # docs/cli.md: config error
    assert "--mapping" in capsys.readouterr().err
    assert main(["pull", "--server", "http://127.0.0.1:9/fhir", "--out", str(tmp_path)]) == 2
    assert main(["push", str(SEED_FILE), "-m", str(SEED_MAPPING), "--server", "nowhere"]) == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fhir-cart {version('fhir-cart')}"


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_flags_show_no_value_in_help_and_accept_a_written_boolean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["map", "--help"]) == 0
    assert "<bool>" not in capsys.readouterr().out
    args = ["map", str(SEED_FILE), "-m", str(SEED_MAPPING), "--bundle-size", "500"]
    assert main([*args, "-o", str(tmp_path / "a"), "--validate", "true"]) == 0
    assert main([*args, "-o", str(tmp_path / "b"), "--validate", "false"]) == 0
    assert main([*args, "-o", str(tmp_path / "c"), "--strict", "no"]) == 0


def test_written_booleans_are_read_without_building_the_commands_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--validate true` becomes `--validate`, `--strict no` goes; arguments with no such
    word are left as they are without building the command tree (`--help` builds it once)."""
    import typer

    from fhir_cart.cli.root import flag_values

    assert flag_values(["map", "x", "--validate", "true", "--strict", "no"]) == [
        "map",
        "x",
        "--validate",
    ]

    def refused(app: object) -> None:
        raise AssertionError("the command tree was built")

    monkeypatch.setattr(typer.main, "get_command", refused)
    assert flag_values(["--help"]) == ["--help"]
    assert flag_values(["map", "x", "-o", "out"]) == ["map", "x", "-o", "out"]


def test_openapi_writes_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no api/ folder here
    assert main(["openapi"]) == 0
    assert orjson.loads((tmp_path / "api" / "openapi.json").read_bytes())["openapi"]


def test_table_titles_do_not_wrap() -> None:
    from rich.console import Console

    from fhir_cart.cli.common import table as _table

    table = _table("push run 12 (transaction, 19 bundles)")
    table.add_column("outcome")
    table.add_row("created")
    console = Console(width=80, record=True)
    console.print(table)
    assert "push run 12 (transaction, 19 bundles)" in console.export_text()


def test_the_click_command_is_built_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer builds the click command from every command's signature; main built it twice
    a call (for ``--flag true`` and to run): now once per process."""
    import typer.main

    from fhir_cart.cli import root

    built: list[object] = []
    build = typer.main.get_command

    def counted(app: typer.Typer) -> object:
        built.append(app)
        return build(app)

    monkeypatch.setattr(typer.main, "get_command", counted)
    root._command.cache_clear()
    try:
        for _ in range(3):
            assert main(["map", "--help"]) == 0
    finally:
        root._command.cache_clear()
    assert built == [root.app]
