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
            registry / "registry.yaml", tmp_path / "out", push=fhir_server
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
