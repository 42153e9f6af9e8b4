"""Summaries as data: what a case-series paper reports, defined in a study file.

A study definition (``mappings/studies/<name>.yaml``, reference: docs/mapping-file.md) names an
``anchor`` concept (day 0), reusable ``predicates`` (named event tests), ``measures``, the
numbers the paper reports (``expected``) and ``plots``. Nothing about any one study is in this
module.

Measures
--------
- ``count: all`` — the number of patients.
- ``count: CONDITION`` — the number of patients for whom the condition holds. A condition is
  ``{event: SELECTOR, pick: any|all|first|latest, test: TEST}``, or ``{all: [...]}``,
  ``{any: [...]}``, ``{not: CONDITION}``.

  * ``event`` selects the patient's events (a SELECTOR is a TEST that names a ``concept``).
  * ``pick: any`` (default): some selected event passes ``test`` (no test: one exists);
    ``all``: at least one is selected and every one passes; ``first`` / ``latest``: the
    earliest / latest selected event (by its day relative to the anchor, see below) passes.
  * ``test`` is a TEST or the name of a predicate.
- ``count_events: SELECTOR`` — the number of matching events over all patients.
- ``median_days: SELECTOR`` (or ``{event: SELECTOR, pick: first|latest, test: TEST}``; pick
  defaults to ``first``) — median over patients of the day of that event relative to the
  anchor (patients whose event has no exact day are left out; none: the value is None).
- ``median: {event: SELECTOR, pick, test, attribute: KEY}`` — median of the picked event's
  value number (or of its attribute ``KEY``); ``median: {patient_attribute: KEY}``.

TESTS (every key given must hold): ``concept`` (key or list), ``value`` (value-set word or
list; also matches the value text of an open value set), ``number`` (equal), ``number_min`` /
``number_max`` (inclusive), ``comparator``, ``unit``, ``boolean``, ``attributes`` ({key: word,
number or list; null: the attribute is absent}), time (``day``, ``after``, ``before``,
``between``), ``all`` / ``any`` (lists of tests), ``not`` (a test), or a predicate's name.

Time
----
An event's day relative to the study's anchor (the patient's first event of the anchor
concept; when every such event is dated, the earliest) is resolved, in this order:

1. from ``When.day`` (or a window's ``earliest_day``/``latest_day``) when ``When.anchor`` is
   the study's anchor;
2. by dates: event date minus the anchor event's date (the anchor's date may also be inferred
   from any event that carries both a date and a day relative to the anchor);
3. via another anchor: ``When.anchor`` is another concept whose first event has a resolvable
   day, so day = that day + ``When.day`` (windows shift likewise).

A resolved time is an interval of days (a day: [d, d]; a window: [earliest, latest], open ends
unbounded). A day condition matches only when the whole interval satisfies it: ``day: d`` needs
exactly day d; ``after: a`` needs earliest > a; ``before: b`` needs latest < b; ``between: [a,
b]`` needs a <= earliest and latest <= b (inclusive). So "MRD negative after T cells" (window
after the infusion) matches ``after: 0``, while "before HSCT" does not match ``day: -7``. **An
event whose time cannot be resolved never matches a day condition.** ``after`` / ``before``
may instead name another selection, ``{event: SELECTOR, pick: first|latest, test}`` (pick
defaults to ``first``): the event must lie entirely after (before) the picked event; when
neither can be placed relative to the anchor, their dates are compared.

``pick: first|latest`` orders the selected events by their resolved interval (earliest day,
then latest day; ties keep record order); events whose time cannot be resolved are not picked
(when none of the selected events resolves but all have dates, dates order them).
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fhir_cart.errors import ConfigError, validation_reason
from fhir_cart.library import Library, names_a_file
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.library.yamlfile import read_yaml
from fhir_cart.records import COMPARATORS, Case, Event, Scalar, When

__all__ = [
    "Condition",
    "EventTest",
    "Measure",
    "MeasureResult",
    "Plots",
    "StudyDefinition",
    "SurvivalCurve",
    "SwimmerPlot",
    "TextTest",
    "TimeResolver",
    "fold",
    "load_study",
    "missing_anchor",
    "names_a_file",
    "study_path",
    "summarise",
    "unmatched_text_tests",
]

_STRICT = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
_KEY = r"^[a-z][a-z0-9_]*$"
Pick = Literal["any", "all", "first", "latest"]
Number = int | float
Interval = tuple[float, float]


def _tuple(value: Any) -> Any:
    """A single word (or number) where a list is allowed."""
    if value is None or isinstance(value, list | tuple):
        return value
    return (value,)


class EventTest(BaseModel):
    """A test on one event; every key given must hold. With ``concept`` it is a selector."""

    model_config = _STRICT

    concept: tuple[str, ...] | None = None
    value: tuple[str, ...] | None = None
    number: float | None = None
    number_min: float | None = None
    number_max: float | None = None
    comparator: tuple[str, ...] | None = None
    unit: tuple[str, ...] | None = None
    boolean: bool | None = None
    attributes: dict[str, tuple[Scalar | None, ...]] = Field(default_factory=dict)
    day: int | None = None
    after: int | Condition | None = None
    before: int | Condition | None = None
    between: tuple[int, int] | None = None
    all_: tuple[EventTest | str, ...] | None = Field(default=None, alias="all")
    any_: tuple[EventTest | str, ...] | None = Field(default=None, alias="any")
    not_: EventTest | str | None = Field(default=None, alias="not")

    @field_validator("concept", "value", "comparator", "unit", mode="before")
    @classmethod
    def _words(cls, value: Any) -> Any:
        return _tuple(value)

    @field_validator("attributes", mode="before")
    @classmethod
    def _attribute_words(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: _tuple(v) if v is not None else (None,) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> EventTest:
        if self.comparator is not None:
            wrong = [c for c in self.comparator if c not in COMPARATORS]
            if wrong:
                raise ValueError(f"comparator {wrong[0]!r} is not one of {', '.join(COMPARATORS)}")
        if self.between is not None and self.between[0] > self.between[1]:
            raise ValueError("between: the first day is after the second")
        return self

    @property
    def time_bound(self) -> bool:
        return any(x is not None for x in (self.day, self.after, self.before, self.between))


class Condition(BaseModel):
    """A per-patient condition: an event selection (with pick and test), or all/any/not."""

    model_config = _STRICT

    event: EventTest | str | None = None
    pick: Pick = "any"
    test: EventTest | str | None = None
    all_: tuple[Condition, ...] | None = Field(default=None, alias="all")
    any_: tuple[Condition, ...] | None = Field(default=None, alias="any")
    not_: Condition | None = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _check(self) -> Condition:
        given = [
            k
            for k, v in (("event", self.event), ("all", self.all_), ("any", self.any_),
                         ("not", self.not_))
            if v is not None
        ]  # fmt: skip
        if len(given) != 1:
            raise ValueError("give exactly one of event, all, any, not")
        if self.event is None and (self.test is not None or "pick" in self.model_fields_set):
            raise ValueError("pick and test go with event")
        return self


class MedianSpec(BaseModel):
    """``median``: of an event's value number (or attribute), or of a patient attribute."""

    model_config = _STRICT

    event: EventTest | str | None = None
    pick: Literal["first", "latest"] = "first"
    test: EventTest | str | None = None
    attribute: str | None = None
    patient_attribute: str | None = None

    @model_validator(mode="after")
    def _check(self) -> MedianSpec:
        if (self.event is None) == (self.patient_attribute is None):
            raise ValueError("give either event (with attribute or not) or patient_attribute")
        if self.patient_attribute is not None and (self.attribute or self.test):
            raise ValueError("patient_attribute stands alone")
        return self


