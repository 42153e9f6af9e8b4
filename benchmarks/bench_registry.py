"""Benchmark: the real ``fhir-cart registry build`` process on truth-labelled centre files,
with the linkage quality it reaches, its wall time and its peak memory.

    .venv/bin/python benchmarks/bench_registry.py [--persons 3000 30000] [--centres 10]
        [--profile 3000]

For each size, the project's generator (:func:`fhir_cart.devservers.registry_data.make_registry`,
``with_names``: names misspelt, transliterated, in capitals or missing; dates mistyped,
transposed, shifted or missing; sex flipped; 15 % of persons at 2-3 centres; 30 % of records
with the shared insurance number) writes one CSV per centre and a mapping for it (one
layout, SYNTHETIC). Generating and writing the files is not timed. Then ``fhir-cart registry
build`` runs as its own process (start-up, reading the files, linkage, merge, protection and
every output included); its wall time is measured around the process, its peak RSS is the
child's own (``os.wait4``), and its RSS is sampled every 0.5 s from /proc to show when the
peak comes. Quality is computed from the build's own output (``registry-ids.json``: registry
id -> centre record pseudonyms) against the generator's truth:

- pair precision / recall / F1: over every pair of centre records put in one patient;
- cluster precision / recall / F1: the share of the build's patients whose records are
  exactly one true person's records, and the share of true persons recovered exactly
  (singletons included).

``--profile N``: one more build of N persons under cProfile, cumulative seconds of the
build's stages (reading, linkage, merge and protection, quality, FHIR artefacts, writing).

Results: benchmarks/results/bench_registry.json (machine, load averages, commands).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
KEY = "benchmark-key-not-secret-0123456789abcdef"
FHIR_CART = Path(sys.executable).parent / "fhir-cart"
SEED = 2026

MAPPING = """# SYNTHETIC benchmark centre: one wide row per patient, ISO dates.
centre: {centre}
date_formats: ["%Y-%m-%d"]
patient_attributes:
  national_id: {{label: Insurance number (shared identifier), type: text}}
  given_name: {{label: Given name, type: text}}
  family_name: {{label: Family name, type: text}}
patients:
  columns: {{study_id: id, sex: sex, birth_date: born, national_id: insurance,
            given_name: given, family_name: family}}
events:
  - name: diagnosis
    concept: diagnosis
    columns: {{value: diagnosis, when_date: diagnosed}}
    values:
      value: {{B-ALL: b_all}}
  - name: cart_infusion
    concept: cart_infusion
    columns: {{when_date: infused, cell_dose: dose}}
    units: {{cell_dose: "10*6/kg"}}
  - name: hsct
    concept: hsct
    columns: {{when_date: transplanted}}
