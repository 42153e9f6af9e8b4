"""FHIR resources grouped by patient on disk, then mapped to study records patient by patient,
in memory that does not grow with the cohort (``fhir-cart tables`` and ``fhir-cart pull``).

Resources are stored, as their JSON bytes, in a temporary SQLite file keyed by the patient
they reference (``subject`` or ``patient``), so a patient's resources can be read back
together. Specimens and Medications are held in memory instead: any patient's resources may
reference them (they are few: one per sample or drug).

Two orders:

- as read (``keyed=False``, NDJSON files): every line is a row; Patients in the order read
  (a Patient listed twice: its last copy), each patient's resources in the order read;
- as a pull's cache holds them (``keyed=True``): one row per (type, id), the last one added
  wins; Patients by id, each patient's resources by (type, id): the order in which
  ``cases_from_fhir`` over the cache's rows gives its cases.

:func:`map_index` maps each Patient with its resources as a pull maps them
(:class:`~fhir_cart.mappers.from_fhir.PatientByPatient`, the rules of ``cases_from_fhir``),
then the resources that reference no Patient of the index, then the Specimens and
Medications no event used, handing each result to a sink as it is made, and counts where
each resource ended (:mod:`fhir_cart.sync.accounting`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Protocol

import orjson

from fhir_cart.collector import bulk_collection
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import PatientByPatient, ReverseResult
from fhir_cart.references import reference_key
from fhir_cart.sync.accounting import TypeCount, add_places, by_type, places
from fhir_cart.types import Json

__all__ = ["PatientIndex", "ResultSink", "add_counts", "map_index"]

Key = tuple[str, str]
_HELD = frozenset({"Specimen", "Medication"})
_BATCH = 2000  # rows per SQLite insert
_COUNTS = tuple(f.name for f in fields(TypeCount))


def _subject(resource: Json) -> str | None:
    subject = resource.get("subject") or resource.get("patient") or {}
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return reference_key(ref) if isinstance(ref, str) else None


class PatientIndex:
    """Resources by the patient they belong to, in a SQLite file at ``path`` (see the module
    docstring for ``keyed``). Use as a context manager (the file is closed at the end)."""

    def __init__(self, path: Path, *, keyed: bool = False, existing: bool = False) -> None:
        self.path = path
        self.keyed = keyed
        self.db = sqlite3.connect(f"file:{path}?mode=ro" if existing else path, uri=existing)
        self.db.execute("PRAGMA cache_size = -16000")  # 16 MiB of pages at most
        if not existing:
            self.db.execute("PRAGMA journal_mode = OFF")
            self.db.execute("PRAGMA synchronous = OFF")
            unique = ", UNIQUE (rtype, rid) ON CONFLICT REPLACE" if keyed else ""
            self.db.execute(
                "CREATE TABLE r (seq INTEGER PRIMARY KEY, rtype TEXT, rid TEXT, "
                f"patient TEXT, is_patient INTEGER, body BLOB{unique})"
            )
        self.specimens: dict[str, Json] = {}
        self.medications: dict[str, Json] = {}
        self.fetched: dict[str, int] = {}
        """Resources added, per type (each line counts, repeated ones too)."""
        self._batch: list[tuple[str, str, str | None, int, bytes]] = []
        self._indexed = existing

    def __enter__(self) -> PatientIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self.db.close()

    def add(self, resource: Json, line: bytes | None = None) -> None:
        """One resource (``line``: its JSON, when it was read as such)."""
        rtype = str(resource.get("resourceType", "(unknown)"))
        rid = str(resource.get("id"))
        self.fetched[rtype] = self.fetched.get(rtype, 0) + 1
        if rtype in _HELD:
            (self.specimens if rtype == "Specimen" else self.medications)[rid] = resource
            return
        body = orjson.dumps(resource) if line is None else line
        if rtype == "Patient":
            self._batch.append((rtype, rid, rid, 1, body))
        else:
            self._batch.append((rtype, rid, _subject(resource), 0, body))
        if len(self._batch) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        self.db.executemany(
            "INSERT INTO r (rtype, rid, patient, is_patient, body) VALUES (?, ?, ?, ?, ?)",
            self._batch,
        )
        self._batch.clear()

    def has(self, key: Key) -> bool:
        """Whether a resource of this (type, id) was added (``keyed`` indexes)."""
        if key[0] in _HELD:
            return key[1] in (self.specimens if key[0] == "Specimen" else self.medications)
        self._flush()
        found = self.db.execute("SELECT 1 FROM r WHERE rtype = ? AND rid = ?", key).fetchone()
        return found is not None

    def count(self) -> int:
        """Resources held (one per (type, id) in a ``keyed`` index)."""
        self._flush()
        (rows,) = self.db.execute("SELECT COUNT(*) FROM r").fetchone()
        return int(rows) + len(self.specimens) + len(self.medications)

    def discard(self, keys: Iterable[Key]) -> None:
        """Forget these (type, id)."""
        self._flush()
        for rtype, rid in keys:
            if rtype in _HELD:
                (self.specimens if rtype == "Specimen" else self.medications).pop(rid, None)
            else:
                self.db.execute("DELETE FROM r WHERE rtype = ? AND rid = ?", (rtype, rid))

    def _finish(self) -> None:
        self._flush()
        if not self._indexed:
            # in the order each patient's resources are read back (no sort per patient)
            order = "rtype, rid" if self.keyed else "seq"
            self.db.execute(f"CREATE INDEX r_patient ON r (patient, is_patient, {order})")
            self.db.commit()  # readable by other processes from here on (``existing``)
            self._indexed = True

    def patient_ids(self) -> list[str]:
        """The Patients' ids in :meth:`patients` order."""
        self._finish()
        query = _KEYED_IDS if self.keyed else _READ_IDS
        return [str(pid) for (pid,) in self.db.execute(query)]

    def patient(self, pid: str) -> tuple[Json, list[Json]]:
        """One Patient (its last copy) with the resources naming it, as :meth:`patients`
        gives it."""
        self._finish()
        (body,) = self.db.execute(_ONE_PATIENT, (pid,)).fetchone()
        of_patient = _KEYED_OF_PATIENT if self.keyed else _READ_OF_PATIENT
        rows = self.db.execute(of_patient, (pid,))
        return orjson.loads(body), [orjson.loads(b) for (b,) in rows]

    def patients(self) -> Iterator[tuple[Json, list[Json]]]:
        """Each Patient with the resources naming it (see the module docstring for order)."""
        self._finish()
        if self.keyed:
            query, of_patient = _KEYED_PATIENTS, _KEYED_OF_PATIENT
        else:
            query, of_patient = _READ_PATIENTS, _READ_OF_PATIENT
        reader = self.db.cursor()
        for pid, body in self.db.execute(query):
            rows = reader.execute(of_patient, (pid,))
            yield orjson.loads(body), [orjson.loads(b) for (b,) in rows]

    def orphans(self) -> Iterator[Json]:
        """Resources naming no Patient of the index (or none at all)."""
        self._finish()
        rows = self.db.execute(_ORPHANS + ("rtype, rid" if self.keyed else "seq"))
        for (body,) in rows:
            yield orjson.loads(body)


