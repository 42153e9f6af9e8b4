"""Job leases: a worker renews its lease by heartbeats; any worker takes over a job whose
lease expired; a live worker's job is never taken, and a worker that lost its job stops
and writes nothing more to it."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import update

from fhir_cart.cache import Cache, open_cache
from fhir_cart.cache.models import SyncRun
from fhir_cart.service import jobs
from fhir_cart.service.app import create_app
from fhir_cart.settings import Settings


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    opened = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    yield opened
    opened.close()


def settings(tmp_path: Path, lease: float = 1.0) -> Settings:
    return Settings(data_dir=tmp_path, cache_url=f"sqlite:///{tmp_path / 'c.sqlite'}",
                    api_keys=[SecretStr("k")], job_lease_seconds=lease)  # fmt: skip


def queue(cache: Cache) -> int:
    return cache.create_run(kind="push", server="s", params={"job": True}, status="pending")


def test_an_expired_lease_is_taken_over_and_a_live_one_is_not(cache: Cache) -> None:
    run_id = queue(cache)
    first = cache.claim_next_run(worker="a", lease=1.0)
    assert first is not None
    assert first.id == run_id
    assert cache.claim_next_run(worker="b", lease=1.0) is None  # a's lease is fresh
    time.sleep(0.6)
    assert cache.heartbeat(run_id, worker="a")
    time.sleep(0.6)
    assert cache.claim_next_run(worker="b", lease=1.0) is None  # renewed 0.6 s ago
    time.sleep(1.1)
    taken = cache.claim_next_run(worker="b", lease=1.0)  # a went silent: b takes over
    assert taken is not None
    assert (taken.id, taken.worker, taken.status) == (run_id, "b", "running")
    assert not cache.heartbeat(run_id, worker="a")


def test_a_cli_run_is_never_taken_over(cache: Cache) -> None:
    run_id = cache.create_run(kind="push", server="s", params={"patients": 1}, worker="cli")
    time.sleep(1.1)
    assert cache.claim_next_run(worker="b", lease=1.0) is None
    assert cache.get_run(run_id).status == "running"  # type: ignore[union-attr]


def _slow_job(seconds: float, calls: list[str], blocking: bool = True) -> Any:
    async def job(run: SyncRun, params: dict[str, Any], settings: Settings, cache: Cache) -> None:
        calls.append(str(run.worker))
        if blocking:
            time.sleep(seconds)  # blocks the job's loop, as reading a study file does
        else:
            try:
                await asyncio.sleep(seconds)  # waits on the network, say
            except BaseException:  # as run_push and run_pull record an interruption
                assert run.id is not None
                cache.finish_run(run.id, status="interrupted", counts={}, error="stopped")
                raise
        assert run.id is not None
        cache.finish_run(run.id, status="succeeded", counts={"created": 1})

    return job


def test_a_live_workers_job_outlasting_its_lease_is_not_taken(
    cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(jobs, "_push", _slow_job(3.0, calls))
    run_id = queue(cache)
    claimed = cache.claim_next_run(worker="a", lease=1.0)
    assert claimed is not None
    worker = threading.Thread(target=asyncio.run,
                              args=(jobs.execute(claimed, settings(tmp_path), cache),))  # fmt: skip
    worker.start()
    for _ in range(5):
        time.sleep(0.5)
        assert cache.claim_next_run(worker="b", lease=1.0) is None
    worker.join()
    run = cache.get_run(run_id)
    assert run is not None
    assert (run.status, run.worker, calls) == ("succeeded", "a", ["a"])


def test_a_worker_that_lost_its_job_stops_and_writes_nothing(
    cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(jobs, "_push", _slow_job(30.0, calls, blocking=False))
    run_id = queue(cache)
    claimed = cache.claim_next_run(worker="a", lease=1.0)
    assert claimed is not None
    started = time.monotonic()
    worker = threading.Thread(target=asyncio.run,
                              args=(jobs.execute(claimed, settings(tmp_path), cache),))  # fmt: skip
    worker.start()
    time.sleep(0.5)
    with cache.engine.begin() as conn:  # b took the job over (a was cut off for a while)
        conn.execute(update(SyncRun).where(SyncRun.id == run_id).values(worker="b"))
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert time.monotonic() - started < 5  # the job was stopped, not run to its end
    run = cache.get_run(run_id)
    assert run is not None
    assert (run.status, run.worker, run.finished_at) == ("running", "b", None)


def test_a_service_restart_leaves_a_live_workers_job_alone(cache: Cache, tmp_path: Path) -> None:
    run_id = queue(cache)
    assert cache.claim_next_run(worker="elsewhere-1", lease=600.0) is not None
    three_minutes_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)
    with cache.engine.begin() as conn:  # a 10-minute lease, renewed every 2.5 minutes
        conn.execute(
            update(SyncRun).where(SyncRun.id == run_id).values(heartbeat_at=three_minutes_ago)
        )
    with TestClient(create_app(settings(tmp_path, lease=600.0), cache=cache, run_workers=False)):
        pass
    run = cache.get_run(run_id)
    assert run is not None
    assert (run.status, run.worker) == ("running", "elsewhere-1")
