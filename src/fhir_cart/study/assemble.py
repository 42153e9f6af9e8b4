"""Rows -> cases: one patient row or event row at a time, each bad one a reject saying
where and why (:class:`_Assembly`)."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from pydantic import ValidationError

from fhir_cart.errors import Reject, validation_reason
from fhir_cart.library.list_spec import ListSpec
from fhir_cart.library.study_mapping import (
    ASSUMABLE,
    SEXES,
    WordTarget,
    normalise_word,
)
from fhir_cart.records import Case, Event, PatientRecord, date_span
from fhir_cart.study.build import _ID_TEXT, _NOT_ID, _make_event
from fhir_cart.study.fields import (
    _attribute,
    _attributes,
    _Context,
    _parsed,
    _value,
    _when,
    is_censored,
)
from fhir_cart.study.plan import _Plan
from fhir_cart.study.sources import _computed, _Sheet
from fhir_cart.study.values import Row, _blank, _FieldError, _to_text

# -- one row ---------------------------------------------------------------------------------


class _Where:
    """A source row being read, and how to blame one of its fields. ``columns``: field ->
    the source column it came from (fields set by a word follow their cell)."""

    __slots__ = ("columns", "plan", "raw", "row", "sheet")

    def __init__(
        self, sheet: _Sheet, plan: _Plan, row: int, raw: Row, columns: dict[str, str]
    ) -> None:
        self.sheet = sheet
        self.plan = plan
        self.row = row
        self.raw = raw
        self.columns = columns

    def location(self) -> str:
        """Where this row is, in words: ``file, sheet S, row N`` (no cell content)."""
        sheet = f", sheet {self.sheet.sheet}" if self.sheet.sheet else ""
        return f"{self.sheet.source}{sheet}, row {self.row}"

    def reject(self, fld: str | None, reason: str) -> Reject:
        column = self.columns.get(fld) if fld else None
        if column is not None:
            value = self.raw.get(column)
        else:
            column = fld
            value = self.plan.spec.constants.get(fld) if fld else None
        shown = None if _blank(value) else _to_text(value)
        return Reject(
            self.sheet.source, self.row, column, shown, reason, self.sheet.sheet or self.plan.name
        )


def _gather(plan: _Plan, raw: Row) -> tuple[dict[str, Any], dict[str, str]] | None:
    """field -> cell (translated by ``values``) and field -> column; constants fill blank
    fields. None when a cell's word means 'no event'."""
    cells: dict[str, Any] = {}
    columns: dict[str, str] = {}
    fields: Sequence[tuple[str, str, dict[str, WordTarget] | None]] = plan.fields
    if len(raw) < len(fields):  # a CSV row holds its non-empty cells only: visit those
        by_column = plan.by_column
        hits = [hit for column in raw for hit in by_column.get(column, ())]
        hits.sort(key=itemgetter(0))
        fields = [hit[1:] for hit in hits]
    for fld, column, lookup in fields:
        cell = raw.get(column)
        if cell is None or cell == "" or (type(cell) is str and cell.isspace()):
            continue  # blank
        word = normalise_word(cell) if lookup is not None else None
        if lookup is not None and word in lookup:
            target = lookup[word]
            if target is None and plan.event is None:
                continue  # a patient field: the word means 'no value'
            if target is None:
                return None
            if isinstance(target, dict):
                cells.update(target)
                columns.update(dict.fromkeys(target, column))
                continue
            cell = target
        cells[fld] = cell
        columns[fld] = column
    for fld, value in plan.defaults:
        cells.setdefault(fld, value)
    return cells, columns


def _source_text(plan: _Plan, where: _Where, cells: Mapping[str, Any]) -> str | None:
    if "source_text" in plan.spec.columns or "source_text" in cells:
        return _to_text(cells["source_text"])[:1000] if "source_text" in cells else None
    for fld in ("value", "text", "concept"):
        column = plan.spec.columns.get(fld)
        if column is not None and not _blank(where.raw.get(column)):
            return _to_text(where.raw[column])[:1000]
    return None


def _event(
    ctx: _Context, where: _Where, cells: dict[str, Any], event_id: str, anchor_date: dt.date | None
) -> Event:
    """One event from one row's gathered cells."""
    if "concept" not in cells:
        raise _FieldError("concept", "no concept: the cell is blank")
    concept = _parsed(cells, "concept", ctx.concept_key)
    units = where.plan.spec.units
    censor = where.plan.event.censored if where.plan.event is not None else None
    when = _when(ctx, cells, "when", anchor_date, units, censor)
    end = _when(ctx, cells, "end", anchor_date, units)
    if censor is not None and is_censored(cells, units):
        return _censored_event(ctx, where, cells, event_id, censor, when)
    value = _value(ctx, ctx.library.concept(concept), cells, units)
    attributes = _attributes(ctx, concept, cells, units)
    origin = _to_text(cells["origin"]) if "origin" in cells else None
    status = _to_text(cells["status"]) if "status" in cells else None
    try:
        return _make_event(
            event_id=event_id,
            concept=concept,
            when=when,
            end=end,
            value=value,
            attributes=attributes,
            source_text=_source_text(where.plan, where, cells),
            origin=origin,
            assumed=_assumed(where, cells),
            status=status,
        )
    except ValidationError as exc:
        loc = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else None
        raise _FieldError(loc if loc in cells else None, validation_reason(exc)) from None


