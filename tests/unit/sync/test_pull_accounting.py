"""Every resource a pull reads back is accounted for exactly once (issue 17, item 4): a
Patient (patients table), an event, ``used`` by another's event (a Specimen), an ``other``
row, or excluded; per type the pull prints and records how many ended where. The account is
checked against the cases themselves (an event is counted only when it is in its patient's
case), so a resource lost by the mapping shows as ``unaccounted`` instead of passing as an
event by elimination."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cart.bundle import map_cases
from fhir_cart.cache.models import SyncRun
from fhir_cart.cli import main
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import Unmapped, cases_from_fhir
from fhir_cart.records import Case
from fhir_cart.service.schemas import Job
from fhir_cart.sync.accounting import TypeCount, by_type, places
from fhir_cart.sync.pull import EVENT_TYPES
from tests.hostile import HostileServer, bundle, fhir_json

Json = dict[str, Any]
LOINC = "http://loinc.org"


def _on(resource: Json, patient: str, element: str = "subject") -> Json:
    return {**resource, element: {"reference": f"Patient/{patient}"}}


def _ehr(ctx: MappingContext) -> list[Json]:
    chim = {"coding": [{"system": ctx.concepts.local_system, "code": "chimerism"}]}
    blood = ctx.terminology.concept("specimen", "peripheral_blood")
    return [
        {"resourceType": "Patient", "id": "ehr-1", "gender": "female", "birthDate": "2010-02-03"},
        _on(
            {
                "resourceType": "Observation",
                "id": "chim1",
                "status": "final",
                "code": chim,
                "valueQuantity": {"value": 98, "code": "%"},
                "specimen": {"reference": "Specimen/s1"},
            },
            "ehr-1",
        ),
        _on({"resourceType": "Specimen", "id": "s1", "type": blood}, "ehr-1"),
        _on({"resourceType": "Specimen", "id": "s3", "type": blood}, "ehr-1"),  # unused
        _on(
            {
                "resourceType": "Observation",
                "id": "hb",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
                "valueQuantity": {"value": 6.7, "code": "g/dL"},
            },
            "ehr-1",
        ),
        _on(
            {"resourceType": "AllergyIntolerance", "id": "a1", "code": {"text": "penicillin"}},
            "ehr-1",
            "patient",
        ),
        _on(
            {
                "resourceType": "Immunization",
                "id": "i1",
                "status": "completed",
                "vaccineCode": {"text": "MMR"},
            },
            "ehr-1",
            "patient",
        ),
        _on({"resourceType": "Encounter", "id": "e1", "status": "finished"}, "ehr-1"),
        _on(
            {"resourceType": "Condition", "id": "ghost1", "code": {"text": "fever"}}, "ghost"
        ),  # a patient not in the data set
    ]


def _resources(ctx: MappingContext, seed_cases: list[Case]) -> list[Json]:
    seed = [r for rs in map_cases(ctx.with_style("relative"), seed_cases[:2]) for r in rs]
    return [*seed, *_ehr(ctx)]


def test_each_resource_ends_in_exactly_one_place(
    ctx: MappingContext, seed_cases: list[Case]
) -> None:
    resources = _resources(ctx, seed_cases)
    result = cases_from_fhir(ctx, resources)
    found = places(ctx, resources, result)
    assert len(found) == len(resources)
    assert {k: v for k, v in found.items() if len(v) != 1} == {}
    where = {k: v[0] for k, v in found.items()}
    assert where[("Patient", "ehr-1")] == "patients"
    assert where[("Observation", "chim1")] == "events"
    assert where[("Specimen", "s1")] == "used"
    assert where[("Specimen", "s3")] == "other"
    assert where[("Observation", "hb")] == "other"
    for key in (
        ("AllergyIntolerance", "a1"),
        ("Immunization", "i1"),
        ("Encounter", "e1"),
        ("Condition", "ghost1"),
    ):
        assert where[key] == "other", key
    seed_events = sum(len(c.events) for c in result.cases if c.patient.study_id != "ehr-1")
    per_type = by_type(found)
    assert sum(c.events for c in per_type.values()) >= seed_events - 2 * 3  # patient-held
    assert per_type["Specimen"] == TypeCount(fetched=2, used=1, other=1)
    assert per_type["Patient"] == TypeCount(fetched=3, patients=3)
    assert all(
        c.fetched == c.patients + c.events + c.used + c.other + c.excluded
        for c in per_type.values()
    )


def test_a_resource_lost_by_the_mapping_is_unaccounted_not_an_event(
    ctx: MappingContext, seed_cases: list[Case]
) -> None:
    """The plausible wrong rule (whatever is not other or excluded is an event) would count
    a lost resource as an event; the account looks for the event in the case."""
    resources = _resources(ctx, seed_cases)
    result = cases_from_fhir(ctx, resources)
    case = next(c for c in result.cases if c.patient.study_id == "ehr-1")
    result.cases[result.cases.index(case)] = case.model_copy(update={"events": ()})
    found = places(ctx, resources, result)
    assert found[("Observation", "chim1")] == []
    assert found[("Specimen", "s1")] == []  # used by nothing that became an event
    counts = by_type(found)
    assert counts["Observation"].unaccounted == 1
    assert counts["Specimen"].unaccounted == 1


def test_a_resource_in_two_places_is_counted_as_twice(
    ctx: MappingContext, seed_cases: list[Case]
) -> None:
    resources = _resources(ctx, seed_cases)
    result = cases_from_fhir(ctx, resources)
    result.excluded.append(Unmapped("Encounter/e1", "Encounter", "entered-in-error"))
    found = places(ctx, resources, result)
    assert sorted(found[("Encounter", "e1")]) == ["excluded", "other"]
    assert by_type(found)["Encounter"].twice == 1


def test_fetched_counts_come_from_the_pull_when_given(
    ctx: MappingContext, seed_cases: list[Case]
) -> None:
    resources = _resources(ctx, seed_cases)
    found = places(ctx, resources, cases_from_fhir(ctx, resources))
    counts = by_type(found, {"Encounter": 1, "Flag": 0})
    assert counts["Encounter"] == TypeCount(fetched=1, other=1)
    assert counts["Flag"] == TypeCount()


def test_a_job_shows_the_account_per_type() -> None:
    condition = TypeCount(fetched=2, events=1, other=1).as_dict()
    counts = {
        "patients": 1,
        "Condition": 2,
        "not_asked": ["Flag"],
        "by_type": {"Condition": condition},
    }
    run = SyncRun(id=1, kind="pull", status="succeeded", counts=orjson.dumps(counts).decode())
    job = Job.from_run(run)
    assert job.counts == {"patients": 1, "Condition": 2}
    assert job.by_type["Condition"]["events"] == 1
    assert job.not_asked == ["Flag"]


# -- the pull end to end, against a scripted server on 127.0.0.1 -----------------------------

COMPARTMENT = ("AllergyIntolerance", "Immunization")
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "2010-01-01"}


@pytest.fixture
def server() -> Any:
    with HostileServer() as hostile:
        resources = [{"type": t, "searchParam": [{"name": "subject"}]} for t in EVENT_TYPES]
        resources += [{"type": t, "searchParam": [{"name": "patient"}]} for t in COMPARTMENT]
        resources += [{"type": "Medication", "searchParam": [{"name": "code"}]}]
        hostile.routes["/fhir/metadata"] = fhir_json(
            {
                "resourceType": "CapabilityStatement",
                "rest": [{"mode": "server", "resource": resources}],
            }
        )
        for rtype in (*EVENT_TYPES, *COMPARTMENT):
            hostile.routes[f"/fhir/{rtype}"] = bundle([])
        hostile.routes["/fhir/Patient"] = bundle([PATIENT])
        hostile.routes["/fhir/AllergyIntolerance"] = bundle(
            [
                _on(
                    {
                        "resourceType": "AllergyIntolerance",
                        "id": "a1",
                        "code": {"text": "penicillin"},
                    },
                    "p1",
                    "patient",
                ),
            ]
        )
        hostile.routes["/fhir/Immunization"] = bundle(
            [
                _on(
                    {
                        "resourceType": "Immunization",
                        "id": "i1",
                        "status": "completed",
                        "vaccineCode": {"text": "MMR"},
                    },
                    "p1",
                    "patient",
                ),
            ]
        )
        # a match whose subject is a Patient the pull did not select (a server matching
        # through another path): cached, so it must be listed and counted
        hostile.routes["/fhir/Observation"] = bundle(
            [
                _on(
                    {
                        "resourceType": "Observation",
                        "id": "o-ghost",
                        "status": "final",
                        "code": {"text": "x"},
                    },
                    "ghost",
                ),
            ]
        )
        yield hostile


def _pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> int:
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("FHIR_CART_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FHIR_CART_CACHE_URL", f"sqlite:///{tmp_path / 'cache.sqlite'}")
    monkeypatch.setenv("FHIR_CART_SERVERS__H__BASE_URL", url)
    monkeypatch.setenv("FHIR_CART_SERVERS__H__MAX_RETRIES", "0")
    out = str(tmp_path / "out")
    return main(["pull", "--server", "h", "--out", out, "--search", "name=x", *args])


def _other(tmp_path: Path) -> dict[tuple[str, str], str]:
    with (tmp_path / "out" / "other.csv").open() as handle:
        return {(r["resource_type"], r["resource_id"]): r["reason"] for r in csv.DictReader(handle)}


def _row(text: str, rtype: str) -> list[str]:
    line = next(line for line in text.splitlines() if f" {rtype} " in line)
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def test_the_pull_asks_every_compartment_type_and_accounts_for_each(
    server: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _pull(tmp_path, monkeypatch, f"{server.url}/fhir") == 0
    asked = {seen.path.rsplit("/", 1)[-1] for seen in server.seen}
    assert set(COMPARTMENT) <= asked
    assert "Medication" not in asked  # not searchable by patient: no compartment type
    other = _other(tmp_path)
    assert "not one fhir_cart maps" in other[("AllergyIntolerance", "a1")]
    assert "not one fhir_cart maps" in other[("Immunization", "i1")]
    assert "references no patient" in other[("Observation", "o-ghost")]
    text = capsys.readouterr().out
    # type, fetched, patients, events, used, other, excluded
    assert _row(text, "AllergyIntolerance") == ["AllergyIntolerance", "1", "0", "0", "0", "1", "0"]
    assert _row(text, "Observation") == ["Observation", "1", "0", "0", "0", "1", "0"]
    assert _row(text, "Patient") == ["Patient", "1", "1", "0", "0", "0", "0"]
    assert "not asked for (--types)" not in text


def test_types_left_out_are_listed_and_not_asked(
    server: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _pull(tmp_path, monkeypatch, f"{server.url}/fhir", "--types", "library") == 0
    asked = {seen.path.rsplit("/", 1)[-1] for seen in server.seen}
    assert not set(COMPARTMENT) & asked
    text = capsys.readouterr().out
    assert "not asked for (--types): AllergyIntolerance, Immunization" in text


def test_a_bad_types_option_names_the_part_and_the_fix(
    server: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = _pull(tmp_path, monkeypatch, f"{server.url}/fhir", "--types", "library,allergy")
    assert code == 2
    err = capsys.readouterr().err
    assert "'allergy' is not a resource type" in err
    assert "library,AllergyIntolerance" in err


def test_compartment_types_the_server_cannot_search_by_patient_are_named(
    server: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The scripted server declares no patient search for Goal, FamilyMemberHistory, ...:
    it may hold them, so the pull says it did not ask for them."""
    assert _pull(tmp_path, monkeypatch, f"{server.url}/fhir") == 0
    text = capsys.readouterr().out
    line = " ".join(text.split()).split("declares no patient search", 1)[1]  # wrapped
    assert "FamilyMemberHistory" in line
    assert "Goal" in line
    assert "AllergyIntolerance" not in line  # asked
    assert "Observation" not in line


