"""The concept library: which clinical concepts exist, how each becomes FHIR, and back.

Loaded from ``mappings/concepts.yaml`` (shared by every study) plus the concepts and
attributes a study's mapping file adds. Each concept names its FHIR target (``kind``: a
resource type or a Patient element), its standard codings (with source and verified flag),
its value type (units, value set) and the attributes it allows. Coded words and their
codings live in the terminology (``mappings/terminology.yaml``): a value set there is a
group of words. Nothing about any one study is in this module.

Kinds and their FHIR targets (docs/fhir-model.md):

=============  =====================================================================
condition      Condition; ``code`` is the value's coding (e.g. the diagnosis)
medication     MedicationAdministration (MedicationRequest read back too)
procedure      Procedure
observation    Observation
adverse_event  AdverseEvent
death          Patient.deceasedDateTime
follow_up      Patient extension ``last-follow-up``
=============  =====================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_cart.errors import ConfigError
from fhir_cart.library.folder import shipped_folder
from fhir_cart.library.terminology import Coding, Concept, Terminology, TerminologyFile
from fhir_cart.library.units import (
    StudyUnit,
    convert_unit,
    is_ucum,
    units_compatible,
    with_units,
)
from fhir_cart.library.words import with_words
from fhir_cart.library.yamlfile import load_model, read_yaml_text, validate_model

__all__ = [
    "KINDS",
    "AttributeDef",
    "ConceptDef",
    "ConceptLibrary",
    "ConceptsFile",
    "StudyLibraryFile",
    "ValueDef",
    "convert_unit",
    "is_ucum",
    "load_concepts",
    "units_compatible",
]

Kind = Literal[
    "condition", "medication", "procedure", "observation", "adverse_event", "death", "follow_up"
]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]
ValueType = Literal[
    "none", "quantity", "coded", "quantity_or_coded", "range", "boolean", "integer", "text"
]
AttributeType = Literal["coded", "integer", "number", "quantity", "text", "boolean", "date"]
FhirPlace = Literal[
    "extension", "method", "specimen", "component", "used_code", "interpretation", "reason"
]

_STRICT = ConfigDict(extra="forbid", frozen=True)
_KEY = r"^[a-z][a-z0-9_]*$"


class ValueDef(BaseModel):
    """What an event's value may be."""

    model_config = _STRICT

    type: ValueType = "none"
    units: tuple[str, ...] = ()
    """UCUM units accepted (the first is the canonical unit values are converted to, unless
    ``convert: false``); any unit compatible with one of them converts."""
    convert: bool = True
    """False keeps each value in the unit it was given (when it is one of ``units``)."""
    value_set: str | None = None
    """Terminology group holding the coded words."""
    open: bool = False
    """A word outside the value set is kept as text instead of rejecting the row."""
    min: float | None = None
    max: float | None = None
    interpretations: dict[str, str] = Field(default_factory=dict)
    """Word of the value set -> word of terminology group ``result_interpretation``: the
    R4 ObservationInterpretation coding written first when the word sits beside a number
    in ``Observation.interpretation`` (R4 binding: extensible)."""
    condition_status: dict[str, str] = Field(default_factory=dict)
    """Word of the value set -> word of ``condition_clinical``: the patient's latest event of
    this concept sets the cancer Condition's clinicalStatus (relapse, remission, active)."""

    @model_validator(mode="after")
    def _check(self) -> ValueDef:
        coded = self.type in ("coded", "quantity_or_coded")
        if coded and self.value_set is None:
            raise ValueError(f"a {self.type} value needs a value_set")
        if self.type in ("quantity", "range") and not self.units:
            raise ValueError(f"a {self.type} value needs units")
        return self


