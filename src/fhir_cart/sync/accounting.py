"""Where every resource of a pull ended: the per-type account a pull prints and records.

Each resource read back is, exactly once, a row of the patients table (a Patient), an event
(its event is in its patient's case), ``used`` (read as part of another resource's event: a
Specimen or a Medication an event resource references), an ``other`` row, or ``excluded``
(with the reason). What is none of these is ``unaccounted`` and what is more than one is
``twice``: both are faults of fhir_cart, counted so that they are seen, never hidden.

Pure: resources and the reverse mapping's result in, counts out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fhir_cart.errors import MappingError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import ReverseResult, event_id_of
from fhir_cart.mappers.from_resources import patient_record
from fhir_cart.references import reference_key
from fhir_cart.types import Json

__all__ = ["PLACES", "TypeCount", "add_places", "by_type", "places"]

Key = tuple[str, str]

PLACES = ("patients", "events", "used", "other", "excluded")
"""Where a resource can end (the columns of the account, after ``fetched``)."""


@dataclass
class TypeCount:
    """One resource type's line of a pull's account."""

    fetched: int = 0
    patients: int = 0
    events: int = 0
    used: int = 0
    other: int = 0
    excluded: int = 0
    unaccounted: int = 0
    twice: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _key(resource: Json) -> Key:
    return str(resource.get("resourceType", "(unknown)")), str(resource.get("id"))


def _subject(resource: Json) -> str | None:
    subject = resource.get("subject") or resource.get("patient")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return reference_key(ref) if isinstance(ref, str) else None


def _references(value: Any) -> Iterator[str]:
    """Every ``reference`` string inside a resource (contained resources included)."""
    if isinstance(value, dict):
        for name, item in value.items():
            if name == "reference" and isinstance(item, str):
                yield item
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _study_ids(ctx: MappingContext, resources: Iterable[Json], centre: str) -> dict[str, str]:
    """Patient server id -> study id, as the reverse mapping names the patient."""
    out: dict[str, str] = {}
    for resource in resources:
        if resource.get("resourceType") != "Patient":
            continue
        try:
            out[str(resource.get("id"))] = patient_record(ctx, resource, centre).record.study_id
        except (ValueError, TypeError, AttributeError, KeyError, MappingError):
            continue  # a Patient the mapping could not read: it is an ``other`` row
    return out


def places(
    ctx: MappingContext,
    resources: list[Json],
    result: ReverseResult,
    *,
    centre: str = "ehr",
    study_ids: Mapping[str, str] | None = None,
) -> dict[Key, list[str]]:
    """Per resource (type, id), where it ended (see :data:`PLACES`): one place each, unless
    something is wrong (none, or more than one). ``study_ids``: Patient id -> study id of
    the Patients among ``resources`` the reverse mapping read, when the caller has them
    (else they are read again)."""
    other = {(row["resource_type"], str(row["resource_id"])) for row in result.other}
    excluded = {tuple(u.reference.split("/", 1)) for u in result.excluded}
    if study_ids is None:
        study_ids = _study_ids(ctx, resources, centre)
    events = {c.patient.study_id: {e.event_id for e in c.events} for c in result.cases}
    out: dict[Key, list[str]] = {}
    as_events: list[Json] = []
    for resource in resources:
        key = _key(resource)
        found = out.setdefault(key, [])
        if key in other:
            found.append("other")
        if key in excluded:
            found.append("excluded")
        if key[0] == "Patient":
            if study_ids.get(key[1]) in events:
                found.append("patients")
            continue
        study_id = study_ids.get(_subject(resource) or "")
        if study_id in events and event_id_of(ctx, resource, study_id) in events[study_id]:
            found.append("events")
            as_events.append(resource)
    placeless = [k for k, where in out.items() if not where]
    if placeless:  # walked only when needed: most pulls have nothing left by now
        referenced = {reference_key(ref) for r in as_events for ref in _references(r)}
        for key in placeless:
            if key[1] in referenced:
                out[key].append("used")
    return out


def by_type(
    found: Mapping[Key, list[str]], fetched: Mapping[str, int] | None = None
) -> dict[str, TypeCount]:
    """Per type, how many resources ended where; ``fetched`` per type as the pull received
    them (by default: the resources accounted for)."""
    out: dict[str, TypeCount] = {}
    add_places(out, dict(sorted(found.items())), count_fetched=fetched is None)
    for rtype, number in (fetched or {}).items():
        out.setdefault(rtype, TypeCount()).fetched = number
    return dict(sorted(out.items()))


def add_places(
    total: dict[str, TypeCount], found: Mapping[Key, list[str]], *, count_fetched: bool = True
) -> None:
    """Add where each resource of ``found`` ended into ``total`` (per type; each resource
    also counted as fetched, unless not ``count_fetched``): what ``by_type`` counts, added
    in place without a dict of counts per call (a bulk job calls it per patient)."""
    for (rtype, _), where in found.items():
        count = total.get(rtype)
        if count is None:
            count = total[rtype] = TypeCount()
        if count_fetched:
            count.fetched += 1
        if not where:
            count.unaccounted += 1
        elif len(where) > 1:
            count.twice += 1
        else:
            place = where[0]
            setattr(count, place, getattr(count, place) + 1)
