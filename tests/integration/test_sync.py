"""Push and pull against a real FHIR R4 server, with the cache on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import delete

from fhir_cart.cache import open_cache
from fhir_cart.cache.models import FhirResource
from fhir_cart.cli import main
from fhir_cart.library.studies import load_study
from fhir_cart.mappers.context import MappingContext
from fhir_cart.records import Case
from fhir_cart.report.evaluate import summarise
from fhir_cart.settings import ServerSettings
from fhir_cart.study import read_study
from fhir_cart.sync.jobs import PullRequest, run_pull, run_push
from fhir_cart.sync.pull import PullSelection
from fhir_cart.writers import canonical_mapping
from tests.support import SEED_FILE, SEED_MAPPING

pytestmark = pytest.mark.integration
TYPES = (
    "Patient",
    "Condition",
    "MedicationAdministration",
    "Procedure",
    "Observation",
    "AdverseEvent",
)
SEED_QUERY = "identifier=https://fhir-cart.dev/fhir/id/seed/patient|"


def server_totals(base: str) -> dict[str, int]:
    """Each type's count on the server. A generous read timeout: right after a push is
    killed mid-transaction the server may still be finishing it on a loaded 2-core machine
    (httpx's default of 5 s once timed out there)."""
    return {
        t: httpx.get(f"{base}/{t}", params={"_summary": "count"}, timeout=60).json()["total"]
        for t in TYPES
    }


def expected_totals(ctx: MappingContext, cases: list[Case]) -> dict[str, int]:
    from fhir_cart.mappers.to_fhir import case_to_fhir

    counts = dict.fromkeys(TYPES, 0)
    for case in cases:
        for resource in case_to_fhir(ctx, case):
            counts[resource["resourceType"]] += 1
    return counts


def push(cases: list[Case], ctx: MappingContext, base: str, cache: Any, **kw: Any) -> Any:
    server = ServerSettings(
        base_url=base, bundle_size=kw.pop("bundle_size", 100), concurrency=kw.pop("concurrency", 4)
    )
    return asyncio.run(run_push(cases=cases, ctx=ctx, server=server, cache=cache, **kw))


def normalise(case: Case) -> Case:
    """Events in id order (a pull does not keep the spreadsheet's row order)."""
    return case.model_copy(update={"events": tuple(sorted(case.events, key=lambda e: e.event_id))})


def written(report: Any) -> int:
    """Resources created or updated (a PUT to a new id is a 201 on one server, 200 on another,
    http://hl7.org/fhir/R4/http.html#update)."""
    return int(report.counts.get("created", 0) + report.counts.get("updated", 0))


def by_id(cases: list[Case]) -> list[Case]:
    return sorted((normalise(c) for c in cases), key=lambda c: c.patient.study_id)


def test_push_twice_then_pull_back_gives_the_same_records_and_numbers(
    fhir_server: str,
    cache_url: str,
    ctx: MappingContext,
    seed_cases: list[Case],
    tmp_path: Path,
) -> None:
    expected = expected_totals(ctx, seed_cases)
    total = sum(expected.values())
    cache = open_cache(cache_url)
    try:
        _, first = push(seed_cases, ctx, fhir_server, cache)
        assert first.failures == []
        assert written(first) == total
        assert server_totals(fhir_server) == expected
        _, second = push(seed_cases, ctx, fhir_server, cache)
        assert second.counts == {"unchanged": total}
        assert second.bundles == 0
        # a machine with an empty cache pushes the same cohort: updates, no new resources
        other = open_cache(f"sqlite:///{tmp_path / 'other.sqlite'}")
        _, third = push(seed_cases, ctx, fhir_server, other)
        other.close()
        assert third.counts.get("created", 0) == 0
        assert server_totals(fhir_server) == expected
        server = ServerSettings(base_url=fhir_server)
        selection = PullSelection(kind="search", query=SEED_QUERY)
        pulled = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))
        assert pulled.unmapped == []
        assert by_id(pulled.cases) == by_id(seed_cases)
        results = summarise(pulled.cases, load_study("seed"))
        assert [r.id for r in results if r.expected is not None and r.value != r.expected] == []
        assert sum(r.expected is not None for r in results) >= 15
        runs = cache.list_runs()
        assert [r.status for r in runs] == ["succeeded"] * 3
    finally:
        cache.close()


