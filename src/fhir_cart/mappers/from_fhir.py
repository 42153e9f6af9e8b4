"""FHIR R4 resources (JSON dicts) -> case-series records: the inverse of :mod:`to_fhir`.

Resources are grouped by the patient they reference. Anything the mappers do not understand
(an unknown code, a partial date, a reference to no known patient) is returned in
``ReverseResult.unmapped`` with the reason: kept and listed, never dropped.
Resources written by fhir_cart carry business identifiers from which study and event ids are
recovered; resources from an EHR without them get event ids made from their server ids.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import ValidationError

from fhir_cart.errors import MappingError
from fhir_cart.mappers.context import MappingContext, extension_value
from fhir_cart.records import (
    AdverseEvent,
    Case,
    DiseaseStatus,
    DrugAdministration,
    MrdResult,
    PatientRecord,
    ProcedureRecord,
    When,
)

__all__ = ["ReverseResult", "Unmapped", "cases_from_fhir", "reference_key"]

Json = dict[str, Any]
Event = DrugAdministration | ProcedureRecord | MrdResult | DiseaseStatus | AdverseEvent

_SAFE_ID = re.compile(r"[^A-Za-z0-9_\-\.]")


@dataclass(frozen=True, slots=True)
class Unmapped:
    """A resource kept but not turned into a record, and why."""

    reference: str
    resource_type: str
    reason: str


@dataclass
class ReverseResult:
    cases: list[Case] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)


def reference_key(reference: str) -> str:
    """``urn:uuid:X``, ``Patient/X``, ``http://host/fhir/Patient/X/_history/2`` -> ``X``."""
    if reference.startswith("urn:uuid:"):
        return reference[9:]
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return parts[-1]


def _ref_of(resource: Json) -> str:
    return f"{resource.get('resourceType', '?')}/{resource.get('id', '?')}"


# -- small readers of FHIR elements ------------------------------------------------------


def _parse_date(value: str, where: str) -> dt.date:
    if len(value) < 10:
        raise ValueError(f"{where} is a partial date {value!r}; a full date is needed")
    return dt.date.fromisoformat(value[:10])


def _day_anchor(ctx: MappingContext, parts: list[Json]) -> tuple[int | None, str | None]:
    day = extension_value(parts, "day")
    anchor = extension_value(parts, "anchor")
    if day is None:
        return None, None
    word = ctx.terminology.word_of_coding("anchor", anchor.get("valueCoding") if anchor else None)
    return day.get("valueInteger"), word


def _when(ctx: MappingContext, obj: Json, name: str) -> When | None:
    value = obj.get(name)
    ext = extension_value((obj.get("_" + name) or {}).get("extension"), ctx.ext("relative-day"))
    day, anchor = _day_anchor(ctx, ext.get("extension", [])) if ext else (None, None)
    if value is None and day is None:
        return None
    date = _parse_date(value, name) if isinstance(value, str) else None
    return When(date=date, day=day, anchor=anchor)


def _need_when(ctx: MappingContext, obj: Json, name: str) -> When:
    when = _when(ctx, obj, name)
    if when is None:
        raise ValueError(f"{name} has neither a date nor a relative day")
    return when


def _word(ctx: MappingContext, group: str, codeable: Json | None, what: str) -> str:
    word = ctx.terminology.word(group, codeable)
    if word is None:
        shown = [(c.get("system"), c.get("code")) for c in (codeable or {}).get("coding", ())]
        raise ValueError(f"{what} {shown or (codeable or {}).get('text')} is not in terminology")
    return word


def _ext(ctx: MappingContext, resource: Json, name: str) -> Json | None:
    return extension_value(resource.get("extension"), ctx.ext(name))


def _ext_word(ctx: MappingContext, resource: Json, name: str, group: str) -> str | None:
    ext = _ext(ctx, resource, name)
    return _word(ctx, group, ext.get("valueCodeableConcept"), name) if ext else None


def _quantity(ctx: MappingContext, quantity: Json | None) -> tuple[float | None, str | None]:
    if not quantity or quantity.get("value") is None:
        return None, None
    unit = ctx.terminology.unit_word(quantity)
    if unit is None:
        raise ValueError(f"unit {quantity.get('code')!r} is not in terminology units")
    return float(quantity["value"]), unit


