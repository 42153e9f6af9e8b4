"""The per-resource shortcuts of `fhir-cart tables` and pull (issue 24) give what the plain
code gives: remembered classifications and identifier systems, a CSV row written in one
pass, an event's row written field by field, the account added in place. Each is compared
with the code it stands for, on plain and on malformed input."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from typing import Any

import pytest
from pydantic import ValidationError

from fhir_cart.csv_safety import SafeCsvWriter
from fhir_cart.mappers import from_elements
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_elements import _made, _made_key
from fhir_cart.mappers.from_fhir import PatientByPatient, cases_from_fhir
from fhir_cart.records import Event, Value, When
from fhir_cart.sync.accounting import TypeCount, add_places, by_type
from fhir_cart.writers import EVENT_COLUMNS, _csv_cell, _event_row

# -- one CSV row in one pass --------------------------------------------------------------


class _Text(str):
    """A str subclass (goes the general way, as any non-str value does)."""


COLUMNS = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
ROWS: list[dict[str, Any]] = [
    {"a": "plain", "c": 3, "e": -2.5},
    {"b": "=1+1", "d": "'=x", "f": "''", "g": "'tis", "h": "-3", "i": "\tx", "j": "\rx"},
    {"a": None, "b": True, "c": False, "d": dt.date(2020, 1, 2), "e": "", "f": "@cmd"},
    {"j": _Text("+SUM(1;2)"), "a": _Text("ok"), "c": 0, "d": 0.0},
    {},
]


def _line(write: Any) -> str:
    handle = io.StringIO()
    write(SafeCsvWriter(handle))
    return handle.getvalue()


@pytest.mark.parametrize("row", ROWS)
def test_a_row_written_in_one_pass_is_the_sparse_rows_line(row: dict[str, Any]) -> None:
    where = {c: i for i, c in enumerate(COLUMNS)}
    sparse = [(where[c], _csv_cell(v)) for c, v in row.items()]
    before = _line(lambda w: w.write_sparse(len(where), sparse))
    assert _line(lambda w: w.write_named(where, row, _csv_cell)) == before
    assert before.count(",") == len(COLUMNS) - 1


def test_a_formula_is_escaped_in_one_pass_too() -> None:
    where = {c: i for i, c in enumerate(COLUMNS)}
    line = _line(lambda w: w.write_named(where, {"a": "=1+1", "b": _Text("@x")}, _csv_cell))
    assert next(csv.reader(io.StringIO(line)))[:2] == ["'=1+1", "'@x"]


def test_an_unknown_column_is_an_error_in_one_pass_as_before() -> None:
    where = {"a": 0}
    with pytest.raises(KeyError):
        _line(lambda w: w.write_named(where, {"zz": "x"}, _csv_cell))


# -- an event's row -------------------------------------------------------------------------


def _full_event() -> Event:
    return Event(
        event_id="e1",
        concept="mrd",
        when=When(date=dt.date(2020, 5, 1), precision="month", day=3, anchor="cart_infusion"),
        end=When(earliest_day=1, latest_day=9, anchor="cart_infusion"),
        value=Value(number=0.5, unit="%", comparator="<", code="negative"),
        source_text="low pos",
        origin="Observation",
        assumed="day given",
        status="preliminary",
        attributes={"method": "flow", "origin": "kept"},
    )


def test_an_events_row_has_the_columns_in_their_order() -> None:
    row = _event_row("S1", _full_event())
    fixed = [c for c in EVENT_COLUMNS if c in row]
    assert list(row)[: len(fixed)] == fixed
    assert row["when_date"] == "2020-05"  # a month: its text, never its first day
    assert row["end_earliest_day"] == 1
    assert row["end_latest_day"] == 9
    assert row["origin"] == "kept"  # an attribute of a fixed column's name wins, as before
    assert row["method"] == "flow"
    window = Value(low=1.0, high=2.0, unit="mg")
    other = _event_row("S1", Event(event_id="e2", concept="dose", value=window))
    assert other == {
        "study_id": "S1",
        "event_id": "e2",
        "concept": "dose",
        "value_unit": "mg",
        "value_low": 1.0,
        "value_high": 2.0,
    }


def test_every_fixed_event_column_can_be_filled() -> None:
    """The row names every time and value column (a column added to the table and not to
    the row would stay empty without a word)."""
    value = _full_event()
    boolean = Event(event_id="e3", concept="x", value=Value(boolean=True))
    text = Event(
        event_id="e4",
        concept="x",
        value=Value(text="t"),
        when=When(earliest_day=1, latest_day=2, anchor="a"),
        end=When(date=dt.date(2020, 1, 1), day=1, anchor="a"),
    )
    filled = set(_event_row("S", value)) | set(_event_row("S", boolean))
    filled |= set(_event_row("S", text))
    missing = {"value_high", "value_low"}  # a range and a number cannot stand together
    window = Event(event_id="e5", concept="x", value=Value(low=1.0, high=2.0))
    filled |= set(_event_row("S", window))
    assert set(EVENT_COLUMNS) - filled - missing == set()


# -- the account --------------------------------------------------------------------------


FOUND = {
    ("Observation", "o1"): ["events"],
    ("Observation", "o2"): ["other"],
    ("Patient", "p1"): ["patients"],
    ("Specimen", "s1"): ["used"],
    ("Specimen", "s2"): [],
    ("Condition", "c1"): ["events", "other"],
    ("Procedure", "x1"): ["excluded"],
}


def test_places_added_in_place_are_what_by_type_counts() -> None:
    total: dict[str, TypeCount] = {"Observation": TypeCount(fetched=2, events=1)}
    add_places(total, FOUND)
    add_places(total, {("Observation", "o3"): ["events"]})
    expected = {"Observation": TypeCount(fetched=2, events=1)}
    for part in (by_type(FOUND), by_type({("Observation", "o3"): ["events"]})):
        for rtype, count in part.items():
            into = expected.setdefault(rtype, TypeCount())
            for name in (f.name for f in dataclasses.fields(TypeCount)):
                setattr(into, name, getattr(into, name) + getattr(count, name))
    assert dict(sorted(total.items())) == dict(sorted(expected.items()))
    assert total["Observation"] == TypeCount(fetched=5, events=3, other=1)
    assert total["Condition"].twice == 1
    assert total["Specimen"].unaccounted == 1


def test_places_can_be_added_without_counting_fetched() -> None:
    total: dict[str, TypeCount] = {}
    add_places(total, FOUND, count_fetched=False)
    assert sum(c.fetched for c in total.values()) == 0
    assert total["Observation"].events == 1


# -- remembered look-ups ------------------------------------------------------------------


def test_a_remembered_centre_is_the_one_worked_out(ctx: MappingContext) -> None:
    system = ctx.identifier_system("centre-a", "patient")
    assert ctx.centre_of_system(system) == "centre-a"
    assert ctx.centre_of_system(system) == "centre-a"
    assert ctx.centre_of_system("http://elsewhere.example/x/patient") is None
    other = "http://hospital.example/ids"
    assert ctx.centre_of_system(f"{other}/h/patient") is None
    wider = dataclasses.replace(ctx, other_bases=(other,))  # not the first one's memory
    assert wider.centre_of_system(f"{other}/h/patient") == "h"
    assert ctx.centre_of_system(f"{other}/h/patient") is None


def test_a_malformed_system_fails_as_it_did(ctx: MappingContext) -> None:
    with pytest.raises(AttributeError):
        ctx.centre_of_system({"not": "text"})  # type: ignore[arg-type]


def _cc(system: str | None, code: Any, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
    if text is not None:
        out["text"] = text
    return out


def test_a_remembered_classification_is_the_one_worked_out(ctx: MappingContext) -> None:
    concepts = ctx.concepts
    codeable = concepts.codeable("diagnosis")
    first = concepts.classify(codeable, ("condition",))
    assert first is not None
    assert concepts.classify(codeable, ("condition",)) == first
    assert concepts.classify(codeable, ("procedure",)) is None  # the kinds are in the key
    assert concepts._classify(codeable, ("procedure",)) is None
    local = {"coding": [{"system": concepts.local_system, "code": first}]}
    assert concepts.classify(local, ("condition",)) == first
    assert concepts.classify(_cc("http://x.example", "nothing"), ("condition",)) is None


def test_a_malformed_coding_is_classified_afresh(ctx: MappingContext) -> None:
    concepts = ctx.concepts
    with pytest.raises(TypeError):
        concepts.classify({"coding": None}, ("condition",))
    with pytest.raises(AttributeError):
        concepts.classify({"coding": ["text"]}, ("condition",))
    odd = _cc(concepts.local_system, 12)  # a number for a code: not remembered
    assert concepts.classify(odd, ("condition",)) is None
    assert concepts._classified == {} or all(12 not in k for k in concepts._classified)


def test_reading_by_text_is_in_what_is_remembered(ctx: MappingContext) -> None:
    concepts = ctx.concepts
    key = next(k for k in concepts.keys("procedure") if concepts.concept(k).codings)
    label = concepts.concept(key).label
    assert concepts.classify({"text": label}, ("procedure",)) is None
    ctx.terminology.read_text = True
    assert concepts.classify({"text": label}, ("procedure",)) == key
    ctx.terminology.read_text = False
    assert concepts.classify({"text": label}, ("procedure",)) is None


# -- times and values made once -----------------------------------------------------------


def test_the_same_fields_give_the_same_record() -> None:
    fields = {"date": dt.date(2020, 1, 2), "precision": "day", "day": 3, "anchor": "x"}
    first = _made(When, dict(fields))
    assert _made(When, dict(fields)) is first
    assert first == When(**fields)
    assert _made(Value, {"code": "negative"}) is _made(Value, {"code": "negative"})


def test_equal_fields_of_other_types_are_other_records() -> None:
    """1, 1.0 and True are equal keys; -0.0 and 0.0 too, but their cells differ."""
    assert _made(Value, {"number": 2.0}).number == 2.0
    assert _made(Value, {"number": 2}).number == 2.0  # validated afresh, not the float's
    assert _made_key(Value, {"number": 2}) != _made_key(Value, {"number": 2.0})
    assert _made_key(Value, {"boolean": True}) != _made_key(Value, {"number": 1})
    assert str(_made(Value, {"number": 0.0}).number) == "0.0"
    assert str(_made(Value, {"number": -0.0}).number) == "-0.0"
    assert _made_key(Value, {"number": float("nan")}) is None
    assert _made_key(When, {"day": [1]}) is None  # not hashable: made afresh
    assert _made_key(Value, {"text": _Text("x")}) is None


def test_what_does_not_validate_raises_each_time_and_is_not_kept() -> None:
    for _ in range(2):
        with pytest.raises(ValidationError):
            _made(When, {"day": 3})  # a relative day needs its anchor
    assert _made_key(When, {"day": 3}) not in from_elements._MADE


def test_what_is_kept_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(from_elements, "_MADE", {})
    monkeypatch.setattr(from_elements, "_MADE_HELD", 3)
    for day in range(10):
        _made(When, {"day": day, "anchor": "x"})
    assert 1 <= len(from_elements._MADE) <= 3


# -- the drugs a resource uses ------------------------------------------------------------


def _drugs(ctx: MappingContext, dose_date: str) -> list[dict[str, Any]]:
    code = ctx.concepts.codeable("blinatumomab")
    return [
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "Medication", "id": "m1", "code": code},
        {"resourceType": "Medication", "id": "m2", "code": code},
        {
            "resourceType": "MedicationAdministration",
            "id": "ma1",
            "status": "completed",
            "subject": {"reference": "Patient/p1"},
            "medicationReference": {"reference": "Medication/m1"},
            "effectiveDateTime": dose_date,
        },
        {
            "resourceType": "MedicationAdministration",
            "id": "ma2",
            "status": "completed",
            "subject": {"reference": "Patient/p1"},
            "medicationReference": {"reference": "Medication/m2"},
            "effectiveDateTime": "2020-01-03",
        },
    ]


@pytest.mark.parametrize("whole", [True, False])
def test_a_drug_of_no_event_is_unused_and_one_of_an_event_used(
    ctx: MappingContext, whole: bool
) -> None:
    for bad, unused in (("2020-01-02", set()), ("2020-13-02", {"m1"})):
        resources = _drugs(ctx, bad)
        if whole:
            result = cases_from_fhir(ctx, resources)
        else:
            held = {r["id"]: r for r in resources if r["resourceType"] == "Medication"}
            mapper = PatientByPatient(ctx, {}, held)
            result = mapper.patient(resources[0], resources[3:])
            result.other += mapper.held().other
        listed = {r["resource_id"] for r in result.other if r["resource_type"] == "Medication"}
        assert listed == unused
        events = [e.event_id for c in result.cases for e in c.events]
        assert len(events) == (2 if not unused else 1)