def _observation(base: str, identifier: str) -> dict[str, Any]:
    bundle = httpx.get(f"{base}/Observation", params={"identifier": identifier}).json()
    (entry,) = bundle["entry"]
    resource: dict[str, Any] = entry["resource"]
    return resource


def _mrd(case: Case, timepoint: str) -> Any:
    return next(
        e for e in case.events if e.concept == "mrd" and e.attributes.get("timepoint") == timepoint
    )


def test_changing_one_mrd_value_updates_exactly_that_observation(
    fhir_server: str, ctx: MappingContext, seed_cases: list[Case], tmp_path: Path
) -> None:
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    push(seed_cases, ctx, fhir_server, cache)
    p01 = next(c for c in seed_cases if c.patient.study_id == "P01")
    mrd = _mrd(p01, "day_28")
    other = _mrd(p01, "infusion")
    system = ctx.identifier_system("seed", "observation")
    before = {
        m.event_id: _observation(fhir_server, f"{system}|P01/{m.event_id}")["meta"]["versionId"]
        for m in (mrd, other)
    }
    assert mrd.value is not None
    new_value = mrd.value.model_copy(update={"code": "positive_below_quantification"})
    changed_mrd = mrd.model_copy(update={"value": new_value})
    changed = p01.model_copy(
        update={"events": tuple(changed_mrd if e is mrd else e for e in p01.events)}
    )
    cohort = [changed if c is p01 else c for c in seed_cases]
    _, report = push(cohort, ctx, fhir_server, cache)
    total = sum(expected_totals(ctx, seed_cases).values())
    assert report.counts == {"updated": 1, "unchanged": total - 1}
    touched = _observation(fhir_server, f"{system}|P01/{mrd.event_id}")
    assert touched["meta"]["versionId"] != before[mrd.event_id]
    low_positive = ctx.concepts.terminology.concept("mrd_result", "positive_below_quantification")
    codes = {c["code"] for c in touched.get("valueCodeableConcept", {}).get("coding", ())}
    codes |= {c["code"] for i in touched.get("interpretation", ()) for c in i.get("coding", ())}
    assert low_positive["coding"][0]["code"] in codes
    untouched = _observation(fhir_server, f"{system}|P01/{other.event_id}")
    assert untouched["meta"]["versionId"] == before[other.event_id]
    assert server_totals(fhir_server) == expected_totals(ctx, seed_cases)
    cache.close()


def test_correcting_a_value_in_the_study_file_updates_the_same_resource(
    fhir_server: str, ctx: MappingContext, tmp_path: Path
) -> None:
    """A status corrected from CR to PR in the spreadsheet: the event keeps its identity, so
    the push updates that one Observation and creates nothing (ids never come from content)."""
    from openpyxl import load_workbook

    from fhir_cart.library.study_mapping import load_study_mapping

    mapping = load_study_mapping(SEED_MAPPING)
    before = read_study(SEED_FILE, mapping)
    book = load_workbook(SEED_FILE)
    sheet = book["Response"]
    header = [cell.value for cell in sheet[1]]
    column = header.index("Status") + 1
    row = next(r for r in range(2, sheet.max_row + 1) if sheet.cell(r, column).value == "CR")
    patient = sheet.cell(row, header.index("Pt ID") + 1).value
    sheet.cell(row, column).value = "PR"
    corrected = tmp_path / "corrected.xlsx"
    book.save(corrected)
    after = read_study(corrected, mapping)
    assert after.rejects == []
    assert before.rejects == []
    ids_before = sorted((c.patient.study_id, e.event_id) for c in before.cases for e in c.events)
    ids_after = sorted((c.patient.study_id, e.event_id) for c in after.cases for e in c.events)
    assert ids_after == ids_before
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        push(before.cases, ctx, fhir_server, cache)
        totals = server_totals(fhir_server)
        _, report = push(after.cases, ctx, fhir_server, cache)
    finally:
        cache.close()
    total = sum(totals.values())
    assert report.counts == {"updated": 1, "unchanged": total - 1}
    assert server_totals(fhir_server) == totals
    (case,) = [c for c in after.cases if c.patient.study_id == str(patient)]
    partial = [
        e for e in case.events if e.value is not None and e.value.code == "partial_remission"
    ]
    assert partial, "the corrected status is read"


