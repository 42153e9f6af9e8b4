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

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from pydantic import ValidationError

from fhir_cart.errors import MappingError
from fhir_cart.library.concepts import KINDS, AttributeDef, ConceptDef
from fhir_cart.library.statuses import StatusTable, StatusVerdict
from fhir_cart.mappers.context import MappingContext, extension_value
from fhir_cart.mappers.kinds import ID_KINDS
from fhir_cart.mappers.to_fhir import attribute_url, event_order
from fhir_cart.records import (
    Case,
    Event,
    PatientRecord,
    Precision,
    Scalar,
    Value,
    When,
    parse_partial_date,
)
from fhir_cart.references import reference_key

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

Json = dict[str, Any]

_SAFE_ID = re.compile(r"[^A-Za-z0-9_\-\.]")
_OWN_EXTENSIONS = (
    "relative-day",
    "source-text",
    "origin",
    "assumed",
    "value",
    "value-code",
    "event-id",
    "end",
)


@dataclass(frozen=True, slots=True)
class Unmapped:
    """A resource kept but not turned into a record, and why."""

    reference: str
    resource_type: str
    reason: str


class OtherRow(TypedDict):
    """A pulled resource that matches no concept: one row of the ``other`` table (spec §3,
    columns ``writers.OTHER_COLUMNS``)."""

    study_id: str | None
    resource_type: str
    resource_id: str | None
    code_system: str | None
    code: str | None
    display: str | None
    value: str | None
    unit: str | None
    time: str | None
    reason: str


@dataclass
class ReverseResult:
    cases: list[Case] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    other: list[OtherRow] = field(default_factory=list)
    """Rows of the ``other`` table, one per resource that is no event (each also listed in
    ``unmapped`` with the same reason)."""
    excluded: list[Unmapped] = field(default_factory=list)
    """Resources deliberately not read as events (entered-in-error, refuted, not-done,
    cancelled, ...), each with the reason: neither events nor ``other`` rows."""


class _NoConcept(ValueError):
    """The resource is understood but stands for nothing the library holds."""


def _ref_of(resource: Json) -> str:
    return f"{resource.get('resourceType', '?')}/{resource.get('id', '?')}"


# -- small readers of FHIR elements ---------------------------------------------------------


