"""Case-series record -> FHIR R4 resources, as plain JSON-ready dicts.

Why dicts and not ``fhir.resources`` models: a registry maps millions of resources and
fhir.resources validates about 2,000 per second, so the hot path builds the JSON shape
directly. That shape is proven valid by the tests (fhir.resources R4B *and* the HL7 R4 JSON
Schema over the fixtures and generated records), and ``validate=True`` in
:func:`fhir_cart.bundle.map_cases` pushes every emitted resource through fhir.resources.

Generic by concept kind (:mod:`fhir_cart.library.concepts`): a ``condition`` event is a Condition,
``medication`` a MedicationAdministration, ``procedure`` a Procedure, ``observation`` an
Observation, ``adverse_event`` an AdverseEvent; ``death`` and ``follow_up`` live on the
Patient. Codes come from the concept library and its terminology only.

Every resource gets a business identifier ``<base>/<centre>/<kind>|<study_id>[/<event_id>]``
and a stable id derived from it, so a re-push is a conditional update of the same resource.
Times: an absolute date goes in the FHIR element; a relative day or a window (and its
anchor) rides on the same element as the ``relative-day`` primitive extension (``_element``),
so both are kept. docs/fhir-model.md describes every choice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from fhir_cart.library.concepts import AttributeDef, ConceptDef
from fhir_cart.mappers.context import MappingContext, RefStyle
from fhir_cart.mappers.kinds import ID_KINDS, RESOURCE_KINDS
from fhir_cart.mappers.to_elements import (
    _attribute_codeable,
    _attribute_value,
    _put_time,
    _put_times,
    _quantity,
    _time_extension,
    _value_code,
    _value_extensions,
    _value_x,
    attribute_url,
)
from fhir_cart.records import Case, Event, PatientRecord, Scalar
from fhir_cart.types import Json

__all__ = [
    "ID_KINDS",
    "adverse_event",
    "attribute_url",
    "case_to_fhir",
    "condition",
    "event_order",
    "map_case",
    "medication_administration",
    "observation",
    "patient",
    "procedure",
]


_SINGLE_IDENTIFIER = {k.type: k.single_identifier for k in RESOURCE_KINDS}

# Where an attribute may go on each resource type besides an extension (AttributeDef.fhir).
_PLACES: dict[str, frozenset[str]] = {
    "Observation": frozenset({"method", "specimen", "component", "interpretation"}),
    "Procedure": frozenset({"used_code", "reason"}),
    "MedicationAdministration": frozenset({"reason"}),
}
_NO_PLACES: frozenset[str] = frozenset()


_SUSPECT_TYPES = {"procedure": "Procedure", "medication": "MedicationAdministration"}


def _clinical_status(ctx: MappingContext, events: tuple[Event, ...] | list[Event]) -> str:
    """condition_clinical word of the latest dated status event (its concept's value
    ``condition_status``), else ``active``: clinicalStatus is not frozen at enrolment."""
    latest: tuple[Any, ...] | None = None
    found = "active"
    for event in events:
        value, when = event.value, event.when
        if value is None or value.code is None or when is None:
            continue
        status = _condition_status(ctx, event.concept, value.code)
        if status is None or (when.date is None and when.day is None):
            continue
        key = (when.date is not None, when.date or when.day, when.day or 0)
        if latest is None or key >= latest:
            latest, found = key, status
    return found


def _condition_status(ctx: MappingContext, concept_key: str, word: str) -> str | None:
    """The word's ``condition_status``, else that of the nearest word it is ``within`` (a
    word a study's library adds to a response scale sets the status its broader word does)."""
    value = ctx.concepts.concept(concept_key).value
    statuses = value.condition_status
    if word in statuses or not statuses or value.value_set is None:
        return statuses.get(word)
    for broader in ctx.terminology.broader_words(value.value_set, word):
        if broader in statuses:
            return statuses[broader]
    return None