class Crash(Exception):
    pass


def test_a_crash_mid_push_then_a_rerun_finishes_without_duplicates(
    fhir_server: str, cache_url: str, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    expected = expected_totals(ctx, seed_cases)
    total = sum(expected.values())
    cache = open_cache(cache_url)

    def crash_after_two(done: int, _total: int) -> None:
        if done == 2:
            raise Crash

    with pytest.raises(Crash):
        push(
            seed_cases,
            ctx,
            fhir_server,
            cache,
            bundle_size=15,
            concurrency=1,
            on_bundle_done=crash_after_two,
        )
    (run,) = cache.list_runs()
    assert run.status == "interrupted"
    sent_before = sum(cache.count_resources(server=fhir_server, direction="sent").values())
    assert 0 < sent_before < total
    # worse: the server took a bundle whose answer never reached the cache
    with cache.engine.begin() as conn:
        conn.execute(delete(FhirResource).where(FhirResource.resource_type == "AdverseEvent"))
    _, report = push(seed_cases, ctx, fhir_server, cache, bundle_size=15)
    assert report.failures == []
    assert (
        report.counts.get("unchanged", 0)
        + report.counts.get("created", 0)
        + report.counts.get("updated", 0)
        == total
    )
    assert server_totals(fhir_server) == expected
    assert cache.pending() == []
    cache.close()


def test_dry_run_sends_nothing(
    fhir_server: str, ctx: MappingContext, seed_cases: list[Case], tmp_path: Path
) -> None:
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    plan, report = push(seed_cases, ctx, fhir_server, cache, dry_run=True)
    assert report is None
    assert plan.resources_to_send == sum(expected_totals(ctx, seed_cases).values())
    assert sum(server_totals(fhir_server).values()) == 0
    cache.close()


def test_cli_push_and_pull_round_trip(
    fhir_server: str, tmp_path: Path, seed_cases: list[Case], capsys: pytest.CaptureFixture[str]
) -> None:
    cache = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    args = [
        "push",
        str(SEED_FILE),
        "-m",
        str(SEED_MAPPING),
        "--server",
        fhir_server,
        "--cache",
        cache,
    ]
    assert main(args) == 0
    assert "created" in capsys.readouterr().out
    ids = tmp_path / "ids.txt"
    ids.write_text(
        "".join(
            f"https://fhir-cart.dev/fhir/id/seed/patient|{c.patient.study_id}\n"
            for c in seed_cases[:3]
        )
    )
    out = tmp_path / "pulled"
    assert (
        main(
            [
                "pull",
                "--server",
                fhir_server,
                "--patients",
                str(ids),
                "--out",
                str(out),
                "--cache",
                cache,
                "--format",
                "csv",
            ]
        )
        == 0
    )
    result = read_study(out, canonical_mapping("seed"))
    assert result.rejects == []
    assert by_id(result.cases) == by_id(seed_cases[:3])


def _group_of_everyone(base: str) -> str:
    patients = httpx.get(f"{base}/Patient", params={"_count": "50"}).json()["entry"]
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{e['resource']['id']}"}} for e in patients],
    }
    created = httpx.post(
        f"{base}/Group", json=group, headers={"Content-Type": "application/fhir+json"}
    )
    return str(created.json()["id"])


def test_pull_by_group(
    fhir_server: str, tmp_path: Path, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    push(seed_cases, ctx, fhir_server, cache)
    selection = PullSelection(kind="group", group_id=_group_of_everyone(fhir_server))
    server = ServerSettings(base_url=fhir_server)
    pulled = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))
    assert by_id(pulled.cases) == by_id(seed_cases)
    cache.close()


