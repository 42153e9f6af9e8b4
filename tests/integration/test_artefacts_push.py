"""`fhir-cart artefacts --server` puts the conformance artefacts on a real FHIR server."""

from __future__ import annotations

import httpx
import orjson

from fhir_cart.cli import main
from tests.support import ROOT


def test_artefacts_are_pushed_and_read_back(fhir_server: str) -> None:
    assert main(["artefacts", "--server", fhir_server]) == 0
    assert main(["artefacts", "--server", fhir_server]) == 0  # a re-push updates, not duplicates
    local = orjson.loads(
        (ROOT / "api" / "fhir" / "package" / "CodeSystem-case-series.json").read_bytes()
    )
    with httpx.Client(base_url=fhir_server, timeout=10) as http:
        cs = http.get("CodeSystem/case-series").json()
        assert cs["concept"] == local["concept"]
        sd = http.get("StructureDefinition/relative-day")
        assert sd.status_code == 200
        assert http.get("ConceptMap/centre-seed").json()["group"]
        assert http.get("ValueSet/disease-status").status_code == 200