def _as_selection(value: Any) -> Any:
    if isinstance(value, str):
        return {"event": {"concept": value}, "pick": "first"}
    if isinstance(value, Mapping) and "event" not in value:
        return {"event": dict(value), "pick": "first"}
    if isinstance(value, Mapping) and "pick" not in value:
        return {**value, "pick": "first"}
    return value


class Measure(BaseModel):
    """One reported number: exactly one of count, count_events, median_days, median."""

    model_config = _STRICT

    id: str = Field(pattern=_KEY, max_length=64)
    label: str | None = None
    description: str | None = None
    count: Literal["all"] | Condition | None = None
    count_events: EventTest | None = None
    median_days: Condition | None = None
    median: MedianSpec | None = None

    @field_validator("median_days", mode="before")
    @classmethod
    def _selection(cls, value: Any) -> Any:
        return _as_selection(value)

    @model_validator(mode="after")
    def _check(self) -> Measure:
        kinds = [self.count, self.count_events, self.median_days, self.median]
        if sum(k is not None for k in kinds) != 1:
            raise ValueError("give exactly one of count, count_events, median_days, median")
        if self.median_days is not None and (
            self.median_days.event is None or self.median_days.pick not in ("first", "latest")
        ):
            raise ValueError("median_days: an event with pick first or latest")
        return self

    @property
    def title(self) -> str:
        return self.label or self.id.replace("_", " ").capitalize()


