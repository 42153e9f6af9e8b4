"""Map-side slips stop where they happen (issue 17, item 6; issue 20's input findings): every
error shows its whole list, in the CLI and in the service's problem documents alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.cli import main
from fhir_cart.errors import ConfigError, InputError
from fhir_cart.library.studies import StudyDefinition, parse_study
from fhir_cart.library.study_mapping import StudyMapping, load_study_mapping
from fhir_cart.records import Case, Event, PatientRecord, Value
from fhir_cart.report.evaluate import missing_anchor, summarise, unmatched_text_tests
from fhir_cart.service.app import create_app
from fhir_cart.settings import Settings
from fhir_cart.study import ReadResult, read_study
from tests.support import CENTRE_B_FILE, CENTRE_B_MAPPING, MAPPINGS, ROOT

KEY = {"X-API-Key": "k-123-0123456789abcdef0123456789ab"}


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        api_keys=[SecretStr("k-123-0123456789abcdef0123456789ab")],
    )


def _centre_b(tmp_path: Path, old: str, new: str, *, rows: int | None = None) -> Path:
    """centre_b.csv with ``old`` replaced by ``new`` (in the header or the rows); ``rows``:
    keep only that many data rows."""
    lines = CENTRE_B_FILE.read_text(encoding="utf-8").splitlines()
    if rows is not None:
        lines = lines[: 1 + rows]
    text = "\n".join(lines) + "\n"
    assert old in text
    path = tmp_path / "centre_b.csv"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _upload(tmp_path: Path, study: Path, mapping: str = "centre_b") -> tuple[int, Any]:
    app = create_app(_settings(tmp_path), run_workers=False)
    with TestClient(app) as client, study.open("rb") as handle:
        answer = client.post(
            "/uploads", headers=KEY, data={"mapping": mapping}, files={"file": (study.name, handle)}
        )
    return answer.status_code, answer.json()


# -- 1. every InputError shows its whole list ------------------------------------------------


def test_a_misspelt_column_names_the_column_spec_and_close_match_in_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _centre_b(tmp_path, ",Birth,", ",Brith,")
    code = main(["map", str(study), "-m", str(CENTRE_B_MAPPING), "-o", str(tmp_path / "o")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 3
    assert "the mapping does not fit the file" in err
    assert "column 'Birth'" in err
    assert "patients.birth_date" in err
    assert "did you mean 'Brith'?" in err


def test_a_misspelt_column_names_the_column_spec_and_close_match_in_the_service(
    tmp_path: Path,
) -> None:
    status, body = _upload(tmp_path, _centre_b(tmp_path, ",Birth,", ",Brith,"))
    assert status == 422
    assert "column 'Birth'" in body["detail"]
    assert "did you mean 'Brith'?" in body["detail"]
    assert body["errors"] == [
        {
            "source": "study.csv",
            "table": "patients",
            "row": 1,
            "column": "Birth",
            "value": None,
            "reason": "column for patients.birth_date is not in the header; did you mean 'Brith'?",
        }
    ]


# -- 8. numbers a double cannot hold; a file with no data rows --------------------------------


def _events(tmp_path: Path, rows: str, spec: dict[str, Any], **top: Any) -> ReadResult:
    """A folder with patients.csv (A, B) and events.csv; ``spec`` reads events.csv."""
    folder = tmp_path / "study"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "patients.csv").write_text("ID\nA\nB\n", encoding="utf-8")
    (folder / "events.csv").write_text(rows, encoding="utf-8")
    spec = {"source": "events", **spec, "columns": {"study_id": "ID", **spec["columns"]}}
    data = {
        "centre": "test",
        "anchor": "cart_infusion",
        "patients": {"source": "patients", "columns": {"study_id": "ID"}},
        "events": [spec],
        **top,
    }
    return read_study(folder, StudyMapping.model_validate(data))


@pytest.mark.parametrize(
    ("cell", "says"),
    [
        ("1e309", "too large"),
        ("<1e-400", "too small"),
        ("-1e400 %", "too large"),
        ("0,0000e-999", None),  # a true zero stays 0
    ],
)
def test_numbers_a_double_cannot_hold_are_rejects_with_their_place(
    tmp_path: Path, cell: str, says: str | None
) -> None:
    spec = {"concept": "mrd", "columns": {"value": "MRD"}}
    result = _events(tmp_path, f"ID,MRD\nA,{cell}\n", spec)
    if says is None:
        assert result.rejects == []
        assert result.cases[0].events[0].value.number == 0.0  # type: ignore[union-attr]
        return
    assert [(r.source, r.row, r.column, r.value) for r in result.rejects] == [
        ("events.csv", 2, "MRD", cell)
    ]
    assert says in result.rejects[0].reason
    assert "check the cell" in result.rejects[0].reason
    assert result.cases[0].events == ()


@pytest.mark.parametrize("cell", ["inf", "nan", "1e999", "-Infinity"])
def test_canonical_numbers_must_be_finite(tmp_path: Path, cell: str) -> None:
    result = _events(
        tmp_path, f"ID,N\nA,{cell}\n", {"concept": "mrd", "columns": {"value_number": "N"}}
    )
    assert [(r.row, r.column, r.value) for r in result.rejects] == [(2, "N", cell)]


def test_a_header_only_file_is_an_error_in_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _centre_b(tmp_path, "Patient,", "Patient,", rows=0)
    code = main(["map", str(study), "-m", str(CENTRE_B_MAPPING), "-o", str(tmp_path / "o")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 3
    assert "centre_b.csv" in err
    assert "no patient rows below the header (row 1)" in err
    assert not (tmp_path / "o" / "ndjson").exists()


def test_a_header_only_file_is_an_error_in_the_service(tmp_path: Path) -> None:
    status, body = _upload(tmp_path, _centre_b(tmp_path, "Patient,", "Patient,", rows=0))
    assert status == 422
    assert "no patient rows below the header (row 1)" in body["detail"]
    assert body["errors"][0]["source"] == "study.csv"


def test_a_file_whose_rows_are_all_blank_is_an_error_too(tmp_path: Path) -> None:
    folder = tmp_path / "blank"
    folder.mkdir()
    (folder / "patients.csv").write_text("ID\n\n , \n", encoding="utf-8")
    patients = {"source": "patients", "columns": {"study_id": "ID"}}
    mapping = StudyMapping.model_validate({"centre": "test", "patients": patients})
    with pytest.raises(InputError, match="no patient rows"):
        read_study(folder, mapping)


# -- 3. impossible dates say why; one reject per cause ----------------------------------------


@pytest.mark.parametrize(
    ("cell", "formats", "reason"),
    [
        ("31.02.2024", ["%d.%m.%Y"], "day 31 does not exist in February 2024"),
        ("29.02.2023", ["%d.%m.%Y"], "day 29 does not exist in February 2023"),
        ("2024-04-31", ["%d.%m.%Y", "%Y-%m-%d"], "day 31 does not exist in April 2024"),
        ("15.13.2024", ["%d.%m.%Y"], "month 13 does not exist"),
        ("00.01.2024", ["%d.%m.%Y"], "day 0 does not exist in January 2024"),
        ("2024/01/05", ["%d.%m.%Y"], "not a date; expected one written as %d.%m.%Y"),
    ],
)
def test_an_impossible_date_says_why(
    tmp_path: Path, cell: str, formats: list[str], reason: str
) -> None:
    result = _events(
        tmp_path,
        f"ID,C,D\nA,apheresis,{cell}\n",
        {"columns": {"concept": "C", "when_date": "D"}},
        date_formats=formats,
    )
    assert [(r.row, r.column, r.value) for r in result.rejects] == [(2, "D", cell)]
    assert result.rejects[0].reason.startswith(reason)


def test_a_bad_anchor_date_is_one_reject(tmp_path: Path) -> None:
    """The infusion date is the patient's anchor date and the date of two events on the same
    row: one cause, one reject (it printed three times)."""
    study = tmp_path / "cohort.csv"
    study.write_text(
        "UPN,Infusion,MRD d28\n17,31.02.2024,neg\n23,02.05.2022,0.02%\n", encoding="utf-8"
    )
    mapping = StudyMapping.model_validate(
        {
            "centre": "st-elsewhere",
            "date_formats": ["%d.%m.%Y"],
            "anchor": "cart_infusion",
            "patients": {"columns": {"study_id": "UPN", "anchor_date": "Infusion"}},
            "events": [
                {
                    "name": "infusion",
                    "concept": "cart_infusion",
                    "columns": {"when_date": "Infusion"},
                    "constants": {"when_day": 0},
                },
                {
                    "name": "mrd-d28",
                    "concept": "mrd",
                    "columns": {"value": "MRD d28"},
                    "values": {"value": {"neg": "negative"}},
                    "constants": {"when_day": 28},
                },
            ],
        }
    )
    result = read_study(study, mapping)
    assert [(r.row, r.column, r.value, r.reason) for r in result.rejects] == [
        (
            2,
            "Infusion",
            "31.02.2024",
            "day 31 does not exist in February 2024 (read as %d.%m.%Y); the patient and their "
            "events on this row are not read",
        ),
    ]
    assert [c.patient.study_id for c in result.cases] == ["23"]


def test_one_bad_cell_read_by_two_specs_is_one_reject(tmp_path: Path) -> None:
    """centre_b reads `CAR-T date` for the infusion and for the MRD at infusion."""
    study = _centre_b(tmp_path, "12.04.2021,17.05.2021", "12.04.2021,31.04.2021")
    result = read_study(study, load_study_mapping(CENTRE_B_MAPPING))
    assert [(r.row, r.column, r.value, r.table) for r in result.rejects] == [
        (2, "CAR-T date", "31.04.2021", "cart_infusion")
    ]
    assert result.rejects[0].reason.startswith("day 31 does not exist in April 2021")


# -- 2. a unit of another kind than the column's is a reject unless the mapping allows it -----

CYCLO = {"concept": "cyclophosphamide", "columns": {"value": "Dose"}}


@pytest.mark.parametrize(
    ("cell", "declared", "got"),
    [
        ("1,5 g/m²", "mg/m2", (1500.0, "mg/m2")),  # same kind: converted
        ("800", "mg/m2", (800.0, "mg/m2")),  # bare number: the column's unit
        ("1,5 g", ["mg/m2", "mg"], (1500.0, "mg")),  # listed kind: allowed
        ("1,5 g", ["mg/m2", "g"], (1500.0, "mg")),
        ("30 mg/kg", ["mg/m2", "mg/kg"], (30.0, "mg/kg")),
    ],
)
def test_a_unit_of_the_columns_kind_or_a_listed_one_is_read(
    tmp_path: Path, cell: str, declared: Any, got: tuple[float, str]
) -> None:
    result = _events(tmp_path, f'ID,Dose\nA,"{cell}"\n', {**CYCLO, "units": {"value": declared}})
    assert result.rejects == []
    value = result.cases[0].events[0].value
    assert value is not None
    assert (value.number, value.unit) == got


def test_a_fixed_dose_in_a_per_area_column_is_a_reject_with_the_fix(tmp_path: Path) -> None:
    """`1,5 g` in a column of mg/m²: almost surely a typo for g/m² (it became 1,500 mg)."""
    result = _events(
        tmp_path, 'ID,Dose\nA,"1,5 g"\nB,"1,5 g/m²"\n', {**CYCLO, "units": {"value": "mg/m2"}}
    )
    assert [(r.source, r.row, r.column, r.value) for r in result.rejects] == [
        ("events.csv", 2, "Dose", "1,5 g")
    ]
    reason = result.rejects[0].reason
    assert "unit 'g' does not measure what this column's unit 'mg/m2' measures" in reason
    assert "units: {value: [mg/m2, g]}" in reason
    assert [len(c.events) for c in result.cases] == [0, 1]


def test_a_unit_column_is_not_checked_against_the_columns_default(tmp_path: Path) -> None:
    """A unit the row states in its own unit column is the source's word: kept as before."""
    result = _events(
        tmp_path,
        "ID,Dose,Unit\nA,2,mg\n",
        {**CYCLO, "columns": {"value": "Dose", "unit": "Unit"}, "units": {"value": "mg/m2"}},
    )
    assert result.rejects == []


