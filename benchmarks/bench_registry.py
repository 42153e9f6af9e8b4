"""Benchmark: a registry build beside plain reading and writing of the same data, and the
linkage quality on generated centres.

    .venv/bin/python benchmarks/bench_registry.py [--patients 100000] [--centres 10]
        [--quality-patients 10000] [--skip-scale]

Each phase runs in its own process (peak RSS is that process's): `baseline` writes every
centre's records as Parquet tables and reads them back (pyarrow, no linkage); `registry`
builds the registry from the same records (pseudonyms, linkage on DuckDB, merge,
protection, tables, reports, FHIR artefacts). Generating the SYNTHETIC records is not timed
in either. `quality` links 10,000 generated persons over 5 centres (15 % shared, typos,
transposed day/month, missing fields) and prints precision, recall and F1, with the prior
model and with the model estimated from the data. Results: benchmarks/results/
bench_registry.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
KEY = b"benchmark-key-not-secret-0123456789"


def _peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _cases(patients: int, centres: int) -> Any:
    from fhir_cart.testing.registry_data import make_registry

    return make_registry(patients, centres=centres, seed=2026, identifiers=0.3)


def phase_baseline(patients: int, centres: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from fhir_cart.registry import tables

    data = _cases(patients, centres)
    records = sum(len(v) for v in data.cases.values())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for centre, cases in data.cases.items():
            sources = {c.patient.study_id: {} for c in cases}
            built = {
                "patients": tables.patient_table(cases, {}, None),
                "events": tables.event_table(cases, sources, None),
            }
            tables.write_tables(Path(folder) / centre, built, ("parquet",))
        rows = sum(pq.read_table(p).num_rows for p in Path(folder).rglob("*.parquet"))
    seconds = round(time.perf_counter() - started, 2)
    return {"records": records, "rows_read_back": rows, "seconds": seconds,
            "peak_rss_mib": _peak_mib()}  # fmt: skip


def phase_registry(patients: int, centres: int) -> dict[str, Any]:
    from fhir_cart.concepts import load_concepts
    from fhir_cart.registry.build import CentreData, build_registry
    from fhir_cart.registry.definition import RegistryDef
    from fhir_cart.terminology import load_terminology

    data = _cases(patients, centres)
    library = load_concepts(load_terminology())
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        for centre in data.cases:
            (base / f"{centre}.csv").write_text("generated\n")
            (base / f"{centre}.yaml").write_text("generated\n")
        definition = RegistryDef.model_validate({
            "name": "benchmark", "base_dir": base,
            "centres": [{"id": c, "mapping": f"{c}.yaml", "data": f"{c}.csv"} for c in data.cases],
            "linkage": {"identifiers": ["national_id"]},
            "conflicts": {"rules": [{"field": "diagnosis", "prefer": "centre-1"},
                                    {"field": "cart_infusion", "prefer": "centre-2"}]},
        })  # fmt: skip
        steps: dict[str, float] = {}
        started = time.perf_counter()

        def progress(step: str, done: int, total: int) -> None:
            steps[step] = round(time.perf_counter() - started, 2)

        result = build_registry(
            definition, base / "out", key=KEY, library=library, progress=progress,
            reader=lambda c, _: CentreData(data.cases[c.id]),
        )  # fmt: skip
        seconds = round(time.perf_counter() - started, 2)
        assert result.registry is not None
        return {"records": sum(len(v) for v in data.cases.values()),
                "registry_patients": len(result.registry.cases),
                "links": len(result.registry.links), "conflicts": len(result.registry.conflicts),
                "seconds": seconds, "steps_done_at_s": steps,
                "peak_rss_mib": _peak_mib()}  # fmt: skip


def phase_quality(patients: int, train: str) -> dict[str, Any]:
    from fhir_cart.registry.definition import LinkageDef
    from fhir_cart.registry.linkage import link_records, linkage_record
    from fhir_cart.registry.pseudonyms import Pseudonymiser
    from fhir_cart.testing.registry_data import make_registry, true_pairs

    data = make_registry(patients, centres=5, seed=99)
    linkage = LinkageDef(train=train)  # type: ignore[arg-type]
    key = Pseudonymiser(KEY)
    records, back = [], {}
    for cases in data.cases.values():
        for case in cases:
            record = linkage_record(case, linkage, key)
            records.append(record)
            back[record.pseudonym] = (case.patient.centre, case.patient.study_id)
    started = time.perf_counter()
    found = link_records(records, linkage)
    seconds = round(time.perf_counter() - started, 2)
    predicted = {frozenset((back[a], back[b])) for m in found.members().values()
                 for i, a in enumerate(m) for b in m[i + 1:]}  # fmt: skip
    truth = true_pairs(data.truth)
    hits = len(predicted & truth)
    precision, recall = hits / max(len(predicted), 1), hits / len(truth)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"persons": patients, "records": len(records), "true_pairs": len(truth),
            "model": "estimated" if train == "always" else "priors",
            "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "seconds": seconds, "peak_rss_mib": _peak_mib()}  # fmt: skip


def _child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--phase", *args], check=True, capture_output=True, text=True
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--centres", type=int, default=10)
    parser.add_argument("--quality-patients", type=int, default=10_000)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--phase", nargs="+")
    args = parser.parse_args()
    if args.phase:
        name, *rest = args.phase
        found = {
            "baseline": lambda: phase_baseline(int(rest[0]), int(rest[1])),
            "registry": lambda: phase_registry(int(rest[0]), int(rest[1])),
            "quality": lambda: phase_quality(int(rest[0]), rest[1]),
        }[name]()
        print(json.dumps(found))
        return
    results: dict[str, Any] = {"python": platform.python_version(), "cpus": 2}
    for train in ("never", "always"):
        quality = _child("quality", str(args.quality_patients), train)
        results[f"linkage_{quality['model']}"] = quality
        print(f"linkage ({quality['model']}): precision {quality['precision']} recall "
              f"{quality['recall']} F1 {quality['f1']} in {quality['seconds']} s")  # fmt: skip
    if not args.skip_scale:
        for phase in ("baseline", "registry"):
            results[phase] = _child(phase, str(args.patients), str(args.centres))
            print(f"{phase}: {results[phase]}")
        results["time_ratio"] = round(
            results["registry"]["seconds"] / results["baseline"]["seconds"], 1
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_registry.json"
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
