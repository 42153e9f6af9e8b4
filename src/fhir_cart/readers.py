"""Study files (XLSX, CSV, a folder of CSVs, canonical JSON) -> open :class:`Case` records.

A mapping (:mod:`fhir_cart.study_mapping`) says where the patient rows are and which columns
make which events; the concept library (:mod:`fhir_cart.concepts`) says how each event's value
and attributes are read. Every rejected row or value becomes a
:class:`~fhir_cart.errors.Reject` naming the file, the sheet (xlsx) or spec, the spreadsheet
row (header = row 1), the column, the value and what was expected. A bad event rejects that
event only; a bad patient row rejects the patient and, with the reason said, each of their
events. A mapping that does not fit the file (a column it names is not in the header, a sheet
or file is missing) is an :class:`~fhir_cart.errors.InputError` before any row is read.
Columns of a read sheet that the mapping neither maps nor ignores are listed in
:attr:`ReadResult.unmapped_columns`.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import difflib
import math
import re
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from fhir_cart.concepts import (
    AttributeDef,
    ConceptDef,
    ConceptLibrary,
    ValueDef,
    convert_unit,
    is_ucum,
    units_compatible,
)
from fhir_cart.csv_safety import unescape_csv_cell
from fhir_cart.errors import ConfigError, InputError, Reject, validation_reason
from fhir_cart.records import (
    COMPARATORS,
    Case,
    Event,
    PatientRecord,
    Precision,
    Scalar,
    Value,
    When,
    date_span,
    date_text,
)
from fhir_cart.study_mapping import (
    ASSUMABLE,
    CANONICAL_VALUE_FIELDS,
    SEXES,
    EventSpec,
    PatientSpec,
    StudyMapping,
    WordTarget,
    check_mapping,
    default_library,
    normalise_word,
    parse_window,
    spec_names,
)
from fhir_cart.workbook import check_workbook

__all__ = [
    "ReadResult",
    "StudyStream",
    "UnmappedColumn",
    "default_library",
    "fit_unit",
    "parse_quantity",
    "read_study",
    "stream_study",
    "word_key",
]

Row = dict[str, Any]
_BOOLEANS = {
    **dict.fromkeys(("yes", "true", "1", "ja", "y", "j", "wahr"), True),
    **dict.fromkeys(("no", "false", "0", "nein", "n", "falsch"), False),
}
_NUM = r"[-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?"
_UNIT = r"(?:10[*^]\d+\S*|[^\d\s<>=.,\-–—].*|1)"
"""A unit after a number: '%', 'g/m²', '10*6/kg', '10^9/L', 'x10^6/kg', or '1' alone."""
_QUANTITY = re.compile(rf"^(?P<cmp><=|>=|<|>)?\s*(?P<num>{_NUM})\s*(?P<unit>{_UNIT})?$")
_RANGE = re.compile(
    rf"^(?P<low>{_NUM})\s*(?:-|–|—|\.\.|to|bis)\s*(?P<high>{_NUM})\s*(?P<unit>{_UNIT})?$"
)
_NONZERO_DIGIT = re.compile(r"[1-9]")
_EXPONENT = re.compile(r"[eE]")
_UNIT_TEXT = str.maketrans({"²": "2", "³": "3", "µ": "u", "μ": "u", "×": "x"})


class UnmappedColumn(NamedTuple):
    """A column of a read sheet that the mapping neither maps nor ignores."""

    file: str
    sheet: str | None
    column: str


@dataclass
class ReadResult:
    """What a study file gave: the cases read, every row or value rejected, and the
    columns nobody mapped (the CLI warns about them)."""

    cases: list[Case] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    unmapped_columns: list[UnmappedColumn] = field(default_factory=list)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    """With ``keep_sources``: study id -> {"" and event id -> ``file, sheet S, row N``}."""


class _FieldError(ValueError):
    def __init__(self, fld: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = fld


# -- cells ----------------------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, str) and value.isspace())


def _to_date(value: Any, formats: tuple[str, ...]) -> tuple[dt.date, Precision]:
    """A date cell as (date, precision): a date cell is a day; text is read by the first of
    the mapping's ``date_formats`` that fits, at that format's precision."""
    if isinstance(value, dt.datetime):
        return value.date(), "day"
    if isinstance(value, dt.date):
        return value, "day"
    return _text_date(str(value).strip(), formats)


def _format_precision(fmt: str) -> Precision:
    """What a strptime format states: a day (``%d``, ``%j``), else a month (``%m``, ``%b``,
    ``%B``), else a year. A partial date is the first day of its year or month *with* that
    precision, never a guessed day."""
    if "%d" in fmt or "%j" in fmt:
        return "day"
    if any(code in fmt for code in ("%m", "%b", "%B")):
        return "month"
    return "year"


@lru_cache(maxsize=65536)
def _text_date(text: str, formats: tuple[str, ...]) -> tuple[dt.date, Precision]:
    for fmt in formats:
        try:
            return dt.datetime.strptime(text, fmt).date(), _format_precision(fmt)
        except ValueError:
            continue
    for fmt in formats:
        impossible = _impossible_date(text, fmt)
        if impossible is not None:
            raise ValueError(f"{impossible} (read as {fmt})")
    raise ValueError(f"not a date; expected one written as {' or '.join(formats)}")


_DATE_PARTS = {
    "%d": r"(?P<d>\d{1,2})", "%m": r"(?P<m>\d{1,2})", "%Y": r"(?P<Y>\d{4})",
    "%y": r"(?P<y>\d{2})", "%H": r"\d{1,2}", "%M": r"\d{1,2}", "%S": r"\d{1,2}",
}  # fmt: skip


@lru_cache(maxsize=64)
def _date_shape(fmt: str) -> re.Pattern[str] | None:
    """A format's shape with its day, month and year as groups (None: a format with other
    directives, e.g. month names, whose slips are not explained)."""
    parts = re.split(r"(%.)", fmt)
    if any(p.startswith("%") and p not in _DATE_PARTS for p in parts if len(p) == 2):
        return None
    pattern = "".join(_DATE_PARTS.get(p, re.escape(p)) for p in parts)
    return re.compile(pattern) if "(?P<d>" in pattern and "(?P<m>" in pattern else None


def _impossible_date(text: str, fmt: str) -> str | None:
    """Why ``text``, written in the shape of ``fmt``, is no date ('day 31 does not exist in
    February 2024'); None when it is not written in that shape."""
    shape = _date_shape(fmt)
    match = shape.fullmatch(text) if shape is not None else None
    if match is None:
        return None
    day, month = int(match["d"]), int(match["m"])
    if not 1 <= month <= 12:
        return f"month {month} does not exist"
    groups = match.groupdict()
    if groups.get("Y") is not None:
        year = int(groups["Y"])
    elif groups.get("y") is not None:
        year = dt.datetime.strptime(groups["y"], "%y").year
    else:
        return None
    if year < 1:
        return f"year {year} does not exist"
    if 1 <= day <= calendar.monthrange(year, month)[1]:
        return None  # the date exists: something else in the text is wrong
    return f"day {day} does not exist in {_MONTHS[month - 1]} {year}"


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip


class _Unholdable(ValueError):
    """A number written in a cell that a double cannot hold."""


def _number(text: str) -> float:
    """A number written as text ('1,5', '1e-4') as a float; ValueError for one a double
    cannot hold: too large (1e309 would read as infinity) or too small (1e-400 would read
    as 0), and for 'inf' or 'nan'."""
    number = float(text.replace(",", "."))
    if not math.isfinite(number):
        raise _Unholdable(
            f"the number {text} is too large to be a measured value; check the cell "
            "(a typo in the exponent?)"
        )
    if number == 0.0 and _NONZERO_DIGIT.search(_EXPONENT.split(text, maxsplit=1)[0]):
        raise _Unholdable(
            f"the number {text} is too small to hold (it would read as 0); check the cell "
            "(a typo in the exponent?)"
        )
    return number


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, int | float):
        return float(value)
    try:
        return _number(str(value).strip())
    except _Unholdable:
        raise
    except ValueError:
        raise ValueError("expected a number") from None