def _selectors(value: Any) -> Any:
    """A concept key, a selector, or a list of them."""
    items = value if isinstance(value, list | tuple) else [value]
    return tuple({"concept": i} if isinstance(i, str) else i for i in items)


class SwimmerPlot(BaseModel):
    """One bar per patient from day 0 to the latest ``end`` event; ``markers`` by name."""

    model_config = _STRICT

    title: str | None = None
    end: tuple[EventTest, ...]
    markers: dict[str, EventTest] = Field(default_factory=dict)

    @field_validator("end", mode="before")
    @classmethod
    def _end(cls, value: Any) -> Any:
        return _selectors(value)

    @field_validator("markers", mode="before")
    @classmethod
    def _markers(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: {"concept": v} if isinstance(v, str) else v for k, v in value.items()}
        return value


class SurvivalCurve(BaseModel):
    """A Kaplan-Meier curve: time to the first ``event`` on or after day 0, censored at the
    latest ``censor`` event."""

    model_config = _STRICT

    label: str | None = None
    event: tuple[EventTest, ...]
    censor: tuple[EventTest, ...]

    @field_validator("event", "censor", mode="before")
    @classmethod
    def _events(cls, value: Any) -> Any:
        return _selectors(value)


class Plots(BaseModel):
    model_config = _STRICT

    swimmer: SwimmerPlot | None = None
    survival: dict[str, SurvivalCurve] = Field(default_factory=dict)


class StudyDefinition(BaseModel):
    """A study file (``mappings/studies/<name>.yaml``)."""

    model_config = _STRICT

    name: str
    description: str | None = None
    reference: str | None = None
    anchor: str = Field(pattern=_KEY)
    predicates: dict[str, EventTest | str] = Field(default_factory=dict)
    measures: tuple[Measure, ...]
    expected: dict[str, float] = Field(default_factory=dict)
    plots: Plots = Field(default_factory=Plots)

    @model_validator(mode="after")
    def _check(self) -> StudyDefinition:
        ids = [m.id for m in self.measures]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"measures: duplicate id {', '.join(twice)}")
        unknown = [k for k in self.expected if k not in ids]
        if unknown:
            raise ValueError(f"expected: {', '.join(unknown)} is not the id of a measure")
        return self

    def measure(self, measure_id: str) -> Measure:
        for measure in self.measures:
            if measure.id == measure_id:
                return measure
        raise KeyError(measure_id)


EventTest.model_rebuild()
Condition.model_rebuild()


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


# -- loading and checking ---------------------------------------------------------------


def study_path(name_or_path: str | Path, library: Library | None = None) -> Path:
    """A study name (``<library>/studies/<name>.yaml``; default: the shipped library) or a
    path to a study file."""
    return (library or Library.default()).study_path(name_or_path)


def _default_library() -> ConceptLibrary:
    return Library.default().concepts()


def load_study(
    name_or_path: str | Path,
    library: Library | None = None,
    *,
    concepts: ConceptLibrary | None = None,
) -> StudyDefinition:
    """Read and check a study definition: a name in ``library`` (default: the shipped
    one) or a path. Concept keys, attribute keys and value-set words are checked against
    ``concepts`` (default: the library's concepts); any problem is a :class:`ConfigError`
    naming the file and the key path."""
    library = library or Library.default()
    path = library.study_path(name_or_path)
    raw = read_yaml(path, "study definition")
    return parse_study(raw, concepts or library.concepts(), where=f"study definition {path}")


