"""The registry page in a real browser (issue 22 item 6): a registry manager signs in,
builds the registry, reviews the link queue (encoded evidence only), confirms one pair and
refuses another, builds again, and sees both decisions honoured; axe-core finds no serious
or critical violation. The registry page's screenshot goes to docs/img/ (README shows it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_cart.service.access import hash_password
from tests.browser.conftest import ADMIN_KEY, PASSWORD, ROOT, axe_violations
from tests.support.registry_net import REGISTRY_KEY, install_net
from tests.support.serve import serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHOTS = ROOT / "docs" / "img"


@pytest.fixture
def registry_service(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`fhir-cart serve` with the two-centre test registry and a registry manager, rui."""
    install_net(tmp_path / "data")
    settings = {
        "data_dir": str(tmp_path / "data"),
        "api_keys": [ADMIN_KEY],
        "registry_key": REGISTRY_KEY,
        "users": [{"name": "rui", "role": "registry", "password_hash": hash_password(PASSWORD)}],
    }
    with serve(settings, tmp_path) as (url, _):
        yield url, tmp_path


def accessible(page: Any) -> None:
    assert axe_violations(page) == [], page.url


def build(page: Any) -> None:
    page.click("button:has-text('Build the registry')")
    assert re.search(r"/ui/jobs/\d+$", page.url)
    page.wait_for_selector("#job[data-finished=yes]", timeout=180_000)
    assert page.inner_text("#job-status") == "succeeded"


def queue(page: Any) -> list[tuple[str, str]]:
    rows = page.locator("#review-queue tbody tr")
    return [
        (rows.nth(n).get_attribute("data-left"), rows.nth(n).get_attribute("data-right"))
        for n in range(rows.count())
    ]


def test_review_confirm_refuse_rebuild(registry_service: tuple[str, Path], browser: Any) -> None:
    url, folder = registry_service
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(url + "/ui/login")
    page.fill("#user", "rui")
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Sign in') >> nth=0")
    page.click("nav >> text=Registry")
    page.click("#registries >> text=net")
    assert page.inner_text("h1") == "Registry: Test network registry (synthetic)"
    accessible(page)

    build(page)
    page.goto(url + "/ui/registries/net")
    assert page.inner_text("#result caption") == "Test network registry (synthetic)"
    assert page.inner_text("#linked") == "1"
    assert "prefer treating" in page.inner_text("#conflicts")
    assert "100%" in page.inner_text("#heat")
    pairs = queue(page)
    assert len(pairs) == 2
    evidence = page.inner_text("#review-queue")
    assert "diagnosis_date: one character off" in evidence
    for clear in ("N1", "M2", "2014", "10.06"):
        assert clear not in evidence
    accessible(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "workbench-registry.png"), full_page=True)

    confirmed, refused = pairs
    page.click(f"tr[data-left='{confirmed[0]}'] button:has-text('Confirm')")
    assert "Decision kept (must link, by rui)" in page.inner_text("#decided-note")
    page.click(f"tr[data-left='{refused[0]}'] button:has-text('Refuse')")
    assert "cannot link" in page.inner_text("#decided-note")
    assert page.locator("#decisions tbody tr").count() == 2
    accessible(page)
    decisions = (folder / "data" / "registries" / "net" / "decisions.csv").read_text()
    assert decisions.count(",rui,") == 2

    build(page)
    page.goto(url + "/ui/registries/net")
    assert queue(page) == []
    assert page.inner_text("#linked") == "2"  # S1/S2 and the confirmed pair
    accessible(page)