def _identifiers(resource: Json) -> list[Json]:
    ident = resource.get("identifier")
    if isinstance(ident, dict):
        return [ident]
    return list(ident or ())


def _event_id(ctx: MappingContext, resource: Json, study_id: str, kind: str) -> str:
    prefix = study_id + "/"
    for ident in _identifiers(resource):
        system, value = ident.get("system", ""), ident.get("value", "")
        if ctx.centre_of_system(system) is not None and value.startswith(prefix):
            return str(value[len(prefix) :])
    return _SAFE_ID.sub("-", f"{kind}-{resource.get('id', 'x')}")[:64]


# -- one function per resource kind -------------------------------------------------------


def patient_record(ctx: MappingContext, resource: Json, default_centre: str) -> PatientRecord:
    centre, study_id = default_centre, None
    for ident in _identifiers(resource):
        found = ctx.centre_of_system(ident.get("system", ""))
        if found is not None:
            centre, study_id = found, ident.get("value")
            break
    age_ext = _ext(ctx, resource, "age-at-diagnosis")
    return PatientRecord(
        study_id=study_id or _SAFE_ID.sub("-", str(resource.get("id")))[:64],
        centre=centre,
        sex=resource.get("gender"),
        birth_date=_parse_date(resource["birthDate"], "birthDate")
        if resource.get("birthDate")
        else None,
        age_at_diagnosis=_quantity(ctx, age_ext.get("valueAge"))[0] if age_ext else None,
        death=_when(ctx, resource, "deceasedDateTime"),
        last_follow_up=_follow_up(ctx, resource),
    )


def _follow_up(ctx: MappingContext, resource: Json) -> When | None:
    ext = _ext(ctx, resource, "last-follow-up")
    if ext is None:
        return None
    parts = ext.get("extension", [])
    date = extension_value(parts, "date")
    day, anchor = _day_anchor(ctx, parts)
    parsed = _parse_date(date["valueDate"], "last-follow-up") if date else None
    return When(date=parsed, day=day, anchor=anchor)


def apply_condition(ctx: MappingContext, record: PatientRecord, resource: Json) -> PatientRecord:
    code = resource.get("code")
    diagnosis = _word(ctx, "diagnosis", code, "diagnosis code")
    state = ctx.terminology.word("diagnosis_state", code)
    onset = resource.get("onsetDateTime")
    return record.model_copy(
        update={
            "diagnosis": diagnosis,
            "disease_state": state,
            "diagnosis_date": _parse_date(onset, "onsetDateTime") if onset else None,
        }
    )


def drug_record(ctx: MappingContext, resource: Json, study_id: str) -> DrugAdministration:
    period = resource.get("effectivePeriod") or {}
    if "effectiveDateTime" in resource or "_effectiveDateTime" in resource:
        period = {
            "start": resource.get("effectiveDateTime"),
            "_start": resource.get("_effectiveDateTime"),
        }
    dose, unit = _quantity(ctx, (resource.get("dosage") or {}).get("dose"))
    cycle = _ext(ctx, resource, "cycle-number")
    return DrugAdministration(
        event_id=_event_id(ctx, resource, study_id, "drug"),
        agent=_word(ctx, "agent", resource.get("medicationCodeableConcept"), "medication"),
        cycle=cycle.get("valueInteger") if cycle else None,
        start=_need_when(ctx, period, "start"),
        end=_when(ctx, period, "end"),
        dose=dose,
        dose_unit=unit,
        intent=_ext_word(ctx, resource, "treatment-intent", "intent"),
        response=_ext_word(ctx, resource, "treatment-response", "response"),
    )


