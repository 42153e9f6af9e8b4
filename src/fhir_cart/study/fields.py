"""The fields of one row read by the concept library: the vocabulary of one read
(:class:`_Context`), attribute cells, an event's value and its times (date, relative day,
window)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from fhir_cart.errors import validation_reason
from fhir_cart.library.concepts import AttributeDef, ConceptDef, ConceptLibrary, ValueDef
from fhir_cart.library.study_mapping import (
    CANONICAL_VALUE_FIELDS,
    StudyMapping,
    normalise_word,
    parse_window,
)
from fhir_cart.library.units import unit_synonyms, unit_text
from fhir_cart.records import Precision, Scalar, Value, When, band_text, date_span, date_text
from fhir_cart.study.build import _make_value, _make_when
from fhir_cart.study.values import (
    _RANGE,
    _checked_number,
    _column_kind,
    _comparators,
    _FieldError,
    _in_bounds,
    _number,
    _to_bool,
    _to_date,
    _to_float,
    _to_int,
    _to_text,
    _Unholdable,
    _unit_text,
    fit_unit,
    parse_band,
    parse_quantity,
    parse_time,
    per_column,
    word_key,
)

# -- the vocabulary of one read --------------------------------------------------------------


@dataclass
class _Context:
    """The mapping and concept library of one read, with word look-ups built once."""

    mapping: StudyMapping
    library: ConceptLibrary
    _words: dict[str, dict[str, str]] = field(default_factory=dict)
    _concepts: dict[str, str] = field(default_factory=dict)
    today: dt.date = field(default_factory=dt.date.today)
    """The day of the read (a date after it is in the future)."""
    _synonyms: dict[str, str] | None = None

    def unit(self, written: str | None) -> str | None:
        """A unit as a cell or a mapping writes it, as the UCUM unit a synonym of the
        library's units (a study's ``units:``) stands for; any other as written."""
        if written is None:
            return None
        if self._synonyms is None:
            self._synonyms = unit_synonyms(self.library.terminology.data)
        if not self._synonyms:  # the shipped units have none: the hot path stays as it was
            return written
        return self._synonyms.get(written) or self._synonyms.get(unit_text(written)) or written

    def quantity(self, cell: Any) -> tuple[str | None, float, str | None]:
        """:func:`parse_quantity` with the cell's unit read through the synonyms."""
        cmp, number, written = parse_quantity(cell)
        return cmp, number, self.unit(written)

    def declared(self, units: tuple[str, ...]) -> tuple[str, ...]:
        """A column's units (the mapping's ``units``) read through the synonyms."""
        return tuple(self.unit(u) or u for u in units)

    def __post_init__(self) -> None:
        for key in self.library.data.concepts:
            self._concepts[key] = key
            self._concepts[normalise_word(self.library.concept(key).label)] = key

    def word(self, value_set: str, cell: Any) -> str | None:
        """The value-set word a cell stands for (case, spaces and '_' for ' ' ignored)."""
        lookup = self._words.get(value_set)
        if lookup is None:
            lookup = {word_key(w): w for w in self.library.words(value_set)}
            self._words[value_set] = lookup
        found = lookup.get(cell) if isinstance(cell, str) else None
        return found if found is not None else lookup.get(word_key(cell))

    def expected(self, value_set: str) -> str:
        return "unknown word; expected one of " + ", ".join(self.library.words(value_set))

    def concept_key(self, cell: Any) -> str:
        found = self._concepts.get(cell) if isinstance(cell, str) else None
        if found is not None:
            return found
        text = normalise_word(cell)
        found = self._concepts.get(text) or self._concepts.get(re.sub(r"[\s\-]+", "_", text))
        if found is None:
            raise ValueError(f"no concept {_to_text(cell)!r} in the concept library")
        return found

    def date(self, cell: Any) -> tuple[dt.date, Precision]:
        """A date cell at the precision it is written (year, month or day)."""
        return _to_date(cell, self.mapping.date_formats)

    def day(self, cell: Any) -> dt.date:
        """A date cell that must name a day (e.g. the anchor date days count from)."""
        date, precision = self.date(cell)
        if precision != "day":
            raise ValueError(
                f"{date_text(date, precision)} gives no day; days are counted from a full date "
                "(write the day, or leave the cell blank)"
            )
        return date


def _coded(ctx: _Context, value_set: str, is_open: bool, cell: Any) -> str:
    word = ctx.word(value_set, cell)
    if word is not None:
        return word
    if is_open:
        return _to_text(cell)
    raise ValueError(ctx.expected(value_set))


