"""fixtures/ehr/partial_dates.json on real servers (sekmet-fhir and Medplum): every resource
a server takes is pulled back with fhir_cart's pull and lands where the file expects; a valid
partial date is never refused by a server, and never drops a patient or an event."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import orjson
import pytest

from fhir_cart.client import FhirClient
from fhir_cart.mappers.context import mapping_context
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.sync.pull import PullSelection, pull_resources
from fhir_cart.terminology import load_terminology
from tests.conftest import MAPPINGS, ROOT
from tests.ehr_expect import key_of, problems

pytestmark = pytest.mark.integration
Json = dict[str, Any]
FIXTURE = ROOT / "fixtures" / "ehr" / "partial_dates.json"


def _put_each(base: str, resources: list[Json]) -> dict[str, int]:
    """Each resource PUT to its own id, one request each (a refused one refuses nothing else);
    the status per resource."""
    with httpx.Client(base_url=base, timeout=60) as client:
        return {
            key_of(r): client.put(
                key_of(r), content=orjson.dumps(r),
                headers={"Content-Type": "application/fhir+json"},
            ).status_code
            for r in resources
        }  # fmt: skip


async def _pull(base: str, patient_ids: list[str]) -> list[Json]:
    out: list[Json] = []
    async with FhirClient(base_url=base) as client:
        selection = PullSelection(kind="search", query="_id=" + ",".join(patient_ids))
        async for patient, resources in pull_resources(client, selection):
            out += [patient, *resources]
    return out


def test_partial_dates_pull_as_expected(fhir_server: str) -> None:
    data = orjson.loads(FIXTURE.read_bytes())
    resources, expect = data["resources"], data["expect"]
    statuses = _put_each(fhir_server, resources)
    taken = {k for k, status in statuses.items() if status in (200, 201)}
    # a server may refuse a date that is no date; never a valid partial one
    refused = {k for k in statuses if k not in taken}
    assert all(expect[k]["in"] == "other" for k in refused), {k: statuses[k] for k in refused}
    patients = [r["id"] for r in resources if r["resourceType"] == "Patient" and key_of(r) in taken]
    pulled = asyncio.run(_pull(fhir_server, patients))
    # everything the server took for a patient it holds comes back
    held = {f"Patient/{p}" for p in patients}
    wanted = {key_of(r) for r in resources if key_of(r) in taken and (
        r["resourceType"] == "Patient" or r["subject"]["reference"] in held)}  # fmt: skip
    assert {key_of(r) for r in pulled} == wanted
    terms = load_terminology(MAPPINGS / "terminology.yaml", as_of=dt.date(2026, 1, 1))
    ctx = mapping_context(terminology=terms)
    result = cases_from_fhir(ctx, pulled)
    assert problems(ctx, pulled, expect, result) == []
    assert sorted(c.patient.study_id for c in result.cases) == ["pd-p1", "pd-p2", "pd-p4"]
