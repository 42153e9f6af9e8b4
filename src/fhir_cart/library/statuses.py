"""What a pull does with a resource's status: ``mappings/statuses.yaml`` and its look-up.

Per resource type and status element, every code of the R4 value set is ``keep`` (an event),
``flag`` (an event whose ``status`` column shows the code) or ``exclude`` (no event: listed in
``ReverseResult.excluded`` with the reason). The table is data; this module only reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from fhir_cart.errors import ConfigError
from fhir_cart.library.folder import shipped_folder
from fhir_cart.library.yamlfile import load_model

__all__ = ["StatusTable", "StatusVerdict", "load_statuses"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class _Exclude(BaseModel):
    model_config = _STRICT

    exclude: str = Field(min_length=1)


class _Element(BaseModel):
    model_config = _STRICT

    source: str = Field(pattern=r"^http://hl7\.org/fhir/R4/")
    coded: bool = False
    system: str | None = None
    codes: dict[str, Literal["keep", "flag"] | _Exclude] = Field(min_length=1)


class _File(RootModel[dict[str, dict[str, _Element]]]):
    pass


@dataclass(frozen=True, slots=True)
class StatusVerdict:
    """What one resource's statuses say: ``excluded`` (the reason) wins over ``flags``."""

    flags: tuple[str, ...] = ()
    excluded: str | None = None
    unknown: str | None = None
    """A status that is no code of its value set (the resource is kept as an ``other`` row)."""


_NOTHING_SAID = StatusVerdict()
"""The verdict of most resources (one, frozen, rather than one made per resource)."""


@dataclass(frozen=True)
class StatusTable:
    elements: Mapping[str, Mapping[str, _Element]]

    def written(self, resource_type: str, element: str, flags: str | None) -> str | None:
        """The first of an event's status flags (``; ``-separated) that is a kept or flagged
        code of ``element`` of ``resource_type``: what a push writes back, so that a pulled
        ``preliminary`` is not pushed as ``final`` (None: write the plain status)."""
        found = self.elements.get(resource_type, {}).get(element)
        if found is None or not flags:
            return None
        for flag in flags.split("; "):
            rule = found.codes.get(flag)
            if rule is not None and not isinstance(rule, _Exclude):
                return flag
        return None

    def verdict(self, resource: Mapping[str, Any]) -> StatusVerdict:
        """Flags, exclusion or an unknown status of ``resource`` (types not in the table:
        nothing to say)."""
        flags: list[str] = []
        rtype = str(resource.get("resourceType"))
        for name, element in self.elements.get(rtype, {}).items():
            code = _code(resource.get(name), element)
            if code is None:
                continue
            rule = element.codes.get(code)
            if rule is None:
                known = ", ".join(element.codes)
                return StatusVerdict(
                    unknown=f"{name} {code!r} is not a code of {element.source} ({known})"
                )
            if isinstance(rule, _Exclude):
                return StatusVerdict(excluded=f"{name} {code}: {rule.exclude}")
            if rule == "flag":
                flags.append(code)
        return StatusVerdict(flags=tuple(flags)) if flags else _NOTHING_SAID


def _code(value: Any, element: _Element) -> str | None:
    if not element.coded:
        return value if isinstance(value, str) else None
    codings = value.get("coding") if isinstance(value, dict) else None
    for coding in codings if isinstance(codings, list) else ():
        if isinstance(coding, dict) and coding.get("system") == element.system:
            code = coding.get("code")
            return code if isinstance(code, str) else None
    return None


def load_statuses(path: Path | None = None) -> StatusTable:
    """The status table (default ``<mappings>/statuses.yaml``)."""
    return _load(path or shipped_folder() / "statuses.yaml")


@cache
def _load(path: Path) -> StatusTable:
    data = load_model(path, _File, "status table")
    for rtype, elements in data.root.items():
        for name, element in elements.items():
            if element.coded and element.system is None:
                raise ConfigError(
                    f"status table {path}: {rtype}.{name} is coded but names no system"
                )
    return StatusTable(data.root)
