"""NDJSON -> study tables as the whole process a user runs (``fhir-cart tables DIR --out
OUT``), beside fhiry's fastest path and a plain orjson + pandas flatten, each a process of
its own, in alternating pairs; with every side's peak RSS.

    .venv/bin/python benchmarks/bench_tables.py [--patients 1000 10000] [--pairs 3]
        [--sides ours fhiry plain] [--out benchmarks/results/bench_tables_cmd.json]

Input: a synthetic cohort of N patients (benchmarks/cohort.py) mapped to one NDJSON file
per resource type (untimed). Sides (each started with this machine's Python, timed from
start to exit; CPU time from ``os.wait4``, peak RSS from the process's VmHWM read every
10 ms, as benchmarks/bench_sync.py measures):

- ours: ``fhir-cart tables DIR --out OUT --workers 1`` (read, index by patient,
  reverse-map, write CSV tables, unmapped/excluded lists and the per-type account); ours2:
  the same with ``--workers 2`` (the speed-up is ours' wall time / ours2's);
- fhiry: each file's lines parsed with orjson into one Bundle, ``Fhiry.process_bundle_dict``,
  ``DataFrame.to_csv`` (fhiry's fastest path; a flatten, no study tables);
- plain: orjson lines -> ``pandas.json_normalize`` -> ``DataFrame.to_csv`` per type (the
  floor of FHIR -> tables: no checking, no concepts).

Each pair alternates which side runs first. Ratios are baseline wall time / ours (above 1:
ours is faster), min-median-max over the pairs. Results: ``--out`` (default
benchmarks/results/bench_tables_cmd.json).

This file is also the baselines' program (``_fhiry DIR OUT``, ``_plain DIR OUT``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PYTHON = sys.executable
FHIR_CART = str(Path(sys.executable).parent / "fhir-cart")


def _baseline(argv: list[str]) -> None:
    from bench_sync import fhiry_tables, normalize_tables

    run = fhiry_tables if argv[0] == "_fhiry" else normalize_tables
    rows = run(Path(argv[1]), Path(argv[2]))
    print(f"rows {rows}")


def _make(patients: int, folder: Path) -> int:
    from cohort import cohort

    from fhir_cart.bundle import NdjsonWriter, map_cases
    from fhir_cart.mappers.context import mapping_context

    ctx = mapping_context(ref_style="relative")
    with NdjsonWriter(folder) as writer:
        for resources in map_cases(ctx, cohort(patients)):
            writer.write_all(resources)
    return sum(writer.counts.values())


def _side(ran: Any) -> dict[str, float]:
    return {
        "wall_s": round(ran.wall_s, 3),
        "cpu_s": round(ran.cpu_s, 3),
        "peak_rss_mib": round(ran.rss_mib, 1),
    }


def bench(patients: int, pairs: int, tmp: Path, only: list[str]) -> dict[str, Any]:
    from bench_sync import run_process, spread
    from pairs import load

    ndjson = tmp / "ndjson"
    resources = _make(patients, ndjson)
    out = tmp / "out"
    sides = {
        "ours": [FHIR_CART, "tables", str(ndjson), "--out", str(out), "--workers", "1"],
        "ours2": [FHIR_CART, "tables", str(ndjson), "--out", str(out), "--workers", "2"],
        "fhiry": [PYTHON, str(Path(__file__)), "_fhiry", str(ndjson), str(out)],
        "plain": [PYTHON, str(Path(__file__)), "_plain", str(ndjson), str(out)],
    }
    sides = {name: argv for name, argv in sides.items() if name in only}
    rows: list[dict[str, Any]] = []
    for index in range(pairs):
        order = list(sides)
        shift = index % len(order)
        order = order[shift:] + order[:shift]
        row: dict[str, Any] = {"first": order[0], "load_1m": load()[0]}
        for name in order:
            shutil.rmtree(out, ignore_errors=True)
            ran = run_process(sides[name], tmp)
            row[name] = _side(ran)
            said = f"{patients} patients from {resources} resources"
            if name.startswith("ours") and said not in ran.stdout:
                raise SystemExit(f"fhir-cart tables did not read every patient:\n{ran.stdout}")
        for name in set(sides) - {"ours", "ours2"}:
            row[f"ratio_{name}"] = round(row[name]["wall_s"] / row["ours"]["wall_s"], 3)
            if "ours2" in sides:
                row[f"ratio_{name}_2"] = round(row[name]["wall_s"] / row["ours2"]["wall_s"], 3)
        if "ours2" in sides:
            row["speedup_2_workers"] = round(row["ours"]["wall_s"] / row["ours2"]["wall_s"], 3)
        print(
            f"  {patients:,} pair {index + 1} ({row['first']} first): "
            + ", ".join(f"{n} {row[n]['wall_s']} s {row[n]['peak_rss_mib']} MiB" for n in sides),
            flush=True,
        )
        rows.append(row)
    got: dict[str, Any] = {"patients": patients, "resources": resources}
    for name in sorted(set(sides) - {"ours", "ours2"}):
        got[f"ratio_{name}_wall_over_ours"] = spread([r[f"ratio_{name}"] for r in rows])
        if "ours2" in sides:
            got[f"ratio_{name}_wall_over_ours2"] = spread([r[f"ratio_{name}_2"] for r in rows])
    if "ours2" in sides:
        got["speedup_2_workers_over_1"] = spread([r["speedup_2_workers"] for r in rows])
    for name in sides:
        walls = [r[name]["wall_s"] for r in rows]
        got[name] = {
            "resources_per_s_median": round(resources / statistics.median(walls)),
            "wall_s": spread(walls),
            "cpu_s": spread([r[name]["cpu_s"] for r in rows]),
            "peak_rss_mib": spread([r[name]["peak_rss_mib"] for r in rows], 1),
        }
    got["pairs"] = rows
    return got


def main() -> None:
    sys.path.insert(0, str(HERE))
    if len(sys.argv) > 1 and sys.argv[1] in ("_fhiry", "_plain"):
        _baseline(sys.argv[1:])
        return
    from bench_sync import machine, uptime
    from pairs import load

    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--sides",
        nargs="+",
        default=["ours", "ours2", "fhiry", "plain"],
        help="which processes to run (e.g. only 'ours' at 100,000: the baselines hold every "
        "resource, several GB)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_tables_cmd.json")
    args = parser.parse_args()
    if "ours" not in args.sides:
        parser.error("--sides must include ours")
    result: dict[str, Any] = {
        "command": ".venv/bin/python benchmarks/bench_tables.py " + " ".join(sys.argv[1:]),
        "job": "fhir-cart tables DIR --out OUT --workers 1 (ours) and --workers 2 (ours2) "
        "(a process; CSV tables out)",
        "baselines": {
            "fhiry": "a process: orjson lines -> one Bundle per file -> "
            "Fhiry.process_bundle_dict -> DataFrame.to_csv",
            "plain": "a process: orjson lines -> pandas.json_normalize -> DataFrame.to_csv",
        },
        "ratios": "baseline wall time / fhir-cart tables wall time (above 1: fhir_cart faster)",
        "machine": machine(),
        "load_average_start": load(),
        "uptime_start": uptime(),
        "sizes": [],
    }
    started = time.perf_counter()
    for patients in args.patients:
        with tempfile.TemporaryDirectory(prefix="bench-tables-") as name:
            result["sizes"].append(bench(patients, args.pairs, Path(name), args.sides))
    result["load_average_end"] = load()
    result["uptime_end"] = uptime()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    for size in result["sizes"]:
        said = [f"{size['patients']:,} patients ({size['resources']:,} resources):"]
        for name in args.sides:
            for ours in ("ours", "ours2"):
                ratio = size.get(f"ratio_{name}_wall_over_{ours}")
                if ratio is not None:
                    said.append(
                        f"{ours} vs {name} {ratio['min']}-{ratio['median']}-{ratio['max']};"
                    )
        if "speedup_2_workers_over_1" in size:
            up = size["speedup_2_workers_over_1"]
            said.append(f"2 workers / 1: {up['min']}-{up['median']}-{up['max']};")
        said += [f"peak RSS {n} {size[n]['peak_rss_mib']['max']} MiB" for n in args.sides]
        print(" ".join(said))


if __name__ == "__main__":
    main()
