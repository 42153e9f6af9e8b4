"""The registry use cases (docs/registry.md): build (and push), a centre's extract, which
row a Provenance token stands for, and people's link decisions. Called through
:class:`fhir_cart.application.Application`."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fhir_cart.errors import ConfigError

if TYPE_CHECKING:
    from fhir_cart.application import Application
    from fhir_cart.library.concepts import ConceptLibrary, StudyLibraryFile
    from fhir_cart.registry.build import BuildResult, CentreReader, Progress
    from fhir_cart.registry.centre_side import ExtractResult
    from fhir_cart.registry.definition import RegistryDef

__all__ = ["BuildRequest", "Decided", "build", "decide", "extract", "resolve"]


def _key(app: Application) -> bytes:
    from fhir_cart.registry.pseudonyms import registry_key

    configured = app.settings.registry_key
    return registry_key(configured.get_secret_value() if configured else None)


def _library(app: Application, own: StudyLibraryFile | None = None) -> ConceptLibrary:
    """The library's concepts with a terminology of their own (what one build emits), plus
    ``own``: the registry's own concepts (:func:`registry_own`)."""
    return app.library.concepts(own, terminology=app.library.terminology())


def registry_own(app: Application, definition: RegistryDef) -> StudyLibraryFile | None:
    """What the registry adds to the shipped library: its ``library`` files and the library
    file each centre's mapping names (``library:``; concepts a mapping defines inline stay
    that centre's); one key defined two different ways is refused, naming the file."""
    from fhir_cart.library.study_mapping import read_study_library

    found: StudyLibraryFile | None = None
    files = [definition.resolve(path) for path in definition.library]
    for centre in definition.centres:
        if centre.mapping is not None:
            mapping = app.load_mapping(definition.resolve(centre.mapping))
            if mapping is not None and mapping.library is not None:
                files.append(Path(mapping.library))
    for path in files:
        where, part = str(path), read_study_library(path)
        try:
            found = part if found is None else found.combined(part)
        except ConfigError as exc:
            raise ConfigError(f"registry library: {where}: {exc.message}") from exc
    return found


def _reader(app: Application) -> CentreReader:
    """The registry's centre reader, reading with the application's library."""
    import functools

    from fhir_cart.registry.build import read_centre

    return functools.partial(read_centre, library=app.library)


@dataclass(frozen=True)
class BuildRequest:
    """One registry build: the registry file, the folder its registry goes to, and how.

    ``push`` names the server to push to (a name in settings or a base URL), ``force``
    rebuilds though no input changed, ``spark`` links with the Spark backend, ``work`` is the
    working copy (default ``<data_dir>/registry/<id>``), ``progress`` is told each step,
    ``allow_new_key`` pushes under a new key while the server holds patients pushed under
    the old one (see :meth:`fhir_cart.application.Application.registry_build`)."""

    registry_file: Path
    out: Path
    push: str | None = None
    force: bool = False
    spark: bool = False
    work: Path | None = None
    progress: Progress | None = None
    allow_new_key: bool = False


def build(app: Application, request: BuildRequest) -> tuple[BuildResult, str | None]:
    """See :meth:`fhir_cart.application.Application.registry_build`."""
    from fhir_cart.registry.build import build_registry
    from fhir_cart.registry.definition import load_registry
    from fhir_cart.registry.workflow import study_summariser

    definition = load_registry(request.registry_file)
    push, work = request.push, request.work
    if request.spark:
        linkage = definition.linkage.model_copy(update={"backend": "spark"})
        definition = definition.model_copy(update={"linkage": linkage})
    key = _key(app)
    work = work or app.data_dir / "registry" / definition.id
    if push is not None and not request.allow_new_key:
        asyncio.run(_check_key(app, definition, key, push, work))
    concepts = _library(app, registry_own(app, definition))
    result = build_registry(
        definition,
        request.out,
        key=key,
        library=concepts,
        reader=_reader(app),
        summariser=study_summariser(definition, app.library, concepts),
        progress=request.progress,
        force=request.force,
        work=work,
        keep=push is not None,  # a push sends the objects; the files alone need none
    )
    if push is None:
        return result, None
    if result.registry is None:
        return result, "no input changed: nothing to push"
    message = asyncio.run(_push(app, result, definition, push, work))
    _record_key(app, result, key, push, work)
    return result, message


