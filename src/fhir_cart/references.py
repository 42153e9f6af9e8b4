"""The one parser of patient references (FHIR R4 3.1 "Resource References").

Forms allowed by the spec and seen from servers: relative ``Patient/p1``, versioned
``Patient/p1/_history/3``, absolute ``https://host/fhir/Patient/p1`` (with or without
``/_history/n``). ``urn:uuid:`` references only resolve inside a Bundle, so they name no
server-side patient here; neither does a reference to any other resource type, a bare id,
or a contained one (``#p1``).

:func:`reference_key` answers the wider question the reverse mappers ask inside one data
set (which resource a reference, ``urn:uuid:`` and ``#contained`` included, points at);
:func:`patient_id` the sync code's (which server Patient). Both take the reference apart
with the same :func:`_path`.
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = ["id_problem", "patient_id", "reference_key", "server_id", "subject_patient_id"]

# https://hl7.org/fhir/R4/datatypes.html#id: [A-Za-z0-9\-\.]{1,64}
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a resource id in a URL path, or None. The FHIR id pattern
    admits '.' and '..', but in a path they are dot-segments: ``Group/../$export`` is the
    system-wide ``/$export`` (RFC 3986 5.2.4), so ids of dots only are refused too."""
    if not _ID.fullmatch(value):
        return "not a FHIR id (1-64 letters, digits, '-' and '.')"
    if not value.strip("."):
        return "only dots: in a URL it would name another path, not a resource"
    return None


def _path(reference: str) -> list[str]:
    """The reference's path segments, without query and without ``/_history/<version>``."""
    parts = reference.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return parts


@functools.lru_cache(maxsize=16384)  # a patient's resources all name it: read once
def reference_key(reference: str) -> str:
    """The logical id a reference points at, whatever its form: ``Patient/p1``,
    ``Patient/p1/_history/3``, ``http://host/fhir/Patient/p1[/_history/3]``, ``urn:uuid:X``,
    ``#contained``."""
    for prefix in ("urn:uuid:", "urn:oid:", "#"):
        if reference.startswith(prefix):
            return reference[len(prefix) :]
    return _path(reference)[-1]


def patient_id(reference: str | None) -> str | None:
    """The Patient id a reference points to, or None when it names no server Patient."""
    return server_id(reference, "Patient")


def server_id(reference: str | None, resource_type: str) -> str | None:
    """The id of the server resource of ``resource_type`` a reference points to (None for
    another type, a contained one, a ``urn:``, or an id that is not a FHIR id)."""
    if not reference or reference.startswith(("#", "urn:")):
        return None
    parts = _path(reference)
    if len(parts) < 2 or parts[-2] != resource_type or not _ID.fullmatch(parts[-1]):
        return None
    return parts[-1]


def subject_patient_id(resource: dict[str, Any]) -> str | None:
    """The Patient id of a resource's ``subject`` (or ``patient``, as on AdverseEvent's
    older forms and Immunization), or None when absent or not a Patient reference."""
    for name in ("subject", "patient"):
        value = resource.get(name)
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            return patient_id(value["reference"])
    return None
