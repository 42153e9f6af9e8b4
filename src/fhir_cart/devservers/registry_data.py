"""SYNTHETIC registry data for tests and benchmarks: invented children, several centres,
shared patients recorded again with realistic corruption. None of it is a real person.

Each person has a sex, a birth date, a diagnosis date and, for some, a CAR-T infusion and a
transplant. A share of the persons (default 15 %) is recorded by two centres (a tenth of
those by three): referred for CAR-T, the second centre types the facts again, with typos
(one digit), day and month transposed, missing fields, a date a few days off, and now and
then the other sex. The truth (which records are one person) comes back beside the cases.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from dataclasses import dataclass, field

from fhir_cart.records import Case, Event, PatientRecord, Value, When

__all__ = ["Corruption", "SyntheticRegistry", "make_registry", "true_pairs"]


@dataclass(frozen=True)
class Corruption:
    """Per-record, per-field probabilities."""

    missing: float = 0.02
    typo: float = 0.02
    transposed: float = 0.015
    shifted: float = 0.01
    sex_flip: float = 0.005
    no_infusion_at_referrer: float = 0.2


@dataclass
class SyntheticRegistry:
    cases: dict[str, list[Case]]
    truth: dict[tuple[str, str], int]
    """(centre, study_id) -> person number."""
    names: dict[tuple[str, str], str] = field(default_factory=dict)
    """(centre, study_id) -> the invented name the centre's sheet would hold."""


LAST_DATE = dt.date(2025, 12, 31)
"""No invented date is later (so none can be mistaken for a build's own timestamp)."""

_FIRST = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas"]
_LAST = ["Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi"]
# Invented given and family names for ``names=True``: a few common ones drawn often, with
# accents and umlauts that centres write differently.
_GIVEN = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Emma",
    "Felix",
    "Greta",
    "Hugo",
    "Ida",
    "Jonas",
    "Léa",
    "Jürgen",
    "Sören",
    "Zoë",
    "Mia",
    "Noah",
    "Lina",
    "Elias",
    "Maja",
    "Paul",
    "Sofia",
    "Luca",
    "Nora",
    "Omar",
    "Yusuf",
    "Aylin",
    "Milan",
    "Ella",
    "Tim",
    "Lotte",
]
_FAMILY = [
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quinn",
    "Rossi",
    "Müller",
    "Schäfer",
    "Van den Berg",
    "Öztürk",
    "García",
    "Nowak",
    "Janssen",
    "De Vries",
    "Bauer",
    "Łukasik",
    "Hansen",
    "Novák",
    "Jensen",
    "Fischer",
    "Weiß",
    "Smits",
    "Peeters",
    "Dubois",
    "Bianchi",
    "Silva",
    "Ivanova",
    "Horváth",
]
_SPELLED = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "ë": "e", "á": "a", "Ł": "L", "Ö": "Oe"}
)


@dataclass(frozen=True)
class _Person:
    number: int
    sex: str
    birth: dt.date
    diagnosis: dt.date
    infusion: dt.date | None
    transplant: dt.date | None
    national_id: str
    name: str


def _person(number: int, rng: random.Random) -> _Person:
    birth = dt.date(2004, 1, 1) + dt.timedelta(days=rng.randrange(18 * 365))
    latest = min(16 * 365, (dt.date(2025, 6, 30) - birth).days)
    diagnosis = birth + dt.timedelta(days=rng.randrange(300, latest))
    infusion = (
        diagnosis + dt.timedelta(days=rng.randrange(150, 1500)) if rng.random() < 0.75 else None
    )
    transplant = (
        diagnosis + dt.timedelta(days=rng.randrange(90, 1200)) if rng.random() < 0.3 else None
    )
    if infusion is not None and infusion > LAST_DATE:
        infusion = None
    if transplant is not None and transplant > LAST_DATE:
        transplant = None
    return _Person(
        number=number,
        sex=rng.choice(["female", "male"]),
        birth=birth,
        diagnosis=diagnosis,
        infusion=infusion,
        transplant=transplant,
        national_id=f"{rng.randrange(10**9, 10**10)}",
        name=f"{rng.choice(_FIRST)} {rng.choice(_LAST)}-{number}",
    )


def _typo(value: dt.date, rng: random.Random) -> dt.date:
    text = value.isoformat()
    for _ in range(20):
        position = rng.choice([3, 6, 8, 9])
        digit = str(rng.randrange(10))
        candidate = text[:position] + digit + text[position + 1 :]
        try:
            found = dt.date.fromisoformat(candidate)
        except ValueError:
            continue
        if found != value:
            return found
    return value


def _corrupt(value: dt.date | None, rng: random.Random, c: Corruption) -> dt.date | None:
    if value is None:
        return None
    roll = rng.random()
    if roll < c.missing:
        return None
    roll -= c.missing
    if roll < c.typo:
        return _typo(value, rng)
    roll -= c.typo
    if roll < c.transposed and value.day <= 12 and value.day != value.month:
        return dt.date(value.year, value.day, value.month)
    roll -= c.transposed
    if roll < c.shifted:
        return value + dt.timedelta(days=rng.choice([-1, 1]) * rng.randrange(1, 15))
    return value


