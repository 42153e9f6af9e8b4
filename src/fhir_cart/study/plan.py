"""The mapping made ready to read rows: one :class:`_Plan` per spec (patients first), its
word look-ups built and its constants checked once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_cart.errors import ConfigError
from fhir_cart.library.study_mapping import (
    EventSpec,
    PatientSpec,
    StudyMapping,
    WordTarget,
    check_mapping,
    normalise_word,
    spec_names,
)
from fhir_cart.study.fields import _attributes, _Context, _value, _when
from fhir_cart.study.values import _FieldError

# -- a spec made ready to read rows ----------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """One spec with its word look-ups prepared."""

    name: str
    """Spec name (event ids start with it); ``patients`` for the patients spec."""
    where: str
    """Key path in the mapping file."""
    spec: PatientSpec | EventSpec
    words: dict[str, dict[str, WordTarget]]
    own_sheet: bool
    """False: an event spec reading the patients sheet."""
    fields: tuple[tuple[str, str, dict[str, WordTarget] | None], ...]
    """(field, column, its words) for every mapped column."""
    defaults: tuple[tuple[str, Any], ...]
    """Constants (and the spec's concept) filling blank fields."""
    by_column: dict[str, tuple[tuple[int, str, str, dict[str, WordTarget] | None], ...]]
    """column -> (position in ``fields``, field, column, words) of the fields it fills."""

    @property
    def event(self) -> EventSpec | None:
        return self.spec if isinstance(self.spec, EventSpec) else None

    def sheet_key(self, mapping: StudyMapping) -> tuple[str | None, int]:
        spec = self.spec if self.own_sheet else mapping.patients
        return spec.source, spec.header_row or mapping.header_row


def _plan(name: str, where: str, spec: PatientSpec | EventSpec) -> _Plan:
    words = {
        fld: {normalise_word(source): target for source, target in listed.items()}
        for fld, listed in spec.values.items()
    }
    own = isinstance(spec, PatientSpec) or spec.source is not None
    fields = tuple((fld, column, words.get(fld)) for fld, column in spec.columns.items())
    defaults = dict(spec.constants)
    if isinstance(spec, EventSpec) and spec.concept is not None:
        defaults.setdefault("concept", spec.concept)
    by_column: dict[str, list[tuple[int, str, str, dict[str, WordTarget] | None]]] = {}
    for position, (fld, column, lookup) in enumerate(fields):
        by_column.setdefault(column, []).append((position, fld, column, lookup))
    columns = {c: tuple(found) for c, found in by_column.items()}
    return _Plan(name, where, spec, words, own, fields, tuple(defaults.items()), columns)


def _plans(ctx: _Context) -> list[_Plan]:
    """Patients first, then every event spec; constants are checked once, here."""
    mapping = ctx.mapping
    problems = check_mapping(mapping, ctx.library)
    if problems:
        raise ConfigError("the mapping is invalid: " + "; ".join(problems))
    plans = [_plan("patients", "patients", mapping.patients)]
    for index, (name, spec) in enumerate(zip(spec_names(mapping), mapping.events, strict=True)):
        plans.append(_plan(name, f"events[{index}]", spec))
    for plan in plans[1:]:
        _check_constants(ctx, plan)
    return plans


def _check_constants(ctx: _Context, plan: _Plan) -> None:
    spec = plan.event
    assert spec is not None
    constants = dict(spec.constants)
    try:
        for name in ("when", "end"):
            _when(ctx, constants, name, None)
        concept = spec.fixed_concept()
        if concept is not None:
            concept = ctx.concept_key(concept)
            _value(ctx, ctx.library.concept(concept), constants, spec.units)
            _attributes(ctx, concept, constants, spec.units)
    except _FieldError as exc:
        value = constants.get(exc.field or "")
        raise ConfigError(f"{plan.where}.constants.{exc.field}: {value!r}: {exc}") from exc
