"""The registry's ConceptMaps and Provenance go as PUT Type/id, and only when changed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx

from fhir_cart.client import FhirClient
from fhir_cart.errors import FhirClientError
from fhir_cart.registry.artefacts import PushedHashes, push_artefacts

BASE = "http://127.0.0.1:8080/fhir"


async def test_only_changed_artefacts_are_sent_again(tmp_path: Path) -> None:
    resources = [
        {"resourceType": "ConceptMap", "id": "reg-berlin", "status": "active"},
        {"resourceType": "Provenance", "id": "abc", "recorded": "2020-01-01T00:00:00+00:00"},
    ]
    hashes = tmp_path / "pushed.json"
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        route = mock.put(url__regex=r".*/(ConceptMap|Provenance)/.*").mock(
            side_effect=lambda request: httpx.Response(200, json={"resourceType": "X"})
        )
        async with FhirClient(base_url=BASE) as client:
            assert await push_artefacts(client, resources, PushedHashes(hashes)) == 2
            assert await push_artefacts(client, resources, PushedHashes(hashes)) == 0
            changed = [resources[0], {**resources[1], "recorded": "2021-01-01T00:00:00+00:00"}]
            assert await push_artefacts(client, changed, PushedHashes(hashes)) == 1
        assert [str(c.request.url).removeprefix(BASE) for c in route.calls] == [
            "/ConceptMap/reg-berlin", "/Provenance/abc", "/Provenance/abc",
        ]  # fmt: skip


async def test_a_refused_artefact_is_tried_again_next_time(tmp_path: Path) -> None:
    resource = {"resourceType": "ConceptMap", "id": "reg-london", "status": "active"}
    hashes = tmp_path / "pushed.json"
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.put("/ConceptMap/reg-london").mock(return_value=httpx.Response(422, json={}))
        async with FhirClient(base_url=BASE, max_retries=0) as client:
            with pytest.raises(FhirClientError):
                await push_artefacts(client, [resource], PushedHashes(hashes))
    assert PushedHashes(hashes).hashes == {}
