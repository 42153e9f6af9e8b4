"""Pull a cohort from a FHIR server into the cache, then into study records.

Selection: patient identifiers, a Group, or Patient search parameters. For each selected
patient fhir_cart fetches the resource types it maps (by ``subject``/``patient`` search, paged)
or uses Bulk Data ``$export`` for a Group. Every resource received goes into the cache first
(with server id and version); study records are then built from the cache, so an incremental
pull (``_lastUpdated`` / ``_since``) still yields complete patients.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fhir_cart.errors import FhirClientError, LimitExceeded
from fhir_cart.references import patient_id, subject_patient_id
from fhir_cart.sync.capabilities import ServerCapabilities, is_unknown_search_param

__all__ = [
    "EVENT_TYPES", "PullSelection", "PullStats", "deleted_since", "patient_searches",
    "pull_resources",
]  # fmt: skip

log = logging.getLogger(__name__)
Json = dict[str, Any]
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

EVENT_TYPES: tuple[str, ...] = (
    "Condition",
    "MedicationAdministration",
    "Procedure",
    "Observation",
    "AdverseEvent",
    "MedicationRequest",
    "Specimen",
)
"""Resource types fetched for each patient (R4 search parameter ``subject`` or ``patient``).
Specimens give the specimen of an Observation; MedicationRequests are read as drug events
when a server records no administrations."""


class SearchClient(Protocol):
    def search(self, resource_type: str, params: dict[str, str]) -> AsyncIterator[Json]: ...

    async def read(self, resource_type: str, resource_id: str) -> Json: ...

    async def capabilities(self) -> Json: ...


async def patient_params(
    client: SearchClient, declared: dict[str, list[str]] | None = None
) -> dict[str, str | None]:
    """Per event type, the search parameter that selects a patient's resources on this
    server (``subject``, else ``patient``), or None where the server has neither. What
    settings declare for a type (``search_params``) replaces the CapabilityStatement's."""
    caps = ServerCapabilities.from_statement(await client.capabilities())
    for rtype, names in (declared or {}).items():
        caps.search_params[rtype] = set(names)
    return {rtype: caps.patient_param(rtype) for rtype in EVENT_TYPES}


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
            return False
        return True

    seen: set[tuple[str, str]] = field(default_factory=set)
    """(type, id) of every resource received in this pull."""
    complete: set[str] = field(default_factory=set)
    """Types received in full for the selected patients: any other of their resources of
    these types the cache holds was deleted on the server."""

    def count(self, resource: Json) -> None:
        rtype = str(resource.get("resourceType"))
        self.resources[rtype] = self.resources.get(rtype, 0) + 1
        self.seen.add((rtype, str(resource.get("id"))))
        if self.limit is not None and sum(self.resources.values()) > self.limit:
            raise LimitExceeded(f"the pull received more than {self.limit} resources "
                                "(setting max_resources_per_pull)")  # fmt: skip


def patient_searches(selection: PullSelection) -> Iterable[dict[str, str]]:
    """The Patient searches that select the cohort."""
    if selection.kind == "patients":
        for identifier in selection.identifiers:
            yield {"identifier": identifier}
    elif selection.kind == "search":
        yield PullSelection.parse_query(selection.query or "")


async def _group_patients(client: SearchClient, group_id: str) -> AsyncIterator[Json]:
    group = await client.read("Group", group_id)
    for member in group.get("member", ()):
        rid = patient_id((member.get("entity") or {}).get("reference"))
        if rid is not None:
            yield await client.read("Patient", rid)


async def selected_patients(client: SearchClient, selection: PullSelection) -> AsyncIterator[Json]:
    if selection.kind == "group":
        if not selection.group_id:
            raise ValueError("a group pull needs a group id")
        async for patient in _group_patients(client, selection.group_id):
            yield patient
        return
    seen: set[str] = set()
    for params in patient_searches(selection):
        async for patient in client.search("Patient", params):
            pid = patient.get("id") if isinstance(patient, dict) else None
            if not isinstance(pid, str):
                yield patient  # pull_resources lists it as dropped
            elif pid not in seen:
                seen.add(pid)
                yield patient


