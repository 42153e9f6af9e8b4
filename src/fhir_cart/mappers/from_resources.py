"""One reverse mapper per FHIR resource type (:data:`_EVENT_MAPPERS`), the Patient, and the
``other`` rows of resources that match no concept."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_cart.library.concepts import ConceptDef
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_elements import (
    OtherRow,
    _attribute_scalar,
    _extension_attributes,
    _extension_value,
    _identifiers,
    _make_value,
    _NoConcept,
    _own,
    _parse_date,
    _placed_word,
    _quantity,
    _ref_of,
    _safe_id,
    _time_extension,
    _value_fields,
    _when,
    event_id_of,
)
from fhir_cart.mappers.to_fhir import normalization_basis
from fhir_cart.records import (
    Event,
    PatientRecord,
    Scalar,
    When,
)
from fhir_cart.references import reference_key
from fhir_cart.types import Json

# -- one function per resource type ---------------------------------------------------------


@dataclass
class _Patient:
    record: PatientRecord
    resource: Json
    events: list[Event] = field(default_factory=list)
    unread: list[Json] = field(default_factory=list)
    """Its extensions that name no attribute of the library (``ReverseResult.undeclared``)."""
    events_unread: list[tuple[Json, Json]] = field(default_factory=list)
    """(resource, extension) of its events' resources' extensions that no attribute reads."""


@dataclass
class _Run:
    """What one reverse mapping needs besides the context."""

    ctx: MappingContext
    specimens: dict[str, Json]
    used_specimens: set[str] = field(default_factory=set)
    specimen_notes: dict[str, str] = field(default_factory=dict)
    medications: Mapping[str, Json] = field(default_factory=dict)
    """Medication resources received, by id (read through ``medicationReference``)."""
    used_medications: set[str] = field(default_factory=set)
    from_text: bool = False
    """The resource being mapped was classified by its text (it has no coding at all)."""
    unread: list[Json] = field(default_factory=list)
    """The extensions of the resource just mapped that no attribute reads (set by each
    event it makes; ``ReverseResult.undeclared`` once its case is built)."""


def _event(run: _Run, resource: Json, study_id: str, key: str, **fields: Any) -> Event:
    ctx = run.ctx
    concept = ctx.concepts.concept(key)
    unread: list[Json] = []
    attributes = _extension_attributes(ctx, resource.get("extension"), unread=unread)
    attributes.update(fields.pop("attributes", {}))
    for codeable in resource.get("reasonCode") or ():  # why it was given (GVHD prophylaxis)
        found = _placed_word(ctx, concept, "reason", codeable)
        if found is not None:
            attributes[found[0]] = found[1]
    value = fields.pop("value", {})
    value.update(_extension_value(ctx, concept, resource))
    source = _own(ctx, resource, "source-text")
    origin = _own(ctx, resource, "origin")
    assumed = _own(ctx, resource, "assumed")
    event = Event(
        event_id=event_id_of(ctx, resource, study_id),
        concept=key,
        value=_make_value(value),
        attributes=attributes,
        source_text=source.get("valueString") if source else None,
        origin=fields.pop("origin", None) or (origin.get("valueString") if origin else None),
        assumed=assumed.get("valueString") if assumed else None,
        **fields,
    )
    run.unread = [e for e in unread if not _written_basis(ctx, e, value.get("unit"))]
    return event


def _written_basis(ctx: MappingContext, ext: Json, unit: Any) -> bool:
    """Whether ``ext`` is the mCODE normalization-basis extension fhir_cart writes beside a
    dose in ``unit`` (per m2, per kg, else fixed): the dose's unit says what it says, so it
    is read. Any other basis (one the unit does not give) is not read."""
    if ext.get("url") != ctx.profiles.normalization_basis or not isinstance(unit, str):
        return False
    written = normalization_basis(ctx, unit)["valueCodeableConcept"]
    return bool(_code_pairs(written) & _code_pairs(ext.get("valueCodeableConcept")))


def _code_pairs(codeable: Any) -> set[tuple[Any, Any]]:
    codings = codeable.get("coding") if isinstance(codeable, dict) else None
    return {(c.get("system"), c.get("code")) for c in codings or () if isinstance(c, dict)}


def _classify(run: _Run, codeable: Json | None, kind: str, what: str) -> str:
    key = run.ctx.concepts.classify(codeable, (kind,))
    if key is None:
        raise _NoConcept(f"{what} {_codes(codeable)} matches no {kind} concept of the library")
    run.from_text = run.from_text or _text_only(codeable)
    return key


def _text_only(codeable: Json | None) -> bool:
    return isinstance(codeable, dict) and not codeable.get("coding")


FROM_TEXT = "read from text"
"""The ``status`` flag of an event classified by the text of a resource with no coding."""


def _codes(codeable: Json | None) -> str:
    codings = (codeable or {}).get("coding") or ()
    shown = [f"{c.get('system')}|{c.get('code')}" for c in codings]
    return ", ".join(shown) or repr((codeable or {}).get("text"))


def condition_event(run: _Run, resource: Json, study_id: str) -> Event:
    """A Condition: a condition concept by its own coding, or by the value set its code is
    in (the diagnosis). An unknown diagnosis is no event."""
    ctx = run.ctx
    code = resource.get("code")
    key = ctx.concepts.classify(code, ("condition",))
    value: dict[str, Any] = {}
    if key is None:
        for candidate in ctx.concepts.keys("condition"):
            value_set = ctx.concepts.concept(candidate).value.value_set
            word = ctx.terminology.word(value_set, code) if value_set else None
            if word is not None:
                key, value = candidate, {"code": word}
                break
    if key is None:
        raise _NoConcept(f"diagnosis code {_codes(code)} is in no value set of the library")
    run.from_text = _text_only(code)
    when, end = _when(ctx, resource, "onsetDateTime"), _when(ctx, resource, "abatementDateTime")
    return _event(run, resource, study_id, key, value=value, when=when, end=end)


def _period(ctx: MappingContext, resource: Json, single: str, period: str) -> dict[str, Any]:
    if single in resource or "_" + single in resource:
        return {"when": _when(ctx, resource, single)}
    span = resource.get(period) or {}
    return {"when": _when(ctx, span, "start"), "end": _when(ctx, span, "end")}


def _medication_key(run: _Run, resource: Json) -> str:
    """The drug concept of a medication resource however its drug is written: its
    ``medicationCodeableConcept``, or the Medication its ``medicationReference`` names (a
    contained one, ``#id``, or one pulled with the cohort), by that Medication's code, else by
    its ingredients' codes (one drug concept among them)."""
    if "medicationCodeableConcept" in resource:
        return _classify(run, resource["medicationCodeableConcept"], "medication", "medication")
    ref = (resource.get("medicationReference") or {}).get("reference")
    if not isinstance(ref, str):
        raise _NoConcept("no medicationCodeableConcept and no medicationReference")
    target = reference_key(ref)
    if ref.startswith("#"):
        contained = resource.get("contained") or ()
        medication = next((c for c in contained if c.get("id") == target), None)
    else:
        medication = run.medications.get(target)
    if medication is None or medication.get("resourceType") != "Medication":
        raise _NoConcept(f"medicationReference {ref} is not among the pulled resources")
    key = _medication_resource_key(run, medication, ref)
    if not ref.startswith("#"):
        run.used_medications.add(target)
    return key


def _medication_resource_key(run: _Run, medication: Json, ref: str) -> str:
    key = run.ctx.concepts.classify(medication.get("code"), ("medication",))
    if key is not None:
        run.from_text = run.from_text or _text_only(medication.get("code"))
        return key
    found: dict[str, Json] = {}
    for ingredient in medication.get("ingredient") or ():
        item = ingredient.get("itemCodeableConcept")
        ingredient_key = run.ctx.concepts.classify(item, ("medication",))
        if ingredient_key is not None:
            found.setdefault(ingredient_key, item)
    if len(found) > 1:
        raise _NoConcept(f"ambiguous: ingredients of {ref} match {' and '.join(sorted(found))}")
    if not found:
        codes = _codes(medication.get("code"))
        raise _NoConcept(
            f"Medication {ref} (code {codes}) and its ingredients match no medication concept"
        )
    ((key, item),) = found.items()
    run.from_text = run.from_text or _text_only(item)
    return key


def medication_administration_event(run: _Run, resource: Json, study_id: str) -> Event:
    ctx = run.ctx
    key = _medication_key(run, resource)
    dosage = resource.get("dosage") or {}
    number, unit = _quantity(dosage.get("dose") or dosage.get("rateQuantity"))
    times = _period(ctx, resource, "effectiveDateTime", "effectivePeriod")
    return _event(run, resource, study_id, key, value={"number": number, "unit": unit}, **times)


def medication_request_event(run: _Run, resource: Json, study_id: str) -> Event:
    """A MedicationRequest read as the drug's event (origin MedicationRequest): time from
    the dosage timing bounds, else authoredOn; value the first dose quantity."""
    ctx = run.ctx
    key = _medication_key(run, resource)
    dosage: Json = next(iter(resource.get("dosageInstruction") or ()), {})
    bounds = ((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") or {}
    times = {"when": _when(ctx, bounds, "start"), "end": _when(ctx, bounds, "end")}
    if times["when"] is None:
        times["when"] = _when(ctx, resource, "authoredOn")
    rate: Json = next(iter(dosage.get("doseAndRate") or ()), {})
    dose = rate.get("doseQuantity")
    number, unit = _quantity(dose)
    value = {"number": number, "unit": unit}
    return _event(run, resource, study_id, key, value=value, origin="MedicationRequest", **times)


def _first_dose(dosages: Any) -> dict[str, Any]:
    dosage: Json = next(iter(dosages or ()), {})
    rate: Json = next(iter(dosage.get("doseAndRate") or ()), {})
    number, unit = _quantity(rate.get("doseQuantity"))
    return {"number": number, "unit": unit}


def medication_statement_event(run: _Run, resource: Json, study_id: str) -> Event:
    """A MedicationStatement (the IPS medication summary) read as the drug's event (origin
    MedicationStatement): time ``effective[x]``, value the first dosage's dose."""
    key = _medication_key(run, resource)
    times = _period(run.ctx, resource, "effectiveDateTime", "effectivePeriod")
    value = _first_dose(resource.get("dosage"))
    return _event(run, resource, study_id, key, value=value, origin="MedicationStatement", **times)


def medication_dispense_event(run: _Run, resource: Json, study_id: str) -> Event:
    """A MedicationDispense read as the drug's event (origin MedicationDispense): time
    ``whenHandedOver``, else ``whenPrepared``; value the first dosage instruction's dose."""
    key = _medication_key(run, resource)
    name = "whenHandedOver" if "whenHandedOver" in resource else "whenPrepared"
    value = _first_dose(resource.get("dosageInstruction"))
    return _event(
        run,
        resource,
        study_id,
        key,
        value=value,
        origin="MedicationDispense",
        when=_when(run.ctx, resource, name),
    )


def procedure_event(run: _Run, resource: Json, study_id: str) -> Event:
    ctx = run.ctx
    key = _classify(run, resource.get("code"), "procedure", "procedure code")
    concept = ctx.concepts.concept(key)
    attributes: dict[str, Scalar] = {}
    for used in resource.get("usedCode") or ():
        found = _placed_word(ctx, concept, "used_code", used)
        if found is not None:
            attributes[found[0]] = found[1]
    times = _period(ctx, resource, "performedDateTime", "performedPeriod")
    return _event(run, resource, study_id, key, attributes=attributes, **times)


def adverse_event_event(run: _Run, resource: Json, study_id: str) -> Event:
    ctx = run.ctx
    key = _classify(run, resource.get("event"), "adverse_event", "adverse event")
    when = _when(ctx, resource, "date")
    end = _time_extension(ctx, _own(ctx, resource, "end"))
    return _event(run, resource, study_id, key, when=when, end=end)


def observation_event(run: _Run, resource: Json, study_id: str) -> Event:
    ctx = run.ctx
    key = _classify(run, resource.get("code"), "observation", "observation code")
    concept = ctx.concepts.concept(key)
    value = _value_fields(ctx, concept, resource)
    attributes = _observation_attributes(run, concept, resource, value)
    times = _period(ctx, resource, "effectiveDateTime", "effectivePeriod")
    return _event(run, resource, study_id, key, value=value, attributes=attributes, **times)


def _observation_attributes(
    run: _Run, concept: ConceptDef, resource: Json, value: dict[str, Any]
) -> dict[str, Scalar]:
    ctx = run.ctx
    out: dict[str, Scalar] = {}
    for place, codeables in (
        ("method", [resource["method"]] if resource.get("method") else []),
        ("interpretation", _interpretations(ctx, concept, resource, value)),
    ):
        for codeable in codeables:
            found = _placed_word(ctx, concept, place, codeable)
            if found is not None:
                out[found[0]] = found[1]
    for component in resource.get("component") or ():
        key = ctx.concepts.classify_attribute(component.get("code"))
        if key is not None:
            out[key] = _attribute_scalar(ctx, ctx.concepts.attribute(key), component)
    specimen = _specimen_word(run, concept, resource)
    if specimen is not None:
        out[specimen[0]] = specimen[1]
    return out


def _interpretations(
    ctx: MappingContext, concept: ConceptDef, resource: Json, value: dict[str, Any]
) -> list[Json]:
    """Interpretations that are attributes; the first one that is a word of the concept's
    value set, beside a number, is the value's code."""
    out = []
    for codeable in resource.get("interpretation") or ():
        vs = concept.value.value_set
        if "code" not in value and vs and ctx.terminology.word(vs, codeable) is not None:
            value["code"] = ctx.terminology.word(vs, codeable)
        else:
            out.append(codeable)
    return out


def _specimen_word(run: _Run, concept: ConceptDef, resource: Json) -> tuple[str, Scalar] | None:
    ref = (resource.get("specimen") or {}).get("reference")
    if not isinstance(ref, str):
        return None
    target = reference_key(ref)
    if ref.startswith("#"):
        found = next((c for c in resource.get("contained") or () if c.get("id") == target), None)
    else:
        found = run.specimens.get(target)
    if found is None or found.get("resourceType") != "Specimen":
        return None
    word = _placed_word(run.ctx, concept, "specimen", found.get("type"))
    if word is None:
        run.specimen_notes[target] = (
            f"Specimen type {_codes(found.get('type'))} is in no specimen value set "
            f"(referenced by {_ref_of(resource)})"
        )
    elif not ref.startswith("#"):
        run.used_specimens.add(target)
    return word


_EVENT_MAPPERS: dict[str, Callable[[_Run, Json, str], Event]] = {
    "Condition": condition_event,
    "MedicationAdministration": medication_administration_event,
    "MedicationRequest": medication_request_event,
    "MedicationStatement": medication_statement_event,
    "MedicationDispense": medication_dispense_event,
    "Procedure": procedure_event,
    "Observation": observation_event,
    "AdverseEvent": adverse_event_event,
}


# -- the Patient ----------------------------------------------------------------------------


def _centre_and_study_id(ctx: MappingContext, resource: Json) -> tuple[str | None, str]:
    for ident in _identifiers(resource):
        found = ctx.centre_of_system(ident.get("system", ""))
        if found is not None:
            value = ident.get("value")
            return found, str(value) if value else _safe_id(str(resource.get("id")))
    return None, _safe_id(str(resource.get("id")))


def study_id_of(ctx: MappingContext, patient: Json) -> str:
    """The study id a Patient resource is read with: fhir_cart's business identifier, else
    its server id made safe."""
    return _centre_and_study_id(ctx, patient)[1]


def patient_record(ctx: MappingContext, resource: Json, default_centre: str) -> _Patient:
    centre, study_id = _centre_and_study_id(ctx, resource)
    birth = resource.get("birthDate")
    born, precision = _parse_date(birth, "birthDate") if birth else (None, "day")
    unread: list[Json] = []
    record = PatientRecord(
        study_id=study_id,
        centre=centre or default_centre,
        sex=resource.get("gender"),
        birth_date=born,
        birth_precision=precision,
        attributes=_extension_attributes(
            ctx, resource.get("extension"), patient=True, unread=unread
        ),
    )
    events = _patient_events(ctx, resource, record.study_id)
    return _Patient(record, resource, events, unread)


def _patient_events(ctx: MappingContext, resource: Json, study_id: str) -> list[Event]:
    """Death (deceased[x]) and follow-up (extension named after the concept)."""
    out: list[Event] = []
    deaths = ctx.concepts.keys("death")
    for name in ("deceasedDateTime", "deceasedBoolean"):
        if (name in resource or "_" + name in resource) and deaths:
            if resource.get(name) is False:
                continue
            holder = resource.get("_" + name) or {}
            if name == "deceasedDateTime":
                when = _when(ctx, resource, name)
            else:  # deceasedBoolean true, perhaps with the relative day of death
                when = _when(ctx, {"_" + name: holder}, name)
            out.append(_detail_event(ctx, holder, deaths[0], when))
    for key in ctx.concepts.keys("follow_up") + deaths:
        url = ctx.ext(key.replace("_", "-"))
        for ext in resource.get("extension") or ():
            if ext.get("url") == url:
                out.append(_detail_event(ctx, ext, key, _time_extension(ctx, ext)))
    return out


def _detail_event(ctx: MappingContext, holder: Json, key: str, when: When | None) -> Event:
    concept = ctx.concepts.concept(key)
    ident = _own(ctx, holder, "event-id")
    source = _own(ctx, holder, "source-text")
    origin = _own(ctx, holder, "origin")
    assumed = _own(ctx, holder, "assumed")
    return Event(
        event_id=ident["valueString"] if ident else key,
        concept=key,
        when=when,
        end=_time_extension(ctx, _own(ctx, holder, "end")),
        value=_make_value(_extension_value(ctx, concept, holder)),
        attributes=_extension_attributes(ctx, holder.get("extension")),
        source_text=source.get("valueString") if source else None,
        origin=origin.get("valueString") if origin else None,
        assumed=assumed.get("valueString") if assumed else None,
    )


# -- other rows -----------------------------------------------------------------------------

_CODE_ELEMENTS = ("code", "medicationCodeableConcept", "event", "type", "vaccineCode")
_TIME_ELEMENTS = (
    "effectiveDateTime",
    "performedDateTime",
    "onsetDateTime",
    "authoredOn",
    "date",
    "recordedDate",
    "issued",
    "occurrenceDateTime",
)
_PERIODS = ("effectivePeriod", "performedPeriod", "onsetPeriod")


def other_row(resource: Json, study_id: str | None, reason: str) -> OtherRow:
    """A resource as one row of the ``other`` table: its first coding, value and time."""
    coding: Json = {}
    for name in _CODE_ELEMENTS:
        coding = _first_coding(resource.get(name))
        if coding:
            break
    value, unit = _other_value(resource)
    return OtherRow(
        study_id=study_id,
        resource_type=str(resource.get("resourceType", "?")),
        resource_id=resource.get("id"),
        code_system=coding.get("system"),
        code=coding.get("code"),
        display=coding.get("display"),
        value=value,
        unit=unit,
        time=_other_time(resource),
        reason=reason,
    )


def _first_coding(element: Any) -> Json:
    """The first coding of a CodeableConcept, {} for anything else (even malformed data)."""
    codings = element.get("coding") if isinstance(element, dict) else None
    first = codings[0] if isinstance(codings, list) and codings else None
    return first if isinstance(first, dict) else {}


def _other_value(resource: Json) -> tuple[str | None, str | None]:
    if isinstance(resource.get("valueQuantity"), dict):
        q = resource["valueQuantity"]
        return f"{q.get('comparator', '')}{q.get('value')}", q.get("code") or q.get("unit")
    if isinstance(resource.get("valueCodeableConcept"), dict):
        cc = resource["valueCodeableConcept"]
        return _first_coding(cc).get("code") or cc.get("text"), None
    for name in ("valueString", "valueBoolean", "valueInteger", "valueDateTime"):
        if name in resource:
            return str(resource[name]).lower() if name == "valueBoolean" else str(
                resource[name]
            ), None
    return None, None


def _other_time(resource: Json) -> str | None:
    for name in _TIME_ELEMENTS:
        if isinstance(resource.get(name), str):
            return str(resource[name])
    for name in _PERIODS:
        start = (resource.get(name) or {}).get("start")
        if isinstance(start, str):
            return start
    collected = (resource.get("collection") or {}).get("collectedDateTime")
    return collected if isinstance(collected, str) else None
