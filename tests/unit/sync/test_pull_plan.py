"""The pull's request plan against scripted servers (respx): multi-valued searches by chunk
of patients, and what happens when a server refuses them, cuts them short or reads the
comma literally. Whatever the server does, every resource arrives with its patient; end to
end on the real servers: tests/integration/test_pull_plan.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import respx

from fhir_cart.client import FhirClient
from fhir_cart.sync.pull import EVENT_TYPES, PullSelection, PullStats, pull_resources

BASE = "https://fhir.test/r4"
Json = dict[str, Any]
SYSTEM = "urn:sys"


def capabilities() -> Json:
    return {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {
                        "type": t,
                        "searchParam": [
                            {"name": "subject"},
                            {"name": "_id"},
                            {"name": "identifier"},
                        ],
                    }
                    for t in ("Patient", *EVENT_TYPES)
                ],
            }
        ],
    }


@dataclass
class Scripted:
    """A FHIR server over a dict of resources, with configurable faults."""

    patients: int = 250
    or_mode: str = "ok"  # "ok", "literal" (a,b is one value), "first" (only a), "refuse"
    max_values: int | None = None  # 414 above this many values
    no_paging_above: int | None = None  # answers at most this many, with total, no next
    refuse_param: frozenset[str] = frozenset()  # "Type.param" refused as unknown
    data: dict[str, list[Json]] = field(default_factory=dict)
    seen: list[httpx.URL] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data["Patient"] = [
            {
                "resourceType": "Patient",
                "id": f"p{i}",
                "identifier": [{"system": SYSTEM, "value": f"v{i}"}],
            }
            for i in range(self.patients)
        ]
        self.data["Condition"] = [
            {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/p{i}"}}
            for i in range(self.patients)
        ]
        self.data["Observation"] = [
            {
                "resourceType": "Observation",
                "id": f"o{i}-{k}",
                "subject": {"reference": f"Patient/p{i}"},
            }
            for i in range(self.patients)
            for k in range(2)
        ]

    def values(self, raw: str) -> list[str]:
        if self.or_mode == "literal":
            return [raw]
        if self.or_mode == "first":
            return raw.split(",")[:1]
        return raw.split(",")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.url)
        rtype = request.url.path.rsplit("/", 1)[-1]
        if rtype == "metadata":
            return self.json(capabilities())
        params = dict(request.url.params)
        count = int(params.pop("_count", "50"))
        offset = int(params.pop("_offset", "0"))
        matched = self.data.get(rtype, [])
        for name, raw in params.items():
            if f"{rtype}.{name}" in self.refuse_param:
                return self.json(self.outcome(f"Unknown search parameter '{name}'"), 400)
            if "," in raw and self.or_mode == "refuse":
                return self.json(self.outcome("multiple values not supported"), 400)
            if self.max_values is not None and len(raw.split(",")) > self.max_values:
                return httpx.Response(414)
            wanted = set(self.values(raw))
            if wanted == {f"{SYSTEM}|"}:  # every identifier of the system
                continue
            matched = [r for r in matched if self.key(r, name) & wanted]
        if self.no_paging_above is not None:
            page, more = matched[: self.no_paging_above], False
        else:
            page, more = matched[offset : offset + count], offset + count < len(matched)
        entries = [{"resource": r, "search": {"mode": "match"}} for r in page]
        bundle: Json = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matched),
            "entry": entries,
        }
        if more:
            query = {**dict(request.url.params), "_offset": str(offset + count)}
            url = str(request.url.copy_with(params=query))
            bundle["link"] = [{"relation": "next", "url": url}]
        return self.json(bundle)

    @staticmethod
    def key(resource: Json, name: str) -> set[str]:
        if name == "_id":
            return {resource["id"]}
        if name == "identifier":
            return {f"{i['system']}|{i['value']}" for i in resource.get("identifier", ())}
        return {resource.get("subject", {}).get("reference", "")}

    @staticmethod
    def outcome(text: str) -> Json:
        issue = {"severity": "error", "code": "not-supported", "diagnostics": text}
        return {"resourceType": "OperationOutcome", "issue": [issue]}

    @staticmethod
    def json(body: Json, status: int = 200) -> httpx.Response:
        return httpx.Response(
            status, content=orjson.dumps(body), headers={"Content-Type": "application/fhir+json"}
        )

    def per_type(self) -> Counter[str]:
        return Counter(u.path.rsplit("/", 1)[-1] for u in self.seen)


def run(
    server: Scripted, selection: PullSelection | None = None
) -> tuple[dict[str, Any], PullStats]:
    selection = selection or PullSelection(kind="search", query=f"identifier={SYSTEM}|")
    stats = PullStats()

    async def go() -> dict[str, Any]:
        got: dict[str, Any] = {}
        with respx.mock(assert_all_called=False) as mock:
            mock.route(host="fhir.test").mock(side_effect=server)
            async with FhirClient(base_url=BASE, max_retries=0) as client:
                async for patient, resources in pull_resources(client, selection, stats):
                    assert patient["id"] not in got
                    got[patient["id"]] = sorted(r["id"] for r in resources)
        return got

    return asyncio.run(go()), stats


def expected(patients: int) -> dict[str, Any]:
    return {f"p{i}": sorted([f"c{i}", f"o{i}-0", f"o{i}-1"]) for i in range(patients)}


def test_one_search_per_type_per_hundred_patients() -> None:
    server = Scripted()
    got, stats = run(server)
    assert got == expected(250)
    per_type = server.per_type()
    assert {t: per_type[t] for t in EVENT_TYPES} == dict.fromkeys(EVENT_TYPES, 3)
    assert stats.learned == []


@pytest.mark.parametrize("mode", ["literal", "first"])
def test_a_server_that_does_not_read_the_comma_as_or_is_caught(mode: str) -> None:
    """It would answer a,b with nothing (or with a's only) and lose data silently; one value
    searched alone shows it, and the pull goes on one value at a time."""
    server = Scripted(patients=30, or_mode=mode)
    selection = PullSelection(
        kind="patients", identifiers=tuple(f"{SYSTEM}|v{i}" for i in range(30))
    )
    got, stats = run(server, selection)
    assert got == expected(30)
    assert any("does not combine values" in note for note in stats.learned), stats.learned


def test_multi_valued_searches_refused_are_split_down_to_one_value() -> None:
    server = Scripted(patients=12, or_mode="refuse")
    got, stats = run(server)
    assert got == expected(12)
    assert any("naming at most 1 " in note for note in stats.learned), stats.learned


def test_a_url_too_long_halves_the_chunk_once_for_all() -> None:
    server = Scripted(patients=250, max_values=60)
    got, stats = run(server)
    assert got == expected(250)
    assert any("naming at most 50 " in note for note in stats.learned), stats.learned
    # learned once: later chunks go at 50 straight away (5 chunks, 1 refusal per type...
    assert server.per_type()["Condition"] <= 3 + 5


def test_an_answer_cut_short_without_a_next_page_is_split_not_lost() -> None:
    """Medplum's router does not page: past ``_count`` it answers the first ones, total N."""
    server = Scripted(patients=100, no_paging_above=120)
    got, stats = run(server)
    assert got == expected(100)
    assert any("no next page" in note for note in stats.learned), stats.learned


def test_a_patient_search_cut_short_is_an_error_not_a_smaller_cohort() -> None:
    server = Scripted(patients=30, no_paging_above=20)
    with pytest.raises(Exception, match="20 of 30 matches"):
        run(server)


def test_a_refused_patient_parameter_reads_the_type_once_by_type() -> None:
    server = Scripted(patients=150, refuse_param=frozenset({"Observation.subject"}))
    got, stats = run(server)
    assert got == expected(150)
    assert any("refused search parameter Observation?subject" in n for n in stats.learned)
    # one refused search, then the type read once by type (pages of 1,000)
    assert server.per_type()["Observation"] <= 2 + 1


def test_compartment_types_are_asked_by_the_same_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Types beyond the library's (every one the server can search by patient) go by the
    same multi-valued searches: one per type per 100 patients, never one per patient."""
    extra = ("AllergyIntolerance", "Encounter")
    statement = capabilities()
    statement["rest"][0]["resource"] += [
        {"type": t, "searchParam": [{"name": "subject"}]} for t in extra
    ]
    monkeypatch.setattr(f"{__name__}.capabilities", lambda: statement)
    server = Scripted(patients=250)
    server.data["AllergyIntolerance"] = [
        {
            "resourceType": "AllergyIntolerance",
            "id": f"a{i}",
            "subject": {"reference": f"Patient/p{i}"},
        }
        for i in range(0, 250, 2)
    ]
    got, stats = run(server)
    want = expected(250)
    for i in range(0, 250, 2):
        want[f"p{i}"] = sorted([*want[f"p{i}"], f"a{i}"])
    assert got == want
    assert {server.per_type()[t] for t in extra} == {3}
    assert stats.asked == [*EVENT_TYPES, *extra]
    assert stats.not_asked == []
