"""The per-centre mapping file: how a centre's spreadsheet becomes open clinical records.

One shape for every design (a sheet per topic, one wide row per patient, or both): a
``patients`` spec says where the patient rows are, and a list of ``events`` specs says which
columns make which events (a concept of the concept library, its time, value and attributes).
A study may add its own concepts and attributes (``concepts``/``attributes``).

Everything checkable without the study file is checked when the mapping is loaded: the shape
here (:class:`StudyMapping`), the rest against the concept library in :func:`check_mapping`
(fields, concept keys, attributes a constant concept does not allow, words outside value
sets, units that are not UCUM). Either way a mistake is a
:class:`~fhir_cart.errors.ConfigError` naming the file and the key path, not a thousand
rejected rows. docs/mapping-file.md lists every key with examples.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from fhir_cart.errors import ConfigError, validation_reason
from fhir_cart.library.checks import Checker
from fhir_cart.library.concepts import (
    AttributeDef,
    ConceptDef,
    StudyLibraryFile,
    is_ucum,
)
from fhir_cart.library.core import Library, names_a_file
from fhir_cart.library.list_spec import ListSpec
from fhir_cart.library.yamlfile import load_model, validate_model
from fhir_cart.records import DAYS_PER

if TYPE_CHECKING:
    from fhir_cart.library.concepts import ConceptLibrary

__all__ = [
    "EVENT_FIELDS",
    "PATIENT_FIELDS",
    "WHEN_FIELDS",
    "EventSpec",
    "PatientSpec",
    "StudyMapping",
    "WordTarget",
    "check_mapping",
    "default_library",
    "dump_study_mapping",
    "load_study_mapping",
    "normalise_word",
    "parse_window",
    "spec_names",
    "validation_reason",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)
_KEY = r"^[a-z][a-z0-9_]*$"

Cell = str | int | float | bool
WordTarget = Cell | dict[str, Cell] | None
"""What a source word stands for: a canonical value, several fields at once
(``{concept: chemotherapy, regimen: hib_block}``), or None (the row makes no event)."""

PATIENT_FIELDS: tuple[str, ...] = ("study_id", "centre", "sex", "birth_date", "anchor_date")
"""Fixed patient fields (any patient attribute of the library is a field too)."""
SEXES: tuple[str, ...] = ("female", "male", "other", "unknown")


def _time_fields(name: str) -> tuple[str, ...]:
    parts = ("date", "day", "anchor", "window", "earliest_day", "latest_day")
    return tuple(f"{name}_{part}" for part in parts)


WHEN_FIELDS: tuple[str, ...] = (*_time_fields("when"), *_time_fields("end"))
CANONICAL_VALUE_FIELDS: tuple[str, ...] = (
    "value_number",
    "value_unit",
    "value_comparator",
    "value_low",
    "value_high",
    "value_code",
    "value_boolean",
    "value_text",
)
EVENT_FIELDS: tuple[str, ...] = (
    "study_id",
    "concept",
    "event_id",
    *WHEN_FIELDS,
    "value",
    "unit",
    "comparator",
    "text",
    "source_text",
    "origin",
    "assumed",
    "status",
    *CANONICAL_VALUE_FIELDS,
)
"""Fixed event fields (any attribute key of the library is a field too)."""


_WHOLE = re.compile(r"^(-?\d+)\.0+$")


def normalise_word(word: Any) -> str:
    """How source words are compared: case-folded, runs of white space as one space,
    and whole numbers without '.0' (a spreadsheet's 1.0 is the mapping's 1)."""
    if isinstance(word, float) and word.is_integer():
        word = int(word)
    text = " ".join(str(word).split()).casefold()
    return _WHOLE.sub(r"\1", text)


_WINDOW_BETWEEN = re.compile(r"^between\s+(-?\d+)\s+and\s+(-?\d+)\s+(\S+)$")
_WINDOW_RANGE = re.compile(r"^(-?\d+)?\s*\.\.\s*(-?\d+)?\s+(\S+)$")


def parse_window(text: str) -> tuple[int | None, int | None, str] | None:
    """A window as (earliest_day, latest_day, anchor word); None for 'unknown'.
    'before hsct' -> (None, -1, 'hsct'), 'after x' -> (1, None, 'x'), '0..28 x',
    'between 0 and 28 x' (inclusive). ValueError for anything else."""
    words = normalise_word(text)
    if words == "unknown":
        return None
    head, _, rest = words.partition(" ")
    if head in ("before", "after") and rest and " " not in rest:
        return (None, -1, rest) if head == "before" else (1, None, rest)
    match = _WINDOW_BETWEEN.match(words) or _WINDOW_RANGE.match(words)
    if match is None or (match[1] is None and match[2] is None):
        raise ValueError(
            "expected a window: 'before <anchor>', 'after <anchor>', '<a>..<b> <anchor>', "
            "'between <a> and <b> <anchor>' or 'unknown'"
        )
    low = None if match[1] is None else int(match[1])
    high = None if match[2] is None else int(match[2])
    if low is not None and high is not None and low > high:
        raise ValueError("a window's first day is after its last day")
    return low, high, match[3]


def _source_problems(source: str | None, where: str) -> list[str]:
    if source is None:
        return []
    parts = PurePosixPath(source.replace("\\", "/")).parts
    if not source.strip() or ".." in parts or source.startswith(("/", "\\")):
        return [f"{where}: {source!r} must be a sheet name or a file name inside the study folder"]
    return []


class _Spec(BaseModel):
    model_config = _STRICT

    source: str | None = None
    """Sheet name (xlsx) or CSV file name (``.csv`` may be left out)."""
    header_row: int | None = Field(default=None, ge=1)
    columns: dict[str, str] = Field(default_factory=dict)
    """field -> source column header."""
    values: dict[str, dict[str, WordTarget]] = Field(default_factory=dict)
    """field -> {source word: canonical value, several fields, or null}."""
    constants: dict[str, Cell] = Field(default_factory=dict)
    """field -> value used when the row has none (no column, or a blank cell)."""
    optional: tuple[str, ...] = ()
    """Fields whose column may be missing from the header (then read as blank), e.g. a
    column that files written by an older version lack."""
    units: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """number field -> UCUM unit of a bare number in it (the column's unit), or a list: that
    unit first, then the units of other kinds the column may also hold. A unit written in a
    cell must measure what one of them measures (``1,5 g`` in a mg/m2 column is rejected
    unless a mass unit is listed)."""

    @field_validator("units", mode="before")
    @classmethod
    def _unit_lists(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {k: [v] if isinstance(v, str) else v for k, v in value.items()}

    def words(self, where: str) -> list[str]:
        """Words listed twice with different meanings."""
        found = []
        for name, words in self.values.items():
            seen: dict[str, WordTarget] = {}
            for source, target in words.items():
                key = normalise_word(source)
                if key in seen and seen[key] != target:
                    found.append(f"{where}.values.{name}: {source!r} is listed twice")
                seen[key] = target
        return found


class PatientSpec(_Spec):
    """Where the patient rows are (one row per patient) and which columns feed what."""

    @model_validator(mode="after")
    def _check(self) -> PatientSpec:
        found = _source_problems(self.source, "source") + self.words("patients")
        if "study_id" not in self.columns:
            found.append("columns.study_id: the patients spec needs the patient id column")
        if found:
            raise ValueError("; ".join(found))
        return self


class EventSpec(_Spec):
    """One kind of event: from its own sheet (one event per row) or from the patients
    sheet (one event per patient row with one of its mapped cells filled)."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-\.]+$", max_length=40)
    concept: str | None = Field(default=None, pattern=_KEY)
    """The concept of every event of this spec (else map or set ``concept`` as a field)."""
    key: tuple[str, ...] = ()
    """Source columns whose cells make the stable event key."""
    assumed: str | None = Field(default=None, min_length=3, max_length=1000)
    """Why a constant time or value of this spec is a fair assumption although the source
    does not state it (e.g. the unit's protocol); its events are marked as assumed."""
    censored: str | None = Field(default=None, pattern=_KEY)
    """The concept a censored time ('15+' in ``when_day``: the event had not happened by
    then) records instead of this spec's event, e.g. ``last_follow_up``; without it such a
    cell is refused."""
    list: ListSpec | None = None
    """A column of lists ("CRS 2, ICANS 1"): one event per item, ids ``<spec>-<n>``."""

    @model_validator(mode="after")
    def _check(self) -> EventSpec:
        found = _source_problems(self.source, "source") + self.words("")
        if self.source is not None and "study_id" not in self.columns:
            found.append("columns.study_id: a spec with its own source needs the patient id column")
        if self.source is None and (self.header_row is not None or self.key):
            found.append("header_row, key: only for a spec with its own source")
        listed = set(self.list.fields()) if self.list is not None else set()
        if self.concept is None and not (
            {"concept"} & (set(self.columns) | set(self.constants) | listed)
        ):
            found.append("concept: give the concept, or map or set the field `concept`")
        if self.concept is not None and "concept" in self.columns:
            found.append("concept: set as a constant and mapped as a column")
        unmapped = self.list is not None and self.list.column not in self.columns.values()
        if self.list is not None and self.list.item is None and unmapped:
            found.append(
                f"list.column: {self.list.column!r} is mapped to no field; map it in "
                "`columns` or give `list.item` with named groups"
            )
        if found:
            raise ValueError("; ".join(p.removeprefix(".") for p in found))
        return self

    def fixed_concept(self) -> str | None:
        """The concept when it is the same for every row."""
        if self.concept is not None:
            return self.concept
        if "concept" in self.columns or "concept" in self.values:
            return None
        if self.list is not None and "concept" in self.list.fields():
            return None
        constant = self.constants.get("concept")
        return None if constant is None else str(constant)


