"""Swimmer plot and Kaplan-Meier curves of a case series, configured by the study file's
``plots`` (:mod:`fhir_cart.library.studies`).

- Swimmer: one bar per patient from day 0 (the study's anchor) to the latest of the ``end``
  events (e.g. last follow-up, death); each marker (a named event selector) is drawn at the
  day of every matching event, with a legend. Patients with no resolvable end are left out,
  and so are patients with an end known only to a year or a month (a partial date).
- Kaplan-Meier: per curve, the duration is the day of the first ``event`` on or after day 0
  (observed), else the day of the latest ``censor`` event (censored). Events before day 0
  (e.g. a relapse before the infusion) are not events of the curve. Patients with neither a
  day-resolved event nor a censor day are left out (listed in :class:`SurvivalData`), and so
  are patients whose event (or, with no event, censor) is known only to a year or a month.

Days are resolved as in :mod:`fhir_cart.report.evaluate` (only exact days: windows are not
drawn).
Drawn with matplotlib's Agg canvas (no display needed); the survival estimate is lifelines'
KaplanMeierFitter. The pure functions :func:`swimmer_rows` and :func:`survival_data` give
what is drawn.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.library.studies import EventTest, StudyDefinition, SurvivalCurve
from fhir_cart.records import Case
from fhir_cart.report.evaluate import _Patient

__all__ = [
    "SurvivalData",
    "SwimmerRow",
    "at_risk",
    "km_title",
    "marker_style",
    "plot_km",
    "plot_swimmer",
    "survival_data",
    "swimmer_rows",
    "swimmer_title",
    "write_plots",
]

FORMATS = ("png", "svg")
_MARKERS = ("v", "D", "X", "s", "^", "P", "*", "o", "<", ">")
_COLOURS = (
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#7f7f7f",
    "#1f77b4",
    "#000000",
)
"""Marker colours: none is the red of a bar ended by death."""
_LABELS = {"overall": "Overall survival", "event_free": "Event-free survival"}
LABELLED_ROWS = 60
"""A swimmer plot names each patient on its axis up to this many rows; above, the bars
are drawn thinner and unnamed (a thousand labels take matplotlib minutes to lay out)."""


def marker_style(key: str, taken: Iterable[tuple[str, str]] = ()) -> tuple[str, str]:
    """The (marker, colour) of a concept (or marker name): picked by a hash of ``key`` alone,
    so a concept looks the same in every study's plot; a pair ``taken`` already in the same
    plot moves to the next one."""
    import hashlib

    start = int(hashlib.sha256(key.encode()).hexdigest(), 16)
    used = set(taken)
    pairs = [(m, c) for m in _MARKERS for c in _COLOURS]
    for step in range(len(pairs)):
        pair = pairs[(start + step) % len(pairs)]
        if pair not in used:
            return pair
    return pairs[start % len(pairs)]


def _marker_key(name: str, selector: EventTest) -> str:
    return selector.concept[0] if selector.concept else name


@dataclass(frozen=True)
class SwimmerRow:
    study_id: str
    end: float
    """Day of the bar's end (latest ``end`` event)."""
    ended_by: str
    """Concept of the event that ends the bar."""
    markers: tuple[tuple[str, float], ...]
    """(marker name, day) for every marker event with an exact day."""


@dataclass(frozen=True)
class SurvivalData:
    """What a Kaplan-Meier curve is fitted on."""

    name: str
    label: str
    patients: tuple[str, ...]
    durations: tuple[float, ...]
    events: tuple[bool, ...]
    """True: the event was observed at that duration; False: censored."""
    excluded: tuple[str, ...] = ()
    """Patients with neither an event day nor a censor day, and those of ``partial``."""
    partial: tuple[str, ...] = ()
    """Patients left out because an event (or, with no event, a censor) is known only to a
    year or a month: its day after the anchor is a window, and neither an event day nor a
    censoring before it can be told."""


def _days(patient: _Patient, selectors: Sequence[EventTest]) -> list[tuple[float, str]]:
    found = []
    for event in patient.case.events:
        if any(patient.passes(s, event) for s in selectors):
            day = patient.day(event)
            if day is not None:
                found.append((day, event.concept))
    return found


