"""Push and pull against a real local FHIR server (sekmet-fhir), each as the whole process a
user runs beside bare httpx doing the same work, in alternating pairs; and NDJSON -> tables
beside fhiry.

    .venv/bin/python benchmarks/bench_sync.py [--patients 1000] [--pairs 5]
        [--table-patients 1000] [--table-pairs 5]

Input: a synthetic study of N patients (benchmarks/cohort.py) as the canonical CSV tables.
Every pair alternates which side runs first. Each side is a process of its own, started with
this machine's Python, timed from start to exit; its CPU time (user + system) comes from
``os.wait4`` on that process, its peak RSS from its VmHWM (read every 10 ms). Ratios are
fhir_cart throughput / baseline throughput (resources/s), min-median-max over the pairs.

1. push (``--pairs``): ``fhir-cart push STUDY -m canonical.yaml --server URL --cache
   fresh.sqlite`` (read and check the study, map, plan against the cache, send
   conditional-update transactions of 100 entries, 4 at a time, record every outcome) vs a
   bare process: read the same CSVs with csv.DictReader, then POST the same bundles (the
   bytes fhir_cart's own bundle builder made, serialised beforehand) with httpx, 4 at a
   time. Server state: each side of each pair pushes to its own fresh, empty sekmet server,
   started before the pair (untimed), so both sides find the same (empty) state.
2. pull (``--pairs``): one sekmet server holding the cohort (loaded untimed), which pulls do
   not change, so both sides of every pair find the same state. ``fhir-cart pull --server
   URL --search identifier=SYSTEM| --out DIR --cache fresh.sqlite`` (fetch, cache,
   reverse-map, write CSV tables) vs a bare httpx process running the same request plan
   (capabilities; the Patient search in pages of 1,000; per type, one
   ``subject=Patient/a,...`` search per 100 patients, 4 at a time, next links followed)
   and writing what it got as NDJSON with orjson. For reference, a bare httpx process
   running the per-patient plan fhir_cart used before (one search per type per patient,
   one at a time) is timed in each pair too. Requests are counted for each side (fhir_cart's
   in one extra, untimed run through a counting wrapper of httpx's transport).
3. NDJSON -> tables (``--table-pairs``, 0 to skip): fhir_cart's reverse mapping and CSV
   writer (``cases_from_fhir`` + ``write_study``, in this process, all resources in memory;
   ``fhir-cart tables`` as a process: benchmarks/bench_tables.py) vs fhiry's
   fastest path for the same NDJSON (each file's lines parsed with orjson into one Bundle,
   ``Fhiry.process_bundle_dict``, ``DataFrame.to_csv``), in this process. fhiry's own
   NDJSON reader is timed once on a tenth of the cohort, for reference.

The machine (CPU model, cores, memory, Python) and the load averages at start, end and at
each pair go into benchmarks/results/bench_sync.json: the machine is shared, judge the noise
by them.

This file is also the bare baselines' program (``_bare-push``, ``_bare-pull``,
``_bare-pull-per-patient``): its top level imports only the standard library, httpx and
orjson, so a bare process loads nothing of fhir_cart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CANONICAL = ROOT / "mappings" / "centres" / "canonical.yaml"
PYTHON = sys.executable
FHIR_CART = str(Path(sys.executable).parent / "fhir-cart")
CONCURRENCY = 4  # the server settings' default, which `fhir-cart push/pull URL` use
BUNDLE = 100  # likewise the default bundle size
CHUNK = 100  # patients per multi-valued search (fhir_cart.sync.pull.CHUNK)
PAGE = 1000  # _count of each search (fhir_cart.sync.pull.PAGE_SIZE)
FHIR = "application/fhir+json"
Json = dict[str, Any]
EVENT_TYPES = (
    "Condition",
    "MedicationAdministration",
    "Procedure",
    "Observation",
    "AdverseEvent",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationDispense",
    "Specimen",
)


# -- the bare baselines (run as processes of their own) ------------------------------------------


def read_rows(study: Path) -> int:
    """What the bare push reads of the input: every row of both tables."""
    rows = 0
    for name in ("patients.csv", "events.csv"):
        with (study / name).open(newline="", encoding="utf-8-sig") as handle:
            rows += sum(1 for _ in csv.DictReader(handle))
    return rows


async def bare_push(base: str, study: Path, bundles: Path, concurrency: int) -> int:
    read_rows(study)
    bodies = bundles.read_bytes().splitlines()
    gate = asyncio.Semaphore(concurrency)
    headers = {"Content-Type": FHIR, "Accept": FHIR}
    async with httpx.AsyncClient(timeout=300) as http:

        async def one(body: bytes) -> None:
            async with gate:
                response = await http.post(base, content=body, headers=headers)
                response.raise_for_status()

        await asyncio.gather(*(one(b) for b in bodies))
    return len(bodies)


class NdjsonOut:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.files: dict[str, Any] = {}
        self.count = 0

    def put(self, resource: Json) -> None:
        rtype = resource["resourceType"]
        if rtype not in self.files:
            self.files[rtype] = (self.out / f"{rtype}.ndjson").open("wb")
        self.files[rtype].write(orjson.dumps(resource) + b"\n")
        self.count += 1

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


def _matches(page: Json) -> list[Json]:
    return [
        e["resource"]
        for e in page.get("entry", ())
        if (e.get("search") or {}).get("mode", "match") == "match"
    ]


def _next(page: Json) -> str | None:
    return next((x["url"] for x in page.get("link", ()) if x.get("relation") == "next"), None)


def _patient_params(caps: Json) -> dict[str, str | None]:
    rest = (caps.get("rest") or [{}])[0]
    declared = {
        r.get("type"): {p.get("name") for p in r.get("searchParam", ())}
        for r in rest.get("resource", ())
    }
    return {
        t: next((n for n in ("subject", "patient") if n in declared.get(t, ())), None)
        for t in EVENT_TYPES
    }


async def bare_pull(base: str, query: str, out: Path, concurrency: int) -> tuple[int, int]:
    """fhir_cart's request plan with bare httpx; (resources written, requests)."""
    requests = 0
    sink = NdjsonOut(out)
    headers = {"Accept": FHIR, "Prefer": "handling=strict"}
    async with httpx.AsyncClient(timeout=300, headers=headers) as http:

        async def search(path: str, params: dict[str, str]) -> list[Json]:
            nonlocal requests
            requests += 1
            response = await http.get(f"{base}/{path}", params=params)
            found: list[Json] = []
            while True:
                response.raise_for_status()
                page = orjson.loads(response.content)
                found += _matches(page)
                link = _next(page)
                if link is None:
                    return found
                requests += 1
                response = await http.get(response.url.join(link))

        requests += 1
        params = _patient_params(orjson.loads((await http.get(f"{base}/metadata")).content))
        scanned = [t for t, p in params.items() if p is None]
        for resource in [r for t in scanned for r in await search(t, {"_count": str(PAGE)})]:
            sink.put(resource)
        name, _, value = query.partition("=")
        patients = await search("Patient", {name: value, "_count": str(PAGE)})
        for patient in patients:
            sink.put(patient)
        ids = [p["id"] for p in patients]
        gate = asyncio.Semaphore(concurrency)

        async def chunk(rtype: str, param: str, part: list[str]) -> list[Json]:
            refs = ",".join(f"Patient/{i}" for i in part)
            async with gate:
                return await search(rtype, {param: refs, "_count": str(PAGE)})

        searched = [(t, p) for t, p in params.items() if p is not None]
        found = await asyncio.gather(
            *(
                chunk(t, p, ids[i : i + CHUNK])
                for i in range(0, len(ids), CHUNK)
                for t, p in searched
            )
        )
        for resources in found:
            for resource in resources:
                sink.put(resource)
    sink.close()
    return sink.count, requests


