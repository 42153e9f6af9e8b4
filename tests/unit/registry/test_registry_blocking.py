"""Blocking (issue 19, item 6): with names, no rule is as wide as birth month and sex, so
candidate pairs grow about linearly; a pair that shares only its names, or only a name's
sound and the birth month, is still compared."""

from __future__ import annotations

import datetime as dt

import pytest

from fhir_cart.records import Case, Event, PatientRecord, When
from fhir_cart.registry import _splink
from fhir_cart.registry.blocking import blocking_columns
from fhir_cart.registry.definition import LinkageDef
from fhir_cart.registry.linkage import LinkRecord, linkage_record
from fhir_cart.registry.pseudonyms import Pseudonymiser

KEY = Pseudonymiser(b"0123456789abcdef0123456789abcdef")
NAMES = LinkageDef(names=("given_name", "family_name"), train="never")


def _record(
    centre: str,
    number: int,
    given: str,
    family: str,
    born: dt.date,
    diagnosed: dt.date | None = None,
) -> LinkRecord:
    events = (
        ()
        if diagnosed is None
        else (Event(event_id="d", concept="diagnosis", when=When(date=diagnosed)),)
    )
    patient = PatientRecord(
        study_id=str(number),
        centre=centre,
        sex="female",
        birth_date=born,
        attributes={"given_name": given, "family_name": family},
    )
    return linkage_record(Case(patient=patient, events=events), NAMES, KEY)


def test_without_names_birth_month_and_sex_block_with_names_they_do_not() -> None:
    assert ("birth_ym", "sex") in blocking_columns(LinkageDef())
    with_names = blocking_columns(NAMES)
    assert ("birth_ym", "sex") not in with_names
    assert all(len(c) > 1 or c[0].endswith("_date") for c in with_names)


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_candidate_pairs_share_a_date_or_a_name() -> None:
    born = dt.date(2012, 5, 3)
    records = [
        _record("a", 1, "Anna", "Schmidt", born),
        _record("b", 1, "Anna", "Berg", dt.date(2012, 6, 3)),  # only the given name
        _record("b", 2, "Ana", "Schmitt", born),  # only the family name's sound
        _record("b", 3, "Jule", "Meyer", dt.date(2012, 5, 20)),  # birth month and sex alone
        _record("b", 4, "Lea", "Becker", dt.date(2001, 1, 1), dt.date(2019, 3, 7)),
        _record("a", 2, "Mia", "Wolf", dt.date(2003, 1, 1), dt.date(2019, 3, 7)),  # a date
        _record("b", 5, "Ida", "Kern", born),  # the same birth day
    ]
    order = {r.pseudonym: n for n, r in enumerate(records)}
    pairs = {
        tuple(sorted((order[a], order[b]))) for a, b in _splink.comparison_vectors(records, NAMES)
    }
    assert (0, 2) in pairs  # Schmidt / Schmitt: the same sound, born the same month
    assert (0, 6) in pairs  # nothing shared but the birth day
    assert (4, 5) in pairs  # the same diagnosis day
    assert (0, 3) not in pairs  # born the same month, same sex, nothing else shared
    assert (0, 1) not in pairs  # only the given name, born another month


@pytest.mark.slow  # splink and DuckDB: seconds; the full suite runs it, not the fast loop
def test_with_three_names_two_agreeing_names_still_block() -> None:
    """With a birth name among the names (missing from most records), a pair whose given
    and family names agree but whose birth month was mistyped is still compared (blocking
    on all three names together compared it only when both had a birth name)."""
    three = LinkageDef(names=("given_name", "family_name", "birth_name"), train="never")
    assert ("name_given_name", "name_family_name") in blocking_columns(three)
    records = [
        linkage_record(
            Case(
                patient=PatientRecord(
                    study_id="1",
                    centre=centre,
                    sex="female",
                    birth_date=born,
                    attributes={"given_name": "Małgorzata", "family_name": "Nowak"},
                )
            ),
            three,
            KEY,
        )
        for centre, born in (("a", dt.date(2002, 10, 28)), ("b", dt.date(2002, 11, 28)))
    ]
    assert len(_splink.comparison_vectors(records, three)) == 1
