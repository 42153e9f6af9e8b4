"""The application layer: what fhir_cart does, built from one :class:`Settings`.

Every front end (the ``fhir-cart`` CLI, the web service, the queue worker, the demo) makes
an :class:`Application` and calls it; they only parse their input and present the result.
So the cache, the mapping context, the mappings folder, the terminology's strictness and the
servers are decided here once, the same way for all of them:

- ``cache()``: settings' ``cache_url``, else the SQLite file in ``data_dir``;
- ``mapping_context(mapping, strict)``: settings' ``mappings_dir`` and
  ``strict_terminology`` (a command's ``--strict`` can only add to it), the centre mapping's
  own identifier base, concepts and country;
- ``pull_context()``: the context a pull reads FHIR back with, knowing every centre
  mapping's own identifier base (a centre's patients keep their centre and study id);
- ``server(name)`` / ``client(name)``: servers named in settings (or, where allowed, a URL
  needing no authentication);
- the use cases, the only door the front ends use (docs/architecture.md, "The front
  door"): ``map`` (a ``MapRequest``), ``read``/``read_study``, ``summary``, ``preview``,
  ``push`` and ``pull`` (a ``PullRequest``) on a cache the caller holds, ``tables`` (a
  folder of NDJSON -> study tables, patient by patient), ``artefacts``/``put_artefacts``,
  ``own_code_system``, ``registry_build`` (which pushes through the cache settings name),
  ``registry_extract``, ``registry_resolve``, ``registry_decide``. The longer ones are
  composed in :mod:`fhir_cart.usecases`.

Front ends take the types and names they need of the cache and the sync jobs from this
module (``Cache``, ``PullRequest``, ``PullSelection``, ``parse_types``, ...), loaded on first
use, so that they import nothing from ``sync``, ``cache`` or ``study`` themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_cart.errors import ConfigError, FatalError, InputError, Reject
from fhir_cart.library import Library
from fhir_cart.library.concepts import ConceptLibrary, StudyLibraryFile
from fhir_cart.library.studies import StudyDefinition, load_study
from fhir_cart.library.study_mapping import StudyMapping, load_study_mapping, read_study_library
from fhir_cart.library.yamlfile import read_yaml
from fhir_cart.mappers.context import MappingContext, mapping_context
from fhir_cart.records import Case
from fhir_cart.settings import ServerSettings, Settings, load_settings
from fhir_cart.study import ReadResult, read_study, stream_study

if TYPE_CHECKING:  # the cache (SQLAlchemy) and sync modules load when a command needs them
    from fhir_cart.cache import Cache as Cache
    from fhir_cart.cache import run_owner as run_owner
    from fhir_cart.cache import worker_name as worker_name
    from fhir_cart.cache.base import now as now
    from fhir_cart.cache.models import SyncRun as SyncRun
    from fhir_cart.client import FhirClient
    from fhir_cart.conformance.package import Package
    from fhir_cart.library.study_library import LibraryReport
    from fhir_cart.mapjob import MapResult
    from fhir_cart.ndjson_tables import TablesOutcome
    from fhir_cart.registry.build import BuildResult
    from fhir_cart.registry.centre_side import ExtractResult
    from fhir_cart.report.evaluate import MeasureResult
    from fhir_cart.study.draft import ColumnChoice as ColumnChoice
    from fhir_cart.study.draft import FileSuggestions as FileSuggestions
    from fhir_cart.study.suggest import ColumnSuggestion as ColumnSuggestion
    from fhir_cart.sync.accounting import TypeCount as TypeCount
    from fhir_cart.sync.jobs import PullOutcome as PullOutcome
    from fhir_cart.sync.jobs import PullRequest as PullRequest
    from fhir_cart.sync.jobs import PullTables as PullTables
    from fhir_cart.sync.pull import PullSelection as PullSelection
    from fhir_cart.sync.pull import parse_types as parse_types
    from fhir_cart.sync.push import FailureCause as FailureCause
    from fhir_cart.sync.push import PushPlan as PushPlan
    from fhir_cart.sync.push import PushReport as PushReport
    from fhir_cart.sync.push import failure_causes as failure_causes
    from fhir_cart.usecases.mappings import StoredMapping as StoredMapping
    from fhir_cart.usecases.registry import BuildRequest as BuildRequest
    from fhir_cart.usecases.registry import Decided
    from fhir_cart.usecases.study import CasesRead, Preview, StudySummary
    from fhir_cart.writers import Format

from fhir_cart.usecases.study import MapRequest

__all__ = [
    "Application",
    "BuildRequest",
    "Cache",
    "ColumnChoice",
    "FailureCause",
    "FileSuggestions",
    "MapRequest",
    "PullOutcome",
    "PullRequest",
    "PullSelection",
    "PullTables",
    "PushOutcome",
    "PushPlan",
    "PushReport",
    "StoredMapping",
    "SyncRun",
    "TypeCount",
    "failure_causes",
    "now",
    "parse_types",
    "run_owner",
    "worker_name",
]

_LAZY = {
    "BuildRequest": "fhir_cart.usecases.registry",
    "Cache": "fhir_cart.cache",
    "run_owner": "fhir_cart.cache",
    "worker_name": "fhir_cart.cache",
    "now": "fhir_cart.cache.base",
    "SyncRun": "fhir_cart.cache.models",
    "TypeCount": "fhir_cart.sync.accounting",
    "PullOutcome": "fhir_cart.sync.jobs",
    "PullRequest": "fhir_cart.sync.jobs",
    "PullTables": "fhir_cart.sync.jobs",
    "PullSelection": "fhir_cart.sync.pull",
    "parse_types": "fhir_cart.sync.pull",
    "FailureCause": "fhir_cart.sync.push",
    "PushPlan": "fhir_cart.sync.push",
    "PushReport": "fhir_cart.sync.push",
    "failure_causes": "fhir_cart.sync.push",
    "ColumnChoice": "fhir_cart.study.draft",
    "FileSuggestions": "fhir_cart.study.draft",
    "StoredMapping": "fhir_cart.usecases.mappings",
}
"""What front ends need of the cache and the sync jobs (types, the job queue's worker
names), given here so that they import nothing from ``sync``, ``cache`` or ``study``
(tests/unit/test_application.py); each loads on first use, so a command that needs no
cache loads no SQLAlchemy."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class PushOutcome:
    """A push as it ended: the context it mapped with (its unverified codes), what was
    planned, and what the server said (None for a dry run)."""

    ctx: MappingContext
    plan: PushPlan
    report: PushReport | None


