"""Helpers of the pull tests on real servers: load foreign resources by their own ids, pull
them back with a fresh cache, and say where each fetched resource ended."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fhir_cart.cache import open_cache
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import ReverseResult, Unmapped
from fhir_cart.settings import ServerSettings
from fhir_cart.sync.jobs import PullOutcome, PullRequest, run_pull
from fhir_cart.sync.pull import PullSelection

Json = dict[str, Any]
Key = tuple[str, str]
BATCH = 8
"""Entries per loading batch (Medplum's test router takes small bundles)."""


def key(resource: Json) -> Key:
    return str(resource["resourceType"]), str(resource["id"])


def subject(resource: Json) -> str | None:
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference")
    return ref.split("/")[-1] if isinstance(ref, str) else None


def load(base: str, resources: list[Json]) -> dict[str, str]:
    """PUT each resource to its own id (batches); the refused ones with their status."""
    refused: dict[str, str] = {}
    for start in range(0, len(resources), BATCH):
        part = resources[start : start + BATCH]
        entries = [
            {"resource": r, "request": {"method": "PUT", "url": "/".join(key(r))}} for r in part
        ]
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
        answer = httpx.post(base, json=bundle, timeout=120).json()
        for resource, entry in zip(part, answer["entry"], strict=True):
            status = str(entry["response"]["status"])
            if not status.startswith(("200", "201")):
                refused["/".join(key(resource))] = status
    return refused


@dataclass
class Pulled:
    outcome: PullOutcome
    fetched: dict[Key, Json]
    """Every resource the pull received (as the server sent it): cached ones, and those
    naming no Patient (not cached, listed as ``other`` rows)."""

    def result(self) -> ReverseResult:
        o = self.outcome
        # the outcome's other rows hold whole resources and, since issue 18, a read Patient's
        # extensions that no attribute has (code_system "extension"): those are the
        # result's ``undeclared``, rows about a part of a resource that is in its place
        parts = [row for row in o.other if row.get("code_system") == "extension"]
        whole = [row for row in o.other if row.get("code_system") != "extension"]
        return ReverseResult(o.cases, list(o.unmapped), whole, list(o.excluded), parts)  # type: ignore[arg-type]


def pull_fresh(base: str, ctx: MappingContext, patient_ids: list[str], folder: Path) -> Pulled:
    """The patients (by ``_id``) and every resource the pull asks for, into a new cache."""
    cache = open_cache(f"sqlite:///{folder / 'pull.sqlite'}")
    try:
        selection = PullSelection(kind="search", query="_id=" + ",".join(patient_ids))
        server = ServerSettings(base_url=base)
        outcome = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))
        ids = cache.records.received_ids(server=base)
        fetched = {key(r): r for r in cache.records.received_content(server=base, ids=ids)}
    finally:
        cache.close()
    for resource, _ in outcome.stats.unowned:
        fetched[key(resource)] = resource
    return Pulled(outcome, fetched)


def reasons(result: ReverseResult) -> dict[Key, str]:
    """The reason given for each ``other`` row and each excluded resource."""
    out = {(str(r["resource_type"]), str(r["resource_id"])): str(r["reason"]) for r in result.other}
    for item in result.excluded:
        out[_unmapped_key(item)] = item.reason
    return out


def _unmapped_key(item: Unmapped) -> Key:
    rtype, _, rid = item.reference.partition("/")
    return rtype, rid
