"""Named locks shared by every process using one cache.

PostgreSQL: a session advisory lock on a connection held until release. SQLite file:
``flock`` on a file beside the database, removed by its holder on release (so none are left
behind; a process killed while holding one leaves its file, which the next holder takes
over and removes). In-memory SQLite (one process): always free."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from fhir_cart.cache.base import Store

__all__ = ["LockStore", "Release"]

Release = Callable[[], None]


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
