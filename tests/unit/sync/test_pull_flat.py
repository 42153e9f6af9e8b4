"""`fhir-cart pull` writes its tables as it maps, patient by patient from an on-disk index
(sync/pulled.py): the files are those `cases_from_fhir` over the same resources gives,
written by `write_study` (the pull before it streamed), rows compared as sets; and the web
service's way (every record collected) gives the same records."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fhir_cart.application import Application
from fhir_cart.cli import main
from fhir_cart.sync.jobs import PullRequest, PullTables
from fhir_cart.sync.pull import EVENT_TYPES, PullSelection
from tests.ehr_cases import load_cases
from tests.hostile import HostileServer, bundle, capabilities
from tests.unit.cli.test_tables_cmd import _folder_rows, _pulled

Json = dict[str, Any]


def _serve(server: HostileServer, resources: list[Json]) -> None:
    by_type: dict[str, list[Json]] = {}
    for resource in resources:
        by_type.setdefault(str(resource["resourceType"]), []).append(resource)
    types = sorted({*EVENT_TYPES, *by_type} - {"Patient", "Medication"})
    server.routes["/fhir/metadata"] = capabilities(*types)
    for rtype in [*types, "Patient", "Medication"]:
        server.routes[f"/fhir/{rtype}"] = bundle(by_type.get(rtype, []))


def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, name: str) -> None:
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("FHIR_CART_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FHIR_CART_CACHE_URL", f"sqlite:///{tmp_path / f'{name}.sqlite'}")
    monkeypatch.setenv("FHIR_CART_SERVERS__H__BASE_URL", f"{url}/fhir")


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_the_pulls_tables_are_those_of_the_whole_cohort_mapped_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = [r for case in load_cases() for r in case.resources]
    with HostileServer() as server:
        _serve(server, resources)
        _settings(monkeypatch, tmp_path, server.url, "cli")
        assert (
            main(
                [
                    "pull",
                    "--server",
                    "h",
                    "--out",
                    str(tmp_path / "pull"),
                    "--search",
                    "name=x",
                    "--types",
                    "all",
                ]
            )
            == 0
        )
        _settings(monkeypatch, tmp_path, server.url, "job")
        app = Application()
        with app.opened_cache(None) as cache:
            selection = PullSelection(kind="search", query="name=x")
            kept = asyncio.run(app.pull(PullRequest(selection), server="h", cache=cache))
            again = PullTables(tmp_path / "again", keep_cases=True)
            written = asyncio.run(
                app.pull(PullRequest(selection, tables=again), server="h", cache=cache)
            )
    ctx = Application().pull_context()
    _pulled(ctx, resources, tmp_path / "whole")
    want = _folder_rows(tmp_path / "whole")
    assert len(want["patients.csv"]) > 5
    assert {"other.csv", "unmapped.csv", "excluded.csv"} <= set(want)
    assert _folder_rows(tmp_path / "pull") == want
    assert _folder_rows(tmp_path / "again") == want
    assert written.cases == kept.cases  # a second pull of the same: the same records
    assert kept.cases
    assert not written.other
    assert written.tables is not None
    assert written.tables.patients == len(kept.cases)
    assert (written.tables.other, written.tables.unmapped, written.tables.excluded) == (
        len(kept.other),
        len(kept.unmapped),
        len(kept.excluded),
    )
    assert written.by_type == kept.by_type
