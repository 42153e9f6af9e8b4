"""Helpers tests import: the checkout's paths (fixtures, mappings, the seed and centre B
files), ``need`` (skip on a laptop, fail under CI=true) and the PostgreSQL URL.

Tests import these from here, never from ``conftest.py`` (pytest loads conftest files
itself; importing one as a module runs it a second time under another name)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = [
    "CENTRE_B_FILE",
    "CENTRE_B_MAPPING",
    "FIXTURES",
    "MAPPINGS",
    "POSTGRES_URL",
    "ROOT",
    "SEED_FILE",
    "SEED_MAPPING",
    "UNVERIFIED_CODING",
    "in_ci",
    "need",
]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
MAPPINGS = ROOT / "mappings"
SEED_FILE = FIXTURES / "seed" / "seed_cohort.xlsx"
SEED_MAPPING = MAPPINGS / "centres" / "seed.yaml"
CENTRE_B_FILE = FIXTURES / "centre_b" / "centre_b.csv"
CENTRE_B_MAPPING = MAPPINGS / "centres" / "centre_b.yaml"
POSTGRES_URL = os.environ.get(
    "FHIR_CART_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
UNVERIFIED_CODING = (
    "      - {system: ncit, code: C126102, display: Chimeric Antigen Receptor T-Cell Therapy, "
    "source: test only, verified: false}\n"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip with a visible reason on a laptop; fail under CI=true, where nothing may skip."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)
