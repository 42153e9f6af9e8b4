"""Background jobs of the web service: pushes and pulls queued as ``sync_run`` rows.

A worker claims a pending run with row locking (PostgreSQL ``FOR UPDATE SKIP LOCKED``), so
several service processes can share one queue and no job runs twice. A run's state lives in
the cache, so jobs survive a restart: runs left ``running`` by a dead worker are marked
``interrupted`` and can be resumed (a resumed push sends only what was not acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson

from fhir_cart.cache import Cache, worker_name
from fhir_cart.cache.models import SyncRun
from fhir_cart.mappers.context import mapping_context
from fhir_cart.readers import read_study
from fhir_cart.settings import Settings
from fhir_cart.study_mapping import load_study_mapping
from fhir_cart.summary import load_study, summarise
from fhir_cart.sync.pull import PullSelection
from fhir_cart.sync.service import run_pull, run_push, write_unmapped
from fhir_cart.writers import write_study

__all__ = ["execute", "job_dir", "run_worker", "worker_name"]

log = logging.getLogger(__name__)


def job_dir(settings: Settings, run_id: int) -> Path:
    return settings.data_dir / "jobs" / str(run_id)


async def _push(run: SyncRun, params: dict[str, Any], settings: Settings, cache: Cache) -> None:
    assert run.id is not None
    study = Path(params["study_file"])
    mapping = (
        load_study_mapping(Path(params["mapping_file"])) if params.get("mapping_file") else None
    )
    result = read_study(study, mapping)
    if result.rejects:
        cache.add_rejects(run_id=run.id, rejects=result.rejects)
    ctx = mapping_context(
        identifier_base=mapping.identifier_base if mapping else None,
        strict=settings.strict_terminology,
        extra=mapping.own_concepts() if mapping else None,
        country=mapping.country if mapping else None,
    )
    server = settings.servers[params["server"]]
    await run_push(cases=result.cases, ctx=ctx, server=server, cache=cache, run_id=run.id)


async def _pull(run: SyncRun, params: dict[str, Any], settings: Settings, cache: Cache) -> None:
    assert run.id is not None
    selection = PullSelection(
        kind=params["selection"], identifiers=tuple(params.get("identifiers") or ()),
        group_id=params.get("group_id"), query=params.get("query"), since=params.get("since"),
    )  # fmt: skip
    server = settings.servers[params["server"]]
    outcome = await run_pull(
        selection=selection, ctx=mapping_context(), server=server, cache=cache, run_id=run.id,
        use_export=bool(params.get("use_export")),
        on_patient=lambda n: cache.update_run(run.id, progress_done=n),  # type: ignore[arg-type]
    )  # fmt: skip
    out = job_dir(settings, run.id)
    write_study(outcome.cases, out, "json")
    (out / "other.json").write_bytes(orjson.dumps(outcome.other))
    write_unmapped(outcome.unmapped, out / "unmapped.csv")
    study = params.get("study")
    summary: dict[str, Any] = {"patients": len(outcome.cases)}
    if study:
        summary = {r.id: r.value for r in summarise(outcome.cases, load_study(study))}
    (out / "summary.json").write_bytes(orjson.dumps(summary))


async def execute(run: SyncRun, settings: Settings, cache: Cache) -> None:
    """Run one claimed job to its end; failures are recorded on the run, never raised."""
    assert run.id is not None
    params = orjson.loads(run.params)
    try:
        if run.kind == "push":
            await _push(run, params, settings, cache)
        else:
            await _pull(run, params, settings, cache)
    except Exception as exc:  # the job's failure belongs to the job, not to the worker
        log.warning("job %s failed: %s", run.id, exc.__class__.__name__)
        cache.finish_run(run.id, status="failed", counts={}, error=_safe_error(exc))


def _safe_error(exc: Exception) -> str:
    """Error text for clients: the message of our own errors, the class name otherwise."""
    from fhir_cart.errors import FhirCartError

    if isinstance(exc, FhirCartError):
        return str(exc)[:2000]
    return exc.__class__.__name__


async def run_worker(
    settings: Settings,
    cache: Cache,
    *,
    name: str | None = None,
    poll: float = 0.5,
    stop: asyncio.Event | None = None,
    until_empty: bool = False,
) -> int:
    """Claim and run jobs until ``stop`` is set (or the queue is empty, with until_empty)."""
    name = name or worker_name()
    done = 0
    while stop is None or not stop.is_set():
        run = cache.claim_next_run(worker=name)
        if run is None:
            if until_empty:
                return done
            await asyncio.sleep(poll)
            continue
        await execute(run, settings, cache)
        done += 1
    return done