def test_pull_by_group_with_bulk_export(
    sekmet_server: str, tmp_path: Path, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    """Medplum's in-memory repository has no $export (TESTING.md): sekmet only."""
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    push(seed_cases, ctx, sekmet_server, cache)
    selection = PullSelection(kind="group", group_id=_group_of_everyone(sekmet_server))
    server = ServerSettings(base_url=sekmet_server)
    pulled = asyncio.run(
        run_pull(PullRequest(selection, use_export=True), ctx=ctx, server=server, cache=cache)
    )
    assert by_id(pulled.cases) == by_id(seed_cases)
    cache.close()


def test_resources_not_understood_are_kept_and_listed(
    fhir_server: str, tmp_path: Path, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    push(seed_cases[:1], ctx, fhir_server, cache)
    patient = httpx.get(f"{fhir_server}/Patient").json()["entry"][0]["resource"]
    haemoglobin = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": f"Patient/{patient['id']}"},
        "valueQuantity": {"value": 11.2, "unit": "g/dL"},
    }
    httpx.post(
        f"{fhir_server}/Observation",
        json=haemoglobin,
        headers={"Content-Type": "application/fhir+json"},
    )
    server = ServerSettings(base_url=fhir_server)
    selection = PullSelection(kind="search", query=SEED_QUERY)
    pulled = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))
    (unmapped,) = pulled.unmapped
    assert unmapped.resource_type == "Observation"
    (kept,) = cache.unmapped(server=fhir_server)
    assert kept.server_id == unmapped.reference.split("/")[1]
    (other,) = pulled.other  # and it still reaches the generic `other` table
    assert (other["resource_type"], other["code"]) == ("Observation", "718-7")
    assert other["code_system"] == "http://loinc.org"
    assert by_id(pulled.cases) == by_id(seed_cases[:1])
    cache.close()


