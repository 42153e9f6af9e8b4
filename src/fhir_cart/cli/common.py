"""What every ``fhir-cart`` command shares: the command classes, the consoles, the options
several commands take, and how rejects, warnings and counts are shown.

Loads nothing heavy: ``fhir-cart --help`` imports every command module to build the help,
so the application, the study reader, the mappers and the cache load only inside a command
(``tests/unit/test_import_cycles.py`` checks it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption

from fhir_cart.errors import ConfigError, InputError, Reject

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table

    from fhir_cart.application import Application

__all__ = [
    "CacheOpt",
    "Command",
    "ContinueOpt",
    "Group",
    "MappingOpt",
    "ServerOpt",
    "StrictOpt",
    "application",
    "err",
    "out",
    "plural",
    "progress",
    "report_rejects",
    "table",
    "warn",
    "warn_unmapped",
    "warn_unverified",
]


def _no_flag_metavar(params: list[Any]) -> list[Any]:
    """Flags show no value placeholder in help (typer 0.29 prints ``<bool>`` beside
    ``--validate``, which reads as if it took a value)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_metavar(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_metavar(super().get_params(ctx))


out = Console()
err = Console(stderr=True, soft_wrap=True)  # messages name files: never break a path

MappingOpt = Annotated[
    Path | None,
    typer.Option("--mapping", "-m", help="Centre mapping YAML (not needed for canonical JSON)."),
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Refuse unverified codes instead of warning.")
]
ContinueOpt = Annotated[
    bool,
    typer.Option(
        "--continue-on-error",
        help="Go on past rejected rows (they are written to rejects.csv) and exit 0.",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Processes to map with (default: the number of cores); the "
        "output is the same bytes whatever the number.",
    ),
]


def workers(asked: int | None) -> int:
    """``--workers``, else the number of cores."""
    import os

    return asked if asked is not None else (os.cpu_count() or 1)


ServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        "-s",
        help="Server name from settings (credentials live there), or a URL needing no auth.",
    ),
]
CacheOpt = Annotated[
    str | None,
    typer.Option(
        "--cache",
        help="Cache database URL (default: settings' cache_url, else SQLite in data_dir).",
    ),
]


def table(title: str) -> Table:
    """A table at least as wide as its title, so the title never wraps mid-phrase."""
    from rich.table import Table

    return Table(title=title, min_width=len(title) + 2)


def application() -> Application:
    """The application under the settings of this run (environment and fhir-cart.yaml);
    settings that do not validate are a configuration error, exit code 2."""
    from pydantic import ValidationError

    from fhir_cart.application import Application
    from fhir_cart.settings import load_settings

    try:
        return Application(load_settings())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"settings are invalid: {problems}") from exc


def warn(warnings: Sequence[str]) -> None:
    for warning in warnings:
        err.print(f"[yellow]warning[/yellow] {escape(warning)}", highlight=False)


def warn_unmapped(columns: Sequence[Any]) -> None:
    for where in columns:
        err.print(
            f"[yellow]warning[/yellow] column not mapped: {escape(str(where))} "
            "(map it, or list it under `ignore:` with the reason)",
            highlight=False,
        )


def report_rejects(rejects: Sequence[Reject], out_dir: Path | None, keep_going: bool) -> None:
    if not rejects:
        return
    for reject in rejects[:50]:
        err.print(f"[red]rejected[/red] {escape(reject.describe())}", highlight=False)
    if len(rejects) > 50:
        err.print(f"... and {len(rejects) - 50} more")
    if out_dir is not None:
        from fhir_cart.writers import write_rejects

        out_dir.mkdir(parents=True, exist_ok=True)
        write_rejects(rejects, out_dir / "rejects.csv")
        err.print(f"{len(rejects)} rejected; all listed in {out_dir / 'rejects.csv'}")
    if not keep_going:
        raise InputError(f"{len(rejects)} rows or values rejected", list(rejects), listed=True)


def warn_unverified(unverified: Sequence[dict[str, Any]]) -> None:
    for item in unverified:
        err.print(
            f"[yellow]warning[/yellow] unverified code {item['code']} emitted for "
            f"{item['concept']} (see mappings/terminology.yaml; --strict refuses it)"
        )


def progress() -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