def parse_study(
    raw: Any, library: ConceptLibrary | None = None, *, where: str = "study definition"
) -> StudyDefinition:
    """:func:`load_study` on already-parsed YAML."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys at the top")
    try:
        study = StudyDefinition.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where} is invalid: {_reason(exc)}") from exc
    problems = _Checker(study, library or _default_library()).run()
    if problems:
        raise ConfigError(f"{where} is invalid: " + "; ".join(problems))
    return study


_UNION_TAGS = {"int", "str", "float", "bool", "Condition", "EventTest", "MedianSpec"}


def _reason(exc: ValidationError) -> str:
    """A pydantic error as key paths (``measures[3].count.event.dya: ...``), without the
    branches of unions the input was never meant for."""
    found: dict[str, list[str]] = {}
    for error in exc.errors():
        path = ""
        for part in error["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif "[" in part or part in _UNION_TAGS:
                continue
            else:
                path += f".{part}" if path else part
        message = str(error["msg"]).removeprefix("Value error, ")
        if message not in found.setdefault(path, []):
            found[path].append(message)
    deepest = [
        p for p in found if not any(o != p and o.startswith(p) and o[len(p)] in ".[" for o in found)
    ]
    if not deepest:
        return validation_reason(exc)
    return "; ".join(f"{p}: {' or '.join(found[p])}" if p else " or ".join(found[p])
                     for p in deepest)  # fmt: skip


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class TextTest:
    """A word of a study file matched against free text (case and spaces ignored)."""

    where: str
    word: str
    attribute: str | None
    """None: the event's value text; else the attribute's key."""
    concepts: tuple[str, ...] | None
    """The concepts whose events it tests (None: any)."""


class _Checker:
    """Cross-checks a parsed study against the concept library."""

    def __init__(self, study: StudyDefinition, library: ConceptLibrary) -> None:
        self.study = study
        self.lib = library
        self.problems: list[str] = []
        self.text_tests: list[TextTest] = []
        """Words matched against free text (an open value set, a text value or attribute)."""

    def run(self) -> list[str]:
        study = self.study
        if not self.lib.has(study.anchor):
            self._unknown_concept("anchor", study.anchor)
        for name, test in study.predicates.items():
            self._test(f"predicates.{name}", test, None, (name,))
        for index, measure in enumerate(study.measures):
            where = f"measures[{index}] ({measure.id})"
            if isinstance(measure.count, Condition):
                self._condition(f"{where}.count", measure.count)
            if measure.count_events is not None:
                self._selector(f"{where}.count_events", measure.count_events)
            if measure.median_days is not None:
                self._condition(f"{where}.median_days", measure.median_days)
            if measure.median is not None:
                self._median(f"{where}.median", measure.median)
        plots = study.plots
        if plots.swimmer is not None:
            for i, selector in enumerate(plots.swimmer.end):
                self._selector(f"plots.swimmer.end[{i}]", selector)
            for name, selector in plots.swimmer.markers.items():
                self._selector(f"plots.swimmer.markers.{name}", selector)
        for name, curve in plots.survival.items():
            for part, selectors in (("event", curve.event), ("censor", curve.censor)):
                for i, selector in enumerate(selectors):
                    self._selector(f"plots.survival.{name}.{part}[{i}]", selector)
        return self.problems

    # -- pieces -----------------------------------------------------------------------

    def _unknown_concept(self, where: str, key: str) -> None:
        self.problems.append(
            f"{where}: unknown concept {key!r}{_did_you_mean(key, self.lib.keys())}"
        )

    def _median(self, where: str, spec: MedianSpec) -> None:
        if spec.patient_attribute is not None:
            if spec.patient_attribute not in self.lib.data.patient_attributes:
                self.problems.append(
                    f"{where}.patient_attribute: unknown patient attribute "
                    f"{spec.patient_attribute!r}"
                )
            return
        assert spec.event is not None
        concepts = self._selector(f"{where}.event", spec.event)
        if spec.test is not None:
            self._test(f"{where}.test", spec.test, concepts, ())
        if spec.attribute is not None:
            self._attribute(f"{where}.attribute", spec.attribute, None, concepts)

    def _condition(self, where: str, cond: Condition) -> None:
        if cond.event is not None:
            concepts = self._selector(f"{where}.event", cond.event)
            if cond.test is not None:
                self._test(f"{where}.test", cond.test, concepts, ())
        for part, items in (("all", cond.all_), ("any", cond.any_)):
            for i, item in enumerate(items or ()):
                self._condition(f"{where}.{part}[{i}]", item)
        if cond.not_ is not None:
            self._condition(f"{where}.not", cond.not_)

    def _selector(self, where: str, selector: EventTest | str) -> tuple[str, ...] | None:
        """Check a selector; the concepts it selects (None: unknown)."""
        concepts = self._concepts_of(selector)
        if not concepts:
            self.problems.append(f"{where}: a selector names its concept(s) (concept: KEY)")
        self._test(where, selector, None, ())
        return concepts

    def _concepts_of(self, test: EventTest | str, seen: tuple[str, ...] = ()) -> tuple[str, ...]:
        if isinstance(test, str):
            target = self.study.predicates.get(test)
            if target is None or test in seen:
                return ()
            return self._concepts_of(target, (*seen, test))
        return test.concept or ()

    def _test(
        self,
        where: str,
        test: EventTest | str,
        concepts: tuple[str, ...] | None,
        seen: tuple[str, ...],
    ) -> None:
        if isinstance(test, str):
            if test not in self.study.predicates:
                choices = self.study.predicates
                self.problems.append(
                    f"{where}: no predicate {test!r}{_did_you_mean(test, choices)}"
                )
            elif test in seen:
                self.problems.append(f"{where}: predicate {test!r} refers to itself")
            else:
                self._test(where, self.study.predicates[test], concepts, (*seen, test))
            return
        if test.concept is not None:
            for key in test.concept:
                if not self.lib.has(key):
                    self._unknown_concept(f"{where}.concept", key)
            known = tuple(k for k in test.concept if self.lib.has(k))
            concepts = known if concepts is None else tuple(k for k in concepts if k in known)
        if test.value is not None:
            self._words(f"{where}.value", test.value, concepts)
        for key, values in test.attributes.items():
            self._attribute(f"{where}.attributes.{key}", key, values, concepts)
        for part in ("after", "before"):
            bound = getattr(test, part)
            if isinstance(bound, Condition):
                self._reference(f"{where}.{part}", bound)
        for part, items in (("all", test.all_), ("any", test.any_)):
            for i, item in enumerate(items or ()):
                self._test(f"{where}.{part}[{i}]", item, concepts, seen)
        if test.not_ is not None:
            self._test(f"{where}.not", test.not_, concepts, seen)

    def _reference(self, where: str, ref: Condition) -> None:
        if ref.event is None or ref.pick not in ("first", "latest", "any"):
            self.problems.append(f"{where}: a reference is {{event: ..., pick: first|latest}}")
            return
        self._condition(where, ref)

    def _words(self, where: str, words: Sequence[str], concepts: tuple[str, ...] | None) -> None:
        pool: set[str] = set()
        is_open = False
        candidates = concepts if concepts is not None else tuple(self.lib.keys())
        for key in candidates:
            value = self.lib.concept(key).value
            if value.value_set is not None:
                pool.update(self.lib.words(value.value_set))
                is_open = is_open or value.open
            elif value.type == "text" and concepts is not None:
                is_open = True  # a text value: the words are matched against its text
        if concepts is not None and not pool and not is_open:
            self.problems.append(f"{where}: {', '.join(concepts)} has no coded value or text")
            return
        if is_open:
            self.text_tests += [TextTest(where, w, None, concepts) for w in words if w not in pool]
            return
        for word in words:
            if word not in pool:
                self.problems.append(
                    f"{where}: {word!r} is not a value word of "
                    f"{', '.join(candidates) if concepts is not None else 'any concept'}"
                    f"{_did_you_mean(word, pool)}"
                )

    def _attribute(
        self,
        where: str,
        key: str,
        values: Sequence[Scalar | None] | None,
        concepts: tuple[str, ...] | None,
    ) -> None:
        try:
            attr = self.lib.attribute(key)
        except KeyError:
            known = [*self.lib.data.attributes, *self.lib.data.patient_attributes]
            self.problems.append(f"{where}: unknown attribute {key!r}{_did_you_mean(key, known)}")
            return
        if concepts and not any(key in self.lib.concept(c).attributes for c in concepts):
            self.problems.append(f"{where}: {', '.join(concepts)} has no attribute {key!r}")
        for value in values or ():
            if value is None:
                continue
            listed = self.lib.words(attr.value_set) if attr.value_set else ()
            free = attr.type == "text" or (
                attr.type == "coded" and attr.open and value not in listed
            )
            if free and isinstance(value, str):
                self.text_tests.append(TextTest(where, value, key, concepts))
            if attr.type == "coded" and not attr.open:
                words = self.lib.words(attr.value_set or "")
                if value not in words:
                    self.problems.append(
                        f"{where}: {value!r} is not a word of {attr.value_set}"
                        f"{_did_you_mean(str(value), words)}"
                    )
            elif attr.type in ("integer", "number", "quantity") and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                self.problems.append(f"{where}: {value!r} is not a number")
            elif attr.type == "boolean" and not isinstance(value, bool):
                self.problems.append(f"{where}: {value!r} is not true or false")


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
        number = value.number if value is not None else None
        if test.number is not None and number != test.number:
            return False
        if test.number_min is not None and (number is None or number < test.number_min):
            return False
        if test.number_max is not None and (number is None or number > test.number_max):
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


def _attribute_in(found: Scalar | None, allowed: tuple[Scalar | None, ...]) -> bool:
    if found in allowed:
        return True
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
    checker = _Checker(study, library or _default_library())
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
