"""The per-centre mapping file: how a centre's spreadsheet becomes canonical records.

A mapping names, for each canonical table (patients, drugs, procedures, mrd, statuses,
adverse_events), where its rows come from (a sheet, a CSV file, or the one wide sheet), which
source column feeds which canonical field, how source words translate to canonical words,
and default values. Everything that can be checked without the study file is checked when
the mapping is loaded (field names, canonical words, units), so a mistake in the mapping is
a :class:`~fhir_cart.errors.ConfigError` naming the file and key, not a thousand rejected
rows. docs/mapping-file.md lists every key with examples.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fhir_cart.errors import ConfigError
from fhir_cart.records import (
    ANCHORS,
    AdverseEvent,
    DiseaseStatus,
    DrugAdministration,
    MrdResult,
    PatientRecord,
    ProcedureRecord,
)

__all__ = [
    "EVENT_TABLES",
    "NUMBER_UNITS",
    "TABLES",
    "TABLE_FIELDS",
    "StudyMapping",
    "TableSpec",
    "dump_study_mapping",
    "field_words",
    "load_study_mapping",
    "normalise_word",
    "validation_reason",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)

EVENT_TABLES = ("drugs", "procedures", "mrd", "statuses", "adverse_events")
TABLES = ("patients", *EVENT_TABLES)

_MODELS: dict[str, type[BaseModel]] = {
    "patients": PatientRecord,
    "drugs": DrugAdministration,
    "procedures": ProcedureRecord,
    "mrd": MrdResult,
    "statuses": DiseaseStatus,
    "adverse_events": AdverseEvent,
}


def _when(name: str) -> tuple[str, ...]:
    return tuple(f"{name}_{part}" for part in ("date", "day", "anchor"))


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
"""Canonical fields each table accepts (``<time>_date``/``_day``/``_anchor`` make a When;
``patients.anchor_date`` dates relative days; ``mrd.result`` is parsed into value, unit,
comparator or qualitative)."""

NUMBER_UNITS: dict[str, dict[str, str]] = {
    "drugs": {"dose": "dose_unit"},
    "procedures": {"cell_dose": "cell_dose_unit"},
    "mrd": {"value": "unit"},
}
"""Per table: number field -> the field holding its unit (what ``units`` may fill in)."""


_WHOLE = re.compile(r"^(-?\d+)\.0+$")


def normalise_word(word: Any) -> str:
    """How source words are compared: case-folded, runs of white space as one space,
    and whole numbers without '.0' (a spreadsheet's 1.0 is the mapping's 1)."""
    if isinstance(word, float) and word.is_integer():
        word = int(word)
    text = " ".join(str(word).split()).casefold()
    return _WHOLE.sub(r"\1", text)


def _literal_words(annotation: Any) -> tuple[str, ...]:
    if get_origin(annotation) is Literal:
        return tuple(str(arg) for arg in get_args(annotation))
    return tuple(word for arg in get_args(annotation) for word in _literal_words(arg))


def field_words(table: str, field: str) -> tuple[str, ...]:
    """The canonical words of a closed-vocabulary field (empty for free or numeric fields)."""
    if field.endswith("_anchor"):
        return ANCHORS
    if table == "mrd" and field == "result":
        return _literal_words(MrdResult.model_fields["qualitative"].annotation)
    info = _MODELS[table].model_fields.get(field)
    return () if info is None else _literal_words(info.annotation)


class TableSpec(BaseModel):
    """How one canonical table (or one group of columns of a wide sheet) is read."""

    model_config = _STRICT

    source: str | None = None
    """tables layout: sheet name (xlsx) or CSV file name (``.csv`` may be left out);
    omitted: the first sheet, or the CSV file given."""
    header_row: int | None = Field(default=None, ge=1)
    """Row holding the column headers (rows above it are ignored); default: the mapping's."""
    columns: dict[str, str] = Field(default_factory=dict)
    """canonical field -> source column header."""
    values: dict[str, dict[str, str]] = Field(default_factory=dict)
    """canonical field -> {source word: canonical word} (matched ignoring case and spaces)."""
    constants: dict[str, str | int | float] = Field(default_factory=dict)
    """canonical field -> value used when the row has none (no column, or a blank cell)."""
    units: dict[str, str] = Field(default_factory=dict)
    """number field -> its unit when the row has a number and no unit of its own."""

    def problems(self, table: str, where: str) -> list[str]:
        """What is wrong with this spec for ``table`` (``where`` is its key path)."""
        allowed = TABLE_FIELDS[table]
        found = [
            f"{where}.{key}.{name}: {table} has no field {name!r}; fields are {', '.join(allowed)}"
            for key, names in (
                ("columns", self.columns),
                ("values", self.values),
                ("constants", self.constants),
            )
            for name in names
            if name not in allowed
        ]
        found += self._word_problems(table, where)
        found += self._unit_problems(table, where)
        return found

    def _word_problems(self, table: str, where: str) -> list[str]:
        found = []
        for name, words in self.values.items():
            expected = field_words(table, name) if name in TABLE_FIELDS[table] else ()
            found += _vocabulary_problems(f"{where}.values.{name}", words, expected)
        for name, value in self.constants.items():
            expected = field_words(table, name) if name in TABLE_FIELDS[table] else ()
            if expected and str(value) not in expected:
                found.append(
                    f"{where}.constants.{name}: {value!r} is not one of {', '.join(expected)}"
                )
        return found

    def _unit_problems(self, table: str, where: str) -> list[str]:
        numbers = NUMBER_UNITS.get(table, {})
        return [
            f"{where}.units.{name}: {table} has no number field {name!r} with a unit"
            + (f"; number fields are {', '.join(numbers)}" if numbers else "")
            for name in self.units
            if name not in numbers
        ]


