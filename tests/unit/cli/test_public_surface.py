"""The public surface is frozen: the ``--help`` text of ``fhir-cart`` and of every command
(registry and fhir-server commands included), and the OpenAPI document the service publishes.

A change to a help text or to the API is a change users see: regenerate the golden files
with ``FHIR_CART_UPDATE_HELP=1 .venv/bin/pytest tests/unit/cli/test_public_surface.py`` (or
``fhir-cart openapi``) and review the diff in the same commit as the change.

The help is rendered at a fixed width (100 columns, no colour) so the files do not depend on
the terminal the tests run in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import ROOT

HELP = ROOT / "tests" / "data" / "help"


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the CLI, as argument paths (``()`` is fhir-cart itself)."""
    import click
    import typer

    from fhir_cart.cli import app

    root = typer.main.get_command(app)
    found: list[tuple[str, ...]] = []

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        found.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, (*path, name))

    walk(root, ())
    return found


def _golden(path: tuple[str, ...]) -> Path:
    return HELP / ("-".join(["fhir-cart", *path]) + ".txt")


def _help(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> str:
    from typer.testing import CliRunner

    from fhir_cart.cli import app

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("TERMINAL_WIDTH", "100")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="fhir-cart", color=False)
    assert result.exit_code == 0, result.output
    return "\n".join(line.rstrip() for line in result.output.splitlines()) + "\n"


def test_the_command_tree_is_the_one_the_golden_files_cover() -> None:
    """A command added or removed shows here: its golden help file is missing or left over."""
    paths = _command_paths()
    assert ("registry", "build") in paths
    assert ("fhir-server", "start") in paths
    wanted = {_golden(p).name for p in paths}
    present = {p.name for p in HELP.glob("*.txt")}
    if os.environ.get("FHIR_CART_UPDATE_HELP"):
        for name in present - wanted:
            (HELP / name).unlink()
        return
    assert wanted == present, (
        f"missing: {sorted(wanted - present)}; left over: {sorted(present - wanted)} "
        "(FHIR_CART_UPDATE_HELP=1 regenerates them)"
    )


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "fhir-cart")
def test_help_text_is_unchanged(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    text = _help(path, monkeypatch)
    golden = _golden(path)
    if os.environ.get("FHIR_CART_UPDATE_HELP"):
        HELP.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"{golden.name} missing (FHIR_CART_UPDATE_HELP=1 writes it)"
    assert text == golden.read_text(encoding="utf-8"), (
        f"`fhir-cart {' '.join(path)} --help` changed; if on purpose, regenerate "
        f"{golden.relative_to(ROOT)} with FHIR_CART_UPDATE_HELP=1 and review the diff"
    )


def test_the_openapi_command_writes_the_published_document_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_cart.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FHIR_CART_DATA_DIR", str(tmp_path / "data"))
    written = tmp_path / "openapi.json"
    assert main(["openapi", "--out", str(written)]) == 0
    assert written.read_bytes() == (ROOT / "api" / "openapi.json").read_bytes(), (
        "api/openapi.json differs from the service's document: run `fhir-cart openapi`"
    )
