"""The per-centre mapping file: how a centre's spreadsheet becomes canonical records.

A mapping names, for each canonical table (patients, drugs, procedures, mrd, statuses,
adverse_events), where its rows come from (a sheet, a CSV file, or the one wide sheet), which
source column feeds which canonical field, how source words translate to canonical words,
and constant values. See docs/mapping-file.md for every key with examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fhir_cart.errors import ConfigError
from fhir_cart.records import ANCHORS

__all__ = [
    "EVENT_TABLES",
    "TABLE_FIELDS",
    "StudyMapping",
    "TableSpec",
    "load_study_mapping",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)

EVENT_TABLES = ("drugs", "procedures", "mrd", "statuses", "adverse_events")

_WHEN = ("date", "day", "anchor")


def _when(name: str) -> tuple[str, ...]:
    return tuple(f"{name}_{part}" for part in _WHEN)


TABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "patients": (
        "study_id", "centre", "sex", "birth_date", "age_at_diagnosis", "diagnosis",
        "diagnosis_date", "disease_state", *_when("death"), *_when("last_follow_up"), "anchor_date",
    ),
    "drugs": (
        "study_id", "event_id", "agent", "cycle", *_when("start"), *_when("end"),
        "dose", "dose_unit", "intent", "response",
    ),
    "procedures": (
        "study_id", "event_id", "kind", *_when("when"), "product", "cell_dose",
        "cell_dose_unit", "donor_type", "conditioning",
    ),
    "mrd": (
        "study_id", "event_id", "timepoint", *_when("when"), "method", "specimen", "result",
        "value", "unit", "comparator", "qualitative", "sensitivity", "marker",
    ),
    "statuses": ("study_id", "event_id", *_when("when"), "status", "cd19"),
    "adverse_events": ("study_id", "event_id", "kind", "grade", *_when("when")),
}  # fmt: skip
"""Canonical fields each table accepts (``<time>_date``/``_day``/``_anchor`` make a When)."""


class TableSpec(BaseModel):
    """How one canonical table (or one group of columns of a wide sheet) is read."""

    model_config = _STRICT

    source: str | None = None
    """Sheet name (xlsx) or file name (folder of CSVs); not used in a wide layout."""
    columns: dict[str, str] = Field(default_factory=dict)
    """canonical field -> source column header."""
    values: dict[str, dict[str, str]] = Field(default_factory=dict)
    """canonical field -> {source word: canonical word} (matched ignoring case and spaces)."""
    constants: dict[str, str | int | float] = Field(default_factory=dict)
    """canonical field -> value used for every row (e.g. timepoint: day_28)."""
    units: dict[Literal["dose", "cell_dose", "value"], str] = Field(default_factory=dict)
    """number field -> unit used for it when the row has a number and no unit of its own."""


class StudyMapping(BaseModel):
    model_config = _STRICT

    centre: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$", max_length=32)
    identifier_base: str | None = None
    layout: Literal["tables", "wide"] = "tables"
    date_formats: tuple[str, ...] = ("%Y-%m-%d",)
    anchor: str = "cart_infusion"
    """Event that relative days count from, when a row names none."""
    mrd_unit: Literal["percent", "fraction"] = "percent"
    """Unit of a bare MRD number such as ``0.01``."""
    tables: dict[str, TableSpec] = Field(default_factory=dict)
    """tables layout: canonical table -> its spec."""
    source: str | None = None
    """wide layout: the sheet name (xlsx) holding one row per patient."""
    patient: TableSpec | None = None
    """wide layout: the patient columns."""
    events: dict[str, list[TableSpec]] = Field(default_factory=dict)
    """wide layout: canonical event table -> groups of columns, one event per group."""
    path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _check(self) -> StudyMapping:
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}")
        if self.layout == "tables":
            if "patients" not in self.tables:
                raise ValueError("a tables layout needs tables.patients")
            _check_tables(self.tables)
        else:
            if self.patient is None:
                raise ValueError("a wide layout needs a patient section")
            _check_tables({"patients": self.patient})
            for table, specs in self.events.items():
                for spec in specs:
                    _check_tables({table: spec})
        return self

    def specs(self) -> dict[str, list[TableSpec]]:
        """Canonical table -> its specs (one per table in tables layout)."""
        if self.layout == "tables":
            return {name: [spec] for name, spec in self.tables.items()}
        assert self.patient is not None
        return {"patients": [self.patient], **self.events}


def _check_tables(tables: dict[str, TableSpec]) -> None:
    for name, spec in tables.items():
        allowed = TABLE_FIELDS.get(name)
        if allowed is None:
            raise ValueError(f"unknown table {name!r}; tables are {', '.join(TABLE_FIELDS)}")
        for key in (*spec.columns, *spec.values, *spec.constants):
            if key not in allowed:
                raise ValueError(f"{name}: unknown field {key!r}; fields are {', '.join(allowed)}")


def load_study_mapping(path: Path) -> StudyMapping:
    """Read and validate a centre mapping; errors name the file and the key."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read mapping file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"mapping file {path} must hold a YAML mapping at the top")
    try:
        mapping = StudyMapping.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"mapping file {path} is invalid: {problems}") from exc
    return mapping.model_copy(update={"path": path})
