"""Push a cohort to a FHIR server: only what changed, idempotently, resumably.

Order of work for each bundle (the cache is written before and after the wire):

1. journal the bundle's resources as pending (``push_pending``),
2. send it as a transaction of conditional updates on business identifiers,
3. record what the server answered (server id, version, ETag, content hash) and the outcome
   of every entry, then clear the journal.

A crash between 1 and 3 leaves the resources unrecorded, so a re-run sends them again; the
conditional update finds them on the server and nothing is duplicated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_cart.bundle import business_identifier, content_hash, map_cases, transaction_bundles
from fhir_cart.cache import Cache, Outcome, SentEntry
from fhir_cart.client import EntryResult, FhirClient, outcome_message
from fhir_cart.errors import AuthError, BadResponse, FhirClientError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.records import Case

__all__ = ["PushPlan", "PushReport", "plan_push", "push", "verify_on_server"]

log = logging.getLogger(__name__)
Json = dict[str, Any]
Key = tuple[str, str, str]


def resource_key(resource: Json) -> Key:
    system, value = business_identifier(resource)
    return resource["resourceType"], system, value


@dataclass
class PushPlan:
    """What a push would send: per patient, the resources whose content changed."""

    to_send: list[list[Json]] = field(default_factory=list)
    hashes: dict[Key, str] = field(default_factory=dict)
    unchanged: list[Key] = field(default_factory=list)
    total: int = 0

    @property
    def resources_to_send(self) -> int:
        return sum(len(r) for r in self.to_send)


@dataclass
class PushReport:
    run_id: int
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[Key, int | None, str]] = field(default_factory=list)
    bundles: int = 0
    mode: str = "transaction"

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n


_VERIFY_CHUNK = 100
"""Ids asked for in one ``_id`` search when checking what the cache believes."""


async def verify_on_server(
    client: FhirClient, believed: dict[Key, tuple[str, str | None]]
) -> set[Key]:
    """Keys the cache believes the server holds but it does not, or holds at another
    version (wiped, restored from a backup, deleted or edited there): these must be sent
    again. One ``_id`` search per 100 resources, answering ids and versions only."""
    by_type: dict[str, list[tuple[Key, str, str | None]]] = {}
    for key, (server_id, version) in believed.items():
        by_type.setdefault(key[0], []).append((key, server_id, version))
    gone: set[Key] = set()
    for rtype, items in by_type.items():
        for start in range(0, len(items), _VERIFY_CHUNK):
            chunk = items[start : start + _VERIFY_CHUNK]
            params = {"_id": ",".join(i for _, i, _ in chunk), "_elements": "id,meta",
                      "_count": str(_VERIFY_CHUNK)}  # fmt: skip
            held = {
                str(r.get("id")): (r.get("meta") or {}).get("versionId")
                async for r in client.search(rtype, params)
            }
            for key, server_id, version in chunk:
                if server_id not in held or (version and held[server_id] != version):
                    gone.add(key)
    return gone


def _link_unchanged(resources: list[Json], known: dict[str, str]) -> list[Json]:
    """Point references at server ids for resources not sent in this bundle.

    ``known`` maps a resource's urn:uuid fullUrl to ``Type/server-id``."""
    if not known:
        return resources
    out = []
    for resource in resources:
        data = orjson.dumps(resource)
        for urn, literal in known.items():
            data = data.replace(urn.encode(), literal.encode())
        out.append(orjson.loads(data))
    return out


_PLAN_BATCH = 250
"""Patients whose change detection is asked of the cache in one query."""


def plan_push(
    ctx: MappingContext,
    cases: Iterable[Case],
    *,
    changed: Callable[[list[tuple[Key, str]]], set[Key]],
    server_ids: Callable[[list[Key]], dict[Key, str]],
) -> PushPlan:
    """Map cases and keep only resources whose hash differs from the last successful push."""
    plan = PushPlan()
    urn_ctx = ctx.with_style("urn")
    batch: list[list[tuple[Key, str, Json]]] = []
    for resources in map_cases(urn_ctx, cases):
        batch.append([(resource_key(r), content_hash(r), r) for r in resources])
        if len(batch) == _PLAN_BATCH:
            _plan_batch(plan, batch, changed, server_ids)
            batch = []
    if batch:
        _plan_batch(plan, batch, changed, server_ids)
    return plan


def _plan_batch(
    plan: PushPlan,
    batch: list[list[tuple[Key, str, Json]]],
    changed: Callable[[list[tuple[Key, str]]], set[Key]],
    server_ids: Callable[[list[Key]], dict[Key, str]],
) -> None:
    """Plan a batch of patients (each a list of keyed resources) with one change lookup."""
    dirty = changed([(k, h) for keyed in batch for k, h, _ in keyed])
    for keyed in batch:
        plan.total += len(keyed)
        for key, digest, _ in keyed:
            plan.hashes[key] = digest
        send = [r for k, _, r in keyed if k in dirty]
        plan.unchanged.extend(k for k, _, _ in keyed if k not in dirty)
        if send:
            plan.to_send.append(_with_links(keyed, dirty, send, server_ids))


