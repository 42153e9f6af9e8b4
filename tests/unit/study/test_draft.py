"""The mapping assistant's draft (study/draft.py) and the kept mapping files
(usecases/mappings.py): what the person confirmed becomes a mapping file that
``load_study_mapping`` accepts and that reads the table as the choices say; unsure columns
and words are named, never guessed; kept files are versioned and checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from fhir_cart.application import Application
from fhir_cart.errors import ConfigError
from fhir_cart.library import Library
from fhir_cart.library.study_mapping import load_study_mapping
from fhir_cart.settings import Settings
from fhir_cart.study import read_study
from fhir_cart.study.draft import ColumnChoice, draft_mapping, suggest_file

TABLE = (
    "Pat-Nr;Geschlecht;Dx;Blina;CAR-T Datum;CRS grade;MRD;Bemerkung\n"
    "K1;w;B-ALL;ja;12.03.2021;0;neg;gut\n"
    "K2;m;BCP-ALL;nein;02.05.2021;2;pos;\n"
    "K3;m;B-ALL;ja;07.06.2021;1;n.q.;siehe Akte\n"
)


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "kohorte.csv"
    path.write_text(TABLE, encoding="cp1252")
    return path


def test_confirmed_suggestions_make_a_mapping_that_reads_the_table(
    table: Path, tmp_path: Path
) -> None:
    library = Library.default()
    suggestions = suggest_file(table, library.concepts())
    assert (suggestions.delimiter, suggestions.date_formats) == (";", ("%d.%m.%Y",))
    text = draft_mapping(suggestions, suggestions.choices(), library.concepts(), centre="kh-nord")
    path = tmp_path / "kh-nord.yaml"
    path.write_text(text, encoding="utf-8")
    mapping = load_study_mapping(path, library)
    assert mapping.csv_delimiter == ";"
    assert mapping.ignore == {"Bemerkung": "not mapped in the mapping assistant"}
    result = read_study(table, mapping, library.for_mapping(mapping))
    by_id = {c.patient.study_id: c for c in result.cases}
    assert by_id["K1"].patient.sex == "female"
    k1 = sorted(e.concept for e in by_id["K1"].events)
    k2 = sorted(e.concept for e in by_id["K2"].events)
    # K1: blina 'ja', no CRS (grade 0); K2: blina 'nein' makes no event, CRS grade 2
    assert k1 == ["blinatumomab", "cart_infusion", "diagnosis", "mrd"]
    assert k2 == ["cart_infusion", "crs", "diagnosis", "mrd"]
    crs = next(e for e in by_id["K2"].events if e.concept == "crs")
    assert crs.attributes["grade"] == 2
    # 'n.q.' was not translated: its row is rejected with the place, never guessed
    assert [(r.row, r.column, r.value) for r in result.rejects] == [(4, "MRD", "n.q.")]
    assert "'MRD': words not translated (rows with them are rejected" in text
    assert "'n.q.'" in text


def test_an_unsure_column_is_ignored_with_its_candidates_in_a_comment(table: Path) -> None:
    library = Library.default().concepts()
    suggestions = suggest_file(table, library)
    choices = [
        ColumnChoice(c.header, None) if c.header == "Blina" else c for c in suggestions.choices()
    ]
    text = draft_mapping(suggestions, choices, library, centre="kh-nord")
    assert "#   'Blina': blinatumomab (0.75)" in text
    assert "Blina: not mapped in the mapping assistant" in text


def test_no_patient_id_is_an_error_naming_the_key(table: Path) -> None:
    library = Library.default().concepts()
    suggestions = suggest_file(table, library)
    choices = [ColumnChoice(c.header, None) for c in suggestions.columns]
    with pytest.raises(ConfigError, match=r"patients.columns.study_id: no column"):
        draft_mapping(suggestions, choices, library, centre="kh-nord")


def test_a_word_outside_the_value_set_is_refused_when_drafted(table: Path) -> None:
    library = Library.default().concepts()
    suggestions = suggest_file(table, library)
    choices = [
        ColumnChoice(c.header, c.target, c.field, {"b-all": "b_alll"}) if c.header == "Dx" else c
        for c in suggestions.choices()
    ]
    with pytest.raises(ConfigError, match="'b_alll' is not one of"):
        draft_mapping(suggestions, choices, library, centre="kh-nord")


def test_other_sheets_of_a_workbook_are_named_not_dropped(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "Patients"
    book.active.append(["Patient", "Sex"])
    book.active.append(["P1", "F"])
    book.create_sheet("Labs").append(["Patient", "Ferritin"])
    path = tmp_path / "t.xlsx"
    book.save(path)
    suggestions = suggest_file(path, Library.default().concepts())
    assert suggestions.table.name == "Patients"
    assert any("sheet 'Labs' is not read" in n for n in suggestions.notes)


# -- kept mapping files ---------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Application:
    return Application(Settings(data_dir=tmp_path / "data", api_keys=[SecretStr("k" * 32)]))


GOOD = b"centre: kh-nord\npatients:\n  columns: {study_id: Pat-Nr}\n"


def test_kept_mappings_are_versioned_per_owner(app: Application) -> None:
    first = app.store_mapping("centre_a", "kohorte", GOOD)
    second = app.store_mapping("centre_a", "kohorte", GOOD + b"date_formats: ['%d.%m.%Y']\n")
    other = app.store_mapping("centre_b", "kohorte", GOOD)
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert second.path.name == "kohorte-v2.yaml"
    assert first.path.read_bytes() == GOOD  # a version is never overwritten
    mine = app.stored_mappings("centre_a")
    assert [(m.owner, m.version) for m in mine] == [("centre_a", 1), ("centre_a", 2)]
    assert len(app.stored_mappings(None)) == 3
    assert app.stored_mapping("centre_a", "kohorte", None).version == 2
    with pytest.raises(KeyError):
        app.stored_mapping("centre_a", "kohorte", 3)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (GOOD + b"colour: red\n", r"colour: Extra inputs are not permitted \(line 4"),
        (GOOD + b"events:\n  - concept: not_a_concept\n", "not_a_concept"),
        (GOOD + b"library: /etc/passwd\n", "cannot name a library file"),
        (GOOD + b"study: ../../secret.yaml\n", "name a study of the library"),
        (b"centre: [\n", "cannot read"),
    ],
)
def test_a_kept_mapping_is_checked_first(app: Application, text: bytes, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        app.store_mapping("centre_a", "kohorte", text)
    assert "fhir-cart-mapping-" not in str(caught.value)  # no server path in the message
    assert app.stored_mappings(None) == []
