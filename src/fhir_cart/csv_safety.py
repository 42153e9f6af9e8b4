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


_ESCAPED = (*FORMULA_STARTS, "'")
"""Text starting with these gets the ``'``: formula starts, and ``'`` itself, so that text
which really begins with ``'=`` survives the round trip (written ``''=``)."""


def safe_csv_cell(value: Any) -> Any:
    """``value`` as it may go into a CSV cell: formula-looking text escaped with ``'``."""
    if isinstance(value, str) and value.startswith(_ESCAPED):
        return "'" + value
    return value


def unescape_csv_cell(value: str) -> str:
    """The inverse of :func:`safe_csv_cell` for a cell read back from a file it wrote."""
    if value.startswith("'") and value[1:].startswith(_ESCAPED):
        return value[1:]
    return value