def test_a_type_read_by_type_keeps_only_the_selected_patients_and_counts_the_rest(
    server: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """AdverseEvent without a patient search (as on sekmet) is read by type: the server's
    others, of another patient or of none, are no part of the cohort: counted, not listed."""
    declared = [t for t in EVENT_TYPES if t != "AdverseEvent"]
    server.routes["/fhir/metadata"] = fhir_json(
        {
            "resourceType": "CapabilityStatement",
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        *({"type": t, "searchParam": [{"name": "subject"}]} for t in declared),
                        {"type": "AdverseEvent", "searchParam": [{"name": "date"}]},
                    ],
                }
            ],
        }
    )
    event = {"resourceType": "AdverseEvent", "actuality": "actual", "event": {"text": "x"}}
    server.routes["/fhir/AdverseEvent"] = bundle(
        [
            _on({**event, "id": "ae-mine"}, "p1"),
            _on({**event, "id": "ae-theirs"}, "someone-else"),
            {**event, "id": "ae-nobody"},
        ]
    )
    assert _pull(tmp_path, monkeypatch, f"{server.url}/fhir", "--types", "library") == 0
    other = _other(tmp_path)
    assert ("AdverseEvent", "ae-mine") in other
    assert not {("AdverseEvent", "ae-theirs"), ("AdverseEvent", "ae-nobody")} & set(other)
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "AdverseEvent: read by type (no patient search); 2 resources of patients not "
        "selected left out" in text
    )
    assert _row_flat(text, "AdverseEvent")[:2] == ["AdverseEvent", "1"]


