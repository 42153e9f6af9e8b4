"""Registry patients one at a time: each is merged, protected and turned into its table rows,
its conflicts and its Provenance before the next, and only what the files need is kept (the
tables as Arrow chunks, Provenance as NDJSON bytes, the conflict rows, the gap counts). No
list of every merged, protected or Provenance object is held unless ``keep`` asks for it
(the in-memory :class:`~fhir_cart.registry.build.Registry` of tests and of a push)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson
import pyarrow as pa

from fhir_cart import __version__
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.records import Case
from fhir_cart.registry import fhir, tables
from fhir_cart.registry.definition import RegistryDef
from fhir_cart.registry.merge import Conflict, EventNamer, MergedPatient, merge_patient
from fhir_cart.registry.protect import Protection
from fhir_cart.registry.pseudonyms import Pseudonymiser
from fhir_cart.registry.work import CentreData

__all__ = ["Published", "Sources", "publish"]

Progress = Callable[[str, int, int], None]


@dataclass
class Published:
    """What the registry's files need of its patients, gathered patient by patient."""

    patients: pa.Table
    events: pa.Table
    conflicts: list[dict[str, Any]]
    provenance: BinaryIO
    """``fhir/Provenance.ndjson`` as written, in an unnamed temporary file (at 100,000
    patients it is some 200 MB: never held in memory); read from its start."""
    gaps: dict[str, dict[str, int]]
    """Centre -> field -> how many of its linked patients lack it (see ``MergedPatient.gaps``)."""
    count: int
    shared: int
    """Patients with records at more than one centre."""
    cases: list[Case] = field(default_factory=list)
    """Protected patients (``keep`` only)."""
    merged: list[MergedPatient] = field(default_factory=list)
    """Merged patients before protection (``keep`` only)."""
    provenance_resources: list[dict[str, Any]] = field(default_factory=list)
    """Provenance as dicts (``keep`` only)."""


@dataclass(frozen=True)
class Sources:
    """What a patient's Provenance cites: each centre's records, its file, the registry."""

    data: dict[str, CentreData]
    info: dict[str, fhir.SourceInfo]
    library: ConceptLibrary | None
    pseudonyms: Pseudonymiser


def publish(
    patients: Iterable[tuple[str, list[Case]]],
    total: int,
    definition: RegistryDef,
    protection: Protection,
    namer: EventNamer,
    sources: Sources,
    progress: Progress,
    keep: bool = True,
) -> Published:
    """Every registry patient (``(name, centre records)`` in name order) merged, protected
    and gathered into what the files need; ``keep``: the objects too (for tests and a push)."""
    order = definition.centre_order()
    patient_rows = tables.patient_builder(sources.library)
    event_rows = tables.event_builder(sources.library)
    provenance = tempfile.TemporaryFile()  # noqa: SIM115 (the Published holds it open)
    conflicts: list[dict[str, Any]] = []
    gaps: dict[str, dict[str, int]] = {centre: {} for centre in sorted(sources.data)}
    kept = Published(pa.table({}), pa.table({}), conflicts, provenance, gaps, 0, 0)
    base = definition.fhir.identifier_base.rstrip("/")
    for n, (name, members) in enumerate(patients, start=1):
        patient = merge_patient(name, members, definition, namer)
        transform = protection.transform_for(patient.case)
        case = protection.case(patient.case, transform)
        conflicts += [
            _conflict_row(c, protection.conflict(c, transform)) for c in patient.conflicts
        ]
        for centre, gap in patient.gaps:
            counts = gaps.setdefault(centre, {})
            counts[gap] = counts.get(gap, 0) + 1
        tables.add_patient(patient_rows, case, sorted(patient.centres, key=order.index))
        tables.add_events(event_rows, case, patient.source_of)
        kept.count += 1
        kept.shared += len(patient.centres) > 1
        for resource in _provenance(patient, case, members, base, definition.id, sources):
            provenance.write(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS) + b"\n")
            if keep:
                kept.provenance_resources.append(resource)
        if keep:
            kept.merged.append(patient)
            kept.cases.append(case)
        if n % 1000 == 0 or n == total:
            progress("merge", n, total)
    kept.patients, kept.events = patient_rows.table(), event_rows.table()
    provenance.seek(0)
    return kept


def _conflict_row(conflict: Conflict, shown: dict[str, str]) -> dict[str, Any]:
    return {
        "patient": conflict.patient,
        "field": conflict.field,
        "values": shown,
        "rule": conflict.rule,
        "chosen": conflict.chosen,
        "result": shown[conflict.chosen],
    }


def _rows(
    patient: MergedPatient,
    members: Sequence[Case],
    centre: str,
    data: CentreData,
    pseudonyms: Pseudonymiser,
) -> list[str]:
    """Where in the centre's file this registry patient's facts were read: the patient's
    row, then each kept event's row, each once, as keyed tokens
    (:meth:`Pseudonymiser.source_row`: never the file and row themselves)."""
    member = next((m for m in members if m.patient.centre == centre), None)
    if member is None:
        return []
    located = data.sources.get(member.patient.study_id, {})
    rows = [located[""]] if "" in located else []
    for origin, event_id in sorted(patient.origin_of.values()):
        row = located.get(event_id) if origin == centre else None
        if row is not None and row not in rows:
            rows.append(row)
    if data.keys is not None:
        return rows  # sealed: already row tokens
    return [pseudonyms.source_row(centre, row) for row in rows]


def _provenance(
    patient: MergedPatient,
    case: Case,
    members: Sequence[Case],
    base: str,
    registry: str,
    sources: Sources,
) -> list[dict[str, Any]]:
    """One Provenance per centre of the patient."""
    found = []
    for centre in patient.centres:
        events = [
            (e.event_id, e.concept) for e in case.events if patient.source_of[e.event_id] == centre
        ]
        rows = _rows(patient, members, centre, sources.data[centre], sources.pseudonyms)
        found.append(
            fhir.provenance(
                case,
                events,
                sources.info[centre],
                registry=registry,
                base=base,
                library=sources.library,
                version=__version__,
                rows=rows,
            )
        )
    return found
