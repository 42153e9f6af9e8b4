"""The canonical case-series record: the hub every reader produces and every writer consumes.

The record is *open*: nothing here knows which study, drug or timepoint it carries. One
:class:`Case` per patient holds the patient's demographics and a list of :class:`Event`\\ s.
Each event names a concept of the concept library (``mappings/concepts.yaml``, plus any a
study adds), a :class:`Value`, attributes the concept allows (cycle, intent, method,
specimen, grade, ...), the original source text, and a :class:`When`.

Which concepts, attributes and words exist is data (:mod:`fhir_cart.concepts`); this module
only checks the shape of a record. Identity: ``event_id`` is a stable key made from the
patient and the source row or declared key columns, never from clinical content, so a
corrected value updates the same FHIR resource.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "COMPARATORS",
    "Case",
    "Event",
    "PatientRecord",
    "Scalar",
    "Value",
    "When",
]

Scalar = str | int | float | bool
Sex = Literal["female", "male", "other", "unknown"]
Comparator = Literal["<", "<=", ">=", ">"]
COMPARATORS: tuple[str, ...] = ("<", "<=", ">=", ">")

_MODEL = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
_KEY = r"^[a-z][a-z0-9_]*$"
_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-\.]+$")


class When(BaseModel):
    """When an event happened, as precisely as the source says.

    - an absolute ``date``;
    - a ``day`` relative to an ``anchor`` (a concept key: the patient's first event of that
      concept is day 0), for example day +28 after ``cart_infusion``;
    - a window relative to an anchor: ``earliest_day``/``latest_day`` (either may be open),
      for example "before HSCT" is ``latest_day=-1, anchor=hsct``;
    - a date and a relative day together (both kept).

    An event whose time is unknown has ``when=None``.
    """

    model_config = _MODEL

    date: dt.date | None = None
    day: int | None = Field(default=None, ge=-36500, le=36500)
    anchor: str | None = Field(default=None, pattern=_KEY, max_length=64)
    earliest_day: int | None = Field(default=None, ge=-36500, le=36500)
    latest_day: int | None = Field(default=None, ge=-36500, le=36500)

    @model_validator(mode="after")
    def _check(self) -> Self:
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
        return self

    @property
    def is_window(self) -> bool:
        return self.earliest_day is not None or self.latest_day is not None


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
    attributes: dict[str, Scalar] = Field(default_factory=dict)
    """Patient attributes the concept library declares (e.g. ``age_at_diagnosis``)."""


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
