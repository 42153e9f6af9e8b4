"""The canonical case-series record: the hub every reader produces and every writer consumes.

One :class:`Case` per patient: the patient row plus dated events. Vocabularies are closed
(``Literal``) so that a typo in a study file is rejected at the edge, not mapped to a wrong code.
Times are kept as given: an absolute date, a day relative to an anchor event, or both
(:class:`When`). Nothing here knows about FHIR or files.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ADVERSE_EVENT_KINDS",
    "AGENTS",
    "ANCHORS",
    "AdverseEvent",
    "Case",
    "DiseaseStatus",
    "DrugAdministration",
    "MrdResult",
    "PatientRecord",
    "ProcedureRecord",
    "When",
]

Anchor = Literal[
    "diagnosis", "relapse_diagnosis", "blinatumomab_start", "apheresis", "cart_infusion", "hsct"
]
ANCHORS: tuple[str, ...] = Anchor.__args__  # type: ignore[attr-defined]

Sex = Literal["female", "male", "other", "unknown"]
DiseaseState = Literal["relapsed", "refractory", "relapsed_refractory"]
Agent = Literal[
    "blinatumomab",
    "fludarabine",
    "cyclophosphamide",
    "chemotherapy_block_hib",
    "chemotherapy_other",
    "inotuzumab_ozogamicin",
]
AGENTS: tuple[str, ...] = Agent.__args__  # type: ignore[attr-defined]
Intent = Literal["debulking", "bridging", "lymphodepletion", "salvage", "consolidation"]
Response = Literal["response", "no_response"]
ProcedureKind = Literal["apheresis", "cart_infusion", "hsct", "bone_marrow_aspiration"]
DonorType = Literal[
    "autologous", "matched_sibling", "matched_unrelated", "mismatched_unrelated", "haploidentical"
]
MrdTimepoint = Literal[
    "before_blinatumomab", "apheresis", "infusion", "day_28", "day_90", "follow_up", "relapse"
]
MrdMethod = Literal["flow", "pcr", "ngs"]
Specimen = Literal["bone_marrow", "peripheral_blood"]
MrdQualitative = Literal["negative", "positive_below_quantification", "positive"]
Comparator = Literal["<", "<=", ">=", ">"]
Status = Literal[
    "complete_remission", "partial_remission", "stable", "progression", "relapse", "refractory"
]
Cd19 = Literal["negative", "positive", "dim"]
AdverseEventKind = Literal["crs", "icans"]
ADVERSE_EVENT_KINDS: tuple[str, ...] = AdverseEventKind.__args__  # type: ignore[attr-defined]

_MODEL = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-\.]+$")


class When(BaseModel):
    """An absolute date, a day relative to an anchor event, or both (both are kept)."""

    model_config = _MODEL

    date: dt.date | None = None
    day: int | None = Field(default=None, ge=-36500, le=36500)
    anchor: Anchor | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.date is None and self.day is None:
            raise ValueError("needs a date or a relative day")
        if (self.day is None) != (self.anchor is None):
            raise ValueError("a relative day needs its anchor event, and an anchor needs a day")
        return self


class PatientRecord(BaseModel):
    model_config = _MODEL

    study_id: str = _ID
    centre: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9\-]*$")
    sex: Sex | None = None
    birth_date: dt.date | None = None
    age_at_diagnosis: float | None = Field(default=None, ge=0, le=130)
    diagnosis: Literal["b_all"] = "b_all"
    diagnosis_date: dt.date | None = None
    disease_state: DiseaseState | None = None
    death: When | None = None
    last_follow_up: When | None = None


class DrugAdministration(BaseModel):
    model_config = _MODEL

    event_id: str = _ID
    agent: Agent
    cycle: int | None = Field(default=None, ge=1, le=99)
    start: When
    end: When | None = None
    dose: float | None = Field(default=None, gt=0)
    dose_unit: str | None = Field(default=None, min_length=1, max_length=32)
    intent: Intent | None = None
    response: Response | None = None

    @model_validator(mode="after")
    def _dose_unit(self) -> Self:
        if (self.dose is None) != (self.dose_unit is None):
            raise ValueError("dose and dose_unit go together")
        return self


class ProcedureRecord(BaseModel):
    model_config = _MODEL

    event_id: str = _ID
    kind: ProcedureKind
    when: When
    product: Literal["tisagenlecleucel"] | None = None
    cell_dose: float | None = Field(default=None, gt=0)
    cell_dose_unit: str | None = Field(default=None, min_length=1, max_length=32)
    donor_type: DonorType | None = None
    conditioning: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _fits_kind(self) -> Self:
        if (self.cell_dose is None) != (self.cell_dose_unit is None):
            raise ValueError("cell_dose and cell_dose_unit go together")
        if self.kind != "cart_infusion" and (self.product or self.cell_dose is not None):
            raise ValueError("product and cell dose belong to a CAR-T infusion")
        if self.kind != "hsct" and (self.donor_type or self.conditioning):
            raise ValueError("donor type and conditioning belong to a stem-cell transplant")
        return self


class MrdResult(BaseModel):
    """Minimal residual disease. ``value`` is in ``unit`` ('%' or '1' for a fraction);
    ``comparator`` keeps results such as '<0.01 %' as reported."""

    model_config = _MODEL

    event_id: str = _ID
    timepoint: MrdTimepoint
    when: When
    method: MrdMethod
    specimen: Specimen = "bone_marrow"
    value: float | None = Field(default=None, ge=0)
    unit: Literal["%", "1"] | None = None
    comparator: Comparator | None = None
    qualitative: MrdQualitative | None = None
    sensitivity: float | None = Field(default=None, gt=0, le=1)
    marker: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _has_result(self) -> Self:
        if self.value is None and self.qualitative is None:
            raise ValueError("an MRD result needs a value or a qualitative result")
        if (self.value is None) != (self.unit is None):
            raise ValueError("an MRD value needs its unit ('%' or '1'), and a unit its value")
        if self.comparator is not None and self.value is None:
            raise ValueError("a comparator needs a value")
        if self.unit == "%" and self.value is not None and self.value > 100:
            raise ValueError("a percentage cannot exceed 100")
        if self.unit == "1" and self.value is not None and self.value > 1:
            raise ValueError("a fraction cannot exceed 1")
        return self


class DiseaseStatus(BaseModel):
    model_config = _MODEL

    event_id: str = _ID
    when: When
    status: Status
    cd19: Cd19 | None = None


class AdverseEvent(BaseModel):
    model_config = _MODEL

    event_id: str = _ID
    kind: AdverseEventKind
    grade: int = Field(ge=1, le=5)
    when: When


class Case(BaseModel):
    """One patient and every event of theirs."""

    model_config = _MODEL

    patient: PatientRecord
    drugs: tuple[DrugAdministration, ...] = ()
    procedures: tuple[ProcedureRecord, ...] = ()
    mrd: tuple[MrdResult, ...] = ()
    statuses: tuple[DiseaseStatus, ...] = ()
    adverse_events: tuple[AdverseEvent, ...] = ()

    @model_validator(mode="after")
    def _unique_event_ids(self) -> Self:
        seen: set[tuple[str, str]] = set()
        for kind, events in self.event_lists():
            for event in events:
                key = (kind, event.event_id)
                if key in seen:
                    raise ValueError(f"duplicate {kind} event id {event.event_id!r}")
                seen.add(key)
        return self

    def event_lists(
        self,
    ) -> tuple[
        tuple[str, tuple[DrugAdministration, ...]],
        tuple[str, tuple[ProcedureRecord, ...]],
        tuple[str, tuple[MrdResult, ...]],
        tuple[str, tuple[DiseaseStatus, ...]],
        tuple[str, tuple[AdverseEvent, ...]],
    ]:
        return (
            ("drug", self.drugs),
            ("procedure", self.procedures),
            ("mrd", self.mrd),
            ("status", self.statuses),
            ("adverse_event", self.adverse_events),
        )
