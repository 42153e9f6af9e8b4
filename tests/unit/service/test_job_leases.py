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
    return Settings(
        data_dir=tmp_path,
        cache_url=f"sqlite:///{tmp_path / 'c.sqlite'}",
        api_keys=[SecretStr("k" * 32)],
        job_lease_seconds=lease,
    )


def queue(cache: Cache) -> int:
    return cache.create_run(kind="push", server="s", params={"job": True}, status="pending")


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
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


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_a_live_workers_job_outlasting_its_lease_is_not_taken(
    cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(jobs, "_push", _slow_job(3.0, calls))
    run_id = queue(cache)
    claimed = cache.claim_next_run(worker="a", lease=1.0)
    assert claimed is not None
    worker = threading.Thread(
        target=asyncio.run, args=(jobs.execute(claimed, settings(tmp_path), cache),)
    )
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
    worker = threading.Thread(
        target=asyncio.run, args=(jobs.execute(claimed, settings(tmp_path), cache),)
    )
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


def _finish_then_block(seconds: float, done: list[int]) -> Any:
    """A job that records its end, then blocks (writing its outputs, say) for longer than a
    heartbeat interval: the next heartbeat finds the run no longer running."""

    async def job(run: SyncRun, params: dict[str, Any], settings: Settings, cache: Cache) -> None:
        assert run.id is not None
        cache.finish_run(run.id, status="succeeded", counts={"created": 1})
        time.sleep(seconds)
        done.append(run.id)

    return job


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_a_heartbeat_after_the_job_ended_never_cancels_the_worker_loop(
    cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done: list[int] = []
    monkeypatch.setattr(jobs, "_push", _finish_then_block(0.6, done))
    runs = [queue(cache) for _ in range(3)]
    stop = threading.Event()
    outcome: list[object] = []

    def work() -> None:
        try:
            outcome.append(
                asyncio.run(
                    jobs.run_worker(settings(tmp_path), cache, name="w", poll=0.05, stop=stop)
                )
            )
        except BaseException as exc:  # what killed the worker's loop
            outcome.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 15
    while len(done) < len(runs) and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a stray cancel would now hit the loop's sleep between polls
    stop.set()
    worker.join(timeout=5)
    assert outcome == [len(runs)]
    assert sorted(done) == runs
    assert [cache.get_run(r).status for r in runs] == ["succeeded"] * 3  # type: ignore[union-attr]


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_a_dead_job_worker_is_reported_by_health_and_restarted(
    cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    starts: list[float] = []

    async def dies(*args: Any, **kwargs: Any) -> int:
        starts.append(time.monotonic())
        raise asyncio.CancelledError  # as a stray cancel reaching the loop did

    monkeypatch.setattr(jobs, "run_worker", dies)
    queue(cache)
    with TestClient(create_app(settings(tmp_path), cache=cache)) as client:
        time.sleep(0.2)
        answer = client.get("/health")
        assert answer.status_code == 503
        body = answer.json()
        assert (body["status"], body["worker"]) == ("worker dead", "dead")
        assert body["oldest_pending_seconds"] >= 0.2
        time.sleep(2.3)
        assert len(starts) >= 2  # restarted
        assert client.get("/health").json()["worker_restarts"] >= 1
    assert "job worker died: CancelledError" in caplog.text


def test_health_is_ok_with_a_live_worker_and_reports_the_oldest_waiting_job(
    cache: Cache, tmp_path: Path
) -> None:
    with TestClient(create_app(settings(tmp_path), cache=cache)) as client:
        body = client.get("/health").json()
        assert (body["status"], body["worker"], body["worker_restarts"]) == ("ok", "alive", 0)
        assert body["oldest_pending_seconds"] is None
    queue(cache)
    time.sleep(0.3)
    with TestClient(create_app(settings(tmp_path), cache=cache, run_workers=False)) as client:
        answer = client.get("/health")
        assert answer.status_code == 200
        assert answer.json()["worker"] == "separate"
        assert answer.json()["oldest_pending_seconds"] >= 0.3


def test_the_worker_loop_outlives_an_error_outside_a_job(
    cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done: list[int] = []
    monkeypatch.setattr(jobs, "_push", _finish_then_block(0.0, done))
    run_id = queue(cache)
    real, calls = Cache.claim_next_run, []

    def flaky(self: Cache, **kwargs: Any) -> SyncRun | None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("the database went away for a moment")
        return real(self, **kwargs)

    monkeypatch.setattr(Cache, "claim_next_run", flaky)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    assert asyncio.run(jobs.run_worker(settings(tmp_path), cache, poll=0.05, stop=stop)) == 1
    assert done == [run_id]


def _mixed_job(done: list[int]) -> Any:
    """Every fourth job blocks after recording its end, past a heartbeat (the race that
    killed workers); the others wait on the 'network' briefly."""

    async def job(run: SyncRun, params: dict[str, Any], settings: Settings, cache: Cache) -> None:
        assert run.id is not None
        if run.id % 4 == 0:
            cache.finish_run(run.id, status="succeeded", counts={"created": 1})
            time.sleep(0.3)
        else:
            await asyncio.sleep(0.01)
            cache.finish_run(run.id, status="succeeded", counts={"created": 1})
        done.append(run.id)

    return job


@pytest.mark.slow
def test_two_workers_with_a_one_second_lease_finish_200_jobs(
    cache_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done: list[int] = []
    monkeypatch.setattr(jobs, "_push", _mixed_job(done))
    opened = open_cache(cache_url)
    try:
        runs = [queue(opened) for _ in range(200)]
        config = settings(tmp_path).model_copy(update={"cache_url": cache_url})
        second = jobs.Workers(config, opened, poll=0.05)
        second.start()
        with TestClient(create_app(config, cache=opened)) as client:
            deadline = time.monotonic() + 55
            while time.monotonic() < deadline:
                body = client.get("/health").json()
                if body["oldest_pending_seconds"] is None and len(done) >= len(runs):
                    break
                time.sleep(0.25)
            assert body["worker"] == "alive"
            assert body["worker_restarts"] == 0  # none died (a restart would hide a death)
        assert second.alive()
        assert second.restarts == 0
        second.close()
        statuses = [opened.get_run(r).status for r in runs]  # type: ignore[union-attr]
        assert statuses == ["succeeded"] * len(runs)
        assert sorted(done) == runs  # each ran once
    finally:
        opened.close()


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_outcomes_after_a_takeover_are_one_per_resource(cache_url: str) -> None:
    """The first worker recorded 3 of 5 resources, then went silent; the worker that took
    the job over resumes it: the 3 are unchanged now, the 2 others created. One row each,
    with the latest answer (a resource was counted twice: 23,821 rows for 18,683)."""
    from fhir_cart.cache import Outcome

    opened = open_cache(cache_url)
    try:
        run_id = queue(opened)
        keys = [("Observation", "https://x/id/c/observation", f"P1/mrd-{i}") for i in range(5)]
        assert opened.claim_next_run(worker="a", lease=1.0) is not None
        created = [Outcome(k, "created", 201) for k in keys[:3]]
        opened.record_bundle_group(server="s", run_id=run_id, sent=[], outcomes=created)
        time.sleep(1.1)
        taken = opened.claim_next_run(worker="b", lease=1.0)
        assert taken is not None
        assert taken.id == run_id
        opened.journal_push(
            run_id=run_id, groups=[], unchanged=[Outcome(k, "unchanged") for k in keys[:3]]
        )
        created = [Outcome(k, "created", 201) for k in keys[3:]]
        opened.record_bundle_group(server="s", run_id=run_id, sent=[], outcomes=created)
        rows = opened.outcomes(run_id=run_id)
        assert sorted((r.identifier_value, r.outcome) for r in rows) == [
            (k[2], "unchanged" if i < 3 else "created") for i, k in enumerate(keys)
        ]
    finally:
        opened.close()


def test_a_job_that_recorded_its_end_is_not_cancelled_as_if_taken_over(
    cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its next heartbeat fails (the run is no longer running), but the run is still this
    worker's: the job goes on to its end (writing its outputs, say), nothing is cancelled."""
    done: list[int] = []

    async def job(run: SyncRun, params: dict[str, Any], settings: Settings, cache: Cache) -> None:
        assert run.id is not None
        cache.finish_run(run.id, status="succeeded", counts={"created": 1})
        await asyncio.sleep(0.8)  # past three heartbeats of a 1 s lease
        done.append(run.id)

    monkeypatch.setattr(jobs, "_push", job)
    run_id = queue(cache)
    claimed = cache.claim_next_run(worker="a", lease=1.0)
    assert claimed is not None
    asyncio.run(jobs.execute(claimed, settings(tmp_path), cache))
    assert done == [run_id]
    assert "lease lost" not in caplog.text


def test_the_worker_command_restarts_a_loop_that_was_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fhir_cart.cli import main

    calls: list[int] = []

    async def once_cancelled(*args: Any, **kwargs: Any) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise asyncio.CancelledError
        return 0

    monkeypatch.setattr(jobs, "run_worker", once_cancelled)
    monkeypatch.setenv("FHIR_CART_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    assert main(["worker"]) == 0
    assert len(calls) == 2
    assert "restarted" in capsys.readouterr().err
