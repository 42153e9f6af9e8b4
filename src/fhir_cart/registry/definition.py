"""The registry definition file (``registry.yaml``): what a registry pools and how.

Reference and a worked example: ``docs/registry.md``. The file names the registry's study
definition (concepts and summary measures of the open model), its centres (each with its
mapping file and data location, and its roles such as ``referring`` or ``treating``), the
linkage keys, the pseudonymisation settings and the per-field conflict rules.

The pseudonymisation *key* is never part of this file (nor of any output): it comes from
settings (``registry_key``) or the environment (``FHIR_CART_REGISTRY_KEY``).
"""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_cart.errors import ConfigError
from fhir_cart.library.yamlfile import read_yaml, validate_model

__all__ = [
    "CentreDef",
    "ConflictRule",
    "ConflictsDef",
    "LinkageDef",
    "OutputsDef",
    "PseudonymisationDef",
    "RegistryDef",
    "load_registry",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)
_CENTRE = r"^[a-z0-9][a-z0-9\-]*$"
_KEY = r"^[a-z][a-z0-9_]*$"
_SECRET_WORDS = ("key", "secret", "salt", "password")

DEFAULT_DATES: dict[str, str] = {
    "diagnosis_date": "diagnosis",
    "infusion_date": "cart_infusion",
    "transplant_date": "hsct",
}


class CentreDef(BaseModel):
    """One contributing centre."""

    model_config = _STRICT

    id: str = Field(pattern=_CENTRE, max_length=32)
    """The centre's key; the same as ``centre:`` in its mapping file."""
    mapping: Path | None = None
    """Its mapping file (spec §2), relative to the registry file."""
    data: Path | None = None
    """Its study file or folder (XLSX, CSV, folder of CSVs), relative to the registry file."""
    extract: Path | None = None
    """Instead of ``data`` and ``mapping``: the extract the centre made and sent
    (``fhir-cart registry extract``), relative to the registry file."""
    name: str | None = None
    roles: tuple[str, ...] = ()
    """Words the conflict rules can name, e.g. ``referring`` or ``treating``."""

    @model_validator(mode="after")
    def _source(self) -> CentreDef:
        if self.extract is None and (self.data is None or self.mapping is None):
            raise ValueError(f"centre {self.id}: give its data and mapping, or the extract it sent")
        if self.extract is not None and self.data is not None:
            raise ValueError(
                f"centre {self.id}: give its data (with mapping) or its extract, not both"
            )
        return self


class LinkageDef(BaseModel):
    """How patients are linked across centres."""

    model_config = _STRICT

    identifiers: tuple[str, ...] = ()
    """Shared identifiers compared as pseudonyms (deterministic linkage): patient attribute
    keys, or ``study_id`` when centres share the trial number."""
    names: tuple[str, ...] = ()
    """Patient attributes holding names (given, family, birth name), each compared in keyed
    form: its normalised spelling and its sound. Never written to any output."""
    birth: bool = True
    """Birth year and month (from the birth date) as quasi-identifiers."""
    sex: bool = True
    dates: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_DATES))
    """Quasi-identifier name -> concept whose first dated event gives it."""
    probabilistic: bool = True
    threshold: float = Field(default=0.95, gt=0, lt=1)
    """Lowest match probability that links two records."""
    review: float | None = Field(default=None, gt=0, lt=1)
    """Lowest match probability a pair is listed for people to decide
    (``reports/review.csv``): pairs from ``review`` up to below ``threshold``."""
    contradiction: float = Field(default=0.05, ge=0, lt=1)
    """An identifier link goes to review instead of merging when the other fields alone,
    from even odds, give the pair a match probability below this (0: never)."""
    decisions: Path = Path("decisions.csv")
    """Must-link and cannot-link decisions, relative to the registry file."""
    backend: Literal["duckdb", "spark"] = "duckdb"
    train: Literal["auto", "always", "never"] = "auto"
    """Estimate the model from the data (``auto``: when there are enough records) or use the
    built-in prior parameters."""
    min_records_to_train: int = Field(default=2000, ge=10)
    seed: int = 20261125

    @model_validator(mode="after")
    def _check(self) -> LinkageDef:
        bad = [name for name in (*self.dates, *self.names) if not re.match(_KEY, name)]
        if bad:
            raise ValueError(f"dates, names: {', '.join(bad)} are not keys (a-z, 0-9, _)")
        if self.review is not None and self.review >= self.threshold:
            raise ValueError(
                f"review: {self.review} is not below threshold {self.threshold} (pairs from "
                "review up to threshold are listed for review)"
            )
        return self


class PseudonymisationDef(BaseModel):
    """What leaves the registry holder's hands, and in which form."""

    model_config = _STRICT

    dates: Literal["relative", "shift"] = "relative"
    """``relative``: every date becomes days relative to the patient's ``anchor`` event;
    ``shift``: every date moves by a keyed, per-patient offset."""
    anchor: str = Field(default="diagnosis", pattern=_KEY)
    max_shift_days: int = Field(default=180, ge=1, le=3650)
    drop_patient_attributes: tuple[str, ...] = ()
    """Direct identifiers to drop (the linkage identifiers are always dropped)."""
    keep_text: tuple[str, ...] = ()
    """Text attributes to keep; every other free-text attribute and text value is dropped."""


class ConflictRule(BaseModel):
    """Which centre is the source of truth for one field."""

    model_config = _STRICT

    field: str
    """``sex``, ``birth_date``, ``attributes.<key>`` (patient attribute) or a concept key."""
    prefer: tuple[str, ...]
    """Roles or centre ids, most trusted first; centres not named follow in default order."""

    @model_validator(mode="before")
    @classmethod
    def _one(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("prefer"), str):
            data = {**data, "prefer": [data["prefer"]]}
        return data


