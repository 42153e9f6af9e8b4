"""Merging one patient's records from several centres, field by field.

A *field* is a patient field (``sex``, ``birth_date``, ``attributes.<key>``) or a concept.
Concepts named by a conflict rule (or listed under ``conflicts.single``) are facts a patient
has once, such as the diagnosis or the CAR-T infusion: they are taken from the most trusted
centre that has them. Every other concept is pooled: events from all centres, an event that
two centres recorded identically kept once. Where centres disagree on a field, a
:class:`Conflict` says who said what, the rule applied and the result.

A conflict is a disagreement: two centres state the same part of a fact (a value, a date,
an attribute of the event) differently, or record a once-only fact a different number of
times. A centre that lacks a value or a detail another centre of the patient has is a gap
in its completeness (:attr:`MergedPatient.gaps`, counted in the quality report), not a
conflict; the trusted centre's value is kept as it is either way (nothing is combined from
two centres' records of one fact).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_cart.records import Case, Event, PatientRecord, Scalar, When
from fhir_cart.registry.definition import RegistryDef

__all__ = ["Conflict", "MergedPatient", "merge_patient", "registry_event_id"]

PATIENT_FIELDS = ("sex", "birth_date")


@dataclass(frozen=True)
class Conflict:
    """Centres disagree on one field of one registry patient."""

    patient: str
    field: str
    values: dict[str, Any]
    """Centre -> its value (a scalar, a date, or that centre's events of the concept)."""
    rule: str
    chosen: str
    """The centre whose value the registry keeps."""


@dataclass
class MergedPatient:
    case: Case
    source_of: dict[str, str]
    """Registry event id -> the centre it came from."""
    origin_of: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Registry event id -> (centre, the centre's own event id)."""
    centres: tuple[str, ...] = ()
    conflicts: list[Conflict] = field(default_factory=list)
    gaps: list[tuple[str, str]] = field(default_factory=list)
    """(centre, field): the centre lacks a value or detail of the field that another centre
    of this patient has (completeness, not a conflict)."""


def registry_event_id(centre: str, event_id: str) -> str:
    """``<centre>.<event id>``, within the 64 characters an event id may have."""
    joined = f"{centre}.{event_id}"
    if len(joined) <= 64:
        return joined
    digest = hashlib.sha256(joined.encode()).hexdigest()[:12]
    return f"{joined[:51]}-{digest}"


def _signature(event: Event) -> tuple[Any, ...]:
    """What makes two centres' events the same fact (identity and wording aside)."""
    return (
        event.concept,
        event.when,
        event.end,
        event.value,
        tuple(sorted(event.attributes.items())),
    )


def _parts(event: Event) -> dict[str, Any]:
    """What an event states, part by part (parts it leaves empty are absent)."""
    found: dict[str, Any] = {"when": event.when, "end": event.end, "value": event.value}
    found.update({f"attributes.{k}": v for k, v in event.attributes.items()})
    return {k: v for k, v in found.items() if v is not None}


def _disagree(a: Any, b: Any) -> bool:
    """Whether two centres' values of one field state something different. Events (a
    centre's records of a once-only fact) disagree when their numbers differ or a part
    both state differs; a part only one states is completeness."""
    if isinstance(a, tuple) and a and isinstance(a[0], Event):
        if len(a) != len(b):
            return True
        for x, y in zip(a, b, strict=True):
            left, right = _parts(x), _parts(y)
            if any(repr(left[k]) != repr(right[k]) for k in left.keys() & right.keys()):
                return True
        return False
    return repr(a) != repr(b)


def _lacks(value: Any, others: list[Any]) -> bool:
    """Whether a centre's events of a fact lack a part that another centre states."""
    if not (isinstance(value, tuple) and value and isinstance(value[0], Event)):
        return False
    have = {k for e in value for k in _parts(e)}
    return any(k not in have for other in others for e in other for k in _parts(e))


def _pick(
    patient: str, name: str, values: dict[str, Any], definition: RegistryDef
) -> tuple[str | None, Conflict | None]:
    """The trusted centre for ``name`` among those that have a value, and the conflict
    when two of them disagree."""
    if not values:
        return None, None
    order, rule = definition.preference(name)
    chosen = next(c for c in order if c in values)
    items = list(values.values())
    disagree = any(_disagree(a, b) for n, a in enumerate(items) for b in items[n + 1 :])
    conflict = (
        Conflict(patient, name, dict(sorted(values.items())), rule, chosen) if disagree else None
    )
    return chosen, conflict


def _gaps(name: str, centres: Sequence[str], values: dict[str, Any]) -> list[tuple[str, str]]:
    """Centres that lack ``name``, or a part of it, while another centre has it."""
    if not values:
        return []
    return [
        (c, name)
        for c in centres
        if c not in values or _lacks(values[c], [v for k, v in values.items() if k != c])
    ]


def _patient(
    patient: str, members: Sequence[Case], definition: RegistryDef
) -> tuple[PatientRecord, list[Conflict], list[tuple[str, str]]]:
    conflicts: list[Conflict] = []
    gaps: list[tuple[str, str]] = []
    centres = [c.patient.centre for c in members]
    chosen: dict[str, Any] = {}
    for name in PATIENT_FIELDS:
        values = {c.patient.centre: _field(c.patient, name) for c in members}
        values = {k: v for k, v in values.items() if v is not None and v != "unknown"}
        centre, conflict = _pick(patient, name, values, definition)
        chosen[name] = None if centre is None else values[centre]
        conflicts += [conflict] if conflict else []
        gaps += _gaps(name, centres, values)
    attributes: dict[str, Scalar] = {}
    dropped = (
        set(definition.linkage.identifiers)
        | set(definition.linkage.names)
        | set(definition.pseudonymisation.drop_patient_attributes)
    )
    keys = sorted({k for c in members for k in c.patient.attributes} - dropped)
    for key in keys:
        values = {
            c.patient.centre: c.patient.attributes[key]
            for c in members
            if key in c.patient.attributes
        }
        centre, conflict = _pick(patient, f"attributes.{key}", values, definition)
        if centre is not None:
            attributes[key] = values[centre]
        conflicts += [conflict] if conflict else []
        gaps += _gaps(f"attributes.{key}", centres, values)
    birth: When | None = chosen["birth_date"]
    record = PatientRecord(
        study_id=patient,
        centre=definition.id,
        sex=chosen["sex"],
        birth_date=None if birth is None else birth.date,
        birth_precision="day" if birth is None else birth.precision,
        attributes=attributes,
    )
    return record, conflicts, gaps


def _field(patient: PatientRecord, name: str) -> Any:
    """A patient field as centres are compared on it: the birth date with its precision
    (a year and a day in it are two values, never the same one)."""
    if name == "birth_date":
        if patient.birth_date is None:
            return None
        return When(date=patient.birth_date, precision=patient.birth_precision)
    return getattr(patient, name)


EventNamer = Callable[[str, str, Event], str]
"""(centre, centre's patient id, the centre's event) -> the registry's event id."""


def registry_event_namer(token: Callable[[str, str], str]) -> EventNamer:
    """``<centre>.<concept>-<keyed token>``: a centre's event id is made of its source cells
    (an explicit id column, or the ``key`` columns of a long format: a date, an item), so it
    never leaves as written. The token is ``token(namespace, value)`` (the registry's HMAC,
    :meth:`~fhir_cart.registry.pseudonyms.Pseudonymiser.token`) of the centre, the patient
    and the event id: the same event keeps its id from build to build under one key, and
    without the key nothing of the source id can be recovered or confirmed. The concept is
    a key of the concept library (mapping data, not a source value)."""

    def name(centre: str, study_id: str, event: Event) -> str:
        keyed = token("event", f"{centre}\x1f{study_id}\x1f{event.event_id}")[:20]
        return registry_event_id(centre, f"{event.concept}-e{keyed}")

    return name


def merge_patient(
    patient: str,
    members: Sequence[Case],
    definition: RegistryDef,
    namer: EventNamer | None = None,
) -> MergedPatient:
    """One registry patient from their centres' records (at most one per centre)."""
    record, conflicts, gaps = _patient(patient, members, definition)
    single = definition.single_concepts()
    by_centre = {c.patient.centre: c for c in members}
    default_order = [c for c in definition.centre_order() if c in by_centre]
    kept: list[tuple[str, Event]] = []
    concepts = sorted({e.concept for c in members for e in c.events})
    for concept in concepts:
        events = {
            centre: tuple(by_centre[centre].of(concept))
            for centre in default_order
            if by_centre[centre].of(concept)
        }
        if concept in single:
            centre, conflict = _pick(patient, concept, events, definition)
            conflicts += [conflict] if conflict else []
            gaps += _gaps(concept, default_order, events)
            kept += [(centre, e) for e in events[centre]] if centre else []
            continue
        seen: set[tuple[Any, ...]] = set()
        for centre, centre_events in events.items():
            for event in centre_events:
                if _signature(event) not in seen:
                    seen.add(_signature(event))
                    kept.append((centre, event))
    study_ids = {c: case.patient.study_id for c, case in by_centre.items()}
    rename = namer or (lambda centre, _, event: registry_event_id(centre, event.event_id))
    found = _assemble(
        record, kept, default_order, conflicts, lambda c, e: rename(c, study_ids[c], e)
    )
    found.gaps = sorted(set(gaps))
    return found


def _assemble(
    record: PatientRecord,
    kept: list[tuple[str, Event]],
    centres: list[str],
    conflicts: list[Conflict],
    rename: Callable[[str, Event], str],
) -> MergedPatient:
    events: list[Event] = []
    source_of: dict[str, str] = {}
    origin_of: dict[str, tuple[str, str]] = {}
    for centre, event in sorted(kept, key=lambda ce: (ce[0], ce[1].event_id)):
        new_id = rename(centre, event)
        events.append(event.model_copy(update={"event_id": new_id}))
        source_of[new_id] = centre
        origin_of[new_id] = (centre, event.event_id)
    case = Case(patient=record, events=tuple(events))
    return MergedPatient(case, source_of, origin_of, tuple(sorted(centres)), conflicts)
