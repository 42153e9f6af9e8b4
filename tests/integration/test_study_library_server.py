"""A concept added in a study's own library file survives push and pull through a real FHIR
server (sekmet-fhir and Medplum), with its attributes and its patient attribute, read back
by the codes of the study's own CodeSystem when the pull is given the study's library
(issue 18 item 1); without it the pull still succeeds and keeps them as ``other`` rows."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import zipfile
from pathlib import Path

import pytest

from fhir_cart.application import Application
from fhir_cart.cache import open_cache
from fhir_cart.cli import main
from fhir_cart.settings import ServerSettings, Settings
from fhir_cart.sync.jobs import PullOutcome, PullRequest, run_pull, run_push
from fhir_cart.sync.pull import PullSelection
from tests.integration.test_sync import by_id
from tests.unit.library.test_study_library import CANONICAL, DATA, OWN_MAPPING, TRAVELLING

pytestmark = pytest.mark.integration
QUERY = "identifier=https://fhir-cart.dev/fhir/id/libtest/patient|"


def _pull(app: Application, base: str, folder: Path, *, own: bool) -> PullOutcome:
    study_library = app.study_library(folder / "mapping.yaml") if own else None
    cache = open_cache(f"sqlite:///{folder / f'pull-{own}.sqlite'}")
    try:
        request = PullRequest(PullSelection(kind="search", query=QUERY))
        server = ServerSettings(base_url=base)
        ctx = app.pull_context(study_library)
        return asyncio.run(run_pull(request, ctx=ctx, server=server, cache=cache))
    finally:
        cache.close()


def test_a_study_concept_survives_push_and_pull_with_its_attributes(
    fhir_server: str, tmp_path: Path
) -> None:
    (tmp_path / "lib.yaml").write_text(TRAVELLING, encoding="utf-8")
    (tmp_path / "data.csv").write_text(DATA, encoding="utf-8")
    (tmp_path / "mapping.yaml").write_text(OWN_MAPPING, encoding="utf-8")
    app = Application(Settings(data_dir=tmp_path))
    mapping = app.load_mapping(tmp_path / "mapping.yaml")
    read = app.read_study(tmp_path / "data.csv", mapping)
    assert read.rejects == []
    cache = open_cache(f"sqlite:///{tmp_path / 'push.sqlite'}")
    try:
        server = ServerSettings(base_url=fhir_server, bundle_size=50)
        ctx = app.mapping_context(mapping)
        _, report = asyncio.run(run_push(cases=read.cases, ctx=ctx, server=server, cache=cache))
    finally:
        cache.close()
    assert report is not None
    assert report.failures == []

    pulled = _pull(app, fhir_server, tmp_path, own=True)
    assert pulled.unmapped == []
    assert pulled.other == []
    assert by_id(pulled.cases) == by_id(read.cases)
    lines = {c.patient.study_id: c.patient.attributes["prior_lines"] for c in pulled.cases}
    assert lines == {"P1": 3, "P2": 2}
    notes = [e for c in pulled.cases for e in c.events if e.concept == "bridging_note"]
    assert sorted(str(e.attributes.get("bridging_regimen")) for e in notes) == [
        "None",
        "R-GemOx",
    ]

    plain = _pull(app, fhir_server, tmp_path, own=False)  # no library: kept, not a crash
    url = f"{CANONICAL}/StructureDefinition/prior-lines"  # its patient attribute: named
    assert sorted(str(row["code"]) for row in plain.other) == ["bridging_note"] * 2 + [url] * 2
    assert all(not c.patient.attributes for c in plain.cases)
    unread = sorted((r["study_id"], r["value"]) for r in plain.other if r["code"] == url)
    assert unread == [("P1", "3"), ("P2", "2")]
    assert all("--library FILE" in str(r["reason"]) for r in plain.other if r["code"] == url)


def test_cli_push_and_pull_with_the_study_mapping(
    fhir_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fhir-cart push -m`` then ``fhir-cart pull -m``: the added concept and patient
    attribute are columns of the pulled tables (the pull once crashed on the latter)."""
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib.yaml").write_text(TRAVELLING, encoding="utf-8")
    (tmp_path / "data.csv").write_text(DATA, encoding="utf-8")
    (tmp_path / "mapping.yaml").write_text(OWN_MAPPING, encoding="utf-8")
    cache = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    common = ["--server", fhir_server, "--cache", cache]
    assert main(["push", "data.csv", "-m", "mapping.yaml", *common]) == 0
    pull = ["pull", *common, "--search", QUERY, "-m", "mapping.yaml", "-o", "pulled"]
    assert main(pull) == 0
    with (tmp_path / "pulled" / "patients.csv").open(encoding="utf-8") as handle:
        patients = sorted(csv.DictReader(handle), key=lambda r: r["study_id"])
    assert [r["prior_lines"] for r in patients] == ["3", "2"]
    with (tmp_path / "pulled" / "events.csv").open(encoding="utf-8") as handle:
        regimens = [r["bridging_regimen"] for r in csv.DictReader(handle)]
    assert "R-GemOx" in regimens
    assert not (tmp_path / "pulled" / "other.csv").exists()


