"""The registry's privacy through the real reader (issue 20): three centres' own files (a
CSV with German dates, a folder of CSVs in long format keyed ``[date, item]``, a workbook
with real date cells keyed ``[Item, Date]``), read by ``read_centre`` with their mapping
files, built in both date modes. Every output is searched (Parquet values, column statistics
and metadata, CSV, XLSX, JSON, NDJSON, the logs) for every source identifier, name, date in
several renderings, row reference, file name and piece of free text.

The names are read and linked on (``linkage.names``). The work folder is not an output (it
holds the centres' dates by design) and is kept elsewhere; names, identifiers, free text and
rows reach it only as keyed tokens."""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fhir_cart.library.concepts import ConceptLibrary, load_concepts
from fhir_cart.library.terminology import load_terminology
from fhir_cart.registry.build import build_registry
from fhir_cart.registry.definition import load_registry
from tests.registry_helpers import KEY

FIRST = ["Anna", "Bruno", "Carla", "Dmitri", "Elif", "Fatima", "Gustav", "Helga", "Ilse", "Jan"]
LAST = ["Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi"]
FREE_TEXT = [
    "Kymriah lot 12 for {name} born {birth}",
    "Mutter ruft an: {phone}",
    "seen by Dr Wagner on {day}",
]


@dataclass
class Person:
    name: str
    sex: str
    birth: dt.date
    diagnosis: dt.date
    infusion: dt.date
    mrd: dt.date
    national_id: str


def people(n: int, seed: int = 20) -> list[Person]:
    rng = random.Random(seed)
    found = []
    for i in range(n):
        birth = dt.date(2005, 1, 1) + dt.timedelta(days=rng.randrange(12 * 365))
        diagnosis = birth + dt.timedelta(days=rng.randrange(400, 3000))
        infusion = diagnosis + dt.timedelta(days=rng.randrange(100, 700))
        found.append(
            Person(
                name=f"{FIRST[i % len(FIRST)]} {LAST[(i * 3) % len(LAST)]}",
                sex=rng.choice(["female", "male"]),
                birth=birth,
                diagnosis=diagnosis,
                infusion=infusion,
                mrd=infusion + dt.timedelta(days=28),
                national_id=f"{rng.choice('ABCD')}{rng.randrange(10**8, 10**9)}",
            )
        )
    return found


def renderings(date: dt.date) -> set[str]:
    return {
        date.isoformat(),
        date.strftime("%d.%m.%Y"),
        date.strftime("%d/%m/%Y"),
        date.strftime("%m/%d/%Y"),
        date.strftime("%Y%m%d"),
        date.strftime("%d.%m.%y"),
        f"{date.day} {date.strftime('%B')} {date.year}",
        f"{date.day} {date.strftime('%b')} {date.year}",
    }


@dataclass
class Centres:
    registry: Path
    identifiers: set[str]
    names: set[str]
    dates: set[dt.date]
    free_text: set[str]
    files: set[str]


BERLIN_MAPPING = """\
centre: berlin
date_formats: ["%d.%m.%Y"]
csv_delimiter: ";"
patient_attributes:
  national_id: {label: Insurance number, type: text}
  patient_name: {label: Name, type: text}
patients:
  columns: {study_id: Patienten-ID, sex: Geschlecht, birth_date: Geburtsdatum,
            national_id: Versichertennummer, patient_name: Name}
  values:
    sex: {w: female, m: male}
events:
  - name: diagnosis
    concept: diagnosis
    columns: {value: Diagnose, when_date: Diagnosedatum}
    values:
      value: {B-ALL: b_all}
  - name: cart_infusion
    concept: cart_infusion
    columns: {when_date: CAR-T Datum, product: Produkt}
ignore:
  Bemerkung: free text
"""

ROTTERDAM_MAPPING = """\
centre: rotterdam
patient_attributes:
  national_id: {label: Insurance number, type: text}
  patient_name: {label: Name, type: text}
patients:
  source: patients.csv
  columns: {study_id: patient, sex: sex, birth_date: birth_date, national_id: insurance_number,
            patient_name: name}
events:
  - name: events
    source: events.csv
    key: [date, item]
    columns: {study_id: patient, concept: item, when_date: date, value: value}
    values:
      concept: {CAR-T infusion: {concept: cart_infusion}, MRD: mrd, diagnosis: diagnosis}
      value: {B-ALL: b_all, neg: negative}
ignore:
  note: free text
"""

