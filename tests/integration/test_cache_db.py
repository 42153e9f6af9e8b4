"""The SQL cache on SQLite and PostgreSQL: migrations, change detection, journal, queue."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from fhir_cart.cache import Cache, Outcome, SentEntry, open_cache
from fhir_cart.errors import Reject

pytestmark = pytest.mark.integration
KEY = ("Observation", "https://x/id/c/observation", "P1/mrd-1")


def test_migrations_create_exactly_the_models(cache_url: str) -> None:
    cache = open_cache(cache_url)
    with cache.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    cache.close()
    assert diff == []


def test_migrate_twice_is_harmless(cache_url: str) -> None:
    open_cache(cache_url).close()
    cache = open_cache(cache_url)
    assert cache.list_runs() == []
    cache.close()


def test_schema_head_is_alembic_head_and_a_current_cache_skips_alembic(
    cache_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cache.migrate skips alembic when the cache records SCHEMA_HEAD: that constant must be
    the newest migration, or a new migration would never run on existing caches."""
    from pathlib import Path as _Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import fhir_cart.cache.store as store

    config = Config()
    folder = _Path(store.__file__).parent / "migrations"
    config.set_main_option("script_location", str(folder))
    assert ScriptDirectory.from_config(config).get_heads() == [store.SCHEMA_HEAD]
    cache = open_cache(cache_url)
    try:
        assert cache.schema_is_current()
        import alembic.command

        def refuse(*_: object, **__: object) -> None:
            raise AssertionError("alembic ran on a current cache")

        monkeypatch.setattr(alembic.command, "upgrade", refuse)
        cache.migrate()  # current: alembic is not run
        monkeypatch.setattr(store, "SCHEMA_HEAD", "9999")
        assert not cache.schema_is_current()
        with pytest.raises(AssertionError, match="alembic ran"):
            cache.migrate()  # behind the code's head: alembic runs
    finally:
        cache.close()


def _sent(digest: str) -> SentEntry:
    return SentEntry(KEY, "42", "1", 'W/"1"', None, digest, b"{}")


def test_only_changed_content_is_sent_again(cache_url: str) -> None:
    cache = open_cache(cache_url)
    other = ("Patient", "https://x/id/c/patient", "P1")
    assert cache.changed(server="s", items=[(KEY, "h1"), (other, "p1")]) == {KEY, other}
    cache.record_sent(server="s", entries=[_sent("h1")])
    cache.record_sent(server="s", entries=[_sent("h1")])  # idempotent upsert
    assert cache.changed(server="s", items=[(KEY, "h1"), (other, "p1")]) == {other}
    assert cache.changed(server="s", items=[(KEY, "h2")]) == {KEY}
    assert cache.changed(server="elsewhere", items=[(KEY, "h1")]) == {KEY}
    assert cache.server_ids(server="s", keys=[KEY]) == {KEY: "42"}
    assert cache.count_resources(server="s", direction="sent") == {"Observation": 1}
    many = [(("Observation", "sys", f"v{i}"), "h") for i in range(1200)]  # chunked lookups
    assert len(cache.changed(server="s", items=many)) == 1200
    cache.close()


def test_journal_outcomes_and_rejects(cache_url: str) -> None:
    cache = open_cache(cache_url)
    run = cache.create_run(kind="push", server="s", params={})
    cache.begin_pending(run_id=run, bundle_no=1, items=[(KEY, "h1")])
    assert [p.identifier_value for p in cache.pending(run_id=run)] == ["P1/mrd-1"]
    cache.clear_pending(run_id=run, bundle_no=1)
    assert cache.pending(run_id=run) == []
    cache.add_outcomes(run_id=run, outcomes=[Outcome(KEY, "failed", 422, "bad code")])
    (outcome,) = cache.outcomes(run_id=run)
    assert (outcome.outcome, outcome.status_code, outcome.reason) == ("failed", 422, "bad code")
    cache.add_rejects(
        run_id=run, rejects=[Reject("f.csv", 3, "dob", "x", "not a date", "patients")]
    )
    (reject,) = cache.rejects(run_id=run)
    assert (reject.source, reject.row, reject.column_name) == ("f.csv", 3, "dob")
    cache.finish_run(run, status="failed", counts={"failed": 1}, error="1 failed")
    finished = cache.get_run(run)
    assert finished is not None
    assert finished.status == "failed"
    cache.close()


