"""Sources: the sheet (xlsx) or CSV file of each spec, each read once; the header checked
against what the mapping needs; columns nobody mapped."""

from __future__ import annotations

import csv
import difflib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from fhir_cart.csv_safety import unescape_csv_cell
from fhir_cart.errors import InputError, Reject
from fhir_cart.library.study_mapping import StudyMapping
from fhir_cart.study.plan import _Plan
from fhir_cart.study.values import Row, _blank, _FieldError, _to_text
from fhir_cart.workbook import check_workbook

__all__ = ["Uncomputed", "UnmappedColumn"]


class UnmappedColumn(NamedTuple):
    """A column of a read sheet that the mapping neither maps nor ignores."""

    file: str
    sheet: str | None
    column: str


# -- sources: sheets and CSV files, each read once -------------------------------------------


@dataclass(frozen=True)
class _Sheet:
    source: str
    """File name shown in rejects."""
    sheet: str | None
    """Sheet name (xlsx), None for CSV."""
    header_row: int
    header: list[str]
    held: list[tuple[int, Row]] | None = None
    """The rows of a workbook sheet (held in memory); None for a CSV file, read again on
    each pass so that it is never held."""
    file: Path | None = None
    mapping: StudyMapping | None = None

    def rows(self) -> Iterator[tuple[int, Row]]:
        """(spreadsheet row number, column -> cell) of every row that is not blank."""
        if self.held is not None:
            return iter(self.held)
        assert self.file is not None
        assert self.mapping is not None
        return _data_rows(_csv_rows(self.file, self.mapping), self.header_row, self.header)

    def column(self, name: str) -> Iterator[Any]:
        """The cells of one column, row by row (blank rows skipped), without building rows."""
        if self.held is not None:
            return (raw.get(name) for _, raw in self.held)
        assert self.file is not None
        assert self.mapping is not None
        index = len(self.header) - 1 - self.header[::-1].index(name)  # as dict(zip()) reads
        return _column_cells(_csv_rows(self.file, self.mapping), self.header_row, index)


class Uncomputed(str):
    """A formula cell with no saved result (its text is the formula)."""

    __slots__ = ()


def _mark_uncomputed(values: tuple[Any, ...], formulas: tuple[Any, ...]) -> tuple[Any, ...]:
    if all(v is not None for v in values):
        return values
    return (
        tuple(
            Uncomputed(f) if v is None and isinstance(f, str) and f.startswith("=") else v
            for v, f in zip(values, formulas, strict=False)
        )
        + values[len(formulas) :]
    )


def _computed(cells: Mapping[str, Any]) -> None:
    for fld, cell in cells.items():
        if isinstance(cell, Uncomputed):
            raise _FieldError(
                fld,
                "a formula whose result was never saved; open the file in a spreadsheet "
                "program and save it (or write the value instead of the formula)",
            )


def _row_is_blank(cells: list[Any]) -> bool:
    return all(_blank(v) for v in cells)


def _read_rows(
    rows: Iterable[Iterable[Any]], header_row: int
) -> tuple[list[str], list[tuple[int, Row]]]:
    header: list[str] | None = None
    out: list[tuple[int, Row]] = []
    for number, values in enumerate(rows, start=1):
        cells = list(values)
        if number < header_row:
            continue
        if header is None:
            header = [_to_text(h) if h is not None else "" for h in cells]
            continue
        if _row_is_blank(cells):
            continue
        out.append((number, dict(zip(header, cells, strict=False))))
    return header or [], out


def _header_of(rows: Iterable[list[Any]], header_row: int) -> list[str]:
    for number, cells in enumerate(rows, start=1):
        if number == header_row:
            return [_to_text(h) if h is not None else "" for h in cells]
    return []


def _blank_text(cells: list[str]) -> bool:
    """Whether a CSV row (text cells) is blank: :func:`_row_is_blank` at C speed."""
    text = "".join(cells)
    return not text or text.isspace()