def _to_int(value: Any) -> int:
    number = _to_float(value)
    if not number.is_integer():
        raise ValueError("expected a whole number")
    return int(number)


def _to_text(value: Any) -> str:
    if type(value) is str:
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value).strip()


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    found = _BOOLEANS.get(normalise_word(value))
    if found is None:
        raise ValueError("expected yes or no (yes/no, true/false, 1/0, ja/nein, y/n)")
    return found


def _in_bounds(number: float, low: float | None, high: float | None) -> None:
    if low is not None and number < low:
        raise ValueError(f"must be at least {low:g}")
    if high is not None and number > high:
        raise ValueError(f"must be at most {high:g}")


# -- quantities and units --------------------------------------------------------------------


def _unit_text(text: str) -> str:
    """A unit as written -> UCUM spelling: 'g/m²' -> 'g/m2', 'µg' -> 'ug',
    'x10^6/kg' -> '10*6/kg'; spaces dropped."""
    unit = "".join(text.translate(_UNIT_TEXT).split())
    unit = re.sub(r"^x(?=10)", "", unit)
    return unit.replace("10^", "10*")


def _comparators(text: str) -> str:
    return text.replace("≤", "<=").replace("≥", ">=")


def parse_quantity(cell: Any) -> tuple[str | None, float, str | None]:
    """A cell as (comparator, number, unit as written in UCUM spelling or None):
    '<0.01%' -> ('<', 0.01, '%'), '1,5 g/m²' -> (None, 1.5, 'g/m2'), 1e-4 -> (None, 1e-4,
    None). ValueError when the cell is not a number."""
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        return None, float(cell), None
    match = _QUANTITY.match(_comparators(str(cell).strip()))
    if match is None:
        raise ValueError("expected a number, with a comparator and unit if any ('<0.01 %')")
    unit = _unit_text(match["unit"]) if match["unit"] else None
    return match["cmp"], _number(match["num"]), unit


def fit_unit(number: float, unit: str, units: tuple[str, ...], convert: bool) -> tuple[float, str]:
    """``number`` in ``unit`` expressed in one of ``units`` (the first is canonical): a unit
    compatible with the first converts to it (unless it is listed and ``convert`` is
    false); another listed unit is kept; a unit compatible with another listed one converts
    to that. ValueError for a unit that is not UCUM or fits none."""
    if not is_ucum(unit):
        raise ValueError(f"unit {unit!r} is not a UCUM unit")
    first = units[0]
    if unit == first:
        return number, first
    if units_compatible(unit, first) and (convert or unit not in units):
        return convert_unit(number, unit, first), first
    if unit in units:
        return number, unit
    for other in units[1:]:
        if units_compatible(unit, other):
            return convert_unit(number, unit, other), other
    raise ValueError(f"unit {unit!r} is not one of {', '.join(units)} nor convertible to them")


def _column_kind(written: str | None, declared: tuple[str, ...], name: str = "value") -> None:
    """A unit written in a cell must measure what the column's declared unit (or another
    unit the mapping lists for the column) measures: '1,5 g' in a mg/m2 column is a
    reject, not a fixed dose of 1,500 mg."""
    if written is None or not declared or not is_ucum(written):
        return  # no unit written, none declared, or not UCUM (fit_unit says so)
    if any(units_compatible(written, unit) for unit in declared):
        return
    listed = ", ".join([*declared, written])
    raise ValueError(
        f"unit {written!r} does not measure what this column's unit {declared[0]!r} measures; "
        f"correct the cell, or, if {written} is right for this column, list it in the "
        f"mapping: units: {{{name}: [{listed}]}}"
    )


def _checked_number(number: float, unit: str | None, low: float | None, high: float | None) -> None:
    _in_bounds(number, low, high)
    if unit == "%" and number > 100:
        raise ValueError("a percentage cannot exceed 100")


def word_key(word: Any) -> str:
    """How a cell is matched to a canonical word: :func:`normalise_word`, and '_' read as
    a space ('complete remission' is complete_remission)."""
    return normalise_word(word).replace("_", " ")


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
            _, number, written = parse_quantity(cell)
            _column_kind(written, declared, name)
            given = written or (declared[0] if declared else attr.units[0])
            number, _ = fit_unit(number, given, attr.units[:1], True)
        else:
            number = _to_int(cell) if kind == "integer" else _to_float(cell)
        _in_bounds(number, attr.min, attr.max)
        return int(number) if kind == "integer" else number
    if kind == "boolean":
        return _to_bool(cell)
    if kind == "date":
        return date_text(*ctx.date(cell))
    return _to_text(cell)


# -- records built once ----------------------------------------------------------------------
#
# The reader has read and checked every field already; pydantic's pass over the same values
# is skipped when each field is exactly what it would accept unchanged (type, range, length,
# pattern, no surrounding whitespace to strip). The model's own check (its model validator)
# still runs, and anything else goes through pydantic, for its error and message.

_KEY_TEXT = re.compile(r"[a-z][a-z0-9_]*")
_ID_TEXT = re.compile(r"[A-Za-z0-9_\-\.]+")
_NOT_ID = re.compile(r"[^A-Za-z0-9_.\-]+")
_SCALARS = (str, int, float, bool)


_CHECK = "_check"
_Model = TypeVar("_Model", When, Value, Event)


_DEFAULTS: dict[type[BaseModel], dict[str, Any]] = {
    model: {name: info.default for name, info in model.model_fields.items()}
    for model in (When, Value, Event)
}
"""Each field with its default, in declared order (Event.attributes is always given)."""


def _construct(model: type[_Model], fields: dict[str, Any]) -> _Model:
    """``model.model_construct(**fields)`` as pydantic does it, without its general loop."""
    made = model.__new__(model)
    values = dict(_DEFAULTS[model])
    values.update(fields)
    object.__setattr__(made, "__dict__", values)
    object.__setattr__(made, "__pydantic_fields_set__", set(fields))
    object.__setattr__(made, "__pydantic_extra__", None)
    object.__setattr__(made, "__pydantic_private__", None)
    return made


def _checked(model: _Model) -> _Model:
    """The model after its own model validator (``_check``), which raises ValueError."""
    getattr(model, _CHECK)()
    return model


def _day(value: Any) -> bool:
    return value is None or (type(value) is int and -36500 <= value <= 36500)


def _text(value: Any, longest: int, shortest: int = 1) -> bool:
    return value is None or (
        type(value) is str and shortest <= len(value) <= longest and value == value.strip()
    )


def _key(value: Any, pattern: re.Pattern[str] = _KEY_TEXT) -> bool:
    return type(value) is str and len(value) <= 64 and pattern.fullmatch(value) is not None


def _finite(value: Any) -> bool:
    return value is None or (type(value) is float and math.isfinite(value))


def _make_when(
    date: dt.date | None,
    day: int | None,
    anchor: str | None,
    earliest: Any,
    latest: Any,
    precision: Precision = "day",
) -> When:
    fields = {"date": date, "day": day, "anchor": anchor, "earliest_day": earliest,
              "latest_day": latest}  # fmt: skip
    if precision != "day":  # a day is the default: set only what the source said
        fields["precision"] = precision
    if (
        precision == "day"
        and (date is None or type(date) is dt.date)
        and _day(day)
        and _day(earliest)
        and _day(latest)
        and (anchor is None or _key(anchor))
    ):
        try:
            return _checked(_construct(When, fields))
        except ValueError:
            pass
    return When(**fields)