def _row_flat(text: str, rtype: str) -> list[str]:
    after = text.split(f"│ {rtype} │", 1)[1].split("│")[:6]
    return [rtype, *(cell.strip() for cell in after)]


def test_the_pull_end_sums_exclusions_by_reason(capsys: pytest.CaptureFixture[str]) -> None:
    from fhir_cart.cli.sync import print_account
    from fhir_cart.sync.jobs import PullOutcome

    excluded = [
        Unmapped("Condition/c1", "Condition", "verificationStatus entered-in-error"),
        Unmapped("Condition/c2", "Condition", "verificationStatus entered-in-error"),
        Unmapped("Procedure/p1", "Procedure", "status not-done"),
    ]
    outcome = PullOutcome(
        1,
        excluded=excluded,
        by_type={
            "Condition": TypeCount(fetched=2, excluded=2),
            "Procedure": TypeCount(fetched=1, excluded=1),
        },
    )
    print_account(outcome)
    text = capsys.readouterr().out
    assert "excluded 2: verificationStatus entered-in-error" in text
    assert "excluded 1: status not-done" in text
    assert "unaccounted" not in text


def test_a_resource_not_accounted_for_is_shown_in_red(capsys: pytest.CaptureFixture[str]) -> None:
    from fhir_cart.cli.sync import print_account
    from fhir_cart.sync.jobs import PullOutcome

    outcome = PullOutcome(1, by_type={"Encounter": TypeCount(fetched=2, other=1, unaccounted=1)})
    print_account(outcome)
    got = capsys.readouterr()
    assert "unacc" in got.out  # the column appears only when needed (narrow: cut short)
    assert "1 resources not accounted for exactly once" in got.err


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("library,allergy", "'allergy' is not a resource type"),
        ("library,", "'' is not"),
        ("Patient", "Patient is always pulled"),
        (" , ", "is not a resource type"),
    ],
)
def test_types_are_checked_before_anything_is_asked(text: str, words: str) -> None:
    from fhir_cart.sync.pull import parse_types

    with pytest.raises(ValueError, match=words):
        parse_types(text)


def test_types_read_library_all_and_lists() -> None:
    from fhir_cart.sync.pull import parse_types

    assert parse_types(None) is None
    assert parse_types("all") is None
    assert parse_types("library") == EVENT_TYPES
    assert parse_types("Goal, library,Goal") == ("Goal", *EVENT_TYPES)


def test_a_pull_job_with_bad_types_is_refused_with_the_part_named() -> None:
    from pydantic import ValidationError

    from fhir_cart.service.schemas import PullRequest

    with pytest.raises(ValidationError, match="'allergy' is not a resource type"):
        PullRequest(server="s", selection="search", query="_id=a", types="library,allergy")
    assert PullRequest(server="s", selection="search", query="_id=a", types="library").types
