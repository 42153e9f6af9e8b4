"""Push a cohort to a FHIR server: only what changed, idempotently, resumably.

Order of work (the cache is written before and after the wire):

1. journal every bundle group's resources as pending (``push_pending``), in one transaction,
2. send each group (as transactions of conditional updates on business identifiers),
3. record what the server answered for the group (server id, version, ETag, content hash),
   the outcome of every entry, the group's journal cleared and the run's progress, in one
   transaction per group.

A crash between 1 and 3 leaves the group's resources unrecorded, so a re-run sends them
again; the conditional update finds them on the server and nothing is duplicated. The cache
is written on its own thread (``Cache.call``), so concurrent sends go on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import orjson

from fhir_cart.bundle import (
    business_identifier,
    content_hash,
    entry_for,
    has_identifier_search,
    map_cases,
)
from fhir_cart.cache import Cache, Outcome, SentEntry
from fhir_cart.client import EntryResult, FhirClient, outcome_message
from fhir_cart.errors import AuthError, BadResponse, FatalError, FatalHttpError, FhirClientError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.records import Case
from fhir_cart.sync.capabilities import ServerCapabilities, is_size_refusal
from fhir_cart.types import Json

__all__ = [
    "FailureCause",
    "PushPlan",
    "PushReport",
    "failure_causes",
    "plan_push",
    "push",
    "verify_on_server",
]

log = logging.getLogger(__name__)
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
    learned: list[str] = field(default_factory=list)

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
            params = {
                "_id": ",".join(i for _, i, _ in chunk),
                "_elements": "id,meta",
                "_count": str(_VERIFY_CHUNK),
            }
            held = {
                str(r.get("id")): (r.get("meta") or {}).get("versionId")
                async for r in client.search(rtype, params)
            }
            for key, server_id, version in chunk:
                if server_id not in held or (version and held[server_id] != version):
                    gone.add(key)
    return gone


def _about_this_bundle(exc: FhirClientError) -> bool:
    """Whether the server judged this bundle (an HTTP status about its content), rather than
    the push failing as a whole (no answer, credentials refused, an answer not FHIR)."""
    return exc.status is not None and not isinstance(exc, AuthError | BadResponse)


@dataclass(frozen=True)
class FailureCause:
    """Resources that failed for one reason: reported once, with what to do about it."""

    status: int | None
    reason: str
    count: int
    types: dict[str, int]
    hint: str | None


_HINTS: tuple[tuple[Callable[[int | None, str], bool], str], ...] = (
    (
        lambda status, reason: reason.startswith("not sent: it refers to"),
        "these depend on a resource that failed for another reason listed here; fix that one",
    ),
    (
        lambda status, reason: status == 413 or "too many" in reason.lower(),
        "the server limits the size of a transaction: set max_transaction_entries (or a smaller "
        "bundle_size) in this server's settings",
    ),
    (
        lambda status, reason: status in (401, 403),
        "the server refused the credentials: check this server's auth settings",
    ),
    (
        lambda status, reason: status == 404,
        "the server does not know this URL or resource type: check the server's base_url",
    ),
    (
        lambda status, reason: status in (400, 422),
        "the server refused the content: 'fhir-cart map --validate' checks resources locally",
    ),
    (
        lambda status, reason: status is not None and status >= 500,
        "a fault on the server: push again later (only what failed is sent again)",
    ),
)


def failure_causes(failures: Sequence[tuple[Key, int | None, str]]) -> list[FailureCause]:
    """Failures grouped by (status, reason), biggest group first."""
    groups: dict[tuple[int | None, str], dict[str, int]] = {}
    for key, status, reason in failures:
        types = groups.setdefault((status, reason), {})
        types[key[0]] = types.get(key[0], 0) + 1
    causes = [
        FailureCause(
            status,
            reason,
            sum(types.values()),
            types,
            next((h for test, h in _HINTS if test(status, reason)), None),
        )
        for (status, reason), types in groups.items()
    ]
    return sorted(causes, key=lambda c: -c.count)


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
    """Plan a batch of patients (each a list of keyed resources) with one change lookup,
    and one look-up of the server ids of unchanged resources that changed ones refer to."""
    dirty = changed([(k, h) for keyed in batch for k, h, _ in keyed])
    mixed = [keyed for keyed in batch if any(k in dirty for k, _, _ in keyed)]
    stay = [k for keyed in mixed for k, _, _ in keyed if k not in dirty]
    ids = server_ids(stay) if stay else {}
    for keyed in batch:
        plan.total += len(keyed)
        for key, digest, _ in keyed:
            plan.hashes[key] = digest
        send = [r for k, _, r in keyed if k in dirty]
        plan.unchanged.extend(k for k, _, _ in keyed if k not in dirty)
        if send:
            plan.to_send.append(_with_links(keyed, dirty, send, ids))


def _with_links(
    keyed: list[tuple[Key, str, Json]], dirty: set[Key], send: list[Json], ids: dict[Key, str]
) -> list[Json]:
    """The patient's resources to send, referring to its unchanged ones by server id."""
    known = {
        f"urn:uuid:{r['id']}": f"{k[0]}/{ids[k]}"
        for k, _, r in keyed
        if k not in dirty and k in ids
    }
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
    capabilities: ServerCapabilities | None = None,
) -> PushReport:
    """Send the plan in bundles that fit the server, at most ``concurrency`` in flight.

    Patients are packed into transactions of at most ``bundle_size`` entries (and at most
    the server's largest transaction). A patient whose resources do not fit one transaction
    is sent in parts, in dependency order (what is referred to before what refers to it),
    with references to resources of earlier parts rewritten to the ids the server gave them;
    a server without transactions gets batches in the same order."""
    caps = capabilities or ServerCapabilities.from_statement(await client.capabilities())
    if not caps.transaction and not caps.batch:
        raise FatalHttpError("the server declares neither transaction nor batch support")
    types = {r["resourceType"] for patient in plan.to_send for r in patient}
    problem = caps.unwritable(types, [t for t in types if not has_identifier_search(t)])
    if problem:
        raise FatalHttpError(problem)
    report = PushReport(run_id=run_id, mode="transaction" if caps.transaction else "batch")
    report.add("unchanged", len(plan.unchanged))
    size = (
        bundle_size
        if caps.max_transaction_entries is None
        else min(bundle_size, caps.max_transaction_entries)
    )
    groups = list(pack_patients(plan.to_send, size))
    journal = [
        (number, [(k, plan.hashes[k]) for k in _keys(patients)])
        for number, patients in enumerate(groups, start=1)
    ]
    unchanged = [Outcome(k, "unchanged") for k in plan.unchanged]
    await cache.call(cache.journal_push, run_id=run_id, unchanged=unchanged, groups=journal)
    sender = _Sender(plan, client, cache, server, report, caps, bundle_size)
    gate = asyncio.Semaphore(concurrency)
    done = 0

    def advance() -> tuple[int, int]:
        nonlocal done
        done += 1
        return done, len(groups)

    async def one(number: int, patients: list[list[Json]]) -> None:
        async with gate:
            progress = await sender.send_group(number, patients, advance)
            if on_bundle_done is not None:
                on_bundle_done(*progress)

    try:
        # A TaskGroup cancels and awaits the bundles still in flight when one fails, so a
        # crash leaves no half-open request behind; their journal entries stay pending.
        async with asyncio.TaskGroup() as group:
            for number, patients in enumerate(groups, start=1):
                group.create_task(one(number, patients))
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    report.learned = list(caps.learned)
    return report