class _Refs:
    """Identifiers and references shared by one patient's resources.

    Every reference is one dict shared by all resources that hold it, so :meth:`restyle`
    turns a patient's resources from one reference style to the other in place: a case is
    mapped once and written both as NDJSON (relative) and in a transaction (urn)."""

    __slots__ = (
        "_ids",
        "_made",
        "anchors",
        "centre",
        "clinical_status",
        "condition",
        "patient_id",
        "study_id",
        "subject",
    )

    def __init__(self, ctx: MappingContext, case: Case) -> None:
        record = case.patient
        self.centre = record.centre
        self.study_id = record.study_id
        self._ids: dict[tuple[str, str], str] = {}
        self._made: list[tuple[Json, str, str]] = []
        self.patient_id = self.resource_id(ctx, "patient", record.study_id)
        self.subject = self._reference(ctx, "Patient", self.patient_id)
        self.condition: Json | None = None
        conditions = [e for e in case.events if ctx.concepts.concept(e.concept).kind == "condition"]
        if conditions:  # the first by event id, so the record's row order does not matter
            first = min(conditions, key=event_order) if len(conditions) > 1 else conditions[0]
            cid = self.resource_id(ctx, "condition", f"{record.study_id}/{first.event_id}")
            self.condition = self._reference(ctx, "Condition", cid)
        self.clinical_status = _clinical_status(ctx, case.events)
        # The first procedure or drug event of each concept: what a relative day counts from,
        # and the suspect of an adverse event timed from it.
        self.anchors: dict[str, Json] = {}
        for event in sorted(case.events, key=event_order):
            kind = ctx.concepts.concept(event.concept).kind
            if event.concept in self.anchors or kind not in _SUSPECT_TYPES:
                continue
            rtype = _SUSPECT_TYPES[kind]
            rid = self.resource_id(ctx, ID_KINDS[rtype], f"{record.study_id}/{event.event_id}")
            self.anchors[event.concept] = self._reference(ctx, rtype, rid)

    def resource_id(self, ctx: MappingContext, kind: str, value: str) -> str:
        """The id of this patient's resource of identifier kind ``kind`` (computed once)."""
        found = self._ids.get((kind, value))
        if found is None:
            found = self._ids[(kind, value)] = _resource_id(ctx, self.centre, kind, value)
        return found

    def _reference(self, ctx: MappingContext, rtype: str, rid: str) -> Json:
        ref = {"reference": ctx.reference(rtype, rid)}
        self._made.append((ref, rtype, rid))
        return ref

    def restyle(self, style: RefStyle) -> None:
        """Every reference of this patient's resources in ``style`` from now on."""
        for ref, rtype, rid in self._made:
            ref["reference"] = f"urn:uuid:{rid}" if style == "urn" else f"{rtype}/{rid}"


_DIGITS = re.compile(r"(\d+)")


def event_order(event: Event) -> tuple[Any, ...]:
    """Natural order of event ids ('drug-2' before 'drug-10')."""
    return _id_order(event.event_id)


@lru_cache(maxsize=4096)
def _id_order(event_id: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(event_id))


def _resource_id(ctx: MappingContext, centre: str, kind: str, value: str) -> str:
    return ctx.resource_id(ctx.identifier_system(centre, kind), value)


def _about_the_cancer(ctx: MappingContext, event: Event, unless_said: bool = True) -> bool:
    """Whether the event is about the cancer: its ``reason`` says so (profiles.yaml
    ``cancer_related_reasons``: GVHD prophylaxis, CRS treatment, ... are not); with no
    reason, ``unless_said`` (a drug: whether its concept claims the cancer profile)."""
    reason = event.attributes.get("reason")
    return unless_said if reason is None else ctx.profiles.cancer_related(reason)


def _start(ctx: MappingContext, rtype: str, event: Event, concept: ConceptDef, refs: _Refs) -> Json:
    """id, meta.profile and the business identifier of an event's resource."""
    kind = ID_KINDS[rtype]
    system = ctx.identifier_system(refs.centre, kind)
    value = f"{refs.study_id}/{event.event_id}"
    out: Json = {"resourceType": rtype, "id": refs.resource_id(ctx, kind, value)}
    profile = ctx.profile(concept.profile) if concept.profile else None
    if profile and _about_the_cancer(ctx, event):  # the reason decides, not the drug
        out["meta"] = {"profile": profile}
    ident = {"system": system, "value": value}
    out["identifier"] = ident if _SINGLE_IDENTIFIER.get(rtype) else [ident]
    return out


