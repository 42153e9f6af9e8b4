"""``fhir-cart library check FILE``: a study's own library file checked before any data is
read (docs/mapping-file.md, "A study's own library file")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fhir_cart.cli.common import application, err, out
from fhir_cart.errors import FatalError

__all__ = ["library_app"]

library_app = typer.Typer(
    help="Check a study's own library file (concepts it adds to the shipped library).",
    no_args_is_help=True,
)


@library_app.callback()
def _library() -> None:
    """Check a study's own library file (concepts it adds to the shipped library)."""


def check_command(
    file: Annotated[Path, typer.Argument(help="The study's library file (YAML).")],
) -> None:
    """Say what a study's library file adds, where its codes and extensions are published,
    and what is refused (unknown value sets, keys the shipped library has, values outside a
    bound mCODE value set), before any data is read. Exit 2 when something is refused."""
    report = application().check_library(file)
    for note in report.notes:
        out.print(escape(note))
    for warning in report.warnings:
        err.print(f"[yellow]warning[/yellow]: {escape(warning)}")
    for problem in report.problems:
        err.print(f"[red]refused[/red]: {escape(problem)}")
    if report.problems:
        raise FatalError(
            f"library file {file}: {len(report.problems)} problems; nothing was read",
            exit_code=2,
        )
    out.print(f"library file {file}: ok")
