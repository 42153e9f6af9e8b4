"""Benchmark: the whole `fhir-cart map` job beside its plain-Python floor, in alternating pairs.

    .venv/bin/python benchmarks/bench_map.py [--patients 10000] [--pairs 5]

Once, untimed: writes a synthetic study of N patients (benchmarks/cohort.py) as the canonical
CSV tables (``writers.write_study``: patients.csv, events.csv), and runs the job once to warm
caches, build the floor's lookup tables and check that both sides write identical bytes.

Then K pairs, alternating which side runs first, each into an emptied output folder:

(a) fhir_cart: ``fhir_cart.cli.main(["map", STUDY, "-m", mappings/centres/canonical.yaml,
    "-o", OUT])`` in this process -- exactly what ``fhir-cart map`` runs (read and check the
    study with its mapping, map to FHIR, write ndjson/<Type>.ndjson, bundles/bundle-NNNN.json
    transactions of 100 entries, CodeSystem-fhir-cart.json). Interpreter start-up and imports
    are not in it; one cold ``fhir-cart map`` subprocess is timed once, for reference.
(b) the floor: ``csv.DictReader`` over the same patients.csv and events.csv; every row is
    looked up by its key (study_id; study_id + event_id) in tables of the resources and
    bundle entries that fhir_cart produced in the untimed warm-up, so the floor does no
    mapping and no checking at all -- only reading the input, grouping a patient's rows,
    chunking bundles, ``orjson.dumps`` and writing: the same files, byte for byte.

Ratio = fhir_cart resources/s / floor resources/s (the cost of reading, checking and mapping
on top of pure I/O and serialisation). Also reported: min-median-max of the ratio over the
pairs, where the time of one fhir_cart run goes (one extra run, by stage), peak RSS of the
job in fresh subprocesses at N/5 and N patients (growth with N means the job holds the
cohort in memory), fhir.resources validation rate, load averages at start and end.
Results: benchmarks/results/bench_map.json.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import filecmp
import gc
import io
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cohort import cohort
from pairs import alternate, load

from fhir_cart import cli
from fhir_cart.bundle import (
    NdjsonWriter,
    business_identifier,
    entry_for,
    map_cases,
    transaction_bundles,
    validate_resource,
)
from fhir_cart.mappers.context import mapping_context
from fhir_cart.readers import read_study
from fhir_cart.study_mapping import load_study_mapping
from fhir_cart.writers import write_study

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
CANONICAL = ROOT / "mappings" / "centres" / "canonical.yaml"
BUNDLE = 100  # the CLI's default --bundle-size
Json = dict[str, Any]


def run_cli(study: Path, out: Path) -> None:
    sink = io.StringIO()  # its summary table and the unverified-code warning, not figures
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = cli.main(["map", str(study), "-m", str(CANONICAL), "-o", str(out)])
    if code != 0:
        raise SystemExit(f"fhir-cart map exited {code}")


# -- the floor ---------------------------------------------------------------------------------


@dataclass
class Floor:
    """What fhir_cart produced once, keyed by source row, for the floor to look up."""

    patients: dict[str, Json] = field(default_factory=dict)  # study_id -> Patient
    patient_entries: dict[str, Json] = field(default_factory=dict)
    events: dict[tuple[str, str], Json] = field(default_factory=dict)  # (sid, event_id) -> res
    event_entries: dict[tuple[str, str], tuple[int, Json]] = field(default_factory=dict)
    """(sid, event_id) -> (0 for a Condition, which goes first in its patient's entries, else
    1; bundle entry). Rows absent here (death, follow-up) are on the Patient."""
    extra_files: dict[str, Any] = field(default_factory=dict)  # CodeSystem, unverified codes


def build_floor(study: Path, reference_out: Path) -> tuple[Floor, int]:
    """Key fhir_cart's resources by row; returns the floor and the resource count."""
    mapping = load_study_mapping(CANONICAL)
    cases = read_study(study, mapping).cases
    ctx = mapping_context(extra=mapping.own_concepts())
    floor = Floor()
    total = 0
    relative = map_cases(ctx.with_style("relative"), cases)
    urn = map_cases(ctx.with_style("urn"), cases)
    for case, rel_resources, urn_resources in zip(cases, relative, urn, strict=True):
        sid = case.patient.study_id
        for rel, res in zip(rel_resources, urn_resources, strict=True):
            total += 1
            value = business_identifier(rel)[1]
            entry = entry_for(res, "update")
            if rel["resourceType"] == "Patient":
                floor.patients[sid] = rel
                floor.patient_entries[sid] = entry
                continue
            key = (sid, value.removeprefix(f"{sid}/"))
            floor.events[key] = rel
            floor.event_entries[key] = (0 if rel["resourceType"] == "Condition" else 1, entry)
    for name in ("CodeSystem-fhir-cart.json", "unverified-codes.json"):
        path = reference_out / name
        if path.exists():
            floor.extra_files[name] = orjson.loads(path.read_bytes())
    return floor, total


