"""Pull in few requests, on both real servers: a cohort of more than 100 patients is fetched
by multi-valued searches (about one request per type per 100 patients), never per patient,
and pulls back exactly what was pushed.

Requests are counted where they leave the process (httpx's transport), not by the code
under test."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_cart.cache import open_cache
from fhir_cart.mappers.context import MappingContext
from fhir_cart.records import Case
from fhir_cart.settings import ServerSettings
from fhir_cart.sync.jobs import PullRequest, run_pull, run_push
from fhir_cart.sync.pull import EVENT_TYPES, PullSelection
from tests.integration.test_sync import SEED_QUERY, by_id

pytestmark = pytest.mark.integration

PATIENTS = 120


def cohort(seed_cases: list[Case], size: int) -> list[Case]:
    """``size`` patients: the seed cohort's, copied under new study ids."""
    out = []
    for i in range(size):
        case = seed_cases[i % len(seed_cases)]
        patient = case.patient.model_copy(update={"study_id": f"{case.patient.study_id}-{i}"})
        out.append(case.model_copy(update={"patient": patient}))
    return out


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[httpx.URL]:
    """Every request sent by any httpx AsyncClient from now on."""
    urls: list[httpx.URL] = []
    real = httpx.AsyncHTTPTransport.handle_async_request

    async def counted(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> Any:
        urls.append(request.url)
        return await real(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", counted)
    return urls


def test_a_cohort_is_pulled_in_few_requests_and_whole(
    fhir_server: str,
    tmp_path: Path,
    ctx: MappingContext,
    seed_cases: list[Case],
    sent: list[httpx.URL],
) -> None:
    cases = cohort(seed_cases, PATIENTS)
    server = ServerSettings(base_url=fhir_server)
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        report = asyncio.run(run_push(cases=cases, ctx=ctx, server=server, cache=cache))[1]
        assert report is not None
        assert report.failures == []
        sent.clear()
        selection = PullSelection(kind="search", query=SEED_QUERY)
        pulled = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))
    finally:
        cache.close()
    assert pulled.unmapped == []
    assert by_id(pulled.cases) == by_id(cases)
    per_type = Counter(url.path.rsplit("/", 1)[-1] for url in sent)
    for rtype in EVENT_TYPES:
        # the target: at most 0.1 requests per patient per type (per patient: 1 each)
        assert per_type[rtype] <= 0.1 * PATIENTS, (rtype, per_type)
    assert per_type["Patient"] <= 2, per_type
    # and a search names many patients at once
    named = [
        len(url.params.get(param, "").split(","))
        for url in sent
        for param in ("subject", "patient")
        if param in url.params
    ]
    assert named
    assert max(named) == 100, named


def test_a_group_is_read_by_few_requests(
    fhir_server: str,
    tmp_path: Path,
    ctx: MappingContext,
    seed_cases: list[Case],
    sent: list[httpx.URL],
) -> None:
    """Group members are read by ``Patient?_id=a,b,...``, not one read per member."""
    cases = cohort(seed_cases, PATIENTS)
    server = ServerSettings(base_url=fhir_server)
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        asyncio.run(run_push(cases=cases, ctx=ctx, server=server, cache=cache))
        ids = [
            r["id"]
            for r in httpx.get(
                f"{fhir_server}/Patient", params={"_count": "500", "_elements": "id"}
            ).json()["entry"]
            for r in [r["resource"]]
        ]
        group = {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{i}"}} for i in ids],
        }
        created = httpx.post(f"{fhir_server}/Group", json=group).json()
        sent.clear()
        selection = PullSelection(kind="group", group_id=created["id"])
        pulled = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))
    finally:
        cache.close()
    assert by_id(pulled.cases) == by_id(cases)
    patient_requests = [u for u in sent if u.path.endswith("/Patient")]
    assert 1 <= len(patient_requests) <= 2, patient_requests
    assert not [u for u in sent if "/Patient/" in u.path], "one read per member"
