"""Study files (XLSX, CSV, a folder of CSVs, canonical JSON) -> open :class:`Case` records.

A mapping (:mod:`fhir_cart.library.study_mapping`) says where the patient rows are and which
columns make which events; the concept library (:mod:`fhir_cart.library.concepts`) says how
each event's value and attributes are read. Every rejected row or value becomes a
:class:`~fhir_cart.errors.Reject` naming the file, the sheet (xlsx) or spec, the spreadsheet
row (header = row 1), the column, the value and what was expected. A bad event rejects that
event only; a bad patient row rejects the patient and, with the reason said, each of their
events. A mapping that does not fit the file (a column it names is not in the header, a sheet
or file is missing) is an :class:`~fhir_cart.errors.InputError` before any row is read.
Columns of a read sheet that the mapping neither maps nor ignores are listed in
:attr:`ReadResult.unmapped_columns`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import orjson
from pydantic import ValidationError

from fhir_cart.errors import InputError, Reject, validation_reason
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.library.study_mapping import StudyMapping, default_library
from fhir_cart.records import Case
from fhir_cart.study.assemble import _Assembly, _Where
from fhir_cart.study.fields import _Context
from fhir_cart.study.plan import _Plan, _plans
from fhir_cart.study.sources import (
    UnmappedColumn,
    _check_patient_rows,
    _header_problems,
    _Sheet,
    _Sources,
    _unmapped,
)
from fhir_cart.study.stream import _Feed, _feeds, _plain_sid, _sid
from fhir_cart.study.values import Row

__all__ = [
    "Assembled",
    "PatientRows",
    "PatientUnit",
    "ReadResult",
    "StudyStream",
    "read_study",
    "stream_study",
]


@dataclass
class ReadResult:
    """What a study file gave: the cases read, every row or value rejected, and the
    columns nobody mapped (the CLI warns about them)."""

    cases: list[Case] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    unmapped_columns: list[UnmappedColumn] = field(default_factory=list)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    """With ``keep_sources``: study id -> {"" and event id -> ``file, sheet S, row N``}."""


class StudyStream:
    """A study file read patient by patient: iterate it for the cases (once); after that,
    :attr:`rejects` holds every rejected row or value in file order. :attr:`streamed` says
    whether the file was read patient by patient (else it was held, see above)."""

    def __init__(
        self,
        cases: Iterator[Case],
        rejects: list[Reject],
        unmapped_columns: list[UnmappedColumn],
        streamed: bool,
        sources: dict[str, dict[str, str]] | None = None,
        split: PatientRows | None = None,
    ) -> None:
        self._cases = cases
        self.rejects = rejects
        self.unmapped_columns = unmapped_columns
        self.streamed = streamed
        self.sources: dict[str, dict[str, str]] = {} if sources is None else sources
        """With ``keep_sources``: study id -> {"" (the patient's row) and event id -> where
        its row is (``file, sheet S, row N``)}, filled as cases are given out."""
        self.split = split
        """A file read patient by patient (None: held): its rows, patient by patient, to
        be assembled in other processes (:class:`PatientRows`); iterate either this
        stream or its ``split``, once."""

    def __iter__(self) -> Iterator[Case]:
        return self._cases


@dataclass
class PatientUnit:
    """One patient's rows as read (plain data, so another process can take it): the
    patient-table row, and each of its rows of the event sheets as (spec index, row, cells)."""

    row: int
    raw: Row
    events: list[tuple[int, int, Row]]


@dataclass
class Assembled:
    """Patients assembled apart (:meth:`PatientRows.assemble`): their cases, and what the
    stream must learn of them (:meth:`PatientRows.learn`)."""

    cases: list[Case]
    rejects: list[tuple[int, int, Reject]]
    sources: dict[str, dict[str, str]]


class PatientRows:
    """A study read patient by patient, split in two: :meth:`units` reads the rows of each
    patient (in this process, in file order); :meth:`assemble` turns a run of them into
    cases with their rejects, in any process forked after the stream was opened (a
    patient's rows are checked against nothing but each other: the patient ids are known
    distinct and each patient's rows are together). The results go back through
    :meth:`learn` in the patients' order; then :meth:`finish` reads the rows of no patient
    and fills the stream's ``rejects``, in file order, as when the stream is iterated."""

    def __init__(
        self,
        acc: _Assembly,
        plans: list[_Plan],
        sheets: list[_Sheet],
        feeds: dict[int, _Feed],
        stack: ExitStack,
        rejects: list[Reject],
    ) -> None:
        self._acc = acc
        self._plans = plans
        self._sheets = sheets
        self._feeds = feeds
        self._stack = stack
        self._rejects = rejects

    def units(self) -> Iterator[PatientUnit]:
        """Each patient's rows, in the patient table's order (then call :meth:`finish`)."""
        plans, sheets, feeds = self._plans, self._sheets, self._feeds
        try:
            column = _plain_sid(plans[0])
            assert column is not None
            own = [i for i, plan in enumerate(plans) if i and plan.own_sheet]
            for row, raw in sheets[0].rows():
                sid = _sid(raw.get(column))
                events: list[tuple[int, int, Row]] = []
                if sid is not None:
                    for order in own:
                        events.extend((order, n, cells) for n, cells in feeds[order].take(sid))
                yield PatientUnit(row, raw, events)
        except BaseException:
            self._stack.close()
            raise

    def finish(self) -> None:
        """After every unit was assembled and learned: the rows of no patient (rejected)
        read, the files closed, and the stream's ``rejects`` filled in file order."""
        plans, sheets, acc = self._plans, self._sheets, self._acc
        with self._stack:
            for order, plan in enumerate(plans):
                if order and plan.own_sheet:
                    for number, cells in self._feeds[order].loose():
                        acc.event(order, _Where(sheets[order], plan, number, cells, {}))
        _sorted_rejects(acc, self._rejects)

    def assemble(self, units: list[PatientUnit]) -> Assembled:
        """The cases of ``units`` (patients in the order given) and their rejects."""
        plans, sheets = self._plans, self._sheets
        acc = _Assembly(self._acc.ctx, plans, keep_sources=self._acc.keep_sources)
        patients, plan = sheets[0], plans[0]
        cases: list[Case] = []
        for unit in units:
            acc.patient(_Where(patients, plan, unit.row, unit.raw, {}))
            rows = iter(unit.events)
            row = next(rows, None)
            for order in range(1, len(plans)):  # every spec in turn, as the mapping lists them
                spec = plans[order]
                if not spec.own_sheet:
                    acc.event(order, _Where(patients, spec, unit.row, unit.raw, {}))
                while row is not None and row[0] == order:
                    acc.event(order, _Where(sheets[order], spec, row[1], row[2], {}))
                    row = next(rows, None)
            cases += acc.release()
        return Assembled(cases, acc.rejects, acc.sources)

    def learn(self, assembled: Assembled) -> None:
        """Keep the rejects (and sources) of patients assembled apart, in their order."""
        self._acc.rejects += assembled.rejects
        self._acc.sources.update(assembled.sources)


def _stream_mapped(
    path: Path, mapping: StudyMapping, library: ConceptLibrary, keep_sources: bool = False
) -> StudyStream:
    ctx = _Context(mapping, library)
    plans = _plans(ctx)
    with ExitStack() as stack:
        sources = _Sources(path, mapping, stack)
        sheets = [sources.sheet(*plan.sheet_key(mapping)) for plan in plans]
    problems = [
        p for sheet, plan in zip(sheets, plans, strict=True) for p in _header_problems(sheet, plan)
    ]
    if problems:
        raise InputError(f"{path.name}: the mapping does not fit the file", problems)
    _check_patient_rows(sheets[0])
    unmapped = _unmapped(sheets, plans, mapping.ignore)
    rejects: list[Reject] = []
    stack = ExitStack()
    try:
        feeds = _feeds(plans, sheets, stack)  # the first passes, before any case
    except BaseException:
        stack.close()
        raise
    acc = _Assembly(ctx, plans, keep_sources=keep_sources)
    split = None if feeds is None else PatientRows(acc, plans, sheets, feeds, stack, rejects)
    cases = _assemble(acc, plans, sheets, split, stack, rejects)
    return StudyStream(cases, rejects, unmapped, feeds is not None, acc.sources, split)


def _assemble(
    acc: _Assembly,
    plans: list[_Plan],
    sheets: list[_Sheet],
    split: PatientRows | None,
    stack: ExitStack,
    rejects: list[Reject],
) -> Iterator[Case]:
    """The cases; at the end, ``rejects`` gets every reject in file order."""
    if split is not None:
        for unit in split.units():
            assembled = split.assemble([unit])
            split.learn(assembled)
            yield from assembled.cases
        split.finish()
        return
    with stack:
        for order, (sheet, plan) in enumerate(zip(sheets, plans, strict=True)):
            for row, raw in sheet.rows():
                where = _Where(sheet, plan, row, raw, {})
                if order == 0:
                    acc.patient(where)
                else:
                    acc.event(order, where)
        yield from acc.cases()
    _sorted_rejects(acc, rejects)


def _sorted_rejects(acc: _Assembly, rejects: list[Reject]) -> None:
    acc.rejects.sort(key=itemgetter(0, 1))
    rejects.extend(r for _, _, r in acc.rejects)


def _read_json(path: Path) -> ReadResult:
    result = ReadResult()
    try:
        items = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InputError(f"{path.name}: cannot read JSON ({exc})", []) from exc
    if not isinstance(items, list):
        raise InputError(f"{path.name}: expected a list of cases (the canonical JSON form)", [])
    for index, item in enumerate(items, start=1):
        try:
            result.cases.append(Case.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            column = ".".join(str(part) for part in first["loc"]) or None
            reason = validation_reason(exc)
            result.rejects.append(Reject(path.name, index, column, None, reason, "cases"))
    return result


def stream_study(
    path: Path,
    mapping: StudyMapping | None = None,
    library: ConceptLibrary | None = None,
    *,
    keep_sources: bool = False,
) -> StudyStream:
    """:func:`read_study`, patient by patient: the file is checked against the mapping now
    (ConfigError, InputError as for read_study); cases come as the stream is iterated, and
    its ``rejects`` are complete once it has been iterated to the end. ``keep_sources``:
    the stream's ``sources`` says which row each patient and event came from (the registry's
    Provenance cites them; off by default, as it grows with the file)."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder", [])
    if path.suffix.lower() == ".json":
        result = _read_json(path)
        return StudyStream(iter(result.cases), result.rejects, [], False)
    if mapping is None:
        raise InputError(f"{path.name}: a mapping file is needed for this file type", [])
    return _stream_mapped(path, mapping, library or default_library(mapping), keep_sources)


def read_study(
    path: Path,
    mapping: StudyMapping | None = None,
    library: ConceptLibrary | None = None,
    *,
    keep_sources: bool = False,
) -> ReadResult:
    """Read a study file: .xlsx, .csv (one file or a folder of them) with a mapping, or the
    canonical .json (no mapping needed). ``library`` defaults to the shared concept library
    plus the mapping's own concepts. Raises ConfigError when the mapping does not fit the
    library, InputError when the file cannot be read at all; rows and values that cannot be
    read are returned as rejects."""
    stream = stream_study(path, mapping, library, keep_sources=keep_sources)
    cases = list(stream)
    return ReadResult(
        cases=cases,
        rejects=stream.rejects,
        unmapped_columns=stream.unmapped_columns,
        sources=stream.sources,
    )
