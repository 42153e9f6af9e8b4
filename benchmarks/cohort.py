"""A generated synthetic cohort for benchmarks: ~9 resources per patient, made lazily.

The same clinical content as before the open model (issue 8): a diagnosis, blinatumomab,
apheresis and CAR-T infusion, two MRD results, one or two disease statuses (the relapse
with CD19 negative), CRS and the last follow-up, now as events of the concept library.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator

from fhir_cart.records import Case, Event, PatientRecord, Value, When


def _when(infusion: dt.date, day: int) -> When:
    return When(date=infusion + dt.timedelta(days=day), day=day, anchor="cart_infusion")


MRD_WORDS = ["negative", "positive_below_quantification"]


def make_case(index: int, rng: random.Random, centre: str = "bench") -> Case:
    infusion = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(2500))  # all in the past
    relapse = rng.random() < 0.4
    return Case(
        patient=PatientRecord(
            study_id=f"B{index:07d}",
            centre=centre,
            sex=rng.choice(["female", "male"]),
            birth_date=infusion - dt.timedelta(days=rng.randrange(700, 6500)),
            attributes={"age_at_diagnosis": round(rng.uniform(1, 17), 1)},
        ),
        events=(
            Event(
                event_id="diagnosis",
                concept="diagnosis",
                value=Value(code="b_all"),
                attributes={"disease_state": "relapsed"},
            ),
            Event(
                event_id="blinatumomab-c1",
                concept="blinatumomab",
                when=_when(infusion, -70),
                end=_when(infusion, -42),
                value=Value(number=15, unit="ug/m2/d"),
                attributes={"cycle": 1, "intent": "debulking", "response": "response"},
            ),
            Event(event_id="apheresis-1", concept="apheresis", when=_when(infusion, -35)),
            Event(
                event_id="cart_infusion-1",
                concept="cart_infusion",
                when=_when(infusion, 0),
                attributes={
                    "product": "tisagenlecleucel",
                    "cell_dose": round(rng.uniform(0.5, 4), 2),
                },
            ),
            Event(
                event_id="mrd-infusion-pcr",
                concept="mrd",
                when=_when(infusion, 0),
                value=Value(code=rng.choice(MRD_WORDS)),
                attributes={
                    "method": "pcr",
                    "specimen": "bone_marrow",
                    "sensitivity": 1e-4,
                    "timepoint": "infusion",
                },
            ),
            Event(
                event_id="mrd-day_28-flow",
                concept="mrd",
                when=_when(infusion, 28),
                value=Value(number=0.01, unit="%", comparator="<"),
                attributes={"method": "flow", "specimen": "bone_marrow", "timepoint": "day_28"},
            ),
            Event(
                event_id="status-cr-28",
                concept="disease_status",
                when=_when(infusion, 28),
                value=Value(code="complete_remission"),
            ),
            *(
                (
                    Event(
                        event_id="status-relapse",
                        concept="disease_status",
                        when=_when(infusion, 200),
                        value=Value(code="relapse"),
                        attributes={"cd19": "negative"},
                    ),
                )
                if relapse
                else ()
            ),
            Event(
                event_id="crs-1",
                concept="crs",
                when=_when(infusion, 2),
                attributes={"grade": rng.randint(1, 3)},
            ),
            Event(
                event_id="last_follow_up",
                concept="last_follow_up",
                when=_when(infusion, rng.randrange(100, 1500)),
            ),
        ),
    )


def cohort(patients: int, seed: int = 42, centre: str = "bench") -> Iterator[Case]:
    rng = random.Random(seed)
    for index in range(patients):
        yield make_case(index, rng, centre)


def main() -> None:
    """``python benchmarks/cohort.py N FOLDER``: the cohort of N patients as the canonical
    CSV tables (patients.csv, events.csv) in FOLDER, streaming."""
    import sys
    from pathlib import Path

    from fhir_cart.writers import write_study

    patients, folder = int(sys.argv[1]), Path(sys.argv[2])
    write_study(cohort(patients), folder, "csv")


if __name__ == "__main__":
    main()
