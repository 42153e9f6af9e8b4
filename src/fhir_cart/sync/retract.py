"""Records removed from a study file: retracted on the server, never silently left there.

After a push, the resources the server holds (as the cache recorded them) for the patients
in the file, but which the file no longer produces, are either marked ``entered-in-error``
(the default; FHIR's way to withdraw a record, https://hl7.org/fhir/R4/lifecycle.html) or
deleted, as the server's settings choose (``on_removed``). AdverseEvent has no
entered-in-error status in R4, so it is deleted either way. Patients absent from the file
are left alone: a file may hold part of a cohort.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from fhir_cart.cache import Cache, Outcome
from fhir_cart.client import FhirClient
from fhir_cart.errors import FhirClientError
from fhir_cart.mappers.kinds import RESOURCE_KINDS
from fhir_cart.references import patient_id
from fhir_cart.types import Json

__all__ = ["Removed", "removed_records", "retract"]

log = logging.getLogger(__name__)
Key = tuple[str, str, str]
Mode = Literal["entered-in-error", "delete"]

_WITHDRAWAL = {k.type: k.withdrawal for k in RESOURCE_KINDS}
_CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


@dataclass(frozen=True)
class Removed:
    key: Key
    server_id: str
    version_id: str | None
    content: Json


def removed_records(
    cache: Cache, server: str, planned: Iterable[Key], resource_id: Callable[[str, str], str]
) -> tuple[list[Removed], dict[str, str]]:
    """Resources of the file's patients that the file no longer produces, and the map from
    each urn:uuid the cache's contents use to its ``Type/server-id`` (to fix references).
    ``resource_id`` gives the stable id a business identifier maps to (the urn's uuid).
    Only keys and server ids are read, and the content of resources the file lacks; with
    none removed, both are empty."""
    in_file = set(planned)
    ids = cache.sent_ids(server=server)
    patients = {sid for k, sid in ids.items() if k[0] == "Patient" and k in in_file}
    others = [k for k in ids if k not in in_file and k[0] != "Patient"]
    if not patients or not others:
        return [], {}
    urns = {f"urn:uuid:{resource_id(k[1], k[2])}": f"{k[0]}/{sid}" for k, sid in ids.items()}
    out = []
    for key, sid, version, content in cache.sent_content(server=server, keys=others):
        subject = content.get("subject") or content.get("patient") or {}
        ref = str(subject.get("reference", "")) if isinstance(subject, dict) else ""
        if patient_id(urns.get(ref, ref)) in patients:
            out.append(Removed(key, sid, version, content))
    return out, urns


def _withdrawn(item: Removed, urns: dict[str, str]) -> Json | None:
    """The resource marked entered-in-error, or None where its type has no such status."""
    text: Json = _replace_urns(item.content, urns)
    text["id"] = item.server_id
    text.pop("meta", None)
    withdrawal = _WITHDRAWAL.get(item.key[0])
    if withdrawal == "status":
        text["status"] = "entered-in-error"
        return text
    if withdrawal == "verification":
        text.pop("clinicalStatus", None)  # con-5: none when entered-in-error
        text["verificationStatus"] = {
            "coding": [{"system": _CONDITION_VERIFICATION, "code": "entered-in-error"}]
        }
        return text
    return None


def _replace_urns(value: Any, urns: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _replace_urns(v, urns) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_urns(v, urns) for v in value]
    if isinstance(value, str) and value.startswith("urn:uuid:"):
        return urns.get(value, value)
    return value


async def retract(
    removed: list[Removed], urns: dict[str, str], *, client: FhirClient, mode: Mode
) -> list[Outcome]:
    """Withdraw each removed record; one outcome each (``entered-in-error``, ``deleted``
    or ``failed``)."""
    outcomes = []
    for item in removed:
        path = f"{item.key[0]}/{item.server_id}"
        withdrawn = _withdrawn(item, urns) if mode == "entered-in-error" else None
        try:
            if withdrawn is not None:
                headers = {"If-Match": f'W/"{item.version_id}"'} if item.version_id else None
                await client.request("PUT", path, body=withdrawn, headers=headers, idempotent=True)
                outcomes.append(Outcome(item.key, "entered-in-error", 200))
            else:
                await client.request("DELETE", path, idempotent=True)
                outcomes.append(Outcome(item.key, "deleted", 200))
        except FhirClientError as exc:
            if exc.status in (404, 410) and withdrawn is None:
                outcomes.append(Outcome(item.key, "deleted", exc.status))  # already gone
                continue
            outcomes.append(Outcome(item.key, "failed", exc.status, exc.message))
    if outcomes:
        log.warning(
            "%d records removed from the study file were withdrawn on the server", len(outcomes)
        )
    return outcomes
