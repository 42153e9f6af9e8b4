"""Privacy: no registry output (tables, FHIR, reports, state, logs, printed output) holds any
source identifier, name or exact date, and pseudonyms depend on the key."""

from __future__ import annotations

import datetime as dt
import logging
import re
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fhir_cart.devservers.registry_data import make_registry
from fhir_cart.library.concepts import ConceptLibrary, load_concepts
from fhir_cart.library.terminology import load_terminology
from fhir_cart.records import Case
from fhir_cart.registry.build import BuildResult, build_registry
from tests.registry_helpers import KEY, OTHER_KEY, definition, reader_of


@pytest.fixture(scope="module")
def library() -> ConceptLibrary:
    return load_concepts(load_terminology())


def centres() -> tuple[dict[str, list[Case]], set[str], set[dt.date]]:
    """Three generated centres whose records carry names and free text, and the secrets."""
    data = make_registry(240, centres=3, seed=5, identifiers=0.6)
    cases: dict[str, list[Case]] = {}
    secrets: set[str] = set()
    dates: set[dt.date] = set()
    renamed = {"centre-1": "berlin", "centre-2": "london", "centre-3": "rotterdam"}
    for centre, items in data.cases.items():
        for case in items:
            name = data.names[(centre, case.patient.study_id)]
            attributes = dict(case.patient.attributes) | {"patient_name": name}
            patient = case.patient.model_copy(
                update={"centre": renamed[centre], "attributes": attributes}
            )
            events = tuple(
                e.model_copy(
                    update={
                        "attributes": {**e.attributes, "subtype": f"note on {name}"},
                        "event_id": f"{case.patient.study_id}-dx",
                    }
                )
                if e.concept == "diagnosis"
                else e
                for e in case.events
            )
            cases.setdefault(renamed[centre], []).append(Case(patient=patient, events=events))
            secrets |= {case.patient.study_id, name, *name.split()[1:]}
            secrets |= {str(v) for v in case.patient.attributes.values()}
            dates |= {d for d in [case.patient.birth_date] if d}
            dates |= {e.when.date for e in case.events if e.when and e.when.date}
    return cases, secrets, dates


def texts(out: Path) -> dict[str, str]:
    found = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            found[str(path)] = repr(pq.read_table(path).to_pylist())
        elif path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as book:
                found[str(path)] = " ".join(book.read(n).decode() for n in book.namelist())
        else:
            found[str(path)] = path.read_text(encoding="utf-8")
    return found


def date_forms(date: dt.date) -> list[str]:
    return [
        date.isoformat(),
        date.strftime("%d.%m.%Y"),
        date.strftime("%d/%m/%Y"),
        date.strftime("%m/%d/%Y"),
        date.strftime("%Y%m%d"),
    ]


def leaks(text: str, needles: set[str]) -> list[str]:
    """Needles found as whole tokens (a study id inside a hex pseudonym is no leak)."""
    pattern = "|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True))
    return sorted(set(re.findall(rf"(?<![A-Za-z0-9])(?:{pattern})(?![A-Za-z0-9])", text)))


def run(
    tmp: Path, cases: dict[str, list[Case]], library: ConceptLibrary, key: bytes, dates: str
) -> BuildResult:
    registry = definition(
        tmp,
        pseudonymisation={
            "dates": dates,
            "anchor": "diagnosis",
            "drop_patient_attributes": ["patient_name"],
        },
    )
    return build_registry(registry, tmp / "out", key=key, reader=reader_of(cases), library=library)


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize("mode", ["relative", "shift"])
def test_no_identifier_name_or_date_in_any_output(
    tmp_path: Path,
    library: ConceptLibrary,
    mode: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    cases, secrets, dates = centres()
    result = run(tmp_path, cases, library, KEY, mode)
    assert result.registry is not None
    assert len(result.registry.conflicts) > 0
    outputs = texts(tmp_path / "out")
    outputs["logs"] = "\n".join(r.getMessage() for r in caplog.records)
    outputs["printed"] = "".join(capsys.readouterr())
    needles = set(secrets)
    if mode == "relative":
        needles |= {form for d in dates for form in date_forms(d)}
    found = {where: leaks(text, needles) for where, text in outputs.items()}
    assert {k: v for k, v in found.items() if v} == {}


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_shifted_dates_move_by_one_nonzero_offset_per_patient(
    tmp_path: Path, library: ConceptLibrary
) -> None:
    cases, _, _ = centres()
    result = run(tmp_path, cases, library, KEY, "shift")
    assert result.registry is not None
    for merged, protected in zip(result.registry.merged, result.registry.cases, strict=True):
        shifts = {
            (after.when.date - before.when.date).days
            for before, after in zip(merged.case.events, protected.events, strict=True)
            if before.when and before.when.date and after.when and after.when.date
        }
        assert len(shifts) <= 1
        assert 0 not in shifts


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_pseudonyms_depend_on_the_key(tmp_path: Path, library: ConceptLibrary) -> None:
    """A pseudonym made without the key (a plain hash) would be the same under both keys."""
    cases, _, _ = centres()
    run(tmp_path / "a", cases, library, KEY, "relative")
    run(tmp_path / "b", cases, library, OTHER_KEY, "relative")
    tokens = [
        set(re.findall(r"[pr][0-9a-f]{32}", "".join(texts(tmp_path / side / "out").values())))
        for side in ("a", "b")
    ]
    assert tokens[0]
    assert tokens[1]
    assert tokens[0].isdisjoint(tokens[1])


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_the_key_is_never_written(tmp_path: Path, library: ConceptLibrary) -> None:
    cases, _, _ = centres()
    run(tmp_path, cases, library, KEY, "relative")
    assert all(KEY.decode() not in text for text in texts(tmp_path / "out").values())
