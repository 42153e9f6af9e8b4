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
- ``push``, ``pull``: the use cases, on a cache the caller holds; ``tables`` (a folder of
  NDJSON -> study tables, patient by patient); ``registry_build`` (which pushes through the
  cache settings name).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fhir_cart.errors import ConfigError, InputError, Reject
from fhir_cart.mappers.context import MappingContext, RefStyle, mapping_context
from fhir_cart.records import Case
from fhir_cart.settings import ServerSettings, Settings, load_settings
from fhir_cart.study import ReadResult, read_study
from fhir_cart.study_mapping import StudyMapping, load_study_mapping
from fhir_cart.summary import StudyDefinition, load_study
from fhir_cart.terminology import default_mappings_dir, use_mappings_dir
from fhir_cart.yamlfile import read_yaml

if TYPE_CHECKING:  # the cache (SQLAlchemy) and sync modules load when a command needs them
    from fhir_cart.cache import Cache
    from fhir_cart.client import FhirClient
    from fhir_cart.ndjson_tables import TablesOutcome
    from fhir_cart.registry.build import BuildResult, ExtractResult, Progress
    from fhir_cart.registry.definition import RegistryDef
    from fhir_cart.sync.jobs import PullOutcome, PullTables
    from fhir_cart.sync.pull import PullSelection
    from fhir_cart.sync.push import FailureCause, PushPlan, PushReport
    from fhir_cart.writers import Format

__all__ = ["Application", "PullContext", "PushOutcome"]


@dataclass
class PullContext(MappingContext):
    """A mapping context for reading FHIR back: a business identifier system is a centre's
    under the default identifier base or under any centre mapping's own one."""

    other_bases: tuple[str, ...] = ()

    def centre_of_system(self, system: str) -> str | None:
        found = super().centre_of_system(system)
        if found is not None:
            return found
        for base in self.other_bases:
            found = _centre_under(base, system)
            if found is not None:
                return found
        return None

    def with_style(self, ref_style: RefStyle) -> PullContext:
        plain = super().with_style(ref_style)
        return PullContext(plain.concepts, plain.profiles, plain.identifier_base,
                           plain.ref_style, other_bases=self.other_bases)  # fmt: skip