def _page(since: str | None) -> dict[str, str]:
    params = {"_count": "200"}
    if since:
        params["_lastUpdated"] = f"gt{since}"
    return params


async def patient_resources(
    client: SearchClient,
    patient_id: str,
    since: str | None,
    params_by_type: dict[str, str | None],
) -> AsyncIterator[Json]:
    for rtype, param in params_by_type.items():
        if param is None:
            continue
        params = {param: f"Patient/{patient_id}", **_page(since)}
        try:
            async for resource in client.search(rtype, params):
                yield resource
        except FhirClientError as exc:
            if is_unknown_search_param(exc):
                raise SearchParamRefused(rtype, param) from exc
            raise


async def by_type_scan(
    client: SearchClient, types: list[str], since: str | None, stats: PullStats
) -> dict[str, list[Json]]:
    """Types the server cannot search by patient: read them by type once, group by subject
    (those without a Patient subject are listed in ``stats.dropped``)."""
    grouped: dict[str, list[Json]] = {}
    for rtype in types:
        # expected, not alarming: sekmet declares no patient search for AdverseEvent
        log.info("%s: server has no patient search parameter; reading by type", rtype)
        async for resource in client.search(rtype, _page(since)):
            if stats.keep(resource, needs_subject=True):
                pid = subject_patient_id(resource)
                grouped.setdefault(str(pid), []).append(resource)
    return grouped


async def pull_resources(
    client: SearchClient,
    selection: PullSelection,
    stats: PullStats | None = None,
    search_params: dict[str, list[str]] | None = None,
) -> AsyncIterator[tuple[Json, list[Json]]]:
    """Yield each selected Patient with the resources that reference it, patient by patient."""
    stats = stats or PullStats()
    params_by_type = await patient_params(client, search_params)
    unsearchable = [t for t, p in params_by_type.items() if p is None]
    scanned = await by_type_scan(client, unsearchable, selection.since, stats)
    async for patient in selected_patients(client, selection):
        if not stats.keep(patient):
            continue
        stats.patients += 1
        stats.count(patient)
        pid = str(patient["id"])
        while True:
            try:
                found = [
                    r async for r in patient_resources(client, pid, selection.since, params_by_type)
                ]
                break
            except SearchParamRefused as refused:
                # learned from the refusal: read that type once by type, as if undeclared
                log.info("server refused search parameter %s; reading by type", refused)
                params_by_type[refused.resource_type] = None
                extra = await by_type_scan(client, [refused.resource_type], selection.since, stats)
                for owner, items in extra.items():
                    scanned.setdefault(owner, []).extend(items)
        resources = list(scanned.get(pid, ()))
        resources += [r for r in found if stats.keep(r, needs_subject=True)]
        for resource in resources:
            stats.count(resource)
        yield patient, resources


class HistoryClient(Protocol):
    def search_bundles(self, resource_type: str, params: dict[str, str]) -> AsyncIterator[Json]: ...


async def deleted_since(client: HistoryClient, since: str) -> set[tuple[str, str]]:
    """(type, id) of resources deleted on the server since ``since``: an incremental search
    (``_lastUpdated``) cannot see deletions, the type's ``_history`` can
    (https://hl7.org/fhir/R4/http.html#history: a deletion is an entry with request DELETE)."""
    deleted: set[tuple[str, str]] = set()
    for rtype in ("Patient", *EVENT_TYPES):
        async for page in client.search_bundles(f"{rtype}/_history", {"_since": since}):
            for entry in page.get("entry", ()):
                request = entry.get("request") or {}
                if request.get("method") == "DELETE":
                    url = str(request.get("url", "")).split("?", 1)[0].rstrip("/")
                    parts = url.split("/")
                    if len(parts) >= 2 and parts[-2] == rtype:
                        deleted.add((rtype, parts[-1]))
    return deleted
