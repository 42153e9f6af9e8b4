"""Study definitions: what a case-series paper reports, as data (the evaluation is
:mod:`fhir_cart.report.evaluate`).

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fhir_cart.errors import ConfigError
from fhir_cart.library import Library, names_a_file
from fhir_cart.library.checks import Checker, did_you_mean
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.library.yamlfile import read_yaml, validate_model
from fhir_cart.records import COMPARATORS, Scalar

__all__ = [
    "Condition",
    "EventTest",
    "Measure",
    "Plots",
    "StudyDefinition",
    "SurvivalCurve",
    "SwimmerPlot",
    "TextTest",
    "load_study",
    "names_a_file",
    "parse_study",
    "study_path",
]

_STRICT = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
_KEY = r"^[a-z][a-z0-9_]*$"
Pick = Literal["any", "all", "first", "latest"]
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
            for k, v in (
                ("event", self.event),
                ("all", self.all_),
                ("any", self.any_),
                ("not", self.not_),
            )
            if v is not None
        ]
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
    survival_title: str | None = None
    """The Kaplan-Meier plot's title (default: says the curves are of the data given)."""


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
    return parse_study(raw, concepts or library.concepts(), path=path)


def parse_study(
    raw: Any,
    library: ConceptLibrary | None = None,
    *,
    where: str = "study definition",
    path: Path | None = None,
) -> StudyDefinition:
    """:func:`load_study` on already-parsed YAML (``path``: the file it came from)."""
    study = validate_model(raw, StudyDefinition, where, path)
    where = f"{where} {path}" if path is not None else where
    problems = _StudyChecker(study, library or _default_library()).run()
    if problems:
        raise ConfigError(f"{where} is invalid: " + "; ".join(problems))
    return study


@dataclass(frozen=True)
class TextTest:
    """A word of a study file matched against free text (case and spaces ignored)."""

    where: str
    word: str
    attribute: str | None
    """None: the event's value text; else the attribute's key."""
    concepts: tuple[str, ...] | None
    """The concepts whose events it tests (None: any)."""


class _StudyChecker(Checker):
    """Cross-checks a parsed study against the concept library."""

    def __init__(self, study: StudyDefinition, library: ConceptLibrary) -> None:
        super().__init__(library)
        self.study = study
        self.text_tests: list[TextTest] = []
        """Words matched against free text (an open value set, a text value or attribute)."""

    def run(self) -> list[str]:
        study = self.study
        if not self.lib.has(study.anchor):
            self.unknown_concept("anchor", study.anchor)
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
                self.problems.append(f"{where}: no predicate {test!r}{did_you_mean(test, choices)}")
            elif test in seen:
                self.problems.append(f"{where}: predicate {test!r} refers to itself")
            else:
                self._test(where, self.study.predicates[test], concepts, (*seen, test))
            return
        if test.concept is not None:
            for key in test.concept:
                if not self.lib.has(key):
                    self.unknown_concept(f"{where}.concept", key)
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
                    f"{did_you_mean(word, pool)}"
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
            self.problems.append(f"{where}: unknown attribute {key!r}{did_you_mean(key, known)}")
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
                        f"{did_you_mean(str(value), words)}"
                    )
            elif attr.type in ("integer", "number", "quantity") and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                self.problems.append(f"{where}: {value!r} is not a number")
            elif attr.type == "boolean" and not isinstance(value, bool):
                self.problems.append(f"{where}: {value!r} is not true or false")
