"""The mapping assistant's suggestions (study/suggest.py): a column is chosen only when the
header and the cells agree and the best candidate is clearly ahead; otherwise it is left
for the person, with the candidates shown. Each rule has a table that a plausible wrong
rule (header only, cells only, first match) gets wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_cart.library import Library
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.library.study_mapping import load_study_mapping
from fhir_cart.study.draft import suggest_file
from fhir_cart.study.suggest import (
    ColumnSuggestion,
    Table,
    cell_kind,
    retarget,
    suggest_columns,
    word_score,
)
from tests.support import ROOT


@pytest.fixture(scope="module")
def library() -> ConceptLibrary:
    return Library.default().concepts()


def column(library: ConceptLibrary, header: str, cells: list[object]) -> ColumnSuggestion:
    """The suggestion for one column of a table (plus a patient id column)."""
    ids = [f"P{i}" for i in range(len(cells))]
    table = Table("t.csv", ("Pat-Nr", header), tuple(zip(ids, cells, strict=True)))
    return suggest_columns(table, library)[1]


def targets(suggestion: ColumnSuggestion) -> list[str]:
    return [c.target for c in suggestion.candidates]


def test_a_header_naming_one_concept_over_cells_of_another_is_left_for_the_person(
    library: ConceptLibrary,
) -> None:
    # "MRD" names minimal residual disease; CR/PR/relapse are disease status words. A
    # header-only rule picks mrd, a cells-only rule picks disease_status: both are wrong to
    # do silently.
    found = column(library, "MRD", ["CR", "PR", "relapse", "CR"])
    assert found.choice is None
    assert {"concept:mrd", "concept:disease_status"} <= set(targets(found)[:2])


def test_header_and_cells_that_agree_are_chosen_with_the_words_translated(
    library: ConceptLibrary,
) -> None:
    found = column(library, "Response", ["CR", "PR", "relapse", "CR"])
    assert found.choice == "concept:disease_status"
    assert found.field == "value"
    assert {w.word: w.choice for w in found.words} == {
        "cr": "complete_remission",
        "pr": "partial_remission",
        "relapse": "relapse",
    }
    best = found.candidates[0]
    assert best.label == "Disease status"
    assert any("97509-4" in code for code in best.codes)  # the library's LOINC code shown


def test_cells_alone_never_choose(library: ConceptLibrary) -> None:
    found = column(library, "Spalte 7", ["CR", "PR", "relapse"])
    assert found.choice is None
    assert targets(found)[0] == "concept:disease_status"


@pytest.mark.parametrize(
    ("header", "cells", "target", "field"),
    [
        ("Dx", ["B-ALL", "BCP-ALL", "B-ALL"], "concept:diagnosis", "value"),  # a synonym
        ("Blina", ["ja", "nein", "ja"], "concept:blinatumomab", "concept"),  # a prefix
        ("Blina (ja/nein)", ["ja", "nein"], "concept:blinatumomab", "concept"),  # the format
        ("CRS grade", [0, 2, 1], "concept:crs", "grade"),  # initials + an attribute word
        ("ICANS Grad", ["0", "3", "1"], "concept:icans", "grade"),
        ("Todesdatum", ["2021-03-01", "", "2022-01-05"], "concept:death", "when_date"),
        ("Blina Ende", ["2021-03-01", "2021-04-01"], "concept:blinatumomab", "end_date"),
        ("Relapse date", ["2021-03-01"], "concept:disease_status=relapse", "when_date"),
        ("MRD d28 (%)", ["0.01", "<0.01%", "neg"], "concept:mrd", "value"),
        ("Geschlecht", ["w", "m", "w"], "sex", None),
        ("Geburtsdatum", ["03.04.2012", "21.11.2009", "01.01.2010"], "birth_date", None),
    ],
)
def test_unseen_headers_are_read(
    library: ConceptLibrary, header: str, cells: list[object], target: str, field: str | None
) -> None:
    found = column(library, header, cells)
    assert (found.choice, found.field) == (target, field)


def test_no_event_words_and_grade_zero(library: ConceptLibrary) -> None:
    blina = column(library, "Blina", ["ja", "nein", "ja"])
    assert {w.word: w.choice for w in blina.words} == {"ja": "blinatumomab", "nein": ""}
    crs = column(library, "CRS grade", [0, 2, 0])
    assert {w.word: w.choice for w in crs.words} == {"0": ""}  # grade 0: no CRS event


def test_a_header_that_says_more_than_the_concept_is_not_chosen(library: ConceptLibrary) -> None:
    # "steroid" is a synonym of corticosteroids, but the column is about refractory GvHD
    found = column(library, "Steroid-refractory GvHD", ["yes", "no", "no"])
    assert found.choice is None


def test_the_patient_id_needs_one_distinct_cell_per_row(library: ConceptLibrary) -> None:
    table = Table("t.csv", ("Patient", "Visit"), (("P1", "1"), ("P1", "2"), ("P2", "1")))
    found = suggest_columns(table, library)[0]
    assert found.choice is None  # a long table: the id repeats; the person says
    unique = Table("t.csv", ("Patient",), (("P1",), ("P2",), ("P3",)))
    assert suggest_columns(unique, library)[0].choice == "study_id"


def test_only_one_column_is_taken_as_each_patient_field(library: ConceptLibrary) -> None:
    table = Table("t.csv", ("Pat-Nr", "Patient"), (("P1", "A"), ("P2", "B")))
    first, second = suggest_columns(table, library)
    assert (first.choice, second.choice) == (None, "study_id")  # the better named one
    assert "another column ('Patient')" in first.notes[0]


def test_a_column_nothing_fits_is_left_with_no_candidate(library: ConceptLibrary) -> None:
    found = column(library, "Bemerkung", ["gut", "x", "siehe Akte"])
    assert (found.choice, found.candidates) == (None, ())


@pytest.mark.parametrize(
    ("word", "names", "at_least", "below"),
    [
        ("CRS", ["crs", "Cytokine release syndrome"], 0.8, 1.01),  # initials
        ("blina", ["blinatumomab", "Blinatumomab"], 0.75, 0.8),  # prefix of 4+ letters
        ("bli", ["blinatumomab", "Blinatumomab"], 0.0, 0.01),  # too short a prefix
        ("Death date", ["death", "Death"], 0.8, 0.81),  # the name, among time words
        ("Todesdatum", ["death", "Death", "Todesdatum"], 1.0, 1.01),  # a synonym
    ],
)
def test_word_score(word: str, names: list[str], at_least: float, below: float) -> None:
    score, why = word_score(word, names)
    assert at_least <= score < below, why


def test_cell_kinds() -> None:
    assert cell_kind(["2021-01-02", "03.04.2012"]) == "date"
    assert cell_kind(["1,5 g/m²", "<0.01%", "15+", 3]) == "number"
    assert cell_kind(["neg", "pos", "0.01"]) == "word"
    assert cell_kind([]) == "empty"


def test_retargeting_a_column_gives_the_new_concepts_words(library: ConceptLibrary) -> None:
    table = Table("t.csv", ("Pat-Nr", "MRD"), (("P1", "CR"), ("P2", "relapse")))
    found = retarget(table, 1, "concept:disease_status", library)
    assert found.field == "value"
    assert {w.word: w.choice for w in found.words} == {
        "cr": "complete_remission",
        "relapse": "relapse",
    }
    assert retarget(table, 1, None, library).words == ()


def _shipped_targets(mapping_file: Path, table: str) -> dict[str, set[str]]:
    """Column -> what the shipped mapping makes of it (patient field or concept)."""
    mapping = load_study_mapping(mapping_file)
    found: dict[str, set[str]] = {}
    for name, header in mapping.patients.columns.items():
        found.setdefault(header, set()).update({name, f"attribute:{name}"})
        if name == "anchor_date" and mapping.anchor:
            found[header].add(f"concept:{mapping.anchor}")
    for spec in mapping.events:
        if spec.source is not None and Path(spec.source).stem != table:
            continue
        for name, header in spec.columns.items():
            concepts = [spec.concept] if spec.concept else []
            if name == "concept":
                words = spec.values.get("concept", {}).values()
                concepts += [w["concept"] if isinstance(w, dict) else w for w in words if w]
            found.setdefault(header, set()).update(f"concept:{c}" for c in concepts if c)
    return found


@pytest.mark.parametrize(
    ("fixture", "mapping", "chosen_at_least"),
    [
        ("fixtures/centre_b/centre_b.csv", "mappings/centres/centre_b.yaml", 13),
        ("fixtures/hsct_series/hsct_series.csv", "mappings/centres/hsct_series.yaml", 16),
        ("fixtures/myeloma_cart/myeloma_cart.csv", "mappings/centres/myeloma_cart.yaml", 8),
        ("fixtures/lymphoma_cart/patients.csv", "mappings/centres/lymphoma_cart.yaml", 5),
    ],
)
def test_on_the_shipped_tables_every_choice_is_the_shipped_mappings(
    library: ConceptLibrary, fixture: str, mapping: str, chosen_at_least: int
) -> None:
    """The shipped tables with their headers as written: what the assistant chooses is what
    the hand-written mapping says (nothing chosen wrongly), the rest is left."""
    truth = _shipped_targets(ROOT / mapping, Path(fixture).stem)
    suggestions = suggest_file(ROOT / fixture, library)
    chosen = [c for c in suggestions.columns if c.choice is not None]
    wrong = [
        (c.header, c.choice)
        for c in chosen
        if c.choice is not None and c.choice.split("=")[0] not in truth.get(c.header, ())
    ]
    assert wrong == []
    assert len(chosen) >= chosen_at_least


def test_two_concepts_the_header_names_equally_are_left_for_the_person(
    library: ConceptLibrary,
) -> None:
    # "GvHD" is acute or chronic GvHD: the first one found is no answer
    found = column(library, "GvHD", ["2021-03-01", "2022-01-05", "2022-02-01"])
    assert found.choice is None
    assert set(targets(found)[:2]) == {"concept:acute_gvhd", "concept:chronic_gvhd"}