def _only_window(patient: _Patient, selectors: Sequence[EventTest]) -> bool:
    """Whether a selected event has no exact day because it rests on a partial date."""
    for event in patient.case.events:
        if any(patient.passes(s, event) for s in selectors):
            patient.time.partial = False
            if patient.day(event) is None and patient.time.partial:
                return True
    return False


def swimmer_rows(cases: Iterable[Case], study: StudyDefinition) -> list[SwimmerRow]:
    """One row per patient with a resolvable end, in input order; none for a patient with
    an end event known only to a year or a month (where the bar ends cannot be told)."""
    config = study.plots.swimmer
    if config is None:
        return []
    rows = []
    for case in cases:
        patient = _Patient(case, study)
        ends = _days(patient, config.end)
        if not ends or _only_window(patient, config.end):
            continue
        end, ended_by = max(ends, key=lambda d: (d[0], d[1] == "death"))  # death wins a tie
        marks = [
            (name, day)
            for name, selector in config.markers.items()
            for day, _ in _days(patient, [selector])
        ]
        rows.append(SwimmerRow(case.patient.study_id, end, ended_by, tuple(sorted(marks))))
    return rows


def survival_data(
    cases: Iterable[Case], study: StudyDefinition, name: str, curve: SurvivalCurve | None = None
) -> SurvivalData:
    """Durations (days after the anchor) and event flags of one survival curve."""
    curve = curve or study.plots.survival[name]
    ids, durations, events, excluded, partial = [], [], [], [], []
    for case in cases:
        patient = _Patient(case, study)
        hits = [day for day, _ in _days(patient, curve.event) if day >= 0]
        censor = [day for day, _ in _days(patient, curve.censor)]
        if _only_window(patient, curve.event) or (not hits and _only_window(patient, curve.censor)):
            excluded.append(case.patient.study_id)
            partial.append(case.patient.study_id)
            continue
        if hits:
            durations.append(min(hits))
            events.append(True)
        elif censor:
            durations.append(max(censor))
            events.append(False)
        else:
            excluded.append(case.patient.study_id)
            continue
        ids.append(case.patient.study_id)
    label = curve.label or _LABELS.get(name, name.replace("_", " ").capitalize())
    return SurvivalData(
        name, label, tuple(ids), tuple(durations), tuple(events), tuple(excluded), tuple(partial)
    )


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _title(ax: Any, figure: Any, title: str) -> None:
    """The axes' title, broken into lines that fit the figure's width (constrained layout
    makes room for lines, never for a line that runs past the edge)."""
    import textwrap

    fits = int(figure.get_figwidth() * 8.5)  # characters of the title font per line
    ax.set_title(textwrap.fill(title, fits, break_long_words=False))


