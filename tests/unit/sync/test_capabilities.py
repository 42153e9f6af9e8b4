"""Server capabilities, size refusals, dependency order and failure grouping."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_cart.errors import FatalHttpError
from fhir_cart.sync.capabilities import ServerCapabilities, is_size_refusal
from fhir_cart.sync.push import dependency_order, failure_causes

STATEMENT: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "rest": [
        {
            "interaction": [{"code": "batch"}],
            "resource": [
                {
                    "type": "Observation",
                    "conditionalUpdate": True,
                    "searchParam": [{"name": "patient"}, {"name": "identifier"}],
                },
                {"type": "AdverseEvent", "searchParam": [{"name": "subject"}]},
            ],
        }
    ],
}


def test_capabilities_come_from_the_statement_and_settings_override() -> None:
    caps = ServerCapabilities.from_statement(STATEMENT)
    assert (caps.transaction, caps.batch, caps.max_transaction_entries) == (False, True, None)
    assert caps.conditional_update == {"Observation": True}  # AdverseEvent's is not said
    assert caps.patient_param("Observation") == "patient"
    assert caps.patient_param("AdverseEvent") == "subject"
    assert caps.patient_param("Procedure") is None
    forced = ServerCapabilities.from_statement(
        STATEMENT, bundle_type="transaction", max_transaction_entries=8
    )
    assert (forced.transaction, forced.max_transaction_entries) == (True, 8)


def test_the_search_side_is_read_and_gives_the_pull_plan() -> None:
    statement = {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "operation": [{"name": "export"}],
                "resource": [
                    {
                        "type": "Patient",
                        "searchRevInclude": ["Observation:subject"],
                        "operation": [{"name": "everything"}],
                    },
                    {"type": "Observation", "searchParam": [{"name": "subject"}]},
                ],
            }
        ],
    }
    caps = ServerCapabilities.from_statement(statement)
    assert caps.search_rev_include["Patient"] == {"Observation:subject"}
    assert caps.operations == {"": {"export"}, "Patient": {"everything"}, "Observation": set()}
    plan = caps.pull_plan(["Observation", "AdverseEvent"])
    assert plan["Observation"].startswith("Observation?subject=Patient/a,Patient/b")
    assert "read by type" in plan["AdverseEvent"]


def test_a_size_refusal_halves_the_limit_once_per_size() -> None:
    caps = ServerCapabilities()
    assert caps.fits(500)
    assert caps.learn_size_refusal(98) == 49
    assert caps.learn_size_refusal(98) == 49  # an older bundle refused late changes nothing
    assert caps.learn_size_refusal(14) == 7
    assert caps.learn_size_refusal(20) == 7  # a bigger bundle sent before the lower limit
    assert not caps.fits(8)
    assert len(caps.learned) == 2


@pytest.mark.parametrize(
    ("status", "message", "size"),
    [
        (400, "Transaction requires strict isolation but has too many entries", True),
        (400, "Transaction contains more update operations than allowed", True),
        (413, "Payload Too Large", True),
        (400, "Invalid additional property 'foo'", False),
        (500, "too many connections", False),
    ],
)
def test_size_refusals_are_told_from_content_errors(status: int, message: str, size: bool) -> None:
    assert is_size_refusal(FatalHttpError(message, status=status)) is size


def _res(rtype: str, rid: str, *refs: str) -> dict[str, Any]:
    return {
        "resourceType": rtype,
        "id": rid,
        "focus": [{"reference": f"urn:uuid:{r}"} for r in refs],
    }


def test_dependency_order_puts_what_is_referred_to_first() -> None:
    resources = [
        _res("Observation", "o", "c", "p"),
        _res("Condition", "c", "p"),
        _res("Patient", "p"),
        _res("Procedure", "x", "p"),
    ]
    order = [(depth, r["id"]) for depth, r in dependency_order(resources)]
    assert order == [(0, "p"), (1, "c"), (1, "x"), (2, "o")]


def test_failures_are_grouped_once_per_cause_with_a_hint() -> None:
    key = ("Observation", "sys", "v")
    failures = [(key, 400, "too many entries")] * 54 + [(("Patient", "s", "v"), 401, "no")]
    causes = failure_causes(failures)
    assert [(c.count, c.status) for c in causes] == [(54, 400), (1, 401)]
    assert causes[0].types == {"Observation": 54}
    assert "max_transaction_entries" in str(causes[0].hint)
    assert "auth" in str(causes[1].hint)


def _statement(**types: dict[str, bool]) -> dict[str, Any]:
    resources = [{"type": t, **flags} for t, flags in types.items()]
    return {
        "resourceType": "CapabilityStatement",
        "rest": [{"interaction": [{"code": "transaction"}], "resource": resources}],
    }


def test_how_each_type_is_written_follows_conditional_update_and_update_create() -> None:
    caps = ServerCapabilities.from_statement(
        _statement(
            Observation={"conditionalUpdate": True},
            Procedure={"conditionalUpdate": False, "updateCreate": True},
            Condition={},  # not said: tried as a conditional update, as before
        )
    )
    assert not caps.writes_by_id("Observation")
    assert caps.writes_by_id("Procedure")
    assert not caps.writes_by_id("Condition")
    assert not caps.writes_by_id("Patient")  # not listed at all
    assert caps.writes_by_id("AdverseEvent", by_identifier=False)
    assert (
        caps.unwritable(["Observation", "Procedure", "Condition", "AdverseEvent"], ["AdverseEvent"])
        == ""
    )


def test_a_type_with_neither_conditional_update_nor_update_create_is_refused() -> None:
    caps = ServerCapabilities.from_statement(
        _statement(
            Observation={"conditionalUpdate": False, "updateCreate": False},
            AdverseEvent={"conditionalUpdate": True, "updateCreate": False},
            Procedure={"conditionalUpdate": True, "updateCreate": False},
        )
    )
    problem = caps.unwritable(["Observation", "AdverseEvent", "Procedure"], ["AdverseEvent"])
    assert "AdverseEvent, Observation:" in problem  # Procedure has its conditional update
    assert "Hint:" in problem