class AttributeDef(BaseModel):
    """An attribute an event (or a patient) may carry, and where it goes in FHIR."""

    model_config = _STRICT

    label: str
    synonyms: tuple[str, ...] = ()
    """Other words for it (abbreviations, other languages) that the mapping assistant
    recognises in a column header; never read as values."""
    type: AttributeType = "text"
    value_set: str | None = None
    open: bool = False
    units: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    fhir: FhirPlace = "extension"
    """Where the attribute goes: an extension (default, ``<extension_base>/<key>`` unless
    ``extension_url``), ``Observation.method``, a contained Specimen's type, an Observation
    ``component`` coded with ``codings``, ``Procedure.usedCode``,
    ``Observation.interpretation`` or ``reasonCode`` (MedicationAdministration, Procedure)."""
    extension_url: str | None = None
    codings: tuple[Coding, ...] = ()
    """The component's code (``fhir: component``)."""
    by_unit: dict[str, str] = Field(default_factory=dict)
    """Quantity only: a value in one of these units (not the first) is kept under the named
    attribute instead (a flat ``10*6`` cell dose in a ``10*6/kg`` column is ``cell_dose_flat``)."""

    @model_validator(mode="after")
    def _check(self) -> AttributeDef:
        if self.type == "coded" and self.value_set is None:
            raise ValueError("a coded attribute needs a value_set")
        if self.type == "quantity" and not self.units:
            raise ValueError("a quantity attribute needs units")
        if self.fhir == "component" and not self.codings:
            raise ValueError("an attribute written as a component needs codings")
        return self


class ConceptDef(BaseModel):
    """One concept: its FHIR target, codings, value and attributes."""

    model_config = _STRICT

    label: str
    synonyms: tuple[str, ...] = ()
    """Other words for it (``dx``, ``blina``, ``Diagnose``) that the mapping assistant
    (``fhir-cart mapping suggest``) recognises in column headers and cells; the study
    reader does not accept them as values unless a mapping's ``values`` lists them."""
    kind: Kind
    codings: tuple[Coding, ...] = ()
    """Standard codings (none: the concept is written with a local code and its label)."""
    category: str | None = None
    """Observation category word (terminology group ``observation_category``)."""
    value: ValueDef = Field(default_factory=ValueDef)
    attributes: tuple[str, ...] = ()
    profile: str | None = None
    """Key in ``mappings/profiles.yaml`` of the profile to claim."""


