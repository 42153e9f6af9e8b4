"""``fhir-cart map``, ``summary``, ``codesystem`` and ``artefacts``: the study-side commands.

Each parses its arguments, calls the application and shows the outcome."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from fhir_cart.cli.common import (
    ContinueOpt,
    MappingOpt,
    StrictOpt,
    WorkersOpt,
    application,
    err,
    out,
    plural,
    report_rejects,
    table,
    warn,
    warn_unmapped,
    warn_unverified,
)
from fhir_cart.cli.common import workers as cli_workers
from fhir_cart.errors import FatalError

if TYPE_CHECKING:
    from fhir_cart.library.studies import StudyDefinition
    from fhir_cart.usecases.study import CasesRead

__all__ = [
    "artefacts_command",
    "cases_from_path",
    "codesystem_command",
    "map_command",
    "read_cases",
    "study_for",
    "summary_command",
    "views_command",
]


def read_cases(path: Path, mapping_file: Path | None) -> CasesRead:
    """A study file read with its mapping (CSV, XLSX, folder, JSON); unmapped columns
    warned about."""
    read = application().read(path, mapping_file)
    warn_unmapped(read.unmapped_columns)
    return read


def map_command(
    study_file: Annotated[Path, typer.Argument(help="Study file: .xlsx, .csv, folder, .json")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    mapping: MappingOpt = None,
    bundle_size: Annotated[int, typer.Option(help="Entries per transaction bundle.")] = 100,
    mode: Annotated[str, typer.Option(help="update (PUT) or create (POST ifNoneExist).")] = (
        "update"
    ),
    validate: Annotated[
        bool, typer.Option("--validate", help="Validate every resource with fhir.resources.")
    ] = False,
    strict: StrictOpt = False,
    keep_going: ContinueOpt = False,
    indent: Annotated[
        bool, typer.Option("--indent", help="Indent the bundles' JSON (compact by default).")
    ] = False,
    workers: WorkersOpt = None,
) -> None:
    """Map a study file to FHIR R4: transaction bundles and NDJSON, one file per type."""
    from fhir_cart.application import MapRequest

    if mode not in ("update", "create"):
        raise FatalError("--mode must be 'update' or 'create'", exit_code=2)
    request = MapRequest(
        study_file,
        out_dir,
        mapping,
        bundle_size=bundle_size,
        mode=mode,  # type: ignore[arg-type]
        validate=validate,
        strict=strict,
        indent=indent,
        workers=cli_workers(workers),
    )
    result, unverified = application().map(
        request,
        on_unmapped_columns=warn_unmapped,
        on_warnings=warn,
        check_rejects=lambda rejects: report_rejects(rejects, out_dir, keep_going),
    )
    warn_unverified(unverified)
    _print_counts(result.patients, result.counts, result.bundles, out_dir)


def _print_counts(patients: int, counts: dict[str, int], bundles: int, out_dir: Path) -> None:
    shown = table(f"{patients} patients mapped to FHIR R4")
    shown.add_column("resource type")
    shown.add_column("count", justify="right")
    for rtype, n in sorted(counts.items()):
        shown.add_row(rtype, str(n))
    shown.add_row("[bold]total[/bold]", str(sum(counts.values())))
    out.print(shown)
    out.print(
        f"{bundles} transaction bundles in {out_dir / 'bundles'}; NDJSON in {out_dir / 'ndjson'}"
    )


def cases_from_path(path: Path, mapping_file: Path | None, keep_going: bool) -> CasesRead:
    """Cases from a study file, or from FHIR NDJSON (file or folder) by reverse mapping."""
    read = application().read(path, mapping_file, fhir=True)
    warn_unmapped(read.unmapped_columns)
    report_rejects(read.rejects, None, keep_going)
    return read


def study_for(study: str | None, mapping: Any) -> StudyDefinition | None:
    """The study definition named on the command line, else the one the mapping names."""
    name = study or getattr(mapping, "study", None)
    return None if name is None else application().study(name, mapping)


def summary_command(
    source: Annotated[Path, typer.Argument(help="Study file, or FHIR NDJSON file/folder.")],
    mapping: MappingOpt = None,
    study: Annotated[
        str | None,
        typer.Option(
            "--study",
            help="Study definition: a name in mappings/studies/ or a path (default: the "
            "mapping's `study`).",
        ),
    ] = None,
    paper: Annotated[
        bool, typer.Option("--paper", help="Show the numbers the study reports beside.")
    ] = False,
    plots: Annotated[
        Path | None,
        typer.Option("--plots", help="Write a swimmer plot and Kaplan-Meier curves (PNG, SVG)."),
    ] = None,
    study_titles: Annotated[
        bool,
        typer.Option(
            "--study-titles",
            help="Title the plots with the study file's own titles (they describe the "
            "study's cohort); by default the titles name SOURCE.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    keep_going: ContinueOpt = False,
) -> None:
    """Print the measures a case-series paper reports, as the study definition says."""
    import orjson

    from fhir_cart.report.tables import summary_table

    read = cases_from_path(source, mapping, keep_going)
    for item in read.unmapped:
        err.print(f"[yellow]not mapped[/yellow] {item.reference}: {escape(item.reason)}")
    definition = study_for(study, read.mapping)
    if definition is None:
        raise FatalError(
            "name a study definition with --study (a file in mappings/studies/ or a path), "
            "or set `study:` in the mapping file",
            exit_code=2,
        )
    about = None if study_titles else f"file {source.name}"
    done = application().summary(
        read.cases, definition, plots=plots, mapping=read.mapping, about=about
    )
    warn(done.warnings)
    for path in done.plots:
        err.print(f"wrote {path}")
    if plots is not None and not done.plots:
        err.print(_no_plots(definition), highlight=False)
    if as_json:
        for result in done.results:  # stdout keeps its shape; the caveat goes beside it
            if result.partial:
                err.print(
                    f"[yellow]{result.id}[/yellow] rests on a partial date (a year or a "
                    f"month) for {', '.join(result.partial)}"
                )
        data = {r.id: r.value for r in done.results}
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    out.print(summary_table(done.results, paper, definition.name))


def _no_plots(definition: StudyDefinition) -> str:
    """Why ``--plots`` wrote nothing."""
    if definition.plots.swimmer is None and not definition.plots.survival:
        return (
            f"no plots written: the study {definition.name!r} defines none (add a `plots:` "
            "section with `swimmer` or `survival` to its study file: docs/study-file.md)"
        )
    return (
        "no plots written: no patient has the days the study's plots need (the anchor "
        f"{definition.anchor!r} and an end or event with an exact date)"
    )


def codesystem_command(
    out_file: Annotated[Path | None, typer.Option("--out", "-o")] = None,
) -> None:
    """Export the project's own code system as a FHIR CodeSystem resource."""
    import orjson

    resource = application().own_code_system()
    data = orjson.dumps(resource, option=orjson.OPT_INDENT_2)
    if out_file is None:
        sys.stdout.write(data.decode() + "\n")
    else:
        out_file.write_bytes(data)