_VALUE_FIELDS: dict[str, Any] = {
    "number": _finite,
    "low": _finite,
    "high": _finite,
    "unit": lambda v: _text(v, 40),
    "comparator": lambda v: v is None or (type(v) is str and v in COMPARATORS),
    "code": lambda v: _text(v, 64),
    "boolean": lambda v: v is None or type(v) is bool,
    "text": lambda v: _text(v, 1000),
}


def _make_value(**fields: Any) -> Value:
    if all(_VALUE_FIELDS[k](v) for k, v in fields.items()):
        try:
            return _checked(_construct(Value, fields))
        except ValueError:
            pass
    return Value(**fields)


def _make_event(**fields: Any) -> Event:
    when, end, value = fields["when"], fields["end"], fields["value"]
    attributes = fields["attributes"]
    if (
        _key(fields["event_id"], _ID_TEXT)
        and _key(fields["concept"])
        and (when is None or type(when) is When)
        and (end is None or type(end) is When)
        and (value is None or type(value) is Value)
        and _text(fields["source_text"], 1000, 0)
        and _text(fields["origin"], 64, 0)
        and _text(fields["assumed"], 1000)
        and _text(fields["status"], 200, 0)
        and all(
            _text(k, len(k), 0)
            and type(v) in _SCALARS
            and (type(v) is not str or _text(v, len(v), 0))
            for k, v in attributes.items()
        )
    ):
        try:
            return _checked(_construct(Event, fields))
        except ValueError:
            pass
    return Event(**fields)


# -- values ---------------------------------------------------------------------------------


def _quantity(
    value: ValueDef, cell: Any, unit: str | None, comparator: str | None, declared: tuple[str, ...]
) -> Value:
    cmp, number, written = parse_quantity(cell)
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


def _range(value: ValueDef, cell: Any, unit: str | None, declared: tuple[str, ...]) -> Value:
    match = _RANGE.match(_to_text(cell))
    if match is None:
        raise ValueError("expected a range such as '1-2' or '1–2 mg'")
    low, high = (_number(match[k]) for k in ("low", "high"))
    written = _unit_text(match["unit"]) if match["unit"] else None
    _column_kind(written, declared)
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
    if kind == "range":
        return _range(value, cell, unit, declared)
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
    return _quantity(value, cell, unit, comparator, declared)


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
    declared = units.get("value", ())
    if "unit" in cells:  # the row states its unit: the column's default does not apply
        unit: str | None = _unit_text(_to_text(cells["unit"]))
        declared = ()
    else:
        unit = _unit_text(declared[0]) if declared else None
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


def _when(
    ctx: _Context, cells: Mapping[str, Any], name: str, anchor_date: dt.date | None
) -> When | None:
    """The time ``name`` (when or end) of a row: date, relative day, window."""
    names = _TIME_FIELDS[name]
    if not any(f in cells for f in names):
        return None
    dated: tuple[dt.date, Precision] | None = _parsed(cells, names[0], ctx.date)
    date: dt.date | None = None
    precision: Precision = "day"
    if dated is not None:
        date, precision = dated
    day = _parsed(cells, names[1], _to_int)
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
    ):
        date, precision = _agree(name, dated, day, anchor, anchor_date), "day"
    try:
        return _make_when(date, day, anchor, earliest, latest, precision)
    except ValidationError as exc:
        first = next((f for f in cells if f.startswith(f"{name}_")), None)
        raise _FieldError(first, validation_reason(exc)) from None


# -- a spec made ready to read rows ----------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """One spec with its word look-ups prepared."""

    name: str
    """Spec name (event ids start with it); ``patients`` for the patients spec."""
    where: str
    """Key path in the mapping file."""
    spec: PatientSpec | EventSpec
    words: dict[str, dict[str, WordTarget]]
    own_sheet: bool
    """False: an event spec reading the patients sheet."""
    fields: tuple[tuple[str, str, dict[str, WordTarget] | None], ...]
    """(field, column, its words) for every mapped column."""
    defaults: tuple[tuple[str, Any], ...]
    """Constants (and the spec's concept) filling blank fields."""
    by_column: dict[str, tuple[tuple[int, str, str, dict[str, WordTarget] | None], ...]]
    """column -> (position in ``fields``, field, column, words) of the fields it fills."""

    @property
    def event(self) -> EventSpec | None:
        return self.spec if isinstance(self.spec, EventSpec) else None

    def sheet_key(self, mapping: StudyMapping) -> tuple[str | None, int]:
        spec = self.spec if self.own_sheet else mapping.patients
        return spec.source, spec.header_row or mapping.header_row


def _plan(name: str, where: str, spec: PatientSpec | EventSpec) -> _Plan:
    words = {
        fld: {normalise_word(source): target for source, target in listed.items()}
        for fld, listed in spec.values.items()
    }
    own = isinstance(spec, PatientSpec) or spec.source is not None
    fields = tuple((fld, column, words.get(fld)) for fld, column in spec.columns.items())
    defaults = dict(spec.constants)
    if isinstance(spec, EventSpec) and spec.concept is not None:
        defaults.setdefault("concept", spec.concept)
    by_column: dict[str, list[tuple[int, str, str, dict[str, WordTarget] | None]]] = {}
    for position, (fld, column, lookup) in enumerate(fields):
        by_column.setdefault(column, []).append((position, fld, column, lookup))
    columns = {c: tuple(found) for c, found in by_column.items()}
    return _Plan(name, where, spec, words, own, fields, tuple(defaults.items()), columns)


def _plans(ctx: _Context) -> list[_Plan]:
    """Patients first, then every event spec; constants are checked once, here."""
    mapping = ctx.mapping
    problems = check_mapping(mapping, ctx.library)
    if problems:
        raise ConfigError("the mapping is invalid: " + "; ".join(problems))
    plans = [_plan("patients", "patients", mapping.patients)]
    for index, (name, spec) in enumerate(zip(spec_names(mapping), mapping.events, strict=True)):
        plans.append(_plan(name, f"events[{index}]", spec))
    for plan in plans[1:]:
        _check_constants(ctx, plan)
    return plans


def _check_constants(ctx: _Context, plan: _Plan) -> None:
    spec = plan.event
    assert spec is not None
    constants = dict(spec.constants)
    try:
        for name in ("when", "end"):
            _when(ctx, constants, name, None)
        concept = spec.fixed_concept()
        if concept is not None:
            concept = ctx.concept_key(concept)
            _value(ctx, ctx.library.concept(concept), constants, spec.units)
            _attributes(ctx, concept, constants, spec.units)
    except _FieldError as exc:
        value = constants.get(exc.field or "")
        raise ConfigError(f"{plan.where}.constants.{exc.field}: {value!r}: {exc}") from exc


# -- sources: sheets and CSV files, each read once -------------------------------------------


@dataclass(frozen=True)
class _Sheet:
    source: str
    """File name shown in rejects."""
    sheet: str | None
    """Sheet name (xlsx), None for CSV."""
    header_row: int
    header: list[str]
    held: list[tuple[int, Row]] | None = None
    """The rows of a workbook sheet (held in memory); None for a CSV file, read again on
    each pass so that it is never held."""
    file: Path | None = None
    mapping: StudyMapping | None = None

    def rows(self) -> Iterator[tuple[int, Row]]:
        """(spreadsheet row number, column -> cell) of every row that is not blank."""
        if self.held is not None:
            return iter(self.held)
        assert self.file is not None
        assert self.mapping is not None
        return _data_rows(_csv_rows(self.file, self.mapping), self.header_row, self.header)

    def column(self, name: str) -> Iterator[Any]:
        """The cells of one column, row by row (blank rows skipped), without building rows."""
        if self.held is not None:
            return (raw.get(name) for _, raw in self.held)
        assert self.file is not None
        assert self.mapping is not None
        index = len(self.header) - 1 - self.header[::-1].index(name)  # as dict(zip()) reads
        return _column_cells(_csv_rows(self.file, self.mapping), self.header_row, index)


