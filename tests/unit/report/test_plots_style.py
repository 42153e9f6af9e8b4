"""What a new user saw in the plots (issue 22 item 8): a concept had another marker and
colour in each study; the Kaplan-Meier plot had no number-at-risk table, no label for its
band and the seed paper's name as title over any data; a thousand patients took minutes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from fhir_cart.library.studies import parse_study
from fhir_cart.records import Case
from fhir_cart.report.plots import (
    SurvivalData,
    at_risk,
    km_title,
    marker_style,
    plot_km,
    plot_swimmer,
    write_plots,
)
from tests.unit.report.test_summary import _km_cohort, case, ev

SVG = "{http://www.w3.org/2000/svg}"


def plotted(**plots: Any) -> Any:
    return parse_study(
        {
            "name": "Paper 2022 — seed",
            "anchor": "cart_infusion",
            "measures": [{"id": "n", "count": "all"}],
            "plots": plots,
        }
    )


def texts(svg: Path) -> list[str]:
    """The SVG's text, as matplotlib writes it: each string in a comment before its glyphs
    (a title broken into lines: its lines joined again)."""
    import re

    found = re.findall(r"<!-- (.*?) -->", svg.read_text())
    return [*found, " ".join(found)]


def test_a_concept_has_one_marker_and_colour_in_every_study() -> None:
    one = {"relapse": {"concept": "disease_status", "value": "relapse"}, "HSCT": "hsct"}
    other = {"transplant": "hsct", "death": "death", "crs": "crs", "icans": "icans"}
    styles = []
    for markers in (one, other):
        study = plotted(swimmer={"end": ["last_follow_up"], "markers": markers})
        assert study.plots.swimmer is not None
        taken: list[tuple[str, str]] = []
        found = {}
        for name, selector in sorted(study.plots.swimmer.markers.items()):
            found[name] = marker_style(selector.concept[0] if selector.concept else name, taken)
            taken.append(found[name])
        styles.append(found)
    assert styles[0]["HSCT"] == styles[1]["transplant"]  # hsct, whatever the marker's name
    assert len(set(styles[1].values())) == 4  # never two markers alike in one plot


def test_a_taken_style_moves_to_the_next() -> None:
    first = marker_style("hsct")
    assert marker_style("hsct", [first]) != first
    assert marker_style("hsct") == first


def test_number_at_risk_hand_checked() -> None:
    assert at_risk([0, 50, 100, 250, 365, 400], [0, 100, 200, 300, 400]) == [6, 4, 3, 2, 1]


def test_the_km_plot_has_its_table_its_labelled_band_and_a_title_of_its_own(
    tmp_path: Path,
) -> None:
    survival = {"overall": {"event": "death", "censor": "last_follow_up"}}
    (svg,) = plot_km(_km_cohort(), plotted(survival=survival), tmp_path, formats=("svg",))
    shown = texts(svg)
    assert ET.fromstring(svg.read_bytes()).tag == f"{SVG}svg"
    assert "Number at risk" in shown
    assert "95 % confidence band, overall survival" in shown
    # the title counts the patients in the curve (D and F have no day: left out)
    assert "Kaplan–Meier estimate, 5 of 7 patients of this data set" in shown
    assert not any("Paper 2022" in t for t in shown)  # the paper's name is not the data's
    # the table's counts: 5 patients at day 0, 4 at 100 (A's death at 100 still at risk)
    assert {"5", "4"} <= set(shown)
    own = plotted(survival=survival, survival_title="Our centre, 2019–2024")
    (again,) = plot_km(_km_cohort(), own, tmp_path / "own", formats=("svg",))
    assert "Our centre, 2019–2024" in texts(again)


def test_the_plots_of_other_data_name_that_data_not_the_studys_cohort(tmp_path: Path) -> None:
    """An upload of centre B under the seed study showed "SYNTHETIC seed cohort" over its
    swimmer plot: the study's own titles describe its cohort, not the data shown."""
    study = plotted(
        swimmer={"title": "SYNTHETIC seed cohort — course", "end": ["last_follow_up", "death"]},
        survival={"overall": {"event": "death", "censor": "last_follow_up"}},
        survival_title="Seed cohort, 2019–2024",
    )
    about = "upload 1a2b3c4d (mapping centre_b)"
    swimmer, km = write_plots(_km_cohort(), study, tmp_path, formats=("svg",), about=about)
    shown = " ".join(texts(swimmer) + texts(km))
    assert "seed cohort" not in shown.lower()
    # 5 of the 7 patients have a day for their bar and are in the curve (D, F: no day)
    assert (
        "Upload 1a2b3c4d (mapping centre_b) — course after CAR T-cell infusion, 5 of 7 patients"
        in shown
    )
    assert "Kaplan–Meier estimate, 5 of 7 patients of upload 1a2b3c4d (mapping centre_b)" in shown
    # the study's own data, with no ``about``: its own titles
    swimmer, km = write_plots(_km_cohort(), study, tmp_path / "own", formats=("svg",))
    assert "SYNTHETIC seed cohort — course" in texts(swimmer)
    assert "Seed cohort, 2019–2024" in texts(km)


