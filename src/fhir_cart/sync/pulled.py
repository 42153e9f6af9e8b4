"""What a pull received, turned into study records in memory that does not grow with the
cohort.

While a pull fetches, every resource it receives goes to the cache and to a temporary
:class:`~fhir_cart.patient_index.PatientIndex` (one row per (type, id), the last version
received). When it has fetched, the index gets what the cache held before of the same
patients (an incremental pull still gives complete patients) and loses what the server
deleted; then the patients are mapped one by one (:func:`~fhir_cart.patient_index.map_index`)
into a sink: :class:`Collected` keeps every record (the web service's and the demo's pull,
whose outputs need them all), :class:`Written` writes the study tables, ``unmapped.csv`` and
``excluded.csv`` row by row as the command line's pull does (CSV and XLSX in flat memory).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_cart.cache import Cache
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.mappers.from_fhir import ReverseResult, Unmapped
from fhir_cart.patient_index import PatientIndex
from fhir_cart.records import Case
from fhir_cart.references import server_id, subject_patient_id
from fhir_cart.sync.pull import PullStats
from fhir_cart.types import Json
from fhir_cart.writers import Format, StudyTableWriter, UnmappedWriter

__all__ = [
    "MEDICATION_TYPES",
    "Collected",
    "PullTables",
    "Written",
    "medication_ids",
    "settle",
]

Key = tuple[str, str]

MEDICATION_TYPES = frozenset(
    {"MedicationAdministration", "MedicationRequest", "MedicationStatement", "MedicationDispense"}
)


def medication_ids(resources: Iterable[Json]) -> set[str]:
    """Ids of the Medications (not contained ones) that medication resources reference."""
    out: set[str] = set()
    for resource in resources:
        if resource.get("resourceType") not in MEDICATION_TYPES:
            continue
        reference = resource.get("medicationReference")
        found = server_id(
            reference.get("reference") if isinstance(reference, dict) else None, "Medication"
        )
        if found is not None:
            out.add(found)
    return out


@dataclass(frozen=True)
class PullTables:
    """Where a pull writes its study tables as it maps (``fhir-cart pull --out``)."""

    out: Path
    fmt: Format = "csv"
    keep_cases: bool = False
    """Keep the cases as well (a study summary needs every case)."""


@dataclass
class Collected:
    """Every result kept, in the order made."""

    cases: list[Case] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[Unmapped] = field(default_factory=list)
    marks: dict[Key, str] = field(default_factory=dict)
    """(type, id) -> note of every resource not read as an event (the cache's flags)."""
    patients: int = 0
    undeclared: int = 0
    """Extensions no attribute of the library has (in ``other``)."""

    def add(self, result: ReverseResult) -> None:
        self.patients += len(result.cases)
        self.cases += result.cases
        self.unmapped += result.unmapped
        self.other += [dict(row) for row in result.other]
        self.other += [dict(row) for row in result.undeclared]
        self.undeclared += len(result.undeclared)
        self.excluded += result.excluded
        _mark(self.marks, result)


def _mark(marks: dict[Key, str], result: ReverseResult) -> None:
    for u in result.unmapped:
        marks[(u.resource_type, u.reference.split("/", 1)[-1])] = u.reason
    for u in result.excluded:
        marks[(u.resource_type, u.reference.split("/", 1)[-1])] = f"excluded: {u.reason}"


class Written:
    """Rows written as they come; counts (and, if asked, the cases) kept."""

    def __init__(self, target: PullTables, library: ConceptLibrary | None = None) -> None:
        self.target = target
        self.tables = StudyTableWriter(target.out, target.fmt, library)
        self.unmapped_writer = UnmappedWriter(target.out / "unmapped.csv")
        self.excluded_writer = UnmappedWriter(target.out / "excluded.csv")
        self.cases: list[Case] = []
        self.marks: dict[Key, str] = {}
        self.patients = self.other = self.unmapped = self.excluded = 0
        self.excluded_reasons: dict[str, int] = {}
        self.written: list[Path] = []
        self.unmapped_file: Path | None = None
        self.excluded_file: Path | None = None

    def add(self, result: ReverseResult) -> None:
        for case in result.cases:
            self.tables.add_case(case)
        if self.target.keep_cases:
            self.cases += result.cases
        for row in result.other:
            self.tables.add_other(dict(row))
        for row in result.undeclared:
            self.tables.add_undeclared(dict(row))
        for item in result.unmapped:
            self.unmapped_writer.add(item)
        for item in result.excluded:
            self.excluded_writer.add(item)
            self.excluded_reasons[item.reason] = self.excluded_reasons.get(item.reason, 0) + 1
        self.patients += len(result.cases)
        self.other += len(result.other)
        self.unmapped += len(result.unmapped)
        self.excluded += len(result.excluded)
        _mark(self.marks, result)

    def close(self) -> None:
        self.written = self.tables.close()
        self.unmapped_file = self.unmapped_writer.close()
        self.excluded_file = self.excluded_writer.close()


def _belongs(resource: Json, patient_ids: set[str]) -> bool:
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id")) in patient_ids
    return subject_patient_id(resource) in patient_ids


def _key(resource: Json) -> Key:
    return str(resource["resourceType"]), str(resource.get("id"))


def settle(
    cache: Cache,
    key: str,
    index: PatientIndex,
    ids: set[str],
    stats: PullStats,
    gone: set[Key],
    named_drugs: set[str],
    *,
    full: bool,
) -> int:
    """Make ``index`` hold the selected patients' resources as the server holds them now,
    and return how many the cache held that the server has deleted (dropped from the cache).
    A full pull received every resource of its patients of the types it received in full
    (``stats.complete``), so any other the cache holds for them is gone; an incremental one
    learns deletions from ``_history`` (``gone``). What this pull received is in the index
    already: only the content of resources the cache held before it is read back
    (``named_drugs``: the Medications the received resources name)."""
    gone = set(gone)
    if cache.records.received_count(server=key) > index.count():  # it holds more than these
        older = [k for k in cache.records.received_ids(server=key) if not index.has(k)]
        drugs: list[Json] = []
        for resource in cache.records.received_content(server=key, ids=older):
            if resource.get("resourceType") == "Medication":
                drugs.append(resource)  # kept if a resource of these patients names it
            elif _belongs(resource, ids):
                named_drugs = named_drugs | medication_ids([resource])
                if full and resource["resourceType"] in stats.complete:
                    gone.add(_key(resource))
                elif _key(resource) not in gone:
                    index.add(resource)
        for drug in drugs:
            if str(drug.get("id")) not in named_drugs:
                continue
            if full and "Medication" in stats.complete:
                gone.add(_key(drug))
            elif _key(drug) not in gone:
                index.add(drug)
    index.discard(gone)
    return cache.forget_received(server=key, ids=sorted(gone)) if gone else 0