def _attribute(
    ctx: _Context, attr: AttributeDef, cell: Any, declared: tuple[str, ...] = (), name: str = ""
) -> Scalar:
    """An attribute cell as its scalar (quantity: number in the attribute's first unit;
    ``declared``: the units the mapping gives the column of field ``name``)."""
    kind = attr.type
    if kind == "coded":
        assert attr.value_set is not None
        return _coded(ctx, attr.value_set, attr.open, cell)
    if kind in ("integer", "number", "quantity"):
        number: float
        if kind == "quantity":
            _, number, written = ctx.quantity(cell)
            written = per_column(written, declared)
            if not attr.by_unit:
                _column_kind(written, declared, name)
            given = written or (declared[0] if declared else attr.units[0])
            number, _ = fit_unit(number, given, (attr.units[0], *attr.by_unit), True)
        elif kind == "integer":
            found = parse_band(cell)
            if isinstance(found, tuple):  # a band stays a band: '3-4', never 3 or 3.5
                for end in found:
                    _in_bounds(end, attr.min, attr.max)
                return band_text(*found)
            number = found
        else:
            number = _to_float(cell)
        _in_bounds(number, attr.min, attr.max)
        return int(number) if kind == "integer" else number
    if kind == "boolean":
        return _to_bool(cell)
    if kind == "date":
        return date_text(*ctx.date(cell))
    return _to_text(cell)


# -- values ---------------------------------------------------------------------------------


def _quantity(
    ctx: _Context,
    value: ValueDef,
    cell: Any,
    unit: str | None,
    comparator: str | None,
    declared: tuple[str, ...],
) -> Value:
    cmp, number, written = ctx.quantity(cell)
    written = per_column(written, declared)
    _column_kind(written, declared)
    given = written or unit
    if value.type == "integer" and not number.is_integer():
        raise ValueError("expected a whole number")
    if value.units:
        number, given = fit_unit(number, given or value.units[0], value.units, value.convert)
    elif given is not None:
        raise ValueError(f"this concept's value has no unit (got {given!r})")
    _checked_number(number, given, value.min, value.max)
    return _make_value(number=number, unit=given, comparator=cmp or comparator)


def _is_band(cell: Any) -> bool:
    """A cell written as a range of two numbers ('1–2', '2-3 lines', '10 to 14 mo')."""
    return isinstance(cell, str) and _RANGE.match(cell.strip()) is not None


def _range(
    ctx: _Context, value: ValueDef, cell: Any, unit: str | None, declared: tuple[str, ...]
) -> Value:
    match = _RANGE.match(_to_text(cell))
    if match is None:
        raise ValueError("expected a range such as '1-2' or '1–2 mg'")
    low, high = (_number(match[k]) for k in ("low", "high"))
    written = ctx.unit(_unit_text(match["unit"])) if match["unit"] else None
    _column_kind(written, declared)
    if not value.units:  # a count ('1–2 cycles', '2-3 lines'): the word after it is no unit
        if value.type == "integer" and not (low.is_integer() and high.is_integer()):
            raise ValueError("expected whole numbers")
        for number in (low, high):
            _checked_number(number, None, value.min, value.max)
        return _make_value(low=low, high=high)
    given = written or unit or value.units[0]
    low, fitted = fit_unit(low, given, value.units, value.convert)
    high, _ = fit_unit(high, given, value.units, value.convert)
    for number in (low, high):
        _checked_number(number, fitted, value.min, value.max)
    return _make_value(low=low, high=high, unit=fitted)


def _typed_value(
    ctx: _Context,
    concept: ConceptDef,
    cell: Any,
    unit: str | None,
    comparator: str | None,
    declared: tuple[str, ...] = (),
) -> Value:
    """One value cell read by the concept's value type (``declared``: the column's units)."""
    value = concept.value
    kind = value.type
    if kind == "none":
        raise ValueError(f"{concept.label} takes no value")
    if kind == "text":
        return _make_value(text=_to_text(cell))
    if kind == "boolean":
        return _make_value(boolean=_to_bool(cell))
    if kind == "range" or (kind in ("quantity", "integer") and _is_band(cell)):
        return _range(ctx, value, cell, unit, declared)  # '1–2 cycles' stays a range
    if kind in ("coded", "quantity_or_coded"):
        assert value.value_set is not None
        word = ctx.word(value.value_set, cell)
        if word is not None:
            return _make_value(code=word)
        if kind == "coded":
            if value.open:
                return _make_value(text=_to_text(cell))
            raise ValueError(ctx.expected(value.value_set))
        try:
            parse_quantity(cell)
        except _Unholdable:
            raise
        except ValueError:
            words = ", ".join(ctx.library.words(value.value_set))
            raise ValueError(f"expected one of {words}, or a number such as '<0.01 %'") from None
    return _quantity(ctx, value, cell, unit, comparator, declared)


