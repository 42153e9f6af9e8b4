"""The one table of resource kinds drives every consumer (docs/architecture.md, "Add a FHIR
resource kind"): each test iterates the table, so a new row is checked end to end."""

from __future__ import annotations

from typing import Any

from fhir_cart.bundle import has_identifier_search, map_cases
from fhir_cart.library.concepts import KINDS as CONCEPT_KINDS
from fhir_cart.mappers import from_fhir, to_fhir
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.mappers.kinds import EVENT_TYPES, ID_KINDS, READ_ONLY_TYPES, RESOURCE_KINDS
from fhir_cart.sync import pull, retract
from fhir_cart.sync.retract import Removed
from tests.unit.seed_cases import seed_cases

ON_THE_PATIENT = {"death", "follow_up"}


def _seed_resources(ctx: MappingContext) -> dict[str, list[dict[str, Any]]]:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resources in map_cases(ctx.with_style("relative"), seed_cases()):
        for resource in resources:
            by_type.setdefault(resource["resourceType"], []).append(resource)
    return by_type


def test_every_concept_kind_has_a_row_or_lives_on_the_patient() -> None:
    written = {k.concept_kind for k in RESOURCE_KINDS if k.concept_kind is not None}
    assert set(CONCEPT_KINDS) == written | ON_THE_PATIENT
    assert set(to_fhir._MAPPERS) == written  # a builder per written kind
    assert len({k.type for k in RESOURCE_KINDS}) == len(RESOURCE_KINDS)
    assert len(set(ID_KINDS.values())) == len(RESOURCE_KINDS)


def test_every_row_is_written_identified_and_read_back(ctx: MappingContext) -> None:
    """Per row: the seed cohort writes resources of the type, with the row's identifier
    system and shape; the context reads the centre back from that system; a pull fetches
    the type and the reverse mapper turns it back into an event (or the patient)."""
    by_type = _seed_resources(ctx)
    for kind in RESOURCE_KINDS:
        resources = by_type.get(kind.type)
        assert resources, f"the seed cohort writes no {kind.type}"
        identifier = resources[0]["identifier"]
        assert isinstance(identifier, dict) is kind.single_identifier, kind.type
        first = identifier if kind.single_identifier else identifier[0]
        assert first["system"].endswith(f"/seed/{kind.identifier_kind}"), kind.type
        assert ctx.centre_of_system(first["system"]) == "seed"
        assert has_identifier_search(kind.type) is kind.identifier_search
        if kind.concept_kind is not None:
            assert kind.type in EVENT_TYPES
            assert kind.type in from_fhir._EVENT_MAPPERS
    everything = [r for rs in by_type.values() for r in rs]
    back = cases_from_fhir(ctx, everything)
    assert not back.unmapped
    read: dict[str, int] = {}
    for case in back.cases:
        for event in case.events:
            kind_of = ctx.concepts.concept(event.concept).kind
            read[kind_of] = read.get(kind_of, 0) + 1
    for kind in RESOURCE_KINDS:
        if kind.concept_kind is not None:
            assert read[kind.concept_kind] == len(by_type[kind.type]), kind.type


def test_the_pull_fetches_the_table_and_the_read_only_types() -> None:
    assert pull.EVENT_TYPES == EVENT_TYPES
    written = [k.type for k in RESOURCE_KINDS if k.concept_kind is not None]
    assert list(EVENT_TYPES) == [*written, *READ_ONLY_TYPES]
    for rtype in READ_ONLY_TYPES:
        assert rtype not in ID_KINDS  # read back, never written


def test_every_row_is_withdrawn_as_it_says(ctx: MappingContext) -> None:
    by_type = _seed_resources(ctx)
    for kind in RESOURCE_KINDS:
        resource = by_type[kind.type][0]
        item = Removed((kind.type, "s", "v"), "server-id", "1", resource)
        withdrawn = retract._withdrawn(item, {})
        if kind.withdrawal == "status":
            assert withdrawn is not None
            assert withdrawn["status"] == "entered-in-error"
        elif kind.withdrawal == "verification":
            assert withdrawn is not None
            assert withdrawn["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
        else:  # deleted (no entered-in-error status in R4), or never removed (Patient)
            assert withdrawn is None, kind.type
