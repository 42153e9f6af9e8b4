"""Rich tables that more than one front end prints (CLI, demo)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from fhir_cart.report.evaluate import MeasureResult

__all__ = ["agrees", "shown", "summary_table"]


def shown(value: Any) -> str:
    """A measure's value as a person reads it (7, not 7.0; blank for none)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def agrees(value: Any, expected: Any) -> bool:
    if value is None or expected is None:
        return value is None and expected is None
    try:
        return float(value) == float(expected)
    except (TypeError, ValueError):
        return str(value) == str(expected)


def summary_table(results: Sequence[MeasureResult], compare: bool, title: str) -> Table:
    """Measures beside the numbers the study reports (``compare``), with a tick or cross."""
    table = Table(title=title, min_width=len(title) + 2)  # a title never wraps mid-phrase
    table.add_column("measure")
    table.add_column("this data", justify="right")
    if compare:
        table.add_column("reported", justify="right")
        table.add_column("", justify="center")
    partial = sorted({pid for result in results for pid in result.partial})
    if partial:
        table.caption = (
            "† rests on a partial date (a year or a month; days taken as a window) for "
            + ", ".join(partial)
        )
    for result in results:
        row = [result.label, shown(result.value) + (" †" if result.partial else "")]
        if compare:
            expected = result.expected
            mark = "" if expected is None else ("✓" if agrees(result.value, expected) else "✗")
            row += [shown(expected), mark]
        table.add_row(*row)
    return table
