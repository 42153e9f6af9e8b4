"""The one table of FHIR resource kinds fhir_cart writes and reads back.

Every consumer reads this table instead of keeping its own list: the identifier kind of a
business identifier (``<base>/<centre>/<kind>``, :mod:`.to_fhir`, :mod:`.context`), the
concept kind a resource stands for (:mod:`.from_fhir`), whether the server can find it by
identifier (:mod:`fhir_cart.bundle`, a conditional write), how a removed record is
withdrawn (:mod:`fhir_cart.sync.retract`), which types a pull fetches per patient
(:mod:`fhir_cart.sync.pull`), where the SQL-on-FHIR views read an event
(:mod:`fhir_cart.conformance.views`) and which elements its extensions may sit on
(:mod:`fhir_cart.conformance.contexts`). docs/architecture.md, "Add a FHIR resource kind",
says which files a new kind touches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "EVENT_TYPES",
    "IDENTIFIER_KINDS",
    "ID_KINDS",
    "READ_ONLY_TYPES",
    "RESOURCE_KINDS",
    "ResourceKind",
    "kind_of_type",
]

Withdrawal = Literal["status", "verification", "delete", "never"]
"""How a record removed from the study is withdrawn on the server: ``status`` set to
``entered-in-error``; ``verification`` (Condition: ``verificationStatus`` entered-in-error,
no clinical status); ``delete`` (the type has no entered-in-error status in R4); ``never``
(the Patient: a patient of the file is never a removed record, and patients absent from a
file are left alone)."""


@dataclass(frozen=True)
class ResourceKind:
    type: str
    """The FHIR R4 resource type."""
    identifier_kind: str
    """The last part of its business identifier system, ``<base>/<centre>/<kind>``."""
    concept_kind: str | None
    """The concept kind (mappings/concepts.yaml ``kind``) written as this type (None: the
    Patient, which carries ``death`` and ``follow_up``)."""
    patient_param: str | None = "subject"
    """The R4 search parameter naming its patient (what a server is asked for first; the
    server's CapabilityStatement decides in the end)."""
    identifier_search: bool = True
    """Whether R4 defines an ``identifier`` search for it (else written by PUT to its
    stable id, which is idempotent too: R4 AdverseEvent has none)."""
    single_identifier: bool = False
    """``identifier`` is 0..1 in R4 (one object, not a list): AdverseEvent."""
    withdrawal: Withdrawal = "status"
    """How a record removed from the study file is withdrawn (see :data:`Withdrawal`)."""
    code: str = "code"
    """FHIRPath of the element holding the concept's code (the SQL-on-FHIR views)."""
    when: tuple[str, ...] = ()
    """FHIRPaths of the event's time (start), in the order the views try them."""
    end: tuple[str, ...] = ()
    """FHIRPaths of the event's end."""
    view_value: str = "none"
    """What the views read as the value: ``result`` (an Observation's value[x]), ``dose`` (a
    MedicationAdministration's), ``none``."""
    day_hosts: tuple[str, ...] = ()
    """Elements of the type that carry the ``relative-day`` extension (a Period's start and
    end are named on the Period datatype)."""
    extensions: tuple[str, ...] = ()
    """Structural extensions the type carries besides ``source-text``, ``origin`` and
    ``assumed`` (which every event type carries): ``value``, ``value-code``, ``end``."""
    only_places: tuple[str, ...] = ()
    """Attribute places (``AttributeDef.fhir``) that exist on this type alone."""


RESOURCE_KINDS: tuple[ResourceKind, ...] = (
    ResourceKind(
        "Patient",
        "patient",
        None,
        patient_param="_id",
        withdrawal="never",
        day_hosts=("Patient.deceased[x]",),
    ),
    ResourceKind(
        "Condition",
        "condition",
        "condition",
        withdrawal="verification",
        when=("onset.ofType(dateTime)",),
        end=("abatement.ofType(dateTime)",),
        day_hosts=("Condition.onset[x]", "Condition.abatement[x]"),
        extensions=("value",),
    ),
    ResourceKind(
        "MedicationAdministration",
        "medication-administration",
        "medication",
        code="medication.ofType(CodeableConcept)",
        when=("effective.ofType(dateTime)", "effective.ofType(Period).start"),
        end=("effective.ofType(Period).end",),
        view_value="dose",
        extensions=("value", "value-code"),
    ),
    ResourceKind(
        "Procedure",
        "procedure",
        "procedure",
        when=("performed.ofType(dateTime)", "performed.ofType(Period).start"),
        end=("performed.ofType(Period).end",),
        day_hosts=("Procedure.performed[x]",),
        extensions=("value", "value-code"),
        only_places=("used_code",),
    ),
    ResourceKind(
        "Observation",
        "observation",
        "observation",
        when=("effective.ofType(dateTime)", "effective.ofType(Period).start"),
        end=("effective.ofType(Period).end",),
        view_value="result",
        day_hosts=("Observation.effective[x]",),
        only_places=("method", "component"),
    ),
    ResourceKind(
        "AdverseEvent",
        "adverse-event",
        "adverse_event",
        identifier_search=False,
        single_identifier=True,
        withdrawal="delete",
        code="event",
        when=("date",),
        day_hosts=("AdverseEvent.date",),
        extensions=("value", "value-code", "end"),
    ),
)
"""Every type fhir_cart writes, in the order a patient's resources are written."""

READ_ONLY_TYPES: tuple[str, ...] = (
    "MedicationRequest",
    "MedicationStatement",
    "MedicationDispense",
    "Specimen",
)
"""Types a pull fetches and reads back (as events, or a specimen an Observation names) but
fhir_cart never writes."""

EVENT_TYPES: tuple[str, ...] = (
    *(k.type for k in RESOURCE_KINDS if k.concept_kind is not None),
    *READ_ONLY_TYPES,
)
"""Types a pull fetches per patient (besides the Patient)."""

ID_KINDS: dict[str, str] = {k.type: k.identifier_kind for k in RESOURCE_KINDS}
"""Identifier kind of each resource type fhir_cart writes."""

IDENTIFIER_KINDS: frozenset[str] = frozenset(ID_KINDS.values())
"""Kinds of business identifier; each has its own identifier system per centre."""

_BY_TYPE = {k.type: k for k in RESOURCE_KINDS}


def kind_of_type(resource_type: str) -> ResourceKind | None:
    """The row of a resource type fhir_cart writes (None: a type it does not write)."""
    return _BY_TYPE.get(resource_type)
