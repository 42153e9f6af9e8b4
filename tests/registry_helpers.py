"""Shared by the registry tests: a three-centre registry built from Case objects (the
reader is not involved; fixtures/registry holds the same children as spreadsheets)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from fhir_cart.records import Case, Event, PatientRecord, Value, When
from fhir_cart.registry.build import CentreData
from fhir_cart.registry.definition import CentreDef, RegistryDef

KEY = b"test-key-not-secret-0123456789abcdef"
OTHER_KEY = b"another-test-key-0123456789abcdefgh"


def event(event_id: str, concept: str, date: dt.date | None, **fields: Any) -> Event:
    when = None if date is None else When(date=date)
    return Event(event_id=event_id, concept=concept, when=when, **fields)


def patient(centre: str, study_id: str, *events: Event, **fields: Any) -> Case:
    return Case(patient=PatientRecord(study_id=study_id, centre=centre, **fields), events=events)


def diagnosis(date: dt.date, word: str = "b_all") -> Event:
    return event("diagnosis", "diagnosis", date, value=Value(code=word), source_text="ALL")


def three_centres() -> dict[str, list[Case]]:
    """Berlin refers, London and Rotterdam give CAR-T. Child Anna (Berlin B-01, London L7)
    has no shared identifier and her diagnosis date transposed in London; child Ben
    (Berlin B-02, Rotterdam R-100) shares his national id, and the centres disagree on his
    infusion date (and sex, a typo in Berlin)."""
    berlin = [
        patient(
            "berlin",
            "B-01",
            diagnosis(dt.date(2019, 3, 7)),
            sex="female",
            birth_date=dt.date(2012, 5, 14),
            attributes={"patient_name": "Anna Kowalski"},
        ),
        patient(
            "berlin",
            "B-02",
            diagnosis(dt.date(2018, 1, 20)),
            event("car-t", "cart_infusion", dt.date(2018, 9, 1)),
            sex="female",
            birth_date=dt.date(2010, 11, 2),
            attributes={"national_id": "4711 0815 42", "patient_name": "Ben Okafor"},
        ),
        patient(
            "berlin",
            "B-03",
            diagnosis(dt.date(2020, 6, 30)),
            sex="male",
            birth_date=dt.date(2015, 2, 1),
            attributes={"patient_name": "Clara Rossi"},
        ),
    ]
    london = [
        patient(
            "london",
            "L7",
            diagnosis(dt.date(2019, 7, 3)),
            event(
                "infusion",
                "cart_infusion",
                dt.date(2020, 1, 15),
                attributes={"cell_dose": 2.5, "product": "tisagenlecleucel"},
            ),
            event(
                "mrd-d28",
                "mrd",
                dt.date(2020, 2, 12),
                value=Value(code="negative"),
                source_text="neg",
            ),
            sex="female",
            birth_date=dt.date(2012, 5, 14),
        ),
        patient(
            "london",
            "L9",
            diagnosis(dt.date(2017, 10, 11)),
            sex="male",
            birth_date=dt.date(2009, 8, 23),
        ),
    ]
    rotterdam = [
        patient(
            "rotterdam",
            "R-100",
            diagnosis(dt.date(2018, 1, 20)),
            event("infusion-1", "cart_infusion", dt.date(2018, 9, 3)),
            event(
                "mrd-1",
                "mrd",
                dt.date(2018, 10, 1),
                value=Value(number=0.01, unit="%", comparator="<"),
                source_text="<0,01 %",
            ),
            sex="male",
            birth_date=dt.date(2010, 11, 2),
            attributes={"national_id": "4711081542"},
        ),
        patient(
            "rotterdam",
            "R-101",
            diagnosis(dt.date(2021, 4, 4)),
            sex="female",
            birth_date=dt.date(2016, 12, 24),
        ),
    ]
    return {"berlin": berlin, "london": london, "rotterdam": rotterdam}


def add_negative_mrd(
    cases: dict[str, list[Case]], centre: str = "rotterdam", index: int = 1
) -> None:
    """One centre's data changes: a second (negative) MRD for one of its patients, on the
    date of that patient's first event."""
    case = cases[centre][index]
    first = case.events[0].when
    assert first is not None
    extra = Event(
        event_id="mrd-2", concept="mrd", when=When(date=first.date), value=Value(code="negative")
    )
    cases[centre][index] = case.model_copy(update={"events": (*case.events, extra)})


def definition(folder: Path, **overrides: Any) -> RegistryDef:
    """A registry file's content for the three centres; data and mapping files are made
    (their bytes only feed the input hashes: the test reader returns Cases)."""
    centres = []
    for centre, roles in (
        ("berlin", ("referring",)),
        ("london", ("treating",)),
        ("rotterdam", ("treating",)),
    ):
        for name in (f"{centre}.csv", f"{centre}.yaml"):
            path = folder / "inputs" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(f"synthetic {centre}\n")
                os.utime(path, (1_700_000_000, 1_700_000_000))  # copies of the same files
        centres.append(
            CentreDef(
                id=centre,
                mapping=Path(f"inputs/{centre}.yaml"),
                data=Path(f"inputs/{centre}.csv"),
                roles=roles,
            )
        )
    raw: dict[str, Any] = {
        "name": "Test registry",
        "centres": centres,
        "linkage": {"identifiers": ["national_id"], "threshold": 0.9},
        "pseudonymisation": {
            "dates": "relative",
            "anchor": "diagnosis",
            "drop_patient_attributes": ["patient_name"],
        },
        "conflicts": {
            "rules": [
                {"field": "diagnosis", "prefer": "referring"},
                {"field": "cart_infusion", "prefer": "treating"},
                {"field": "sex", "prefer": "treating"},
            ]
        },
        "outputs": {"formats": ["parquet", "csv", "xlsx"]},
        "base_dir": folder,
    }
    raw.update(overrides)
    return RegistryDef.model_validate(raw)


def reader_of(cases: dict[str, list[Case]]) -> Any:
    def read(centre: CentreDef, _: RegistryDef) -> CentreData:
        return CentreData(list(cases[centre.id]))

    return read


def output_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