def _keys(patients: list[list[Json]]) -> list[Key]:
    return [resource_key(r) for resources in patients for r in resources]


@dataclass
class _Answers:
    """What the server answered for one group so far (written to the cache at its end)."""

    sent: list[SentEntry] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


def pack_patients(per_patient: Iterable[list[Json]], size: int) -> Iterator[list[list[Json]]]:
    """Patients packed into groups of at most ``size`` resources (a bigger patient alone)."""
    group: list[list[Json]] = []
    count = 0
    for resources in per_patient:
        if group and count + len(resources) > size:
            yield group
            group, count = [], 0
        group.append(resources)
        count += len(resources)
    if group:
        yield group


def _urn(resource: Json) -> str:
    return f"urn:uuid:{resource['id']}"


def dependency_order(resources: list[Json]) -> list[tuple[int, Json]]:
    """Each resource with its depth: 0 for one that refers to no other in the list, else one
    more than the deepest it refers to. Sorted by depth (stable), so parts sent in this order
    only ever refer back."""
    urns = {_urn(r): r for r in resources}
    refers = {
        _urn(r): [u for u in urns if u != _urn(r) and u.encode() in orjson.dumps(r)]
        for r in resources
    }
    depth: dict[str, int] = {}

    def of(urn: str, seen: frozenset[str]) -> int:
        if urn not in depth:
            if urn in seen:
                raise FatalError(f"{urns[urn]['resourceType']} is part of a reference cycle")
            depth[urn] = 1 + max((of(u, seen | {urn}) for u in refers[urn]), default=-1)
        return depth[urn]

    ordered = [(of(_urn(r), frozenset()), r) for r in resources]
    return sorted(ordered, key=lambda item: item[0])


