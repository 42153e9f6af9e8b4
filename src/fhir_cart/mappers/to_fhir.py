"""Case-series record -> FHIR R4 resources, as plain JSON-ready dicts.

Why dicts and not ``fhir.resources`` models: a registry maps millions of resources and
fhir.resources validates about 10,000 per second, so the hot path builds the JSON shape
directly. That shape is proven valid by the tests (fhir.resources R4B *and* the HL7 R4 JSON
Schema over the fixtures and generated records), and ``validate=True`` in
:func:`fhir_cart.bundle.map_cases` pushes every emitted resource through fhir.resources.

Every resource gets a business identifier ``<base>/<centre>/<kind>|<study_id>[/<event_id>]``
and a stable id derived from it, so a re-push is a conditional update of the same resource.
Times: an absolute date goes in the FHIR element; a relative day (and its anchor) rides on
the same element as the ``relative-day`` extension (primitive extension, ``_element``), so
both are kept.
"""

from __future__ import annotations

from typing import Any

from fhir_cart.mappers.context import MappingContext
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

__all__ = [
    "adverse_event",
    "case_to_fhir",
    "condition",
    "disease_status",
    "medication_administration",
    "mrd_observation",
    "patient",
    "procedure",
]

Json = dict[str, Any]


class _Refs:
    """Identifiers and references shared by one patient's resources."""

    __slots__ = ("centre", "condition", "study_id")

    def __init__(self, ctx: MappingContext, record: PatientRecord) -> None:
        self.centre = record.centre
        self.study_id = record.study_id
        cond_id = _resource_id(ctx, record.centre, "condition", f"{record.study_id}/diagnosis")
        self.condition = {"reference": ctx.reference("Condition", cond_id)}

    def subject(self, ctx: MappingContext) -> Json:
        pid = _resource_id(ctx, self.centre, "patient", self.study_id)
        return {"reference": ctx.reference("Patient", pid)}


def _resource_id(ctx: MappingContext, centre: str, kind: str, value: str) -> str:
    return ctx.resource_id(ctx.identifier_system(centre, kind), value)


def _identity(ctx: MappingContext, centre: str, kind: str, value: str) -> tuple[str, Json]:
    system = ctx.identifier_system(centre, kind)
    return ctx.resource_id(system, value), {"system": system, "value": value}


def _day_parts(ctx: MappingContext, when: When) -> list[Json]:
    if when.day is None or when.anchor is None:
        return []
    return [
        {"url": "day", "valueInteger": when.day},
        {"url": "anchor", "valueCoding": ctx.terminology.coding("anchor", when.anchor)},
    ]


def _relative_day(ctx: MappingContext, when: When) -> Json | None:
    parts = _day_parts(ctx, when)
    return {"url": ctx.ext("relative-day"), "extension": parts} if parts else None


def _put_time(ctx: MappingContext, target: Json, name: str, when: When) -> None:
    """Set ``target[name]`` to the date and ``target['_'+name]`` to the relative day."""
    if when.date is not None:
        target[name] = when.date.isoformat()
    ext = _relative_day(ctx, when)
    if ext is not None:
        target["_" + name] = {"extension": [ext]}


def _base(resource_type: str, rid: str, profile: list[str] | None) -> Json:
    out: Json = {"resourceType": resource_type, "id": rid}
    if profile:
        out["meta"] = {"profile": profile}
    return out


def _quantity(ctx: MappingContext, value: float, unit: str) -> Json:
    return {"value": value, **ctx.terminology.unit(unit)}


def patient(ctx: MappingContext, record: PatientRecord) -> Json:
    rid, ident = _identity(ctx, record.centre, "patient", record.study_id)
    ident["assigner"] = {"display": record.centre}
    out = _base("Patient", rid, ctx.profile("patient"))
    out["identifier"] = [ident]
    extensions = _patient_extensions(ctx, record)
    if extensions:
        out["extension"] = extensions
    if record.sex is not None:
        out["gender"] = record.sex
    if record.birth_date is not None:
        out["birthDate"] = record.birth_date.isoformat()
    if record.death is not None:
        _put_time(ctx, out, "deceasedDateTime", record.death)
    return out


def _patient_extensions(ctx: MappingContext, record: PatientRecord) -> list[Json]:
    out: list[Json] = []
    if record.age_at_diagnosis is not None:
        age = _quantity(ctx, record.age_at_diagnosis, "a")
        out.append({"url": ctx.ext("age-at-diagnosis"), "valueAge": age})
    if record.last_follow_up is not None:
        when = record.last_follow_up
        parts = _day_parts(ctx, when)
        if when.date is not None:
            parts.insert(0, {"url": "date", "valueDate": when.date.isoformat()})
        out.append({"url": ctx.ext("last-follow-up"), "extension": parts})
    return out