# -- times ----------------------------------------------------------------------------------


def _put_attributes(ctx: MappingContext, out: Json, event: Event, extensions: list[Json]) -> None:
    places = _PLACES.get(out["resourceType"], _NO_PLACES)
    library = ctx.concepts.data.attributes
    for key, value in event.attributes.items():
        attr = library.get(key)
        place = attr.fhir if attr is not None and attr.fhir in places else "extension"
        if place == "extension":
            name, element = _attribute_value(ctx, attr, value)
            extensions.append({"url": attribute_url(ctx, key, attr), name: element})
        else:
            _PLACERS[place](ctx, out, key, attr, value)  # type: ignore[arg-type]


def _put_method(
    ctx: MappingContext, out: Json, key: str, attr: AttributeDef, value: Scalar
) -> None:
    out["method"] = _attribute_codeable(ctx, attr, value)


def _put_specimen(
    ctx: MappingContext, out: Json, key: str, attr: AttributeDef, value: Scalar
) -> None:
    specimen = {
        "resourceType": "Specimen",
        "id": key,
        "type": _attribute_codeable(ctx, attr, value),
    }
    out.setdefault("contained", []).append(specimen)
    out["specimen"] = {"reference": f"#{key}"}


def _put_component(
    ctx: MappingContext, out: Json, key: str, attr: AttributeDef, value: Scalar
) -> None:
    name, element = _attribute_value(ctx, attr, value, component=True)
    component = {"code": ctx.concepts.attribute_codeable(key), name: element}
    out.setdefault("component", []).append(component)


def _put_reason(
    ctx: MappingContext, out: Json, key: str, attr: AttributeDef, value: Scalar
) -> None:
    out.setdefault("reasonCode", []).append(_attribute_codeable(ctx, attr, value))


def _put_used_code(
    ctx: MappingContext, out: Json, key: str, attr: AttributeDef, value: Scalar
) -> None:
    out.setdefault("usedCode", []).append(_attribute_codeable(ctx, attr, value))


def _put_interpretation(
    ctx: MappingContext, out: Json, key: str, attr: AttributeDef, value: Scalar
) -> None:
    out.setdefault("interpretation", []).append(_attribute_codeable(ctx, attr, value))


_PLACERS: dict[str, Callable[[MappingContext, Json, str, AttributeDef, Scalar], None]] = {
    "method": _put_method,
    "specimen": _put_specimen,
    "component": _put_component,
    "used_code": _put_used_code,
    "reason": _put_reason,
    "interpretation": _put_interpretation,
}


def _details(ctx: MappingContext, event: Event) -> list[Json]:
    """The source's own words, the resource type an event was pulled from, and why the
    mapping assumed a time or value the source does not state."""
    out: list[Json] = []
    if event.source_text is not None:
        out.append({"url": ctx.ext("source-text"), "valueString": event.source_text})
    if event.origin is not None:
        out.append({"url": ctx.ext("origin"), "valueString": event.origin})
    if event.assumed is not None:
        out.append({"url": ctx.ext("assumed"), "valueString": event.assumed})
    return out


def _finish(ctx: MappingContext, out: Json, event: Event, extensions: list[Json]) -> Json:
    _put_attributes(ctx, out, event, extensions)
    extensions.extend(_details(ctx, event))
    if extensions:
        out["extension"] = extensions
    return out


# -- one function per kind ------------------------------------------------------------------


