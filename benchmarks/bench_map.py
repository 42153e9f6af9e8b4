"""Benchmark: the whole `fhir-cart map` job beside its plain-Python floor, both as processes.

    .venv/bin/python benchmarks/bench_map.py --patients 1000 10000 100000 [--pairs 5]
        [--workers 1 2] [--memory-only 1000000]

``--workers``: the `fhir-cart map --workers N` counts to run (default 1 and 2), each a side
of every pair (checked once to write the same bytes as the floor); the speed-up of each
over the first is reported.

For each size N, once and untimed: a synthetic study of N patients (benchmarks/cohort.py)
is written as the canonical CSV tables (patients.csv, events.csv), `fhir-cart map` runs once
(warm-up, and the reference output), and the floor runs once and must write the same files,
byte for byte (checked).

Then ``--pairs`` alternating pairs (which side runs first alternates), each into an emptied
output folder:

(a) fhir_cart: ``fhir-cart map STUDY -m mappings/centres/canonical.yaml -o OUT``, the real
    command as a subprocess: interpreter start-up, imports, reading and checking the study,
    mapping, writing ndjson/<Type>.ndjson, bundles/bundle-NNNN.json (100 entries),
    CodeSystem-fhir-cart.json.
(b) the floor: ``python benchmarks/floor_map.py STUDY REFERENCE OUT`` as a subprocess: reads
    the same CSVs with csv.reader and writes the same bytes with orjson, getting each row's
    resources by parsing fhir_cart's output instead of reading values, checking and mapping
    (see that file).

For each run: wall time, CPU time (user + system) and peak RSS of that process alone
(``os.wait4``'s resource usage; this script keeps itself small and imports no fhir_cart, so
a child's peak is its own). Reported per size: min-median-max over the pairs of the ratios
fhir_cart / floor of wall time and of CPU time, the median resources/s of each, peak RSS of
each, load averages at start and end, and the machine. ``--memory-only`` sizes run
`fhir-cart map` once each for peak RSS only (no floor, no pairs).
Results: benchmarks/results/bench_map.json.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pairs import load, spread

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CANONICAL = ROOT / "mappings" / "centres" / "canonical.yaml"
PYTHON = Path(sys.executable)
FHIR_CART = PYTHON.with_name("fhir-cart")


def run(argv: list[str]) -> dict[str, float]:
    """Run a process to its end: wall s, CPU s (user + system) and peak RSS MiB of it alone."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err.decode()[-2000:]}")
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def ours(study: Path, out: Path, workers: int = 1) -> list[str]:
    return [
        *(str(FHIR_CART), "map", str(study), "-m", str(CANONICAL), "-o", str(out)),
        *("--workers", str(workers)),
    ]


def floor(study: Path, reference: Path, out: Path) -> list[str]:
    return [str(PYTHON), str(HERE / "floor_map.py"), str(study), str(reference), str(out)]


def same_tree(left: Path, right: Path) -> None:
    names = sorted(p.relative_to(left) for p in left.rglob("*") if p.is_file())
    other = sorted(p.relative_to(right) for p in right.rglob("*") if p.is_file())
    if names != other:
        raise SystemExit(f"the floor wrote other files: {set(names) ^ set(other)}")
    for name in names:
        if not filecmp.cmp(left / name, right / name, shallow=False):
            raise SystemExit(f"the floor wrote other bytes in {name}")


def resources_in(folder: Path) -> int:
    total = 0
    for path in (folder / "ndjson").glob("*.ndjson"):
        with path.open("rb") as handle:
            total += sum(1 for _ in handle)
    return total


def study_of(patients: int, base: Path) -> Path:
    study = base / f"study-{patients}"
    argv = [str(PYTHON), str(HERE / "cohort.py"), str(patients), str(study)]
    subprocess.run(argv, check=True)
    return study


