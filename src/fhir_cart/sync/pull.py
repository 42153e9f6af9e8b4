"""Pull a cohort from a FHIR server into the cache, then into study records.

Selection: patient identifiers, a Group, or Patient search parameters. The selected patients
are read in pages; their resources of every type fhir_cart maps are fetched a chunk of
patients at a time, by one multi-valued search per type (``subject=Patient/a,Patient/b,...``,
https://hl7.org/fhir/R4/search.html#combining), paged, with bounded concurrency: about one
request per type per 100 patients instead of one per type per patient. Types the server cannot
search by patient are read by type once. Bulk Data ``$export`` serves a Group.

The plan fits the server and corrects itself as it answers (see
:mod:`fhir_cart.sync.capabilities`): a search parameter refused is not asked again (its type is
read by type); a multi-valued search refused (400/413/414/422: too long, or OR not supported),
cut short (fewer matches than the ``total`` it states, with no next link: servers that do not
page), or not understood (one of its values alone finds what the OR search did not) is split
into smaller chunks, down to one patient per search. Every resource received goes into the
cache (with server id and version); study records are built from what was received and what
the cache held of the same patients before, so an incremental pull (``_lastUpdated`` /
``_since``) still yields complete patients.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fhir_cart.client import bundle_links
from fhir_cart.errors import BadResponse, FhirClientError, LimitExceeded
from fhir_cart.mappers.kinds import EVENT_TYPES
from fhir_cart.references import patient_id, subject_patient_id
from fhir_cart.sync.capabilities import (
    PATIENT_COMPARTMENT,
    ServerCapabilities,
    is_unknown_search_param,
)
from fhir_cart.sync.scanned import ScanStore, by_type_scan
from fhir_cart.types import Json

__all__ = [
    "CHUNK",
    "EVENT_TYPES",
    "PatientSearch",
    "PullSelection",
    "PullStats",
    "ResourceFetcher",
    "asked_types",
    "deleted_since",
    "parse_types",
    "patient_searches",
    "pull_resources",
    "unsearchable",
]

log = logging.getLogger(__name__)
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

# EVENT_TYPES (mappers/kinds.py): the resource types the concept library reads, always
# fetched for the selected patients (R4 search parameter ``subject`` or ``patient``, else read
# by type). Specimens give the specimen of an Observation; MedicationRequests are read as drug
# events when a server records no administrations. By default a pull also asks for every
# other type of the server's Patient compartment (:func:`asked_types`).

_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


def parse_types(text: str | None) -> tuple[str, ...] | None:
    """``--types``: ``all`` (None: the library's types and every type the server can search
    by patient), or a comma list of resource types where ``library`` stands for
    :data:`EVENT_TYPES` (``library,AllergyIntolerance``)."""
    if text is None or text.strip() == "all":
        return None
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        names = EVENT_TYPES if part == "library" else (part,)
        if part == "Patient":
            raise ValueError(
                "--types: Patient is always pulled (it is the selection); name "
                "the other types, e.g. 'library,AllergyIntolerance'"
            )
        if not all(_TYPE_NAME.match(n) for n in names):
            raise ValueError(
                f"--types: {part!r} is not a resource type; expected 'all', 'library' or "
                "resource types such as 'library,AllergyIntolerance,Immunization'"
            )
        out += [n for n in names if n not in out]
    if not out:
        raise ValueError("--types names no resource type; expected 'all', 'library' or types")
    return tuple(out)


def asked_types(
    caps: ServerCapabilities, wanted: tuple[str, ...] | None
) -> tuple[list[str], list[str]]:
    """The types a pull asks for, and the server's Patient-compartment types it does not
    ask for (listed in the pull's report). ``wanted`` None: the library's types, then every
    type the server declares a ``patient`` or ``subject`` search parameter for (R4 keeps a
    patient's record in those: https://hl7.org/fhir/R4/compartmentdefinition-patient.html);
    else exactly ``wanted``."""
    compartment = caps.compartment_types()
    if wanted is None:
        asked = [*EVENT_TYPES, *(t for t in compartment if t not in EVENT_TYPES)]
    else:
        asked = list(wanted)
    left = sorted({*compartment, *EVENT_TYPES} - set(asked))
    return asked, left


def unsearchable(caps: ServerCapabilities, asked: Sequence[str]) -> list[str]:
    """Types of R4's Patient compartment, not asked for, that this server declares no
    ``patient`` or ``subject`` search for: it may hold them all the same (a pull cannot tell
    without reading every one of them), so the pull names them."""
    return sorted(
        t for t in PATIENT_COMPARTMENT if t not in asked and caps.patient_param(t) is None
    )


CHUNK = 100
"""Most patients one multi-valued search names (also the Patient ``_id``/``identifier``
chunks of a Group or identifier-list selection)."""
MAX_VALUE_CHARS = 6_000
"""Longest value of one multi-valued parameter: 100 references to UUID ids take 4,500, and
URLs stay under 8 KB, which servers and proxies commonly take (a refusal splits further)."""
PAGE_SIZE = 1_000
"""``_count`` asked for each search (capped by the client's ``max_entries_per_page``)."""


class SearchClient(Protocol):
    def search(self, resource_type: str, params: dict[str, str]) -> AsyncIterator[Json]: ...

    def search_bundles(self, resource_type: str, params: dict[str, str]) -> AsyncIterator[Json]: ...

    async def read(self, resource_type: str, resource_id: str) -> Json: ...

    async def capabilities(self) -> Json: ...


async def server_capabilities(
    client: SearchClient, declared: dict[str, list[str]] | None = None
) -> ServerCapabilities:
    """The server's search side; what settings declare for a type (``search_params``)
    replaces the CapabilityStatement's."""
    caps = ServerCapabilities.from_statement(await client.capabilities())
    for rtype, names in (declared or {}).items():
        caps.search_params[rtype] = set(names)
    return caps


async def patient_params(
    client: SearchClient,
    declared: dict[str, list[str]] | None = None,
    types: tuple[str, ...] | list[str] = EVENT_TYPES,
) -> dict[str, str | None]:
    """Per type asked for, the search parameter that selects a patient's resources on this
    server (``subject``, else ``patient``), or None where the server has neither."""
    caps = await server_capabilities(client, declared)
    for step in caps.pull_plan(types).values():
        log.debug("pull plan: %s", step)
    return {rtype: caps.patient_param(rtype) for rtype in types}


class SearchParamRefused(Exception):
    """The server refused a patient search parameter it was thought to have."""

    def __init__(self, resource_type: str, param: str) -> None:
        super().__init__(f"{resource_type}?{param}")
        self.resource_type = resource_type
        self.param = param


@dataclass(frozen=True)
class PullSelection:
    kind: Literal["patients", "group", "search"]
    identifiers: tuple[str, ...] = ()
    group_id: str | None = None
    query: str | None = None
    since: str | None = None
    types: tuple[str, ...] | None = None
    """Resource types to ask for (:func:`parse_types`); None: every type the server keeps
    in the selected patients' compartment."""

    @classmethod
    def parse_query(cls, query: str) -> dict[str, str]:
        """``a=1&b=2`` -> dict; values may contain ``|`` (token search)."""
        params: dict[str, str] = {}
        for part in query.split("&"):
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"search part {part!r} is not name=value")
            params[name] = value
        return params


@dataclass
class PullStats:
    patients: int = 0
    resources: dict[str, int] = field(default_factory=dict)
    limit: int | None = None
    """Most resources one pull may receive (``max_resources_per_pull``)."""

    dropped: list[tuple[str, str, str]] = field(default_factory=list)
    """Resources received but not kept: (reference or what is known, type, reason)."""

    learned: list[str] = field(default_factory=list)
    """What this pull learned about the server from its answers, in words."""

    asked: list[str] = field(default_factory=list)
    """Resource types asked for the selected patients."""
    not_asked: list[str] = field(default_factory=list)
    """Types the server can search by patient that this pull did not ask for (``types``)."""
    not_searchable: list[str] = field(default_factory=list)
    """Patient-compartment types the server declares no patient search for (not asked:
    ``types`` naming one reads it by type)."""
    unowned: list[tuple[Json, str]] = field(default_factory=list)
    """Resources received that name no Patient as subject or patient, with the reason: not
    cached, but listed (``other`` rows) and counted."""
    not_selected: dict[str, int] = field(default_factory=dict)
    """Per type read by type, how many resources of patients not selected were read and
    left out (neither kept nor listed: they are no part of the cohort)."""

    def keep(self, resource: Any, *, needs_subject: bool = False) -> bool:
        """Whether a received resource can be kept; if not, it is listed in ``dropped``."""
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            self.dropped.append(("(unknown)", "(unknown)", "resource without resourceType"))
            return False
        rtype = resource["resourceType"]
        rid = resource.get("id")
        if not isinstance(rid, str) or not _ID.match(rid):
            # without an id, resources would overwrite each other in the cache
            self.dropped.append((f"{rtype}/(no id)", rtype, "resource without a valid id"))
            return False
        if needs_subject and subject_patient_id(resource) is None:
            reason = "no subject or patient reference to a Patient"
            self.dropped.append((f"{rtype}/{rid}", rtype, reason))
            self.unowned.append((resource, reason))
            return False
        return True

    complete: set[str] = field(default_factory=set)
    """Types received in full for the selected patients: any other of their resources of
    these types the cache holds was deleted on the server."""

    def count(self, resource: Json) -> None:
        rtype = str(resource.get("resourceType"))
        self.resources[rtype] = self.resources.get(rtype, 0) + 1
        if self.limit is not None and sum(self.resources.values()) > self.limit:
            raise LimitExceeded(
                f"the pull received more than {self.limit} resources "
                "(setting max_resources_per_pull)"
            )

    def learn(self, note: str) -> None:
        if note not in self.learned:
            self.learned.append(note)
            log.info("%s", note)


def patient_searches(selection: PullSelection) -> Iterable[dict[str, str]]:
    """The Patient searches that select the cohort (a search selection: one)."""
    if selection.kind == "patients":
        for identifier in selection.identifiers:
            yield {"identifier": identifier}
    elif selection.kind == "search":
        yield PullSelection.parse_query(selection.query or "")


def _page_size(client: SearchClient) -> int:
    return min(PAGE_SIZE, int(getattr(client, "max_entries_per_page", PAGE_SIZE)))


def _escape(value: str) -> str:
    """One value of a multi-valued search parameter (https://hl7.org/fhir/R4/search.html#escaping)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$")


async def matches(client: SearchClient, resource_type: str, params: dict[str, str]) -> list[Json]:
    """Every matched resource of a search across its pages; :class:`Truncated` when the
    server states a ``total`` larger than what its pages held and offers no next page (a
    server that does not page cuts the answer at ``_count``)."""
    found: list[Json] = []
    total: int | None = None
    async for page in client.search_bundles(resource_type, params):
        if total is None and isinstance(page.get("total"), int):
            total = int(page["total"])
        for entry in page.get("entry", ()):
            mode = (entry.get("search") or {}).get("mode", "match")
            resource = entry.get("resource")
            if resource is not None and mode == "match":
                found.append(resource)
    if total is not None and len(found) < total:
        raise Truncated(resource_type, len(found), total)
    return found


class Truncated(Exception):
    """A search answered fewer matches than the total it stated, without a next page."""

    def __init__(self, resource_type: str, got: int, total: int) -> None:
        super().__init__(f"{resource_type}: {got} of {total} matches, no next page")
        self.got = got
        self.total = total


_SPLIT_STATUSES = frozenset({400, 413, 414, 422})
"""Answers to a multi-valued search that smaller chunks may avoid (too long a URL, too many
values, or OR not supported)."""


@dataclass
class PatientSearch:
    """Fetches resources of many patients in few requests (multi-valued searches, split and
    corrected as the server answers); shared by every chunk of one pull."""

    client: SearchClient
    stats: PullStats
    since: str | None = None
    concurrency: int = 4
    chunk: int = CHUNK
    limits: dict[str, int] = field(default_factory=dict)
    """Per (type, parameter), the most values one search may name: lowered on refusals."""
    verified: set[str] = field(default_factory=set)
    """Scopes whose multi-valued searches were seen to work: a (type, parameter) key, or
    ``"patient reference"`` for the reference parameters that select a patient's resources
    of every type (one search engine reads them all: seen on one type, trusted on all)."""

    def __post_init__(self) -> None:
        self.gate = asyncio.Semaphore(self.concurrency)

    def _params(self, param: str, values: Sequence[str], extra: dict[str, str]) -> dict[str, str]:
        params = {param: ",".join(values), "_count": str(_page_size(self.client)), **extra}
        if self.since:
            params["_lastUpdated"] = f"gt{self.since}"
        return params

    def parts(self, key: str, values: Sequence[str]) -> list[list[str]]:
        """``values`` in chunks of at most ``limits[key]`` values and MAX_VALUE_CHARS."""
        most = self.limits.get(key, self.chunk)
        out: list[list[str]] = []
        current: list[str] = []
        size = 0
        for value in values:
            if current and (len(current) >= most or size + len(value) + 1 > MAX_VALUE_CHARS):
                out.append(current)
                current, size = [], 0
            current.append(value)
            size += len(value) + 1
        if current:
            out.append(current)
        return out

    async def search(
        self,
        rtype: str,
        param: str,
        values: Sequence[str],
        owner: Callable[[Json], str | None],
        extra: dict[str, str] | None = None,
        scope: str | None = None,
    ) -> list[Json]:
        """Matches of ``param`` = any of ``values`` (already escaped), chunk by chunk;
        ``owner`` says which value a match belongs to (to check a server understood OR, once
        per ``scope``, by default the type and parameter)."""
        key = f"{rtype}.{param}"
        found: list[Json] = []
        for part in self.parts(key, values):
            found += await self._part(rtype, param, part, owner, extra or {}, scope or key)
        return found

    async def _part(
        self,
        rtype: str,
        param: str,
        part: list[str],
        owner: Callable[[Json], str | None],
        extra: dict[str, str],
        scope: str,
    ) -> list[Json]:
        key = f"{rtype}.{param}"
        try:
            async with self.gate:
                got = await matches(self.client, rtype, self._params(param, part, extra))
        except Truncated as cut:
            if len(part) == 1:
                raise BadResponse(
                    f"{rtype} search: the server answered {cut.got} of {cut.total} matches "
                    "with no next page"
                ) from None
            why = f"answered {cut.got} of {cut.total} matches, no next page"
            return await self._split(rtype, param, part, owner, extra, scope, why)
        except FhirClientError as exc:
            if is_unknown_search_param(exc):
                raise SearchParamRefused(rtype, param) from exc
            if len(part) > 1 and exc.status in _SPLIT_STATUSES:
                why = f"refused it (HTTP {exc.status})"
                return await self._split(rtype, param, part, owner, extra, scope, why)
            raise
        if len(part) > 1 and scope not in self.verified:
            if len({owner(r) for r in got}) >= 2:
                self.verified.add(scope)
            elif await self._or_ignored(rtype, param, part, got, extra):
                self.limits[key] = 1
                self.stats.learn(
                    f"the server does not combine values of {key} with commas "
                    "(OR); searching one value at a time"
                )
                return await self.search(rtype, param, part, owner, extra, key)
        return got

    async def _split(
        self,
        rtype: str,
        param: str,
        part: list[str],
        owner: Callable[[Json], str | None],
        extra: dict[str, str],
        scope: str,
        why: str,
    ) -> list[Json]:
        key = f"{rtype}.{param}"
        smaller = max(1, len(part) // 2)
        if self.limits.get(key, self.chunk) > smaller:
            self.limits[key] = smaller
            self.stats.learn(
                f"a search of {key} naming {len(part)} values: the server {why}; "
                f"naming at most {smaller} from now on"
            )
        return await self.search(rtype, param, part, owner, extra, scope)

    async def _or_ignored(
        self, rtype: str, param: str, part: list[str], got: list[Json], extra: dict[str, str]
    ) -> bool:
        """Whether one value alone finds what the multi-valued search did not: a server that
        reads ``a,b`` as one literal value (or only its first) would lose data silently."""
        ids = {(r.get("resourceType"), r.get("id")) for r in got}
        async with self.gate:
            alone = await matches(self.client, rtype, self._params(param, part[-1:], extra))
        return any((r.get("resourceType"), r.get("id")) not in ids for r in alone)


@dataclass
class ResourceFetcher:
    """The selected patients' resources of every event type, a chunk of patients at a time."""

    search: PatientSearch
    params_by_type: dict[str, str | None]
    scanned: ScanStore = field(default_factory=ScanStore)
    """Resources of types read by type, by patient, on disk (closed with :meth:`close`)."""

    @classmethod
    async def start(
        cls, search: PatientSearch, params_by_type: dict[str, str | None]
    ) -> ResourceFetcher:
        fetcher = cls(search, dict(params_by_type))
        await fetcher._scan([t for t, p in fetcher.params_by_type.items() if p is None])
        return fetcher

    async def _scan(self, types: list[str]) -> None:
        if not types:
            return
        search = self.search
        await by_type_scan(
            search.client,
            types,
            search.since,
            search.stats,
            self.scanned,
            _page_size(search.client),
        )

    def count_not_selected(self, pulled: set[str]) -> None:
        """Resources read by type whose patient was not selected: counted per type in
        ``stats.not_selected``, never kept (they are no part of the cohort)."""
        counts = self.search.stats.not_selected
        for rtype, number in self.scanned.not_selected(pulled).items():
            counts[rtype] = counts.get(rtype, 0) + number

    def close(self) -> None:
        self.scanned.close()

    async def of(self, patient_ids: list[str]) -> dict[str, list[Json]]:
        """Per patient id: resources read by type first, then each type's search matches,
        in the order the types are asked (as a per-patient pull had them)."""
        while True:
            searched = [(t, p) for t, p in self.params_by_type.items() if p is not None]
            try:
                results = await asyncio.gather(
                    *(self._type(rtype, param, patient_ids) for rtype, param in searched)
                )
                break
            except SearchParamRefused as refused:
                # learned from the refusal: read that type once by type, as if undeclared
                self.search.stats.learn(
                    f"the server refused search parameter {refused}; reading "
                    f"{refused.resource_type} by type"
                )
                if self.params_by_type.get(refused.resource_type) is not None:
                    # another chunk may have learned it meanwhile: one scan only
                    self.params_by_type[refused.resource_type] = None
                    await self._scan([refused.resource_type])
        out: dict[str, list[Json]] = {pid: self.scanned.get(pid) for pid in patient_ids}
        for found in results:
            for resource in found:
                if not self.search.stats.keep(resource, needs_subject=True):
                    continue
                pid = subject_patient_id(resource)
                # a match whose subject names none of these patients (a server matching
                # through another path): kept with the chunk's first patient, as the
                # per-patient search that found it would have
                out[pid if pid in out else patient_ids[0]].append(resource)
        return out

    async def _type(self, rtype: str, param: str, patient_ids: list[str]) -> list[Json]:
        refs = [f"Patient/{pid}" for pid in patient_ids]

        def owner(resource: Json) -> str | None:
            return subject_patient_id(resource)

        return await self.search.search(rtype, param, refs, owner, scope="patient reference")


async def _group_patients(search: PatientSearch, group_id: str) -> AsyncIterator[list[Json]]:
    group = await search.client.read("Group", group_id)
    ids: list[str] = []
    for member in group.get("member", ()):
        rid = patient_id((member.get("entity") or {}).get("reference"))
        if rid is not None and rid not in ids:
            ids.append(rid)
    for part in search.parts("Patient._id", ids):

        def owner(patient: Json) -> str | None:
            return str(patient.get("id"))

        found = await search.search("Patient", "_id", part, owner)
        by_id = {str(p.get("id")): p for p in found if isinstance(p, dict)}
        missing = [rid for rid in part if rid not in by_id]
        for rid in missing:  # read one by one: the read says why it is missing
            by_id[rid] = await search.client.read("Patient", rid)
        yield [by_id[rid] for rid in part]


async def _selected_chunks(
    search: PatientSearch, selection: PullSelection
) -> AsyncIterator[list[Json]]:
    """The selected patients, in chunks of at most ``search.chunk``, each patient once."""
    if selection.kind == "group":
        if not selection.group_id:
            raise ValueError("a group pull needs a group id")
        async for chunk in _group_patients(search, selection.group_id):
            yield chunk
        return
    seen: set[str] = set()
    batch: list[Json] = []

    def fresh(found: Iterable[Any]) -> Iterable[Any]:
        for patient in found:
            pid = patient.get("id") if isinstance(patient, dict) else None
            if not isinstance(pid, str):
                yield patient  # pull_resources lists it as dropped
            elif pid not in seen:
                seen.add(pid)
                yield patient

    if selection.kind == "patients":
        values = [_escape(i) for i in selection.identifiers]

        def owner(patient: Json) -> str | None:
            return str(patient.get("id"))

        for part in search.parts("Patient.identifier", values):
            batch += fresh(await search.search("Patient", "identifier", part, owner))
            while len(batch) >= search.chunk:
                yield batch[: search.chunk]
                batch = batch[search.chunk :]
    else:
        params = PullSelection.parse_query(selection.query or "")
        params.setdefault("_count", str(_page_size(search.client)))
        async for page in search.client.search_bundles("Patient", params):
            for entry in page.get("entry", ()):
                if (entry.get("search") or {}).get("mode", "match") != "match":
                    continue
                batch += fresh([entry.get("resource")])
                if len(batch) >= search.chunk:
                    yield batch
                    batch = []
            total = page.get("total")
            if isinstance(total, int) and not _next(page) and len(seen) < total:
                raise BadResponse(
                    f"Patient search: the server answered {len(seen)} of {total}"
                    " matches with no next page"
                )
    if batch:
        yield batch


def _next(page: Json) -> bool:
    return any(link.get("relation") == "next" for link in bundle_links(page))


async def pull_resources(
    client: SearchClient,
    selection: PullSelection,
    stats: PullStats | None = None,
    search_params: dict[str, list[str]] | None = None,
    *,
    concurrency: int = 4,
    chunk: int = CHUNK,
) -> AsyncIterator[tuple[Json, list[Json]]]:
    """Yield each selected Patient with the resources that reference it, in the order the
    selection names them; the resources of up to ``concurrency`` chunks of patients are
    fetched at once, at most ``concurrency`` requests at a time."""
    stats = stats or PullStats()
    search = PatientSearch(client, stats, selection.since, concurrency, chunk)
    caps = await server_capabilities(client, search_params)
    stats.asked, stats.not_asked = asked_types(caps, selection.types)
    stats.not_searchable = unsearchable(caps, stats.asked)
    params = await patient_params(client, search_params, stats.asked)
    fetcher = await ResourceFetcher.start(search, params)
    pending: deque[tuple[list[Json], asyncio.Task[dict[str, list[Json]]]]] = deque()
    pulled: set[str] = set()
    try:
        async for patients in _selected_chunks(search, selection):
            kept = [p for p in patients if stats.keep(p)]
            if not kept:
                continue
            ids = [str(p["id"]) for p in kept]
            pulled.update(ids)
            pending.append((kept, asyncio.ensure_future(fetcher.of(ids))))
            while pending and (len(pending) > concurrency or pending[0][1].done()):
                for item in await _done(pending.popleft(), stats):
                    yield item
        while pending:
            for item in await _done(pending.popleft(), stats):
                yield item
        fetcher.count_not_selected(pulled)
    finally:
        for _, task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*(t for _, t in pending), return_exceptions=True)
        fetcher.close()


async def _done(
    item: tuple[list[Json], asyncio.Task[dict[str, list[Json]]]], stats: PullStats
) -> list[tuple[Json, list[Json]]]:
    patients, task = item
    found = await task
    out = []
    for patient in patients:
        stats.patients += 1
        stats.count(patient)
        resources = found.get(str(patient["id"]), [])
        for resource in resources:
            stats.count(resource)
        out.append((patient, resources))
    return out


class HistoryClient(Protocol):
    def search_bundles(self, resource_type: str, params: dict[str, str]) -> AsyncIterator[Json]: ...


async def deleted_since(
    client: HistoryClient, since: str, types: Sequence[str] = EVENT_TYPES
) -> set[tuple[str, str]]:
    """(type, id) of resources of ``types`` (and Patients) deleted on the server since
    ``since``: an incremental search (``_lastUpdated``) cannot see deletions, the type's
    ``_history`` can (https://hl7.org/fhir/R4/http.html#history: a deletion is an entry with
    request DELETE)."""
    deleted: set[tuple[str, str]] = set()
    for rtype in ("Patient", *types):
        async for page in client.search_bundles(f"{rtype}/_history", {"_since": since}):
            for entry in page.get("entry", ()):
                request = entry.get("request") or {}
                if request.get("method") == "DELETE":
                    url = str(request.get("url", "")).split("?", 1)[0].rstrip("/")
                    parts = url.split("/")
                    if len(parts) >= 2 and parts[-2] == rtype:
                        deleted.add((rtype, parts[-1]))
    return deleted