def extract(
    app: Application, centre_file: Path, mapping: Path, registry_file: Path, centre: str, out: Path
) -> ExtractResult:
    """See :meth:`fhir_cart.application.Application.registry_extract`."""
    from fhir_cart.registry.centre_side import extract_centre
    from fhir_cart.registry.definition import load_registry

    definition = load_registry(registry_file)
    return extract_centre(
        definition,
        centre,
        centre_file,
        mapping,
        out,
        key=_key(app),
        library=_library(app),
        reader=_reader(app),
    )


def resolve(
    app: Application, registry_file: Path, tokens: Sequence[str], centres: Sequence[str] = ()
) -> dict[str, tuple[str, str] | None]:
    """See :meth:`fhir_cart.application.Application.registry_resolve`."""
    from fhir_cart.registry.centre_side import resolve_rows
    from fhir_cart.registry.definition import load_registry

    definition = load_registry(registry_file)
    return resolve_rows(definition, tokens, key=_key(app), centres=centres, reader=_reader(app))


@dataclass(frozen=True)
class Decided:
    """A decision kept: the decisions file, both pseudonyms, link or not, and by whom."""

    path: Path
    left: str
    right: str
    link: bool
    by: str


def decide(registry_file: Path, left: str, right: str, *, link: bool, by: str) -> Decided:
    """See :meth:`fhir_cart.application.Application.registry_decide`."""
    import datetime as dt

    from fhir_cart.registry import tables
    from fhir_cart.registry.decisions import Decision, check_decision, with_decision
    from fhir_cart.registry.definition import load_registry

    definition = load_registry(registry_file)
    path = definition.resolve(definition.linkage.decisions)
    when = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    decision = Decision(left.strip(), right.strip(), link, by.strip(), when)
    check_decision(decision, "the pair given")
    tables._write_if_changed(path, with_decision(path, decision))
    return Decided(path, decision.left, decision.right, link, by)


def _pushed_key_file(app: Application, work: Path, server: str) -> Path:
    name = hashlib.sha256(app.server(server).base_url.encode()).hexdigest()[:16]
    return work / f"pushed-key-{name}.json"


async def _check_key(
    app: Application, definition: RegistryDef, key: bytes, server: str, work: Path
) -> None:
    """Refuse a push under a new key while the server holds the old key's patients."""
    import orjson

    from fhir_cart.registry.pseudonyms import Pseudonymiser

    record = _pushed_key_file(app, work, server)
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
    async with app.client(server) as client:
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


def _record_key(app: Application, result: BuildResult, key: bytes, server: str, work: Path) -> None:
    import orjson

    from fhir_cart.registry.files import write_atomically
    from fhir_cart.registry.pseudonyms import Pseudonymiser

    assert result.registry is not None
    patients = sorted(c.patient.study_id for c in result.registry.cases)[:20]
    data = {"key": Pseudonymiser(key).fingerprint(), "patients": patients}
    write_atomically(_pushed_key_file(app, work, server), orjson.dumps(data))


async def _push(
    app: Application, result: BuildResult, definition: RegistryDef, server: str, work: Path
) -> str:
    """The registry's patients through the idempotent push (only what changed is sent),
    then its ConceptMaps and Provenance (only those whose content changed)."""
    from fhir_cart.mappers.context import mapping_context
    from fhir_cart.registry.artefacts import PushedHashes, push_artefacts
    from fhir_cart.sync.jobs import run_push

    registry = result.registry
    assert registry is not None
    target = app.server(server)
    ctx = mapping_context(
        identifier_base=definition.fhir.identifier_base,
        library=app.library,
        strict=app.settings.strict_terminology,
        extra=registry_own(app, definition),
    )
    with app.opened_cache() as cache:
        plan, report = await run_push(cases=registry.cases, ctx=ctx, server=target, cache=cache)
    name = hashlib.sha256(target.base_url.encode()).hexdigest()[:16]
    pushed = PushedHashes(work / f"pushed-artefacts-{name}.json")
    async with app.client(target) as client:
        resources = [*registry.concept_maps, *registry.provenance]
        extra = await push_artefacts(client, resources, pushed)
    changed = sum(len(resources) for resources in plan.to_send)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) if report else ""
    return (
        f"pushed to {server}: {changed} of {plan.total} resources changed; {counts}; "
        f"{extra} ConceptMap/Provenance resources sent"
    )
