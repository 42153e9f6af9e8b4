"""The data-quality report of a registry build, per centre: completeness per variable,
values outside the range the concept library allows, unit conversions the reader did, local
words the mappings did not map (kept as text), unmapped columns and rejected rows.

It is published with the registry, so it carries pseudonyms and field names only: no date, no
source value (an out-of-range value is named by its field and direction, not shown: a
number out of range is often an identifier typed in the wrong column), no reject text (it
quotes the cell) and no source row. A local word is shown only when the registry file's
``keep_text`` lists its attribute (or, for a value, its concept) and the word passes
:mod:`~fhir_cart.registry.screen`; every other is counted as ``(withheld)``."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_cart.errors import Reject
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.records import Case, Event
from fhir_cart.registry.pseudonyms import Pseudonymiser
from fhir_cart.registry.screen import screened

__all__ = ["CentreQuality", "centre_quality"]

_UNIT_IN_TEXT = re.compile(
    r"^\s*[<>=]*\s*[-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?\s*(?P<unit>[^\d\s.,].*?)\s*$"
)


@dataclass
class CentreQuality:
    centre: str
    patients: int
    events: int
    completeness: dict[str, float] = field(default_factory=dict)
    """Variable -> share of the centre's patients that have it."""
    out_of_range: list[dict[str, Any]] = field(default_factory=list)
    conversions: dict[str, int] = field(default_factory=dict)
    """'concept: source unit -> registry unit' -> count."""
    unmapped_words: dict[str, int] = field(default_factory=dict)
    """'concept.field: word' -> count."""
    unmapped_columns: list[str] = field(default_factory=list)
    rejects: dict[str, int] = field(default_factory=dict)
    """``table.column`` (``table`` for a whole row) -> count of rejected cells or rows (the
    reasons, values and rows are not repeated here: they quote the source)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "centre": self.centre,
            "patients": self.patients,
            "events": self.events,
            "completeness": dict(sorted(self.completeness.items())),
            "out_of_range": sorted(self.out_of_range, key=lambda r: sorted(r.items())),
            "unit_conversions": dict(sorted(self.conversions.items())),
            "unmapped_words": dict(sorted(self.unmapped_words.items())),
            "unmapped_columns": sorted(self.unmapped_columns),
            "rejects": dict(sorted(self.rejects.items())),
        }


def _completeness(cases: Sequence[Case], library: ConceptLibrary | None) -> dict[str, float]:
    total = max(len(cases), 1)
    counts: Counter[str] = Counter()
    for case in cases:
        present = {"sex"} if case.patient.sex not in (None, "unknown") else set()
        present |= {"birth_date"} if case.patient.birth_date else set()
        present |= {f"attributes.{k}" for k in case.patient.attributes}
        present |= {e.concept for e in case.events}
        present |= {f"{e.concept}.value" for e in case.events if e.value is not None}
        present |= {f"{e.concept}.date" for e in case.events if e.when and e.when.date}
        counts.update(present)
    variables = set(counts) | {"sex", "birth_date"}
    if library is not None:
        variables |= {f"attributes.{k}" for k in library.data.patient_attributes}
    return {v: round(counts[v] / total, 4) for v in sorted(variables)}


def _limits(event: Event, library: ConceptLibrary | None) -> tuple[float | None, float | None]:
    if library is None or not library.has(event.concept):
        return None, None
    value = library.concept(event.concept).value
    return value.min, value.max


def _range_problems(
    case: Case, event: Event, library: ConceptLibrary | None, pseudonym: str
) -> list[dict[str, Any]]:
    low, high = _limits(event, library)
    number = None if event.value is None else event.value.number
    found = []
    if number is not None and (
        (low is not None and number < low) or (high is not None and number > high)
    ):
        found.append(
            {
                "patient": pseudonym,
                "field": event.concept,
                "allowed": [low, high],
                "direction": "below" if low is not None and number < low else "above",
            }
        )
    for key, value in event.attributes.items():
        if library is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        try:
            spec = library.attribute(key)
        except KeyError:
            continue
        if (spec.min is not None and value < spec.min) or (
            spec.max is not None and value > spec.max
        ):
            found.append(
                {
                    "patient": pseudonym,
                    "field": f"{event.concept}.{key}",
                    "allowed": [spec.min, spec.max],
                    "direction": "below" if spec.min is not None and value < spec.min else "above",
                }
            )
    return found


def _conversion(event: Event) -> str | None:
    if event.value is None or event.value.unit is None or not event.source_text:
        return None
    match = _UNIT_IN_TEXT.match(event.source_text)
    if match is None:  # a bare number: its unit came from a unit column or the mapping
        number = _number(event.source_text)
        changed = number is not None and number != event.value.number
        return f"{event.concept}: converted to {event.value.unit}" if changed else None
    written = match.group("unit").replace(" ", "")
    return (
        None if written == event.value.unit else f"{event.concept}: {written} -> {event.value.unit}"
    )


def _number(text: str) -> float | None:
    try:
        return float(text.strip().lstrip("<>=").replace(",", "."))
    except ValueError:
        return None


def _shown(name: str, word: str, keep_text: Collection[str]) -> str:
    return word if name in keep_text and screened(word) else "(withheld)"


def _unmapped(
    event: Event, library: ConceptLibrary | None, keep_text: Collection[str] = ()
) -> list[str]:
    found = []
    text = None if event.value is None else event.value.text
    known = library is not None and library.has(event.concept)
    if text is not None and known and library.concept(event.concept).value.value_set:  # type: ignore[union-attr]
        found.append(f"{event.concept}.value: {_shown(event.concept, text, keep_text)}")
    for key, value in event.attributes.items():
        if library is None or not isinstance(value, str):
            continue
        try:
            spec = library.attribute(key)
        except KeyError:
            continue
        if spec.type == "coded" and spec.value_set and value not in library.words(spec.value_set):
            found.append(f"{event.concept}.{key}: {_shown(key, value, keep_text)}")
    return found


def centre_quality(
    centre: str,
    cases: Sequence[Case],
    *,
    library: ConceptLibrary | None,
    pseudonyms: Pseudonymiser,
    unmapped_columns: Sequence[Any] = (),
    rejects: Sequence[Reject] = (),
    keep_text: Collection[str] = (),
    sealed: bool = False,
) -> CentreQuality:
    report = CentreQuality(centre, len(cases), sum(len(c.events) for c in cases))
    report.completeness = _completeness(cases, library)
    conversions: Counter[str] = Counter()
    words: Counter[str] = Counter()
    for case in cases:
        study_id = case.patient.study_id
        pseudonym = study_id if sealed else pseudonyms.patient(centre, study_id)
        for event in case.events:
            report.out_of_range += _range_problems(case, event, library, pseudonym)
            converted = _conversion(event)
            conversions.update([converted] if converted else [])
            words.update(_unmapped(event, library, keep_text))
    report.conversions = dict(conversions)
    report.unmapped_words = dict(words)
    report.unmapped_columns = [_column(c) for c in unmapped_columns]
    report.rejects = dict(Counter(_reject_field(r) for r in rejects))
    return report


def _reject_field(reject: Reject) -> str:
    return ".".join(str(p) for p in (reject.table, reject.column) if p) or "row"


def _column(where: Any) -> str:
    """An unmapped column by its header only (the file and sheet names stay at the centre)."""
    if isinstance(where, tuple | list):
        return str(where[-1])
    column = getattr(where, "column", None)
    return str(column) if column else str(where).rsplit(" / ", 1)[-1]
