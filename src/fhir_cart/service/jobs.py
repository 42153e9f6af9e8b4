"""Background jobs of the web service: pushes and pulls queued as ``sync_run`` rows.

A worker claims a pending run with row locking (PostgreSQL ``FOR UPDATE SKIP LOCKED``), so
several service processes can share one queue and no job runs twice. A run's state lives in
the cache, so jobs survive a restart. A worker holds a lease on its job, renewed by
heartbeats from a thread every quarter of ``job_lease_seconds``; when they stop (the worker
was killed, or cut off) any worker takes the job over and resumes it (a push sends only
what was not acknowledged). A live worker's job is never taken, and a worker that finds its
job taken stops it and writes nothing more to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fhir_cart.application import (
    Application,
    BuildRequest,
    Cache,
    PullOutcome,
    PullRequest,
    PullSelection,
    SyncRun,
    parse_types,
    run_owner,
    worker_name,
)
from fhir_cart.private import private_dir
from fhir_cart.settings import Settings
from fhir_cart.writers import write_study, write_unmapped

if TYPE_CHECKING:
    from fhir_cart.library.study_mapping import StudyMapping

__all__ = ["JOB_KINDS", "Workers", "execute", "job_dir", "run_worker", "worker_name"]

log = logging.getLogger(__name__)


def job_dir(settings: Settings, run_id: int) -> Path:
    return settings.data_dir / "jobs" / str(run_id)


def _application(app: Application | Settings) -> Application:
    return app if isinstance(app, Application) else Application(app)


async def _push(run: SyncRun, params: dict[str, Any], app: Application, cache: Cache) -> None:
    assert run.id is not None
    mapping_file = params.get("mapping_file")
    mapping = app.load_mapping(Path(mapping_file) if mapping_file else None)
    result = app.read_study(Path(params["study_file"]), mapping)
    app.keep_rejects(cache, result.rejects, run_id=run.id)
    # as the CLI: a file with rejected rows is not pushed in part unless asked
    await app.push(
        result.cases,
        mapping=mapping,
        server=app.server(params["server"], url_allowed=False),
        cache=cache,
        run_id=run.id,
        rejects=result.rejects,
        continue_on_error=bool(params.get("continue_on_error")),
    )


async def _pull(run: SyncRun, params: dict[str, Any], app: Application, cache: Cache) -> None:
    assert run.id is not None
    run_id = run.id
    selection = PullSelection(
        kind=params["selection"],
        identifiers=tuple(params.get("identifiers") or ()),
        group_id=params.get("group_id"),
        query=params.get("query"),
        since=params.get("since"),
        types=parse_types(params.get("types")),
    )
    out, study = private_dir(job_dir(app.settings, run_id)), params.get("study")
    name = params.get("mapping")
    mapping = app.load_mapping(app.mapping_file(name)) if name else None
    own = mapping.own_concepts() if mapping is not None else None
    request = PullRequest(
        selection,
        run_id=run_id,
        use_export=bool(params.get("use_export")),
        on_patient=lambda n: cache.update_run(run_id, progress_done=n),
        on_mapped=lambda outcome: _write_pull_outputs(app, outcome, out, study, mapping),
    )
    server = app.server(params["server"], url_allowed=False)
    await app.pull(request, server=server, cache=cache, own=own)


def _write_pull_outputs(
    app: Application,
    outcome: PullOutcome,
    out: Path,
    study: str | None,
    mapping: StudyMapping | None = None,
) -> None:
    """A pull job's files: the study records, other rows, unmapped and excluded lists and
    summary (``mapping``: the centre mapping whose own concepts were read back)."""
    write_study(outcome.cases, out, "json", app.library.for_mapping(mapping))
    (out / "other.json").write_bytes(orjson.dumps(outcome.other))
    write_unmapped(outcome.unmapped, out / "unmapped.csv")
    write_unmapped(outcome.excluded, out / "excluded.csv")
    summary: dict[str, Any] = {"patients": len(outcome.cases)}
    if study:
        results = app.summary(outcome.cases, app.study(study, mapping)).results
        summary = {r.id: r.value for r in results}
        partial = {r.id: list(r.partial) for r in results if r.partial}
        if partial:  # "-" is in no measure id: the key cannot be taken by a measure
            summary["partial-dates"] = partial
    (out / "summary.json").write_bytes(orjson.dumps(summary))


async def _registry(run: SyncRun, params: dict[str, Any], app: Application, cache: Cache) -> None:
    """``registry build`` as a job: params ``registry_file``, optional ``server`` to push to
    (a name in settings), ``force``; the registry goes to the job's folder."""
    assert run.id is not None
    run_id = run.id

    def progress(step: str, done: int, total: int) -> None:
        cache.update_run(run_id, progress_done=done, progress_total=total)

    out = private_dir(job_dir(app.settings, run_id))
    request = BuildRequest(
        Path(params["registry_file"]),
        out,
        push=params.get("server"),
        force=bool(params.get("force")),
        progress=progress,
    )
    result, _ = await asyncio.to_thread(app.registry_build, request)
    registry = result.registry
    counts = (
        {}
        if registry is None
        else {
            "patients": registry.patient_count,
            "links": len({(min(k.left, k.right), max(k.left, k.right)) for k in registry.links}),
            "conflicts": len(registry.conflicts),
        }
    )
    cache.finish_run(run_id, status="succeeded", counts=counts)


JOB_KINDS = ("push", "pull", "registry")


