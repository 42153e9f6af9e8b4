"""A generated synthetic cohort for benchmarks: ~9 resources per patient, made lazily."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator

from fhir_cart.records import (
    AdverseEvent,
    Case,
    DiseaseStatus,
    DrugAdministration,
    MrdResult,
    PatientRecord,
    ProcedureRecord,
    When,
)


def _when(infusion: dt.date, day: int) -> When:
    return When(date=infusion + dt.timedelta(days=day), day=day, anchor="cart_infusion")


MRD_WORDS = ["negative", "positive_below_quantification"]


def make_case(index: int, rng: random.Random, centre: str = "bench") -> Case:
    infusion = dt.date(2018, 1, 1) + dt.timedelta(days=rng.randrange(2500))
    relapse = rng.random() < 0.4
    return Case(
        patient=PatientRecord(
            study_id=f"B{index:07d}", centre=centre, sex=rng.choice(["female", "male"]),
            birth_date=infusion - dt.timedelta(days=rng.randrange(700, 6500)),
            age_at_diagnosis=round(rng.uniform(1, 17), 1), disease_state="relapsed",
            last_follow_up=_when(infusion, rng.randrange(100, 1500)),
        ),
        drugs=(
            DrugAdministration(event_id="blinatumomab-c1", agent="blinatumomab", cycle=1,
                               start=_when(infusion, -70), end=_when(infusion, -42),
                               dose=15, dose_unit="ug/m2/d", intent="debulking",
                               response="response"),
        ),
        procedures=(
            ProcedureRecord(event_id="apheresis-1", kind="apheresis", when=_when(infusion, -35)),
            ProcedureRecord(event_id="cart_infusion-1", kind="cart_infusion",
                            when=_when(infusion, 0), product="tisagenlecleucel",
                            cell_dose=round(rng.uniform(0.5, 4), 2), cell_dose_unit="10*6/kg"),
        ),
        mrd=(
            MrdResult(event_id="mrd-infusion-pcr", timepoint="infusion", when=_when(infusion, 0),
                      method="pcr", qualitative=rng.choice(MRD_WORDS),
                      sensitivity=1e-4),
            MrdResult(event_id="mrd-day_28-flow", timepoint="day_28", when=_when(infusion, 28),
                      method="flow", value=0.01, unit="%", comparator="<"),
        ),
        statuses=(
            DiseaseStatus(event_id="status-cr-28", when=_when(infusion, 28),
                          status="complete_remission"),
            *((DiseaseStatus(event_id="status-relapse", when=_when(infusion, 200),
                             status="relapse", cd19="negative"),) if relapse else ()),
        ),
        adverse_events=(
            AdverseEvent(event_id="crs-1", kind="crs", grade=rng.randint(1, 3),
                         when=_when(infusion, 2)),
        ),
    )  # fmt: skip


def cohort(patients: int, seed: int = 42, centre: str = "bench") -> Iterator[Case]:
    rng = random.Random(seed)
    for index in range(patients):
        yield make_case(index, rng, centre)
