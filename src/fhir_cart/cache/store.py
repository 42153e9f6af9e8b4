"""The local SQL cache: SQLite file by default, PostgreSQL by URL.

It remembers study records, every resource sent and received (server id, version, ETag,
content hash), each sync run with its outcome and per-resource results, the journal of
bundles in flight, and rejected inputs. Patient identifiers are stored, never logged.

``Cache`` is the entry point: its parts are ``records`` (study records, resources sent and
received, change detection; cache/records.py), ``runs`` (runs, outcomes, the journal, the
job queue; cache/runs.py) and ``locks`` (named locks; cache/locks.py), all over one engine.
The methods other modules call are also on ``Cache`` itself, bound to the part that has
them. ``await cache.call(fn, ...)`` runs database work on the cache's own thread, off the
event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, create_engine

from fhir_cart.cache.base import Key
from fhir_cart.cache.locks import LockStore
from fhir_cart.cache.records import RecordStore, SentEntry
from fhir_cart.cache.runs import JOB_MARK, Outcome, RunStore, run_owner, worker_name
from fhir_cart.private import private_dir, touch_private

SCHEMA_HEAD = "0002"
"""Revision of the newest migration in migrations/versions (a test checks it is alembic's
head, so a new migration cannot be skipped by :meth:`Cache.migrate`)."""
__all__ = [
    "JOB_MARK",
    "Cache",
    "Key",
    "Outcome",
    "SentEntry",
    "normalise_url",
    "open_cache",
    "run_owner",
    "worker_name",
]

P = ParamSpec("P")
T = TypeVar("T")


def normalise_url(url: str | None, data_dir: Path = Path("fhir-cart-data")) -> str:
    if not url:
        touch_private(private_dir(data_dir) / "cache.sqlite")
        return f"sqlite:///{data_dir / 'cache.sqlite'}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        database = Path(url[len("sqlite:///") :].split("?", 1)[0])
        if str(database) not in ("", ":memory:"):
            touch_private(private_dir(database.parent) / database.name)
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL keeps the database consistent through a crash of the process or
    # the machine; only the last commits before a power cut may be lost, which a cache
    # survives (what it forgot is sent again, and conditional updates find it on the server).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _records(
    method: Callable[Concatenate[RecordStore, P], T],
) -> Callable[Concatenate[Cache, P], T]:
    @functools.wraps(method)
    def delegate(self: Cache, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return method(self.records, *args, **kwargs)

    return delegate


def _runs(method: Callable[Concatenate[RunStore, P], T]) -> Callable[Concatenate[Cache, P], T]:
    @functools.wraps(method)
    def delegate(self: Cache, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return method(self.runs, *args, **kwargs)

    return delegate


def _locks(method: Callable[Concatenate[LockStore, P], T]) -> Callable[Concatenate[Cache, P], T]:
    @functools.wraps(method)
    def delegate(self: Cache, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return method(self.locks, *args, **kwargs)

    return delegate


class Cache:
    """The cache's parts over one engine. ``close()`` disposes of the pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.records = RecordStore(engine)
        self.runs = RunStore(engine)
        self.locks = LockStore(engine)
        self._thread: ThreadPoolExecutor | None = None
        self._thread_pid = os.getpid()

    # The names other modules call, each delegating to the part that has it (methods of
    # the class, so they can be replaced on it, as tests do).
    upsert_study_records = _records(RecordStore.upsert_study_records)
    study_records = _records(RecordStore.study_records)
    changed = _records(RecordStore.changed)
    sent_versions = _records(RecordStore.sent_versions)
    server_ids = _records(RecordStore.server_ids)
    sent = _records(RecordStore.sent)
    sent_ids = _records(RecordStore.sent_ids)
    sent_content = _records(RecordStore.sent_content)
    forget_sent = _records(RecordStore.forget_sent)
    record_sent = _records(RecordStore.record_sent)
    count_resources = _records(RecordStore.count_resources)
    list_resources = _records(RecordStore.list_resources)
    record_received = _records(RecordStore.record_received)
    mark_mapped = _records(RecordStore.mark_mapped)
    forget_received = _records(RecordStore.forget_received)
    received = _records(RecordStore.received)
    unmapped = _records(RecordStore.unmapped)
    create_run = _runs(RunStore.create_run)
    get_run = _runs(RunStore.get_run)
    list_runs = _runs(RunStore.list_runs)
    update_run = _runs(RunStore.update_run)
    heartbeat = _runs(RunStore.heartbeat)
    finished_by = _runs(RunStore.finished_by)
    finish_run = _runs(RunStore.finish_run)
    claim_next_run = _runs(RunStore.claim_next_run)
    mark_dead_workers = _runs(RunStore.mark_dead_workers)
    oldest_pending = _runs(RunStore.oldest_pending)
    mark_interrupted = _runs(RunStore.mark_interrupted)
    begin_pending = _runs(RunStore.begin_pending)
    clear_pending = _runs(RunStore.clear_pending)
    clear_stale_pending = _runs(RunStore.clear_stale_pending)
    pending = _runs(RunStore.pending)
    add_outcomes = _runs(RunStore.add_outcomes)
    outcomes = _runs(RunStore.outcomes)
    add_rejects = _runs(RunStore.add_rejects)
    rejects = _runs(RunStore.rejects)
    try_lock = _locks(LockStore.try_lock)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        self.engine.dispose()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest migration; a cache already there is not handed to
        alembic (its import and run cost about 0.2 s of every command's start), nor is a
        new SQLite cache (see :meth:`_new_sqlite_from_template`)."""
        if self.schema_is_current():
            return
        if self.dialect == "sqlite" and self._new_sqlite_from_template():
            return
        self._upgrade()

    def _new_sqlite_from_template(self) -> bool:
        """A SQLite cache with no table yet gets, in one transaction, the schema the
        migrations made in an in-memory database once per process (:func:`_sqlite_schema`:
        the same statements, the same ``alembic_version``), instead of running alembic
        again (about 70 ms of CPU each time, in every test's fresh cache). False, and
        nothing done, if the database has any table: alembic then upgrades it."""
        statements = _sqlite_schema()
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("BEGIN IMMEDIATE")  # two processes opening one new file: one wins
            try:
                if cursor.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raw.rollback()
                    return False
                for statement in statements:
                    cursor.execute(statement)
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
        finally:
            raw.close()
        return True

    def _upgrade(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def schema_is_current(self) -> bool:
        """Whether the cache records exactly the newest migration (:data:`SCHEMA_HEAD`)."""
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(text("SELECT version_num FROM alembic_version"))
                return [row[0] for row in rows] == [SCHEMA_HEAD]
        except SQLAlchemyError:  # no version table yet: a new cache
            return False

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on the cache's one thread (so concurrent sends go on
        while the database works, and writes reach it in the order they were asked for),
        with the caller's context variables (``run_owner``). In-memory SQLite has one
        database per thread: there it runs here."""
        if self.dialect == "sqlite" and self.engine.url.database in (None, "", ":memory:"):
            return fn(*args, **kwargs)
        if self._thread is None or self._thread_pid != os.getpid():  # none yet, or forked
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fhir-cart-cache")
            self._thread_pid = os.getpid()
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    def record_bundle_group(
        self,
        *,
        server: str,
        run_id: int,
        sent: Sequence[SentEntry],
        outcomes: Sequence[Outcome],
        done_bundle: int | None = None,
        progress: tuple[int, int] | None = None,
    ) -> None:
        """What the server answered for a group of bundles, in one transaction: the
        resources it acknowledged, every outcome, and (``done_bundle``) the group's journal
        cleared and (``progress``: done, total) the run's progress. A crash leaves all of
        it or none: a group not recorded is sent again by the next run."""
        with self.engine.begin() as conn:
            self.records.record_sent(server=server, entries=sent, conn=conn)
            self.runs.add_outcomes(run_id=run_id, outcomes=outcomes, conn=conn)
            if done_bundle is not None:
                self.runs.clear_pending(run_id=run_id, bundle_no=done_bundle, conn=conn)
            if progress is not None:
                done, total = progress
                self.runs.update_run(run_id, conn, progress_done=done, progress_total=total)

    def record_retracted(self, *, server: str, run_id: int, outcomes: Sequence[Outcome]) -> None:
        """Records withdrawn from the server: their outcomes, and (unless that failed) the
        cache forgets them as sent, in one transaction."""
        with self.engine.begin() as conn:
            self.runs.add_outcomes(run_id=run_id, outcomes=outcomes, conn=conn)
            gone = [o.key for o in outcomes if o.outcome != "failed"]
            self.records.forget_sent(server=server, keys=gone, conn=conn)

    def journal_push(
        self,
        *,
        run_id: int,
        unchanged: Sequence[Outcome],
        groups: Sequence[tuple[int, Sequence[tuple[Key, str]]]],
    ) -> None:
        """Before a push sends anything, in one transaction: the outcomes of the resources
        it leaves alone (``unchanged``), and every bundle group it will send journaled as
        pending ((bundle number, (key, hash) of each resource))."""
        with self.engine.begin() as conn:
            self.runs.add_outcomes(run_id=run_id, outcomes=unchanged, conn=conn)
            for number, items in groups:
                self.runs.begin_pending(run_id=run_id, bundle_no=number, items=items, conn=conn)


@functools.cache
def _sqlite_schema() -> tuple[str, ...]:
    """The statements that make a new SQLite cache what the migrations make it: alembic run
    once per process on an in-memory database, dumped (tables, indexes, the
    ``alembic_version`` row) without the dump's own transaction."""
    engine = create_engine("sqlite://")  # one in-memory database (a pool of one connection)
    event.listen(engine, "connect", _sqlite_pragmas)
    try:
        Cache(engine)._upgrade()
        raw = engine.raw_connection()
        try:
            dump = list(raw.driver_connection.iterdump())  # type: ignore[union-attr]
        finally:
            raw.close()
    finally:
        engine.dispose()
    return tuple(line for line in dump if line not in ("BEGIN TRANSACTION;", "COMMIT;"))


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
