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


class Server:
    """A FHIR server in memory: PUT stores (version 1, 2, ...), ``_id`` search answers."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], int] = {}

    def put(self, request: httpx.Request) -> httpx.Response:
        rtype, rid = request.url.path.rsplit("/", 2)[-2:]
        self.held[(rtype, rid)] = self.held.get((rtype, rid), 0) + 1
        meta = {"versionId": str(self.held[(rtype, rid)])}
        return httpx.Response(200, json={"resourceType": rtype, "id": rid, "meta": meta})

    def search(self, request: httpx.Request) -> httpx.Response:
        rtype = request.url.path.rsplit("/", 1)[-1]
        ids = request.url.params["_id"].split(",")
        entries = [
            {
                "resource": {
                    "resourceType": rtype,
                    "id": i,
                    "meta": {"versionId": str(self.held[(rtype, i)])},
                }
            }
            for i in ids
            if (rtype, i) in self.held
        ]
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "searchset", "entry": entries}
        )

    def mock(self, mock: respx.MockRouter) -> respx.Route:
        mock.get(url__regex=r".*/(ConceptMap|Provenance)\?.*").mock(side_effect=self.search)
        return mock.put(url__regex=r".*/(ConceptMap|Provenance)/.*").mock(side_effect=self.put)


RESOURCES = [
    {"resourceType": "ConceptMap", "id": "reg-berlin", "status": "active"},
    {"resourceType": "Provenance", "id": "abc", "recorded": "2020-01-01T00:00:00+00:00"},
]


async def test_artefacts_the_server_lost_or_changed_are_sent_again(tmp_path: Path) -> None:
    """The local record of what was pushed is checked against the server: after a wipe
    every artefact goes again; one edited there (another version) goes again."""
    server = Server()
    hashes = tmp_path / "pushed.json"
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        server.mock(mock)
        async with FhirClient(base_url=BASE) as client:
            assert await push_artefacts(client, RESOURCES, PushedHashes(hashes)) == 2
            assert await push_artefacts(client, RESOURCES, PushedHashes(hashes)) == 0
            server.held.clear()  # the server is wiped
            assert await push_artefacts(client, RESOURCES, PushedHashes(hashes)) == 2
            server.held[("Provenance", "abc")] += 1  # edited on the server
            assert await push_artefacts(client, RESOURCES, PushedHashes(hashes)) == 1


async def test_only_changed_artefacts_are_sent_again(tmp_path: Path) -> None:
    resources = RESOURCES
    hashes = tmp_path / "pushed.json"
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        route = Server().mock(mock)
        async with FhirClient(base_url=BASE) as client:
            assert await push_artefacts(client, resources, PushedHashes(hashes)) == 2
            assert await push_artefacts(client, resources, PushedHashes(hashes)) == 0
            changed = [resources[0], {**resources[1], "recorded": "2021-01-01T00:00:00+00:00"}]
            assert await push_artefacts(client, changed, PushedHashes(hashes)) == 1
        assert [str(c.request.url).removeprefix(BASE) for c in route.calls] == [
            "/ConceptMap/reg-berlin",
            "/Provenance/abc",
            "/Provenance/abc",
        ]


async def test_a_refused_artefact_is_tried_again_next_time(tmp_path: Path) -> None:
    resource = {"resourceType": "ConceptMap", "id": "reg-london", "status": "active"}
    hashes = tmp_path / "pushed.json"
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.put("/ConceptMap/reg-london").mock(return_value=httpx.Response(422, json={}))
        async with FhirClient(base_url=BASE, max_retries=0) as client:
            with pytest.raises(FhirClientError):
                await push_artefacts(client, [resource], PushedHashes(hashes))
    assert PushedHashes(hashes).hashes == {}
