"""Browser tests: Debian's chromium (scripts/setup installs it) driven by playwright, a real
``fhir-cart serve`` on 127.0.0.1 and a real FHIR server; axe-core (fetched by scripts/setup
into .cache/axe-core) checks each page. Without chromium or axe-core they skip, with the
reason, except under CI=true, where they fail."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fhir_cart.devservers import SekmetServer
from fhir_cart.service.access import hash_password
from tests.conftest import need
from tests.support.serve import serve

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / ".cache" / "axe-core" / "4.10.3" / "axe.min.js"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_KEY = "browser-admin-key-0123456789abcdef0123"
PASSWORD = "a long synthetic password"


@dataclass
class Service:
    url: str
    fhir: str
    log: Path


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """``fhir-cart serve`` as a user runs it, its settings in a YAML file, its output (the
    server log) in a file the test reads."""
    with SekmetServer() as fhir:
        settings = {
            "data_dir": str(tmp_path / "data"),
            "api_keys": [ADMIN_KEY],
            "users": [
                {
                    "name": "ana",
                    "role": "centre",
                    "centre": "centre_b",
                    "password_hash": hash_password(PASSWORD),
                }
            ],
            "servers": {"local": {"base_url": fhir.base_url}},
        }
        with serve(settings, tmp_path) as (url, log):
            yield Service(url, fhir.base_url, log)


@pytest.fixture
def browser() -> Iterator[Any]:
    need(CHROMIUM.exists(), f"{CHROMIUM} missing: run scripts/setup (apt-get install chromium)")
    need(AXE.exists(), f"{AXE} missing: run scripts/setup (scripts/fetch-browser-tools.sh)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations of the page as it is now."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