_KEYED_PATIENTS = "SELECT patient, body FROM r WHERE is_patient = 1 ORDER BY patient"
_KEYED_OF_PATIENT = "SELECT body FROM r WHERE patient = ? AND is_patient = 0 ORDER BY rtype, rid"
_READ_PATIENTS = (  # a Patient listed twice: its last copy, as a pull keeps the last version
    "SELECT patient, body FROM r WHERE seq IN (SELECT MAX(seq) FROM r WHERE is_patient = 1 "
    "GROUP BY patient) ORDER BY seq"
)
_READ_OF_PATIENT = "SELECT body FROM r WHERE patient = ? AND is_patient = 0 ORDER BY seq"
_KEYED_IDS = "SELECT patient FROM r WHERE is_patient = 1 ORDER BY patient"
_READ_IDS = (
    "SELECT patient FROM r WHERE seq IN (SELECT MAX(seq) FROM r WHERE is_patient = 1 "
    "GROUP BY patient) ORDER BY seq"
)
_ONE_PATIENT = "SELECT body FROM r WHERE patient = ? AND is_patient = 1 ORDER BY seq DESC LIMIT 1"
_ORPHANS = (
    "SELECT body FROM r WHERE is_patient = 0 AND (patient IS NULL OR patient NOT IN "
    "(SELECT patient FROM r WHERE is_patient = 1)) ORDER BY "
)


