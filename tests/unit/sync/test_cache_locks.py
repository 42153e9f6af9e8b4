"""``exclusive``: several named locks of a cache held together, all or none, the wait logged
once (moved from the sync jobs beside the cache's locks in issue 21)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fhir_cart.cache import locks
from fhir_cart.cache.locks import Release, exclusive


class Locks:
    """Named locks in memory; ``taken`` records every take, in order."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.taken: list[str] = []

    def try_lock(self, name: str) -> Release | None:
        if name in self.held:
            return None
        self.held.add(name)
        self.taken.append(name)
        return lambda: self.held.discard(name)


def test_all_named_locks_are_held_together_or_none_while_waiting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(locks, "_LOCK_POLL_S", 0)
    store = Locks()
    release_b = store.try_lock("b")  # another holder has b
    assert release_b is not None
    polls = 0
    seen_while_waiting: list[set[str]] = []

    async def other_holder() -> None:
        nonlocal polls
        while polls < 5:  # the wanted locks are tried several times meanwhile
            seen_while_waiting.append(set(store.held))
            polls += 1
            await asyncio.sleep(0)
        release_b()

    async def take() -> set[str]:
        async with exclusive(store, ["b", "a", "a"], waiting="waiting for b"):
            return set(store.held)

    async def main() -> set[str]:
        task = asyncio.ensure_future(other_holder())
        inside = await asyncio.wait_for(take(), timeout=5)  # a lock left held: never free
        await task
        return inside

    with caplog.at_level(logging.INFO, logger="fhir_cart.cache.locks"):
        inside = asyncio.run(main())
    assert inside == {"a", "b"}
    assert store.held == set()  # both released on leaving
    assert all(held == {"b"} for held in seen_while_waiting)  # never "a" alone, held on
    assert store.taken.count("a") > 1  # taken and let go again while b was busy
    assert [r.getMessage() for r in caplog.records] == ["waiting for b"]  # said once


def test_a_wait_that_is_cancelled_leaves_nothing_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "_LOCK_POLL_S", 0)
    store = Locks()
    assert store.try_lock("b") is not None

    async def main() -> None:
        async def wait() -> None:
            async with exclusive(store, ["a", "b"], waiting="waiting"):
                raise AssertionError("b is never free")

        task = asyncio.ensure_future(wait())
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert store.held == {"b"}  # a is not left held
