"""The hostile EHR resources (fixtures/ehr/*.json, format in its README) on both real
servers: every file is loaded onto sekmet-fhir and Medplum, the patients are pulled back
with a fresh cache, and

(a) every resource fetched is accounted for exactly once (patients, events, used, other,
    excluded), and every resource loaded but not fetched is one the pull could not ask for
    (its subject is no loaded Patient, or the server declares no patient search for its
    type, which the pull names);
(b) the pulled tables equal what ``cases_from_fhir`` makes offline of the same resources:
    the server round trip loses and changes nothing;
(c) each resource ends where its file expects (``in`` and ``reason`` here; every key of
    the format by ``tests/ehr_cases.check``, the checker of the offline unit test).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import ReverseResult, cases_from_fhir
from fhir_cart.sync.accounting import PLACES, places
from tests.ehr_cases import EhrCase, check
from tests.integration.pulling import Key, Pulled, key, load, pull_fresh, reasons, subject
from tests.support import FIXTURES

pytestmark = pytest.mark.integration
Json = dict[str, Any]

FILES = sorted((FIXTURES / "ehr").glob("*.json"))


def _files() -> list[Json]:
    return [orjson.loads(path.read_bytes()) for path in FILES]


def _expected(files: list[Json]) -> dict[Key, Json]:
    out: dict[Key, Json] = {}
    for case in files:
        for name, expect in case["expect"].items():
            rtype, _, rid = name.partition("/")
            out[(rtype, rid)] = expect
    return out


def test_each_file_expects_each_of_its_resources_once() -> None:
    files = _files()
    assert files, "no fixtures/ehr/*.json"
    keys = [key(r) for case in files for r in case["resources"]]
    assert [k for k, n in Counter(keys).items() if n > 1] == []  # ids unique across files
    for path, case in zip(FILES, files, strict=True):
        named = {"/".join(key(r)) for r in case["resources"]}
        assert named == set(case["expect"]), path.name
        assert {e["in"] for e in case["expect"].values()} <= set(PLACES), path.name


def _check(
    where: dict[Key, list[str]], why: dict[Key, str], expected: dict[Key, Json]
) -> list[str]:
    """What differs from the files' ``in`` and ``reason``, in words."""
    wrong = []
    for k, expect in sorted(expected.items()):
        if k not in where:
            continue
        if where[k] != [expect["in"]]:
            wrong.append(f"{'/'.join(k)}: in {where[k]}, expected {expect['in']}")
        elif "reason" in expect and expect["reason"] not in why.get(k, ""):
            wrong.append(f"{'/'.join(k)}: reason {why.get(k)!r}, expected {expect['reason']!r}")
    return wrong


def test_offline_each_resource_ends_where_its_file_says(ctx: MappingContext) -> None:
    files = _files()
    resources = [r for case in files for r in case["resources"]]
    result = cases_from_fhir(ctx, resources)
    assert _check(places(ctx, resources, result), reasons(result), _expected(files)) == []


def _rows(result: ReverseResult) -> list[tuple[Any, ...]]:
    return sorted(tuple(str(v) for v in row.values()) for row in result.other)


def _not_fetchable(resource: Json, patients: set[str], not_searchable: list[str]) -> bool:
    """A resource no pull of these patients can ask for on this server."""
    if resource["resourceType"] in not_searchable:
        return True
    return resource["resourceType"] != "Patient" and subject(resource) not in patients


@pytest.fixture
def pulled(fhir_server: str, ctx: MappingContext, tmp_path: Path) -> tuple[Pulled, list[Json]]:
    """The files as this server took them: a resource it refused (only one whose file says
    ``refusable``, e.g. a date that is no date) is left out, and checked offline only."""
    files = _files()
    resources = [r for case in files for r in case["resources"]]
    refused = load(fhir_server, resources)
    expected = _expected(files)
    refusable = {"/".join(k) for k, e in expected.items() if e.get("refusable")}
    assert {k: s for k, s in refused.items() if k not in refusable} == {}
    taken = [[r for r in case["resources"] if "/".join(key(r)) not in refused] for case in files]
    files = [{**case, "resources": kept} for case, kept in zip(files, taken, strict=True)]
    patients = [
        r["id"] for case in files for r in case["resources"] if r["resourceType"] == "Patient"
    ]
    return pull_fresh(fhir_server, ctx, patients, tmp_path), files


def test_ehr_resources_round_trip_a_real_server(
    pulled: tuple[Pulled, list[Json]], ctx: MappingContext
) -> None:
    got, files = pulled
    resources = {key(r): r for case in files for r in case["resources"]}
    patients = {k[1] for k in resources if k[0] == "Patient"}
    stats = got.outcome.stats
    # (a) what was not fetched is what no pull could ask for (and the pull named its type)
    missed = [k for k in resources if k not in got.fetched]
    assert [
        k for k in missed if not _not_fetchable(resources[k], patients, stats.not_searchable)
    ] == []
    assert set(got.fetched) <= set(resources)
    result = got.result()
    where = places(ctx, list(got.fetched.values()), result)
    assert {k: v for k, v in where.items() if len(v) != 1} == {}
    counts = got.outcome.by_type
    assert sum(c.fetched for c in counts.values()) == len(got.fetched)
    for rtype, count in counts.items():
        assert (count.unaccounted, count.twice) == (0, 0), rtype
        assert count.fetched == sum(getattr(count, p) for p in PLACES), rtype
    # (b) the server round trip changes nothing: the same resources mapped offline
    offline = cases_from_fhir(ctx, [resources[k] for k in sorted(got.fetched)])
    by_id = {c.patient.study_id: c for c in result.cases}
    assert by_id == {c.patient.study_id: c for c in offline.cases}
    assert _rows(result) == _rows(offline)
    assert sorted(result.excluded, key=str) == sorted(offline.excluded, key=str)
    # (c) each resource where its file says
    assert _check(where, reasons(result), _expected(files)) == []
    for path, case in zip(FILES, files, strict=True):
        here = [r for r in case["resources"] if key(r) in got.fetched]
        names = {"/".join(key(r)) for r in here}
        part = EhrCase(
            path, case["about"], here, {k: v for k, v in case["expect"].items() if k in names}
        )
        assert check(result, part, ctx) == [], path.name
