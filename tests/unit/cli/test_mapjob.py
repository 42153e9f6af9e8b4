"""The streaming map job: one mapping per case, both reference styles, patients written as
they are read, nothing left behind on a stop."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cart import mapjob
from fhir_cart.bundle import NdjsonWriter, map_cases
from fhir_cart.cli import main
from fhir_cart.mappers.context import _NAMESPACE, MappingContext, uuid5_text
from fhir_cart.mappers.to_fhir import map_case
from fhir_cart.records import Case
from tests.support import FIXTURES, MAPPINGS, SEED_FILE, SEED_MAPPING


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@given(st.text())
def test_uuid5_text_is_uuid5(name: str) -> None:
    assert uuid5_text(name) == str(uuid.uuid5(_NAMESPACE, name))


def test_one_mapping_restyled_is_each_style_mapped_apart(
    ctx: MappingContext, seed_cases: list[Case]
) -> None:
    relative = list(map_cases(ctx.with_style("relative"), seed_cases))
    urn = list(map_cases(ctx.with_style("urn"), seed_cases))
    for case, rel, un in zip(seed_cases, relative, urn, strict=True):
        resources, restyle = map_case(ctx.with_style("relative"), case)
        assert resources == rel
        restyle("urn")
        assert resources == un
        restyle("relative")
        assert resources == rel
    assert any("urn:uuid:" in str(r) for rs in urn for r in rs)


def test_patients_are_written_before_the_study_is_read_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job takes a case, writes it, then takes the next: the log of a generator in front
    of the reader and of the NDJSON writer interleaves."""
    log: list[str] = []
    opened = mapjob.open_study

    def logged_open(*args: Any) -> Any:
        stream, mapping = opened(*args)
        cases = iter(stream)

        def logged() -> Iterator[Case]:
            for case in cases:
                log.append(f"read {case.patient.study_id}")
                yield case

        stream._cases = logged()
        return stream, mapping

    write = NdjsonWriter.write_line

    def logged_write(self: NdjsonWriter, rtype: str, line: bytes) -> None:
        if rtype == "Patient":
            log.append(f"wrote {orjson.loads(line)['identifier'][0]['value']}")
        write(self, rtype, line)

    monkeypatch.setattr(mapjob, "open_study", logged_open)
    monkeypatch.setattr(NdjsonWriter, "write_line", logged_write)
    args = ["map", str(SEED_FILE), "-m", str(SEED_MAPPING), "-o", str(tmp_path)]
    assert main([*args, "--workers", "1"]) == 0  # in one process (the workers: see below)
    ids = [f"P0{i}" for i in range(1, 8)]
    assert log == [line for sid in ids for line in (f"read {sid}", f"wrote {sid}")]


def test_a_stopped_job_leaves_only_the_reject_report(tmp_path: Path) -> None:
    bad = [str(FIXTURES / "bad" / "tables"), "-m", str(MAPPINGS / "centres" / "bad.yaml")]
    assert main(["map", *bad, "-o", str(tmp_path)]) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["rejects.csv"]


@given(st.text(), st.text())
def test_bundle_search_quotes_as_urllib_does(system: str, value: str) -> None:
    from urllib.parse import quote

    from fhir_cart.bundle import _quoted

    assert _quoted(system) + "%7C" + _quoted(value) == quote(f"{system}|{value}", safe=":/")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("indent", "first"), [(False, 0), (False, 3), (True, 0)])
def test_workers_write_the_bytes_one_process_writes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unverified_mappings: Path,
    indent: bool,
    first: int,
) -> None:
    """`map --workers 2`: the seed's 7 patients, the first ``first`` mapped by the parent,
    the rest one per run by two processes (more runs than may be out at once); every file
    (NDJSON, bundles across runs, the unverified codes the workers emitted) is the same
    bytes as with one worker."""
    from fhir_cart import map_workers

    monkeypatch.setattr(map_workers, "RUN", 1)
    monkeypatch.setattr(map_workers, "FIRST", first)
    args = ["map", str(SEED_FILE), "-m", str(SEED_MAPPING), "--bundle-size", "5"]
    args += ["--indent"] if indent else []
    assert main([*args, "-o", str(tmp_path / "one"), "--workers", "1"]) == 0
    assert main([*args, "-o", str(tmp_path / "two"), "--workers", "2"]) == 0
    one = _tree(tmp_path / "one")
    assert len([n for n in one if n.startswith("bundles")]) > 2
    assert "unverified-codes.json" in one
    assert _tree(tmp_path / "two") == one


