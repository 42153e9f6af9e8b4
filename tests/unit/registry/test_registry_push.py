"""Pushing a registry: the plan of the idempotent push (content hashes of the last push)
sends nothing for a rebuild of the same inputs, and only the changed patient's resources
when one centre's file changed.

Needs the open model's FHIR mappers (``mapping_context(..., extra=...)``, spec §4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_cart.library.concepts import ConceptLibrary, load_concepts
from fhir_cart.library.terminology import load_terminology
from fhir_cart.records import Case
from fhir_cart.registry.build import build_registry
from fhir_cart.registry.extract import event_key
from fhir_cart.registry.pseudonyms import Pseudonymiser
from tests.registry_helpers import KEY, add_negative_mrd, definition, reader_of, three_centres


def plan(cases: list[Case], last: dict[object, str]):  # type: ignore[no-untyped-def]
    from fhir_cart.mappers.context import mapping_context
    from fhir_cart.sync.push import plan_push

    ctx = mapping_context(identifier_base="https://registry.example.org/fhir-cart")
    return plan_push(
        ctx,
        cases,
        changed=lambda items: {k for k, h in items if last.get(k) != h},
        server_ids=lambda keys: {},
    )


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_rebuild_pushes_nothing_and_a_change_pushes_only_its_patient(tmp_path: Path) -> None:
    library: ConceptLibrary = load_concepts(load_terminology())
    cases = three_centres()
    registry = definition(tmp_path)
    first = build_registry(
        registry, tmp_path / "a", key=KEY, reader=reader_of(cases), library=library
    )
    assert first.registry is not None
    pushed = plan(first.registry.cases, {})
    assert pushed.to_send

    again = build_registry(
        registry, tmp_path / "b", key=KEY, reader=reader_of(cases), library=library
    )
    assert again.registry is not None
    assert plan(again.registry.cases, pushed.hashes).to_send == []

    add_negative_mrd(cases)
    (tmp_path / "inputs" / "rotterdam.csv").write_text("one row more\n")
    changed = build_registry(
        registry, tmp_path / "c", key=KEY, reader=reader_of(cases), library=library
    )
    assert changed.registry is not None
    sent = plan(changed.registry.cases, pushed.hashes).to_send
    # the build works on sealed records: Greta's new event by its keyed id
    keys = Pseudonymiser(KEY)
    mrd = event_key(keys, "rotterdam", cases["rotterdam"][1].patient.study_id, "mrd-2")
    greta_id = next(
        m.case.patient.study_id
        for m in changed.registry.merged
        if m.centres == ("rotterdam",) and ("rotterdam", mrd) in m.origin_of.values()
    )
    assert len(sent) == 1
    assert all(greta_id in str(resource) for resource in sent[0])
