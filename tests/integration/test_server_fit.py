"""Push fits each server: transaction size limits (declared, learned from a refusal), a
patient split across transactions, batches in dependency order, one error per cause."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fhir_cart.cache import open_cache
from fhir_cart.cli import main
from fhir_cart.devservers.fhir_server import free_port
from fhir_cart.mappers.context import MappingContext
from fhir_cart.records import Case
from fhir_cart.settings import ServerSettings
from fhir_cart.sync.jobs import PullRequest, run_pull, run_push
from fhir_cart.sync.pull import PullSelection
from tests.integration.test_sync import (
    SEED_QUERY,
    by_id,
    expected_totals,
    server_totals,
    written,
)
from tests.support import SEED_FILE, SEED_MAPPING

pytestmark = pytest.mark.integration


def _push(cases: list[Case], ctx: MappingContext, server: ServerSettings, cache: Any) -> Any:
    return asyncio.run(run_push(cases=cases, ctx=ctx, server=server, cache=cache))[1]


@pytest.mark.parametrize(
    ("bundle_type", "bundle_size"), [("auto", 100), ("auto", 8), ("batch", 100)]
)
def test_seed_cohort_arrives_whole_and_pulls_back(
    fhir_server: str,
    tmp_path: Path,
    ctx: MappingContext,
    seed_cases: list[Case],
    bundle_type: str,
    bundle_size: int,
) -> None:
    """Medplum's router refuses transactions of conditional writes above 8 entries and a seed
    patient has about 16 resources: before splitting, all 112 failed there, with any size.
    The pull back resolves every reference (subject searches), so references made literal
    across parts and batches are checked too."""
    server = ServerSettings(base_url=fhir_server, bundle_type=bundle_type, bundle_size=bundle_size)
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        report = _push(seed_cases, ctx, server, cache)
        expected = expected_totals(ctx, seed_cases)
        assert report.failures == []
        assert written(report) == sum(expected.values())
        assert server_totals(fhir_server) == expected
        assert report.mode == ("batch" if bundle_type == "batch" else "transaction")
        assert _push(seed_cases, ctx, server, cache).counts == {"unchanged": sum(expected.values())}
        selection = PullSelection(kind="search", query=SEED_QUERY)
        pulled = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))
        assert pulled.unmapped == []
        assert by_id(pulled.cases) == by_id(seed_cases)
    finally:
        cache.close()


def test_a_declared_limit_is_respected_without_a_refusal(
    fhir_server: str, tmp_path: Path, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    server = ServerSettings(base_url=fhir_server, max_transaction_entries=8)
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        report = _push(seed_cases, ctx, server, cache)
    finally:
        cache.close()
    assert report.failures == []
    assert report.learned == []  # nothing refused: settings said it first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite"]  # no lock files left
    assert report.bundles >= sum(expected_totals(ctx, seed_cases).values()) // 8


def test_unreachable_server_is_one_error_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens on the port: one message and exit 6, not one line per bundle."""
    url = f"http://127.0.0.1:{free_port()}/fhir"
    cache = f"sqlite:///{tmp_path / 'c.sqlite'}"
    code = main(
        ["push", str(SEED_FILE), "-m", str(SEED_MAPPING), "--server", url, "--cache", cache]
    )
    err = capsys.readouterr().err
    assert code == 6
    assert err.count("cannot reach the FHIR server") == 1
    assert "fhir-cart fhir-server start" in err
    assert err.count("ConnectError") <= 1


def test_a_search_parameter_the_server_refuses_is_learned(
    sekmet_server: str, tmp_path: Path, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    """Settings claim AdverseEvent?subject, which sekmet (asked for strict handling) refuses:
    the pull reads AdverseEvents by type instead and loses nothing."""
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        _push(seed_cases, ctx, ServerSettings(base_url=sekmet_server), cache)
        server = ServerSettings(base_url=sekmet_server, search_params={"AdverseEvent": ["subject"]})
        selection = PullSelection(kind="search", query=SEED_QUERY)
        pulled = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))
    finally:
        cache.close()
    assert by_id(pulled.cases) == by_id(seed_cases)


def test_a_transaction_is_all_or_nothing(fhir_server: str) -> None:
    """Medplum's in-memory repository has no rollback of its own: the test wrapper snapshots
    it. A transaction whose second entry is invalid leaves no trace of its first."""
    import httpx

    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "1"}]}
    bad = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:t", "value": "2"}],
        "status": "final",
        "code": {"text": "x"},
        "foo": 1,
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:9f3c1a8e-0000-4000-8000-000000000001",
                "resource": patient,
                "request": {"method": "PUT", "url": "Patient?identifier=urn:t|1"},
            },
            {
                "fullUrl": "urn:uuid:9f3c1a8e-0000-4000-8000-000000000002",
                "resource": bad,
                "request": {"method": "PUT", "url": "Observation?identifier=urn:t|2"},
            },
        ],
    }
    headers = {"Content-Type": "application/fhir+json"}
    answer = httpx.post(fhir_server, json=bundle, headers=headers, timeout=30)
    assert answer.status_code >= 400
    count = httpx.get(f"{fhir_server}/Patient", params={"_summary": "count"}).json()["total"]
    assert count == 0