def _data_rows(
    rows: Iterable[list[str]], header_row: int, header: list[str]
) -> Iterator[tuple[int, Row]]:
    """The rows of a CSV file after the header as (row number, column -> cell), streaming
    (what :func:`_read_rows` holds). Empty cells are left out: a missing column reads as
    None, blank as an empty cell does."""
    for number, cells in enumerate(rows, start=1):
        if number <= header_row or _blank_text(cells):
            continue
        yield number, {h: c for h, c in zip(header, cells, strict=False) if c}


def _column_cells(rows: Iterable[list[str]], header_row: int, index: int) -> Iterator[Any]:
    for number, cells in enumerate(rows, start=1):
        if number <= header_row or _blank_text(cells):
            continue
        yield cells[index] if index < len(cells) else None


class _Sources:
    """Finds and reads the sheet or CSV file of each spec (each at most once per read)."""

    def __init__(self, path: Path, mapping: StudyMapping, stack: ExitStack) -> None:
        self.path = path
        self.mapping = mapping
        self._stack = stack
        self._book: Any = None
        self._formulas: Any = None
        self._cache: dict[tuple[str, str | None, int], _Sheet] = {}

    def sheet(self, name: str | None, header_row: int) -> _Sheet:
        xlsx = self.path.suffix.lower() == ".xlsx"
        file = self.path if xlsx else self._csv_path(name)
        key = (str(file), name, header_row)
        if key not in self._cache:
            if xlsx:
                title, rows = self._xlsx_rows(name)
                header, data = _read_rows(rows, header_row)
                self._cache[key] = _Sheet(file.name, title, header_row, header, data)
            else:
                lines = _csv_rows(file, self.mapping)
                header = _header_of(lines, header_row)
                for _ in lines:  # the whole file parses (encoding, csv's field limit) before
                    pass  # the mapping is checked against it, as when the file was held
                sheet = _Sheet(file.name, None, header_row, header, None, file, self.mapping)
                self._cache[key] = sheet
        return self._cache[key]

    def _xlsx_rows(self, sheet: str | None) -> tuple[str, Iterator[tuple[Any, ...]]]:
        book = self._workbook()
        if sheet is not None and sheet not in book.sheetnames:
            names = ", ".join(book.sheetnames)
            raise InputError(
                f"{self.path.name}: no sheet {sheet!r} (sheets: {names})",
                [Reject(self.path.name, None, None, sheet, f"no such sheet; sheets: {names}")],
            )
        worksheet = book[sheet] if sheet is not None else book.worksheets[0]
        values = worksheet.iter_rows(values_only=True)
        formulas = self._formula_book()[worksheet.title].iter_rows(values_only=True)
        return worksheet.title, (
            _mark_uncomputed(row, formula_row)
            for row, formula_row in zip(values, formulas, strict=False)
        )

    def _formula_book(self) -> Any:
        """The same workbook with formulas instead of their saved results: a formula cell
        whose result was never saved (a file written by a program, not by a spreadsheet)
        reads as blank otherwise, and its value would be lost without a word."""
        if self._formulas is None:
            self._formulas = _load_workbook(self.path, data_only=False)
            self._stack.callback(self._formulas.close)
        return self._formulas

    def _workbook(self) -> Any:
        if self._book is None:
            self._book = _load_workbook(self.path, data_only=True)
            self._stack.callback(self._book.close)
        return self._book

    def _csv_path(self, name: str | None) -> Path:
        if self.path.is_file():
            if self.path.suffix.lower() != ".csv":
                raise InputError(f"{self.path.name}: study files are .xlsx, .csv or .json", [])
            if name is None or name in (self.path.name, self.path.stem):
                return self.path
            folder = self.path.parent
        else:
            folder = self.path
        if name is None:
            raise InputError(f"{self.path}: a folder of CSVs needs a source file per spec", [])
        for candidate in (folder / name, folder / f"{name}.csv"):
            if candidate.is_file():
                return candidate
        raise InputError(
            f"{folder / name}: file named in the mapping is missing",
            [Reject(name, None, None, None, f"file named in the mapping is not in {folder}")],
        )


