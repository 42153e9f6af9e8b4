"""Dates at the precision the source gives (issue 17, item 2): a year or a month is kept as
such in the record, the FHIR written back, the tables and the summary's arithmetic, and
never drops a patient or an event."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from fhir.resources.R4B import get_fhir_model_class
from openpyxl import load_workbook

from fhir_cart.library.studies import parse_study
from fhir_cart.library.study_mapping import StudyMapping
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import ReverseResult, cases_from_fhir
from fhir_cart.mappers.to_fhir import case_to_fhir, event_order
from fhir_cart.records import (
    Case,
    Event,
    PatientRecord,
    Value,
    When,
    date_span,
    parse_partial_date,
)
from fhir_cart.report.evaluate import MeasureResult, TimeResolver, summarise
from fhir_cart.study import ReadResult, read_study
from fhir_cart.writers import canonical_mapping, write_study
from tests.fhir_schema import SchemaChecker
from tests.support import ROOT

Json = dict[str, Any]
FIXTURE = ROOT / "fixtures" / "ehr" / "partial_dates.json"


@pytest.fixture(scope="module")
def schema(fhir_schema_path: Path) -> SchemaChecker:
    return SchemaChecker(fhir_schema_path)


def _load(path: Path) -> Json:
    data: Json = json.loads(path.read_text(encoding="utf-8"))
    return data


# -- the record -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "date", "precision"),
    [
        ("2012", dt.date(2012, 1, 1), "year"),
        ("2012-05", dt.date(2012, 5, 1), "month"),
        ("2012-05-17", dt.date(2012, 5, 17), "day"),
        ("2012-05-17T23:30:00-05:00", dt.date(2012, 5, 17), "day"),
    ],
)
def test_partial_dates_parse_at_their_precision(text: str, date: dt.date, precision: str) -> None:
    assert parse_partial_date(text) == (date, precision)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2019-13", "month 13"),
        ("2019-00", "month 0"),
        ("2019-02-30", "day 30 does not exist in February 2019"),
        ("2019-5", "not a date"),
        ("19", "not a date"),
        ("20.12.2019", "not a date"),
        ("2019-05-03x", "not a date"),
        ("2019-00-01", "month 0"),
    ],
)
def test_impossible_dates_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_partial_date(text)


@pytest.mark.parametrize(
    ("date", "precision", "span"),
    [
        (dt.date(2012, 1, 1), "year", (dt.date(2012, 1, 1), dt.date(2012, 12, 31))),
        (dt.date(2024, 2, 1), "month", (dt.date(2024, 2, 1), dt.date(2024, 2, 29))),
        (dt.date(2023, 12, 1), "month", (dt.date(2023, 12, 1), dt.date(2023, 12, 31))),
        (dt.date(2023, 12, 5), "day", (dt.date(2023, 12, 5), dt.date(2023, 12, 5))),
    ],
)
def test_a_partial_date_spans_its_year_or_month(
    date: dt.date, precision: Any, span: tuple[dt.date, dt.date]
) -> None:
    assert date_span(date, precision) == span
    assert When(date=date, precision=precision).span == span


def test_a_partial_date_is_the_first_day_of_its_period() -> None:
    with pytest.raises(ValueError, match="first day of its month"):
        When(date=dt.date(2019, 5, 3), precision="month")
    with pytest.raises(ValueError, match="first day of its year"):
        PatientRecord(
            study_id="a", centre="c", birth_date=dt.date(2012, 5, 1), birth_precision="year"
        )


def test_records_dump_partial_dates_as_written_and_day_dates_as_before() -> None:
    month = When(date=dt.date(2019, 5, 1), precision="month")
    assert month.model_dump(mode="json", exclude_none=True) == {
        "date": "2019-05",
        "precision": "month",
    }
    assert When.model_validate({"date": "2019-05"}) == month
    assert When.model_validate_json(month.model_dump_json()) == month
    with pytest.raises(ValueError, match="of month precision, not year"):
        When.model_validate({"date": "2019-05", "precision": "year"})
    day = When(date=dt.date(2019, 5, 1))
    assert day.model_dump(mode="json", exclude_none=True) == {"date": "2019-05-01"}
    assert When.model_validate({"date": "2019-05-01"}) == day
    born = PatientRecord(study_id="a", centre="c", birth_date="2012")  # type: ignore[arg-type]
    assert born.birth_precision == "year"
    assert born.model_dump(mode="json")["birth_date"] == "2012"
    assert "birth_precision" not in born.model_copy(update={"birth_precision": "day"}).model_dump()
    assert PatientRecord.model_validate(born.model_dump(mode="json")) == born


# -- pulled resources: fixtures/ehr/partial_dates.json ---------------------------------------


def _pulled(ctx: MappingContext) -> tuple[Json, ReverseResult]:
    data = _load(FIXTURE)
    return data, cases_from_fhir(ctx, data["resources"])


def test_fixture_has_one_expectation_per_resource() -> None:
    data = _load(FIXTURE)
    keys = [f"{r['resourceType']}/{r['id']}" for r in data["resources"]]
    assert len(keys) == len(set(keys)) >= 15
    assert set(keys) == set(data["expect"])


def test_no_patient_or_event_is_lost_to_a_partial_date(ctx: MappingContext) -> None:
    _, result = _pulled(ctx)
    assert sorted(c.patient.study_id for c in result.cases) == ["pd-p1", "pd-p2", "pd-p4"]
    assert not any("partial" in o["reason"] for o in result.other)
    by_id = {c.patient.study_id: c for c in result.cases}
    onset = next(e for e in by_id["pd-p1"].events if e.concept == "diagnosis")
    assert onset.when == When(date=dt.date(2019, 5, 1), precision="month")
    assert by_id["pd-p1"].patient.birth_precision == "year"
    assert by_id["pd-p2"].patient.birth_date == dt.date(2010, 7, 1)


# -- written back: FHIR and the tables ---------------------------------------------------------


def _partial_case() -> Case:
    return Case(
        patient=PatientRecord(
            study_id="P1",
            centre="ehr",
            sex="female",
            birth_date=dt.date(2012, 1, 1),
            birth_precision="year",
        ),
        events=(
            Event(
                event_id="dx",
                concept="diagnosis",
                value=Value(code="b_all"),
                when=When(date=dt.date(2019, 5, 1), precision="month"),
            ),
            Event(
                event_id="blin1",
                concept="blinatumomab",
                when=When(date=dt.date(2019, 9, 1), precision="month"),
                end=When(date=dt.date(2019, 10, 12)),
            ),
            Event(
                event_id="cart",
                concept="cart_infusion",
                when=When(date=dt.date(2020, 1, 1), precision="year"),
            ),
            Event(
                event_id="fu",
                concept="last_follow_up",
                when=When(date=dt.date(2021, 6, 1), precision="month"),
            ),
        ),
    )


def test_fhir_output_keeps_the_precision_and_round_trips(
    ctx: MappingContext, schema: SchemaChecker
) -> None:
    case = _partial_case()
    resources = case_to_fhir(ctx, case)
    by_type = {r["resourceType"]: r for r in resources}
    assert by_type["Patient"]["birthDate"] == "2012"
    assert by_type["Condition"]["onsetDateTime"] == "2019-05"
    assert by_type["MedicationAdministration"]["effectivePeriod"] == {
        "start": "2019-09",
        "end": "2019-10-12",
    }
    assert by_type["Procedure"]["performedDateTime"] == "2020"
    follow_up = [e for e in by_type["Patient"]["extension"] if "follow-up" in e["url"]]
    assert {"url": "date", "valueDate": "2021-06"} in follow_up[0]["extension"]
    for resource in resources:
        assert schema.errors(resource) == []
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    (back,) = cases_from_fhir(ctx, resources).cases
    assert back == case.model_copy(update={"events": tuple(sorted(case.events, key=event_order))})


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "json"])
def test_tables_write_a_year_or_month_as_written_and_read_it_back(tmp_path: Path, fmt: str) -> None:
    case = _partial_case()
    written = write_study([case], tmp_path / "out", fmt)  # type: ignore[arg-type]
    if fmt == "csv":
        with (tmp_path / "out" / "patients.csv").open(newline="") as handle:
            assert next(csv.DictReader(handle))["birth_date"] == "2012"
        with (tmp_path / "out" / "events.csv").open(newline="") as handle:
            dates = {r["event_id"]: (r["when_date"], r["end_date"]) for r in csv.DictReader(handle)}
        assert dates == {
            "dx": ("2019-05", ""),
            "blin1": ("2019-09", "2019-10-12"),
            "cart": ("2020", ""),
            "fu": ("2021-06", ""),
        }
    elif fmt == "xlsx":
        sheet = load_workbook(written[0], read_only=True)["patients"]
        rows = list(sheet.iter_rows(values_only=True))
        assert rows[1][rows[0].index("birth_date")] == "2012"  # text, not 2012-01-01
    path = tmp_path / "out" if fmt == "csv" else written[0]
    result = read_study(path, canonical_mapping("canonical") if fmt != "json" else None)
    assert result.rejects == []
    assert result.cases == [case]


def test_parquet_writes_a_date_column_with_a_partial_date_as_text(tmp_path: Path) -> None:
    write_study([_partial_case()], tmp_path, "parquet")
    patients = pq.read_table(tmp_path / "patients.parquet")
    assert str(patients.schema.field("birth_date").type) == "string"
    assert patients.to_pylist()[0]["birth_date"] == "2012"
    events = pq.read_table(tmp_path / "events.parquet").to_pylist()
    assert {e["event_id"]: e["when_date"] for e in events}["cart"] == "2020"
    # a column of days only stays a date column
    assert {e["event_id"]: e["end_date"] for e in events}["blin1"] == dt.date(2019, 10, 12)


# -- study files --------------------------------------------------------------------------------


def _study(tmp_path: Path, patients: str, events: str, formats: list[str]) -> ReadResult:
    folder = tmp_path / "study"
    folder.mkdir(parents=True)
    (folder / "patients.csv").write_text(patients, encoding="utf-8")
    (folder / "events.csv").write_text(events, encoding="utf-8")
    mapping = StudyMapping.model_validate(
        {
            "centre": "test",
            "anchor": "cart_infusion",
            "date_formats": formats,
            "patients": {
                "source": "patients.csv",
                "columns": {"study_id": "ID", "birth_date": "DOB", "anchor_date": "CART"},
            },
            "events": [
                {
                    "source": "events.csv",
                    "concept": "disease_status",
                    "columns": {
                        "study_id": "ID",
                        "when_date": "Date",
                        "when_day": "Day",
                        "value": "Status",
                    },
                }
            ],
        }
    )
    return read_study(folder, mapping)


def test_study_files_read_partial_dates_where_the_formats_allow(tmp_path: Path) -> None:
    result = _study(
        tmp_path,
        "ID,DOB,CART\nA,2012,\nB,03/2011,14.02.2020\nC,1.2.2011,\n",
        "ID,Date,Day,Status\nA,05/2019,,relapse\nB,02/2020,12,complete_remission\n"
        "C,2020,,relapse\n",
        ["%d.%m.%Y", "%m/%Y", "%Y"],
    )
    assert result.rejects == []
    cases = {c.patient.study_id: c for c in result.cases}
    assert cases["A"].patient.birth_text == "2012"
    assert cases["B"].patient.birth_text == "2011-03"
    assert cases["C"].patient.birth_text == "2011-02-01"
    assert cases["A"].events[0].when == When(date=dt.date(2019, 5, 1), precision="month")
    assert cases["C"].events[0].when == When(date=dt.date(2020, 1, 1), precision="year")
    # a month beside a day from a full anchor date: the day is stated, so the date is a day
    assert cases["B"].events[0].when == When(
        date=dt.date(2020, 2, 26), day=12, anchor="cart_infusion"
    )


def test_study_files_refuse_what_the_formats_do_not_allow(tmp_path: Path) -> None:
    result = _study(
        tmp_path, "ID,DOB,CART\nA,2012,2020\n", "ID,Date,Day,Status\n", ["%d.%m.%Y", "%Y"]
    )
    reasons = {(r.column, r.value): r.reason for r in result.rejects}
    assert "gives no day" in reasons[("CART", "2020")]
    result = _study(
        tmp_path / "b", "ID,DOB,CART\nA,05/2012,\n", "ID,Date,Day,Status\n", ["%d.%m.%Y"]
    )
    assert [r.column for r in result.rejects] == ["DOB"]


def test_a_partial_date_must_hold_the_day_given_beside_it(tmp_path: Path) -> None:
    result = _study(
        tmp_path,
        "ID,DOB,CART\nB,2011,14.02.2020\n",
        "ID,Date,Day,Status\nB,03/2020,12,complete_remission\n",
        ["%d.%m.%Y", "%m/%Y", "%Y"],
    )
    (reject,) = result.rejects
    assert (reject.column, reject.value) == ("Date", "03/2020")
    assert "2020-03 is days 16 to 46 after" in reject.reason


def test_plausibility_uses_the_whole_span(tmp_path: Path) -> None:
    # born in May 2019: an event in 2019 may be after it (its first day is not); one in
    # April 2019 cannot
    result = _study(
        tmp_path,
        "ID,DOB,CART\nA,05/2019,\n",
        "ID,Date,Day,Status\nA,2019,,relapse\nA,04/2019,,relapse\n",
        ["%m/%Y", "%Y"],
    )
    assert [(r.column, r.value) for r in result.rejects] == [("Date", "04/2019")]
    assert "2019-04 is before the birth date 2019-05" in result.rejects[0].reason


# -- the summary's arithmetic ---------------------------------------------------------------

INFUSION = dt.date(2021, 3, 8)
_serial = iter(range(1, 10_000))


def _ev(
    concept: str, text: str | None = None, *, code: str | None = None, day: int | None = None
) -> Event:
    """An event dated by ISO text at any precision, or by a day after the infusion."""
    fields: dict[str, Any] = {}
    if text is not None:
        fields["date"], fields["precision"] = parse_partial_date(text)
    if day is not None:
        fields.update(day=day, anchor="cart_infusion")
    value = Value(code=code) if code else None
    return Event(event_id=f"e{next(_serial)}", concept=concept, when=When(**fields), value=value)


def _case(study_id: str, *events: Event) -> Case:
    return Case(patient=PatientRecord(study_id=study_id, centre="test"), events=events)


def _measure(cases: list[Case], measure: dict[str, Any]) -> MeasureResult:
    definition = parse_study(
        {"name": "t", "anchor": "cart_infusion", "measures": [{"id": "m", **measure}]}
    )
    (result,) = summarise(cases, definition)
    return result


def test_days_from_a_partial_date_are_a_window_not_its_first_day() -> None:
    c = _case(
        "A",
        _ev("cart_infusion", INFUSION.isoformat()),
        _ev("crs", "2021-04"),
        _ev("death", "2021"),
        _ev("icans", "2021-03-20"),
    )
    time = TimeResolver(c, "cart_infusion")
    spans = [time.interval(e.when) for e in c.events]
    assert spans == [(0, 0), (24, 53), (-66, 298), (12, 12)]
    assert [time.day(e) for e in c.events] == [0, None, None, 12]


def test_relative_days_from_a_partial_anchor_are_a_window() -> None:
    c = _case("A", _ev("cart_infusion", "2021-03"), _ev("crs", "2021-04-15"), _ev("icans", day=5))
    time = TimeResolver(c, "cart_infusion")
    assert time.interval(c.events[1].when) == (15, 45)  # 15 April after 1 to 31 March
    assert time.day(c.events[2]) == 5  # stated relative to the infusion: exact


def test_a_day_test_holds_only_for_the_whole_span_and_says_it_rested_on_one() -> None:
    cohort = [
        _case(
            "A",
            _ev("cart_infusion", INFUSION.isoformat()),
            _ev("disease_status", "2021-03-20", code="relapse"),
        ),
        # April 2021 is days 24 to 53: not wholly within the first 30 days (its 1st is)
        _case(
            "B",
            _ev("cart_infusion", INFUSION.isoformat()),
            _ev("disease_status", "2021-04", code="relapse"),
        ),
        _case("C", _ev("cart_infusion", INFUSION.isoformat())),
    ]
    test = {
        "event": {"concept": "disease_status", "value": "relapse"},
        "test": {"between": [0, 30]},
    }
    result = _measure(cohort, {"count": test})
    assert (result.value, result.patients, result.partial) == (1, ("A",), ("B",))
    assert result.as_dict()["partial"] == ["B"]
    assert "partial" not in _measure(cohort[:1], {"count": test}).as_dict()


def test_a_median_of_days_leaves_out_a_partial_day_and_says_so() -> None:
    cohort = [
        _case("A", _ev("cart_infusion", INFUSION.isoformat()), _ev("last_follow_up", day=100)),
        _case("B", _ev("cart_infusion", INFUSION.isoformat()), _ev("last_follow_up", "2021-05")),
        _case("C", _ev("cart_infusion", INFUSION.isoformat()), _ev("last_follow_up", day=200)),
    ]
    result = _measure(cohort, {"median_days": "last_follow_up"})
    assert (result.value, result.patients, result.partial) == (150, ("A", "C"), ("B",))


def test_km_leaves_out_an_event_known_only_to_a_month(tmp_path: Path) -> None:
    from fhir_cart.report.plots import survival_data

    cohort = [
        _case("A", _ev("cart_infusion", INFUSION.isoformat()), _ev("death", day=90)),
        # died in June 2021, followed up to day 60: not censored at 60, and no event day
        _case(
            "B",
            _ev("cart_infusion", INFUSION.isoformat()),
            _ev("death", "2021-06"),
            _ev("last_follow_up", day=60),
        ),
        _case("C", _ev("cart_infusion", INFUSION.isoformat()), _ev("last_follow_up", day=120)),
    ]
    definition = parse_study(
        {
            "name": "t",
            "anchor": "cart_infusion",
            "measures": [{"id": "n", "count": "all"}],
            "plots": {"survival": {"overall": {"event": "death", "censor": "last_follow_up"}}},
        }
    )
    data = survival_data(cohort, definition, "overall")
    assert dict(zip(data.patients, zip(data.durations, data.events, strict=True), strict=True)) == {
        "A": (90, True),
        "C": (120, False),
    }
    assert (data.excluded, data.partial) == (("B",), ("B",))


# -- the registry -------------------------------------------------------------------------------


def test_relative_days_from_a_partial_date_or_anchor_are_a_window() -> None:
    from fhir_cart.registry.pseudonyms import DateTransform

    day_anchor = DateTransform("relative", "diagnosis", anchor_date=dt.date(2020, 1, 10))
    assert day_anchor.when(When(date=dt.date(2020, 2, 1), precision="month")) == When(
        earliest_day=22, latest_day=50, anchor="diagnosis"
    )
    month_anchor = DateTransform(
        "relative", "diagnosis", anchor_date=dt.date(2020, 1, 1), anchor_precision="month"
    )
    assert month_anchor.when(When(date=dt.date(2020, 2, 15))) == When(
        earliest_day=15, latest_day=45, anchor="diagnosis"
    )
    # a day relative to an anchor stays as the source said it
    kept = When(date=dt.date(2020, 2, 1), precision="month", day=28, anchor="cart_infusion")
    assert day_anchor.when(kept) == When(day=28, anchor="cart_infusion")


def test_a_shift_by_days_never_turns_a_year_or_month_into_a_day() -> None:
    from fhir_cart.registry.pseudonyms import DateTransform, transform_patient

    shift = DateTransform("shift", "diagnosis", anchor_date=dt.date(2020, 1, 10), offset=-12)
    assert shift.when(When(date=dt.date(2020, 1, 10))) == When(date=dt.date(2019, 12, 29))
    # the month is kept as the window of days after the anchor it may be, not shifted
    assert shift.when(When(date=dt.date(2020, 2, 1), precision="month")) == When(
        earliest_day=22, latest_day=50, anchor="diagnosis"
    )
    no_anchor = DateTransform("shift", "diagnosis", offset=-12)
    assert no_anchor.when(When(date=dt.date(2020, 2, 1), precision="month")) is None
    born = PatientRecord(
        study_id="a", centre="c", birth_date=dt.date(2012, 1, 1), birth_precision="year"
    )
    moved = transform_patient(born, shift)
    assert (moved.birth_date, moved.birth_precision) == (None, "day")
    assert PatientRecord.model_validate(moved.model_dump(mode="json")) == moved
    day_born = born.model_copy(update={"birth_date": dt.date(2012, 3, 4), "birth_precision": "day"})
    assert transform_patient(day_born, shift).birth_date == dt.date(2012, 2, 21)


def test_merge_keeps_the_birth_precision_and_a_year_is_not_a_day_in_it() -> None:
    from fhir_cart.registry.definition import RegistryDef
    from fhir_cart.registry.merge import merge_patient

    definition = RegistryDef.model_validate(
        {
            "name": "r",
            "base_dir": Path(),
            "centres": [
                {"id": "a", "mapping": "a.yaml", "data": "a.csv"},
                {"id": "b", "mapping": "b.yaml", "data": "b.csv"},
            ],
            "conflicts": {"default": ["a", "b"]},
        }
    )
    a = Case(
        patient=PatientRecord(
            study_id="A1", centre="a", birth_date=dt.date(2012, 1, 1), birth_precision="year"
        )
    )
    b = Case(patient=PatientRecord(study_id="B1", centre="b", birth_date=dt.date(2012, 1, 1)))
    merged = merge_patient("r1", [a, b], definition)
    assert merged.case.patient.birth_text == "2012"  # not 2012-01-01
    (conflict,) = merged.conflicts  # "2012" and 1 January 2012 are not the same fact
    assert conflict.field == "birth_date"


def test_linkage_takes_no_month_from_a_birth_year_and_no_day_from_a_month() -> None:
    from fhir_cart.registry.definition import LinkageDef
    from fhir_cart.registry.linkage import linkage_record
    from fhir_cart.registry.pseudonyms import Pseudonymiser

    linkage = LinkageDef.model_validate({"birth": True, "dates": {"diagnosis": "diagnosis"}})
    case = Case(
        patient=PatientRecord(
            study_id="A1", centre="a", birth_date=dt.date(2012, 1, 1), birth_precision="year"
        ),
        events=(
            Event(
                event_id="dx",
                concept="diagnosis",
                value=Value(code="b_all"),
                when=When(date=dt.date(2019, 5, 1), precision="month"),
            ),
        ),
    )
    record = linkage_record(case, linkage, Pseudonymiser(b"k" * 32))
    assert (record.birth_year, record.birth_month) == (2012, None)
    assert record.dates == {"diagnosis": None}


def test_a_pull_job_summary_lists_answers_resting_on_partial_dates(tmp_path: Path) -> None:
    from fhir_cart.application import Application
    from fhir_cart.service.jobs import _write_pull_outputs
    from fhir_cart.settings import Settings
    from fhir_cart.sync.jobs import PullOutcome

    definition = tmp_path / "study.yaml"
    definition.write_text(
        "name: t\nanchor: cart_infusion\nmeasures:\n"
        "  - {id: fu, median_days: last_follow_up}\n  - {id: n, count: all}\n",
        encoding="utf-8",
    )
    cases = [
        _case("A", _ev("cart_infusion", INFUSION.isoformat()), _ev("last_follow_up", day=100)),
        _case("B", _ev("cart_infusion", INFUSION.isoformat()), _ev("last_follow_up", "2021-05")),
    ]
    app = Application(Settings(data_dir=tmp_path / "data"))
    _write_pull_outputs(app, PullOutcome(run_id=1, cases=cases), tmp_path, str(definition))
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary == {"fu": 100, "n": 2, "partial-dates": {"fu": ["B"]}}


def test_the_printed_summary_marks_a_value_resting_on_a_partial_date() -> None:
    from rich.console import Console

    from fhir_cart.report.tables import summary_table

    results = [
        MeasureResult("fu", "Median follow-up", 100, patients=("A",), partial=("B",)),
        MeasureResult("n", "Patients", 2, patients=("A", "B")),
    ]
    console = Console(width=120, record=True)
    console.print(summary_table(results, compare=False, title="t"))
    text = " ".join(console.export_text().split())  # the caption wraps to the table's width
    assert "100 †" in text
    assert "rests on a partial date (a year or a month; days taken as a window) for B" in text
    assert "2 †" not in text


def test_cli_summary_of_partial_dates_says_so_beside_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pulled fixture as NDJSON: three patients (none lost to a year-only birth date), and
    the days after a CAR-T infusion known only to January 2020 rest on a partial date."""
    from fhir_cart.cli import main

    data = _load(FIXTURE)
    lines = b"".join(orjson.dumps(r) + b"\n" for r in data["resources"])
    (tmp_path / "all.ndjson").write_bytes(lines)
    study = tmp_path / "study.yaml"
    study.write_text(
        "name: t\nanchor: cart_infusion\nmeasures:\n  - {id: n, count: all}\n"
        "  - {id: status_after, count: {event: {concept: disease_status}, test: {after: 0}}}\n",
        encoding="utf-8",
    )
    assert main(["summary", str(tmp_path / "all.ndjson"), "--json", "--study", str(study)]) == 0
    captured = capsys.readouterr()
    # March 2020 after January 2020: days 30 to 90, after day 0 whichever days they were
    assert orjson.loads(captured.out) == {"n": 3, "status_after": 1}
    assert "status_after rests on a partial date (a year or a month) for pd-p1" in " ".join(
        captured.err.split()
    )


