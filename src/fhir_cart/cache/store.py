"""The local SQL cache: SQLite file by default, PostgreSQL by URL.

It remembers study records, every resource sent and received (server id, version, ETag,
content hash), each sync run with its outcome and per-resource results, the journal of
bundles in flight, and rejected inputs. Patient identifiers are stored, never logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, and_, delete, event, func, or_, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, create_engine, select

from fhir_cart.cache.models import (
    FhirResource,
    PushPending,
    RejectedInput,
    ResourceOutcome,
    StudyRecord,
    SyncRun,
)
from fhir_cart.errors import Reject
from fhir_cart.records import Case

__all__ = [
    "Cache", "Key", "Outcome", "SentEntry", "normalise_url", "open_cache", "worker_name",
]  # fmt: skip

Key = tuple[str, str, str]
"""(resource type, identifier system, identifier value)"""
_CHUNK = 400


log = logging.getLogger(__name__)
run_owner: ContextVar[str | None] = ContextVar("run_owner", default=None)
"""Set while a worker runs a job: that job's run row is written only while the worker still
holds it (after its lease expired, another worker may have taken the job over)."""
JOB_MARK = '"job":true'
"""In the params of runs queued by the service (jobs a worker may take over); CLI runs
have no lease to expire."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def normalise_url(url: str | None, data_dir: Path = Path("fhir-cart-data")) -> str:
    if not url:
        data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{data_dir / 'cache.sqlite'}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


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


@dataclass(frozen=True, slots=True)
class Outcome:
    key: Key
    outcome: str
    status_code: int | None = None
    reason: str | None = None


