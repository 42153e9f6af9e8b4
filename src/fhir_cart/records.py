"""The canonical case-series record: the hub every reader produces and every writer consumes.

The record is *open*: nothing here knows which study, drug or timepoint it carries. One
:class:`Case` per patient holds the patient's demographics and a list of :class:`Event`\\ s.
Each event names a concept of the concept library (``mappings/concepts.yaml``, plus any a
study adds), a :class:`Value`, attributes the concept allows (cycle, intent, method,
specimen, grade, ...), the original source text, and a :class:`When`.

Which concepts, attributes and words exist is data (:mod:`fhir_cart.library.concepts`); this module
only checks the shape of a record. Identity: ``event_id`` is a stable key made from the
patient and the source row or declared key columns, never from clinical content, so a
corrected value updates the same FHIR resource.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

__all__ = [
    "COMPARATORS",
    "DAYS_PER",
    "MONTH_NAMES",
    "Case",
    "Event",
    "PatientRecord",
    "Precision",
    "Scalar",
    "Value",
    "When",
    "band_of",
    "band_text",
    "date_span",
    "date_text",
    "parse_partial_date",
]

Scalar = str | int | float | bool
Sex = Literal["female", "male", "other", "unknown"]
Comparator = Literal["<", "<=", ">=", ">"]
COMPARATORS: tuple[str, ...] = ("<", "<=", ">=", ">")

_MODEL = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
_KEY = r"^[a-z][a-z0-9_]*$"
_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-\.]+$")

Precision = Literal["year", "month", "day"]
"""How much of a date the source states: FHIR ``date``/``dateTime`` may be ``YYYY`` or
``YYYY-MM`` (R4 datatypes.html#date). A partial date is held as the first day of its year or
month *together with* its precision, and every reader of it uses the span
(:func:`date_span`), never that first day alone."""

_PARTIAL = re.compile(r"(\d{4})(?:-(\d{2}))?")
_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@functools.lru_cache(maxsize=8192)  # a cohort's dates repeat; what it returns is immutable
def parse_partial_date(text: str) -> tuple[dt.date, Precision]:
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` (a dateTime's time and zone after the day are
    ignored: the date is the one written) as (first day, precision). ValueError otherwise,
    e.g. for month 13 or 30 February."""
    if len(text) >= 10:
        return _day(text), "day"
    found = _PARTIAL.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is not a date (YYYY, YYYY-MM or YYYY-MM-DD)")
    year, month = int(found.group(1)), found.group(2)
    if month is None:
        return dt.date(year, 1, 1), "year"
    _month_exists(text, int(month))
    return dt.date(year, int(month), 1), "month"


def _day(text: str) -> dt.date:
    """``YYYY-MM-DD``, perhaps followed by ``T`` and a time."""
    found = _DAY.fullmatch(text[:10])
    if found is None or (len(text) > 10 and text[10] != "T"):
        raise ValueError(f"{text!r} is not a date (YYYY, YYYY-MM or YYYY-MM-DD)")
    year, month, day = (int(part) for part in found.groups())
    _month_exists(text, month)
    try:
        return dt.date(year, month, day)
    except ValueError:
        where = f"{MONTH_NAMES[month - 1]} {year}"
        raise ValueError(f"{text!r} is not a date: day {day} does not exist in {where}") from None


def _month_exists(text: str, month: int) -> None:
    if not 1 <= month <= 12:
        raise ValueError(f"{text!r} is not a date: month {month} does not exist")


def date_text(date: dt.date, precision: Precision = "day") -> str:
    """ISO text at the precision: ``2012``, ``2012-05`` or ``2012-05-03``."""
    if precision == "year":
        return f"{date.year:04d}"
    if precision == "month":
        return f"{date.year:04d}-{date.month:02d}"
    return date.isoformat()


def date_span(date: dt.date, precision: Precision = "day") -> tuple[dt.date, dt.date]:
    """The first and last day the date may stand for (the same day at day precision)."""
    if precision == "year":
        return date, dt.date(date.year, 12, 31)
    if precision == "month":
        following = dt.date(date.year + date.month // 12, date.month % 12 + 1, 1)
        return date, following - dt.timedelta(days=1)
    return date, date


def _check_partial(date: dt.date | None, precision: Precision, name: str) -> None:
    if precision == "day":
        return
    if date is None:
        raise ValueError(f"a {precision} precision needs a {name}")
    if date.day != 1 or (precision == "year" and date.month != 1):
        raise ValueError(f"a {name} of {precision} precision is the first day of its {precision}")


def _partial_input(data: Any, name: str, precision_name: str) -> Any:
    """Input ``{name: "2012"}`` or ``"2012-05"`` (as the JSON dump writes a partial date)
    read as the first day with its precision."""
    if isinstance(data, dict):
        value = data.get(name)
        if isinstance(value, str) and len(value.strip()) < 10:
            date, precision = parse_partial_date(value.strip())
            given = data.get(precision_name, precision)
            if given != precision:
                raise ValueError(f"{name} {value!r} is of {precision} precision, not {given}")
            return {**data, name: date, precision_name: precision}
    return data


DAYS_PER: dict[str, float] = {"d": 1.0, "wk": 7.0, "mo": 30.4375, "a": 365.25}
"""Days in each UCUM time unit a table writes times in: a month is the calendar-neutral
30.4375 days (365.25 / 12), a year 365.25 days."""
StatedUnit = Literal["wk", "mo", "a"]


def days_of(amount: float, unit: str) -> int:
    """The whole day ``amount`` ``unit`` stands for, half days rounded away from zero
    (15 mo = 456.5625 days is day 457)."""
    exact = amount * DAYS_PER[unit]
    return int(math.copysign(math.floor(abs(exact) + 0.5), exact))


_BAND_TEXT = re.compile(r"^(\d+)-(\d+)$")


def band_text(low: int, high: int) -> str:
    """A band as the record keeps it in a whole-number attribute: '3-4'."""
    return f"{low}-{high}"


def band_of(value: Any) -> tuple[int, int] | None:
    """(low, high) of a band attribute value ('3-4'); None for anything else."""
    found = _BAND_TEXT.match(value) if isinstance(value, str) else None
    return None if found is None else (int(found[1]), int(found[2]))


def _is_none(value: object) -> bool:
    return value is None


def _is_day(precision: str) -> bool:
    """Day precision is left out of dumps, so day-precise records dump exactly as before."""
    return precision == "day"


class When(BaseModel):
    """When an event happened, as precisely as the source says.

    - an absolute ``date``;
    - a ``day`` relative to an ``anchor`` (a concept key: the patient's first event of that
      concept is day 0), for example day +28 after ``cart_infusion``;
    - a window relative to an anchor: ``earliest_day``/``latest_day`` (either may be open),
      for example "before HSCT" is ``latest_day=-1, anchor=hsct``;
    - a date and a relative day together (both kept).

    A ``date`` may be partial (``precision`` year or month: the source says only "2019" or
    "May 2019"); it is then the first day of that year or month, and :attr:`span` is what it
    stands for.

    An event whose time is unknown has ``when=None``.
    """

    model_config = _MODEL

    date: dt.date | None = None
    precision: Precision = Field(default="day", exclude_if=_is_day)
    day: int | None = Field(default=None, ge=-36500, le=36500)
    anchor: str | None = Field(default=None, pattern=_KEY, max_length=64)
    earliest_day: int | None = Field(default=None, ge=-36500, le=36500)
    latest_day: int | None = Field(default=None, ge=-36500, le=36500)
    stated: float | None = Field(default=None, allow_inf_nan=False, exclude_if=_is_none)
    """The relative time as the source wrote it when that was weeks, months or years
    (``stated`` ``stated_unit``, e.g. 15 mo); ``day`` is then that time in whole days
    (:func:`days_of`: a month is 30.4375 days), kept beside it."""
    stated_unit: StatedUnit | None = Field(default=None, exclude_if=_is_none)

    @model_validator(mode="before")
    @classmethod
    def _partial(cls, data: Any) -> Any:
        return _partial_input(data, "date", "precision")

    @field_serializer("date", when_used="json-unless-none")
    def _date_json(self, value: dt.date) -> str:
        return date_text(value, self.precision)

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_partial(self.date, self.precision, "date")
        window = self.earliest_day is not None or self.latest_day is not None
        if self.date is None and self.day is None and not window:
            raise ValueError("needs a date, a relative day or a window")
        if (self.day is not None or window) and self.anchor is None:
            raise ValueError("a relative day or window needs its anchor event")
        if self.anchor is not None and self.day is None and not window:
            raise ValueError("an anchor needs a relative day or a window")
        if self.day is not None and window:
            raise ValueError("give either a relative day or a window, not both")
        if (
            self.earliest_day is not None
            and self.latest_day is not None
            and self.earliest_day > self.latest_day
        ):
            raise ValueError("a window's earliest day is after its latest day")
        if (self.stated is None) != (self.stated_unit is None):
            raise ValueError("a stated time needs both its amount and its unit")
        if (
            self.stated is not None
            and self.stated_unit is not None
            and self.day != days_of(self.stated, self.stated_unit)
        ):
            shown = f"{self.stated:g} {self.stated_unit}"
            days = days_of(self.stated, self.stated_unit)
            raise ValueError(f"{shown} is day {days}, not day {self.day}")
        return self

    @property
    def is_window(self) -> bool:
        return self.earliest_day is not None or self.latest_day is not None

    @property
    def is_partial(self) -> bool:
        """Whether the date is only a year or a month."""
        return self.precision != "day"

    @property
    def span(self) -> tuple[dt.date, dt.date] | None:
        """First and last day the date stands for (None: no date)."""
        return None if self.date is None else date_span(self.date, self.precision)

    @property
    def date_text(self) -> str | None:
        """The date as ISO text at its precision (``2019``, ``2019-05``, ``2019-05-03``)."""
        return None if self.date is None else date_text(self.date, self.precision)


class Value(BaseModel):
    """An event's value: a quantity (``number`` in UCUM ``unit``, with a ``comparator`` for
    results such as '<0.01 %'), a range (``low``-``high``), a ``code`` (a word of the
    concept's value set), a ``boolean`` or free ``text``. A code may stand beside a number
    (an MRD of 0.005 % read as 'positive, below quantification')."""

    model_config = _MODEL

    number: float | None = Field(default=None, allow_inf_nan=False)
    unit: str | None = Field(default=None, min_length=1, max_length=40)
    comparator: Comparator | None = None
    low: float | None = Field(default=None, allow_inf_nan=False)
    high: float | None = Field(default=None, allow_inf_nan=False)
    code: str | None = Field(default=None, min_length=1, max_length=64)
    boolean: bool | None = None
    text: str | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _check(self) -> Self:
        is_range = self.low is not None or self.high is not None
        kinds = [self.number is not None, is_range, self.boolean is not None, self.text is not None]
        if sum(kinds) > 1:
            raise ValueError("a value is one of a number, a range, a boolean or a text")
        if not any(kinds) and self.code is None:
            raise ValueError("an empty value; leave the value out instead")
        if self.unit is not None and self.number is None and not is_range:
            raise ValueError("a unit needs a number or a range")
        if self.comparator is not None and self.number is None:
            raise ValueError("a comparator needs a number")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError("a range's low end is above its high end")
        return self

    @property
    def is_range(self) -> bool:
        return self.low is not None or self.high is not None


class Event(BaseModel):
    """One dated (or undated) fact about a patient: a drug given, a procedure, a result."""

    model_config = _MODEL

    event_id: str = _ID
    concept: str = Field(pattern=_KEY, max_length=64)
    when: When | None = None
    end: When | None = None
    value: Value | None = None
    attributes: dict[str, Scalar] = Field(default_factory=dict)
    source_text: str | None = Field(default=None, max_length=1000)
    """The source's own words for this event (e.g. 'low pos', '1,5 g/m²'), kept as read."""
    origin: str | None = Field(default=None, max_length=64)
    """FHIR resource type an event was pulled from when it is not the concept's own
    (e.g. ``MedicationRequest`` for a drug concept)."""
    assumed: str | None = Field(default=None, min_length=1, max_length=1000)
    """Why the mapping supplied a time or value the source does not state (the mapping's
    ``assumed:``); None: everything came from the source."""
    status: str | None = Field(default=None, max_length=200)
    """What a pull flags about the source resource (``preliminary``, ``unconfirmed``,
    ``stopped``, ``read from text``; ``; ``-separated), empty when it is the plain
    final/completed/confirmed one (mappings/statuses.yaml)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name, value in self.attributes.items():
            if not name or not name.replace("_", "a").isalnum() or not name[0].isalpha():
                raise ValueError(f"attribute name {name!r} is not a key (a-z, 0-9, _)")
            if isinstance(value, float) and value != value:  # NaN
                raise ValueError(f"attribute {name} is not a number")
        return self


class PatientRecord(BaseModel):
    """A patient's identity and demographics; everything clinical is an :class:`Event`
    (diagnosis, death and last follow-up included)."""

    model_config = _MODEL

    study_id: str = _ID
    centre: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9\-]*$")
    sex: Sex | None = None
    birth_date: dt.date | None = None
    birth_precision: Precision = Field(default="day", exclude_if=_is_day)
    """Year or month: the source gives only the birth year or month (``birth_date`` is then
    its first day), as de-identified data usually does."""
    attributes: dict[str, Scalar] = Field(default_factory=dict)
    """Patient attributes the concept library declares (e.g. ``age_at_diagnosis``)."""

    @model_validator(mode="before")
    @classmethod
    def _partial(cls, data: Any) -> Any:
        return _partial_input(data, "birth_date", "birth_precision")

    @field_serializer("birth_date", when_used="json-unless-none")
    def _birth_json(self, value: dt.date) -> str:
        return date_text(value, self.birth_precision)

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_partial(self.birth_date, self.birth_precision, "birth date")
        return self

    @property
    def birth_text(self) -> str | None:
        """The birth date as ISO text at its precision."""
        if self.birth_date is None:
            return None
        return date_text(self.birth_date, self.birth_precision)


class Case(BaseModel):
    """One patient and every event of theirs."""

    model_config = _MODEL

    patient: PatientRecord
    events: tuple[Event, ...] = ()

    @model_validator(mode="after")
    def _unique_event_ids(self) -> Self:
        seen: set[str] = set()
        for event in self.events:
            if event.event_id in seen:
                raise ValueError(f"duplicate event id {event.event_id!r}")
            seen.add(event.event_id)
        return self

    def of(self, *concepts: str) -> list[Event]:
        """This patient's events of the given concepts, in record order."""
        wanted = set(concepts)
        return [e for e in self.events if e.concept in wanted]
