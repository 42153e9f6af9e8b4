"""Benchmark: study records -> FHIR NDJSON, beside plain orjson writing the same resources.

    .venv/bin/python benchmarks/bench_map.py [--patients 10000] [--validate-sample 2000]

Prints resources/s for fhir_cart (mapping + NDJSON streaming) and for the baseline (orjson
dumping the already-built resources to the same kind of files), their ratio (target: at
least 0.1), and the peak traced memory of streaming 2,000 and 10,000 patients (it must not
grow with cohort size). Results also go to benchmarks/results/bench_map.json.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cohort import cohort

from fhir_cart.bundle import NdjsonWriter, map_cases, validate_resource
from fhir_cart.mappers.context import mapping_context

RESULTS = Path(__file__).parent / "results"


def run_fhir_cart(patients: int, out: Path) -> tuple[int, float]:
    ctx = mapping_context(ref_style="relative")
    cases = list(cohort(patients))  # records validated on the way in, before the clock
    gc.collect()
    started = time.perf_counter()
    with NdjsonWriter(out) as writer:
        for resources in map_cases(ctx, cases):
            writer.write_all(resources)
    elapsed = time.perf_counter() - started
    return sum(writer.counts.values()), elapsed


def run_baseline(patients: int, out: Path) -> tuple[int, float]:
    ctx = mapping_context(ref_style="relative")
    built = [r for rs in map_cases(ctx, cohort(patients)) for r in rs]
    out.mkdir(parents=True, exist_ok=True)
    gc.collect()
    started = time.perf_counter()
    handles: dict[str, Any] = {}
    for resource in built:
        rtype = resource["resourceType"]
        handle = handles.get(rtype)
        if handle is None:
            handle = handles[rtype] = (out / f"{rtype}.ndjson").open("wb")
        handle.write(orjson.dumps(resource))
        handle.write(b"\n")
    for handle in handles.values():
        handle.close()
    return len(built), time.perf_counter() - started


def peak_streaming_memory(patients: int, out: Path) -> float:
    """Peak traced MiB while generating, mapping and writing a cohort lazily."""
    ctx = mapping_context(ref_style="relative")
    gc.collect()
    tracemalloc.start()
    with NdjsonWriter(out) as writer:
        for resources in map_cases(ctx, cohort(patients)):
            writer.write_all(resources)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def validate_rate(sample: int) -> float:
    ctx = mapping_context(ref_style="relative")
    built = [r for rs in map_cases(ctx, cohort(max(1, sample // 9))) for r in rs][:sample]
    started = time.perf_counter()
    for resource in built:
        validate_resource(resource)
    return len(built) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--validate-sample", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        n_cart, t_cart = run_fhir_cart(args.patients, base / "cart")
        n_base, t_base = run_baseline(args.patients, base / "base")
        small = peak_streaming_memory(args.patients // 5, base / "m1")
        large = peak_streaming_memory(args.patients, base / "m2")
    validated = validate_rate(args.validate_sample)
    result = {
        "patients": args.patients,
        "resources": n_cart,
        "fhir_cart_resources_per_s": round(n_cart / t_cart),
        "orjson_baseline_resources_per_s": round(n_base / t_base),
        "ratio": round((n_cart / t_cart) / (n_base / t_base), 3),
        "target_ratio": 0.1,
        "peak_mib_streaming": {
            str(args.patients // 5): round(small, 1),
            str(args.patients): round(large, 1),
        },
        "fhir_resources_validate_per_s": round(validated),
        "python": sys.version.split()[0],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_map.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"patients                      {args.patients:>10,}")
    print(f"resources                     {n_cart:>10,}")
    print(f"fhir_cart map -> NDJSON       {result['fhir_cart_resources_per_s']:>10,} resources/s")
    base_rate = result["orjson_baseline_resources_per_s"]
    print(f"orjson baseline (same files)  {base_rate:>10,} resources/s")
    print(f"ratio                         {result['ratio']:>10} (target >= 0.1)")
    print(
        f"fhir.resources validation     {result['fhir_resources_validate_per_s']:>10,} resources/s"
    )
    for n, mib in result["peak_mib_streaming"].items():  # type: ignore[attr-defined]
        print(f"peak traced memory, {n:>6} patients streamed: {mib} MiB")


if __name__ == "__main__":
    main()