def _save(figure: Any, out_dir: Path, stem: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        figure.savefig(path, format=fmt, metadata=metadata)
        written.append(path)
    return written


def _anchor_label(study: StudyDefinition, library: ConceptLibrary | None) -> str:
    if library is None:
        from fhir_cart.errors import ConfigError
        from fhir_cart.library.studies import _default_library

        try:
            library = _default_library()
        except ConfigError:
            library = None
    if library is not None and library.has(study.anchor):
        label = library.concept(study.anchor).label
        return label[:1].lower() + label[1:] if label[1:2].islower() else label
    return study.anchor.replace("_", " ")


def swimmer_title(
    study: StudyDefinition,
    rows: int,
    patients: int,
    about: str | None = None,
    library: ConceptLibrary | None = None,
) -> str:
    """The study's own ``plots.swimmer.title`` when no ``about`` is given (it describes the
    study's cohort); else one naming the data shown (``about``, e.g. an upload), with the
    patients drawn of those given when some have no bar."""
    config = study.plots.swimmer
    course = f"course after {_anchor_label(study, library)}"
    if about is None:
        if config is not None and config.title:
            return config.title
        return f"{study.name} — {course}"
    drawn = f", {rows} of {patients} patients" if rows != patients else ""
    return f"{about[:1].upper()}{about[1:]} — {course}{drawn}"


def plot_swimmer(
    cases: Iterable[Case],
    study: StudyDefinition,
    out_dir: Path,
    library: ConceptLibrary | None = None,
    formats: Sequence[str] = FORMATS,
    about: str | None = None,
) -> list[Path]:
    """swimmer.png and swimmer.svg (nothing when the study has no swimmer plot); ``about``:
    what the patients are, for the title (:func:`swimmer_title`)."""
    config = study.plots.swimmer
    cases = list(cases)
    rows = swimmer_rows(cases, study)
    if config is None or not rows:
        return []
    rows.sort(key=lambda r: r.end)
    named = len(rows) <= LABELLED_ROWS
    legend = len(config.markers) + 2  # the markers, then the two bar colours
    tall = max(1.2 + 0.45 * len(rows), 0.5 + 0.2 * legend)  # the legend fits beside the bars
    figure = _figure(8, tall if named else min(6 + 0.01 * len(rows), 24))
    ax = figure.add_subplot()
    colours = {"death": "#b2182b"}
    ends, bars = [row.end for row in rows], [colours.get(r.ended_by, "#4393c3") for r in rows]
    if named:
        ax.barh(range(len(rows)), ends, left=0, height=0.55, color=bars, alpha=0.85)
    else:  # one line collection: a thousand bar patches took seconds to lay out and draw
        width = 0.8 * figure.get_figheight() * 72 / len(rows)
        ax.hlines(
            range(len(rows)), 0, ends, colors=bars, linewidth=width, alpha=0.85, rasterized=True
        )
    styles: dict[str, tuple[str, str]] = {}
    for name, selector in sorted(config.markers.items()):
        styles[name] = marker_style(_marker_key(name, selector), styles.values())
    for name in config.markers:
        xs = [day for row in rows for marker, day in row.markers if marker == name]
        ys = [y for y, row in enumerate(rows) for marker, _ in row.markers if marker == name]
        symbol, colour = styles[name]
        ax.scatter(
            xs,
            ys,
            marker=symbol,
            s=70 if named else 12,
            zorder=3,
            color=colour,
            edgecolors="black",
            linewidths=0.6,
            label=name,
            rasterized=not named,
        )
    from matplotlib.patches import Patch

    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Patch(color="#4393c3", label="alive at last follow-up"),
        Patch(color="#b2182b", label="ended by death"),
    ]
    # beside the axes: inside them it covered the only bar of a one- or two-patient plot
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    if named:
        ax.set_yticks(range(len(rows)), [r.study_id for r in rows])
    else:
        ax.set_yticks([])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"Days after {_anchor_label(study, library)}")
    ax.set_ylabel("Patient" if named else f"{len(rows)} patients, by length of follow-up")
    _title(ax, figure, swimmer_title(study, len(rows), len(cases), about, library))
    ax.grid(axis="x", alpha=0.3)
    return _save(figure, out_dir, "swimmer", formats)


def _step_at(times: Sequence[float], values: Sequence[float], at: float) -> float:
    """A step function's value at ``at`` (the last step at or before it): what lifelines'
    ``predict`` gives, without a pandas lookup per point."""
    import bisect

    return float(values[max(bisect.bisect_right(times, at) - 1, 0)])


def at_risk(durations: Sequence[float], times: Sequence[float]) -> list[int]:
    """Patients still at risk at each time: those whose duration (event or censoring) is
    not before it."""
    return [sum(1 for d in durations if d >= t) for t in times]


def km_title(
    study: StudyDefinition,
    curves: Sequence[SurvivalData],
    patients: int,
    about: str | None = None,
) -> str:
    """The study's own ``plots.survival_title`` when no ``about`` is given (it describes the
    study's cohort), else one that says whose data it is (``about``, e.g. an upload, or
    "this data set") and how many of the ``patients`` given are in the curves: a patient
    with no event or censoring day after the anchor is in none (never the paper's name)."""
    if about is None and study.plots.survival_title:
        return study.plots.survival_title
    whose = about or "this data set"
    counts = sorted({len(c.durations) for c in curves})
    if counts == [patients]:
        return f"Kaplan–Meier estimate, {patients} patients of {whose}"
    if len(counts) == 1:
        return f"Kaplan–Meier estimate, {counts[0]} of {patients} patients of {whose}"
    shown = f"{counts[0]}–{counts[-1]} of {patients} patients"  # the legend: each curve's n
    return f"Kaplan–Meier estimate, {shown} of {whose} (n per curve)"