def _canonical_value(ctx: _Context, concept: ConceptDef, cells: Mapping[str, Any]) -> Value:
    """A value from the canonical columns (value_number, value_unit, ...)."""
    got: dict[str, Any] = {}
    for name in ("number", "low", "high"):
        if f"value_{name}" in cells:
            got[name] = _to_float(cells[f"value_{name}"])
    if "value_unit" in cells:
        got["unit"] = _to_text(cells["value_unit"])
    if "value_comparator" in cells:
        got["comparator"] = _to_text(cells["value_comparator"])
    if "value_boolean" in cells:
        got["boolean"] = _to_bool(cells["value_boolean"])
    if "value_text" in cells:
        got["text"] = _to_text(cells["value_text"])
    if "value_code" in cells:
        set_ = concept.value.value_set
        if set_ is None:
            raise ValueError(f"{concept.label} has no coded value")
        got["code"] = _coded(ctx, set_, concept.value.open, cells["value_code"])
    value = _make_value(**got)
    if value.unit is not None and concept.value.units:
        number = value.number if value.number is not None else value.low
        assert number is not None
        fit_unit(number, value.unit, concept.value.units, concept.value.convert)
    return value


def _value(
    ctx: _Context,
    concept: ConceptDef,
    cells: Mapping[str, Any],
    units: Mapping[str, tuple[str, ...]],
) -> Value | None:
    canonical = {k: cells[k] for k in CANONICAL_VALUE_FIELDS if k in cells}
    if canonical:
        try:
            return _canonical_value(ctx, concept, canonical)
        except (ValueError, ValidationError) as exc:
            reason = validation_reason(exc) if isinstance(exc, ValidationError) else str(exc)
            raise _FieldError(next(iter(canonical)), reason) from None
    name = "value" if "value" in cells else "text"
    if name not in cells:
        extra = [k for k in ("unit", "comparator") if k in cells]
        if extra:
            raise _FieldError(extra[0], "given without a value")
        return None
    declared = ctx.declared(units.get("value", ()))
    if "unit" in cells:  # the row states its unit: the column's default does not apply
        unit = ctx.unit(_unit_text(_to_text(cells["unit"])))
        declared = ()
    else:
        unit = ctx.unit(_unit_text(declared[0])) if declared else None
    cmp = _comparators(_to_text(cells["comparator"])) if "comparator" in cells else None
    try:
        return _typed_value(ctx, concept, cells[name], unit, cmp, declared)
    except ValidationError as exc:
        raise _FieldError(name, validation_reason(exc)) from None
    except ValueError as exc:
        raise _FieldError(name, str(exc)) from None


# -- times ----------------------------------------------------------------------------------


def _parsed(cells: Mapping[str, Any], name: str, parse: Any) -> Any:
    if name not in cells:
        return None
    try:
        return parse(cells[name])
    except ValueError as exc:
        raise _FieldError(name, str(exc)) from None


def _window(ctx: _Context, cells: Mapping[str, Any], name: str) -> tuple[Any, Any, str | None]:
    earliest = _parsed(cells, f"{name}_earliest_day", _to_int)
    latest = _parsed(cells, f"{name}_latest_day", _to_int)
    parsed = _parsed(cells, f"{name}_window", lambda c: parse_window(_to_text(c)))
    if parsed is None:
        return earliest, latest, None
    try:
        return parsed[0], parsed[1], ctx.concept_key(parsed[2])
    except ValueError as exc:
        raise _FieldError(f"{name}_window", str(exc)) from None


def _agree(
    name: str, date: tuple[dt.date, Precision] | None, day: int, anchor: str, anchor_date: dt.date
) -> dt.date:
    """The day ``day`` after the anchor date; a date given beside it must be that day (or,
    when it is only a year or a month, hold it)."""
    derived = anchor_date + dt.timedelta(days=day)
    if date is None:
        return derived
    first, last = date_span(*date)
    if not first <= derived <= last:
        shown = date_text(*date)
        if date[1] == "day":
            said = f"day {(date[0] - anchor_date).days} after"
        else:
            said = f"days {(first - anchor_date).days} to {(last - anchor_date).days} after"
        raise _FieldError(
            f"{name}_date",
            f"date {shown} is {said} the {anchor} date {anchor_date}, but the row gives day {day}",
        )
    return derived


_WINDOW_PARTS = ("earliest_day", "latest_day", "window")
_TIME_FIELDS = {
    name: tuple(f"{name}_{part}" for part in ("date", "day", "anchor", *_WINDOW_PARTS))
    for name in ("when", "end")
}


class Censored(_FieldError):
    """A relative time written '15+': the event had not happened by then."""


