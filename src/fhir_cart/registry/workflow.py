"""The registry use case as every front end calls it: settings -> key, library, summaries
-> :func:`~fhir_cart.registry.build.build_registry` -> optional push."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fhir_cart.records import Case
from fhir_cart.registry.build import BuildResult, Progress, Summariser, build_registry
from fhir_cart.registry.definition import RegistryDef, load_registry
from fhir_cart.registry.pseudonyms import registry_key
from fhir_cart.settings import Settings, load_settings

__all__ = ["push_registry", "run_registry_build", "study_summariser"]


def study_summariser(definition: RegistryDef) -> Summariser | None:
    """The measures of the registry's study definition (spec §5), as plain dicts."""
    if definition.study is None:
        return None
    summary: Any = importlib.import_module("fhir_cart.summary")  # spec §5, its own branch
    path = definition.resolve(Path(definition.study))
    study = summary.load_study(str(path) if path.exists() else definition.study)

    def measures(cases: Sequence[Case]) -> list[dict[str, Any]]:
        return [
            {"id": getattr(r, "id", r.label), "label": r.label, "value": r.value}
            for r in summary.summarise(list(cases), study)
        ]

    return measures


def run_registry_build(
    registry_file: Path,
    out: Path,
    *,
    push: str | None = None,
    force: bool = False,
    spark: bool = False,
    work: Path | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> tuple[BuildResult, str | None]:
    """Build the registry of ``registry_file`` into ``out`` (and push it when asked)."""
    from fhir_cart.concepts import load_concepts
    from fhir_cart.terminology import load_terminology

    settings = settings or load_settings()
    definition = load_registry(registry_file)
    if spark:
        definition = definition.model_copy(
            update={"linkage": definition.linkage.model_copy(update={"backend": "spark"})}
        )
    configured = settings.registry_key.get_secret_value() if settings.registry_key else None
    key = registry_key(configured)
    result = build_registry(
        definition, out, key=key, library=load_concepts(load_terminology()),
        summariser=study_summariser(definition), progress=progress, force=force,
        work=work or settings.data_dir / "registry" / definition.id,
    )  # fmt: skip
    if push is None:
        return result, None
    if result.registry is None:
        return result, "no input changed: nothing to push"
    folder = work or settings.data_dir / "registry" / definition.id
    return result, push_registry(result, definition, push, settings, folder)


def push_registry(
    result: BuildResult, definition: RegistryDef, server: str, settings: Settings, work: Path
) -> str:
    """The registry's patients through the idempotent push (only what changed is sent), then
    its ConceptMaps and Provenance (only those whose content changed)."""
    from fhir_cart.cache import open_cache
    from fhir_cart.mappers.context import mapping_context
    from fhir_cart.registry.artefacts import PushedHashes, push_artefacts
    from fhir_cart.sync.service import client_for, run_push

    registry = result.registry
    assert registry is not None
    target = settings.server(server)
    ctx = mapping_context(identifier_base=definition.fhir.identifier_base)
    cache = open_cache(settings.effective_cache_url())
    try:
        plan, report = asyncio.run(
            run_push(cases=registry.cases, ctx=ctx, server=target, cache=cache)
        )
    finally:
        cache.close()
    name = hashlib.sha256(target.base_url.encode()).hexdigest()[:16]
    pushed = PushedHashes(work / f"pushed-artefacts-{name}.json")

    async def artefacts() -> int:
        async with client_for(target) as client:
            resources = [*registry.concept_maps, *registry.provenance]
            return await push_artefacts(client, resources, pushed)

    extra = asyncio.run(artefacts())
    changed = sum(len(resources) for resources in plan.to_send)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) if report else ""
    return (
        f"pushed to {server}: {changed} of {plan.total} resources changed; {counts}; "
        f"{extra} ConceptMap/Provenance resources sent"
    )
