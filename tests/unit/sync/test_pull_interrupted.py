"""A pull that dies part-way (the server's answer to a later search is broken) leaves the
cache consistent: the run is marked interrupted, what was written holds whole patients (a
patient with all of its resources, one transaction per batch, written on the cache's
thread while the pull went on), and the next pull completes over it."""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from fhir_cart.sync import jobs
from tests.hostile import Answer, HostileServer, Seen, bundle, capabilities, fhir_json
from tests.unit.sync.test_untrusted_server import EVENTS, pull, settings_env

PATIENTS = [
    {"resourceType": "Patient", "id": f"p{i}", "gender": "female", "birthDate": "2010-01-01"}
    for i in range(250)
]


def observations(broken: bool) -> Callable[[Seen], Answer]:
    def answer(seen: Seen) -> Answer:
        refs = parse_qs(seen.query).get("subject", [""])[0].split(",")
        ids = [ref.split("/")[-1] for ref in refs if ref]
        if broken and "p200" in ids:  # the third chunk of patients
            return 200, {"Content-Type": "application/fhir+json"}, b'{"resourceType": "Bun'
        return bundle(
            [
                {
                    "resourceType": "Observation",
                    "id": f"o-{pid}",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": f"Patient/{pid}"},
                }
                for pid in ids
            ]
        )

    return answer


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_a_pull_that_dies_part_way_leaves_whole_patients_and_an_interrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "_RECORD_BATCH", 10)  # many transactions, not one
    with HostileServer() as server:
        server.routes["/fhir/metadata"] = capabilities(*EVENTS)
        for rtype in EVENTS:
            server.routes[f"/fhir/{rtype}"] = bundle([])
        server.routes["/fhir/Patient"] = fhir_json(
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(PATIENTS),
                "entry": [{"resource": p, "search": {"mode": "match"}} for p in PATIENTS],
            }
        )
        server.routes["/fhir/Observation"] = observations(broken=True)
        settings_env(monkeypatch, tmp_path, f"{server.url}/fhir")
        assert pull(tmp_path, "--search", "name=x") == 6

        db = sqlite3.connect(tmp_path / "cache.sqlite")
        (status,) = db.execute("select status from sync_run order by id desc limit 1").fetchone()
        assert status == "interrupted"
        rows = db.execute(
            "select resource_type, server_id, patient_ref from fhir_resource "
            "where direction = 'received'"
        ).fetchall()
        patients = {rid for rtype, rid, _ in rows if rtype == "Patient"}
        observed = {str(ref).split("/")[-1] for rtype, _, ref in rows if rtype == "Observation"}
        assert 100 <= len(patients) <= 200  # the first chunks were written, not the third
        assert observed == patients  # whole patients: each with its observation
        db.close()

        server.routes["/fhir/Observation"] = observations(broken=False)
        assert pull(tmp_path, "--search", "name=x") == 0
    with (tmp_path / "out" / "patients.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(PATIENTS)
    with (tmp_path / "out" / "other.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(PATIENTS)  # every observation kept
    db = sqlite3.connect(tmp_path / "cache.sqlite")
    (status,) = db.execute("select status from sync_run order by id desc limit 1").fetchone()
    assert status == "succeeded"
    db.close()
