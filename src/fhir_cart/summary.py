"""The counts a case-series paper reports, computed from case records.

Definitions (documented in README, used by the seed acceptance test):

- blinatumomab before apheresis / as bridging: patients with a blinatumomab administration of
  intent ``debulking`` / ``bridging``; responders: any blinatumomab administration with
  response ``response``; non-responders: only ``no_response`` recorded (unknown is neither).
- at infusion / day +28: disease status ``complete_remission`` on that day relative to the
  CAR-T infusion (0 / 28), and the MRD result of timepoint ``infusion`` / ``day_28``.
  MRD is negative when reported ``negative``, or as a number below the limit ("<0.01 %")
  without a positive qualitative result; anything else is positive.
- relapse: a ``relapse`` status after the infusion; CD19-negative when that status says so.
- in CR and MRD-negative at last follow-up: alive, latest status ``complete_remission`` and
  latest MRD result negative.
- follow-up: ``last_follow_up`` in days after the CAR-T infusion (median over patients that
  have it).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from fhir_cart.records import Case, DiseaseStatus, MrdResult, When

__all__ = ["PAPER", "Summary", "summarise"]


@dataclass
class Summary:
    patients: int = 0
    blinatumomab_debulking: int = 0
    blinatumomab_bridging: int = 0
    blinatumomab_both: int = 0
    blinatumomab_responders: int = 0
    blinatumomab_non_responders: int = 0
    cr_at_infusion: int = 0
    mrd_positive_at_infusion: int = 0
    mrd_negative_at_infusion: int = 0
    cr_at_day_28: int = 0
    mrd_negative_at_day_28: int = 0
    mrd_positive_at_day_28: int = 0
    relapses: int = 0
    relapses_cd19_negative: int = 0
    deaths: int = 0
    deaths_after_relapse: int = 0
    hsct_after_relapse: int = 0
    cr_mrd_negative_at_last_follow_up: int = 0
    median_follow_up_days: float | None = None
    follow_up_days: list[int] = field(default_factory=list)

    def as_rows(self) -> list[tuple[str, str]]:
        rows = [(k, str(v)) for k, v in asdict(self).items() if k != "follow_up_days"]
        return rows


PAPER: dict[str, int | float] = {
    "patients": 7,
    "blinatumomab_debulking": 6,
    "blinatumomab_bridging": 2,
    "blinatumomab_non_responders": 1,
    "cr_at_infusion": 7,
    "mrd_positive_at_infusion": 4,
    "mrd_negative_at_infusion": 3,
    "cr_at_day_28": 7,
    "mrd_negative_at_day_28": 6,
    "median_follow_up_days": 497,
    "cr_mrd_negative_at_last_follow_up": 4,
    "relapses": 3,
    "relapses_cd19_negative": 3,
    "deaths_after_relapse": 2,
    "hsct_after_relapse": 1,
}
"""What Marschollek et al. 2022 report (../shared/SEED.md), by Summary field."""


def _infusion_day(when: When, infusion: When | None) -> int | None:
    """Day relative to the CAR-T infusion, from the relative day or from dates."""
    if when.anchor == "cart_infusion" and when.day is not None:
        return when.day
    if infusion is not None and infusion.date is not None and when.date is not None:
        return (when.date - infusion.date).days
    return None


def _infusion(case: Case) -> When | None:
    return next((p.when for p in case.procedures if p.kind == "cart_infusion"), None)


def mrd_negative(result: MrdResult) -> bool:
    if result.qualitative is not None:
        return result.qualitative == "negative"
    return result.comparator in ("<", "<=") or result.value == 0


def _order(when: When, infusion: When | None) -> tuple[int, str]:
    day = _infusion_day(when, infusion)
    return (day if day is not None else 10**6, when.date.isoformat() if when.date else "")


def _status_on(case: Case, day: int, infusion: When | None) -> DiseaseStatus | None:
    return next(
        (s for s in case.statuses if _infusion_day(s.when, infusion) == day),
        None,
    )


def _mrd_at(case: Case, timepoint: str) -> MrdResult | None:
    return next((m for m in case.mrd if m.timepoint == timepoint), None)


def _blinatumomab(case: Case, summary: Summary) -> None:
    blina = [d for d in case.drugs if d.agent == "blinatumomab"]
    intents = {d.intent for d in blina}
    summary.blinatumomab_debulking += "debulking" in intents
    summary.blinatumomab_bridging += "bridging" in intents
    summary.blinatumomab_both += {"debulking", "bridging"} <= intents
    responses = {d.response for d in blina}
    summary.blinatumomab_responders += "response" in responses
    summary.blinatumomab_non_responders += responses == {"no_response"}


def _timepoint(case: Case, summary: Summary, infusion: When | None) -> None:
    for day, timepoint in ((0, "infusion"), (28, "day_28")):
        status = _status_on(case, day, infusion)
        in_cr = status is not None and status.status == "complete_remission"
        mrd = _mrd_at(case, timepoint)
        if day == 0:
            summary.cr_at_infusion += in_cr
            if mrd is not None:
                summary.mrd_negative_at_infusion += mrd_negative(mrd)
                summary.mrd_positive_at_infusion += not mrd_negative(mrd)
        else:
            summary.cr_at_day_28 += in_cr
            if mrd is not None:
                summary.mrd_negative_at_day_28 += mrd_negative(mrd)
                summary.mrd_positive_at_day_28 += not mrd_negative(mrd)


def _outcome(case: Case, summary: Summary, infusion: When | None) -> None:
    relapses = [
        s
        for s in case.statuses
        if s.status == "relapse" and (_infusion_day(s.when, infusion) or 0) > 0
    ]
    summary.deaths += case.patient.death is not None
    if relapses:
        first = min(relapses, key=lambda s: _order(s.when, infusion))
        summary.relapses += 1
        summary.relapses_cd19_negative += first.cd19 == "negative"
        summary.deaths_after_relapse += case.patient.death is not None
        summary.hsct_after_relapse += any(
            p.kind == "hsct" and _order(p.when, infusion) > _order(first.when, infusion)
            for p in case.procedures
        )
    _last_follow_up(case, summary, infusion)


def _last_follow_up(case: Case, summary: Summary, infusion: When | None) -> None:
    statuses = sorted(case.statuses, key=lambda s: _order(s.when, infusion))
    results = sorted(case.mrd, key=lambda m: _order(m.when, infusion))
    alive = case.patient.death is None
    if alive and statuses and results:
        in_cr = statuses[-1].status == "complete_remission"
        summary.cr_mrd_negative_at_last_follow_up += in_cr and mrd_negative(results[-1])
    if case.patient.last_follow_up is not None:
        day = _infusion_day(case.patient.last_follow_up, infusion)
        if day is not None:
            summary.follow_up_days.append(day)


def summarise(cases: Iterable[Case]) -> Summary:
    summary = Summary()
    for case in cases:
        summary.patients += 1
        infusion = _infusion(case)
        _blinatumomab(case, summary)
        _timepoint(case, summary, infusion)
        _outcome(case, summary, infusion)
    if summary.follow_up_days:
        summary.median_follow_up_days = statistics.median(summary.follow_up_days)
    return summary