class ResultSink(Protocol):
    """Where :func:`map_index` hands each result (rows written, or kept)."""

    def add(self, result: ReverseResult) -> None: ...


def add_counts(total: dict[str, TypeCount], part: dict[str, TypeCount]) -> None:
    """Add the account ``part`` into ``total`` (per type, each place)."""
    for rtype, count in part.items():
        into = total.setdefault(rtype, TypeCount())
        for name in _COUNTS:
            setattr(into, name, getattr(into, name) + getattr(count, name))


def _held_places(mapper: PatientByPatient, result: ReverseResult) -> dict[Key, list[str]]:
    """Where each Specimen and Medication ended: an ``other`` row, or used by an event."""
    other = {(row["resource_type"], str(row["resource_id"])) for row in result.other}
    run = mapper.run
    found: dict[tuple[str, str], list[str]] = {}
    for rtype, held, used in (
        ("Specimen", run.specimens, run.used_specimens),
        ("Medication", run.medications, run.used_medications),
    ):
        for rid in held:
            key = (rtype, rid)
            found[key] = [*(["other"] if key in other else []), *(["used"] if rid in used else [])]
    return found


def map_index(
    ctx: MappingContext,
    index: PatientIndex,
    sink: ResultSink,
    *,
    default_centre: str = "ehr",
    on_patient: Callable[[int], None] | None = None,
) -> dict[str, TypeCount]:
    """Map everything the index holds into ``sink``; the account per type (without
    ``fetched``, which the caller knows)."""
    mapper = PatientByPatient(
        ctx, index.specimens, index.medications, default_centre=default_centre
    )
    counts = map_patients(ctx, mapper, index.patients(), sink, on_patient=on_patient)
    add_counts(counts, map_rest(ctx, mapper, index, sink))
    return counts


def map_patients(
    ctx: MappingContext,
    mapper: PatientByPatient,
    patients: Iterable[tuple[Json, list[Json]]],
    sink: ResultSink,
    *,
    on_patient: Callable[[int], None] | None = None,
) -> dict[str, TypeCount]:
    """Map each Patient with its resources into ``sink``; their account per type."""
    counts: dict[str, TypeCount] = {}
    with bulk_collection() as collector:
        for number, (patient, resources) in enumerate(patients, start=1):
            result = mapper.patient(patient, resources)
            sink.add(result)
            pid = str(patient.get("id"))
            sid = mapper.study_ids.get(pid)  # the mapping named it (its id is read once)
            found = places(
                ctx,
                [patient, *resources],
                result,
                centre=mapper.default_centre,
                study_ids={pid: sid} if sid is not None else {},
            )
            add_places(counts, found)
            collector.step()
            if on_patient is not None:
                on_patient(number)
    return counts


def map_rest(
    ctx: MappingContext, mapper: PatientByPatient, index: PatientIndex, sink: ResultSink
) -> dict[str, TypeCount]:
    """After every patient: the resources naming no Patient of the index, then the
    Specimens and Medications no event used; their account per type."""
    default_centre = mapper.default_centre
    counts: dict[str, TypeCount] = {}
    for chunk in _chunks(index.orphans(), _BATCH):
        result = mapper.orphans(chunk)
        sink.add(result)
        add_counts(counts, by_type(places(ctx, chunk, result, centre=default_centre)))
    result = mapper.held()
    sink.add(result)
    add_counts(counts, by_type(_held_places(mapper, result)))
    return counts


def _chunks(items: Iterable[Json], size: int) -> Iterator[list[Json]]:
    chunk: list[Json] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