def _with_links(
    keyed: list[tuple[Key, str, Json]],
    dirty: set[Key],
    send: list[Json],
    server_ids: Callable[[list[Key]], dict[Key, str]],
) -> list[Json]:
    stay = [(k, r) for k, _, r in keyed if k not in dirty]
    if not stay:
        return send
    ids = server_ids([k for k, _ in stay])
    known = {f"urn:uuid:{r['id']}": f"{k[0]}/{ids[k]}" for k, r in stay if k in ids}
    return _link_unchanged(send, known)


async def push(
    plan: PushPlan,
    *,
    client: FhirClient,
    cache: Cache,
    server: str,
    run_id: int,
    bundle_size: int = 100,
    concurrency: int = 4,
    on_bundle_done: Callable[[int, int], None] | None = None,
) -> PushReport:
    """Send the plan in transaction bundles, at most ``concurrency`` in flight."""
    report = PushReport(run_id=run_id)
    report.add("unchanged", len(plan.unchanged))
    cache.add_outcomes(run_id=run_id, outcomes=(Outcome(k, "unchanged") for k in plan.unchanged))
    bundles = list(transaction_bundles(plan.to_send, size=bundle_size, mode="update"))
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(number: int, bundle: Json) -> None:
        nonlocal done
        async with gate:
            await _send_bundle(number, bundle, plan, client, cache, server, report)
            done += 1
            cache.update_run(run_id, progress_done=done, progress_total=len(bundles))
            if on_bundle_done is not None:
                on_bundle_done(done, len(bundles))

    try:
        # A TaskGroup cancels and awaits the bundles still in flight when one fails, so a
        # crash leaves no half-open request behind; their journal entries stay pending.
        async with asyncio.TaskGroup() as group:
            for number, bundle in enumerate(bundles, start=1):
                group.create_task(one(number, bundle))
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    report.bundles = len(bundles)
    return report


async def _send_bundle(
    number: int,
    bundle: Json,
    plan: PushPlan,
    client: FhirClient,
    cache: Cache,
    server: str,
    report: PushReport,
) -> None:
    resources = [e["resource"] for e in bundle["entry"]]
    keys = [resource_key(r) for r in resources]
    cache.begin_pending(run_id=report.run_id, bundle_no=number,
                        items=[(k, plan.hashes[k]) for k in keys])  # fmt: skip
    try:
        report.mode, results = await client.bundle_submit(bundle)
    except FhirClientError as exc:
        if not _about_this_bundle(exc):
            raise  # unreachable, refused credentials, unusable answer: stop the whole run
        results = [EntryResult(exc.status or 0, None, None, None, exc.outcome)] * len(keys)
        reason: str | None = exc.message
    else:
        reason = None
    sent, outcomes = _interpret(keys, resources, results, plan, reason)
    cache.record_sent(server=server, entries=sent)
    cache.add_outcomes(run_id=report.run_id, outcomes=outcomes)
    cache.clear_pending(run_id=report.run_id, bundle_no=number)
    for outcome in outcomes:
        report.add(outcome.outcome)
        if outcome.outcome == "failed":
            report.failures.append((outcome.key, outcome.status_code, outcome.reason or ""))


def _about_this_bundle(exc: FhirClientError) -> bool:
    """Whether the server judged this bundle (an HTTP status about its content), rather than
    the push failing as a whole (no answer, credentials refused, an answer not FHIR)."""
    return exc.status is not None and not isinstance(exc, AuthError | BadResponse)


def _interpret(
    keys: list[Key],
    resources: list[Json],
    results: Sequence[EntryResult],
    plan: PushPlan,
    reason: str | None,
) -> tuple[list[SentEntry], list[Outcome]]:
    if len(results) != len(keys):
        reason = f"server answered {len(results)} entries for {len(keys)} sent"
        results = [EntryResult(0, None, None, None, None)] * len(keys)
    sent, outcomes = [], []
    for key, resource, result in zip(keys, resources, results, strict=True):
        if not result.ok:
            why = reason or outcome_message(result.outcome) or f"HTTP {result.status}"
            outcomes.append(Outcome(key, "failed", result.status or None, why))
            continue
        kind = "created" if result.status == 201 else "updated"
        outcomes.append(Outcome(key, kind, result.status))
        sent.append(
            SentEntry(key, result.server_id, result.version_id, result.etag,
                      result.last_modified, plan.hashes[key], orjson.dumps(resource))
        )  # fmt: skip
    return sent, outcomes