def _vocabulary_problems(where: str, words: dict[str, str], expected: tuple[str, ...]) -> list[str]:
    found = []
    seen: dict[str, str] = {}
    for source, canonical in words.items():
        key = normalise_word(source)
        if key in seen and seen[key] != canonical:
            found.append(f"{where}: {source!r} is listed twice with different meanings")
        seen[key] = canonical
        if expected and canonical not in expected:
            found.append(f"{where}.{source}: {canonical!r} is not one of {', '.join(expected)}")
    return found


class StudyMapping(BaseModel):
    """One centre's mapping file (see docs/mapping-file.md)."""

    model_config = _STRICT

    centre: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$", max_length=32)
    identifier_base: str | None = Field(default=None, pattern=r"^(https?|urn):\S+$")
    layout: Literal["tables", "wide"] = "tables"
    header_row: int = Field(default=1, ge=1)
    """Row holding the column headers in every sheet or CSV (a table may override it)."""
    csv_delimiter: str = Field(default=",", min_length=1, max_length=1)
    """Field separator of CSV files (Excel in many European locales writes ';')."""
    encoding: str = "utf-8-sig"
    """Text encoding of CSV files (e.g. cp1252 for older Excel exports)."""
    date_formats: tuple[str, ...] = Field(default=("%Y-%m-%d",), min_length=1)
    anchor: str = "cart_infusion"
    """Event that relative days count from, when a row names none."""
    mrd_unit: Literal["percent", "fraction"] = "percent"
    """Unit of a bare MRD number such as ``0.01``."""
    tables: dict[str, TableSpec] = Field(default_factory=dict)
    """tables layout: canonical table -> its spec."""
    source: str | None = None
    """wide layout: the sheet name (xlsx) or file name (folder) holding one row per patient."""
    patient: TableSpec | None = None
    """wide layout: the patient columns."""
    events: dict[str, list[TableSpec]] = Field(default_factory=dict)
    """wide layout: canonical event table -> groups of columns, one event per group."""

    @model_validator(mode="after")
    def _check(self) -> StudyMapping:
        found = self._general_problems()
        found += self._tables_problems() if self.layout == "tables" else self._wide_problems()
        if found:
            raise ValueError("; ".join(found))
        return self

    def _general_problems(self) -> list[str]:
        found = []
        if self.anchor not in ANCHORS:
            found.append(f"anchor: {self.anchor!r} is not one of {', '.join(ANCHORS)}")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            found.append(f"encoding: {self.encoding!r} is not a known text encoding")
        return found

    def _tables_problems(self) -> list[str]:
        found = [
            f"{key}: only used in a wide layout"
            for key, value in (("source", self.source), ("patient", self.patient))
            if value is not None
        ]
        found += ["events: only used in a wide layout"] if self.events else []
        if "patients" not in self.tables:
            found.append("tables.patients: a tables layout needs a patients table")
        for name, spec in self.tables.items():
            found += _spec_problems(name, spec, f"tables.{name}", needs_id=True)
        return found

    def _wide_problems(self) -> list[str]:
        found = ["tables: only used in a tables layout"] if self.tables else []
        found += _source_problems(self.source, "source")
        if self.patient is None:
            return [*found, "patient: a wide layout needs a patient section"]
        found += _spec_problems("patients", self.patient, "patient", needs_id=True)
        for name, specs in self.events.items():
            for index, spec in enumerate(specs):
                where = f"events.{name}[{index}]"
                found += _spec_problems(name, spec, where, needs_id=False)
                if spec.source is not None or spec.header_row is not None:
                    found.append(f"{where}: source and header_row are set once, at the top")
        return found

    def specs(self) -> dict[str, list[TableSpec]]:
        """Canonical table -> its specs (one per table in a tables layout)."""
        if self.layout == "tables":
            return {name: [spec] for name, spec in self.tables.items()}
        assert self.patient is not None
        return {"patients": [self.patient], **self.events}


