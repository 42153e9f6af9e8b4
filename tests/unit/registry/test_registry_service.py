"""A registry build queued through the HTTP API (``POST /jobs/registry``) and run by a
worker: the real build, on the fixture registry the service holds in its data folder."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.service.app import create_app
from fhir_cart.service.jobs import run_worker
from fhir_cart.settings import ServerSettings, Settings
from tests.support import FIXTURES

KEY = {"X-API-Key": "k-123-0123456789abcdef0123456789ab"}


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        api_keys=[SecretStr("k-123-0123456789abcdef0123456789ab")],
        registry_key=SecretStr("r" * 64),
        servers={"registry": ServerSettings(base_url="http://127.0.0.1:9/fhir")},
    )


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_a_registry_build_queued_over_http_is_run_by_a_worker(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    shutil.copytree(FIXTURES / "registry", settings.data_dir / "registries")
    application = create_app(settings, run_workers=False)
    with TestClient(application) as client:
        queued = client.post("/jobs/registry", headers=KEY, json={"registry": "registry"})
        assert queued.status_code == 202, queued.text
        job = queued.json()
        assert (job["kind"], job["status"]) == ("registry", "pending")
        cache = client.app.state.cache  # type: ignore[attr-defined]
        assert asyncio.run(run_worker(settings, cache, until_empty=True)) == 1
        done = client.get(f"/jobs/{job['id']}", headers=KEY).json()
        assert done["status"] == "succeeded", done
        assert done["counts"]["patients"] > 0
        assert done["counts"]["links"] >= 2  # the fixture's children shared between centres
        assert done["progress_done"] == done["progress_total"] > 0
    out = settings.data_dir / "jobs" / str(job["id"])
    assert (out / "summaries.json").is_file()
    assert any((out / "tables").rglob("*.parquet"))


def test_a_registry_job_names_a_registry_and_a_server_the_service_holds(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    shutil.copytree(FIXTURES / "registry", settings.data_dir / "registries")
    with TestClient(create_app(settings, run_workers=False)) as client:
        for body, status in [
            ({"registry": "nothing-here"}, 404),
            ({"registry": "../registries/registry"}, 422),  # a name, never a path
            ({"registry": "registry", "server": "http://127.0.0.1:9/fhir"}, 422),
            ({"registry": "registry", "server": "elsewhere"}, 422),
            ({"registry": "registry", "out": "/tmp"}, 422),
        ]:
            answer = client.post("/jobs/registry", headers=KEY, json=body)
            assert answer.status_code == status, (body, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
        assert client.get("/jobs", headers=KEY).json() == []  # nothing was queued
        queued = client.post(
            "/jobs/registry", headers=KEY, json={"registry": "registry", "server": "registry"}
        )
        assert queued.status_code == 202
        assert queued.json()["kind"] == "registry"