def test_swimmer_draws_no_bar_whose_end_is_known_only_to_a_month() -> None:
    from fhir_cart.report.plots import swimmer_rows

    cohort = [
        _case("A", _ev("cart_infusion", INFUSION.isoformat()), _ev("last_follow_up", day=90)),
        # followed up to day 60 and died in June 2021: the bar's end cannot be told
        _case(
            "B",
            _ev("cart_infusion", INFUSION.isoformat()),
            _ev("death", "2021-06"),
            _ev("last_follow_up", day=60),
        ),
    ]
    definition = parse_study(
        {
            "name": "t",
            "anchor": "cart_infusion",
            "measures": [{"id": "n", "count": "all"}],
            "plots": {"swimmer": {"end": ["last_follow_up", "death"], "markers": {}}},
        }
    )
    assert [(r.study_id, r.end) for r in swimmer_rows(cohort, definition)] == [("A", 90)]


def test_a_birth_conflict_report_gives_an_age_range_for_a_partial_birth_date() -> None:
    from fhir_cart.registry.protect import render_birth
    from fhir_cart.registry.pseudonyms import DateTransform

    relative = DateTransform("relative", "diagnosis", anchor_date=dt.date(2020, 6, 15))
    year = When(date=dt.date(2012, 1, 1), precision="year")
    assert render_birth(year, relative) == "aged 7-8 years at diagnosis"
    assert render_birth(When(date=dt.date(2012, 3, 4)), relative) == "aged 8 years at diagnosis"
    shift = DateTransform("shift", "diagnosis", anchor_date=dt.date(2020, 6, 15), offset=-12)
    assert render_birth(year, shift) == "(withheld)"
    assert render_birth(When(date=dt.date(2012, 3, 4)), shift) == "2012-02-21"
