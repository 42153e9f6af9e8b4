"""Time and value shapes of published tables (issue 18, item 3): weeks and months as times
(a month is 30.4375 days, the source amount kept), '15+' as censoring, '>=', bands ('grade
3-4', '1-2 cycles'), powers of ten ('0.4 × 10^6', '10^8 cells', '4e5')."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from fhir_cart.library.study_mapping import StudyMapping
from fhir_cart.mappers.context import mapping_context
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.mappers.to_fhir import case_to_fhir
from fhir_cart.records import Case, Event, PatientRecord, Value, When
from fhir_cart.study import ReadResult, read_study
from fhir_cart.study.values import parse_band, parse_quantity, parse_time
from fhir_cart.summary import parse_study, summarise


def _read(
    tmp_path: Path, rows: str, specs: list[dict[str, Any]], people: str = "ID\nA\nB\n", **top: Any
) -> ReadResult:
    folder = tmp_path / "study"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "patients.csv").write_text(people, encoding="utf-8")
    (folder / "events.csv").write_text(rows, encoding="utf-8")
    events = [
        {"source": "events", **s, "columns": {"study_id": "ID", **s["columns"]}} for s in specs
    ]
    data = {
        "centre": "test",
        "anchor": "cart_infusion",
        "patients": {"source": "patients", "columns": {"study_id": "ID"}},
        "events": events,
        **top,
    }
    return read_study(folder, StudyMapping.model_validate(data))


# -- cells --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "amount", "unit", "censored", "day"),
    [
        ("28", 28, "d", False, 28),
        ("6 wk", 6, "wk", False, 42),
        ("3 weeks", 3, "wk", False, 21),
        # 15 x 30.4375 = 456.5625: day 457 (30-day months give 450, truncation 456)
        ("15 mo", 15, "mo", False, 457),
        ("15+ months", 15, "mo", True, 457),
        ("≥ 12 mo", 12, "mo", True, 365),  # 365.25
        ("> 2 y", 2, "a", True, 731),  # 730.5, half a day rounded away from zero
        ("0.5 mo", 0.5, "mo", False, 15),  # 15.22
    ],
)
def test_times_in_weeks_and_months(
    cell: str, amount: float, unit: str, censored: bool, day: int
) -> None:
    time = parse_time(cell)
    assert (time.amount, time.unit, time.censored, time.days) == (amount, unit, censored, day)


def test_a_bare_time_takes_the_columns_unit_and_days_are_whole() -> None:
    assert parse_time("15+", "mo").days == 457
    assert parse_time(15, "mo").unit == "mo"
    assert parse_time("15", "d").days == 15
    with pytest.raises(ValueError, match="not a whole day"):
        parse_time("2.5")
    with pytest.raises(ValueError, match="expected a time"):
        parse_time("<3 mo")  # below a bound: no event time
    with pytest.raises(ValueError, match="not a time unit"):
        parse_time("6 mg")
    with pytest.raises(ValueError, match="not a time unit"):
        parse_time("6 m")  # metre or minute, never guessed to be months


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("0.4 × 10^6", (None, 0.4, "10*6")),
        ("4e5", (None, 400000.0, None)),
        ("10^8 cells", (None, 1.0, "10*8")),
        ("2 x 10^8 CAR-T cells", (None, 2.0, "10*8")),
        ("0.4 × 10^6 cells/kg", (None, 0.4, "10*6/kg")),
        ("2.1 x10^6/kg", (None, 2.1, "10*6/kg")),
        ("15+", (">=", 15.0, None)),
        ("15 + mo", (">=", 15.0, "mo")),
        ("≥ 3", (">=", 3.0, None)),
    ],
)
def test_quantities_as_tables_write_them(cell: str, expected: tuple[object, ...]) -> None:
    assert parse_quantity(cell) == expected


def test_a_plus_beside_a_comparator_is_refused() -> None:
    with pytest.raises(ValueError, match="both"):
        parse_quantity(">15+")


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("3", 3),
        ("3.0", 3),
        ("grade 3–4", (3, 4)),
        ("1–2 cycles", (1, 2)),
        ("3/4", (3, 4)),
        ("3 or 4", (3, 4)),
        ("Grade 2", 2),
        (4.0, 4),
    ],
)
def test_bands_stay_bands(cell: object, expected: object) -> None:
    assert parse_band(cell) == expected


@pytest.mark.parametrize("cell", ["4-3", "3-3", "3-4-5", "2.5", "≥3", True])
def test_what_is_no_band_is_refused(cell: object) -> None:
    with pytest.raises(ValueError, match=r"band|whole number"):
        parse_band(cell)


# -- rows -------------------------------------------------------------------------------------

OS = {"name": "os", "concept": "death", "columns": {"when_day": "OS"}, "units": {"when_day": "mo"}}


def test_censored_survival_becomes_last_follow_up_not_death(tmp_path: Path) -> None:
    result = _read(tmp_path, "ID,OS\nA,15+\nB,7\n", [{**OS, "censored": "last_follow_up"}])
    assert result.rejects == []
    a, b = ([(e.concept, e.when) for e in c.events] for c in result.cases)
    assert a == [
        ("last_follow_up", When(day=457, anchor="cart_infusion", stated=15, stated_unit="mo"))
    ]
    assert b == [("death", When(day=213, anchor="cart_infusion", stated=7, stated_unit="mo"))]
    assert result.cases[0].events[0].source_text == "15+"


def test_censoring_without_a_censor_concept_is_a_reject_with_the_fix(tmp_path: Path) -> None:
    result = _read(tmp_path, "ID,OS\nA,15+\nB,7\n", [OS])
    assert [(r.row, r.column, r.value) for r in result.rejects] == [(2, "OS", "15+")]
    assert "censored: last_follow_up" in result.rejects[0].reason
    assert [len(c.events) for c in result.cases] == [0, 1]


def test_a_censored_time_with_a_cause_of_death_is_a_contradiction(tmp_path: Path) -> None:
    spec = {**OS, "censored": "last_follow_up", "columns": {"when_day": "OS", "cause": "Cause"}}
    result = _read(tmp_path, "ID,OS,Cause\nA,15+,disease\n", [spec])
    assert [(r.row, r.column) for r in result.rejects] == [(2, "Cause")]
    assert "censored" in result.rejects[0].reason


def test_months_give_no_date_weeks_do(tmp_path: Path) -> None:
    specs = [
        {"name": "inf", "concept": "cart_infusion", "columns": {"when_day": "Zero"}},
        {"name": "lfu", "concept": "last_follow_up", "columns": {"when_day": "FU"}},
    ]
    people = "ID,CAR-T date\nA,2022-01-01\nB,2022-01-01\n"
    columns = {"study_id": "ID", "anchor_date": "CAR-T date"}
    top = {"patients": {"source": "patients", "columns": columns}}
    result = _read(tmp_path, "ID,Zero,FU\nA,0,2 mo\nB,0,2 wk\n", specs, people, **top)
    assert result.rejects == []
    follow = [c.of("last_follow_up")[0].when for c in result.cases]
    assert follow[0] is not None
    assert follow[0].date is None
    assert follow[0].day == 61
    assert follow[1] is not None
    assert follow[1].date == dt.date(2022, 1, 15)


def test_a_grade_band_is_kept_and_counted_only_where_every_grade_fits(tmp_path: Path) -> None:
    spec = {"concept": "crs", "columns": {"grade": "Grade", "when_day": "Day"}}
    result = _read(tmp_path, "ID,Grade,Day\nA,grade 3–4,2\nB,2,3\n", [spec])
    assert result.rejects == []
    assert [c.events[0].attributes["grade"] for c in result.cases] == ["3-4", 2]

    def grade(allowed: list[int]) -> dict[str, Any]:
        return {"event": {"concept": "crs", "attributes": {"grade": allowed}}}

    study = parse_study(
        {
            "name": "t",
            "anchor": "cart_infusion",
            "measures": [
                {"id": "g3", "label": "grade >= 3", "count": grade([3, 4, 5])},
                {"id": "g4", "label": "grade >= 4", "count": grade([4, 5])},
            ],
        }
    )
    assert [r.value for r in summarise(result.cases, study)] == [1, 0]


def test_cell_doses_per_kg_flat_and_as_powers_of_ten(tmp_path: Path) -> None:
    per_kg = {
        "name": "kg",
        "concept": "cart_infusion",
        "columns": {"cell_dose": "Dose"},
        "units": {"cell_dose": "/kg"},
    }
    result = _read(tmp_path, "ID,Dose\nA,0.4 × 10^6\nB,2e5\n", [per_kg])
    assert result.rejects == []
    assert [c.events[0].attributes for c in result.cases] == [
        {"cell_dose": 0.4},
        {"cell_dose": 0.2},
    ]
    either = {"name": "any", "concept": "cart_infusion", "columns": {"cell_dose": "Dose"}}
    result = _read(tmp_path, "ID,Dose\nA,10^8 cells\nB,1.5 x10^6/kg\n", [either])
    assert result.rejects == []
    assert [c.events[0].attributes for c in result.cases] == [
        {"cell_dose_flat": 100.0},
        {"cell_dose": 1.5},
    ]


# -- FHIR both ways -------------------------------------------------------------------------


ANCHOR = "cart_infusion"


def test_stated_times_and_bands_survive_fhir_both_ways() -> None:
    ctx = mapping_context(ref_style="relative")
    case = Case(
        patient=PatientRecord(study_id="P1", centre="test"),
        events=(
            Event(event_id="inf", concept="cart_infusion", when=When(day=0, anchor=ANCHOR)),
            Event(
                event_id="crs",
                concept="crs",
                attributes={"grade": "3-4"},
                when=When(day=3, anchor="cart_infusion"),
            ),
            Event(
                event_id="lfu",
                concept="last_follow_up",
                source_text="15+",
                when=When(day=457, anchor="cart_infusion", stated=15, stated_unit="mo"),
            ),
        ),
    )
    resources = case_to_fhir(ctx, case)
    back = cases_from_fhir(ctx, resources)
    assert back.unmapped == []
    assert back.other == []
    order = {e.event_id: e for e in back.cases[0].events}
    assert [order[e.event_id] for e in case.events] == list(case.events)
    grade = next(r for r in resources if r["resourceType"] == "AdverseEvent")["extension"][0]
    assert grade["valueRange"] == {"low": {"value": 3}, "high": {"value": 4}}


def test_a_stated_time_must_be_its_day() -> None:
    with pytest.raises(ValueError, match="day 457, not day 450"):
        When(day=450, anchor="cart_infusion", stated=15, stated_unit="mo")


def test_at_least_counts_only_where_it_is_known_to_pass() -> None:
    """'15+' months (>= 15) is known to be over 12, not known to be under 20; a range
    10-14 is under 14 and not known to be under 12."""

    def case(study_id: str, value: Value) -> Case:
        event = Event(event_id="cr1", concept="first_remission_duration", value=value)
        return Case(patient=PatientRecord(study_id=study_id, centre="test"), events=(event,))

    cases = [
        case("A", Value(number=15, comparator=">=", unit="mo")),
        case("B", Value(low=10, high=14, unit="mo")),
        case("C", Value(number=8, unit="mo")),
    ]

    def within(**bounds: float) -> dict[str, Any]:
        return {"event": {"concept": "first_remission_duration", **bounds}}

    study = parse_study(
        {
            "name": "t",
            "anchor": "cart_infusion",
            "measures": [
                {"id": "over_12", "label": "> 12", "count": within(number_min=12)},
                {"id": "under_20", "label": "<= 20", "count": within(number_max=20)},
                {"id": "under_14", "label": "<= 14", "count": within(number_max=14)},
                {"id": "under_12", "label": "<= 12", "count": within(number_max=12)},
            ],
        }
    )
    found = {r.id: list(r.patients) for r in summarise(cases, study)}
    assert found == {
        "over_12": ["A"],
        "under_20": ["B", "C"],
        "under_14": ["B", "C"],
        "under_12": ["C"],
    }


def test_a_count_or_a_duration_written_as_a_range_stays_a_range(tmp_path: Path) -> None:
    specs = [
        {"name": "lines", "concept": "prior_lines", "columns": {"value": "Lines"}},
        {
            "name": "cr1",
            "concept": "first_remission_duration",
            "columns": {"value": "CR1"},
            "units": {"value": "mo"},
        },
    ]
    rows = "ID,Lines,CR1\nA,2–3 lines,10 to 14\nB,4,6\nC,3-2,1\n"
    result = _read(tmp_path, rows, specs, "ID\nA\nB\nC\n")
    assert [(r.row, r.column) for r in result.rejects] == [(4, "Lines")]  # low above high
    a, b, _ = result.cases
    assert [e.value for e in a.events] == [Value(low=2, high=3), Value(low=10, high=14, unit="mo")]
    assert [e.value for e in b.events] == [Value(number=4), Value(number=6, unit="mo")]
    ctx = mapping_context(ref_style="relative")
    back = cases_from_fhir(ctx, case_to_fhir(ctx, a)).cases[0]
    values = {e.event_id: e.value for e in back.events}
    assert [values[e.event_id] for e in a.events] == [e.value for e in a.events]


def test_a_band_is_written_to_the_tables_and_read_back(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from fhir_cart.writers import canonical_mapping, write_study

    spec = {"concept": "crs", "columns": {"grade": "Grade", "when_day": "Day"}}
    result = _read(tmp_path, "ID,Grade,Day\nA,grade 3–4,2\nB,2,3\n", [spec])
    write_study(result.cases, tmp_path / "parquet", "parquet")
    events = pq.read_table(tmp_path / "parquet" / "events.parquet").to_pylist()
    assert [e["grade"] for e in events] == ["3-4", "2"]
    write_study(result.cases, tmp_path / "csv", "csv")
    back = read_study(tmp_path / "csv", canonical_mapping("canonical"))
    assert back.rejects == []
    assert [c.events[0].attributes["grade"] for c in back.cases] == ["3-4", 2]


def test_a_band_goes_into_the_registry_tables() -> None:
    from fhir_cart.library.study_mapping import default_library
    from fhir_cart.registry.tables import event_table

    events = (Event(event_id="crs", concept="crs", attributes={"grade": "3-4"}),)
    case = Case(patient=PatientRecord(study_id="R1", centre="test"), events=events)
    table = event_table([case], {}, default_library())
    assert table.column("grade").to_pylist() == ["3-4"]