def _centre_under(base: str, system: str) -> str | None:
    from fhir_cart.mappers.context import KINDS

    prefix = base.rstrip("/") + "/"
    if not system.startswith(prefix):
        return None
    parts = system[len(prefix) :].split("/")
    return parts[0] if len(parts) == 2 and parts[1] in KINDS else None


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
        # every loader not handed a folder (readers, summaries, terminology) reads this one
        use_mappings_dir(self.settings.mappings_dir)

    # -- what settings decide -----------------------------------------------------------

    @property
    def mappings_dir(self) -> Path:
        return self.settings.mappings_dir or default_mappings_dir()

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
        return self.mappings_dir / "centres" / f"{name}.yaml"

    def load_mapping(self, path: Path | None) -> StudyMapping | None:
        return load_study_mapping(path) if path is not None else None

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
            mappings_dir=self.mappings_dir,
        )
        ctx.terminology.read_text = self.settings.classify_by_text
        return ctx

    def pull_context(self) -> PullContext:
        """The context FHIR is read back with: every centre mapping's own identifier base is
        known, so a centre's patients keep their centre and study id."""
        base = self.mapping_context()
        return PullContext(base.concepts, base.profiles, base.identifier_base,
                           other_bases=self.centre_identifier_bases())  # fmt: skip

    def centre_identifier_bases(self) -> tuple[str, ...]:
        """The ``identifier_base`` of each centre mapping in the mappings folder (read as
        plain YAML: a broken mapping elsewhere does not stop a pull)."""
        found: set[str] = set()
        for path in sorted((self.mappings_dir / "centres").glob("*.yaml")):
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

    def study(self, name_or_path: str | Path) -> StudyDefinition:
        """A study definition: a name in ``<mappings_dir>/studies/`` or a path."""
        return load_study(name_or_path)

    def anchor_of(self, mapping: StudyMapping | None) -> str | None:
        """The concept every day counts from: the anchor of the study the mapping names,
        else the mapping's own ``anchor`` (None: neither)."""
        if mapping is None:
            return None
        if mapping.study is not None:
            return self.study(mapping.study).anchor
        return mapping.anchor

    # -- use cases ------------------------------------------------------------------------

    def read_study(self, path: Path, mapping: StudyMapping | None) -> ReadResult:
        return read_study(path, mapping)

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
            cases=cases, ctx=ctx, server=target, cache=cache, dry_run=dry_run, run_id=run_id,
            on_bundle_done=on_bundle_done,
        )  # fmt: skip
        return PushOutcome(ctx, plan, report)

    async def pull(
        self,
        selection: PullSelection,
        *,
        server: str | ServerSettings,
        cache: Cache,
        use_export: bool = False,
        default_centre: str = "ehr",
        run_id: int | None = None,
        on_patient: Callable[[int], None] | None = None,
        on_mapped: Callable[[PullOutcome], None] | None = None,
        tables: PullTables | None = None,
    ) -> PullOutcome:
        """Pull a cohort into the cache and read it back as study records (with ``tables``:
        written as they are made, in memory flat in the cohort)."""
        from fhir_cart.sync.jobs import run_pull

        return await run_pull(
            selection=selection, ctx=self.pull_context(), server=self.server(server),
            cache=cache, use_export=use_export, default_centre=default_centre, run_id=run_id,
            on_patient=on_patient, on_mapped=on_mapped, tables=tables,
        )  # fmt: skip

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
    ) -> TablesOutcome:
        """A folder of FHIR NDJSON (a bulk export, or ``fhir-cart map`` output) -> the study
        tables, ``unmapped.csv`` and ``excluded.csv`` a pull writes for the same resources,
        read with the pull's context, patient by patient (the temporary index goes to the
        system's temporary folder)."""
        from fhir_cart.ndjson_tables import tables_from_ndjson

        return tables_from_ndjson(
            self.pull_context(), folder, out, fmt, default_centre=default_centre,
            keep_cases=keep_cases, on_patient=on_patient, workers=workers,
        )  # fmt: skip

    def registry_build(
        self,
        registry_file: Path,
        out: Path,
        *,
        push: str | None = None,
        force: bool = False,
        spark: bool = False,
        work: Path | None = None,
        progress: Progress | None = None,
        allow_new_key: bool = False,
    ) -> tuple[BuildResult, str | None]:
        """Build the registry of ``registry_file`` into ``out`` (and push it to the server
        ``push`` names, when asked). The key comes from settings' ``registry_key`` or the
        environment; the working copy defaults to ``<data_dir>/registry/<id>``.

        A push under a key other than the one of the last push to that server is refused
        (ConfigError, before anything is built) while the server still holds patients pushed
        under the old key: every patient would arrive a second time under new pseudonyms.
        ``allow_new_key`` pushes anyway (both sets stay on the server)."""
        from fhir_cart.concepts import load_concepts
        from fhir_cart.registry.build import build_registry
        from fhir_cart.registry.definition import load_registry
        from fhir_cart.registry.pseudonyms import registry_key
        from fhir_cart.registry.workflow import study_summariser
        from fhir_cart.terminology import load_terminology

        definition = load_registry(registry_file)
        if spark:
            linkage = definition.linkage.model_copy(update={"backend": "spark"})
            definition = definition.model_copy(update={"linkage": linkage})
        configured = self.settings.registry_key
        key = registry_key(configured.get_secret_value() if configured else None)
        work = work or self.data_dir / "registry" / definition.id
        if push is not None and not allow_new_key:
            asyncio.run(self._check_registry_key(definition, key, push, work))
        terms = load_terminology(self.mappings_dir / "terminology.yaml")
        library = load_concepts(terms, self.mappings_dir / "concepts.yaml")
        result = build_registry(
            definition, out, key=key, library=library,
            summariser=study_summariser(definition), progress=progress, force=force, work=work,
        )  # fmt: skip
        if push is None:
            return result, None
        if result.registry is None:
            return result, "no input changed: nothing to push"
        message = asyncio.run(self._push_registry(result, definition, push, work))
        self._record_registry_key(result, key, push, work)
        return result, message

    def registry_extract(
        self, centre_file: Path, mapping: Path, registry_file: Path, centre: str, out: Path
    ) -> ExtractResult:
        """At a centre: its file and mapping sealed under the registry key into one extract
        (``ExtractResult``), what the centre sends instead of its file."""
        from fhir_cart.concepts import load_concepts
        from fhir_cart.registry.build import extract_centre
        from fhir_cart.registry.definition import load_registry
        from fhir_cart.registry.pseudonyms import registry_key
        from fhir_cart.terminology import load_terminology

        definition = load_registry(registry_file)
        configured = self.settings.registry_key
        key = registry_key(configured.get_secret_value() if configured else None)
        terms = load_terminology(self.mappings_dir / "terminology.yaml")
        library = load_concepts(terms, self.mappings_dir / "concepts.yaml")
        return extract_centre(
            definition, centre, centre_file, mapping, out, key=key, library=library
        )

    def registry_resolve(
        self, registry_file: Path, tokens: Sequence[str], centres: Sequence[str] = ()
    ) -> dict[str, tuple[str, str] | None]:
        """At a centre: which row of its file each Provenance row token stands for (the key
        as for the build; reads the centre's file with its mapping)."""
        from fhir_cart.registry.build import resolve_rows
        from fhir_cart.registry.definition import load_registry
        from fhir_cart.registry.pseudonyms import registry_key

        definition = load_registry(registry_file)
        configured = self.settings.registry_key
        key = registry_key(configured.get_secret_value() if configured else None)
        return resolve_rows(definition, tokens, key=key, centres=centres)

    def _pushed_key_file(self, work: Path, server: str) -> Path:
        name = hashlib.sha256(self.server(server).base_url.encode()).hexdigest()[:16]
        return work / f"pushed-key-{name}.json"

    async def _check_registry_key(
        self, definition: RegistryDef, key: bytes, server: str, work: Path
    ) -> None:
        """Refuse a push under a new key while the server holds the old key's patients."""
        import orjson

        from fhir_cart.registry.pseudonyms import Pseudonymiser

        record = self._pushed_key_file(work, server)
        if not record.exists():
            return
        try:
            last = orjson.loads(record.read_bytes())
            fingerprint, patients = str(last["key"]), [str(p) for p in last["patients"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return  # unreadable: nothing known about the last push
        current = Pseudonymiser(key).fingerprint()
        if fingerprint == current or not patients:
            return
        system = f"{definition.fhir.identifier_base.rstrip('/')}/{definition.id}/patient"
        held = 0
        async with self.client(server) as client:
            for patient in patients:
                params = {"identifier": f"{system}|{patient}", "_elements": "id"}
                held += sum([1 async for _ in client.search("Patient", params)])
        if held:
            raise ConfigError(
                f"registry {definition.id}: the registry key changed since the last push to "
                f"{server} (key fingerprint {fingerprint} -> {current}), and the server still "
                f"holds patients pushed under the old key ({held} of {len(patients)} checked). "
                "Pushing now would add every patient a second time under new pseudonyms. "
                "Fix: build with the old key again; or first remove from the server the "
                f"patients of identifier system {system} and the resources that refer to them; "
                "or pass --allow-new-key to push anyway and keep both sets."
            )

    def _record_registry_key(
        self, result: BuildResult, key: bytes, server: str, work: Path
    ) -> None:
        import orjson

        from fhir_cart.registry.files import write_atomically
        from fhir_cart.registry.pseudonyms import Pseudonymiser

        assert result.registry is not None
        patients = sorted(c.patient.study_id for c in result.registry.cases)[:20]
        data = {"key": Pseudonymiser(key).fingerprint(), "patients": patients}
        write_atomically(self._pushed_key_file(work, server), orjson.dumps(data))

    async def _push_registry(
        self, result: BuildResult, definition: RegistryDef, server: str, work: Path
    ) -> str:
        """The registry's patients through the idempotent push (only what changed is sent),
        then its ConceptMaps and Provenance (only those whose content changed)."""
        from fhir_cart.registry.artefacts import PushedHashes, push_artefacts
        from fhir_cart.sync.jobs import run_push

        registry = result.registry
        assert registry is not None
        target = self.server(server)
        ctx = mapping_context(
            identifier_base=definition.fhir.identifier_base, mappings_dir=self.mappings_dir,
            strict=self.settings.strict_terminology,
        )  # fmt: skip
        with self.opened_cache() as cache:
            plan, report = await run_push(cases=registry.cases, ctx=ctx, server=target, cache=cache)
        name = hashlib.sha256(target.base_url.encode()).hexdigest()[:16]
        pushed = PushedHashes(work / f"pushed-artefacts-{name}.json")
        async with self.client(target) as client:
            resources = [*registry.concept_maps, *registry.provenance]
            extra = await push_artefacts(client, resources, pushed)
        changed = sum(len(resources) for resources in plan.to_send)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) if report else ""
        return (
            f"pushed to {server}: {changed} of {plan.total} resources changed; {counts}; "
            f"{extra} ConceptMap/Provenance resources sent"
        )

    def failure_causes(self, cache: Cache, run_id: int) -> list[FailureCause]:
        """A run's failed resources grouped by cause, biggest first, each with a hint."""
        from fhir_cart.sync.push import failure_causes

        failed: list[tuple[tuple[str, str, str], int | None, str]] = []
        offset, page = 0, 5000
        while True:
            rows = cache.outcomes(run_id=run_id, limit=page, offset=offset)
            failed += [
                ((r.resource_type, r.identifier_system, r.identifier_value), r.status_code,
                 r.reason or "")
                for r in rows if r.outcome == "failed"
            ]  # fmt: skip
            if len(rows) < page:
                return failure_causes(failed)
            offset += page

    def describe_cache(self, cache: Cache) -> str:
        return str(cache.engine.url.render_as_string(hide_password=True))