def bench_size(patients: int, pairs: int, base: Path, workers: list[int]) -> dict[str, Any]:
    study = study_of(patients, base)
    reference, out = base / "reference", base / "out"
    warm = run(ours(study, reference, workers[0]))
    resources = resources_in(reference)
    run(floor(study, reference, out))
    same_tree(reference, out)
    for count in workers[1:]:  # every worker count writes the same bytes
        shutil.rmtree(out, ignore_errors=True)
        run(ours(study, out, count))
        same_tree(reference, out)
    output_mib = sum(p.stat().st_size for p in reference.rglob("*")) / 2**20
    input_mib = sum(p.stat().st_size for p in study.iterdir()) / 2**20
    print(f"{patients:,} patients, {resources:,} resources; {pairs} pairs", flush=True)
    load_start = load()
    rows = []
    names = [f"ours{w}" for w in workers]
    for index in range(pairs):
        sides = [(f"ours{w}", ours(study, out, w)) for w in workers]
        sides.append(("floor", floor(study, reference, out)))
        shift = index % len(sides)
        sides = sides[shift:] + sides[:shift]  # which side runs first rotates
        got: dict[str, dict[str, float]] = {}
        for name, argv in sides:
            shutil.rmtree(out, ignore_errors=True)
            got[name] = run(argv)
        row: dict[str, Any] = {"first": sides[0][0], "load_1m": load()[0], **got}
        for name in names:
            row[f"wall_ratio_{name}"] = round(got[name]["wall_s"] / got["floor"]["wall_s"], 3)
            row[f"cpu_ratio_{name}"] = round(got[name]["cpu_s"] / got["floor"]["cpu_s"], 3)
        rows.append(row)
        print(
            f"  pair {index + 1} ({row['first']} first): "
            + "; ".join(
                f"{n} {got[n]['wall_s']:.2f} s wall / {got[n]['cpu_s']:.2f} s CPU / "
                f"{got[n]['peak_rss_mib']} MiB"
                for n in [*names, "floor"]
            ),
            flush=True,
        )
    load_end = load()
    for folder in (study, reference, out):
        shutil.rmtree(folder, ignore_errors=True)

    def median(side: str, key: str) -> float:
        return round(statistics.median(r[side][key] for r in rows), 3)

    by_workers = {
        str(w): {
            "ratio_wall_time_ours_over_floor": spread([r[f"wall_ratio_ours{w}"] for r in rows]),
            "throughput_ours_over_floor": spread(
                [round(1 / r[f"wall_ratio_ours{w}"], 3) for r in rows]
            ),
            "ratio_cpu_time_ours_over_floor": spread([r[f"cpu_ratio_ours{w}"] for r in rows]),
            "ours_wall_s_median": median(f"ours{w}", "wall_s"),
            "ours_resources_per_s_median": round(resources / median(f"ours{w}", "wall_s")),
            "ours_peak_rss_mib": spread([r[f"ours{w}"]["peak_rss_mib"] for r in rows], 1),
        }
        for w in workers
    }
    if len(workers) > 1:
        for w in workers[1:]:
            by_workers[str(w)]["speedup_over_workers_" + str(workers[0])] = spread(
                [round(r[f"ours{workers[0]}"]["wall_s"] / r[f"ours{w}"]["wall_s"], 3) for r in rows]
            )
    return {
        "patients": patients,
        "resources": resources,
        "input_mib": round(input_mib, 1),
        "output_mib": round(output_mib, 1),
        "pairs": pairs,
        "workers": by_workers,
        "floor_wall_s_median": median("floor", "wall_s"),
        "floor_resources_per_s_median": round(resources / median("floor", "wall_s")),
        "floor_peak_rss_mib": spread([r["floor"]["peak_rss_mib"] for r in rows], 1),
        "warm_up_run": warm,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "per_pair": rows,
    }


def memory_only(patients: int, base: Path) -> dict[str, Any]:
    study = study_of(patients, base)
    out = base / "out"
    load_start = load()
    got = run(ours(study, out))
    load_end = load()
    resources = resources_in(out)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(study, ignore_errors=True)
    print(f"{patients:,} patients (memory only): {got}", flush=True)
    return {
        "patients": patients,
        "resources": resources,
        "runs": 1,
        "ours": got,
        "load_average_start": load_start,
        "load_average_end": load_end,
    }


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        total_kib = int(handle.readline().split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(total_kib / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "shared": "the machine is shared with other jobs: judge noise by the load averages",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--memory-only", type=int, nargs="*", default=[])
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="`map --workers` counts to run"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_map.json")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for studies and outputs")
    args = parser.parse_args()
    started = load()
    print(f"load average at start: {started}", flush=True)
    sizes, memory = [], []
    with tempfile.TemporaryDirectory(prefix="bench-map-", dir=args.tmp) as tmp:
        for patients in args.patients:
            sizes.append(bench_size(patients, args.pairs, Path(tmp), args.workers))
        for patients in args.memory_only:
            memory.append(memory_only(patients, Path(tmp)))
    result = {
        "command": "benchmarks/bench_map.py " + " ".join(sys.argv[1:]),
        "job": "fhir-cart map STUDY -m mappings/centres/canonical.yaml -o OUT --workers N "
        "(subprocess)",
        "floor": "benchmarks/floor_map.py STUDY REFERENCE OUT (subprocess): csv.reader over "
        "the same CSVs, each row's resources parsed from fhir_cart's output (orjson.loads), "
        "the same NDJSON, bundles and files written with orjson (byte-identical, checked)",
        "ratios": "fhir_cart / floor, of wall time and of CPU time (lower is better; 1 = floor)",
        "machine": machine(),
        "load_average_start": started,
        "load_average_end": load(),
        "sizes": sizes,
        "memory_only": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print()
    for size in sizes:
        for count, got in size["workers"].items():
            wall = got["ratio_wall_time_ours_over_floor"]
            cpu = got["ratio_cpu_time_ours_over_floor"]
            print(
                f"{size['patients']:>9,} patients, --workers {count}: ratio wall "
                f"{wall['min']}-{wall['median']}-{wall['max']}, CPU {cpu['min']}-"
                f"{cpu['median']}-{cpu['max']}; peak RSS {got['ours_peak_rss_mib']['max']} MiB "
                f"(floor {size['floor_peak_rss_mib']['max']} MiB); load "
                f"{size['load_average_start']} -> {size['load_average_end']}"
            )
    for size in memory:
        print(f"{size['patients']:>9,} patients: peak RSS {size['ours']['peak_rss_mib']} MiB")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
