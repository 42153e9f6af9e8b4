"""Push and pull as whole jobs: study records <-> cache <-> FHIR server, each a recorded run.

Used by the CLI, the web service's background jobs and the demo. A run that dies (crash,
Ctrl-C, a server fault that outlasts the retries) is marked ``interrupted`` or ``failed``;
running the same push again sends only what the server has not acknowledged.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from fhir_cart.cache import Cache, worker_name
from fhir_cart.cache.locks import exclusive
from fhir_cart.client import FhirClient
from fhir_cart.errors import FhirClientError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import (
    ReverseResult,
    ReverseStream,
    Unmapped,
    cases_from_fhir,
    other_row,
)
from fhir_cart.records import Case
from fhir_cart.references import server_id, subject_patient_id
from fhir_cart.settings import ServerSettings
from fhir_cart.sync.accounting import TypeCount, by_type, places
from fhir_cart.sync.connect import client_for, discover
from fhir_cart.sync.pull import (
    CHUNK,
    EVENT_TYPES,
    PatientSearch,
    PullSelection,
    PullStats,
    ResourceFetcher,
    asked_types,
    deleted_since,
    patient_params,
    pull_resources,
    server_capabilities,
)
from fhir_cart.sync.push import Key, PushPlan, PushReport, plan_push, push, verify_on_server
from fhir_cart.sync.retract import removed_records, retract

__all__ = ["PullOutcome", "push_locks", "run_pull", "run_push"]

log = logging.getLogger(__name__)


_WAITING = "waiting for another push of the same centre to this server to finish"


def push_locks(server: str, cases: Iterable[Case]) -> list[str]:
    """One lock per (server, centre): two pushes of one cohort to one server never overlap
    (their conditional updates could otherwise both create), other centres go side by side."""
    return sorted({f"push {server} {case.patient.centre}" for case in cases})


async def run_push(
    *,
    cases: Sequence[Case],
    ctx: MappingContext,
    server: ServerSettings,
    cache: Cache,
    dry_run: bool = False,
    run_id: int | None = None,
    on_bundle_done: Callable[[int, int], None] | None = None,
) -> tuple[PushPlan, PushReport | None]:
    """Plan (only what changed since the last push) and, unless ``dry_run``, send.

    A push waits for any other push of the same centre to the same server (another job,
    worker or process using this cache) and plans only once that one has finished."""
    key = server.base_url
    await cache.call(cache.upsert_study_records, cases=cases)
    if dry_run:
        return await cache.call(_plan, ctx, cases, cache, key), None
    async with exclusive(cache, push_locks(key, cases), waiting=_WAITING):
        if run_id is None:
            await cache.call(cache.mark_dead_workers)  # a push killed earlier: its journal
            run_id = await cache.call(  # may now be cleared
                cache.create_run, kind="push", server=key, params={"patients": len(cases)},
                worker=worker_name(),
            )  # fmt: skip
        return await _send(ctx, cases, server, cache, run_id, on_bundle_done)


def _plan(
    ctx: MappingContext,
    cases: Sequence[Case],
    cache: Cache,
    key: str,
    gone: AbstractSet[Key] = frozenset(),
) -> PushPlan:
    """What changed since the last push; ``gone`` are resources the server no longer holds
    as the cache recorded them: sent again, and never linked to by their old server id."""
    return plan_push(
        ctx,
        cases,
        changed=lambda items: (
            cache.changed(server=key, items=items) | {k for k, _ in items if k in gone}
        ),
        server_ids=lambda keys: {
            k: v for k, v in cache.server_ids(server=key, keys=keys).items() if k not in gone
        },
    )


async def _verified_plan(
    ctx: MappingContext, cases: Sequence[Case], cache: Cache, key: str, client: FhirClient
) -> PushPlan:
    """Plan, then check the server still holds what the plan would skip as unchanged.
    Planning (mapping, and change detection in the cache) runs on the cache's thread."""
    plan = await cache.call(_plan, ctx, cases, cache, key)
    if not plan.unchanged:
        return plan
    believed = await cache.call(cache.sent_versions, server=key, keys=plan.unchanged)
    gone = await verify_on_server(client, believed)
    if not gone:
        return plan
    log.warning("%d resources the cache recorded are not on the server as recorded "
                "(wiped, restored or changed there): sending them again", len(gone))  # fmt: skip
    return await cache.call(_plan, ctx, cases, cache, key, gone)


