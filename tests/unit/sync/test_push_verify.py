"""verify_on_server: what the cache believes the server holds, checked against it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fhir_cart.sync.push import verify_on_server

SYSTEM = "https://fhir-cart.dev/fhir/id/c/observation"


class Server:
    """Answers ``_id`` searches from what it holds: id -> versionId."""

    def __init__(self, held: dict[str, dict[str, str]]) -> None:
        self.held = held
        self.asked: list[int] = []

    async def search(self, rtype: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        ids = params["_id"].split(",")
        self.asked.append(len(ids))
        for rid in ids:
            if rid in self.held.get(rtype, {}):
                yield {
                    "resourceType": rtype,
                    "id": rid,
                    "meta": {"versionId": self.held[rtype][rid]},
                }


def _believed(n: int, version: str = "1") -> dict[tuple[str, str, str], tuple[str, str | None]]:
    return {("Observation", SYSTEM, f"P/{i}"): (f"o{i}", version) for i in range(n)}


async def test_every_resource_of_a_type_is_checked_not_the_first_hundred() -> None:
    believed = _believed(250)
    server = Server({"Observation": {f"o{i}": "1" for i in range(250) if i != 230}})
    gone = await verify_on_server(server, believed)  # type: ignore[arg-type]
    assert gone == {("Observation", SYSTEM, "P/230")}
    assert server.asked == [100, 100, 50]


async def test_a_resource_edited_on_the_server_is_sent_again() -> None:
    believed = {**_believed(2), ("Observation", SYSTEM, "P/9"): ("o9", None)}
    server = Server({"Observation": {"o0": "1", "o1": "3", "o9": "7"}})
    gone = await verify_on_server(server, believed)  # type: ignore[arg-type]
    # o1 is at another version than the cache sent; o9's version was never known
    assert gone == {("Observation", SYSTEM, "P/1")}
