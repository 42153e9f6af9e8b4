"""Shared by the unit and integration tests of fixtures/ehr/*.json (format in
fixtures/ehr/README.md): what the pulled tables hold for each resource, checked against the
file's ``expect``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import ReverseResult, event_id_of
from fhir_cart.writers import table_rows

Json = dict[str, Any]


def key_of(resource: Json) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def _cell(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def _tables(result: ReverseResult) -> tuple[dict[str, Json], dict[str, Json]]:
    patients: dict[str, Json] = {}
    events: dict[str, Json] = {}
    for table, row in table_rows(result.cases):
        if table == "patients":
            patients[row["study_id"]] = row
        else:
            events[f"{row['study_id']}/{row['event_id']}"] = row
    return patients, events


def problems(
    ctx: MappingContext, resources: list[Json], expect: dict[str, Json], result: ReverseResult
) -> list[str]:
    """Each resource of ``resources`` whose place in the tables is not what ``expect`` says
    (empty: all as expected)."""
    patients, events = _tables(result)
    other = {f"{o['resource_type']}/{o['resource_id']}": o for o in result.other}
    found: list[str] = []
    for resource in resources:
        key, want = key_of(resource), expect[key_of(resource)]
        if want["in"] == "patients":
            row = patients.get(resource["id"])
            got = None if row is None else (_cell(row.get("birth_date")), row.get("sex"))
            if got != (want.get("birth_date"), want.get("sex")):
                found.append(f"{key}: patient row {got}, expected {want}")
        elif want["in"] == "other":
            reason = other[key]["reason"] if key in other else None
            if reason is None or want["reason"] not in reason:
                found.append(f"{key}: other row reason {reason!r}, expected {want['reason']!r}")
        else:
            study_id = resource["subject"]["reference"].split("/")[1]
            row = events.get(f"{study_id}/{event_id_of(ctx, resource, study_id)}")
            got = None if row is None else {
                "concept": row["concept"], "date": _cell(row.get("when_date")),
                **({"code": row.get("value_code")} if "code" in want else {}),
            }  # fmt: skip
            wanted = {k: want[k] for k in ("concept", "date", "code") if k in want}
            if got != wanted:
                found.append(f"{key}: event {got}, expected {wanted}")
    return found
