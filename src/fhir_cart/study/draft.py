"""The mapping assistant's draft: a table read for suggestions (:func:`read_table`, the one
I/O here) and the mapping file written from the person's choices (:func:`draft_mapping`),
in the format of docs/mapping-file.md, which :func:`load_study_mapping` accepts.

One table is mapped: a CSV file, or the first sheet of a workbook (other sheets are named
in the notes, never dropped silently). Every column the person did not map is listed under
``ignore`` with why, and the draft's comments name the columns and words left unsure.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from fhir_cart.errors import ConfigError, InputError
from fhir_cart.library.concepts import ConceptLibrary, StudyLibraryFile
from fhir_cart.library.study_mapping import (
    StudyMapping,
    check_mapping,
    dump_study_mapping,
)
from fhir_cart.library.yamlfile import load_model, validate_model
from fhir_cart.study.suggest import (
    PATIENT_FIELDS,
    ColumnSuggestion,
    Table,
    cell_kind,
    concept_of,
    date_formats,
    suggest_columns,
)

__all__ = ["ColumnChoice", "FileSuggestions", "draft_mapping", "read_table", "suggest_file"]

MAX_ROWS = 5000
"""Rows read for suggestions (the words and kinds of a column show well before)."""
UNMAPPED = "not mapped in the mapping assistant"


@dataclass(frozen=True)
class ColumnChoice:
    """What the person confirmed for one column (``target`` None: not mapped)."""

    header: str
    target: str | None
    field: str | None = None
    words: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    """Cell word -> canonical word (None: the row makes no event; a patient's cell is blank)."""


@dataclass(frozen=True)
class FileSuggestions:
    table: Table
    columns: list[ColumnSuggestion]
    is_csv: bool
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    date_formats: tuple[str, ...] = ("%Y-%m-%d",)
    notes: tuple[str, ...] = ()

    def choices(self) -> list[ColumnChoice]:
        """The suggestions as choices (what a person who confirms everything chose)."""
        return [
            ColumnChoice(
                c.header,
                c.choice,
                c.field,
                {w.word: w.choice or None for w in c.words if w.choice is not None},
            )
            for c in self.columns
        ]


# -- reading ----------------------------------------------------------------------------------


def _csv_table(path: Path) -> tuple[Table, str, str]:
    raw = path.read_bytes()[: 4 * 1024 * 1024]
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    sample = text[:20000]
    counts = {d: sample.splitlines()[0].count(d) if sample else 0 for d in ",;\t|"}
    delimiter = max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","
    with path.open(encoding=encoding, newline="") as handle:
        rows = list(islice(csv.reader(handle, delimiter=delimiter), MAX_ROWS + 1))
    if not rows:
        raise InputError(f"{path.name}: the file is empty; give a table with a header row", [])
    header = tuple(h.strip() for h in rows[0])
    body = tuple(tuple(r) for r in rows[1:] if any(c.strip() for c in r))
    return Table(path.name, header, body), delimiter, encoding


def _xlsx_tables(path: Path) -> list[Table]:
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        tables = []
        for sheet in book.worksheets:
            rows = [list(r) for r in islice(sheet.iter_rows(values_only=True), MAX_ROWS + 1)]
            if not rows:
                continue
            header = tuple("" if h is None else str(h).strip() for h in rows[0])
            body = tuple(
                tuple(r) for r in rows[1:] if any(c is not None and str(c).strip() for c in r)
            )
            tables.append(Table(sheet.title, header, body))
        return tables
    finally:
        book.close()


def read_table(path: Path) -> tuple[Table, str, str, tuple[str, ...]]:
    """The table to map, the CSV delimiter and encoding found, and notes (sheets not read)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table, delimiter, encoding = _csv_table(path)
        return table, delimiter, encoding, ()
    if suffix != ".xlsx":
        raise InputError(f"{path.name}: the mapping assistant reads .csv and .xlsx files", [])
    tables = _xlsx_tables(path)
    if not tables:
        raise InputError(f"{path.name}: the workbook has no sheet with a header row", [])
    notes = tuple(
        f"sheet {t.name!r} is not read by the assistant (it maps the first sheet); "
        "add its events to the mapping by hand (docs/mapping-file.md)"
        for t in tables[1:]
    )
    return tables[0], ",", "utf-8-sig", notes


def suggest_file(path: Path, library: ConceptLibrary) -> FileSuggestions:
    """Suggestions for every column of the file's table."""
    table, delimiter, encoding, notes = read_table(path)
    blank = [i + 1 for i, h in enumerate(table.header) if not h]
    if blank:
        raise InputError(
            f"{path.name}: column(s) {', '.join(map(str, blank))} of the header row have no "
            "name; give every column a header",
            [],
        )
    columns = suggest_columns(table, library)
    formats, more = _formats(table)
    return FileSuggestions(
        table, columns, suffix_is_csv(path), delimiter, encoding, formats, notes + more
    )


def suffix_is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def _formats(table: Table) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The date formats of the table's date columns, and a note when day and month could
    be read either way (03/04/2020)."""
    cells = [
        c
        for i in range(len(table.header))
        if cell_kind(cells := table.cells(i)) == "date"
        for c in cells
        if not isinstance(c, (dt.date, dt.datetime))
    ]
    if not cells:
        return ("%Y-%m-%d",), ()
    found = date_formats(cells)
    if not found:  # columns in different formats: each column's own
        found = sorted(
            {f for i in range(len(table.header)) for f in date_formats(table.cells(i))[:1]}
        )
    notes: tuple[str, ...] = ()
    if "%d/%m/%Y" in found and "%m/%d/%Y" in found:
        found.remove("%m/%d/%Y")
        notes = (
            "dates such as 03/04/2020 could be day/month or month/day: read as day/month "
            "(%d/%m/%Y); change date_formats if your file writes month first",
        )
    return tuple(found) or ("%Y-%m-%d",), notes


# -- writing ----------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-\.]+", "_", text).strip("_")[:40] or "column"


def _patients(choices: Sequence[ColumnChoice], source: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"columns": {}}
    if source is not None:
        spec["source"] = source
    for choice in choices:
        if choice.target in PATIENT_FIELDS:
            spec["columns"][choice.target] = choice.header
        elif choice.target is not None and choice.target.startswith("attribute:"):
            spec["columns"][choice.target.removeprefix("attribute:")] = choice.header
        else:
            continue
        if choice.words:
            spec.setdefault("values", {})[choice.target] = dict(choice.words)
    return spec


def _events(choices: Sequence[ColumnChoice]) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    names: set[str] = set()
    by_concept: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for choice in choices:
        if choice.target is None or not choice.target.startswith("concept:"):
            continue
        key, stated = concept_of(choice.target)
        fld = choice.field or "value"
        spec = next((s for s in by_concept.get((key, stated), []) if fld not in s["columns"]), None)
        if spec is None or fld == "concept" or "concept" in spec["columns"]:
            name = _slug(choice.header)
            while name in names:
                name += "_"
            names.add(name)
            spec = {"name": name, "columns": {}}
            if fld != "concept":
                spec["concept"] = key
            if stated is not None:
                spec["constants"] = {"value": stated}
            specs.append(spec)
            by_concept.setdefault((key, stated), []).append(spec)
        spec["columns"][fld] = choice.header
        if choice.words:
            spec.setdefault("values", {})[fld] = dict(choice.words)
    return specs


def draft_mapping(
    suggestions: FileSuggestions,
    choices: Sequence[ColumnChoice],
    library: ConceptLibrary,
    *,
    centre: str,
    study: str | None = None,
    anchor: str | None = None,
    library_file: str | None = None,
    inline: Path | None = None,
) -> str:
    """The mapping file (YAML text with comments) for the confirmed ``choices``; a
    ConfigError naming the key and the fix when the choices do not make a mapping.
    ``library_file``: the study's library file the choices were made with (``library:``);
    ``inline``: such a file, whose content is written into the mapping instead."""
    if not any(c.target == "study_id" for c in choices):
        raise ConfigError(
            "patients.columns.study_id: no column is the patient id; choose 'study_id' for "
            "the column that holds it"
        )
    data: dict[str, Any] = {"centre": centre}
    if study:
        data["study"] = study
    if library_file:
        data["library"] = library_file
    if inline is not None:
        own = load_model(inline, StudyLibraryFile, "library file")
        data.update(own.model_dump(mode="json", exclude_defaults=True))
    if suggestions.is_csv and suggestions.delimiter != ",":
        data["csv_delimiter"] = suggestions.delimiter
    if suggestions.is_csv and suggestions.encoding != "utf-8-sig":
        data["encoding"] = suggestions.encoding
    data["date_formats"] = list(suggestions.date_formats)
    if anchor:
        data["anchor"] = anchor
    source = None if suggestions.is_csv else suggestions.table.name
    data["patients"] = _patients(choices, source)
    data["events"] = _events(choices)
    ignored = {c.header: UNMAPPED for c in choices if c.target is None}
    if ignored:
        data["ignore"] = ignored
    mapping = validate_model(data, StudyMapping, "drafted mapping")
    problems = check_mapping(mapping, library)
    if problems:
        raise ConfigError("drafted mapping is invalid: " + "; ".join(problems))
    return _comments(suggestions, choices) + dump_study_mapping(mapping)


def _comments(suggestions: FileSuggestions, choices: Sequence[ColumnChoice]) -> str:
    chosen = {c.header: c for c in choices}
    lines = [
        f"# Drafted by the fhir_cart mapping assistant from {suggestions.table.name!r}.",
        "# Check it against the file: fhir-cart summary FILE -m THIS_FILE.yaml",
    ]
    unsure = [
        c
        for c in suggestions.columns
        if c.header in chosen and chosen[c.header].target is None and c.candidates
    ]
    if unsure:
        lines.append("# Left for you (not sure; under ignore: until you map them):")
        for column in unsure:
            options = ", ".join(
                f"{c.target.removeprefix('concept:')} ({c.score:.2f})"
                for c in column.candidates[:3]
            )
            lines.append(f"#   {column.header!r}: {options}")
    for column in suggestions.columns:
        choice = chosen.get(column.header)
        if choice is None or choice.target is None:
            continue
        left = [w.word for w in column.words if w.word not in choice.words]
        if left:
            lines.append(
                f"#   {column.header!r}: words not translated (rows with them are rejected "
                f"until you list them under values): {', '.join(map(repr, left[:10]))}"
            )
    lines += [f"# Note: {note}" for note in suggestions.notes]
    return "\n".join(lines) + "\n"