def run_floor(study: Path, out: Path, floor: Floor) -> None:
    """Read the CSVs, look every row up, write the same NDJSON, bundles and files."""
    ndjson = out / "ndjson"
    bundles = out / "bundles"
    ndjson.mkdir(parents=True)
    bundles.mkdir()
    handles: dict[str, IO[bytes]] = {}

    def put(res: Json) -> None:
        rtype = res["resourceType"]
        handle = handles.get(rtype)
        if handle is None:
            handle = handles[rtype] = (ndjson / f"{rtype}.ndjson").open("wb")
        handle.write(orjson.dumps(res))
        handle.write(b"\n")

    count = 0
    entries: list[Json] = []

    def flush() -> None:
        nonlocal count, entries
        count += 1
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        path = bundles / f"bundle-{count:04d}.json"
        path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
        entries = []

    with (
        (study / "patients.csv").open(newline="", encoding="utf-8-sig") as pfile,
        (study / "events.csv").open(newline="", encoding="utf-8-sig") as efile,
    ):
        sids = [row["study_id"] for row in csv.DictReader(pfile)]
        groups = itertools.groupby(csv.DictReader(efile), key=itemgetter("study_id"))
        pending = next(groups, None)
        for sid in sids:
            rows: list[dict[str, str]] = []
            if pending is not None and pending[0] == sid:
                rows = list(pending[1])
                pending = next(groups, None)
            put(floor.patients[sid])
            mine = [floor.patient_entries[sid]]
            ranked = []
            for row in rows:
                key = (sid, row["event_id"])
                res = floor.events.get(key)
                if res is not None:
                    put(res)
                    ranked.append(floor.event_entries[key])
            ranked.sort(key=itemgetter(0))
            mine += [entry for _, entry in ranked]
            if entries and len(entries) + len(mine) > BUNDLE:
                flush()
            entries.extend(mine)
        if pending is not None:
            raise SystemExit(f"events of an unknown patient: {pending[0]}")
    if entries:
        flush()
    for handle in handles.values():
        handle.close()
    for name, data in floor.extra_files.items():
        (out / name).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


def same_tree(left: Path, right: Path) -> None:
    names = sorted(p.relative_to(left) for p in left.rglob("*") if p.is_file())
    other = sorted(p.relative_to(right) for p in right.rglob("*") if p.is_file())
    if names != other:
        raise SystemExit(f"the floor wrote other files: {set(names) ^ set(other)}")
    for name in names:
        if not filecmp.cmp(left / name, right / name, shallow=False):
            raise SystemExit(f"the floor wrote other bytes in {name}")


# -- other figures -----------------------------------------------------------------------------


def stages(study: Path, out: Path) -> dict[str, float]:
    """One run of the job's own steps, timed apart (what cli.map_command calls)."""
    started = time.perf_counter()
    mapping = load_study_mapping(CANONICAL)
    cases = read_study(study, mapping).cases
    read = time.perf_counter()
    ctx = mapping_context(extra=mapping.own_concepts())
    with NdjsonWriter(out / "ndjson") as writer:
        for resources in map_cases(ctx.with_style("relative"), cases):
            writer.write_all(resources)
    mapped = time.perf_counter()
    (out / "bundles").mkdir()
    bundles = transaction_bundles(map_cases(ctx.with_style("urn"), cases), size=BUNDLE)
    for n, bundle in enumerate(bundles, start=1):
        data = orjson.dumps(bundle, option=orjson.OPT_INDENT_2)
        (out / "bundles" / f"bundle-{n:04d}.json").write_bytes(data)
    done = time.perf_counter()
    return {
        "read_study_s": round(read - started, 3),
        "map_and_write_ndjson_s": round(mapped - read, 3),
        "map_again_and_write_bundles_s": round(done - mapped, 3),
    }


