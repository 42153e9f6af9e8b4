"""The ``fhir-cart`` command line. ``main(argv)`` is what tests call; errors end here.

Every command reports rejected input with file, row, column, value and reason, and exits
non-zero unless told to continue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperCommand, TyperGroup, TyperOption

from fhir_cart.application import Application
from fhir_cart.bundle import read_ndjson
from fhir_cart.errors import (
    ConfigError,
    FatalError,
    FhirClientError,
    InputError,
    Reject,
    RetryableError,
)
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import ReverseResult, Unmapped, cases_from_fhir
from fhir_cart.records import Case
from fhir_cart.settings import load_settings
from fhir_cart.summary import (
    StudyDefinition,
    missing_anchor,
    summarise,
    unmatched_text_tests,
)
from fhir_cart.tables import summary_table

if TYPE_CHECKING:  # the sync modules load the cache (SQLAlchemy): only for push and pull
    from fhir_cart.sync.accounting import TypeCount
    from fhir_cart.sync.jobs import PullOutcome
    from fhir_cart.sync.pull import PullSelection
    from fhir_cart.sync.push import PushPlan, PushReport

__all__ = ["app", "main"]


def _no_flag_metavar(params: list[Any]) -> list[Any]:
    """Flags show no value placeholder in help (typer 0.29 prints ``<bool>`` beside
    ``--validate``, which reads as if it took a value)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_metavar(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_metavar(super().get_params(ctx))


app = typer.Typer(
    cls=_Group,
    name="fhir-cart",
    help="Move clinical case-series data between study format and FHIR R4.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

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
        "--workers", min=1, help="Processes to map with (default: the number of cores); the "
        "output is the same bytes whatever the number.",
    ),
]  # fmt: skip


def _workers(asked: int | None) -> int:
    return asked if asked is not None else (os.cpu_count() or 1)


def _table(title: str) -> Table:
    """A table at least as wide as its title, so the title never wraps mid-phrase."""
    return Table(title=title, min_width=len(title) + 2)


def _app() -> Application:
    """The application under the settings of this run (environment and fhir-cart.yaml);
    settings that do not validate are a configuration error, exit code 2."""
    try:
        return Application(load_settings())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"settings are invalid: {problems}") from exc


def _context(strict: bool, mapping: Any = None) -> MappingContext:
    """The mapping context: settings' mappings folder, ``--strict`` or settings'
    ``strict_terminology``, and the centre mapping's own identifier base and concepts."""
    return _app().mapping_context(mapping, strict=strict)


def read_cases(path: Path, mapping_file: Path | None) -> tuple[list[Case], list[Reject], Any]:
    """Read a study file with its mapping (CSV, XLSX, JSON)."""
    from fhir_cart.mapjob import open_study

    _app()  # settings first: their mappings folder is where mappings are read
    stream, mapping = open_study(path, mapping_file)
    _warn_unmapped(stream.unmapped_columns)
    cases = list(stream)
    return cases, stream.rejects, mapping


def _warn(warnings: Sequence[str]) -> None:
    for warning in warnings:
        err.print(f"[yellow]warning[/yellow] {escape(warning)}", highlight=False)


def _warn_unmapped(columns: Sequence[Any]) -> None:
    for where in columns:
        err.print(
            f"[yellow]warning[/yellow] column not mapped: {escape(str(where))} "
            "(map it, or list it under `ignore:` with the reason)",
            highlight=False,
        )


def _report_rejects(rejects: Sequence[Reject], out_dir: Path | None, keep_going: bool) -> None:
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


def _warn_unverified(ctx: MappingContext) -> None:
    for item in ctx.terminology.unverified_report():
        err.print(
            f"[yellow]warning[/yellow] unverified code {item['code']} emitted for "
            f"{item['concept']} (see mappings/terminology.yaml; --strict refuses it)"
        )


