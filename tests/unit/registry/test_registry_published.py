"""The registry's outputs are published data (issue 20): event ids are keyed, reports carry
pseudonyms, relative days and field names only, open text is dropped unless ``keep_text``
lists it and then screened, Provenance cites rows by keyed tokens only."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from fhir_cart.errors import Reject
from fhir_cart.library.concepts import ConceptLibrary, load_concepts
from fhir_cart.library.terminology import load_terminology
from fhir_cart.records import Case, Value
from fhir_cart.registry.build import CentreData, build_registry
from fhir_cart.registry.definition import CentreDef, RegistryDef
from tests.registry_helpers import KEY, OTHER_KEY, definition, event, three_centres


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
        registry,
        tmp / "out",
        key=key,
        reader=reader(cases, **extra),
        library=library,  # type: ignore[arg-type]
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


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_event_ids_hold_no_source_cell(tmp_path: Path, library: ConceptLibrary) -> None:
    result = build(tmp_path, library, dated_ids())
    assert result.registry is not None
    ids = {e.event_id for c in result.registry.cases for e in c.events}
    assert ids
    assert not [i for i in ids if "2018" in i or "2021" in i or "2022" in i]
    text = every_output(tmp_path / "out")
    assert "2018-01-20" not in text
    assert "events-20" not in text


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_event_ids_are_keyed_and_stable(tmp_path: Path, library: ConceptLibrary) -> None:
    first = build(tmp_path / "a", library, dated_ids())
    again = build(tmp_path / "b", library, dated_ids())
    other = build(tmp_path / "c", library, dated_ids(), key=OTHER_KEY)
    assert first.registry
    assert again.registry
    assert other.registry

    def ids(result) -> set[str]:  # type: ignore[no-untyped-def]
        return {e.event_id for c in result.registry.cases for e in c.events}

    assert ids(first) == ids(again)
    assert ids(first).isdisjoint(ids(other))


def with_product(product: str) -> dict[str, list[Case]]:
    """London types the product of Anna's infusion as free text."""
    cases = three_centres()
    anna = cases["london"][0]
    events = tuple(
        e.model_copy(update={"attributes": {**e.attributes, "product": product}})
        if e.concept == "cart_infusion"
        else e
        for e in anna.events
    )
    cases["london"][0] = anna.model_copy(update={"events": events})
    return cases


def products(result) -> set[object]:  # type: ignore[no-untyped-def]
    return {
        e.attributes.get("product")
        for c in result.registry.cases
        for e in c.events
        if e.concept == "cart_infusion"
    }


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize("keep", [(), ("product",)])
def test_open_text_that_names_a_child_never_leaves(
    tmp_path: Path, library: ConceptLibrary, keep: tuple[str, ...]
) -> None:
    pseudonymisation = {
        "dates": "relative",
        "anchor": "diagnosis",
        "keep_text": list(keep),
        "drop_patient_attributes": ["patient_name"],
    }
    result = build(tmp_path, library, with_product(LEAKY_TEXT), pseudonymisation=pseudonymisation)
    assert LEAKY_TEXT not in products(result)
    text = every_output(tmp_path / "out")
    for word in ("Kymriah", "Kowalski", "lot 12", "2012"):
        assert word not in text, word


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_open_text_leaves_only_when_kept_and_clean(tmp_path: Path, library: ConceptLibrary) -> None:
    dropped = build(tmp_path / "a", library, with_product("kymriah-batch"))
    assert "kymriah-batch" not in products(dropped)
    pseudonymisation = {
        "dates": "relative",
        "anchor": "diagnosis",
        "keep_text": ["product"],
        "drop_patient_attributes": ["patient_name"],
    }
    kept = build(
        tmp_path / "b", library, with_product("kymriah-batch"), pseudonymisation=pseudonymisation
    )
    assert "kymriah-batch" in products(kept)
    known = build(tmp_path / "c", library, with_product("tisagenlecleucel"))
    assert "tisagenlecleucel" in products(known)  # a word of the library's value set is data


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_quality_report_quotes_no_source_value(tmp_path: Path, library: ConceptLibrary) -> None:
    cases = three_centres()
    bad = Reject(
        "berlin.csv",
        7,
        "Diagnosedatum",
        "31.02.2019",
        "'31.02.2019' is not a date",
        table="diagnosis",
    )
    high = event(
        "blasts", "marrow_blasts", dt.date(2019, 3, 20), value=Value(number=4711081542.0, unit="%")
    )
    cases["berlin"][0] = cases["berlin"][0].model_copy(
        update={"events": (*cases["berlin"][0].events, high)}
    )
    berlin = CentreData(cases["berlin"], rejects=[bad])
    result = build(tmp_path, library, cases, extra={"berlin": berlin})
    assert result.registry is not None
    quality = (tmp_path / "out" / "reports" / "quality.json").read_text()
    for needle in ("31.02.2019", "4711081542", "is not a date", "row 7", "berlin.csv"):
        assert needle not in quality, needle
    assert result.registry.quality["berlin"]["rejects"] == {"diagnosis.Diagnosedatum": 1}
    assert result.registry.quality["berlin"]["out_of_range"][0]["direction"] == "above"


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_birth_date_conflict_shows_no_age_in_days(tmp_path: Path, library: ConceptLibrary) -> None:
    cases = three_centres()
    anna = cases["london"][0]
    cases["london"][0] = anna.model_copy(
        update={"patient": anna.patient.model_copy(update={"birth_date": dt.date(2012, 5, 20)})}
    )
    result = build(tmp_path, library, cases)
    assert result.registry is not None
    [conflict] = [r for r in result.registry.conflicts if r["field"] == "birth_date"]
    assert set(conflict["values"].values()) == {"aged 6 years at diagnosis"}
    days = str((dt.date(2019, 3, 7) - dt.date(2012, 5, 14)).days)
    assert days not in (tmp_path / "out" / "reports" / "conflicts.csv").read_text()