class StudyMapping(BaseModel):
    """One centre's mapping file (see docs/mapping-file.md)."""

    model_config = _STRICT

    centre: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$", max_length=32)
    identifier_base: str | None = Field(default=None, pattern=r"^(https?|urn):\S+$")
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    """ISO 3166 country of the centre: picks its diagnosis code system (ICD-10-GM for DE)."""
    study: str | None = Field(default=None, min_length=1)
    """Study definition: a name in mappings/studies/ or a path."""
    library: str | None = Field(default=None, min_length=1)
    """The study's own library file (``concepts``, ``attributes``, ``patient_attributes`` as
    in mappings/concepts.yaml), a path from the mapping file's folder: overlaid on the shared
    library for this study (its mapping, tables, mapping to FHIR, study file and summary),
    never redefining a shared concept."""
    header_row: int = Field(default=1, ge=1)
    csv_delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8-sig"
    date_formats: tuple[str, ...] = Field(default=("%Y-%m-%d",), min_length=1)
    anchor: str | None = Field(default=None, pattern=_KEY)
    """Concept whose first event is day 0 of ``*_day`` fields that name no anchor."""
    concepts: dict[str, ConceptDef] = Field(default_factory=dict)
    attributes: dict[str, AttributeDef] = Field(default_factory=dict)
    patient_attributes: dict[str, AttributeDef] = Field(default_factory=dict)
    patients: PatientSpec
    events: tuple[EventSpec, ...] = ()
    ignore: dict[str, str] = Field(default_factory=dict)
    """Source columns deliberately not mapped -> why."""
    _additions: StudyLibraryFile | None = PrivateAttr(default=None)
    """What the ``library`` file adds (read by :func:`load_study_mapping`)."""

    @model_validator(mode="after")
    def _check(self) -> StudyMapping:
        found = []
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            found.append(f"encoding: {self.encoding!r} is not a known text encoding")
        try:
            self.own_concepts()
        except ValidationError as exc:
            found.append(validation_reason(exc))
        names = [spec.name for spec in self.events if spec.name is not None]
        found += [
            f"events: name {n!r} is used twice" for n in sorted(set(names)) if names.count(n) > 1
        ]
        if found:
            raise ValueError("; ".join(found))
        return self

    def own_concepts(self) -> StudyLibraryFile | None:
        """The study's own concepts and attributes: those of its ``library`` file and of the
        mapping itself (None when it adds none), published under the library file's
        ``canonical`` when it has one."""
        extra = self._additions or StudyLibraryFile()
        concepts = {**extra.concepts, **self.concepts}
        attributes = {**extra.attributes, **self.attributes}
        patient_attributes = {**extra.patient_attributes, **self.patient_attributes}
        if not (concepts or attributes or patient_attributes or extra.value_sets):
            return None
        return StudyLibraryFile(
            concepts=concepts,
            attributes=attributes,
            patient_attributes=patient_attributes,
            value_sets=extra.value_sets,
            canonical=extra.canonical,
            code_system=extra.code_system,
        ).published()

    def with_additions(self, additions: StudyLibraryFile, where: str) -> StudyMapping:
        """The mapping with its library file's concepts (``where``: that file); a key the
        mapping itself defines too is refused."""
        twice = sorted(
            {*additions.concepts} & {*self.concepts}
            | {*additions.attributes} & {*self.attributes}
            | {*additions.patient_attributes} & {*self.patient_attributes}
        )
        if twice:
            raise ConfigError(
                f"{', '.join(twice)}: defined both in the mapping and in its library file "
                f"{where}; keep one of the two"
            )
        copy = self.model_copy()
        copy._additions = additions
        copy.own_concepts()  # the merged concepts check as one file
        return copy