class ConflictsDef(BaseModel):
    model_config = _STRICT

    default: tuple[str, ...] = ()
    """Centre order when no rule names a field (default: the order of ``centres``)."""
    rules: tuple[ConflictRule, ...] = ()
    single: tuple[str, ...] = ()
    """Concepts a patient has once (taken from one centre) besides those the rules name."""


class OutputsDef(BaseModel):
    model_config = _STRICT

    formats: tuple[Literal["parquet", "csv", "xlsx"], ...] = ("parquet",)


class FhirDef(BaseModel):
    model_config = _STRICT

    identifier_base: str = "https://fhir-cart.example.org/registry"


class RegistryDef(BaseModel):
    """A registry file, validated. Paths are resolved against the file's folder."""

    model_config = _STRICT

    name: str = Field(min_length=1)
    id: str = Field(default="registry", pattern=_CENTRE, max_length=32)
    """The registry's own key: the ``centre`` of its pooled records."""
    study: str | None = None
    """Study definition (name in mappings/studies or a path) whose summaries are written."""
    library: tuple[Path, ...] = ()
    """Library files (relative to the registry file) overlaid on the shipped library for the
    pooled registry, as a mapping's ``library:`` is for one study; the concepts the centres'
    mappings add are known too."""
    centres: tuple[CentreDef, ...] = Field(min_length=1)
    linkage: LinkageDef = Field(default_factory=LinkageDef)
    pseudonymisation: PseudonymisationDef = Field(default_factory=PseudonymisationDef)
    conflicts: ConflictsDef = Field(default_factory=ConflictsDef)
    outputs: OutputsDef = Field(default_factory=OutputsDef)
    fhir: FhirDef = Field(default_factory=FhirDef)
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _check(self) -> RegistryDef:
        ids = [c.id for c in self.centres]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"centres: {', '.join(dupes)} listed more than once")
        unknown = [c for c in self.conflicts.default if c not in ids]
        if unknown:
            raise ValueError(f"conflicts.default: unknown centres {', '.join(unknown)}")
        names = set(ids) | {role for c in self.centres for role in c.roles}
        for n, rule in enumerate(self.conflicts.rules):
            missing = [p for p in rule.prefer if p not in names]
            if missing:
                raise ValueError(
                    f"conflicts.rules.{n}.prefer: {', '.join(missing)} is neither a centre "
                    "nor a role of one"
                )
        return self

    def centre(self, centre_id: str) -> CentreDef:
        for centre in self.centres:
            if centre.id == centre_id:
                return centre
        raise KeyError(centre_id)

    def centre_order(self) -> list[str]:
        """Default trust order: ``conflicts.default`` first, then the remaining centres."""
        listed = list(self.conflicts.default)
        return listed + [c.id for c in self.centres if c.id not in listed]

    @cached_property
    def preferences(self) -> dict[str, tuple[tuple[str, ...], str]]:
        """Fields asked so far -> :meth:`preference` (the merge asks for every patient)."""
        return {}

    def preference(self, field: str) -> tuple[list[str], str]:
        """Centres in the order trusted for ``field``, and the rule's description."""
        known = self.preferences.get(field)
        if known is None:
            order, rule = self._preference(field)
            known = self.preferences[field] = (tuple(order), rule)
        return list(known[0]), known[1]

    def _preference(self, field: str) -> tuple[list[str], str]:
        order = self.centre_order()
        for rule in self.conflicts.rules:
            if rule.field == field:
                first: list[str] = []
                for name in rule.prefer:
                    first += [c for c in order if c not in first and self._named(c, name)]
                return first + [c for c in order if c not in first], (
                    "prefer " + ", ".join(rule.prefer)
                )
        return order, "default order " + ", ".join(order)

    def _named(self, centre_id: str, name: str) -> bool:
        return centre_id == name or name in self.centre(centre_id).roles

    def single_concepts(self) -> set[str]:
        fields = {rule.field for rule in self.conflicts.rules}
        return {f for f in fields if re.match(_KEY, f) and f not in ("sex", "birth_date")} | set(
            self.conflicts.single
        )

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path)

    def fingerprint(self) -> str:
        """A hash of the definition (without its location), to notice a changed file."""
        data = self.model_dump(mode="json", exclude={"base_dir"})
        return hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()


def _secrets(raw: Any, where: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            path = f"{where}.{key}" if where else str(key)
            if any(word in str(key).lower() for word in _SECRET_WORDS) and key != "keep_text":
                found.append(path)
            found += _secrets(value, path)
    elif isinstance(raw, list):
        for n, value in enumerate(raw):
            found += _secrets(value, f"{where}.{n}")
    return found


def load_registry(path: Path) -> RegistryDef:
    """Read and check a registry file (ConfigError naming the key path when it is wrong)."""
    raw = read_yaml(path, "registry file")
    if not isinstance(raw, dict):
        raise ConfigError(f"registry file {path} is not a mapping of keys")
    secrets = _secrets(raw)
    if secrets:
        raise ConfigError(
            f"registry file {path}: {', '.join(secrets)}: a key never goes in the registry "
            "file; set FHIR_CART_REGISTRY_KEY (or registry_key in settings) instead"
        )
    extra = {"base_dir": path.resolve().parent}
    return validate_model(raw, RegistryDef, "registry file", path, extra=extra)
