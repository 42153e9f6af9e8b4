"""Classification by codes only (Terminology.word, ConceptLibrary.classify): the closest fit
decides, equal fits are ambiguous, a broader word gives way to a narrower one, prefixes match
child codes, and the text is read only for a resource without codings when the setting says
so (the event then says "read from text"). The clinical cases are in fixtures/ehr/codes.json;
these use a made-up vocabulary so that alphabetical order would give another answer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from fhir_cart.application import Application
from fhir_cart.conformance.conceptmaps import _broader_code
from fhir_cart.library.terminology import AmbiguousCode, Terminology, TerminologyFile
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.settings import Settings

SYS = "urn:test:codes"


def _coding(code: str, prefix: bool = False, broader: bool = False) -> dict[str, Any]:
    return {
        "system": "t",
        "code": code,
        "display": code,
        "source": "test",
        "verified": True,
        "prefix": prefix,
        "broader": broader,
    }


def _terms(words: dict[str, dict[str, Any]]) -> Terminology:
    data = TerminologyFile.model_validate(
        {
            "systems": {"t": SYS, "own": "urn:test:own"},
            "own_code_system": {
                "key": "own",
                "name": "T",
                "title": "T",
                "version": "1",
                "publisher": "t",
            },
            "concepts": {"g": words},
            "units": {},
        }
    )
    return Terminology(data)


def _cc(*codes: str, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": SYS, "code": c} for c in codes]}
    if text is not None:
        out["text"] = text
    return out


def test_the_closest_fit_wins_not_the_first_name() -> None:
    terms = _terms(
        {
            "a_broad": {"text": "A", "codings": [_coding("X"), _coding("Y")]},
            "z_exact": {"text": "Z", "codings": [_coding("X")]},
        }
    )
    assert terms.word("g", _cc("X")) == "z_exact"
    assert terms.word("g", _cc("X", "Y")) == "a_broad"


def test_equal_fits_and_disagreeing_codes_are_ambiguous() -> None:
    terms = _terms(
        {
            "b": {"text": "B", "codings": [_coding("X")]},
            "a": {"text": "A", "codings": [_coding("X")]},
            "c": {"text": "C", "codings": [_coding("Q")]},
        }
    )
    with pytest.raises(AmbiguousCode, match="ambiguous: matches a and b"):
        terms.word("g", _cc("X"))
    with pytest.raises(AmbiguousCode, match="ambiguous: matches a and b and c"):
        terms.word("g", _cc("X", "Q"))


def test_a_narrower_word_wins_over_its_broader_word() -> None:
    terms = _terms(
        {
            "all": {"text": "broad", "codings": [_coding("C91.0", prefix=True)]},
            "b_all": {"text": "narrow", "within": "all", "codings": [_coding("N")]},
        }
    )
    assert terms.word("g", _cc("N", "C91.00")) == "b_all"
    assert terms.word("g", _cc("C91.00")) == "all"
    assert terms.word("g", _cc("C91.0")) == "all"
    assert terms.word("g", _cc("C91")) is None
    assert terms.word("g", _cc("C91.1")) is None


def test_the_longest_prefix_decides() -> None:
    terms = _terms(
        {
            "leukaemia": {"text": "L", "codings": [_coding("C9", prefix=True)]},
            "all": {"text": "ALL", "codings": [_coding("C91.0", prefix=True)]},
        }
    )
    assert terms.word("g", _cc("C91.02")) == "all"
    assert terms.word("g", _cc("C95.1")) == "leukaemia"


def test_a_broader_code_is_written_but_never_read_as_the_word_alone() -> None:
    """ICANS carries CTCAE's "Nervous system disorders - Other, specify": a resource with
    only that code may be any nervous system event, so it is no word; beside the own code
    it is the word, and it is written."""
    terms = _terms(
        {
            "icans": {"text": "I", "codings": [_coding("OTHER", broader=True), _coding("OWN")]},
            "seizure": {"text": "S", "codings": [_coding("SZ")]},
            "pres": {"text": "P", "codings": [_coding("OTHER", broader=True), _coding("P")]},
        }
    )
    assert terms.word("g", _cc("OTHER")) is None  # shared by two words, and broader
    assert terms.word("g", _cc("OTHER", "P")) == "pres"
    assert terms.word("g", _cc("OTHER", "OWN")) == "icans"
    assert terms.word("g", _cc("OTHER", "SZ")) == "seizure"
    assert [c["code"] for c in terms.concept("g", "icans")["coding"]] == ["OTHER", "OWN"]


def test_a_broader_code_needs_a_written_code_of_the_word_beside_it() -> None:
    with pytest.raises(ValueError, match="a broader code needs a written code"):
        _terms({"icans": {"text": "I", "codings": [_coding("OTHER", broader=True)]}})
    with pytest.raises(ValueError, match="broader is a written code's flag"):
        _terms(
            {
                "a": {
                    "text": "A",
                    "codings": [_coding("C9", prefix=True, broader=True), _coding("W")],
                }
            }
        )


def test_a_concept_map_says_a_broader_code_is_wider() -> None:
    terms = _terms(
        {"icans": {"text": "I", "codings": [_coding("OTHER", broader=True), _coding("OWN")]}}
    )
    ctx = cast(MappingContext, SimpleNamespace(terminology=terms))
    assert _broader_code(ctx, "g", "icans", {"system": SYS, "code": "OTHER"})
    assert not _broader_code(ctx, "g", "icans", {"system": SYS, "code": "OWN"})


def test_a_lone_other_specify_code_is_not_icans_in_the_library() -> None:
    library = Application().pull_context().concepts
    other = {"system": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "code": "C143702"}
    own = {"system": "https://fhir-cart.dev/fhir/CodeSystem/case-series", "code": "icans"}
    assert library.classify({"coding": [other]}, ["adverse_event"]) is None
    assert library.classify({"coding": [other, own]}, ["adverse_event"]) == "icans"
    written = library.codeable("icans")["coding"]
    assert {"system": other["system"], "code": "C143702"}.items() <= written[0].items()


def test_prefix_codes_are_never_written() -> None:
    terms = _terms(
        {"all": {"text": "ALL", "codings": [_coding("C91.0", prefix=True), _coding("W")]}}
    )
    assert terms.concept("g", "all")["coding"] == [{"system": SYS, "code": "W", "display": "W"}]


def test_text_only_when_there_is_no_coding_and_the_setting_allows_it() -> None:
    terms = _terms({"a": {"text": "Acute  Thing", "codings": [_coding("X")]}})
    assert terms.word("g", {"text": "acute thing"}) is None  # off by default
    terms.read_text = True
    assert terms.word("g", {"text": " ACUTE   thing "}) == "a"
    assert terms.word("g", {"coding": [], "text": "acute thing"}) == "a"
    assert terms.word("g", _cc("unknown", text="acute thing")) is None  # a code, unknown


def test_two_words_with_one_text_are_ambiguous() -> None:
    terms = _terms(
        {
            "a": {"text": "Same", "codings": [_coding("X")]},
            "b": {"text": "same", "codings": [_coding("Y")]},
        }
    )
    terms.read_text = True
    with pytest.raises(AmbiguousCode):
        terms.word("g", {"text": "same"})


def _text_only_hsct() -> list[dict[str, Any]]:
    return [
        {"resourceType": "Patient", "id": "tx-p1"},
        {
            "resourceType": "Procedure",
            "id": "tx-pr1",
            "status": "stopped",
            "subject": {"reference": "Patient/tx-p1"},
            "code": {"text": "haematopoietic  STEM cell transplant"},
            "performedDateTime": "2020-01-02",
        },
        {
            "resourceType": "Procedure",
            "id": "tx-pr2",
            "status": "completed",
            "subject": {"reference": "Patient/tx-p1"},
            "code": {
                "coding": [{"system": "http://snomed.info/sct", "code": "234336002"}],
                "text": "Apheresis",
            },
            "performedDateTime": "2020-01-03",
        },
    ]


def test_an_event_read_from_text_says_so(ctx: MappingContext) -> None:
    off = cases_from_fhir(ctx, _text_only_hsct())
    assert [o["resource_id"] for o in off.other] == ["tx-pr1"]
    ctx.terminology.read_text = True
    on = cases_from_fhir(ctx, _text_only_hsct())
    assert on.other == []
    (case,) = on.cases
    status = {e.event_id: (e.concept, e.status) for e in case.events}
    assert status == {
        "procedure-tx-pr1": ("hsct", "stopped; read from text"),
        "procedure-tx-pr2": ("hsct", None),  # coded: the text is not read at all
    }


def test_the_setting_turns_text_reading_on(tmp_path: Path) -> None:
    assert Application(Settings(data_dir=tmp_path)).pull_context().terminology.read_text is False
    on = Application(Settings(data_dir=tmp_path, classify_by_text=True))
    assert on.pull_context().terminology.read_text is True
