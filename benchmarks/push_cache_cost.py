"""What the SQL cache costs a push: time of a first and an unchanged second push, commits
and statements (how many ran on the event loop's thread, and the time spent in them).

    .venv/bin/python benchmarks/push_cache_cost.py [--patients 1000] [--cache URL]

Pushes a synthetic cohort (benchmarks/cohort.py) to a fresh local sekmet server twice, in
this process, through ``run_push`` (the code path of ``fhir-cart push`` after reading the
study), with a fresh SQLite cache (or ``--cache``). Mapping the same cohort alone is timed
for reference (issue 13's target: an unchanged second push at most 0.5x its cost).
Then, without a server, the cache's share of an unchanged push, operation by operation
(best of three): study records, change detection, versions to verify, the outcomes, the
check for records to retract; beside mapping and hashing the same cohort.
Not a timed test: run it by hand, on a quiet machine if possible.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from cohort import cohort
from sqlalchemy import event

from fhir_cart.bundle import content_hash, map_cases
from fhir_cart.cache import Outcome, SentEntry, open_cache
from fhir_cart.devservers import SekmetServer
from fhir_cart.mappers.context import mapping_context
from fhir_cart.settings import ServerSettings
from fhir_cart.sync.jobs import run_push
from fhir_cart.sync.push import resource_key
from fhir_cart.sync.retract import removed_records


class Counter:
    """Commits and statements on the engine, and how many ran on the event loop's thread."""

    def __init__(self) -> None:
        self.commits = 0
        self.statements = 0
        self.loop_statements = 0
        self.loop_thread: int | None = None
        self.db_s = 0.0
        self._started: dict[int, float] = {}

    def reset(self) -> None:
        self.commits = self.statements = self.loop_statements = 0
        self.db_s = 0.0

    def on_commit(self, _conn: Any) -> None:
        self.commits += 1

    def on_execute(self, *_args: Any) -> None:
        self.statements += 1
        if threading.get_ident() == self.loop_thread:
            self.loop_statements += 1
        self._started[threading.get_ident()] = time.perf_counter()

    def after_execute(self, *_args: Any) -> None:
        self.db_s += time.perf_counter() - self._started.pop(threading.get_ident())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    cases = list(cohort(args.patients))
    ctx = mapping_context()
    started = time.perf_counter()
    resources = sum(len(r) for r in map_cases(ctx.with_style("urn"), cases))
    map_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp, SekmetServer() as server:
        url = args.cache or f"sqlite:///{Path(tmp) / 'cache.sqlite'}"
        cache = open_cache(url)
        counter = Counter()
        event.listen(cache.engine, "commit", counter.on_commit)
        event.listen(cache.engine, "before_cursor_execute", counter.on_execute)
        event.listen(cache.engine, "after_cursor_execute", counter.after_execute)
        settings = ServerSettings(base_url=server.base_url)
        figures: dict[str, Any] = {
            "patients": args.patients,
            "resources": resources,
            "map_s": round(map_s, 3),
            "cache": url.split(":", 1)[0],
            "load_start": os.getloadavg()[0],
        }
        for name in ("first", "second"):
            counter.reset()

            async def one() -> Any:
                counter.loop_thread = threading.get_ident()
                return await run_push(cases=cases, ctx=ctx, server=settings, cache=cache)

            cpu, wall = time.process_time(), time.perf_counter()
            _, report = asyncio.run(one())
            figures[name] = {
                "wall_s": round(time.perf_counter() - wall, 3),
                "cpu_s": round(time.process_time() - cpu, 3),
                "commits": counter.commits,
                "statements": counter.statements,
                "statements_on_loop": counter.loop_statements,
                "in_statements_s": round(counter.db_s, 3),
                "counts": report.counts if report else None,
            }
        figures["second_over_map"] = round(figures["second"]["wall_s"] / map_s, 2)
        figures["load_end"] = os.getloadavg()[0]
        cache.close()
    for key, value in figures.items():
        print(f"{key}: {value}")
    print("cache share of an unchanged push:", cache_share(cases))


def cache_share(cases: list[Any]) -> dict[str, float]:
    ctx = mapping_context()
    started = time.perf_counter()
    keyed = [
        (resource_key(r), content_hash(r), r)
        for resources in map_cases(ctx.with_style("urn"), cases)
        for r in resources
    ]
    map_s = time.perf_counter() - started
    items, keys = [(k, h) for k, h, _ in keyed], [k for k, _, _ in keyed]
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = open_cache(f"sqlite:///{Path(tmp) / 'cache.sqlite'}")
        cache.upsert_study_records(cases=cases)
        cache.record_sent(
            server="s",
            entries=[
                SentEntry(k, f"id{n}", "1", None, None, h, orjson.dumps(r))
                for n, (k, h, r) in enumerate(keyed)
            ],
        )
        run = cache.create_run(kind="push", server="s", params={})
        steps: dict[str, Callable[[], object]] = {
            "study_records": lambda: cache.upsert_study_records(cases=cases),
            "changed": lambda: [
                cache.changed(server="s", items=items[i : i + 2300])
                for i in range(0, len(items), 2300)  # as planned: 250 patients at a time
            ],
            "sent_versions": lambda: cache.sent_versions(server="s", keys=keys),
            "outcomes": lambda: cache.add_outcomes(
                run_id=run, outcomes=[Outcome(k, "unchanged") for k in keys]
            ),
            "retraction_check": lambda: removed_records(cache, "s", keys, ctx.resource_id),
        }
        for _ in range(3):
            for name, step in steps.items():
                started = time.perf_counter()
                step()
                best[name] = min(best.get(name, 1e9), time.perf_counter() - started)
        cache.close()
    share = {name: round(value, 3) for name, value in best.items()}
    share["total"] = round(sum(best.values()), 3)
    share["map_and_hash"] = round(map_s, 3)
    share["total_over_map"] = round(sum(best.values()) / map_s, 2)
    return share


if __name__ == "__main__":
    main()
