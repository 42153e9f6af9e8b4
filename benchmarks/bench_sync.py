"""Benchmarks against the real local FHIR server, each beside a baseline, in alternating pairs.

    .venv/bin/python benchmarks/bench_sync.py [--patients 1000] [--pairs 3] [--table-pairs 5]

Input: a synthetic study of N patients (benchmarks/cohort.py) as the canonical CSV tables.
Every pair alternates which side runs first; each figure is min-median-max of the ratio
fhir_cart throughput / baseline throughput (resources/s) over the pairs.

1. push (``--pairs``): the whole user job, ``fhir_cart.cli.main(["push", STUDY, "-m",
   canonical.yaml, "--server", URL, "--cache", fresh SQLite])`` -- read and check the study,
   map, plan against the cache, send conditional-update transaction bundles (100 entries,
   concurrency 4), record every outcome -- vs bare httpx: read the same CSVs with
   csv.DictReader, then POST the same bundles (built untimed from the same study;
   serialised with orjson in the timed part) at the same concurrency. Each side pushes to a
   fresh local sekmet server that the harness starts (start-up untimed).
2. pull (``--pairs``), on the server fhir_cart pushed to in the same pair: the whole user
   job, ``cli.main(["pull", "--server", URL, "--search", "identifier=<system>|", "--out",
   DIR, "--cache", fresh SQLite])`` -- fetch, cache, reverse-map, write CSV tables -- vs bare
   httpx making the same requests in the same order (capabilities; types the server cannot
   search by patient read by type once; the Patient search; then per patient one paged
   search per event type, sequentially as fhir_cart does) and writing the resources
   received as NDJSON with orjson.
3. NDJSON -> tables (``--table-pairs``): fhir_cart's reverse mapping and CSV writer
   (``cases_from_fhir`` + ``write_study``; no CLI command does only this) vs fhiry's fastest
   path for the same NDJSON: each file's lines parsed with orjson into one Bundle,
   ``Fhiry.process_bundle_dict`` (pandas json_normalize and fhiry's clean-up), the frame
   written with ``DataFrame.to_csv``. fhiry's own NDJSON reader (``Fhirndjson``, one
   json_normalize per line) is timed once on a tenth of the cohort, for reference.

Load averages at start and end go into the results (the machine is shared).
Results: benchmarks/results/bench_sync.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cohort import cohort
from pairs import alternate, load, one_pair, summary

from fhir_cart import cli
from fhir_cart.bundle import NdjsonWriter, map_cases, read_ndjson, transaction_bundles
from fhir_cart.mappers.context import mapping_context
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.readers import read_study
from fhir_cart.study_mapping import load_study_mapping
from fhir_cart.sync.pull import EVENT_TYPES
from fhir_cart.testing import SekmetServer
from fhir_cart.writers import write_study

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
CANONICAL = ROOT / "mappings" / "centres" / "canonical.yaml"
CONCURRENCY = 4  # the server settings' default, which `fhir-cart push URL` uses
BUNDLE = 100
HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
Json = dict[str, Any]


def quiet_cli(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"fhir-cart {argv[0]} exited {code}")


def read_rows(study: Path) -> int:
    """What the baselines read of the input: every row of both tables."""
    rows = 0
    for name in ("patients.csv", "events.csv"):
        with (study / name).open(newline="", encoding="utf-8-sig") as handle:
            rows += sum(1 for _ in csv.DictReader(handle))
    return rows


# -- push ----------------------------------------------------------------------------------------


async def bare_push(base: str, bundles: list[Json]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(timeout=120) as http:

        async def one(bundle: Json) -> None:
            async with gate:
                response = await http.post(base, content=orjson.dumps(bundle), headers=HEADERS)
                response.raise_for_status()

        await asyncio.gather(*(one(b) for b in bundles))


# -- pull ----------------------------------------------------------------------------------------


def _search(http: httpx.Client, url: str, params: dict[str, str] | None) -> Iterator[Json]:
    response = http.get(url, params=params)
    while True:
        response.raise_for_status()
        page = orjson.loads(response.content)
        for entry in page.get("entry", ()):
            if (entry.get("search") or {}).get("mode", "match") == "match":
                yield entry["resource"]
        link = next((x["url"] for x in page.get("link", ()) if x.get("relation") == "next"), None)
        if link is None:
            return
        response = http.get(httpx.URL(str(response.url)).join(link))


def bare_pull(base: str, query: str, out: Path) -> int:
    """The requests fhir_cart's pull makes, in its order, with resources written as NDJSON."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    count = 0

    def put(resource: Json) -> None:
        nonlocal count
        rtype = resource["resourceType"]
        if rtype not in files:
            files[rtype] = (out / f"{rtype}.ndjson").open("wb")
        files[rtype].write(orjson.dumps(resource) + b"\n")
        count += 1

    with httpx.Client(timeout=120, headers={"Accept": "application/fhir+json"}) as http:
        caps = orjson.loads(http.get(f"{base}/metadata").content)
        rest = (caps.get("rest") or [{}])[0]
        declared = {r.get("type"): {p.get("name") for p in r.get("searchParam", ())}
                    for r in rest.get("resource", ())}  # fmt: skip
        params = {t: next((n for n in ("subject", "patient") if n in declared.get(t, ())), None)
                  for t in EVENT_TYPES}  # fmt: skip
        scanned: dict[str, list[Json]] = {}  # types without a patient search: read by type
        for rtype in (t for t, p in params.items() if p is None):
            for resource in _search(http, f"{base}/{rtype}", {"_count": "200"}):
                ref = (resource.get("subject") or resource.get("patient") or {}).get("reference")
                scanned.setdefault(str(ref).rsplit("/", 1)[-1], []).append(resource)
        name, _, value = query.partition("=")
        for patient in _search(http, f"{base}/Patient", {name: value}):
            put(patient)
            for resource in scanned.get(str(patient["id"]), ()):
                put(resource)
            for rtype, param in params.items():
                if param is not None:
                    search = {param: f"Patient/{patient['id']}", "_count": "200"}
                    for resource in _search(http, f"{base}/{rtype}", search):
                        put(resource)
    for handle in files.values():
        handle.close()
    return count