@app.command("map", cls=_Command)
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
) -> None:
    """Map a study file to FHIR R4: transaction bundles and NDJSON, one file per type."""
    from fhir_cart.mapjob import open_study, run_map

    if mode not in ("update", "create"):
        raise FatalError("--mode must be 'update' or 'create'", exit_code=2)
    application = _app()  # settings first: their mappings folder is where mappings are read
    stream, study_mapping = open_study(study_file, mapping)
    _warn_unmapped(stream.unmapped_columns)
    ctx = application.mapping_context(study_mapping, strict=strict)

    def extras(folder: Path) -> None:
        _write_code_system(ctx, folder)
        unverified = ctx.terminology.unverified_report()
        if unverified:
            (folder / "unverified-codes.json").write_bytes(
                orjson.dumps(unverified, option=orjson.OPT_INDENT_2)
            )

    anchor = application.anchor_of(study_mapping)

    def check_anchor(case: Case) -> None:
        if anchor is not None:
            _warn(missing_anchor([case], anchor))

    result = run_map(
        stream, ctx, out_dir, bundle_size=bundle_size, mode=mode,  # type: ignore[arg-type]
        validate=validate, write_extras=extras, on_case=check_anchor, indent=indent,
        check_rejects=lambda rejects: _report_rejects(rejects, out_dir, keep_going),
    )  # fmt: skip
    _warn_unverified(ctx)
    _print_counts(result.patients, result.counts, result.bundles, out_dir)


def _write_code_system(ctx: MappingContext, out_dir: Path) -> None:
    from fhir_cart.conformance.artefacts import own_code_system

    resource = own_code_system(ctx)
    (out_dir / "CodeSystem-fhir-cart.json").write_bytes(
        orjson.dumps(resource, option=orjson.OPT_INDENT_2)
    )


def _print_counts(patients: int, counts: dict[str, int], bundles: int, out_dir: Path) -> None:
    table = _table(f"{patients} patients mapped to FHIR R4")
    table.add_column("resource type")
    table.add_column("count", justify="right")
    for rtype, n in sorted(counts.items()):
        table.add_row(rtype, str(n))
    table.add_row("[bold]total[/bold]", str(sum(counts.values())))
    out.print(table)
    out.print(
        f"{bundles} transaction bundles in {out_dir / 'bundles'}; NDJSON in {out_dir / 'ndjson'}"
    )


def _fhir_paths(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(path.glob("*.ndjson"))
        return found or sorted((path / "ndjson").glob("*.ndjson"))
    return [path] if path.suffix == ".ndjson" else []


def cases_from_path(
    path: Path, mapping_file: Path | None, keep_going: bool
) -> tuple[list[Case], list[Unmapped], Any]:
    """Cases from a study file, or from FHIR NDJSON (file or folder) by reverse mapping;
    with the mapping read (None for FHIR input)."""
    fhir_paths = _fhir_paths(path)
    if fhir_paths:
        ctx = _app().pull_context()
        result: ReverseResult = cases_from_fhir(ctx, read_ndjson(fhir_paths))
        return result.cases, result.unmapped, None
    cases, rejects, mapping = read_cases(path, mapping_file)
    _report_rejects(rejects, None, keep_going)
    return cases, [], mapping


def study_for(study: str | None, mapping: Any) -> StudyDefinition | None:
    """The study definition named on the command line, else the one the mapping names."""
    name = study or getattr(mapping, "study", None)
    return None if name is None else _app().study(name)


@app.command("summary", cls=_Command)
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    keep_going: ContinueOpt = False,
) -> None:
    """Print the measures a case-series paper reports, as the study definition says."""
    cases, unmapped, study_mapping = cases_from_path(source, mapping, keep_going)
    for item in unmapped:
        err.print(f"[yellow]not mapped[/yellow] {item.reference}: {escape(item.reason)}")
    definition = study_for(study, study_mapping)
    if definition is None:
        raise FatalError(
            "name a study definition with --study (a file in mappings/studies/ or a path), "
            "or set `study:` in the mapping file",
            exit_code=2,
        )
    results = summarise(cases, definition)
    _warn(missing_anchor(cases, definition.anchor))
    _warn(unmatched_text_tests(cases, definition))
    if plots is not None:
        from fhir_cart.plots import write_plots

        for path in write_plots(cases, definition, plots):
            err.print(f"wrote {path}")
    if as_json:
        for result in results:  # stdout keeps its shape; the caveat goes beside it
            if result.partial:
                err.print(f"[yellow]{result.id}[/yellow] rests on a partial date (a year or a "
                          f"month) for {', '.join(result.partial)}")  # fmt: skip
        data = {r.id: r.value for r in results}
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    out.print(summary_table(results, paper, definition.name))