def test_cells_in_a_cells_per_kg_attribute_column_are_a_reject(tmp_path: Path) -> None:
    spec = {
        "concept": "cart_infusion",
        "columns": {"cell_dose": "Cells"},
        "units": {"cell_dose": "10*6/kg"},
    }
    result = _events(tmp_path, "ID,Cells\nA,200 x10^6\nB,2.1\n", spec)
    assert [(r.row, r.column, r.value) for r in result.rejects] == [(2, "Cells", "200 x10^6")]
    reason = result.rejects[0].reason
    assert "does not measure what this column's unit '10*6/kg' measures" in reason
    assert "units: {cell_dose: [10*6/kg, 10*6]}" in reason
    assert result.cases[1].events[0].attributes["cell_dose"] == 2.1


def test_allowed_units_are_checked_when_the_mapping_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "centre: x\npatients: {columns: {study_id: ID}}\nevents:\n"
        "  - {concept: cyclophosphamide, columns: {value: Dose},"
        " units: {value: [mg/m2, gramm]}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"events\[0\]\.units\.value: 'gramm' is not a UCUM"):
        load_study_mapping(path)
    path.write_text(path.read_text().replace("[mg/m2, gramm]", "[]"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"units"):
        load_study_mapping(path)


# -- 7. paths inside a mapping file resolve from that file ------------------------------------


def test_a_mappings_study_path_resolves_from_the_mapping_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "centre" / "mappings"
    (folder / "studies").mkdir(parents=True)
    seed = (MAPPINGS / "studies" / "seed.yaml").read_text(encoding="utf-8")
    assert "\nname: Marschollek 2022" in seed
    ours = seed.replace("\nname: Marschollek 2022", "\nname: Our own study 2022")
    (folder / "studies" / "ours.yaml").write_text(ours, encoding="utf-8")
    text = CENTRE_B_MAPPING.read_text(encoding="utf-8").replace(
        "study: seed", "study: studies/ours.yaml"
    )
    mapping = folder / "centre_b.yaml"
    mapping.write_text(text, encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["summary", str(CENTRE_B_FILE), "-m", str(mapping)]) == 0
    assert "Our own study 2022" in capsys.readouterr().out
    # an absolute path keeps working
    mapping.write_text(
        text.replace("studies/ours.yaml", str(folder / "studies" / "ours.yaml")), encoding="utf-8"
    )
    assert load_study_mapping(mapping).study == str(folder / "studies" / "ours.yaml")
    # a study name stays a name (mappings/studies)
    mapping.write_text(CENTRE_B_MAPPING.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_study_mapping(mapping).study == "seed"


def test_a_registrys_study_path_never_falls_back_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_cart.registry.definition import load_registry
    from fhir_cart.registry.workflow import study_summariser

    registry = load_registry(ROOT / "fixtures" / "registry" / "registry.yaml")
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "s.yaml").write_text(
        (MAPPINGS / "studies" / "seed.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)  # holds studies/s.yaml; the registry's folder does not
    named = registry.model_copy(update={"study": "studies/s.yaml"})
    with pytest.raises(ConfigError, match=r"fixtures/registry/studies/s\.yaml"):
        study_summariser(named)
    assert study_summariser(registry.model_copy(update={"study": "seed"})) is not None


# -- 5. text tests ignore case and spaces, and say when they match nothing --------------------


def _ae(
    sid: str, text: str | None = None, concept: str = "adverse_event_other", **attributes: Any
) -> Case:
    value = Value(text=text) if text is not None else None
    event = Event(event_id="e1", concept=concept, value=value, attributes=attributes)
    return Case(patient=PatientRecord(study_id=sid, centre="test"), events=(event,))


def _measure(count: dict[str, Any]) -> StudyDefinition:
    return parse_study(
        {"name": "t", "anchor": "cart_infusion", "measures": [{"id": "m", "count": count}]}
    )


def test_a_text_test_ignores_case_and_spaces() -> None:
    texts = ["Hypotension", "hypotension", " HYPOTENSION ", "Hypotension  ", "Hypoxia", "hypo x"]
    cases = [_ae(f"P{n}", text) for n, text in enumerate(texts, start=1)]
    study = _measure({"event": {"concept": "adverse_event_other", "value": "Hypotension"}})
    (result,) = summarise(cases, study)
    assert (result.value, result.patients) == (4, ("P1", "P2", "P3", "P4"))
    assert unmatched_text_tests(cases, study) == []


def test_an_open_attributes_text_test_ignores_case_and_spaces() -> None:
    causes = ["Sepsis", "sepsis ", "relapse"]
    cases = [_ae(f"P{n}", concept="death", cause=c) for n, c in enumerate(causes, start=1)]
    study = _measure({"event": {"concept": "death", "attributes": {"cause": "SEPSIS"}}})
    assert summarise(cases, study)[0].value == 2


def test_a_text_test_that_matches_nothing_warns_with_the_closest_values() -> None:
    cases = [_ae("P1", "Hypotension"), _ae("P2", "Hypoxia"), _ae("P3", "Fever")]
    study = _measure({"event": {"concept": "adverse_event_other", "value": "Hypotensoin"}})
    assert summarise(cases, study)[0].value == 0
    assert unmatched_text_tests(cases, study) == [
        "measures[0] (m).count.event.value: 'Hypotensoin' matches no event; closest values "
        "present: 'Hypotension'"
    ]
    far = _measure({"event": {"concept": "adverse_event_other", "value": "Seizure"}})
    assert unmatched_text_tests(cases, far) == [
        "measures[0] (m).count.event.value: 'Seizure' matches no event; values present: "
        "'Fever', 'Hypotension', 'Hypoxia'"
    ]
    # a coded word of a closed value set is no text test: zero is an answer, not a slip
    coded = _measure({"event": {"concept": "disease_status", "value": "relapse"}})
    assert unmatched_text_tests(cases, coded) == []


def test_the_summary_command_prints_unmatched_text_tests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [_ae("P1", "Hypotension"), _ae("P2", "Hypoxia")]
    data = tmp_path / "cases.json"
    data.write_bytes(orjson.dumps([c.model_dump(mode="json") for c in cases]))
    study = tmp_path / "study.yaml"
    study.write_text(
        "name: t\nanchor: cart_infusion\nmeasures:\n  - id: m\n    count: "
        "{event: {concept: adverse_event_other, value: Hypotensoin}}\n",
        encoding="utf-8",
    )
    assert main(["summary", str(data), "--study", str(study), "--json"]) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "'Hypotensoin' matches no event; closest values present: 'Hypotension'" in err


# -- 6. a patient with no anchor event is named -----------------------------------------------


def test_missing_anchor_names_each_patient() -> None:
    cases = [_ae("P1", concept="cart_infusion"), _ae("P2", "x"), _ae("P3", concept="hsct")]
    assert missing_anchor(cases, "cart_infusion") == [
        "patient P2: no cart_infusion event, the anchor every day of the study counts from; "
        "add it to the file (its relative days cannot be placed)",
        "patient P3: no cart_infusion event, the anchor every day of the study counts from; "
        "add it to the file (its relative days cannot be placed)",
    ]


def test_map_and_summary_warn_of_a_patient_without_the_anchor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """centre_b names the seed study (anchor: cart_infusion); B-101's infusion cells are
    blank."""
    study = _centre_b(tmp_path, "12.04.2021,17.05.2021,2.1,", "12.04.2021,,,")
    args = [str(study), "-m", str(CENTRE_B_MAPPING)]
    assert main(["map", *args, "-o", str(tmp_path / "o")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "patient B-101: no cart_infusion event" in err
    assert "B-102" not in err
    assert main(["summary", *args]) == 0
    assert "patient B-101: no cart_infusion event" in " ".join(capsys.readouterr().err.split())


def test_an_upload_warns_of_a_patient_without_the_anchor(tmp_path: Path) -> None:
    study = _centre_b(tmp_path, "12.04.2021,17.05.2021,2.1,", "12.04.2021,,,")
    status, body = _upload(tmp_path, study)
    assert status == 201, body
    assert [w for w in body["warnings"] if "cart_infusion" in w] == [
        "patient B-101: no cart_infusion event, the anchor every day of the study counts "
        "from; add it to the file (its relative days cannot be placed)"
    ]


# -- 4. a constant the source does not state is refused, or marked as assumed ----------------

CSA = {
    "name": "csa",
    "columns": {"concept": "CsA"},
    "values": {"concept": {"x": "ciclosporin"}},
    "constants": {"when_day": -1},
}
REASON = "the file marks only that ciclosporin was given; day -1 is the protocol's start day"


def _csa_mapping(tmp_path: Path, **spec: Any) -> Path:
    path = tmp_path / "csa.yaml"
    data = {
        "centre": "test",
        "anchor": "hsct",
        "patients": {"columns": {"study_id": "ID", "anchor_date": "HSCT"}},
        "events": [{**CSA, **spec}],
    }
    path.write_text(orjson.dumps(data).decode(), encoding="utf-8")  # JSON is YAML
    return path


def test_a_constant_day_for_a_row_that_only_says_x_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_study_mapping(_csa_mapping(tmp_path))
    message = str(caught.value)
    assert "events[0].constants.when_day: -1 supplies a time the file does not state" in message
    assert "`assumed: <reason>`" in message


@pytest.mark.parametrize(
    "spec",
    [
        {"concept": "mrd", "columns": {"value": "MRD d28"}, "constants": {"when_day": 28}},
        {
            "concept": "disease_status",
            "columns": {"when_day": "Relapse"},
            "constants": {"value": "relapse"},
        },
        {"concept": "hsct", "columns": {"donor_type": "Donor"}, "constants": {"when_day": 0}},
        {
            "concept": "disease_status",
            "columns": {"value": "Status"},
            "values": {"value": {"CR1": {"value": "complete_remission", "remission_number": 1}}},
            "constants": {"when_window": "before hsct"},
        },
    ],
)
def test_a_constant_beside_a_stated_time_or_value_is_no_assumption(
    tmp_path: Path, spec: dict[str, Any]
) -> None:
    """A day beside a value cell is what the column states (MRD d28); the anchor's own day 0
    is its definition."""
    path = tmp_path / "m.yaml"
    data = {
        "centre": "test",
        "anchor": "hsct",
        "patients": {"columns": {"study_id": "ID"}},
        "events": [spec],
    }
    path.write_text(orjson.dumps(data).decode(), encoding="utf-8")
    assert load_study_mapping(path).events[0].assumed is None


def test_an_assumed_constant_is_marked_on_the_event_the_tables_and_fhir(tmp_path: Path) -> None:
    from fhir_cart.mappers.context import mapping_context
    from fhir_cart.mappers.from_fhir import cases_from_fhir
    from fhir_cart.mappers.to_fhir import map_case
    from fhir_cart.writers import canonical_mapping, write_study

    mapping = load_study_mapping(_csa_mapping(tmp_path, assumed=REASON))
    study = tmp_path / "s.csv"
    study.write_text("ID,HSCT,CsA\nP1,2020-01-10,x\nP2,2020-02-10,\n", encoding="utf-8")
    result = read_study(study, mapping)
    assert result.rejects == []
    (event,) = result.cases[0].events
    assert (event.concept, event.when.day, event.assumed) == ("ciclosporin", -1, REASON)  # type: ignore[union-attr]
    assert result.cases[1].events == ()
    # tables: an `assumed` column, read back as it was
    folder = tmp_path / "tables"
    write_study(result.cases, folder, "csv")
    header, row = (folder / "events.csv").read_text(encoding="utf-8").splitlines()[:2]
    assert "assumed" in header.split(",")
    assert REASON in row
    assert read_study(folder, canonical_mapping()).cases == result.cases
    # FHIR: an extension with the reason on the resource, read back
    ctx = mapping_context()
    resources, _ = map_case(ctx, result.cases[0])
    (drug,) = [r for r in resources if r["resourceType"] == "MedicationAdministration"]
    assumed = [e for e in drug["extension"] if e["url"] == ctx.ext("assumed")]
    assert assumed == [{"url": ctx.ext("assumed"), "valueString": REASON}]
    back = cases_from_fhir(ctx, resources).cases
    assert back[0].events[0].assumed == REASON


def test_a_filled_cell_is_never_marked_as_assumed(tmp_path: Path) -> None:
    spec = {
        "concept": "ciclosporin",
        "columns": {"concept": "CsA", "when_day": "Day"},
        "constants": {"when_day": -1},
        "assumed": REASON,
    }
    spec["concept"] = None
    spec.pop("concept")
    spec["values"] = {"concept": {"x": "ciclosporin"}}
    result = _events(tmp_path, "ID,CsA,Day\nA,x,-3\nB,x,\n", spec, anchor="hsct")
    assert result.rejects == []
    assert [(e.when.day, e.assumed) for c in result.cases for e in c.events] == [  # type: ignore[union-attr]
        (-3, None),
        (-1, REASON),
    ]


def test_the_assumed_extension_has_a_structure_definition() -> None:
    from fhir_cart.conformance.artefacts import load_centres
    from fhir_cart.conformance.package import build_package
    from fhir_cart.mappers.context import mapping_context

    ctx = mapping_context()
    package = build_package(ctx, load_centres(MAPPINGS / "centres"))
    urls = {r.get("url") for r in package.resources}
    assert ctx.ext("assumed") in urls


def test_the_shipped_hsct_series_marks_its_prophylaxis_days_as_assumed() -> None:
    mapping = load_study_mapping(MAPPINGS / "centres" / "hsct_series.yaml")
    result = read_study(ROOT / "fixtures" / "hsct_series" / "hsct_series.csv", mapping)
    marked = {e.concept for c in result.cases for e in c.events if e.assumed}
    assert marked == {"ciclosporin", "methotrexate", "mycophenolate_mofetil", "cyclophosphamide"}
    unmarked = {e.concept for c in result.cases for e in c.events if not e.assumed}
    assert {"hsct", "mrd", "chimerism", "disease_status"} <= unmarked


def test_canonical_tables_written_before_assumed_existed_still_read(tmp_path: Path) -> None:
    from fhir_cart.writers import canonical_mapping, write_study

    cases = [_ae("P1", "Hypotension")]
    folder = tmp_path / "tables"
    write_study(cases, folder, "csv")
    events = folder / "events.csv"
    rows = [line.split(",") for line in events.read_text(encoding="utf-8").splitlines()]
    index = rows[0].index("assumed")
    events.write_text(
        "\n".join(",".join(r[:index] + r[index + 1 :]) for r in rows) + "\n", encoding="utf-8"
    )
    assert read_study(folder, canonical_mapping()).cases == cases
    bad = canonical_mapping().events[0].model_copy(update={"optional": ("nothing",)})
    mapping = canonical_mapping().model_copy(update={"events": (bad,)})
    with pytest.raises(ConfigError, match=r"events\[0\]\.optional\.nothing: not a field"):
        read_study(folder, mapping)
