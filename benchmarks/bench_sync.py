"""Benchmarks against the real local FHIR server, each beside a baseline in the same run.

    .venv/bin/python benchmarks/bench_sync.py [--patients 1000]

1. push: fhir_cart (mapping, change detection, cache, conditional transaction bundles) vs
   posting the same pre-built bundles with bare httpx at the same concurrency, each to a
   fresh server. Target: fhir_cart >= 0.8 of bare httpx.
2. pull: fhir_cart pulling the cohort back by search (resources/s), for the record.
3. NDJSON -> study tables: fhir_cart (reverse mapping + CSV) vs fhiry flattening the same
   NDJSON into a DataFrame. Target: >= 2x fhiry.

Results also go to benchmarks/results/bench_sync.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cohort import cohort

from fhir_cart.bundle import NdjsonWriter, map_cases, read_ndjson, transaction_bundles
from fhir_cart.cache import open_cache
from fhir_cart.mappers.context import mapping_context
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.settings import ServerSettings
from fhir_cart.sync.pull import PullSelection
from fhir_cart.sync.service import run_pull, run_push
from fhir_cart.testing import SekmetServer
from fhir_cart.writers import write_study

RESULTS = Path(__file__).parent / "results"
CONCURRENCY = 4
BUNDLE = 100


async def bare_httpx(base: str, bundles: list[bytes]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    async with httpx.AsyncClient(timeout=120) as http:

        async def one(body: bytes) -> None:
            async with gate:
                response = await http.post(base, content=body, headers=headers)
                response.raise_for_status()

        await asyncio.gather(*(one(b) for b in bundles))


def bench_push(patients: int, tmp: Path) -> dict[str, Any]:
    cases = list(cohort(patients))
    ctx = mapping_context()
    bundles = [
        orjson.dumps(b)
        for b in transaction_bundles(map_cases(ctx, cases), size=BUNDLE, mode="update")
    ]
    resources = sum(len(orjson.loads(b)["entry"]) for b in bundles)
    with SekmetServer() as server:
        started = time.perf_counter()
        asyncio.run(bare_httpx(server.base_url, bundles))
        t_bare = time.perf_counter() - started
    cache = open_cache(f"sqlite:///{tmp / 'push.sqlite'}")
    with SekmetServer() as server:
        settings = ServerSettings(
            base_url=server.base_url, bundle_size=BUNDLE, concurrency=CONCURRENCY
        )
        started = time.perf_counter()
        _, report = asyncio.run(run_push(cases=cases, ctx=ctx, server=settings, cache=cache))
        t_cart = time.perf_counter() - started
        assert report is not None
        assert report.counts.get("created") == resources, report.counts
        query = f"identifier={ctx.identifier_system('bench', 'patient')}|"
        selection = PullSelection(kind="search", query=query)
        started = time.perf_counter()
        pulled = asyncio.run(run_pull(selection=selection, ctx=ctx, server=settings, cache=cache))
        t_pull = time.perf_counter() - started
    cache.close()
    got = sum(pulled.stats.resources.values())
    return {
        "patients": patients,
        "resources": resources,
        "push_fhir_cart_resources_per_s": round(resources / t_cart),
        "push_bare_httpx_resources_per_s": round(resources / t_bare),
        "push_ratio": round(t_bare / t_cart, 3),
        "push_target_ratio": 0.8,
        "pull_fhir_cart_resources_per_s": round(got / t_pull),
        "pulled_resources": got,
    }


def bench_tables(patients: int, tmp: Path) -> dict[str, Any]:
    from fhiry import Fhirndjson

    ctx = mapping_context(ref_style="relative")
    ndjson = tmp / "ndjson"
    with NdjsonWriter(ndjson) as writer:
        for resources in map_cases(ctx, cohort(patients)):
            writer.write_all(resources)
    total = sum(writer.counts.values())
    started = time.perf_counter()
    result = cases_from_fhir(ctx, read_ndjson(sorted(ndjson.glob("*.ndjson"))))
    write_study(result.cases, tmp / "tables", "csv")
    t_cart = time.perf_counter() - started
    assert len(result.cases) == patients
    assert result.unmapped == []
    started = time.perf_counter()
    flattener = Fhirndjson()
    flattener.folder = str(ndjson)
    flattener.process_source()
    rows = len(flattener.df)
    t_fhiry = time.perf_counter() - started
    return {
        "tables_resources": total,
        "tables_fhir_cart_resources_per_s": round(total / t_cart),
        "tables_fhiry_resources_per_s": round(total / t_fhiry),
        "tables_fhiry_rows": rows,
        "tables_ratio": round(t_fhiry / t_cart, 3),
        "tables_target_ratio": 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--table-patients", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = bench_push(args.patients, Path(tmp))
        result |= bench_tables(args.table_patients, Path(tmp))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_sync.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    for key, value in result.items():
        print(f"{key:<40} {value:>12,}" if isinstance(value, int) else f"{key:<40} {value:>12}")


if __name__ == "__main__":
    main()
