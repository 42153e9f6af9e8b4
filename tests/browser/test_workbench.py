"""The workbench in a real browser (issue 22): sign in, upload a file with a bad cell, see
the check with the cell marked, push the good rows to a real FHIR server and watch the job
live; axe-core finds no serious or critical violation on any page; nothing is loaded from
anywhere but the service; the server log holds no patient data. Screenshots go to
docs/img/ (the README shows them)."""

from __future__ import annotations

import csv
import re
import zipfile
from typing import Any

import httpx
import pytest

from tests.browser.conftest import PASSWORD, ROOT, Service, axe_violations

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAD_FILE = ROOT / "fixtures" / "bad" / "centre_b_bad.csv"
SHOTS = ROOT / "docs" / "img"


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"workbench-{name}.png"), full_page=True)


def accessible(page: Any) -> None:
    assert axe_violations(page) == [], page.url


def test_sign_in_upload_check_push(service: Service, browser: Any) -> None:
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))

    # sign-in: the service's root leads there
    page.goto(service.url + "/")
    assert page.url == service.url + "/ui/login"
    accessible(page)
    page.fill("#user", "ana")
    page.fill("#password", "not the password")
    page.click("button:has-text('Sign in') >> nth=0")
    assert "not accepted" in page.inner_text("[role=alert]")
    page.fill("#user", "ana")
    page.fill("#password", PASSWORD)
    shot(page, "signin")
    page.click("button:has-text('Sign in') >> nth=0")
    assert page.url == service.url + "/ui/"
    cookie = next(c for c in context.cookies() if c["name"] == "fhir_cart_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    accessible(page)

    # upload and check: a file with bad cells, nothing sent yet
    page.set_input_files("#file", str(BAD_FILE))
    page.select_option("#mapping", "centre_b")
    shot(page, "home")
    page.click("button:has-text('Check the file')")
    assert re.search(r"/ui/uploads/[0-9a-f]{32}$", page.url)
    # checked in the background: the page follows the check and shows it when it ends
    page.wait_for_selector("#check-summary", timeout=120_000)
    assert fhir_patients(service) == 0
    bad = page.locator("td.bad", has_text="31.02.2021")
    assert bad.count() == 1
    assert "does not exist in February" in (bad.get_attribute("title") or "")
    problems = page.inner_text("#rejects")
    assert "CAR-T date" in problems
    assert "write a real date" in problems
    assert "B-203" in page.inner_text("#records-title + table")
    page.click("summary:has-text('transaction bundle')")
    assert '"resourceType": "Bundle"' in page.inner_text("pre.fhir")
    accessible(page)
    shot(page, "check")

    # push the good rows: the job page follows it live to the end
    page.check("#continue_on_error")
    page.click("button:has-text('Push')")
    assert re.search(r"/ui/jobs/\d+$", page.url)
    page.wait_for_selector("#job[data-finished=yes]", timeout=120_000)
    assert page.inner_text("#job-status") == "succeeded"
    assert "created" in page.inner_text("#counts-title + table")
    accessible(page)
    shot(page, "job")
    assert fhir_patients(service) == 2

    # the study's measures and plots for the file
    page.go_back()
    page.click("text=The study's measures and plots for this file")
    page.wait_for_selector("#measures", timeout=120_000)  # worked out in the background
    assert page.locator("img.plot").count() >= 1
    # the plots name the upload (centre B's file under the seed study), not the seed cohort
    upload = re.search(r"/ui/uploads/([0-9a-f]{8})", page.url)
    assert upload is not None
    for src in page.locator("img.plot").evaluate_all("imgs => imgs.map(i => i.src)"):
        svg = page.request.get(src).text()
        assert "seed cohort" not in svg
        assert f"pload {upload.group(1)}" in svg
    accessible(page)
    shot(page, "summary")

    # pull the centre's patients back, followed live as well
    page.goto(service.url + "/ui/")
    page.select_option("#pull-server", "local")
    page.fill("#pull-query", "identifier=https://fhir-cart.dev/fhir/id/centre-b/patient|")
    page.click("button:has-text('Start the pull')")
    page.wait_for_selector("#job[data-finished=yes]", timeout=120_000)
    assert page.inner_text("#job-status") == "succeeded"
    assert "pull" in page.inner_text("h1")
    accessible(page)
    with page.expect_download() as download:
        page.click("text=Download the tables (csv, zip)")
    tables = zipfile.ZipFile(download.value.path())
    assert "patients.csv" in tables.namelist()
    assert "B-203" in tables.read("patients.csv").decode()

    # the API documentation, from the wheel, after sign-in; this time with the pages'
    # Content-Security-Policy in force (the journey above bypasses it to inject axe-core),
    # which keeps ReDoc's one CDN image (its footer's logo) from being fetched
    docs = browser.new_context(storage_state=context.storage_state()).new_page()
    docs.on("request", lambda request: asked.append(request.url))
    failed: dict[str, str] = {}
    docs.on("requestfailed", lambda r: failed.__setitem__(r.url, r.failure or ""))
    docs.goto(service.url + "/docs")
    docs.wait_for_selector(".swagger-ui .info", timeout=30_000)
    assert "fhir_cart" in docs.inner_text(".swagger-ui .info")
    shot(docs, "docs")
    docs.goto(service.url + "/redoc")
    docs.wait_for_selector("text=Move clinical case-series data", timeout=30_000)

    own = (service.url, "blob:" + service.url)  # blob: URLs are the page's own objects
    outside = [u for u in asked if not u.startswith(own)]
    # nothing left the machine: ReDoc's footer asks for its logo from a CDN, and the
    # pages' Content-Security-Policy refuses it before any connection is made
    assert {u: failed.get(u) for u in outside} == {u: "csp" for u in outside}
    assert set(outside) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
    assert_no_patient_data(service.log.read_text())


def fhir_patients(service: Service) -> int:
    answer = httpx.get(f"{service.fhir}/Patient", params={"_summary": "count"}, timeout=30)
    total: int = answer.json()["total"]
    return total


def assert_no_patient_data(log: str) -> None:
    """No cell of the study file (patient ids, dates, values) is in the server's log."""
    with BAD_FILE.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    cells = {c for row in rows[1:] for c in row if len(c) >= 4 and not c.startswith("SYNTH")}
    assert len(cells) > 20
    assert "sign-in" in log  # the log was written (the service logs sign-ins, by role only)
    leaked = sorted(c for c in cells if c in log)
    assert leaked == []


def test_a_page_without_a_session_leads_to_sign_in(service: Service, browser: Any) -> None:
    page = browser.new_context().new_page()
    page.goto(service.url + "/ui/jobs/1")
    assert page.url == service.url + "/ui/login"
    # a form posted from elsewhere (no session cookie, no token) changes nothing
    answer = httpx.post(f"{service.url}/ui/logout", data={"csrf": "x"}, follow_redirects=False)
    assert answer.status_code == 303  # the Guard sends it to sign in: no page ran
    assert answer.headers["location"] == "/ui/login"
