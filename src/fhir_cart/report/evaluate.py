"""A study definition evaluated over cases: the measures a case-series paper reports.

The format of study definitions and the rules of time and tests are described in
:mod:`fhir_cart.library.studies`; this module resolves each event's time relative to the
anchor (:class:`TimeResolver`), evaluates the measures (:func:`summarise`) and says what a
summary cannot say (text tests that match nothing, patients without the anchor).
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.library.studies import (
    Condition,
    EventTest,
    Interval,
    Measure,
    MedianSpec,
    StudyDefinition,
    TextTest,
    _default_library,
    _StudyChecker,
)
from fhir_cart.records import Case, Event, Scalar, Value, When, band_of

__all__ = [
    "MeasureResult",
    "TimeResolver",
    "fold",
    "missing_anchor",
    "summarise",
    "unmatched_text_tests",
]


@dataclass(frozen=True)
class MeasureResult:
    """One computed measure; ``expected`` is what the paper reports (None: not reported)."""

    id: str
    label: str
    value: int | float | None
    expected: int | float | None = None
    patients: tuple[str, ...] = ()
    """Study ids counted (count) or contributing (medians)."""
    partial: tuple[str, ...] = ()
    """Study ids whose answer rests on a partial date (a year or a month, of an event or of
    the anchor): their time was the whole span of days it may be, so a day test held only
    if it held for every one of those days, and a median of days left them out."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: id, label, value, expected, agrees, patients (and ``partial`` when
        some answer rests on a partial date)."""
        out: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "value": self.value,
            "expected": self.expected,
            "agrees": self.agrees,
            "patients": list(self.patients),
        }
        if self.partial:
            out["partial"] = list(self.partial)
        return out

    @property
    def agrees(self) -> bool | None:
        """Whether value equals expected (None when nothing is expected)."""
        if self.expected is None:
            return None
        return self.value is not None and math.isclose(float(self.value), float(self.expected))


# -- time -------------------------------------------------------------------------------

_UNBOUNDED = math.inf


def _span_of(event: Event) -> tuple[dt.date, dt.date]:
    """The first and last day an event's date may be (a day: that day twice)."""
    assert event.when is not None
    span = event.when.span
    assert span is not None
    return span


def _partial(*events: Event | None) -> bool:
    return any(e is not None and e.when is not None and e.when.is_partial for e in events)


class TimeResolver:
    """Days of one patient's events relative to an anchor concept (module docstring).

    ``partial`` turns True when a time resolved since it was last reset rests on a year or a
    month (the event's date or the anchor's): its interval is then the whole span of days it
    may be, never its first day."""

    def __init__(self, case: Case, anchor: str) -> None:
        self.case = case
        self.anchor = anchor
        self.partial = False
        self._offsets: dict[str, tuple[float | None, bool]] = {}
        self._anchor_span, self._anchor_partial = self._date_of_anchor()

    def _first(self, concept: str) -> Event | None:
        events = self.case.of(concept)
        if not events:
            return None
        dated = [e for e in events if e.when is not None and e.when.date is not None]
        if len(dated) == len(events):
            return min(dated, key=_span_of)
        return events[0]

    def _date_of_anchor(self) -> tuple[tuple[dt.date, dt.date] | None, bool]:
        """The days the anchor event may be on (one day, or a year's or month's), and
        whether that rests on a partial date."""
        first = self._first(self.anchor)
        if first is not None and first.when is not None and first.when.span is not None:
            return first.when.span, first.when.is_partial
        for event in self.case.events:
            when = event.when
            span = None if when is None else when.span
            if when is not None and span and when.anchor == self.anchor and when.day is not None:
                back = dt.timedelta(days=when.day)
                return (span[0] - back, span[1] - back), when.is_partial
        return None, False

    def offset(self, concept: str, depth: int = 0) -> float | None:
        """Day of ``concept``'s first event relative to the anchor."""
        if concept == self.anchor:
            return 0.0 if self._first(concept) is not None or self._anchor_span else None
        if concept in self._offsets:
            found, partial = self._offsets[concept]
            self.partial |= partial
            return found
        self._offsets[concept] = (None, False)  # guards cycles
        before, self.partial = self.partial, False
        first = self._first(concept)
        found = None
        if first is not None and first.when is not None and depth < 8:
            span = self.interval(first.when, depth + 1, own=concept)
            if span is not None and span[0] == span[1]:
                found = span[0]
        self._offsets[concept] = (found, self.partial)
        self.partial |= before
        return found

    def interval(
        self, when: When | None, depth: int = 0, own: str | None = None
    ) -> Interval | None:
        """The days (earliest, latest) of a time relative to the anchor; None: unresolved.
        A year or a month (of the event or of the anchor) gives every day it may be."""
        if when is None:
            return None
        if when.anchor == self.anchor:
            return self._span(when, 0.0)
        span = when.span
        if span is not None and self._anchor_span is not None:
            self.partial |= when.is_partial or self._anchor_partial
            low, high = self._anchor_span
            return (float((span[0] - high).days), float((span[1] - low).days))
        if when.anchor is not None and when.anchor != own:
            shift = self.offset(when.anchor, depth)
            if shift is not None:
                return self._span(when, shift)
        return None

    @staticmethod
    def _span(when: When, shift: float) -> Interval:
        if when.day is not None:
            return (when.day + shift, when.day + shift)
        low = -_UNBOUNDED if when.earliest_day is None else when.earliest_day + shift
        high = _UNBOUNDED if when.latest_day is None else when.latest_day + shift
        return (low, high)

    def day(self, event: Event) -> float | None:
        """The exact day of an event (None: unresolved or only a window)."""
        span = self.interval(event.when)
        return span[0] if span is not None and span[0] == span[1] else None


