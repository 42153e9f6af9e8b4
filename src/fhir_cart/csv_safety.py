"""CSV cells a spreadsheet would run as formulas ("CSV injection", OWASP): text starting
with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading ``'``, which Excel,
LibreOffice and Google Sheets show as text and do not display. Numbers are left alone
(``-3`` is a number, not a formula), so relative days keep their sign.
https://owasp.org/www-community/attacks/CSV_Injection
"""

from __future__ import annotations

from typing import Any

__all__ = ["FORMULA_STARTS", "safe_csv_cell", "unescape_csv_cell"]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _formula_after_quotes(value: str) -> bool:
    """Whether ``value``, after any leading ``'``, starts like a formula."""
    return value.lstrip("'").startswith(FORMULA_STARTS)


def safe_csv_cell(value: Any) -> Any:
    """``value`` as it may go into a CSV cell: formula-looking text escaped with ``'``.
    Text that already starts with ``'`` before a formula start gets one more (``'=x`` is
    written ``''=x``), so the escape is undone exactly; any other text is left as it is
    (``''`` or ``'tis`` stay as they are)."""
    if isinstance(value, str) and _formula_after_quotes(value):
        return "'" + value
    return value


def unescape_csv_cell(value: str) -> str:
    """The inverse of :func:`safe_csv_cell`: one leading ``'`` is dropped only where it
    escapes a formula start; a cell such as ``''`` or ``'tis`` is read as written."""
    if value.startswith("'") and _formula_after_quotes(value):
        return value[1:]
    return value