class _Sender:
    """Sends groups of patients, splitting and falling back as the server requires."""

    def __init__(
        self,
        plan: PushPlan,
        client: FhirClient,
        cache: Cache,
        server: str,
        report: PushReport,
        caps: ServerCapabilities,
        bundle_size: int,
    ) -> None:
        self.plan, self.client, self.cache, self.server = plan, client, cache, server
        self.report, self.caps, self.bundle_size = report, caps, bundle_size

    async def send_group(
        self, number: int, patients: list[list[Json]], advance: Callable[[], tuple[int, int]]
    ) -> tuple[int, int]:
        """Send a journaled group (in as many bundles as it takes), then record every answer,
        clear its journal and move the run's progress on (``advance``: groups done, of how
        many), in one transaction. A group that fails part-way records the answers it had
        (its journal stays)."""
        answers = _Answers()
        try:
            await self._patients(patients, answers)
        except BaseException:
            # Answers received are recorded even now (a re-run then need not send those
            # again), here on the loop's thread: a cancelled task may not await again.
            self.cache.record_bundle_group(
                server=self.server,
                run_id=self.report.run_id,
                sent=answers.sent,
                outcomes=answers.outcomes,
            )
            raise
        progress = advance()
        await self.cache.call(
            self.cache.record_bundle_group,
            server=self.server,
            run_id=self.report.run_id,
            sent=answers.sent,
            outcomes=answers.outcomes,
            done_bundle=number,
            progress=progress,
        )
        return progress

    async def _patients(self, patients: list[list[Json]], answers: _Answers) -> None:
        resources = [r for group in patients for r in group]
        if self.caps.transaction and self.caps.fits(len(resources)):
            refused = await self._submit(resources, "transaction", answers)
            if not refused:
                return
        if len(patients) > 1 and self.caps.transaction:
            limit = self.caps.max_transaction_entries or len(resources)
            for group in pack_patients(patients, limit):
                await self._patients(group, answers)
            return
        for one in patients:
            await self._in_parts(one, answers)

    async def _in_parts(self, resources: list[Json], answers: _Answers) -> None:
        """One patient's resources in dependency order: transactions of at most the largest
        the server takes, or batches of one depth each (batch entries may not refer to each
        other, http://hl7.org/fhir/R4/http.html#brules)."""
        queue = dependency_order(resources)
        known: dict[str, str] = {}
        failed: dict[str, str] = {}
        while queue:
            part = self._next_part(queue)
            sendable, blocked = _resolve(part, known, failed)
            self._fail_blocked(blocked, answers)
            if not sendable:
                del queue[: len(part)]
                continue
            kind = "transaction" if self.caps.transaction else "batch"
            if await self._submit(sendable, kind, answers, known=known, failed=failed):
                continue  # refused for its size, the limit is now lower: cut the part again
            del queue[: len(part)]

    def _next_part(self, queue: list[tuple[int, Json]]) -> list[tuple[int, Json]]:
        if self.caps.transaction:
            limit = self.caps.max_transaction_entries or self.bundle_size
            return queue[:limit]
        depth = queue[0][0]
        same = [item for item in queue[: self.bundle_size] if item[0] == depth]
        return same

    def _fail_blocked(self, blocked: list[tuple[Json, str]], answers: _Answers) -> None:
        outcomes = [
            Outcome(resource_key(r), "failed", None, f"not sent: it refers to a {what} that failed")
            for r, what in blocked
        ]
        self._record([], outcomes, answers)

    async def _submit(
        self,
        resources: list[Json],
        kind: str,
        answers: _Answers,
        *,
        known: dict[str, str] | None = None,
        failed: dict[str, str] | None = None,
    ) -> bool:
        """Send one bundle and record its outcomes; True when a transaction was refused for
        its size (nothing recorded: the caller sends it again in smaller parts)."""
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [self._entry(r) for r in resources],
        }
        keys = [resource_key(r) for r in resources]
        reason: str | None = None
        try:
            results = await self.client.transaction(bundle)
        except FhirClientError as exc:
            if kind == "transaction" and len(resources) > 1 and is_size_refusal(exc):
                self.caps.learn_size_refusal(len(resources))
                return True
            if not _about_this_bundle(exc):
                raise  # unreachable, refused credentials, unusable answer: stop the whole run
            results = [EntryResult(exc.status or 0, None, None, None, exc.outcome)] * len(keys)
            reason = exc.message
        self.report.bundles += 1
        if kind == "batch":
            self.report.mode = "batch"
        sent, outcomes = _interpret(keys, resources, results, self.plan, reason)
        self._record(sent, outcomes, answers)
        if known is not None and failed is not None:
            _learn_ids(resources, sent, known, failed)
        return False

    def _entry(self, resource: Json) -> Json:
        rtype = resource["resourceType"]
        by_id = self.caps.writes_by_id(rtype, by_identifier=has_identifier_search(rtype))
        return entry_for(resource, "update", by_id=by_id)

    def _record(self, sent: list[SentEntry], outcomes: list[Outcome], answers: _Answers) -> None:
        answers.sent.extend(sent)
        answers.outcomes.extend(outcomes)
        for outcome in outcomes:
            self.report.add(outcome.outcome)
            if outcome.outcome == "failed":
                self.report.failures.append(
                    (outcome.key, outcome.status_code, outcome.reason or "")
                )


