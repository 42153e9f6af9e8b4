"""FHIR R4 resources (JSON dicts) -> case-series records: the inverse of :mod:`to_fhir`.

Resources are grouped by the patient they reference. Each is classified BY ITS CODINGS
through the concept library (``ConceptLibrary.classify``) and the value sets, never by a
default: a resource that matches no concept (an unknown diagnosis, a lab test the library
does not hold, a resource type fhir_cart does not map) becomes an :class:`OtherRow` and is
listed in ``ReverseResult.unmapped`` with the reason. Nothing is dropped.

Resources written by fhir_cart carry business identifiers from which study and event ids are
recovered; resources from an EHR without them get event ids made from their server ids.
Events come back in natural order of their ids (:func:`event_order`), since servers return
resources in no particular order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from fhir_cart.errors import MappingError
from fhir_cart.library.statuses import StatusTable, StatusVerdict
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_elements import (
    OtherRow,
    ReverseResult,
    Unmapped,
    _ref_of,
    event_id_of,
    unread_row,
)
from fhir_cart.mappers.from_resources import (
    _EVENT_MAPPERS,
    FROM_TEXT,
    _Patient,
    _Run,
    other_row,
    patient_record,
    study_id_of,
)
from fhir_cart.mappers.to_fhir import event_order
from fhir_cart.records import (
    Case,
    Event,
)
from fhir_cart.references import reference_key
from fhir_cart.types import Json

__all__ = [
    "OtherRow",
    "PatientByPatient",
    "ReverseResult",
    "ReverseStream",
    "Unmapped",
    "cases_from_fhir",
    "event_id_of",
    "event_order",
    "other_row",
    "reference_key",
    "study_id_of",
]


# -- assembling cases -----------------------------------------------------------------------


def _subject_key(resource: Json) -> str | None:
    subject = resource.get("subject") or resource.get("patient") or {}
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return reference_key(ref) if isinstance(ref, str) else None


_BAD_INPUT = (ValueError, MappingError, TypeError, AttributeError, KeyError)
"""What malformed resources raise in the readers above (a string where an object belongs,
a missing element): the resource is kept as an ``other`` row with the reason."""


def _reason(exc: Exception) -> str:
    if isinstance(exc, TypeError | AttributeError | KeyError):
        return f"malformed resource ({exc.__class__.__name__}: {exc})"
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return str(exc)


def _keep(result: ReverseResult, resource: Json, study_id: str | None, reason: str) -> None:
    """A resource that is no event: listed with its reason and kept as an ``other`` row."""
    rtype = str(resource.get("resourceType", "?"))
    result.unmapped.append(Unmapped(_ref_of(resource), rtype, reason))
    result.other.append(other_row(resource, study_id, reason))


def _statuses(ctx: MappingContext) -> StatusTable:
    return ctx.statuses


def _mapped(run: _Run, resource: Json, study_id: str) -> tuple[Event | None, str | None, str]:
    """One resource other than a Patient or Specimen: (its event, None, "") or (None, the
    reason, ``"other"`` or ``"excluded"``). Its status decides first (mappings/statuses.yaml):
    an excluded status is never an event, a flagged one is written in the event's status."""
    rtype = resource.get("resourceType")
    mapper = _EVENT_MAPPERS.get(str(rtype))
    if mapper is None:
        return None, f"resource type {rtype} is not one fhir_cart maps", "other"
    verdict = _statuses(run.ctx).verdict(resource)
    if verdict.excluded is not None:
        return None, verdict.excluded, "excluded"
    if verdict.unknown is not None:
        return None, verdict.unknown, "other"
    run.from_text = False
    run.unread = []
    # the drugs this resource uses, apart (a copy of all used so far per resource grew
    # with the cohort): kept only when it is an event, a drug of no event is not used
    used, run.used_medications = run.used_medications, set()
    try:
        event = mapper(run, resource, study_id)
    except _BAD_INPUT as exc:  # ValidationError is a ValueError
        run.used_medications = used
        return None, _reason(exc), "other"
    finally:
        if run.used_medications is not used:
            used |= run.used_medications
            run.used_medications = used
    return _flagged(event, verdict, run.from_text), None, ""


def _flagged(event: Event, verdict: StatusVerdict, from_text: bool) -> Event:
    flags = [*verdict.flags, *([FROM_TEXT] if from_text else [])]
    return event.model_copy(update={"status": "; ".join(flags)}) if flags else event


