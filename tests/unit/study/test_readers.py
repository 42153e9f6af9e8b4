"""Reading study files into open records: values by concept type, units, times and windows,
words, event ids, unmapped columns, rejects with file/row/column/value/reason."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook

from fhir_cart.csv_safety import safe_csv_cell
from fhir_cart.errors import ConfigError, InputError, Reject
from fhir_cart.library.study_mapping import StudyMapping, load_study_mapping
from fhir_cart.records import Case, Event, Value, When
from fhir_cart.study import ReadResult, UnmappedColumn, fit_unit, parse_quantity, read_study
from fhir_cart.writers import write_study
from tests.strategies import attribute_values, library, values
from tests.support import (
    CENTRE_B_FILE,
    CENTRE_B_MAPPING,
    FIXTURES,
    MAPPINGS,
    SEED_FILE,
    SEED_MAPPING,
)


def _mapping(data: dict[str, Any]) -> StudyMapping:
    return StudyMapping.model_validate({"centre": "test", "anchor": "cart_infusion", **data})


def _csv(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _xlsx(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    book = Workbook()
    first = book.active
    assert first is not None
    book.remove(first)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def _reasons(result: ReadResult) -> dict[tuple[str, int | None, str | None, str | None], str]:
    found: dict[tuple[str, int | None, str | None, str | None], str] = {}
    for r in result.rejects:
        found.setdefault((r.source, r.row, r.column, r.value), r.reason)
    return found


PATIENTS = {"source": "patients", "columns": {"study_id": "ID"}}


def _events_study(tmp_path: Path, rows: str, spec: dict[str, Any], **top: Any) -> ReadResult:
    """A folder with patients.csv (A, B) and events.csv; ``spec`` reads events.csv."""
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID\nA\nB\n")
    _csv(folder, "events.csv", rows)
    spec = {"source": "events", **spec}
    spec["columns"] = {"study_id": "ID", **spec.get("columns", {})}
    return read_study(folder, _mapping({"patients": PATIENTS, "events": [spec], **top}))


def _values(result: ReadResult) -> list[Value | None]:
    return [e.value for c in result.cases for e in c.events]


# -- quantities and units -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("<0.01%", ("<", 0.01, "%")),
        ("0.008 %", (None, 0.008, "%")),
        ("1e-4", (None, 1e-4, None)),
        ("<= 0,5", ("<=", 0.5, None)),
        ("≤ 0,5", ("<=", 0.5, None)),
        ("≥5 %", (">=", 5.0, "%")),
        ("1,5 g/m²", (None, 1.5, "g/m2")),
        ("15 µg/m2/d", (None, 15.0, "ug/m2/d")),
        ("2.1 x10^6/kg", (None, 2.1, "10*6/kg")),
        ("2.1 10*6/kg", (None, 2.1, "10*6/kg")),
        ("0.5 1", (None, 0.5, "1")),
        ("0.01", (None, 0.01, None)),
        (0.3, (None, 0.3, None)),
        (7, (None, 7.0, None)),
    ],
)
def test_quantities_as_written(cell: object, expected: tuple[object, ...]) -> None:
    assert parse_quantity(cell) == expected


@pytest.mark.parametrize("cell", ["abc", "x5", "%", "", "neg", True, "< >"])
def test_cells_that_are_not_quantities(cell: object) -> None:
    with pytest.raises(ValueError, match="expected a number"):
        parse_quantity(cell)


@pytest.mark.parametrize(
    ("number", "unit", "units", "convert", "expected"),
    [
        (1.5, "g/m2", ("mg/m2", "mg/kg"), True, (1500.0, "mg/m2")),
        (2.0, "mg/kg", ("mg/m2", "mg/kg"), True, (2.0, "mg/kg")),  # listed, not compatible
        (0.5, "1", ("%", "1"), False, (0.5, "1")),  # listed and convert: false: kept
        (0.5, "1", ("%",), False, (50.0, "%")),  # not listed: converted to the first
        (3.0, "g", ("mg/m2", "mg"), True, (3000.0, "mg")),  # compatible with another listed
    ],
)
def test_units_are_fitted_to_the_concept(
    number: float, unit: str, units: tuple[str, ...], convert: bool, expected: tuple[float, str]
) -> None:
    assert fit_unit(number, unit, units, convert) == expected


@pytest.mark.parametrize(
    ("unit", "reason"), [("g/qm", "is not a UCUM unit"), ("mg/L", "nor convertible")]
)
def test_units_that_do_not_fit(unit: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        fit_unit(1.0, unit, ("mg/m2", "mg/kg"), True)


CYCLO = {
    "concept": "cyclophosphamide",
    "columns": {"value": "Dose", "unit": "Unit", "when_day": "Day"},
}


def test_cyclophosphamide_in_g_per_m2_becomes_mg_per_m2(tmp_path: Path) -> None:
    rows = 'ID,Day,Dose,Unit\nA,-6,"1,5 g/m²",\nA,-5,1.5,g/m2\nB,-6,500,\nB,-5,2,mg/kg\n'
    result = _events_study(tmp_path, rows, CYCLO)
    assert result.rejects == []
    assert [(v.number, v.unit) for v in _values(result) if v] == [
        (1500.0, "mg/m2"),
        (1500.0, "mg/m2"),
        (500.0, "mg/m2"),
        (2.0, "mg/kg"),
    ]
    assert result.cases[0].events[0].source_text == "1,5 g/m²"
    units = _events_study(
        tmp_path / "u",
        "ID,Day,Dose\nA,-6,1.5\n",
        {**CYCLO, "units": {"value": "g/m2"}, "columns": {"value": "Dose", "when_day": "Day"}},
    )
    assert _values(units) == [Value(number=1500.0, unit="mg/m2")]


def test_an_unknown_unit_rejects_that_row_only(tmp_path: Path) -> None:
    rows = "ID,Day,Dose,Unit\nA,-6,500,mg/m2\nA,-5,1.5,g/qm\nB,-6,1.5,mg/L\nB,-5,400,\n"
    result = _events_study(tmp_path, rows, CYCLO)
    assert result.rejects == [
        Reject(
            "events.csv", 3, "Dose", "1.5", "unit 'g/qm' is not a UCUM unit", "cyclophosphamide"
        ),
        Reject(
            "events.csv",
            4,
            "Dose",
            "1.5",
            "unit 'mg/L' is not one of mg/m2, mg/m2/d, mg/kg, mg/kg/d, mg nor convertible to them",
            "cyclophosphamide",
        ),
    ]
    assert [(v.number, v.unit) for v in _values(result) if v] == [
        (500.0, "mg/m2"),
        (400.0, "mg/m2"),
    ]


# -- values by type -------------------------------------------------------------------------

MRD = {
    "concept": "mrd",
    "columns": {"value": "MRD", "when_day": "Day"},
    "values": {"value": {"neg": "negative", "low pos": "positive_below_quantification"}},
    "units": {"value": "1"},
}


def test_mrd_words_numbers_and_percent_over_100(tmp_path: Path) -> None:
    rows = (
        "ID,Day,MRD\nA,0,Low  POS\nA,28,<0.01%\nA,90,1e-4\nA,200,101%\nA,300,positive\nA,400,-1%\n"
    )
    result = _events_study(tmp_path, rows, MRD)
    assert _values(result) == [
        Value(code="positive_below_quantification"),
        Value(number=0.01, unit="%", comparator="<"),
        Value(number=1e-4, unit="1"),
        Value(code="positive"),
    ]
    assert result.rejects == [
        Reject("events.csv", 5, "MRD", "101%", "a percentage cannot exceed 100", "mrd"),
        Reject("events.csv", 7, "MRD", "-1%", "must be at least 0", "mrd"),
    ]


def test_a_word_beside_a_number_and_the_canonical_value_columns(tmp_path: Path) -> None:
    rows = "ID,N,U,Code\nA,0.005,%,positive_below_quantification\nA,,,negative\n"
    spec = {
        "concept": "mrd",
        "columns": {"value_number": "N", "value_unit": "U", "value_code": "Code"},
    }
    result = _events_study(tmp_path, rows, spec)
    assert _values(result) == [
        Value(number=0.005, unit="%", code="positive_below_quantification"),
        Value(code="negative"),
    ]


def test_boolean_range_integer_text_and_none_values(tmp_path: Path) -> None:
    own = {
        "concepts": {
            "fever": {"label": "Fever", "kind": "observation", "value": {"type": "boolean"}},
            "platelets": {
                "label": "Platelets",
                "kind": "observation",
                "value": {"type": "range", "units": ["10*9/L"]},
            },
        }
    }
    rows = "ID,C,V\nA,fever,ja\nA,fever,No\nA,platelets,20–50\nA,prior_lines,3\n"
    rows += "A,cytogenetics,KMT2A-r\n"
    rows += "A,fever,maybe\nA,prior_lines,2.5\nA,apheresis,3\n"
    result = _events_study(tmp_path, rows, {"columns": {"concept": "C", "value": "V"}}, **own)
    assert _values(result) == [
        Value(boolean=True),
        Value(boolean=False),
        Value(low=20, high=50, unit="10*9/L"),
        Value(number=3),
        Value(text="KMT2A-r"),
    ]
    assert [(r.row, r.reason) for r in result.rejects] == [
        (7, "expected yes or no (yes/no, true/false, 1/0, ja/nein, y/n)"),
        (8, "expected a whole number"),
        (9, "Apheresis (leukapheresis for CAR-T manufacturing) takes no value"),
    ]


def test_coded_values_and_attributes_outside_their_value_set(tmp_path: Path) -> None:
    rows = "ID,Status,CD19,Regimen\nA,CR,neg,\nA,remission,,\nA,relapse,weird,\n"
    spec = {
        "concept": "disease_status",
        "columns": {"value": "Status", "cd19": "CD19"},
        "values": {"value": {"CR": "complete_remission"}, "cd19": {"neg": "negative"}},
    }
    result = _events_study(tmp_path, rows, spec, ignore={"Regimen": "test"})
    assert [(e.value, e.attributes) for c in result.cases for e in c.events] == [
        (Value(code="complete_remission"), {"cd19": "negative"})
    ]
    got = _reasons(result)
    assert got[("events.csv", 3, "Status", "remission")].startswith(
        "unknown word; expected one of complete_remission, partial_remission"
    )
    assert got[("events.csv", 4, "CD19", "weird")] == (
        "unknown word; expected one of negative, positive, dim"
    )
    # an open value set keeps an unknown word as text
    chemo = _events_study(
        tmp_path / "o",
        "ID,R\nA,FLAG-Ida\nA,hib block\n",
        {"concept": "chemotherapy", "columns": {"regimen": "R"}},
    )
    assert [e.attributes for e in chemo.cases[0].events] == [
        {"regimen": "FLAG-Ida"},
        {"regimen": "hib_block"},
    ]


def test_attributes_by_type_and_not_allowed_per_row(tmp_path: Path) -> None:
    rows = "ID,C,Dose,Grade,Cycle\nA,cart_infusion,2.1 x10^6/kg,,\nA,cart_infusion,2100000,,\n"
    rows += "A,crs,,2,\nA,crs,,7,\nA,crs,,,1\n"
    spec = {
        "columns": {"concept": "C", "cell_dose": "Dose", "grade": "Grade", "cycle": "Cycle"},
        "units": {"cell_dose": "1/kg"},
    }
    result = _events_study(tmp_path, rows, spec)
    assert [e.attributes for e in result.cases[0].events] == [
        {"cell_dose": 2.1},
        {"cell_dose": 2.1},
        {"grade": 2},
    ]
    assert [(r.row, r.column, r.reason) for r in result.rejects] == [
        (5, "Grade", "must be at most 5"),
        (6, "Cycle", "concept crs has no attribute cycle; it allows grade, grading_scale"),
    ]


# -- words ----------------------------------------------------------------------------------


def test_a_word_mapping_to_null_makes_no_event(tmp_path: Path) -> None:
    rows = "ID,Drug,Day\nA,Blinatumomab,-30\nA,none,-20\nA,  NONE ,-10\nB,keine,-5\n"
    spec = {
        "columns": {"concept": "Drug", "when_day": "Day"},
        "values": {"concept": {"none": None, "keine": None}},
    }
    result = _events_study(tmp_path, rows, spec)
    assert result.rejects == []
    assert [[e.concept for e in c.events] for c in result.cases] == [["blinatumomab"], []]


def test_a_word_setting_two_fields(tmp_path: Path) -> None:
    rows = "ID,Drug,Day\nA,HIB block,165\nA,Flag-Ida,180\nA,Fludarabine,-6\n"
    spec = {
        "columns": {"concept": "Drug", "when_day": "Day"},
        "values": {
            "concept": {
                "HIB block": {"concept": "chemotherapy", "regimen": "hib_block"},
                "FLAG-Ida": {"concept": "chemotherapy", "regimen": "other"},
            }
        },
    }
    result = _events_study(tmp_path, rows, spec)
    assert result.rejects == []
    got = [(e.concept, e.attributes, e.source_text) for e in result.cases[0].events]
    assert got == [
        ("chemotherapy", {"regimen": "hib_block"}, "HIB block"),
        ("chemotherapy", {"regimen": "other"}, "Flag-Ida"),
        ("fludarabine", {}, "Fludarabine"),
    ]


def test_canonical_words_are_matched_ignoring_case(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Sex\nA,Female\nB,f\n")
    _csv(
        folder, "events.csv", "ID,Event,Grade\nA,CRS,1\nA,Icans,2\nA,Cytokine release syndrome,3\n"
    )
    mapping = _mapping(
        {
            "patients": {"source": "patients", "columns": {"study_id": "ID", "sex": "Sex"}},
            "events": [
                {
                    "source": "events",
                    "key": ["Grade"],
                    "columns": {"study_id": "ID", "concept": "Event", "grade": "Grade"},
                }
            ],
        }
    )
    result = read_study(folder, mapping)
    (case,) = result.cases
    assert case.patient.sex == "female"
    assert [e.concept for e in case.events] == ["crs", "icans", "crs"]  # key or label
    assert result.rejects == [
        Reject(
            "patients.csv",
            3,
            "Sex",
            "f",
            "unknown word; expected one of female, male, other, unknown",
            "patients",
        )
    ]


# -- times and windows ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ("before hsct", When(latest_day=-1, anchor="hsct")),
        ("Before HSCT", When(latest_day=-1, anchor="hsct")),
        ("after cart_infusion", When(earliest_day=1, anchor="cart_infusion")),
        ("0..28 cart_infusion", When(earliest_day=0, latest_day=28, anchor="cart_infusion")),
        ("between -7 and 0 apheresis", When(earliest_day=-7, latest_day=0, anchor="apheresis")),
        ("unknown", None),
    ],
)
def test_windows(tmp_path: Path, window: str, expected: When | None) -> None:
    spec = {"concept": "mrd", "columns": {"value": "MRD"}, "constants": {"when_window": window}}
    result = _events_study(
        tmp_path, "ID,MRD\nA,neg\n", {**spec, "values": {"value": {"neg": "negative"}}}
    )
    assert result.rejects == []
    assert result.cases[0].events[0].when == expected


def test_a_window_in_a_column_and_a_bad_one(tmp_path: Path) -> None:
    rows = "ID,When,MRD\nA,before HSCT,negative\nA,soon,negative\nA,before lunch,negative\n"
    spec = {"concept": "mrd", "columns": {"when_window": "When", "value": "MRD"}}
    result = _events_study(tmp_path, rows, spec)
    assert [e.when for e in result.cases[0].events] == [When(latest_day=-1, anchor="hsct")]
    assert [(r.row, r.column, r.reason[:20]) for r in result.rejects] == [
        (3, "When", "expected a window: '"),
        (4, "When", "no concept 'lunch' i"),
    ]


def _timed_study(tmp_path: Path, rows: str) -> ReadResult:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Infusion,FU\nA,2020-01-10,100\n")
    _csv(folder, "statuses.csv", "ID,Day,Date,Status,Anchor\n" + rows)
    mapping = _mapping(
        {
            "patients": {
                "source": "patients.csv",
                "columns": {"study_id": "ID", "anchor_date": "Infusion"},
            },
            "events": [
                {"concept": "last_follow_up", "columns": {"when_day": "FU"}},
                {
                    "concept": "disease_status",
                    "source": "statuses.csv",
                    "columns": {
                        "study_id": "ID",
                        "when_day": "Day",
                        "when_date": "Date",
                        "value": "Status",
                        "when_anchor": "Anchor",
                    },
                },
            ],
        }
    )
    return read_study(folder, mapping)


def test_relative_days_get_dates_from_the_anchor_date(tmp_path: Path) -> None:
    result = _timed_study(
        tmp_path,
        "A,28,,complete_remission,\nA,,2020-05-01,relapse,\nA,5,,relapse,hsct\n"
        "A,0,2020-01-10,complete_remission,\n",
    )
    assert result.rejects == []
    (case,) = result.cases
    follow_up, *statuses = case.events
    assert follow_up.when == When(date=dt.date(2020, 4, 19), day=100, anchor="cart_infusion")
    assert [e.when for e in statuses] == [
        When(date=dt.date(2020, 2, 7), day=28, anchor="cart_infusion"),
        When(date=dt.date(2020, 5, 1)),  # a date alone stays a date alone
        When(day=5, anchor="hsct"),  # another anchor: its date is not known
        When(date=dt.date(2020, 1, 10), day=0, anchor="cart_infusion"),
    ]


def test_a_date_that_disagrees_with_its_day_is_rejected(tmp_path: Path) -> None:
    result = _timed_study(tmp_path, "A,28,2020-02-08,complete_remission,\n")
    assert result.rejects == [
        Reject(
            "statuses.csv",
            2,
            "Date",
            "2020-02-08",
            "date 2020-02-08 is day 29 after the cart_infusion date 2020-01-10, "
            "but the row gives day 28",
            "disease_status",
        )
    ]


def test_several_date_formats_and_excel_dates(tmp_path: Path) -> None:
    book = _xlsx(
        tmp_path / "s.xlsx",
        {
            "P": [
                ["ID", "DOB"],
                ["A", dt.datetime(2010, 3, 4)],
                ["B", "05.06.2011"],
                ["C", "2012-07-08"],
                ["D", "8/7/2012"],
            ]
        },
    )
    mapping = _mapping(
        {
            "date_formats": ["%d.%m.%Y", "%Y-%m-%d"],
            "patients": {"columns": {"study_id": "ID", "birth_date": "DOB"}},
        }
    )
    result = read_study(book, mapping)
    assert [c.patient.birth_date for c in result.cases] == [
        dt.date(2010, 3, 4),
        dt.date(2011, 6, 5),
        dt.date(2012, 7, 8),
    ]
    assert result.rejects == [
        Reject(
            "s.xlsx",
            5,
            "DOB",
            "8/7/2012",
            "not a date; expected one written as %d.%m.%Y or %Y-%m-%d",
            "P",
        )
    ]


# -- the fixtures ---------------------------------------------------------------------------


def test_seed_reads_as_before(seed_cases: list[Case]) -> None:
    p01 = next(c for c in seed_cases if c.patient.study_id == "P01")
    assert p01.patient.attributes == {"age_at_diagnosis": 6.2}
    (infusion,) = p01.of("cart_infusion")
    assert infusion.when == When(date=dt.date(2019, 5, 6), day=0, anchor="cart_infusion")
    assert infusion.attributes == {"product": "tisagenlecleucel", "cell_dose": 1.5}
    day28 = next(e for e in p01.of("mrd") if e.attributes["timepoint"] == "day_28")
    assert day28.when == When(date=dt.date(2019, 6, 3), day=28, anchor="cart_infusion")
    assert day28.value == Value(code="negative")
    assert (day28.attributes["method"], day28.attributes["specimen"]) == ("pcr", "bone_marrow")
    (diagnosis,) = p01.of("diagnosis")
    assert (diagnosis.value, diagnosis.attributes) == (
        Value(code="b_all"),
        {"disease_state": "relapsed"},
    )
    (follow_up,) = p01.of("last_follow_up")
    assert follow_up.when is not None
    assert follow_up.when.date == dt.date(2019, 5, 6) + dt.timedelta(days=497)
    assert p01.of("death") == []
    p05 = next(c for c in seed_cases if c.patient.study_id == "P05")
    assert [(e.event_id, e.attributes) for e in p05.of("chemotherapy")] == [
        ("drugs-hib-block-1", {"regimen": "hib_block", "cycle": 1, "intent": "salvage"}),
        ("drugs-hib-block-2", {"regimen": "hib_block", "cycle": 2, "intent": "salvage"}),
    ]
    (hsct,) = p05.of("hsct")
    assert hsct.attributes == {"donor_type": "haploidentical", "conditioning": "tbi_etoposide"}
    blasts = p05.events[[e.event_id for e in p05.events].index("mrd-pre-blina-flow")]
    assert (blasts.value, blasts.source_text) == (Value(number=91.0, unit="%"), "91%")


def test_centre_b_reads_percentages_and_dates(centre_b_cases: list[Case]) -> None:
    assert len(centre_b_cases) == 4
    b101 = next(c for c in centre_b_cases if c.patient.study_id == "B-101")
    assert (b101.patient.centre, b101.patient.sex) == ("centre-b", "female")
    infusion = next(e for e in b101.of("mrd") if e.attributes["timepoint"] == "infusion")
    assert infusion.value == Value(number=0.01, unit="%", comparator="<")
    assert infusion.when == When(date=dt.date(2021, 5, 17))
    assert infusion.attributes["method"] == "flow"
    (cart,) = b101.of("cart_infusion")
    assert cart.attributes == {"cell_dose": 2.1, "product": "tisagenlecleucel"}
    b102 = next(c for c in centre_b_cases if c.patient.study_id == "B-102")
    assert b102.of("blinatumomab") == []  # empty group of cells: no event
    relapse = next(e for e in b102.of("disease_status") if e.value == Value(code="relapse"))
    assert relapse.attributes == {"cd19": "negative"}
    assert relapse.when == When(date=dt.date(2022, 2, 11))
    (death,) = b102.of("death")
    assert death.when == When(date=dt.date(2022, 6, 28))


@pytest.mark.parametrize(
    ("path", "mapping"), [(SEED_FILE, SEED_MAPPING), (CENTRE_B_FILE, CENTRE_B_MAPPING)]
)
def test_every_fixture_column_is_mapped_or_ignored(path: Path, mapping: Path) -> None:
    result = read_study(path, load_study_mapping(mapping))
    assert result.rejects == []
    assert result.unmapped_columns == []


def test_unmapped_columns_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Sex,Comment,Ward\nA,female,x,7B\n")
    _csv(folder, "events.csv", "ID,C,Note,Ward\nA,crs,x,7B\n")
    mapping = _mapping(
        {
            "patients": {"source": "patients", "columns": {"study_id": "ID", "sex": "Sex"}},
            "events": [{"source": "events", "columns": {"study_id": "ID", "concept": "C"}}],
            "ignore": {"Comment": "free text"},
        }
    )
    result = read_study(folder, mapping)
    assert result.rejects == []
    assert result.unmapped_columns == [
        UnmappedColumn("patients.csv", None, "Ward"),
        UnmappedColumn("events.csv", None, "Note"),
        UnmappedColumn("events.csv", None, "Ward"),
    ]


def test_bad_tables_are_reported_with_where_and_why() -> None:
    mapping = load_study_mapping(MAPPINGS / "centres" / "bad.yaml")
    result = read_study(FIXTURES / "bad" / "tables", mapping)
    got = _reasons(result)
    also = "; the patient and their events on this row are not read"
    assert got[("patients.csv", 3, "birth_date", "2011-13-45")] == (
        "month 13 does not exist (read as %Y-%m-%d)" + also
    )
    assert got[("patients.csv", 5, "study_id", "X3")] == (
        "duplicate patient id (row 4 is kept)" + also
    )
    assert got[("mrd.csv", 2, "result", "abc")].startswith("expected one of negative, ")
    assert got[("mrd.csv", 3, "result", "120%")] == "a percentage cannot exceed 100"
    assert got[("mrd.csv", 5, "study_id", "X9")] == "no patient with this id in the patient table"
    assert got[("mrd.csv", 6, "study_id", "X2")] == (
        "the patient's row 3 was rejected: month 13 does not exist (read as %Y-%m-%d)"
    )
    # the patient's own events on its row (its follow-up) go with it: the row's reject says
    # so, and they are not listed once more (one reject per cause)
    assert [r for r in result.rejects if r.table == "last_follow_up"] == []
    assert len(result.rejects) == 6
    # nothing disappears: every row is either read or rejected
    assert len(result.cases) + sum(r.table == "patients" for r in result.rejects) == 4
    kept = sum(len(c.of("mrd")) for c in result.cases)
    assert kept + sum(r.table == "mrd" for r in result.rejects) == 5


def test_bad_wide_sheet_rejects_events_not_patients() -> None:
    result = read_study(FIXTURES / "bad" / "centre_b_bad.csv", load_study_mapping(CENTRE_B_MAPPING))
    got = _reasons(result)
    source = "centre_b_bad.csv"
    also = "; the patient and their events on this row are not read"
    sex = "unknown word; expected one of w, m, female, male, other, unknown"
    assert got[(source, 2, "Gender", "x")] == sex + also
    assert got[(source, 3, "MRD infusion (%)", "abc")].startswith("expected one of negative")
    assert got[(source, 3, "MRD d28 (%)", "150%")] == "a percentage cannot exceed 100"
    # read for the infusion and for the MRD at infusion: one cause, one reject
    assert [r.reason for r in result.rejects if r.value == "31.02.2021"] == [
        "day 31 does not exist in February 2021 (read as %d.%m.%Y)"
    ]
    patient_rejects = [
        (r.row, r.column, r.value, r.reason) for r in result.rejects if r.table == "patients"
    ]
    assert patient_rejects == [
        (2, "Gender", "x", sex + also),
        (5, "Patient", "B-202", "duplicate patient id (row 3 is kept)" + also),
    ]
    # the events on a rejected patient's row are not listed once more each: the row's
    # reject says they are not read (one reject per cause; it was 7 more lines a row)
    assert not [r for r in result.rejects if r.reason.startswith("the patient's row")]
    assert {r.row for r in result.rejects} == {2, 3, 4, 5}
    by_id = {c.patient.study_id: c for c in result.cases}
    assert sorted(by_id) == ["B-202", "B-203"]
    assert by_id["B-202"].of("mrd") == []  # both MRD values of row 3 were bad
    assert [e.concept for e in by_id["B-203"].of("apheresis", "cart_infusion")] == ["apheresis"]


# -- event ids ------------------------------------------------------------------------------


def test_event_ids_by_explicit_id_key_and_row(tmp_path: Path) -> None:
    rows = "ID,EID,Drug,Cycle\nA,,blinatumomab,1\nA,,blinatumomab,2\nA,x1,fludarabine,\n"
    rows += "A,x1,fludarabine,\nB,,blinatumomab,1\n"
    spec = {"columns": {"concept": "Drug", "cycle": "Cycle", "event_id": "EID"}}
    keyed = _events_study(tmp_path / "k", rows, {**spec, "name": "drugs", "key": ["Drug", "Cycle"]})
    assert [[e.event_id for e in c.events] for c in keyed.cases] == [
        ["drugs-blinatumomab-1", "drugs-blinatumomab-2", "x1"],
        ["drugs-blinatumomab-1"],
    ]
    assert keyed.rejects == [
        Reject(
            "events.csv", 5, "EID", "x1", "event id 'x1' already used (events.csv row 4)", "drugs"
        )
    ]
    by_row = _events_study(tmp_path / "r", rows, spec)
    assert [[e.event_id for e in c.events] for c in by_row.cases] == [
        ["events-1", "events-2", "x1"],
        ["events-1"],
    ]


def test_patient_sheet_events_are_named_by_their_spec(seed_cases: list[Case]) -> None:
    p02 = next(c for c in seed_cases if c.patient.study_id == "P02")
    ids = [e.event_id for e in p02.events]
    assert ids[:3] == ["diagnosis", "death", "last_follow_up"]
    assert "procedures-car-t-infusion" in ids
    assert "mrd-d-28-pcr" in ids
    assert "status-120" in ids
    assert "toxicity-crs" in ids


def test_correcting_a_value_keeps_every_event_id(tmp_path: Path, seed_cases: list[Case]) -> None:
    copy = tmp_path / "seed.xlsx"
    shutil.copy(SEED_FILE, copy)
    book = load_workbook(copy)
    sheet = book["Response"]
    row = next(r for r in sheet.iter_rows(min_row=2) if r[0].value == "P05" and r[1].value == 28)
    row[2].value = "PR"  # CR -> PR on day 28
    book.save(copy)
    again = read_study(copy, load_study_mapping(SEED_MAPPING))
    assert again.rejects == []
    assert [[e.event_id for e in c.events] for c in again.cases] == [
        [e.event_id for e in c.events] for c in seed_cases
    ]
    changed = [
        (a.event_id, a.value, b.value)
        for old, new in zip(seed_cases, again.cases, strict=True)
        for a, b in zip(old.events, new.events, strict=True)
        if a != b
    ]
    assert changed == [
        ("status-28", Value(code="complete_remission"), Value(code="partial_remission"))
    ]


# -- rows, cells, defaults ------------------------------------------------------------------


def test_blank_rows_skipped_blank_cells_none_and_defaults(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Sex,Note\nA,F,SYNTHETIC\n,,\n\nB,,\n")
    _csv(folder, "mrd.csv", "ID,MRD,Method\nA,neg,\n,,\nB,neg,flow\n")
    mapping = _mapping(
        {
            "patients": {
                "source": "patients.csv",
                "columns": {"study_id": "ID", "sex": "Sex"},
                "values": {"sex": {"F": "female"}},
            },
            "events": [
                {
                    "source": "mrd",
                    "concept": "mrd",
                    "columns": {"study_id": "ID", "value": "MRD", "method": "Method"},
                    "values": {"value": {"neg": "negative"}},
                    "constants": {"method": "pcr", "specimen": "bone_marrow"},
                }
            ],
            "ignore": {"Note": "synthetic"},
        }
    )
    result = read_study(folder, mapping)
    assert result.rejects == []
    a, b = result.cases
    assert (a.patient.sex, b.patient.sex) == ("female", None)
    got = [(c.events[0].attributes["method"], c.events[0].attributes["specimen"]) for c in (a, b)]
    assert got == [("pcr", "bone_marrow"), ("flow", "bone_marrow")]  # a cell wins over a default


def test_a_bad_patient_value_rejects_the_patient(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Age\nA,7.5\nB,seven\nC,200\n")
    mapping = _mapping(
        {
            "patients": {
                "source": "patients",
                "columns": {"study_id": "ID", "age_at_diagnosis": "Age"},
            }
        }
    )
    result = read_study(folder, mapping)
    assert [c.patient.attributes for c in result.cases] == [{"age_at_diagnosis": 7.5}]
    assert _reasons(result) == {
        (
            "patients.csv",
            3,
            "Age",
            "seven",
        ): "expected a number, with a comparator and unit if any ('<0.01 %')",
        ("patients.csv", 4, "Age", "200"): "must be at most 130",
    }


# -- where rows come from -------------------------------------------------------------------


def test_xlsx_rejects_name_the_sheet_and_numbers_read_as_ids(tmp_path: Path) -> None:
    book = _xlsx(
        tmp_path / "study.xlsx",
        {
            "Patients": [["UPN", "Sex"], [17, "F"], [23.0, "M"]],
            "MRD": [["UPN", "MRD"], [17, "negative"], [99, "negative"]],
        },
    )
    mapping = _mapping(
        {
            "patients": {
                "source": "Patients",
                "columns": {"study_id": "UPN", "sex": "Sex"},
                "values": {"sex": {"F": "female", "M": "male"}},
            },
            "events": [
                {"source": "MRD", "concept": "mrd", "columns": {"study_id": "UPN", "value": "MRD"}}
            ],
        }
    )
    result = read_study(book, mapping)
    assert [c.patient.study_id for c in result.cases] == ["17", "23"]
    assert result.rejects == [
        Reject("study.xlsx", 3, "UPN", "99", "no patient with this id in the patient table", "MRD")
    ]


def test_header_row_below_a_title(tmp_path: Path) -> None:
    book = _xlsx(
        tmp_path / "study.xlsx",
        {"Cohort": [["CAR-T cohort (SYNTHETIC)"], [], ["ID", "Sex"], ["A", "female"], ["B", "x"]]},
    )
    mapping = _mapping({"header_row": 3, "patients": {"columns": {"study_id": "ID", "sex": "Sex"}}})
    result = read_study(book, mapping)
    assert [c.patient.study_id for c in result.cases] == ["A"]
    assert [(r.row, r.table) for r in result.rejects] == [(5, "Cohort")]


def test_a_column_missing_from_the_header_stops_the_read(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Gender,Birth date\nA,F,2010-01-01\n")
    mapping = _mapping(
        {
            "patients": {
                "source": "patients.csv",
                "columns": {"study_id": "ID", "sex": "Sex", "birth_date": "Birthdate"},
            },
            "events": [{"concept": "death", "key": [], "columns": {"when_date": "Died"}}],
        }
    )
    with pytest.raises(InputError, match="does not fit") as caught:
        read_study(folder, mapping)
    assert [(r.source, r.row, r.column) for r in caught.value.rejects] == [
        ("patients.csv", 1, "Sex"),
        ("patients.csv", 1, "Birthdate"),
        ("patients.csv", 1, "Died"),
    ]
    assert "patients.sex is not in the header" in caught.value.rejects[0].reason
    assert "did you mean 'Birth date'" in caught.value.rejects[1].reason
    assert "events[0].when_date is not in the header" in caught.value.rejects[2].reason


def test_a_column_given_twice_or_a_missing_key_column_stops_the_read(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Sex,Sex\nA,F,M\n")
    mapping = _mapping(
        {"patients": {"source": "patients", "columns": {"study_id": "ID", "sex": "Sex"}}}
    )
    with pytest.raises(InputError) as caught:
        read_study(folder, mapping)
    assert caught.value.rejects[0].reason == "column for sex appears 2 times in the header"
    _csv(folder, "patients.csv", "ID\nA\n")
    _csv(folder, "e.csv", "ID,C\nA,crs\n")
    keyed = _mapping(
        {
            "patients": PATIENTS,
            "events": [
                {"source": "e", "key": ["Kind"], "columns": {"study_id": "ID", "concept": "C"}}
            ],
        }
    )
    with pytest.raises(InputError) as caught:
        read_study(folder, keyed)
    assert caught.value.rejects[0].column == "Kind"


def test_missing_sheet_or_file_stops_the_read(tmp_path: Path) -> None:
    book = _xlsx(tmp_path / "s.xlsx", {"Pts": [["ID"], ["A"]]})
    mapping = _mapping({"patients": {"source": "Patients", "columns": {"study_id": "ID"}}})
    with pytest.raises(InputError, match=r"no sheet 'Patients' \(sheets: Pts\)"):
        read_study(book, mapping)
    with pytest.raises(InputError, match="file named in the mapping is missing"):
        read_study(tmp_path, mapping)


def test_one_csv_reads_its_neighbours(tmp_path: Path) -> None:
    _csv(tmp_path, "patients.csv", "ID\nA\n")
    _csv(tmp_path, "mrd.csv", "ID,MRD\nA,negative\n")
    spec = {"source": "mrd", "concept": "mrd", "columns": {"study_id": "ID", "value": "MRD"}}
    result = read_study(
        tmp_path / "patients.csv", _mapping({"patients": PATIENTS, "events": [spec]})
    )
    assert [e.event_id for e in result.cases[0].events] == ["mrd-1"]


def test_a_mapping_that_does_not_fit_the_library_is_a_config_error(tmp_path: Path) -> None:
    _csv(tmp_path, "patients.csv", "ID\nA\n")
    for spec, expected in [
        (
            {"concept": "mrd", "columns": {"cycle": "ID"}},
            r"events\[0\]\.columns\.cycle: concept mrd has no",
        ),
        (
            {"concept": "mrd", "constants": {"when_day": "soon"}},
            r"events\[0\]\.constants\.when_day: 'soon'",
        ),
        (
            {"concept": "mrd", "constants": {"value": "weird"}},
            r"events\[0\]\.constants\.value: 'weird'",
        ),
    ]:
        with pytest.raises(ConfigError, match=expected):
            read_study(
                tmp_path / "patients.csv", _mapping({"patients": PATIENTS, "events": [spec]})
            )


# -- JSON and errors about the file itself --------------------------------------------------


def test_json_needs_no_mapping_and_rejects_bad_cases(
    tmp_path: Path, seed_cases: list[Case]
) -> None:
    (path,) = write_study(seed_cases[:2], tmp_path / "c.json", "json")
    items = orjson.loads(path.read_bytes())
    items[1]["events"][0]["when"] = {"day": 3}
    path.write_bytes(orjson.dumps(items))
    result = read_study(path)
    assert result.cases == seed_cases[:1]
    (reject,) = result.rejects
    assert (reject.source, reject.row, reject.column, reject.table) == (
        "c.json",
        2,
        "events.0.when",
        "cases",
    )
    assert "needs its anchor event" in reject.reason


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"{not json", "cannot read JSON"), (b'{"a": 1}', "expected a list of cases")],
)
def test_json_that_is_not_a_case_list(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=expected):
        read_study(path)


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    mapping = _mapping({"patients": PATIENTS})
    with pytest.raises(InputError, match="no such file"):
        read_study(tmp_path / "nope.csv", mapping)
    _csv(tmp_path, "x.csv", "ID\nA\n")
    with pytest.raises(InputError, match="a mapping file is needed"):
        read_study(tmp_path / "x.csv")
    _csv(tmp_path, "x.txt", "ID\nA\n")
    with pytest.raises(InputError, match=r"study files are \.xlsx, \.csv or \.json"):
        read_study(tmp_path / "x.txt", mapping)


def test_semicolon_csv_in_another_encoding(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "patients.csv").write_bytes("ID;Geschlecht;Alter\nA;weiblich;7,5\n".encode("cp1252"))
    (folder / "other.csv").write_bytes("ID;Geschlecht\nB;männlich\n".encode("cp1252"))
    spec = {
        "columns": {"study_id": "ID", "sex": "Geschlecht"},
        "values": {"sex": {"weiblich": "female", "männlich": "male"}},
    }
    mapping = _mapping(
        {
            "csv_delimiter": ";",
            "encoding": "cp1252",
            "patients": {
                **spec,
                "source": "patients",
                "columns": {**spec["columns"], "age_at_diagnosis": "Alter"},
            },
        }
    )
    (case,) = read_study(folder, mapping).cases
    assert (case.patient.sex, case.patient.attributes) == ("female", {"age_at_diagnosis": 7.5})
    utf8 = _mapping({"csv_delimiter": ";", "patients": {**spec, "source": "other"}})
    with pytest.raises(InputError, match="set `encoding` in the mapping"):
        read_study(folder, utf8)


def test_events_of_a_case_are_in_spec_then_row_order(seed_cases: list[Case]) -> None:
    concepts = [e.concept for e in seed_cases[0].events]
    assert concepts[:2] == ["diagnosis", "last_follow_up"]
    assert concepts.index("blinatumomab") < concepts.index("apheresis") < concepts.index("mrd")
    assert all(isinstance(e, Event) for e in seed_cases[0].events)


# -- values written as people write them read back as they were ------------------------------


def _as_written(value: Value) -> str:
    unit = f" {value.unit}" if value.unit else ""
    if value.low is not None:
        return f"{value.low!r}–{value.high!r}{unit}"
    if value.number is not None:
        return f"{value.comparator or ''}{value.number!r}{unit}"
    if value.boolean is not None:
        return "ja" if value.boolean else "nein"
    return value.code or value.text or ""


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_generated_values_written_in_a_cell_read_back(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    lib = library()
    concept = data.draw(st.sampled_from(sorted(lib.data.concepts)))
    value = data.draw(values(lib.concept(concept)))
    assume(value is not None and not (value.code and value.number is not None))
    assert value is not None
    folder = tmp_path_factory.mktemp("v")
    with (folder / "events.csv").open("w", newline="", encoding="utf-8") as handle:
        cell = safe_csv_cell(_as_written(value))  # as fhir_cart writes text starting with '
        csv.writer(handle).writerows([["ID", "C", "V"], ["A", concept, cell]])
    _csv(folder, "patients.csv", "ID\nA\n")
    spec = {"source": "events", "columns": {"study_id": "ID", "concept": "C", "value": "V"}}
    result = read_study(folder, _mapping({"patients": PATIENTS, "events": [spec]}))
    assert result.rejects == []
    assert result.cases[0].events[0].value == value


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_generated_attributes_written_in_a_cell_read_back(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    lib = library()
    concept = data.draw(st.sampled_from([k for k, c in lib.data.concepts.items() if c.attributes]))
    name = data.draw(st.sampled_from(lib.concept(concept).attributes))
    scalar = data.draw(attribute_values(lib.attribute(name)))
    cell = ("ja" if scalar else "nein") if isinstance(scalar, bool) else repr(scalar)
    cell = scalar if isinstance(scalar, str) else cell
    folder = tmp_path_factory.mktemp("a")
    with (folder / "events.csv").open("w", newline="", encoding="utf-8") as handle:
        # the cell as fhir_cart's own tables write it (a formula start escaped with ')
        csv.writer(handle).writerows([["ID", "A"], ["A", safe_csv_cell(cell)]])
    _csv(folder, "patients.csv", "ID\nA\n")
    spec = {"source": "events", "concept": concept, "columns": {"study_id": "ID", name: "A"}}
    result = read_study(folder, _mapping({"patients": PATIENTS, "events": [spec]}))
    assert result.rejects == []
    assert result.cases[0].events[0].attributes == {name: scalar}


def test_a_relative_day_without_any_anchor_is_rejected_with_the_remedy(tmp_path: Path) -> None:
    """No study-specific default anchor: a day that counts from nothing is a reject that says
    how to fix it, not a day silently counted from a CAR-T infusion."""
    (tmp_path / "p.csv").write_text("id,fu\nA,30\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "centre: x\npatients: {columns: {study_id: id}}\n"
        "events:\n  - {concept: last_follow_up, columns: {when_day: fu}}\n"
    )
    result = read_study(tmp_path / "p.csv", load_study_mapping(mapping))
    (reject,) = result.rejects
    assert (reject.column, reject.value) == ("fu", "30")
    assert "set `anchor` in the mapping" in reject.reason
    mapping.write_text(mapping.read_text().replace("centre: x", "centre: x\nanchor: hsct"))
    (case,) = read_study(tmp_path / "p.csv", load_study_mapping(mapping)).cases
    (event,) = case.events
    assert event.when is not None
    assert (event.when.day, event.when.anchor) == (30, "hsct")


def test_impossible_times_are_rejected_with_the_reason(tmp_path: Path) -> None:
    """Issue 11 (low): a future date, a date before birth, an end before its start and a last
    follow-up before day 0 passed silently; each now rejects its event with the reason."""
    (tmp_path / "p.csv").write_text(
        "id,dob,start,end,fu\n"
        "A,2010-01-01,2999-01-01,,10\n"
        "B,2010-01-01,2009-12-31,,10\n"
        "C,2010-01-01,2020-05-10,2020-05-01,10\n"
        "D,2010-01-01,2020-05-10,2020-05-12,-3\n"
    )
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "centre: x\nanchor: cart_infusion\n"
        "patients: {columns: {study_id: id, birth_date: dob}}\n"
        "events:\n"
        "  - {concept: blinatumomab, columns: {when_date: start, end_date: end}}\n"
        "  - {concept: last_follow_up, columns: {when_day: fu}}\n"
    )
    result = read_study(tmp_path / "p.csv", load_study_mapping(mapping))
    reasons = {(r.row, r.column): r.reason for r in result.rejects}
    assert reasons == {
        (2, "start"): "date 2999-01-01 is in the future",
        (3, "start"): "date 2009-12-31 is before the birth date 2010-01-01",
        (4, "end"): "ends (2020-05-01) before it starts (2020-05-10)",
        (5, "fu"): "last follow-up on day -3, before day 0 of cart_infusion",
    }
    kept = {c.patient.study_id: [e.concept for e in c.events] for c in result.cases}
    assert kept == {
        "A": ["last_follow_up"],
        "B": ["last_follow_up"],
        "C": ["last_follow_up"],
        "D": ["blinatumomab"],
    }


def test_a_formula_without_a_saved_result_is_rejected_not_read_as_blank(tmp_path: Path) -> None:
    """Issue 11 (low): openpyxl writes formulas without their results, as many programs do;
    such a cell read as blank and the dose was silently lost. Now the row is rejected."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["id", "dose", "start"])
    sheet.append(["A", "=10*15", "2020-05-01"])
    sheet.append(["B", 150, "2020-05-02"])
    book.save(tmp_path / "s.xlsx")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "centre: x\npatients: {columns: {study_id: id}}\n"
        "events:\n  - {concept: fludarabine, columns: {value: dose, when_date: start},"
        " units: {value: mg}}\n"
    )
    result = read_study(tmp_path / "s.xlsx", load_study_mapping(mapping))
    (reject,) = result.rejects
    assert (reject.row, reject.column, reject.value) == (2, "dose", "=10*15")
    assert "formula whose result was never saved" in reject.reason
    by_id = {c.patient.study_id: c for c in result.cases}
    assert by_id["A"].events == ()
    (given,) = by_id["B"].events
    assert given.value is not None
    assert given.value.number == 150


