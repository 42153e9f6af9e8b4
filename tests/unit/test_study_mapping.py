"""The mapping file: what loads, and how a wrong one is reported (file and key named)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_cart.errors import ConfigError
from fhir_cart.readers import read_study
from fhir_cart.records import ANCHORS
from fhir_cart.study_mapping import (
    TABLE_FIELDS,
    TABLES,
    StudyMapping,
    TableSpec,
    dump_study_mapping,
    field_words,
    load_study_mapping,
    normalise_word,
)
from tests.conftest import MAPPINGS

MINIMAL = """\
centre: st-elsewhere
tables:
  patients:
    source: patients.csv
    columns: {study_id: ID}
"""


def _load(tmp_path: Path, text: str) -> StudyMapping:
    path = tmp_path / "centre.yaml"
    path.write_text(text, encoding="utf-8")
    return load_study_mapping(path)


@pytest.mark.parametrize("path", sorted((MAPPINGS / "centres").glob("*.yaml")), ids=str)
def test_every_shipped_mapping_loads(path: Path) -> None:
    mapping = load_study_mapping(path)
    assert mapping.centre
    assert "patients" in mapping.specs()


def test_defaults_of_a_minimal_mapping(tmp_path: Path) -> None:
    mapping = _load(tmp_path, MINIMAL)
    assert mapping.layout == "tables"
    assert mapping.identifier_base is None
    assert mapping.header_row == 1
    assert mapping.date_formats == ("%Y-%m-%d",)
    assert mapping.anchor == "cart_infusion"
    assert mapping.mrd_unit == "percent"
    spec = mapping.tables["patients"]
    assert (spec.values, spec.constants, spec.units, spec.header_row) == ({}, {}, {}, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "    colums: {sex: Sex}\n", r"tables\.patients\.colums: Extra inputs"),
        (
            MINIMAL.replace("{study_id: ID}", "{study_id: ID, sexx: Sex}"),
            r"tables\.patients\.columns\.sexx: patients has no field 'sexx'",
        ),
        (
            MINIMAL + "    values: {sex: {F: femal}}\n",
            r"tables\.patients\.values\.sex\.F: 'femal' is not one of female, male",
        ),
        (
            MINIMAL + "    values: {sex: {F: female, ' f ': male}}\n",
            r"tables\.patients\.values\.sex: ' f ' is listed twice",
        ),
        (
            MINIMAL + "  mrd:\n    source: m.csv\n    columns: {study_id: ID}\n"
            "    constants: {timepoint: day28}\n",
            r"tables\.mrd\.constants\.timepoint: 'day28' is not one of .*day_28",
        ),
        (
            MINIMAL + "    units: {dose: mg}\n",
            r"tables\.patients\.units\.dose: patients has no number field 'dose'",
        ),
        (
            MINIMAL + "  drugs:\n    source: d.csv\n    columns: {agent: Drug}\n",
            r"tables\.drugs\.columns\.study_id: every table needs the patient id column",
        ),
        (MINIMAL + "  labs: {source: l.csv, columns: {study_id: ID}}\n", r"unknown table 'labs'"),
        (MINIMAL.replace("patients.csv", "../../etc/passwd"), r"must be a sheet name or a file"),
        (MINIMAL + "anchor: infusion\n", r"anchor: 'infusion' is not one of diagnosis"),
        (MINIMAL.replace("st-elsewhere", "St Elsewhere"), r"centre: String should match"),
        (MINIMAL + "identifier_base: not a url\n", r"identifier_base"),
        (MINIMAL + "mrd_unit: ppm\n", r"mrd_unit: Input should be 'percent' or 'fraction'"),
        ("centre: x\ntables: {}\n", r"tables\.patients: a tables layout needs a patients table"),
        ("centre: x\nlayout: wide\n", r"patient: a wide layout needs a patient section"),
        (
            "centre: x\nlayout: wide\npatient: {columns: {study_id: ID}}\n"
            "events:\n  mrd:\n    - {source: Other, columns: {result: MRD}}\n",
            r"events\.mrd\[0\]: source and header_row are set once",
        ),
        (MINIMAL + "source: Sheet1\n", r"source: only used in a wide layout"),
        (MINIMAL + "encoding: klingon\n", r"encoding: 'klingon' is not a known text encoding"),
        (MINIMAL + "csv_delimiter: ';;'\n", r"csv_delimiter: String should have at most 1"),
        (MINIMAL + "header_row: 0\n", r"header_row: Input should be greater than or equal to 1"),
        (MINIMAL + "date_formats: []\n", r"date_formats: Tuple should have at least 1 item"),
    ],
)
def test_mapping_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        _load(tmp_path, text)
    assert str(tmp_path / "centre.yaml") in caught.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("centre: x\ntables: [unclosed\n", r"(?s)cannot read mapping file .*centre.yaml\", line 2"),
        ("- just\n- a list\n", r"must hold a YAML mapping"),
        (MINIMAL + "centre: again\n", r"key 'centre' given twice \(line 6\)"),
    ],
)
def test_unreadable_yaml_is_a_config_error(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        _load(tmp_path, text)


def test_missing_mapping_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read mapping file"):
        load_study_mapping(tmp_path / "nope.yaml")


def test_yaml_keys_are_words_as_written(tmp_path: Path) -> None:
    """`1: male` maps the word '1' and `no: negative` the word 'no' (not a boolean)."""
    mapping = _load(
        tmp_path,
        MINIMAL.replace("{study_id: ID}", "{study_id: ID, sex: Sex}")
        + "    values: {sex: {1: male, 2: female, no: unknown}}\n",
    )
    assert mapping.tables["patients"].values["sex"] == {"1": "male", "2": "female", "no": "unknown"}
    (tmp_path / "patients.csv").write_text("ID,Sex\nA,1\nB,2.0\nC,NO\n")
    result = read_study(tmp_path, mapping)
    assert result.rejects == []
    assert [c.patient.sex for c in result.cases] == ["male", "female", "unknown"]


def test_dump_and_load_give_the_same_mapping(tmp_path: Path) -> None:
    for path in (MAPPINGS / "centres").glob("*.yaml"):
        mapping = load_study_mapping(path)
        assert _load(tmp_path, dump_study_mapping(mapping)) == mapping


def test_field_words_come_from_the_records() -> None:
    assert field_words("patients", "sex") == ("female", "male", "other", "unknown")
    assert field_words("mrd", "result") == ("negative", "positive_below_quantification", "positive")
    assert field_words("mrd", "unit") == ("%", "1")
    assert field_words("drugs", "start_anchor") == ANCHORS
    assert field_words("patients", "study_id") == ()
    assert field_words("drugs", "dose") == ()


def test_every_table_has_its_fields() -> None:
    assert set(TABLE_FIELDS) == set(TABLES)
    for table, fields in TABLE_FIELDS.items():
        assert "study_id" in fields, table
        assert len(fields) == len(set(fields)), table


@pytest.mark.parametrize(
    ("word", "normal"),
    [("Low  Pos", "low pos"), (" NEG ", "neg"), (1.0, "1"), (2, "2"), (0.5, "0.5")],
)
def test_words_are_compared_ignoring_case_and_spaces(word: object, normal: str) -> None:
    assert normalise_word(word) == normal


def test_the_reference_documents_every_key_and_field() -> None:
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "mapping-file.md").read_text()
    for model in (StudyMapping, TableSpec):
        for key in model.model_fields:
            assert f"| `{key}` |" in text, key
    for fields in TABLE_FIELDS.values():
        for name in fields:
            stem = name.rsplit("_", 1)[0] if name.endswith(("_date", "_day", "_anchor")) else name
            assert f"`{name}`" in text or f"`{stem}_*`" in text, name
