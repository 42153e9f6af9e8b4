"""`fhir-cart views`: the study tables as SQL-on-FHIR v2 ViewDefinitions, generated from the
concept library, run by two engines independent of fhir_cart (fhir4ds on DuckDB, and the
Python port of the SQL-on-FHIR reference implementation; .cache/sof-venv, made by
scripts/fetch-sof-engines.sh), whose rows must equal the columns the views express of the
tables `fhir-cart tables` writes for the same NDJSON: the seed's `fhir-cart map` output and
the public mCODE 4.0.0 examples."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cart.application import Application
from fhir_cart.cli import main
from fhir_cart.conformance.views import (
    NOT_EXPRESSED,
    VIEW_TYPE,
    Centre,
    centres_in,
    view_definitions,
    write_views,
)
from fhir_cart.library.concepts import ConceptsFile
from fhir_cart.mappers.context import mapping_context
from tests.conftest import MAPPINGS, ROOT, need
from tests.sof import compare

Json = dict[str, Any]
SEED = ROOT / "fixtures" / "seed" / "seed_cohort.xlsx"
MCODE = ROOT / ".cache" / "mcode-4.0.0"
ENGINES = ("duckdb", "reference")
FAST_ON_DUCKDB = (
    "patients",
    "events_condition",
    "events_adverse_event",
    "events_death",
    "events_follow_up",
)
"""Views fhir4ds runs in seconds: its SQL for the others is megabytes (each coded attribute
is a unionAll it inlines) and takes minutes; the reference engine runs them all."""
_FROM_OTHER_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationDispense")


def _engines() -> None:
    if not compare.SOF_PYTHON.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch-sof-engines.sh")], check=False)
    need(compare.SOF_PYTHON.exists(), "SQL-on-FHIR engines not installed (.cache/sof-venv)")


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("views")
    assert main(["views", "--out", str(out)]) == 0
    return out


def _tables(ndjson: Path, out: Path) -> tuple[list[compare.Row], list[compare.Row]]:
    Application().tables(ndjson, out)
    return compare.table_rows(out / "patients.csv"), compare.table_rows(out / "events.csv")


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seed")
    mapping = MAPPINGS / "centres" / "seed.yaml"
    assert main(["map", str(SEED), "--mapping", str(mapping), "--out", str(out / "map")]) == 0
    return out / "map" / "ndjson"


@pytest.fixture(scope="module")
def mcode(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (MCODE / ".complete").exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch-mcode-examples.sh")], check=False)
    need((MCODE / ".complete").exists(), "mCODE 4.0.0 examples not fetched (npm unreachable?)")
    out = tmp_path_factory.mktemp("mcode")
    by_type: dict[str, list[bytes]] = {}
    for path in sorted(MCODE.glob("*.json")):
        resource = orjson.loads(path.read_bytes())
        if resource["resourceType"] != "Bundle":
            by_type.setdefault(resource["resourceType"], []).append(orjson.dumps(resource))
    for rtype, lines in by_type.items():
        (out / f"{rtype}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return out


def _resources(ndjson: Path) -> dict[str, Json]:
    found = {}
    for path in ndjson.glob("*.ndjson"):
        for line in path.read_bytes().splitlines():
            resource = orjson.loads(line)
            found[str(resource["id"])] = resource
    return found


def _not_covered(ndjson: Path, views: Path) -> Any:
    """A table row no view gives (NOT_EXPRESSED): an event read from a MedicationRequest,
    MedicationStatement or MedicationDispense, from a drug given by medicationReference,
    or classified by its text; or of a kind whose view was not run."""
    resources = _resources(ndjson)
    library = Application().pull_context().concepts
    run = {p.stem for p in views.glob("*.json")}

    def check(row: compare.Row) -> bool:
        if f"events_{library.concept(str(row['concept'])).kind}" not in run:
            return True
        if row.get("origin") in _FROM_OTHER_TYPES or "read from text" in (row["status"] or ""):
            return True
        rid = str(row["event_id"]).removeprefix("medication-administration-")
        return "medicationReference" in resources.get(rid, {})

    return check


def _check(engine: str, ndjson: Path, views: Path, tmp_path: Path) -> tuple[int, int]:
    if engine == "duckdb":
        subset = tmp_path / "views"
        subset.mkdir()
        for name in FAST_ON_DUCKDB:
            (subset / f"{name}.json").write_bytes((views / f"{name}.json").read_bytes())
        views = subset
    patients, events = _tables(ndjson, tmp_path / "tables")
    rows = compare.engine_rows(engine, ndjson, views)
    problems = compare.compare_patients(patients, rows["patients"])
    found, compared, left_out = compare.compare_events(
        events, compare.view_events(rows), not_covered=_not_covered(ndjson, views)
    )
    assert problems + found == [], "\n".join(problems + found)
    print(
        f"{engine}: {len(patients)} patients, {compared} of {len(events)} events compared, "
        f"{left_out} left out (no view run gives them)"
    )
    assert compared + left_out == len(events)
    return len(patients), compared


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_engines_give_the_seed_tables(engine: str, seed: Path, views: Path, tmp_path: Path) -> None:
    _engines()
    patients, compared = _check(engine, seed, views, tmp_path)
    assert patients == 7
    if engine == "reference":  # every row of the seed's tables
        assert compared == len(compare.table_rows(tmp_path / "tables" / "events.csv"))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_engines_give_the_mcode_tables(
    engine: str, mcode: Path, views: Path, tmp_path: Path
) -> None:
    _engines()
    patients, compared = _check(engine, mcode, views, tmp_path)
    assert patients >= 7
    assert compared > 0


def _wrong(views: Path, out: Path, name: str, column: str, path: str) -> Path:
    out.mkdir()
    for source in views.glob("*.json"):
        view = json.loads(source.read_text())
        if source.stem == name:
            for select in view["select"]:
                for col in select.get("column", ()):
                    if col["name"] == column:
                        col["path"] = path
        (out / source.name).write_text(json.dumps(view))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "column", "path", "expected"),
    [
        # the first of a Period's dates instead of the last: a plausible slip
        ("events_medication", "end_date", "effective.ofType(Period).start", "end_date table"),
        ("patients", "sex", "gender.where($this = 'female')", "sex table 'male' view None"),
        # the relative day read from the extension's other part
        (
            "events_observation",
            "when_day",
            "effective.ofType(dateTime).extension('https://fhir-cart.dev/fhir/StructureDefinition/"
            "relative-day').extension('latest-day').value.ofType(integer)",
            "when_day table",
        ),
    ],
)
def test_a_wrong_view_path_fails_the_comparison(
    name: str, column: str, path: str, expected: str, seed: Path, views: Path, tmp_path: Path
) -> None:
    _engines()
    wrong = _wrong(views, tmp_path / "wrong", name, column, path)
    patients, events = _tables(seed, tmp_path / "tables")
    rows = compare.engine_rows("reference", seed, wrong)
    problems = compare.compare_patients(patients, rows["patients"])
    problems += compare.compare_events(events, compare.view_events(rows))[0]
    assert any(expected in p for p in problems), problems[:5]


# -- the generator (fast) ---------------------------------------------------------------------


def _paths(view: Json) -> str:
    return json.dumps(view)


def test_every_concept_of_the_library_is_matched_by_its_codings() -> None:
    ctx = Application().pull_context()
    views = view_definitions(ctx, [Centre("seed", ctx.identifier_base)])
    text = {name: _paths(view) for name, view in views.items()}
    for key in ctx.concepts.keys():  # noqa: SIM118 (ConceptLibrary.keys, not a dict)
        concept = ctx.concepts.concept(key)
        if concept.kind in ("death", "follow_up"):
            assert f"'{key}'" in text[f"events_{concept.kind}"]
            continue
        assert f"'{key}'" in text[f"events_{concept.kind}"], key
        for coding in concept.codings:
            found = f"code = '{coding.code}'" in text[f"events_{concept.kind}"]
            # prefix codes need startsWith; a broader code never says the concept alone
            assert found != (coding.prefix or coding.broader), (key, coding.code)


def test_a_study_concept_gets_its_branch_and_an_unknown_status_no_row() -> None:
    extra = ConceptsFile.model_validate(
        {
            "concepts": {
                "ferritin_x": {
                    "label": "Ferritin",
                    "kind": "observation",
                    "codings": [
                        {
                            "system": "loinc",
                            "code": "2276-4",
                            "display": "Ferritin",
                            "source": "test",
                            "verified": True,
                        }
                    ],
                    "value": {"type": "quantity", "units": ["ug/L"]},
                }
            }
        }
    )
    ctx = mapping_context(extra=extra)
    view = view_definitions(ctx, [])["events_observation"]
    concepts = next(s for s in view["select"] if "'ferritin_x'" in json.dumps(s))
    branch = [b for b in concepts["unionAll"] if "'ferritin_x'" in json.dumps(b)]
    assert len(branch) == 1
    assert "code = '2276-4'" in branch[0]["forEach"]
    assert "system = 'http://loinc.org'" in branch[0]["forEach"]
    where = " ".join(w["path"] for w in view["where"])
    assert "status = 'final'" in where
    assert "'entered-in-error'" not in where


def test_views_are_written_one_file_per_table(tmp_path: Path) -> None:
    ctx = Application().pull_context()
    centres = centres_in(ctx, MAPPINGS / "centres")
    assert {c.name for c in centres} >= {"seed", "canonical"}
    views = view_definitions(ctx, centres, default_centre="uk-x")
    written = write_views(views, tmp_path)
    assert sorted(p.stem for p in written) == sorted(views)
    patients = json.loads((tmp_path / "patients.json").read_text())
    assert patients["resourceType"] == VIEW_TYPE
    assert patients["resource"] == "Patient"
    branches = next(s["unionAll"] for s in patients["select"] if "unionAll" in s)
    centre = {c["path"] for b in branches for c in b["column"] if c["name"] == "centre"}
    assert centre == {"'uk-x'", *(f"'{c.name}'" for c in centres)}
    assert set(NOT_EXPRESSED) >= {"events.when_anchor", "events.status"}


def test_fhirpath_strings_are_escaped() -> None:
    ctx = Application().pull_context()
    view = view_definitions(ctx, [Centre("o'brien", "https://x.org/id")])["patients"]
    assert "'o\\'brien'" in _paths(view).replace("\\\\", "\\")
    assert copy.deepcopy(view) == view


def test_docs_list_every_column_a_view_cannot_express() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split("## `fhir-cart views", 1)[1].split("\n## ", 1)[0]
    missing = [key for key in NOT_EXPRESSED if f"`{key}`" not in section]
    assert missing == []
