"""A pull's read by type (:func:`fhir_cart.sync.scanned.by_type_scan`) runs before the pull's
first patient, with automatic collection off (:func:`fhir_cart.collector.bulk_collection`):
the cycles each page leaves are collected before the next page (issue 24: a pull's memory
grew with the server's size while a type was read whole)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fhir_cart.collector import bulk_collection, collect_in_bulk
from fhir_cart.sync import jobs
from fhir_cart.sync.pull import PullSelection, PullStats
from fhir_cart.sync.scanned import ScanStore, by_type_scan
from fhir_cart.types import Json


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_collect_in_bulk_collects_inside_the_block() -> None:
    with bulk_collection():
        node = _Node()
        gone = weakref.ref(node)
        del node
        assert gone() is not None  # no automatic collection in the block
        collect_in_bulk()
        assert gone() is None


class _Pages:
    """Three pages of one AdverseEvent each; each page leaves a cycle behind, and the next
    page notes whether the previous page's cycle was still alive when it was asked for."""

    def __init__(self) -> None:
        self.alive_at_next_page: list[bool] = []

    async def search_bundles(
        self, resource_type: str, params: dict[str, str]
    ) -> AsyncIterator[Json]:
        left: weakref.ref[_Node] | None = None
        for n in range(3):
            if left is not None:
                self.alive_at_next_page.append(left() is not None)
            node = _Node()
            left = weakref.ref(node)
            del node
            resource: dict[str, Any] = {
                "resourceType": resource_type,
                "id": f"ae{n}",
                "subject": {"reference": f"Patient/p{n}"},
            }
            yield {"resourceType": "Bundle", "entry": [{"resource": resource}]}


def test_a_read_by_type_collects_each_pages_cycles() -> None:
    pages, store = _Pages(), ScanStore()
    try:
        with bulk_collection():
            asyncio.run(by_type_scan(pages, ["AdverseEvent"], None, PullStats(), store, 1))
        assert pages.alive_at_next_page == [False, False]
        assert [r["id"] for r in store.get("p1")] == ["ae1"]  # still stored as before
    finally:
        store.close()


def test_the_fetch_collects_its_cycles_every_so_many_patients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cycle made as the first patient arrives is gone by the time the
    ``_COLLECT_EVERY``-th patient after it arrives."""
    every = jobs._COLLECT_EVERY
    seen: list[bool] = []
    first: list[weakref.ref[_Node]] = []

    async def pulled(*_: Any, **__: Any) -> AsyncIterator[tuple[Json, list[Json]]]:
        for n in range(every + 2):
            if n == 0:
                node = _Node()
                first.append(weakref.ref(node))
                del node
            else:
                seen.append(first[0]() is not None)
            yield {"resourceType": "Patient", "id": f"p{n}"}, []

    class _Received:
        async def add(self, resources: list[Json]) -> None:
            pass

    monkeypatch.setattr(jobs, "pull_resources", pulled)
    selection = PullSelection(kind="search", query="x=y")
    with bulk_collection():
        ids = asyncio.run(
            jobs._fetch(None, _Received(), selection, PullStats(), None)  # type: ignore[arg-type]
        )
    assert len(ids) == every + 2
    assert seen[0] is True  # not collected at once: no automatic collection in the block
    assert seen[-1] is False  # collected within ``every`` patients
