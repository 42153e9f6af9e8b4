"""The study-side use cases: map a study file to FHIR, read one (or FHIR NDJSON) into
cases, preview the first transaction bundles, a study's summary, and the conformance
artefacts. Called through :class:`fhir_cart.application.Application`, which composes the
study reader, the mapping context and the mapping here, once for every front end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from fhir_cart.application import Application
    from fhir_cart.conformance.package import Package
    from fhir_cart.errors import Reject
    from fhir_cart.library.studies import StudyDefinition
    from fhir_cart.library.study_mapping import StudyMapping
    from fhir_cart.mapjob import MapResult
    from fhir_cart.mappers.from_fhir import Unmapped
    from fhir_cart.records import Case
    from fhir_cart.report.evaluate import MeasureResult

__all__ = [
    "CasesRead",
    "MapRequest",
    "Preview",
    "StudySummary",
    "artefact_files",
    "artefacts",
    "map_study",
    "own_code_system",
    "preview",
    "read",
    "summary",
    "views",
]


@dataclass(frozen=True)
class MapRequest:
    """``fhir-cart map``: a study file (with its centre mapping, unless canonical JSON)
    into ``out_dir``."""

    study_file: Path
    out_dir: Path
    mapping_file: Path | None = None
    bundle_size: int = 100
    mode: Literal["update", "create"] = "update"
    validate: bool = False
    strict: bool = False
    indent: bool = False
    """Indent the bundles' JSON (compact by default)."""
    workers: int = 1
    """Processes mapping the cases while this one reads the study (the same bytes)."""


@dataclass
class CasesRead:
    """A study file (or FHIR NDJSON) read: its cases, the rows or values rejected, the
    columns no mapping covers, the resources not mapped back (NDJSON only), the mapping."""

    cases: list[Case]
    rejects: list[Reject] = field(default_factory=list)
    unmapped_columns: list[Any] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    mapping: StudyMapping | None = None


def map_study(
    app: Application,
    request: MapRequest,
    *,
    check_rejects: Callable[[Sequence[Reject]], None],
    on_unmapped_columns: Callable[[Sequence[Any]], None] = lambda columns: None,
    on_warnings: Callable[[Sequence[str]], None] = lambda warnings: None,
) -> tuple[MapResult, list[dict[str, Any]]]:
    """Map patient by patient into ``out_dir`` (see :mod:`fhir_cart.mapjob`): the outcome
    and the unverified codes emitted. ``check_rejects`` sees the rejects once the file is
    read (raise to write nothing), ``on_unmapped_columns`` the columns no mapping covers,
    ``on_warnings`` each patient's missing-anchor warnings."""
    import orjson

    from fhir_cart.mapjob import open_study, run_map
    from fhir_cart.report.evaluate import missing_anchor

    stream, mapping = open_study(request.study_file, request.mapping_file, app.library)
    on_unmapped_columns(stream.unmapped_columns)
    ctx = app.mapping_context(mapping, strict=request.strict)

    def extras(folder: Path) -> None:
        code_system = own_code_system(app, ctx)
        (folder / "CodeSystem-fhir-cart.json").write_bytes(
            orjson.dumps(code_system, option=orjson.OPT_INDENT_2)
        )
        unverified = ctx.terminology.unverified_report()
        if unverified:
            (folder / "unverified-codes.json").write_bytes(
                orjson.dumps(unverified, option=orjson.OPT_INDENT_2)
            )

    anchor = app.anchor_of(mapping)

    def check_anchor(case: Case) -> list[str]:
        return [] if anchor is None else missing_anchor([case], anchor)

    result = run_map(
        stream,
        ctx,
        request.out_dir,
        bundle_size=request.bundle_size,
        mode=request.mode,
        validate=request.validate,
        write_extras=extras,
        warn=check_anchor,
        on_warnings=on_warnings,
        indent=request.indent,
        check_rejects=check_rejects,
        workers=request.workers,
    )
    return result, ctx.terminology.unverified_report()


