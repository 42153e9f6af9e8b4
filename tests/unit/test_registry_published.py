"""The registry's outputs are published data (issue 20): event ids are keyed, reports carry
pseudonyms, relative days and field names only, open text is dropped unless ``keep_text``
lists it and then screened, Provenance cites rows by keyed tokens only."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from fhir_cart.concepts import ConceptLibrary, load_concepts
from fhir_cart.errors import Reject
from fhir_cart.records import Case, Value
from fhir_cart.registry.build import CentreData, build_registry
from fhir_cart.registry.definition import CentreDef, RegistryDef
from fhir_cart.terminology import load_terminology
from tests.registry_helpers import KEY, OTHER_KEY, definition, event, patient, three_centres


@pytest.fixture(scope="module")
def library() -> ConceptLibrary:
    return load_concepts(load_terminology())


LEAKY_TEXT = "Kymriah lot 12 for Anna Kowalski born 14 May 2012"


def dated_ids() -> dict[str, list[Case]]:
    """Rotterdam's long format keyed ``[date, item]``: its event ids hold the dates."""
    cases = three_centres()
    cases["rotterdam"] = [
        c.model_copy(
            update={
                "events": tuple(
                    e.model_copy(
                        update={"event_id": f"events-{e.when.date.isoformat()}-{e.concept}"}
                    )
                    if e.when and e.when.date
                    else e
                    for e in c.events
                )
            }
        )
        for c in cases["rotterdam"]
    ]
    return cases


def reader(cases: dict[str, list[Case]], **extra: CentreData) -> object:
    def read(centre: CentreDef, _: RegistryDef) -> CentreData:
        if centre.id in extra:
            return extra[centre.id]
        located = {
            c.patient.study_id: {
                "": f"{centre.id}.csv, row {n + 2}",
                **{e.event_id: f"{centre.id}.csv, row {n + 2}" for e in c.events},
            }
            for n, c in enumerate(cases[centre.id])
        }
        return CentreData(list(cases[centre.id]), sources=located)

    return read


def build(tmp: Path, library: ConceptLibrary, cases: dict[str, list[Case]], **kw: object):  # type: ignore[no-untyped-def]
    extra = kw.pop("extra", {})
    key = kw.pop("key", KEY)
    registry = definition(tmp, **kw)
    return build_registry(
        registry, tmp / "out", key=key, reader=reader(cases, **extra), library=library  # type: ignore[arg-type]
    )


def every_output(out: Path) -> str:
    import zipfile

    import pyarrow.parquet as pq

    found = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            found.append(repr(pq.read_table(path).to_pylist()))
        elif path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as book:
                found += [book.read(n).decode() for n in book.namelist()]
        else:
            found.append(path.read_text(encoding="utf-8"))
    return "\n".join(found)


def test_event_ids_hold_no_source_cell(tmp_path: Path, library: ConceptLibrary) -> None:
    result = build(tmp_path, library, dated_ids())
    assert result.registry is not None
    ids = {e.event_id for c in result.registry.cases for e in c.events}
    assert ids
    assert not [i for i in ids if "2018" in i or "2021" in i or "2022" in i]
    text = every_output(tmp_path / "out")
    assert "2018-01-20" not in text
    assert "events-20" not in text


def test_event_ids_are_keyed_and_stable(tmp_path: Path, library: ConceptLibrary) -> None:
    first = build(tmp_path / "a", library, dated_ids())
    again = build(tmp_path / "b", library, dated_ids())
    other = build(tmp_path / "c", library, dated_ids(), key=OTHER_KEY)
    assert first.registry and again.registry and other.registry

    def ids(result) -> set[str]:  # type: ignore[no-untyped-def]
        return {e.event_id for c in result.registry.cases for e in c.events}

    assert ids(first) == ids(again)
    assert ids(first).isdisjoint(ids(other))