class Cache:
    """Keyword-only methods over one engine. ``close()`` disposes of the pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    # -- upserts -------------------------------------------------------------------------

    def _insert(self, model: Any) -> Any:
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(model)

    def _upsert(self, model: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
        if not rows:
            return
        stmt = self._insert(model)
        updates = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
        # One statement run over many parameter sets: compiled once (and cached), where
        # ``.values(rows)`` would compile a new statement with a placeholder per cell.
        upsert = stmt.on_conflict_do_update(index_elements=keys, set_=updates)
        with self.engine.begin() as conn:
            for start in range(0, len(rows), _CHUNK):
                conn.execute(upsert, rows[start : start + _CHUNK])

    def upsert_study_records(self, *, cases: Iterable[Case]) -> int:
        rows = []
        for case in cases:
            content = orjson.dumps(case.model_dump(mode="json"))
            rows.append({
                "centre": case.patient.centre, "study_id": case.patient.study_id,
                "content": content.decode(), "content_hash": hashlib.sha256(content).hexdigest(),
                "updated_at": _now(),
            })  # fmt: skip
        self._upsert(StudyRecord, rows, ["centre", "study_id"])
        return len(rows)

    def study_records(self) -> list[Case]:
        with self.session() as s:
            return [Case.model_validate_json(r.content) for r in s.exec(select(StudyRecord))]

    # -- what was sent ---------------------------------------------------------------------

    def _lookup(self, server: str, direction: str, keys: Sequence[Key]) -> Iterator[FhirResource]:
        cols = (FhirResource.resource_type, FhirResource.identifier_system,
                FhirResource.identifier_value)  # fmt: skip
        with self.session() as s:
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start : start + _CHUNK])
                query = select(FhirResource).where(
                    FhirResource.server == server,
                    FhirResource.direction == direction,
                    tuple_(*cols).in_(chunk),
                )
                yield from s.exec(query)

    def changed(self, *, server: str, items: Sequence[tuple[Key, str]]) -> set[Key]:
        """Keys whose content hash differs from the last one the server accepted."""
        sent = {
            (r.resource_type, r.identifier_system, r.identifier_value): r.content_hash
            for r in self._lookup(server, "sent", [k for k, _ in items])
        }
        return {key for key, digest in items if sent.get(key) != digest}

    def sent_versions(
        self, *, server: str, keys: Sequence[Key]
    ) -> dict[Key, tuple[str, str | None]]:
        """(server id, version id) the server last acknowledged for each key it has."""
        return {
            (r.resource_type, r.identifier_system, r.identifier_value): (r.server_id, r.version_id)
            for r in self._lookup(server, "sent", keys)
            if r.server_id
        }

    def sent(self, *, server: str) -> Iterator[tuple[Key, str, str | None, dict[str, Any]]]:
        """Every resource the server acknowledged: key, server id, version, content sent."""
        with self.session() as s:
            query = select(FhirResource).where(
                FhirResource.server == server, FhirResource.direction == "sent"
            )
            for r in s.exec(query):
                if r.server_id and r.content:
                    key = (r.resource_type, r.identifier_system, r.identifier_value)
                    yield key, r.server_id, r.version_id, orjson.loads(r.content)

    def forget_sent(self, *, server: str, keys: Iterable[Key]) -> None:
        with self.engine.begin() as conn:
            for rtype, system, value in keys:
                conn.execute(
                    delete(FhirResource).where(
                        FhirResource.server == server, FhirResource.direction == "sent",
                        FhirResource.resource_type == rtype,
                        FhirResource.identifier_system == system,
                        FhirResource.identifier_value == value,
                    )
                )  # fmt: skip

    def server_ids(self, *, server: str, keys: Sequence[Key]) -> dict[Key, str]:
        return {
            (r.resource_type, r.identifier_system, r.identifier_value): r.server_id
            for r in self._lookup(server, "sent", keys)
            if r.server_id
        }

    def record_sent(self, *, server: str, entries: Sequence[SentEntry]) -> None:
        rows = [
            {
                "server": server, "direction": "sent", "resource_type": e.key[0],
                "identifier_system": e.key[1], "identifier_value": e.key[2],
                "server_id": e.server_id, "version_id": e.version_id, "etag": e.etag,
                "last_modified": e.last_modified, "content_hash": e.content_hash,
                "content": e.content.decode(), "patient_ref": e.patient_ref, "mapped": None,
                "note": None, "updated_at": _now(),
            }
            for e in entries
        ]  # fmt: skip
        self._upsert(FhirResource, rows, _RESOURCE_KEY)

    def count_resources(self, *, server: str, direction: str) -> dict[str, int]:
        with self.session() as s:
            query = (
                select(FhirResource.resource_type, func.count())
                .where(FhirResource.server == server, FhirResource.direction == direction)
                .group_by(FhirResource.resource_type)
            )
            return {t: int(n) for t, n in s.exec(query)}

    def list_resources(
        self, *, server: str | None = None, direction: str | None = None,
        limit: int = 100, offset: int = 0,
    ) -> list[FhirResource]:  # fmt: skip
        with self.session() as s:
            query = select(FhirResource).order_by(FhirResource.id)  # type: ignore[arg-type]
            if server is not None:
                query = query.where(FhirResource.server == server)
            if direction is not None:
                query = query.where(FhirResource.direction == direction)
            return list(s.exec(query.offset(offset).limit(limit)))

    # -- what was received -----------------------------------------------------------------

    def record_received(self, *, server: str, resources: Iterable[dict[str, Any]]) -> int:
        rows = [_received_row(server, r) for r in resources]
        self._upsert(FhirResource, rows, _RESOURCE_KEY)
        return len(rows)

    def mark_mapped(self, *, server: str, unmapped: dict[tuple[str, str], str]) -> None:
        """Flag received resources as mapped, except ``unmapped`` ((type, id) -> reason)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(FhirResource)
                .where(FhirResource.server == server, FhirResource.direction == "received")
                .values(mapped=True, note=None)
            )
            for (rtype, rid), reason in unmapped.items():
                conn.execute(
                    update(FhirResource)
                    .where(
                        FhirResource.server == server, FhirResource.direction == "received",
                        FhirResource.resource_type == rtype, FhirResource.server_id == rid,
                    )
                    .values(mapped=False, note=reason)
                )  # fmt: skip

    def forget_received(self, *, server: str, ids: Iterable[tuple[str, str]]) -> int:
        """Drop received resources ((type, server id)) the server no longer has."""
        removed = 0
        with self.engine.begin() as conn:
            for rtype, rid in ids:
                result = conn.execute(
                    delete(FhirResource).where(
                        FhirResource.server == server, FhirResource.direction == "received",
                        FhirResource.resource_type == rtype, FhirResource.server_id == rid,
                    )
                )  # fmt: skip
                removed += result.rowcount
        return removed

    def received(self, *, server: str) -> Iterator[dict[str, Any]]:
        with self.session() as s:
            query = select(FhirResource.content).where(
                FhirResource.server == server, FhirResource.direction == "received"
            )
            for content in s.exec(query).yield_per(1000):
                yield orjson.loads(content)

    def unmapped(self, *, server: str) -> list[FhirResource]:
        with self.session() as s:
            query = select(FhirResource).where(
                FhirResource.server == server,
                FhirResource.direction == "received",
                FhirResource.mapped == False,  # noqa: E712 - SQL expression
            )
            return list(s.exec(query))

    # -- runs (and the job queue) ----------------------------------------------------------

    def create_run(
        self,
        *,
        kind: str,
        server: str,
        params: dict[str, Any],
        status: str = "running",
        worker: str | None = None,
    ) -> int:
        run = SyncRun(
            kind=kind, server=server, status=status, params=orjson.dumps(params).decode(),
            worker=worker,
        )  # fmt: skip
        if status == "running":
            run.started_at = run.heartbeat_at = _now()
        with self.session() as s:
            s.add(run)
            s.commit()
            assert run.id is not None
            return run.id

    def get_run(self, run_id: int) -> SyncRun | None:
        with self.session() as s:
            return s.get(SyncRun, run_id)

    def list_runs(self, *, limit: int = 50, offset: int = 0) -> list[SyncRun]:
        with self.session() as s:
            query = select(SyncRun).order_by(SyncRun.id.desc()).offset(offset).limit(limit)  # type: ignore[union-attr]
            return list(s.exec(query))

    def update_run(self, run_id: int, **values: Any) -> None:
        """Write to a run; inside a job (``run_owner`` set) only while the worker holds it."""
        if "counts" in values and not isinstance(values["counts"], str):
            values["counts"] = orjson.dumps(values["counts"]).decode()
        values["heartbeat_at"] = _now()
        query = update(SyncRun).where(SyncRun.id == run_id)
        owner = run_owner.get()
        if owner is not None:
            query = query.where(SyncRun.worker == owner)
        with self.engine.begin() as conn:
            conn.execute(query.values(**values))  # type: ignore[arg-type]

    def heartbeat(self, run_id: int, *, worker: str) -> bool:
        """Renew ``worker``'s lease on a running job; False when it no longer holds it."""
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(SyncRun)
                .where(SyncRun.id == run_id, SyncRun.worker == worker,
                       SyncRun.status == "running")
                .values(heartbeat_at=_now())
            )  # fmt: skip
            return bool(renewed.rowcount == 1)

    def finish_run(
        self, run_id: int, *, status: str, counts: dict[str, int], error: str | None = None
    ) -> None:
        self.update_run(run_id, status=status, counts=counts, error=error, finished_at=_now())

    def claim_next_run(
        self,
        *,
        worker: str | None = None,
        kinds: Sequence[str] = ("push", "pull"),
        lease: float | None = None,
    ) -> SyncRun | None:
        """Atomically take one pending job, or, with ``lease``, a running job whose worker
        sent no heartbeat for ``lease`` seconds (dead or cut off: its lease expired). Two
        workers never take the same one, and a job with a live lease is never taken."""
        worker = worker or f"{socket.gethostname()}"
        takeable: Any = SyncRun.status == "pending"
        if lease is not None:
            expired = _now() - dt.timedelta(seconds=lease)
            takeable = or_(takeable, and_(
                SyncRun.status == "running", SyncRun.heartbeat_at < expired,
                SyncRun.params.like(f"%{JOB_MARK}%"),  # service jobs, not CLI runs
            ))  # fmt: skip
        with self.session() as s:
            query = (
                select(SyncRun)
                .where(takeable, SyncRun.kind.in_(kinds))  # type: ignore[attr-defined]
                .order_by(SyncRun.id)  # type: ignore[arg-type]
                .limit(1)
            )
            if self.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            run = s.exec(query).first()
            if run is None:
                return None
            if run.status == "running":
                log.warning("job %s: lease expired; taken over", run.id)
            claimed = s.execute(
                update(SyncRun)
                .where(SyncRun.id == run.id, takeable)  # type: ignore[arg-type]
                .values(status="running", worker=worker, started_at=_now(), heartbeat_at=_now())
            )
            s.commit()
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return self.get_run(run.id)  # type: ignore[arg-type]

    # -- named locks shared by every process using this cache --------------------------------

    def try_lock(self, name: str) -> Callable[[], None] | None:
        """Take the lock ``name`` without waiting: its release function, or None if another
        holder (this or another process) has it. PostgreSQL: a session advisory lock on a
        connection held until release; SQLite file: ``flock`` on a file beside the database;
        in-memory SQLite (one process): always free."""
        digest = hashlib.sha256(name.encode()).digest()
        if self.dialect == "postgresql":
            return self._try_advisory_lock(int.from_bytes(digest[:8], "big", signed=True))
        database = self.engine.url.database
        if not database or database == ":memory:":
            return lambda: None
        return _try_file_lock(Path(f"{database}.lock-{digest[:8].hex()}"))

    def _try_advisory_lock(self, key: int) -> Callable[[], None] | None:
        conn = self.engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return None

        def release() -> None:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
            finally:
                conn.close()

        return release

    def mark_dead_workers(self) -> list[int]:
        """Runs left ``running`` by a process of this host that no longer exists (killed)."""
        prefix = f"{socket.gethostname()}-"
        dead: list[int] = []
        with self.session() as s:
            running = s.exec(select(SyncRun).where(SyncRun.status == "running"))
            for run in running:
                worker = run.worker or ""
                pid = worker.removeprefix(prefix)
                local = worker.startswith(prefix) and pid.isdigit()
                if local and run.id is not None and not _alive(int(pid)):
                    dead.append(run.id)
        for run_id in dead:
            self.update_run(run_id, status="interrupted", error="process ended without finishing")
        return dead

    def mark_interrupted(self, *, stale_after: float) -> list[int]:
        """Runs whose worker stopped sending heartbeats: marked interrupted (resumable)."""
        limit = _now() - dt.timedelta(seconds=stale_after)
        with self.engine.begin() as conn:
            rows = conn.execute(
                update(SyncRun)
                .where(SyncRun.status == "running", SyncRun.heartbeat_at < limit)  # type: ignore[arg-type, operator]
                .values(status="interrupted")
                .returning(SyncRun.id)
            )
            return [int(r[0]) for r in rows]

    # -- journal and outcomes --------------------------------------------------------------

    def begin_pending(
        self, *, run_id: int, bundle_no: int, items: Sequence[tuple[Key, str]]
    ) -> None:
        rows = [
            {"run_id": run_id, "bundle_no": bundle_no, "resource_type": k[0],
             "identifier_system": k[1], "identifier_value": k[2], "content_hash": h}
            for k, h in items
        ]  # fmt: skip
        if rows:
            with self.engine.begin() as conn:
                conn.execute(PushPending.__table__.insert(), rows)  # type: ignore[attr-defined]

    def clear_pending(self, *, run_id: int, bundle_no: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                PushPending.__table__.delete().where(  # type: ignore[attr-defined]
                    PushPending.run_id == run_id, PushPending.bundle_no == bundle_no
                )
            )

    def clear_stale_pending(self) -> int:
        """Forget journal entries of runs that are no longer running (their resources were
        re-sent by a later run, which recorded the server's answer)."""
        live = select(SyncRun.id).where(SyncRun.status == "running")
        with self.engine.begin() as conn:
            result = conn.execute(
                PushPending.__table__.delete().where(PushPending.run_id.not_in(live))
            )
            return int(result.rowcount or 0)

    def pending(self, *, run_id: int | None = None) -> list[PushPending]:
        with self.session() as s:
            query = select(PushPending)
            if run_id is not None:
                query = query.where(PushPending.run_id == run_id)
            return list(s.exec(query))

    def add_outcomes(self, *, run_id: int, outcomes: Iterable[Outcome]) -> None:
        rows = [
            {"run_id": run_id, "resource_type": o.key[0], "identifier_system": o.key[1],
             "identifier_value": o.key[2], "outcome": o.outcome, "status_code": o.status_code,
             "reason": o.reason, "at": _now()}
            for o in outcomes
        ]  # fmt: skip
        if rows:
            with self.engine.begin() as conn:
                conn.execute(ResourceOutcome.__table__.insert(), rows)  # type: ignore[attr-defined]

    def outcomes(self, *, run_id: int, limit: int = 1000, offset: int = 0) -> list[ResourceOutcome]:
        with self.session() as s:
            query = (
                select(ResourceOutcome).where(ResourceOutcome.run_id == run_id)
                .order_by(ResourceOutcome.id).offset(offset).limit(limit)  # type: ignore[arg-type]
            )  # fmt: skip
            return list(s.exec(query))

    def add_rejects(self, *, run_id: int | None, rejects: Iterable[Reject]) -> None:
        with self.session() as s:
            s.add_all(
                RejectedInput(run_id=run_id, source=r.source, table_name=r.table, row=r.row,
                              column_name=r.column, value=r.value, reason=r.reason)
                for r in rejects
            )  # fmt: skip
            s.commit()

    def rejects(self, *, run_id: int | None = None) -> list[RejectedInput]:
        with self.session() as s:
            query = select(RejectedInput)
            if run_id is not None:
                query = query.where(RejectedInput.run_id == run_id)
            return list(s.exec(query))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_name() -> str:
    """This process, as written in ``sync_run.worker``: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


_RESOURCE_KEY = ["server", "direction", "resource_type", "identifier_system", "identifier_value"]


def _received_row(server: str, resource: dict[str, Any]) -> dict[str, Any]:
    content = orjson.dumps(resource)
    subject = resource.get("subject") or resource.get("patient") or {}
    meta = resource.get("meta") or {}
    rid = str(resource.get("id"))
    return {
        "server": server, "direction": "received", "resource_type": resource["resourceType"],
        "identifier_system": "", "identifier_value": rid, "server_id": rid,
        "version_id": meta.get("versionId"), "etag": None,
        "last_modified": meta.get("lastUpdated"),
        "content_hash": hashlib.sha256(content).hexdigest(), "content": content.decode(),
        "patient_ref": subject.get("reference") if isinstance(subject, dict) else None,
        "mapped": None, "note": None, "updated_at": _now(),
    }  # fmt: skip


def _try_file_lock(path: Path) -> Callable[[], None] | None:
    import fcntl

    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    except BaseException:
        handle.close()
        raise
    # The holder removes the file when it lets go, so no lock files pile up beside the
    # database. Whoever locked a file that was removed meanwhile holds a lock on nothing:
    # it reports the lock as busy and the caller tries again (on a fresh file).
    try:
        current = os.stat(path).st_ino
    except FileNotFoundError:
        current = None
    if current != os.fstat(handle.fileno()).st_ino:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        return None

    def release() -> None:
        try:
            path.unlink(missing_ok=True)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    return release


def open_cache(url: str | None = None, *, migrate: bool = True) -> Cache:
    """Open (and by default migrate) the cache at ``url`` (default: a local SQLite file)."""
    full = normalise_url(url)
    engine = create_engine(full, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    cache = Cache(engine)
    if migrate:
        cache.migrate()
    return cache