def _resolve(
    part: list[tuple[int, Json]], known: dict[str, str], failed: dict[str, str]
) -> tuple[list[Json], list[tuple[Json, str]]]:
    """The part's resources with references to earlier parts made literal, and those that
    refer to a resource that failed (not sent)."""
    sendable: list[Json] = []
    blocked: list[tuple[Json, str]] = []
    for _, resource in part:
        data = orjson.dumps(resource)
        broken = next((what for urn, what in failed.items() if urn.encode() in data), None)
        if broken is not None:
            failed[_urn(resource)] = str(resource["resourceType"])
            blocked.append((resource, broken))
            continue
        sendable.append(resource)
    return _link_unchanged(sendable, known), blocked


def _learn_ids(
    resources: list[Json], sent: list[SentEntry], known: dict[str, str], failed: dict[str, str]
) -> None:
    """Where the server put each resource (for references from later parts), or that it
    failed (so what refers to it is not sent)."""
    by_key = {entry.key: entry for entry in sent}
    for resource in resources:
        key = resource_key(resource)
        entry = by_key.get(key)
        if entry is not None and entry.server_id:
            known[_urn(resource)] = f"{key[0]}/{entry.server_id}"
        else:
            failed[_urn(resource)] = key[0]


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
            SentEntry(
                key,
                result.server_id,
                result.version_id,
                result.etag,
                result.last_modified,
                plan.hashes[key],
                orjson.dumps(resource),
            )
        )
    return sent, outcomes