def artefacts_command(
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder of the package (checked in).")
    ] = Path("api/fhir"),
    check: Annotated[
        bool, typer.Option("--check", help="Only compare with the folder; exit 1 on a difference.")
    ] = False,
    server: Annotated[
        str | None, typer.Option("--server", "-s", help="Also PUT them to this server.")
    ] = None,
    mapping_file: Annotated[
        Path | None,
        typer.Option(
            "--mapping", "-m", help="A study's mapping: package only what it adds to the library."
        ),
    ] = None,
) -> None:
    """Write the conformance artefacts as a FHIR NPM package (package/package.json,
    .index.json, an ImplementationGuide, StructureDefinitions with snapshots, CodeSystems,
    ValueSets, ConceptMaps) and its data dictionary, generated from the mapping data; push
    the resources with --server (PUT <type>/<id>, so a re-push updates the same resources)."""
    import asyncio

    from fhir_cart.conformance.package import stale_files, write_files

    app = application()
    package = app.artefacts(mapping_file)
    wanted = app.artefact_files(package)
    if check:
        stale = stale_files(out_dir, wanted)
        if stale:
            err.print(f"{out_dir}: out of date (run fhir-cart artefacts): {', '.join(stale)}")
            raise typer.Exit(1)
        out.print(f"{out_dir}: {len(wanted)} files up to date")
        return
    if server is None:
        write_files(out_dir, wanted)
        out.print(f"wrote package {package.package_id} ({len(wanted)} files) to {out_dir}")
        return
    out.print(f"pushed {asyncio.run(app.put_artefacts(server, package))} artefacts to {server}")


def views_command(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder of the ViewDefinitions.")],
    centre: Annotated[str, typer.Option(help="Centre id for patients without one.")] = "ehr",
) -> None:
    """Write the study tables as SQL-on-FHIR v2 ViewDefinitions (one JSON file per table),
    generated from the concept library, for any SQL-on-FHIR engine to run."""
    written = application().views(out_dir, default_centre=centre)
    out.print(f"wrote {plural(len(written), 'ViewDefinition')} to {out_dir}")