class Uncomputed(str):
    """A formula cell with no saved result (its text is the formula)."""

    __slots__ = ()


def _mark_uncomputed(values: tuple[Any, ...], formulas: tuple[Any, ...]) -> tuple[Any, ...]:
    if all(v is not None for v in values):
        return values
    return (
        tuple(
            Uncomputed(f) if v is None and isinstance(f, str) and f.startswith("=") else v
            for v, f in zip(values, formulas, strict=False)
        )
        + values[len(formulas) :]
    )


def _computed(cells: Mapping[str, Any]) -> None:
    for fld, cell in cells.items():
        if isinstance(cell, Uncomputed):
            raise _FieldError(
                fld,
                "a formula whose result was never saved; open the file in a spreadsheet "
                "program and save it (or write the value instead of the formula)",
            )


def _row_is_blank(cells: list[Any]) -> bool:
    return all(_blank(v) for v in cells)


def _read_rows(
    rows: Iterable[Iterable[Any]], header_row: int
) -> tuple[list[str], list[tuple[int, Row]]]:
    header: list[str] | None = None
    out: list[tuple[int, Row]] = []
    for number, values in enumerate(rows, start=1):
        cells = list(values)
        if number < header_row:
            continue
        if header is None:
            header = [_to_text(h) if h is not None else "" for h in cells]
            continue
        if _row_is_blank(cells):
            continue
        out.append((number, dict(zip(header, cells, strict=False))))
    return header or [], out


def _header_of(rows: Iterable[list[Any]], header_row: int) -> list[str]:
    for number, cells in enumerate(rows, start=1):
        if number == header_row:
            return [_to_text(h) if h is not None else "" for h in cells]
    return []


def _blank_text(cells: list[str]) -> bool:
    """Whether a CSV row (text cells) is blank: :func:`_row_is_blank` at C speed."""
    text = "".join(cells)
    return not text or text.isspace()


def _data_rows(
    rows: Iterable[list[str]], header_row: int, header: list[str]
) -> Iterator[tuple[int, Row]]:
    """The rows of a CSV file after the header as (row number, column -> cell), streaming
    (what :func:`_read_rows` holds). Empty cells are left out: a missing column reads as
    None, blank as an empty cell does."""
    for number, cells in enumerate(rows, start=1):
        if number <= header_row or _blank_text(cells):
            continue
        yield number, {h: c for h, c in zip(header, cells, strict=False) if c}


def _column_cells(rows: Iterable[list[str]], header_row: int, index: int) -> Iterator[Any]:
    for number, cells in enumerate(rows, start=1):
        if number <= header_row or _blank_text(cells):
            continue
        yield cells[index] if index < len(cells) else None


class _Sources:
    """Finds and reads the sheet or CSV file of each spec (each at most once per read)."""

    def __init__(self, path: Path, mapping: StudyMapping, stack: ExitStack) -> None:
        self.path = path
        self.mapping = mapping
        self._stack = stack
        self._book: Any = None
        self._formulas: Any = None
        self._cache: dict[tuple[str, str | None, int], _Sheet] = {}

    def sheet(self, name: str | None, header_row: int) -> _Sheet:
        xlsx = self.path.suffix.lower() == ".xlsx"
        file = self.path if xlsx else self._csv_path(name)
        key = (str(file), name, header_row)
        if key not in self._cache:
            if xlsx:
                title, rows = self._xlsx_rows(name)
                header, data = _read_rows(rows, header_row)
                self._cache[key] = _Sheet(file.name, title, header_row, header, data)
            else:
                lines = _csv_rows(file, self.mapping)
                header = _header_of(lines, header_row)
                for _ in lines:  # the whole file parses (encoding, csv's field limit) before
                    pass  # the mapping is checked against it, as when the file was held
                sheet = _Sheet(file.name, None, header_row, header, None, file, self.mapping)
                self._cache[key] = sheet
        return self._cache[key]

    def _xlsx_rows(self, sheet: str | None) -> tuple[str, Iterator[tuple[Any, ...]]]:
        book = self._workbook()
        if sheet is not None and sheet not in book.sheetnames:
            names = ", ".join(book.sheetnames)
            raise InputError(
                f"{self.path.name}: no sheet {sheet!r} (sheets: {names})",
                [Reject(self.path.name, None, None, sheet, f"no such sheet; sheets: {names}")],
            )
        worksheet = book[sheet] if sheet is not None else book.worksheets[0]
        values = worksheet.iter_rows(values_only=True)
        formulas = self._formula_book()[worksheet.title].iter_rows(values_only=True)
        return worksheet.title, (
            _mark_uncomputed(row, formula_row)
            for row, formula_row in zip(values, formulas, strict=False)
        )

    def _formula_book(self) -> Any:
        """The same workbook with formulas instead of their saved results: a formula cell
        whose result was never saved (a file written by a program, not by a spreadsheet)
        reads as blank otherwise, and its value would be lost without a word."""
        if self._formulas is None:
            self._formulas = _load_workbook(self.path, data_only=False)
            self._stack.callback(self._formulas.close)
        return self._formulas

    def _workbook(self) -> Any:
        if self._book is None:
            self._book = _load_workbook(self.path, data_only=True)
            self._stack.callback(self._book.close)
        return self._book

    def _csv_path(self, name: str | None) -> Path:
        if self.path.is_file():
            if self.path.suffix.lower() != ".csv":
                raise InputError(f"{self.path.name}: study files are .xlsx, .csv or .json", [])
            if name is None or name in (self.path.name, self.path.stem):
                return self.path
            folder = self.path.parent
        else:
            folder = self.path
        if name is None:
            raise InputError(f"{self.path}: a folder of CSVs needs a source file per spec", [])
        for candidate in (folder / name, folder / f"{name}.csv"):
            if candidate.is_file():
                return candidate
        raise InputError(
            f"{folder / name}: file named in the mapping is missing",
            [Reject(name, None, None, None, f"file named in the mapping is not in {folder}")],
        )


def _load_workbook(path: Path, *, data_only: bool) -> Any:
    """openpyxl's read-only workbook, once the archive passed :func:`check_workbook` (size,
    members, a workbook in it); what openpyxl still cannot read is an InputError."""
    import zipfile
    from xml.etree.ElementTree import ParseError

    from openpyxl import load_workbook

    check_workbook(path)
    try:
        return load_workbook(path, read_only=True, data_only=data_only)
    except (zipfile.BadZipFile, KeyError, ValueError, ParseError, OSError, EOFError) as exc:
        reason = f"the workbook cannot be read ({exc.__class__.__name__})"
        raise InputError(
            f"{path.name}: {reason}; open it in the spreadsheet program and save it again "
            "as an Excel workbook (.xlsx), or export a CSV",
            [Reject(path.name, None, None, None, reason)],
        ) from None


