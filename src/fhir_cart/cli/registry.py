"""``fhir-cart registry ...``: build a registry from its registry file (docs/registry.md).

Only parses, shows progress and prints the outcome; the work is the application layer's
:meth:`fhir_cart.application.Application.registry_build`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fhir_cart.cli.common import out

if TYPE_CHECKING:  # the build (pyarrow, splink) loads when a registry command runs
    from rich.progress import TaskID

    from fhir_cart.registry.build import BuildResult
    from fhir_cart.registry.links import Link


__all__ = ["registry_app"]

registry_app = typer.Typer(
    help="Pool several centres into one pseudonymised, linked registry.", no_args_is_help=True
)


@registry_app.callback()
def registry_group() -> None:
    """Pool several centres into one pseudonymised, linked registry (docs/registry.md)."""


_STEPS = {"read": "reading centres", "link": "linking patients", "merge": "merging and protecting"}


@registry_app.command("build")
def build_command(
    registry_file: Annotated[Path, typer.Argument(help="The registry file (registry.yaml).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder of the registry.")],
    push: Annotated[
        str | None,
        typer.Option(help="Push the registry to this server (a name in settings, or a URL)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Build even when no input changed.")] = False,
    work: Annotated[
        Path | None,
        typer.Option(
            help="Working copy of the centres' records (default: <data_dir>/registry/<id>); "
            "it holds source records: keep it beside the centre files, not the output."
        ),
    ] = None,
    spark: Annotated[bool, typer.Option(help="Link on Spark instead of DuckDB.")] = False,
    allow_new_key: Annotated[
        bool,
        typer.Option(
            help="Push even though the key changed since the last push to this server and "
            "the server still holds the old key's patients (they stay: both sets)."
        ),
    ] = False,
) -> None:
    """Read every centre, pseudonymise, link, merge, and write tables, reports and FHIR.

    The key comes from FHIR_CART_REGISTRY_KEY (or registry_key in settings)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fhir_cart.application import Application, BuildRequest

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def step(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(_STEPS.get(name, name), total=total)
            progress.update(tasks[name], completed=done, total=total)

        request = BuildRequest(
            registry_file,
            out_dir,
            push=push,
            force=force,
            spark=spark,
            work=work,
            progress=step,
            allow_new_key=allow_new_key,
        )
        result, pushed = Application().registry_build(request)
    _report(result, pushed, _registry_name(registry_file))


def _registry_name(registry_file: Path) -> str:
    from fhir_cart.registry.definition import load_registry

    return load_registry(registry_file).name


@registry_app.command("extract")
def extract_command(
    centre_file: Annotated[Path, typer.Argument(help="The centre's own study file or folder.")],
    mapping: Annotated[Path, typer.Option(help="The centre's mapping file.")],
    registry_file: Annotated[
        Path, typer.Option("--registry", help="The registry file (registry.yaml).")
    ],
    centre: Annotated[str, typer.Option(help="This centre's id in the registry file.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="The extract to write (.zip).")],
) -> None:
    """At a centre: write the pseudonymised extract the centre sends to the registry.

    Names and identifiers only as keyed tokens, dates moved by the registry's keyed offset,
    open text withheld, rows as keyed tokens (docs/registry.md, "Centre-side extracts").
    Needs the registry key (FHIR_CART_REGISTRY_KEY)."""
    from fhir_cart.application import Application

    result = Application().registry_extract(centre_file, mapping, registry_file, centre, out_file)
    out.print(
        f"{result.out}: extract of centre {centre}, {result.records} records "
        f"({result.rejects} rejected values, counted by field), key fingerprint "
        f"{result.key_fingerprint}",
        highlight=False,
    )


@registry_app.command("resolve")
def resolve_command(
    registry_file: Annotated[Path, typer.Argument(help="The registry file (registry.yaml).")],
    tokens: Annotated[list[str], typer.Argument(help="Row tokens from Provenance (s...).")],
    centre: Annotated[
        list[str] | None,
        typer.Option(
            help="Only this centre (repeatable; default: every centre whose file is here)."
        ),
    ] = None,
) -> None:
    """At a centre: print the file, sheet and row each Provenance row token stands for.

    Needs the registry key (FHIR_CART_REGISTRY_KEY) and the centre's own file and mapping,
    as named in the registry file. Exit code 1 when a token matches no row read here."""
    from fhir_cart.application import Application

    found = Application().registry_resolve(registry_file, tokens, centre or ())
    for token, where in found.items():
        out.print(
            f"{token}: "
            + ("not a row of the files read here" if where is None else f"{where[0]}: {where[1]}"),
            highlight=False,
        )
    if any(where is None for where in found.values()):
        raise typer.Exit(1)


@registry_app.command("decide")
def decide_command(
    registry_file: Annotated[Path, typer.Argument(help="The registry file (registry.yaml).")],
    left: Annotated[str, typer.Argument(help="One record's pseudonym (p..., as review.csv).")],
    right: Annotated[str, typer.Argument(help="The other record's pseudonym.")],
    link: Annotated[
        bool, typer.Option("--link/--no-link", help="Must link, or must not link.")
    ] = ...,  # type: ignore[assignment]
    by: Annotated[str, typer.Option(help="Who decides (kept with the decision).")] = ...,  # type: ignore[assignment]
) -> None:
    """Decide a pair of centre records: one patient (--link) or not (--no-link).

    Kept in the registry's decisions file (linkage.decisions, default decisions.csv beside
    the registry file) with who and when; every later build honours it."""
    from fhir_cart.application import Application

    done = Application().registry_decide(registry_file, left, right, link=link, by=by)
    verb = "one patient" if link else "not one patient"
    out.print(f"{done.path.name}: {done.left} and {done.right}: {verb} (by {by})", highlight=False)


def _report(result: BuildResult, pushed: str | None, name: str) -> None:
    from rich.table import Table

    if result.skipped:
        out.print(f"{result.out}: up to date (no input changed); nothing written")
    for note in result.notes:
        out.print(note, highlight=False)
    registry = result.registry
    if registry is not None:
        table = Table(title=name, caption=f"written to {result.out}")
        table.add_column("centre")
        table.add_column("records", justify="right")
        table.add_column("completeness (mean)", justify="right")
        table.add_column("unmapped words", justify="right")
        for centre, count in registry.centre_records.items():
            quality = registry.quality.get(centre, {})
            values = list(quality.get("completeness", {}).values()) or [0.0]
            words = sum(quality.get("unmapped_words", {}).values())
            table.add_row(centre, str(count), f"{sum(values) / len(values):.0%}", str(words))
        out.print(table)
        out.print(
            f"{registry.patient_count} patients ({registry.shared_count} in more than one "
            "centre), "
            f"{_pairs(registry.links)} links, {len(registry.conflicts)} conflicts "
            f"(reports/conflicts.csv), quality in reports/quality.json"
        )
        if registry.review:
            out.print(
                f"{len(registry.review)} pairs for people to decide (reports/review.csv): "
                "fhir-cart registry decide REGISTRY LEFT RIGHT --link/--no-link --by NAME"
            )
    if pushed:
        out.print(pushed)


def _pairs(links: Sequence[Link]) -> int:
    """Pairs of records linked, each once: a pair an identifier and splink both link is
    one link."""
    return len({(min(k.left, k.right), max(k.left, k.right)) for k in links})
