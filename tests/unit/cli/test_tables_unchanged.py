"""`fhir-cart tables` writes the same bytes as before its hot loop was made faster (issue 24:
classification remembered per coding set, sparse CSV rows, the account reusing the
mapping's study ids, dates parsed once): the files' SHA-256 for the seed study's `map`
output, the EHR fixtures and the public mCODE 4.0.0 examples, with one worker and two,
recorded with the code of commit 088c554 (before that work)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

import fhir_cart.ndjson_tables as ndjson_tables
from fhir_cart.application import Application
from fhir_cart.cli import main
from tests.ehr_cases import load_cases
from tests.support import MAPPINGS, ROOT, SEED_FILE, need

SEED = SEED_FILE
MCODE = ROOT / ".cache" / "mcode-4.0.0"

BEFORE = {
    "seed": {
        "events.csv": "34c5fec6b50e7322f5a3dc404e67bbeafe4bff5d559132135559f0fcd26c6588",
        "patients.csv": "299b0180f3276808360c67a8d1c42cadb6291c7cb23d1fe5af39b0823a3709da",
    },
    "mcode": {
        "events.csv": "98908c87831dc26557bb2c8c0121865624d6123921b040946b2c1e94cd2b094c",
        # re-recorded when Patient extensions no attribute has became other rows (issue 18:
        # the US Core race, ethnicity and birth-sex extensions were dropped without a word);
        # a diff against the old file showed 19 added rows of those and nothing else;
        # again when extensions of resources read as events did too: a diff showed 20 added
        # rows (mCODE histology 3, normalization basis 8, procedure intent 6, disease-status
        # evidence 3), the race and ethnicity rows' value now their parts, and each row's
        # reason naming its guide and the attribute type its value needs, nothing else
        "other.csv": "959889782a02711f81093e45ce4fd9fa3f44ba3f136e1b2cc7654d8ce18a55b3",
        "patients.csv": "cd30960e027609b5fab26e99d49447a1e4f40e5a01776a0c4df3c05d10f77357",
        "unmapped.csv": "b367c70251e91fe9bfdfd68e3b22d8f24ca08b10558df7594f4d066deb6b72e4",
    },
    "ehr": {
        "events.csv": "4c4f6ce904b98b0bc71f564fd030f2629d75d1e0b93e40d849fa91aa8f0515a1",
        "excluded.csv": "9e40824b37746bfb2d7d62fa4ad31293a7148d15f6f83b8037e690513b035ac9",
        "other.csv": "819df565e241f4cfef6e1935d7fe5b17adfd9eeb7945df890f566bfb2ab761e9",
        "patients.csv": "6305ee4acf9c214805743e71a04a4be145729720335c3a16fa27aa3c60770048",
        "unmapped.csv": "8f64cb2b13e407fb50960134b0c17ebef03e4163355968d36d16f1840f38e294",
    },
}


def _ndjson(resources: list[bytes], types: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True)
    by_type: dict[str, list[bytes]] = {}
    for rtype, line in zip(types, resources, strict=True):
        by_type.setdefault(rtype, []).append(line)
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def _input(name: str, tmp_path: Path) -> Path:
    if name == "seed":
        mapping = MAPPINGS / "centres" / "seed.yaml"
        out = tmp_path / "map"
        assert main(["map", str(SEED), "--mapping", str(mapping), "--out", str(out)]) == 0
        return out / "ndjson"
    if name == "mcode":
        need((MCODE / ".complete").exists(), "mCODE 4.0.0 examples not fetched")
        found = [orjson.loads(p.read_bytes()) for p in sorted(MCODE.glob("*.json"))]
        resources = [r for r in found if r["resourceType"] != "Bundle"]
    else:
        resources = [r for case in load_cases() for r in case.resources]
    types = [str(r["resourceType"]) for r in resources]
    return _ndjson([orjson.dumps(r) for r in resources], types, tmp_path / "ndjson")


@pytest.mark.parametrize("name", sorted(BEFORE))
@pytest.mark.parametrize("workers", [1, 2])
def test_tables_bytes_as_before(
    name: str, workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ndjson_tables, "_LEAST_PER_WORKER", 2)  # two runs even for a few
    folder = _input(name, tmp_path)
    out = tmp_path / "out"
    Application().tables(folder, out, workers=workers)
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}
    assert got == BEFORE[name]
