"""The registry's patients gathered one at a time (issue 19, memory): tables built in Arrow
chunks are the tables built in one go, and a build that keeps no objects writes the same
bytes as one that keeps them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from fhir_cart.library.concepts import ConceptLibrary, load_concepts
from fhir_cart.library.terminology import load_terminology
from fhir_cart.records import Case, Event, PatientRecord
from fhir_cart.registry import tables
from fhir_cart.registry.build import build_registry
from tests.registry_helpers import KEY, definition, output_files, reader_of, three_centres


@pytest.fixture(scope="module")
def library() -> ConceptLibrary:
    return load_concepts(load_terminology())


def _cases() -> list[Case]:
    grades: list[object] = [2, 3, None, "3-4", 1]  # a band in the fourth patient only
    return [
        Case(
            patient=PatientRecord(study_id=f"R{n}", centre="c", sex="female" if n % 2 else None),
            events=(
                Event(event_id=f"e{n}", concept="crs", attributes={"grade": g} if g else {}),
                Event(event_id=f"f{n}", concept="diagnosis"),
            ),
        )
        for n, g in enumerate(grades)
    ]


def _events(library: ConceptLibrary, chunk: int) -> pa.Table:
    builder = tables.event_builder(library)
    builder._chunk = chunk
    for case in _cases():
        tables.add_events(builder, case, {})
    return builder.table()


def test_tables_in_chunks_are_the_table_in_one_go(library: ConceptLibrary) -> None:
    whole = _events(library, chunk=1_000)
    assert whole.column("grade").type == pa.string()  # the band makes the column text
    grades = whole.column("grade").to_pylist()
    assert grades == ["2", None, "3", None, None, None, "3-4", None, "1", None]  # e, f per patient
    for chunk in (1, 2, 3):  # the band lands in a chunk of its own, or beside whole numbers
        part = _events(library, chunk=chunk)
        assert part.equals(whole)
        assert part.schema == whole.schema
        assert tables.parquet_bytes(part) == tables.parquet_bytes(whole)


def test_patient_table_in_chunks(library: ConceptLibrary) -> None:
    def table(chunk: int) -> pa.Table:
        builder = tables.patient_builder(library)
        builder._chunk = chunk
        for case in _cases():
            tables.add_patient(builder, case, ["c"])
        return builder.table()

    assert table(1).equals(table(100))
    assert table(1).column("sex").to_pylist() == [None, "female", None, "female", None]


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_a_build_that_keeps_nothing_writes_the_same_bytes(
    tmp_path: Path, library: ConceptLibrary
) -> None:
    written = {}
    for keep in (True, False):
        folder = tmp_path / str(keep)
        folder.mkdir()
        result = build_registry(
            definition(folder),
            folder / "out",
            key=KEY,
            reader=reader_of(three_centres()),
            library=library,
            keep=keep,
        )
        registry = result.registry
        assert registry is not None
        assert (registry.patient_count, registry.shared_count) == (5, 2)
        held = (len(registry.cases), len(registry.merged), len(registry.provenance) > 0)
        assert held == ((5, 5, True) if keep else (0, 0, False))
        written[keep] = output_files(folder / "out")
    assert written[True] == written[False]
    assert any(name.startswith("fhir/Provenance") for name in written[True])


def test_a_streamed_file_is_written_only_when_its_bytes_change(tmp_path: Path) -> None:
    """Provenance goes from the build's temporary file to its place: an unchanged file is
    left alone (same inode), a changed one replaced whole, from where the stream stands."""
    import io

    from fhir_cart.registry.files import write_stream_if_changed

    path = tmp_path / "fhir" / "Provenance.ndjson"
    write_stream_if_changed(path, io.BytesIO(b'{"a": 1}\n'))
    assert path.read_bytes() == b'{"a": 1}\n'
    inode = path.stat().st_ino
    write_stream_if_changed(path, io.BytesIO(b'{"a": 1}\n'))
    assert path.stat().st_ino == inode  # not rewritten
    stream = io.BytesIO(b'skip{"b": 2}\n')
    stream.seek(4)
    write_stream_if_changed(path, stream)
    assert path.read_bytes() == b'{"b": 2}\n'
    assert path.stat().st_ino != inode
    assert [p.name for p in path.parent.iterdir()] == ["Provenance.ndjson"]
