"""Linkage under DuckDB's memory limit (issue 19, memory): it spills to a folder of the work
folder that is gone afterwards, and a registry that needs more than the limit is linked
again without one, with the same links, and the log says so."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from fhir_cart.registry import _splink
from fhir_cart.registry.definition import LinkageDef
from fhir_cart.registry.linkage import LinkRecord

LINKAGE = LinkageDef(dates={"diagnosis_date": "diagnosis"}, threshold=0.9)


def _records() -> list[LinkRecord]:
    base = {"sex": "female", "birth_year": 2012, "birth_month": 5}
    day = {"diagnosis_date": dt.date(2019, 3, 7)}
    return [
        LinkRecord("a", "a1", dates=day, **base),  # type: ignore[arg-type]
        LinkRecord("a", "a2", dates={"diagnosis_date": dt.date(2016, 1, 2)}, sex="male"),
        LinkRecord("b", "b1", dates=day, **base),  # type: ignore[arg-type]
        LinkRecord("b", "b2", dates={"diagnosis_date": dt.date(2020, 11, 30)}, sex="male"),
    ]


def test_linkage_spills_inside_the_work_folder_and_leaves_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    links, _ = _splink.predict(_records(), LINKAGE, spill=work)
    assert [(k.left, k.right) for k in links] == [("a1", "b1")]
    assert work.is_dir()
    assert list(work.iterdir()) == []  # the duckdb-* folder went with the connection


def test_out_of_memory_links_again_without_a_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    expected, _ = _splink.predict(_records(), LINKAGE, spill=tmp_path)
    assert not caplog.records
    monkeypatch.setattr(_splink, "DUCKDB_MEMORY", "64KB")  # too little for anything
    with caplog.at_level(logging.WARNING, logger="fhir_cart.registry._splink"):
        links, _ = _splink.predict(_records(), LINKAGE, spill=tmp_path)
    assert links == expected
    assert any("without a memory limit" in r.getMessage() for r in caplog.records)
