"""The hostile EHR cases of ``fixtures/ehr/*.json`` and the check of a pull against them.

The format is ``fixtures/ehr/README.md``: each file holds FHIR R4 resources and, for each of
them, where the pulled tables must hold it (``in``: patients, events, other, excluded, used)
and what that row must say. :func:`check` lists every mismatch (empty when the result is
right); the unit tests map the files offline, the integration tests through real servers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_cart.mappers.context import MappingContext, mapping_context
from fhir_cart.mappers.from_fhir import ReverseResult, event_id_of, study_id_of
from fhir_cart.records import Case, Event, When
from fhir_cart.references import reference_key

__all__ = ["EHR_DIR", "EhrCase", "check", "load_cases"]

EHR_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "ehr"
Json = dict[str, Any]

PLACES = ("patients", "events", "other", "excluded", "used")
KEYS: dict[str, frozenset[str]] = {
    "patients": frozenset({"birth_date", "sex"}),
    "events": frozenset({"concept", "code", "date", "status"}),
    "other": frozenset({"reason"}),
    "excluded": frozenset({"reason"}),
    "used": frozenset(),
}
"""The keys each place may check besides ``in`` and ``refusable`` (any other key is an error
in the file)."""
ANY_PLACE = frozenset({"in", "refusable"})
"""``refusable``: a server may refuse the resource (a date that is no date); it is then
checked offline only (fixtures/ehr/README.md)."""


@dataclass(frozen=True)
class EhrCase:
    path: Path
    about: str
    resources: list[Json]
    expect: dict[str, Json]

    @property
    def name(self) -> str:
        return self.path.name


def load_cases(folder: Path = EHR_DIR) -> list[EhrCase]:
    """Every ``*.json`` of ``folder``, in name order."""
    out = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        out.append(EhrCase(path, data["about"], data["resources"], data["expect"]))
    return out


def key_of(resource: Json) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def file_problems(case: EhrCase) -> list[str]:
    """What is wrong with the file itself: a resource without an expectation, an
    expectation without a resource, a place or key the format does not know."""
    keys = [key_of(r) for r in case.resources]
    found = [
        f"{k}: listed twice in resources" for k in sorted({k for k in keys if keys.count(k) > 1})
    ]
    found += [f"{k}: no expectation" for k in keys if k not in case.expect]
    found += [f"{k}: expectation of no resource" for k in case.expect if k not in keys]
    for key, want in case.expect.items():
        place = want.get("in")
        if place not in PLACES:
            found.append(f"{key}: 'in' is {place!r}, not one of {', '.join(PLACES)}")
            continue
        found += [
            f"{key}: key {name!r} is not checked for in={place} (known: {sorted(KEYS[place])})"
            for name in want
            if name not in ANY_PLACE and name not in KEYS[place]
        ]
    return found


def _date_text(when: When | None) -> str | None:
    """The event's date as ISO text at the source's precision."""
    return None if when is None else when.date_text


def _event_fields(event: Event) -> dict[str, Any]:
    return {
        "concept": event.concept,
        "code": event.value.code if event.value is not None else None,
        "date": _date_text(event.when),
        "status": event.status,
    }


def _patient_fields(case: Case) -> dict[str, Any]:
    return {"birth_date": case.patient.birth_text, "sex": case.patient.sex}


def _compare(key: str, want: Json, got: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {name} is {got.get(name)!r}, expected {value!r}"
        for name, value in want.items()
        if name not in ANY_PLACE and name != "reason" and got.get(name) != value
    ]


def _reason(key: str, want: Json, reasons: list[str], place: str) -> list[str]:
    wanted = want.get("reason")
    if wanted is None or any(wanted in r for r in reasons):
        return []
    return [f"{key}: {place} reason {reasons!r} does not contain {wanted!r}"]


def check(result: ReverseResult, case: EhrCase, ctx: MappingContext | None = None) -> list[str]:
    """Every way ``result`` differs from what ``case`` expects (empty when right)."""
    ctx = ctx or mapping_context()
    problems = file_problems(case)
    patients = {str(r.get("id")): r for r in case.resources if r.get("resourceType") == "Patient"}
    cases = {c.patient.study_id: c for c in result.cases}
    other: dict[str, list[str]] = {}
    for row in result.other:
        other.setdefault(f"{row['resource_type']}/{row['resource_id']}", []).append(row["reason"])
    excluded: dict[str, list[str]] = {}
    for item in result.excluded:
        excluded.setdefault(item.reference, []).append(item.reason)
    for resource in case.resources:
        key = key_of(resource)
        want = case.expect.get(key)
        if want is None or want.get("in") not in PLACES:
            continue
        place = want["in"]
        landed = [p for p, rows in (("other", other), ("excluded", excluded)) if key in rows]
        if place in ("other", "excluded"):
            if place not in landed:
                problems.append(f"{key}: not in {place} (found in {landed or 'neither'})")
                continue
            problems += _reason(key, want, (other if place == "other" else excluded)[key], place)
            continue
        if landed:
            reasons = [*other.get(key, []), *excluded.get(key, [])]
            problems.append(f"{key}: expected in {place}, found in {landed}: {reasons}")
            continue
        if place == "used":
            continue
        owner = resource if place == "patients" else patients.get(_subject(resource) or "")
        if owner is None:
            problems.append(f"{key}: its patient is not among the file's resources")
            continue
        found = cases.get(study_id_of(ctx, owner))
        if found is None:
            problems.append(f"{key}: patient {study_id_of(ctx, owner)} is not in the cases")
            continue
        if place == "patients":
            problems += _compare(key, want, _patient_fields(found))
            continue
        event_id = event_id_of(ctx, resource, found.patient.study_id)
        event = next((e for e in found.events if e.event_id == event_id), None)
        if event is None:
            problems.append(f"{key}: no event {event_id!r} of patient {found.patient.study_id}")
            continue
        problems += _compare(key, want, _event_fields(event))
    return problems


def _subject(resource: Json) -> str | None:
    subject = resource.get("subject") or resource.get("patient") or {}
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return reference_key(ref) if isinstance(ref, str) else None
