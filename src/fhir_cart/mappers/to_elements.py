"""The elements of a mapped resource: times (with the ``relative-day`` extension), values,
quantities and attributes (as FHIR elements or extensions). Used by
:mod:`fhir_cart.mappers.to_fhir`, which assembles them into resources; split from it to keep
each module small. Codes come from the concept library and its terminology only."""

from __future__ import annotations

from typing import Any

from fhir_cart.errors import TerminologyError
from fhir_cart.library.concepts import AttributeDef, ConceptDef
from fhir_cart.mappers.context import MappingContext
from fhir_cart.records import Event, Scalar, Value, When, band_of
from fhir_cart.types import Json

__all__ = ["attribute_url"]


def _anchor(ctx: MappingContext, key: str) -> Json:
    memo = ctx.memo
    found = memo.get(("anchor", key))
    if found is None:
        found = memo[("anchor", key)] = ctx.concepts.codeable(key)
    return dict(found)


def _time_parts(ctx: MappingContext, when: When) -> list[Json]:
    """Sub-extensions of ``relative-day``: day, earliest-day, latest-day and the anchor
    concept (the patient's first event of it is day 0)."""
    parts: list[Json] = []
    if when.day is not None:
        parts.append({"url": "day", "valueInteger": when.day})
    if when.earliest_day is not None:
        parts.append({"url": "earliest-day", "valueInteger": when.earliest_day})
    if when.latest_day is not None:
        parts.append({"url": "latest-day", "valueInteger": when.latest_day})
    if when.anchor is not None:
        parts.append({"url": "anchor", "valueCodeableConcept": _anchor(ctx, when.anchor)})
    if when.stated is not None and when.stated_unit is not None:
        parts.append(
            {"url": "stated", "valueQuantity": _quantity(ctx, when.stated, when.stated_unit)}
        )
    return parts


def _put_time(ctx: MappingContext, target: Json, name: str, when: When) -> None:
    """``target[name]`` = the date, ``target['_' + name]`` = the relative day or window."""
    if when.date_text is not None:  # at its precision: "2019", never "2019-01-01"
        target[name] = when.date_text
    parts = _time_parts(ctx, when)
    if parts:
        target["_" + name] = {"extension": [{"url": ctx.ext("relative-day"), "extension": parts}]}


def _time_extension(ctx: MappingContext, url: str, when: When) -> Json:
    """A time where FHIR has no element for it: complex extension (date + relative parts)."""
    parts = _time_parts(ctx, when)
    if when.date_text is not None:
        parts.insert(0, {"url": "date", "valueDate": when.date_text})
    return {"url": url, "extension": parts}


def _put_times(ctx: MappingContext, out: Json, event: Event, single: str, period: str) -> None:
    """One time in ``single`` (effectiveDateTime...), a start and an end in ``period``."""
    if event.end is None:
        if event.when is not None:
            _put_time(ctx, out, single, event.when)
        return
    span: Json = {}
    if event.when is not None:
        _put_time(ctx, span, "start", event.when)
    _put_time(ctx, span, "end", event.end)
    out[period] = span


# -- values ---------------------------------------------------------------------------------


def _unit(ctx: MappingContext, unit: str) -> Json:
    memo = ctx.memo
    found = memo.get(("unit", unit))
    if found is None:
        try:
            found = ctx.terminology.unit(unit)
        except TerminologyError:  # a study's own UCUM unit: the code is its own display
            found = {"unit": unit, "system": ctx.terminology.system("ucum"), "code": unit}
        memo[("unit", unit)] = found
    return found


def _quantity(ctx: MappingContext, number: float, unit: str | None, cmp: str | None = None) -> Json:
    out: Json = {"value": number}
    if cmp is not None:
        out["comparator"] = cmp
    if unit is not None:
        out.update(_unit(ctx, unit))
    return out