def spec_names(mapping: StudyMapping) -> list[str]:
    """The name of every event spec: its ``name``, else its concept, else its source, made
    unique with ``-<n>`` (n counts the specs sharing that default, from 1)."""
    defaults = [
        spec.name or spec.fixed_concept() or _slug(spec.source or "patients") or "event"
        for spec in mapping.events
    ]
    out = []
    for index, (spec, name) in enumerate(zip(mapping.events, defaults, strict=True)):
        clash = spec.name is None and defaults.count(name) > 1
        out.append(f"{name}-{defaults[: index + 1].count(name)}" if clash else name)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_.]+", "-", normalise_word(text)).strip("-")


# -- checks against the concept library ------------------------------------------------------


def _items(spec: _Spec) -> Iterator[tuple[str, str]]:
    """(section, field) for every field the spec names."""
    for section in ("columns", "values", "constants", "units"):
        for name in getattr(spec, section):
            yield section, name


def _word_problems(
    where: str, words: Mapping[str, Any], allowed: tuple[str, ...], open_set: bool
) -> list[str]:
    if open_set or not allowed:
        return []
    known = {normalise_word(w) for w in allowed}
    return [
        f"{where}.{source}: {target!r} is not one of {', '.join(allowed)}"
        for source, target in words.items()
        if isinstance(target, str) and normalise_word(target) not in known
    ]


