"""Pull foreign data: the public mCODE 4.0.0 examples, loaded into a real FHIR server.

The examples ship in the npm package ``hl7.fhir.us.mcode@4.0.0`` (``package/example``);
scripts/fetch-mcode-examples.sh puts them in .cache/mcode-4.0.0 (scripts/setup runs it).
They are sent as one batch of PUTs to their own ids, then each patient's resources are
fetched with fhir_cart's pull (``pull_resources``: every type the server can search by
patient; sekmet-fhir 0.1.1 declares no patient search for FamilyMemberHistory and
BodyStructure, which the pull names and the test reads by type) and reverse-mapped. Expectations
come from the resources themselves: what each one says (its profile, codes, dates) against
what fhir_cart made of it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from functools import cache
from typing import Any

import httpx
import orjson
import pytest

from fhir_cart.client import FhirClient
from fhir_cart.devservers import SekmetServer
from fhir_cart.library.terminology import load_terminology
from fhir_cart.mappers.context import MappingContext, mapping_context
from fhir_cart.mappers.from_fhir import ReverseResult, cases_from_fhir, event_id_of
from fhir_cart.records import Case, Event
from fhir_cart.sync.pull import PullSelection, PullStats, pull_resources
from tests.support import MAPPINGS, ROOT, need

pytestmark = pytest.mark.integration
Json = dict[str, Any]

EXAMPLES = ROOT / ".cache" / "mcode-4.0.0"
PRIMARY = "mcode-primary-cancer-condition"
STATUS = "mcode-cancer-disease-status"


@pytest.fixture(scope="module")
def examples() -> list[Json]:
    if not (EXAMPLES / ".complete").exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch-mcode-examples.sh")], check=False)
    need((EXAMPLES / ".complete").exists(), "mCODE 4.0.0 examples not fetched (npm unreachable?)")
    found = [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    return [r for r in found if r["resourceType"] != "Bundle"]


def _subject(resource: Json) -> str | None:
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference")
    return ref.split("/")[-1] if isinstance(ref, str) else None


def _load(base: str, resources: list[Json]) -> dict[str, str]:
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources
    ]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
    answer = httpx.post(base, json=bundle, timeout=120).json()
    return {
        f"{r['resourceType']}/{r['id']}": e["response"]["status"]
        for r, e in zip(resources, answer["entry"], strict=True)
    }


async def _pull(base: str, patient_ids: list[str], held: set[str]) -> list[Json]:
    """Each patient with their resources, as fhir_cart's pull fetches them (every type the
    server can search by patient), plus the examples' types the server declares no patient
    search for, which the pull names (``not_searchable``) and the test reads by type."""
    out: list[Json] = []
    stats = PullStats()
    async with FhirClient(base_url=base) as client:
        selection = PullSelection(kind="search", query="_id=" + ",".join(patient_ids))
        async for patient, resources in pull_resources(client, selection, stats):
            out += [patient, *resources]
        for rtype in sorted(held & set(stats.not_searchable)):
            found = [r async for r in client.search(rtype, {"_count": "200"})]
            out += [r for r in found if _subject(r) in patient_ids]
    return out


@pytest.fixture(scope="module")
def pulled(examples: list[Json]) -> tuple[list[Json], list[Json], dict[str, str]]:
    with SekmetServer() as server:
        statuses = _load(server.base_url, examples)
        patient_ids = [r["id"] for r in examples if r["resourceType"] == "Patient"]
        held = {r["resourceType"] for r in _clinical(examples)}
        resources = asyncio.run(_pull(server.base_url, patient_ids, held))
    return examples, resources, statuses


@cache
def _ctx() -> MappingContext:
    terms = load_terminology(MAPPINGS / "terminology.yaml", as_of=dt.date(2026, 1, 1))
    return mapping_context(terminology=terms)


@pytest.fixture(scope="module")
def mapped(pulled: tuple[list[Json], list[Json], dict[str, str]]) -> ReverseResult:
    return cases_from_fhir(_ctx(), pulled[1], default_centre="mcode")


def _clinical(examples: list[Json]) -> list[Json]:
    patients = {r["id"] for r in examples if r["resourceType"] == "Patient"}
    return [r for r in examples if _subject(r) in patients]


def test_server_took_every_clinical_resource_and_pull_fetched_them_all(
    pulled: tuple[list[Json], list[Json], dict[str, str]],
) -> None:
    examples, resources, statuses = pulled
    clinical = _clinical(examples)
    assert len(clinical) > 150
    refused = {k: s for k, s in statuses.items() if not s.startswith(("200", "201"))}
    assert not any(f"{r['resourceType']}/{r['id']}" in refused for r in clinical), refused
    wanted = {(r["resourceType"], r["id"]) for r in clinical}
    wanted |= {("Patient", r["id"]) for r in examples if r["resourceType"] == "Patient"}
    assert {(r["resourceType"], r["id"]) for r in resources} == wanted


def _case(mapped: ReverseResult, patient_id: str) -> Case:
    (case,) = [c for c in mapped.cases if c.patient.study_id == patient_id]
    return case


def _event_of(mapped: ReverseResult, resource: Json) -> Event | None:
    case = _case(mapped, str(_subject(resource)))
    wanted = event_id_of(_ctx(), resource, case.patient.study_id)
    return next((e for e in case.events if e.event_id == wanted), None)


def _others(mapped: ReverseResult) -> set[tuple[str, str | None]]:
    return {(o["resource_type"], o["resource_id"]) for o in mapped.other}


def test_every_resource_reaches_an_event_or_other(
    pulled: tuple[list[Json], list[Json], dict[str, str]], mapped: ReverseResult
) -> None:
    examples, resources, _ = pulled
    assert sorted(c.patient.study_id for c in mapped.cases) == sorted(
        r["id"] for r in examples if r["resourceType"] == "Patient"
    )
    others = _others(mapped)
    assert len(others) == len(mapped.other) == len(mapped.unmapped)
    events = sum(len(c.events) for c in mapped.cases)
    for resource in resources:
        if resource["resourceType"] == "Patient":
            continue
        in_other = (resource["resourceType"], resource["id"]) in others
        as_event = _event_of(mapped, resource) is not None
        assert in_other != as_event, f"{resource['resourceType']}/{resource['id']}"
    assert events + len(others) + len(mapped.cases) == len(resources)
    assert all(o["reason"] for o in mapped.other)


def _claims(resource: Json, profile: str) -> bool:
    return any(profile in p for p in (resource.get("meta") or {}).get("profile", ()))


def _codings(codeable: Json | None) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in (codeable or {}).get("coding", ())}


def _word_codings(group: str, word: str) -> set[tuple[str, str]]:
    systems = _ctx().terminology.data.systems
    concept = _ctx().terminology.data.concepts[group][word]
    return {(systems[c.system], c.code) for c in concept.codings}


def test_diagnoses_are_what_the_conditions_say(
    pulled: tuple[list[Json], list[Json], dict[str, str]], mapped: ReverseResult
) -> None:
    conditions = [r for r in pulled[1] if r["resourceType"] == "Condition"]
    primary = [c for c in conditions if _claims(c, PRIMARY)]
    assert len(primary) >= 5
    for resource in conditions:
        event = _event_of(mapped, resource)
        if resource not in primary:
            assert event is None  # a comorbidity or a metastasis is no cancer diagnosis
            continue
        assert event is not None
        assert event.concept == "diagnosis"
        assert event.value is not None
        assert event.value.code is not None
        assert _codings(resource["code"]) & _word_codings("diagnosis", event.value.code)
        assert event.when is not None
        assert str(event.when.date) == resource["onsetDateTime"][:10]
    other = {
        (o["resource_id"], o["code"]) for o in mapped.other if o["resource_type"] == "Condition"
    }
    assert other == {
        (c["id"], c["code"]["coding"][0]["code"]) for c in conditions if c not in primary
    }


def test_disease_statuses_are_what_the_observations_say(
    pulled: tuple[list[Json], list[Json], dict[str, str]], mapped: ReverseResult
) -> None:
    statuses = [r for r in pulled[1] if r["resourceType"] == "Observation" and _claims(r, STATUS)]
    assert len(statuses) == 3
    for resource in statuses:
        event = _event_of(mapped, resource)
        assert event is not None
        assert event.concept == "disease_status"
        assert event.value is not None
        assert event.value.code is not None
        said = _codings(resource["valueCodeableConcept"])
        assert said & _word_codings("disease_status", event.value.code)
        assert str(event.when.date if event.when else None) == resource["effectiveDateTime"]


def _drug_concepts(codeable: Json) -> set[str]:
    """Library drug concepts whose codings include one of the resource's (read from the
    library's data, not through the classifier under test)."""
    systems = _ctx().terminology.data.systems
    said = _codings(codeable)
    return {
        key
        for key, concept in _ctx().concepts.data.concepts.items()
        if concept.kind == "medication"
        and said & {(systems[c.system], c.code) for c in concept.codings}
    }