def patient(ctx: MappingContext, case: Case, refs: _Refs | None = None) -> Json:
    """The Patient, with patient attributes, death and last follow-up."""
    refs = refs or _Refs(ctx, case)
    record = case.patient
    system = ctx.identifier_system(record.centre, "patient")
    out: Json = {"resourceType": "Patient", "id": refs.patient_id}
    profile = ctx.profile("patient")
    if profile:
        out["meta"] = {"profile": profile}
    ident = {"system": system, "value": record.study_id, "assigner": {"display": record.centre}}
    out["identifier"] = [ident]
    # Study data are pseudonymous: US Core / mCODE CancerPatient require name (1..*), so the
    # name says it is masked (core data-absent-reason extension).
    masked = ctx.terminology.coding("data_absent_masked", "masked")["code"]
    out["name"] = [{"extension": [{"url": ctx.profiles.data_absent_reason, "valueCode": masked}]}]
    extensions = _patient_attributes(ctx, record)
    if record.sex is not None:
        out["gender"] = record.sex
    else:  # gender is 1..1 in US Core / mCODE: say why it is missing (R4 json.html#primitive)
        out["_gender"] = {"extension": [_absent(ctx)]}
    if record.birth_text is not None:
        out["birthDate"] = record.birth_text
    deaths, others = [], []
    for event in case.events:
        kind = ctx.concepts.concept(event.concept).kind
        if kind == "death":
            deaths.append(event)
        elif kind == "follow_up":
            others.append(event)
    if deaths:  # the first death (by event id) is deceased[x]; a second one is kept beside
        deaths.sort(key=event_order)
        _put_death(ctx, out, deaths[0])
        others += deaths[1:]
    if len(others) > 1:  # in event-id order, so the record's row order does not matter
        others.sort(key=event_order)
    extensions.extend(_patient_event(ctx, event) for event in others)
    if extensions:
        out["extension"] = extensions
    return out


def _patient_attributes(ctx: MappingContext, record: PatientRecord) -> list[Json]:
    library = ctx.concepts.data.patient_attributes
    out: list[Json] = []
    for key, value in record.attributes.items():
        attr = library.get(key)
        name, element = _attribute_value(ctx, attr, value)
        out.append({"url": attribute_url(ctx, key, attr), name: element})
    return out


def _event_details(ctx: MappingContext, event: Event) -> list[Json]:
    """What a Patient element cannot hold of an event: its id (when it is not the concept's
    key), end, value, attributes, source text and origin, as extensions."""
    concept = ctx.concepts.concept(event.concept)
    out: list[Json] = []
    if event.event_id != event.concept:
        out.append({"url": ctx.ext("event-id"), "valueString": event.event_id})
    if event.end is not None:
        out.append(_time_extension(ctx, ctx.ext("end"), event.end))
    out.extend(_value_extensions(ctx, concept, event.value))
    holder: Json = {"resourceType": "Patient"}
    found: list[Json] = _finish(ctx, holder, event, out).get("extension", [])
    return found


def _put_death(ctx: MappingContext, out: Json, event: Event) -> None:
    details = _event_details(ctx, event)
    dated = event.when is not None and event.when.date is not None
    name = "deceasedDateTime" if dated else "deceasedBoolean"
    if dated and event.when is not None:
        _put_time(ctx, out, name, event.when)
    else:  # no date (perhaps a relative day): deceased all the same, the day rides along
        out[name] = True
        if event.when is not None:
            _put_time(ctx, out, name, event.when)
    if details:
        out.setdefault("_" + name, {"extension": []})["extension"].extend(details)


def _patient_event(ctx: MappingContext, event: Event) -> Json:
    """A follow-up (or a second death) as a Patient extension named after its concept."""
    url = ctx.ext(event.concept.replace("_", "-"))
    if event.when is None:
        ext: Json = {"url": url, "extension": []}
    else:
        ext = _time_extension(ctx, url, event.when)
    ext["extension"].extend(_event_details(ctx, event))
    if not ext["extension"]:  # an undated event with nothing else: its id says it is there
        ext["extension"].append({"url": ctx.ext("event-id"), "valueString": event.event_id})
    return ext