def bench_push_pull(study: Path, patients: int, pairs: int, tmp: Path) -> dict[str, Any]:
    mapping = load_study_mapping(CANONICAL)
    ctx = mapping_context(extra=mapping.own_concepts())
    cases = read_study(study, mapping).cases
    bundles = list(transaction_bundles(map_cases(ctx, cases), size=BUNDLE, mode="update"))
    resources = sum(len(b["entry"]) for b in bundles)
    del cases
    query = f"identifier={ctx.identifier_system('bench', 'patient')}|"
    push_rows: list[dict[str, Any]] = []
    pull_rows: list[dict[str, Any]] = []
    out = tmp / "pulled"
    for index in range(pairs):
        with SekmetServer() as ours_server, SekmetServer() as bare_server:

            def push_ours(url: str = ours_server.base_url, i: int = index) -> int:
                cache = f"sqlite:///{tmp / f'push-{i}.sqlite'}"
                quiet_cli(["push", str(study), "-m", str(CANONICAL), "--server", url,
                           "--cache", cache])  # fmt: skip
                return resources

            def push_bare(url: str = bare_server.base_url) -> int:
                read_rows(study)
                asyncio.run(bare_push(url, bundles))
                return resources

            push_rows.append(one_pair(index, push_ours, push_bare, label="push"))
            url = ours_server.base_url

            def pull_ours(url: str = url, i: int = index) -> int:
                cache = f"sqlite:///{tmp / f'pull-{i}.sqlite'}"
                quiet_cli(["pull", "--server", url, "--search", query, "--out", str(out),
                           "--cache", cache])  # fmt: skip
                with (out / "patients.csv").open() as handle:
                    got = sum(1 for _ in handle) - 1
                if got != patients:
                    raise SystemExit(f"pulled {got} patients, expected {patients}")
                return resources

            def pull_bare(url: str = url) -> int:
                got = bare_pull(url, query, out)
                if got != resources:
                    raise SystemExit(f"bare pull got {got} resources, expected {resources}")
                return got

            def clear() -> None:
                shutil.rmtree(out, ignore_errors=True)

            pull_rows.append(one_pair(index, pull_ours, pull_bare, before=clear, label="pull"))
    return {"resources": resources, "push": summary(push_rows), "pull": summary(pull_rows)}


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

    got = alternate(pairs, ours, theirs, before=clear, label="tables")
    got["resources"] = total
    got["fhiry_ndjson_reader_per_s_one_run"] = round(fhiry_ndjson_reader(small))
    got["fhiry_ndjson_reader_resources"] = sum(writer.counts.values())
    return got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=3, help="pairs for push and pull")
    parser.add_argument("--table-patients", type=int, default=1000)
    parser.add_argument("--table-pairs", type=int, default=5)
    args = parser.parse_args()
    load_start = load()
    print(f"load average at start: {load_start}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        base = Path(tmp)
        study = base / "study"
        write_study(cohort(args.patients), study, "csv")
        sync = bench_push_pull(study, args.patients, args.pairs, base)
        tables = bench_tables(args.table_patients, args.table_pairs, base)
    load_end = load()
    result = {
        "patients": args.patients,
        "resources": sync["resources"],
        "push": {
            "job": "fhir-cart push STUDY -m canonical.yaml --server URL --cache fresh-sqlite",
            "baseline": "csv.DictReader over the same CSVs + bare httpx POST of the same "
            f"bundles ({BUNDLE} entries, concurrency {CONCURRENCY}), fresh server per side",
            "ratio_fhir_cart_over_bare": sync["push"]["ratio"],
            "fhir_cart_resources_per_s_median": sync["push"]["ours_per_s_median"],
            "bare_httpx_resources_per_s_median": sync["push"]["theirs_per_s_median"],
            "per_pair": sync["push"]["pairs"],
        },
        "pull": {
            "job": "fhir-cart pull --server URL --search identifier=SYSTEM| --out DIR "
            "--cache fresh-sqlite (CSV tables)",
            "baseline": "bare httpx, the same requests in the same order, NDJSON out",
            "ratio_fhir_cart_over_bare": sync["pull"]["ratio"],
            "fhir_cart_resources_per_s_median": sync["pull"]["ours_per_s_median"],
            "bare_httpx_resources_per_s_median": sync["pull"]["theirs_per_s_median"],
            "per_pair": sync["pull"]["pairs"],
        },
        "tables": {
            "job": "cases_from_fhir + write_study(csv) over NDJSON",
            "baseline": "fhiry: orjson lines -> one Bundle per file -> "
            "Fhiry.process_bundle_dict -> DataFrame.to_csv",
            "patients": args.table_patients,
            "resources": tables["resources"],
            "ratio_fhir_cart_over_fhiry": tables["ratio"],
            "fhir_cart_resources_per_s_median": tables["ours_per_s_median"],
            "fhiry_resources_per_s_median": tables["theirs_per_s_median"],
            "per_pair": tables["pairs"],
            "fhiry_ndjson_reader_per_s_one_run": tables["fhiry_ndjson_reader_per_s_one_run"],
            "fhiry_ndjson_reader_resources": tables["fhiry_ndjson_reader_resources"],
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "python": sys.version.split()[0],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_sync.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n"
    )
    print()
    print(f"{args.patients:,} patients, {sync['resources']:,} resources")
    print(f"{'part':<16}{'fhir_cart/s':>12}{'baseline/s':>12}   ratio min - median - max")
    for part, key in (("push", "push"), ("pull", "pull"), ("NDJSON->tables", "tables")):
        got = result[key]
        assert isinstance(got, dict)
        rates = [v for k, v in got.items() if k.endswith("resources_per_s_median")]
        ratio = next(v for k, v in got.items() if k.startswith("ratio_"))
        print(
            f"{part:<16}{rates[0]:>12,}{rates[1]:>12,}   "
            f"{ratio['min']} - {ratio['median']} - {ratio['max']}"
        )
    print(f"fhiry's NDJSON reader (one run): {tables['fhiry_ndjson_reader_per_s_one_run']:,}/s")
    print(f"load average start / end: {load_start} / {load_end}; wall {result['wall_s']} s")


if __name__ == "__main__":
    main()