def condition(ctx: MappingContext, record: PatientRecord, refs: _Refs) -> Json:
    rid, ident = _identity(ctx, record.centre, "condition", f"{record.study_id}/diagnosis")
    out = _base("Condition", rid, ctx.profile("condition"))
    out["identifier"] = [ident]
    terms = ctx.terminology
    clinical = (
        "relapse" if record.disease_state in ("relapsed", "relapsed_refractory") else "active"
    )
    out["clinicalStatus"] = terms.concept("condition_clinical", clinical)
    out["verificationStatus"] = terms.concept("condition_verification", "confirmed")
    out["category"] = [terms.concept("condition_category", "problem_list_item")]
    code = terms.concept("diagnosis", record.diagnosis)
    if record.disease_state is not None:
        state = terms.concept("diagnosis_state", record.disease_state)
        code["coding"] = [*code.get("coding", ()), *state.get("coding", ())]
    out["code"] = code
    out["subject"] = refs.subject(ctx)
    if record.diagnosis_date is not None:
        out["onsetDateTime"] = record.diagnosis_date.isoformat()
    return out


def medication_administration(ctx: MappingContext, drug: DrugAdministration, refs: _Refs) -> Json:
    value = f"{refs.study_id}/{drug.event_id}"
    rid, ident = _identity(ctx, refs.centre, "medication-administration", value)
    out = _base("MedicationAdministration", rid, ctx.profile("medication_administration"))
    out["identifier"] = [ident]
    extensions = _drug_extensions(ctx, drug)
    if extensions:
        out["extension"] = extensions
    out["status"] = "completed"
    out["medicationCodeableConcept"] = ctx.terminology.concept("agent", drug.agent)
    out["subject"] = refs.subject(ctx)
    period: Json = {}
    _put_time(ctx, period, "start", drug.start)
    if drug.end is not None:
        _put_time(ctx, period, "end", drug.end)
    out["effectivePeriod"] = period
    out["reasonReference"] = [refs.condition]
    if drug.dose is not None and drug.dose_unit is not None:
        out["dosage"] = {"dose": _quantity(ctx, drug.dose, drug.dose_unit)}
    return out


def _drug_extensions(ctx: MappingContext, drug: DrugAdministration) -> list[Json]:
    terms = ctx.terminology
    out: list[Json] = []
    if drug.intent is not None:
        intent = terms.concept("intent", drug.intent)
        out.append({"url": ctx.ext("treatment-intent"), "valueCodeableConcept": intent})
    if drug.cycle is not None:
        out.append({"url": ctx.ext("cycle-number"), "valueInteger": drug.cycle})
    if drug.response is not None:
        response = terms.concept("response", drug.response)
        out.append({"url": ctx.ext("treatment-response"), "valueCodeableConcept": response})
    return out


def procedure(ctx: MappingContext, proc: ProcedureRecord, refs: _Refs) -> Json:
    value = f"{refs.study_id}/{proc.event_id}"
    rid, ident = _identity(ctx, refs.centre, "procedure", value)
    out = _base("Procedure", rid, ctx.profile(f"procedure_{proc.kind}"))
    out["identifier"] = [ident]
    extensions = _procedure_extensions(ctx, proc)
    if extensions:
        out["extension"] = extensions
    out["status"] = "completed"
    out["code"] = ctx.terminology.concept("procedure", proc.kind)
    out["subject"] = refs.subject(ctx)
    _put_time(ctx, out, "performedDateTime", proc.when)
    out["reasonReference"] = [refs.condition]
    if proc.product is not None:
        out["usedCode"] = [ctx.terminology.concept("product", proc.product)]
    return out


def _procedure_extensions(ctx: MappingContext, proc: ProcedureRecord) -> list[Json]:
    out: list[Json] = []
    if proc.cell_dose is not None and proc.cell_dose_unit is not None:
        dose = _quantity(ctx, proc.cell_dose, proc.cell_dose_unit)
        out.append({"url": ctx.ext("cell-dose"), "valueQuantity": dose})
    if proc.donor_type is not None:
        donor = ctx.terminology.concept("donor_type", proc.donor_type)
        out.append({"url": ctx.ext("donor-type"), "valueCodeableConcept": donor})
    if proc.conditioning is not None:
        out.append({"url": ctx.ext("conditioning-regimen"), "valueString": proc.conditioning})
    return out


def mrd_observation(ctx: MappingContext, mrd: MrdResult, refs: _Refs) -> Json:
    terms = ctx.terminology
    rid, ident = _identity(ctx, refs.centre, "observation", f"{refs.study_id}/{mrd.event_id}")
    out = _base("Observation", rid, ctx.profile("mrd"))
    out["contained"] = [
        {
            "resourceType": "Specimen",
            "id": "specimen",
            "type": terms.concept("specimen", mrd.specimen),
        }
    ]
    out["extension"] = _mrd_extensions(ctx, mrd)
    out["identifier"] = [ident]
    out["status"] = "final"
    out["category"] = [terms.concept("observation_category", "laboratory")]
    out["code"] = terms.concept("observation_code", f"mrd_{mrd.method}")
    out["subject"] = refs.subject(ctx)
    out["focus"] = [refs.condition]
    _put_time(ctx, out, "effectiveDateTime", mrd.when)
    _put_mrd_value(ctx, out, mrd)
    out["method"] = terms.concept("mrd_method", mrd.method)
    out["specimen"] = {"reference": "#specimen"}
    if mrd.sensitivity is not None:
        out["component"] = [
            {
                "code": terms.concept("observation_code", "assay_sensitivity"),
                "valueQuantity": _quantity(ctx, mrd.sensitivity, "1"),
            }
        ]
    return out


