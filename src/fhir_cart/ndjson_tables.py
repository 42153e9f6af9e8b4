"""A folder of FHIR NDJSON (a bulk export, or ``fhir-cart map`` output) -> study tables, in
memory that does not grow with the cohort.

NDJSON files hold one resource type each, so a patient's resources are spread over every
file. Two passes:

1. Every line is read once and stored, as its bytes, in a temporary SQLite file keyed by the
   patient it references (``subject`` or ``patient``), so a patient's resources can be read
   back together. Specimens and Medications are held in memory instead: any patient's
   resources may reference them (they are few: one per sample or drug).
2. Patient by patient (in the order the Patients were read), the Patient and its resources
   are mapped as a pull maps them (:class:`~fhir_cart.mappers.from_fhir.PatientByPatient`,
   the rules of ``cases_from_fhir``), and the rows are written as they are made: CSV rows
   appended, XLSX through a write-only workbook. Then the resources that reference no
   Patient of the folder, and the Specimens and Medications no event used.

Parquet and JSON output are built from all cases at the end (their writers need every row
first), so their memory grows with the cohort; CSV and XLSX do not.

The per-type account (:mod:`fhir_cart.sync.accounting`) is counted as a pull counts it.
"""

from __future__ import annotations

import contextlib
import gzip
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO

import orjson

from fhir_cart.errors import FatalError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import PatientByPatient, ReverseResult, Unmapped
from fhir_cart.records import Case
from fhir_cart.references import reference_key
from fhir_cart.sync.accounting import TypeCount, by_type, places
from fhir_cart.types import Json
from fhir_cart.writers import Format, StudyTableWriter, UnmappedWriter

__all__ = ["TablesOutcome", "ndjson_files", "tables_from_ndjson"]

Key = tuple[str, str]
_HELD = frozenset({"Specimen", "Medication"})
_BATCH = 2000  # rows per SQLite insert
_COUNTS = tuple(f.name for f in fields(TypeCount))


@dataclass
class TablesOutcome:
    """What one NDJSON -> tables run read and wrote (counts; the rows are in the files)."""

    files: list[Path]
    resources: int = 0
    patients: int = 0
    other: int = 0
    unmapped: int = 0
    excluded: int = 0
    written: list[Path] = field(default_factory=list)
    unmapped_file: Path | None = None
    excluded_file: Path | None = None
    excluded_reasons: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, TypeCount] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    """Only when asked for (``keep_cases``): a study summary needs every case."""


def ndjson_files(folder: Path) -> list[Path]:
    """The ``*.ndjson`` and ``*.ndjson.gz`` files of ``folder``, by name."""
    if not folder.is_dir():
        raise FatalError(f"{folder}: not a folder; give the folder holding the .ndjson files",
                         exit_code=2)  # fmt: skip
    found = sorted([*folder.glob("*.ndjson"), *folder.glob("*.ndjson.gz")])
    if not found:
        raise FatalError(f"{folder}: no .ndjson or .ndjson.gz files in it; give the folder of "
                         "a bulk export or of `fhir-cart map` output (its ndjson/ folder)",
                         exit_code=2)  # fmt: skip
    return found


def _open(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]  # a GzipFile reads bytes
    return path.open("rb")


def _lines(paths: Iterable[Path]) -> Iterator[tuple[Json, bytes]]:
    """(resource, its line) for every line of every file; a line that is no JSON object
    stops the run with where it is."""
    for path in paths:
        with _open(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    resource = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise FatalError(f"{path} line {number}: not JSON ({exc}); fix or remove "
                                     "the line", exit_code=2) from exc  # fmt: skip
                if not isinstance(resource, dict):
                    raise FatalError(f"{path} line {number}: not a FHIR resource (a JSON "
                                     "object); fix or remove the line", exit_code=2)  # fmt: skip
                yield resource, line


def _subject(resource: Json) -> str | None:
    subject = resource.get("subject") or resource.get("patient") or {}
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return reference_key(ref) if isinstance(ref, str) else None


@dataclass
class _Index:
    db: sqlite3.Connection
    specimens: dict[str, Json]
    medications: dict[str, Json]
    fetched: dict[str, int]


def _index(paths: Iterable[Path], db: sqlite3.Connection) -> _Index:
    """Pass 1: every resource stored by the patient it belongs to (Patients by their id)."""
    db.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, patient TEXT, is_patient INTEGER, "
               "body BLOB)")  # fmt: skip
    index = _Index(db, {}, {}, {})
    batch: list[tuple[int, str | None, int, bytes]] = []
    for seq, (resource, line) in enumerate(_lines(paths)):
        rtype = str(resource.get("resourceType", "(unknown)"))
        index.fetched[rtype] = index.fetched.get(rtype, 0) + 1
        if rtype in _HELD:
            held = index.specimens if rtype == "Specimen" else index.medications
            held[str(resource.get("id"))] = resource
            continue
        if rtype == "Patient":
            batch.append((seq, str(resource.get("id")), 1, line))
        else:
            batch.append((seq, _subject(resource), 0, line))
        if len(batch) >= _BATCH:
            db.executemany("INSERT INTO r VALUES (?, ?, ?, ?)", batch)
            batch.clear()
    db.executemany("INSERT INTO r VALUES (?, ?, ?, ?)", batch)
    db.execute("CREATE INDEX r_patient ON r (patient, is_patient, seq)")
    return index


