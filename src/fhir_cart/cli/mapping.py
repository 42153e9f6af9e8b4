"""``fhir-cart mapping suggest FILE --out M.yaml``: the mapping assistant in a shell.

Only parses, prints and writes; the suggestions and the draft are the application layer's
(:meth:`fhir_cart.application.Application.suggest_mapping`, ``draft_mapping``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from fhir_cart.cli.common import err, out, table

if TYPE_CHECKING:
    from fhir_cart.application import FileSuggestions

__all__ = ["mapping_app"]

mapping_app = typer.Typer(
    help="Write a mapping file: suggestions for a table that has none.", no_args_is_help=True
)


@mapping_app.callback()
def mapping_group() -> None:
    """Write a mapping file: suggestions for a table that has none (docs/mapping-file.md)."""


def default_centre(path: Path) -> str:
    """A centre id from the file's name (lower-case letters, digits and '-')."""
    slug = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")[:32].strip("-")
    return slug or "centre"


@mapping_app.command("suggest")
def suggest_command(
    study_file: Annotated[Path, typer.Argument(help="The table: a .csv file or .xlsx workbook.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="The draft mapping to write.")],
    centre: Annotated[
        str | None, typer.Option(help="Centre id in the mapping (default: from the file name).")
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="Study definition it belongs to (a name in studies/).")
    ] = None,
    anchor: Annotated[
        str | None, typer.Option(help="Concept that relative days count from (e.g. hsct).")
    ] = None,
    library: Annotated[
        Path | None,
        typer.Option(
            help="A study's own library file: its concepts and words are suggested like "
            "shipped ones, and the draft names it (library:)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
) -> None:
    """Suggest each column's concept and each cell word's value from the header, the cells
    and the concept library, and write a draft mapping: columns the assistant is not sure
    of are left under ignore: with a comment naming the candidates."""
    from fhir_cart.cli.common import application
    from fhir_cart.errors import ConfigError

    if out_file.exists() and not force:
        raise ConfigError(f"{out_file} exists; give --force to overwrite it")
    app = application()
    suggestions = app.suggest_mapping(study_file, library)
    _print(suggestions)
    text = app.draft_mapping(
        suggestions,
        suggestions.choices(),
        centre=centre or default_centre(study_file),
        study=study,
        anchor=anchor,
        library=library,
        library_ref=_from(library, out_file.parent) if library is not None else None,
    )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text, encoding="utf-8")
    app.load_mapping(out_file)  # what was written loads as a mapping
    unsure = sum(1 for c in suggestions.columns if c.choice is None)
    err.print(
        f"wrote {escape(str(out_file))}: {len(suggestions.columns) - unsure} column(s) mapped, "
        f"{unsure} left for you (under ignore:); check it with "
        f"fhir-cart summary {escape(str(study_file))} -m {escape(str(out_file))}",
        highlight=False,
    )


def _from(path: Path, folder: Path) -> str:
    """``path`` as the mapping file in ``folder`` names it (relative where it can be)."""
    import os

    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive
        return str(path.resolve())


def _print(suggestions: FileSuggestions) -> None:
    shown = table(f"Suggestions for {suggestions.table.name}")
    for name in ("column", "cells", "suggestion", "score", "codes"):
        shown.add_column(name)
    for column in suggestions.columns:
        best = column.candidates[0] if column.candidates else None
        if column.choice is None:
            what = "[yellow]left for you[/yellow]" + (
                f" (maybe {escape(best.label)})" if best else ""
            )
        else:
            assert best is not None
            what = escape(f"{best.label} -> {column.field or column.choice}")
        shown.add_row(
            escape(column.header),
            column.kind,
            what,
            f"{best.score:.2f}" if best else "",
            escape("; ".join(best.codes[:2])) if best and column.choice else "",
        )
    out.print(shown)
    for note in suggestions.notes:
        err.print(f"[yellow]note[/yellow] {escape(note)}", highlight=False)
