"""Shared by the tests that write study tables and read them back."""

from __future__ import annotations

from typing import Any

from fhir_cart.csv_safety import unescape_csv_cell
from fhir_cart.records import Case


def unescaped(case: Case) -> Case:
    """A case read from CSV with the formula escape undone: the reader keeps the ``'``
    that csv_safety puts before text starting with = + - @ (the only change CSV makes)."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return unescape_csv_cell(value)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    return Case.model_validate(walk(case.model_dump()))