def _csv_rows(path: Path, mapping: StudyMapping) -> Iterator[list[str]]:
    try:
        with path.open(newline="", encoding=mapping.encoding) as handle:
            reader = csv.reader(handle, delimiter=mapping.csv_delimiter)
            try:
                for row in reader:
                    # a cell escaped against formula injection ('=..., '-...) reads as written
                    if "'" in "".join(row):
                        row = [unescape_csv_cell(c) if c[:1] == "'" else c for c in row]
                    yield row
            except csv.Error as exc:  # a field over csv's 131,072 characters, say
                reason = f"the CSV file cannot be read at line {reader.line_num}: {exc}"
                raise InputError(
                    f"{path.name}: {reason}; a cell this long is not study data: check the "
                    "line (an unclosed quote joins every line after it into one cell)",
                    [Reject(path.name, reader.line_num, None, None, reason)],
                ) from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path.name}: not {mapping.encoding} text ({exc.reason} at byte {exc.start}); "
            "set `encoding` in the mapping (e.g. cp1252)",
            [Reject(path.name, None, None, None, f"not {mapping.encoding} text")],
        ) from exc


def _needed_columns(plan: _Plan) -> dict[str, str]:
    """Source column -> what needs it (a field, or the event key)."""
    needed = {column: fld for fld, column in plan.spec.columns.items()}
    for column in plan.event.key if plan.event is not None else ():
        needed.setdefault(column, "key")
    return needed


