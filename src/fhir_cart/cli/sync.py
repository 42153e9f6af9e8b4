"""``fhir-cart push``, ``pull`` and ``tables``: a cohort to a FHIR server, and back into
study tables (from a server, or from a folder of NDJSON).

Each parses its arguments, calls the application and shows the outcome."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from fhir_cart.cli.common import (
    CacheOpt,
    ContinueOpt,
    MappingOpt,
    ServerOpt,
    StrictOpt,
    WorkersOpt,
    application,
    err,
    out,
    plural,
    progress,
    report_rejects,
    table,
    warn_unverified,
)
from fhir_cart.cli.common import workers as cli_workers
from fhir_cart.cli.study import read_cases, study_for
from fhir_cart.errors import FatalError

if TYPE_CHECKING:
    from rich.table import Table

    from fhir_cart.application import PullOutcome, PullSelection, PushPlan, PushReport, TypeCount
    from fhir_cart.library.studies import StudyDefinition
    from fhir_cart.records import Case

__all__ = ["pull_command", "push_command", "tables_command"]

OwnMappingOpt = Annotated[
    Path | None,
    typer.Option(
        "--mapping",
        "-m",
        help="A study's mapping: its own concepts (its library: file) are read back by "
        "their codes, as columns.",
    ),
]
OwnLibraryOpt = Annotated[
    Path | None,
    typer.Option(
        "--library", help="A study's library file: its concepts are read back by their codes."
    ),
]


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
    app = application()
    read = read_cases(study_file, mapping)
    cases, rejects, study_mapping = read.cases, read.rejects, read.mapping
    target = app.server(server)
    with app.opened_cache(cache_url) as cache:
        app.keep_rejects(cache, rejects)
        report_rejects(rejects, app.data_dir, keep_going)
        with progress() as bar:
            task = bar.add_task("pushing bundles", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            import asyncio

            pushed = asyncio.run(
                app.push(
                    cases,
                    mapping=study_mapping,
                    server=target,
                    cache=cache,
                    strict=strict,
                    dry_run=dry_run,
                    on_bundle_done=advance,
                    rejects=rejects,
                    continue_on_error=keep_going,
                )
            )
        warn_unverified(pushed.ctx.terminology.unverified_report())
        _print_push(pushed.plan, pushed.report)
    report = pushed.report
    if report is not None and report.failures:
        from fhir_cart.application import failure_causes

        causes = len(failure_causes(report.failures))
        raise FatalError(
            f"{len(report.failures)} resources failed ({causes} "
            f"{'cause' if causes == 1 else 'causes'}); see above",
            exit_code=5,
        )


def _print_push(plan: PushPlan, report: PushReport | None) -> None:
    from fhir_cart.application import failure_causes

    if report is None:
        counts: dict[str, int] = {}
        for resources in plan.to_send:
            for resource in resources:
                counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
        out.print(f"dry run: would send {plan.resources_to_send} of {plan.total} resources")
        for rtype, n in sorted(counts.items()):
            out.print(f"  {rtype}: {n}")
        return
    bundles = plural(report.bundles, "bundle")
    shown = table(f"push run {report.run_id} ({report.mode}, {bundles})")
    shown.add_column("outcome")
    shown.add_column("resources", justify="right")
    for outcome, n in sorted(report.counts.items()):
        shown.add_row(outcome, str(n))
    out.print(shown)
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
        raise FatalError(
            f"--patients {path.name}: not UTF-8 text (byte {exc.start}); {expected}", exit_code=2
        ) from None
    except OSError as exc:
        raise FatalError(
            f"--patients {path.name}: cannot be read ({exc.strerror}); {expected}", exit_code=2
        ) from None


def _selection(
    patients: Path | None,
    group: str | None,
    search: str | None,
    since: str | None,
    types: str | None = None,
) -> PullSelection:
    from fhir_cart.application import PullSelection, parse_types
    from fhir_cart.references import id_problem

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
            raise FatalError(
                f"--group {group[:70]!r}: {problem}; give the Group's id on the "
                "server (as in Group/<id>)",
                exit_code=2,
            )
        return PullSelection(kind="group", group_id=group, since=since, types=asked)
    return PullSelection(kind="search", query=search, since=since, types=asked)


def _account_table(counts: Mapping[str, TypeCount]) -> Table:
    """The account per resource type (``PullOutcome.by_type``, ``TablesOutcome.by_type``)."""
    shown = table("Resources by type")
    columns = ["fetched", "patients", "events", "used", "other", "excluded"]
    faults = [c for c in ("unaccounted", "twice") if any(getattr(n, c) for n in counts.values())]
    shown.add_column("type")
    for column in [*columns, *faults]:
        shown.add_column(column, justify="right")
    for rtype, count in counts.items():
        shown.add_row(escape(rtype), *(str(getattr(count, c)) for c in [*columns, *faults]))
    return shown


def _print_types(counts: Mapping[str, TypeCount], excluded: Mapping[str, int]) -> None:
    """The account per type, then how many were excluded for each reason."""
    if counts:
        out.print(_account_table(counts))
    for reason, number in sorted(excluded.items()):
        out.print(f"excluded {number}: {escape(reason)}")


def _print_faults(counts: Mapping[str, TypeCount]) -> None:
    faults = sum(c.unaccounted + c.twice for c in counts.values())
    if faults:
        err.print(
            f"[red]{faults} resources not accounted for exactly once[/red] (a fhir_cart "
            "fault: please report it)"
        )


def print_account(result: PullOutcome) -> None:
    """Where every fetched resource ended, per type, and what was not asked for."""
    _print_types(result.by_type, result.excluded_reasons)
    if result.stats.not_asked:
        out.print(f"not asked for (--types): {escape(', '.join(result.stats.not_asked))}")
    if result.stats.not_searchable:
        names = escape(", ".join(result.stats.not_searchable))
        out.print(
            "not asked for (the server declares no patient search for them; "
            f"--types reads one by type): {names}"
        )
    for rtype, number in sorted(result.stats.not_selected.items()):
        out.print(
            f"{rtype}: read by type (no patient search); {number} resources of patients "
            "not selected left out"
        )
    _print_faults(result.by_type)


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
    mapping: OwnMappingOpt = None,
    library: OwnLibraryOpt = None,
) -> None:
    """Pull a cohort into study tables; resources not understood are listed, never dropped."""
    from fhir_cart.application import PullRequest, PullTables
    from fhir_cart.writers import FORMATS

    if fmt not in FORMATS:
        raise FatalError(f"--format must be one of {', '.join(FORMATS)}", exit_code=2)
    app = application()
    selection = _selection(patients, group, search, since, types)
    target = app.server(server)
    own = app.study_library(mapping, library)
    definition = _study_of(study, mapping)
    tables = PullTables(out_dir, fmt, keep_cases=definition is not None)  # type: ignore[arg-type]
    with app.opened_cache(cache_url) as cache, progress() as bar:
        task = bar.add_task("pulling patients", total=None)
        request = PullRequest(
            selection,
            use_export=export,
            default_centre=centre,
            tables=tables,
            on_patient=lambda n: bar.update(task, completed=n),
        )
        import asyncio

        result = asyncio.run(app.pull(request, server=target, cache=cache, own=own))
    assert result.tables is not None
    written = result.tables
    if written.unmapped_file is not None:
        err.print(
            f"[yellow]{written.unmapped} resources not mapped[/yellow]: {written.unmapped_file}"
        )
    if written.excluded_file is not None:
        err.print(
            f"{written.excluded} resources excluded by their status (entered-in-error, "
            f"refuted, not done, ...): {written.excluded_file}"
        )
    for note in result.stats.learned:
        err.print(f"note: {escape(note)}")
    out.print(
        f"{written.patients} patients pulled (run {result.run_id}); "
        f"{sum(result.stats.resources.values())} resources kept in the cache"
    )
    out.print(f"wrote {plural(len(written.written), 'file')} to {out_dir}")
    if written.other:
        out.print(f"{written.other} resources matched no concept: see the `other` table")
    _print_undeclared(written.tables.undeclared, out_dir)
    print_account(result)
    _print_pulled_summary(result.cases, definition)


def _study_of(study: str | None, mapping: Path | None) -> StudyDefinition | None:
    """The study definition, checked with the concepts ``mapping`` adds (its library)."""
    if study is None or mapping is None:
        return study_for(study, None)
    return application().study(study, application().load_mapping(mapping))


def _print_undeclared(count: int, out_dir: Path) -> None:
    if count:
        err.print(
            f"[yellow]{count} attribute values not in the concept library[/yellow] are rows "
            f"of the `other` table in {out_dir}, each with its reason: a study's own come as "
            "columns with the study's library (--mapping or --library); a published guide's "
            "extension (mCODE, US Core, IPS) needs an attribute with its extension_url"
        )


def _print_pulled_summary(cases: Sequence[Case], definition: StudyDefinition | None) -> None:
    """The study's measures over pulled cases (no reported numbers beside them)."""
    if definition is not None:
        from fhir_cart.report.tables import summary_table

        results = application().summary(cases, definition).results
        out.print(summary_table(results, compare=False, title=definition.name))


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
    mapping: OwnMappingOpt = None,
    library: OwnLibraryOpt = None,
) -> None:
    """Turn a folder of FHIR NDJSON (a bulk export, or `fhir-cart map` output) into study
    tables, as a pull of the same resources gives them, patient by patient."""
    from fhir_cart.writers import FORMATS

    if fmt not in FORMATS:
        raise FatalError(f"--format must be one of {', '.join(FORMATS)}", exit_code=2)
    app = application()
    own = app.study_library(mapping, library)
    definition = _study_of(study, mapping)
    with progress() as bar:
        task = bar.add_task("mapping patients", total=None)
        result = app.tables(
            folder,
            out_dir,
            fmt,  # type: ignore[arg-type]
            default_centre=centre,
            keep_cases=definition is not None,
            workers=cli_workers(workers),
            on_patient=lambda n: bar.update(task, completed=n),
            own=own,
        )
    if result.unmapped_file is not None:
        err.print(
            f"[yellow]{result.unmapped} resources not mapped[/yellow]: {result.unmapped_file}"
        )
    if result.excluded_file is not None:
        err.print(
            f"{result.excluded} resources excluded by their status (entered-in-error, "
            f"refuted, not done, ...): {result.excluded_file}"
        )
    out.print(
        f"{result.patients} patients from {result.resources} resources in "
        f"{plural(len(result.files), 'file')}"
    )
    out.print(f"wrote {plural(len(result.written), 'file')} to {out_dir}")
    if result.other:
        out.print(f"{result.other} resources matched no concept: see the `other` table")
    _print_undeclared(result.undeclared, out_dir)
    _print_types(result.by_type, result.excluded_reasons)
    _print_faults(result.by_type)
    _print_pulled_summary(result.cases, definition)