def test_a_workers_error_stops_the_job_as_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unverified_mappings: Path
) -> None:
    """`--strict` with an unverified code met in a worker: exit 4, no NDJSON left."""
    from fhir_cart import map_workers

    monkeypatch.setattr(map_workers, "RUN", 2)
    monkeypatch.setattr(map_workers, "FIRST", 0)
    args = ["map", str(SEED_FILE), "-m", str(SEED_MAPPING), "--strict"]
    assert main([*args, "-o", str(tmp_path / "one"), "--workers", "1"]) == 4
    assert main([*args, "-o", str(tmp_path / "two"), "--workers", "2"]) == 4
    assert not any((tmp_path / "two").rglob("*.ndjson"))


_MAPPING = """
centre: c
anchor: cart_infusion
patients:
  source: patients.csv
  columns: {study_id: id, sex: sex, birth_date: born, anchor_date: infused}
events:
  - name: diagnosis
    concept: diagnosis
    columns: {when_date: dx}
    constants: {value: b_all}
  - name: labs
    source: events.csv
    columns: {study_id: id, concept: what, when_day: day, value: result}
  - name: death
    concept: death
    columns: {when_day: died}
"""
_PATIENTS = """id,sex,born,infused,dx,died
P1,female,2010-01-01,2020-01-10,2019-06-01,
P2,alien,2010-01-01,2020-01-10,2019-06-01,
P3,male,2011-05-05,,2019-01-01,
P4,male,2009-02-02,2021-03-03,2020-13-01,400
P5,female,2012-02-02,2021-03-03,2020-12-01,30
"""
_EVENTS = [
    "P1,cart_infusion,0,",
    "P1,mrd,28,negative",
    "P1,mrd,28x,negative",
    "P2,cart_infusion,0,",
    "P3,mrd,10,negative",
    "P4,cart_infusion,0,",
    "P4,mrd,28,maybe",
    "P5,cart_infusion,0,",
    "P9,cart_infusion,0,",
    ",mrd,3,negative",
]


@pytest.mark.parametrize("order", ["grouped", "reversed"])
@pytest.mark.parametrize("first", [0, 2])
def test_workers_read_the_rows_and_report_as_one_process(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    order: str,
    first: int,
) -> None:
    """`map --workers 2` on a CSV study read patient by patient: the workers check and
    assemble each patient's rows too. Rejects (a bad patient row and its events, bad cells,
    rows of no patient, a blank id), the missing-anchor warnings and every file are what
    one process gives, for event rows grouped by patient and in another order (sorted on
    disk), with events from the patient row before and after the event file's."""
    from fhir_cart import map_workers

    monkeypatch.setattr(map_workers, "RUN", 1)
    monkeypatch.setattr(map_workers, "FIRST", first)
    study = tmp_path / "study"
    study.mkdir()
    (study / "patients.csv").write_text(_PATIENTS, encoding="utf-8")
    rows = _EVENTS if order == "grouped" else _EVENTS[::-1]
    (study / "events.csv").write_text("id,what,day,result\n" + "\n".join(rows) + "\n")
    (tmp_path / "mapping.yaml").write_text(_MAPPING, encoding="utf-8")
    args = ["map", str(study), "-m", str(tmp_path / "mapping.yaml"), "--continue-on-error"]
    said = {}
    for workers in ("1", "2"):
        assert main([*args, "-o", str(tmp_path / workers), "--workers", workers]) == 0
        said[workers] = capsys.readouterr()
    one = _tree(tmp_path / "1")
    rejects = one["rejects.csv"].decode()
    for reason in ("alien", "rejected", "28x", "maybe", "no patient with this id", "13"):
        assert reason in rejects
    assert "P9" in rejects
    assert "P3: no cart_infusion event" in said["1"].err.replace("\n", " ")
    assert _tree(tmp_path / "2") == one
    assert said["2"].err.replace(str(tmp_path / "2"), "") == said["1"].err.replace(
        str(tmp_path / "1"), ""
    )


def test_a_patients_events_come_in_the_mappings_order(tmp_path: Path) -> None:
    """Read patient by patient, events from the patient row and from the event file come
    in the order the mapping lists their specs (diagnosis, labs, death), as when the file
    is held."""
    from fhir_cart.library.study_mapping import load_study_mapping
    from fhir_cart.study import read_study

    study = tmp_path / "study"
    study.mkdir()
    (study / "patients.csv").write_text(_PATIENTS, encoding="utf-8")
    (study / "events.csv").write_text("id,what,day,result\n" + "\n".join(_EVENTS) + "\n")
    (tmp_path / "mapping.yaml").write_text(_MAPPING, encoding="utf-8")
    read = read_study(study, load_study_mapping(tmp_path / "mapping.yaml"))
    concepts = {c.patient.study_id: [e.concept for e in c.events] for c in read.cases}
    assert concepts["P5"] == ["diagnosis", "cart_infusion", "death"]
    assert concepts["P1"] == ["diagnosis", "cart_infusion", "mrd"]