class _MappingChecker(Checker):
    """Checks one mapping against a concept library; collects problems with key paths."""

    def __init__(self, mapping: StudyMapping, library: ConceptLibrary) -> None:
        super().__init__(library)
        self.mapping = mapping

    def run(self) -> list[str]:
        if self.mapping.anchor is not None and not self.lib.has(self.mapping.anchor):
            self.problems.append(f"anchor: no concept {self.mapping.anchor!r}")
        self.problems += [
            f"{where}.{key}: the name of a field; give the attribute another key"
            for where, keys, fields in (
                ("attributes", self.mapping.attributes, EVENT_FIELDS),
                ("patient_attributes", self.mapping.patient_attributes, PATIENT_FIELDS),
            )
            for key in keys
            if key in fields
        ]
        self.patients(self.mapping.patients)
        for index, spec in enumerate(self.mapping.events):
            self.event(spec, f"events[{index}]")
        return self.problems

    def patients(self, spec: PatientSpec) -> None:
        attrs = self.lib.data.patient_attributes
        for section, name in _items(spec):
            if name not in PATIENT_FIELDS and name not in attrs:
                self.problems.append(
                    f"patients.{section}.{name}: not a patient field; fields are "
                    f"{', '.join(PATIENT_FIELDS)} and the patient attributes "
                    f"{', '.join(attrs)}"
                )
        for name, words in spec.values.items():
            where = f"patients.values.{name}"
            if name == "sex":
                self.problems += _word_problems(where, words, SEXES, False)
            elif name in attrs:
                self.attribute_words(where, words, attrs[name])
        self.units("patients", spec, attrs)

    def attribute_words(self, where: str, words: Mapping[str, Any], attr: AttributeDef) -> None:
        if attr.type == "coded" and attr.value_set is not None:
            allowed = self.lib.words(attr.value_set)
            self.problems += _word_problems(where, words, allowed, attr.open)

    def units(self, where: str, spec: _Spec, attrs: Mapping[str, AttributeDef]) -> None:
        self.problems += [
            f"{where}.optional.{name}: not a field of `columns`"
            for name in spec.optional
            if name not in spec.columns
        ]
        for name, units in spec.units.items():
            attr = attrs.get(name)
            if name in ("when_day", "end_day"):
                self.problems += [
                    f"{where}.units.{name}: {unit!r} is not a time unit (d, wk, mo or a)"
                    for unit in units
                    if unit not in DAYS_PER
                ]
                continue
            if name not in ("value", "value_number") and (attr is None or attr.type != "quantity"):
                self.problems.append(f"{where}.units.{name}: not a value or a quantity attribute")
            if not units:
                self.problems.append(f"{where}.units.{name}: list at least one unit")
            for unit in units:
                if not is_ucum(unit):
                    self.problems.append(f"{where}.units.{name}: {unit!r} is not a UCUM unit")

    def event(self, spec: EventSpec, where: str) -> None:
        concepts = self.concepts(spec, where)
        if spec.censored is not None and spec.censored not in self.lib.data.concepts:
            self.problems.append(
                f"{where}.censored: {spec.censored!r} is no concept of the library"
            )
        attrs = self.lib.data.attributes
        for section, name in _items(spec):
            if name not in EVENT_FIELDS and name not in attrs:
                self.problems.append(
                    f"{where}.{section}.{name}: not an event field or attribute; fields are "
                    f"{', '.join(EVENT_FIELDS)} and the attributes of mappings/concepts.yaml"
                )
            elif name in attrs and len(concepts) == 1 and concepts[0] is not None:
                allowed = self.lib.concept(concepts[0]).attributes
                if name not in allowed:
                    self.problems.append(
                        f"{where}.{section}.{name}: concept {concepts[0]} has no attribute "
                        f"{name!r}; it allows {', '.join(allowed) or 'none'}"
                    )
        self.event_words(spec, where, concepts)
        self.units(where, spec, attrs)
        self.constants(spec, where)

    def concepts(self, spec: EventSpec, where: str) -> list[str | None]:
        """The concepts the spec can make (one None entry: decided by the cells)."""
        named = [spec.concept, spec.constants.get("concept")]
        for target in spec.values.get("concept", {}).values():
            named.append(target.get("concept") if isinstance(target, dict) else target)
        for target in (t for words in spec.values.values() for t in words.values()):
            if isinstance(target, dict) and "concept" in target:
                named.append(target["concept"])
        for key in {str(n) for n in named if n is not None}:
            if not self.lib.has(key) and not self.lib.has(normalise_word(key)):
                self.problems.append(f"{where}: no concept {key!r} in the concept library")
        fixed = spec.fixed_concept()
        if fixed is not None and self.lib.has(fixed):
            return [fixed]
        return [None]

    def event_words(self, spec: EventSpec, where: str, concepts: list[str | None]) -> None:
        attrs = self.lib.data.attributes
        for name, words in spec.values.items():
            at = f"{where}.values.{name}"
            if name in attrs:
                self.attribute_words(at, words, attrs[name])
            elif name in ("value", "value_code") and concepts[0] is not None:
                value = self.lib.concept(concepts[0]).value
                if value.type in ("coded", "quantity_or_coded") and value.value_set:
                    allowed = self.lib.words(value.value_set)
                    if value.type == "coded":
                        self.problems += _word_problems(at, words, allowed, value.open)
            for source, target in words.items():
                if isinstance(target, dict):
                    self.problems += [
                        f"{at}.{source}.{k}: not an event field or attribute"
                        for k in target
                        if k not in EVENT_FIELDS and k not in attrs
                    ]

    def constants(self, spec: EventSpec, where: str) -> None:
        for name, value in spec.constants.items():
            if name.endswith("_window"):
                try:
                    window = parse_window(str(value))
                except ValueError as exc:
                    self.problems.append(f"{where}.constants.{name}: {exc}")
                    continue
                if window is not None and not self.lib.has(window[2]):
                    self.problems.append(f"{where}.constants.{name}: no concept {window[2]!r}")
            elif name.endswith("_anchor") and not self.lib.has(str(value)):
                self.problems.append(f"{where}.constants.{name}: no concept {value!r}")
        self.problems += assumption_problems(spec, where, self.mapping.anchor)