def _parse_date(value: Any, where: str) -> tuple[dt.date, Precision]:
    """A FHIR date or dateTime at the precision it is written (R4 datatypes.html#dateTime:
    ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``, or a day with time and zone, whose date is the one
    written). ValueError naming the element for anything else (``2019-13``, ``2019-02-30``)."""
    if not isinstance(value, str):
        raise ValueError(f"{where} {value!r} is not a date")
    try:
        return parse_partial_date(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _anchor_key(ctx: MappingContext, codeable: Json | None) -> str:
    key = ctx.concepts.classify(codeable, KINDS)
    if key is None:
        raise ValueError(f"relative-day anchor {codeable!r} is no concept of the library")
    return key


def _relative(ctx: MappingContext, parts: list[Json]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        url = part.get("url")
        if url == "day":
            out["day"] = part.get("valueInteger")
        elif url == "earliest-day":
            out["earliest_day"] = part.get("valueInteger")
        elif url == "latest-day":
            out["latest_day"] = part.get("valueInteger")
        elif url == "anchor":
            out["anchor"] = _anchor_key(ctx, part.get("valueCodeableConcept"))
    return out


def _when(ctx: MappingContext, obj: Mapping[str, Any], name: str) -> When | None:
    value = obj.get(name)
    primitive = obj.get("_" + name) or {}
    ext = extension_value(primitive.get("extension"), ctx.ext("relative-day"))
    fields = _relative(ctx, ext.get("extension", [])) if ext else {}
    if isinstance(value, str):
        fields["date"], fields["precision"] = _parse_date(value, name)
    return When(**fields) if fields else None


def _time_extension(ctx: MappingContext, ext: Json | None) -> When | None:
    if ext is None:
        return None
    parts = ext.get("extension", [])
    fields = _relative(ctx, parts)
    date = extension_value(parts, "date")
    if date is not None:
        fields["date"], fields["precision"] = _parse_date(date.get("valueDate"), "date")
    return When(**fields) if fields else None


def _identifiers(resource: Json) -> list[Json]:
    ident = resource.get("identifier")
    if isinstance(ident, dict):
        return [ident]
    return list(ident or ())


def _safe_id(text: str) -> str:
    """An id made safe for records ([A-Za-z0-9_.-], at most 64 characters, a hash keeps
    long ones apart)."""
    safe = _SAFE_ID.sub("-", text)
    if len(safe) <= 64:
        return safe
    return f"{safe[:55]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def event_id_of(ctx: MappingContext, resource: Json, study_id: str) -> str:
    """The event id fhir_cart wrote in the business identifier, else ``<kind>-<server id>``
    (kind as in identifiers, e.g. ``medication-request-mr1``; long ids end in a hash)."""
    prefix = study_id + "/"
    for ident in _identifiers(resource):
        system, value = ident.get("system", ""), ident.get("value", "")
        if ctx.centre_of_system(system) is not None and value.startswith(prefix):
            return str(value[len(prefix) :])
    rtype = str(resource.get("resourceType", ""))
    kind = ID_KINDS.get(rtype) or re.sub(r"(?<!^)([A-Z])", r"-\1", rtype).lower()
    return _safe_id(f"{kind}-{resource.get('id', 'x')}")


def _quantity(quantity: Json | None) -> tuple[float | None, str | None]:
    if not quantity or quantity.get("value") is None:
        return None, None
    unit = quantity.get("code") or quantity.get("unit")
    return float(quantity["value"]), unit


# -- values ---------------------------------------------------------------------------------


def _code_word(ctx: MappingContext, concept: ConceptDef, codeable: Json | None) -> str:
    value_set = concept.value.value_set
    word = ctx.terminology.word(value_set, codeable) if value_set else None
    if word is None:
        shown = [(c.get("system"), c.get("code")) for c in (codeable or {}).get("coding", ())]
        raise _NoConcept(
            f"value {shown or (codeable or {}).get('text')} is not a word of value set "
            f"{value_set!r} of concept {concept.label!r}"
        )
    return word


def _value_fields(ctx: MappingContext, concept: ConceptDef, holder: Json) -> dict[str, Any]:
    """Value fields from a value[x] (on a resource, or on the ``value`` extension)."""
    if "valueQuantity" in holder:
        q = holder["valueQuantity"]
        number, unit = _quantity(q)
        return {"number": number, "unit": unit, "comparator": q.get("comparator")}
    if "valueRange" in holder:
        low, unit = _quantity(holder["valueRange"].get("low"))
        high, high_unit = _quantity(holder["valueRange"].get("high"))
        return {"low": low, "high": high, "unit": unit or high_unit}
    if "valueCodeableConcept" in holder:
        if concept.value.open and not holder["valueCodeableConcept"].get("coding"):
            return {"text": holder["valueCodeableConcept"].get("text")}
        return {"code": _code_word(ctx, concept, holder["valueCodeableConcept"])}
    for name, field_name in (("valueBoolean", "boolean"), ("valueString", "text")):
        if name in holder:
            return {field_name: holder[name]}
    if "valueInteger" in holder:
        return {"number": float(holder["valueInteger"])}
    return {}


def _make_value(fields: dict[str, Any]) -> Value | None:
    fields = {k: v for k, v in fields.items() if v is not None}
    return Value(**fields) if fields else None


def _extension_value(ctx: MappingContext, concept: ConceptDef, resource: Json) -> dict[str, Any]:
    """Value fields from the extensions ``value`` and ``value-code``."""
    fields: dict[str, Any] = {}
    ext = _own(ctx, resource, "value")
    if ext is not None:
        fields.update(_value_fields(ctx, concept, ext))
    code = _own(ctx, resource, "value-code")
    if code is not None:
        fields["code"] = _code_word(ctx, concept, code.get("valueCodeableConcept"))
    return fields


def _own(ctx: MappingContext, holder: Json, name: str) -> Json | None:
    return extension_value(holder.get("extension"), ctx.ext(name))


# -- attributes -----------------------------------------------------------------------------


def _attribute_urls(ctx: MappingContext, patient: bool = False) -> dict[str, str]:
    """Extension URL -> attribute key (event attributes, or patient attributes)."""
    memo_key = ("attribute-urls", patient)
    found = ctx.memo.get(memo_key)
    if found is None:
        data = ctx.concepts.data
        attrs = data.patient_attributes if patient else data.attributes
        found = {attribute_url(ctx, k, a): k for k, a in attrs.items()}
        ctx.memo[memo_key] = found
    return found


def _coded(ctx: MappingContext, attr: AttributeDef, codeable: Json | None) -> Scalar:
    if codeable and not codeable.get("coding") and attr.open and codeable.get("text"):
        return str(codeable["text"])
    word = ctx.terminology.word(str(attr.value_set), codeable)
    if word is None:
        raise _NoConcept(f"{attr.label}: {codeable!r} is not in value set {attr.value_set!r}")
    return word


def _attribute_scalar(ctx: MappingContext, attr: AttributeDef | None, holder: Json) -> Scalar:
    if attr is not None and attr.type == "coded":
        return _coded(ctx, attr, holder.get("valueCodeableConcept"))
    if "valueQuantity" in holder:
        number, unit = _quantity(holder["valueQuantity"])
        if attr is not None and attr.units and unit not in (None, attr.units[0]):
            from fhir_cart.library.concepts import convert_unit

            return convert_unit(float(number or 0), str(unit), attr.units[0])
        return float(number or 0)
    for name, value in holder.items():
        if name.startswith("value") and not isinstance(value, dict | list):
            if attr is not None and attr.type == "number":
                return float(value)
            return value  # type: ignore[no-any-return]
    raise ValueError(f"attribute extension {holder.get('url')!r} has no value")


def _extension_attributes(
    ctx: MappingContext, extensions: list[Json] | None, *, patient: bool = False
) -> dict[str, Scalar]:
    urls = _attribute_urls(ctx, patient)
    data = ctx.concepts.data
    library = data.patient_attributes if patient else data.attributes
    base = ctx.profiles.extension_base.rstrip("/") + "/"
    out: dict[str, Scalar] = {}
    for ext in extensions or ():
        url = str(ext.get("url", ""))
        key = urls.get(url)
        if key is None and url.startswith(base):
            name = url[len(base) :]
            if name not in _reserved(ctx) and re.fullmatch(r"[a-z][a-z0-9_]*", name):
                key = name  # an attribute the library does not declare, kept by its name
        if key is not None:
            out[key] = _attribute_scalar(ctx, library.get(key), ext)
    return out


def _reserved(ctx: MappingContext) -> frozenset[str]:
    """Extension names fhir_cart uses itself: never read as an undeclared attribute."""
    found = ctx.memo.get("reserved")
    if found is None:
        kinds = ctx.concepts.keys("death") + ctx.concepts.keys("follow_up")
        found = frozenset(_OWN_EXTENSIONS) | {k.replace("_", "-") for k in kinds}
        ctx.memo["reserved"] = found
    return found


def _placed(ctx: MappingContext, concept: ConceptDef, place: str) -> list[str]:
    """Attribute keys written at ``place`` (method, specimen, ...): the concept's first."""
    key = ("placed", id(concept), place)  # concepts live as long as the context
    found = ctx.memo.get(key)
    if found is None:
        attrs = ctx.concepts.data.attributes
        mine = [k for k in concept.attributes if attrs[k].fhir == place]
        found = mine + [k for k, a in attrs.items() if a.fhir == place and k not in mine]
        ctx.memo[key] = found
    return found


def _placed_word(
    ctx: MappingContext, concept: ConceptDef, place: str, codeable: Json | None
) -> tuple[str, Scalar] | None:
    attrs = ctx.concepts.data.attributes
    for key in _placed(ctx, concept, place):
        attr = attrs[key]
        if codeable and not codeable.get("coding") and attr.open:
            return key, str(codeable.get("text"))
        word = ctx.terminology.word(str(attr.value_set), codeable)
        if word is not None:
            return key, word
    return None


# -- one function per resource type ---------------------------------------------------------


@dataclass
class _Patient:
    record: PatientRecord
    resource: Json
    events: list[Event] = field(default_factory=list)


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


def _event(ctx: MappingContext, resource: Json, study_id: str, key: str, **fields: Any) -> Event:
    concept = ctx.concepts.concept(key)
    attributes = _extension_attributes(ctx, resource.get("extension"))
    attributes.update(fields.pop("attributes", {}))
    value = fields.pop("value", {})
    value.update(_extension_value(ctx, concept, resource))
    source = _own(ctx, resource, "source-text")
    origin = _own(ctx, resource, "origin")
    assumed = _own(ctx, resource, "assumed")
    return Event(
        event_id=event_id_of(ctx, resource, study_id),
        concept=key,
        value=_make_value(value),
        attributes=attributes,
        source_text=source.get("valueString") if source else None,
        origin=fields.pop("origin", None) or (origin.get("valueString") if origin else None),
        assumed=assumed.get("valueString") if assumed else None,
        **fields,
    )


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
    return _event(ctx, resource, study_id, key, value=value, when=when, end=end)


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
    return _event(ctx, resource, study_id, key, value={"number": number, "unit": unit}, **times)


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
    return _event(ctx, resource, study_id, key, value=value, origin="MedicationRequest", **times)


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
    return _event(run.ctx, resource, study_id, key, value=value, origin="MedicationStatement",
                  **times)  # fmt: skip


def medication_dispense_event(run: _Run, resource: Json, study_id: str) -> Event:
    """A MedicationDispense read as the drug's event (origin MedicationDispense): time
    ``whenHandedOver``, else ``whenPrepared``; value the first dosage instruction's dose."""
    key = _medication_key(run, resource)
    name = "whenHandedOver" if "whenHandedOver" in resource else "whenPrepared"
    value = _first_dose(resource.get("dosageInstruction"))
    return _event(run.ctx, resource, study_id, key, value=value, origin="MedicationDispense",
                  when=_when(run.ctx, resource, name))  # fmt: skip


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
    return _event(ctx, resource, study_id, key, attributes=attributes, **times)


def adverse_event_event(run: _Run, resource: Json, study_id: str) -> Event:
    ctx = run.ctx
    key = _classify(run, resource.get("event"), "adverse_event", "adverse event")
    when = _when(ctx, resource, "date")
    end = _time_extension(ctx, _own(ctx, resource, "end"))
    return _event(ctx, resource, study_id, key, when=when, end=end)


def observation_event(run: _Run, resource: Json, study_id: str) -> Event:
    ctx = run.ctx
    key = _classify(run, resource.get("code"), "observation", "observation code")
    concept = ctx.concepts.concept(key)
    value = _value_fields(ctx, concept, resource)
    attributes = _observation_attributes(run, concept, resource, value)
    times = _period(ctx, resource, "effectiveDateTime", "effectivePeriod")
    return _event(ctx, resource, study_id, key, value=value, attributes=attributes, **times)


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
    record = PatientRecord(
        study_id=study_id,
        centre=centre or default_centre,
        sex=resource.get("gender"),
        birth_date=born,
        birth_precision=precision,
        attributes=_extension_attributes(ctx, resource.get("extension"), patient=True),
    )
    return _Patient(record, resource, _patient_events(ctx, resource, record.study_id))


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
    "effectiveDateTime", "performedDateTime", "onsetDateTime", "authoredOn", "date",
    "recordedDate", "issued", "occurrenceDateTime",
)  # fmt: skip
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
    used = set(run.used_medications)
    try:
        event = mapper(run, resource, study_id)
    except _BAD_INPUT as exc:  # ValidationError is a ValueError
        run.used_medications.intersection_update(used)  # a drug of no event is not used
        return None, _reason(exc), "other"
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
    elif where == "excluded":
        _exclude(result, resource, str(reason))
    else:
        _keep(result, resource, study_id, str(reason))


def _build_case(result: ReverseResult, patient: _Patient) -> None:
    events = tuple(sorted(patient.events, key=event_order))
    try:
        case = Case(patient=patient.record, events=events)
    except ValidationError as exc:
        reason = f"patient's events do not form a valid case: {_reason(exc)}"
        _keep(result, patient.resource, patient.record.study_id, reason)
        return
    result.cases.append(case)


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
        _build_case(result, patient)
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
        outcome = _Outcome(patient, used=run.used_specimens, notes=run.specimen_notes,
                           used_medications=run.used_medications)  # fmt: skip
        event, reason, where = _mapped(run, resource, patient.record.study_id)
        outcome.event, outcome.reason, outcome.excluded = event, reason, where == "excluded"
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
                _build_case(result, _Patient(patient.record, patient.resource,
                                             [*patient.events, *mine]))  # fmt: skip
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
        _build_case(result, patient)
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