def _patients(db: sqlite3.Connection) -> Iterator[tuple[Json, list[Json]]]:
    """Pass 2's input: each Patient (in the order read) with the resources naming it."""
    patients = db.execute(
        "SELECT patient, body FROM r WHERE seq IN (SELECT MAX(seq) FROM r WHERE is_patient = 1 "
        "GROUP BY patient) ORDER BY seq"
    )  # a Patient listed twice: its last copy, as a pull keeps the last version received
    reader = db.cursor()
    for pid, body in patients:
        rows = reader.execute("SELECT body FROM r WHERE patient = ? AND is_patient = 0 "
                              "ORDER BY seq", (pid,))  # fmt: skip
        yield orjson.loads(body), [orjson.loads(b) for (b,) in rows]


def _orphans(db: sqlite3.Connection) -> Iterator[Json]:
    """Resources naming no Patient of the folder (or none at all), in the order read."""
    rows = db.execute(
        "SELECT body FROM r WHERE is_patient = 0 AND (patient IS NULL OR patient NOT IN "
        "(SELECT patient FROM r WHERE is_patient = 1)) ORDER BY seq"
    )
    for (body,) in rows:
        yield orjson.loads(body)


def _add_counts(total: dict[str, TypeCount], part: dict[str, TypeCount]) -> None:
    for rtype, count in part.items():
        into = total.setdefault(rtype, TypeCount())
        for name in _COUNTS:
            setattr(into, name, getattr(into, name) + getattr(count, name))


def _held_places(mapper: PatientByPatient, result: ReverseResult) -> dict[Key, list[str]]:
    """Where each Specimen and Medication ended: an ``other`` row, or used by an event."""
    other = {(row["resource_type"], str(row["resource_id"])) for row in result.other}
    run = mapper.run
    found: dict[tuple[str, str], list[str]] = {}
    for rtype, held, used in (("Specimen", run.specimens, run.used_specimens),
                              ("Medication", run.medications, run.used_medications)):  # fmt: skip
        for rid in held:
            key = (rtype, rid)
            found[key] = [*(["other"] if key in other else []), *(["used"] if rid in used else [])]
    return found


class _Sink:
    """Where results go: table rows, unmapped.csv and excluded.csv (each made when its
    first row comes, as a pull writes them only when it has rows), and the counts."""

    def __init__(self, out: Path, tables: StudyTableWriter, outcome: TablesOutcome) -> None:
        self.tables = tables
        self.outcome = outcome
        self.unmapped = UnmappedWriter(out / "unmapped.csv")
        self.excluded = UnmappedWriter(out / "excluded.csv")

    def add(self, result: ReverseResult, keep_cases: bool) -> None:
        outcome = self.outcome
        for case in result.cases:
            self.tables.add_case(case)
            if keep_cases:
                outcome.cases.append(case)
        for row in result.other:
            self.tables.add_other(dict(row))
        self._listed(result.unmapped, self.unmapped)
        self._listed(result.excluded, self.excluded)
        for item in result.excluded:
            outcome.excluded_reasons[item.reason] = outcome.excluded_reasons.get(item.reason, 0) + 1
        outcome.patients += len(result.cases)
        outcome.other += len(result.other)
        outcome.unmapped += len(result.unmapped)
        outcome.excluded += len(result.excluded)

    @staticmethod
    def _listed(items: list[Unmapped], writer: UnmappedWriter) -> None:
        for item in items:
            writer.add(item)

    def close(self) -> None:
        self.outcome.written = self.tables.close()
        self.outcome.unmapped_file = self.unmapped.close()
        self.outcome.excluded_file = self.excluded.close()


def tables_from_ndjson(
    ctx: MappingContext,
    folder: Path,
    out: Path,
    fmt: Format,
    *,
    default_centre: str = "ehr",
    keep_cases: bool = False,
    work: Path | None = None,
    on_patient: Callable[[int], None] | None = None,
) -> TablesOutcome:
    """Read every ``*.ndjson``/``*.ndjson.gz`` of ``folder`` and write the study tables,
    ``unmapped.csv`` and ``excluded.csv`` into ``out`` as ``fhir-cart pull`` does for the
    same resources. ``work``: where the temporary index goes (default: the system's)."""
    paths = ndjson_files(folder)
    outcome = TablesOutcome(files=paths)
    with tempfile.TemporaryDirectory(prefix="fhir-cart-tables-", dir=work) as tmp:
        db = sqlite3.connect(Path(tmp) / "index.sqlite")
        with contextlib.closing(db):
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute("PRAGMA cache_size = -16000")  # 16 MiB of pages at most
            index = _index(paths, db)
            outcome.resources = sum(index.fetched.values())
            mapper = PatientByPatient(ctx, index.specimens, index.medications,
                                      default_centre=default_centre)  # fmt: skip
            sink = _Sink(out, StudyTableWriter(out, fmt, ctx.concepts), outcome)
            counts: dict[str, TypeCount] = {}
            try:
                for number, (patient, resources) in enumerate(_patients(db), start=1):
                    result = mapper.patient(patient, resources)
                    sink.add(result, keep_cases)
                    found = places(ctx, [patient, *resources], result, centre=default_centre)
                    _add_counts(counts, by_type(found))
                    if on_patient is not None:
                        on_patient(number)
                for chunk in _chunks(_orphans(db), _BATCH):
                    result = mapper.orphans(chunk)
                    sink.add(result, keep_cases)
                    _add_counts(counts, by_type(places(ctx, chunk, result, centre=default_centre)))
                result = mapper.held()
                sink.add(result, keep_cases)
                _add_counts(counts, by_type(_held_places(mapper, result)))
            finally:
                sink.close()
    for rtype, number in index.fetched.items():
        counts.setdefault(rtype, TypeCount()).fetched = number
    outcome.by_type = dict(sorted(counts.items()))
    return outcome


def _chunks(items: Iterable[Json], size: int) -> Iterator[list[Json]]:
    chunk: list[Json] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
