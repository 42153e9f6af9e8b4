"""Cells as values: blanks, dates at their written precision, numbers a double can hold,
yes/no words, text; quantities and UCUM units; how a cell is matched to a word. Pure
functions of the cell (and the mapping's date formats); a bad cell is a ValueError saying
what was expected."""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhir_cart.library.concepts import convert_unit, is_ucum, units_compatible
from fhir_cart.library.study_mapping import normalise_word
from fhir_cart.library.units import unit_text
from fhir_cart.records import DAYS_PER, MONTH_NAMES, Precision, days_of

__all__ = [
    "TimeAmount",
    "fit_unit",
    "parse_band",
    "parse_quantity",
    "parse_time",
    "per_column",
    "word_key",
]

Row = dict[str, Any]
_BOOLEANS = {
    **dict.fromkeys(("yes", "true", "1", "ja", "y", "j", "wahr"), True),
    **dict.fromkeys(("no", "false", "0", "nein", "n", "falsch"), False),
}
_NUM = r"[-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?"
_UNIT = r"(?:10[*^]\d+\S*|[^\d\s<>=.,+\-–—].*|1)"
"""A unit after a number: '%', 'g/m²', '10*6/kg', '10^9/L', 'x10^6/kg', or '1' alone."""
_QUANTITY = re.compile(
    rf"^(?P<cmp><=|>=|<|>)?\s*(?P<num>{_NUM})\s*(?P<plus>\+)?\s*(?P<unit>{_UNIT})?$"
)
_POWER = re.compile(
    r"^(?P<num>[-+]?\d+(?:[.,]\d+)?)?\s*(?:[x×*·]\s*)?10\s*(?:\^|\*|\*\*)\s*(?P<exp>[-+]?\d+)"
)
"""A number in scientific notation as tables write it: '0.4 × 10^6', '10^8', '2x10^7'."""
_CELLS = re.compile(r"^(?:CAR[+\- ]?T?\s*)?(?:T[- ]?)?cells?\b", re.IGNORECASE)
"""'cells', 'CAR-T cells', 'T cells' written as a unit: a count (UCUM unity, '1')."""
_RANGE = re.compile(
    rf"^(?P<low>{_NUM})\s*(?:-|–|—|\.\.|to|bis)\s*(?P<high>{_NUM})\s*(?P<unit>{_UNIT})?$"
)
_NONZERO_DIGIT = re.compile(r"[1-9]")
_EXPONENT = re.compile(r"[eE]")


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
    if type(value) is str:
        return _text_date(value.strip(), formats)
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
    "%d": r"(?P<d>\d{1,2})",
    "%m": r"(?P<m>\d{1,2})",
    "%Y": r"(?P<Y>\d{4})",
    "%y": r"(?P<y>\d{2})",
    "%H": r"\d{1,2}",
    "%M": r"\d{1,2}",
    "%S": r"\d{1,2}",
}


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
    return f"day {day} does not exist in {MONTH_NAMES[month - 1]} {year}"


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
    return unit_text(text)


def _comparators(text: str) -> str:
    return text.replace("≤", "<=").replace("≥", ">=")


def _scientific(text: str) -> tuple[float, str] | None:
    """A number times a power of ten as tables write it, as (number, unit): the power is a
    count unit, '0.4 × 10^6' -> (0.4, '10*6'), '10^8 cells' -> (1, '10*8'), '2.1 x10^6/kg'
    and '0.4 × 10^6 cells/kg' -> (2.1 or 0.4, '10*6/kg'). None when the text does not start
    so ('0.4 10^6/kg', no ×: a unit after a number, read by the plain rule)."""
    match = _POWER.match(text)
    if match is None:
        return None
    head = match["num"]
    between = text[len(head or "") : match.end()]
    if head is not None and not re.search(r"[x×*·]", between):
        return None
    mantissa = _number(head) if head is not None else 1.0
    power = f"10*{int(match['exp'])}"
    rest = text[match.end() :].strip()
    unit = _written_unit(rest) if rest else "1"
    if unit == "1":
        return mantissa, power
    return mantissa, f"{power}{unit}" if unit.startswith("/") else f"{power}.{unit}"


def per_column(written: str | None, declared: tuple[str, ...]) -> str | None:
    """A count written in the cell ('× 10^6', 'cells') in a column whose unit is per
    something ('/kg', '/m2': the header says 'cells/kg') is that count per it: '10*6' in a
    '/kg' column is '10*6/kg'. Any other unit is as written."""
    if written is None or not declared or not declared[0].startswith("/"):
        return written
    if written == "1" or re.fullmatch(r"10\*-?\d+", written):
        return f"{written}{declared[0]}" if written != "1" else declared[0]
    return written


def _written_unit(text: str) -> str:
    """A unit as written, in UCUM spelling; 'cells' (a count) is unity '1', which converts
    to '10*6' (million cells), and 'cells/kg' is '/kg'."""
    cells = _CELLS.match(text)
    if cells is not None:
        rest = text[cells.end() :].strip()
        return _unit_text(rest) if rest else "1"
    return _unit_text(text)


