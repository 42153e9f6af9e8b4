"""The registry build on three centres of Case objects: linkage, merge rules, conflict report,
tables, reports, FHIR artefacts, repeatable bytes, nothing rewritten when nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from fhir_cart.library.concepts import ConceptLibrary, load_concepts
from fhir_cart.library.terminology import load_terminology
from fhir_cart.registry.build import build_registry
from tests.registry_helpers import (
    KEY,
    add_negative_mrd,
    definition,
    output_files,
    reader_of,
    three_centres,
)


@pytest.fixture(scope="module")
def library() -> ConceptLibrary:
    return load_concepts(load_terminology())


def build(folder: Path, library: ConceptLibrary, key: bytes = KEY, **overrides: object):  # type: ignore[no-untyped-def]
    registry = definition(folder, **overrides)
    return build_registry(
        registry,
        folder / "out",
        key=key,
        reader=reader_of(three_centres()),
        library=library,
        summariser=lambda cases: [{"id": "patients", "label": "Patients", "value": len(cases)}],
    )


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_links_shared_children_and_keeps_the_others(
    tmp_path: Path, library: ConceptLibrary
) -> None:
    result = build(tmp_path, library)
    registry = result.registry
    assert registry is not None
    assert len(registry.cases) == 5  # 7 records, 2 children shared
    assert {k.method for k in registry.links} == {"identifier", "probabilistic"}
    shared = [m for m in registry.merged if len(m.centres) == 2]
    assert sorted(m.centres for m in shared) == [("berlin", "london"), ("berlin", "rotterdam")]


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_source_of_truth_rules_and_conflict_report(tmp_path: Path, library: ConceptLibrary) -> None:
    result = build(tmp_path, library)
    assert result.registry is not None
    rows = {(r["field"], r["chosen"]) for r in result.registry.conflicts}
    assert rows == {("diagnosis", "berlin"), ("cart_infusion", "rotterdam"), ("sex", "rotterdam")}
    infusion = next(r for r in result.registry.conflicts if r["field"] == "cart_infusion")
    assert infusion["rule"] == "prefer treating"
    assert infusion["values"]["berlin"] != infusion["values"]["rotterdam"]
    assert "day" in infusion["result"]
    assert "2018" not in infusion["result"]
    ben = next(m for m in result.registry.merged if m.centres == ("berlin", "rotterdam"))
    assert [
        e.when.date.isoformat() for e in ben.case.of("cart_infusion") if e.when and e.when.date
    ] == ["2018-09-03"]
    assert ben.case.patient.sex == "male"
    csv = (tmp_path / "out" / "reports" / "conflicts.csv").read_text()
    assert csv.splitlines()[0] == "patient,field,centre,value,rule,chosen,result"
    assert csv.count("cart_infusion") == 2  # one line per centre's value


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_pooled_events_keep_their_centre_and_words(tmp_path: Path, library: ConceptLibrary) -> None:
    build(tmp_path, library)
    events = ds.dataset(tmp_path / "out" / "tables" / "events", partitioning="hive").to_table()
    rows = events.to_pylist()
    assert {r["centre"] for r in rows} == {"berlin", "london", "rotterdam"}
    mrd = [r for r in rows if r["concept"] == "mrd"]
    assert {(r["centre"], r["source_text"]) for r in mrd} == {
        ("london", "neg"),
        ("rotterdam", "<0,01 %"),
    }
    assert all(
        r["when_date"] is None and r["when_anchor"] == "diagnosis"
        for r in rows
        if r["when_day"] is not None
    )
    patients = ds.dataset(tmp_path / "out" / "tables" / "patients", partitioning="hive").to_table()
    assert patients.num_rows == 5
    assert "national_id" not in patients.column_names
    assert "patient_name" not in patients.column_names
    assert set(patients.column("birth_date").to_pylist()) == {None}


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_reports_summaries_and_fhir(tmp_path: Path, library: ConceptLibrary) -> None:
    build(tmp_path, library)
    out = tmp_path / "out"
    quality = json.loads((out / "reports" / "quality.json").read_text())
    assert quality["london"]["completeness"]["cart_infusion"] == 0.5
    assert quality["rotterdam"]["unit_conversions"] == {}
    summaries = json.loads((out / "summaries.json").read_text())
    assert summaries["pooled"][0]["value"] == 5
    assert summaries["centres"]["berlin"][0]["value"] == 3
    concept_map = json.loads((out / "fhir" / "ConceptMap-registry-london.json").read_text())
    elements = {e["code"]: e for g in concept_map["group"] for e in g["element"]}
    negative = library.terminology.concept("mrd_result", "negative")["coding"][0]["code"]
    assert elements["neg"]["target"][0]["code"] == negative  # the library's code, whichever
    assert elements["ALL"]["target"][0]["code"] == "277571004"
    provenance = [
        json.loads(line) for line in (out / "fhir" / "Provenance.ndjson").read_text().splitlines()
    ]
    assert len(provenance) == 7  # one per patient and centre
    from fhir.resources.R4B.conceptmap import ConceptMap
    from fhir.resources.R4B.provenance import Provenance

    ConceptMap.model_validate(concept_map)
    for item in provenance:
        Provenance.model_validate(item)


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_same_inputs_same_bytes_and_nothing_rewritten(
    tmp_path: Path, library: ConceptLibrary
) -> None:
    first = build(tmp_path / "a", library)
    second = build(tmp_path / "b", library)
    assert output_files(tmp_path / "a" / "out") == output_files(tmp_path / "b" / "out")
    assert not first.skipped
    assert not second.skipped
    again = build(tmp_path / "a", library)
    assert again.skipped


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_changed_key_changes_every_pseudonym(tmp_path: Path, library: ConceptLibrary) -> None:
    from tests.registry_helpers import OTHER_KEY

    one = build(tmp_path / "a", library)
    two = build(tmp_path / "b", library, key=OTHER_KEY)
    assert one.registry is not None
    assert two.registry is not None
    names_one = {c.patient.study_id for c in one.registry.cases}
    names_two = {c.patient.study_id for c in two.registry.cases}
    assert names_one.isdisjoint(names_two)
    state = json.loads((tmp_path / "a" / "out" / "state.json").read_text())
    assert KEY.decode() not in json.dumps(state)


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_one_changed_centre_is_read_and_scored_again(
    tmp_path: Path, library: ConceptLibrary
) -> None:
    from fhir_cart.registry.build import build_registry as build_it

    cases = three_centres()
    registry = definition(tmp_path)
    out, work = tmp_path / "out", tmp_path / "work"
    first = build_it(registry, out, key=KEY, reader=reader_of(cases), library=library, work=work)
    assert first.centres_read == ["berlin", "london", "rotterdam"]
    assert first.registry is not None
    assert first.registry.link_state is not None
    assert first.registry.link_state.scored == ["berlin", "london", "rotterdam"]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.parquet")}

    (tmp_path / "inputs" / "rotterdam.csv").write_text("synthetic rotterdam, one row more\n")
    add_negative_mrd(cases)
    second = build_it(registry, out, key=KEY, reader=reader_of(cases), library=library, work=work)

    assert second.centres_read == ["rotterdam"]
    assert second.registry is not None
    assert second.registry.link_state is not None
    assert second.registry.link_state.scored == ["rotterdam"]
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.parquet")}
    untouched = {p for p in before if before[p] == after.get(p)}
    assert {p.parent.name for p in untouched} >= {"centre=berlin", "centre=london"}
    assert out / "tables" / "events" / "centre=rotterdam" / "part-0.parquet" not in untouched
    build_it(registry, tmp_path / "fresh", key=KEY, reader=reader_of(cases), library=library)
    assert output_files(out) == output_files(tmp_path / "fresh")


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize("damaged", ["centres/berlin.json", "links.json"])
def test_a_truncated_work_file_is_stale_not_fatal(
    tmp_path: Path, library: ConceptLibrary, damaged: str
) -> None:
    """What a kill during a non-atomic write leaves: half a JSON file. The next incremental
    build reads that centre again (or scores every pair again) and says so."""
    from fhir_cart.registry.build import build_registry as build_it

    cases = three_centres()
    registry = definition(tmp_path)
    out, work = tmp_path / "out", tmp_path / "work"
    build_it(registry, out, key=KEY, reader=reader_of(cases), library=library, work=work)
    file = work / damaged
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    (tmp_path / "inputs" / "rotterdam.csv").write_text("synthetic rotterdam, one row more\n")
    add_negative_mrd(cases)
    again = build_it(registry, out, key=KEY, reader=reader_of(cases), library=library, work=work)
    assert again.registry is not None
    assert [n for n in again.notes if file.name in n and "could not be read" in n]
    if damaged.startswith("centres"):
        assert again.centres_read == ["berlin", "rotterdam"]
    else:
        assert again.registry.link_state is not None
        assert again.registry.link_state.scored == ["berlin", "london", "rotterdam"]
    build_it(registry, tmp_path / "fresh", key=KEY, reader=reader_of(cases), library=library)
    assert output_files(out) == output_files(tmp_path / "fresh")


def test_files_are_replaced_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that dies before it completes leaves the old content (and no temporary)."""
    import os

    from fhir_cart.registry import tables

    path = tmp_path / "state.json"
    path.write_bytes(b'{"old": true}')

    def killed(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        tables._write_if_changed(path, b'{"new": true, "longer": "than the old one"}')
    assert path.read_bytes() == b'{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