def _exclude(result: ReverseResult, resource: Json, reason: str) -> None:
    rtype = str(resource.get("resourceType", "?"))
    result.excluded.append(Unmapped(_ref_of(resource), rtype, reason))


def _map_resource(run: _Run, result: ReverseResult, resource: Json, patient: _Patient) -> None:
    study_id = patient.record.study_id
    event, reason, where = _mapped(run, resource, study_id)
    if event is not None:
        patient.events.append(event)
        patient.events_unread += [(resource, ext) for ext in run.unread]
    elif where == "excluded":
        _exclude(result, resource, str(reason))
    else:
        _keep(result, resource, study_id, str(reason))


def _build_case(ctx: MappingContext, result: ReverseResult, patient: _Patient) -> None:
    """The patient's case; its Patient's and its events' resources' extensions that no
    attribute reads are ``undeclared`` rows (none when the case fails: the Patient is then
    an ``other`` row itself, so nothing of it is counted twice)."""
    events = tuple(sorted(patient.events, key=event_order))
    try:
        case = Case(patient=patient.record, events=events)
    except ValidationError as exc:
        reason = f"patient's events do not form a valid case: {_reason(exc)}"
        _keep(result, patient.resource, patient.record.study_id, reason)
        return
    result.cases.append(case)
    sid = patient.record.study_id
    result.undeclared += [unread_row(ctx, sid, patient.resource, ext) for ext in patient.unread]
    result.undeclared += [unread_row(ctx, sid, res, ext) for res, ext in patient.events_unread]


def _patients(
    ctx: MappingContext, resources: Iterable[Json], centre: str, result: ReverseResult
) -> tuple[dict[str, _Patient], dict[str, Json], dict[str, Json], list[Json]]:
    patients: dict[str, _Patient] = {}
    specimens: dict[str, Json] = {}
    medications: dict[str, Json] = {}
    others: list[Json] = []
    for resource in resources:
        rtype = resource.get("resourceType")
        if rtype == "Patient":
            try:
                patients[str(resource.get("id"))] = patient_record(ctx, resource, centre)
            except _BAD_INPUT as exc:
                _keep(result, resource, None, _reason(exc))
        elif rtype == "Specimen":
            specimens[str(resource.get("id"))] = resource
        elif rtype == "Medication":
            medications[str(resource.get("id"))] = resource
        else:
            others.append(resource)
    return patients, specimens, medications, others


_UNUSED_MEDICATION = "Medication referenced by no mapped medication resource"


def cases_from_fhir(
    ctx: MappingContext, resources: Iterable[Json], *, default_centre: str = "ehr"
) -> ReverseResult:
    """Group resources by patient and reverse-map them; every resource becomes part of an
    event or an ``other`` row (listed in ``unmapped`` with the reason)."""
    result = ReverseResult()
    patients, specimens, medications, others = _patients(ctx, resources, default_centre, result)
    run = _Run(ctx, specimens, medications=medications)
    for resource in others:
        patient = patients.get(_subject_key(resource) or "")
        if patient is None:
            _keep(result, resource, None, "references no patient in this data set")
            continue
        _map_resource(run, result, resource, patient)
    for sid, specimen in specimens.items():
        if sid not in run.used_specimens:
            owner = patients.get(_subject_key(specimen) or "")
            reason = run.specimen_notes.get(sid, "Specimen referenced by no mapped Observation")
            _keep(result, specimen, owner.record.study_id if owner else None, reason)
    for mid, medication in medications.items():
        if mid not in run.used_medications:
            _keep(result, medication, None, _UNUSED_MEDICATION)
    for patient in patients.values():
        _build_case(ctx, result, patient)
    return result


# -- mapping as resources arrive ------------------------------------------------------------


@dataclass
class _Outcome:
    """What one resource other than a Patient or Specimen became: an event of ``patient``,
    or an ``other`` row (``reason``); and what its mapping noted of Specimens."""

    patient: _Patient | None
    event: Event | None = None
    reason: str | None = None
    excluded: bool = False
    used: set[str] = field(default_factory=set)
    notes: dict[str, str] = field(default_factory=dict)
    used_medications: set[str] = field(default_factory=set)
    unread: list[Json] = field(default_factory=list)
    """The event's resource's extensions that no attribute reads."""