def _header_problems(sheet: _Sheet, plan: _Plan) -> list[Reject]:
    """Columns the spec names that the header lacks or holds twice."""
    problems = []
    optional = plan.spec.optional
    for column, fld in _needed_columns(plan).items():
        count = sheet.header.count(column)
        if count == 1 or (count == 0 and fld in optional):
            continue
        if count > 1:
            reason = f"column for {fld} appears {count} times in the header"
        else:
            close = difflib.get_close_matches(column, [h for h in sheet.header if h], n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            reason = f"column for {plan.where}.{fld} is not in the header{hint}"
        problems.append(
            Reject(sheet.source, sheet.header_row, column, None, reason, sheet.sheet or plan.name)
        )
    return problems


def _check_patient_rows(sheet: _Sheet) -> None:
    """A patient table with a header and no row is an error, never "0 patients"."""
    none = object()
    if sheet.header and next(sheet.column(sheet.header[0]), none) is not none:
        return  # a row that is not blank (read by column: no row is built twice)
    place = f"{sheet.source}" + (f", sheet {sheet.sheet}" if sheet.sheet else "")
    reason = (
        f"no patient rows below the header (row {sheet.header_row}); fill in the patient "
        "rows, or set `header_row` in the mapping if the header is further down"
    )
    raise InputError(
        f"{place}: {reason}",
        [Reject(sheet.source, sheet.header_row, None, None, reason, sheet.sheet or "patients")],
    )


def _unmapped(
    sheets: list[_Sheet], plans: list[_Plan], ignore: Mapping[str, str]
) -> list[UnmappedColumn]:
    used: dict[int, set[str]] = defaultdict(set)
    for sheet, plan in zip(sheets, plans, strict=True):
        used[id(sheet)] |= set(_needed_columns(plan))
    out: list[UnmappedColumn] = []
    for sheet in {id(s): s for s in sheets}.values():
        out += [
            UnmappedColumn(sheet.source, sheet.sheet, column)
            for column in dict.fromkeys(sheet.header)
            if column and column not in used[id(sheet)] and column not in ignore
        ]
    return out


# -- one row ---------------------------------------------------------------------------------


class _Where:
    """A source row being read, and how to blame one of its fields. ``columns``: field ->
    the source column it came from (fields set by a word follow their cell)."""

    __slots__ = ("columns", "plan", "raw", "row", "sheet")

    def __init__(
        self, sheet: _Sheet, plan: _Plan, row: int, raw: Row, columns: dict[str, str]
    ) -> None:
        self.sheet = sheet
        self.plan = plan
        self.row = row
        self.raw = raw
        self.columns = columns

    def location(self) -> str:
        """Where this row is, in words: ``file, sheet S, row N`` (no cell content)."""
        sheet = f", sheet {self.sheet.sheet}" if self.sheet.sheet else ""
        return f"{self.sheet.source}{sheet}, row {self.row}"

    def reject(self, fld: str | None, reason: str) -> Reject:
        column = self.columns.get(fld) if fld else None
        if column is not None:
            value = self.raw.get(column)
        else:
            column = fld
            value = self.plan.spec.constants.get(fld) if fld else None
        shown = None if _blank(value) else _to_text(value)
        return Reject(
            self.sheet.source, self.row, column, shown, reason, self.sheet.sheet or self.plan.name
        )


def _gather(plan: _Plan, raw: Row) -> tuple[dict[str, Any], dict[str, str]] | None:
    """field -> cell (translated by ``values``) and field -> column; constants fill blank
    fields. None when a cell's word means 'no event'."""
    cells: dict[str, Any] = {}
    columns: dict[str, str] = {}
    fields: Sequence[tuple[str, str, dict[str, WordTarget] | None]] = plan.fields
    if len(raw) < len(fields):  # a CSV row holds its non-empty cells only: visit those
        by_column = plan.by_column
        hits = [hit for column in raw for hit in by_column.get(column, ())]
        hits.sort(key=itemgetter(0))
        fields = [hit[1:] for hit in hits]
    for fld, column, lookup in fields:
        cell = raw.get(column)
        if cell is None or cell == "" or (type(cell) is str and cell.isspace()):
            continue  # blank
        word = normalise_word(cell) if lookup is not None else None
        if lookup is not None and word in lookup:
            target = lookup[word]
            if target is None and plan.event is None:
                continue  # a patient field: the word means 'no value'
            if target is None:
                return None
            if isinstance(target, dict):
                cells.update(target)
                columns.update(dict.fromkeys(target, column))
                continue
            cell = target
        cells[fld] = cell
        columns[fld] = column
    for fld, value in plan.defaults:
        cells.setdefault(fld, value)
    return cells, columns


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
            out[name] = _attribute(ctx, attr, cell, units.get(name, ()), name)
        except ValueError as exc:
            raise _FieldError(name, str(exc)) from None
    return out


def _source_text(plan: _Plan, where: _Where, cells: Mapping[str, Any]) -> str | None:
    if "source_text" in plan.spec.columns or "source_text" in cells:
        return _to_text(cells["source_text"])[:1000] if "source_text" in cells else None
    for fld in ("value", "text", "concept"):
        column = plan.spec.columns.get(fld)
        if column is not None and not _blank(where.raw.get(column)):
            return _to_text(where.raw[column])[:1000]
    return None


def _event(
    ctx: _Context, where: _Where, cells: dict[str, Any], event_id: str, anchor_date: dt.date | None
) -> Event:
    """One event from one row's gathered cells."""
    if "concept" not in cells:
        raise _FieldError("concept", "no concept: the cell is blank")
    concept = _parsed(cells, "concept", ctx.concept_key)
    units = where.plan.spec.units
    when = _when(ctx, cells, "when", anchor_date)
    end = _when(ctx, cells, "end", anchor_date)
    value = _value(ctx, ctx.library.concept(concept), cells, units)
    attributes = _attributes(ctx, concept, cells, units)
    origin = _to_text(cells["origin"]) if "origin" in cells else None
    status = _to_text(cells["status"]) if "status" in cells else None
    try:
        return _make_event(
            event_id=event_id, concept=concept, when=when, end=end, value=value,
            attributes=attributes, source_text=_source_text(where.plan, where, cells),
            origin=origin, assumed=_assumed(where, cells), status=status,
        )  # fmt: skip
    except ValidationError as exc:
        loc = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else None
        raise _FieldError(loc if loc in cells else None, validation_reason(exc)) from None


def _assumed(where: _Where, cells: Mapping[str, Any]) -> str | None:
    """The spec's ``assumed`` reason when one of its constants gave this event a time or
    value (a filled cell wins over a constant: then nothing was assumed); an ``assumed``
    column (canonical tables) as read."""
    if "assumed" in cells:
        return _to_text(cells["assumed"])
    spec = where.plan.event
    if spec is None or spec.assumed is None:
        return None
    from_constants = (f for f in cells if f not in where.columns and f in spec.constants)
    return spec.assumed if any(f in ASSUMABLE for f in from_constants) else None


def _slug(cell: Any) -> str:
    return re.sub(r"[^a-z0-9_.]+", "-", normalise_word(_to_text(cell))).strip("-")


def _event_id(plan: _Plan, where: _Where, cells: Mapping[str, Any], ordinal: int) -> str:
    """Explicit id, else ``<spec>-<key cells>``, else ``<spec>`` (patients sheet), else
    ``<spec>-<n>`` (n: the patient's n-th row of this spec)."""
    spec = plan.event
    assert spec is not None
    if "event_id" in cells:
        base = _to_text(cells["event_id"])
    elif spec.key:
        parts = [_slug(where.raw.get(c)) for c in spec.key if not _blank(where.raw.get(c))]
        base = "-".join([plan.name, *parts])
    elif not plan.own_sheet:
        base = plan.name
    else:
        base = f"{plan.name}-{ordinal}"
    event_id = base[:64] if _ID_TEXT.fullmatch(base) else _NOT_ID.sub("-", base)[:64]
    if not event_id.strip("-"):
        raise _FieldError("event_id", "an event id needs letters or digits")
    return event_id


# -- patients --------------------------------------------------------------------------------


def _patient(
    ctx: _Context, where: _Where, cells: dict[str, Any]
) -> tuple[PatientRecord, dt.date | None]:
    if "study_id" not in cells:
        raise _FieldError("study_id", "a patient row needs a patient id")
    attrs = ctx.library.data.patient_attributes
    out: dict[str, Any] = {"study_id": _to_text(cells["study_id"]), "attributes": {}}
    out["centre"] = _to_text(cells["centre"]) if "centre" in cells else ctx.mapping.centre
    if "sex" in cells:
        sex = normalise_word(cells["sex"])
        if sex not in SEXES:
            listed = [*where.plan.spec.values.get("sex", {}), *SEXES]
            raise _FieldError("sex", "unknown word; expected one of " + ", ".join(listed))
        out["sex"] = sex
    born = _parsed(cells, "birth_date", ctx.date)
    if born is not None:
        out["birth_date"], out["birth_precision"] = born
    anchor_date = _parsed(cells, "anchor_date", ctx.day)
    for name, cell in cells.items():
        if name in attrs:
            try:
                declared = where.plan.spec.units.get(name, ())
                out["attributes"][name] = _attribute(ctx, attrs[name], cell, declared, name)
            except ValueError as exc:
                raise _FieldError(name, str(exc)) from None
    try:
        return PatientRecord(**out), anchor_date
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        raise _FieldError(str(loc[0]) if loc else None, validation_reason(exc)) from None


# -- plausibility -------------------------------------------------------------------------------


def _plausible(ctx: _Context, event: Event, patient: PatientRecord) -> None:
    """Times no patient can have: in the future, before birth, an end before its start, a
    last follow-up before day 0. Rejected with the reason, never passed on silently. A
    year or a month is impossible only when all of it is (its span, :func:`date_span`)."""
    today = ctx.today
    birth = None
    if patient.birth_date is not None:
        birth = date_span(patient.birth_date, patient.birth_precision)
    for name, when in (("when", event.when), ("end", event.end)):
        span = None if when is None else when.span
        if when is None or span is None:
            continue
        if span[0] > today:
            raise _FieldError(f"{name}_date", f"date {when.date_text} is in the future")
        if birth is not None and span[1] < birth[0]:
            raise _FieldError(
                f"{name}_date",
                f"date {when.date_text} is before the birth date {patient.birth_text}",
            )
    start, end = event.when, event.end
    first = None if start is None else start.span
    last = None if end is None else end.span
    if start and end and first and last and last[1] < first[0]:
        raise _FieldError(
            "end_date", f"ends ({end.date_text}) before it starts ({start.date_text})"
        )
    follow_up = ctx.library.concept(event.concept).kind == "follow_up"
    if follow_up and start is not None and start.day is not None and start.day < 0:
        raise _FieldError(
            "when_day", f"last follow-up on day {start.day}, before day 0 of {start.anchor}"
        )


# -- the whole file ----------------------------------------------------------------------------


@dataclass
class _Patient:
    record: PatientRecord
    anchor_date: dt.date | None
    row: int
    events: list[Event] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    """event id -> where it was first used."""
    located: dict[str, str] = field(default_factory=dict)
    """With ``keep_sources``: "" (the patient's row) and each event id -> its row's
    :meth:`_Where.location`."""


@dataclass
class _Assembly:
    """Patients and their events as rows are read; rejects keyed by (spec, row) so that they
    come out in file order however the rows were visited."""

    ctx: _Context
    plans: list[_Plan]
    patients: dict[str, _Patient] = field(default_factory=dict)
    by_row: dict[int, str] = field(default_factory=dict)
    """patients-sheet row -> the patient read from it."""
    refused_ids: dict[str, str] = field(default_factory=dict)
    ordinals: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    rejects: list[tuple[int, int, Reject]] = field(default_factory=list)
    """(spec index, row, reject)."""
    seen: set[tuple[Any, ...]] = field(default_factory=set)
    """Each reject's place and reason (one reject per cause)."""
    keep_sources: bool = False
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    """With ``keep_sources``: study id -> :attr:`_Patient.located` of each case given out."""

    def patient(self, where: _Where) -> None:
        cells, columns = _gather(where.plan, where.raw) or ({}, {})
        where = _Where(where.sheet, where.plan, where.row, where.raw, columns)
        try:
            _computed(cells)
            record, anchor_date = _patient(self.ctx, where, cells)
            sid = record.study_id
            if sid in self.patients:
                first = self.patients[sid].row
                raise _FieldError("study_id", f"duplicate patient id (row {first} is kept)")
            self.patients[sid] = _Patient(record, anchor_date, where.row)
            if self.keep_sources:
                self.patients[sid].located[""] = where.location()
            self.by_row[where.row] = sid
        except _FieldError as exc:
            said = str(exc)
            if any(not p.own_sheet for p in self.plans[1:]):
                said += "; the patient and their events on this row are not read"
            self._reject(0, where, exc.field, said)
            reason = f"the patient's row {where.row} was rejected: {exc}"
            sid_cell = cells.get("study_id")
            refused = None if sid_cell is None else _to_text(sid_cell)
            if refused is not None and refused not in self.patients:
                self.refused_ids.setdefault(refused, reason)

    def _reject(self, order: int, where: _Where, fld: str | None, reason: str) -> None:
        """Keep one reject per cause: a cell that two specs read is listed once."""
        reject = where.reject(fld, reason)
        key = (where.sheet.source, where.sheet.sheet, reject.row, reject.column, reject.value,
               reject.reason)  # fmt: skip
        if key not in self.seen:
            self.seen.add(key)
            self.rejects.append((order, where.row, reject))

    def _owner(self, plan: _Plan, where: _Where, cells: Mapping[str, Any]) -> _Patient | None:
        """The patient a row belongs to; None for an event on a rejected patient's own row
        (that row's reject says so)."""
        if not plan.own_sheet:
            sid = self.by_row.get(where.row)
            return None if sid is None else self.patients[sid]
        if "study_id" not in cells:
            raise _FieldError("study_id", "an event row needs a patient id")
        sid = _to_text(cells["study_id"])
        if sid not in self.patients:
            reason = self.refused_ids.get(sid, "no patient with this id in the patient table")
            raise _FieldError("study_id", reason)
        return self.patients[sid]

    def event(self, order: int, where: _Where) -> None:
        plan = where.plan
        gathered = _gather(plan, where.raw)
        if gathered is None:
            return
        cells, columns = gathered
        if not plan.own_sheet:
            if not set(columns) - {"study_id"}:
                return
            columns["study_id"] = self.ctx.mapping.patients.columns["study_id"]
        where = _Where(where.sheet, plan, where.row, where.raw, columns)
        try:
            owner = self._owner(plan, where, cells)
            if owner is None:
                return
            self.ordinals[(plan.name, owner.record.study_id)] += 1
            ordinal = self.ordinals[(plan.name, owner.record.study_id)]
            event_id = _event_id(plan, where, cells, ordinal)
            if event_id in owner.ids:
                raise _FieldError(
                    "event_id", f"event id {event_id!r} already used ({owner.ids[event_id]})"
                )
            _computed(cells)
            event = _event(self.ctx, where, cells, event_id, owner.anchor_date)
            _plausible(self.ctx, event, owner.record)
        except _FieldError as exc:
            self._reject(order, where, exc.field, str(exc))
            return
        owner.ids[event_id] = f"{where.sheet.sheet or where.sheet.source} row {where.row}"
        owner.events.append(event)
        if self.keep_sources:
            owner.located[event_id] = where.location()

    def cases(self) -> list[Case]:
        if self.keep_sources:
            self.sources.update((sid, p.located) for sid, p in self.patients.items())
        return [Case(patient=p.record, events=tuple(p.events)) for p in self.patients.values()]

    def release(self) -> list[Case]:
        """The cases assembled so far, forgetting them and every row read (streaming: each
        patient's rows have all been read when this is called)."""
        done = self.cases()
        self.patients.clear()
        self.by_row.clear()
        self.refused_ids.clear()
        self.ordinals.clear()
        self.seen.clear()
        return done


# -- streaming: each patient's rows together -----------------------------------------------------
#
# A study in long format keeps events in their own sheet or file, where one patient's rows may
# be anywhere. To read patient by patient, each event source is a *feed* that hands over the
# rows of one patient id at a time:
#
# - a CSV file whose rows come grouped by patient in the patient table's order (checked by a
#   first pass over the patient id column only, holding nothing) is read once, alongside
#   the patient table (_MergedFeed): flat memory;
# - any other CSV file is sorted by patient id on disk, in a temporary SQLite database, and
#   each patient's rows are fetched by id (_SortedFeed): flat memory, one more pass;
# - a workbook sheet, which is held in memory anyway, is indexed by patient id (_IndexedFeed).
#
# Rows of no patient (a blank or unknown id) are read after the last patient: they are
# rejected. Rejects are sorted back into file order at the end. Patient ids that repeat in
# the patient table, or a patient id set by a word or a constant of the mapping, make the
# reader hold the whole file (the result depends on every row): those files are read as
# before streaming, by _Assembly over all rows.


class _Feed(Protocol):
    def take(self, sid: str) -> Iterable[tuple[int, Row]]: ...

    def loose(self) -> Iterable[tuple[int, Row]]: ...


def _sid(cell: Any) -> str | None:
    return None if _blank(cell) else _to_text(cell)


class _MergedFeed:
    """A source whose rows come grouped by patient, in the patient table's order."""

    def __init__(self, sheet: _Sheet, column: str) -> None:
        self._rows = sheet.rows()
        self._column = column
        self._next = next(self._rows, None)

    def take(self, sid: str) -> list[tuple[int, Row]]:
        out: list[tuple[int, Row]] = []
        column = self._column
        while self._next is not None:
            cell = self._next[1].get(column)
            if not _blank(cell) and _to_text(cell) != sid:
                break
            out.append(self._next)  # a row without a patient id is rejected where it is
            self._next = next(self._rows, None)
        return out

    def loose(self) -> list[tuple[int, Row]]:
        rest = [] if self._next is None else [self._next]
        rest.extend(self._rows)
        self._next = None
        return rest


class _IndexedFeed:
    """A source held in memory (a workbook sheet), its rows indexed by patient id."""

    def __init__(self, sheet: _Sheet, column: str) -> None:
        self._by_sid: dict[str | None, list[tuple[int, Row]]] = defaultdict(list)
        for number, raw in sheet.rows():
            self._by_sid[_sid(raw.get(column))].append((number, raw))

    def take(self, sid: str) -> list[tuple[int, Row]]:
        return self._by_sid.pop(sid, [])

    def loose(self) -> list[tuple[int, Row]]:
        rest = sorted((r for rows in self._by_sid.values() for r in rows), key=itemgetter(0))
        self._by_sid.clear()
        return rest


class _SortedFeed:
    """A CSV file in any order, sorted by patient id on disk (a temporary SQLite file)."""

    def __init__(self, sheet: _Sheet, column: str, stack: ExitStack) -> None:
        import sqlite3
        import tempfile

        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="fhir-cart-sort-"))
        self._db = sqlite3.connect(Path(folder) / "rows.sqlite")
        stack.callback(self._db.close)
        self._header = sheet.header
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE r (sid TEXT, n INTEGER, cells BLOB, taken INTEGER)")
        index = len(sheet.header) - 1 - sheet.header[::-1].index(column)
        assert sheet.file is not None
        assert sheet.mapping is not None
        self._db.executemany(
            "INSERT INTO r VALUES (?, ?, ?, 0)",
            (
                (_sid(cells[index]) if index < len(cells) else None, n, orjson.dumps(cells))
                for n, cells in _numbered(_csv_rows(sheet.file, sheet.mapping), sheet.header_row)
            ),
        )
        self._db.execute("CREATE INDEX r_sid ON r (sid, n)")

    def _rows(self, found: Iterable[tuple[int, bytes]]) -> list[tuple[int, Row]]:
        header = self._header
        return [(n, dict(zip(header, orjson.loads(cells), strict=False))) for n, cells in found]

    def take(self, sid: str) -> list[tuple[int, Row]]:
        found = self._db.execute("SELECT n, cells FROM r WHERE sid = ? ORDER BY n", (sid,))
        rows = self._rows(found.fetchall())
        if rows:
            self._db.execute("UPDATE r SET taken = 1 WHERE sid = ?", (sid,))
        return rows

    def loose(self) -> list[tuple[int, Row]]:
        found = self._db.execute("SELECT n, cells FROM r WHERE taken = 0 ORDER BY n")
        return self._rows(found.fetchall())