def condition(ctx: MappingContext, event: Event, refs: _Refs, concept: ConceptDef) -> Json:
    """Condition: ``code`` is the value's coding (the diagnosis); attributes as extensions."""
    terms = ctx.terminology
    out = _start(ctx, "Condition", event, concept, refs)
    out["clinicalStatus"] = terms.concept("condition_clinical", refs.clinical_status)
    verification = _status(ctx, "Condition", "verificationStatus", event) or "confirmed"
    out["verificationStatus"] = terms.concept("condition_verification", verification)
    out["category"] = [terms.concept("condition_category", "problem_list_item")]
    value = event.value
    if value is not None and value.code is not None:
        out["code"] = _value_code(ctx, concept, value.code)
    else:
        out["code"] = ctx.concepts.codeable(event.concept)
    out["subject"] = refs.subject
    if event.when is not None:
        _put_time(ctx, out, "onsetDateTime", event.when)
    if event.end is not None:
        _put_time(ctx, out, "abatementDateTime", event.end)
    return _finish(ctx, out, event, _value_extensions(ctx, concept, value, code=False))


def _status(ctx: MappingContext, resource_type: str, element: str, event: Event) -> str | None:
    """The status the event's source gave (its ``status`` flag, e.g. ``preliminary``) where
    this resource type holds it (mappings/statuses.yaml); None: the plain final one."""
    return ctx.statuses.written(resource_type, element, event.status)


def medication_administration(
    ctx: MappingContext, event: Event, refs: _Refs, concept: ConceptDef
) -> Json:
    """MedicationAdministration; effective[x] is 1..1, so an undated one still has an
    effectivePeriod, saying why it has no date (data-absent-reason)."""
    out = _start(ctx, "MedicationAdministration", event, concept, refs)
    out["status"] = _status(ctx, "MedicationAdministration", "status", event) or "completed"
    out["medicationCodeableConcept"] = ctx.concepts.codeable(event.concept)
    out["subject"] = refs.subject
    period: Json = {}
    if event.when is not None:
        _put_time(ctx, period, "start", event.when)
    if event.end is not None:
        _put_time(ctx, period, "end", event.end)
    out["effectivePeriod"] = period or {"extension": [_absent(ctx)]}
    if refs.condition is not None and _about_the_cancer(ctx, event, concept.profile is not None):
        out["reasonReference"] = [refs.condition]
    value, extensions = event.value, []
    if value is not None and value.number is not None and value.comparator is None:
        quantity = _quantity(ctx, value.number, value.unit)  # SimpleQuantity
        # A dose per day is a rate (R4 Dosage.rate[x]), an amount per administration a dose.
        per_day = value.unit is not None and value.unit.endswith("/d")
        out["dosage"] = {"rateQuantity" if per_day else "dose": quantity}
        if value.unit is not None:
            extensions.append(normalization_basis(ctx, value.unit))
        value = value.model_copy(update={"number": None, "unit": None})
    if value is not None:
        extensions.extend(_value_extensions(ctx, concept, value))
    return _finish(ctx, out, event, extensions)


def normalization_basis(ctx: MappingContext, unit: str) -> Json:
    """mCODE normalization-basis extension: per m2 (BSA), per kg (weight), else fixed."""
    parts = unit.split("/")[1:]
    word = "fixed_dose"
    if "m2" in parts:
        word = "body_surface_area"
    elif "kg" in parts:
        word = "body_weight"
    codeable = ctx.terminology.concept("normalization_basis", word)
    return {"url": ctx.profiles.normalization_basis, "valueCodeableConcept": codeable}


def _absent(ctx: MappingContext) -> Json:
    code = ctx.terminology.coding("data_absent_reason", "unknown")["code"]
    return {"url": ctx.profiles.data_absent_reason, "valueCode": code}


def procedure(ctx: MappingContext, event: Event, refs: _Refs, concept: ConceptDef) -> Json:
    out = _start(ctx, "Procedure", event, concept, refs)
    out["status"] = _status(ctx, "Procedure", "status", event) or "completed"
    out["code"] = ctx.concepts.codeable(event.concept)
    out["subject"] = refs.subject
    _put_times(ctx, out, event, "performedDateTime", "performedPeriod")
    if refs.condition is not None and _about_the_cancer(ctx, event):
        out["reasonReference"] = [refs.condition]
    return _finish(ctx, out, event, _value_extensions(ctx, concept, event.value))