class ConceptsFile(BaseModel):
    """``mappings/concepts.yaml`` (and the ``concepts``/``attributes`` of a mapping file)."""

    model_config = _STRICT

    attributes: dict[str, AttributeDef] = Field(default_factory=dict)
    patient_attributes: dict[str, AttributeDef] = Field(default_factory=dict)
    concepts: dict[str, ConceptDef] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ConceptsFile:
        import re

        problems = [
            f"{where}: {key!r} is not a key (lower case letters, digits, _)"
            for where, keys in (
                ("attributes", self.attributes),
                ("patient_attributes", self.patient_attributes),
                ("concepts", self.concepts),
            )
            for key in keys
            if not re.match(_KEY, key)
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self


class StudyLibraryFile(ConceptsFile):
    """A study's own library file (the ``library:`` of a mapping, or ``--library FILE``):
    concepts and attributes as in ``mappings/concepts.yaml``, and where the study publishes
    them. With ``canonical``, its concepts without standard codings are coded in the study's
    own CodeSystem ``<canonical>/CodeSystem/<code_system>`` and its attributes are
    extensions ``<canonical>/StructureDefinition/<key>`` (``fhir-cart artefacts --mapping``
    publishes both); without it they share fhir_cart's (``case-series-local``, and the
    extension base of mappings/profiles.yaml)."""

    canonical: str | None = Field(default=None, pattern=r"^https?://\S+[^/]$")
    """The study's canonical base URL (no trailing slash)."""
    code_system: str = Field(default="concepts", pattern=r"^[a-z0-9][a-z0-9\-]*$", max_length=64)
    """Id of the study's CodeSystem (its URL's tail)."""
    units: dict[str, StudyUnit] = Field(default_factory=dict)
    """UCUM units added to the terminology's ``units`` (or synonyms for a shipped one):
    unit -> its display and the spellings a table writes for it (fhir_cart.library.units)."""
    value_sets: dict[str, dict[str, Concept]] = Field(default_factory=dict)
    """Words added to a vocabulary (terminology group) of mappings/terminology.yaml, or to a
    vocabulary of the study's own: vocabulary -> word -> its text and codings (with their
    sources), as terminology.yaml writes them; ``system: study`` is the study's CodeSystem
    (fhir_cart.library.words)."""

    @model_validator(mode="after")
    def _word_keys(self) -> StudyLibraryFile:
        import re

        bad = [
            f"value_sets.{group}{'' if word is None else '.' + word}: not a key "
            "(lower case letters, digits, _)"
            for group, words in self.value_sets.items()
            for word in (None, *words)
            if not re.match(_KEY, group if word is None else word)
        ]
        if bad:
            raise ValueError("; ".join(dict.fromkeys(bad)))
        return self

    @property
    def words_added(self) -> int:
        return sum(len(words) for words in self.value_sets.values())

    @property
    def system_url(self) -> str | None:
        """The URL of the study's CodeSystem (None without ``canonical``)."""
        if self.canonical is None:
            return None
        return f"{self.canonical}/CodeSystem/{self.code_system}"

    def extension_url(self, key: str) -> str | None:
        if self.canonical is None:
            return None
        return f"{self.canonical}/StructureDefinition/{key.replace('_', '-')}"

    def combined(self, other: StudyLibraryFile) -> StudyLibraryFile:
        """This file and ``other`` as one (the same key defined two different ways, or two
        canonicals, is refused; the same definition twice is one)."""
        twice = sorted(
            key
            for mine, theirs in (
                (self.concepts, other.concepts),
                (self.attributes, other.attributes),
                (self.patient_attributes, other.patient_attributes),
            )
            for key in {*mine} & {*theirs}
            if mine[key] != theirs[key]
        )
        twice += sorted(
            f"value_sets.{group}.{word}"
            for group, words in other.value_sets.items()
            for word, meaning in words.items()
            if self.value_sets.get(group, {}).get(word, meaning) != meaning
        )
        twice += sorted(
            f"units.{key}" for key, unit in other.units.items() if self.units.get(key, unit) != unit
        )
        if twice:
            raise ConfigError(
                f"{', '.join(twice)}: defined two different ways; keep one definition"
            )
        if None not in (self.canonical, other.canonical) and self.canonical != other.canonical:
            raise ConfigError(
                f"canonical {other.canonical!r} differs from {self.canonical!r}; "
                "a study publishes under one"
            )
        mine = self.canonical is not None
        return StudyLibraryFile(
            concepts={**self.concepts, **other.concepts},
            attributes={**self.attributes, **other.attributes},
            patient_attributes={**self.patient_attributes, **other.patient_attributes},
            value_sets={
                group: {**self.value_sets.get(group, {}), **other.value_sets.get(group, {})}
                for group in {**self.value_sets, **other.value_sets}
            },
            units={**self.units, **other.units},
            canonical=self.canonical if mine else other.canonical,
            code_system=self.code_system if mine else other.code_system,
        ).published()

    def published(self) -> StudyLibraryFile:
        """The file with each attribute's ``extension_url`` set under ``canonical`` (unless
        the attribute names its own)."""
        if self.canonical is None:
            return self

        def placed(group: dict[str, AttributeDef]) -> dict[str, AttributeDef]:
            return {
                k: a
                if a.extension_url is not None or a.fhir != "extension"
                else a.model_copy(update={"extension_url": self.extension_url(k)})
                for k, a in group.items()
            }

        return self.model_copy(
            update={
                "attributes": placed(self.attributes),
                "patient_attributes": placed(self.patient_attributes),
            }
        )


@dataclass
class ConceptLibrary:
    """The merged concept library with look-ups both ways. Build with :func:`load_concepts`."""

    data: ConceptsFile
    terminology: Terminology
    local_system: str
    own_systems: dict[str, str] = field(default_factory=dict)
    """Concept key -> the study's own CodeSystem its local code is in (a study library with
    ``canonical``); other concepts without standard codings use ``local_system``."""
    _by_kind: dict[str, list[str]] = field(default_factory=dict)
    _classified: dict[tuple[Any, ...], str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """:meth:`classify` per coding set and kinds (bounded: :data:`_CLASSIFIED_HELD`)."""

    def __post_init__(self) -> None:
        for key, concept in self.data.concepts.items():
            self._by_kind.setdefault(concept.kind, []).append(key)

    # -- what exists --------------------------------------------------------------------

    def concept(self, key: str) -> ConceptDef:
        try:
            return self.data.concepts[key]
        except KeyError:
            raise KeyError(f"unknown concept {key!r}") from None

    def has(self, key: str) -> bool:
        return key in self.data.concepts

    def keys(self, kind: str | None = None) -> list[str]:
        return list(self.data.concepts) if kind is None else list(self._by_kind.get(kind, ()))

    def attribute(self, key: str) -> AttributeDef:
        found = self.data.attributes.get(key) or self.data.patient_attributes.get(key)
        if found is None:
            raise KeyError(f"unknown attribute {key!r}")
        return found

    def words(self, value_set: str) -> tuple[str, ...]:
        return tuple(self.terminology.data.concepts.get(value_set, {}))

    # -- to FHIR ------------------------------------------------------------------------

    def codeable(self, key: str) -> dict[str, Any]:
        """The CodeableConcept of a concept (its standard codings, or its local code)."""
        concept = self.concept(key)
        if concept.codings:
            return self.terminology.concept("concept", key)
        system = self.own_systems.get(key, self.local_system)
        coding = {"system": system, "code": key, "display": concept.label}
        return {"text": concept.label, "coding": [coding]}

    def attribute_codeable(self, key: str) -> dict[str, Any]:
        return self.terminology.concept("attribute", key)

    # -- from FHIR ----------------------------------------------------------------------

    def classify(self, codeable: Mapping[str, Any] | None, kinds: Sequence[str]) -> str | None:
        """The concept of one of ``kinds`` that a CodeableConcept stands for (None: unknown).
        The local code decides first, then the standard codings (:meth:`Terminology.word`:
        AmbiguousCode when two concepts fit equally); the text only when there is no coding
        at all and the terminology's ``read_text`` is on."""
        if not codeable:
            return None
        key = _classify_key(codeable, kinds, self.terminology.read_text)
        if key is None:
            return self._classify(codeable, kinds)
        try:
            return self._classified[key]
        except KeyError:
            pass
        found = self._classify(codeable, kinds)  # AmbiguousCode: raised, not remembered
        if len(self._classified) >= _CLASSIFIED_HELD:
            self._classified.clear()
        self._classified[key] = found
        return found

    def _classify(self, codeable: Mapping[str, Any], kinds: Sequence[str]) -> str | None:
        for coding in codeable.get("coding", ()):
            key = coding.get("code")
            if not isinstance(key, str):
                continue
            system = coding.get("system")
            ours = system == self.local_system or system == self.own_systems.get(key)
            if ours and self.has(key) and self.concept(key).kind in kinds:
                return key
        word = self.terminology.word("concept", codeable)
        if word is not None and self.concept(word).kind in kinds:
            return word
        return None

    def classify_attribute(self, codeable: Mapping[str, Any] | None) -> str | None:
        return self.terminology.word("attribute", codeable)


_CLASSIFIED_HELD = 50_000
"""At most this many coding sets remembered by :meth:`ConceptLibrary.classify` (then it
starts again): memory stays bounded whatever the input."""


def _classify_key(
    codeable: Mapping[str, Any], kinds: Sequence[str], read_text: bool
) -> tuple[Any, ...] | None:
    """All that :meth:`ConceptLibrary.classify` reads of ``codeable``: its codings' (system,
    code) pairs in order, and its text when it has no coding (with ``read_text``, which
    decides whether the text is read); None when anything is not of the plain shape (a
    malformed coding is classified afresh each time, with the error it gives)."""
    codings = codeable.get("coding", ())
    if type(kinds) is not tuple or type(codings) not in (list, tuple):
        return None
    pairs: list[Any] = [kinds]
    for coding in codings:
        if type(coding) is not dict:
            return None
        system, code = coding.get("system"), coding.get("code")
        if not ((system is None or type(system) is str) and (code is None or type(code) is str)):
            return None
        pairs.append((system, code))
    if len(pairs) == 1:
        text = codeable.get("text")
        if not (text is None or type(text) is str):
            return None
        pairs += ["#text", text, read_text]
    return tuple(pairs)


def _concept_group(data: ConceptsFile) -> dict[str, Concept]:
    return {
        k: Concept(text=c.label, codings=c.codings) for k, c in data.concepts.items() if c.codings
    }


def _attribute_group(data: ConceptsFile) -> dict[str, Concept]:
    return {
        k: Concept(text=a.label, codings=a.codings) for k, a in data.attributes.items() if a.codings
    }


def merge_concepts(base: ConceptsFile, extra: ConceptsFile | None) -> ConceptsFile:
    """The library with a study's own concepts and attributes added (a study may not
    redefine a shared one: that would change what other studies' data means)."""
    if extra is None:
        return base
    clashes = [
        f"{where}.{key}"
        for where, mine, theirs in (
            ("concepts", base.concepts, extra.concepts),
            ("attributes", base.attributes, extra.attributes),
            ("patient_attributes", base.patient_attributes, extra.patient_attributes),
        )
        for key in theirs
        if key in mine
    ]
    if clashes:
        raise ConfigError(
            f"{', '.join(clashes)}: already defined in the shared concept library; "
            "use it as it is, or give the study's own concept another key"
        )
    return ConceptsFile(
        attributes={**base.attributes, **extra.attributes},
        patient_attributes={**base.patient_attributes, **extra.patient_attributes},
        concepts={**base.concepts, **extra.concepts},
    )


def library_problems(data: ConceptsFile, terms: TerminologyFile) -> list[str]:
    """Cross-references that must hold: value sets exist, attributes exist, codings' systems
    are known."""
    found: list[str] = []
    systems = terms.systems
    groups = terms.concepts

    def value_set(where: str, name: str | None) -> None:
        if name is not None and name not in groups:
            found.append(f"{where}.value_set: no terminology group {name!r}")

    for key, attr in {**data.attributes, **data.patient_attributes}.items():
        value_set(f"attributes.{key}", attr.value_set)
        found += [
            f"attributes.{key}.codings: unknown system {c.system!r}"
            for c in attr.codings
            if c.system not in systems
        ]
    for key, concept in data.concepts.items():
        value_set(f"concepts.{key}.value", concept.value.value_set)
        found += [
            f"concepts.{key}.attributes: no attribute {a!r}"
            for a in concept.attributes
            if a not in data.attributes
        ]
        found += [
            f"concepts.{key}.codings: unknown system {c.system!r}"
            for c in concept.codings
            if c.system not in systems
        ]
    return found


def read_concepts_file(path: Path) -> ConceptsFile:
    """``path`` as a checked :class:`ConceptsFile`, parsed and checked once per path and
    content in a process: the model is frozen and never changed, so one object is shared
    (every application, mapping context and CLI command read ``concepts.yaml`` again)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return load_model(path, ConceptsFile, "concept library")  # its error, as before
    return _concepts_file(path, text)


@lru_cache(maxsize=16)
def _concepts_file(path: Path, text: str) -> ConceptsFile:
    raw = read_yaml_text(text, path, "concept library")
    return validate_model(raw, ConceptsFile, "concept library", path)


def build_library(
    data: ConceptsFile,
    terminology: Terminology,
    *,
    where: str = "concept library",
    own_systems: dict[str, str] | None = None,
) -> ConceptLibrary:
    problems = library_problems(data, terminology.data)
    if problems:
        raise ConfigError(f"{where} is invalid: " + "; ".join(problems))
    groups = dict(terminology.data.concepts)
    groups["concept"] = _concept_group(data)
    groups["attribute"] = _attribute_group(data)
    merged = terminology.data.model_copy(update={"concepts": groups})
    terms = Terminology(
        merged, strict=terminology.strict, as_of=terminology.as_of, country=terminology.country
    )
    terms.unverified_used = terminology.unverified_used
    terms.read_text = terminology.read_text
    local = terminology.own_system.rstrip("/") + "-local"
    return ConceptLibrary(
        data=data, terminology=terms, local_system=local, own_systems=own_systems or {}
    )


def load_concepts(
    terminology: Terminology,
    path: Path | None = None,
    extra: ConceptsFile | None = None,
) -> ConceptLibrary:
    """The shared library (``mappings/concepts.yaml``) plus a study's own concepts (and the
    words its library file adds to the terminology, checked by the caller:
    :meth:`fhir_cart.library.Library.concepts`)."""
    data = read_concepts_file(path or shipped_folder() / "concepts.yaml")
    if isinstance(extra, StudyLibraryFile) and extra.value_sets:
        terminology = with_words(terminology, extra.value_sets, extra.system_url)
    if isinstance(extra, StudyLibraryFile) and extra.units:
        terminology = with_units(terminology, extra.units)
    return build_library(merge_concepts(data, extra), terminology, own_systems=own_systems(extra))


def own_systems(extra: ConceptsFile | None) -> dict[str, str]:
    """Concept key -> the study's own CodeSystem, for a study library with ``canonical``."""
    if not isinstance(extra, StudyLibraryFile) or extra.system_url is None:
        return {}
    return {key: extra.system_url for key, c in extra.concepts.items() if not c.codings}
