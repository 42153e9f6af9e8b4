"""The one place CSV and XLSX cells are written (every CSV and workbook fhir_cart writes goes
through :func:`csv_writer`, :func:`csv_bytes` or :func:`xlsx_book`; a test keeps it so).

CSV cells a spreadsheet would run as formulas ("CSV injection", OWASP): text starting with
``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading ``'``, which Excel,
LibreOffice and Google Sheets show as text and do not display. Numbers are left alone
(``-3`` is a number, not a formula), so relative days keep their sign. In a workbook every
text cell is stored as a string (``t="s"``/inline), never as a formula, whatever it starts
with. https://owasp.org/www-community/attacks/CSV_Injection
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

__all__ = [
    "FORMULA_STARTS",
    "SafeCsvWriter",
    "XlsxBook",
    "csv_bytes",
    "csv_writer",
    "safe_csv_cell",
    "unescape_csv_cell",
    "xlsx_book",
]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_RISKY_FIRST = frozenset([*FORMULA_STARTS, "'"])
"""What a cell :func:`safe_csv_cell` may change starts with (a cheap first test: most cells
of a table are blank or plain)."""


def _formula_after_quotes(value: str) -> bool:
    """Whether ``value``, after any leading ``'``, starts like a formula."""
    return value.lstrip("'").startswith(FORMULA_STARTS)


def safe_csv_cell(value: Any) -> Any:
    """``value`` as it may go into a CSV cell: formula-looking text escaped with ``'``.
    Text that already starts with ``'`` before a formula start gets one more (``'=x`` is
    written ``''=x``), so the escape is undone exactly; any other text is left as it is
    (``''`` or ``'tis`` stay as they are)."""
    if isinstance(value, str) and value[:1] in _RISKY_FIRST and _formula_after_quotes(value):
        return "'" + value
    return value


def unescape_csv_cell(value: str) -> str:
    """The inverse of :func:`safe_csv_cell`: one leading ``'`` is dropped only where it
    escapes a formula start; a cell such as ``''`` or ``'tis`` is read as written."""
    if value.startswith("'") and _formula_after_quotes(value):
        return value[1:]
    return value


class SafeCsvWriter:
    """``csv.writer`` whose every text cell goes through :func:`safe_csv_cell`. ``None`` is
    an empty cell; numbers are written as numbers."""

    def __init__(self, handle: IO[str], lineterminator: str = "\r\n") -> None:
        self._writer = csv.writer(handle, lineterminator=lineterminator)

    def writerow(self, cells: Iterable[Any]) -> None:
        self._writer.writerow(["" if c is None else safe_csv_cell(c) for c in cells])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)

    def write_sparse(self, width: int, cells: Iterable[tuple[int, Any]]) -> None:
        """One row of ``width`` cells, empty but for ``cells`` ((position, value), each
        value through :func:`safe_csv_cell`; ``None`` is empty): the same line as
        :meth:`writerow` of the whole row, without visiting its blank cells."""
        row: list[Any] = [""] * width
        for position, value in cells:
            if value is not None:
                row[position] = safe_csv_cell(value)
        self._writer.writerow(row)

    def write_named(
        self,
        positions: Mapping[str, int],
        row: Mapping[str, Any],
        cell: Callable[[Any], Any],
    ) -> None:
        """One row of ``len(positions)`` cells, empty but for ``row``'s values, each at
        its column's position, made a cell by ``cell`` (text as it is) and then through
        :func:`safe_csv_cell` (``None`` is empty): the same line as :meth:`write_sparse` of
        ``(positions[column], cell(value))``, in one pass (a bulk job writes a row per
        event)."""
        cells: list[Any] = [""] * len(positions)
        for column, value in row.items():
            if value is None:
                continue
            if type(value) is str:
                if value[:1] in _RISKY_FIRST and _formula_after_quotes(value):
                    value = "'" + value
            else:
                value = cell(value)
                if value is None:
                    continue
                value = safe_csv_cell(value)
            cells[positions[column]] = value
        self._writer.writerow(cells)


def csv_writer(handle: IO[str], lineterminator: str = "\r\n") -> SafeCsvWriter:
    return SafeCsvWriter(handle, lineterminator)


def csv_bytes(
    header: Sequence[str], rows: Iterable[Iterable[Any]], lineterminator: str = "\n"
) -> bytes:
    """A whole CSV file (UTF-8) from a header and rows, through the safe writer."""
    text = io.StringIO()
    writer = SafeCsvWriter(text, lineterminator)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|_x[0-9A-Fa-f]{4}_")
"""What XML 1.0 cannot hold (C0 controls but tab, newline and return; U+FFFE/FFFF), and
text that already looks like an escape of it."""


def _xml_escape(match: re.Match[str]) -> str:
    """ECMA-376 part 1, 22.9.2.19 (ST_Xstring): a character XML cannot hold is written
    ``_xHHHH_``, as Excel writes and reads it; a literal ``_xHHHH_`` gets its '_' escaped."""
    found = match.group()
    return "_x005F_" + found[1:] if len(found) > 1 else f"_x{ord(found):04X}_"


def xlsx_text(value: str) -> tuple[str, bool]:
    """``value`` as a workbook can hold it, and whether anything was escaped."""
    escaped = _XML_ILLEGAL.sub(_xml_escape, value)
    return escaped, escaped != value


class XlsxBook:
    """A write-only workbook whose text cells are always strings, never formulas, with
    what XML cannot hold escaped (openpyxl refuses control characters, and one broke a
    whole export): ``escaped`` counts the cells that held any."""

    def __init__(self, created: dt.datetime | None = None) -> None:
        from openpyxl import Workbook

        self._book = Workbook(write_only=True)
        if created is not None:  # a fixed time: two saves of the same data, the same bytes
            self._book.properties.created = created
            self._book.properties.modified = created
        self._sheets: dict[str, Any] = {}
        self.escaped = 0

    def sheet(self, name: str, header: Sequence[str]) -> None:
        self._sheets[name] = self._book.create_sheet(name)
        self.append(name, header)

    def append(self, name: str, values: Iterable[Any]) -> None:
        sheet = self._sheets[name]
        sheet.append([self._cell(sheet, v) for v in values])

    def _cell(self, sheet: Any, value: Any) -> Any:
        if isinstance(value, str):
            from openpyxl.cell import WriteOnlyCell

            value, changed = xlsx_text(value)
            self.escaped += changed
            cell = WriteOnlyCell(sheet, value)
            cell.data_type = "s"  # openpyxl would store text starting with '=' as a formula
            return cell
        return value  # numbers, booleans, dates: real typed cells

    def save(self, target: Any) -> None:
        self._book.save(target)

    def to_bytes(self) -> bytes:
        sink = io.BytesIO()
        self._book.save(sink)
        return sink.getvalue()


def xlsx_book(created: dt.datetime | None = None) -> XlsxBook:
    return XlsxBook(created)
