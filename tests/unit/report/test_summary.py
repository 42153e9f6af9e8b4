"""Summaries as data (fhir_cart.report.evaluate): the seed study gives the paper's numbers, and each
selector feature is pinned by a purpose-built cohort on which a plausible wrong rule gives a
different number. Cases are built from the open record model directly (no reader needed)."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from fhir_cart.errors import ConfigError
from fhir_cart.library.studies import StudyDefinition, load_study, parse_study, study_path
from fhir_cart.records import Case, Event, PatientRecord, Value, When
from fhir_cart.report.evaluate import MeasureResult, TimeResolver, summarise
from tests.unit.seed_cases import seed_cases

ROOT = Path(__file__).resolve().parents[3]
STUDIES = ROOT / "mappings" / "studies"
_ids = itertools.count(1)


# -- building cases ----------------------------------------------------------------------


def ev(
    concept: str,
    day: int | None = None,
    *,
    anchor: str = "cart_infusion",
    date: dt.date | None = None,
    window: tuple[int | None, int | None] | None = None,
    code: str | None = None,
    number: float | None = None,
    comparator: str | None = None,
    unit: str | None = None,
    **attributes: Any,
) -> Event:
    when = None
    if window is not None:
        when = When(earliest_day=window[0], latest_day=window[1], anchor=anchor)
    elif day is not None or date is not None:
        when = When(day=day, anchor=anchor if day is not None else None, date=date)
    value = None
    if code is not None or number is not None:
        value = Value(code=code, number=number, comparator=comparator, unit=unit)  # type: ignore[arg-type]
    return Event(
        event_id=f"e{next(_ids)}", concept=concept, when=when, value=value, attributes=attributes
    )


def case(study_id: str, *events: Event, **attributes: Any) -> Case:
    patient = PatientRecord(study_id=study_id, centre="test", attributes=attributes)
    return Case(patient=patient, events=events)


def study(
    *measures: dict[str, Any], anchor: str = "cart_infusion", **extra: Any
) -> StudyDefinition:
    return parse_study({"name": "test", "anchor": anchor, "measures": list(measures), **extra})


def value_of(cases: list[Case], measure: dict[str, Any], **extra: Any) -> Any:
    (result,) = summarise(cases, study({"id": "m", **measure}, **extra))
    return result.value


SEED = load_study("seed")


# -- the seed study ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_results() -> dict[str, MeasureResult]:
    return {r.id: r for r in summarise(seed_cases(), SEED)}


def test_seed_gives_every_number_the_paper_reports(seed_results: dict[str, MeasureResult]) -> None:
    assert SEED.expected  # the paper's numbers are in the study file
    wrong = {
        k: (seed_results[k].value, v)
        for k, v in SEED.expected.items()
        if seed_results[k].value != v
    }
    assert wrong == {}
    assert all(seed_results[k].agrees for k in SEED.expected)


def test_seed_keeps_every_field_of_the_former_summary(
    seed_results: dict[str, MeasureResult],
) -> None:
    former = [
        "patients",
        "blinatumomab_debulking",
        "blinatumomab_bridging",
        "blinatumomab_both",
        "blinatumomab_responders",
        "blinatumomab_non_responders",
        "cr_at_infusion",
        "mrd_positive_at_infusion",
        "mrd_negative_at_infusion",
        "cr_at_day_28",
        "mrd_negative_at_day_28",
        "mrd_positive_at_day_28",
        "relapses",
        "relapses_cd19_negative",
        "deaths",
        "deaths_after_relapse",
        "hsct_after_relapse",
        "cr_mrd_negative_at_last_follow_up",
        "median_follow_up_days",
    ]
    assert list(seed_results) == former
    extra = {k: seed_results[k].value for k in former if k not in SEED.expected}
    assert extra == {
        "blinatumomab_both": 1,
        "blinatumomab_responders": 6,
        "mrd_positive_at_day_28": 1,
        "deaths": 2,
    }
    assert seed_results["blinatumomab_non_responders"].patients == ("P05",)
    assert seed_results["hsct_after_relapse"].patients == ("P05",)
    assert seed_results["cr_mrd_negative_at_last_follow_up"].patients == (
        "P01",
        "P03",
        "P06",
        "P07",
    )
    assert seed_results["median_follow_up_days"].expected == 497
    assert isinstance(seed_results["patients"].expected, int)
    assert seed_results["patients"].label == "Patients"


def test_seed_summary_from_dates_alone_is_the_same() -> None:
    """Every relative day dropped (dates only): days come from dates minus the infusion date."""

    def dates_only(c: Case) -> Case:
        events = []
        for e in c.events:
            when = e.when
            if when is not None and when.date is not None:
                when = When(date=when.date)
            events.append(e.model_copy(update={"when": when, "end": None}))
        return c.model_copy(update={"events": tuple(events)})

    values = {r.id: r.value for r in summarise([dates_only(c) for c in seed_cases()], SEED)}
    assert {k: values[k] for k in SEED.expected} == SEED.expected


# -- each selector feature against a plausible wrong rule -------------------------------


def test_pick_first_relapse_not_any_relapse() -> None:
    cohort = [
        case(
            "A",
            ev("disease_status", 90, code="relapse", cd19="positive"),
            ev("disease_status", 200, code="relapse", cd19="negative"),
        )
    ]
    right = {
        "count": {
            "event": {"concept": "disease_status", "value": "relapse"},
            "pick": "first",
            "test": {"attributes": {"cd19": "negative"}},
        }
    }
    wrong = {
        "count": {
            "event": {
                "concept": "disease_status",
                "value": "relapse",
                "attributes": {"cd19": "negative"},
            }
        }
    }
    assert value_of(cohort, right) == 0
    assert value_of(cohort, wrong) == 1


def test_pick_latest_not_any() -> None:
    cohort = [
        case("A", ev("mrd", 28, code="negative"), ev("mrd", 300, code="positive")),
        case("B", ev("mrd", 300, code="negative"), ev("mrd", 28, code="positive")),
    ]
    latest = {
        "count": {"event": {"concept": "mrd"}, "pick": "latest", "test": {"value": "negative"}}
    }
    first = {"count": {"event": {"concept": "mrd"}, "pick": "first", "test": {"value": "negative"}}}
    anyone = {"count": {"event": {"concept": "mrd", "value": "negative"}}}
    assert value_of(cohort, latest) == 1  # B: latest by day, not by record order
    assert value_of(cohort, first) == 1
    assert value_of(cohort, anyone) == 2


def test_day_zero_not_any_day() -> None:
    cohort = [
        case(
            "A",
            ev("disease_status", 0, code="partial_remission"),
            ev("disease_status", 28, code="complete_remission"),
        )
    ]
    at_zero = {
        "count": {
            "event": {"concept": "disease_status", "day": 0},
            "pick": "first",
            "test": {"value": "complete_remission"},
        }
    }
    any_day = {"count": {"event": {"concept": "disease_status", "value": "complete_remission"}}}
    assert value_of(cohort, at_zero) == 0
    assert value_of(cohort, any_day) == 1


def test_after_zero_excludes_relapses_before_the_infusion_and_on_day_zero() -> None:
    cohort = [
        case("A", ev("disease_status", -60, code="relapse")),
        case("B", ev("disease_status", 0, code="relapse")),
        case("C", ev("disease_status", 1, code="relapse")),
        case("D", ev("disease_status", code="relapse")),
    ]  # no time at all
    after = {"count": {"event": {"concept": "disease_status", "value": "relapse", "after": 0}}}
    anytime = {"count": {"event": {"concept": "disease_status", "value": "relapse"}}}
    assert value_of(cohort, after) == 1
    assert value_of(cohort, anytime) == 4


def test_before_and_between_are_strict_and_inclusive() -> None:
    cohort = [case(x, ev("crs", d)) for x, d in (("A", -1), ("B", 0), ("C", 14), ("D", 15))]
    assert value_of(cohort, {"count": {"event": {"concept": "crs", "before": 0}}}) == 1
    assert value_of(cohort, {"count": {"event": {"concept": "crs", "between": [0, 14]}}}) == 2


def test_hsct_after_the_first_relapse_not_any_hsct() -> None:
    relapse = {"concept": "disease_status", "value": "relapse", "after": 0}
    cohort = [
        case("A", ev("hsct", -100), ev("disease_status", 150, code="relapse")),  # HSCT before
        case("B", ev("disease_status", 150, code="relapse"), ev("hsct", 240)),  # rescued
        case("C", ev("hsct", 240)),  # no relapse
        # HSCT between two relapses: after the first, so it counts
        case(
            "D",
            ev("disease_status", 100, code="relapse"),
            ev("hsct", 180),
            ev("disease_status", 300, code="relapse"),
        ),
    ]
    after_first = {
        "count": {"event": {"concept": "hsct", "after": {"event": relapse, "pick": "first"}}}
    }
    after_latest = {
        "count": {"event": {"concept": "hsct", "after": {"event": relapse, "pick": "latest"}}}
    }
    any_hsct = {"count": {"all": [{"event": relapse}, {"event": {"concept": "hsct"}}]}}
    assert value_of(cohort, after_first) == 2
    assert value_of(cohort, after_latest) == 1
    assert value_of(cohort, any_hsct) == 3


def test_before_a_reference_event() -> None:
    cohort = [
        case("A", ev("blinatumomab", -60), ev("apheresis", -40)),
        case("B", ev("apheresis", -40), ev("blinatumomab", -30)),
    ]
    before = {
        "count": {
            "event": {"concept": "blinatumomab", "before": {"event": {"concept": "apheresis"}}}
        }
    }
    assert value_of(cohort, before) == 1


def test_pick_all_needs_every_event_not_one() -> None:
    cohort = [
        case(
            "A",
            ev("blinatumomab", -60, response="no_response"),
            ev("blinatumomab", -20, response="response"),
        ),
        case("B", ev("blinatumomab", -60, response="no_response")),
        case("C"),
    ]
    every = {
        "count": {
            "event": {"concept": "blinatumomab"},
            "pick": "all",
            "test": {"attributes": {"response": "no_response"}},
        }
    }
    some = {
        "count": {"event": {"concept": "blinatumomab", "attributes": {"response": "no_response"}}}
    }
    assert value_of(cohort, every) == 1  # C has no blinatumomab: not vacuously true
    assert value_of(cohort, some) == 2


def test_not_and_all_and_any() -> None:
    cohort = [case("A", ev("death", 100), ev("crs", 2)), case("B", ev("crs", 3)), case("C")]
    alive = {"count": {"not": {"event": {"concept": "death"}}}}
    alive_crs = {
        "count": {"all": [{"not": {"event": {"concept": "death"}}}, {"event": {"concept": "crs"}}]}
    }
    either = {"count": {"any": [{"event": {"concept": "death"}}, {"event": {"concept": "crs"}}]}}
    assert value_of(cohort, alive) == 2
    assert value_of(cohort, alive_crs) == 1
    assert value_of(cohort, either) == 2


def test_mrd_negative_predicate_is_the_former_rule() -> None:
    """Negative: the word, or '<x' / 0 with no positive word beside it."""
    results = [
        ("neg-word", ev("mrd", 28, code="negative"), True),
        ("below-limit", ev("mrd", 28, number=0.01, comparator="<", unit="%"), True),
        ("zero", ev("mrd", 28, number=0.0, unit="%"), True),
        (
            "low-pos-below",
            ev(
                "mrd",
                28,
                code="positive_below_quantification",
                number=0.01,
                comparator="<",
                unit="%",
            ),
            False,
        ),
        ("low-pos", ev("mrd", 28, code="positive_below_quantification"), False),
        ("number", ev("mrd", 28, number=0.3, unit="%"), False),
    ]
    cohort = [case(name, e) for name, e, _ in results]
    measure = {"count": {"event": {"concept": "mrd"}, "pick": "first", "test": "mrd_negative"}}
    extra = {"predicates": SEED.model_dump(by_alias=True, exclude_none=True)["predicates"]}
    (result,) = summarise(cohort, study({"id": "m", **measure}, **extra))
    assert set(result.patients) == {name for name, _, negative in results if negative}
    # the spec's shorter predicate counts '<0.01 %, low positive' as negative: a different rule
    short = {
        "mrd_negative": {"any": [{"value": "negative"}, {"comparator": ["<", "<="]}, {"number": 0}]}
    }
    (loose,) = summarise(cohort, study({"id": "m", **measure}, predicates=short))
    assert loose.value == result.value + 1


def test_value_number_range_unit_and_boolean_tests() -> None:
    cohort = [
        case("A", ev("chimerism", 100, number=98, unit="%")),
        case("B", ev("chimerism", 100, number=60, unit="%")),
        case("C", ev("chimerism", 100, number=95, unit="%")),
    ]
    full = {"count": {"event": {"concept": "chimerism", "number_min": 95, "unit": "%"}}}
    mixed = {"count": {"event": {"concept": "chimerism", "number_max": 94.9}}}
    assert value_of(cohort, full) == 2
    assert value_of(cohort, mixed) == 1
    flagged = [
        case("A", ev("acute_gvhd", 20, grade=3, steroid_refractory=True)),
        case("B", ev("acute_gvhd", 20, grade=2, steroid_refractory=False)),
        case("C", ev("acute_gvhd", 20, grade=1)),
    ]
    refractory = {
        "count": {"event": {"concept": "acute_gvhd", "attributes": {"steroid_refractory": True}}}
    }
    grade_2_to_4 = {
        "count": {"event": {"concept": "acute_gvhd", "attributes": {"grade": [2, 3, 4]}}}
    }
    no_flag = {
        "count": {"event": {"concept": "acute_gvhd", "attributes": {"steroid_refractory": None}}}
    }
    assert value_of(flagged, refractory) == 1
    assert value_of(flagged, grade_2_to_4) == 2
    assert value_of(flagged, no_flag) == 1


# -- time --------------------------------------------------------------------------------


def test_day_from_dates_and_via_another_anchor() -> None:
    infusion = dt.date(2021, 3, 8)
    c = case(
        "A",
        ev("cart_infusion", date=infusion),
        ev("apheresis", -36, date=infusion - dt.timedelta(days=36)),
        ev("crs", date=infusion + dt.timedelta(days=3)),  # a date only
        ev("blinatumomab", -28, anchor="apheresis"),  # relative to apheresis only
        ev("fludarabine", -6, anchor="cart_infusion"),
        ev("icans"),  # no time
    )
    time = TimeResolver(c, "cart_infusion")
    days = {e.concept: time.day(e) for e in c.events}
    assert days == {
        "cart_infusion": 0,
        "apheresis": -36,
        "crs": 3,
        "blinatumomab": -64,
        "fludarabine": -6,
        "icans": None,
    }
    # the anchor's date may come from any event dated and placed relative to it
    no_date = case(
        "B",
        ev("cart_infusion", 0),
        ev("death", 10, date=dt.date(2021, 1, 11)),
        ev("last_follow_up", date=dt.date(2021, 2, 1)),
    )
    time = TimeResolver(no_date, "cart_infusion")
    assert [time.day(e) for e in no_date.events] == [0, 10, 31]


def test_windows_match_only_when_wholly_inside() -> None:
    cohort = [
        case("after-tcells", ev("cart_infusion", 0), ev("mrd", code="negative", window=(1, None))),
        case(
            "before-hsct",
            ev("hsct", date=dt.date(2022, 1, 1)),
            ev("mrd", code="negative", window=(None, -1), anchor="hsct"),
        ),
        case("undated", ev("mrd", code="negative")),
    ]
    measure = {"count": {"event": {"concept": "mrd", "value": "negative", "after": 0}}}
    assert value_of(cohort, measure) == 1
    day_5 = {"count": {"event": {"concept": "mrd", "day": 5}}}
    assert value_of(cohort, day_5) == 0
    # a window starting on day 5 is not day 5; it lies between 5 and 10
    days_5_to_10 = [case("w", ev("mrd", code="negative", window=(5, 10)))]
    assert value_of(days_5_to_10, day_5) == 0
    assert value_of(days_5_to_10, {"count": {"event": {"concept": "mrd", "between": [5, 10]}}}) == 1
    assert value_of(days_5_to_10, {"count": {"event": {"concept": "mrd", "between": [6, 10]}}}) == 0
    no_time = {"count": {"event": {"concept": "mrd", "value": "negative"}}}
    assert value_of(cohort, no_time) == 3
    before = {"count": {"event": {"concept": "mrd", "before": 0}}}
    assert value_of(cohort, before, anchor="hsct") == 1


def test_an_unresolvable_day_never_matches() -> None:
    # death dated, but the patient has no infusion at all: no day relative to it
    cohort = [case("A", ev("death", date=dt.date(2022, 5, 1)))]
    assert value_of(cohort, {"count": {"event": {"concept": "death", "after": -100000}}}) == 0
    assert value_of(cohort, {"count": {"event": {"concept": "death"}}}) == 1
    assert value_of(cohort, {"median_days": "death"}) is None


# -- other measures ----------------------------------------------------------------------


def test_median_days_and_median_values() -> None:
    cohort = [
        case("A", ev("last_follow_up", 100), ev("hsct", 0, cell_dose=4.0), age_at_diagnosis=8.0),
        case("B", ev("last_follow_up", 300), ev("hsct", 0, cell_dose=6.0), age_at_diagnosis=12.0),
        case("C", ev("last_follow_up", 200), ev("hsct", 0), age_at_diagnosis=5.0),
        case("D", ev("last_follow_up"), ev("chimerism", 100, number=99, unit="%")),
    ]
    (fu,) = summarise(cohort, study({"id": "fu", "median_days": {"concept": "last_follow_up"}}))
    assert (fu.value, fu.patients) == (200, ("A", "B", "C"))
    assert value_of(cohort[:2], {"median_days": "last_follow_up"}) == 200
    assert (
        value_of(
            [*cohort[:3], case("E", ev("last_follow_up", 101))], {"median_days": "last_follow_up"}
        )
        == 150.5
    )
    assert (
        value_of(cohort, {"median": {"event": {"concept": "hsct"}, "attribute": "cell_dose"}}) == 5
    )
    assert value_of(cohort, {"median": {"patient_attribute": "age_at_diagnosis"}}) == 8
    assert value_of(cohort, {"median": {"event": {"concept": "chimerism"}}}) == 99
    assert value_of([], {"median_days": "last_follow_up"}) is None


def test_count_events_counts_events_not_patients() -> None:
    cohort = [
        case("A", ev("crs", 1, grade=1), ev("crs", 20, grade=3)),
        case("B", ev("crs", 2, grade=2)),
    ]
    assert value_of(cohort, {"count_events": {"concept": "crs"}}) == 3
    assert value_of(cohort, {"count": {"event": {"concept": "crs"}}}) == 2
    assert (
        value_of(cohort, {"count_events": {"concept": "crs", "attributes": {"grade": [3, 4, 5]}}})
        == 1
    )


# -- loading -----------------------------------------------------------------------------


def _problem(**changes: Any) -> str:
    raw = {
        "name": "t",
        "anchor": "cart_infusion",
        "measures": [{"id": "m", "count": {"event": {"concept": "crs"}}}],
    }
    raw.update(changes)
    with pytest.raises(ConfigError) as caught:
        parse_study(raw, where="study t.yaml")
    return str(caught.value)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"anchor": "car_t"}, "anchor: unknown concept 'car_t'"),
        (
            {"measures": [{"id": "m", "count": {"event": {"concept": "dissease_status"}}}]},
            "measures[0] (m).count.event.concept: unknown concept 'dissease_status' (did you mean "
            "'disease_status'?)",
        ),
        (
            {
                "measures": [
                    {
                        "id": "m",
                        "count": {
                            "event": {"concept": "disease_status", "value": "complete_remision"}
                        },
                    }
                ]
            },
            "measures[0] (m).count.event.value: 'complete_remision' is not a value word of "
            "disease_status (did you mean 'complete_remission'?)",
        ),
        (
            {
                "measures": [
                    {
                        "id": "m",
                        "count": {"event": {"concept": "crs", "attributes": {"cd19": "negative"}}},
                    }
                ]
            },
            "measures[0] (m).count.event.attributes.cd19: crs has no attribute 'cd19'",
        ),
        (
            {
                "measures": [
                    {
                        "id": "m",
                        "count": {
                            "event": {"concept": "blinatumomab", "attributes": {"intent": "debulk"}}
                        },
                    }
                ]
            },
            "'debulk' is not a word of intent",
        ),
        (
            {"measures": [{"id": "m", "count": {"event": {"concept": "mrd"}, "test": "mrd_neg"}}]},
            "measures[0] (m).count.test: no predicate 'mrd_neg'",
        ),
        (
            {
                "predicates": {"p": {"not": "p"}},
                "measures": [{"id": "m", "count": {"event": {"concept": "mrd"}, "test": "p"}}],
            },
            "refers to itself",
        ),
        (
            {"measures": [{"id": "m", "count": {"event": {"value": "negative"}}}]},
            "measures[0] (m).count.event: a selector names its concept(s)",
        ),
        ({"expected": {"mm": 3}}, "expected: mm is not the id of a measure"),
        (
            {"measures": [{"id": "m", "count": "all", "median_days": "death"}]},
            "give exactly one of count",
        ),
        (
            {"measures": [{"id": "m", "count": {"event": {"concept": "crs", "dya": 0}}}]},
            "is invalid: measures[0].count.event.dya: Extra inputs are not permitted",
        ),
        (
            {"measures": [{"id": "m", "count": "al"}]},
            "measures[0].count: Input should be 'all' or",
        ),
        (
            {"plots": {"swimmer": {"end": ["last_followup"]}}},
            "plots.swimmer.end[0].concept: unknown concept 'last_followup'",
        ),
    ],
)
def test_a_bad_study_file_names_the_key_path(changes: dict[str, Any], expected: str) -> None:
    message = _problem(**changes)
    assert "study t.yaml" in message
    assert expected in message


def test_load_study_by_name_or_path(tmp_path: Path) -> None:
    assert study_path("seed") == STUDIES / "seed.yaml"
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({"name": "s", "anchor": "hsct", "measures": [{"id": "n", "count": "all"}]})
    )
    assert load_study(path).anchor == "hsct"
    assert load_study(str(path)).name == "s"
    with pytest.raises(ConfigError, match="cannot read study definition"):
        load_study(tmp_path / "missing.yaml")
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping of keys"):
        load_study(path)


@pytest.mark.parametrize("name", sorted(p.stem for p in STUDIES.glob("*.yaml")))
def test_every_shipped_study_file_loads(name: str) -> None:
    loaded = load_study(name)
    assert loaded.measures
    assert loaded.plots.swimmer is not None
    assert loaded.plots.survival


# -- plots -------------------------------------------------------------------------------


PLOTS = {
    "swimmer": {
        "end": ["last_follow_up", "death"],
        "markers": {"relapse": {"concept": "disease_status", "value": "relapse"}, "HSCT": "hsct"},
    },
    "survival": {
        "overall": {"event": "death", "censor": "last_follow_up"},
        "event_free": {
            "event": [{"concept": "disease_status", "value": ["relapse", "progression"]}, "death"],
            "censor": "last_follow_up",
        },
    },
}


def _km_cohort() -> list[Case]:
    return [
        case("A", ev("cart_infusion", 0), ev("death", 100), ev("last_follow_up", 100)),
        case(
            "B",
            ev("disease_status", -30, code="relapse"),  # before day 0: not an event
            ev("disease_status", 50, code="progression"),
            ev("hsct", 80),
            ev("last_follow_up", 400),
        ),
        case("C", ev("last_follow_up", 250)),
        case("D", ev("death", date=dt.date(2022, 1, 1))),  # no day: left out
        case("E", ev("death", 0), ev("disease_status", 0, code="relapse")),
        case("F", ev("last_follow_up", window=(300, None))),  # a window only: left out
        case(
            "G",
            ev("disease_status", 30, code="relapse"),
            ev("last_follow_up", 20),
            ev("last_follow_up", 365),
        ),  # latest follow-up censors
    ]


def test_km_durations_and_events_hand_checked() -> None:
    from fhir_cart.report.plots import survival_data

    definition = study({"id": "n", "count": "all"}, plots=PLOTS)
    overall = survival_data(_km_cohort(), definition, "overall")
    assert overall.label == "Overall survival"
    assert dict(
        zip(overall.patients, zip(overall.durations, overall.events, strict=True), strict=True)
    ) == {
        "A": (100, True),
        "B": (400, False),
        "C": (250, False),
        "E": (0, True),
        "G": (365, False),
    }
    assert overall.excluded == ("D", "F")
    efs = survival_data(_km_cohort(), definition, "event_free")
    assert dict(zip(efs.patients, zip(efs.durations, efs.events, strict=True), strict=True)) == {
        "A": (100, True),
        "B": (50, True),
        "C": (250, False),
        "E": (0, True),
        "G": (30, True),
    }


def test_swimmer_rows_hand_checked() -> None:
    from fhir_cart.report.plots import swimmer_rows

    rows = {
        r.study_id: r
        for r in swimmer_rows(_km_cohort(), study({"id": "n", "count": "all"}, plots=PLOTS))
    }
    assert set(rows) == {"A", "B", "C", "E", "G"}
    assert (rows["A"].end, rows["A"].ended_by) == (100, "death")  # death wins a tie
    assert rows["B"].markers == (("HSCT", 80), ("relapse", -30))
    assert (rows["G"].end, rows["G"].markers) == (365, (("relapse", 30),))


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_plots_are_written_as_png_and_svg(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    from fhir_cart.report.plots import write_plots

    written = write_plots(seed_cases(), SEED, tmp_path / "plots")
    assert sorted(p.name for p in written) == ["km.png", "km.svg", "swimmer.png", "swimmer.svg"]
    for path in written:
        data = path.read_bytes()
        assert len(data) > 5000, path
        if path.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            assert ET.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg"
    bare = study({"id": "n", "count": "all"})
    assert write_plots(seed_cases(), bare, tmp_path / "none") == []


SPEC_EXAMPLE = """
name: Marschollek 2022 — blinatumomab before CAR-T
anchor: cart_infusion          # days in measures are relative to this concept
predicates:                    # named event tests, reusable
  mrd_negative: {any: [{value: negative}, {comparator: ["<", "<="]}, {number: 0}]}