def is_censored(cells: Mapping[str, Any], units: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether the row's ``when_day`` is written censored ('15+', '>12 mo')."""
    if "when_day" not in cells:
        return False
    unit = units.get("when_day", ())
    try:
        return parse_time(cells["when_day"], unit[0] if unit else None).censored
    except ValueError:
        return False  # the time itself is wrong: _when says why


def _relative_day(
    cells: Mapping[str, Any], fld: str, unit: tuple[str, ...], censor: str | None
) -> tuple[int | None, tuple[float, str] | None, bool]:
    """A ``*_day`` cell as (day, (amount, unit) when written in weeks/months/years, censored):
    the column's unit (``units: {when_day: mo}``) or the cell's own ('6 mo') says which."""
    if fld not in cells:
        return None, None, False
    try:
        time = parse_time(cells[fld], unit[0] if unit else None)
    except ValueError as exc:
        raise _FieldError(fld, str(exc)) from None
    if time.censored and censor is None:
        raise Censored(
            fld,
            f"{_to_text(cells[fld])!r} says the event had not happened by {time.amount:g} "
            f"{time.unit} (censored); name the concept that records it in this event's "
            "mapping, e.g. `censored: last_follow_up`",
        )
    stated = (time.amount, time.unit) if time.unit != "d" else None
    return time.days, stated, time.censored


def _when(
    ctx: _Context,
    cells: Mapping[str, Any],
    name: str,
    anchor_date: dt.date | None,
    units: Mapping[str, tuple[str, ...]] | None = None,
    censor: str | None = None,
) -> When | None:
    """The time ``name`` (when or end) of a row: date, relative day (in days, weeks or
    months, per ``units``), window. A censored day ('15+') is allowed only with ``censor``
    (the concept that records it); :func:`is_censored` tells the caller."""
    names = _TIME_FIELDS[name]
    if not any(f in cells for f in names):
        return None
    dated: tuple[dt.date, Precision] | None = _parsed(cells, names[0], ctx.date)
    date: dt.date | None = None
    precision: Precision = "day"
    if dated is not None:
        date, precision = dated
    day, stated, _ = _relative_day(cells, names[1], (units or {}).get(names[1], ()), censor)
    named: str | None = _parsed(cells, names[2], ctx.concept_key)
    if any(f in cells for f in names[3:]):
        earliest, latest, window_anchor = _window(ctx, cells, name)
    else:
        earliest = latest = window_anchor = None
    window = earliest is not None or latest is not None
    if date is None and day is None and not window:
        return None
    relative = day is not None or window
    anchor = (window_anchor or named or ctx.mapping.anchor) if relative else None
    if relative and anchor is None:
        blamed = f"{name}_day" if day is not None else f"{name}_window"
        raise _FieldError(
            blamed,
            "a relative day needs the event it counts from: set `anchor` in the mapping "
            f"or map `{name}_anchor`",
        )
    if (
        day is not None
        and anchor is not None
        and anchor == ctx.mapping.anchor
        and anchor_date is not None
        and (stated is None or stated[1] == "wk")  # months and years name no exact day
    ):
        date, precision = _agree(name, dated, day, anchor, anchor_date), "day"
    try:
        return _make_when(date, day, anchor, earliest, latest, precision, stated)
    except ValidationError as exc:
        first = next((f for f in cells if f.startswith(f"{name}_")), None)
        raise _FieldError(first, validation_reason(exc)) from None


def _attributes(
    ctx: _Context, concept: str, cells: Mapping[str, Any], units: Mapping[str, tuple[str, ...]]
) -> dict[str, Scalar]:
    allowed = ctx.library.concept(concept).attributes
    library = ctx.library.data.attributes
    out: dict[str, Scalar] = {}
    for name, cell in cells.items():
        attr = library.get(name)
        if attr is None:
            continue
        if name not in allowed:
            listed = ", ".join(allowed) or "none"
            reason = f"concept {concept} has no attribute {name}; it allows {listed}"
            raise _FieldError(name, reason)
        try:
            declared = ctx.declared(units.get(name, ()))
            key, attr = _routed(ctx, name, attr, cell, declared)
            if key != name and key not in allowed:
                raise ValueError(f"concept {concept} has no attribute {key} for this unit")
            out[key] = _attribute(ctx, attr, cell, declared, name)
        except ValueError as exc:
            raise _FieldError(name, str(exc)) from None
    return out


def _routed(
    ctx: _Context, name: str, attr: AttributeDef, cell: Any, declared: tuple[str, ...]
) -> tuple[str, AttributeDef]:
    """The attribute a quantity cell goes to: its own, or the one its ``by_unit`` names for
    the cell's unit (a flat dose '10^8 cells' in a cell_dose column is cell_dose_flat)."""
    if not attr.by_unit:
        return name, attr
    _, number, written = ctx.quantity(cell)
    given = per_column(written, declared) or (declared[0] if declared else attr.units[0])
    _, fitted = fit_unit(number, given, (attr.units[0], *attr.by_unit), True)
    key = attr.by_unit.get(fitted, name)
    return key, ctx.library.data.attributes[key]