def bare_pull_per_patient(base: str, query: str, out: Path) -> tuple[int, int]:
    """The per-patient plan fhir_cart's pull used before (one search per type per patient,
    one at a time), with bare httpx; (resources written, requests)."""
    requests = 0
    sink = NdjsonOut(out)

    def search(http: httpx.Client, url: str, params: dict[str, str]) -> list[Json]:
        nonlocal requests
        requests += 1
        response = http.get(url, params=params)
        found: list[Json] = []
        while True:
            response.raise_for_status()
            page = orjson.loads(response.content)
            found += _matches(page)
            link = _next(page)
            if link is None:
                return found
            requests += 1
            response = http.get(response.url.join(link))

    with httpx.Client(timeout=300, headers={"Accept": FHIR}) as http:
        requests += 1
        params = _patient_params(orjson.loads(http.get(f"{base}/metadata").content))
        scanned: dict[str, list[Json]] = {}
        for rtype in (t for t, p in params.items() if p is None):
            for resource in search(http, f"{base}/{rtype}", {"_count": "200"}):
                ref = (resource.get("subject") or resource.get("patient") or {}).get("reference")
                scanned.setdefault(str(ref).rsplit("/", 1)[-1], []).append(resource)
        name, _, value = query.partition("=")
        for patient in search(http, f"{base}/Patient", {name: value}):
            sink.put(patient)
            for resource in scanned.get(str(patient["id"]), ()):
                sink.put(resource)
            for rtype, param in params.items():
                if param is not None:
                    wanted = {param: f"Patient/{patient['id']}", "_count": "200"}
                    for resource in search(http, f"{base}/{rtype}", wanted):
                        sink.put(resource)
    sink.close()
    return sink.count, requests


