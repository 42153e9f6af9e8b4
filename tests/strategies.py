"""Hypothesis strategies generating valid open records over the concept library.

``cases()`` draws one valid :class:`~fhir_cart.records.Case`: a patient with some patient
attributes, and events of concepts drawn from the library (shared, or one given), each with
a value of its concept's value type (numbers in a unit the reader keeps, words of the value
set, ranges, booleans, text), some of the attributes its concept allows with valid values,
and times as a date, a relative day, a window, or a date with a day; ``origin`` only as
MedicationRequest on drug concepts. Ids and free text look like numbers or formulas at times
('007', '1e5', '=1+1'). ``cohorts()`` draws several cases with distinct study ids. Numbers
keep at most 12 significant digits (Excel keeps 15).

Other tests (the FHIR mappers') use ``cases()``/``cohorts()``/``events()`` too: keep them
public and valid for the reader (tests/unit/study/test_writers.py reads every draw back).
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

from hypothesis import strategies as st

from fhir_cart import records as r
from fhir_cart.library.concepts import (
    AttributeDef,
    ConceptDef,
    ConceptLibrary,
    ValueDef,
    load_concepts,
)
from fhir_cart.library.terminology import load_terminology
from fhir_cart.study import word_key

__all__ = [
    "attribute_values",
    "cases",
    "cohorts",
    "dates",
    "events",
    "free_text",
    "ids",
    "library",
    "patients",
    "values",
    "whens",
]


@cache
def library() -> ConceptLibrary:
    """The shared concept library (built once)."""
    return load_concepts(load_terminology())


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-\.]{0,11}", fullmatch=True) | st.sampled_from(
    ["007", "1e5", "1.0", "12", "P-01"]
)
free_text = (
    st.text("ABCTBIGyé +/-,;'\"=()0123456789", min_size=1, max_size=30).map(str.strip).filter(bool)
)
# plausible times (the reader rejects dates in the future or before birth): events from 1990
# to 2025, patients born before 1990
dates = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2025, 12, 31))
birth_dates = st.dates(min_value=dt.date(1930, 1, 1), max_value=dt.date(1989, 12, 31))
days = st.integers(min_value=-400, max_value=4000)
# a date as a source may give it: mostly a day, else only its month or year
precisions = st.sampled_from(["day", "day", "month", "year"])


def _at(date: dt.date, precision: str) -> dt.date:
    """The first day of the date's month or year (how a partial date is held)."""
    if precision == "year":
        return date.replace(month=1, day=1)
    return date.replace(day=1) if precision == "month" else date


def _sig(x: float) -> float:
    """At most 12 significant digits, as labs report them (Excel keeps 15)."""
    return float(f"{x:.12g}")


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def _number(
    low: float | None, high: float | None, unit: str | None = None
) -> st.SearchStrategy[float]:
    top = high if high is not None else 1e6
    if unit == "%":
        top = min(top, 100.0)
    bottom = low if low is not None else 0.0
    return st.just(bottom) | st.floats(min_value=bottom, max_value=top).map(_sig).filter(
        lambda x: bottom <= x <= top
    )


def _open_text(words: tuple[str, ...]) -> st.SearchStrategy[str]:
    known = {word_key(w) for w in words}
    return free_text.filter(lambda t: word_key(t) not in known)


@st.composite
def whens(draw: st.DrawFn, lib: ConceptLibrary | None = None) -> r.When:
    """A time as records.When allows: date, day + anchor, window + anchor, date + day."""
    anchors = st.sampled_from(sorted((lib or library()).data.concepts))
    form = draw(st.sampled_from(["date", "day", "both", "window"]))
    date = draw(dates) if form in ("date", "both") else None
    day = draw(days) if form in ("day", "both") else None
    earliest = latest = None
    if "window" in form:
        earliest, latest = sorted(draw(st.lists(days, min_size=2, max_size=2)))
        side = draw(st.sampled_from(["both", "before", "after"]))
        earliest = None if side == "before" else earliest
        latest = None if side == "after" else latest
    anchor = draw(anchors) if day is not None or "window" in form else None
    precision = draw(precisions) if date is not None else "day"
    date = None if date is None else _at(date, precision)
    return r.When(
        date=date,
        precision=precision,
        day=day,
        anchor=anchor,
        earliest_day=earliest,
        latest_day=latest,
    )


def _unit(draw: st.DrawFn, value: ValueDef) -> str | None:
    if not value.units:
        return None
    return value.units[0] if value.convert else draw(st.sampled_from(value.units))


@st.composite
def _quantity(draw: st.DrawFn, value: ValueDef) -> r.Value:
    unit = _unit(draw, value)
    number = draw(_number(value.min, value.max, unit))
    if value.type == "integer":
        number = float(int(number))
    comparator = draw(_opt(st.sampled_from(r.COMPARATORS))) if value.type != "integer" else None
    return r.Value(number=number, unit=unit, comparator=comparator)


