"""`fhir-cart map` writes the same bytes as before streaming (issue 13).

tests/data/map_golden/expected.json holds the sha256 of every file `fhir-cart map` wrote for
each case, generated on main before the map job streamed (the in-memory job that mapped every
case twice). Cases: the seed workbook, a wide CSV, a folder of CSVs in long format, rejects
with and without --continue-on-error, small bundles in create mode, and a canonical CSV
study whose events are shuffled (a patient's events anywhere in the file).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fhir_cart.cli import main
from tests.support import ROOT

EXPECTED = json.loads((ROOT / "tests" / "data" / "map_golden" / "expected.json").read_text())


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_map_output_is_byte_identical_to_the_in_memory_job(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = EXPECTED[name]
    monkeypatch.chdir(ROOT)
    out = tmp_path / name
    assert main(["map", *case["argv"], "-o", str(out)]) == case["exit"]
    assert _hashes(out) == case["files"]


INDENTED_SEED_BUNDLES = {  # expected.json's seed bundles indented (issue 18 codes)
    "bundles/bundle-0001.json": "e0f6f3a16bdb6c4967c7c352fcb51407aa32ce47c4806cd562015761002bcb11",
    "bundles/bundle-0002.json": "19e8be9082a6f1b0f154b8fc2e531af7ff6c8da5a6ea22f9815f726aedce8668",
}


def test_indent_writes_the_bundles_as_before_and_compact_ones_hold_the_same_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bundles are compact by default; `--indent` gives the indented bytes map wrote before,
    with the same JSON in them; nothing else changes."""
    case = EXPECTED["seed"]
    monkeypatch.chdir(ROOT)
    assert main(["map", *case["argv"], "--indent", "-o", str(tmp_path / "indented")]) == 0
    indented = _hashes(tmp_path / "indented")
    assert {k: v for k, v in indented.items() if k.startswith("bundles/")} == INDENTED_SEED_BUNDLES
    compact = case["files"]
    assert {k: v for k, v in indented.items() if not k.startswith("bundles/")} == {
        k: v for k, v in compact.items() if not k.startswith("bundles/")
    }
    assert main(["map", *case["argv"], "-o", str(tmp_path / "compact")]) == 0
    for name in INDENTED_SEED_BUNDLES:
        small = (tmp_path / "compact" / name).read_bytes()
        big = (tmp_path / "indented" / name).read_bytes()
        assert b"\n" not in small
        assert len(small) < len(big)
        assert json.loads(small) == json.loads(big)
