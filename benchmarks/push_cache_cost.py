"""What the SQL cache costs a push: time of a first and an unchanged second push, commits
and statements, and time spent in cache calls on the event loop's thread.

    .venv/bin/python benchmarks/push_cache_cost.py [--patients 1000] [--cache URL]

Pushes a synthetic cohort (benchmarks/cohort.py) to a fresh local sekmet server twice, in
this process, through ``run_push`` (the code path of ``fhir-cart push`` after reading the
study), with a fresh SQLite cache (or ``--cache``). Mapping the same cohort alone is timed
for reference (issue 13's target: an unchanged second push at most 0.5x its cost).
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cohort import cohort
from sqlalchemy import event

from fhir_cart.bundle import map_cases
from fhir_cart.cache import open_cache
from fhir_cart.mappers.context import mapping_context
from fhir_cart.settings import ServerSettings
from fhir_cart.sync.service import run_push
from fhir_cart.testing import SekmetServer


class Counter:
    """Commits and statements on the engine, and how many ran on the event loop's thread."""

    def __init__(self) -> None:
        self.commits = 0
        self.statements = 0
        self.loop_statements = 0
        self.loop_thread: int | None = None

    def reset(self) -> None:
        self.commits = self.statements = self.loop_statements = 0

    def on_commit(self, _conn: Any) -> None:
        self.commits += 1

    def on_execute(self, *_args: Any) -> None:
        self.statements += 1
        if threading.get_ident() == self.loop_thread:
            self.loop_statements += 1


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
        settings = ServerSettings(base_url=server.base_url)
        figures: dict[str, Any] = {
            "patients": args.patients, "resources": resources, "map_s": round(map_s, 3),
            "cache": url.split(":", 1)[0], "load_start": os.getloadavg()[0],
        }  # fmt: skip
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
                "counts": report.counts if report else None,
            }
        figures["second_over_map"] = round(figures["second"]["wall_s"] / map_s, 2)
        figures["load_end"] = os.getloadavg()[0]
        cache.close()
    for key, value in figures.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