def _request_day(request: Json) -> str:
    """When a request says the drug is given: its timing bounds, else when it was written."""
    for dosage in request.get("dosageInstruction", ())[:1]:
        bounds = dosage.get("timing", {}).get("repeat", {}).get("boundsPeriod", {})
        if "start" in bounds:
            return str(bounds["start"])
    return str(request["authoredOn"])


def test_drugs_are_what_administrations_and_requests_say(
    pulled: tuple[list[Json], list[Json], dict[str, str]], mapped: ReverseResult
) -> None:
    drugs = [
        r
        for r in pulled[1]
        if r["resourceType"] in ("MedicationAdministration", "MedicationRequest")
    ]
    known = 0
    for resource in drugs:
        event = _event_of(mapped, resource)
        expected = _drug_concepts(resource["medicationCodeableConcept"])
        if not expected:
            assert event is None
            continue
        known += 1
        assert event is not None
        assert event.concept in expected
        request = resource["resourceType"] == "MedicationRequest"
        assert event.origin == ("MedicationRequest" if request else None)
        day = _request_day(resource) if request else resource["effectiveDateTime"]
        assert event.when is not None
        assert str(event.when.date) == day[:10]
        dose = (resource.get("dosage") or {}).get("dose")
        if dose and not request:
            assert event.value is not None
            assert (event.value.number, event.value.unit) == (dose["value"], dose["code"])
    assert known >= 6  # cyclophosphamide, vincristine, idarubicin, prednisone, ...
    assert len(drugs) - known == len(
        [o for o in mapped.other if o["resource_type"].startswith("Medication")]
    )


