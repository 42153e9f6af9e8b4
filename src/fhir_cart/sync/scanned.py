"""Types a server cannot search by patient, read by type once, held on disk by patient.

A pull reads such a type whole (sekmet-fhir 0.1.1 declares no patient search for
AdverseEvent: every AdverseEvent of the server); holding them in memory would grow with the
server, not the selection. :func:`by_type_scan` reads the type page by page into a
:class:`ScanStore`: a private temporary SQLite database (deleted when closed) keyed by the
patient each resource names, from which each chunk of patients takes its own.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Protocol

import orjson

from fhir_cart.collector import collect_in_bulk
from fhir_cart.errors import BadResponse
from fhir_cart.references import subject_patient_id
from fhir_cart.types import Json

if TYPE_CHECKING:
    from fhir_cart.sync.pull import PullStats

__all__ = ["ScanStore", "by_type_scan"]

log = logging.getLogger(__name__)


class _Pages(Protocol):
    def search_bundles(self, resource_type: str, params: dict[str, str]) -> AsyncIterator[Json]: ...


class ScanStore:
    """Resources read by type, by the patient they name, on disk (in insertion order)."""

    def __init__(self) -> None:
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            # "": a private temporary database on disk, deleted when the connection closes
            self._db = sqlite3.connect("")
            self._db.execute("PRAGMA cache_size = -4000")  # 4 MiB of pages at most
            self._db.execute(
                "CREATE TABLE s (seq INTEGER PRIMARY KEY, patient TEXT, rtype TEXT, body BLOB)"
            )
            self._db.execute("CREATE INDEX s_patient ON s (patient, seq)")
        return self._db

    def extend(self, owner: str, items: Iterable[Json]) -> None:
        rows = [(owner, str(r.get("resourceType")), orjson.dumps(r)) for r in items]
        self._conn().executemany("INSERT INTO s (patient, rtype, body) VALUES (?, ?, ?)", rows)

    def get(self, owner: str) -> list[Json]:
        if self._db is None:
            return []
        rows = self._db.execute("SELECT body FROM s WHERE patient = ? ORDER BY seq", (owner,))
        return [orjson.loads(body) for (body,) in rows]

    def not_selected(self, pulled: set[str]) -> dict[str, int]:
        """Per type, how many resources name a patient not in ``pulled``."""
        counts: dict[str, int] = {}
        if self._db is None:
            return counts
        for owner, rtype in self._db.execute("SELECT patient, rtype FROM s ORDER BY seq"):
            if owner not in pulled:
                counts[rtype] = counts.get(rtype, 0) + 1
        return counts

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


async def by_type_scan(
    client: _Pages,
    types: list[str],
    since: str | None,
    stats: PullStats,
    store: ScanStore,
    page_size: int,
) -> None:
    """Types the server cannot search by patient: read them by type once, page by page,
    into ``store`` by subject (those naming no Patient are of no selected patient: counted
    in ``stats.not_selected``, as the selected patients' resources are found later)."""
    for rtype in types:
        # expected, not alarming: sekmet declares no patient search for AdverseEvent
        log.info("%s: server has no patient search parameter; reading by type", rtype)
        params = {"_count": str(page_size)}
        if since:
            params["_lastUpdated"] = f"gt{since}"
        got, total = 0, None
        async for page in client.search_bundles(rtype, params):
            if total is None and isinstance(page.get("total"), int):
                total = int(page["total"])
            grouped: dict[str, list[Json]] = {}
            for entry in page.get("entry", ()):
                resource = entry.get("resource")
                if resource is None or (entry.get("search") or {}).get("mode", "match") != "match":
                    continue
                got += 1
                if not stats.keep(resource):
                    continue
                pid = subject_patient_id(resource)
                if pid is None:  # of no patient, so of none selected: counted, not kept
                    stats.not_selected[rtype] = stats.not_selected.get(rtype, 0) + 1
                    continue
                grouped.setdefault(pid, []).append(resource)
            for pid, items in grouped.items():
                store.extend(pid, items)
            collect_in_bulk()  # a page's cycles: memory flat in the server's size
        if total is not None and got < total:
            raise BadResponse(
                f"{rtype} search: the server answered {got} of {total} matches with no next page"
            )
