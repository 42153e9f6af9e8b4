"""Runs and the job queue: each push or pull (the web service's jobs with their leases), the
outcome of every resource, the journal of bundles in flight, and rejected inputs."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, and_, delete, func, insert, or_, select, update
from sqlmodel import col

from fhir_cart.cache.base import CHUNK, Key, Store, now
from fhir_cart.cache.models import PushPending, RejectedInput, ResourceOutcome, SyncRun
from fhir_cart.errors import Reject

__all__ = ["JOB_MARK", "Outcome", "RunStore", "run_owner", "worker_name"]

log = logging.getLogger(__name__)
run_owner: ContextVar[str | None] = ContextVar("run_owner", default=None)
"""Set while a worker runs a job: that job's run row is written only while the worker still
holds it (after its lease expired, another worker may have taken the job over)."""
JOB_MARK = '"job":true'
"""In the params of runs queued by the service (jobs a worker may take over); CLI runs
have no lease to expire."""


@dataclass(frozen=True, slots=True)
class Outcome:
    key: Key
    outcome: str
    status_code: int | None = None
    reason: str | None = None


def worker_name() -> str:
    """This process, as written in ``sync_run.worker``: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _id(value: int | None) -> int:
    """A run's id as read back (the column is the primary key: never NULL)."""
    if value is None:
        raise ValueError("a run without an id")
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore(Store):
    """Runs, their outcomes and journal, and the queue of jobs workers take."""

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
        started = now() if status == "running" else None
        query = (
            insert(SyncRun)
            .values(
                kind=kind,
                server=server,
                status=status,
                params=orjson.dumps(params).decode(),
                counts="{}",
                worker=worker,
                created_at=now(),
                started_at=started,
                heartbeat_at=started,
            )
            .returning(col(SyncRun.id))
        )
        with self.engine.begin() as conn:
            return _id(conn.execute(query).scalar_one())

    def get_run(self, run_id: int) -> SyncRun | None:
        with self.session() as s:
            return s.get(SyncRun, run_id)

    def list_runs(self, *, limit: int = 50, offset: int = 0) -> list[SyncRun]:
        query = select(SyncRun).order_by(col(SyncRun.id).desc()).offset(offset).limit(limit)
        with self.session() as s:
            return list(s.scalars(query))

    def update_run(self, run_id: int, conn: Connection | None = None, /, **values: Any) -> None:
        """Write to a run; inside a job (``run_owner`` set) only while the worker holds it."""
        if "counts" in values and not isinstance(values["counts"], str):
            values["counts"] = orjson.dumps(values["counts"]).decode()
        values["heartbeat_at"] = now()
        query = update(SyncRun).where(col(SyncRun.id) == run_id)
        owner = run_owner.get()
        if owner is not None:
            query = query.where(col(SyncRun.worker) == owner)
        with self.begin(conn) as c:
            c.execute(query.values(values))

    def heartbeat(self, run_id: int, *, worker: str) -> bool:
        """Renew ``worker``'s lease on a running job; False when it no longer holds it."""
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(SyncRun)
                .where(
                    col(SyncRun.id) == run_id,
                    col(SyncRun.worker) == worker,
                    col(SyncRun.status) == "running",
                )
                .values(heartbeat_at=now())
            )
            return renewed.rowcount == 1

    def finished_by(self, run_id: int, *, worker: str) -> bool:
        """Whether ``worker`` still holds the run and recorded its end (a heartbeat that
        fails because the job itself finished is not a lost lease)."""
        run = self.get_run(run_id)
        return run is not None and run.worker == worker and run.finished_at is not None

    def finish_run(
        self, run_id: int, *, status: str, counts: Mapping[str, object], error: str | None = None
    ) -> None:
        self.update_run(run_id, status=status, counts=counts, error=error, finished_at=now())

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
        takeable: ColumnElement[bool] = col(SyncRun.status) == "pending"
        if lease is not None:
            expired = now() - dt.timedelta(seconds=lease)
            takeable = or_(
                takeable,
                and_(
                    col(SyncRun.status) == "running",
                    col(SyncRun.heartbeat_at) < expired,
                    col(SyncRun.params).like(f"%{JOB_MARK}%"),  # service jobs, not CLI runs
                ),
            )
        query = (
            select(col(SyncRun.id), col(SyncRun.status))
            .where(takeable, col(SyncRun.kind).in_(kinds))
            .order_by(col(SyncRun.id))
            .limit(1)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            found = conn.execute(query).first()
            if found is None:
                return None
            run_id, status = _id(found[0]), str(found[1])
            if status == "running":
                log.warning("job %s: lease expired; taken over", run_id)
            claimed = conn.execute(
                update(SyncRun)
                .where(col(SyncRun.id) == run_id, takeable)
                .values(
                    status="running",
                    worker=worker,
                    started_at=now(),
                    heartbeat_at=now(),
                    finished_at=None,
                )
            )
            if claimed.rowcount != 1:
                return None
        return self.get_run(run_id)

    def oldest_pending(self, *, kinds: Sequence[str] = ("push", "pull")) -> dt.datetime | None:
        """When the oldest job still waiting for a worker was queued (None: none waits)."""
        query = select(func.min(col(SyncRun.created_at))).where(
            col(SyncRun.status) == "pending", col(SyncRun.kind).in_(kinds)
        )
        with self.engine.connect() as conn:
            oldest: dt.datetime | None = conn.execute(query).scalar_one()
        if oldest is not None and oldest.tzinfo is None:  # SQLite keeps no zone: stored UTC
            oldest = oldest.replace(tzinfo=dt.UTC)
        return oldest

    def mark_dead_workers(self) -> list[int]:
        """Runs left ``running`` by a process of this host that no longer exists (killed)."""
        prefix = f"{socket.gethostname()}-"
        query = select(col(SyncRun.id), col(SyncRun.worker)).where(col(SyncRun.status) == "running")
        with self.engine.connect() as conn:
            running = [(_id(i), w or "") for i, w in conn.execute(query)]
        dead = [
            run_id
            for run_id, worker in running
            if worker.startswith(prefix)
            and (pid := worker.removeprefix(prefix)).isdigit()
            and not _alive(int(pid))
        ]
        for run_id in dead:
            self.update_run(run_id, status="interrupted", error="process ended without finishing")
        return dead

    def mark_interrupted(self, *, stale_after: float) -> list[int]:
        """Runs whose worker stopped sending heartbeats: marked interrupted (resumable)."""
        limit = now() - dt.timedelta(seconds=stale_after)
        with self.engine.begin() as conn:
            rows = conn.execute(
                update(SyncRun)
                .where(col(SyncRun.status) == "running", col(SyncRun.heartbeat_at) < limit)
                .values(status="interrupted")
                .returning(col(SyncRun.id))
            )
            return [_id(run_id) for run_id in rows.scalars()]

    # -- journal and outcomes --------------------------------------------------------------

    def begin_pending(
        self,
        *,
        run_id: int,
        bundle_no: int,
        items: Sequence[tuple[Key, str]],
        conn: Connection | None = None,
    ) -> None:
        rows = [
            {
                "run_id": run_id,
                "bundle_no": bundle_no,
                "resource_type": k[0],
                "identifier_system": k[1],
                "identifier_value": k[2],
                "content_hash": h,
            }
            for k, h in items
        ]
        _insert_many(self, conn, PushPending, rows)

    def clear_pending(self, *, run_id: int, bundle_no: int, conn: Connection | None = None) -> None:
        with self.begin(conn) as c:
            c.execute(
                delete(PushPending).where(
                    col(PushPending.run_id) == run_id, col(PushPending.bundle_no) == bundle_no
                )
            )

    def clear_stale_pending(self) -> int:
        """Forget journal entries of runs that are no longer running (their resources were
        re-sent by a later run, which recorded the server's answer)."""
        live = select(col(SyncRun.id)).where(col(SyncRun.status) == "running")
        with self.engine.begin() as conn:
            result = conn.execute(delete(PushPending).where(col(PushPending.run_id).not_in(live)))
            return result.rowcount

    def pending(self, *, run_id: int | None = None) -> list[PushPending]:
        query = select(PushPending)
        if run_id is not None:
            query = query.where(col(PushPending.run_id) == run_id)
        with self.session() as s:
            return list(s.scalars(query))

    def add_outcomes(
        self, *, run_id: int, outcomes: Iterable[Outcome], conn: Connection | None = None
    ) -> None:
        """One row per (run, resource), holding the latest answer: a job resumed or taken
        over records a resource again without counting it twice."""
        at = now()
        latest = {
            o.key: {
                "run_id": run_id,
                "resource_type": o.key[0],
                "identifier_system": o.key[1],
                "identifier_value": o.key[2],
                "outcome": o.outcome,
                "status_code": o.status_code,
                "reason": o.reason,
                "at": at,
            }
            for o in outcomes
        }
        if latest:
            with self.begin(conn) as c:
                self.upsert(c, ResourceOutcome, list(latest.values()), _OUTCOME_KEY)

    def outcomes(self, *, run_id: int, limit: int = 1000, offset: int = 0) -> list[ResourceOutcome]:
        query = (
            select(ResourceOutcome)
            .where(col(ResourceOutcome.run_id) == run_id)
            .order_by(col(ResourceOutcome.id))
            .offset(offset)
            .limit(limit)
        )
        with self.session() as s:
            return list(s.scalars(query))

    def add_rejects(self, *, run_id: int | None, rejects: Iterable[Reject]) -> None:
        at = now()
        rows = [
            {
                "run_id": run_id,
                "source": r.source,
                "table_name": r.table,
                "row": r.row,
                "column_name": r.column,
                "value": r.value,
                "reason": r.reason,
                "at": at,
            }
            for r in rejects
        ]
        _insert_many(self, None, RejectedInput, rows)

    def rejects(self, *, run_id: int | None = None) -> list[RejectedInput]:
        query = select(RejectedInput)
        if run_id is not None:
            query = query.where(col(RejectedInput.run_id) == run_id)
        with self.session() as s:
            return list(s.scalars(query))


_OUTCOME_KEY = ("run_id", "resource_type", "identifier_system", "identifier_value")


def _insert_many(
    store: Store,
    conn: Connection | None,
    model: type[PushPending] | type[ResourceOutcome] | type[RejectedInput],
    rows: list[dict[str, Any]],
) -> None:
    """Rows inserted ``CHUNK`` at a time, each chunk one ``executemany``."""
    if not rows:
        return
    with store.begin(conn) as c:
        for start in range(0, len(rows), CHUNK):
            c.execute(insert(model), rows[start : start + CHUNK])
