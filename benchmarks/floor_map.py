"""The floor of `fhir-cart map`: plain Python doing the least any mapper must do, as a process.

    python benchmarks/floor_map.py STUDY REFERENCE OUT

Reads the canonical CSV study (STUDY/patients.csv, STUDY/events.csv, grouped by patient)
with ``csv.reader`` and writes the files `fhir-cart map` wrote to REFERENCE, byte for byte,
into OUT: NDJSON (one file per type), transaction bundles of 100 entries (a patient's
entries in one bundle), CodeSystem-fhir-cart.json and unverified-codes.json. It does no
reading of values, no checking and no mapping: it gets each row's resource, in both
reference forms, by parsing fhir_cart's own output (orjson.loads, streaming, one patient at
a time: the cheapest way plain Python can have the resources as objects), picks it by the
row's patient and event id, and serialises it with orjson. Memory stays flat like the job's.
"""

from __future__ import annotations

import csv
import itertools
import sys
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import orjson

BUNDLE = 100  # fhir-cart map's default --bundle-size
Json = dict[str, Any]


class _TypeStream:
    """One reference NDJSON file, read a patient at a time."""

    def __init__(self, path: Path) -> None:
        self._lines = path.open("rb")
        self._next: Json | None = self._read()

    def _read(self) -> Json | None:
        line = self._lines.readline()
        return orjson.loads(line) if line else None

    def take(self, prefix: str) -> Iterator[Json]:
        while self._next is not None:
            ident = self._next["identifier"]
            value = (ident if isinstance(ident, dict) else ident[0])["value"]
            if value != prefix[:-1] and not value.startswith(prefix):
                return
            yield self._next
            self._next = self._read()


def _entries(bundles: Path) -> Iterator[Json]:
    for path in sorted(bundles.glob("bundle-*.json")):
        yield from orjson.loads(path.read_bytes())["entry"]


def run(study: Path, reference: Path, out: Path) -> None:
    ndjson, bundles = out / "ndjson", out / "bundles"
    ndjson.mkdir(parents=True)
    bundles.mkdir()
    types = [(p.stem, _TypeStream(p)) for p in sorted((reference / "ndjson").glob("*.ndjson"))]
    entries_in = _entries(reference / "bundles")
    handles: dict[str, IO[bytes]] = {}
    count = 0
    entries: list[Json] = []

    def flush() -> None:
        nonlocal count, entries
        count += 1
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        path = bundles / f"bundle-{count:04d}.json"
        path.write_bytes(orjson.dumps(bundle))
        entries = []

    with (
        (study / "patients.csv").open(newline="", encoding="utf-8") as pfile,
        (study / "events.csv").open(newline="", encoding="utf-8") as efile,
    ):
        patients, events = csv.reader(pfile), csv.reader(efile)
        sid_at = next(patients).index("study_id")
        header = next(events)
        esid, eid = header.index("study_id"), header.index("event_id")
        groups = itertools.groupby(events, key=itemgetter(esid))
        pending = next(groups, None)
        for prow in patients:
            sid = prow[sid_at]
            rows: list[list[str]] = []
            if pending is not None and pending[0] == sid:
                rows = list(pending[1])
                pending = next(groups, None)
            mine: dict[str, Json] = {}
            for _, stream in types:
                for res in stream.take(f"{sid}/"):
                    ident = res["identifier"]
                    mine[(ident if isinstance(ident, dict) else ident[0])["value"]] = res
            ordered = [mine[sid]]  # the Patient, then conditions, then events in row order
            found = [mine[key] for row in rows if (key := f"{sid}/{row[eid]}") in mine]
            ordered += [r for r in found if r["resourceType"] == "Condition"]
            ordered += [r for r in found if r["resourceType"] != "Condition"]
            for res in ordered:
                rtype = res["resourceType"]
                handle = handles.get(rtype)
                if handle is None:
                    handle = handles[rtype] = (ndjson / f"{rtype}.ndjson").open("wb")
                handle.write(orjson.dumps(res))
                handle.write(b"\n")
            mine_entries = list(itertools.islice(entries_in, len(ordered)))
            if entries and len(entries) + len(mine_entries) > BUNDLE:
                flush()
            entries.extend(mine_entries)
    if entries:
        flush()
    for handle in handles.values():
        handle.close()
    for name in ("CodeSystem-fhir-cart.json", "unverified-codes.json"):
        if (reference / name).exists():
            data = orjson.loads((reference / name).read_bytes())
            (out / name).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
