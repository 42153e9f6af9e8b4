"""Records: study records as last read, and every resource sent to or received from a
server (server id, version, ETag, content hash), with change detection over stored hashes.

Change detection and id look-ups read only the columns they need, many keys per query:
never whole rows (a resource's content is read only where it is used)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, bindparam, delete, func, select, tuple_
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Mapped
from sqlmodel import col

from fhir_cart.cache.base import CHUNK, Key, Store, now
from fhir_cart.cache.models import FhirResource, StudyRecord
from fhir_cart.records import Case

__all__ = ["RecordStore", "SentEntry"]

_RESOURCE_KEY = ["server", "direction", "resource_type", "identifier_system", "identifier_value"]
_KEY_COLUMNS = (
    col(FhirResource.resource_type),
    col(FhirResource.identifier_system),
    col(FhirResource.identifier_value),
)


@dataclass(frozen=True, slots=True)
class SentEntry:
    key: Key
    server_id: str | None
    version_id: str | None
    etag: str | None
    last_modified: str | None
    content_hash: str
    content: bytes
    patient_ref: str | None = None


def _key(row: Sequence[Any]) -> Key:
    return (str(row[0]), str(row[1]), str(row[2]))


def _of(server: str, direction: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return col(FhirResource.server) == server, col(FhirResource.direction) == direction


class RecordStore(Store):
    """Study records and resources sent or received, per server."""

    # -- study records ---------------------------------------------------------------------

    def upsert_study_records(self, *, cases: Iterable[Case]) -> int:
        """Remember each case as read; only those whose content changed are written."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for case in cases:
            content = orjson.dumps(case.model_dump(mode="json"))
            key = (case.patient.centre, case.patient.study_id)
            rows[key] = {
                "centre": key[0],
                "study_id": key[1],
                "content": content.decode(),
                "content_hash": hashlib.sha256(content).hexdigest(),
                "updated_at": now(),
            }
        with self.engine.connect() as conn:
            stored = {
                (str(centre), str(study_id)): str(digest)
                for centre, study_id, digest in conn.execute(
                    select(
                        col(StudyRecord.centre),
                        col(StudyRecord.study_id),
                        col(StudyRecord.content_hash),
                    ).where(col(StudyRecord.centre).in_({c for c, _ in rows}))
                )
            }
        changed = [row for key, row in rows.items() if stored.get(key) != row["content_hash"]]
        if changed:
            with self.engine.begin() as conn:
                self.upsert(conn, StudyRecord, changed, ["centre", "study_id"])
        return len(rows)

    def study_records(self) -> list[Case]:
        with self.engine.connect() as conn:
            return [
                Case.model_validate_json(content)
                for content in conn.scalars(select(col(StudyRecord.content)))
            ]

    # -- what was sent ---------------------------------------------------------------------

    def _sent_columns(
        self, server: str, keys: Sequence[Key], *columns: Mapped[Any]
    ) -> Iterator[Sequence[Any]]:
        """(type, system, value, *columns) of the sent resources among ``keys``: per
        (type, system), ``CHUNK`` values in one ``IN``, a range of the unique index."""
        by_system: dict[tuple[str, str], list[str]] = {}
        for rtype, system, value in keys:
            by_system.setdefault((rtype, system), []).append(value)
        with self.engine.connect() as conn:
            for (rtype, system), values in by_system.items():
                for start in range(0, len(values), CHUNK):
                    query = select(*_KEY_COLUMNS, *columns).where(
                        *_of(server, "sent"),
                        col(FhirResource.resource_type) == rtype,
                        col(FhirResource.identifier_system) == system,
                        col(FhirResource.identifier_value).in_(values[start : start + CHUNK]),
                    )
                    yield from conn.execute(query).all()

    def changed(self, *, server: str, items: Sequence[tuple[Key, str]]) -> set[Key]:
        """Keys whose content hash differs from the last one the server accepted (reads
        keys and hashes only)."""
        sent = {
            _key(row): row[3]
            for row in self._sent_columns(
                server, [k for k, _ in items], col(FhirResource.content_hash)
            )
        }
        return {key for key, digest in items if sent.get(key) != digest}

    def sent_versions(
        self, *, server: str, keys: Sequence[Key]
    ) -> dict[Key, tuple[str, str | None]]:
        """(server id, version id) the server last acknowledged for each key it has."""
        return {
            _key(row): (str(row[3]), row[4])
            for row in self._sent_columns(
                server, keys, col(FhirResource.server_id), col(FhirResource.version_id)
            )
            if row[3]
        }

    def server_ids(self, *, server: str, keys: Sequence[Key]) -> dict[Key, str]:
        return {
            _key(row): str(row[3])
            for row in self._sent_columns(server, keys, col(FhirResource.server_id))
            if row[3]
        }

    def sent_ids(self, *, server: str) -> dict[Key, str]:
        """Server id of every resource the server acknowledged (no content read)."""
        query = select(*_KEY_COLUMNS, col(FhirResource.server_id)).where(
            *_of(server, "sent"), col(FhirResource.server_id).is_not(None)
        )
        with self.engine.connect() as conn:
            rows: Iterator[Sequence[Any]] = iter(conn.execute(query))
            return {_key(row): str(row[3]) for row in rows if row[3]}

    def sent_content(
        self, *, server: str, keys: Sequence[Key]
    ) -> Iterator[tuple[Key, str, str | None, dict[str, Any]]]:
        """Key, server id, version and content sent, of the acknowledged ``keys``."""
        columns = (
            col(FhirResource.server_id),
            col(FhirResource.version_id),
            col(FhirResource.content),
        )
        for row in self._sent_columns(server, keys, *columns):
            if row[3] and row[5]:
                yield _key(row), str(row[3]), row[4], orjson.loads(row[5])

    def sent(self, *, server: str) -> Iterator[tuple[Key, str, str | None, dict[str, Any]]]:
        """Every resource the server acknowledged: key, server id, version, content sent."""
        query = select(
            *_KEY_COLUMNS,
            col(FhirResource.server_id),
            col(FhirResource.version_id),
            col(FhirResource.content),
        ).where(*_of(server, "sent"))
        with self.engine.connect() as conn:
            rows: Iterator[Sequence[Any]] = iter(conn.execute(query))
            for row in rows:
                if row[3] and row[5]:
                    yield _key(row), str(row[3]), row[4], orjson.loads(row[5])

    def forget_sent(
        self, *, server: str, keys: Iterable[Key], conn: Connection | None = None
    ) -> None:
        wanted = list(keys)
        with self.begin(conn) as c:
            for start in range(0, len(wanted), CHUNK):
                c.execute(
                    delete(FhirResource).where(
                        *_of(server, "sent"),
                        tuple_(*_KEY_COLUMNS).in_(wanted[start : start + CHUNK]),
                    )
                )

    def record_sent(
        self, *, server: str, entries: Sequence[SentEntry], conn: Connection | None = None
    ) -> None:
        rows = [
            {
                "server": server,
                "direction": "sent",
                "resource_type": e.key[0],
                "identifier_system": e.key[1],
                "identifier_value": e.key[2],
                "server_id": e.server_id,
                "version_id": e.version_id,
                "etag": e.etag,
                "last_modified": e.last_modified,
                "content_hash": e.content_hash,
                "content": e.content.decode(),
                "patient_ref": e.patient_ref,
                "mapped": None,
                "note": None,
                "updated_at": now(),
            }
            for e in entries
        ]
        if rows:
            with self.begin(conn) as c:
                self.upsert(c, FhirResource, rows, _RESOURCE_KEY)

    def count_resources(self, *, server: str, direction: str) -> dict[str, int]:
        query = (
            select(col(FhirResource.resource_type), func.count())
            .where(*_of(server, direction))
            .group_by(col(FhirResource.resource_type))
        )
        with self.engine.connect() as conn:
            return {str(t): int(n) for t, n in conn.execute(query)}

    def list_resources(
        self,
        *,
        server: str | None = None,
        direction: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[FhirResource]:
        query = select(FhirResource).order_by(col(FhirResource.id))
        if server is not None:
            query = query.where(col(FhirResource.server) == server)
        if direction is not None:
            query = query.where(col(FhirResource.direction) == direction)
        with self.session() as s:
            return list(s.scalars(query.offset(offset).limit(limit)))

    # -- what was received -----------------------------------------------------------------

    def record_received(self, *, server: str, resources: Iterable[dict[str, Any]]) -> int:
        stamp = now()  # one transaction, one time
        rows = [_received_row(server, r, stamp) for r in resources]
        if rows:
            with self.engine.begin() as conn:
                self.upsert(conn, FhirResource, rows, _RESOURCE_KEY)
        return len(rows)

    def mark_mapped(self, *, server: str, unmapped: dict[tuple[str, str], str]) -> None:
        """Flag received resources as mapped, except ``unmapped`` ((type, id) -> reason)."""
        with self.engine.begin() as conn:
            conn.execute(
                sql_update(FhirResource)
                .where(*_of(server, "received"))
                .values(mapped=True, note=None)
            )
            if unmapped:
                conn.execute(
                    sql_update(FhirResource)
                    .where(
                        *_of(server, "received"),
                        col(FhirResource.resource_type) == bindparam("rtype"),
                        col(FhirResource.server_id) == bindparam("rid"),
                    )
                    .values(mapped=False, note=bindparam("reason")),
                    [{"rtype": t, "rid": i, "reason": why} for (t, i), why in unmapped.items()],
                )

    def forget_received(self, *, server: str, ids: Iterable[tuple[str, str]]) -> int:
        """Drop received resources ((type, server id)) the server no longer has."""
        wanted = list(ids)
        pair = tuple_(col(FhirResource.resource_type), col(FhirResource.server_id))
        removed = 0
        with self.engine.begin() as conn:
            for start in range(0, len(wanted), CHUNK):
                result = conn.execute(
                    delete(FhirResource).where(
                        *_of(server, "received"), pair.in_(wanted[start : start + CHUNK])
                    )
                )
                removed += result.rowcount
        return removed

    def received_count(self, *, server: str) -> int:
        """How many resources received from ``server`` the cache holds."""
        query = select(func.count()).where(*_of(server, "received"))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def received_ids(self, *, server: str) -> list[tuple[str, str]]:
        """(type, server id) of every resource received from ``server`` (no content read)."""
        query = select(col(FhirResource.resource_type), col(FhirResource.server_id)).where(
            *_of(server, "received")
        )
        with self.engine.connect() as conn:
            return [(str(rtype), str(rid)) for rtype, rid in conn.execute(query)]

    def received_content(
        self, *, server: str, ids: Sequence[tuple[str, str]]
    ) -> Iterator[dict[str, Any]]:
        """The content of the received resources ``ids`` ((type, server id)), in no
        particular order."""
        pair = tuple_(col(FhirResource.resource_type), col(FhirResource.server_id))
        with self.engine.connect() as conn:
            for start in range(0, len(ids), CHUNK):
                query = select(col(FhirResource.content)).where(
                    *_of(server, "received"), pair.in_(list(ids[start : start + CHUNK]))
                )
                for content in conn.execute(query).scalars():
                    yield orjson.loads(content)

    def received(self, *, server: str) -> Iterator[dict[str, Any]]:
        query = select(col(FhirResource.content)).where(*_of(server, "received"))
        with self.engine.connect() as conn:
            for content in conn.execute(query.execution_options(yield_per=1000)).scalars():
                yield orjson.loads(content)

    def unmapped(self, *, server: str) -> list[FhirResource]:
        query = select(FhirResource).where(
            *_of(server, "received"), col(FhirResource.mapped).is_(False)
        )
        with self.session() as s:
            return list(s.scalars(query))


def _received_row(server: str, resource: dict[str, Any], stamp: dt.datetime) -> dict[str, Any]:
    content = orjson.dumps(resource)
    subject = resource.get("subject") or resource.get("patient") or {}
    meta = resource.get("meta") or {}
    rid = str(resource.get("id"))
    return {
        "server": server,
        "direction": "received",
        "resource_type": resource["resourceType"],
        "identifier_system": "",
        "identifier_value": rid,
        "server_id": rid,
        "version_id": meta.get("versionId"),
        "etag": None,
        "last_modified": meta.get("lastUpdated"),
        "content_hash": hashlib.sha256(content).hexdigest(),
        "content": content.decode(),
        "patient_ref": subject.get("reference") if isinstance(subject, dict) else None,
        "mapped": None,
        "note": None,
        "updated_at": stamp,
    }