measures:
  - {id: patients, label: Patients, count: all}
  - id: blinatumomab_debulking
    label: Blinatumomab before apheresis
    count: {event: {concept: blinatumomab, attributes: {intent: debulking}}}
  - id: cr_at_infusion
    count: {event: {concept: disease_status, day: 0}, test: {value: complete_remission}}
  - id: relapses_cd19_negative
    count: {event: {concept: disease_status, value: relapse, after: 0}, pick: first,
            test: {attributes: {cd19: negative}}}
  - id: cr_mrd_negative_at_last_follow_up
    count: {all: [{event: {concept: disease_status}, pick: latest, test: {value: complete_remission}},
                  {event: {concept: mrd}, pick: latest, test: mrd_negative},
                  {not: {event: {concept: death}}}]}
  - {id: median_follow_up_days, median_days: {concept: last_follow_up}}
expected: {patients: 7}
plots:
  swimmer: {end: [last_follow_up, death], markers: {relapse: {concept: disease_status, value: relapse}, hsct: {concept: hsct}}}
  survival: {overall: {event: death, censor: last_follow_up}, event_free: {event: [{concept: disease_status, value: [relapse, progression]}, {concept: death}], censor: last_follow_up}}
"""  # noqa: E501 (verbatim from spec §5)


def test_the_example_of_the_spec_loads_and_agrees_with_the_seed_study() -> None:
    example = parse_study(yaml.safe_load(SPEC_EXAMPLE))
    mine = {r.id: r.value for r in summarise(seed_cases(), SEED)}
    theirs = {r.id: r.value for r in summarise(seed_cases(), example)}
    assert theirs == {k: mine[k] for k in theirs}


def test_a_zero_is_a_value_of_a_median_not_a_missing_one() -> None:
    """Day 0 (the anchor's own day) and a measured 0 count: [0, 10, 20] has median 10,
    where leaving the 0 out gives 15."""
    cohort = [
        case("A", ev("last_follow_up", 0), ev("chimerism", 5, number=0, unit="%")),
        case("B", ev("last_follow_up", 10), ev("chimerism", 5, number=10, unit="%")),
        case("C", ev("last_follow_up", 20), ev("chimerism", 5, number=20, unit="%")),
    ]
    (fu,) = summarise(cohort, study({"id": "fu", "median_days": {"concept": "last_follow_up"}}))
    assert (fu.value, fu.patients) == (10, ("A", "B", "C"))
    assert value_of(cohort, {"median": {"event": {"concept": "chimerism"}}}) == 10
