"""Pull foreign data: the public International Patient Summary 2.0.0 examples, on both
real servers.

The examples ship in the npm package ``hl7.fhir.uv.ips@2.0.0`` (``package/example``);
scripts/fetch-ips-examples.sh puts them in .cache/ips-2.0.0 (scripts/setup runs it). Every
resource but the Bundles is PUT to its own id on sekmet-fhir and Medplum, the three patients
are pulled with a fresh cache, and: all three are in the patients table; every resource of
theirs the server can search by patient is fetched (the others' types are named by the
pull); their AllergyIntolerance, Immunization and MedicationStatement resources (the IPS
sections a study pull never asked for before) are each counted in one place: an event, an
``other`` row or excluded, with its reason.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cart.mappers.context import MappingContext
from fhir_cart.sync.accounting import PLACES, places
from tests.integration.pulling import Pulled, key, load, pull_fresh, reasons, subject
from tests.support import ROOT, need

pytestmark = pytest.mark.integration
Json = dict[str, Any]

EXAMPLES = ROOT / ".cache" / "ips-2.0.0"
SECTIONS = ("AllergyIntolerance", "Immunization", "MedicationStatement")


def _examples() -> list[Json]:
    if not (EXAMPLES / ".complete").exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch-ips-examples.sh")], check=False)
    need((EXAMPLES / ".complete").exists(), "IPS 2.0.0 examples not fetched (npm unreachable?)")
    found = [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    return [r for r in found if r["resourceType"] != "Bundle"]


@pytest.fixture
def pulled(fhir_server: str, ctx: MappingContext, tmp_path: Path) -> tuple[Pulled, list[Json]]:
    examples = _examples()
    patients = [r["id"] for r in examples if r["resourceType"] == "Patient"]
    assert len(patients) == 3
    clinical = [r for r in examples if subject(r) in patients]
    assert load(fhir_server, examples) == {}
    return pull_fresh(fhir_server, ctx, patients, tmp_path), clinical


def test_the_ips_sections_are_fetched_and_accounted_for(
    pulled: tuple[Pulled, list[Json]], ctx: MappingContext
) -> None:
    got, clinical = pulled
    stats = got.outcome.stats
    assert stats.patients == 3
    missed = [key(r) for r in clinical if key(r) not in got.fetched]
    assert [k for k in missed if k[0] not in stats.not_searchable] == []
    where = places(ctx, list(got.fetched.values()), got.result())
    assert {k: v for k, v in where.items() if len(v) != 1} == {}
    counts = got.outcome.by_type
    why = reasons(got.result())
    for rtype in SECTIONS:
        mine = [r for r in clinical if r["resourceType"] == rtype]
        assert mine, rtype
        assert counts[rtype].fetched == len(mine), rtype
        assert counts[rtype].events + counts[rtype].other + counts[rtype].excluded == len(mine)
        for resource in mine:
            (place,) = where[key(resource)]
            assert place in ("events", "other", "excluded"), (key(resource), place)
            if place != "events":
                assert why[key(resource)], key(resource)  # a reason, never a bare row
    for rtype, count in counts.items():
        assert count.fetched == sum(getattr(count, p) for p in PLACES), rtype


def test_three_of_three_patients_are_pulled(pulled: tuple[Pulled, list[Json]]) -> None:
    got, _ = pulled
    # Patient/eumfh-39-07 is born "1957": a year-only birthDate, valid FHIR
    assert len(got.outcome.cases) == 3