# -- evaluation -------------------------------------------------------------------------


class _Patient:
    def __init__(self, case: Case, study: StudyDefinition) -> None:
        self.case = case
        self.study = study
        self.time = TimeResolver(case, study.anchor)
        self._spans: dict[str, tuple[Interval | None, bool]] = {}

    def span(self, event: Event) -> Interval | None:
        """The event's interval of days; marks the patient's answer as resting on a partial
        date (``self.time.partial``) when it does."""
        found = self._spans.get(event.event_id)
        if found is None:
            before, self.time.partial = self.time.partial, False
            found = (self.time.interval(event.when), self.time.partial)
            self._spans[event.event_id] = found
            self.time.partial = before
        self.time.partial |= found[1]
        return found[0]

    def day(self, event: Event) -> float | None:
        """The exact day of an event (None: unresolved, or only a window of days)."""
        span = self.span(event)
        return span[0] if span is not None and span[0] == span[1] else None

    # tests

    def passes(self, test: EventTest | str, event: Event) -> bool:
        if isinstance(test, str):
            return self.passes(self.study.predicates[test], event)
        return (
            self._value_ok(test, event)
            and self._time_ok(test, event)
            and self._logic_ok(test, event)
        )

    def _value_ok(self, test: EventTest, event: Event) -> bool:
        if test.concept is not None and event.concept not in test.concept:
            return False
        value = event.value
        if test.value is not None and (
            value is None
            or not (value.code in test.value or _folded_in(value.text, _folded(test.value)))
        ):
            return False
        if not _number_ok(test, value):
            return False
        if test.comparator is not None and (
            value is None or value.comparator not in test.comparator
        ):
            return False
        if test.unit is not None and (value is None or value.unit not in test.unit):
            return False
        if test.boolean is not None and (value is None or value.boolean is not test.boolean):
            return False
        attributes = event.attributes
        return all(_attribute_in(attributes.get(k), ok) for k, ok in test.attributes.items())

    def _time_ok(self, test: EventTest, event: Event) -> bool:
        if not test.time_bound:
            return True
        span = self.span(event)
        if test.day is not None and (span is None or span != (test.day, test.day)):
            return False
        if test.between is not None and (
            span is None or not (test.between[0] <= span[0] and span[1] <= test.between[1])
        ):
            return False
        return self._bound_ok(test.after, event, span, after=True) and self._bound_ok(
            test.before, event, span, after=False
        )

    def _bound_ok(
        self, bound: int | Condition | None, event: Event, span: Interval | None, *, after: bool
    ) -> bool:
        if bound is None:
            return True
        if isinstance(bound, int):
            if span is None:
                return False
            return span[0] > bound if after else span[1] < bound
        ref = self.pick(bound)
        if ref is None:
            return False
        ref_span = self.span(ref)
        if span is not None and ref_span is not None:
            return span[0] > ref_span[1] if after else span[1] < ref_span[0]
        mine = event.when.span if event.when is not None else None
        theirs = ref.when.span if ref.when is not None else None
        if mine is None or theirs is None:
            return False
        self.time.partial |= _partial(event, ref)
        return mine[0] > theirs[1] if after else mine[1] < theirs[0]

    def _logic_ok(self, test: EventTest, event: Event) -> bool:
        if test.all_ is not None and not all(self.passes(t, event) for t in test.all_):
            return False
        if test.any_ is not None and not any(self.passes(t, event) for t in test.any_):
            return False
        return test.not_ is None or not self.passes(test.not_, event)

    # selections

    def select(self, selector: EventTest | str) -> list[Event]:
        return [e for e in self.case.events if self.passes(selector, e)]

    def ordered(self, events: list[Event]) -> list[Event]:
        """Events with a resolvable time, earliest first (stable)."""
        timed = [(self.span(e), e) for e in events]
        placed = [(s, e) for s, e in timed if s is not None]
        if placed:
            return [e for _, e in sorted(placed, key=lambda p: p[0])]
        dated = [e for e in events if e.when is not None and e.when.date is not None]
        if events and len(dated) == len(events):
            self.time.partial |= _partial(*dated)
            return sorted(dated, key=_span_of)
        return []

    def pick(self, cond: Condition) -> Event | None:
        """The event a reference or a first/latest selection stands for."""
        assert cond.event is not None
        events = self.ordered(self.select(cond.event))
        if not events:
            return None
        chosen = events[-1] if cond.pick == "latest" else events[0]
        if cond.test is not None and not self.passes(cond.test, chosen):
            return None
        return chosen

    def holds(self, cond: Condition) -> bool:
        if cond.all_ is not None:
            return all(self.holds(c) for c in cond.all_)
        if cond.any_ is not None:
            return any(self.holds(c) for c in cond.any_)
        if cond.not_ is not None:
            return not self.holds(cond.not_)
        assert cond.event is not None
        if cond.pick in ("first", "latest"):
            return self.pick(cond) is not None
        events = self.select(cond.event)
        test = cond.test
        if cond.pick == "all":
            return bool(events) and all(test is None or self.passes(test, e) for e in events)
        return any(test is None or self.passes(test, e) for e in events)

    def number_of(self, spec: MedianSpec) -> float | None:
        if spec.patient_attribute is not None:
            found = self.case.patient.attributes.get(spec.patient_attribute)
        else:
            assert spec.event is not None
            chosen = self.pick(Condition(event=spec.event, pick=spec.pick, test=spec.test))
            if chosen is None:
                return None
            if spec.attribute is not None:
                found = chosen.attributes.get(spec.attribute)
            else:
                found = chosen.value.number if chosen.value is not None else None
        if isinstance(found, bool) or not isinstance(found, int | float):
            return None
        return float(found)