async def _send(
    ctx: MappingContext,
    cases: Sequence[Case],
    server: ServerSettings,
    cache: Cache,
    run_id: int,
    on_bundle_done: Callable[[int, int], None] | None,
) -> tuple[PushPlan, PushReport]:
    key = server.base_url
    try:
        async with client_for(server) as client:
            plan = await _verified_plan(ctx, cases, cache, key, client)
            report = await push(
                plan, client=client, cache=cache, server=key, run_id=run_id,
                bundle_size=server.bundle_size, concurrency=server.concurrency,
                on_bundle_done=on_bundle_done, capabilities=await discover(client, server),
            )  # fmt: skip
            if not report.failures:
                await _retract_removed(plan, client, cache, server, report, ctx.resource_id)
    except BaseException as exc:
        cache.finish_run(run_id, status="interrupted", counts={}, error=exc.__class__.__name__)
        raise
    status = "failed" if report.failures else "succeeded"
    await cache.call(cache.finish_run, run_id, status=status, counts=report.counts)
    if not report.failures:
        resumed = await cache.call(cache.clear_stale_pending)
        if resumed:
            log.info("finished %d resources left in flight by an interrupted push", resumed)
    return plan, report


async def _retract_removed(
    plan: PushPlan,
    client: FhirClient,
    cache: Cache,
    server: ServerSettings,
    report: PushReport,
    resource_id: Callable[[str, str], str],
) -> None:
    """Records of the file's patients that the file no longer has: withdrawn and reported."""
    key = server.base_url
    removed, urns = await cache.call(removed_records, cache, key, plan.hashes, resource_id)
    if not removed:
        return
    outcomes = await retract(removed, urns, client=client, mode=server.on_removed)
    await cache.call(cache.record_retracted, server=key, run_id=report.run_id, outcomes=outcomes)
    for outcome in outcomes:
        report.add(outcome.outcome)
        if outcome.outcome == "failed":
            report.failures.append((outcome.key, outcome.status_code, outcome.reason or ""))


@dataclass(repr=False)
class PullOutcome:
    run_id: int
    cases: list[Case] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    stats: PullStats = field(default_factory=PullStats)
    other: list[dict[str, Any]] = field(default_factory=list)
    """Rows for resources that match no concept (the ``other`` table): nothing is dropped."""
    excluded: list[Unmapped] = field(default_factory=list)
    """Resources whose status says they did not happen (entered-in-error, refuted, not-done,
    cancelled, ...: mappings/statuses.yaml), each with the reason: no event, no other row."""
    by_type: dict[str, TypeCount] = field(default_factory=dict)
    """Per resource type: fetched, and where each ended (patients, events, used, other,
    excluded); ``unaccounted`` and ``twice`` are 0 unless fhir_cart is at fault."""

    def __repr__(self) -> str:
        # counts only: asyncio.run reprs the finished task's result when it restores its
        # SIGINT handler (Python 3.11), and the whole cohort's repr took 0.3 s per 1,000
        # patients
        return (f"PullOutcome(run_id={self.run_id}, cases={len(self.cases)}, "
                f"unmapped={len(self.unmapped)}, other={len(self.other)}, "
                f"excluded={len(self.excluded)})")  # fmt: skip


