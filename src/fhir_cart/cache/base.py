"""What the cache's stores share: one engine, transactions that can be joined, bulk upserts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel

__all__ = ["CHUNK", "Key", "Store", "now"]

Key = tuple[str, str, str]
"""(resource type, identifier system, identifier value)"""
CHUNK = 400
"""Keys asked for in one ``IN`` (a placeholder each; SQLite allows 32,766 per statement),
and rows sent in one ``executemany``."""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Store:
    """A part of the cache over a shared engine. Methods that write take an optional
    ``conn``: given, they join that transaction (the caller commits); else they commit
    their own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def begin(self, conn: Connection | None = None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as own:
            yield own

    def upsert(
        self,
        conn: Connection,
        model: type[SQLModel],
        rows: Sequence[dict[str, Any]],
        keys: Sequence[str],
    ) -> None:
        """Insert ``rows``, or update those whose ``keys`` exist: one statement compiled
        once and run over many parameter sets (``executemany``), where ``.values(rows)``
        would compile a new statement with a placeholder per cell."""
        if not rows:
            return
        columns = [c for c in rows[0] if c not in keys]
        if self.dialect == "postgresql":
            pg = postgresql.insert(model)
            upsert: Insert = pg.on_conflict_do_update(
                index_elements=list(keys), set_={c: pg.excluded[c] for c in columns}
            )
        else:
            lite = sqlite.insert(model)
            upsert = lite.on_conflict_do_update(
                index_elements=list(keys), set_={c: lite.excluded[c] for c in columns}
            )
        for start in range(0, len(rows), CHUNK):
            conn.execute(upsert, list(rows[start : start + CHUNK]))
