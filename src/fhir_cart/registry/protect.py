"""What a registry patient looks like once it leaves the registry holder: pseudonymised.

Direct identifiers (the linkage identifiers and those the registry file lists) and free text
(text attributes, text values, source words that look like a date) are dropped; dates become
days from the patient's anchor event or move by the patient's keyed offset
(:class:`~fhir_cart.registry.pseudonyms.DateTransform`). Conflict values are rendered through
the same transform, so a report shows no date the output does not.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from fhir_cart.concepts import ConceptLibrary
from fhir_cart.records import Case, Event, Scalar, Value, When
from fhir_cart.registry.definition import RegistryDef
from fhir_cart.registry.merge import Conflict
from fhir_cart.registry.pseudonyms import (
    DateTransform,
    Pseudonymiser,
    anchor_date,
    transform_event,
)

__all__ = ["Protection", "render_value"]

_DATE_LIKE = re.compile(r"\d{1,4}\s*[./\-]\s*\d{1,2}\s*[./\-]\s*\d{2,4}")


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

    def _type(self, key: str) -> str:
        if self.library is None:
            return "text"
        try:
            return self.library.attribute(key).type
        except KeyError:
            return "text"

    def _keep(self, key: str) -> bool:
        settings = self.definition.pseudonymisation
        return key in settings.keep_text or self._type(key) != "text"

    def _dates(self) -> set[str]:
        if self.library is None:
            return set()
        data = self.library.data
        every = {**data.attributes, **data.patient_attributes}
        return {k for k, a in every.items() if a.type == "date"}

    def case(self, case: Case, transform: DateTransform) -> Case:
        """The patient as the registry writes them."""
        dropped = set(self.definition.linkage.identifiers) | set(
            self.definition.pseudonymisation.drop_patient_attributes
        )
        dates = self._dates()
        attributes: dict[str, Scalar] = {}
        for key, value in case.patient.attributes.items():
            if key in dropped or not self._keep(key):
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
        attributes = {k: v for k, v in moved.attributes.items() if self._keep(k)}
        value, source = moved.value, moved.source_text
        if value is not None and value.text is not None:
            value = None if value.code is None else Value(code=value.code)
            source = None
        if source is not None and _DATE_LIKE.search(source):
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
            elif isinstance(value, dt.date):
                shown[centre] = render_when(transform.when(When(date=value)))
            elif isinstance(value, When):  # a birth date at its precision
                shown[centre] = render_when(transform.when(value))
            elif conflict.field.startswith("attributes.") and not self._keep(conflict.field[11:]):
                shown[centre] = "(withheld)"
            else:
                shown[centre] = str(value)
        return shown


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
