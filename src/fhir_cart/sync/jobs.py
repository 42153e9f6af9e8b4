"""Push and pull as whole jobs: study records <-> cache <-> FHIR server, each a recorded run.

Used by the CLI, the web service's background jobs and the demo. A run that dies (crash,
Ctrl-C, a server fault that outlasts the retries) is marked ``interrupted`` or ``failed``;
running the same push again sends only what the server has not acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fhir_cart.cache import Cache, worker_name
from fhir_cart.cache.locks import exclusive
from fhir_cart.client import FhirClient
from fhir_cart.collector import Collector, bulk_collection
from fhir_cart.errors import FhirClientError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import ReverseResult, Unmapped, other_row
from fhir_cart.patient_index import PatientIndex, add_counts, map_index
from fhir_cart.records import Case
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
from fhir_cart.sync.pulled import (
    MEDICATION_TYPES,
    Collected,
    PullTables,
    Written,
    medication_ids,
    settle,
)
from fhir_cart.sync.push import Key, PushPlan, PushReport, plan_push, push, verify_on_server
from fhir_cart.sync.retract import removed_records, retract

__all__ = [
    "MEDICATION_TYPES",
    "PullOutcome",
    "PullTables",
    "medication_ids",
    "push_locks",
    "run_pull",
    "run_push",
]

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
        callers = run_id is not None
        if run_id is None:
            await cache.call(cache.mark_dead_workers)  # a push killed earlier: its journal
            run_id = await cache.call(  # may now be cleared
                cache.create_run,
                kind="push",
                server=key,
                params={"patients": len(cases)},
                worker=worker_name(),
            )
        return await _send(ctx, cases, server, cache, run_id, on_bundle_done, callers=callers)


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
    log.warning(
        "%d resources the cache recorded are not on the server as recorded "
        "(wiped, restored or changed there): sending them again",
        len(gone),
    )
    return await cache.call(_plan, ctx, cases, cache, key, gone)


async def _send(
    ctx: MappingContext,
    cases: Sequence[Case],
    server: ServerSettings,
    cache: Cache,
    run_id: int,
    on_bundle_done: Callable[[int, int], None] | None,
    *,
    callers: bool,
) -> tuple[PushPlan, PushReport]:
    """Send the plan; ``callers`` says the run is the caller's (a service job's), as for a
    pull: a failure of it is left to the caller to record."""
    key = server.base_url
    try:
        async with client_for(server) as client:
            plan = await _verified_plan(ctx, cases, cache, key, client)
            report = await push(
                plan,
                client=client,
                cache=cache,
                server=key,
                run_id=run_id,
                bundle_size=server.bundle_size,
                concurrency=server.concurrency,
                on_bundle_done=on_bundle_done,
                capabilities=await discover(client, server),
            )
            if not report.failures:
                await _retract_removed(plan, client, cache, server, report, ctx.resource_id)
    except BaseException as exc:
        if not callers or not isinstance(exc, Exception):
            # a run made here, or a cancellation: interrupted (a re-run resumes it). An
            # ordinary failure of a caller's run (a service job) is the caller's to record,
            # so that whoever polls the run never sees it interrupted before it is failed.
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
    """Every case, unless the pull wrote its tables as it mapped (``tables``): then only if
    asked (``PullTables.keep_cases``)."""
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
    tables: Written | None = None
    """When the pull wrote its tables as it mapped: the files and the counts (the lists
    above are then empty)."""

    def __repr__(self) -> str:
        # counts only: asyncio.run reprs the finished task's result when it restores its
        # SIGINT handler (Python 3.11), and the whole cohort's repr took 0.3 s per 1,000
        # patients
        return (
            f"PullOutcome(run_id={self.run_id}, cases={len(self.cases)}, "
            f"unmapped={len(self.unmapped)}, other={len(self.other)}, "
            f"excluded={len(self.excluded)})"
        )

    @property
    def excluded_reasons(self) -> dict[str, int]:
        """How many resources were excluded for each reason."""
        if self.tables is not None:
            return dict(self.tables.excluded_reasons)
        reasons: dict[str, int] = {}
        for item in self.excluded:
            reasons[item.reason] = reasons.get(item.reason, 0) + 1
        return reasons


class _Received:
    """What a pull received: written to the cache on its own thread while the pull goes on
    (one transaction per batch, in the order received, at most one batch waiting), and to
    the pull's patient index (on disk), so the study records are made without reading back
    what was just written and without holding the cohort in memory."""

    def __init__(self, cache: Cache, key: str, index: PatientIndex) -> None:
        self.cache = cache
        self.key = key
        self.index = index
        self.named_drugs: set[str] = set()
        """Ids of the Medications received resources name."""
        self.drugs: set[str] = set()
        """Ids of the Medications received."""
        self._writing: asyncio.Future[int] | None = None

    async def add(self, resources: list[dict[str, Any]]) -> None:
        for resource in resources:
            self.index.add(resource)
            if resource.get("resourceType") == "Medication":
                self.drugs.add(str(resource.get("id")))
        self.named_drugs |= medication_ids(resources)
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
    search_params: dict[str, list[str]] | None = None,
    concurrency: int = 4,
) -> set[str]:
    """Fetch the selected patients' resources into the cache and the index; the ids of
    the patients received."""
    patient_ids: set[str] = set()
    pulled = pull_resources(client, selection, stats, search_params, concurrency=concurrency)
    batch: list[dict[str, Any]] = []
    collector = Collector(True, every=_COLLECT_EVERY)
    async for patient, resources in pulled:
        collector.step()
        patient_ids.add(str(patient["id"]))
        batch += [patient, *resources]
        if len(batch) >= _RECORD_BATCH:  # one transaction per batch, not per patient
            await received.add(batch)
            batch = []
        if on_patient is not None:
            on_patient(len(patient_ids))
    await received.add(batch)
    stats.complete = {"Patient", *stats.asked}  # each searched by patient or read by type
    return patient_ids


_COLLECT_EVERY = 200
"""Patients fetched between collections of their cycles (2,000 let a 10,000-patient pull's
peak memory grow by some 18 MiB: benchmarks/bench_pull_memory.py, issue 24)."""


async def _fetch_medications(client: FhirClient, received: _Received, stats: PullStats) -> None:
    """The Medications the received resources name in ``medicationReference`` (not in the
    patient compartment, so no patient search finds them): ``Medication?_id=a,b,...``."""
    wanted = sorted(received.named_drugs - received.drugs)
    for start in range(0, len(wanted), _MEDICATIONS_PER_SEARCH):
        ids = wanted[start : start + _MEDICATIONS_PER_SEARCH]
        batch = []
        async for resource in client.search("Medication", {"_id": ",".join(ids)}):
            if stats.keep(resource) and resource.get("resourceType") == "Medication":
                stats.count(resource)
                batch.append(resource)
        await received.add(batch)


_MEDICATIONS_PER_SEARCH = 50

_RECORD_BATCH = 2_000
"""Resources received written to the cache in one transaction (a commit per patient made
the cache, not the server, the bottleneck of a pull)."""


async def _fetch_export(
    client: FhirClient,
    received: _Received,
    selection: PullSelection,
    stats: PullStats,
    concurrency: int = 4,
) -> set[str]:
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
        await _search_missing(client, received, missing, patient_ids, selection, stats, concurrency)
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
    try:
        for start in range(0, len(ids), CHUNK):
            part = ids[start : start + CHUNK]
            found = await fetcher.of(part)
            resources = [r for pid in part for r in found[pid]]
            for resource in resources:
                stats.count(resource)
            await received.add(resources)
    finally:
        fetcher.close()


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


@dataclass(frozen=True)
class PullRequest:
    """What a caller asks of a pull: which patients (``selection``), read by
    ``$export`` or by search, the centre of patients without one, the run it belongs to
    (None: a new run), callbacks: ``on_patient`` (patients fetched so far) and
    ``on_mapped`` (writing the study tables, say: it runs before the run is marked
    succeeded, so whoever sees a succeeded run finds its outputs complete), and ``tables``:
    the study tables written as patients are mapped (the outcome then holds counts, not
    records: memory flat in the cohort)."""

    selection: PullSelection
    use_export: bool = False
    default_centre: str = "ehr"
    run_id: int | None = None
    on_patient: Callable[[int], None] | None = None
    on_mapped: Callable[[PullOutcome], None] | None = None
    tables: PullTables | None = None


async def run_pull(
    request: PullRequest, *, ctx: MappingContext, server: ServerSettings, cache: Cache
) -> PullOutcome:
    """Fetch the cohort into the cache (and a temporary patient index), then map it patient
    by patient (:mod:`fhir_cart.sync.pulled`), as :class:`PullRequest` says."""
    with (
        bulk_collection(),
        tempfile.TemporaryDirectory(prefix="fhir-cart-pull-") as work,
        PatientIndex(Path(work) / "index.sqlite", keyed=True) as index,
    ):
        return await _run_pull(request, ctx=ctx, server=server, cache=cache, index=index)


async def _run_pull(
    request: PullRequest,
    *,
    ctx: MappingContext,
    server: ServerSettings,
    cache: Cache,
    index: PatientIndex,
) -> PullOutcome:
    selection, use_export, default_centre = (
        request.selection,
        request.use_export,
        request.default_centre,
    )
    run_id, on_patient, on_mapped = request.run_id, request.on_patient, request.on_mapped
    tables = request.tables
    key = server.base_url
    if run_id is None:
        cache.mark_dead_workers()
        run_id = cache.create_run(
            kind="pull", server=key, params={"selection": selection.kind}, worker=worker_name()
        )
    stats = PullStats(limit=server.max_resources_per_pull)
    received = _Received(cache, key, index)
    try:
        try:
            async with client_for(server) as client:
                selection, gone = await _deletions(client, selection, server.search_params)
                if use_export:
                    ids = await _fetch_export(
                        client, received, selection, stats, server.concurrency
                    )
                else:
                    ids = await _fetch(
                        client,
                        received,
                        selection,
                        stats,
                        on_patient,
                        server.search_params,
                        server.concurrency,
                    )
                await _fetch_medications(client, received, stats)
        except BaseException:
            await received.settle()  # a batch on its way to the cache: written whole, or not
            raise
        await received.flush()
    except BaseException as exc:
        if request.run_id is None or not isinstance(exc, Exception):
            # a run made here, or a cancellation: interrupted (a re-run resumes it). An
            # ordinary failure of a caller's run (a service job) is the caller's to record,
            # so that whoever polls the run never sees it interrupted before it is failed.
            cache.finish_run(run_id, status="interrupted", counts={}, error=exc.__class__.__name__)
        raise
    deleted = settle(
        cache, key, index, ids, stats, gone, received.named_drugs, full=selection.since is None
    )
    sink: Collected | Written = Collected() if tables is None else Written(tables, ctx.concepts)
    try:
        accounted = _map(ctx, index, sink, stats, default_centre)
    finally:
        if isinstance(sink, Written):
            sink.close()
    cache.mark_mapped(server=key, unmapped=sink.marks)
    unmapped = len(sink.unmapped) if isinstance(sink, Collected) else sink.unmapped
    excluded = len(sink.excluded) if isinstance(sink, Collected) else sink.excluded
    counts: dict[str, Any] = {
        "patients": sink.patients,
        "unmapped": unmapped,
        "excluded": excluded,
        **stats.resources,
    }
    if deleted:
        counts["deleted_on_server"] = deleted
    counts["by_type"] = {t: c.as_dict() for t, c in accounted.items()}
    if stats.not_asked:
        counts["not_asked"] = stats.not_asked
    if stats.not_searchable:
        counts["not_searchable"] = stats.not_searchable
    if isinstance(sink, Collected):
        outcome = PullOutcome(
            run_id, sink.cases, sink.unmapped, stats, sink.other, sink.excluded, accounted
        )
    else:
        outcome = PullOutcome(run_id, sink.cases, stats=stats, by_type=accounted, tables=sink)
    if on_mapped is not None:
        on_mapped(outcome)
    cache.finish_run(run_id, status="succeeded", counts=counts)
    return outcome


def _map(
    ctx: MappingContext,
    index: PatientIndex,
    sink: Collected | Written,
    stats: PullStats,
    centre: str,
) -> dict[str, TypeCount]:
    """Map what the index holds into ``sink``, after what the pull received and could not
    keep (listed first, as ``other`` rows when they name no Patient); the account per type
    (see :mod:`fhir_cart.sync.accounting`)."""
    unowned = [r for r, _ in stats.unowned if isinstance(r, dict)]
    first = ReverseResult(
        unmapped=[Unmapped(ref, rtype, reason) for ref, rtype, reason in stats.dropped],
        other=[other_row(r, None, reason) for r, reason in stats.unowned],
    )
    sink.add(first)
    accounted = by_type(places(ctx, unowned, first, centre=centre))
    add_counts(accounted, map_index(ctx, index, sink, default_centre=centre))
    fetched = dict(stats.resources)
    for resource in unowned:
        rtype = str(resource.get("resourceType", "(unknown)"))
        fetched[rtype] = fetched.get(rtype, 0) + 1
    for rtype, number in fetched.items():
        accounted.setdefault(rtype, TypeCount()).fetched = number
    accounted = dict(sorted(accounted.items()))
    faults = {t: c for t, c in accounted.items() if c.unaccounted or c.twice}
    if faults:
        log.warning(
            "resources not accounted for exactly once (a fhir_cart fault): %s",
            {t: (c.unaccounted, c.twice) for t, c in faults.items()},
        )
    return accounted
