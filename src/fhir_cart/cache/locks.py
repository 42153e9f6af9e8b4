"""Named locks shared by every process using one cache.

PostgreSQL: a session advisory lock on a connection held until release. SQLite file:
``flock`` on a file beside the database, removed by its holder on release (so none are left
behind; a process killed while holding one leaves its file, which the next holder takes
over and removes). In-memory SQLite (one process): always free. :func:`exclusive` holds
several at once, waiting without blocking the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import text

from fhir_cart.cache.base import Store

__all__ = ["LockStore", "Lockable", "Release", "exclusive"]

log = logging.getLogger(__name__)

Release = Callable[[], None]


class Lockable(Protocol):
    """What holds named locks: a :class:`LockStore`, or the cache that delegates to one."""

    def try_lock(self, name: str) -> Release | None: ...


class LockStore(Store):
    def try_lock(self, name: str) -> Release | None:
        """Take the lock ``name`` without waiting: its release function, or None if another
        holder (this or another process) has it."""
        digest = hashlib.sha256(name.encode()).digest()
        if self.dialect == "postgresql":
            return self._try_advisory_lock(int.from_bytes(digest[:8], "big", signed=True))
        path = self.lock_path(digest[:8].hex())
        if path is None:
            return lambda: None
        return _try_file_lock(path)

    def lock_path(self, suffix: str) -> Path | None:
        """The lock file of a SQLite database file (None for PostgreSQL or in memory)."""
        database = self.engine.url.database
        if self.dialect != "sqlite" or not database or database == ":memory:":
            return None
        return Path(f"{database}.lock-{suffix}")

    def _try_advisory_lock(self, key: int) -> Release | None:
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


def _try_file_lock(path: Path) -> Release | None:
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
        current: int | None = os.stat(path).st_ino
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


_LOCK_POLL_S = 0.25


@asynccontextmanager
async def exclusive(cache: Lockable, names: Iterable[str], *, waiting: str) -> AsyncIterator[None]:
    """Hold every lock in ``names`` across all processes sharing ``cache``.

    All are taken at once or none (released and retried after a pause), so two holders
    never deadlock, and a wait that is cancelled leaves nothing held. ``waiting`` is logged
    (once) when another holder makes this one wait."""
    wanted = sorted(set(names))
    said = False
    while True:
        held = _take_all(cache, wanted)
        if held is not None:
            break
        if not said:
            log.info(waiting)
            said = True
        await asyncio.sleep(_LOCK_POLL_S)
    try:
        yield
    finally:
        for release in reversed(held):
            release()


def _take_all(cache: Lockable, names: Sequence[str]) -> list[Release] | None:
    """Every lock in ``names`` (their release functions), or none held and None."""
    held: list[Release] = []
    try:
        for name in names:
            release = cache.try_lock(name)
            if release is None:
                break
            held.append(release)
        else:
            return held
    except BaseException:
        for release in reversed(held):
            release()
        raise
    for release in reversed(held):
        release()
    return None