def test_an_infinite_dose_is_rejected_not_written_as_null(tmp_path: Path) -> None:
    """Issue 11 (low): '1e309' and 'inf' became "value": null on the wire."""
    (tmp_path / "s.csv").write_text("id,dose,start\nA,1e309,2020-05-01\nB,inf,2020-05-01\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "centre: x\npatients: {columns: {study_id: id}}\n"
        "events:\n  - {concept: fludarabine, columns: {value: dose, when_date: start},"
        " units: {value: mg}}\n"
    )
    result = read_study(tmp_path / "s.csv", load_study_mapping(mapping))
    assert [(r.row, r.column, r.value) for r in result.rejects] == [
        (2, "dose", "1e309"),
        (3, "dose", "inf"),
    ]
    assert all(c.events == () for c in result.cases)


def test_the_old_readers_module_still_gives_every_public_name_of_the_reader() -> None:
    """``fhir_cart.readers`` was the documented entry point before the reader became the
    ``fhir_cart.study`` package (issue 21): code written against it keeps working."""
    import fhir_cart.library.study_mapping as mapping
    import fhir_cart.readers as old
    import fhir_cart.study as study

    assert set(old.__all__) == {*study.__all__, "default_library"}
    for name in old.__all__:
        source = study if name in study.__all__ else mapping
        assert getattr(old, name) is getattr(source, name), name
