"""The documented example: fixtures/registry (three SYNTHETIC centres in three layouts and
languages) built with the real reader, as `fhir-cart registry build` does.

Needs the open model's reader (``read_study(path, mapping, library)``, spec §2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_cart.library.concepts import load_concepts
from fhir_cart.library.terminology import load_terminology
from fhir_cart.registry.build import build_registry
from fhir_cart.registry.centre_side import resolve_rows
from fhir_cart.registry.definition import load_registry
from tests.registry_helpers import KEY, output_files

FIXTURES = Path(__file__).parents[3] / "fixtures" / "registry"
SECRETS = [
    "Anna Kowalski",
    "Ben Okafor",
    "Clara Rossi",
    "Emma Nakamura",
    "Greta Petrov",
    "A123456789",
    "A 1234 56789",
    "B-01",
    "B-02",
    "L7",
    "L12",
    "R-100",
    "R-101",
    "2012-05-14",
    "14.05.2012",
    "2018-09-03",
    "01.09.2018",
    "07.03.2019",
    "2019-07-03",
]


def build(out: Path):  # type: ignore[no-untyped-def]
    definition = load_registry(FIXTURES / "registry.yaml")
    return build_registry(definition, out, key=KEY, library=load_concepts(load_terminology()))


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_three_centres_build_into_one_registry(tmp_path: Path) -> None:
    result = build(tmp_path / "out")
    registry = result.registry
    assert registry is not None
    assert registry.centre_records == {"berlin": 4, "london": 3, "rotterdam": 3}
    assert len(registry.cases) == 8  # Anna (Berlin + London) and Ben (Berlin + Rotterdam)
    conflicts = sorted((c["field"], c["chosen"]) for c in registry.conflicts)
    assert conflicts == [
        ("cart_infusion", "rotterdam"),  # Ben: day +224 (Berlin) or +226 (Rotterdam)
        ("diagnosis", "berlin"),  # Anna: 07.03.2019 or 2019-07-03
        ("sex", "rotterdam"),  # Ben: a typo in Berlin
    ]
    quality = registry.quality
    # Ben's disease state is only in Berlin: a gap in Rotterdam's record, not a conflict
    assert quality["rotterdam"]["missing_where_a_linked_centre_has"] == {"diagnosis": 1}
    assert quality["rotterdam"]["unit_conversions"] == {"cyclophosphamide: converted to mg/m2": 1}
    words = {
        e["code"]
        for m in registry.concept_maps
        if m["id"].endswith("london")
        for g in m["group"]
        for e in g["element"]
    }
    assert {"neg", "low pos"} <= words


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_outputs_hold_no_name_identifier_or_date(tmp_path: Path) -> None:
    build(tmp_path / "out")
    for name, data in output_files(tmp_path / "out").items():
        if name.endswith((".parquet", ".xlsx")):
            continue  # their values are checked through the CSV copies
        text = data.decode()
        assert [s for s in SECRETS if s in text] == [], name


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    build(tmp_path / "a")
    build(tmp_path / "b")
    assert output_files(tmp_path / "a") == output_files(tmp_path / "b")
    assert json.loads((tmp_path / "a" / "state.json").read_text())["centres"].keys() == {
        "berlin",
        "london",
        "rotterdam",
    }


def test_summaries_come_from_the_registry_study_definition() -> None:
    from fhir_cart.registry.workflow import study_summariser
    from tests.registry_helpers import three_centres

    summariser = study_summariser(load_registry(FIXTURES / "registry.yaml"))
    assert summariser is not None
    measures = {
        m["id"]: m["value"] for m in summariser([c for v in three_centres().values() for c in v])
    }
    assert measures["patients"] == 7
    assert measures["infused"] == 3
    assert measures["mrd_negative_latest"] == 2


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_provenance_tokens_resolve_to_the_file_sheet_and_row_of_every_fact(
    tmp_path: Path,
) -> None:
    """Ben (R-100 at Rotterdam, also seen in Berlin): Rotterdam's Provenance for him cites
    his row of patients.csv and the rows of events.csv his kept facts came from, and no row
    of another patient (issue 10: which centre, file, sheet and row), as keyed tokens that
    the centre resolves with the key and its files (issue 20)."""
    import csv

    result = build(tmp_path / "out")
    assert result.registry is not None
    ben = next(m for m in result.registry.merged if m.centres == ("berlin", "rotterdam"))
    folder = FIXTURES / "rotterdam"
    with (folder / "events.csv").open(newline="") as handle:
        his = {n for n, row in enumerate(csv.DictReader(handle), 2) if row["patient"] == "R-100"}
    provenance = next(
        p
        for p in result.registry.provenance
        if p["target"][0]["identifier"]["value"] == ben.case.patient.study_id
        and p["agent"][0]["who"]["identifier"]["value"] == "rotterdam"
    )
    tokens = [
        e["what"]["identifier"]["value"]
        for e in provenance["entity"]
        if e["what"]["identifier"]["system"].endswith("/source-row")
    ]
    found = resolve_rows(load_registry(FIXTURES / "registry.yaml"), tokens, key=KEY)
    rows = [f"{found[t][0]}: {found[t][1]}" for t in tokens]  # type: ignore[index]
    assert rows[0] == "rotterdam: patients.csv, row 2"
    cited = {int(r.rsplit("row ", 1)[1]) for r in rows[1:]}
    assert all(r.startswith("rotterdam: events.csv, row ") for r in rows[1:])
    kept = sum(1 for centre, _ in ben.origin_of.values() if centre == "rotterdam")
    assert cited <= his
    assert len(cited) == kept > 0
