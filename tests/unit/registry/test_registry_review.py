"""People decide the hard cases (issue 19): a review band and contradicted identifier links
listed with encoded evidence, must-link and cannot-link decisions honoured by every build,
kept beside the registry file with who and when."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fhir_cart.cli.registry import registry_app
from fhir_cart.errors import ConfigError
from fhir_cart.records import Case
from fhir_cart.registry.build import BuildResult, build_registry
from fhir_cart.registry.decisions import parse_decisions
from fhir_cart.registry.pseudonyms import Pseudonymiser
from tests.registry_helpers import KEY, definition, diagnosis, event, patient, reader_of

D = dt.date
P = Pseudonymiser(KEY)


def _case(
    centre: str, sid: str, sex: str, birth: D, dx: D, inf: D | None = None, nid: str | None = None
) -> Case:
    events = [diagnosis(dx)] + ([event("cart", "cart_infusion", inf)] if inf else [])
    attributes = {"national_id": nid} if nid else {}
    return patient(centre, sid, *events, sex=sex, birth_date=birth, attributes=attributes)


def centres() -> dict[str, list[Case]]:
    """Twins' mix-up: London typed twin T1's national id into co-twin T2's record (same
    birth date; another sex, diagnosis and infusion). S1/S2 share an id and are one child
    (diagnosis typed ten days off). N1/N2 have no id in common, are born the same month
    (another day) and one date nearly agrees: a hard case. F1/F2 are two other children."""
    return {
        "berlin": [
            _case("berlin", "T1", "female", D(2012, 5, 14), D(2019, 3, 7), D(2019, 9, 1), "111"),
            _case("berlin", "S1", "male", D(2010, 1, 20), D(2016, 2, 2), nid="222"),
            _case("berlin", "N1", "female", D(2014, 6, 10), D(2020, 5, 5), D(2021, 1, 4)),
            _case("berlin", "F1", "male", D(2009, 3, 3), D(2015, 4, 4)),
        ],
        "london": [
            _case("london", "T2", "male", D(2012, 5, 14), D(2020, 10, 1), D(2021, 2, 2), "111"),
            _case("london", "S2", "male", D(2010, 1, 20), D(2016, 2, 12), nid="222"),
            _case("london", "N2", "female", D(2014, 6, 12), D(2020, 5, 25), D(2021, 9, 9)),
            _case("london", "F2", "female", D(2011, 8, 8), D(2018, 8, 8)),
        ],
        "rotterdam": [],
    }


def pair(a: tuple[str, str], b: tuple[str, str]) -> tuple[str, str]:
    x, y = P.patient(*a), P.patient(*b)
    return (min(x, y), max(x, y))


TWINS = pair(("berlin", "T1"), ("london", "T2"))
SAME = pair(("berlin", "S1"), ("london", "S2"))
HARD = pair(("berlin", "N1"), ("london", "N2"))


def build(tmp_path: Path, **linkage: Any) -> BuildResult:
    settings = {"identifiers": ["national_id"], "threshold": 0.9, "review": 0.01, **linkage}
    return build_registry(
        definition(tmp_path, linkage=settings),
        tmp_path / "out",
        key=KEY,
        reader=reader_of(centres()),
    )


def together(result: BuildResult) -> set[tuple[str, str]]:
    """Pairs of centre records in one registry patient."""
    assert result.registry is not None
    found = set()
    ids = result.registry.ids
    assert ids is not None
    for records in ids.patients.values():
        found |= {(a, b) for a in records for b in records if a < b}
    return found


def review(tmp_path: Path) -> list[dict[str, str]]:
    text = (tmp_path / "out" / "reports" / "review.csv").read_text()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_an_identifier_link_the_other_fields_contradict_goes_to_review(tmp_path: Path) -> None:
    result = build(tmp_path)
    joined = together(result)
    assert TWINS not in joined
    assert SAME in joined  # the id link the other fields do not contradict still holds
    rows = {(r["left"], r["right"]): r for r in review(tmp_path)}
    twins = rows[TWINS]
    assert twins["reason"] == "identifier contradicted"
    assert twins["agree"] == ""  # the birth month is no evidence: twins share it
    assert twins["differ"].split("; ") == ["sex", "diagnosis_date", "infusion_date"]


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_without_the_contradiction_check_the_twins_merge(tmp_path: Path) -> None:
    """The fixture tells the rule apart: unchecked, the mixed-up id merges the twins."""
    assert TWINS in together(build(tmp_path, contradiction=0))


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_the_review_band_lists_pairs_with_encoded_evidence_only(tmp_path: Path) -> None:
    result = build(tmp_path)
    assert HARD not in together(result)
    rows = {(r["left"], r["right"]): r for r in review(tmp_path)}
    hard = rows[HARD]
    assert hard["reason"] == "review band"
    assert 0.01 <= float(hard["probability"]) < 0.9
    assert hard["agree"].split("; ") == [
        "birth_ym: same year and month, another day",
        "sex: same",
        "diagnosis_date: one character off",
    ]
    assert hard["differ"] == "infusion_date"
    text = (tmp_path / "out" / "reports" / "review.csv").read_text()
    for clear in ("2014", "2020", "05-05", "N1", "N2", "111", "female"):
        assert clear not in text
    assert build(tmp_path / "no-band", review=None).registry is not None
    assert review(tmp_path / "no-band") == [
        r for r in review(tmp_path) if r["reason"] != "review band"
    ]


def decide(tmp_path: Path, left: str, right: str, *flags: str) -> Any:
    registry = tmp_path / "registry.yaml"
    if not registry.exists():
        registry.write_text(
            yaml.safe_dump(
                {"name": "T", "centres": [{"id": "berlin", "mapping": "m.yaml", "data": "b.csv"}]}
            )
        )
    return CliRunner().invoke(registry_app, ["decide", str(registry), left, right, *flags])


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_decisions_are_kept_with_who_and_when_and_honoured(tmp_path: Path) -> None:
    assert decide(tmp_path, *HARD, "--link", "--by", "Dr Weber").exit_code == 0
    assert decide(tmp_path, *SAME, "--no-link", "--by", "Dr Weber").exit_code == 0
    assert decide(tmp_path, *SAME, "--no-link", "--by", "Dr Okoye").exit_code == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "decisions.csv").read_text())))
    assert [(r["left"], r["right"], r["decision"], r["by"]) for r in rows] == sorted(
        [(*HARD, "link", "Dr Weber"), (*SAME, "no-link", "Dr Okoye")]
    )
    assert all(r["when"].endswith("Z") for r in rows)
    result = build(tmp_path)
    joined = together(result)
    assert HARD in joined
    assert SAME not in joined
    assert result.registry is not None
    decided = [k for k in result.registry.links if k.method == "decided"]
    assert [(k.left, k.right) for k in decided] == [HARD]
    links = (tmp_path / "out" / "reports" / "links.csv").read_text()
    assert f"{SAME[0]},{SAME[1]},identifier,1.000000,no (decided apart)" in links
    assert HARD not in {(r["left"], r["right"]) for r in review(tmp_path)}
    # a changed decision makes the next build run again
    decide(tmp_path, *SAME, "--link", "--by", "Dr Okoye")
    assert SAME in together(build(tmp_path))


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_a_decision_on_records_not_in_the_build_is_reported(tmp_path: Path) -> None:
    other = P.patient("berlin", "gone")
    assert decide(tmp_path, other, HARD[0], "--link", "--by", "Dr Weber").exit_code == 0
    result = build(tmp_path)
    assert [n for n in result.notes if other in n and "not used" in n]
    assert HARD not in together(result)


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("p1,p2,link,A,2026-12-07T10:00:00Z", "row 2, column left"),
        (f"{HARD[0]},{HARD[1]},yes,A,2026-12-07T10:00:00Z", "row 2, column decision"),
        (f"{HARD[0]},{HARD[1]},link,,2026-12-07T10:00:00Z", "row 2, column by"),
        (f"{HARD[0]},{HARD[1]},link,A,yesterday", "row 2, column when"),
    ],
)
def test_a_bad_decision_row_is_named(row: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_decisions(f"left,right,decision,by,when\n{row}\n", "decisions.csv")
    assert f"decisions.csv, {says}" in caught.value.message


def test_a_bad_pair_on_the_command_line_is_named_and_nothing_written(tmp_path: Path) -> None:
    result = decide(tmp_path, "p123", HARD[0], "--link", "--by", "Dr Weber")
    assert isinstance(result.exception, ConfigError)
    assert result.exception.message.startswith("the pair given, column left: 'p123'")
    assert not (tmp_path / "decisions.csv").exists()


def test_review_must_be_below_the_threshold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not below threshold"):
        definition(tmp_path, linkage={"threshold": 0.9, "review": 0.95})


def test_a_pair_an_identifier_links_is_not_put_to_review() -> None:
    from fhir_cart.registry.links import Link
    from fhir_cart.registry.review import settle

    a, b = sorted((P.patient("berlin", "X"), P.patient("london", "Y")))
    identifier = [Link(b, a, 1.0, "identifier")]
    band = [Link(a, b, 0.5, "probabilistic")]
    settled = settle(identifier, band, {}, {}, {a, b}, 0.9)
    assert settled.review == []
    assert [k.method for k in settled.links] == ["identifier"]
    contradicted = settle(identifier, band, {(a, b): band[0]}, {}, {a, b}, 0.9)
    assert [r.reason for r in contradicted.review] == ["identifier contradicted"]


def test_name_and_birth_levels_are_described_in_words() -> None:
    from fhir_cart.registry.review import describe

    agree, differ, missing = describe(
        [
            ("birth_ym", 6),
            ("name_family_name", 4),
            ("name_given_name", 2),
            ("birth_ym", 4),
            ("name_family_name", 3),
            ("identifier", 0),
            ("sex", 0),
        ]
    )
    assert agree == [
        "birth_ym: same birth date",
        "name_family_name: same sound",
        "name_given_name: most letter pairs shared",
        "birth_ym: same year and month, another day",
        "name_family_name: a word in common",
    ]
    assert differ == ["identifier", "sex"]
    assert missing == []


def test_an_identifier_link_rivalled_by_a_probabilistic_one_goes_to_review() -> None:
    """A twin's record at centre y holds the co-twin's number, so the identifier links it
    to the co-twin's record at x; by every other field it matches its own twin's record
    at x. It cannot be both: the identifier link goes to review. Broken on purpose (no
    rival looked for), the pair was not returned."""
    from fhir_cart.registry.links import Link
    from fhir_cart.registry.review import rivalled

    centre_of = {"a_x": "x", "a_y": "y", "b_x": "x", "c_z": "z"}
    identifier = [Link("a_y", "b_x", 1.0, "identifier"), Link("a_y", "c_z", 1.0, "identifier")]
    own = Link("a_x", "a_y", 0.99, "probabilistic")
    assert rivalled(identifier, [own], centre_of, 0.95) == {("a_y", "b_x")}
    assert (
        rivalled(identifier, [Link("a_y", "b_x", 0.99, "probabilistic")], centre_of, 0.95) == set()
    )
    weak = Link("a_x", "a_y", 0.9, "probabilistic")  # below the threshold: no rival
    assert rivalled(identifier, [weak], centre_of, 0.95) == set()


def test_a_contradicted_identifier_pair_is_not_linked_by_probability_either() -> None:
    """Twins share birth date and family name, so the model can score the mixed-up pair
    at 1.0: the pair waits for people all the same. Broken on purpose (the probabilistic
    link kept), the pair was linked."""
    from fhir_cart.registry.links import Link
    from fhir_cart.registry.review import settle

    a, b = sorted((P.patient("berlin", "X"), P.patient("london", "Y")))
    identifier = [Link(b, a, 1.0, "identifier")]
    scored = [Link(a, b, 1.0, "probabilistic")]
    settled = settle(identifier, scored, {(a, b): scored[0]}, {}, {a, b}, 0.9)
    assert settled.links == []
    assert [r.reason for r in settled.review] == ["identifier contradicted"]


def _named(centre: str, sid: str, given: str, family: str, dx: D, nid: str | None) -> Case:
    attributes = {"given_name": given, "family_name": family}
    attributes |= {"national_id": nid} if nid else {}
    born = D(2007, 11, 6)
    return patient(centre, sid, diagnosis(dx), sex="female", birth_date=born, attributes=attributes)


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_a_given_name_that_differs_outright_holds_an_identifier_link(tmp_path: Path) -> None:
    """The twin pair merged at 100,000 truth persons: Büşra Çetin (Berlin only) and her twin
    Zeynep, written Cecin (London only), both girls born the same day, diagnosed three weeks
    apart; London typed Büşra's number into Zeynep's record. Each has one record, so no
    rival link shows the mix-up, and sex and the diagnosis date outweigh the given name in
    the check from even odds. Lea / Lena Weber (one child, a typo) keep their link."""
    cases = {
        "berlin": [
            _named("berlin", "B1", "Büşra", "Çetin", D(2017, 6, 13), "B599083437"),
            _named("berlin", "W1", "Lena", "Weber", D(2016, 3, 1), "K100200300"),
        ],
        "london": [
            _named("london", "Z1", "Zeynep", "Cecin", D(2017, 5, 21), "b599083437"),
            _named("london", "W2", "Lea", "Weber", D(2016, 3, 1), "K100200300"),
        ],
        "rotterdam": [],
    }
    settings = {
        "identifiers": ["national_id"],
        "names": ["given_name", "family_name"],
        "threshold": 0.9,
        "review": 0.5,
    }
    result = build_registry(
        definition(tmp_path, linkage=settings), tmp_path / "out", key=KEY, reader=reader_of(cases)
    )
    joined = together(result)
    assert pair(("berlin", "W1"), ("london", "W2")) in joined
    twins = pair(("berlin", "B1"), ("london", "Z1"))
    assert twins not in joined
    rows = {(r["left"], r["right"]): r for r in review(tmp_path)}
    assert rows[twins]["reason"] == "identifier contradicted"
    assert "name_given_name" in rows[twins]["differ"].split("; ")
