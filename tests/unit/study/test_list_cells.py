"""List cells ("CRS 3, ICANS 4") in one column (issue 18 item 3): one event per item, each
item's named groups are fields; an item the pattern does not fit is rejected with its
file, row, column, value, reason and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_cart.errors import ConfigError
from fhir_cart.library.study_mapping import load_study_mapping
from fhir_cart.study import read_study

DATA = """\
Patient ID,Sex,CAR-T date,Grade 3/4 toxicities
T1,m,12.01.2021,"CRS 3, ICANS 4"
T2,f,03.03.2021,none
T3,m,21.04.2021,Neutropenia 3–4
T4,f,09.06.2021,"CRS 3, ICANS"
T5,m,10.07.2021,"CRS 3, 4"
"""
MAPPING = """\
centre: tox-list
date_formats: ["%d.%m.%Y"]
anchor: cart_infusion
patients:
  columns: {study_id: Patient ID, sex: Sex, anchor_date: CAR-T date}
  values:
    sex: {f: female, m: male}
events:
  - concept: cart_infusion
    columns: {when_date: CAR-T date}
  - name: toxicity
    list:
      column: Grade 3/4 toxicities
      item: '(?P<concept>[A-Za-z ]+?)(?:\\s+(?P<grade>[0-9–-]+))?'
    values:
      concept: {CRS: crs, ICANS: icans, Neutropenia: neutropenia, none: null}
"""


def _read(tmp_path: Path, mapping: str = MAPPING, data: str = DATA):  # type: ignore[no-untyped-def]
    (tmp_path / "tox.csv").write_text(data, encoding="utf-8")
    (tmp_path / "mapping.yaml").write_text(mapping, encoding="utf-8")
    return read_study(tmp_path / "tox.csv", load_study_mapping(tmp_path / "mapping.yaml"))


def _toxicities(result) -> dict[str, list[tuple[str, str, object]]]:  # type: ignore[no-untyped-def]
    out: dict[str, list[tuple[str, str, object]]] = {}
    for case in result.cases:
        for e in case.events:
            if e.event_id.startswith("toxicity"):
                grade = e.attributes.get("grade")
                out.setdefault(case.patient.study_id, []).append((e.event_id, e.concept, grade))
    return out


def test_each_item_is_an_event_with_its_fields(tmp_path: Path) -> None:
    result = _read(tmp_path)
    found = _toxicities(result)
    assert found["T1"] == [("toxicity-1", "crs", 3), ("toxicity-2", "icans", 4)]
    assert "T2" not in found  # 'none' means no event
    assert found["T4"] == [("toxicity-1", "crs", 3), ("toxicity-2", "icans", None)]
    assert found["T3"] == [("toxicity-1", "neutropenia", "3-4")]  # a band stays a band
    # the item that fits no concept is rejected with where it is, and the others are kept
    assert found["T5"] == [("toxicity-1", "crs", 3)]
    [reject] = result.rejects
    assert (reject.source, reject.row, reject.column) == ("tox.csv", 6, "Grade 3/4 toxicities")
    assert reject.value == "CRS 3, 4"
    assert "item 2 '4' does not match list.item" in reject.reason
    assert "change list.item in the mapping" in reject.reason


def test_without_a_pattern_each_item_fills_the_mapped_field(tmp_path: Path) -> None:
    mapping = MAPPING.replace(
        "      item: '(?P<concept>[A-Za-z ]+?)(?:\\s+(?P<grade>[0-9–-]+))?'\n",
        "      separator: ';'\n",
    ).replace(
        "    values:\n      concept:",
        "    columns: {concept: Grade 3/4 toxicities}\n    values:\n      concept:",
    )
    data = "Patient ID,Sex,CAR-T date,Grade 3/4 toxicities\nT1,m,12.01.2021,CRS; ICANS\n"
    result = _read(tmp_path, mapping, data)
    assert result.rejects == []
    assert _toxicities(result)["T1"] == [("toxicity-1", "crs", None), ("toxicity-2", "icans", None)]


@pytest.mark.parametrize(
    ("item", "message"),
    [("'(?P<concept>['", "is not a regular expression"), ("'(.+)'", "names no field")],
)
def test_a_bad_pattern_is_refused_with_the_mapping(tmp_path: Path, item: str, message: str) -> None:
    mapping = MAPPING.replace("'(?P<concept>[A-Za-z ]+?)(?:\\s+(?P<grade>[0-9–-]+))?'", item)
    with pytest.raises(ConfigError, match=message):
        _read(tmp_path, mapping)