def _value_x(ctx: MappingContext, concept: ConceptDef, value: Value) -> tuple[str, Any] | None:
    """The value[x] of a value's number, range, boolean or text (its code is separate)."""
    if value.number is not None:
        whole = value.unit is None and value.comparator is None and value.number.is_integer()
        if whole and concept.value.type == "integer" and abs(value.number) < 2**31:  # int32
            return "valueInteger", int(value.number)
        return "valueQuantity", _quantity(ctx, value.number, value.unit, value.comparator)
    if value.low is not None or value.high is not None:
        bounds = {"low": value.low, "high": value.high}
        return "valueRange", {
            end: _quantity(ctx, number, value.unit)
            for end, number in bounds.items()
            if number is not None
        }
    if value.boolean is not None:
        return "valueBoolean", value.boolean
    if value.text is not None:
        return "valueString", value.text
    return None


def _value_code(ctx: MappingContext, concept: ConceptDef, code: str) -> Json:
    if concept.value.value_set is None:
        raise TerminologyError(
            f"value code {code!r} but concept {concept.label!r} has no value set"
        )
    return ctx.terminology.concept(concept.value.value_set, code)


def _value_extensions(
    ctx: MappingContext, concept: ConceptDef, value: Value | None, *, code: bool = True
) -> list[Json]:
    """Extensions ``value`` (number, range, boolean, text) and ``value-code`` for resources
    with no value element (Procedure, AdverseEvent, ...)."""
    if value is None:
        return []
    out: list[Json] = []
    pair = _value_x(ctx, concept, value)
    if pair is not None:
        out.append({"url": ctx.ext("value"), pair[0]: pair[1]})
    if code and value.code is not None:
        codeable = _value_code(ctx, concept, value.code)
        out.append({"url": ctx.ext("value-code"), "valueCodeableConcept": codeable})
    return out


# -- attributes -----------------------------------------------------------------------------


def _attribute_codeable(ctx: MappingContext, attr: AttributeDef, word: Scalar) -> Json:
    try:
        return ctx.terminology.concept(str(attr.value_set), str(word))
    except TerminologyError:
        if attr.open:  # a word outside an open value set is kept by its name
            return {"text": str(word)}
        raise


_EXT_TYPES: dict[str, str] = {
    "integer": "valueInteger",
    "number": "valueDecimal",
    "text": "valueString",
    "boolean": "valueBoolean",
    "date": "valueDate",
}
_PY_TYPES: dict[type, str] = {
    bool: "valueBoolean",
    int: "valueInteger",
    float: "valueDecimal",
    str: "valueString",
}


def _attribute_value(
    ctx: MappingContext, attr: AttributeDef | None, value: Scalar, *, component: bool = False
) -> tuple[str, Any]:
    """value[x] of an attribute by its declared type (a component has no valueDecimal)."""
    if attr is None:  # an attribute the library does not know: by the value's own type
        return _PY_TYPES[type(value)], value
    if attr.type == "coded":
        return "valueCodeableConcept", _attribute_codeable(ctx, attr, value)
    if attr.type == "quantity":
        return "valueQuantity", _quantity(ctx, float(value), attr.units[0])
    band = band_of(value) if attr.type == "integer" else None
    if band is not None:  # a band ('grade 3-4') stays a band
        return "valueRange", {"low": {"value": band[0]}, "high": {"value": band[1]}}
    if attr.type == "number" and component:
        return "valueQuantity", {"value": value}
    if attr.type == "date" and component:
        return "valueDateTime", value
    return _EXT_TYPES[attr.type], value


def attribute_url(ctx: MappingContext, key: str, attr: AttributeDef | None) -> str:
    """``<extension_base>/<key with hyphens>``: the URL's tail is the StructureDefinition's
    id, and FHIR ids allow no underscore (R4 datatypes.html#id)."""
    if attr is not None and attr.extension_url:
        return attr.extension_url
    return ctx.ext(key.replace("_", "-"))
