"""Reading FHIR elements back (the inverse of :mod:`.to_fhir`'s builders): dates, relative
days, identifiers, values and attributes, and the results a reverse mapping gives
(:class:`ReverseResult`, :class:`Unmapped`, :class:`OtherRow`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

import orjson

from fhir_cart.library.concepts import KINDS, AttributeDef, ConceptDef
from fhir_cart.mappers.context import MappingContext, extension_value
from fhir_cart.mappers.kinds import ID_KINDS
from fhir_cart.mappers.to_fhir import attribute_url
from fhir_cart.records import (
    Case,
    Precision,
    Scalar,
    Value,
    When,
    band_text,
    parse_partial_date,
)
from fhir_cart.types import Json

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
    undeclared: list[OtherRow] = field(default_factory=list)
    """Extensions of a Patient, or of a resource read as an event, that no attribute of the
    library reads (a study's own, under its ``canonical``, read without its library file; a
    published guide's, US Core race, mCODE procedure intent): an ``other`` row each naming
    the URL, the resource, the value and the fix; the resource itself is read. A resource
    that is an ``other`` row itself gives none."""


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
        elif url == "stated":  # the time as the source wrote it (15 mo)
            stated = part.get("valueQuantity") or {}
            out["stated"], out["stated_unit"] = stated.get("value"), stated.get("code")
    return out


def _when(ctx: MappingContext, obj: Mapping[str, Any], name: str) -> When | None:
    value = obj.get(name)
    primitive = obj.get("_" + name) or {}
    ext = extension_value(primitive.get("extension"), ctx.ext("relative-day"))
    fields = _relative(ctx, ext.get("extension", [])) if ext else {}
    if isinstance(value, str):
        fields["date"], fields["precision"] = _parse_date(value, name)
    return _made(When, fields) if fields else None


def _time_extension(ctx: MappingContext, ext: Json | None) -> When | None:
    if ext is None:
        return None
    parts = ext.get("extension", [])
    fields = _relative(ctx, parts)
    date = extension_value(parts, "date")
    if date is not None:
        fields["date"], fields["precision"] = _parse_date(date.get("valueDate"), "date")
    return _made(When, fields) if fields else None


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
    return _made(Value, fields) if fields else None


# -- times and values made once ---------------------------------------------------------------

_Made = TypeVar("_Made", When, Value)
_MADE: dict[tuple[Any, ...], Any] = {}
_MADE_HELD = 30_000
"""At most this many times and values remembered by :func:`_made` (then it starts again):
memory stays bounded whatever the input."""
_PLAIN = frozenset({str, int, bool, dt.date})


def _made(model: type[_Made], fields: dict[str, Any]) -> _Made:
    """``model(**fields)``: the same (frozen) record for the same fields, since a cohort's
    times and values repeat (the day of an infusion, a result "negative"). Only fields of
    plain hashable types are remembered; what does not validate raises as it did and is
    not remembered."""
    key = _made_key(model, fields)
    if key is None:
        return model(**fields)
    found: _Made | None = _MADE.get(key)
    if found is None:
        found = model(**fields)
        if len(_MADE) >= _MADE_HELD:
            _MADE.clear()
        _MADE[key] = found
    return found


def _made_key(model: type[Any], fields: dict[str, Any]) -> tuple[Any, ...] | None:
    """The fields with their types (``1``, ``1.0`` and ``True`` are equal keys, not equal
    cells); None for anything else than text, numbers, booleans and dates, and for a float
    zero or NaN (``-0.0`` equals ``0.0`` but is written ``-0.0``)."""
    key: list[Any] = [model]
    for name, value in fields.items():
        kind = type(value)
        if kind is float:
            if not value or value != value:
                return None
        elif kind not in _PLAIN:
            return None
        key.append((name, kind, value))
    return tuple(key)


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
    if "valueRange" in holder and attr is not None and attr.type == "integer":
        low, high = holder["valueRange"].get("low", {}), holder["valueRange"].get("high", {})
        return band_text(int(low.get("value")), int(high.get("value")))
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
    ctx: MappingContext,
    extensions: list[Json] | None,
    *,
    patient: bool = False,
    unread: list[Json] | None = None,
) -> dict[str, Scalar]:
    """The attributes the extensions hold; ``unread`` gets each extension outside
    fhir_cart's extension base that names no attribute of the library."""
    if not extensions:
        return {}
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
            if name not in _reserved(ctx) and re.fullmatch(r"[a-z][a-z0-9_-]*", name):
                # an attribute the library does not declare, kept by its key (URL tails
                # have hyphens since 0.2.0, FHIR ids allow no underscore), and the URLs of
                # before 0.2.0 (age_at_diagnosis), read as the key they name
                key = name.replace("-", "_")
        if key is not None:
            out[key] = _attribute_scalar(ctx, library.get(key), ext)
        elif unread is not None and not url.startswith(base):
            unread.append(ext)
    return out


UNREAD_FIX = (
    "no attribute of the concept library read with has this extension URL; if it is a "
    "study's own attribute, give the study's library (--mapping M naming it with "
    "`library:`, or --library FILE) to get it as a column"
)


_HELD_AS = {
    "valueCodeableConcept": "a coded attribute (`type: coded`, its `value_set` holding the "
    "codes it carries)",
    "valueString": "an attribute of `type: text`",
    "valueCode": "an attribute of `type: text`",
    "valueDateTime": "an attribute of `type: text`",
    "valueDate": "an attribute of `type: date`",
    "valueInteger": "an attribute of `type: integer`",
    "valuePositiveInt": "an attribute of `type: integer`",
    "valueUnsignedInt": "an attribute of `type: integer`",
    "valueDecimal": "an attribute of `type: number`",
    "valueBoolean": "an attribute of `type: boolean`",
    "valueQuantity": "an attribute of `type: quantity` (with its units)",
}
"""The attribute that can hold an extension's value[x] (what ``_attribute_scalar`` reads)."""


def unread_fix(ctx: MappingContext, ext: Json) -> str:
    """Why an extension was not read and what to do, by what it is: a published guide's
    extension (mappings/profiles.yaml ``guide_extensions``: giving the study's library does
    not help, an attribute of the type its value needs with its ``extension_url`` does,
    unless no attribute can hold its value), or an unknown one (perhaps a study's own
    attribute: :data:`UNREAD_FIX`)."""
    url = str(ext.get("url", ""))
    guide = ctx.profiles.guide_of(url)
    if guide is None:
        return f"an extension of no guide fhir_cart knows; {UNREAD_FIX}"
    head = (
        f"an extension of {guide} (a published guide's, not a study's), which no attribute "
        "of the concept library reads"
    )
    name = next((k for k in ext if k.startswith("value")), None)
    if name is None:
        return (
            f"{head}; it has nested parts and no single value, which an attribute cannot "
            "hold, so it stays this row (value: its parts)"
        )
    held = _HELD_AS.get(name)
    if held is None:
        return f"{head}; its {name} is of a type no attribute holds, so it stays this row"
    return (
        f"{head}; to get it as a column, declare {held} with `extension_url: {url}` in the "
        "study's library file (--library FILE, or `library:` of the mapping)"
    )


def unread_row(ctx: MappingContext, study_id: str, resource: Json, ext: Json) -> OtherRow:
    """An extension :func:`_extension_attributes` did not read, as an ``other`` row."""
    url = str(ext.get("url", ""))
    values = [v for k, v in ext.items() if k.startswith("value")]
    value: Any = values[0] if values else ext.get("extension")
    shown = None if value is None else value if isinstance(value, str) else str(value)
    if isinstance(value, dict | list):
        shown = orjson.dumps(value).decode()
    return OtherRow(
        study_id=study_id,
        resource_type=str(resource.get("resourceType", "?")),
        resource_id=resource.get("id"),
        code_system="extension",
        code=url,
        display=None,
        value=shown,
        unit=None,
        time=None,
        reason=f"extension {url} of {resource.get('resourceType', '?')}/"
        f"{resource.get('id', '?')} not read: {unread_fix(ctx, ext)}",
    )


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