def _load_workbook(path: Path, *, data_only: bool) -> Any:
    """openpyxl's read-only workbook, once the archive passed :func:`check_workbook` (size,
    members, a workbook in it); what openpyxl still cannot read is an InputError."""
    import zipfile
    from xml.etree.ElementTree import ParseError

    from openpyxl import load_workbook

    check_workbook(path)
    try:
        return load_workbook(path, read_only=True, data_only=data_only)
    except (zipfile.BadZipFile, KeyError, ValueError, ParseError, OSError, EOFError) as exc:
        reason = f"the workbook cannot be read ({exc.__class__.__name__})"
        raise InputError(
            f"{path.name}: {reason}; open it in the spreadsheet program and save it again "
            "as an Excel workbook (.xlsx), or export a CSV",
            [Reject(path.name, None, None, None, reason)],
        ) from None


def _csv_rows(path: Path, mapping: StudyMapping) -> Iterator[list[str]]:
    try:
        with path.open(newline="", encoding=mapping.encoding) as handle:
            reader = csv.reader(handle, delimiter=mapping.csv_delimiter)
            try:
                for row in reader:
                    # a cell escaped against formula injection ('=..., '-...) reads as written
                    if "'" in "".join(row):
                        row = [unescape_csv_cell(c) if c[:1] == "'" else c for c in row]
                    yield row
            except csv.Error as exc:  # a field over csv's 131,072 characters, say
                reason = f"the CSV file cannot be read at line {reader.line_num}: {exc}"
                raise InputError(
                    f"{path.name}: {reason}; a cell this long is not study data: check the "
                    "line (an unclosed quote joins every line after it into one cell)",
                    [Reject(path.name, reader.line_num, None, None, reason)],
                ) from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path.name}: not {mapping.encoding} text ({exc.reason} at byte {exc.start}); "
            "set `encoding` in the mapping (e.g. cp1252)",
            [Reject(path.name, None, None, None, f"not {mapping.encoding} text")],
        ) from exc


def _needed_columns(plan: _Plan) -> dict[str, str]:
    """Source column -> what needs it (a field, or the event key)."""
    needed = {column: fld for fld, column in plan.spec.columns.items()}
    for column in plan.event.key if plan.event is not None else ():
        needed.setdefault(column, "key")
    if plan.event is not None and plan.event.list is not None:
        needed.setdefault(plan.event.list.column, "list")
    return needed


def _header_problems(sheet: _Sheet, plan: _Plan) -> list[Reject]:
    """Columns the spec names that the header lacks or holds twice."""
    problems = []
    optional = plan.spec.optional
    for column, fld in _needed_columns(plan).items():
        count = sheet.header.count(column)
        if count == 1 or (count == 0 and fld in optional):
            continue
        if count > 1:
            reason = f"column for {fld} appears {count} times in the header"
        else:
            close = difflib.get_close_matches(column, [h for h in sheet.header if h], n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            reason = f"column for {plan.where}.{fld} is not in the header{hint}"
        problems.append(
            Reject(sheet.source, sheet.header_row, column, None, reason, sheet.sheet or plan.name)
        )
    return problems


def _check_patient_rows(sheet: _Sheet) -> None:
    """A patient table with a header and no row is an error, never "0 patients"."""
    none = object()
    if sheet.header and next(sheet.column(sheet.header[0]), none) is not none:
        return  # a row that is not blank (read by column: no row is built twice)
    place = f"{sheet.source}" + (f", sheet {sheet.sheet}" if sheet.sheet else "")
    reason = (
        f"no patient rows below the header (row {sheet.header_row}); fill in the patient "
        "rows, or set `header_row` in the mapping if the header is further down"
    )
    raise InputError(
        f"{place}: {reason}",
        [Reject(sheet.source, sheet.header_row, None, None, reason, sheet.sheet or "patients")],
    )


def _unmapped(
    sheets: list[_Sheet], plans: list[_Plan], ignore: Mapping[str, str]
) -> list[UnmappedColumn]:
    used: dict[int, set[str]] = defaultdict(set)
    for sheet, plan in zip(sheets, plans, strict=True):
        used[id(sheet)] |= set(_needed_columns(plan))
    out: list[UnmappedColumn] = []
    for sheet in {id(s): s for s in sheets}.values():
        out += [
            UnmappedColumn(sheet.source, sheet.sheet, column)
            for column in dict.fromkeys(sheet.header)
            if column and column not in used[id(sheet)] and column not in ignore
        ]
    return out