def _censored_event(
    ctx: _Context,
    where: _Where,
    cells: Mapping[str, Any],
    event_id: str,
    censor: str,
    when: Any,
) -> Event:
    """A row whose time is censored ('15+'): not the spec's event but the censoring concept
    (e.g. last follow-up) at that time; a value or attribute of the event that did not happen
    is a contradiction, refused."""
    stray = [f for f in cells if f not in _CENSOR_FIELDS and f in where.columns]
    if stray:
        raise _FieldError(
            stray[0],
            f"the time {_to_text(cells['when_day'])!r} is censored (the event had not happened), "
            f"yet {stray[0]} is filled; correct one of the two cells",
        )
    return _make_event(
        event_id=event_id,
        concept=ctx.concept_key(censor),
        when=when,
        end=None,
        value=None,
        attributes={},
        source_text=_to_text(cells["when_day"])[:1000],
        origin=None,
        assumed=None,
        status=None,
    )


_CENSOR_FIELDS = frozenset(("concept", "when_day", "when_anchor", "study_id", "when_date"))


def _assumed(where: _Where, cells: Mapping[str, Any]) -> str | None:
    """The spec's ``assumed`` reason when one of its constants gave this event a time or
    value (a filled cell wins over a constant: then nothing was assumed); an ``assumed``
    column (canonical tables) as read."""
    if "assumed" in cells:
        return _to_text(cells["assumed"])
    spec = where.plan.event
    if spec is None or spec.assumed is None:
        return None
    from_constants = (f for f in cells if f not in where.columns and f in spec.constants)
    return spec.assumed if any(f in ASSUMABLE for f in from_constants) else None


def _slug(cell: Any) -> str:
    return re.sub(r"[^a-z0-9_.]+", "-", normalise_word(_to_text(cell))).strip("-")


def _event_id(plan: _Plan, where: _Where, cells: Mapping[str, Any], ordinal: int) -> str:
    """Explicit id, else ``<spec>-<key cells>``, else ``<spec>`` (patients sheet), else
    ``<spec>-<n>`` (n: the patient's n-th row of this spec)."""
    spec = plan.event
    assert spec is not None
    if "event_id" in cells:
        base = _to_text(cells["event_id"])
    elif spec.key:
        parts = [_slug(where.raw.get(c)) for c in spec.key if not _blank(where.raw.get(c))]
        base = "-".join([plan.name, *parts])
    elif not plan.own_sheet:
        base = plan.name
    else:
        base = f"{plan.name}-{ordinal}"
    event_id = base[:64] if _ID_TEXT.fullmatch(base) else _NOT_ID.sub("-", base)[:64]
    if not event_id.strip("-"):
        raise _FieldError("event_id", "an event id needs letters or digits")
    return event_id


# -- list cells ------------------------------------------------------------------------------


def _items(cell: Any, separator: str) -> list[str]:
    """The items of a list cell ("CRS 2, ICANS 1"), trimmed, blanks left out."""
    return [part.strip() for part in _to_text(cell).split(separator) if part.strip()]


def _item_row(
    plan: _Plan, raw: Row, listed: ListSpec, item: str, n: int
) -> tuple[Row | None, dict[str, Any]]:
    """The row as one item of its list cell gives it: without ``item``, the item stands in
    the list column's cell; with it, the item's named groups are fields (translated by the
    spec's ``values``) and the list column is left out. None: a word means 'no event'."""
    if listed.item is None:
        return {**raw, listed.column: item}, {}
    match = re.fullmatch(listed.item, item)
    if match is None:
        raise _FieldError(
            "list",
            f"item {n} {item!r} does not match list.item {listed.item!r}; write each item as "
            "the pattern says (e.g. 'CRS 2'), separated by "
            f"{listed.separator!r}, or change list.item in the mapping",
        )
    row = {k: v for k, v in raw.items() if k != listed.column}
    extra: dict[str, Any] = {}
    for fld, text in match.groupdict().items():
        if text is None or not text.strip():
            continue
        lookup = plan.words.get(fld)
        word = normalise_word(text)
        if lookup is not None and word in lookup:
            target = lookup[word]
            if target is None:
                return None, {}
            if isinstance(target, dict):
                extra.update(target)
                continue
            extra[fld] = target
        else:
            extra[fld] = text.strip()
    return row, extra


