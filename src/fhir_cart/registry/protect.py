"""What a registry patient looks like once it leaves the registry holder: pseudonymised.

Direct identifiers (the linkage identifiers and those the registry file lists) are dropped.
Open text is dropped unless the registry file's ``keep_text`` lists its attribute, and then
published only when it passes :mod:`~fhir_cart.registry.screen` (no date, no identifier-like
number, no name-like word): text attributes, words of an open value set the concept library
does not know, text values (always dropped), and the centre's source words (kept only when
they pass the screen). Numbers, booleans, dates and words of the library's value sets are
data, not open text. Dates become
days from the patient's anchor event or move by the patient's keyed offset
(:class:`~fhir_cart.registry.pseudonyms.DateTransform`). Conflict values are rendered through
the same transform, so a report shows no date the output does not.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.records import Case, Event, Scalar, Value, When, date_span
from fhir_cart.registry.definition import RegistryDef
from fhir_cart.registry.merge import Conflict
from fhir_cart.registry.pseudonyms import (
    DateTransform,
    Pseudonymiser,
    anchor_date,
    transform_event,
)
from fhir_cart.registry.screen import screened

__all__ = ["Protection", "render_value"]


@dataclass(frozen=True)
class Protection:
    definition: RegistryDef
    pseudonyms: Pseudonymiser
    library: ConceptLibrary | None = None

    def transform_for(self, case: Case) -> DateTransform:
        settings = self.definition.pseudonymisation
        anchored = anchor_date(case, settings.anchor)
        return DateTransform(
            mode=settings.dates,
            anchor=settings.anchor,
            anchor_date=None if anchored is None else anchored[0],
            anchor_precision="day" if anchored is None else anchored[1],
            offset=self.pseudonyms.offset(case.patient.study_id, settings.max_shift_days),
        )

    def publishable(self, key: str, value: Scalar) -> bool:
        """Whether attribute ``key`` may leave with ``value``: numbers, booleans and dates
        (moved by the transform) do; a coded word when the concept library knows it (or the
        value set is closed); open text only when ``keep_text`` lists ``key`` and the text
        passes the screen."""
        if self.library is None:
            return self._open_text(key, value)
        try:
            spec = self.library.attribute(key)
        except KeyError:
            return self._open_text(key, value)
        if spec.type in ("integer", "number", "quantity", "boolean", "date"):
            return True
        if spec.type == "coded" and spec.value_set is not None:
            known = not spec.open or str(value) in self.library.words(spec.value_set)
            if known:
                return True
        return self._open_text(key, value)

    def _open_text(self, key: str, value: Scalar) -> bool:
        if key not in self.definition.pseudonymisation.keep_text:
            return False
        return not isinstance(value, str) or screened(value)

    def _dates(self) -> set[str]:
        if self.library is None:
            return set()
        data = self.library.data
        every = {**data.attributes, **data.patient_attributes}
        return {k for k, a in every.items() if a.type == "date"}

    def case(self, case: Case, transform: DateTransform) -> Case:
        """The patient as the registry writes them."""
        dropped = (
            set(self.definition.linkage.identifiers)
            | set(self.definition.linkage.names)
            | set(self.definition.pseudonymisation.drop_patient_attributes)
        )
        dates = self._dates()
        attributes: dict[str, Scalar] = {}
        for key, value in case.patient.attributes.items():
            if key in dropped or not self.publishable(key, value):
                continue
            moved = transform.iso(value) if key in dates else value
            if moved is not None:
                attributes[key] = moved
        patient = case.patient.model_copy(
            update={**transform.birth(case.patient), "attributes": attributes}
        )
        events = tuple(self.event(e, transform, dates) for e in case.events)
        return Case(patient=patient, events=events)

    def event(self, event: Event, transform: DateTransform, dates: set[str]) -> Event:
        moved = transform_event(event, transform, dates)
        attributes = {k: v for k, v in moved.attributes.items() if self.publishable(k, v)}
        value, source = moved.value, moved.source_text
        if value is not None and value.text is not None:
            value = None if value.code is None else Value(code=value.code)
            source = None
        if source is not None and not screened(source):
            source = None
        return moved.model_copy(
            update={"attributes": attributes, "value": value, "source_text": source}
        )

    def conflict(self, conflict: Conflict, transform: DateTransform) -> dict[str, str]:
        """A conflict as the report shows it: values rendered through the transform."""
        dates = self._dates()
        shown = {}
        for centre, value in conflict.values.items():
            if isinstance(value, tuple):
                events = [self.event(e, transform, dates) for e in value]
                shown[centre] = "; ".join(render_event(e) for e in events)
            elif isinstance(value, When) and conflict.field == "birth_date":
                shown[centre] = render_birth(value, transform)  # at its precision
            elif isinstance(value, dt.date):
                shown[centre] = render_when(transform.when(When(date=value)))
            elif conflict.field.startswith("attributes.") and conflict.field[11:] in dates:
                moved = transform.iso(value)  # as the table holds it (none with relative dates)
                shown[centre] = "(withheld)" if moved is None else str(moved)
            elif conflict.field.startswith("attributes.") and not self.publishable(
                conflict.field[11:], value
            ):
                shown[centre] = "(withheld)"
            else:
                shown[centre] = str(value)
        return shown


def render_birth(birth: When, transform: DateTransform) -> str:
    """A birth date (at its precision) in a report: shifted in ``shift`` mode (as the tables
    hold it; a year or a month is withheld there, as in the tables); with relative dates
    (where the tables hold none) only the age in whole years at the anchor, never days, which
    would give the birth date away: a range when a partial birth or anchor date leaves it
    open."""
    assert birth.date is not None
    if transform.mode == "shift":
        moved = transform.date(birth.date, birth.precision)
        return "(withheld)" if moved is None else moved.isoformat()
    if transform.anchor_date is None:
        return "(withheld)"
    first, last = date_span(birth.date, birth.precision)
    low, high = date_span(transform.anchor_date, transform.anchor_precision)
    youngest, oldest = _age(low, last), _age(high, first)
    years = str(youngest) if youngest == oldest else f"{youngest}-{oldest}"
    return f"aged {years} years at {transform.anchor}"


def _age(at: dt.date, born: dt.date) -> int:
    return at.year - born.year - ((at.month, at.day) < (born.month, born.day))


def render_when(when: When | None) -> str:
    if when is None:
        return "no date"
    if when.date_text is not None:
        return when.date_text
    if when.day is not None:
        return f"day {when.day:+d} from {when.anchor}"
    low = "" if when.earliest_day is None else f"{when.earliest_day:+d}"
    high = "" if when.latest_day is None else f"{when.latest_day:+d}"
    return f"days {low}..{high} from {when.anchor}"


def render_value(value: Value | None) -> str:
    if value is None:
        return ""
    parts: list[str] = []
    if value.number is not None:
        parts.append(
            f"{value.comparator or ''}{value.number:g}{' ' + value.unit if value.unit else ''}"
        )
    if value.is_range:
        parts.append(f"{value.low}-{value.high}{' ' + value.unit if value.unit else ''}")
    if value.code is not None:
        parts.append(value.code)
    if value.boolean is not None:
        parts.append("yes" if value.boolean else "no")
    return " ".join(parts)


def render_event(event: Event) -> str:
    text = render_when(event.when)
    shown = render_value(event.value)
    extras = ", ".join(f"{k}={v}" for k, v in sorted(event.attributes.items()))
    return " ".join(part for part in (text, shown, f"({extras})" if extras else "") if part)