def bare_main(argv: list[str]) -> None:
    kind, base = argv[0], argv[1]
    if kind == "_bare-push":
        sent = asyncio.run(bare_push(base, Path(argv[2]), Path(argv[3]), int(argv[4])))
        print(f"bundles {sent}")
        return
    if kind == "_bare-pull":
        got, requests = asyncio.run(bare_pull(base, argv[2], Path(argv[3]), int(argv[4])))
    else:
        got, requests = bare_pull_per_patient(base, argv[2], Path(argv[3]))
    print(f"resources {got} requests {requests}")


# -- processes, pairs, machine -------------------------------------------------------------------


@dataclass
class Ran:
    wall_s: float
    cpu_s: float
    rss_mib: float
    stdout: str


def _high_water_kib(pid: int) -> int:
    """VmHWM of a running process (0 once it has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_process(argv: list[str], tmp: Path) -> Ran:
    """Run ``argv`` to its exit: wall time, its CPU time (``os.wait4``) and its peak RSS.

    Peak RSS is the process's own VmHWM, read every 10 ms while it runs: ``ru_maxrss``
    would report this (large) harness's size, which a child started by vfork carries into
    its exec."""
    out, err = tmp / "proc.out", tmp / "proc.err"
    peak = 0
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _high_water_kib(proc.pid))
            time.sleep(0.01)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} exited {proc.returncode}:\n{err.read_text()[-3000:]}")
    return Ran(wall, usage.ru_utime + usage.ru_stime, peak / 1024, out.read_text())


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }


def uptime() -> str:
    done = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def pair(index: int, sides: dict[str, Callable[[], Ran]], label: str) -> dict[str, Any]:
    """Pair ``index``: 'ours' first in even pairs, the others first in odd ones."""
    order = list(sides)
    if index % 2:
        order = order[1:] + order[:1]
    row: dict[str, Any] = {"first": order[0], "load_1m": load()[0]}
    for name in order:
        ran = sides[name]()
        row[name] = {
            "wall_s": round(ran.wall_s, 3),
            "cpu_s": round(ran.cpu_s, 3),
            "peak_rss_mib": round(ran.rss_mib, 1),
        }
    row["ratio"] = round(row["bare"]["wall_s"] / row["ours"]["wall_s"], 4)
    row["cpu_ratio"] = round(row["ours"]["cpu_s"] / row["bare"]["cpu_s"], 3)
    text = ", ".join(f"{n} {row[n]['wall_s']} s (cpu {row[n]['cpu_s']} s)" for n in sides)
    print(
        f"  {label} pair {index + 1} ({row['first']} first): {text}; ratio {row['ratio']}",
        flush=True,
    )
    return row


def summarise(rows: list[dict[str, Any]], resources: int, sides: list[str]) -> dict[str, Any]:
    got: dict[str, Any] = {
        "ratio_fhir_cart_over_bare": spread([r["ratio"] for r in rows]),
        "cpu_ratio_fhir_cart_over_bare": spread([r["cpu_ratio"] for r in rows]),
    }
    for side in sides:
        walls = [r[side]["wall_s"] for r in rows]
        got[side] = {
            "resources_per_s_median": round(resources / statistics.median(walls)),
            "wall_s": spread(walls),
            "cpu_s": spread([r[side]["cpu_s"] for r in rows]),
            "peak_rss_mib": spread([r[side]["peak_rss_mib"] for r in rows], 1),
        }
    got["pairs"] = rows
    return got


def server_total(base: str, types: tuple[str, ...]) -> int:
    return sum(
        int(httpx.get(f"{base}/{t}", params={"_summary": "count"}, timeout=60).json()["total"])
        for t in types
    )


# -- push and pull -------------------------------------------------------------------------------

COUNTING = """
import sys, httpx
from fhir_cart import cli
sent = [0]
real = httpx.AsyncHTTPTransport.handle_async_request
async def counted(self, request):
    sent[0] += 1
    return await real(self, request)