def test_the_service_uploads_pushes_and_pulls_with_a_mapping_naming_its_library(
    tmp_path: Path, fhir_server: str
) -> None:
    """A centre mapping on the service (mappings/centres/) naming its library file
    (mappings/libraries/): the upload reads the added concepts, and a pull job given the
    mapping reads them back, its export having their columns; a mapping whose library file
    is broken is refused when the pull is asked for, before any job runs."""
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from fhir_cart.service.app import create_app
    from tests.integration.test_service import KEY, upload, wait
    from tests.support import MAPPINGS

    mappings = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, mappings)
    (mappings / "libraries").mkdir()
    (mappings / "libraries" / "lib.yaml").write_text(TRAVELLING, encoding="utf-8")
    own = OWN_MAPPING.replace("library: lib.yaml", "library: ../libraries/lib.yaml")
    own = own.replace("  source: data.csv\n", "")  # an upload is one file
    (mappings / "centres" / "libtest.yaml").write_text(own, encoding="utf-8")
    broken = own.replace("../libraries/lib.yaml", "../libraries/missing.yaml")
    (mappings / "centres" / "libbroken.yaml").write_text(broken, encoding="utf-8")
    (tmp_path / "data.csv").write_text(DATA, encoding="utf-8")
    settings = Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        servers={"local": ServerSettings(base_url=fhir_server)},
        api_keys=[SecretStr(KEY["X-API-Key"])],
        mappings_dir=mappings,
    )
    with TestClient(create_app(settings)) as client:
        sent = upload(client, tmp_path / "data.csv", "libtest")
        assert sent.status_code == 201, sent.text
        assert (sent.json()["patients"], sent.json()["rejects"]) == (2, [])
        body = {"upload_id": sent.json()["upload_id"], "server": "local"}
        pushed = wait(client, client.post("/jobs/push", headers=KEY, json=body).json()["id"])
        assert pushed["status"] == "succeeded", pushed
        asked = {"server": "local", "selection": "search", "query": QUERY, "mapping": "libtest"}
        refused = client.post("/jobs/pull", headers=KEY, json={**asked, "mapping": "libbroken"})
        assert refused.status_code == 422
        assert "missing.yaml" in refused.text
        job = client.post("/jobs/pull", headers=KEY, json=asked).json()
        assert wait(client, job["id"])["status"] == "succeeded"
        exported = client.get(f"/jobs/{job['id']}/export", params={"format": "csv"}, headers=KEY)
        archive = zipfile.ZipFile(io.BytesIO(exported.content))
        patients = list(csv.DictReader(io.TextIOWrapper(archive.open("patients.csv"))))
        assert sorted(r["prior_lines"] for r in patients) == ["2", "3"]
        assert "other.csv" not in archive.namelist()