def _numbered(rows: Iterable[list[str]], header_row: int) -> Iterator[tuple[int, list[str]]]:
    for number, cells in enumerate(rows, start=1):
        if number > header_row and not _blank_text(cells):
            yield number, cells


def _plain_sid(plan: _Plan) -> str | None:
    """The column of a spec's patient id when its cells are the ids as written (no word or
    constant of the mapping makes one)."""
    column = plan.spec.columns.get("study_id")
    if column is None or "study_id" in plan.words:
        return None
    if any(fld == "study_id" for fld, _ in plan.defaults):
        return None
    for targets in plan.words.values():
        if any(isinstance(t, dict) and "study_id" in t for t in targets.values()):
            return None
    return column


def _distinct(ids: Iterable[str | None]) -> bool:
    """No patient id twice (8 bytes a patient: hashes, sorted; a collision says no)."""
    hashes = array("q", (hash(i) for i in ids if i is not None))
    if len(hashes) < 100_000:
        return len(set(hashes)) == len(hashes)
    import numpy as np

    ordered = np.frombuffer(hashes, dtype=np.int64).copy()
    del hashes
    ordered.sort()
    return not bool((ordered[1:] == ordered[:-1]).any())


def _grouped(cells: Iterable[Any], patient_ids: Iterable[str | None]) -> bool:
    """Whether every non-blank id of ``cells`` is a patient's and they come grouped, in
    the patient table's order."""
    ids = (i for i in patient_ids if i is not None)
    current = next(ids, None)
    for cell in cells:
        if _blank(cell):
            continue
        sid = _to_text(cell)
        while sid != current:
            current = next(ids, None)
            if current is None:
                return False
    return True