httpx.AsyncHTTPTransport.handle_async_request = counted
code = cli.main(sys.argv[1:])
print(f"REQUESTS {sent[0]}")
sys.exit(code)
"""
"""fhir-cart's CLI with every request counted where it leaves httpx (untimed run only)."""


def prepare(study: Path, tmp: Path) -> tuple[int, Path, str]:
    """(resources, file of serialised bundles, patient query): what fhir_cart sends."""
    from fhir_cart.bundle import map_cases, transaction_bundles
    from fhir_cart.library.study_mapping import load_study_mapping
    from fhir_cart.mappers.context import mapping_context
    from fhir_cart.study import read_study
    from fhir_cart.sync.pull import EVENT_TYPES as PULLED

    if tuple(PULLED) != EVENT_TYPES:
        raise SystemExit(f"bench_sync.EVENT_TYPES is out of date: {PULLED}")
    mapping = load_study_mapping(CANONICAL)
    ctx = mapping_context(extra=mapping.own_concepts())
    read = read_study(study, mapping)
    if read.rejects:
        raise SystemExit(f"the generated study has rejects: {read.rejects[:3]}")
    bundles = list(transaction_bundles(map_cases(ctx, read.cases), size=BUNDLE, mode="update"))
    path = tmp / "bundles.ndjson"
    path.write_bytes(b"".join(orjson.dumps(b) + b"\n" for b in bundles))
    resources = sum(len(b["entry"]) for b in bundles)
    return resources, path, f"identifier={ctx.identifier_system('bench', 'patient')}|"


def bench_push(study: Path, bundles: Path, resources: int, pairs: int, tmp: Path) -> dict[str, Any]:
    from fhir_cart.devservers import SekmetServer

    rows = []
    for index in range(pairs):
        with SekmetServer() as ours_server, SekmetServer() as bare_server:
            cache = f"sqlite:///{tmp / f'push-{index}.sqlite'}"
            ours = [
                FHIR_CART,
                "push",
                str(study),
                "-m",
                str(CANONICAL),
                "--server",
                ours_server.base_url,
                "--cache",
                cache,
            ]
            bare = [
                PYTHON,
                __file__,
                "_bare-push",
                bare_server.base_url,
                str(study),
                str(bundles),
                str(CONCURRENCY),
            ]
            sides = {
                "ours": lambda a=ours: run_process(a, tmp),
                "bare": lambda a=bare: run_process(a, tmp),
            }
            rows.append(pair(index, sides, "push"))
            for server in (ours_server, bare_server):
                held = server_total(server.base_url, ("Patient", *EVENT_TYPES))
                if held != resources:
                    raise SystemExit(f"a server holds {held} resources, expected {resources}")
    return summarise(rows, resources, ["ours", "bare"])