def test_two_pushes_of_one_cohort_at_once_create_each_resource_once(
    fhir_server: str, cache_url: str, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    """Two processes' worth of pushes (each its own cache connection pool) started together:
    the second waits for the first, then finds nothing changed."""
    expected = expected_totals(ctx, seed_cases)
    total = sum(expected.values())
    caches = [open_cache(cache_url) for _ in range(2)]
    start = threading.Barrier(2)
    reports: list[Any] = []

    def one(cache: Any) -> None:
        start.wait()
        reports.append(push(seed_cases, ctx, fhir_server, cache, bundle_size=10)[1])

    try:
        threads = [threading.Thread(target=one, args=(c,)) for c in caches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        for cache in caches:
            cache.close()
    assert len(reports) == 2
    first, second = sorted(reports, key=lambda r: r.counts.get("unchanged", 0))
    assert (written(first), first.counts["unchanged"], first.failures) == (total, 0, [])
    assert second.counts == {"unchanged": total}
    assert server_totals(fhir_server) == expected


def test_push_and_pull_write_no_patient_identifier_to_any_log(
    fhir_server: str,
    ctx: MappingContext,
    seed_cases: list[Case],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx's and httpcore's included
    cache = open_cache(f"sqlite:///{tmp_path / 'cache.sqlite'}")
    try:
        push(seed_cases, ctx, fhir_server, cache)
        system = ctx.identifier_system("seed", "patient")
        wanted = tuple(f"{system}|{case.patient.study_id}" for case in seed_cases)
        selection = PullSelection(kind="patients", identifiers=wanted)  # ids in query strings
        server = ServerSettings(base_url=fhir_server)
        pulled = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))
    finally:
        cache.close()
    assert len(pulled.cases) == len(seed_cases)
    ids = [case.patient.study_id for case in seed_cases]
    births = [str(c.patient.birth_date) for c in seed_cases if c.patient.birth_date]
    assert len(ids) == len(births) == 7
    leaked = [value for value in ids + births if value in caplog.text]
    assert leaked == []
    assert "HTTP Request: GET /fhir/Patient" in caplog.text  # httpx logged, without queries


def test_a_wiped_server_gets_everything_again_and_no_dangling_reference(
    ctx: MappingContext, seed_cases: list[Case], tmp_path: Path
) -> None:
    """The cache says "unchanged", the server was wiped and restarted at the same address:
    the push checks, re-sends everything, and an edited Observation's Patient exists."""
    from fhir_cart.devservers import SekmetServer

    total = sum(expected_totals(ctx, seed_cases).values())
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    server = SekmetServer()
    try:
        server.start()
        push(seed_cases, ctx, server.base_url, cache)
        server.stop()
        shutil.rmtree(server.workdir / "data")
        server.start()
        assert set(server_totals(server.base_url).values()) == {0}
        p01 = next(c for c in seed_cases if c.patient.study_id == "P01")
        mrd = p01.of("mrd")[0]
        assert mrd.value is not None
        low = mrd.value.model_copy(update={"code": "positive_below_quantification"})
        changed = mrd.model_copy(update={"value": low})
        edited = p01.model_copy(
            update={"events": tuple(changed if e is mrd else e for e in p01.events)}
        )
        cohort = [edited if c is p01 else c for c in seed_cases]
        _, report = push(cohort, ctx, server.base_url, cache)
        assert report.counts == {"created": total, "unchanged": 0}
        assert server_totals(server.base_url) == expected_totals(ctx, seed_cases)
        system = ctx.identifier_system("seed", "observation")
        observation = _observation(server.base_url, f"{system}|P01/{mrd.event_id}")
        patient = httpx.get(f"{server.base_url}/{observation['subject']['reference']}")
        assert patient.status_code == 200
        _, again = push(cohort, ctx, server.base_url, cache)
        assert again.counts == {"unchanged": total}
    finally:
        server.stop()
        server.cleanup()
        cache.close()


def _events(cases: list[Case]) -> int:
    return sum(len(case.events) for case in cases)


def test_pulls_reflect_resources_deleted_on_the_server(
    fhir_server: str, ctx: MappingContext, seed_cases: list[Case], tmp_path: Path
) -> None:
    import datetime as dt

    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    push(seed_cases, ctx, fhir_server, cache)
    server = ServerSettings(base_url=fhir_server)

    def pull(since: str | None = None) -> Any:
        selection = PullSelection(kind="search", query=SEED_QUERY, since=since)
        return asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))

    first = pull()
    observations = httpx.get(f"{fhir_server}/Observation", params={"_count": "2"}).json()
    one, two = (e["resource"]["id"] for e in observations["entry"])
    assert httpx.delete(f"{fhir_server}/Observation/{one}").status_code in (200, 204)
    full = pull()
    assert _events(full.cases) == _events(first.cases) - 1
    recorded = orjson.loads(cache.get_run(full.run_id).counts)
    by_type = recorded.pop("by_type")
    recorded.pop("not_searchable", None)  # sekmet declares no patient search for some types
    assert orjson.dumps(recorded).decode() == orjson_counts(full, deleted=1)
    assert by_type["Observation"]["fetched"] == full.stats.resources["Observation"]
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat()
    assert httpx.delete(f"{fhir_server}/Observation/{two}").status_code in (200, 204)
    incremental = pull(since)
    assert _events(incremental.cases) == _events(first.cases) - 2
    assert '"deleted_on_server":1' in cache.get_run(incremental.run_id).counts
    cache.close()


def orjson_counts(outcome: Any, deleted: int) -> str:
    run_counts = {
        "patients": len(outcome.cases),
        "unmapped": len(outcome.unmapped),
        "excluded": len(outcome.excluded),
        **outcome.stats.resources,
        "deleted_on_server": deleted,
    }
    return orjson.dumps(run_counts).decode()