@st.composite
def values(
    draw: st.DrawFn, concept: ConceptDef, lib: ConceptLibrary | None = None
) -> r.Value | None:
    """A value of the concept's value type (None sometimes, and always for type none)."""
    value = concept.value
    words = (lib or library()).words(value.value_set) if value.value_set else ()
    kind = value.type
    if kind == "none" or draw(st.integers(0, 5)) == 0:
        return None
    if kind in ("quantity", "integer"):
        return draw(_quantity(value))
    if kind == "coded":
        if value.open and draw(st.booleans()):
            return r.Value(text=draw(_open_text(words)))
        return r.Value(code=draw(st.sampled_from(words)))
    if kind == "quantity_or_coded":
        number = draw(_opt(_quantity(value)))
        code = draw(st.sampled_from(words) if number is None else _opt(st.sampled_from(words)))
        return r.Value(code=code) if number is None else number.model_copy(update={"code": code})
    if kind == "range":
        unit = _unit(draw, value)
        low, high = sorted(
            draw(st.lists(_number(value.min, value.max, unit), min_size=2, max_size=2))
        )
        return r.Value(low=low, high=high, unit=unit)
    if kind == "boolean":
        return r.Value(boolean=draw(st.booleans()))
    return r.Value(text=draw(free_text))


@st.composite
def attribute_values(
    draw: st.DrawFn, attr: AttributeDef, lib: ConceptLibrary | None = None
) -> r.Scalar:
    """A valid scalar of an attribute (quantity: a number in its first unit)."""
    if attr.type == "coded":
        assert attr.value_set is not None
        words = (lib or library()).words(attr.value_set)
        if attr.open and draw(st.booleans()):
            return draw(_open_text(words))
        return draw(st.sampled_from(words))
    if attr.type == "integer":
        return draw(st.integers(int(attr.min or 0), int(attr.max if attr.max is not None else 999)))
    if attr.type in ("number", "quantity"):
        return draw(_number(attr.min, attr.max))
    if attr.type == "boolean":
        return draw(st.booleans())
    if attr.type == "date":
        return draw(dates).isoformat()
    return draw(free_text)


@st.composite
def events(
    draw: st.DrawFn, event_id: str, concept: str | None = None, lib: ConceptLibrary | None = None
) -> r.Event:
    """One valid event of ``concept`` (default: any concept of the library)."""
    lib = lib or library()
    key = concept or draw(st.sampled_from(sorted(lib.data.concepts)))
    definition = lib.concept(key)
    chosen = (
        draw(st.lists(st.sampled_from(definition.attributes), unique=True))
        if definition.attributes
        else []
    )
    when, end = draw(_opt(whens(lib))), draw(_opt(whens(lib)))
    if when and end and when.date and end.date and end.date < when.date:  # ends before it starts
        when, end = end, when
    if definition.kind == "follow_up" and when and when.day is not None and when.day < 0:
        when = when.model_copy(update={"day": -when.day})  # no follow-up before day 0
    return r.Event(
        event_id=event_id,
        concept=key,
        when=when,
        end=end,
        value=draw(values(definition, lib)),
        attributes={a: draw(attribute_values(lib.attribute(a), lib)) for a in chosen},
        source_text=draw(_opt(free_text)),
        origin=draw(_opt(st.just("MedicationRequest")))
        if definition.kind == "medication"
        else None,
    )


def _birth(date: dt.date | None, precision: str) -> dict[str, Any]:
    if date is None:
        return {}
    return {"birth_date": _at(date, precision), "birth_precision": precision}


@st.composite
def patients(
    draw: st.DrawFn, centre: str | None = None, lib: ConceptLibrary | None = None
) -> r.PatientRecord:
    lib = lib or library()
    chosen = draw(st.lists(st.sampled_from(sorted(lib.data.patient_attributes)), unique=True))
    return r.PatientRecord(
        study_id=draw(ids),
        centre=centre or draw(st.from_regex(r"[a-z0-9][a-z0-9\-]{0,8}", fullmatch=True)),
        sex=draw(_opt(st.sampled_from(["female", "male", "other", "unknown"]))),
        **_birth(draw(_opt(birth_dates)), draw(precisions)),
        attributes={a: draw(attribute_values(lib.attribute(a), lib)) for a in chosen},
    )


@st.composite
def cases(draw: st.DrawFn, centre: str | None = None, lib: ConceptLibrary | None = None) -> r.Case:
    """One valid case: a patient and up to six events with ids unique in the case."""
    names = draw(st.lists(ids, max_size=6, unique=True))
    return r.Case(
        patient=draw(patients(centre, lib)),
        events=tuple(draw(events(name, lib=lib)) for name in names),
    )


@st.composite
def cohorts(
    draw: st.DrawFn, centre: str = "gen", lib: ConceptLibrary | None = None
) -> list[r.Case]:
    """Several cases of one centre with distinct study ids."""
    items = draw(
        st.lists(cases(centre, lib), min_size=1, max_size=4, unique_by=lambda c: c.patient.study_id)
    )
    return items
