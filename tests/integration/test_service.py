"""The web service through its HTTP API, with a real cache and the real local FHIR server."""

from __future__ import annotations

import io
import multiprocessing
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.cache import open_cache
from fhir_cart.library.studies import load_study
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.to_fhir import case_to_fhir
from fhir_cart.records import Case
from fhir_cart.service.app import create_app
from fhir_cart.settings import ServerSettings, Settings
from tests.support import FIXTURES, ROOT, SEED_FILE

pytestmark = pytest.mark.integration
KEY = {"X-API-Key": "test-key-123-0123456789abcdef0123"}


def make_settings(tmp_path: Path, cache_url: str, fhir_url: str | None = None) -> Settings:
    servers = {"local": ServerSettings(base_url=fhir_url)} if fhir_url else {}
    return Settings(
        data_dir=tmp_path / "data",
        cache_url=cache_url,
        servers=servers,
        api_keys=[SecretStr("test-key-123-0123456789abcdef0123")],
        max_upload_bytes=200_000,
    )


@pytest.fixture
def client(tmp_path: Path, cache_url: str, fhir_server: str) -> Iterator[TestClient]:
    app = create_app(make_settings(tmp_path, cache_url, fhir_server))
    with TestClient(app) as test_client:
        yield test_client


def upload(client: TestClient, path: Path, mapping: str | None = "seed") -> Any:
    data = {"mapping": mapping} if mapping else {}
    with path.open("rb") as handle:
        return client.post("/uploads", headers=KEY, files={"file": (path.name, handle)}, data=data)