def _mrd_extensions(ctx: MappingContext, mrd: MrdResult) -> list[Json]:
    timepoint = ctx.terminology.concept("mrd_timepoint", mrd.timepoint)
    out: list[Json] = [{"url": ctx.ext("mrd-timepoint"), "valueCodeableConcept": timepoint}]
    if mrd.marker is not None:
        out.append({"url": ctx.ext("mrd-marker"), "valueString": mrd.marker})
    return out


def _put_mrd_value(ctx: MappingContext, out: Json, mrd: MrdResult) -> None:
    """A number goes in valueQuantity (with '<' kept as comparator); a qualitative result
    alone is valueCodeableConcept, and beside a number it is the interpretation."""
    qualitative = (
        ctx.terminology.concept("mrd_qualitative", mrd.qualitative) if mrd.qualitative else None
    )
    if mrd.value is not None and mrd.unit is not None:
        quantity = _quantity(ctx, mrd.value, mrd.unit)
        if mrd.comparator is not None:
            quantity["comparator"] = mrd.comparator
        out["valueQuantity"] = quantity
        if qualitative is not None:
            out["interpretation"] = [qualitative]
    elif qualitative is not None:
        out["valueCodeableConcept"] = qualitative


def disease_status(ctx: MappingContext, status: DiseaseStatus, refs: _Refs) -> Json:
    terms = ctx.terminology
    value = f"{refs.study_id}/{status.event_id}"
    rid, ident = _identity(ctx, refs.centre, "observation", value)
    out = _base("Observation", rid, ctx.profile("disease_status"))
    out["identifier"] = [ident]
    out["status"] = "final"
    out["code"] = terms.concept("observation_code", "disease_status")
    out["subject"] = refs.subject(ctx)
    out["focus"] = [refs.condition]
    _put_time(ctx, out, "effectiveDateTime", status.when)
    out["valueCodeableConcept"] = terms.concept("disease_status", status.status)
    return out


def cd19_observation(ctx: MappingContext, status: DiseaseStatus, refs: _Refs) -> Json | None:
    """CD19 expression at a status assessment (no single code for 'CD19-negative relapse')."""
    if status.cd19 is None:
        return None
    terms = ctx.terminology
    value = f"{refs.study_id}/{status.event_id}/cd19"
    rid, ident = _identity(ctx, refs.centre, "observation", value)
    out = _base("Observation", rid, ctx.profile("cd19"))
    out["identifier"] = [ident]
    out["status"] = "final"
    out["category"] = [terms.concept("observation_category", "laboratory")]
    out["code"] = terms.concept("observation_code", "cd19")
    out["subject"] = refs.subject(ctx)
    out["focus"] = [refs.condition]
    _put_time(ctx, out, "effectiveDateTime", status.when)
    out["valueCodeableConcept"] = terms.concept("cd19", status.cd19)
    return out


def adverse_event(ctx: MappingContext, event: AdverseEvent, refs: _Refs) -> Json:
    value = f"{refs.study_id}/{event.event_id}"
    rid, ident = _identity(ctx, refs.centre, "adverse-event", value)
    out = _base("AdverseEvent", rid, ctx.profile("adverse_event"))
    out["extension"] = [{"url": ctx.ext("adverse-event-grade"), "valueInteger": event.grade}]
    out["identifier"] = ident  # 0..1 in R4
    out["actuality"] = "actual"
    out["event"] = ctx.terminology.concept("adverse_event", event.kind)
    out["subject"] = refs.subject(ctx)
    _put_time(ctx, out, "date", event.when)
    return out


def case_to_fhir(ctx: MappingContext, case: Case) -> list[Json]:
    """All resources of one patient, Patient first then Condition, then events."""
    refs = _Refs(ctx, case.patient)
    out = [patient(ctx, case.patient), condition(ctx, case.patient, refs)]
    out.extend(medication_administration(ctx, d, refs) for d in case.drugs)
    out.extend(procedure(ctx, p, refs) for p in case.procedures)
    out.extend(mrd_observation(ctx, m, refs) for m in case.mrd)
    for status in case.statuses:
        out.append(disease_status(ctx, status, refs))
        cd19 = cd19_observation(ctx, status, refs)
        if cd19 is not None:
            out.append(cd19)
    out.extend(adverse_event(ctx, a, refs) for a in case.adverse_events)
    return out