def test_two_claimers_never_take_the_same_run(cache_url: str) -> None:
    cache = open_cache(cache_url)
    ids = {
        cache.create_run(kind="pull", server="s", params={}, status="pending") for _ in range(30)
    }
    claimed: dict[str, list[int]] = {"a": [], "b": []}

    def claim(name: str) -> None:
        mine = open_cache(cache_url, migrate=False)
        while (run := mine.claim_next_run(worker=name)) is not None:
            assert run.id is not None
            claimed[name].append(run.id)
        mine.close()

    threads = [threading.Thread(target=claim, args=(n,)) for n in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = claimed["a"] + claimed["b"]
    assert sorted(taken) == sorted(ids)  # every run once, none twice
    cache.close()


def test_a_named_lock_has_one_holder_across_connections(cache_url: str) -> None:
    first, second = open_cache(cache_url), open_cache(cache_url)
    try:
        release = first.try_lock("push http://a centre-1")
        assert release is not None
        assert second.try_lock("push http://a centre-1") is None  # held elsewhere
        other = second.try_lock("push http://a centre-2")  # another name is free
        assert other is not None
        other()
        release()
        again = second.try_lock("push http://a centre-1")  # free once released
        assert again is not None
        again()
    finally:
        first.close()
        second.close()


def test_no_lock_files_are_left_beside_a_sqlite_cache(tmp_path: Path) -> None:
    cache = open_cache(f"sqlite:///{tmp_path / 'cache.sqlite'}")
    try:
        release = cache.try_lock("push http://a centre-1")
        assert release is not None
        assert len(list(tmp_path.glob("cache.sqlite.lock-*"))) == 1  # held: its file is there
        release()
        assert list(tmp_path.glob("cache.sqlite.lock-*")) == []
        # a holder killed (SIGKILL) leaves its file, unlocked: the next holder takes it over
        # and removes it when it lets go
        _lock_file_of(cache, "push http://a centre-2").touch()
        again = cache.try_lock("push http://a centre-2")
        assert again is not None
        again()
        assert list(tmp_path.glob("cache.sqlite.lock-*")) == []
    finally:
        cache.close()


def _lock_file_of(cache: Cache, name: str) -> Path:
    """Where the lock ``name`` of a SQLite cache lives (as ``LockStore.try_lock`` names it)."""
    import hashlib

    path = cache.locks.lock_path(hashlib.sha256(name.encode()).digest()[:8].hex())
    assert path is not None
    return path


def test_a_cache_with_outcomes_counted_twice_keeps_the_latest_of_each(cache_url: str) -> None:
    """Migration 0002 on a cache written before it: duplicate outcome rows of a (run,
    resource) are reduced to the latest, then the unique constraint holds."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, insert, text

    import fhir_cart.cache.store as store
    from fhir_cart.cache.models import ResourceOutcome, SyncRun
    from fhir_cart.cache.store import normalise_url

    engine = create_engine(normalise_url(cache_url))
    config = Config()
    config.set_main_option("script_location", str(Path(store.__file__).parent / "migrations"))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    import datetime as dt

    at = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(SyncRun).values(
                id=1,
                kind="push",
                server="s",
                status="succeeded",
                params="{}",
                counts="{}",
                created_at=at,
            )
        )
        for outcome in ("created", "unchanged", "updated"):
            conn.execute(
                insert(ResourceOutcome).values(
                    run_id=1,
                    resource_type=KEY[0],
                    identifier_system=KEY[1],
                    identifier_value=KEY[2],
                    outcome=outcome,
                    at=at,
                )
            )
    engine.dispose()
    cache = open_cache(cache_url)
    try:
        assert [r.outcome for r in cache.outcomes(run_id=1)] == ["updated"]
        with cache.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002"
    finally:
        cache.close()
