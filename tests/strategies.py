"""Hypothesis strategies generating valid canonical records (every field, both time forms).

``cases()`` draws one valid :class:`~fhir_cart.records.Case` with every optional field
sometimes set and sometimes not, times as a date, a relative day, or both, ids and free text
that look like numbers or formulas ('007', '1e5', '=1+1'), and MRD as words, values with
comparators, percentages and fractions. ``cohorts()`` draws several cases with distinct
study ids. Numbers keep at most 12 significant digits (Excel keeps 15).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, get_args

from hypothesis import strategies as st

from fhir_cart import records as r

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-\.]{0,11}", fullmatch=True) | st.sampled_from(
    ["007", "1e5", "1.0", "12", "P-01"]
)
free_text = (
    st.text("ABCTBIGyé +/-,;'\"=()0123456789", min_size=1, max_size=30).map(str.strip).filter(bool)
)
dates = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2035, 12, 31))
days = st.integers(min_value=-400, max_value=4000)
anchors = st.sampled_from(r.ANCHORS)


# Measured values as labs report them: at most 12 significant digits (Excel keeps 15).
def _sig(x: float) -> float:
    return float(f"{x:.12g}")


positive = st.floats(min_value=0.001, max_value=1e6, allow_nan=False).map(_sig)


def _literal(name: str) -> st.SearchStrategy[Any]:
    return st.sampled_from(get_args(getattr(r, name)))


@st.composite
def whens(draw: st.DrawFn) -> r.When:
    form = draw(st.sampled_from(["date", "day", "both"]))
    date = draw(dates) if form in ("date", "both") else None
    day = draw(days) if form in ("day", "both") else None
    anchor = draw(anchors) if day is not None else None
    return r.When(date=date, day=day, anchor=anchor)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def patients(draw: st.DrawFn, centre: str | None = None) -> r.PatientRecord:
    return r.PatientRecord(
        study_id=draw(ids),
        centre=centre or draw(st.from_regex(r"[a-z0-9][a-z0-9\-]{0,8}", fullmatch=True)),
        sex=draw(_opt(_literal("Sex"))),
        birth_date=draw(_opt(dates)),
        age_at_diagnosis=draw(
            _opt(st.floats(min_value=0, max_value=30).map(lambda x: round(x, 1)))
        ),
        diagnosis_date=draw(_opt(dates)),
        disease_state=draw(_opt(_literal("DiseaseState"))),
        death=draw(_opt(whens())),
        last_follow_up=draw(_opt(whens())),
    )


@st.composite
def drugs(draw: st.DrawFn, event_id: str) -> r.DrugAdministration:
    dose = draw(_opt(positive))
    return r.DrugAdministration(
        event_id=event_id,
        agent=draw(_literal("Agent")),
        cycle=draw(_opt(st.integers(1, 99))),
        start=draw(whens()),
        end=draw(_opt(whens())),
        dose=dose,
        dose_unit=None if dose is None else draw(st.sampled_from(["ug/m2/d", "mg/m2", "mg"])),
        intent=draw(_opt(_literal("Intent"))),
        response=draw(_opt(_literal("Response"))),
    )


@st.composite
def procedures(draw: st.DrawFn, event_id: str) -> r.ProcedureRecord:
    kind = draw(_literal("ProcedureKind"))
    fields: dict[str, Any] = {"event_id": event_id, "kind": kind, "when": draw(whens())}
    if kind == "cart_infusion":
        fields["product"] = draw(_opt(st.just("tisagenlecleucel")))
        dose = draw(_opt(positive))
        fields["cell_dose"] = dose
        fields["cell_dose_unit"] = None if dose is None else "10*6/kg"
    if kind == "hsct":
        fields["donor_type"] = draw(_opt(_literal("DonorType")))
        fields["conditioning"] = draw(_opt(free_text))
    return r.ProcedureRecord(**fields)


@st.composite
def mrd_results(draw: st.DrawFn, event_id: str) -> r.MrdResult:
    unit = draw(_opt(st.sampled_from(["%", "1"])))
    value = None
    if unit is not None:
        top = 100.0 if unit == "%" else 1.0
        value = draw(st.just(0.0) | st.floats(min_value=1e-9, max_value=top).map(_sig))
    qualitative = draw(
        _literal("MrdQualitative") if value is None else _opt(_literal("MrdQualitative"))
    )
    return r.MrdResult(
        event_id=event_id,
        timepoint=draw(_literal("MrdTimepoint")),
        when=draw(whens()),
        method=draw(_literal("MrdMethod")),
        specimen=draw(_literal("Specimen")),
        value=value,
        unit=unit,
        comparator=None if value is None else draw(_opt(_literal("Comparator"))),
        qualitative=qualitative,
        sensitivity=draw(_opt(st.sampled_from([1e-3, 1e-4, 1e-5, 1e-6]))),
        marker=draw(_opt(st.sampled_from(["IGH", "TRG", "IGK-Kde"]) | free_text)),
    )


@st.composite
def statuses(draw: st.DrawFn, event_id: str) -> r.DiseaseStatus:
    return r.DiseaseStatus(
        event_id=event_id,
        when=draw(whens()),
        status=draw(_literal("Status")),
        cd19=draw(_opt(_literal("Cd19"))),
    )


@st.composite
def adverse_events(draw: st.DrawFn, event_id: str) -> r.AdverseEvent:
    return r.AdverseEvent(
        event_id=event_id,
        kind=draw(_literal("AdverseEventKind")),
        grade=draw(st.integers(1, 5)),
        when=draw(whens()),
    )


def _events(draw: st.DrawFn, maker: Any, prefix: str, most: int) -> tuple[Any, ...]:
    """Up to ``most`` events with ids unique within their kind (as Case requires)."""
    names = draw(st.lists(ids | st.just(prefix), max_size=most, unique=True))
    return tuple(draw(maker(name)) for name in names)


@st.composite
def cases(draw: st.DrawFn, centre: str | None = None) -> r.Case:
    return r.Case(
        patient=draw(patients(centre)),
        drugs=_events(draw, drugs, "drug", 3),
        procedures=_events(draw, procedures, "proc", 3),
        mrd=_events(draw, mrd_results, "mrd", 3),
        statuses=_events(draw, statuses, "status", 3),
        adverse_events=_events(draw, adverse_events, "ae", 2),
    )


@st.composite
def cohorts(draw: st.DrawFn, centre: str = "gen") -> list[r.Case]:
    """Several cases of one centre with distinct study ids."""
    items = draw(
        st.lists(cases(centre), min_size=1, max_size=4, unique_by=lambda c: c.patient.study_id)
    )
    return items