def wait(client: TestClient, job_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=KEY).json()
        if job["status"] in ("succeeded", "failed", "interrupted"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def seed_resource_count(ctx: MappingContext, cases: list[Case]) -> int:
    """How many resources the seed cohort maps to (what one push must create)."""
    return sum(len(case_to_fhir(ctx, case)) for case in cases)


def test_push_and_pull_jobs_end_to_end(
    client: TestClient, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    total = seed_resource_count(ctx, seed_cases)
    report = upload(client, SEED_FILE)
    assert report.status_code == 201
    body = report.json()
    assert (body["patients"], body["rejects"]) == (7, [])
    preview = client.get(f"/uploads/{body['upload_id']}/preview", headers=KEY).json()
    assert preview["bundles"][0]["type"] == "transaction"
    assert preview["unverified_codes"] == []  # every code the seed needs is verified
    job = client.post(
        "/jobs/push", headers=KEY, json={"upload_id": body["upload_id"], "server": "local"}
    ).json()
    done = wait(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["counts"].get("created", 0) + done["counts"].get("updated", 0) == total
    outcomes = client.get(f"/jobs/{job['id']}/outcomes", headers=KEY).json()
    assert len(outcomes) == total
    # a PUT to a new id is 201 on sekmet, 200 on Medplum (http://hl7.org/fhir/R4/http.html#update)
    assert {o["outcome"] for o in outcomes} <= {"created", "updated"}
    again = client.post(
        "/jobs/push", headers=KEY, json={"upload_id": body["upload_id"], "server": "local"}
    ).json()
    assert wait(client, again["id"])["counts"] == {"unchanged": total}
    pull = client.post(
        "/jobs/pull",
        headers=KEY,
        json={
            "server": "local",
            "selection": "search",
            "query": "identifier=https://fhir-cart.dev/fhir/id/seed/patient|",
            "study": "seed",
        },
    ).json()
    pulled = wait(client, pull["id"])
    assert pulled["status"] == "succeeded"
    # the job records where every fetched resource ended, per type
    by_type = pulled["by_type"]
    assert by_type["Patient"]["patients"] == by_type["Patient"]["fetched"] == 7
    assert sum(c["events"] for c in by_type.values()) > 7
    for rtype, count in by_type.items():
        places = sum(count[p] for p in ("patients", "events", "used", "other", "excluded"))
        assert (count["fetched"], count["unaccounted"], count["twice"]) == (places, 0, 0), rtype
    summary = client.get(f"/jobs/{pull['id']}/summary", headers=KEY).json()
    expected = load_study("seed").expected
    assert len(expected) >= 15
    assert {k: summary[k] for k in expected} == expected
    exported = client.get(f"/jobs/{pull['id']}/export", params={"format": "csv"}, headers=KEY)
    names = zipfile.ZipFile(io.BytesIO(exported.content)).namelist()
    assert "patients.csv" in names
    assert {"unmapped.csv", "patients.csv", "events.csv"} <= set(names)
    patients = client.get("/cache/patients", headers=KEY).json()
    assert len(patients) == 7
    sent = client.get("/cache/resources", params={"direction": "sent"}, headers=KEY).json()
    assert all(r["server_id"] and r["version_id"] for r in sent)
    resumed = client.post(f"/jobs/{job['id']}/resume", headers=KEY)
    assert resumed.status_code == 409
    assert resumed.headers["content-type"] == "application/problem+json"


def test_auth_limits_and_problem_documents(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 401
    assert client.get("/ready", headers={"X-API-Key": "wrong"}).status_code == 403
    bearer = {"Authorization": f"Bearer {KEY['X-API-Key']}"}
    assert client.get("/ready", headers=bearer).status_code == 200
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * 300_000)
    too_big = upload(client, big, None)
    assert too_big.status_code == 413
    assert too_big.json()["status"] == 413
    assert too_big.headers["content-type"] == "application/problem+json"
    # file names that traverse: tests/unit/service/test_service_security.py, derived from the app
    assert (
        client.post(
            "/jobs/push", headers=KEY, json={"upload_id": "0" * 32, "server": "elsewhere"}
        ).status_code
        == 422
    )
    unknown = client.post("/jobs/pull", headers=KEY, json={"server": "local", "selection": "group"})
    assert unknown.status_code == 422
    assert "needs its value" in unknown.json()["detail"]


def test_bad_rows_in_an_upload_are_reported(client: TestClient) -> None:
    path = FIXTURES / "bad" / "tables" / "mrd.csv"
    report = upload(client, path, None)
    assert report.status_code == 422
    assert "mapping" in report.json()["detail"]


def test_openapi_document_is_in_step_with_the_app() -> None:
    published = orjson.loads((ROOT / "api" / "openapi.json").read_bytes())
    assert create_app(run_workers=False).openapi() == published, (
        "api/openapi.json is stale: run `fhir-cart openapi`"
    )


def _worker(cache_url: str, data_dir: str, fhir_url: str, name: str) -> None:
    import asyncio

    from fhir_cart.service.jobs import run_worker

    settings = make_settings(Path(data_dir), cache_url, fhir_url)
    cache = open_cache(cache_url)
    asyncio.run(run_worker(settings, cache, name=name, until_empty=True))
    cache.close()


@pytest.mark.postgres
def test_two_workers_share_the_queue_without_running_a_job_twice(
    postgres_url: str,
    fhir_server: str,
    tmp_path: Path,
    ctx: MappingContext,
    seed_cases: list[Case],
) -> None:
    total = seed_resource_count(ctx, seed_cases)
    settings = make_settings(tmp_path, postgres_url, fhir_server)
    cache = open_cache(postgres_url)
    seed_mapping = (ROOT / "mappings" / "centres" / "seed.yaml").read_text()
    ids = []
    for n in range(6):  # six cohorts (one per centre id) so each job has its own resources
        mapping = tmp_path / f"centre{n}.yaml"
        mapping.write_text(seed_mapping.replace("centre: seed", f"centre: centre-{n}"))
        params = {"study_file": str(SEED_FILE), "mapping_file": str(mapping), "server": "local"}
        ids.append(
            cache.create_run(kind="push", server=fhir_server, params=params, status="pending")
        )
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(
            target=_worker, args=(postgres_url, str(settings.data_dir), fhir_server, f"w{i}")
        )
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=180)
        assert proc.exitcode == 0
    runs = [cache.get_run(i) for i in ids]
    assert all(r is not None and r.status == "succeeded" for r in runs), [
        (r.status, r.error) for r in runs if r
    ]
    for run in runs:
        assert run is not None
        assert run.id is not None
        assert len(cache.outcomes(run_id=run.id, limit=5000)) == total  # ran once, not twice
        counts = orjson.loads(run.counts)
        assert counts.get("created", 0) + counts.get("updated", 0) == total
        assert counts["unchanged"] == 0
        assert run.worker in ("w0", "w1")
    cache.close()
