"""The mapping assistant in a real browser (issue 22), with a table this project has never
seen: made at test time from the seed cohort with column names and cell words drawn at
random from pools of other languages' and other teams' spellings (the draw is printed, so a
failure can be replayed with ``ASSISTANT_SEED``). One column is named so that the assistant
cannot know it: the person picks its concept in the page. Then: write the mapping (kept,
versioned, downloadable), the check is clean, push to a real FHIR server, pull the cohort
back, see the summary. axe-core finds no serious or critical violation on the new pages;
a screenshot of the assistant goes to docs/img/."""

from __future__ import annotations

import csv
import datetime as dt
import os
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_cart.library.study_mapping import load_study_mapping
from fhir_cart.records import Case
from fhir_cart.study import read_study
from tests.browser.conftest import PASSWORD, ROOT, Service, axe_violations
from tests.support import SEED_FILE, SEED_MAPPING

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHOTS = ROOT / "docs" / "img"
HEADERS = {
    "id": ["Kind-ID", "Pat-Nr", "Subject", "Patient no."],
    "sex": ["Geschlecht", "Gender", "Sexe"],
    "birth": ["Geburtsdatum", "DOB", "Date of birth"],
    "dx": ["Dx", "Diagnose", "Erkrankung"],
    "blina": ["Blina", "Blincyto", "Blina (ja/nein)"],
    "cart": ["CAR-T Datum", "CAR-T infusion", "Tag 0 (CAR-T)"],
    "crs": ["CRS grade", "CRS Grad", "CRS (grade)"],
    "mrd": ["MRD d28", "MRD Tag 28", "MRD day 28"],
    "fu": ["Letzter Kontakt", "Last FU", "Last seen"],
}
WORDS = {
    "female": ["weiblich", "w", "F", "girl"],
    "male": ["männlich", "m", "M", "boy"],
    "b_all": ["BCP-ALL", "B-ALL", "pre-B ALL"],
    "yes": ["ja", "yes", "x"],
    "no": ["nein", "no", "-"],
    "negative": ["neg", "negativ", "not detected"],
    "positive": ["pos", "positiv", "detected"],
}
DEATH = "Verstorben am"
"""A header no library word names: the person says it is the death date."""


def _first(case: Case, concept: str, **attributes: Any) -> Any:
    for event in case.events:
        if event.concept == concept and all(
            event.attributes.get(k) == v for k, v in attributes.items()
        ):
            return event
    return None


def unseen_table(path: Path, draw: random.Random) -> dict[str, str]:
    """The seed cohort as one wide row per child, headers and words drawn from the pools;
    the headers used, by role."""
    cases = read_study(SEED_FILE, load_study_mapping(SEED_MAPPING)).cases
    names = {role: draw.choice(pool) for role, pool in HEADERS.items()}
    words = {word: draw.choice(pool) for word, pool in WORDS.items()}
    day = "%d.%m.%Y"
    header = [*names.values(), DEATH, "Bemerkung"]
    rows = []
    for case in cases:
        mrd = _first(case, "mrd", timepoint="day_28")
        crs = _first(case, "crs")
        death = _first(case, "death")
        rows.append(
            [
                f"K-{case.patient.study_id[1:]}",
                words[case.patient.sex or "female"],
                case.patient.birth_date.strftime(day) if case.patient.birth_date else "",
                words["b_all"],
                words["yes"] if _first(case, "blinatumomab") else words["no"],
                _first(case, "cart_infusion").when.date.strftime(day),
                str(crs.attributes["grade"]) if crs else "0",
                words["negative" if mrd.value.code == "negative" else "positive"] if mrd else "",
                death.when.date.strftime(day) if death else "",
                _first(case, "last_follow_up").when.date.strftime(day),
                "synthetic test row",
            ]
        )
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter=";").writerows([header, *rows])
    return names


def accessible(page: Any) -> None:
    assert axe_violations(page) == [], page.url


def fhir_patients(service: Service) -> int:
    answer = httpx.get(f"{service.fhir}/Patient", params={"_summary": "count"}, timeout=30)
    total: int = answer.json()["total"]
    return total