def _names_missing(resource: Json, name: str, received: Mapping[str, Json]) -> bool:
    """Whether the resource's ``name`` reference names a resource (not a contained one) not
    received yet (its Specimen, its Medication)."""
    element = resource.get(name)
    ref = element.get("reference") if isinstance(element, dict) else None
    return isinstance(ref, str) and not ref.startswith("#") and reference_key(ref) not in received


_HELD = ("Patient", "Specimen", "Medication")
"""Types a stream holds until the end: others are mapped once these have arrived."""


class ReverseStream:
    """:func:`cases_from_fhir`, fed as resources arrive (a pull maps while it fetches).

    Each resource is mapped once its patient (and any Specimen it names) has arrived; the
    others wait for :meth:`result`. ``result(resources)`` gives exactly what
    ``cases_from_fhir(ctx, resources)`` gives (same cases, rows and order), for any list of
    the resources added (the same objects, each once) that holds every Patient and Specimen
    added; for anything else (a resource added twice, one not added) it runs
    ``cases_from_fhir`` itself."""

    def __init__(self, ctx: MappingContext, *, default_centre: str = "ehr") -> None:
        self.ctx = ctx
        self.default_centre = default_centre
        self.added: dict[tuple[str, str], Json] = {}
        self.patients: dict[str, _Patient] = {}
        self.failed_patients: dict[str, str] = {}
        self.specimens: dict[str, Json] = {}
        self.medications: dict[str, Json] = {}
        self.outcomes: dict[tuple[str, str], _Outcome] = {}
        self.waiting: dict[tuple[str, str], Json] = {}
        self.twice = False

    def add(self, resources: Iterable[Json]) -> None:
        others: list[tuple[tuple[str, str], Json]] = []
        for resource in resources:
            key = (str(resource.get("resourceType")), str(resource.get("id")))
            if key in self.added:
                self.twice = True  # result() maps everything again
                continue
            self.added[key] = resource
            if key[0] == "Patient":
                try:
                    self.patients[key[1]] = patient_record(self.ctx, resource, self.default_centre)
                except _BAD_INPUT as exc:
                    self.failed_patients[key[1]] = _reason(exc)
            elif key[0] == "Specimen":
                self.specimens[key[1]] = resource
            elif key[0] == "Medication":
                self.medications[key[1]] = resource
            else:
                others.append((key, resource))
        if self.twice:
            return
        for key, resource in others:
            patient = self.patients.get(_subject_key(resource) or "")
            if (
                patient is None
                or _names_missing(resource, "specimen", self.specimens)
                or _names_missing(resource, "medicationReference", self.medications)
            ):
                self.waiting[key] = resource  # its patient, specimen or drug may come later
            else:
                self.outcomes[key] = self._map(resource, patient)

    def _map(self, resource: Json, patient: _Patient | None) -> _Outcome:
        """As ``cases_from_fhir`` maps one resource (see ``_map_resource``)."""
        if patient is None:
            return _Outcome(None, reason="references no patient in this data set")
        run = _Run(self.ctx, self.specimens, medications=self.medications)
        outcome = _Outcome(
            patient,
            used=run.used_specimens,
            notes=run.specimen_notes,
            used_medications=run.used_medications,
        )
        event, reason, where = _mapped(run, resource, patient.record.study_id)
        outcome.event, outcome.reason, outcome.excluded = event, reason, where == "excluded"
        outcome.unread = run.unread if event is not None else []
        return outcome

    def _same(self, resources: list[Json]) -> bool:
        """Whether ``resources`` are added ones, each once, with every Patient, Specimen and
        Medication added."""
        keys = set()
        for resource in resources:
            key = (str(resource.get("resourceType")), str(resource.get("id")))
            if self.added.get(key) is not resource or key in keys:
                return False
            keys.add(key)
        return all(k in keys for k in self.added if k[0] in _HELD)

    def result(self, resources: Iterable[Json]) -> ReverseResult:
        final = list(resources)
        if self.twice or not self._same(final):
            return cases_from_fhir(self.ctx, final, default_centre=self.default_centre)
        result = ReverseResult()
        keyed = [((str(r.get("resourceType")), str(r.get("id"))), r) for r in final]
        for (rtype, rid), resource in keyed:
            if rtype == "Patient" and rid in self.failed_patients:
                _keep(result, resource, None, self.failed_patients[rid])
        events: dict[int, list[Event]] = {}  # by id() of the patient's _Patient
        unread_events: dict[int, list[tuple[Json, Json]]] = {}
        used: set[str] = set()
        used_medications: set[str] = set()
        notes: dict[str, str] = {}
        for key, resource in keyed:
            if key[0] in _HELD:
                continue
            outcome = self.outcomes.get(key)
            if outcome is None:  # it waited: every patient, specimen and drug is here now
                outcome = self._map(resource, self.patients.get(_subject_key(resource) or ""))
            used |= outcome.used
            used_medications |= outcome.used_medications
            notes.update(outcome.notes)
            if outcome.event is not None and outcome.patient is not None:
                events.setdefault(id(outcome.patient), []).append(outcome.event)
                held = unread_events.setdefault(id(outcome.patient), [])
                held += [(resource, ext) for ext in outcome.unread]
                continue
            if outcome.excluded:
                _exclude(result, resource, str(outcome.reason))
                continue
            study_id = outcome.patient.record.study_id if outcome.patient else None
            _keep(result, resource, study_id, str(outcome.reason))
        for (rtype, sid), specimen in keyed:
            if rtype == "Specimen" and sid not in used:
                owner = self.patients.get(_subject_key(specimen) or "")
                reason = notes.get(sid, "Specimen referenced by no mapped Observation")
                _keep(result, specimen, owner.record.study_id if owner else None, reason)
        for (rtype, mid), medication in keyed:
            if rtype == "Medication" and mid not in used_medications:
                _keep(result, medication, None, _UNUSED_MEDICATION)
        for (rtype, rid), _ in keyed:
            patient = self.patients.get(rid) if rtype == "Patient" else None
            if patient is not None:
                mine = events.get(id(patient), [])
                unread = unread_events.get(id(patient), [])
                whole = _Patient(
                    patient.record,
                    patient.resource,
                    [*patient.events, *mine],
                    patient.unread,
                    [*patient.events_unread, *unread],
                )
                _build_case(self.ctx, result, whole)
        return result