def test_specimens_and_unknown_observations_are_other_rows_with_reasons(
    pulled: tuple[list[Json], list[Json], dict[str, str]], mapped: ReverseResult
) -> None:
    rows = {(o["resource_type"], o["resource_id"]): o for o in mapped.other}
    specimens = [r for r in pulled[1] if r["resourceType"] == "Specimen"]
    assert specimens
    for specimen in specimens:
        row = rows[("Specimen", specimen["id"])]
        assert row["study_id"] == _subject(specimen)
        assert row["code"] == specimen["type"]["coding"][0]["code"]
    hb = rows[("Observation", "hemoglobin-brian-l")]
    assert (hb["code"], hb["value"], hb["unit"], hb["time"]) == (
        "718-7",
        "6.7",
        "g/dL",
        "2024-01-04",
    )
    assert "matches no observation concept" in hb["reason"]


def test_extensions_of_resources_read_as_events_are_rows_of_their_own(
    pulled: tuple[list[Json], list[Json], dict[str, str]], mapped: ReverseResult
) -> None:
    """Every extension of a pulled resource read as an event is an ``other`` row naming its
    URL and its guide (none is fhir_cart's, and the examples' doses are in mg, so even the
    per-m2 normalization basis is not what the dose says); a resource that is an ``other``
    row itself has none (issue 18: they were dropped without a word)."""
    wanted = {
        (r["resourceType"], r["id"], ext["url"])
        for r in pulled[1]
        if r["resourceType"] != "Patient" and _event_of(mapped, r) is not None
        for ext in r.get("extension") or ()
    }
    rows = [row for row in mapped.undeclared if row["resource_type"] != "Patient"]
    assert len(wanted) >= 10
    assert sorted((r["resource_type"], r["resource_id"], r["code"]) for r in rows) == sorted(wanted)
    assert all("an extension of mCODE (a published guide's" in str(r["reason"]) for r in rows)
