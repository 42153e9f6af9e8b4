"""The reader builds When, Value and Event without pydantic's second pass when every field is
already what pydantic would accept unchanged: the result, and any error, must be pydantic's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from fhir_cart.records import Event, Value, When
from fhir_cart.study.build import _make_event, _make_value, _make_when

texts = st.one_of(
    st.none(),
    st.sampled_from(["cart_infusion", "mrd", "a", "Bad", "x y", " mrd", "mrd ", "1x", "%", "<"]),
    st.text(max_size=70),
    st.text(alphabet="ab_ .-", min_size=60, max_size=70),
)
days = st.one_of(st.none(), st.integers(-40000, 40000), st.booleans(), st.floats(-5, 5))
numbers = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.booleans()
)
dates = st.one_of(st.none(), st.dates(), st.datetimes())


def same(fast: Callable[..., BaseModel], slow: Callable[..., BaseModel], **fields: Any) -> None:
    refused: str | None = None
    try:
        expected = slow(**fields)
    except ValidationError as exc:
        refused = str(exc)
    if refused is not None:
        with pytest.raises(ValidationError) as got:
            fast(**fields)
        assert str(got.value) == refused
        return
    made = fast(**fields)
    assert type(made) is type(expected)
    assert made == expected
    assert made.model_dump() == expected.model_dump()
    assert repr(made.model_dump()) == repr(expected.model_dump())  # 15 is not 15.0
    assert made.model_fields_set == expected.model_fields_set


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@settings(max_examples=400)
@given(dates, days, texts, days, days)
def test_when(date: Any, day: Any, anchor: Any, earliest: Any, latest: Any) -> None:
    def fast(**f: Any) -> When:
        return _make_when(f["date"], f["day"], f["anchor"], f["earliest_day"], f["latest_day"])

    same(fast, When, date=date, day=day, anchor=anchor, earliest_day=earliest, latest_day=latest)


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@settings(max_examples=400)
@given(
    st.dictionaries(
        st.sampled_from(["number", "low", "high", "unit", "comparator", "code", "boolean", "text"]),
        st.one_of(numbers, texts, st.sampled_from(["<", "<=", ">", ">="])),
        max_size=4,
    )
)
def test_value(fields: dict[str, Any]) -> None:
    same(_make_value, Value, **fields)


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@settings(max_examples=300)
@given(
    texts,
    texts,
    st.one_of(st.none(), st.just(When(date=dt.date(2020, 1, 1)))),
    st.one_of(st.none(), st.just(Value(number=1.5, unit="%"))),
    st.dictionaries(
        st.one_of(st.sampled_from(["grade", "cycle", " grade", "Bad"]), st.text(max_size=5)),
        st.one_of(numbers, texts.filter(lambda t: t is not None)),
        max_size=3,
    ),
    texts,
    texts,
    texts,
    st.one_of(texts, st.text(alphabet="ab; -", min_size=195, max_size=205)),
)
def test_event(
    event_id: Any,
    concept: Any,
    when: Any,
    value: Any,
    attributes: Any,
    source: Any,
    origin: Any,
    assumed: Any,
    status: Any,
) -> None:
    same(
        _make_event,
        Event,
        event_id=event_id,
        concept=concept,
        when=when,
        end=None,
        value=value,
        attributes=attributes,
        source_text=source,
        origin=origin,
        assumed=assumed,
        status=status,
    )


@pytest.mark.parametrize("status", [None, "", "preliminary", " x", "a" * 200, "a" * 201])
def test_event_status(status: Any) -> None:
    same(
        _make_event,
        Event,
        event_id="e1",
        concept="mrd",
        when=None,
        end=None,
        value=None,
        attributes={},
        source_text=None,
        origin=None,
        assumed=None,
        status=status,
    )
