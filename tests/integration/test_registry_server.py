"""A registry pushed to a real FHIR server on 127.0.0.1: patients, ConceptMaps and
Provenance arrive; a rebuild with one centre changed sends only that centre's changes; an
unchanged rebuild sends nothing."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from fhir_cart.application import BuildRequest
from fhir_cart.settings import Settings

FIXTURES = Path(__file__).parents[2] / "fixtures" / "registry"


pytestmark = pytest.mark.integration


def total(base: str, resource_type: str) -> int:
    found = httpx.get(f"{base}/{resource_type}", params={"_summary": "count"}).json()
    return int(found["total"])


def test_push_sends_only_what_changed(
    fhir_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_cart.application import Application

    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    registry = tmp_path / "registry"
    shutil.copytree(FIXTURES, registry)
    settings = Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        registry_key=SecretStr("integration-test-key-0123456789abcdef"),
    )

    def build() -> str | None:
        _, message = Application(settings).registry_build(
            BuildRequest(registry / "registry.yaml", tmp_path / "out", push=fhir_server)
        )
        return message

    first = build()
    assert first is not None
    assert "13 ConceptMap/Provenance resources sent" in first
    assert total(fhir_server, "Patient") == 8
    assert total(fhir_server, "ConceptMap") == 3
    assert total(fhir_server, "Provenance") == 10  # one per patient and centre
    assert build() == "no input changed: nothing to push"

    events = registry / "rotterdam" / "events.csv"
    events.write_text(
        events.read_text().replace("R-101,MRD,2022-02-07,0.3,%", "R-101,MRD,2022-02-07,0.2,%")
    )
    third = build()
    assert third is not None
    changed = int(re.search(r"(\d+) of \d+ resources changed", third).group(1))  # type: ignore[union-attr]
    assert changed == 1  # Greta's MRD observation only
    assert total(fhir_server, "Patient") == 8
    sent = int(re.search(r"(\d+) ConceptMap/Provenance", third).group(1))  # type: ignore[union-attr]
    assert sent == 3  # Rotterdam's three Provenance (its file's hash and time changed)


def _application(tmp_path: Path, key: str):  # type: ignore[no-untyped-def]
    from fhir_cart.application import Application

    settings = Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        registry_key=SecretStr(key),
    )
    return Application(settings)


def test_a_new_key_does_not_double_the_patients_on_the_server(
    fhir_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_cart.errors import ConfigError

    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    registry = tmp_path / "registry"
    shutil.copytree(FIXTURES, registry)
    old = _application(tmp_path, "integration-test-key-0123456789abcdef")
    old.registry_build(BuildRequest(registry / "registry.yaml", tmp_path / "out", push=fhir_server))
    assert total(fhir_server, "Patient") == 8
    new = _application(tmp_path, "a-new-integration-key-0123456789abcdef")
    with pytest.raises(ConfigError, match="the registry key changed") as refused:
        new.registry_build(
            BuildRequest(registry / "registry.yaml", tmp_path / "out", push=fhir_server)
        )
    assert "--allow-new-key" in refused.value.message
    assert total(fhir_server, "Patient") == 8
    new.registry_build(
        BuildRequest(
            registry / "registry.yaml", tmp_path / "out", push=fhir_server, allow_new_key=True
        )
    )
    assert total(fhir_server, "Patient") == 16  # asked for: both sets


def test_a_wiped_server_gets_the_concept_maps_and_provenance_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_cart.devservers import SekmetServer

    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    registry = tmp_path / "registry"
    shutil.copytree(FIXTURES, registry)
    app = _application(tmp_path, "integration-test-key-0123456789abcdef")
    server = SekmetServer()
    try:
        server.start()
        app.registry_build(
            BuildRequest(registry / "registry.yaml", tmp_path / "out", push=server.base_url)
        )
        server.stop()
        shutil.rmtree(server.workdir / "data")
        server.start()
        assert total(server.base_url, "Patient") == 0
        _, message = app.registry_build(
            BuildRequest(
                registry / "registry.yaml", tmp_path / "out", push=server.base_url, force=True
            )
        )
        assert message is not None
        assert "13 ConceptMap/Provenance resources sent" in message
        assert total(server.base_url, "Patient") == 8
        assert total(server.base_url, "ConceptMap") == 3
        assert total(server.base_url, "Provenance") == 10
    finally:
        server.stop()
        server.cleanup()
