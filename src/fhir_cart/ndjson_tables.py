"""A folder of FHIR NDJSON (a bulk export, or ``fhir-cart map`` output) -> study tables, in
memory that does not grow with the cohort.

NDJSON files hold one resource type each, so a patient's resources are spread over every
file. Two passes:

1. Every line is read once and stored, as its bytes, in a temporary SQLite file
   (:class:`~fhir_cart.patient_index.PatientIndex`) keyed by the
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

import gzip
import multiprocessing
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_cart.collector import bulk_collection
from fhir_cart.errors import FatalError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import PatientByPatient, ReverseResult, Unmapped
from fhir_cart.patient_index import PatientIndex, add_counts, map_index, map_patients, map_rest
from fhir_cart.records import Case
from fhir_cart.sync.accounting import TypeCount
from fhir_cart.types import Json
from fhir_cart.writers import Format, StudyTableWriter, UnmappedWriter

__all__ = ["TablesOutcome", "ndjson_files", "tables_from_ndjson"]


@dataclass
class TablesOutcome:
    """What one NDJSON -> tables run read and wrote (counts; the rows are in the files)."""

    files: list[Path]
    resources: int = 0
    patients: int = 0
    other: int = 0
    undeclared: int = 0
    """Attribute values and extensions the concept library read with does not declare, each
    a row of the ``other`` table (as ``fhir-cart pull`` counts them)."""
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
        raise FatalError(
            f"{folder}: not a folder; give the folder holding the .ndjson files", exit_code=2
        )
    found = sorted([*folder.glob("*.ndjson"), *folder.glob("*.ndjson.gz")])
    if not found:
        raise FatalError(
            f"{folder}: no .ndjson or .ndjson.gz files in it; give the folder of "
            "a bulk export or of `fhir-cart map` output (its ndjson/ folder)",
            exit_code=2,
        )
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
                    raise FatalError(
                        f"{path} line {number}: not JSON ({exc}); fix or remove the line",
                        exit_code=2,
                    ) from exc
                if not isinstance(resource, dict):
                    raise FatalError(
                        f"{path} line {number}: not a FHIR resource (a JSON "
                        "object); fix or remove the line",
                        exit_code=2,
                    )
                yield resource, line


class _Sink:
    """Where results go: table rows, unmapped.csv and excluded.csv (each made when its
    first row comes, as a pull writes them only when it has rows), and the counts."""

    def __init__(
        self, out: Path, tables: StudyTableWriter, outcome: TablesOutcome, keep_cases: bool
    ) -> None:
        self.tables = tables
        self.outcome = outcome
        self.keep_cases = keep_cases
        self.unmapped = UnmappedWriter(out / "unmapped.csv")
        self.excluded = UnmappedWriter(out / "excluded.csv")

    def add(self, result: ReverseResult) -> None:
        outcome = self.outcome
        for case in result.cases:
            self.tables.add_case(case)
            if self.keep_cases:
                outcome.cases.append(case)
        for row in result.other:
            self.tables.add_other(dict(row))
        for row in result.undeclared:
            self.tables.add_undeclared(dict(row))
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
        self.outcome.undeclared += self.tables.undeclared
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
    workers: int = 1,
) -> TablesOutcome:
    """Read every ``*.ndjson``/``*.ndjson.gz`` of ``folder`` and write the study tables,
    ``unmapped.csv`` and ``excluded.csv`` into ``out`` as ``fhir-cart pull`` does for the
    same resources. ``work``: where the temporary index goes (default: the system's).
    ``workers`` > 1: CSV tables are mapped by that many processes, each a run of patients,
    and joined in order (the same bytes as one process writes)."""
    paths = ndjson_files(folder)
    outcome = TablesOutcome(files=paths)
    with (
        tempfile.TemporaryDirectory(prefix="fhir-cart-tables-", dir=work) as tmp,
        PatientIndex(Path(tmp) / "index.sqlite") as index,
    ):
        with bulk_collection() as collector:
            for resource, line in _lines(paths):
                index.add(resource, line)
                collector.step()
        outcome.resources = sum(index.fetched.values())
        ids = index.patient_ids() if workers > 1 and fmt == "csv" else []
        runs = _runs(ids, workers)
        if len(runs) > 1:
            counts = _in_workers(
                ctx,
                index,
                runs,
                out,
                Path(tmp),
                outcome,
                default_centre=default_centre,
                keep_cases=keep_cases,
                on_patient=on_patient,
            )
        else:
            sink = _Sink(out, StudyTableWriter(out, fmt, ctx.concepts), outcome, keep_cases)
            try:
                counts = map_index(
                    ctx, index, sink, default_centre=default_centre, on_patient=on_patient
                )
            finally:
                sink.close()
    for rtype, number in index.fetched.items():
        counts.setdefault(rtype, TypeCount()).fetched = number
    outcome.by_type = dict(sorted(counts.items()))
    return outcome


# -- in worker processes ----------------------------------------------------------------------

_LEAST_PER_WORKER = 500
"""Fewer patients than this per worker: not worth starting a process."""


def _runs(ids: list[str], workers: int) -> list[list[str]]:
    """``ids`` cut into at most ``workers`` runs of consecutive patients, of about equal
    length, none shorter than :data:`_LEAST_PER_WORKER` (one run: map in this process)."""
    count = max(1, min(workers, len(ids) // _LEAST_PER_WORKER))
    size = -(-len(ids) // count) if ids else 0
    return [ids[i : i + size] for i in range(0, len(ids), size)] if size else [ids]


@dataclass
class _Part:
    """What one worker made of its run of patients (its rows are in its folder)."""

    outcome: TablesOutcome
    counts: dict[str, TypeCount]
    used_specimens: set[str]
    used_medications: set[str]
    specimen_notes: dict[str, str]
    study_ids: dict[str, str]


_JOB: dict[str, Any] = {}
"""What every worker needs, set before the processes are forked (they inherit it)."""


def _work(number: int) -> _Part:
    """Worker ``number``: map its run of patients into its own folder of CSV files."""
    ctx, index, runs, tmp = _JOB["ctx"], _JOB["index"], _JOB["runs"], _JOB["tmp"]
    folder = tmp / f"part-{number}"
    outcome = TablesOutcome(files=[])
    mapper = PatientByPatient(
        ctx, index.specimens, index.medications, default_centre=_JOB["default_centre"]
    )
    with PatientIndex(index.path, keyed=index.keyed, existing=True) as mine:
        patients = (mine.patient(pid) for pid in runs[number])
        sink = _Sink(
            folder, StudyTableWriter(folder, "csv", ctx.concepts), outcome, _JOB["keep_cases"]
        )
        try:
            counts = map_patients(ctx, mapper, patients, sink)
        finally:
            sink.close()
    run = mapper.run
    return _Part(
        outcome,
        counts,
        run.used_specimens,
        run.used_medications,
        run.specimen_notes,
        mapper.study_ids,
    )


def _in_workers(
    ctx: MappingContext,
    index: PatientIndex,
    runs: list[list[str]],
    out: Path,
    tmp: Path,
    outcome: TablesOutcome,
    *,
    default_centre: str,
    keep_cases: bool,
    on_patient: Callable[[int], None] | None,
) -> dict[str, TypeCount]:
    """Each run of patients mapped by a forked process into a folder of its own; then, in
    this process, what names no patient and the unused Specimens and Medications (with
    what every worker used), and the folders joined in order into ``out``."""
    _JOB.update(
        ctx=ctx,
        index=index,
        runs=runs,
        tmp=tmp,
        default_centre=default_centre,
        keep_cases=keep_cases,
    )
    try:
        with multiprocessing.get_context("fork").Pool(len(runs)) as pool:
            parts = []
            for part in pool.imap(_work, range(len(runs))):
                parts.append(part)
                if on_patient is not None:
                    on_patient(sum(p.outcome.patients for p in parts))
    finally:
        _JOB.clear()
    mapper = PatientByPatient(
        ctx, index.specimens, index.medications, default_centre=default_centre
    )
    counts: dict[str, TypeCount] = {}
    for part in parts:
        add_counts(counts, part.counts)
        mapper.run.used_specimens |= part.used_specimens
        mapper.run.used_medications |= part.used_medications
        mapper.run.specimen_notes.update(part.specimen_notes)
        mapper.study_ids.update(part.study_ids)
        _add_outcome(outcome, part.outcome)
    last = tmp / "part-rest"
    rest = TablesOutcome(files=[])
    sink = _Sink(last, StudyTableWriter(last, "csv", ctx.concepts), rest, keep_cases)
    try:
        add_counts(counts, map_rest(ctx, mapper, index, sink))
    finally:
        sink.close()
    _add_outcome(outcome, rest)
    folders = [tmp / f"part-{n}" for n in range(len(runs))] + [last]
    _join(folders, out, outcome)
    return counts


def _add_outcome(total: TablesOutcome, part: TablesOutcome) -> None:
    total.patients += part.patients
    total.other += part.other
    total.undeclared += part.undeclared
    total.unmapped += part.unmapped
    total.excluded += part.excluded
    total.cases += part.cases
    for reason, number in part.excluded_reasons.items():
        total.excluded_reasons[reason] = total.excluded_reasons.get(reason, 0) + number


_FILES = ("patients.csv", "events.csv", "other.csv")


def _join(folders: list[Path], out: Path, outcome: TablesOutcome) -> None:
    """Every part's CSV files joined in order into ``out``, each header once (a file only
    where a part has it: ``other``, ``unmapped`` and ``excluded`` are made for rows only)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (*_FILES, "unmapped.csv", "excluded.csv"):
        parts = [f / name for f in folders if (f / name).exists()]
        if not parts:
            continue
        with (out / name).open("wb") as joined:
            for number, path in enumerate(parts):
                with path.open("rb") as part:
                    if number:
                        part.readline()  # the header (column names: one line)
                    shutil.copyfileobj(part, joined)
        if name in _FILES:
            outcome.written.append(out / name)
        elif name == "unmapped.csv":
            outcome.unmapped_file = out / name
        else:
            outcome.excluded_file = out / name