def _when(date: dt.date | None) -> When | None:
    return None if date is None else When(date=date)


def _case(
    person: _Person,
    centre: str,
    study_id: str,
    rng: random.Random,
    c: Corruption | None,
    referrer: bool,
) -> Case:
    def d(value: dt.date | None) -> dt.date | None:
        return value if c is None else _corrupt(value, rng, c)

    sex = person.sex
    if c is not None and rng.random() < c.sex_flip:
        sex = "male" if sex == "female" else "female"
    infusion = person.infusion
    if c is not None and referrer and rng.random() < c.no_infusion_at_referrer:
        infusion = None
    events = []
    diagnosis = d(person.diagnosis)
    if diagnosis is not None:
        events.append(
            Event(
                event_id="diagnosis",
                concept="diagnosis",
                when=When(date=diagnosis),
                value=Value(code="b_all"),
                source_text="B-ALL",
            )
        )
    infused = d(infusion)
    if infused is not None:
        dose = round(rng.uniform(0.5, 5.0), 2)
        events.append(
            Event(
                event_id="cart",
                concept="cart_infusion",
                when=When(date=infused),
                attributes={"product": "tisagenlecleucel", "cell_dose": dose},
            )
        )
    transplanted = d(person.transplant)
    if transplanted is not None:
        events.append(Event(event_id="hsct", concept="hsct", when=When(date=transplanted)))
    patient = PatientRecord(
        study_id=study_id,
        centre=centre,
        sex=sex,
        birth_date=d(person.birth),
        attributes={"national_id": person.national_id},
    )
    return Case(patient=patient, events=tuple(events))


def make_registry(
    persons: int,
    centres: int = 5,
    *,
    shared: float = 0.15,
    seed: int = 1,
    corruption: Corruption | None = None,
    identifiers: float = 0.0,
    with_names: bool = False,
) -> SyntheticRegistry:
    """``persons`` invented persons spread over ``centres``; ``shared`` of them recorded by
    a second centre too. ``identifiers``: share of records that keep the national id.
    ``with_names``: records carry ``given_name`` and ``family_name`` attributes (drawn and
    corrupted with a random generator of their own, so the rest of the data is the same
    as without them)."""
    rng = random.Random(seed)  # noqa: S311 - invented data, not secrets
    name_rng = random.Random(seed * 7919 + 1)  # noqa: S311 - invented data, not secrets
    corruption = corruption or Corruption()
    names = [f"centre-{n + 1}" for n in range(centres)]
    result = SyntheticRegistry(cases={name: [] for name in names}, truth={})
    for number in range(persons):
        person = _person(number, rng)
        given, family = name_rng.choice(_GIVEN), name_rng.choice(_FAMILY)
        home = rng.randrange(centres)
        homes = [home]
        if centres > 1 and rng.random() < shared:
            if person.infusion is None:  # shared patients were referred for CAR-T
                room = (LAST_DATE - person.diagnosis).days
                infusion = person.diagnosis + dt.timedelta(
                    days=rng.randrange(min(150, room), room + 1)
                )
                person = dataclasses.replace(person, infusion=infusion)
            extra = 2 if centres > 2 and rng.random() < 0.1 else 1
            others = [n for n in range(centres) if n != home]
            homes += rng.sample(others, extra)
        for order, index in enumerate(homes):
            centre = names[index]
            study_id = f"PT{index + 1}-{len(result.cases[centre]) + 1:06}"
            case = _case(person, centre, study_id, rng, corruption if order else None, order > 0)
            if rng.random() >= identifiers:
                attributes = {
                    k: v for k, v in case.patient.attributes.items() if k != "national_id"
                }
                case = case.model_copy(
                    update={"patient": case.patient.model_copy(update={"attributes": attributes})}
                )
            if with_names:
                case = _named(case, given, family, name_rng, corrupt=order > 0)
            result.cases[centre].append(case)
            result.truth[(centre, study_id)] = number
            result.names[(centre, study_id)] = person.name
    return result


def _misspelt(name: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:  # written without accents or umlauts, the other way
        return name.translate(_SPELLED)
    if roll < 0.34 and len(name) > 3:  # one letter mistyped
        at = rng.randrange(1, len(name))
        return name[:at] + rng.choice("aeinorstl") + name[at + 1 :]
    if roll < 0.36:  # in capitals
        return name.upper()
    return name


def _named(case: Case, given: str, family: str, rng: random.Random, corrupt: bool) -> Case:
    attributes = dict(case.patient.attributes)
    for key, name in (("given_name", given), ("family_name", family)):
        if corrupt and rng.random() < 0.02:
            continue  # not recorded
        attributes[key] = _misspelt(name, rng) if corrupt else name
    return case.model_copy(
        update={"patient": case.patient.model_copy(update={"attributes": attributes})}
    )


def true_pairs(truth: dict[tuple[str, str], int]) -> set[frozenset[tuple[str, str]]]:
    """Every pair of records that are the same person."""
    by_person: dict[int, list[tuple[str, str]]] = {}
    for record, person in truth.items():
        by_person.setdefault(person, []).append(record)
    return {
        frozenset((a, b))
        for records in by_person.values()
        for i, a in enumerate(records)
        for b in records[i + 1 :]
    }
