"""The hostile EHR medications (fixtures/ehr/medications.json) pulled by Bulk Data $export,
checked against the same expectations as the offline unit test (tests/ehr_cases.py).
Referenced Medications are in no patient's compartment: the pull fetches them itself after
the export. (Every file pulled by search, on both servers: test_ehr_pull.py.)"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_cart.cache import open_cache
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import ReverseResult
from fhir_cart.settings import ServerSettings
from fhir_cart.sync.jobs import PullRequest, run_pull
from fhir_cart.sync.pull import PullSelection
from tests.ehr_cases import EhrCase, check, key_of, load_cases
from tests.integration.pulling import load

pytestmark = pytest.mark.integration
Json = dict[str, Any]

INVALID_ON_PURPOSE = {"Procedure/st-pr-done", "MedicationAdministration/md-ma-nodrug"}
"""Resources that are not valid FHIR R4 (a status outside its required value set, no
medication[x]): a server may refuse them; the offline test covers them."""

NEVER_PULLED = {"Medication/md-med-unused"}
"""In no patient's compartment and referenced by nothing: a pull never asks for it."""


def _without(case: EhrCase, refused: set[str]) -> EhrCase:
    kept = [r for r in case.resources if key_of(r) not in refused]
    expect = {k: v for k, v in case.expect.items() if k not in refused}
    return EhrCase(case.path, case.about, kept, expect)


def test_medications_pulled_by_bulk_export(
    sekmet_server: str, ctx: MappingContext, tmp_path: Path
) -> None:
    """$export (sekmet only: Medplum's in-memory router has none) sends no Medication (it is
    in no patient's compartment): the pull fetches the referenced ones after the export."""
    (case,) = [c for c in load_cases() if c.name == "medications.json"]
    refused = set(load(sekmet_server, copy.deepcopy(case.resources)))
    assert refused <= INVALID_ON_PURPOSE
    patients = [r["id"] for r in case.resources if r["resourceType"] == "Patient"]
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{p}"}} for p in patients],
    }
    created = httpx.post(
        f"{sekmet_server}/Group", json=group, headers={"Content-Type": "application/fhir+json"}
    )
    selection = PullSelection(kind="group", group_id=str(created.json()["id"]))
    server = ServerSettings(base_url=sekmet_server)
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        pulled = asyncio.run(
            run_pull(PullRequest(selection, use_export=True), ctx=ctx, server=server, cache=cache)
        )
    finally:
        cache.close()
    other: Any = pulled.other
    result = ReverseResult(pulled.cases, pulled.unmapped, other, pulled.excluded)
    assert check(result, _without(case, refused | NEVER_PULLED), ctx) == []