class _Received:
    """What a pull received: written to the cache on its own thread while the pull goes on
    (one transaction per batch, in the order received, at most one batch waiting), and
    kept here, the last version of each (type, id) as the cache keeps it, so the study
    records are made without reading back what was just written."""

    def __init__(self, cache: Cache, key: str) -> None:
        self.cache = cache
        self.key = key
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self._writing: asyncio.Future[int] | None = None

    async def add(self, resources: list[dict[str, Any]]) -> None:
        for resource in resources:
            self.resources[(str(resource["resourceType"]), str(resource.get("id")))] = resource
        await self.flush()
        if resources:
            record = self.cache.record_received
            self._writing = asyncio.ensure_future(
                self.cache.call(record, server=self.key, resources=resources)
            )

    async def flush(self) -> None:
        """Wait for the batch being written (its error, if any, is raised here)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def settle(self) -> None:
        """After a failure: wait for the batch being written (whole, or not at all), with
        an error of its own logged, not raised over the failure."""
        try:
            await self.flush()
        except Exception:
            log.warning("writing received resources to the cache failed", exc_info=True)


async def _fetch(
    client: FhirClient,
    received: _Received,
    selection: PullSelection,
    stats: PullStats,
    on_patient: Callable[[int], None] | None,
    stream: ReverseStream,
    search_params: dict[str, list[str]] | None = None,
    concurrency: int = 4,
) -> set[str]:
    """Fetch the selected patients' resources into the cache, mapping each patient's as
    they arrive (while the next are fetched); the ids of the patients received."""
    patient_ids: set[str] = set()
    pulled = pull_resources(client, selection, stats, search_params, concurrency=concurrency)
    batch: list[dict[str, Any]] = []
    async for patient, resources in pulled:
        patient_ids.add(str(patient["id"]))
        batch += [patient, *resources]
        stream.add(batch[-1 - len(resources) :])
        if len(batch) >= _RECORD_BATCH:  # one transaction per batch, not per patient
            await received.add(batch)
            batch = []
        if on_patient is not None:
            on_patient(len(patient_ids))
    await received.add(batch)
    stats.complete = {"Patient", *stats.asked}  # each searched by patient or read by type
    return patient_ids


async def _fetch_medications(
    client: FhirClient, received: _Received, stats: PullStats, stream: ReverseStream
) -> None:
    """The Medications the received resources name in ``medicationReference`` (not in the
    patient compartment, so no patient search finds them): ``Medication?_id=a,b,...``."""
    wanted = sorted(medication_ids(received.resources.values()) - {
        rid for rtype, rid in received.resources if rtype == "Medication"
    })  # fmt: skip
    for start in range(0, len(wanted), _MEDICATIONS_PER_SEARCH):
        ids = wanted[start : start + _MEDICATIONS_PER_SEARCH]
        batch = []
        async for resource in client.search("Medication", {"_id": ",".join(ids)}):
            if stats.keep(resource) and resource.get("resourceType") == "Medication":
                stats.count(resource)
                batch.append(resource)
        await received.add(batch)
        stream.add(batch)


_MEDICATIONS_PER_SEARCH = 50

MEDICATION_TYPES = frozenset(
    {"MedicationAdministration", "MedicationRequest", "MedicationStatement", "MedicationDispense"}
)


def medication_ids(resources: Iterable[dict[str, Any]]) -> set[str]:
    """Ids of the Medications (not contained ones) that medication resources reference."""
    out: set[str] = set()
    for resource in resources:
        if resource.get("resourceType") not in MEDICATION_TYPES:
            continue
        reference = resource.get("medicationReference")
        found = server_id(reference.get("reference") if isinstance(reference, dict) else None,
                          "Medication")  # fmt: skip
        if found is not None:
            out.add(found)
    return out


_RECORD_BATCH = 2_000
"""Resources received written to the cache in one transaction (a commit per patient made
the cache, not the server, the bottleneck of a pull)."""


async def _fetch_export(client: FhirClient, received: _Received, selection: PullSelection,
                        stats: PullStats, concurrency: int = 4) -> set[str]:  # fmt: skip
    # every type of the group's compartment by default (no _type): Bulk Data exports all
    types = None if selection.types is None else ["Patient", *selection.types]
    manifest = await client.export_manifest(
        group_id=selection.group_id, types=types, since=selection.since
    )
    requires_token = manifest.get("requiresAccessToken") is not False
    # a type without an output file may be empty or not exported at all (sekmet leaves out
    # AdverseEvent): only types with a file were received in full
    stats.complete = {str(o.get("type")) for o in manifest.get("output", ())}
    patient_ids: set[str] = set()
    for output in manifest.get("output", ()):
        batch: list[dict[str, Any]] = []
        url = str(output["url"])
        async for resource in client.stream_ndjson(url, requires_access_token=requires_token):
            is_patient = resource.get("resourceType") == "Patient"
            if not stats.keep(resource, needs_subject=not is_patient):
                continue
            stats.count(resource)
            if is_patient:
                patient_ids.add(str(resource["id"]))
            batch.append(resource)
            if len(batch) >= 1000:
                await received.add(batch)
                batch = []
        await received.add(batch)
    stats.patients = len(patient_ids)
    wanted = EVENT_TYPES if selection.types is None else selection.types
    missing = [t for t in wanted if t not in stats.complete]
    if missing and patient_ids:
        await _search_missing(client, received, missing, patient_ids, selection, stats,
                              concurrency)  # fmt: skip
        stats.complete |= set(missing)  # searched per patient: received in full now
    stats.asked = sorted(stats.complete - {"Patient"})
    return patient_ids


async def _search_missing(
    client: FhirClient,
    received: _Received,
    types: list[str],
    patient_ids: set[str],
    selection: PullSelection,
    stats: PullStats,
    concurrency: int = 4,
) -> None:
    """Types an export left out (sekmet 0.1.1 exports no AdverseEvent, for one; an empty
    type has no output either): searched for the patients, a chunk at a time, so nothing
    is silently missing."""
    params = await patient_params(client, types=types)
    search = PatientSearch(client, stats, selection.since, concurrency)
    fetcher = await ResourceFetcher.start(search, {t: params[t] for t in types})
    ids = sorted(patient_ids)
    for start in range(0, len(ids), CHUNK):
        part = ids[start : start + CHUNK]
        found = await fetcher.of(part)
        resources = [r for pid in part for r in found[pid]]
        for resource in resources:
            stats.count(resource)
        await received.add(resources)


def _belongs(resource: dict[str, Any], patient_ids: set[str]) -> bool:
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id")) in patient_ids
    return subject_patient_id(resource) in patient_ids


def _cache_order(resource: dict[str, Any]) -> tuple[str, str]:
    return str(resource["resourceType"]), str(resource.get("id"))


def _current(
    cache: Cache,
    key: str,
    ids: set[str],
    stats: PullStats,
    gone: set[tuple[str, str]],
    received: dict[tuple[str, str], dict[str, Any]],
    *,
    full: bool,
) -> tuple[list[dict[str, Any]], int]:
    """The selected patients' resources as the server holds them now, in the cache's order
    (type, id), and how many the cache held that the server has deleted (dropped from the
    cache). A full pull received every resource of its patients, so anything else the cache
    holds for them is gone; an incremental one learns deletions from ``_history``
    (``gone``). What this pull received (``received``) is not read back from the cache:
    only the content of resources the cache held before it."""
    # what this pull received, all of it: a resource whose subject is a Patient not pulled
    # (a server matching it through another path) is listed as an ``other`` row, not lost
    held = list(received.values())
    older: list[tuple[str, str]] = []
    if cache.records.received_count(server=key) > len(received):  # it holds more than these
        older = [k for k in cache.records.received_ids(server=key) if k not in received]
    if older:
        earlier = cache.records.received_content(server=key, ids=older)
        held += [r for r in earlier if _belongs(r, ids)]
        # Medications belong to the patients whose resources name them (those this pull
        # received are in ``held`` already)
        drugs = medication_ids(held)
        held += [r for r in earlier if _is_medication_of(r, drugs)]
    held.sort(key=_cache_order)
    if full:
        known = {(str(r["resourceType"]), str(r.get("id"))) for r in held}
        gone = {(t, i) for t, i in known if t in stats.complete} - stats.seen
    deleted = cache.forget_received(server=key, ids=sorted(gone)) if gone else 0
    if deleted:
        log.info("%d resources deleted on the server since the last pull: removed", deleted)
    keep = [r for r in held if (str(r["resourceType"]), str(r.get("id"))) not in gone]
    return keep, deleted


def _is_medication_of(resource: dict[str, Any], drugs: set[str]) -> bool:
    return resource.get("resourceType") == "Medication" and str(resource.get("id")) in drugs


_NO_HISTORY = frozenset({400, 404, 405, 501})
"""Statuses of a server that keeps no type-level ``_history`` (Medplum's in-memory router)."""


async def _deletions(
    client: FhirClient, selection: PullSelection, search_params: dict[str, list[str]] | None
) -> tuple[PullSelection, set[tuple[str, str]]]:
    """For an incremental pull, what was deleted on the server since its instant. A server
    without type history cannot say: the pull then reads everything, and deletions are found
    by comparing with the cache, never silently missed."""
    if not selection.since:
        return selection, set()
    types, _ = asked_types(await server_capabilities(client, search_params), selection.types)
    try:
        return selection, await deleted_since(client, selection.since, types)
    except FhirClientError as exc:
        if exc.status not in _NO_HISTORY:
            raise
    log.info("the server keeps no type history: reading everything to see deletions")
    return replace(selection, since=None), set()


_frozen = 0


@contextmanager
def _gc_frozen() -> Iterator[None]:
    """What is alive when a pull starts (modules, the concept library, ...) is left out of
    the garbage collector's scans until it ends (``gc.freeze``): a pull keeps every
    resource it receives, and each full collection would walk those and all of that
    (about 0.3 s of a 1,000-patient pull's CPU here). Pulls side by side in one process
    unfreeze when the last one ends."""
    global _frozen
    if _frozen == 0:
        gc.freeze()
    _frozen += 1
    try:
        yield
    finally:
        _frozen -= 1
        if _frozen == 0:
            gc.unfreeze()


@dataclass(frozen=True)
class PullRequest:
    """What a caller asks of a pull: which patients (``selection``), read by
    ``$export`` or by search, the centre of patients without one, the run it belongs to
    (None: a new run), and callbacks: ``on_patient`` (patients fetched so far) and
    ``on_mapped`` (writing the study tables, say: it runs before the run is marked
    succeeded, so whoever sees a succeeded run finds its outputs complete)."""

    selection: PullSelection
    use_export: bool = False
    default_centre: str = "ehr"
    run_id: int | None = None
    on_patient: Callable[[int], None] | None = None
    on_mapped: Callable[[PullOutcome], None] | None = None


async def run_pull(
    request: PullRequest, *, ctx: MappingContext, server: ServerSettings, cache: Cache
) -> PullOutcome:
    """Fetch the cohort into the cache, reverse-mapping it as it arrives."""
    with _gc_frozen():
        return await _run_pull(request, ctx=ctx, server=server, cache=cache)


async def _run_pull(
    request: PullRequest, *, ctx: MappingContext, server: ServerSettings, cache: Cache
) -> PullOutcome:
    selection, use_export, default_centre = (
        request.selection, request.use_export, request.default_centre
    )  # fmt: skip
    run_id, on_patient, on_mapped = request.run_id, request.on_patient, request.on_mapped
    key = server.base_url
    if run_id is None:
        cache.mark_dead_workers()
        run_id = cache.create_run(
            kind="pull", server=key, params={"selection": selection.kind}, worker=worker_name()
        )
    stats = PullStats(limit=server.max_resources_per_pull)
    received = _Received(cache, key)
    stream = ReverseStream(ctx, default_centre=default_centre)
    try:
        try:
            async with client_for(server) as client:
                selection, gone = await _deletions(client, selection, server.search_params)
                if use_export:
                    ids = await _fetch_export(client, received, selection, stats,
                                              server.concurrency)  # fmt: skip
                    await _fetch_medications(client, received, stats, stream)
                else:
                    ids = await _fetch(client, received, selection, stats, on_patient, stream,
                                       server.search_params, server.concurrency)  # fmt: skip
                    await _fetch_medications(client, received, stats, stream)
        except BaseException:
            await received.settle()  # a batch on its way to the cache: written whole, or not
            raise
        await received.flush()
    except BaseException as exc:
        cache.finish_run(run_id, status="interrupted", counts={}, error=exc.__class__.__name__)
        raise
    resources, deleted = _current(cache, key, ids, stats, gone, received.resources,
                                  full=selection.since is None)  # fmt: skip
    if use_export:
        result = cases_from_fhir(ctx, resources, default_centre=default_centre)
    else:  # mapped while fetched: only what waited for a later patient or specimen is left
        result = stream.result(resources)
    dropped = [Unmapped(ref, rtype, reason) for ref, rtype, reason in stats.dropped]
    result.unmapped[:0] = dropped
    result.other[:0] = [other_row(r, None, reason) for r, reason in stats.unowned]
    unmapped = {(u.resource_type, u.reference.split("/", 1)[-1]): u.reason for u in result.unmapped}
    unmapped |= {(u.resource_type, u.reference.split("/", 1)[-1]): f"excluded: {u.reason}"
                 for u in result.excluded}  # fmt: skip
    cache.mark_mapped(server=key, unmapped=unmapped)
    accounted = _account(ctx, resources, result, stats, default_centre)
    counts: dict[str, Any] = {
        "patients": len(result.cases), "unmapped": len(result.unmapped),
        "excluded": len(result.excluded), **stats.resources,
    }  # fmt: skip
    if deleted:
        counts["deleted_on_server"] = deleted
    counts["by_type"] = {t: c.as_dict() for t, c in accounted.items()}
    if stats.not_asked:
        counts["not_asked"] = stats.not_asked
    if stats.not_searchable:
        counts["not_searchable"] = stats.not_searchable
    other = [dict(row) for row in result.other]
    outcome = PullOutcome(run_id, result.cases, result.unmapped, stats, other,
                          list(result.excluded), accounted)  # fmt: skip
    if on_mapped is not None:
        on_mapped(outcome)
    cache.finish_run(run_id, status="succeeded", counts=counts)
    return outcome


def _account(
    ctx: MappingContext,
    resources: list[dict[str, Any]],
    result: ReverseResult,
    stats: PullStats,
    centre: str,
) -> dict[str, TypeCount]:
    """The pull's account per type (see :mod:`fhir_cart.sync.accounting`): the resources
    mapped and those received without a Patient subject (``other`` rows)."""
    unowned = [r for r, _ in stats.unowned if isinstance(r, dict)]
    found = places(ctx, [*resources, *unowned], result, centre=centre)
    fetched = dict(stats.resources)
    for resource in unowned:
        rtype = str(resource.get("resourceType", "(unknown)"))
        fetched[rtype] = fetched.get(rtype, 0) + 1
    accounted = by_type(found, fetched)
    faults = {t: c for t, c in accounted.items() if c.unaccounted or c.twice}
    if faults:
        log.warning("resources not accounted for exactly once (a fhir_cart fault): %s",
                    {t: (c.unaccounted, c.twice) for t, c in faults.items()})  # fmt: skip
    return accounted