# -- patients --------------------------------------------------------------------------------


def _patient(
    ctx: _Context, where: _Where, cells: dict[str, Any]
) -> tuple[PatientRecord, dt.date | None]:
    if "study_id" not in cells:
        raise _FieldError("study_id", "a patient row needs a patient id")
    attrs = ctx.library.data.patient_attributes
    out: dict[str, Any] = {"study_id": _to_text(cells["study_id"]), "attributes": {}}
    out["centre"] = _to_text(cells["centre"]) if "centre" in cells else ctx.mapping.centre
    if "sex" in cells:
        sex = normalise_word(cells["sex"])
        if sex not in SEXES:
            listed = [*where.plan.spec.values.get("sex", {}), *SEXES]
            raise _FieldError("sex", "unknown word; expected one of " + ", ".join(listed))
        out["sex"] = sex
    born = _parsed(cells, "birth_date", ctx.date)
    if born is not None:
        out["birth_date"], out["birth_precision"] = born
    anchor_date = _parsed(cells, "anchor_date", ctx.day)
    for name, cell in cells.items():
        if name in attrs:
            try:
                declared = where.plan.spec.units.get(name, ())
                out["attributes"][name] = _attribute(ctx, attrs[name], cell, declared, name)
            except ValueError as exc:
                raise _FieldError(name, str(exc)) from None
    try:
        return PatientRecord(**out), anchor_date
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        raise _FieldError(str(loc[0]) if loc else None, validation_reason(exc)) from None


# -- plausibility -------------------------------------------------------------------------------


def _plausible(ctx: _Context, event: Event, patient: PatientRecord) -> None:
    """Times no patient can have: in the future, before birth, an end before its start, a
    last follow-up before day 0. Rejected with the reason, never passed on silently. A
    year or a month is impossible only when all of it is (its span, :func:`date_span`)."""
    today = ctx.today
    birth = None
    if patient.birth_date is not None:
        birth = date_span(patient.birth_date, patient.birth_precision)
    for name, when in (("when", event.when), ("end", event.end)):
        span = None if when is None else when.span
        if when is None or span is None:
            continue
        if span[0] > today:
            raise _FieldError(f"{name}_date", f"date {when.date_text} is in the future")
        if birth is not None and span[1] < birth[0]:
            raise _FieldError(
                f"{name}_date",
                f"date {when.date_text} is before the birth date {patient.birth_text}",
            )
    start, end = event.when, event.end
    first = None if start is None else start.span
    last = None if end is None else end.span
    if start and end and first and last and last[1] < first[0]:
        raise _FieldError(
            "end_date", f"ends ({end.date_text}) before it starts ({start.date_text})"
        )
    follow_up = ctx.library.concept(event.concept).kind == "follow_up"
    if follow_up and start is not None and start.day is not None and start.day < 0:
        raise _FieldError(
            "when_day", f"last follow-up on day {start.day}, before day 0 of {start.anchor}"
        )


# -- the whole file ----------------------------------------------------------------------------


@dataclass
class _Patient:
    record: PatientRecord
    anchor_date: dt.date | None
    row: int
    events: list[Event] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    """event id -> where it was first used."""
    located: dict[str, str] = field(default_factory=dict)
    """With ``keep_sources``: "" (the patient's row) and each event id -> its row's
    :meth:`_Where.location`."""


