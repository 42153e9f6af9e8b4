"""The reader streams patient by patient and reads what holding the whole file reads.

``stream_study`` hands out each case as soon as its rows are read: the patient table is read
alongside each event file (grouped by patient), or an event file in any order is sorted on
disk first. Whatever the path, cases and rejects (with their places and reasons, in file
order) must be those of the held read (every row first, then the cases), which is forced
here by making ``_feeds`` say the file must be held.
"""

from __future__ import annotations

import csv
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_cart.library.study_mapping import load_study_mapping
from fhir_cart.study import ReadResult, read, read_study, sources, stream_study
from tests.support import FIXTURES, MAPPINGS

BAD = MAPPINGS / "centres" / "bad.yaml"


def _long_study(tmp_path: Path, order: str) -> Path:
    """fixtures/bad/tables without its repeated patient: a refused patient (impossible birth
    date) with MRD rows, a blank patient id, bad values; events grouped by patient in the
    patients' order, or shuffled with an unknown patient id too."""
    folder = tmp_path / order
    shutil.copytree(FIXTURES / "bad" / "tables", folder)
    patients = (folder / "patients.csv").read_text().splitlines()
    keep = [line for line in patients if not line.startswith("X3,female")]
    keep.append('X4,female,2013-03-03,50,"SYNTHETIC"')
    (folder / "patients.csv").write_text("\n".join(keep) + "\n")
    with (folder / "mrd.csv").open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    rows += [
        ["X2", "day_28", "28", "pcr", "negative", "SYNTHETIC"],
        ["", "day_90", "90", "pcr", "negative", "SYNTHETIC"],
        ["X4", "day_28", "28", "pcr", "negative", "SYNTHETIC"],
        ["X4", "infusion", "0", "flow", "<0.01%", "SYNTHETIC"],
        ["X3", "day_28", "28", "pcr", "positive", "SYNTHETIC"],
    ]
    ids = ["X1", "X2", "X3", "X4"]
    if order == "grouped":  # by patient in the patients' order, a blank id among them
        rows = [r for r in rows if r[0] in ids or not r[0]]  # an unknown id is never grouped
        rows.sort(key=lambda r: ids.index(r[0]) if r[0] in ids else 1)
    else:
        random.Random(5).shuffle(rows)
    with (folder / "mrd.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return folder


def _held(monkeypatch: pytest.MonkeyPatch, path: Path, mapping: Path) -> ReadResult:
    with monkeypatch.context() as patched:
        patched.setattr(read, "_feeds", lambda *args: None)
        return read_study(path, load_study_mapping(mapping))


@pytest.mark.parametrize(
    ("study", "mapping", "feed"),
    [
        ("grouped", BAD, "_MergedFeed"),
        ("shuffled", BAD, "_SortedFeed"),
        ("seed/seed_cohort.xlsx", MAPPINGS / "centres" / "seed.yaml", "_IndexedFeed"),
        ("adult_cart", MAPPINGS / "centres" / "adult_cart.yaml", "_MergedFeed"),
    ],
)
def test_streaming_reads_what_holding_the_file_reads(
    study: str, mapping: Path, feed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _long_study(tmp_path, study) if mapping == BAD else FIXTURES / study
    used: list[str] = []
    feeds = read._feeds

    def spy(*args: Any) -> Any:
        found = feeds(*args)
        used.extend(type(f).__name__ for f in (found or {}).values())
        return found

    monkeypatch.setattr(read, "_feeds", spy)
    stream = stream_study(path, load_study_mapping(mapping))
    cases = list(stream)
    assert stream.streamed
    assert set(used) == {feed}
    held = _held(monkeypatch, path, mapping)
    assert cases == held.cases
    assert stream.rejects == held.rejects
    assert stream.unmapped_columns == held.unmapped_columns
    if mapping == BAD:
        reasons = {(r.row, r.reason) for r in stream.rejects if r.column == "study_id"}
        unknown = any("no patient with this id" in reason for _, reason in reasons)
        assert unknown == (study == "shuffled")
        assert any("an event row needs a patient id" in reason for _, reason in reasons)
        assert any("the patient's row 3 was rejected" in reason for _, reason in reasons)


def test_a_repeated_patient_id_holds_the_file(tmp_path: Path) -> None:
    """The second of two rows with one id is rejected, and which row owns the events
    depends on every row: such a file is held (and read as before)."""
    stream = stream_study(FIXTURES / "bad" / "tables", load_study_mapping(BAD))
    list(stream)
    assert not stream.streamed
    assert any("duplicate patient id" in r.reason for r in stream.rejects)


def test_the_first_case_comes_before_the_rest_of_the_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are pulled from the files as cases are taken (the first passes read one
    column only, through another path)."""
    folder = tmp_path / "study"
    folder.mkdir()
    with (folder / "patients.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["study_id", "sex", "birth_date", "last_follow_up_day", "note"])
        out.writerows([f"P{i:03d}", "female", "2010-01-01", "300", "x"] for i in range(200))
    with (folder / "mrd.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["study_id", "timepoint", "when_day", "method", "result", "note"])
        for i in range(200):
            out.writerow([f"P{i:03d}", "day_28", "28", "pcr", "negative", "x"])
            out.writerow([f"P{i:03d}", "infusion", "0", "pcr", "negative", "x"])
    pulled = 0
    rows = sources._data_rows

    def counted(*args: Any) -> Iterator[Any]:
        nonlocal pulled
        for row in rows(*args):
            pulled += 1
            yield row

    monkeypatch.setattr(sources, "_data_rows", counted)
    stream = stream_study(folder, load_study_mapping(BAD))
    cases = iter(stream)
    first = next(cases)
    assert first.patient.study_id == "P000"
    assert len(first.events) == 3
    assert pulled <= 5  # P000's row, its two MRD rows, and one row ahead in each file
    assert sum(1 for _ in cases) == 199
    assert pulled == 600
    assert stream.rejects == []