def parse_quantity(cell: Any) -> tuple[str | None, float, str | None]:
    """A cell as (comparator, number, unit as written in UCUM spelling or None):
    '<0.01%' -> ('<', 0.01, '%'), '1,5 g/m²' -> (None, 1.5, 'g/m2'), 1e-4 -> (None, 1e-4,
    None), '4e5' -> (None, 400000, None), '0.4 × 10^6' -> (None, 0.4, '10*6'),
    '10^8 cells' -> (None, 1, '10*8'),
    '15+' (ongoing at 15: at least 15) -> ('>=', 15, None). ValueError when the cell is not
    a number."""
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        return None, float(cell), None
    text = _comparators(str(cell).strip())
    cmp = next((c for c in ("<=", ">=", "<", ">") if text.startswith(c)), None)
    body = text[len(cmp) :].strip() if cmp else text
    sci = _scientific(body)
    if sci is not None:
        return cmp, *sci
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError("expected a number, with a comparator and unit if any ('<0.01 %')")
    unit = _written_unit(match["unit"]) if match["unit"] else None
    cmp = match["cmp"]
    if match["plus"]:
        if cmp is not None:
            raise ValueError(f"both {cmp!r} and '+' given; write one ('15+' or '>=15')")
        cmp = ">="
    return cmp, _number(match["num"]), unit


# -- times in days, weeks and months ------------------------------------------------------

_TIME_UNITS = {
    **dict.fromkeys(("d", "day", "days", "tag", "tage", "tg"), "d"),
    **dict.fromkeys(("wk", "w", "week", "weeks", "wo", "woche", "wochen"), "wk"),
    # not 'm' (metre in UCUM, minute to some): months are 'mo', 'mon', 'month(s)'
    **dict.fromkeys(("mo", "mon", "month", "months", "mo.", "monat", "monate", "mos"), "mo"),
    **dict.fromkeys(("a", "y", "yr", "yrs", "year", "years", "jahr", "jahre"), "a"),
}
_TIME = re.compile(
    r"^(?P<cmp>>=|>)?\s*(?P<num>[-+]?\d+(?:[.,]\d+)?)\s*(?P<plus>\+)?\s*(?P<unit>[^\d\s+][^\d+]*)?(?P<plus2>\+)?$"
)


@dataclass(frozen=True)
class TimeAmount:
    """A time as a table writes it: ``amount`` in UCUM ``unit`` (d, wk, mo, a) after the
    anchor; ``censored``: written '15+' (or '>15', '≥15'), the event had not happened by then
    (the patient was last seen event-free at that time)."""

    amount: float
    unit: str
    censored: bool = False

    @property
    def days(self) -> int:
        """The whole day the amount stands for (:func:`fhir_cart.records.days_of`: a month
        is 30.4375 days, 15 months is day 457)."""
        return days_of(self.amount, self.unit)


def parse_time(cell: Any, unit: str | None = None) -> TimeAmount:
    """A time cell in days, weeks or months: '28', '6 mo', '3 weeks', '15+' (censored at 15),
    '≥ 12 months' (censored at 12). ``unit``: the column's unit when the cell states none
    (default days). ValueError for anything else, '<' included (a time known only to be
    below a bound is not an event time)."""
    if type(cell) is str:  # a study repeats its days: each text read once (errors are not kept)
        return _text_time(cell, unit)
    return _parse_time(cell, unit)


@lru_cache(maxsize=16384)
def _text_time(cell: str, unit: str | None) -> TimeAmount:
    return _parse_time(cell, unit)


def _parse_time(cell: Any, unit: str | None) -> TimeAmount:
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        amount, written, censored = float(cell), None, False
    else:
        text = _comparators(str(cell).strip())
        match = _TIME.match(text)
        if match is None or (match["plus"] and match["plus2"]):
            raise ValueError(
                "expected a time such as '28', '6 mo', '3 weeks' or '15+' (censored at 15)"
            )
        amount = _number(match["num"])
        written = match["unit"].strip().lower() if match["unit"] else None
        censored = bool(match["cmp"] or match["plus"] or match["plus2"])
    chosen = unit or "d"
    if written is not None:
        found = _TIME_UNITS.get(written)
        if found is None:
            raise ValueError(f"unit {written!r} is not a time unit; use d, wk, mo or a")
        chosen = found
    if chosen not in DAYS_PER:
        raise ValueError(f"unit {chosen!r} is not a time unit; use d, wk, mo or a")
    if chosen == "d" and not amount.is_integer():
        raise ValueError(f"{amount:g} is not a whole day; write days as whole numbers")
    return TimeAmount(amount, chosen, censored)


# -- bands --------------------------------------------------------------------------------

_BAND = re.compile(
    r"^(?P<word>[^\d<>≤≥+\-]*?)\s*(?P<low>\d+)\s*(?:-|–|—|/|or|oder|to|bis|\.\.)\s*(?P<high>\d+)\s*(?P<tail>[^\d]*)$"
)
_ONE = re.compile(r"^(?P<word>[^\d<>≤≥+\-]*?)\s*(?P<num>\d+)\s*(?P<tail>[^\d]*)$")


def parse_band(cell: Any) -> int | tuple[int, int]:
    """A whole-number cell that may be a band, with a word before or after it: '3' -> 3,
    'grade 3–4' -> (3, 4), '1-2 cycles' -> (1, 2), '3/4' -> (3, 4), '3 or 4' -> (3, 4).
    A band is never narrowed to one number (not its midpoint, not an end). ValueError for
    anything else and for a band whose low end is not below its high end."""
    if isinstance(cell, bool):
        raise ValueError("expected a whole number or a band such as '3-4'")
    if isinstance(cell, int | float):
        if not float(cell).is_integer():
            raise ValueError("expected a whole number")
        return int(cell)
    text = str(cell).strip()
    try:
        return _to_int(text)  # '3', '3.0', '3,0' as before
    except _Unholdable:
        raise
    except ValueError:
        pass
    band = _BAND.match(text)
    if band is not None:
        low, high = int(band["low"]), int(band["high"])
        if low >= high:
            raise ValueError(f"a band's low end {low} is not below its high end {high}")
        return low, high
    one = _ONE.match(text)
    if one is None:
        raise ValueError("expected a whole number or a band such as '3-4' or 'grade 3–4'")
    return int(one["num"])


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