def plot_km(
    cases: Iterable[Case],
    study: StudyDefinition,
    out_dir: Path,
    library: ConceptLibrary | None = None,
    formats: Sequence[str] = FORMATS,
    about: str | None = None,
) -> list[Path]:
    """km.png and km.svg: every survival curve of the study on one axes, each with its
    labelled 95 % confidence band and censoring ticks, and a number-at-risk table below
    (nothing when the study defines no curve); ``about``: what the patients are, for the
    title (:func:`km_title`)."""
    cases = list(cases)
    curves = [survival_data(cases, study, n) for n in study.plots.survival]
    curves = [c for c in curves if c.durations]
    if not curves:
        return []
    from lifelines import KaplanMeierFitter

    figure = _figure(7, 5.2 + 0.25 * len(curves))
    ax, table = figure.subplots(2, 1, sharex=True, height_ratios=[4, 0.6 + 0.3 * len(curves)])
    for index, data in enumerate(curves):
        fitter = KaplanMeierFitter()
        fitter.fit(list(data.durations), event_observed=list(data.events), label=data.label)
        times = list(fitter.survival_function_.index)
        survival = list(fitter.survival_function_.iloc[:, 0])
        band = fitter.confidence_interval_survival_function_
        colour = f"C{index}"
        observed = sum(data.events)
        ax.step(
            times,
            survival,
            where="post",
            color=colour,
            label=f"{data.label} (n={len(data.durations)}, events={observed})",
        )
        ax.fill_between(
            times,
            list(band.iloc[:, 0]),
            list(band.iloc[:, 1]),
            step="post",
            color=colour,
            alpha=0.15,
            linewidth=0,
            label=f"95 % confidence band, {data.label.lower()}",
        )
        censored = [d for d, e in zip(data.durations, data.events, strict=True) if not e]
        heights = [_step_at(times, survival, d) for d in censored]
        many = len(censored) > LABELLED_ROWS  # drawn as an image in the SVG: paths are slow
        ax.scatter(censored, heights, marker="|", s=120, color=colour, zorder=3, rasterized=many)
    longest = max(max(c.durations) for c in curves)
    ax.set_ylim(0, 1.05)
    ax.set_xlim(0, longest * 1.02 or 1)
    ax.set_ylabel("Probability")
    _title(ax, figure, km_title(study, curves, len(cases), about))
    ax.legend(loc="lower left", fontsize="small")
    ax.grid(alpha=0.3)
    ticks = [t for t in ax.get_xticks() if 0 <= t <= longest]
    for row, data in enumerate(reversed(curves)):
        for tick, count in zip(ticks, at_risk(data.durations, ticks), strict=True):
            table.text(tick, row, str(count), ha="center", va="center", fontsize="small")
    table.set_ylim(-0.6, len(curves) - 0.4)
    table.set_yticks(range(len(curves)), [c.label for c in reversed(curves)], fontsize="small")
    table.set_title("Number at risk", fontsize="small", loc="left")
    table.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        table.spines[side].set_visible(False)
    table.set_xlabel(f"Days after {_anchor_label(study, library)} (| censored)")
    return _save(figure, out_dir, "km", formats)


def write_plots(
    cases: Iterable[Case],
    study: StudyDefinition,
    out_dir: Path,
    library: ConceptLibrary | None = None,
    formats: Sequence[str] = FORMATS,
    about: str | None = None,
) -> list[Path]:
    """Every plot the study configures, as PNG and SVG (``formats``) in ``out_dir``; the
    files written (``library``: only for the anchor's label on the axes). ``about`` names
    the data when it is not the study's own cohort (e.g. "upload 1a2b3c4d"): the titles
    then name it, not the study's configured titles."""
    cases = list(cases)
    return plot_swimmer(cases, study, out_dir, library, formats, about) + plot_km(
        cases, study, out_dir, library, formats, about
    )