async def execute(run: SyncRun, app: Application | Settings, cache: Cache) -> None:
    """Run one claimed job to its end, holding its lease; failures are recorded on the run,
    never raised. A worker that loses the lease (another took the job over after it sent
    no heartbeat for ``job_lease_seconds``) stops the job and writes nothing more to it."""
    assert run.id is not None
    assert run.worker is not None
    app = _application(app)
    owner = run_owner.set(run.worker)
    try:
        async with _lease(cache, run.id, run.worker, app.settings.job_lease_seconds) as lost:
            try:
                await _job(run, app, cache)
            except asyncio.CancelledError:
                if not lost.is_set():
                    raise
                log.warning("job %s: lease lost to another worker; stopped here", run.id)
    finally:
        run_owner.reset(owner)


async def _job(run: SyncRun, app: Application, cache: Cache) -> None:
    assert run.id is not None
    params = orjson.loads(run.params)
    try:
        if run.kind == "push":
            await _push(run, params, app, cache)
        elif run.kind == "registry":
            await _registry(run, params, app, cache)
        else:
            await _pull(run, params, app, cache)
    except Exception as exc:  # the job's failure belongs to the job, not to the worker
        log.warning("job %s failed: %s", run.id, exc.__class__.__name__)
        cache.finish_run(run.id, status="failed", counts={}, error=_safe_error(exc, app))


@contextlib.asynccontextmanager
async def _lease(
    cache: Cache, run_id: int, worker: str, seconds: float
) -> AsyncIterator[threading.Event]:
    """Heartbeats every quarter lease from a thread of their own (a job's blocking work
    cannot delay them); if one finds the job taken over, the job's task is cancelled.

    The cancel is delivered on the loop, only while the job still runs inside this lease:
    one that arrives after the job ended (its own ``finish_run`` made the next heartbeat
    fail) is dropped, so it can never reach the worker's loop or its next job."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stop, lost = threading.Event(), threading.Event()
    state = {"inside": True, "cancelled": False}

    def cancel_job() -> None:  # runs on the loop, so never while the finally below runs
        if state["inside"]:
            state["cancelled"] = True
            task.cancel()

    def beat() -> None:
        while not stop.wait(seconds / 4):
            if cache.heartbeat(run_id, worker=worker):
                continue
            if not cache.finished_by(run_id, worker=worker):
                lost.set()
                loop.call_soon_threadsafe(cancel_job)
            return

    thread = threading.Thread(target=beat, name=f"lease-{run_id}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        state["inside"] = False
        stop.set()
        thread.join()  # at most one heartbeat in flight: never long, and no await to cancel
        if state["cancelled"]:
            task.uncancel()


def _safe_error(exc: Exception, app: Application) -> str:
    """Error text for clients: the message of our own errors (paths relative to the data
    and mappings folders), the class name otherwise."""
    from fhir_cart.errors import FhirCartError
    from fhir_cart.service.deps import public_paths

    if isinstance(exc, FhirCartError):
        return public_paths(str(exc), app)[:2000]
    return exc.__class__.__name__


async def run_worker(
    app: Application | Settings,
    cache: Cache,
    *,
    name: str | None = None,
    poll: float = 0.5,
    stop: asyncio.Event | threading.Event | None = None,
    until_empty: bool = False,
) -> int:
    """Claim and run jobs until ``stop`` is set (or the queue is empty, with until_empty).
    An error outside a job (the cache not answering, say) is logged by class and the loop
    goes on after ``poll`` seconds: it never ends the worker."""
    app = _application(app)
    name = name or worker_name()
    done = 0
    while stop is None or not stop.is_set():
        lease, run = app.settings.job_lease_seconds, None
        try:
            run = cache.claim_next_run(worker=name, lease=lease, kinds=JOB_KINDS)
            if run is not None:
                await execute(run, app, cache)
                done += 1
                continue
        except Exception as exc:  # the worker outlives any one failure
            log.error("job worker %s: %s outside a job; going on", name, exc.__class__.__name__)
        if until_empty:
            return done
        await asyncio.sleep(poll)
    return done


class Workers:
    """The job worker on a loop of its own in a thread, watched: a worker that dies (an
    exception or a cancellation reached its loop) is logged by class name and restarted
    within ``check`` seconds. ``alive()`` and ``restarts`` are what ``/health`` reports."""

    def __init__(
        self, app: Application | Settings, cache: Cache, *, poll: float = 0.5, check: float = 1.0
    ) -> None:
        self.app, self.cache, self.poll, self.check = _application(app), cache, poll, check
        self.stop = threading.Event()
        self.restarts = 0
        self.last_death: str | None = None
        self._thread: threading.Thread | None = None
        self._watch = threading.Thread(target=self._watch_loop, name="jobs-watch", daemon=True)

    def start(self) -> None:
        self._thread = self._spawn()
        self._watch.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        self.stop.set()
        if self._watch.is_alive():
            self._watch.join()
        if self._thread is not None:
            self._thread.join()

    def _spawn(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="jobs")
        thread.start()
        return thread

    def _run(self) -> None:
        try:
            asyncio.run(run_worker(self.app, self.cache, poll=self.poll, stop=self.stop))
        except BaseException as exc:  # recorded; the watcher restarts it
            self.last_death = exc.__class__.__name__
            log.error("job worker died: %s", self.last_death)

    def _watch_loop(self) -> None:
        while not self.stop.wait(self.check):
            if self.alive() or self.stop.is_set():
                continue
            self.restarts += 1
            log.error("job worker was dead (%s): restart %d", self.last_death, self.restarts)
            self._thread = self._spawn()