def _status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process. Not getrusage's ru_maxrss: Linux keeps
    that across fork and exec, so a child would report the parent's peak."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(study: Path, out: Path, trace: bool) -> None:
    """In a fresh process: RSS before the job, peak RSS (the process's high-water mark),
    or with ``trace`` the peak of Python allocations during the job (tracemalloc)."""
    gc.collect()
    got: dict[str, float] = {"rss_before_mib": _status_mib("VmRSS")}
    if trace:
        tracemalloc.start()
    run_cli(study, out)
    if trace:
        got["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    else:
        got["rss_peak_mib"] = _status_mib("VmHWM")
    print(json.dumps(got))


def peak_memory(study: Path, out: Path) -> dict[str, float]:
    got: dict[str, float] = {}
    for trace in (False, True):
        argv = [sys.executable, __file__, "--memory-child", str(study), str(out)]
        argv += ["--trace"] if trace else []
        done = subprocess.run(argv, check=True, capture_output=True, text=True)
        got |= json.loads(done.stdout.strip().splitlines()[-1])
        shutil.rmtree(out, ignore_errors=True)
    return {k: round(v, 1) for k, v in got.items()}


def cold_cli(study: Path, out: Path) -> float:
    exe = Path(sys.executable).with_name("fhir-cart")
    started = time.perf_counter()
    argv = [str(exe), "map", str(study), "-m", str(CANONICAL), "-o", str(out)]
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def validate_rate(floor: Floor, sample: int) -> float:
    built = list(itertools.islice(floor.events.values(), sample))
    started = time.perf_counter()
    for res in built:
        validate_resource(res)
    return len(built) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--validate-sample", type=int, default=2_000)
    parser.add_argument("--memory-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        study, out = args.memory_child
        memory_child(study, out, args.trace)
        return
    load_start = load()
    print(f"load average at start: {load_start}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-map-") as tmp:
        base = Path(tmp)
        study = base / "study"
        small = base / "study-small"
        write_study(cohort(args.patients), study, "csv")
        write_study(cohort(args.patients // 5), small, "csv")
        input_mib = sum(p.stat().st_size for p in study.iterdir()) / 2**20
        run_cli(study, base / "reference")  # warm-up, and what the floor must reproduce
        floor, total = build_floor(study, base / "reference")
        run_floor(study, base / "floor-check", floor)
        same_tree(base / "reference", base / "floor-check")
        output_mib = sum(p.stat().st_size for p in (base / "reference").rglob("*")) / 2**20
        for name in ("reference", "floor-check"):
            shutil.rmtree(base / name)
        gc.collect()
        gc.freeze()  # the floor's tables are not the job's garbage to scan
        out = base / "out"

        def clear() -> None:
            shutil.rmtree(out, ignore_errors=True)

        def ours() -> int:
            run_cli(study, out)
            return total

        def theirs() -> int:
            run_floor(study, out, floor)
            return total

        print(f"{args.patients:,} patients, {total:,} resources; {args.pairs} pairs", flush=True)
        pairs = alternate(args.pairs, ours, theirs, before=clear, label="map")
        clear()
        by_stage = stages(study, out)
        clear()
        cold = cold_cli(study, out)
        clear()
        memory = {
            str(args.patients // 5): peak_memory(small, base / "m1"),
            str(args.patients): peak_memory(study, base / "m2"),
        }
        validated = validate_rate(floor, args.validate_sample)
    load_end = load()
    ratio = pairs["ratio"]
    result = {
        "job": "fhir-cart map STUDY(canonical CSV) -m canonical.yaml -o OUT, in-process",
        "floor": "csv.DictReader over the same CSVs, row -> pre-built resource/entry lookup, "
        "orjson.dumps of the same NDJSON, bundles and files (byte-identical, checked)",
        "patients": args.patients,
        "resources": total,
        "input_mib": round(input_mib, 1),
        "output_mib": round(output_mib, 1),
        "pairs": args.pairs,
        "ratio_fhir_cart_over_floor": ratio,
        "fhir_cart_resources_per_s_median": pairs["ours_per_s_median"],
        "floor_resources_per_s_median": pairs["theirs_per_s_median"],
        "per_pair": pairs["pairs"],
        "fhir_cart_stages_one_run": by_stage,
        "cold_cli_subprocess_s": round(cold, 2),
        "memory_mib_by_patients": memory,
        "fhir_resources_validate_per_s": round(validated),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "python": sys.version.split()[0],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_map.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n"
    )
    print()
    print(f"{'patients / resources':<38}{args.patients:>10,} / {total:,}")
    print(f"{'input CSV / output':<38}{input_mib:>10.1f} MiB / {output_mib:.1f} MiB")
    ours_rate = result["fhir_cart_resources_per_s_median"]
    floor_rate = result["floor_resources_per_s_median"]
    print(f"{'fhir-cart map, whole job (median)':<38}{ours_rate:>10,} resources/s")
    print(f"{'plain-Python floor (median)':<38}{floor_rate:>10,} resources/s")
    print(
        f"{'ratio fhir_cart/floor min-med-max':<38}"
        f"{ratio['min']:>10} - {ratio['median']} - {ratio['max']}  ({args.pairs} pairs)"
    )
    print(f"{'one run by stage (s)':<38}{by_stage}")
    print(f"{'cold `fhir-cart map` subprocess':<38}{cold:>10.2f} s")
    for n, mem in memory.items():
        print(f"{'memory, ' + n + ' patients (MiB)':<38}{mem}")
    print(f"{'fhir.resources validation':<38}{round(validated):>10,} resources/s")
    print(f"{'load average start / end':<38}{load_start} / {load_end}")


if __name__ == "__main__":
    main()