def observation(ctx: MappingContext, event: Event, refs: _Refs, concept: ConceptDef) -> Json:
    """Observation: value[x] from the value; a code beside another value is the first
    ``interpretation``; attributes where their AttributeDef.fhir says."""
    out = _start(ctx, "Observation", event, concept, refs)
    out["status"] = _status(ctx, "Observation", "status", event) or "final"
    if concept.category is not None:
        out["category"] = [ctx.terminology.concept("observation_category", concept.category)]
    out["code"] = ctx.concepts.codeable(event.concept)
    out["subject"] = refs.subject
    if refs.condition is not None:
        out["focus"] = [refs.condition]
    _put_times(ctx, out, event, "effectiveDateTime", "effectivePeriod")
    value = event.value
    if value is not None:
        pair = _value_x(ctx, concept, value)
        code = _value_code(ctx, concept, value.code) if value.code is not None else None
        if pair is not None:
            out[pair[0]] = pair[1]
            if code is not None and value.code is not None:
                out["interpretation"] = [_interpretation(ctx, concept, value.code, code)]
        elif code is not None:
            out["valueCodeableConcept"] = code
    return _finish(ctx, out, event, [])


def _interpretation(ctx: MappingContext, concept: ConceptDef, word: str, code: Json) -> Json:
    """A value word beside a number as Observation.interpretation: the R4
    ObservationInterpretation coding first (extensible binding), then the word's codings."""
    mapped = concept.value.interpretations.get(word)
    if mapped is None:
        return code
    v3 = ctx.terminology.concept("result_interpretation", mapped).get("coding", [])
    return {**code, "coding": [*v3, *code.get("coding", [])]}


def adverse_event(ctx: MappingContext, event: Event, refs: _Refs, concept: ConceptDef) -> Json:
    """AdverseEvent (grade and the other attributes as extensions; an end as extension
    ``end``: R4 AdverseEvent has no period)."""
    out = _start(ctx, "AdverseEvent", event, concept, refs)
    out["actuality"] = "actual"
    out["event"] = ctx.concepts.codeable(event.concept)
    out["subject"] = refs.subject
    if event.when is not None:
        _put_time(ctx, out, "date", event.when)
        suspect = refs.anchors.get(event.when.anchor) if event.when.anchor else None
        if suspect is not None:  # CRS timed from the CAR-T infusion names the infusion
            out["suspectEntity"] = [{"instance": suspect}]
    extensions = _value_extensions(ctx, concept, event.value)
    if event.end is not None:
        extensions.append(_time_extension(ctx, ctx.ext("end"), event.end))
    return _finish(ctx, out, event, extensions)


_MAPPERS: dict[str, Callable[[MappingContext, Event, _Refs, ConceptDef], Json]] = {
    "condition": condition,
    "medication": medication_administration,
    "procedure": procedure,
    "observation": observation,
    "adverse_event": adverse_event,
}


def case_to_fhir(ctx: MappingContext, case: Case) -> list[Json]:
    """All resources of one patient: Patient first, then Condition(s), then the other events
    in record order (death and follow-up are on the Patient)."""
    return map_case(ctx, case)[0]


def map_case(ctx: MappingContext, case: Case) -> tuple[list[Json], Callable[[RefStyle], None]]:
    """:func:`case_to_fhir`, with what turns the resources' references (made in the
    context's style) to the other style in place: map once, write both forms."""
    refs = _Refs(ctx, case)
    conditions: list[Json] = []
    events: list[Json] = []
    for event in case.events:
        concept = ctx.concepts.concept(event.concept)
        mapper = _MAPPERS.get(concept.kind)
        if mapper is None:
            continue
        (conditions if concept.kind == "condition" else events).append(
            mapper(ctx, event, refs, concept)
        )
    return [patient(ctx, case, refs), *conditions, *events], refs.restyle