"""

HEADER = [
    "id",
    "sex",
    "born",
    "insurance",
    "given",
    "family",
    "diagnosis",
    "diagnosed",
    "infused",
    "dose",
    "transplanted",
]


def _write_centres(persons: int, centres: int, folder: Path) -> dict[tuple[str, str], int]:
    """Centre files, mappings and the registry file in ``folder``; the truth returned."""
    from fhir_cart.devservers.registry_data import make_registry

    data = make_registry(persons, centres=centres, seed=SEED, identifiers=0.3, with_names=True)
    (folder / "mappings").mkdir()
    for centre, cases in data.cases.items():
        (folder / "mappings" / f"{centre}.yaml").write_text(MAPPING.format(centre=centre))
        with (folder / f"{centre}.csv").open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(HEADER)
            for case in cases:
                writer.writerow(_row(case))
    centre_list = "\n".join(
        f"  - {{id: {c}, mapping: mappings/{c}.yaml, data: {c}.csv}}" for c in data.cases
    )
    (folder / "registry.yaml").write_text(
        "name: Benchmark registry (SYNTHETIC)\nid: bench\ncentres:\n"
        f"{centre_list}\n"
        "linkage:\n  identifiers: [national_id]\n  names: [given_name, family_name]\n"
        "outputs:\n  formats: [parquet]\n"
    )
    return data.truth


def _row(case: Any) -> list[str]:
    patient = case.patient
    first = {e.concept: e for e in case.events}

    def day(concept: str) -> str:
        event = first.get(concept)
        return "" if event is None or event.when is None else event.when.date.isoformat()

    cart = first.get("cart_infusion")
    return [
        patient.study_id,
        patient.sex or "",
        "" if patient.birth_date is None else patient.birth_date.isoformat(),
        str(patient.attributes.get("national_id", "")),
        str(patient.attributes.get("given_name", "")),
        str(patient.attributes.get("family_name", "")),
        "B-ALL" if "diagnosis" in first else "",
        day("diagnosis"),
        day("cart_infusion"),
        "" if cart is None else str(cart.attributes.get("cell_dose", "")),
        day("hsct"),
    ]


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _run(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The command as a process: wall seconds, its peak RSS (wait4), CPU seconds, and
    its RSS sampled every 0.5 s."""
    samples: list[tuple[float, float]] = []
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(child.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            rss = _rss_mib(child.pid)
            if rss is not None:
                samples.append((round(time.perf_counter() - started, 1), round(rss, 1)))

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    reader.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    text = b"".join(output).decode(errors="replace")
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}):\n{text[-3000:]}")
    peak_at = max(samples, key=lambda s: s[1])[0] if samples else None
    return {
        "wall_seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "peak_sampled_at_s": peak_at,
        "rss_samples_mib": samples[:: max(1, len(samples) // 40)],
        "output_tail": text.strip().splitlines()[-3:],
    }


def _quality(truth: dict[tuple[str, str], int], out: Path) -> dict[str, Any]:
    from fhir_cart.registry.pseudonyms import Pseudonymiser

    key = Pseudonymiser(KEY.encode())
    person_of = {key.patient(c, s): person for (c, s), person in truth.items()}
    ledger = json.loads((out / "registry-ids.json").read_text())
    clusters = [sorted(members) for members in ledger["patients"].values()]
    predicted = {(a, b) for m in clusters for i, a in enumerate(m) for b in m[i + 1 :]}
    by_person: dict[int, list[str]] = {}
    for pseudonym, person in person_of.items():
        by_person.setdefault(person, []).append(pseudonym)
    true_clusters = {tuple(sorted(m)) for m in by_person.values()}
    actual = {(a, b) for m in true_clusters for i, a in enumerate(m) for b in m[i + 1 :]}
    found = {tuple(m) for m in clusters}
    missing = set(person_of) - {p for m in clusters for p in m}
    return {
        "records": len(person_of),
        "records_missing_from_output": len(missing),
        "true_pairs": len(actual),
        "predicted_pairs": len(predicted),
        **_prf("pair", len(predicted & actual), len(predicted), len(actual)),
        "true_clusters": len(true_clusters),
        "predicted_clusters": len(found),
        **_prf("cluster", len(found & true_clusters), len(found), len(true_clusters)),
    }


def _prf(prefix: str, hits: int, predicted: int, actual: int) -> dict[str, float]:
    precision = hits / predicted if predicted else 0.0
    recall = hits / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {
        f"{prefix}_precision": round(precision, 4),
        f"{prefix}_recall": round(recall, 4),
        f"{prefix}_f1": round(f1, 4),
    }


def _env(folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FHIR_CART_REGISTRY_KEY": KEY,
        "FHIR_CART_DATA_DIR": str(folder / "data"),
        "COLUMNS": "120",
        "SOURCE_DATE_EPOCH": "1764547200",
    }


def _write_truth(
    persons: int, centres: int, folder: Path
) -> tuple[dict[tuple[str, str], int], dict[str, Any]]:
    """The independent generator's centres (benchmarks/registry_truth.py, nine layouts)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import registry_truth

    people, truth = registry_truth.make_persons(persons, centres=centres, seed=SEED)
    registry_truth.write_centres(people, truth, folder, seed=SEED, centres=centres)
    extra = {
        "generated": registry_truth.describe(people, truth),
        "twins": truth.twins,
        "mixups": truth.mixups,
    }
    return truth.person_of, extra


def measure(persons: int, centres: int, data: str = "own") -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        extra: dict[str, Any] = {}
        if data == "truth":
            truth, extra = _write_truth(persons, centres, folder)
        else:
            truth = _write_centres(persons, centres, folder)
        size = sum(p.stat().st_size for p in folder.glob("c*.*") if p.is_file())
        size = max(size, sum(p.stat().st_size for p in folder.glob("*.csv")))
        command = [
            str(FHIR_CART),
            "registry",
            "build",
            str(folder / "registry.yaml"),
            "-o",
            str(folder / "out"),
            "--work",
            str(folder / "work"),
        ]
        load = os.getloadavg()[0]
        run = _run(command, _env(folder))
        return {
            "persons": persons,
            "centres": centres,
            "centre_files_mib": round(size / 2**20, 1),
            "command": "fhir-cart registry build registry.yaml -o out --work work",
            "load_at_start": round(load, 1),
            "load_at_end": round(os.getloadavg()[0], 1),
            **run,
            **_quality(truth, folder / "out"),
            **({} if not extra else _twins(truth, extra, folder / "out")),
            **({"generated": extra["generated"]} if extra else {}),
        }


def _twins(truth: dict[tuple[str, str], int], extra: dict[str, Any], out: Path) -> dict[str, Any]:
    """Twin pairs put into one registry patient (with and without an identifier mix-up),
    and the mix-ups sent to review as 'identifier contradicted'."""
    from fhir_cart.registry.pseudonyms import Pseudonymiser

    key = Pseudonymiser(KEY.encode())
    person_of = {key.patient(c, s): person for (c, s), person in truth.items()}
    ledger = json.loads((out / "registry-ids.json").read_text())
    persons_in = [{person_of[m] for m in members} for members in ledger["patients"].values()]
    mixed = {frozenset((truth[(c, s)], twin)) for c, s, twin in extra["mixups"]}
    merged = [frozenset(pair) for pair in extra["twins"] if any(set(pair) <= p for p in persons_in)]
    review = out / "reports" / "review.csv"
    contradicted = 0
    if review.exists():
        with review.open() as stream:
            for row in csv.DictReader(stream):
                if row.get("reason") == "identifier contradicted":
                    pair = {person_of.get(row["left"]), person_of.get(row["right"])}
                    contradicted += frozenset(pair) in mixed
    return {
        "twin_pairs": len(extra["twins"]),
        "twin_pairs_merged": len(merged),
        "twin_pairs_merged_with_identifier_mixup": sum(m in mixed for m in merged),
        "mixups_sent_to_review": contradicted,
    }


_STAGES = {
    "the whole build (build_registry)": "build_registry",
    "read centre files (readers, mapping)": "read_centre",
    "seal every centre's records (the extract form)": "sealed_centre",
    "linkage (pseudonyms, splink, clusters)": "_link",
    "  splink predict (DuckDB)": "predict",
    "merge, protection, table rows, Provenance (patient by patient)": "_publish",
    "  of which Provenance": "_provenance",
    "quality report": "_quality",
    "ConceptMaps": "_concept_maps",
    "study summaries": "_summaries",
    "write tables and reports": "write_registry",
}


def profile(persons: int, centres: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        _write_centres(persons, centres, folder)
        stats_file = folder / "build.prof"
        command = [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(stats_file),
            str(FHIR_CART),
            "registry",
            "build",
            str(folder / "registry.yaml"),
            "-o",
            str(folder / "out"),
            "--work",
            str(folder / "work"),
        ]
        run = _run(command, _env(folder))
        stats = pstats.Stats(str(stats_file))
        cumulative: dict[str, float] = {}
        for (file, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
            if "fhir_cart/registry" in file or "fhir_cart/registry" in file.replace("\\", "/"):
                for label, wanted in _STAGES.items():
                    if function == wanted and (wanted != "predict" or "_splink" in file):
                        cumulative[label] = round(cumulative.get(label, 0.0) + row[3], 1)
        return {
            "persons": persons,
            "centres": centres,
            "wall_seconds_under_cprofile": run["wall_seconds"],
            "peak_rss_mib": run["peak_rss_mib"],
            "cumulative_seconds": cumulative,
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--persons", type=int, nargs="*", default=[3_000, 30_000])
    parser.add_argument("--centres", type=int, default=10)
    parser.add_argument("--profile", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--data",
        choices=["own", "truth"],
        default="own",
        help="own: the project's generator; truth: benchmarks/registry_truth.py (independent)",
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs shared with other work",
        "python": platform.python_version(),
        "generator": (
            f"benchmarks/registry_truth.py make_persons(persons, centres, seed={SEED})"
            if args.data == "truth"
            else "fhir_cart.devservers.registry_data.make_registry(persons, centres, "
            f"seed={SEED}, identifiers=0.3, with_names=True)"
        ),
        "load_average_at_start": os.getloadavg(),
        "builds": [],
    }
    for persons in args.persons:
        found = measure(persons, args.centres, args.data)
        results["builds"].append(found)
        print(json.dumps({k: v for k, v in found.items() if k != "rss_samples_mib"}), flush=True)
    if args.profile:
        results["profile"] = profile(args.profile, args.centres)
        print(json.dumps(results["profile"]), flush=True)
    if args.out is None:
        name = "bench_registry_truth.json" if args.data == "truth" else "bench_registry.json"
        args.out = RESULTS / name
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