def _spec_problems(table: str, spec: TableSpec, where: str, *, needs_id: bool) -> list[str]:
    if table not in TABLE_FIELDS:
        return [f"{where}: unknown table {table!r}; tables are {', '.join(TABLES)}"]
    found = spec.problems(table, where)
    found += _source_problems(spec.source, f"{where}.source")
    if needs_id and "study_id" not in spec.columns:
        found.append(f"{where}.columns.study_id: every table needs the patient id column")
    return found


def _source_problems(source: str | None, where: str) -> list[str]:
    if source is None:
        return []
    parts = PurePosixPath(source.replace("\\", "/")).parts
    if not source.strip() or ".." in parts or source.startswith(("/", "\\")):
        return [f"{where}: {source!r} must be a sheet name or a file name inside the study folder"]
    return []


class _Loader(yaml.SafeLoader):
    """Safe YAML, but every mapping key is the text as written (``1: male`` maps the word
    '1', ``no: negative`` the word 'no', not a boolean) and a key given twice is an error."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> Any:
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key: Any = key_node.value
        else:
            key = loader.construct_object(key_node, deep=True)
        if key in out:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (line {line})", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def validation_reason(exc: ValidationError) -> str:
    """A pydantic error as one readable line: ``field: message; field: message``."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def dump_study_mapping(mapping: StudyMapping) -> str:
    """The mapping as YAML text that :func:`load_study_mapping` reads back unchanged."""
    data = mapping.model_dump(mode="json", exclude_defaults=True)
    data = {"centre": data.pop("centre"), "layout": mapping.layout, **data}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def load_study_mapping(path: Path) -> StudyMapping:
    """Read and validate a centre mapping; errors name the file and the key."""
    try:
        with path.open(encoding="utf-8") as handle:
            raw = yaml.load(handle, Loader=_Loader)  # noqa: S506 - a SafeLoader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read mapping file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"mapping file {path} must hold a YAML mapping (key: value) at the top")
    try:
        return StudyMapping.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"mapping file {path} is invalid: {validation_reason(exc)}") from exc