@app.command("codesystem", cls=_Command)
def codesystem_command(
    out_file: Annotated[Path | None, typer.Option("--out", "-o")] = None,
) -> None:
    """Export the project's own code system as a FHIR CodeSystem resource."""
    from fhir_cart.conformance.artefacts import own_code_system

    resource = own_code_system(_context(False))
    data = orjson.dumps(resource, option=orjson.OPT_INDENT_2)
    if out_file is None:
        sys.stdout.write(data.decode() + "\n")
    else:
        out_file.write_bytes(data)


@app.command("artefacts")
def artefacts_command(
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder of the artefacts (checked in).")
    ] = Path("api/fhir"),
    check: Annotated[
        bool, typer.Option("--check", help="Only compare with the folder; exit 1 on a difference.")
    ] = False,
    server: Annotated[
        str | None, typer.Option("--server", "-s", help="Also PUT them to this server.")
    ] = None,
) -> None:
    """Write the conformance artefacts (extension StructureDefinitions, the own CodeSystem,
    ValueSets, per-centre ConceptMaps) generated from the mapping data; push them with
    --server (PUT <type>/<id>, so a re-push updates the same resources)."""
    from fhir_cart.conformance.artefacts import build_artefacts, load_centres

    application = _app()
    ctx = application.mapping_context()
    artefacts = build_artefacts(ctx, load_centres(application.mappings_dir / "centres"))
    option = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    wanted = {a.filename: orjson.dumps(a.resource, option=option) + b"\n" for a in artefacts}
    if check:
        present = {p.name for p in out_dir.glob("*.json")} if out_dir.is_dir() else set()
        stale = sorted(
            name
            for name in present | set(wanted)
            if name not in wanted
            or name not in present
            or (out_dir / name).read_bytes() != wanted[name]
        )
        if stale:
            err.print(f"{out_dir}: out of date (run fhir-cart artefacts): {', '.join(stale)}")
            raise typer.Exit(1)
        out.print(f"{out_dir}: {len(wanted)} artefacts up to date")
        return
    if server is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("*.json"):
            if old.name not in wanted:
                old.unlink()
        for name, data in wanted.items():
            (out_dir / name).write_bytes(data)
        out.print(f"wrote {len(wanted)} artefacts to {out_dir}")
        return

    async def put_all() -> int:
        async with application.client(server) as client:
            for artefact in artefacts:
                r = artefact.resource
                response = await client.request(
                    "PUT", f"{r['resourceType']}/{r['id']}", body=r, idempotent=True
                )
                if response.status_code >= 300:
                    raise FatalError(
                        f"PUT {r['resourceType']}/{r['id']}: HTTP {response.status_code}"
                    )
        return len(artefacts)

    out.print(f"pushed {asyncio.run(put_all())} artefacts to {server}")


# -- sync -------------------------------------------------------------------------------------

ServerOpt = Annotated[
    str,
    typer.Option(
        "--server", "-s",
        help="Server name from settings (credentials live there), or a URL needing no auth.",
    ),
]  # fmt: skip
CacheOpt = Annotated[
    str | None,
    typer.Option(
        "--cache",
        help="Cache database URL (default: settings' cache_url, else SQLite in data_dir).",
    ),
]


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