# -- mapping patient by patient ---------------------------------------------------------------


class PatientByPatient:
    """:func:`cases_from_fhir`, one patient at a time, for inputs too big to hold.

    Specimens and Medications are held whole (``specimens``, ``medications``: they are read
    through references from any patient's resources); each :meth:`patient` call maps one
    Patient with every resource whose subject is that patient, :meth:`orphans` the
    resources whose subject is no Patient of the data set, and :meth:`held` (last) the
    Specimens and Medications no mapped resource used. The union of the results holds what
    ``cases_from_fhir`` over all those resources gives (the same cases, rows and reasons;
    in patient order rather than input order)."""

    def __init__(
        self,
        ctx: MappingContext,
        specimens: dict[str, Json],
        medications: dict[str, Json],
        *,
        default_centre: str = "ehr",
    ) -> None:
        self.ctx = ctx
        self.default_centre = default_centre
        self.run = _Run(ctx, specimens, medications=medications)
        self.study_ids: dict[str, str] = {}
        """Patient id -> study id of each Patient read (a Specimen's owner is named by it)."""

    def patient(self, resource: Json, resources: Iterable[Json]) -> ReverseResult:
        result = ReverseResult()
        try:
            patient = patient_record(self.ctx, resource, self.default_centre)
        except _BAD_INPUT as exc:
            _keep(result, resource, None, _reason(exc))
            for other in resources:
                _keep(result, other, None, "references no patient in this data set")
            return result
        self.study_ids[str(resource.get("id"))] = patient.record.study_id
        for other in resources:
            _map_resource(self.run, result, other, patient)
        _build_case(self.ctx, result, patient)
        return result

    def orphans(self, resources: Iterable[Json]) -> ReverseResult:
        result = ReverseResult()
        for resource in resources:
            _keep(result, resource, None, "references no patient in this data set")
        return result

    def held(self) -> ReverseResult:
        result = ReverseResult()
        run = self.run
        for sid, specimen in run.specimens.items():
            if sid not in run.used_specimens:
                owner = self.study_ids.get(_subject_key(specimen) or "")
                reason = run.specimen_notes.get(sid, "Specimen referenced by no mapped Observation")
                _keep(result, specimen, owner, reason)
        for mid, medication in run.medications.items():
            if mid not in run.used_medications:
                _keep(result, medication, None, _UNUSED_MEDICATION)
        return result