@pytest.mark.parametrize("mode", ["entered-in-error", "delete"])
def test_records_removed_from_the_study_file_are_withdrawn_and_reported(
    fhir_server: str, ctx: MappingContext, seed_cases: list[Case], tmp_path: Path, mode: str
) -> None:
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    server = ServerSettings(base_url=fhir_server, on_removed=mode)
    asyncio.run(run_push(cases=seed_cases, ctx=ctx, server=server, cache=cache))
    p01 = next(c for c in seed_cases if c.patient.study_id == "P01")
    mrd = p01.of("mrd")[0]
    adverse = set(ctx.concepts.keys("adverse_event"))
    kept = tuple(e for e in p01.events if e is not mrd and e.concept not in adverse)
    fewer = p01.model_copy(update={"events": kept})
    gone_ae = sum(e.concept in adverse for e in p01.events)
    assert gone_ae > 0
    # P02 is left out of the file altogether: a partial file, nothing of P02 is touched
    cohort = [fewer if c is p01 else c for c in seed_cases if c.patient.study_id != "P02"]
    _, report = asyncio.run(run_push(cases=cohort, ctx=ctx, server=server, cache=cache))
    withdrawn = 1 if mode == "entered-in-error" else 0
    assert report.counts.get("entered-in-error", 0) == withdrawn
    assert report.counts.get("deleted", 0) == gone_ae + 1 - withdrawn
    assert not report.failures
    system = ctx.identifier_system("seed", "observation")
    found = httpx.get(
        f"{fhir_server}/Observation", params={"identifier": f"{system}|P01/{mrd.event_id}"}
    ).json()
    if mode == "delete":
        assert found.get("entry", []) == []
    else:
        assert found["entry"][0]["resource"]["status"] == "entered-in-error"
    totals = server_totals(fhir_server)
    expected = expected_totals(ctx, seed_cases)
    assert totals["AdverseEvent"] == expected["AdverseEvent"] - gone_ae
    assert totals["Patient"] == expected["Patient"]  # P02 still there
    _, again = asyncio.run(run_push(cases=cohort, ctx=ctx, server=server, cache=cache))
    assert set(again.counts) == {"unchanged"}
    cache.close()


def test_withdrawn_rows_stay_withdrawn_when_pulled_with_a_fresh_cache(
    fhir_server: str, ctx: MappingContext, seed_cases: list[Case], tmp_path: Path
) -> None:
    """Push the seed, push again with three of one patient's rows removed (marked
    entered-in-error on the server), pull with a fresh cache: the three rows are not events,
    and each is listed as excluded with its reason; every other row comes back."""
    cache = open_cache(f"sqlite:///{tmp_path / 'push.sqlite'}")
    server = ServerSettings(base_url=fhir_server, on_removed="entered-in-error")
    asyncio.run(run_push(cases=seed_cases, ctx=ctx, server=server, cache=cache))
    p01 = next(c for c in seed_cases if c.patient.study_id == "P01")
    # three rows of types that have an entered-in-error status (AdverseEvent has none)
    gone = [e for e in p01.events if e.concept in ("mrd", "blinatumomab", "hsct", "apheresis")][:3]
    assert len(gone) == 3, [e.concept for e in p01.events]
    fewer = p01.model_copy(update={"events": tuple(e for e in p01.events if e not in gone)})
    cohort = [fewer if c is p01 else c for c in seed_cases]
    _, report = asyncio.run(run_push(cases=cohort, ctx=ctx, server=server, cache=cache))
    cache.close()
    assert report.counts.get("entered-in-error", 0) == 3
    fresh = open_cache(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    selection = PullSelection(kind="search", query=SEED_QUERY)
    pulled = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=fresh))
    notes = [r.note for r in fresh.records.unmapped(server=fhir_server)]
    fresh.close()
    assert sorted(notes) == ["excluded: status entered-in-error: recorded in error"] * 3
    (back,) = [c for c in pulled.cases if c.patient.study_id == "P01"]
    assert {e.event_id for e in back.events} == {e.event_id for e in fewer.events}
    assert len(pulled.excluded) == 3
    assert all("entered-in-error: recorded in error" in x.reason for x in pulled.excluded)
    assert pulled.unmapped == []
    assert by_id(pulled.cases) == by_id(cohort)