def _fhir_paths(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(path.glob("*.ndjson"))
        return found or sorted((path / "ndjson").glob("*.ndjson"))
    return [path] if path.suffix == ".ndjson" else []


def read(app: Application, path: Path, mapping_file: Path | None, *, fhir: bool) -> CasesRead:
    """A study file with its mapping (CSV, XLSX, folder, canonical JSON); with ``fhir``,
    FHIR NDJSON (a file or a folder) is read back as a pull reads it."""
    from fhir_cart.mapjob import open_study

    fhir_paths = _fhir_paths(path) if fhir else []
    if fhir_paths:
        from fhir_cart.bundle import read_ndjson
        from fhir_cart.mappers.from_fhir import cases_from_fhir

        result = cases_from_fhir(app.pull_context(), read_ndjson(fhir_paths))
        return CasesRead(result.cases, unmapped=result.unmapped)
    stream, mapping = open_study(path, mapping_file, app.library)
    cases = list(stream)
    return CasesRead(cases, stream.rejects, list(stream.unmapped_columns), mapping=mapping)


@dataclass
class StudySummary:
    """A study's measures over some cases, with the warnings that qualify them and the plot
    files written."""

    definition: StudyDefinition
    results: list[MeasureResult]
    warnings: list[str]
    plots: list[Path]


def summary(
    app: Application,
    cases: Sequence[Case],
    definition: StudyDefinition,
    plots: Path | None,
    mapping: StudyMapping | None = None,
    about: str | None = None,
) -> StudySummary:
    """The measures the study definition names (and its plots into ``plots``, titled after
    ``about``), with the concepts of the library plus those ``mapping``'s own library file
    adds."""
    from fhir_cart.report.evaluate import missing_anchor, summarise, unmatched_text_tests

    concepts = app.library.for_mapping(mapping)
    results = summarise(cases, definition)
    warnings = [
        *missing_anchor(cases, definition.anchor),
        *unmatched_text_tests(cases, definition, concepts),
    ]
    written: list[Path] = []
    if plots is not None:
        from fhir_cart.report.plots import write_plots

        written = list(write_plots(cases, definition, plots, concepts, about=about))
    return StudySummary(definition, list(results), warnings, written)


@dataclass
class Preview:
    """The first transaction bundles of an upload and the unverified codes they carry."""

    bundles: list[dict[str, Any]]
    unverified: list[dict[str, Any]]


def preview(
    app: Application, cases: Sequence[Case], mapping: StudyMapping | None, size: int, limit: int
) -> Preview:
    from fhir_cart.bundle import map_cases, transaction_bundles

    ctx = app.mapping_context(mapping)
    bundles = []
    for bundle in transaction_bundles(map_cases(ctx, cases), size=size):
        bundles.append(bundle)
        if len(bundles) >= limit:
            break
    return Preview(bundles, ctx.terminology.unverified_report())


def own_code_system(app: Application, ctx: Any = None) -> dict[str, Any]:
    """The project's own code system as a FHIR CodeSystem resource."""
    from fhir_cart.conformance.artefacts import own_code_system as build

    return build(ctx if ctx is not None else app.mapping_context(None, strict=False))


def artefacts(app: Application, mapping_file: Path | None = None) -> Package:
    """The conformance artefacts generated from the mapping data, as a FHIR package; with
    ``mapping_file``, the package of what that study's mapping adds to the library."""
    from fhir_cart.conformance.artefacts import load_centres
    from fhir_cart.conformance.package import build_package, build_study_package
    from fhir_cart.library.study_mapping import load_study_mapping

    ctx = app.mapping_context()
    if mapping_file is None:
        return build_package(ctx, load_centres(app.mappings_dir / "centres"))
    mapping = load_study_mapping(mapping_file, app.library)
    return build_study_package(ctx, mapping_file.name, mapping)


def artefact_files(app: Application, package: Package) -> dict[str, bytes]:
    """The package's files by their path inside the package folder."""
    from fhir_cart.conformance.package import package_files

    return package_files(app.mapping_context(), package)


def views(app: Application, out_dir: Path, default_centre: str) -> list[Path]:
    """The study tables as SQL-on-FHIR v2 ViewDefinitions, written into ``out_dir``."""
    from fhir_cart.conformance.views import centres_in, view_definitions, write_views

    ctx = app.pull_context()
    centres = centres_in(ctx, app.mappings_dir / "centres")
    return list(write_views(view_definitions(ctx, centres, default_centre=default_centre), out_dir))