@dataclass
class _Assembly:
    """Patients and their events as rows are read; rejects keyed by (spec, row) so that they
    come out in file order however the rows were visited."""

    ctx: _Context
    plans: list[_Plan]
    patients: dict[str, _Patient] = field(default_factory=dict)
    by_row: dict[int, str] = field(default_factory=dict)
    """patients-sheet row -> the patient read from it."""
    refused_ids: dict[str, str] = field(default_factory=dict)
    ordinals: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    rejects: list[tuple[int, int, Reject]] = field(default_factory=list)
    """(spec index, row, reject)."""
    seen: set[tuple[Any, ...]] = field(default_factory=set)
    """Each reject's place and reason (one reject per cause)."""
    keep_sources: bool = False
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    """With ``keep_sources``: study id -> :attr:`_Patient.located` of each case given out."""

    def patient(self, where: _Where) -> None:
        cells, columns = _gather(where.plan, where.raw) or ({}, {})
        where = _Where(where.sheet, where.plan, where.row, where.raw, columns)
        try:
            _computed(cells)
            record, anchor_date = _patient(self.ctx, where, cells)
            sid = record.study_id
            if sid in self.patients:
                first = self.patients[sid].row
                raise _FieldError("study_id", f"duplicate patient id (row {first} is kept)")
            self.patients[sid] = _Patient(record, anchor_date, where.row)
            if self.keep_sources:
                self.patients[sid].located[""] = where.location()
            self.by_row[where.row] = sid
        except _FieldError as exc:
            said = str(exc)
            if any(not p.own_sheet for p in self.plans[1:]):
                said += "; the patient and their events on this row are not read"
            self._reject(0, where, exc.field, said)
            reason = f"the patient's row {where.row} was rejected: {exc}"
            sid_cell = cells.get("study_id")
            refused = None if sid_cell is None else _to_text(sid_cell)
            if refused is not None and refused not in self.patients:
                self.refused_ids.setdefault(refused, reason)

    def _reject(self, order: int, where: _Where, fld: str | None, reason: str) -> None:
        """Keep one reject per cause: a cell that two specs read is listed once."""
        reject = where.reject(fld, reason)
        key = (
            where.sheet.source,
            where.sheet.sheet,
            reject.row,
            reject.column,
            reject.value,
            reject.reason,
        )
        if key not in self.seen:
            self.seen.add(key)
            self.rejects.append((order, where.row, reject))

    def _owner(self, plan: _Plan, where: _Where, cells: Mapping[str, Any]) -> _Patient | None:
        """The patient a row belongs to; None for an event on a rejected patient's own row
        (that row's reject says so)."""
        if not plan.own_sheet:
            sid = self.by_row.get(where.row)
            return None if sid is None else self.patients[sid]
        if "study_id" not in cells:
            raise _FieldError("study_id", "an event row needs a patient id")
        sid = _to_text(cells["study_id"])
        if sid not in self.patients:
            reason = self.refused_ids.get(sid, "no patient with this id in the patient table")
            raise _FieldError("study_id", reason)
        return self.patients[sid]

    def event(self, order: int, where: _Where) -> None:
        listed = where.plan.event.list if where.plan.event is not None else None
        if listed is None:
            self._event(order, where)
            return
        cell = where.raw.get(listed.column)
        if _blank(cell):
            return
        for n, item in enumerate(_items(cell, listed.separator), start=1):
            try:
                raw, extra = _item_row(where.plan, where.raw, listed, item, n)
            except _FieldError as exc:
                located = _Where(where.sheet, where.plan, where.row, where.raw, {})
                located.columns["list"] = listed.column
                self._reject(order, located, "list", str(exc))
                continue
            if raw is not None:
                item_where = _Where(where.sheet, where.plan, where.row, raw, where.columns)
                self._event(order, item_where, extra, n)

    def _event(
        self,
        order: int,
        where: _Where,
        extra: Mapping[str, Any] | None = None,
        item: int | None = None,
    ) -> None:
        plan = where.plan
        gathered = _gather(plan, where.raw)
        if gathered is None:
            return
        cells, columns = gathered
        if extra:
            listed = plan.event.list if plan.event is not None else None
            cells.update(extra)
            columns.update(dict.fromkeys(extra, listed.column if listed else ""))
        if not plan.own_sheet:
            if not set(columns) - {"study_id"}:
                return
            columns["study_id"] = self.ctx.mapping.patients.columns["study_id"]
        where = _Where(where.sheet, plan, where.row, where.raw, columns)
        try:
            owner = self._owner(plan, where, cells)
            if owner is None:
                return
            self.ordinals[(plan.name, owner.record.study_id)] += 1
            ordinal = self.ordinals[(plan.name, owner.record.study_id)]
            event_id = _event_id(plan, where, cells, ordinal)
            if item is not None:
                event_id = f"{event_id[:60]}-{item}"
            if event_id in owner.ids:
                raise _FieldError(
                    "event_id", f"event id {event_id!r} already used ({owner.ids[event_id]})"
                )
            _computed(cells)
            event = _event(self.ctx, where, cells, event_id, owner.anchor_date)
            _plausible(self.ctx, event, owner.record)
        except _FieldError as exc:
            self._reject(order, where, exc.field, str(exc))
            return
        owner.ids[event_id] = f"{where.sheet.sheet or where.sheet.source} row {where.row}"
        owner.events.append(event)
        if self.keep_sources:
            owner.located[event_id] = where.location()

    def cases(self) -> list[Case]:
        if self.keep_sources:
            self.sources.update((sid, p.located) for sid, p in self.patients.items())
        return [Case(patient=p.record, events=tuple(p.events)) for p in self.patients.values()]

    def release(self) -> list[Case]:
        """The cases assembled so far, forgetting them and every row read (streaming: each
        patient's rows have all been read when this is called)."""
        done = self.cases()
        self.patients.clear()
        self.by_row.clear()
        self.refused_ids.clear()
        self.ordinals.clear()
        self.seen.clear()
        return done