def procedure_record(ctx: MappingContext, resource: Json, study_id: str) -> ProcedureRecord:
    used = resource.get("usedCode") or []
    dose, unit = _quantity(ctx, (_ext(ctx, resource, "cell-dose") or {}).get("valueQuantity"))
    conditioning = _ext(ctx, resource, "conditioning-regimen")
    return ProcedureRecord(
        event_id=_event_id(ctx, resource, study_id, "procedure"),
        kind=_word(ctx, "procedure", resource.get("code"), "procedure code"),
        when=_need_when(ctx, resource, "performedDateTime"),
        product=_word(ctx, "product", used[0], "product") if used else None,
        cell_dose=dose,
        cell_dose_unit=unit,
        donor_type=_ext_word(ctx, resource, "donor-type", "donor_type"),
        conditioning=conditioning.get("valueString") if conditioning else None,
    )


def mrd_record(ctx: MappingContext, resource: Json, study_id: str, method: str) -> MrdResult:
    quantity = resource.get("valueQuantity")
    value, unit = _quantity(ctx, quantity)
    qualitative = resource.get("valueCodeableConcept") or next(
        iter(resource.get("interpretation") or ()), None
    )
    marker = _ext(ctx, resource, "mrd-marker")
    return MrdResult(
        event_id=_event_id(ctx, resource, study_id, "mrd"),
        timepoint=_ext_word(ctx, resource, "mrd-timepoint", "mrd_timepoint") or "follow_up",
        when=_need_when(ctx, resource, "effectiveDateTime"),
        method=method,
        specimen=_specimen(ctx, resource),
        value=value,
        unit=unit,
        comparator=(quantity or {}).get("comparator"),
        qualitative=_word(ctx, "mrd_qualitative", qualitative, "MRD result")
        if qualitative
        else None,
        sensitivity=_sensitivity(ctx, resource),
        marker=marker.get("valueString") if marker else None,
    )


def _specimen(ctx: MappingContext, resource: Json) -> str:
    ref = (resource.get("specimen") or {}).get("reference", "")
    for contained in resource.get("contained", ()):
        if ref == "#" + str(contained.get("id")) and contained.get("resourceType") == "Specimen":
            return _word(ctx, "specimen", contained.get("type"), "specimen type")
    return "bone_marrow"


def _sensitivity(ctx: MappingContext, resource: Json) -> float | None:
    for component in resource.get("component", ()):
        if ctx.terminology.word("observation_code", component.get("code")) == "assay_sensitivity":
            return _quantity(ctx, component.get("valueQuantity"))[0]
    return None


def status_record(ctx: MappingContext, resource: Json, study_id: str) -> DiseaseStatus:
    return DiseaseStatus(
        event_id=_event_id(ctx, resource, study_id, "status"),
        when=_need_when(ctx, resource, "effectiveDateTime"),
        status=_word(ctx, "disease_status", resource.get("valueCodeableConcept"), "status"),
    )


def adverse_record(ctx: MappingContext, resource: Json, study_id: str) -> AdverseEvent:
    grade = _ext(ctx, resource, "adverse-event-grade")
    if grade is None:
        raise ValueError("adverse event has no grade extension")
    return AdverseEvent(
        event_id=_event_id(ctx, resource, study_id, "ae"),
        kind=_word(ctx, "adverse_event", resource.get("event"), "adverse event"),
        grade=grade.get("valueInteger"),
        when=_need_when(ctx, resource, "date"),
    )


# -- assembling cases ---------------------------------------------------------------------


@dataclass
class _Patient:
    record: PatientRecord
    resource: Json
    events: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    cd19: list[tuple[Json, str]] = field(default_factory=list)


def _subject_key(resource: Json) -> str | None:
    subject = resource.get("subject") or resource.get("patient") or {}
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return reference_key(ref) if isinstance(ref, str) else None


def _observation(ctx: MappingContext, resource: Json, patient: _Patient) -> None:
    word = ctx.terminology.word("observation_code", resource.get("code"))
    study_id = patient.record.study_id
    if word == "disease_status":
        patient.events["statuses"].append(status_record(ctx, resource, study_id))
    elif word == "cd19":
        cd19 = _word(ctx, "cd19", resource.get("valueCodeableConcept"), "CD19 result")
        patient.cd19.append((resource, cd19))
    elif word is not None and word.startswith("mrd_"):
        patient.events["mrd"].append(mrd_record(ctx, resource, study_id, word[4:]))
    else:
        raise ValueError(f"observation code {resource.get('code')!r} is not one fhir_cart maps")


