"""The CLI's pull lists what a status excluded (excluded.csv, with the reason) and says how
many; the events table holds only what happened, with flagged statuses in its status column."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from fhir_cart.cli import main
from fhir_cart.sync.pull import EVENT_TYPES
from tests.hostile import HostileServer, bundle, capabilities

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _given(rid: str, status: str) -> dict[str, Any]:
    drug = {"coding": [{"system": RX, "code": "1597258"}]}
    return {
        "resourceType": "MedicationAdministration",
        "id": rid,
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2021-01-02"},
        "medicationCodeableConcept": drug,
    }


def test_pull_writes_the_excluded_list_and_counts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with HostileServer() as server:
        server.routes["/fhir/metadata"] = capabilities(*EVENT_TYPES)
        for rtype in EVENT_TYPES:
            server.routes[f"/fhir/{rtype}"] = bundle([])
        server.routes["/fhir/Patient"] = bundle([{"resourceType": "Patient", "id": "p1"}])
        server.routes["/fhir/MedicationAdministration"] = bundle(
            [
                _given("m1", "completed"),
                _given("m2", "not-done"),
                _given("m3", "in-progress"),
                _given("m4", "entered-in-error"),
            ]
        )
        monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
        monkeypatch.setenv("FHIR_CART_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("FHIR_CART_CACHE_URL", f"sqlite:///{tmp_path / 'cache.sqlite'}")
        monkeypatch.setenv("FHIR_CART_SERVERS__H__BASE_URL", f"{server.url}/fhir")
        out = tmp_path / "out"
        code = main(["pull", "--server", "h", "--out", str(out), "--search", "name=x"])
    assert code == 0
    assert "2 resources excluded by their status" in capsys.readouterr().err
    with (out / "excluded.csv").open(newline="") as handle:
        rows = [(r["reference"], r["reason"]) for r in csv.DictReader(handle)]
    assert rows == [
        ("MedicationAdministration/m2", "status not-done: not given"),
        ("MedicationAdministration/m4", "status entered-in-error: recorded in error"),
    ]
    with (out / "events.csv").open(newline="") as handle:
        events = {r["event_id"]: r["status"] for r in csv.DictReader(handle)}
    assert events == {
        "medication-administration-m1": "",
        "medication-administration-m3": "in-progress",
    }
    assert not (out / "unmapped.csv").exists()
