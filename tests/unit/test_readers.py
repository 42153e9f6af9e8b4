"""Reading study files: values, times, event ids, rejects with file/row/column/value/reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from openpyxl import Workbook

from fhir_cart.errors import InputError, Reject
from fhir_cart.readers import ReadResult, parse_mrd_result, read_study
from fhir_cart.records import Case
from fhir_cart.study_mapping import StudyMapping, load_study_mapping
from fhir_cart.writers import write_study
from tests.conftest import CENTRE_B_MAPPING, FIXTURES, MAPPINGS


def _mapping(data: dict[str, Any]) -> StudyMapping:
    return StudyMapping.model_validate({"centre": "test", **data})


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
    return {(r.source, r.row, r.column, r.value): r.reason for r in result.rejects}


PATIENTS_ONLY = {"tables": {"patients": {"source": "patients", "columns": {"study_id": "ID"}}}}
MRD_TABLE = {
    "source": "mrd",
    "columns": {"study_id": "ID", "timepoint": "TP", "when_day": "Day", "result": "MRD"},
    "values": {"result": {"neg": "negative", "low pos": "positive_below_quantification"}},
    "constants": {"method": "pcr"},
}


# -- MRD strings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("<0.01%", "percent", {"value": 0.01, "unit": "%", "comparator": "<"}),
        ("0.005 %", "fraction", {"value": 0.005, "unit": "%"}),
        ("1e-4", "fraction", {"value": 1e-4, "unit": "1"}),
        ("1E-4", "percent", {"value": 1e-4, "unit": "%"}),
        ("< 1e-4", "fraction", {"value": 1e-4, "unit": "1", "comparator": "<"}),
        ("<= 0,5", "percent", {"value": 0.5, "unit": "%", "comparator": "<="}),
        (">5%", "fraction", {"value": 5.0, "unit": "%", "comparator": ">"}),
        (0.3, "percent", {"value": 0.3, "unit": "%"}),
        (0.0001, "fraction", {"value": 0.0001, "unit": "1"}),
        ("0", "percent", {"value": 0.0, "unit": "%"}),
    ],
)
def test_mrd_strings_become_value_unit_comparator(
    text: object, unit: str, expected: dict[str, object]
) -> None:
    assert parse_mrd_result(text, unit) == expected


@pytest.mark.parametrize("text", ["abc", "0.1 % %", "1/1000", "", "-0.1%", "neg", True])
def test_mrd_strings_that_are_not_results(text: object) -> None:
    with pytest.raises(ValueError, match="expected an MRD result"):
        parse_mrd_result(text, "percent")


def test_mrd_words_numbers_and_percent_over_100(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID\nA\n")
    _csv(
        folder,
        "mrd.csv",
        "ID,TP,Day,MRD\nA,infusion,0,Low  POS\nA,day_28,28,<0.01%\nA,day_90,90,1e-4\n"
        "A,follow_up,200,101%\nA,relapse,300,positive\n",
    )
    mapping = _mapping(
        {"mrd_unit": "fraction", "tables": {**PATIENTS_ONLY["tables"], "mrd": MRD_TABLE}}
    )
    result = read_study(folder, mapping)
    (case,) = result.cases
    got = [(m.qualitative, m.value, m.unit, m.comparator) for m in case.mrd]
    assert got == [
        ("positive_below_quantification", None, None, None),
        (None, 0.01, "%", "<"),
        (None, 1e-4, "1", None),
        ("positive", None, None, None),
    ]
    assert result.rejects == [
        Reject("mrd.csv", 5, "MRD", "101%", "a percentage cannot exceed 100", "mrd")
    ]


# -- the fixtures ---------------------------------------------------------------------------


def test_seed_relative_days_also_get_dates(seed_cases: list[Case]) -> None:
    p01 = next(c for c in seed_cases if c.patient.study_id == "P01")
    infusion = next(p for p in p01.procedures if p.kind == "cart_infusion")
    assert (infusion.when.day, infusion.when.anchor) == (0, "cart_infusion")
    assert infusion.when.date == dt.date(2019, 5, 6)
    day28 = next(m for m in p01.mrd if m.timepoint == "day_28")
    assert (day28.when.day, day28.when.date) == (28, dt.date(2019, 6, 3))
    assert (day28.qualitative, day28.method, day28.specimen) == ("negative", "pcr", "bone_marrow")
    assert p01.patient.last_follow_up is not None
    assert p01.patient.last_follow_up.date == dt.date(2019, 5, 6) + dt.timedelta(days=497)


def test_centre_b_reads_percentages_and_dates(centre_b_cases: list[Case]) -> None:
    assert len(centre_b_cases) == 4
    b101 = next(c for c in centre_b_cases if c.patient.study_id == "B-101")
    assert (b101.patient.centre, b101.patient.sex) == ("centre-b", "female")
    assert b101.patient.birth_date == dt.date(2012, 4, 3)
    infusion = next(m for m in b101.mrd if m.timepoint == "infusion")
    assert (infusion.value, infusion.unit, infusion.comparator) == (0.01, "%", "<")
    assert (infusion.method, infusion.when.date, infusion.when.day) == (
        "flow",
        dt.date(2021, 5, 17),
        None,
    )
    cart = next(p for p in b101.procedures if p.kind == "cart_infusion")
    assert (cart.cell_dose, cart.cell_dose_unit, cart.product) == (
        2.1,
        "10*6/kg",
        "tisagenlecleucel",
    )
    b102 = next(c for c in centre_b_cases if c.patient.study_id == "B-102")
    assert b102.drugs == ()  # empty event group: no event
    relapse = next(s for s in b102.statuses if s.status == "relapse")
    assert (relapse.cd19, relapse.when.date) == ("negative", dt.date(2022, 2, 11))
    day28 = next(m for m in b102.mrd if m.timepoint == "day_28")
    assert (day28.value, day28.unit, day28.comparator) == (0.008, "%", None)
    assert b102.patient.death is not None
    assert b102.patient.death.date == dt.date(2022, 6, 28)


def test_bad_tables_are_reported_with_where_and_why() -> None:
    mapping = load_study_mapping(MAPPINGS / "centres" / "bad.yaml")
    result = read_study(FIXTURES / "bad" / "tables", mapping)
    got = _reasons(result)
    assert got[("patients.csv", 3, "birth_date", "2011-13-45")] == (
        "not a date; expected one written as %Y-%m-%d"
    )
    assert got[("patients.csv", 5, "study_id", "X3")] == "duplicate patient id (row 4 is kept)"
    assert got[("mrd.csv", 2, "result", "abc")].startswith("expected an MRD result")
    assert got[("mrd.csv", 3, "result", "120%")] == "a percentage cannot exceed 100"
    assert got[("mrd.csv", 5, "study_id", "X9")] == "no patient with this id in the patient table"
    assert got[("mrd.csv", 6, "study_id", "X2")] == "the patient's own row was rejected"
    assert len(result.rejects) == 6
    assert {r.table for r in result.rejects} == {"patients", "mrd"}
    # nothing disappears: every row is either read or rejected
    assert len(result.cases) + sum(r.table == "patients" for r in result.rejects) == 4
    assert (
        sum(len(c.mrd) for c in result.cases) + sum(r.table == "mrd" for r in result.rejects) == 5
    )


def test_bad_wide_sheet_rejects_events_not_patients() -> None:
    result = read_study(FIXTURES / "bad" / "centre_b_bad.csv", load_study_mapping(CENTRE_B_MAPPING))
    got = _reasons(result)
    source = "centre_b_bad.csv"
    assert got[(source, 2, "Gender", "x")] == (
        "unknown word; expected one of w, m, female, male, other, unknown"
    )
    assert got[(source, 3, "MRD infusion (%)", "abc")].startswith("expected an MRD result")
    assert got[(source, 3, "MRD d28 (%)", "150%")] == "a percentage cannot exceed 100"
    assert got[(source, 4, "CAR-T date", "31.02.2021")] == (
        "not a date; expected one written as %d.%m.%Y"
    )
    patient_rejects = [(r.row, r.column, r.value, r.reason) for r in result.rejects
                       if r.table == "patients"]  # fmt: skip
    assert patient_rejects == [
        (2, "Gender", "x", "unknown word; expected one of w, m, female, male, other, unknown"),
        (5, "Patient", "B-202", "duplicate patient id (row 3 is kept)"),
    ]
    # the events on a rejected patient's row are reported, one line each, not attached elsewhere
    own_row = [r for r in result.rejects if r.reason == "the patient's own row was rejected"]
    assert {r.row for r in own_row} == {2, 5}
    assert {r.table for r in own_row} == {"procedures", "mrd", "statuses"}
    by_id = {c.patient.study_id: c for c in result.cases}
    assert sorted(by_id) == ["B-202", "B-203"]
    assert by_id["B-202"].mrd == ()  # both MRD values of row 3 were bad
    assert [p.kind for p in by_id["B-202"].procedures] == ["apheresis", "cart_infusion"]
    assert [p.kind for p in by_id["B-203"].procedures] == ["apheresis"]  # bad CAR-T date


# -- times ----------------------------------------------------------------------------------


def _timed_study(tmp_path: Path, status_rows: str) -> ReadResult:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Infusion,FU\nA,2020-01-10,100\n")
    _csv(folder, "statuses.csv", "ID,Day,Date,Status,Anchor\n" + status_rows)
    mapping = _mapping(
        {
            "tables": {
                "patients": {
                    "source": "patients.csv",
                    "columns": {"study_id": "ID", "anchor_date": "Infusion",
                                "last_follow_up_day": "FU"},
                },
                "statuses": {
                    "source": "statuses.csv",
                    "columns": {"study_id": "ID", "when_day": "Day", "when_date": "Date",
                                "status": "Status", "when_anchor": "Anchor"},
                },
            }
        }
    )  # fmt: skip
    return read_study(folder, mapping)


def test_relative_days_get_dates_from_the_anchor_date(tmp_path: Path) -> None:
    result = _timed_study(
        tmp_path,
        "A,28,,complete_remission,\nA,,2020-05-01,relapse,\nA,5,,relapse,hsct\n"
        "A,0,2020-01-10,complete_remission,\n",
    )
    assert result.rejects == []
    (case,) = result.cases
    assert case.patient.last_follow_up is not None
    assert case.patient.last_follow_up.date == dt.date(2020, 4, 19)
    whens = [(s.when.date, s.when.day, s.when.anchor) for s in case.statuses]
    assert whens == [
        (dt.date(2020, 2, 7), 28, "cart_infusion"),
        (dt.date(2020, 5, 1), None, None),  # a date alone stays a date alone
        (None, 5, "hsct"),  # another anchor: its date is not known
        (dt.date(2020, 1, 10), 0, "cart_infusion"),
    ]


def test_a_date_that_disagrees_with_its_day_is_rejected(tmp_path: Path) -> None:
    result = _timed_study(tmp_path, "A,28,2020-02-08,complete_remission,\n")
    assert result.rejects == [
        Reject(
            "statuses.csv", 2, "Date", "2020-02-08",
            "date 2020-02-08 is day 29 after the cart_infusion date 2020-01-10, "
            "but the row gives day 28",
            "statuses",
        )
    ]  # fmt: skip


def test_several_date_formats_and_excel_dates(tmp_path: Path) -> None:
    book = _xlsx(
        tmp_path / "s.xlsx",
        {"P": [["ID", "DOB"], ["A", dt.datetime(2010, 3, 4)], ["B", "05.06.2011"],
               ["C", "2012-07-08"], ["D", "8/7/2012"]]},
    )  # fmt: skip
    mapping = _mapping(
        {
            "date_formats": ["%d.%m.%Y", "%Y-%m-%d"],
            "tables": {"patients": {"columns": {"study_id": "ID", "birth_date": "DOB"}}},
        }
    )
    result = read_study(book, mapping)
    assert [c.patient.birth_date for c in result.cases] == [
        dt.date(2010, 3, 4),
        dt.date(2011, 6, 5),
        dt.date(2012, 7, 8),
    ]
    assert result.rejects == [
        Reject("s.xlsx", 5, "DOB", "8/7/2012",
               "not a date; expected one written as %d.%m.%Y or %Y-%m-%d", "P")
    ]  # fmt: skip


# -- event ids ------------------------------------------------------------------------------


def _drug_study(tmp_path: Path, rows: str, with_ids: bool = False) -> ReadResult:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID\nA\n")
    header = "ID,Drug,Cycle,Start,EID\n" if with_ids else "ID,Drug,Cycle,Start\n"
    _csv(folder, "drugs.csv", header + rows)
    columns = {"study_id": "ID", "agent": "Drug", "cycle": "Cycle", "start_day": "Start"}
    if with_ids:
        columns["event_id"] = "EID"
    mapping = _mapping(
        {"tables": {**PATIENTS_ONLY["tables"], "drugs": {"source": "drugs", "columns": columns}}}
    )
    return read_study(folder, mapping)


def test_event_ids_come_from_the_natural_key(tmp_path: Path) -> None:
    rows = "A,blinatumomab,1,-60\nA,blinatumomab,2,-20\nA,fludarabine,,-6\nA,fludarabine,,-5\n"
    result = _drug_study(tmp_path, rows)
    ids = [d.event_id for d in result.cases[0].drugs]
    assert ids == ["blinatumomab-c1", "blinatumomab-c2", "fludarabine", "fludarabine-2"]
    again = _drug_study(tmp_path / "again", rows)
    assert [d.event_id for d in again.cases[0].drugs] == ids


def test_ids_in_the_file_are_kept_and_never_reused(tmp_path: Path) -> None:
    rows = "A,fludarabine,,-6,\nA,fludarabine,,-5,fludarabine\nA,cyclophosphamide,,-6,x1\n"
    rows += "A,cyclophosphamide,,-5,x1\n"
    result = _drug_study(tmp_path, rows, with_ids=True)
    ids = [d.event_id for d in result.cases[0].drugs]
    assert ids == ["fludarabine-2", "fludarabine", "x1"]
    assert result.rejects == [
        Reject("drugs.csv", 5, "EID", "x1", "event id already used in row 4", "drugs")
    ]


def test_event_ids_of_every_kind(seed_cases: list[Case]) -> None:
    p05 = next(c for c in seed_cases if c.patient.study_id == "P05")
    assert [p.event_id for p in p05.procedures] == ["apheresis-1", "cart_infusion-1", "hsct-1"]
    assert "mrd-day_28-pcr" in [m.event_id for m in p05.mrd]
    assert "status-relapse-150" in [s.event_id for s in p05.statuses]
    assert [d.event_id for d in p05.drugs if d.agent == "chemotherapy_block_hib"] == [
        "chemotherapy_block_hib-c1",
        "chemotherapy_block_hib-c2",
    ]
    p04 = next(c for c in seed_cases if c.patient.study_id == "P04")
    assert [a.event_id for a in p04.adverse_events] == ["crs-1", "icans-1"]


# -- rows, cells, words, defaults -----------------------------------------------------------


def test_blank_rows_skipped_blank_cells_none_and_defaults(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Sex,Note\nA,F,SYNTHETIC\n,,\n\nB,,\n")
    _csv(folder, "mrd.csv", "ID,TP,Day,MRD,Method\nA,infusion,0,neg,\n,,,,\nB,day_28,28,neg,flow\n")
    mrd = {**MRD_TABLE, "columns": {**MRD_TABLE["columns"], "method": "Method"}}  # type: ignore[dict-item]
    mapping = _mapping(
        {
            "tables": {
                "patients": {"source": "patients.csv",
                             "columns": {"study_id": "ID", "sex": "Sex"},
                             "values": {"sex": {"F": "female"}}},
                "mrd": mrd,
            }
        }
    )  # fmt: skip
    result = read_study(folder, mapping)
    assert result.rejects == []
    a, b = result.cases
    assert (a.patient.sex, b.patient.sex) == ("female", None)
    assert (a.mrd[0].method, b.mrd[0].method) == ("pcr", "flow")  # a cell wins over a default
    assert a.mrd[0].specimen == "bone_marrow"


def test_units_fill_in_for_numbers_without_a_unit_column(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID\nA\n")
    _csv(folder, "drugs.csv", "ID,Start,Dose\nA,-20,15\nA,-10,\n")
    mapping = _mapping(
        {
            "tables": {
                **PATIENTS_ONLY["tables"],
                "drugs": {"source": "drugs", "columns": {"study_id": "ID", "start_day": "Start",
                                                         "dose": "Dose"},
                          "constants": {"agent": "blinatumomab"}, "units": {"dose": "ug/m2/d"}},
            }
        }
    )  # fmt: skip
    result = read_study(folder, mapping)
    assert result.rejects == []
    drugs = result.cases[0].drugs
    assert [(d.dose, d.dose_unit) for d in drugs] == [(15.0, "ug/m2/d"), (None, None)]
    assert [d.event_id for d in drugs] == ["blinatumomab", "blinatumomab-2"]


def test_canonical_words_are_matched_ignoring_case(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Sex,State\nA,Female,Relapsed\nB,f,refractory\n")
    mapping = _mapping(
        {"tables": {"patients": {"source": "patients",
                                 "columns": {"study_id": "ID", "sex": "Sex",
                                             "disease_state": "State"}}}}
    )  # fmt: skip
    result = read_study(folder, mapping)
    assert [(c.patient.sex, c.patient.disease_state) for c in result.cases] == [
        ("female", "relapsed")
    ]
    assert result.rejects == [
        Reject("patients.csv", 3, "Sex", "f",
               "unknown word; expected one of female, male, other, unknown", "patients")
    ]  # fmt: skip


def test_a_bad_number_rejects_the_event_only(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Age\nA,7.5\nB,seven\n")
    _csv(folder, "adverse_events.csv", "ID,Kind,Grade,Day\nA,crs,2,3\nA,icans,6,5\nA,crs,two,9\n")
    mapping = _mapping(
        {
            "tables": {
                "patients": {"source": "patients", "columns": {"study_id": "ID",
                                                               "age_at_diagnosis": "Age"}},
                "adverse_events": {"source": "adverse_events",
                                   "columns": {"study_id": "ID", "kind": "Kind",
                                               "grade": "Grade", "when_day": "Day"}},
            }
        }
    )  # fmt: skip
    result = read_study(folder, mapping)
    assert [c.patient.study_id for c in result.cases] == ["A"]
    assert [(a.kind, a.grade) for a in result.cases[0].adverse_events] == [("crs", 2)]
    got = _reasons(result)
    assert got[("patients.csv", 3, "Age", "seven")] == "expected a number"
    assert got[("adverse_events.csv", 3, "Grade", "6")] == (
        "grade: Input should be less than or equal to 5"
    )
    assert got[("adverse_events.csv", 4, "Grade", "two")] == "expected a number"


# -- where rows come from -------------------------------------------------------------------


def test_xlsx_rejects_name_the_sheet_and_numbers_read_as_ids(tmp_path: Path) -> None:
    book = _xlsx(
        tmp_path / "study.xlsx",
        {
            "Patients": [["UPN", "Sex"], [17, "F"], [23.0, "M"]],
            "MRD": [
                ["UPN", "TP", "Day", "MRD"],
                [17, "infusion", 0, "neg"],
                [99, "day_28", 28, "neg"],
            ],
        },
    )
    mapping = _mapping(
        {
            "tables": {
                "patients": {"source": "Patients", "columns": {"study_id": "UPN", "sex": "Sex"},
                             "values": {"sex": {"F": "female", "M": "male"}}},
                "mrd": {**MRD_TABLE, "source": "MRD",
                        "columns": {**MRD_TABLE["columns"], "study_id": "UPN"}},  # type: ignore[dict-item]
            }
        }
    )  # fmt: skip
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
    mapping = _mapping(
        {"header_row": 3, "tables": {"patients": {"columns": {"study_id": "ID", "sex": "Sex"}}}}
    )
    result = read_study(book, mapping)
    assert [c.patient.study_id for c in result.cases] == ["A"]
    assert [(r.row, r.table) for r in result.rejects] == [(5, "Cohort")]


def test_a_column_missing_from_the_header_stops_the_read(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Gender,Birth date\nA,F,2010-01-01\n")
    mapping = _mapping(
        {"tables": {"patients": {"source": "patients.csv",
                                 "columns": {"study_id": "ID", "sex": "Sex",
                                             "birth_date": "Birthdate"}}}}
    )  # fmt: skip
    with pytest.raises(InputError, match="does not fit") as caught:
        read_study(folder, mapping)
    assert [(r.source, r.row, r.column) for r in caught.value.rejects] == [
        ("patients.csv", 1, "Sex"),
        ("patients.csv", 1, "Birthdate"),
    ]
    assert "not in the header" in caught.value.rejects[0].reason
    assert "did you mean 'Birth date'" in caught.value.rejects[1].reason


def test_a_column_given_twice_stops_the_read(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _csv(folder, "patients.csv", "ID,Sex,Sex\nA,F,M\n")
    mapping = _mapping(
        {
            "tables": {
                "patients": {"source": "patients", "columns": {"study_id": "ID", "sex": "Sex"}}
            }
        }
    )
    with pytest.raises(InputError) as caught:
        read_study(folder, mapping)
    assert caught.value.rejects[0].reason == "column for sex appears 2 times in the header"


def test_missing_sheet_or_file_stops_the_read(tmp_path: Path) -> None:
    book = _xlsx(tmp_path / "s.xlsx", {"Pts": [["ID"], ["A"]]})
    mapping = _mapping(
        {"tables": {"patients": {"source": "Patients", "columns": {"study_id": "ID"}}}}
    )
    with pytest.raises(InputError, match=r"no sheet 'Patients' \(sheets: Pts\)"):
        read_study(book, mapping)
    with pytest.raises(InputError, match="file named in the mapping is missing"):
        read_study(tmp_path, mapping)


def test_one_csv_with_a_tables_layout_reads_its_neighbours(tmp_path: Path) -> None:
    _csv(tmp_path, "patients.csv", "ID\nA\n")
    _csv(tmp_path, "mrd.csv", "ID,TP,Day,MRD\nA,day_28,28,neg\n")
    mapping = _mapping({"tables": {**PATIENTS_ONLY["tables"], "mrd": MRD_TABLE}})
    result = read_study(tmp_path / "patients.csv", mapping)
    assert [m.event_id for m in result.cases[0].mrd] == ["mrd-day_28-pcr"]


def test_wide_layout_in_a_folder_and_in_a_workbook(tmp_path: Path) -> None:
    mapping = _mapping(
        {
            "layout": "wide",
            "source": "cohort",
            "patient": {"columns": {"study_id": "ID", "anchor_date": "Infusion"}},
            "events": {
                "mrd": [
                    {"columns": {"result": "MRD d28 (%)"},
                     "constants": {"timepoint": "day_28", "method": "flow", "when_day": 28}},
                ]
            },
        }
    )  # fmt: skip
    _csv(tmp_path / "folder", "cohort.csv", "ID,Infusion,MRD d28 (%)\nA,2021-01-01,0.3\nB,,\n")
    rows = [["ID", "Infusion", "MRD d28 (%)"], ["A", dt.datetime(2021, 1, 1), 0.3], ["B"]]
    _xlsx(tmp_path / "cohort.xlsx", {"cohort": rows})
    for path in (tmp_path / "folder", tmp_path / "cohort.xlsx"):
        result = read_study(path, mapping)
        assert result.rejects == []
        a, b = result.cases
        (mrd,) = a.mrd
        assert (mrd.value, mrd.unit, mrd.when.day, mrd.when.date) == (
            0.3, "%", 28, dt.date(2021, 1, 29),
        )  # fmt: skip
        assert b.mrd == ()


# -- JSON and errors about the file itself --------------------------------------------------


def test_json_needs_no_mapping_and_rejects_bad_cases(
    tmp_path: Path, seed_cases: list[Case]
) -> None:
    (path,) = write_study(seed_cases[:2], tmp_path / "c.json", "json")
    items = orjson.loads(path.read_bytes())
    items[1]["mrd"][0]["value"] = -1
    items[1]["mrd"][0]["unit"] = "%"
    path.write_bytes(orjson.dumps(items))
    result = read_study(path)
    assert result.cases == seed_cases[:1]
    (reject,) = result.rejects
    assert (reject.source, reject.row, reject.column, reject.table) == (
        "c.json",
        2,
        "mrd.0.value",
        "cases",
    )
    assert "greater than or equal to 0" in reject.reason


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
    mapping = _mapping(PATIENTS_ONLY)
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
    spec = {"columns": {"study_id": "ID", "sex": "Geschlecht"},
            "values": {"sex": {"weiblich": "female", "männlich": "male"}}}  # fmt: skip
    mapping = _mapping(
        {
            "csv_delimiter": ";",
            "encoding": "cp1252",
            "tables": {"patients": {**spec, "source": "patients",
                                    "columns": {**spec["columns"], "age_at_diagnosis": "Alter"}}},
        }
    )  # fmt: skip
    (case,) = read_study(folder, mapping).cases
    assert (case.patient.sex, case.patient.age_at_diagnosis) == ("female", 7.5)
    utf8 = _mapping({"csv_delimiter": ";", "tables": {"patients": {**spec, "source": "other"}}})
    with pytest.raises(InputError, match="set `encoding` in the mapping"):
        read_study(folder, utf8)