def fold(text: str) -> str:
    """How a text test compares words: case and runs of spaces ignored ('Hypotension ' is
    'hypotension')."""
    return " ".join(text.split()).casefold()


@lru_cache(maxsize=4096)
def _folded(words: tuple[Any, ...]) -> frozenset[Any]:
    return frozenset(fold(w) if isinstance(w, str) else w for w in words)


def _folded_in(text: str | None, folded: frozenset[Any]) -> bool:
    return text is not None and fold(text) in folded


def _number_ok(test: EventTest, value: Value | None) -> bool:
    """The number tests, passed only by what is known to pass them: '>=15' (written '15+')
    is at least 15, so it passes ``number_min: 12`` but not ``number_max: 20``; a range
    passes when both its ends do; '<0.01' passes ``number_max: 0.01``."""
    if test.number is None and test.number_min is None and test.number_max is None:
        return True
    if value is None:
        return False
    if value.is_range:
        low, high = value.low, value.high
    else:
        low = high = value.number
        if value.comparator in (">", ">="):
            high = None  # no upper bound known
        elif value.comparator in ("<", "<="):
            low = None
    if test.number is not None and not (low == high == test.number):
        return False
    if test.number_min is not None and (low is None or low < test.number_min):
        return False
    return not (test.number_max is not None and (high is None or high > test.number_max))


