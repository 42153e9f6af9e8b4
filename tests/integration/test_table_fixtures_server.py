"""The lymphoma/CLL and myeloma CAR-T tables of issue 18 round-trip through a real FHIR server
(sekmet-fhir and Medplum): pushed, pulled back by their centre's identifiers, the same records
(months kept as months, bands as bands, censoring as a last follow-up) and the same numbers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fhir_cart.cache import open_cache
from fhir_cart.mappers.context import MappingContext
from fhir_cart.settings import ServerSettings
from fhir_cart.sync.jobs import PullRequest, run_pull, run_push
from fhir_cart.sync.pull import PullSelection
from tests.integration.test_sync import by_id
from tests.unit.report.test_table_fixtures import disagreements, table_cases

pytestmark = pytest.mark.integration
CENTRES = {"lymphoma_cart": "lymphoma-cart", "myeloma_cart": "myeloma-cart"}


@pytest.mark.parametrize("name", sorted(CENTRES))
def test_push_then_pull_reproduces_records_and_numbers(
    name: str, fhir_server: str, ctx: MappingContext, tmp_path: Path
) -> None:
    cases = table_cases(name)
    cache = open_cache(f"sqlite:///{tmp_path / 'cache.sqlite'}")
    try:
        server = ServerSettings(base_url=fhir_server, bundle_size=100, concurrency=4)
        _, report = asyncio.run(run_push(cases=cases, ctx=ctx, server=server, cache=cache))
        assert report.failures == []
        query = f"identifier=https://fhir-cart.dev/fhir/id/{CENTRES[name]}/patient|"
        selection = PullSelection(kind="search", query=query)
        pulled = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))
    finally:
        cache.close()
    assert pulled.unmapped == []
    assert by_id(pulled.cases) == by_id(cases)
    assert disagreements(pulled.cases, name) == []
