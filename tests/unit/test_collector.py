"""Collector tuning during bulk work (fhir_cart.collector): the collector is frozen and off
inside the block and restored after it; cyclic garbage made inside is still collected every
``every`` steps; and the output of `fhir-cart map` and `fhir-cart tables` is byte-identical
with the tuning and without it (``FHIR_CART_GC=default``)."""

from __future__ import annotations

import gc
import hashlib
import weakref
from pathlib import Path

import pytest

from fhir_cart.cli import main
from fhir_cart.collector import bulk_collection
from tests.conftest import ROOT
from tests.ehr_cases import load_cases
from tests.unit.cli.test_tables_cmd import _write_ndjson


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_block_freezes_and_stops_the_collector_then_restores_it() -> None:
    assert gc.isenabled()
    with bulk_collection():
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
        with bulk_collection():  # nested: the outer block restores
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_default_leaves_the_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_CART_GC", "default")
    with bulk_collection():
        assert gc.isenabled()
        assert gc.get_freeze_count() == 0


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_cycles_made_in_the_block_are_collected_every_so_many_steps() -> None:
    with bulk_collection(every=10) as collector:
        node = _Node()
        gone = weakref.ref(node)
        del node
        for _ in range(9):
            collector.step()
        assert gone() is not None  # no automatic collection in the block
        collector.step()
        assert gone() is None


def _run(
    argv: list[str], out: Path, monkeypatch: pytest.MonkeyPatch, tuned: bool
) -> dict[str, str]:
    if tuned:
        monkeypatch.delenv("FHIR_CART_GC", raising=False)
    else:
        monkeypatch.setenv("FHIR_CART_GC", "default")
    assert main([*argv, "-o", str(out)]) == 0
    return _hashes(out)


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_map_and_tables_write_the_same_bytes_with_and_without_tuning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    argv = ["map", "fixtures/seed/seed_cohort.xlsx", "-m", "mappings/centres/seed.yaml"]
    tuned = _run(argv, tmp_path / "map-tuned", monkeypatch, True)
    assert tuned == _run(argv, tmp_path / "map-default", monkeypatch, False)
    assert any(name.startswith("bundles/") for name in tuned)
    resources = [r for case in load_cases() for r in case.resources]
    folder = _write_ndjson(resources, tmp_path / "ndjson")
    tables = ["tables", str(folder)]
    tuned = _run(tables, tmp_path / "tables-tuned", monkeypatch, True)
    assert tuned == _run(tables, tmp_path / "tables-default", monkeypatch, False)
    assert {"patients.csv", "events.csv", "other.csv"} <= set(tuned)