LONDON_MAPPING = """\
centre: london
patient_attributes:
  national_id: {label: Insurance number, type: text}
  patient_name: {label: Name, type: text}
patients:
  source: Patients
  columns: {study_id: Patient ID, sex: Sex, birth_date: DOB, national_id: NHS number,
            patient_name: Patient name}
  values:
    sex: {F: female, M: male}
events:
  - name: events
    source: Events
    key: [Item, Date]
    columns: {study_id: Patient ID, concept: Item, when_date: Date, value: Result,
              product: Product}
    values:
      concept: {CAR-T: {concept: cart_infusion}, MRD: mrd, Diagnosis: diagnosis}
      value: {B-ALL: b_all, neg: negative}
ignore:
  Comment: free text
"""


def write_centres(folder: Path, mode: str) -> Centres:
    """Berlin refers everyone it sees; a share of its children is treated in Rotterdam or
    London (the same insurance number, written differently). One shared child's birth date
    differs by two days between Berlin and London."""
    from openpyxl import Workbook

    crowd = people(36)
    berlin, rotterdam, london = crowd[:16], crowd[10:26], crowd[4:8] + crowd[26:]
    texts: set[str] = set()

    def note(i: int, person: Person) -> str:
        text = FREE_TEXT[i % len(FREE_TEXT)].format(
            name=person.name,
            birth=person.birth.strftime("%d %B %Y"),
            phone=f"0176 {4400000 + i}",
            day=person.diagnosis.strftime("%d.%m.%Y"),
        )
        texts.add(text)
        return text

    (folder / "berlin").mkdir(parents=True)
    lines = [
        "Patienten-ID;Name;Geschlecht;Geburtsdatum;Versichertennummer;Diagnose;"
        "Diagnosedatum;CAR-T Datum;Produkt;Bemerkung"
    ]
    for i, p in enumerate(berlin):
        product = note(i, p) if i % 2 == 0 else "tisagenlecleucel"
        lines.append(
            f"B-{i + 1:03};{p.name};{'w' if p.sex == 'female' else 'm'};"
            f"{p.birth:%d.%m.%Y};{p.national_id};B-ALL;{p.diagnosis:%d.%m.%Y};"
            f"{p.infusion:%d.%m.%Y};{product};{note(i + 1, p)}"
        )
    (folder / "berlin" / "berlin.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    (folder / "rotterdam").mkdir()
    patients = ["patient,name,sex,birth_date,insurance_number,note"]
    events = ["patient,item,date,value,note"]
    for i, p in enumerate(rotterdam):
        sid = f"R-{100 + i}"
        spaced = f"{p.national_id[0]} {p.national_id[1:5]} {p.national_id[5:]}"
        patients.append(f'{sid},{p.name},{p.sex},{p.birth},{spaced},"{note(i, p)}"')
        events += [
            f"{sid},diagnosis,{p.diagnosis},B-ALL,",
            f"{sid},CAR-T infusion,{p.infusion},,",
            f'{sid},MRD,{p.mrd},neg,"{note(i + 2, p)}"',
        ]
    (folder / "rotterdam" / "patients.csv").write_text("\n".join(patients) + "\n")
    (folder / "rotterdam" / "events.csv").write_text("\n".join(events) + "\n")

    book = Workbook()
    sheet = book.active
    sheet.title = "Patients"
    sheet.append(["Patient ID", "Patient name", "Sex", "DOB", "NHS number", "Comment"])
    rows = book.create_sheet("Events")
    rows.append(["Patient ID", "Item", "Date", "Result", "Product", "Comment"])
    conflicting = london[0]
    london_birth = {id(conflicting): conflicting.birth + dt.timedelta(days=2)}
    for i, p in enumerate(london):
        sid = f"L{i + 7}"
        birth = london_birth.get(id(p), p.birth)
        sheet.append([sid, p.name, p.sex[0].upper(), birth, p.national_id.lower(), note(i, p)])
        rows.append([sid, "Diagnosis", p.diagnosis, "B-ALL", None, None])
        rows.append([sid, "CAR-T", p.infusion, None, note(i + 1, p), None])
        rows.append([sid, "MRD", p.mrd, "neg", None, note(i + 2, p)])
    (folder / "london").mkdir()
    book.save(folder / "london" / "london.xlsx")

    (folder / "mappings").mkdir()
    (folder / "mappings" / "berlin.yaml").write_text(BERLIN_MAPPING)
    (folder / "mappings" / "rotterdam.yaml").write_text(ROTTERDAM_MAPPING)
    (folder / "mappings" / "london.yaml").write_text(LONDON_MAPPING)
    (folder / "registry.yaml").write_text(f"""\
name: Privacy test registry
id: privacy
centres:
  - {{id: berlin, mapping: mappings/berlin.yaml, data: berlin/berlin.csv, roles: [referring]}}
  - {{id: rotterdam, mapping: mappings/rotterdam.yaml, data: rotterdam, roles: [treating]}}
  - {{id: london, mapping: mappings/london.yaml, data: london/london.xlsx, roles: [treating]}}
linkage: {{identifiers: [national_id], names: [patient_name], threshold: 0.9}}
pseudonymisation: {{dates: {mode}, anchor: diagnosis, keep_text: [product]}}
conflicts:
  rules:
    - {{field: birth_date, prefer: referring}}
    - {{field: cart_infusion, prefer: treating}}
outputs: {{formats: [parquet, csv, xlsx]}}
""")
    sids = {f"B-{i + 1:03}" for i in range(len(berlin))}
    sids |= {f"R-{100 + i}" for i in range(len(rotterdam))} | {
        f"L{i + 7}" for i in range(len(london))
    }
    ids = {p.national_id for p in crowd} | {p.national_id.lower() for p in crowd}
    ids |= {f"{p.national_id[0]} {p.national_id[1:5]} {p.national_id[5:]}" for p in crowd}
    names = {p.name for p in crowd} | {part for p in crowd for part in p.name.split()}
    dates = {d for p in crowd for d in (p.birth, p.diagnosis, p.infusion, p.mrd)}
    dates.add(conflicting.birth + dt.timedelta(days=2))
    files = {"berlin.csv", "patients.csv", "events.csv", "london.xlsx"}
    return Centres(folder / "registry.yaml", sids | ids, names, dates, texts, files)


def parquet_texts(path: Path) -> list[str]:
    """Values, every row group's column statistics, and the file's metadata."""
    found = [repr(pq.read_table(path).to_pylist())]
    meta = pq.ParquetFile(path).metadata
    found.append(repr(meta.metadata))
    for group in range(meta.num_row_groups):
        for column in range(meta.num_columns):
            stats = meta.row_group(group).column(column).statistics
            if stats is not None and stats.has_min_max:
                found.append(f"{stats.min!r} {stats.max!r}")
    return found


def every_output(out: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            found[str(path)] = "\n".join(parquet_texts(path))
        elif path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as book:
                found[str(path)] = "\n".join(book.read(n).decode() for n in book.namelist())
        else:
            found[str(path)] = path.read_text(encoding="utf-8")
    return found


def leaks(text: str, needles: set[str]) -> list[str]:
    """Needles found as whole tokens (a study id inside a hex pseudonym is no leak)."""
    pattern = "|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True))
    hits = re.findall(rf"(?<![A-Za-z0-9])(?:{pattern})(?![A-Za-z0-9])", text, re.IGNORECASE)
    return sorted(set(hits))


@pytest.fixture(scope="module")
def library() -> ConceptLibrary:
    return load_concepts(load_terminology())


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize("mode", ["relative", "shift"])
def test_no_source_value_reaches_any_output(
    tmp_path: Path, library: ConceptLibrary, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    centres = write_centres(tmp_path / "centres", mode)
    definition = load_registry(centres.registry)
    result = build_registry(
        definition, tmp_path / "out", key=KEY, library=library, work=tmp_path / "work"
    )
    registry = result.registry
    assert registry is not None
    # the build is a real one: linked children, conflicts, events from every centre
    assert sum(len(m.centres) > 1 for m in registry.merged) >= 8
    assert any(r["field"] == "birth_date" for r in registry.conflicts)
    assert {m.source_of[e] for m in registry.merged for e in m.source_of} == {
        "berlin",
        "london",
        "rotterdam",
    }
    published = set()
    if mode == "shift":  # a shifted date may fall on another child's real date: not a leak
        for case in registry.cases:
            published |= {e.when.date for e in case.events if e.when and e.when.date}
            published |= {case.patient.birth_date} if case.patient.birth_date else set()
    dates = {form for d in centres.dates - published for form in renderings(d)}
    assert len(dates) > 500
    words = {w for text in centres.free_text for w in re.findall(r"[A-Za-z]{5,}", text)}
    words -= {"tisagenlecleucel"}
    needles = centres.identifiers | centres.names | dates | centres.free_text | words
    needles |= centres.files
    outputs = every_output(tmp_path / "out")
    assert any(p.endswith(".parquet") for p in outputs)
    outputs["logs"] = "\n".join(r.getMessage() for r in caplog.records)
    found = {where: leaks(text, needles) for where, text in outputs.items()}
    assert {k: v for k, v in found.items() if v} == {}
    rows = {where: re.findall(r"(?i)\brow \d+", text) for where, text in outputs.items()}
    assert {k: v for k, v in rows.items() if v} == {}
    # the work folder holds the dates as read, but names, identifiers, study ids, free text
    # and rows only as keyed tokens (names compared as tokens and Bloom filters)
    work = every_output(tmp_path / "work")
    assert any("centres" in where for where in work)
    held = centres.identifiers | centres.names | centres.free_text | centres.files
    found = {where: leaks(text, held) for where, text in work.items()}
    assert {k: v for k, v in found.items() if v} == {}
    assert all(re.search(r"(?i)\brow \d+", text) is None for text in work.values())
