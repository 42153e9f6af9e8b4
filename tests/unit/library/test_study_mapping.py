"""The mapping file: what loads, and how a wrong one is reported (file and key named)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_cart.errors import ConfigError
from fhir_cart.library.concepts import AttributeDef, ConceptDef, ConceptsFile, ValueDef
from fhir_cart.library.study_mapping import (
    EventSpec,
    PatientSpec,
    StudyMapping,
    check_mapping,
    default_library,
    dump_study_mapping,
    load_study_mapping,
    normalise_word,
    parse_window,
    spec_names,
    validation_reason,
)
from fhir_cart.study import read_study
from tests.support import MAPPINGS, ROOT

MINIMAL = """\
centre: st-elsewhere
patients:
  source: patients.csv
  columns: {study_id: ID}
"""
EVENT = MINIMAL + "events:\n  - concept: mrd\n    source: m.csv\n    columns: {study_id: ID}\n"


def _load(tmp_path: Path, text: str) -> StudyMapping:
    path = tmp_path / "centre.yaml"
    path.write_text(text, encoding="utf-8")
    return load_study_mapping(path)


@pytest.mark.parametrize("path", sorted((MAPPINGS / "centres").glob("*.yaml")), ids=str)
def test_every_shipped_mapping_loads(path: Path) -> None:
    mapping = load_study_mapping(path)
    assert mapping.centre
    assert check_mapping(mapping, default_library(mapping)) == []


def test_seed_mappings_name_their_study() -> None:
    for name in ("seed", "centre_b"):
        assert load_study_mapping(MAPPINGS / "centres" / f"{name}.yaml").study == "seed"


def test_defaults_of_a_minimal_mapping(tmp_path: Path) -> None:
    mapping = _load(tmp_path, MINIMAL)
    assert (mapping.identifier_base, mapping.study, mapping.header_row) == (None, None, 1)
    assert (mapping.csv_delimiter, mapping.encoding) == (",", "utf-8-sig")
    assert mapping.date_formats == ("%Y-%m-%d",)
    assert mapping.anchor is None  # no study-specific default: relative days need one named
    assert (mapping.events, mapping.ignore, mapping.own_concepts()) == ((), {}, None)
    spec = mapping.patients
    assert (spec.values, spec.constants, spec.units, spec.header_row) == ({}, {}, {}, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "  colums: {sex: Sex}\n", r"patients\.colums: Extra inputs"),
        (
            MINIMAL.replace("{study_id: ID}", "{sex: Sex}"),
            r"patients\.columns\.study_id: the patients spec needs",
        ),
        (
            MINIMAL.replace("{study_id: ID}", "{study_id: ID, sexx: Sex}"),
            r"patients\.columns\.sexx: not a patient field; fields are study_id, centre",
        ),
        (
            MINIMAL + "  values: {sex: {F: femal}}\n",
            r"patients\.values\.sex\.F: 'femal' is not one of female",
        ),
        (
            MINIMAL + "  values: {sex: {F: female, ' f ': male}}\n",
            r"patients\.values\.sex: ' f ' is listed twice",
        ),
        (
            MINIMAL + "  units: {age_at_diagnosis: years}\n",
            r"patients\.units\.age_at_diagnosis: 'years' is not a UCUM unit",
        ),
        (
            EVENT + "    constants: {when_window: soon}\n",
            r"events\[0\]\.constants\.when_window: expected a window",
        ),
        (
            EVENT + "    constants: {when_window: before lunch}\n",
            r"events\[0\]\.constants\.when_window: no concept 'lunch'",
        ),
        (
            EVENT + "    constants: {when_anchor: infusion}\n",
            r"events\[0\]\.constants\.when_anchor: no concept 'infusion'",
        ),
        (
            EVENT + "    units: {method: mg}\n",
            r"events\[0\]\.units\.method: not a value or a quantity attribute",
        ),
        (
            EVENT + "    units: {value: furlong}\n",
            r"events\[0\]\.units\.value: 'furlong' is not a UCUM unit",
        ),
        (
            EVENT.replace("{study_id: ID}\n", "{study_id: ID, grade: G}\n"),
            r"events\[0\]\.columns\.grade: concept mrd has no attribute 'grade'",
        ),
        (
            EVENT.replace("{study_id: ID}\n", "{study_id: ID, colour: C}\n"),
            r"events\[0\]\.columns\.colour: not an event field or attribute",
        ),
        (
            EVENT + "    values: {specimen: {BM: marrow}}\n",
            r"events\[0\]\.values\.specimen\.BM: 'marrow' is not one of bone_marrow",
        ),
        (
            EVENT.replace("concept: mrd", "concept: mdr"),
            r"events\[0\]: no concept 'mdr' in the concept library",
        ),
        (
            EVENT.replace("concept: mrd", "concept: disease_status")
            + "    values: {value: {CR: remission}}\n",
            r"events\[0\]\.values\.value\.CR: 'remission' is not one of complete_remission",
        ),
        (
            MINIMAL + "events:\n  - source: t.csv\n    columns: {study_id: ID, concept: Drug}\n"
            "    values: {concept: {HIB: {concept: chemo, regimen: hib_block}}}\n",
            r"no concept 'chemo'",
        ),
        (
            MINIMAL + "events:\n  - source: t.csv\n    columns: {study_id: ID, concept: Drug}\n"
            "    values: {concept: {HIB: {concept: chemotherapy, regime: hib_block}}}\n",
            r"events\[0\]\.values\.concept\.HIB\.regime: not an event field or attribute",
        ),
        (
            MINIMAL + "events:\n  - {source: t.csv, columns: {concept: Drug}}\n",
            r"events\[0\]\.columns\.study_id: a spec with its own source needs the patient id",
        ),
        (
            MINIMAL + "events:\n  - {concept: death, header_row: 2, columns: {when_date: D}}\n",
            r"events\[0\]: header_row, key: only for a spec with its own source",
        ),
        (
            MINIMAL + "events:\n  - {source: t.csv, columns: {study_id: ID}}\n",
            r"events\[0\]\.concept: give the concept",
        ),
        (
            MINIMAL + "events:\n  - {name: a, concept: death}\n  - {name: a, concept: death}\n",
            r"events: name 'a' is used twice",
        ),
        (MINIMAL.replace("patients.csv", "../../etc/passwd"), r"must be a sheet name or a file"),
        (MINIMAL + "anchor: infusion\n", r"anchor: no concept 'infusion'"),
        (MINIMAL + "anchor: CAR-T\n", r"anchor: String should match pattern"),
        (MINIMAL.replace("st-elsewhere", "St Elsewhere"), r"centre: String should match"),
        (MINIMAL + "identifier_base: not a url\n", r"identifier_base"),
        (MINIMAL + "mrd_unit: percent\n", r"mrd_unit: Extra inputs are not permitted"),
        (MINIMAL + "layout: wide\n", r"layout: Extra inputs are not permitted"),
        ("centre: x\n", r"patients: Field required"),
        (MINIMAL + "encoding: klingon\n", r"encoding: 'klingon' is not a known text encoding"),
        (MINIMAL + "csv_delimiter: ';;'\n", r"csv_delimiter: String should have at most 1"),
        (MINIMAL + "header_row: 0\n", r"header_row: Input should be greater than or equal to 1"),
        (MINIMAL + "date_formats: []\n", r"date_formats: Tuple should have at least 1 item"),
        (
            MINIMAL + "concepts: {mrd: {label: Mine, kind: observation}}\n",
            r"concepts\.mrd: already defined in the shared concept library",
        ),
        (
            MINIMAL + "attributes: {unit: {label: Unit}}\n",
            r"attributes\.unit: the name of a field",
        ),
        (
            MINIMAL + "concepts: {Ferritin: {label: F, kind: observation}}\n",
            r"concepts: 'Ferritin' is not a key",
        ),
        (
            MINIMAL + "concepts: {ferritin: {label: F, kind: lab}}\n",
            r"concepts\.ferritin\.kind: Input should be",
        ),
    ],
)
def test_mapping_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        _load(tmp_path, text)
    assert str(tmp_path / "centre.yaml") in caught.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "centre: x\npatients: [unclosed\n",
            r"(?s)cannot read mapping file .*centre.yaml\", line 2",
        ),
        ("- just\n- a list\n", r"must hold a YAML mapping"),
        (MINIMAL + "centre: again\n", r"key 'centre' given twice \(line 5\)"),
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
        + "  values: {sex: {1: male, 2: female, no: unknown, n/a: null}}\n",
    )
    words = mapping.patients.values["sex"]
    assert words == {"1": "male", "2": "female", "no": "unknown", "n/a": None}
    (tmp_path / "patients.csv").write_text("ID,Sex\nA,1\nB,2.0\nC,NO\nD,N/A\n")
    result = read_study(tmp_path, mapping)
    assert result.rejects == []
    assert [c.patient.sex for c in result.cases] == ["male", "female", "unknown", None]


def test_dump_and_load_give_the_same_mapping(tmp_path: Path) -> None:
    for path in (MAPPINGS / "centres").glob("*.yaml"):
        mapping = load_study_mapping(path)
        assert _load(tmp_path, dump_study_mapping(mapping)) == mapping


def test_a_studys_own_concepts_are_checked_and_used(tmp_path: Path) -> None:
    text = MINIMAL + (
        "attributes:\n  ward: {label: Ward, type: text}\n"
        "concepts:\n  ferritin: {label: Ferritin, kind: observation, attributes: [ward],\n"
        "             value: {type: quantity, units: [ug/L]}}\n"
        "events:\n  - concept: ferritin\n    columns: {value: Ferritin, ward: Ward}\n"
        "    units: {value: ng/mL}\n"
    )
    mapping = _load(tmp_path, text)
    own = mapping.own_concepts()
    assert own is not None
    assert list(own.concepts) == ["ferritin"]
    assert own.attributes["ward"] == AttributeDef(label="Ward", type="text")
    (tmp_path / "patients.csv").write_text("ID,Ferritin,Ward\nA,350,7B\n")
    (case,) = read_study(tmp_path, mapping).cases
    (event,) = case.events
    assert (event.concept, event.value, event.attributes) == (
        "ferritin",
        event.value,
        {"ward": "7B"},
    )
    assert event.value is not None
    assert (event.value.number, event.value.unit) == (350.0, "ug/L")  # ng/mL is ug/L
    with pytest.raises(ConfigError, match=r"events\[0\]\.columns\.ward: not an event field"):
        _load(
            tmp_path,
            text.replace("attributes:\n  ward: {label: Ward, type: text}\n", "").replace(
                "attributes: [ward],", ""
            ),
        )


def test_check_mapping_takes_the_library() -> None:
    mapping = StudyMapping(
        centre="x",
        patients=PatientSpec(columns={"study_id": "ID"}),
        events=(EventSpec(concept="ferritin", columns={"value": "F"}),),
    )
    assert check_mapping(mapping, default_library()) == [
        "events[0]: no concept 'ferritin' in the concept library"
    ]
    own = ConceptsFile(
        concepts={
            "ferritin": ConceptDef(
                label="F", kind="observation", value=ValueDef(type="quantity", units=("ug/L",))
            )
        }
    )
    from fhir_cart.library.concepts import load_concepts
    from fhir_cart.library.terminology import load_terminology

    assert check_mapping(mapping, load_concepts(load_terminology(), extra=own)) == []


def test_spec_names() -> None:
    mapping = StudyMapping(
        centre="x",
        patients=PatientSpec(columns={"study_id": "ID"}),
        events=(
            EventSpec(concept="mrd"),
            EventSpec(concept="mrd"),
            EventSpec(source="Treatment Sheet", columns={"study_id": "ID", "concept": "Drug"}),
            EventSpec(name="relapse", concept="disease_status"),
            EventSpec(concept="death"),
        ),
    )
    assert spec_names(mapping) == ["mrd-1", "mrd-2", "treatment-sheet", "relapse", "death"]


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("before hsct", (None, -1, "hsct")),
        ("After  CART_infusion", (1, None, "cart_infusion")),
        ("0..28 cart_infusion", (0, 28, "cart_infusion")),
        ("..-1 hsct", (None, -1, "hsct")),
        ("between -7 and 0 apheresis", (-7, 0, "apheresis")),
        ("unknown", None),
    ],
)
def test_windows_as_written(text: str, window: tuple[int | None, int | None, str] | None) -> None:
    assert parse_window(text) == window


@pytest.mark.parametrize("text", ["soon", "before", "28..0 hsct", "between 1 and hsct", ".. hsct"])
def test_windows_that_are_not(text: str) -> None:
    with pytest.raises(ValueError, match="window"):
        parse_window(text)


@pytest.mark.parametrize(
    ("word", "normal"),
    [("Low  Pos", "low pos"), (" NEG ", "neg"), (1.0, "1"), (2, "2"), (0.5, "0.5")],
)
def test_words_are_compared_ignoring_case_and_spaces(word: object, normal: str) -> None:
    assert normalise_word(word) == normal


def test_validation_reason_is_re_exported() -> None:
    from fhir_cart import errors

    assert validation_reason is errors.validation_reason


def test_the_reference_documents_every_key() -> None:
    text = (ROOT / "docs" / "mapping-file.md").read_text()
    for model in (
        StudyMapping,
        PatientSpec,
        EventSpec,
        ConceptsFile,
        ConceptDef,
        ValueDef,
        AttributeDef,
    ):
        for key in model.model_fields:
            assert f"| `{key}` |" in text, f"{model.__name__}.{key}"
    from fhir_cart.library.study_mapping import EVENT_FIELDS, PATIENT_FIELDS

    for name in (*EVENT_FIELDS, *PATIENT_FIELDS):
        assert f"`{name}`" in text, name


def test_every_yaml_example_in_the_reference_loads(tmp_path: Path) -> None:
    import re

    import yaml

    text = (ROOT / "docs" / "mapping-file.md").read_text()
    # the three-designs section quotes parts of shipped files (test_docs checks those)
    text = text.split("## Three designs, three mapping files", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 5
    for index, block in enumerate(blocks):
        data = yaml.safe_load(block)
        data.setdefault("centre", "x")
        data.setdefault("patients", {"columns": {"study_id": "ID"}})
        path = tmp_path / f"example-{index}.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        assert load_study_mapping(path).centre, block
