"""What a push costs the cache (issue 13): a fixed number of statements and commits per
bundle group whatever its size, none of them on the event loop's thread, and change
detection that reads stored hashes, never a resource's content."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import event

from fhir_cart.cache import Cache, open_cache
from fhir_cart.mappers.context import MappingContext
from fhir_cart.records import Case
from fhir_cart.settings import ServerSettings
from fhir_cart.sync.connect import client_for
from fhir_cart.sync.jobs import run_push
from fhir_cart.sync.push import PushReport, plan_push, push

pytestmark = pytest.mark.integration


@dataclass
class Seen:
    """Commits and statements on one engine, and which ran on the event loop's thread."""

    loop: int | None = None
    commits: int = 0
    statements: list[str] = field(default_factory=list)
    on_loop: list[str] = field(default_factory=list)

    def watch(self, cache: Cache) -> Seen:
        event.listen(cache.engine, "commit", self._commit)
        event.listen(cache.engine, "before_cursor_execute", self._execute)
        return self

    def _commit(self, _conn: Any) -> None:
        self.commits += 1

    def _execute(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(statement)
        if threading.get_ident() == self.loop:
            self.on_loop.append(statement)


def _cohort(seed_cases: list[Case], copies: int, prefix: str) -> list[Case]:
    return [
        case.model_copy(
            update={
                "patient": case.patient.model_copy(
                    update={"study_id": f"{prefix}{n}-{case.patient.study_id}"}
                )
            }
        )
        for n in range(copies)
        for case in seed_cases
    ]


def _send(
    cases: list[Case], ctx: MappingContext, base: str, cache: Cache, bundle_size: int
) -> tuple[PushReport, Seen]:
    """Plan as ``fhir-cart push`` does, then count what sending the plan does to the cache."""
    plan = plan_push(
        ctx,
        cases,
        changed=lambda items: cache.changed(server=base, items=items),
        server_ids=lambda keys: cache.server_ids(server=base, keys=keys),
    )
    run_id = cache.create_run(kind="push", server=base, params={})
    seen = Seen().watch(cache)

    async def go() -> PushReport:
        seen.loop = threading.get_ident()
        async with client_for(ServerSettings(base_url=base)) as client:
            return await push(
                plan,
                client=client,
                cache=cache,
                server=base,
                run_id=run_id,
                bundle_size=bundle_size,
            )

    report = asyncio.run(go())
    event.remove(cache.engine, "commit", seen._commit)
    event.remove(cache.engine, "before_cursor_execute", seen._execute)
    assert report.failures == []
    return report, seen


def test_cache_work_per_bundle_group_does_not_grow_with_its_resources(
    sekmet_server: str, cache_url: str, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    cache = open_cache(cache_url)
    try:
        # one group each (bundle_size above the cohort): 7 patients, then 21
        small, small_seen = _send(_cohort(seed_cases, 1, "s"), ctx, sekmet_server, cache, 5000)
        big, big_seen = _send(_cohort(seed_cases, 3, "b"), ctx, sekmet_server, cache, 5000)
        assert (small.bundles, big.bundles) == (1, 1)
        assert big_seen.commits == small_seen.commits == 2  # the journal, the group's answers
        assert len(big_seen.statements) == len(small_seen.statements)
        # more groups: one commit more each, the same statements each
        many, many_seen = _send(_cohort(seed_cases, 3, "m"), ctx, sekmet_server, cache, 50)
        assert many.bundles > 2
        assert many_seen.commits == 1 + many.bundles
        per_group = len(small_seen.statements)
        assert len(many_seen.statements) == per_group * many.bundles
        assert small_seen.on_loop == big_seen.on_loop == many_seen.on_loop == []
    finally:
        cache.close()


def test_an_unchanged_push_reads_hashes_not_content_and_sends_nothing(
    sekmet_server: str, cache_url: str, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    cache = open_cache(cache_url)
    server = ServerSettings(base_url=sekmet_server)
    try:
        _, first = asyncio.run(run_push(cases=seed_cases, ctx=ctx, server=server, cache=cache))
        assert first is not None
        assert first.failures == []
        total = sum(first.counts.values())
        seen = Seen().watch(cache)
        _, second = asyncio.run(run_push(cases=seed_cases, ctx=ctx, server=server, cache=cache))
        assert second is not None
        assert second.counts == {"unchanged": total}
        assert second.bundles == 0
        reads = [s for s in seen.statements if s.lstrip().upper().startswith("SELECT")]
        assert any("fhir_resource.content_hash" in s for s in reads)  # change detection ran
        assert not [
            s
            for s in reads
            if "fhir_resource.content," in s or s.rstrip().endswith("fhir_resource.content")
        ]
        writes = [
            s
            for s in seen.statements
            if "fhir_resource" in s.split("FROM")[0] and not s.lstrip().upper().startswith("SELECT")
        ]
        assert writes == []  # nothing recorded as sent again
        assert seen.commits <= 6  # study records unchanged, run, outcomes, finish
        (outcomes,) = {o.outcome for o in cache.outcomes(run_id=second.run_id, limit=10_000)}
        assert outcomes == "unchanged"
    finally:
        cache.close()
