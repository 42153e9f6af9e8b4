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
