"""A new SQLite cache gets the schema the migrations make from a template migrated once per
process (alembic's import and run cost about 70 ms of CPU each time, in every test's fresh
cache); a database with any table still goes through alembic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import alembic.command
import pytest

import fhir_cart.cache.store as store
from fhir_cart.cache import open_cache


def _schema(path: Path) -> list[tuple[str, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")
        schema = [tuple(row) for row in rows]
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return [*schema, *(("version", v) for (v,) in version)]


def test_a_new_sqlite_cache_has_exactly_the_schema_alembic_makes(tmp_path: Path) -> None:
    made = tmp_path / "template.sqlite"
    open_cache(f"sqlite:///{made}").close()
    migrated = tmp_path / "alembic.sqlite"
    cache = open_cache(f"sqlite:///{migrated}", migrate=False)
    cache._upgrade()  # what migrate did before the template
    cache.close()
    assert _schema(made) == _schema(migrated)
    assert ("version", store.SCHEMA_HEAD) in _schema(made)
    assert len(_schema(made)) >= 10  # tables and indexes: never vacuous


def test_a_new_sqlite_cache_does_not_run_alembic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store._sqlite_schema()  # the process's one alembic run, before alembic is refused

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("alembic ran for a new SQLite cache")

    monkeypatch.setattr(alembic.command, "upgrade", refuse)
    cache = open_cache(f"sqlite:///{tmp_path / 'new.sqlite'}")
    try:
        assert cache.schema_is_current()
        assert cache.list_runs() == []
    finally:
        cache.close()


def test_a_database_with_a_table_goes_through_alembic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "used.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE someone_elses (x INTEGER)")
    ran: list[str] = []
    upgrade = alembic.command.upgrade

    def recorded(config: object, revision: str) -> None:
        ran.append(revision)
        upgrade(config, revision)  # type: ignore[arg-type]

    monkeypatch.setattr(alembic.command, "upgrade", recorded)
    open_cache(f"sqlite:///{path}").close()
    assert ran == ["head"]
    names = {row[1] for row in _schema(path) if row[0] == "table"}
    assert {"someone_elses", "sync_run"} <= names
