"""`fhir-cart tables DIR`: a folder of NDJSON gives the tables a pull of the same resources
gives (offline: ``cases_from_fhir`` over the same resources, written by ``write_study`` and
``write_unmapped``), mapped patient by patient through an on-disk index, whatever order
the files and lines come in; plus the per-type account a pull counts."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from openpyxl import load_workbook

from fhir_cart.application import Application
from fhir_cart.bundle import map_cases
from fhir_cart.cli import main
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.records import Case
from fhir_cart.sync.accounting import by_type, places
from fhir_cart.writers import write_study, write_unmapped
from tests.ehr_cases import load_cases
from tests.unit.mappers.test_reverse_stream import _resources as hostile_resources

Json = dict[str, Any]


def _write_ndjson(resources: list[Json], folder: Path, *, name: str = "{}.ndjson") -> Path:
    """One file per type (as a bulk export writes them), resources in the order given."""
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[Json]] = {}
    for resource in resources:
        by_type.setdefault(str(resource.get("resourceType")), []).append(resource)
    for rtype, items in by_type.items():
        body = b"".join(orjson.dumps(r) + b"\n" for r in items)
        (folder / name.format(rtype)).write_bytes(body)
    return folder


def _file_rows(path: Path) -> list[tuple[str, ...]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return [tuple(rows[0]), *sorted(tuple(r) for r in rows[1:])]


def _folder_rows(folder: Path) -> dict[str, list[tuple[str, ...]]]:
    return {p.name: _file_rows(p) for p in sorted(folder.glob("*.csv"))}


def _pulled(ctx: MappingContext, resources: list[Json], out: Path) -> None:
    """What `fhir-cart pull` writes for these resources."""
    result = cases_from_fhir(ctx, resources)
    write_study(result.cases, out, "csv", other=[dict(r) for r in result.other])
    if result.unmapped:
        write_unmapped(result.unmapped, out / "unmapped.csv")
    if result.excluded:
        write_unmapped(result.excluded, out / "excluded.csv")


def _same_as_pull(
    resources: list[Json], tmp_path: Path, folder: Path, *, account: bool = True
) -> None:
    app = Application()
    ctx = app.pull_context()
    _pulled(ctx, resources, tmp_path / "pull")
    got = app.tables(folder, tmp_path / "tables")
    want = _folder_rows(tmp_path / "pull")
    assert _folder_rows(tmp_path / "tables") == want
    assert len(want["patients.csv"]) > 1
    result = cases_from_fhir(ctx, resources)
    if account:
        assert got.by_type == by_type(places(ctx, resources, result))
    assert sum(c.fetched for c in got.by_type.values()) == len(resources)
    assert not any(c.unaccounted or c.twice for c in got.by_type.values())
    assert got.patients == len(result.cases)
    assert (got.other, got.unmapped, got.excluded) == (
        len(result.other),
        len(result.unmapped),
        len(result.excluded),
    )


def _seed_resources(ctx: MappingContext, seed_cases: list[Case]) -> list[Json]:
    relative = ctx.with_style("relative")
    return [r for resources in map_cases(relative, seed_cases) for r in resources]


def test_seed_map_output_gives_the_pulls_tables(
    ctx: MappingContext, seed_cases: list[Case], tmp_path: Path
) -> None:
    resources = _seed_resources(ctx, seed_cases)
    _same_as_pull(resources, tmp_path, _write_ndjson(resources, tmp_path / "ndjson"))


def test_ehr_fixtures_give_the_pulls_tables(tmp_path: Path) -> None:
    resources = [r for case in load_cases() for r in case.resources]
    folder = _write_ndjson(resources, tmp_path / "ndjson")
    _same_as_pull(resources, tmp_path, folder)
    assert (tmp_path / "tables" / "other.csv").exists()
    assert (tmp_path / "tables" / "excluded.csv").exists()


def test_hostile_resources_patients_last_and_gzipped(
    ctx: MappingContext, seed_cases: list[Case], tmp_path: Path
) -> None:
    """Resources of no patient, a patient that cannot be read, specimens used, unused and
    named across patients, unused drugs; Patients in the last file, its lines reversed, and
    one file gzipped: the index groups them, whatever their order."""
    resources = hostile_resources(ctx, seed_cases)
    patients = [r for r in resources if r["resourceType"] == "Patient"][::-1]
    folder = _write_ndjson(
        [r for r in resources if r["resourceType"] != "Patient"], tmp_path / "ndjson"
    )
    _write_ndjson(patients, folder, name="zz-{}.ndjson")
    plain = folder / "Observation.ndjson"
    (folder / "Observation.ndjson.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    # (the pull's account, over all resources at once, counts the events of a patient whose
    # study id a second Patient also carries as unaccounted: see the twins; patient by
    # patient, each is counted where it went)
    _same_as_pull(resources, tmp_path, folder, account=False)


def test_xlsx_is_the_pulls_workbook(
    ctx: MappingContext, seed_cases: list[Case], tmp_path: Path
) -> None:
    resources = [r for case in load_cases() for r in case.resources]
    folder = _write_ndjson(resources, tmp_path / "ndjson")
    app = Application()
    result = cases_from_fhir(app.pull_context(), resources)
    write_study(result.cases, tmp_path / "pull", "xlsx", other=[dict(r) for r in result.other])
    app.tables(folder, tmp_path / "tables", "xlsx")

    def sheets(path: Path) -> dict[str, list[tuple[Any, ...]]]:
        book = load_workbook(path, read_only=True)
        got = {}
        for sheet in book.worksheets:
            rows = [tuple(r) for r in sheet.iter_rows(values_only=True)]
            got[sheet.title] = [rows[0], *sorted(rows[1:], key=repr)]
        return got

    want = sheets(tmp_path / "pull" / "study.xlsx")
    assert set(want) == {"patients", "events", "other"}
    assert sheets(tmp_path / "tables" / "study.xlsx") == want


def test_command_prints_the_account_and_names_a_bad_line(
    ctx: MappingContext, seed_cases: list[Case], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _write_ndjson(_seed_resources(ctx, seed_cases), tmp_path / "ndjson")
    assert main(["tables", str(folder), "--out", str(tmp_path / "out"), "--study", "seed"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(seed_cases)} patients from" in printed
    assert "Resources by type" in printed
    assert "blinatumomab before CAR-T" in printed  # --study: the study's summary, titled
    assert (tmp_path / "out" / "patients.csv").exists()
    with (folder / "Condition.ndjson").open("ab") as handle:
        handle.write(b'{"resourceType": "Condition", "id": \n')
    assert main(["tables", str(folder), "--out", str(tmp_path / "out2")]) == 2
    said = capsys.readouterr().err.replace("\n", "")  # the console wraps lines
    assert "Condition.ndjson line 8" in said
    assert "not JSON" in said
    assert main(["tables", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2


def test_a_patient_listed_twice_is_read_from_its_last_copy(
    ctx: MappingContext, seed_cases: list[Case], tmp_path: Path
) -> None:
    """As a pull keeps the last version it receives (and cases_from_fhir the last Patient)."""
    resources = _seed_resources(ctx, seed_cases)
    first = next(r for r in resources if r["resourceType"] == "Patient")
    changed = {**first, "gender": "other" if first.get("gender") != "other" else "male"}
    resources.append(changed)
    _same_as_pull(resources, tmp_path, _write_ndjson(resources, tmp_path / "ndjson"), account=False)
    rows = _file_rows(tmp_path / "tables" / "patients.csv")
    assert len(rows) == len(seed_cases) + 1


def test_centre_names_patients_whose_identifiers_name_none(tmp_path: Path) -> None:
    resources = [r for case in load_cases() for r in case.resources]
    folder = _write_ndjson(resources, tmp_path / "ndjson")
    assert main(["tables", str(folder), "--out", str(tmp_path / "out"), "--centre", "uhx"]) == 0
    with (tmp_path / "out" / "patients.csv").open(newline="", encoding="utf-8") as handle:
        centres = {row["centre"] for row in csv.DictReader(handle)}
    assert centres == {"uhx"}


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_two_workers_write_the_bytes_one_writes(
    ctx: MappingContext, seed_cases: list[Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Patients split over two processes (a run each, joined in order), with the resources
    of no patient and the Specimens and Medications left for the end, where what each
    worker used is known: one observation names another patient's specimen, a patient's
    events say nothing of another's drugs, unused ones are listed once."""
    import fhir_cart.ndjson_tables as tables

    resources = [
        *hostile_resources(ctx, seed_cases),
        *(r for c in load_cases() for r in c.resources),
    ]
    folder = _write_ndjson(resources, tmp_path / "ndjson")
    app = Application()
    one = app.tables(folder, tmp_path / "one", keep_cases=True)
    patients = sum(1 for r in resources if r["resourceType"] == "Patient")
    monkeypatch.setattr(tables, "_LEAST_PER_WORKER", patients // 3)
    assert len(tables._runs([str(n) for n in range(patients)], 2)) == 2
    seen: list[int] = []
    two = app.tables(folder, tmp_path / "two", keep_cases=True, workers=2, on_patient=seen.append)
    assert _bytes(tmp_path / "two") == _bytes(tmp_path / "one")
    assert {"patients.csv", "events.csv", "other.csv", "unmapped.csv"} <= set(
        _bytes(tmp_path / "one")
    )
    assert len(seen) == 2  # once per worker
    assert two.by_type == one.by_type
    assert two.cases == one.cases
    assert two.written == [tmp_path / "two" / p.name for p in one.written]
    assert (two.patients, two.other, two.unmapped, two.excluded, two.excluded_reasons) == (
        one.patients,
        one.other,
        one.unmapped,
        one.excluded,
        one.excluded_reasons,
    )
    # the command line: `--workers 1` is a number, not a flag (`serve --workers` is one)
    for workers in ("1", "2"):
        out = tmp_path / f"cli-{workers}"
        assert main(["tables", str(folder), "--out", str(out), "--workers", workers]) == 0
        assert _bytes(out) == _bytes(tmp_path / "one")