class Application:
    """fhir_cart's use cases under one settings object (see the module's doc)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        folder = self.settings.mappings_dir
        self.library = Library.at(folder) if folder is not None else Library.default()
        """The mappings folder settings name (default: the shipped one), passed to every
        loader: concepts, terminology, profiles, statuses, studies, centre mappings."""

    # -- what settings decide -----------------------------------------------------------

    @property
    def mappings_dir(self) -> Path:
        return self.library.folder

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def cache_url(self, override: str | None = None) -> str:
        return override or self.settings.effective_cache_url()

    def cache(self, override: str | None = None) -> Cache:
        """The cache settings name (``override``: a URL given on the command line)."""
        from fhir_cart.cache import open_cache

        return open_cache(self.cache_url(override))

    @contextlib.contextmanager
    def opened_cache(self, override: str | None = None) -> Iterator[Cache]:
        cache = self.cache(override)
        try:
            yield cache
        finally:
            cache.close()

    def server(
        self, name_or_url: str | ServerSettings, *, url_allowed: bool = True
    ) -> ServerSettings:
        """A server named in settings, or (when ``url_allowed``) one needing no auth by URL;
        the web service allows names only, so its clients cannot make it call any URL."""
        if isinstance(name_or_url, ServerSettings):
            return name_or_url
        if not url_allowed:
            if name_or_url not in self.settings.servers:
                raise ConfigError(f"unknown server {name_or_url!r}: servers are named in settings")
            return self.settings.servers[name_or_url]
        try:
            return self.settings.server(name_or_url)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from exc

    def client(self, name_or_url: str | ServerSettings) -> FhirClient:
        """A FHIR client for a server (its auth, timeouts and limits from settings)."""
        from fhir_cart.sync.connect import client_for

        return client_for(self.server(name_or_url))

    def mapping_file(self, name: str) -> Path:
        """A centre mapping by name: ``<mappings_dir>/centres/<name>.yaml``."""
        return self.library.centre(name)

    def load_mapping(self, path: Path | None) -> StudyMapping | None:
        return load_study_mapping(path, self.library) if path is not None else None

    def mapping_context(
        self, mapping: StudyMapping | None = None, *, strict: bool = False
    ) -> MappingContext:
        """The context of one mapping run: ``strict`` (a command's ``--strict``) or
        settings' ``strict_terminology`` refuses unverified codes."""
        ctx = mapping_context(
            strict=strict or self.settings.strict_terminology,
            identifier_base=mapping.identifier_base if mapping is not None else None,
            extra=mapping.own_concepts() if mapping is not None else None,
            country=mapping.country if mapping is not None else None,
            library=self.library,
        )
        ctx.terminology.read_text = self.settings.classify_by_text
        return ctx

    def pull_context(self, own: StudyLibraryFile | None = None) -> MappingContext:
        """The context FHIR is read back with: every centre mapping's own identifier base is
        known, so a centre's patients keep their centre and study id; ``own``: a study's
        own concepts (:meth:`study_library`), read back by their codes."""
        ctx = mapping_context(
            strict=self.settings.strict_terminology, extra=own, library=self.library
        )
        ctx.terminology.read_text = self.settings.classify_by_text
        return replace(ctx, other_bases=self.centre_identifier_bases())

    def check_library(self, path: Path) -> LibraryReport:
        """A study's library file checked against this library, before any data is read:
        what it adds, where it is published, and what is refused (``problems``)."""
        from fhir_cart.library.study_library import check_library_file

        return check_library_file(path, self.library)

    def study_library(
        self, mapping: Path | None = None, library: Path | None = None
    ) -> StudyLibraryFile | None:
        """A study's own concepts for reading FHIR back: those of the mapping file (its
        ``library:`` file and its own ``concepts``) and/or of a library file."""
        found = self.load_mapping(mapping)
        own = found.own_concepts() if found is not None else None
        if library is None:
            return own
        extra = read_study_library(library)
        if own is None:
            return extra
        try:
            return own.combined(extra)
        except ConfigError as exc:
            raise ConfigError(f"library file {library}: {exc.message}") from exc

    def centre_identifier_bases(self) -> tuple[str, ...]:
        """The ``identifier_base`` of each centre mapping in the mappings folder (read as
        plain YAML: a broken mapping elsewhere does not stop a pull)."""
        found: set[str] = set()
        for path in sorted(self.library.centres.glob("*.yaml")):
            try:
                data = read_yaml(path, "mapping file")
            except ConfigError:
                continue
            base = data.get("identifier_base") if isinstance(data, dict) else None
            if isinstance(base, str):
                found.add(base)
        return tuple(sorted(found))

    def registry_file(self, name: str) -> Path:
        """A registry file the service may build by name: ``<data_dir>/registries/<name>.yaml``
        (clients name registries; they never give a path)."""
        return self.data_dir / "registries" / f"{name}.yaml"

    def study(
        self, name_or_path: str | Path, mapping: StudyMapping | None = None
    ) -> StudyDefinition:
        """A study definition: a name in ``<mappings_dir>/studies/`` or a path, checked
        against the library plus the concepts ``mapping`` adds (its own library file)."""
        concepts = self.library.for_mapping(mapping) if mapping is not None else None
        return load_study(name_or_path, self.library, concepts=concepts)

    def anchor_of(self, mapping: StudyMapping | None) -> str | None:
        """The concept every day counts from: the anchor of the study the mapping names,
        else the mapping's own ``anchor`` (None: neither)."""
        if mapping is None:
            return None
        if mapping.study is not None:
            return self.study(mapping.study, mapping).anchor
        return mapping.anchor

    # -- use cases ------------------------------------------------------------------------

    def read_study(
        self,
        path: Path,
        mapping: StudyMapping | None,
        *,
        on_patient: Callable[[int], None] | None = None,
    ) -> ReadResult:
        """The study file read; ``on_patient(n)`` after each patient (a page's progress)."""
        library = self.library.for_mapping(mapping)
        if on_patient is None:
            return read_study(path, mapping, library)
        stream, cases = stream_study(path, mapping, library), []
        for case in stream:
            cases.append(case)
            on_patient(len(cases))
        return ReadResult(cases, stream.rejects, stream.unmapped_columns, stream.sources)

    def read(self, path: Path, mapping_file: Path | None, *, fhir: bool = False) -> CasesRead:
        """A study file read with its mapping file (with ``fhir``: or FHIR NDJSON, a file or a
        folder, read back as a pull reads it): cases, rejects, unmapped columns."""
        from fhir_cart.usecases import study

        return study.read(self, path, mapping_file, fhir=fhir)

    def map(
        self,
        request: MapRequest,
        *,
        check_rejects: Callable[[Sequence[Reject]], None],
        on_unmapped_columns: Callable[[Sequence[Any]], None] = lambda columns: None,
        on_warnings: Callable[[Sequence[str]], None] = lambda warnings: None,
    ) -> tuple[MapResult, list[dict[str, Any]]]:
        """Map a study file to FHIR R4 (bundles and NDJSON), patient by patient: the outcome
        and the unverified codes emitted (see :func:`fhir_cart.usecases.study.map_study`)."""
        from fhir_cart.usecases import study

        return study.map_study(
            self,
            request,
            check_rejects=check_rejects,
            on_unmapped_columns=on_unmapped_columns,
            on_warnings=on_warnings,
        )

    def summary(
        self,
        cases: Sequence[Case],
        definition: StudyDefinition,
        *,
        plots: Path | None = None,
        mapping: StudyMapping | None = None,
        about: str | None = None,
    ) -> StudySummary:
        """A study's measures over ``cases``, the warnings that qualify them, its plots
        (with the concepts ``mapping``'s own library file adds; titled after ``about``, the
        data shown, or with the study's own titles when it is None)."""
        from fhir_cart.usecases import study

        return study.summary(self, cases, definition, plots, mapping, about)

    def preview(
        self, cases: Sequence[Case], mapping: StudyMapping | None, *, size: int, limit: int
    ) -> Preview:
        """The first ``limit`` transaction bundles of ``size`` entries the cases map to."""
        from fhir_cart.usecases import study

        return study.preview(self, cases, mapping, size, limit)

    def own_code_system(self) -> dict[str, Any]:
        """The project's own code system as a FHIR CodeSystem resource."""
        from fhir_cart.usecases import study

        return study.own_code_system(self)

    def artefacts(self, mapping_file: Path | None = None) -> Package:
        """The conformance artefacts as a FHIR package (a study's own, with its mapping)."""
        from fhir_cart.usecases import study

        return study.artefacts(self, mapping_file)

    def artefact_files(self, package: Package) -> dict[str, bytes]:
        """The package's files (``package/...``, the data dictionary) by path."""
        from fhir_cart.usecases import study

        return study.artefact_files(self, package)

    async def put_artefacts(self, server: str, package: Package) -> int:
        """PUT each resource of the package but the ImplementationGuide as ``<type>/<id>``
        (a re-push updates the same resources)."""
        resources = [r for r in package.resources if r["resourceType"] != "ImplementationGuide"]
        async with self.client(server) as client:
            for r in resources:
                response = await client.request(
                    "PUT", f"{r['resourceType']}/{r['id']}", body=r, idempotent=True
                )
                if response.status_code >= 300:
                    raise FatalError(
                        f"PUT {r['resourceType']}/{r['id']}: HTTP {response.status_code}"
                    )
        return len(resources)

    def views(self, out_dir: Path, *, default_centre: str = "ehr") -> list[Path]:
        """The study tables as SQL-on-FHIR v2 ViewDefinitions, one JSON file per table."""
        from fhir_cart.usecases import study

        return study.views(self, out_dir, default_centre)

    def keep_rejects(
        self, cache: Cache, rejects: Sequence[Reject], *, run_id: int | None = None
    ) -> list[Reject]:
        """Store at most ``max_rejects_reported`` rejects (all are counted); those stored."""
        listed = list(rejects[: self.settings.max_rejects_reported])
        if listed:
            cache.add_rejects(run_id=run_id, rejects=listed)
        return listed

    async def push(
        self,
        cases: Sequence[Case],
        *,
        mapping: StudyMapping | None,
        server: str | ServerSettings,
        cache: Cache,
        strict: bool = False,
        dry_run: bool = False,
        run_id: int | None = None,
        rejects: Sequence[Reject] = (),
        continue_on_error: bool = False,
        on_bundle_done: Callable[[int, int], None] | None = None,
    ) -> PushOutcome:
        """Push a cohort (only what changed since the last push to that server). A file
        with ``rejects`` is not pushed in part unless ``continue_on_error``."""
        target = self.server(server)
        if rejects and not continue_on_error:
            raise InputError(
                f"{len(rejects)} rows or values rejected; nothing was sent. Fix the file, or "
                "push the good rows (--continue-on-error, or continue_on_error: true)",
                list(rejects),
            )
        from fhir_cart.sync.jobs import run_push

        ctx = self.mapping_context(mapping, strict=strict)
        plan, report = await run_push(
            cases=cases,
            ctx=ctx,
            server=target,
            cache=cache,
            dry_run=dry_run,
            run_id=run_id,
            on_bundle_done=on_bundle_done,
        )
        return PushOutcome(ctx, plan, report)

    async def pull(
        self,
        request: PullRequest,
        *,
        server: str | ServerSettings,
        cache: Cache,
        own: StudyLibraryFile | None = None,
    ) -> PullOutcome:
        """Pull a cohort into the cache and read it back as study records, with the pull's
        context (every centre mapping's identifier base known; ``own``: a study's own
        concepts, :meth:`study_library`)."""
        from fhir_cart.sync.jobs import run_pull

        return await run_pull(
            request, ctx=self.pull_context(own), server=self.server(server), cache=cache
        )

    def tables(
        self,
        folder: Path,
        out: Path,
        fmt: Format = "csv",
        *,
        default_centre: str = "ehr",
        keep_cases: bool = False,
        on_patient: Callable[[int], None] | None = None,
        workers: int = 1,
        own: StudyLibraryFile | None = None,
    ) -> TablesOutcome:
        """A folder of FHIR NDJSON (a bulk export, or ``fhir-cart map`` output) -> the study
        tables, ``unmapped.csv`` and ``excluded.csv`` a pull writes for the same resources,
        read with the pull's context, patient by patient (the temporary index goes to the
        system's temporary folder)."""
        from fhir_cart.ndjson_tables import tables_from_ndjson

        return tables_from_ndjson(
            self.pull_context(own),
            folder,
            out,
            fmt,
            default_centre=default_centre,
            keep_cases=keep_cases,
            on_patient=on_patient,
            workers=workers,
        )

    def registry_build(self, request: BuildRequest) -> tuple[BuildResult, str | None]:
        """Build the registry of ``request.registry_file`` into ``request.out`` (and push it
        to the server ``request.push`` names, when asked). The key comes from settings'
        ``registry_key`` or the environment; the working copy defaults to
        ``<data_dir>/registry/<id>``.

        A push under a key other than the one of the last push to that server is refused
        (ConfigError, before anything is built) while the server still holds patients pushed
        under the old key: every patient would arrive a second time under new pseudonyms.
        ``request.allow_new_key`` pushes anyway (both sets stay on the server)."""
        from fhir_cart.usecases import registry

        return registry.build(self, request)

    def registry_extract(
        self, centre_file: Path, mapping: Path, registry_file: Path, centre: str, out: Path
    ) -> ExtractResult:
        """At a centre: its file and mapping sealed under the registry key into one extract
        (``ExtractResult``), what the centre sends instead of its file."""
        from fhir_cart.usecases import registry

        return registry.extract(self, centre_file, mapping, registry_file, centre, out)

    def registry_resolve(
        self, registry_file: Path, tokens: Sequence[str], centres: Sequence[str] = ()
    ) -> dict[str, tuple[str, str] | None]:
        """At a centre: which row of its file each Provenance row token stands for (the key
        as for the build; reads the centre's file with its mapping)."""
        from fhir_cart.usecases import registry

        return registry.resolve(self, registry_file, tokens, centres)

    def registry_decide(
        self, registry_file: Path, left: str, right: str, *, link: bool, by: str
    ) -> Decided:
        """Keep people's decision on a pair of centre records (one patient, or not) in the
        registry's decisions file, with who and when; every later build honours it."""
        from fhir_cart.usecases import registry

        return registry.decide(registry_file, left, right, link=link, by=by)

    def failure_causes(self, cache: Cache, run_id: int) -> list[FailureCause]:
        """A run's failed resources grouped by cause, biggest first, each with a hint."""
        from fhir_cart.sync.push import failure_causes

        failed: list[tuple[tuple[str, str, str], int | None, str]] = []
        offset, page = 0, 5000
        while True:
            rows = cache.outcomes(run_id=run_id, limit=page, offset=offset)
            failed += [
                (
                    (r.resource_type, r.identifier_system, r.identifier_value),
                    r.status_code,
                    r.reason or "",
                )
                for r in rows
                if r.outcome == "failed"
            ]
            if len(rows) < page:
                return failure_causes(failed)
            offset += page

    def describe_cache(self, cache: Cache) -> str:
        return str(cache.engine.url.render_as_string(hide_password=True))

    # -- workbench (issue 22): what the web pages ask for ----------------------------------

    def preview_patient(self, case: Case, mapping: StudyMapping | None) -> dict[str, object]:
        """The FHIR transaction bundle of one patient (nothing is sent anywhere)."""
        from fhir_cart.bundle import map_cases, transaction_bundles

        ctx = self.mapping_context(mapping)
        patients = list(map_cases(ctx, [case]))
        bundle: dict[str, object] = next(iter(transaction_bundles(patients, size=1)))
        return bundle

    def mapping_names(self) -> list[str]:
        """The centre mappings the mappings folder holds, by name."""
        return sorted(p.stem for p in (self.mappings_dir / "centres").glob("*.yaml"))

    def study_summary(
        self,
        cases: Sequence[Case],
        study: str,
        plots_dir: Path | None = None,
        about: str | None = None,
    ) -> tuple[StudyDefinition, list[MeasureResult], list[Path]]:
        """A study's measures over the cases (beside the paper's numbers), and its plots as
        SVG in ``plots_dir`` when given (the pages show SVG only: no PNG is drawn); ``about``
        names the cases (e.g. "upload 1a2b3c4d") for the plots' titles, which then do not
        show the study's own (they describe its cohort)."""
        from fhir_cart.report.evaluate import summarise
        from fhir_cart.report.plots import write_plots

        definition = self.study(study)
        results = summarise(cases, definition)
        plots: list[Path] = []
        if plots_dir is not None:
            plots = write_plots(cases, definition, plots_dir, formats=("svg",), about=about)
        return definition, results, plots

    # -- the mapping assistant and kept mapping files (issue 22) ---------------------------

    def assistant_library(self, library: Path | None = None) -> ConceptLibrary:
        """What the mapping assistant suggests from (:func:`~fhir_cart.library.study_library.
        with_library_file`: the shipped library, plus a study's library file)."""
        from fhir_cart.library.study_library import with_library_file

        return with_library_file(self.library, library)

    def suggest_mapping(self, path: Path, library: Path | None = None) -> FileSuggestions:
        """What each column of a file with no mapping most likely holds (docs/service.md),
        from the shipped library and ``library`` (a study's own library file)."""
        from fhir_cart.study.draft import suggest_file

        return suggest_file(path, self.assistant_library(library))

    def draft_mapping(
        self,
        suggestions: FileSuggestions,
        choices: Sequence[ColumnChoice],
        *,
        centre: str,
        study: str | None = None,
        anchor: str | None = None,
        library: Path | None = None,
        library_ref: str | None = None,
    ) -> str:
        """The mapping file (YAML) for the confirmed choices, checked against the shipped
        library plus ``library`` (a study's library file), which it names as ``library:
        <library_ref>`` (the path from the mapping file's folder) or, without
        ``library_ref``, carries inline (its concepts, words and units in the mapping)."""
        from fhir_cart.study.draft import draft_mapping

        concepts = self.assistant_library(library)
        inline = library if library_ref is None else None
        return draft_mapping(
            suggestions,
            choices,
            concepts,
            centre=centre,
            study=study,
            anchor=anchor,
            library_file=library_ref,
            inline=inline,
        )

    def retarget_column(
        self,
        suggestions: FileSuggestions,
        index: int,
        target: str | None,
        library: Path | None = None,
    ) -> tuple[ColumnSuggestion, list[str]]:
        """A column's suggestion for the target a person picked, and the canonical words
        its cells may stand for (``library``: a study's library file besides)."""
        from fhir_cart.study.suggest import retarget, word_options

        concepts = self.assistant_library(library)
        column = retarget(suggestions.table, index, target, concepts)
        return column, word_options(column.choice, column.field, concepts)

    def word_choices(
        self, target: str | None, field: str | None, library: Path | None = None
    ) -> list[str]:
        """The canonical words a cell of a column with this target and field may stand for."""
        from fhir_cart.study.suggest import word_options

        return word_options(target, field, self.assistant_library(library))

    def concept_choices(self, library: Path | None = None) -> list[tuple[str, str]]:
        """(key, label) of every concept and patient attribute, for the assistant's lists."""
        concepts = self.assistant_library(library)
        found = [(f"concept:{k}", concepts.concept(k).label) for k in concepts.keys(None)]
        found += [(f"attribute:{k}", a.label) for k, a in concepts.data.patient_attributes.items()]
        return found

    def study_names(self) -> list[str]:
        return sorted(p.stem for p in (self.mappings_dir / "studies").glob("*.yaml"))

    def store_mapping(self, owner: str, name: str, text: bytes) -> StoredMapping:
        """Check a mapping file and keep it as the next version of ``owner``'s ``name``."""
        from fhir_cart.usecases import mappings

        return mappings.store(self, owner, name, text)

    def stored_mappings(self, owner: str | None) -> list[StoredMapping]:
        from fhir_cart.usecases import mappings

        return mappings.list_stored(self, owner)

    def stored_mapping(self, owner: str, name: str, version: int | None) -> StoredMapping:
        """One kept version (None: the latest); KeyError if there is none."""
        from fhir_cart.usecases import mappings

        return mappings.read_stored(self, owner, name, version)
