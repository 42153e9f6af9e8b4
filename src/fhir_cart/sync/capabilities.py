"""What one FHIR server can take, discovered once per run and corrected as it answers.

Three sources, in this order of trust:

1. settings (``ServerSettings.bundle_type``, ``max_transaction_entries``): what an operator
   knows about the server;
2. the CapabilityStatement (http://hl7.org/fhir/R4/capabilitystatement.html):
   ``rest.interaction`` transaction/batch, ``resource.conditionalUpdate`` and
   ``resource.updateCreate`` (how a push writes each type: a conditional update on the
   business identifier, else a PUT by the stable id, else nothing is sent) and
   ``resource.searchParam``;
3. refusals: a transaction refused for its size lowers the largest transaction this run
   sends (R4 has no element for that limit: Medplum's router, for one, refuses more than
   8 entries in a transaction of conditional writes), and a search parameter the server
   refuses is not asked again.

The search side (what a pull may ask): ``searchParam``, ``searchInclude``/
``searchRevInclude`` and ``operation`` per type. A pull selects each type's resources by
the patient reference parameter (``subject``, else ``patient``) with many patients per
search (R4 search: a comma is OR; nothing in a CapabilityStatement says whether a server
honours it, so :mod:`fhir_cart.sync.pull` checks the answers), and reads a type without
such a parameter by type. It does not use ``Patient/[id]/$everything``: it is one request
per patient, and a type-level ``Patient/$everything`` is rare (sekmet 0.1.1 declares the
operation and refuses it without an id; Medplum's test router has neither). Nor
``_revinclude`` on the Patient search: it would save one request per type per 100
patients, but how many included resources a page may hold is the server's own choice,
with no total to check against (Medplum's router ignores ``_revinclude`` without a word,
and declares none).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from fhir_cart.errors import FhirClientError
from fhir_cart.types import Json

__all__ = [
    "PATIENT_COMPARTMENT",
    "BundleType",
    "ServerCapabilities",
    "is_size_refusal",
    "is_unknown_search_param",
]

log = logging.getLogger(__name__)
BundleType = Literal["auto", "transaction", "batch"]

# Wording of size refusals seen on real servers; 413 is the HTTP way of saying it.
_SIZE_WORDS = re.compile(
    r"too many|too large|too big|more \w+( \w+)? than allowed|exceeds"
    r"|maximum (bundle|entries|size)",
    re.IGNORECASE,
)
_UNKNOWN_PARAM = re.compile(
    r"(unknown|unsupported|invalid|not supported).{0,40}search param|search param\w*.{0,40}"
    r"(unknown|not supported|not found)",
    re.IGNORECASE,
)


PATIENT_COMPARTMENT: tuple[str, ...] = (
    "Account",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "BodyStructure",
    "CarePlan",
    "CareTeam",
    "ChargeItem",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "Communication",
    "CommunicationRequest",
    "Composition",
    "Condition",
    "Consent",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "Encounter",
    "EnrollmentRequest",
    "EpisodeOfCare",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "Invoice",
    "List",
    "MeasureReport",
    "Media",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "MolecularSequence",
    "NutritionOrder",
    "Observation",
    "Person",
    "Procedure",
    "Provenance",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchSubject",
    "RiskAssessment",
    "ServiceRequest",
    "Specimen",
    "SupplyDelivery",
    "SupplyRequest",
    "VisionPrescription",
)
"""Resource types of R4's Patient compartment
(https://hl7.org/fhir/R4/compartmentdefinition-patient.html; Group and Schedule, which hold
patients only as members or actors, left out). A server that declares no patient search for
one of them may still hold it (sekmet-fhir 0.1.1 stores FamilyMemberHistory and Goal without
declaring them): a pull names such types instead of missing them without a word."""


def is_size_refusal(exc: FhirClientError) -> bool:
    """The whole bundle was refused for its size (not for what is in it)."""
    if exc.status == 413:
        return True
    return exc.status in (400, 422) and bool(_SIZE_WORDS.search(exc.message))


def is_unknown_search_param(exc: FhirClientError) -> bool:
    return exc.status in (400, 422) and bool(_UNKNOWN_PARAM.search(exc.message))


@dataclass
class ServerCapabilities:
    transaction: bool = True
    batch: bool = True
    max_transaction_entries: int | None = None
    """Largest transaction known to be accepted; None while no limit is known."""
    conditional_update: dict[str, bool] = field(default_factory=dict)
    """``conditionalUpdate`` per type, where the statement says it (R4 gives no default: a
    type missing here is not known either way, and is tried)."""
    update_create: dict[str, bool] = field(default_factory=dict)
    """``updateCreate`` (a client may choose a new resource's id), where the statement
    says it."""
    search_params: dict[str, set[str]] = field(default_factory=dict)
    search_rev_include: dict[str, set[str]] = field(default_factory=dict)
    """Per type, the ``_revinclude`` values a search of that type declares."""
    operations: dict[str, set[str]] = field(default_factory=dict)
    """Operations by type (``""``: system level), e.g. ``{"Patient": {"everything"}}``."""
    learned: list[str] = field(default_factory=list)
    """What this run learned from refusals, in words (for the report)."""

    @classmethod
    def from_statement(
        cls,
        statement: Json,
        *,
        bundle_type: BundleType = "auto",
        max_transaction_entries: int | None = None,
    ) -> ServerCapabilities:
        rest = (statement.get("rest") or [{}])[0]
        codes = {i.get("code") for i in rest.get("interaction", ())}
        caps = cls(
            transaction="transaction" in codes,
            batch="batch" in codes,
            max_transaction_entries=max_transaction_entries,
        )
        caps.operations[""] = {str(o.get("name")) for o in rest.get("operation", ())}
        for resource in rest.get("resource", ()):
            rtype = str(resource.get("type"))
            for name, known in (
                ("conditionalUpdate", caps.conditional_update),
                ("updateCreate", caps.update_create),
            ):
                if isinstance(resource.get(name), bool):
                    known[rtype] = resource[name]
            caps.search_params[rtype] = {
                str(p.get("name")) for p in resource.get("searchParam", ())
            }
            caps.search_rev_include[rtype] = {str(v) for v in resource.get("searchRevInclude", ())}
            caps.operations[rtype] = {str(o.get("name")) for o in resource.get("operation", ())}
        if bundle_type != "auto":
            caps.transaction = bundle_type == "transaction"
            caps.batch = caps.batch or bundle_type == "batch"
        return caps

    def writes_by_id(self, resource_type: str, *, by_identifier: bool = True) -> bool:
        """Whether a resource of this type is written by its stable id (``PUT Type/id``)
        rather than by a conditional update on its business identifier (``PUT
        Type?identifier=...``): when the statement says the type has no conditional update,
        or the type has no identifier search (``by_identifier=False``). Both writes are
        idempotent: a re-run creates no duplicate."""
        return not by_identifier or self.conditional_update.get(resource_type) is False

    def unwritable(self, resource_types: Iterable[str], no_identifier: Iterable[str] = ()) -> str:
        """Why resources of these types cannot be written idempotently here ('' if they can):
        the statement says a type has no conditional update (or it has no identifier
        search) and no updateCreate either. fhir_cart does not fall back to a plain POST,
        which would create a duplicate on every re-run."""
        plain = set(no_identifier)
        refused = sorted(
            t
            for t in set(resource_types)
            if self.update_create.get(t) is False
            and self.writes_by_id(t, by_identifier=t not in plain)
        )
        if not refused:
            return ""
        return (
            f"the server's CapabilityStatement allows neither conditional update nor update "
            f"with a client-chosen id (updateCreate) for {', '.join(refused)}: fhir_cart "
            "writes only idempotently (a re-run must not create duplicates), so nothing was "
            "sent. Hint: enable conditionalUpdate or updateCreate for these types on the server"
        )

    def fits(self, entries: int) -> bool:
        limit = self.max_transaction_entries
        return limit is None or entries <= limit

    def learn_size_refusal(self, refused: int) -> int:
        """A transaction of ``refused`` entries was refused for its size: the largest one
        this run sends from now on (halving until one is accepted)."""
        current = self.max_transaction_entries
        new = max(1, refused // 2) if current is None or current >= refused else current
        if new != current:
            self.max_transaction_entries = new
            note = f"the server refused a transaction of {refused} entries; sending at most {new}"
            self.learned.append(note)
            log.info("%s", note)
        return new

    def patient_param(self, resource_type: str) -> str | None:
        """The search parameter that selects a patient's resources of this type."""
        names = self.search_params.get(resource_type, set())
        return next((n for n in ("subject", "patient") if n in names), None)

    def compartment_types(self) -> list[str]:
        """Types the server can search by patient (``patient`` or ``subject`` declared),
        Patient itself left out: the selected patients' record, as this server holds it."""
        return sorted(
            t for t in self.search_params if t != "Patient" and self.patient_param(t) is not None
        )

    def pull_plan(self, types: tuple[str, ...] | list[str]) -> dict[str, str]:
        """In words, per type, how a pull reads the selected patients' resources."""
        plan = {}
        for rtype in types:
            param = self.patient_param(rtype)
            plan[rtype] = (
                f"{rtype}?{param}=Patient/a,Patient/b,... (many patients per search)"
                if param
                else f"{rtype} read by type (no patient search parameter declared)"
            )
        return plan

    def forget_search_param(self, resource_type: str, name: str) -> None:
        self.search_params.get(resource_type, set()).discard(name)
        self.learned.append(f"the server refused search parameter {resource_type}.{name}")
