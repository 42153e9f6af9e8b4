"""`fhir-cart pull` at growing cohorts: peak memory and time beside bare httpx, against a
real local FHIR server (sekmet-fhir on 127.0.0.1).

    .venv/bin/python benchmarks/bench_pull.py [--patients 1000 10000] [--pairs 2]
        [--before PATH-TO-AN-OLDER-fhir-cart] [--out benchmarks/results/bench_pull.json]

For each size: a synthetic cohort (benchmarks/cohort.py), its bundles loaded into a fresh
sekmet server by bare httpx (untimed); then, in alternating pairs, ``fhir-cart pull --server
URL --search identifier=SYSTEM| --out DIR --cache fresh.sqlite --types library`` (fetch,
cache, map patient by patient, write CSV tables) beside a bare httpx process running the
same request plan and writing NDJSON (benchmarks/bench_sync.py's ``_bare-pull``). Each side
is a process of its own: wall time, CPU time (``os.wait4``) and peak RSS (its VmHWM, read
every 10 ms). ``--before``: one more run per size of another fhir-cart executable (e.g. main's,
before pulls streamed), for its peak RSS. Ratios are bare wall time / ours (1: as fast as
bare httpx), min-median-max over the pairs; the machine and load averages go with them.
"""

from __future__ import annotations

import argparse
import asyncio
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
sys.path.insert(0, str(HERE))

from bench_sync import (  # noqa: E402  (after the path: benchmarks/ is no package)
    CONCURRENCY,
    FHIR_CART,
    PYTHON,
    Ran,
    bare_push,
    load,
    machine,
    pair,
    prepare,
    run_process,
    spread,
    uptime,
)


def _pull(executable: str, url: str, query: str, out: Path, cache: Path, tmp: Path) -> Ran:
    shutil.rmtree(out, ignore_errors=True)
    return run_process(
        [
            executable,
            "pull",
            "--server",
            url,
            "--search",
            query,
            "--out",
            str(out),
            "--cache",
            f"sqlite:///{cache}",
            "--types",
            "library",
        ],
        tmp,
    )


def _rows(path: Path) -> int:
    with path.open() as handle:
        return sum(1 for _ in handle) - 1


def one_size(patients: int, pairs: int, before: str | None, tmp: Path) -> dict[str, Any]:
    from cohort import cohort

    from fhir_cart.devservers import SekmetServer
    from fhir_cart.writers import write_study

    study = tmp / "study"
    shutil.rmtree(study, ignore_errors=True)
    write_study(cohort(patients), study, "csv")
    resources, bundles, query = prepare(study, tmp)
    out = tmp / "pulled"
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"patients": patients, "resources": resources}
    with SekmetServer() as server:
        url = server.base_url
        started = time.perf_counter()
        asyncio.run(bare_push(url, study, bundles, CONCURRENCY))
        result["load_s"] = round(time.perf_counter() - started, 1)
        print(
            f"{patients:,} patients, {resources:,} resources loaded in {result['load_s']} s",
            flush=True,
        )
        runs = iter(range(1_000))

        def ours() -> Ran:
            ran = _pull(FHIR_CART, url, query, out, tmp / f"c{next(runs)}.sqlite", tmp)
            if _rows(out / "patients.csv") != patients:
                raise SystemExit(f"fhir-cart pulled {_rows(out / 'patients.csv')} patients")
            return ran

        def bare() -> Ran:
            shutil.rmtree(out, ignore_errors=True)
            ran = run_process(
                [
                    PYTHON,
                    str(HERE / "bench_sync.py"),
                    "_bare-pull",
                    url,
                    query,
                    str(out),
                    str(CONCURRENCY),
                ],
                tmp,
            )
            if int(ran.stdout.split()[1]) != resources:
                raise SystemExit(f"bare pull got {ran.stdout.split()[1]} resources")
            return ran

        for index in range(pairs):
            rows.append(pair(index, {"ours": ours, "bare": bare}, f"pull {patients:,}"))
            print(
                f"    peak RSS ours {rows[-1]['ours']['peak_rss_mib']} MiB, bare "
                f"{rows[-1]['bare']['peak_rss_mib']} MiB",
                flush=True,
            )
        if before:
            ran = _pull(before, url, query, out, tmp / "before.sqlite", tmp)
            result["before"] = {
                "executable": before,
                "wall_s": round(ran.wall_s, 2),
                "cpu_s": round(ran.cpu_s, 2),
                "peak_rss_mib": round(ran.rss_mib, 1),
            }
            print(f"  before: {result['before']}", flush=True)
    result["ratio_bare_wall_over_ours"] = spread([r["ratio"] for r in rows])
    result["cpu_ratio_ours_over_bare"] = spread([r["cpu_ratio"] for r in rows])
    for side in ("ours", "bare"):
        walls = [r[side]["wall_s"] for r in rows]
        result[side] = {
            "resources_per_s_median": round(resources / statistics.median(walls)),
            "wall_s": spread(walls),
            "cpu_s": spread([r[side]["cpu_s"] for r in rows]),
            "peak_rss_mib": spread([r[side]["peak_rss_mib"] for r in rows], 1),
        }
    result["pairs"] = rows
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--before", help="another fhir-cart executable, run once per size")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_pull.json")
    args = parser.parse_args()
    load_start, uptime_start = load(), uptime()
    print(uptime_start, flush=True)
    sizes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as name:
        for patients in args.patients:
            sizes.append(one_size(patients, args.pairs, args.before, Path(name)))
            _write(args, sizes, load_start, uptime_start)  # each size as it is measured
    result = _write(args, sizes, load_start, uptime_start)
    print()
    for got in sizes:
        ours, bare = got["ours"], got["bare"]
        ratio = got["ratio_bare_wall_over_ours"]
        print(
            f"{got['patients']:,} patients ({got['resources']:,} resources): ours "
            f"{ours['resources_per_s_median']:,}/s, peak {ours['peak_rss_mib']['max']} MiB; "
            f"bare {bare['resources_per_s_median']:,}/s, peak {bare['peak_rss_mib']['max']} "
            f"MiB; ratio {ratio['min']} - {ratio['median']} - {ratio['max']}"
            + (
                f"; before: peak {got['before']['peak_rss_mib']} MiB, {got['before']['wall_s']} s"
                if "before" in got
                else ""
            )
        )
    print(f"load average start / end: {load_start} / {result['load_average_end']}")


def _write(
    args: argparse.Namespace,
    sizes: list[dict[str, Any]],
    load_start: list[float],
    uptime_start: str,
) -> dict[str, Any]:
    result = {
        "command": ".venv/bin/python benchmarks/bench_pull.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "server": "sekmet-fhir on 127.0.0.1, on the same cores as the client",
        "load_average_start": load_start,
        "load_average_end": load(),
        "uptime_start": uptime_start,
        "uptime_end": uptime(),
        "sizes": sizes,
    }
    RESULTS.mkdir(exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return result


if __name__ == "__main__":
    main()