_ASSUMABLE_TIME = frozenset(WHEN_FIELDS)
_ASSUMABLE_VALUE = frozenset(("value", "text", "unit", "comparator", *CANONICAL_VALUE_FIELDS))
ASSUMABLE: frozenset[str] = _ASSUMABLE_TIME | _ASSUMABLE_VALUE
"""Fields whose constant supplies a time or a value of the event."""


def _from_cells(spec: EventSpec) -> set[str]:
    """Fields a row's cells set: mapped columns and the fields their words stand for."""
    found = set(spec.columns)
    for words in spec.values.values():
        for target in words.values():
            if isinstance(target, dict):
                found.update(target)
    return found


def _definitional(spec: EventSpec, anchor: str | None) -> bool:
    """The anchor concept's own event on its day 0: a time by definition, not assumed."""
    times = {k: v for k, v in spec.constants.items() if k in _ASSUMABLE_TIME}
    return (
        anchor is not None
        and spec.fixed_concept() == anchor
        and times.get("when_day") == 0
        and set(times) <= {"when_day", "when_anchor"}
        and times.get("when_anchor", anchor) == anchor
    )


def assumption_problems(spec: EventSpec, where: str, anchor: str | None) -> list[str]:
    """A constant time or value on a spec whose row states neither (the row only says that
    the event happened: a concept word such as 'x', or attributes) is an assumption: refused
    unless the spec says ``assumed: <reason>``."""
    supplied = [k for k in spec.constants if k in ASSUMABLE]
    if spec.assumed is not None and not supplied:
        return [f"{where}.assumed: no constant of this spec supplies a time or value"]
    if spec.assumed is not None or _from_cells(spec) & ASSUMABLE or _definitional(spec, anchor):
        return []
    return [
        f"{where}.constants.{name}: {spec.constants[name]!r} supplies a "
        f"{'time' if name in _ASSUMABLE_TIME else 'value'} the file does not state (its "
        "row only says that the event happened); map the column that holds it, or say why "
        "it is a fair assumption with `assumed: <reason>` on this spec (its events are then "
        "marked as assumed)"
        for name in supplied
    ]