_EVENT_MAPPERS: dict[str, tuple[str, Callable[[MappingContext, Json, str], Event]]] = {
    "MedicationAdministration": ("drugs", drug_record),
    "Procedure": ("procedures", procedure_record),
    "AdverseEvent": ("adverse_events", adverse_record),
}


def _map_event(ctx: MappingContext, resource: Json, patient: _Patient) -> None:
    rtype = resource.get("resourceType", "")
    if rtype == "Observation":
        _observation(ctx, resource, patient)
    elif rtype == "Condition":
        patient.record = apply_condition(ctx, patient.record, resource)
    elif rtype in _EVENT_MAPPERS:
        slot, mapper = _EVENT_MAPPERS[rtype]
        patient.events[slot].append(mapper(ctx, resource, patient.record.study_id))
    else:
        raise ValueError(f"resource type {rtype} is not one fhir_cart maps")


def _merge_cd19(ctx: MappingContext, patient: _Patient, result: ReverseResult) -> None:
    statuses = patient.events["statuses"]
    by_id = {s.event_id: i for i, s in enumerate(statuses)}
    for resource, cd19 in patient.cd19:
        status_id = _event_id(ctx, resource, patient.record.study_id, "status").removesuffix(
            "/cd19"
        )
        index = by_id.get(status_id)
        if index is None:
            reason = "CD19 observation with no matching disease-status observation"
            result.unmapped.append(Unmapped(_ref_of(resource), "Observation", reason))
            continue
        statuses[index] = statuses[index].model_copy(update={"cd19": cd19})


def _sorted(events: list[Event]) -> tuple[Any, ...]:
    return tuple(sorted(events, key=lambda e: e.event_id))


def _build_case(ctx: MappingContext, patient: _Patient, result: ReverseResult) -> None:
    _merge_cd19(ctx, patient, result)
    ev = patient.events
    try:
        case = Case(
            patient=patient.record,
            drugs=_sorted(ev["drugs"]),
            procedures=_sorted(ev["procedures"]),
            mrd=_sorted(ev["mrd"]),
            statuses=_sorted(ev["statuses"]),
            adverse_events=_sorted(ev["adverse_events"]),
        )
    except ValidationError as exc:
        reason = f"patient's events do not form a valid case: {exc.errors()[0]['msg']}"
        result.unmapped.append(Unmapped(_ref_of(patient.resource), "Patient", reason))
        return
    result.cases.append(case)


def _add_patient(
    ctx: MappingContext, resource: Json, centre: str, patients: dict[str, _Patient]
) -> None:
    record = patient_record(ctx, resource, centre)
    entry = _Patient(record, resource)
    patients[str(resource.get("id"))] = entry


def cases_from_fhir(
    ctx: MappingContext, resources: Iterable[Json], *, default_centre: str = "ehr"
) -> ReverseResult:
    """Group resources by patient and reverse-map them. Events come sorted by event id."""
    result = ReverseResult()
    patients: dict[str, _Patient] = {}
    others: list[Json] = []
    for resource in resources:
        if resource.get("resourceType") != "Patient":
            others.append(resource)
            continue
        _guard(result, resource, partial(_add_patient, ctx, resource, default_centre, patients))
    for resource in others:
        patient = patients.get(_subject_key(resource) or "")
        if patient is None:
            reason = "references no patient in this data set"
            result.unmapped.append(
                Unmapped(_ref_of(resource), resource.get("resourceType", "?"), reason)
            )
            continue
        _guard(result, resource, partial(_map_event, ctx, resource, patient))
    for patient in patients.values():
        _build_case(ctx, patient, result)
    return result


def _guard(result: ReverseResult, resource: Json, action: Callable[[], None]) -> None:
    """Run one mapping step; a failure is recorded against the resource, never swallowed."""
    try:
        action()
    except (ValueError, MappingError) as exc:  # ValidationError is a ValueError
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        rtype = str(resource.get("resourceType", "?"))
        result.unmapped.append(Unmapped(_ref_of(resource), rtype, reason))