def test_the_km_title_gives_the_patients_in_the_curves() -> None:
    def curve(n: int) -> SurvivalData:
        ids = tuple(str(i) for i in range(n))
        return SurvivalData("c", "C", ids, tuple(range(n)), (True,) * n)

    study = plotted(survival={"overall": {"event": "death", "censor": "last_follow_up"}})
    # the seed-under-centre-B case: 2 patients given, 1 with an infusion in the curves
    assert km_title(study, [curve(1), curve(1)], 2) == (
        "Kaplan–Meier estimate, 1 of 2 patients of this data set"
    )
    assert km_title(study, [curve(2)], 2) == "Kaplan–Meier estimate, 2 patients of this data set"
    assert km_title(study, [curve(3), curve(5)], 9, "upload x") == (
        "Kaplan–Meier estimate, 3–5 of 9 patients of upload x (n per curve)"
    )


@pytest.mark.slow
def test_a_thousand_patients_are_drawn_without_a_label_each(tmp_path: Path) -> None:
    cases: list[Case] = [
        case(f"P{n:04d}", ev("last_follow_up", 100 + n % 300), ev("hsct", 50)) for n in range(1000)
    ]
    study = plotted(swimmer={"end": ["last_follow_up"], "markers": {"HSCT": "hsct"}})
    (svg,) = plot_swimmer(cases, study, tmp_path, formats=("svg",))
    shown = texts(svg)
    assert "1000 patients, by length of follow-up" in shown
    assert not any(t.startswith("P0") for t in shown)


def test_the_swimmer_plot_draws_a_concept_in_its_own_style(tmp_path: Path) -> None:
    _, colour = marker_style("hsct")
    for n, markers in enumerate(({"HSCT": "hsct"}, {"transplant": "hsct", "x": "death"})):
        study = plotted(swimmer={"end": ["last_follow_up"], "markers": markers})
        (svg,) = plot_swimmer(_km_cohort(), study, tmp_path / str(n), formats=("svg",))
        assert f"fill: {colour}" in svg.read_text()


def test_the_swimmer_legend_covers_no_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one or two patients the legend (inside the axes, lower right) was drawn over the
    only bar; it now stands beside the axes, clear of every bar and marker."""
    from fhir_cart.report import plots

    drawn: list[Any] = []
    monkeypatch.setattr(plots, "_save", lambda figure, *_: drawn.append(figure) or [])
    study = plotted(
        swimmer={
            "end": ["last_follow_up", "death"],
            "markers": {
                "relapse": {"concept": "disease_status", "value": "relapse"},
                **{
                    name: {"concept": name}
                    for name in ("hsct", "death", "crs", "icans", "acute_gvhd")
                },
            },
        }
    )
    one = [case("B-202", ev("cart_infusion", 0), ev("last_follow_up", 309))]
    plot_swimmer(one, study, tmp_path, formats=("svg",))
    (figure,) = drawn
    figure.canvas.draw()
    (ax,) = figure.axes
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes.x1  # beside the axes, not over them
    assert figure.bbox.contains(legend.x1 - 1, legend.y0 + 1)  # and inside the figure
    assert figure.bbox.contains(legend.x1 - 1, legend.y1 - 1)  # all of its eight entries