def _attribute_in(found: Scalar | None, allowed: tuple[Scalar | None, ...]) -> bool:
    if found in allowed:
        return True
    band = band_of(found)
    if band is not None:  # a band counts only when every value of it is allowed
        return all(v in allowed for v in range(band[0], band[1] + 1))
    return isinstance(found, str) and fold(found) in _folded(allowed)


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    found = statistics.median(values)
    return int(found) if float(found).is_integer() else found


def _evaluate(measure: Measure, patients: list[_Patient]) -> tuple[int | float | None, list[str]]:
    if measure.count == "all":
        return len(patients), [p.case.patient.study_id for p in patients]
    if isinstance(measure.count, Condition):
        cond = measure.count
        ids = [p.case.patient.study_id for p in patients if p.holds(cond)]
        return len(ids), ids
    if measure.count_events is not None:
        selector = measure.count_events
        counts = [(p.case.patient.study_id, len(p.select(selector))) for p in patients]
        return sum(n for _, n in counts), [pid for pid, n in counts if n]
    values: list[float] = []
    ids = []
    for patient in patients:
        found: float | None
        if measure.median_days is not None:
            chosen = patient.pick(measure.median_days)
            found = None if chosen is None else patient.day(chosen)
        else:
            assert measure.median is not None
            found = patient.number_of(measure.median)
        if found is not None:
            values.append(found)
            ids.append(patient.case.patient.study_id)
    return _median(values), ids


def summarise(cases: Iterable[Case], study: StudyDefinition) -> list[MeasureResult]:
    """Every measure of the study over the cases, in the study's order."""
    patients = [_Patient(case, study) for case in cases]
    results = []
    for measure in study.measures:
        for patient in patients:
            patient.time.partial = False
        value, ids = _evaluate(measure, patients)
        partial = tuple(p.case.patient.study_id for p in patients if p.time.partial)
        expected = study.expected.get(measure.id)
        if expected is not None and float(expected).is_integer():
            expected = int(expected)
        results.append(
            MeasureResult(measure.id, measure.title, value, expected, tuple(ids), partial)
        )
    return results


# -- what a summary cannot say ----------------------------------------------------------


def _texts(cases: Iterable[Case], test: TextTest) -> dict[str, str]:
    """Folded -> as written, of every text the test could match in the cases."""
    found: dict[str, str] = {}
    for case in cases:
        for event in case.events:
            if test.concepts is not None and event.concept not in test.concepts:
                continue
            texts: list[Scalar | None]
            if test.attribute is None:
                texts = [] if event.value is None else [event.value.text, event.value.code]
            else:
                texts = [event.attributes.get(test.attribute)]
            for text in texts:
                if isinstance(text, str):
                    found.setdefault(fold(text), text)
    return found


def unmatched_text_tests(
    cases: Sequence[Case], study: StudyDefinition, library: ConceptLibrary | None = None
) -> list[str]:
    """A warning for each text test of the study that matches no event, with the closest
    values present (a spelling that matches nothing counts 0 without a word otherwise)."""
    checker = _StudyChecker(study, library or _default_library())
    checker.run()
    warnings = []
    for test in checker.text_tests:
        present = _texts(cases, test)
        if fold(test.word) in present:
            continue
        close = difflib.get_close_matches(fold(test.word), list(present), n=3, cutoff=0.6)
        shown = [present[c] for c in close] or sorted(present.values())[:5]
        hint = ("closest values present: " if close else "values present: ") + (
            ", ".join(map(repr, shown)) if shown else "none"
        )
        warnings.append(f"{test.where}: {test.word!r} matches no event; {hint}")
    return warnings


def missing_anchor(cases: Iterable[Case], anchor: str) -> list[str]:
    """A warning for each patient with no event of the anchor concept: no day of theirs can
    count from it (study ids are pseudonymous study numbers)."""
    return [
        f"patient {case.patient.study_id}: no {anchor} event, the anchor every day of the "
        "study counts from; add it to the file (its relative days cannot be placed)"
        for case in cases
        if not any(e.concept == anchor for e in case.events)
    ]
