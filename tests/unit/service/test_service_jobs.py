"""Service jobs that need no FHIR server to show their rules."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.service.app import create_app
from fhir_cart.settings import ServerSettings, Settings
from tests.support import CENTRE_B_FILE

KEY = {"X-API-Key": "k-123-0123456789abcdef0123456789ab"}


def _nowhere() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/fhir"


def _wait(client: TestClient, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=KEY).json()
        if job["status"] in ("succeeded", "failed", "interrupted"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_a_file_with_rejects_is_not_pushed_in_part_unless_asked(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        api_keys=[SecretStr("k-123-0123456789abcdef0123456789ab")],
        servers={"h": ServerSettings(base_url=_nowhere(), max_retries=0)},
    )
    bad = tmp_path / "bad.csv"
    text = CENTRE_B_FILE.read_text(encoding="utf-8")
    bad.write_text(text.replace("B-101,w,03.04.2012", "B-101,w,99.99.2012"), encoding="utf-8")
    with TestClient(create_app(settings)) as client:
        with bad.open("rb") as handle:
            upload = client.post(
                "/uploads",
                headers=KEY,
                data={"mapping": "centre_b"},
                files={"file": ("bad.csv", handle)},
            ).json()
        assert upload["rejects"], upload
        body = {"upload_id": upload["upload_id"], "server": "h"}
        refused = _wait(client, client.post("/jobs/push", headers=KEY, json=body).json()["id"])
        assert refused["status"] == "failed"
        assert "rejected" in refused["error"]
        assert "nothing was sent" in refused["error"]
        body["continue_on_error"] = True
        tried = _wait(client, client.post("/jobs/push", headers=KEY, json=body).json()["id"])
        assert "rejected" not in (tried["error"] or "")  # it went on, to a server that is not there


def test_an_upload_lists_and_stores_at_most_max_rejects_reported(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        api_keys=[SecretStr("k-123-0123456789abcdef0123456789ab")],
        max_rejects_reported=3,
    )
    header, row = CENTRE_B_FILE.read_text(encoding="utf-8").splitlines()[:2]
    bad_rows = [row.replace("B-101,w,03.04.2012", f"B-9{i:02d},w,99.99.2012") for i in range(40)]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([header, *bad_rows]) + "\n", encoding="utf-8")
    with TestClient(create_app(settings, run_workers=False)) as client:
        with bad.open("rb") as handle:
            answer = client.post(
                "/uploads",
                headers=KEY,
                data={"mapping": "centre_b"},
                files={"file": ("bad.csv", handle)},
            )
        report = answer.json()
        assert answer.status_code == 201, report
        assert len(report["rejects"]) == 3
        assert report["rejects_total"] >= 40
        assert len(client.app.state.cache.rejects()) == 3  # type: ignore[attr-defined]


def test_a_jobs_failures_are_grouped_by_cause_with_a_hint(tmp_path: Path) -> None:
    from fhir_cart.cache import Outcome

    settings = Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        api_keys=[SecretStr("k-123-0123456789abcdef0123456789ab")],
    )
    too_many = "Transaction requires strict isolation but has too many entries"
    with TestClient(create_app(settings, run_workers=False)) as client:
        cache = client.app.state.cache  # type: ignore[attr-defined]
        run_id = cache.create_run(kind="push", server="http://h", params={}, status="failed")
        outcomes = [
            *(Outcome(("Observation", "s", f"o{i}"), "failed", 400, too_many) for i in range(3)),
            Outcome(("Patient", "s", "p1"), "failed", 400, too_many),
            Outcome(("Procedure", "s", "x1"), "failed", 503, "Service Unavailable"),
            Outcome(("Patient", "s", "p2"), "created", 201),
        ]
        cache.add_outcomes(run_id=run_id, outcomes=outcomes)
        answer = client.get(f"/jobs/{run_id}/failures", headers=KEY)
        assert answer.status_code == 200, answer.text
        causes = answer.json()
        assert [(c["status"], c["count"], c["types"]) for c in causes] == [
            (400, 4, {"Observation": 3, "Patient": 1}),
            (503, 1, {"Procedure": 1}),
        ]
        assert causes[0]["reason"] == too_many
        assert "max_transaction_entries" in causes[0]["hint"]
        assert "push again later" in causes[1]["hint"]
        assert len(client.get(f"/jobs/{run_id}/outcomes", headers=KEY).json()) == 6
        assert client.get("/jobs/999/failures", headers=KEY).status_code == 404