def bench_pull(
    bundles: Path, resources: int, query: str, patients: int, pairs: int, tmp: Path
) -> dict[str, Any]:
    from fhir_cart.devservers import SekmetServer

    out = tmp / "pulled"
    rows = []
    with SekmetServer() as server:
        url = server.base_url
        asyncio.run(bare_push(url, tmp / "study", bundles, CONCURRENCY))  # untimed: the state
        software = httpx.get(f"{url}/metadata", timeout=60).json().get("software", {})
        runs = iter(range(10_000))

        def ours() -> Ran:
            cache = f"sqlite:///{tmp / f'pull-{next(runs)}.sqlite'}"
            shutil.rmtree(out, ignore_errors=True)
            # --types library: the library's types, as the bare baselines ask (by default a
            # pull also asks every other type the server can search by patient)
            ran = run_process(
                [
                    FHIR_CART,
                    "pull",
                    "--server",
                    url,
                    "--search",
                    query,
                    "--out",
                    str(out),
                    "--cache",
                    cache,
                    "--types",
                    "library",
                ],
                tmp,
            )
            with (out / "patients.csv").open() as handle:
                got = sum(1 for _ in handle) - 1
            if got != patients:
                raise SystemExit(f"fhir-cart pulled {got} patients, expected {patients}")
            return ran

        requests: dict[str, int] = {}

        def bare(kind: str) -> Ran:
            shutil.rmtree(out, ignore_errors=True)
            argv = [PYTHON, __file__, kind, url, query, str(out), str(CONCURRENCY)]
            ran = run_process(argv, tmp)
            words = ran.stdout.split()
            got, requests[kind] = int(words[1]), int(words[3])
            if got != resources:
                raise SystemExit(f"{kind} got {got} resources, expected {resources}")
            return ran

        for index in range(pairs):
            sides = {
                "ours": ours,
                "bare": lambda: bare("_bare-pull"),
                "per_patient": lambda: bare("_bare-pull-per-patient"),
            }
            row = pair(index, sides, "pull")
            row["ratio_vs_per_patient"] = round(
                row["per_patient"]["wall_s"] / row["ours"]["wall_s"], 4
            )
            rows.append(row)
        # fhir_cart's requests, counted in one more (untimed) run
        shutil.rmtree(out, ignore_errors=True)
        counted = run_process(
            [
                PYTHON,
                "-c",
                COUNTING,
                "pull",
                "--server",
                url,
                "--search",
                query,
                "--out",
                str(out),
                "--cache",
                f"sqlite:///{tmp / 'count.sqlite'}",
                "--types",
                "library",
            ],
            tmp,
        )
        requests["fhir_cart"] = int(counted.stdout.strip().rsplit(" ", 1)[-1])
    got = summarise(rows, resources, ["ours", "bare", "per_patient"])
    got["ratio_fhir_cart_over_per_patient_plan"] = spread([r["ratio_vs_per_patient"] for r in rows])
    got["requests"] = {
        "fhir_cart": requests["fhir_cart"],
        "bare_same_plan": requests["_bare-pull"],
        "bare_per_patient_plan": requests["_bare-pull-per-patient"],
    }
    got["requests_per_patient_per_type"] = {
        k: round(v / patients / len(EVENT_TYPES), 4) for k, v in got["requests"].items()
    }
    got["server_software"] = software
    return got


# -- NDJSON -> tables ----------------------------------------------------------------------------


def fhiry_tables(ndjson: Path, out: Path) -> int:
    from fhiry import Fhiry

    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for path in sorted(ndjson.glob("*.ndjson")):
        with path.open("rb") as handle:
            entries = [{"resource": orjson.loads(line)} for line in handle if line.strip()]
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        frame = Fhiry().process_bundle_dict(bundle)
        frame.to_csv(out / f"{path.stem}.csv", index=False)
        rows += len(frame)
    return rows


def normalize_tables(ndjson: Path, out: Path) -> int:
    """The plain flatten: orjson lines -> pandas.json_normalize -> DataFrame.to_csv, one
    table per resource type (no checking, no concepts: the floor of FHIR -> tables)."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for path in sorted(ndjson.glob("*.ndjson")):
        with path.open("rb") as handle:
            items = [orjson.loads(line) for line in handle if line.strip()]
        frame = pd.json_normalize(items)
        frame.to_csv(out / f"{path.stem}.csv", index=False)
        rows += len(frame)
    return rows


def fhiry_ndjson_reader(ndjson: Path) -> float:
    """fhiry's own NDJSON path (Fhirndjson.process_source), resources/s, one run."""
    from fhiry import Fhirndjson

    total = sum(1 for p in ndjson.glob("*.ndjson") for _ in p.open("rb"))
    flattener = Fhirndjson()
    flattener.folder = str(ndjson)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        flattener.process_source()
    return total / (time.perf_counter() - started)