def test_an_unseen_table_mapped_pushed_pulled_and_summarised(
    service: Service, browser: Any, tmp_path: Path
) -> None:
    seed = int(os.environ.get("ASSISTANT_SEED", dt.datetime.now().microsecond))
    print(f"ASSISTANT_SEED={seed}")
    table = tmp_path / "kohorte_neu.csv"
    names = unseen_table(table, random.Random(seed))

    context = browser.new_context(bypass_csp=True, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)  # a loaded machine: the summary draws plots
    page.goto(service.url + "/ui/login")
    page.fill("#user", "ana")
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Sign in') >> nth=0")
    assert page.url == service.url + "/ui/"

    # a table with no mapping: the assistant
    page.click("nav >> text=Mapping assistant")
    accessible(page)
    page.set_input_files("#file", str(table))
    page.click("button:has-text('Suggest a mapping')")
    assert re.search(r"/ui/uploads/[0-9a-f]{32}/assistant$", page.url)
    upload_url = page.url.removesuffix("/assistant")
    assert fhir_patients(service) == 0

    def row(header: str) -> Any:
        return page.locator("#columns tr", has=page.locator(f"th:text-is('{header}')"))

    # what it suggests, with the library's labels and codes
    assert "rxnorm 1597258" in row(names["blina"]).inner_text()
    assert "Cytokine release syndrome" in row(names["crs"]).inner_text()
    assert "unsure" in (row(DEATH).get_attribute("class") or "")  # left for the person
    assert "unsure" in (row("Bemerkung").get_attribute("class") or "")
    accessible(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "workbench-assistant.png"), full_page=False)

    # the person says what the unknown column holds: its field comes in (htmx)
    death_index = row(DEATH).get_attribute("id").removeprefix("column-")  # type: ignore[union-attr]
    page.select_option(f"#t{death_index}", "concept:death")
    page.wait_for_selector(f"#f{death_index}")
    assert page.input_value(f"#f{death_index}") == "when_date"
    page.fill("#name", "kohorte-neu")
    page.fill("#centre", "kh-nord")
    page.select_option("#study", "seed")
    accessible(page)
    page.click("button:has-text('Write the mapping and check the file')")

    # the check of the file with the kept mapping (in the background: the page follows it
    # and shows the check when it ends): clean
    assert page.url == upload_url
    page.wait_for_selector("#check-summary", timeout=120_000)
    assert "kohorte-neu-v1" in page.inner_text("#check-summary")
    assert "No problems found." in page.inner_text("#check-summary")
    assert "7</strong> patients" in page.inner_html("#check-summary")
    records = page.inner_text("#records-title + table")
    assert "death" in records
    assert "crs" in records

    # the kept mapping: listed and downloadable
    page.click("nav >> text=Mappings")
    accessible(page)
    with page.expect_download() as download:
        page.click("text=kohorte-neu-v1.yaml")
    kept = Path(download.value.path()).read_text(encoding="utf-8")
    assert "centre: kh-nord" in kept
    assert f"when_date: {DEATH}" in kept

    # push, then pull the centre's patients back
    page.goto(upload_url)
    page.click("button:has-text('Push')")
    page.wait_for_selector("#job[data-finished=yes]", timeout=120_000)
    assert page.inner_text("#job-status") == "succeeded"
    assert fhir_patients(service) == 7
    page.goto(service.url + "/ui/")
    page.select_option("#pull-server", "local")
    page.fill("#pull-query", "identifier=https://fhir-cart.dev/fhir/id/kh-nord/patient|")
    page.fill("#pull-study", "seed")
    page.click("button:has-text('Start the pull')")
    page.wait_for_selector("#job[data-finished=yes]", timeout=120_000)
    assert page.inner_text("#job-status") == "succeeded"
    with page.expect_download() as download:
        page.click("text=Download the tables (csv, zip)")
    tables = zipfile.ZipFile(download.value.path())
    patients = tables.read("patients.csv").decode()
    assert all(f"K-{n:02d}" in patients for n in range(1, 8))

    # the study's summary and plots for the mapped file
    page.goto(upload_url + "/summary")
    page.wait_for_selector("#measures", timeout=180_000)  # worked out in the background
    assert page.locator("img.plot").count() >= 1
    accessible(page)
