"""The one parser of patient references (FHIR R4 3.1 "Resource References").

Forms allowed by the spec and seen from servers: relative ``Patient/p1``, versioned
``Patient/p1/_history/3``, absolute ``https://host/fhir/Patient/p1`` (with or without
``/_history/n``). ``urn:uuid:`` references only resolve inside a Bundle, so they name no
server-side patient here; neither does a reference to any other resource type, a bare id,
or a contained one (``#p1``).

Used by the sync code. ``fhir_cart.mappers.from_fhir.reference_key`` still parses on its
own (that module is being rewritten elsewhere); it should call :func:`patient_id` for
Patient references once that work lands.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["patient_id", "subject_patient_id"]

# https://hl7.org/fhir/R4/datatypes.html#id: [A-Za-z0-9\-\.]{1,64}
_ID = r"[A-Za-z0-9\-.]{1,64}"
_PATIENT = re.compile(rf"(?:^|/)Patient/({_ID})(?:/_history/{_ID})?/?$")


def patient_id(reference: str | None) -> str | None:
    """The Patient id a reference points to, or None when it names no server Patient."""
    if not reference or reference.startswith(("#", "urn:")):
        return None
    match = _PATIENT.search(reference.split("?", 1)[0])
    return match.group(1) if match else None


def subject_patient_id(resource: dict[str, Any]) -> str | None:
    """The Patient id of a resource's ``subject`` (or ``patient``, as on AdverseEvent's
    older forms and Immunization), or None when absent or not a Patient reference."""
    for name in ("subject", "patient"):
        value = resource.get(name)
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            return patient_id(value["reference"])
    return None