def bench_tables(patients: int, pairs: int, tmp: Path) -> dict[str, Any]:
    from cohort import cohort
    from pairs import alternate

    from fhir_cart.bundle import NdjsonWriter, map_cases, read_ndjson
    from fhir_cart.mappers.context import mapping_context
    from fhir_cart.mappers.from_fhir import cases_from_fhir
    from fhir_cart.writers import write_study

    ctx = mapping_context(ref_style="relative")
    ndjson = tmp / "ndjson"
    with NdjsonWriter(ndjson) as writer:
        for resources in map_cases(ctx, cohort(patients)):
            writer.write_all(resources)
    total = sum(writer.counts.values())
    small = tmp / "ndjson-small"
    with NdjsonWriter(small) as writer:
        for resources in map_cases(ctx, cohort(max(1, patients // 10))):
            writer.write_all(resources)
    out = tmp / "tables"

    def ours() -> int:
        result = cases_from_fhir(ctx, read_ndjson(sorted(ndjson.glob("*.ndjson"))))
        write_study(result.cases, out, "csv")
        if len(result.cases) != patients or result.unmapped:
            raise SystemExit("reverse mapping lost patients or resources")
        return total

    def theirs() -> int:
        rows = fhiry_tables(ndjson, out)
        if rows != total:
            raise SystemExit(f"fhiry gave {rows} rows for {total} resources")
        return total

    def clear() -> None:
        shutil.rmtree(out, ignore_errors=True)

    def plain() -> int:
        rows = normalize_tables(ndjson, out)
        if rows != total:
            raise SystemExit(f"json_normalize gave {rows} rows for {total} resources")
        return total

    got = alternate(pairs, ours, theirs, before=clear, label="tables")
    got["normalize"] = alternate(pairs, ours, plain, before=clear, label="tables/normalize")
    got["resources"] = total
    got["fhiry_ndjson_reader_per_s_one_run"] = round(fhiry_ndjson_reader(small))
    got["fhiry_ndjson_reader_resources"] = sum(writer.counts.values())
    return got


def tables_result(got: dict[str, Any], patients: int) -> dict[str, Any]:
    """The NDJSON -> tables figures of :func:`bench_tables`, as written to the results."""
    normalize = got["normalize"]
    return {
        "job": "cases_from_fhir + write_study(csv) over NDJSON (in this process)",
        "baseline": "fhiry: orjson lines -> one Bundle per file -> "
        "Fhiry.process_bundle_dict -> DataFrame.to_csv",
        "patients": patients,
        "resources": got["resources"],
        "ratio_fhir_cart_over_fhiry": got["ratio"],
        "fhir_cart_resources_per_s_median": got["ours_per_s_median"],
        "fhiry_resources_per_s_median": got["theirs_per_s_median"],
        "per_pair": got["pairs"],
        "fhiry_ndjson_reader_per_s_one_run": got["fhiry_ndjson_reader_per_s_one_run"],
        "fhiry_ndjson_reader_resources": got["fhiry_ndjson_reader_resources"],
        "plain_flatten": {
            "baseline": "orjson lines -> pandas.json_normalize -> DataFrame.to_csv per type",
            "ratio_fhir_cart_over_plain": normalize["ratio"],
            "fhir_cart_resources_per_s_median": normalize["ours_per_s_median"],
            "plain_resources_per_s_median": normalize["theirs_per_s_median"],
            "per_pair": normalize["pairs"],
        },
    }


def print_tables(tables: dict[str, Any]) -> None:
    plain = tables["plain_flatten"]["ratio_fhir_cart_over_plain"]
    for name, ratio in (("fhiry", tables["ratio_fhir_cart_over_fhiry"]), ("plain", plain)):
        print(f"NDJSON->tables vs {name}: {ratio['min']} - {ratio['median']} - {ratio['max']}")


def tables_only(patients: int, pairs: int) -> None:
    load_start = load()
    with tempfile.TemporaryDirectory() as folder:
        got = bench_tables(patients, pairs, Path(folder))
    result = {
        "command": ".venv/bin/python benchmarks/bench_sync.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        **tables_result(got, patients),
        "load_average_start": load_start,
        "load_average_end": load(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_tables.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n"
    )
    print_tables(result)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_bare"):
        bare_main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=5, help="pairs for push and pull")
    parser.add_argument("--table-patients", type=int, default=1000)
    parser.add_argument("--table-pairs", type=int, default=5, help="0: skip NDJSON -> tables")
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="only NDJSON -> tables (vs fhiry and a plain json_normalize flatten), written to "
        "results/bench_tables.json",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.tables_only:
        tables_only(args.table_patients, args.table_pairs)
        return
    from cohort import cohort

    from fhir_cart.devservers.fhir_server import SEKMET_VERSION
    from fhir_cart.writers import write_study

    load_start, uptime_start = load(), uptime()
    print(f"{uptime_start}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as name:
        tmp = Path(name)
        study = tmp / "study"
        write_study(cohort(args.patients), study, "csv")
        resources, bundles, query = prepare(study, tmp)
        print(f"{args.patients:,} patients, {resources:,} resources", flush=True)
        push = bench_push(study, bundles, resources, args.pairs, tmp)
        pull = bench_pull(bundles, resources, query, args.patients, args.pairs, tmp)
        tables = (
            bench_tables(args.table_patients, args.table_pairs, tmp) if args.table_pairs else None
        )
    load_end, uptime_end = load(), uptime()
    command = "benchmarks/bench_sync.py " + " ".join(sys.argv[1:])
    result: dict[str, Any] = {
        "command": f".venv/bin/python {command}".strip(),
        "machine": machine(),
        "server": {
            "name": "sekmet-fhir",
            "package_version": SEKMET_VERSION,
            "software": pull.pop("server_software"),
            "where": "127.0.0.1, on the same 2 cores as the client",
        },
        "patients": args.patients,
        "resources": resources,
        "push": {
            "job": "fhir-cart push STUDY -m canonical.yaml --server URL --cache fresh.sqlite "
            "(a process)",
            "baseline": "a bare process: csv.DictReader over the same CSVs + httpx POST of the "
            f"same bundles ({BUNDLE} entries, {CONCURRENCY} at a time)",
            "server_state": "each side of each pair pushes to its own fresh, empty sekmet "
            "server started before the pair (untimed)",
            **push,
        },
        "pull": {
            "job": "fhir-cart pull --server URL --search identifier=SYSTEM| --out DIR "
            "--cache fresh.sqlite (a process; CSV tables out)",
            "baseline": "a bare httpx process running the same request plan (Patient search, "
            f"then per type one subject=Patient/a,... search per {CHUNK} patients, "
            f"{CONCURRENCY} at a time), NDJSON out",
            "reference": "per_patient: a bare httpx process running the old per-patient plan "
            "(one search per type per patient, one at a time), NDJSON out",
            "server_state": "one sekmet server holding the cohort, loaded once (untimed); "
            "pulls do not change it",
            **pull,
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "uptime_start": uptime_start,
        "uptime_end": uptime_end,
    }
    if tables is not None:
        result["tables"] = tables_result(tables, args.table_patients)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_sync.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n"
    )
    print()
    print(f"{args.patients:,} patients, {resources:,} resources; sekmet-fhir {SEKMET_VERSION}")
    for part in ("push", "pull"):
        got = result[part]
        ratio, cpu = got["ratio_fhir_cart_over_bare"], got["cpu_ratio_fhir_cart_over_bare"]
        print(
            f"{part}: fhir_cart {got['ours']['resources_per_s_median']:,}/s, bare "
            f"{got['bare']['resources_per_s_median']:,}/s, ratio {ratio['min']} - "
            f"{ratio['median']} - {ratio['max']}; CPU fhir_cart/bare {cpu['median']}; "
            f"peak RSS {got['ours']['peak_rss_mib']['max']} / "
            f"{got['bare']['peak_rss_mib']['max']} MiB"
        )
    pull = result["pull"]
    print(
        f"pull requests: {pull['requests']}; vs the per-patient plan: "
        f"{pull['ratio_fhir_cart_over_per_patient_plan']}"
    )
    if tables is not None:
        print_tables(result["tables"])
    print(f"load average start / end: {load_start} / {load_end}; wall {result['wall_s']} s")


if __name__ == "__main__":
    main()