def check_mapping(mapping: StudyMapping, library: ConceptLibrary) -> list[str]:
    """What is wrong with ``mapping`` given the concept library (key paths and reasons).
    Values of constants are checked again, typed, when a study file is read."""
    return _MappingChecker(mapping, library).run()


# -- YAML ------------------------------------------------------------------------------------


_Loader: Any = type("_Loader", (getattr(yaml, "CSafeLoader", yaml.SafeLoader),), {})
"""Safe YAML, but every mapping key is the text as written (``1: male`` maps the word '1',
``no: negative`` the word 'no', not a boolean) and a key given twice is an error. On libyaml's
parser where PyYAML was built with it, as ``read_yaml`` (about six times faster on a centre
mapping, read by every command and many times by the tests): the same documents, and errors
name the same file, line and column."""


def _construct_mapping(
    loader: yaml.constructor.SafeConstructor, node: yaml.MappingNode, deep: bool = False
) -> Any:
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


def dump_study_mapping(mapping: StudyMapping) -> str:
    """The mapping as YAML text that :func:`load_study_mapping` reads back unchanged."""
    data = mapping.model_dump(mode="json", exclude_defaults=True)
    data = {"centre": data.pop("centre"), **data}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def default_library(
    mapping: StudyMapping | None = None, library: Library | None = None
) -> ConceptLibrary:
    """The concept library of ``library`` (default: the shipped one) plus the mapping's own
    concepts. For reading and writing tables; FHIR mapping builds its own with the run's
    terminology (strict, as-of date)."""
    return (library or Library.default()).for_mapping(mapping)


def _beside(mapping: StudyMapping, folder: Path) -> StudyMapping:
    """The mapping with a relative ``study`` path resolved from its file's folder, not the
    current directory (a study *name* stays a name: mappings/studies)."""
    update = {}
    study = mapping.study
    if study is not None and names_a_file(study) and not Path(study).is_absolute():
        update["study"] = str(folder / study)
    if mapping.library is not None and not Path(mapping.library).is_absolute():
        update["library"] = str(folder / mapping.library)
    return mapping.model_copy(update=update) if update else mapping


def read_study_library(path: Path) -> StudyLibraryFile:
    """A study's own library file (errors name the file, key and line), published under its
    ``canonical``."""
    return load_model(path, StudyLibraryFile, "library file").published()


def load_study_mapping(path: Path, library: Library | None = None) -> StudyMapping:
    """Read and validate a centre mapping, also against the concept library of ``library``
    (default: the shipped one) plus the mapping's own concepts; errors name the file and the
    key."""
    try:
        with path.open(encoding="utf-8") as handle:
            raw = yaml.load(handle, Loader=_Loader)  # noqa: S506 - a SafeLoader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read mapping file {path}: {exc}") from exc
    mapping = _beside(validate_model(raw, StudyMapping, "mapping file", path), path.parent)
    if mapping.library is not None:
        own = Path(mapping.library)
        additions = load_model(own, StudyLibraryFile, "library file")
        try:
            mapping = mapping.with_additions(additions, str(own))
        except (ConfigError, ValidationError) as exc:
            reason = exc.message if isinstance(exc, ConfigError) else validation_reason(exc)
            raise ConfigError(f"mapping file {path} is invalid: library: {reason}") from exc
    try:
        problems = check_mapping(mapping, default_library(mapping, library))
    except ConfigError as exc:
        raise ConfigError(f"mapping file {path} is invalid: {exc.message}") from exc
    if problems:
        raise ConfigError(f"mapping file {path} is invalid: " + "; ".join(problems))
    return mapping
