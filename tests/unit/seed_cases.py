"""The SYNTHETIC seed cohort as open-model Cases, converted straight from the generator's
rows (fixtures/seed/make_seed.py) with the meaning the seed mapping gives them. Used to test
summaries and plots without the reader, and to check the reader's output against."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from fhir_cart.records import Case, Event, PatientRecord, Value, When

ROOT = Path(__file__).resolve().parents[2]
ANCHOR = "cart_infusion"

DRUGS: dict[str, tuple[str, dict[str, Any]]] = {
    "Blinatumomab": ("blinatumomab", {}),
    "Fludarabine": ("fludarabine", {}),
    "Cyclophosphamide": ("cyclophosphamide", {}),
    "HIB block": ("chemotherapy", {"regimen": "hib_block"}),
}
INTENT = {
    "debulking before apheresis": "debulking",
    "bridging": "bridging",
    "LD": "lymphodepletion",
    "salvage": "salvage",
}
RESPONSE = {"responded": "response", "no response": "no_response"}
PROCEDURE = {"Apheresis": "apheresis", "CAR-T infusion": "cart_infusion", "HSCT": "hsct"}
TIMEPOINT = {"pre-blina": "before_blinatumomab", "d+28": "day_28", "last FU": "follow_up"}
MRD_WORD = {"neg": "negative", "low pos": "positive_below_quantification", "pos": "positive"}
STATE = {"rel/ref": "relapsed_refractory"}


def make_seed() -> ModuleType:
    path = ROOT / "fixtures" / "seed" / "make_seed.py"
    spec = importlib.util.spec_from_file_location("make_seed", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _when(infusion: dt.date, day: int | None) -> When | None:
    if day is None:
        return None
    return When(date=infusion + dt.timedelta(days=day), day=day, anchor=ANCHOR)


def seed_cases() -> list[Case]:
    seed = make_seed()
    by_patient: dict[str, list[Event]] = {}
    counters: dict[tuple[str, str], int] = {}

    def add(pid: str, spec: str, concept: str, **fields: Any) -> None:
        n = counters[(pid, spec)] = counters.get((pid, spec), 0) + 1
        by_patient.setdefault(pid, []).append(
            Event(event_id=f"{spec}-{n}", concept=concept, **fields)
        )

    infusion: dict[str, dt.date] = {}
    patients = []
    for pid, sex, dob, age, dx, state, cart, death, fu in seed.PATIENTS:
        day0 = infusion[pid] = dt.date.fromisoformat(cart)
        patients.append(
            PatientRecord(
                study_id=pid,
                centre="seed",
                sex={"F": "female", "M": "male"}[sex],
                birth_date=dt.date.fromisoformat(dob),
                attributes={"age_at_diagnosis": age},
            )
        )
        add(
            pid,
            "diagnosis",
            "diagnosis",
            when=When(date=dt.date.fromisoformat(dx)),
            value=Value(code="b_all"),
            attributes={"disease_state": STATE.get(state, state)},
        )
        if death is not None:
            add(pid, "death", "death", when=_when(day0, death))
        add(pid, "last_follow_up", "last_follow_up", when=_when(day0, fu))
    for pid, drug, cycle, start, end, dose, unit, purpose, response in seed.treatment_rows():
        concept, attributes = DRUGS[drug]
        attributes = dict(attributes)
        if cycle is not None:
            attributes["cycle"] = cycle
        attributes["intent"] = INTENT[purpose]
        if response is not None:
            attributes["response"] = RESPONSE[response]
        value = Value(number=dose, unit=unit) if dose is not None else None
        add(
            pid,
            "treatment",
            concept,
            when=_when(infusion[pid], start),
            end=_when(infusion[pid], end),
            value=value,
            attributes=attributes,
        )
    for pid, kind, day, product, dose, donor, conditioning in seed.procedure_rows():
        attributes = {}
        if product is not None:
            attributes = {"product": "tisagenlecleucel", "cell_dose": dose}
        if donor is not None:
            attributes = {"donor_type": "haploidentical", "conditioning": "tbi_etoposide"}
            assert (donor, conditioning) == ("haplo", "TBI 12 Gy + etoposide")
        add(
            pid,
            "procedures",
            PROCEDURE[kind],
            when=_when(infusion[pid], day),
            attributes=attributes,
        )
    for pid, timepoint, day, method, material, result, sensitivity in seed.mrd_rows():
        if result.endswith("%"):
            value = Value(number=float(result[:-1]), unit="%")
        else:
            value = Value(code=MRD_WORD[result])
        attributes = {
            "timepoint": TIMEPOINT.get(timepoint, timepoint),
            "method": method.lower(),
            "specimen": "bone_marrow",
            "sensitivity": float(sensitivity),
        }
        assert material == "BM"
        add(
            pid,
            "mrd",
            "marrow_blasts" if timepoint == "pre-blina" else "mrd",  # blasts, not MRD
            when=_when(infusion[pid], day),
            value=value,
            attributes=attributes,
            source_text=result,
        )
    for pid, day, status, cd19 in seed.response_rows():
        word = {"CR": "complete_remission"}.get(status, status)
        attributes = {"cd19": "negative"} if cd19 == "neg" else {}
        add(
            pid,
            "response",
            "disease_status",
            when=_when(infusion[pid], day),
            value=Value(code=word),
            attributes=attributes,
        )
    for pid, kind, grade, day in seed.TOXICITY:
        add(
            pid,
            "toxicity",
            kind.lower(),
            when=_when(infusion[pid], day),
            attributes={"grade": grade},
        )
    return [Case(patient=p, events=tuple(by_patient[p.study_id])) for p in patients]