def _feeds(plans: list[_Plan], sheets: list[_Sheet], stack: ExitStack) -> dict[int, _Feed] | None:
    """A feed for each event spec with its own sheet, or None when the file must be held."""
    patient_column = _plain_sid(plans[0])
    if patient_column is None:
        return None
    own = [
        (i, p, s) for i, (p, s) in enumerate(zip(plans, sheets, strict=True)) if i and p.own_sheet
    ]
    columns = {i: _plain_sid(p) for i, p, _ in own}
    if any(c is None for c in columns.values()):
        return None
    patients = sheets[0]
    if not _distinct(_sid(c) for c in patients.column(patient_column)):
        return None
    feeds: dict[int, _Feed] = {}
    for i, _, sheet in own:
        column = columns[i]
        assert column is not None
        if sheet.held is not None:
            feeds[i] = _IndexedFeed(sheet, column)
        elif _grouped(sheet.column(column), map(_sid, patients.column(patient_column))):
            feeds[i] = _MergedFeed(sheet, column)
        else:
            feeds[i] = _SortedFeed(sheet, column, stack)
    return feeds


class StudyStream:
    """A study file read patient by patient: iterate it for the cases (once); after that,
    :attr:`rejects` holds every rejected row or value in file order. :attr:`streamed` says
    whether the file was read patient by patient (else it was held, see above)."""

    def __init__(
        self,
        cases: Iterator[Case],
        rejects: list[Reject],
        unmapped_columns: list[UnmappedColumn],
        streamed: bool,
        sources: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self._cases = cases
        self.rejects = rejects
        self.unmapped_columns = unmapped_columns
        self.streamed = streamed
        self.sources: dict[str, dict[str, str]] = {} if sources is None else sources
        """With ``keep_sources``: study id -> {"" (the patient's row) and event id -> where
        its row is (``file, sheet S, row N``)}, filled as cases are given out."""

    def __iter__(self) -> Iterator[Case]:
        return self._cases


def _stream_mapped(
    path: Path, mapping: StudyMapping, library: ConceptLibrary, keep_sources: bool = False
) -> StudyStream:
    ctx = _Context(mapping, library)
    plans = _plans(ctx)
    with ExitStack() as stack:
        sources = _Sources(path, mapping, stack)
        sheets = [sources.sheet(*plan.sheet_key(mapping)) for plan in plans]
    problems = [p for sheet, plan in zip(sheets, plans, strict=True)
                for p in _header_problems(sheet, plan)]  # fmt: skip
    if problems:
        raise InputError(f"{path.name}: the mapping does not fit the file", problems)
    _check_patient_rows(sheets[0])
    unmapped = _unmapped(sheets, plans, mapping.ignore)
    rejects: list[Reject] = []
    stack = ExitStack()
    try:
        feeds = _feeds(plans, sheets, stack)  # the first passes, before any case
    except BaseException:
        stack.close()
        raise
    acc = _Assembly(ctx, plans, keep_sources=keep_sources)
    cases = _assemble(acc, plans, sheets, feeds, stack, rejects)
    return StudyStream(cases, rejects, unmapped, feeds is not None, acc.sources)


def _assemble(
    acc: _Assembly,
    plans: list[_Plan],
    sheets: list[_Sheet],
    feeds: dict[int, _Feed] | None,
    stack: ExitStack,
    rejects: list[Reject],
) -> Iterator[Case]:
    """The cases; at the end, ``rejects`` gets every reject in file order."""
    with stack:
        if feeds is None:
            for order, (sheet, plan) in enumerate(zip(sheets, plans, strict=True)):
                for row, raw in sheet.rows():
                    where = _Where(sheet, plan, row, raw, {})
                    if order == 0:
                        acc.patient(where)
                    else:
                        acc.event(order, where)
            yield from acc.cases()
        else:
            yield from _assemble_streamed(acc, plans, sheets, feeds)
    acc.rejects.sort(key=itemgetter(0, 1))
    rejects.extend(r for _, _, r in acc.rejects)


def _assemble_streamed(
    acc: _Assembly, plans: list[_Plan], sheets: list[_Sheet], feeds: dict[int, _Feed]
) -> Iterator[Case]:
    patients, plan = sheets[0], plans[0]
    column = _plain_sid(plan)
    assert column is not None
    events = list(enumerate(zip(plans, sheets, strict=True)))[1:]
    for row, raw in patients.rows():
        acc.patient(_Where(patients, plan, row, raw, {}))
        sid = _sid(raw.get(column))
        for order, (spec, sheet) in events:
            if not spec.own_sheet:
                acc.event(order, _Where(patients, spec, row, raw, {}))
            elif sid is not None:
                for number, cells in feeds[order].take(sid):
                    acc.event(order, _Where(sheet, spec, number, cells, {}))
        yield from acc.release()
    for order, (spec, sheet) in events:
        if spec.own_sheet:
            for number, cells in feeds[order].loose():
                acc.event(order, _Where(sheet, spec, number, cells, {}))


def _read_json(path: Path) -> ReadResult:
    result = ReadResult()
    try:
        items = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InputError(f"{path.name}: cannot read JSON ({exc})", []) from exc
    if not isinstance(items, list):
        raise InputError(f"{path.name}: expected a list of cases (the canonical JSON form)", [])
    for index, item in enumerate(items, start=1):
        try:
            result.cases.append(Case.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            column = ".".join(str(part) for part in first["loc"]) or None
            reason = validation_reason(exc)
            result.rejects.append(Reject(path.name, index, column, None, reason, "cases"))
    return result


def stream_study(
    path: Path,
    mapping: StudyMapping | None = None,
    library: ConceptLibrary | None = None,
    *,
    keep_sources: bool = False,
) -> StudyStream:
    """:func:`read_study`, patient by patient: the file is checked against the mapping now
    (ConfigError, InputError as for read_study); cases come as the stream is iterated, and
    its ``rejects`` are complete once it has been iterated to the end. ``keep_sources``:
    the stream's ``sources`` says which row each patient and event came from (the registry's
    Provenance cites them; off by default, as it grows with the file)."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder", [])
    if path.suffix.lower() == ".json":
        result = _read_json(path)
        return StudyStream(iter(result.cases), result.rejects, [], False)
    if mapping is None:
        raise InputError(f"{path.name}: a mapping file is needed for this file type", [])
    return _stream_mapped(path, mapping, library or default_library(mapping), keep_sources)


def read_study(
    path: Path,
    mapping: StudyMapping | None = None,
    library: ConceptLibrary | None = None,
    *,
    keep_sources: bool = False,
) -> ReadResult:
    """Read a study file: .xlsx, .csv (one file or a folder of them) with a mapping, or the
    canonical .json (no mapping needed). ``library`` defaults to the shared concept library
    plus the mapping's own concepts. Raises ConfigError when the mapping does not fit the
    library, InputError when the file cannot be read at all; rows and values that cannot be
    read are returned as rejects."""
    stream = stream_study(path, mapping, library, keep_sources=keep_sources)
    cases = list(stream)
    return ReadResult(
        cases=cases,
        rejects=stream.rejects,
        unmapped_columns=stream.unmapped_columns,
        sources=stream.sources,
    )