@app.command("push", cls=_Command)
def push_command(
    study_file: Annotated[Path, typer.Argument(help="Study file: .xlsx, .csv, folder, .json")],
    server: ServerOpt,
    mapping: MappingOpt = None,
    cache_url: CacheOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; send nothing.")
    ] = False,
    strict: StrictOpt = False,
    keep_going: ContinueOpt = False,
) -> None:
    """Push a cohort: only what changed since the last push, as conditional updates."""
    application = _app()
    cases, rejects, study_mapping = read_cases(study_file, mapping)
    target = application.server(server)
    with application.opened_cache(cache_url) as cache:
        application.keep_rejects(cache, rejects)
        _report_rejects(rejects, application.data_dir, keep_going)
        with _progress() as progress:
            task = progress.add_task("pushing bundles", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            pushed = asyncio.run(
                application.push(cases, mapping=study_mapping, server=target, cache=cache,
                                 strict=strict, dry_run=dry_run, on_bundle_done=advance,
                                 rejects=rejects, continue_on_error=keep_going)
            )  # fmt: skip
        _warn_unverified(pushed.ctx)
        _print_push(pushed.plan, pushed.report)
    report = pushed.report
    if report is not None and report.failures:
        from fhir_cart.sync.push import failure_causes

        causes = len(failure_causes(report.failures))
        raise FatalError(
            f"{len(report.failures)} resources failed ({causes} "
            f"{'cause' if causes == 1 else 'causes'}); see above",
            exit_code=5,
        )


def _print_push(plan: PushPlan, report: PushReport | None) -> None:
    from fhir_cart.sync.push import failure_causes

    if report is None:
        counts: dict[str, int] = {}
        for resources in plan.to_send:
            for resource in resources:
                counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
        out.print(f"dry run: would send {plan.resources_to_send} of {plan.total} resources")
        for rtype, n in sorted(counts.items()):
            out.print(f"  {rtype}: {n}")
        return
    bundles = _plural(report.bundles, "bundle")
    table = _table(f"push run {report.run_id} ({report.mode}, {bundles})")
    table.add_column("outcome")
    table.add_column("resources", justify="right")
    for outcome, n in sorted(report.counts.items()):
        table.add_row(outcome, str(n))
    out.print(table)
    for note in report.learned:
        err.print(f"note: {escape(note)}")
    for cause in failure_causes(report.failures):
        types = ", ".join(f"{t} {n}" for t, n in sorted(cause.types.items()))
        status = f"HTTP {cause.status}" if cause.status else "no answer"
        err.print(f"[red]{cause.count} failed[/red] ({status}; {types}): {escape(cause.reason)}")
        if cause.hint:
            err.print(f"  hint: {escape(cause.hint)}")


def _patients_file(path: Path) -> list[str]:
    """The lines of ``--patients``: a missing, unreadable or non-UTF-8 file is a usage error
    naming it and what the file should be."""
    expected = "give a UTF-8 text file with one patient identifier per line"
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FatalError(f"--patients {path.name}: no such file; {expected}", exit_code=2) from None
    except UnicodeDecodeError as exc:
        raise FatalError(f"--patients {path.name}: not UTF-8 text (byte {exc.start}); {expected}",
                         exit_code=2) from None  # fmt: skip
    except OSError as exc:
        raise FatalError(f"--patients {path.name}: cannot be read ({exc.strerror}); {expected}",
                         exit_code=2) from None  # fmt: skip


def _selection(
    patients: Path | None,
    group: str | None,
    search: str | None,
    since: str | None,
    types: str | None = None,
) -> PullSelection:
    from fhir_cart.references import id_problem
    from fhir_cart.sync.pull import PullSelection, parse_types

    chosen = [x for x in (patients, group, search) if x is not None]
    if len(chosen) != 1:
        raise FatalError("choose exactly one of --patients, --group, --search", exit_code=2)
    try:
        asked = parse_types(types)
    except ValueError as exc:
        raise FatalError(str(exc), exit_code=2) from None
    if patients is not None:
        lines = _patients_file(patients)
        ids = tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
        return PullSelection(kind="patients", identifiers=ids, since=since, types=asked)
    if group is not None:
        if problem := id_problem(group):
            raise FatalError(f"--group {group[:70]!r}: {problem}; give the Group's id on the "
                             "server (as in Group/<id>)", exit_code=2)  # fmt: skip
        return PullSelection(kind="group", group_id=group, since=since, types=asked)
    return PullSelection(kind="search", query=search, since=since, types=asked)


def _account_table(counts: Mapping[str, TypeCount]) -> Table:
    """The account per resource type (``PullOutcome.by_type``, ``TablesOutcome.by_type``)."""
    table = _table("Resources by type")
    columns = ["fetched", "patients", "events", "used", "other", "excluded"]
    faults = [c for c in ("unaccounted", "twice")
              if any(getattr(n, c) for n in counts.values())]  # fmt: skip
    table.add_column("type")
    for column in [*columns, *faults]:
        table.add_column(column, justify="right")
    for rtype, count in counts.items():
        table.add_row(escape(rtype), *(str(getattr(count, c)) for c in [*columns, *faults]))
    return table


def _print_types(counts: Mapping[str, TypeCount], excluded: Mapping[str, int]) -> None:
    """The account per type, then how many were excluded for each reason."""
    if counts:
        out.print(_account_table(counts))
    for reason, number in sorted(excluded.items()):
        out.print(f"excluded {number}: {escape(reason)}")


def _print_faults(counts: Mapping[str, TypeCount]) -> None:
    faults = sum(c.unaccounted + c.twice for c in counts.values())
    if faults:
        err.print(f"[red]{faults} resources not accounted for exactly once[/red] (a fhir_cart "
                  "fault: please report it)")  # fmt: skip


def _print_account(result: PullOutcome) -> None:
    """Where every fetched resource ended, per type, and what was not asked for."""
    _print_types(result.by_type, result.excluded_reasons)
    if result.stats.not_asked:
        out.print(f"not asked for (--types): {escape(', '.join(result.stats.not_asked))}")
    if result.stats.not_searchable:
        names = escape(", ".join(result.stats.not_searchable))
        out.print("not asked for (the server declares no patient search for them; "
                  f"--types reads one by type): {names}")  # fmt: skip
    for rtype, number in sorted(result.stats.not_selected.items()):
        out.print(f"{rtype}: read by type (no patient search); {number} resources of patients "
                  "not selected left out")  # fmt: skip
    _print_faults(result.by_type)


@app.command("pull", cls=_Command)
def pull_command(
    server: ServerOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    patients: Annotated[
        Path | None, typer.Option(help="File of patient identifiers, one per line (system|value).")
    ] = None,
    group: Annotated[str | None, typer.Option(help="Group id whose members to pull.")] = None,
    search: Annotated[
        str | None, typer.Option(help="Patient search, e.g. 'identifier=http://sys|'.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only resources changed after this instant (ISO).")
    ] = None,
    export: Annotated[
        bool, typer.Option("--export", help="Use Bulk Data $export (with --group).")
    ] = False,
    types: Annotated[
        str | None,
        typer.Option(
            "--types",
            help="Resource types to ask for: 'all' (default: every type the server can search "
            "by patient), 'library' (the types the concept library reads) or a comma list, "
            "e.g. 'library,AllergyIntolerance'. Types left out are listed.",
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, xlsx, parquet or json.")] = "csv",
    centre: Annotated[str, typer.Option(help="Centre id for patients without one.")] = "ehr",
    study: Annotated[
        str | None,
        typer.Option("--study", help="Study definition whose summary to print after the pull."),
    ] = None,
    cache_url: CacheOpt = None,
) -> None:
    """Pull a cohort into study tables; resources not understood are listed, never dropped."""
    from fhir_cart.sync.jobs import PullTables
    from fhir_cart.writers import FORMATS

    if fmt not in FORMATS:
        raise FatalError(f"--format must be one of {', '.join(FORMATS)}", exit_code=2)
    application = _app()
    selection = _selection(patients, group, search, since, types)
    target = application.server(server)
    definition = study_for(study, None)
    tables = PullTables(out_dir, fmt, keep_cases=definition is not None)  # type: ignore[arg-type]
    with application.opened_cache(cache_url) as cache, _progress() as progress:
        task = progress.add_task("pulling patients", total=None)
        result = asyncio.run(
            application.pull(selection, server=target, cache=cache, use_export=export,
                             default_centre=centre, tables=tables,
                             on_patient=lambda n: progress.update(task, completed=n))
        )  # fmt: skip
    assert result.tables is not None
    written = result.tables
    if written.unmapped_file is not None:
        err.print(f"[yellow]{written.unmapped} resources not mapped[/yellow]: "
                  f"{written.unmapped_file}")  # fmt: skip
    if written.excluded_file is not None:
        err.print(f"{written.excluded} resources excluded by their status (entered-in-error, "
                  f"refuted, not done, ...): {written.excluded_file}")  # fmt: skip
    for note in result.stats.learned:
        err.print(f"note: {escape(note)}")
    out.print(f"{written.patients} patients pulled (run {result.run_id}); "
              f"{sum(result.stats.resources.values())} resources kept in the cache")  # fmt: skip
    out.print(f"wrote {_plural(len(written.written), 'file')} to {out_dir}")
    if written.other:
        out.print(f"{written.other} resources matched no concept: see the `other` table")
    _print_account(result)
    _print_pulled_summary(result.cases, definition)


def _print_pulled_summary(cases: Sequence[Case], definition: StudyDefinition | None) -> None:
    """The study's measures over pulled cases (no reported numbers beside them)."""
    if definition is not None:
        results = summarise(cases, definition)
        out.print(summary_table(results, compare=False, title=definition.name))


@app.command("tables", cls=_Command)
def tables_command(
    folder: Annotated[
        Path, typer.Argument(help="Folder of FHIR NDJSON files (*.ndjson, *.ndjson.gz).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, xlsx, parquet or json.")] = "csv",
    centre: Annotated[str, typer.Option(help="Centre id for patients without one.")] = "ehr",
    study: Annotated[
        str | None,
        typer.Option("--study", help="Study definition whose summary to print afterwards."),
    ] = None,
    workers: WorkersOpt = None,
) -> None:
    """Turn a folder of FHIR NDJSON (a bulk export, or `fhir-cart map` output) into study
    tables, as a pull of the same resources gives them, patient by patient."""
    from fhir_cart.writers import FORMATS

    if fmt not in FORMATS:
        raise FatalError(f"--format must be one of {', '.join(FORMATS)}", exit_code=2)
    application = _app()
    definition = study_for(study, None)
    with _progress() as progress:
        task = progress.add_task("mapping patients", total=None)
        result = application.tables(
            folder, out_dir, fmt, default_centre=centre,  # type: ignore[arg-type]
            keep_cases=definition is not None, workers=_workers(workers),
            on_patient=lambda n: progress.update(task, completed=n),
        )  # fmt: skip
    if result.unmapped_file is not None:
        err.print(f"[yellow]{result.unmapped} resources not mapped[/yellow]: "
                  f"{result.unmapped_file}")  # fmt: skip
    if result.excluded_file is not None:
        err.print(f"{result.excluded} resources excluded by their status (entered-in-error, "
                  f"refuted, not done, ...): {result.excluded_file}")  # fmt: skip
    out.print(f"{result.patients} patients from {result.resources} resources in "
              f"{_plural(len(result.files), 'file')}")  # fmt: skip
    out.print(f"wrote {_plural(len(result.written), 'file')} to {out_dir}")
    if result.other:
        out.print(f"{result.other} resources matched no concept: see the `other` table")
    _print_types(result.by_type, result.excluded_reasons)
    _print_faults(result.by_type)
    _print_pulled_summary(result.cases, definition)


@app.command("demo", cls=_Command)
def demo_command(
    keep_server: Annotated[
        bool, typer.Option(help="Leave the local FHIR server running (Ctrl-C to stop).")
    ] = False,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port for the local FHIR server (default: any free)."),
    ] = None,
) -> None:
    """The main job end to end: local FHIR server, push the seed cohort, pull it back, and
    print the summary beside the numbers the paper reports."""
    from fhir_cart.demo import run_demo

    run_demo(out, keep_server=keep_server, port=port, application=_app())


@app.command("serve", cls=_Command)
def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    workers: Annotated[
        bool, typer.Option(help="Run background jobs in this process (--no-workers: only API).")
    ] = True,
) -> None:
    """Run the web service (API keys, data dir and servers come from settings)."""
    import uvicorn

    from fhir_cart.service.app import create_app

    application = _app()
    if not application.settings.api_keys:
        raise FatalError("set at least one API key (FHIR_CART_API_KEYS='[\"...\"]')", exit_code=2)
    os.umask(0o077)  # what the service writes (cache, uploads, job outputs) is its own only
    uvicorn.run(create_app(application=application, run_workers=workers), host=host, port=port,
                access_log=False)  # fmt: skip


fhir_server_app = typer.Typer(
    cls=_Group,
    help="Start or stop a local FHIR R4 server on 127.0.0.1 to try fhir_cart against.",
    no_args_is_help=True,
)
app.add_typer(fhir_server_app, name="fhir-server")
PortOpt = Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")]


@fhir_server_app.command("start", cls=_Command)
def fhir_server_start(
    port: PortOpt = 8080,
    kind: Annotated[
        str, typer.Option("--kind", help="sekmet (Python) or medplum (Node 20, npm).")
    ] = "sekmet",
) -> None:
    """Start an empty FHIR R4 server at http://127.0.0.1:PORT/fhir and leave it running."""
    from fhir_cart.testing import SERVERS
    from fhir_cart.testing.fhir_server import port_in_use, start_detached

    if kind not in SERVERS:
        raise FatalError(f"--kind must be one of {', '.join(sorted(SERVERS))}", exit_code=2)
    if port_in_use(port):
        raise FatalError(f"port {port} on 127.0.0.1 is already in use", exit_code=2)
    url = start_detached(SERVERS[kind](port=port), _app().data_dir)
    out.print(f"FHIR R4 server ({kind}) running at {url}; "
              f"'fhir-cart fhir-server stop --port {port}' stops it")  # fmt: skip


@fhir_server_app.command("stop", cls=_Command)
def fhir_server_stop(port: PortOpt = 8080) -> None:
    """Stop the server 'fhir-server start' left on PORT and delete its data."""
    from fhir_cart.testing.fhir_server import stop_detached

    url = stop_detached(_app().data_dir, port)
    if url is None:
        raise FatalError(f"no FHIR server was started on port {port} from here", exit_code=2)
    out.print(f"stopped the FHIR server at {url}")


@app.command("worker", cls=_Command)
def worker_command() -> None:
    """Run background jobs only (several workers may share a PostgreSQL cache)."""
    from fhir_cart.service.jobs import run_worker

    application = _app()
    os.umask(0o077)  # what the worker writes (cache, job outputs) is its own only
    with application.opened_cache() as cache:
        where = application.describe_cache(cache)
        out.print(f"worker started: taking jobs from the cache at {where} (Ctrl-C to stop)")
        while True:  # Ctrl-C ends asyncio.run with KeyboardInterrupt, never CancelledError
            try:
                asyncio.run(run_worker(application, cache))
                return
            except asyncio.CancelledError:  # a cancellation that belongs to no job
                err.print("the worker's loop was cancelled by something outside any job; "
                          "restarted", highlight=False)  # fmt: skip


@app.command("openapi", cls=_Command)
def openapi_command(
    out_file: Annotated[Path, typer.Option("--out", "-o")] = Path("api/openapi.json"),
) -> None:
    """Write the web service's OpenAPI document (the published contract)."""
    from fhir_cart.service.app import create_app

    document = create_app(run_workers=False).openapi()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    out.print(f"wrote {out_file}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def flag_values(argv: Sequence[str]) -> list[str]:
    """``--validate true`` / ``--validate false`` as ``--validate`` / nothing: flags take no
    value, but writing one is a common reflex and click would refuse the stray word."""
    command = typer.main.get_command(app)
    commands = getattr(command, "commands", {})
    named = next((commands[a] for a in argv if a in commands), None)  # the command's own
    flags: dict[str, bool] = {}  # flags only: `serve --workers` is one, `tables --workers 2` not
    for sub in [named] if named is not None else commands.values():
        for param in sub.params:
            if isinstance(param, TyperOption) and param.is_flag:
                flags.update(dict.fromkeys(param.opts, True))
                flags.update(dict.fromkeys(param.secondary_opts, False))
    out: list[str] = []
    for arg in argv:
        word = arg.lower()
        if out and out[-1] in flags and (word in _TRUE or word in _FALSE):
            if (word in _TRUE) != flags[out[-1]]:
                out.pop()
            continue
        out.append(arg)
    return out


def _version(value: bool) -> None:
    if value:
        out.print(f"fhir-cart {package_version()}")
        raise typer.Exit()


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fhir-cart")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Move clinical case-series data between study format and FHIR R4."""


def _register_registry() -> None:
    from fhir_cart.registry.cli import registry_app

    app.add_typer(registry_app, name="registry")


_register_registry()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; turn a FatalError into its message and exit code (no traceback)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = flag_values(list(argv) if argv is not None else sys.argv[1:])
    try:
        result = app(args=args, standalone_mode=False)
    except FatalError as exc:
        err.print(f"[red]error:[/red] {escape(exc.describe())}", highlight=False)
        return exc.exit_code
    except FhirClientError as exc:
        err.print(f"[red]error:[/red] {escape(_server_problem(exc))}", highlight=False)
        return SERVER_EXIT
    except typer.Abort:
        return 130
    except Exception as exc:  # click usage errors carry their own exit code
        code = getattr(exc, "exit_code", None)
        if code is None:
            return _internal_error(exc)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return int(code)
    return result if isinstance(result, int) else 0


SERVER_EXIT = 6
"""The server could not be used: unreachable, refused our credentials, or answered with
something that is not FHIR (5 is kept for resources the server refused one by one)."""
INTERNAL_EXIT = 70  # EX_SOFTWARE (sysexits.h)


def _server_problem(exc: FhirClientError) -> str:
    if isinstance(exc, RetryableError) and exc.status is None:
        return f"the FHIR server could not be reached ({exc.message}); nothing more was sent"
    return f"the FHIR server cannot be used: {exc.message}"


def _internal_error(exc: Exception) -> int:
    """A bug: the class name only, since a message or traceback may quote study data.
    ``FHIR_CART_DEBUG=1`` shows the traceback to whoever runs the command."""
    if os.environ.get("FHIR_CART_DEBUG"):
        raise exc
    err.print(f"[red]internal error[/red] ({exc.__class__.__name__}); "
              "FHIR_CART_DEBUG=1 shows the traceback", highlight=False)  # fmt: skip
    return INTERNAL_EXIT


def entry() -> None:  # pragma: no cover - console script
    sys.exit(main())