def test_what_refers_to_a_failed_resource_is_not_sent(
    fhir_server: str, tmp_path: Path, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    """A patient sent in parts whose first part (the Patient) the server refuses: the rest of
    that patient is reported as not sent because of it, once; other patients arrive."""
    from fhir_cart.client import FhirClient
    from fhir_cart.sync.capabilities import ServerCapabilities
    from fhir_cart.sync.push import failure_causes, plan_push, push

    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        plan = plan_push(
            ctx,
            seed_cases[:2],
            changed=lambda items: {k for k, _ in items},
            server_ids=lambda keys: {},
        )
        first = plan.to_send[0]
        patient = next(r for r in first if r["resourceType"] == "Patient")
        patient["notAnElement"] = True  # every server refuses this one

        async def send() -> Any:
            async with FhirClient(base_url=fhir_server) as client:
                caps = ServerCapabilities.from_statement(
                    await client.capabilities(), max_transaction_entries=4
                )
                run_id = cache.create_run(kind="push", server=fhir_server, params={})
                return await push(
                    plan,
                    client=client,
                    cache=cache,
                    server=fhir_server,
                    run_id=run_id,
                    capabilities=caps,
                )

        report = asyncio.run(send())
    finally:
        cache.close()
    causes = failure_causes(report.failures)
    blocked = [c for c in causes if c.reason.startswith("not sent: it refers to a Patient")]
    assert len(blocked) == 1
    # the Patient's own part fails with it (a transaction), the rest is not sent at all
    assert sum(c.count for c in causes) == len(first)
    assert blocked[0].count >= len(first) - 4
    assert report.counts["created"] + report.counts.get("updated", 0) == len(plan.to_send[1])


def _declared(statement: dict[str, Any], rtype: str, **flags: bool) -> dict[str, Any]:
    """The server's own statement with ``flags`` declared for one resource type."""
    rest = statement["rest"][0]
    resources = [r for r in rest.get("resource", ()) if r.get("type") != rtype]
    own = next((r for r in rest.get("resource", ()) if r.get("type") == rtype), {"type": rtype})
    return {**statement, "rest": [{**rest, "resource": [*resources, {**own, **flags}]}]}


def _push_declared(fhir_server: str, cache: Any, plan: Any, **flags: bool) -> Any:
    from fhir_cart.client import FhirClient
    from fhir_cart.sync.capabilities import ServerCapabilities
    from fhir_cart.sync.push import push

    async def send() -> Any:
        async with FhirClient(base_url=fhir_server) as client:
            statement = _declared(await client.capabilities(), "Procedure", **flags)
            caps = ServerCapabilities.from_statement(statement)
            run_id = cache.create_run(kind="push", server=fhir_server, params={})
            return await push(
                plan,
                client=client,
                cache=cache,
                server=fhir_server,
                run_id=run_id,
                capabilities=caps,
            )

    return asyncio.run(send())


def test_a_type_without_conditional_update_is_written_by_its_stable_id(
    fhir_server: str, tmp_path: Path, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    """A statement saying Procedure has no conditional update but updateCreate: Procedures
    go as PUT Procedure/<fhir_cart's id> (the server keeps that id), the other types as
    conditional updates on their identifier; a second push of the same plan adds nothing."""
    import httpx

    from fhir_cart.sync.push import plan_push

    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        plan = plan_push(
            ctx,
            seed_cases[:3],
            changed=lambda items: {k for k, _ in items},
            server_ids=lambda keys: {},
        )
        ours = {r["id"] for p in plan.to_send for r in p if r["resourceType"] == "Procedure"}
        assert ours
        for _ in range(2):
            report = _push_declared(
                fhir_server, cache, plan, conditionalUpdate=False, updateCreate=True
            )
            assert report.failures == []
    finally:
        cache.close()
    found = httpx.get(f"{fhir_server}/Procedure", params={"_count": 500}).json()
    ids = {e["resource"]["id"] for e in found.get("entry", ())}
    assert ids == ours  # by id, and not duplicated by the second push
    observations = httpx.get(f"{fhir_server}/Observation", params={"_count": 500}).json()
    sent = {r["id"] for p in plan.to_send for r in p if r["resourceType"] == "Observation"}
    assert {e["resource"]["id"] for e in observations["entry"]}.isdisjoint(sent)  # conditional


def test_a_type_the_server_cannot_write_idempotently_stops_the_push_before_sending(
    fhir_server: str, tmp_path: Path, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    from fhir_cart.errors import FatalHttpError
    from fhir_cart.sync.push import plan_push

    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        plan = plan_push(
            ctx,
            seed_cases[:2],
            changed=lambda items: {k for k, _ in items},
            server_ids=lambda keys: {},
        )
        with pytest.raises(FatalHttpError, match=r"Procedure.*nothing was sent"):
            _push_declared(fhir_server, cache, plan, conditionalUpdate=False, updateCreate=False)
    finally:
        cache.close()
    assert sum(server_totals(fhir_server).values()) == 0
