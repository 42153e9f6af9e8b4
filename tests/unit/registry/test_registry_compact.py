"""Records held for a build share their pydantic field sets (:mod:`fhir_cart.registry.compact`):
less memory, and nothing a record says or does changes."""

from __future__ import annotations

import datetime as dt

from fhir_cart.records import Case, Value
from fhir_cart.registry.compact import FieldSets, Tokens
from fhir_cart.registry.extract import RecordKeys
from tests.registry_helpers import event, patient

DAY = dt.date(2019, 3, 7)


def _records() -> list[Case]:
    """Records as a work folder gives them back (every field given), and one as built."""
    built = [
        patient("berlin", "B1", event("dx", "diagnosis", DAY, value=Value(code="b_all"))),
        patient("berlin", "B2", event("dx", "diagnosis", DAY, value=Value(code="aml"))),
        patient("berlin", "B3", event("dx", "diagnosis", DAY)),
    ]
    return [Case.model_validate(c.model_dump(mode="json")) for c in built[:2]] + built[2:]


def _sets(case: Case) -> list[set[str]]:
    first = case.events[0]
    return [
        case.model_fields_set,
        case.patient.model_fields_set,
        first.model_fields_set,
        first.when.model_fields_set,
        *([] if first.value is None else [first.value.model_fields_set]),
    ]


def test_equal_field_sets_are_one_object_and_each_record_keeps_its_own() -> None:
    records = _records()
    before = [[set(s) for s in _sets(c)] for c in records]
    dumped = [c.model_dump_json(exclude_unset=True) for c in records]
    FieldSets().share(records)
    assert [_sets(c) for c in records] == before
    assert [c.model_dump_json(exclude_unset=True) for c in records] == dumped
    first, second, built = records
    assert first.events[0].when.model_fields_set is second.events[0].when.model_fields_set
    assert first.events[0].value is not None
    assert second.events[0].value is not None
    assert first.events[0].value.model_fields_set is second.events[0].value.model_fields_set
    assert first.patient.model_fields_set is second.patient.model_fields_set
    # a record built with fewer fields given keeps its own (smaller) set
    assert built.events[0].model_fields_set != first.events[0].model_fields_set
    assert built.events[0].model_fields_set is not first.events[0].model_fields_set


def test_a_copy_with_an_update_leaves_the_shared_set_alone() -> None:
    records = [patient("berlin", n, event("dx", "diagnosis", DAY)) for n in ("B8", "B9")]
    FieldSets().share(records)
    first, second = records
    assert first.events[0].model_fields_set is second.events[0].model_fields_set
    shared = set(first.events[0].model_fields_set)
    assert "source_text" not in shared
    changed = first.events[0].model_copy(update={"source_text": "B-ALL"})
    assert "source_text" in changed.model_fields_set
    assert second.events[0].model_fields_set == shared


def test_equal_tokens_are_one_string_and_the_keys_stay_equal() -> None:
    def keys(ident: str) -> dict[str, RecordKeys]:
        # as read back from a work folder: every token its own string object
        names = {"given_name": tuple("".join(["ab", c]) for c in "cdc"), "birth_name": None}
        return {"p": RecordKeys(("".join(["id", ident]),), names)}

    first, second = keys("1"), keys("2")
    assert first["p"].names["given_name"][0] is not second["p"].names["given_name"][0]
    tokens = Tokens()
    shared = [tokens.share(first), tokens.share(second)]
    assert shared == [first, second]
    assert tokens.share(None) is None
    one, other = (s["p"] for s in shared if s is not None)
    given, again = one.names["given_name"], other.names["given_name"]
    assert given is not None
    assert again is not None
    assert given[0] is again[0]
    assert given[0] is given[2]  # within one record too
    assert one.identifiers != other.identifiers
