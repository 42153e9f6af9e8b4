"""Units a study's own library file (or its mapping) adds to the terminology (its
``units:``): a UCUM unit with the display FHIR writes beside it, and the spellings a
spreadsheet writes for it (``synonyms``, read as that unit in cells and in a mapping's
column ``units``), or only synonyms for a shipped unit (mappings/terminology.yaml
``units``). A value in an added unit converts to the concept's or attribute's unit as any
UCUM unit does (ucumvert): ``10*9/L`` to ``10*3/uL``; one that measures something else is
refused as before.

:func:`unit_problems` says what is refused (a key that is not UCUM, a new unit without
``display``, a shipped unit given another display, a synonym given to two units);
:func:`unit_warnings` what is allowed but worth saying (a synonym that is itself another
UCUM unit); :func:`with_units` gives the terminology with the units added.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fhir_cart.library.terminology import Terminology, TerminologyFile, Unit

__all__ = [
    "StudyUnit",
    "convert_unit",
    "is_ucum",
    "unit_problems",
    "unit_synonyms",
    "unit_text",
    "unit_warnings",
    "units_compatible",
    "units_data",
    "with_units",
]

_UNIT_TEXT = str.maketrans({"²": "2", "³": "3", "µ": "u", "μ": "u", "×": "x"})


# -- UCUM (ucumvert) -------------------------------------------------------------------------


@cache
def _ureg() -> Any:
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


@cache
def _ucum(unit: str) -> Any:
    try:
        return _ureg().from_ucum(unit)
    except Exception as exc:  # ucumvert raises lark and pint errors alike
        raise ValueError(f"{unit!r} is not a UCUM unit") from exc


@cache
def _factor(source: str, target: str) -> float:
    if source == target:
        return 1.0
    try:
        return float((1 * _ucum(source)).to(_ucum(target)).magnitude)
    except ValueError:
        raise
    except Exception as exc:  # pint's DimensionalityError
        raise ValueError(f"{source!r} cannot be converted to {target!r}") from exc


def convert_unit(number: float, source: str, target: str) -> float:
    """``number`` in UCUM ``source`` expressed in UCUM ``target`` (ValueError when either is
    not UCUM or they measure different things). Rounded to 12 significant digits so that
    1.5 g/m2 is 1500 mg/m2, not 1499.9999999999998."""
    value = number * _factor(source, target)
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, 11 - math.floor(math.log10(abs(value))))


def is_ucum(unit: str) -> bool:
    """Whether ``unit`` is a UCUM unit (``mg/m2``, ``10*6/kg``, ``%``)."""
    try:
        _ucum(unit)
    except ValueError:
        return False
    return True


def units_compatible(source: str, target: str) -> bool:
    try:
        _factor(source, target)
    except ValueError:
        return False
    return True


# -- a study's units --------------------------------------------------------------------------


class StudyUnit(BaseModel):
    """One unit of a study's ``units:`` (the key is its UCUM code)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    display: str | None = Field(default=None, min_length=1)
    """How FHIR's Quantity.unit shows it (needed for a unit the shipped library lacks)."""
    synonyms: tuple[str, ...] = ()
    """Spellings a table writes for it (``G/L``, ``Mio/kg``), read as this unit."""


def unit_text(text: str) -> str:
    """A unit as written, in the spelling cells are compared in: superscripts and micro
    signs as UCUM writes them, spaces dropped, ``x10^`` as ``10*`` (as
    :func:`fhir_cart.study.values.parse_quantity` reads a cell's unit)."""
    import re

    unit = "".join(text.translate(_UNIT_TEXT).split())
    unit = re.sub(r"^x(?=10)", "", unit)
    return unit.replace("10^", "10*")


def unit_synonyms(data: TerminologyFile) -> dict[str, str]:
    """Each synonym of the terminology's units (as :func:`unit_text` spells it) -> its unit."""
    return {unit_text(s): key for key, unit in data.units.items() for s in unit.synonyms}


def unit_problems(units: Mapping[str, StudyUnit], shipped: TerminologyFile) -> list[str]:
    found: list[str] = []
    claimed = unit_synonyms(shipped)
    for key, unit in units.items():
        where = f"units.{key}"
        if not is_ucum(key):
            found.append(
                f"{where}: {key!r} is not a UCUM unit; the key is the unit's UCUM code "
                "(https://ucum.org, e.g. '10*9/L'), the spelling a table writes goes under "
                f"its `synonyms` (e.g. '10*9/L': {{display: ..., synonyms: [{key}]}})"
            )
        old = shipped.units.get(key)
        if old is None and unit.display is None:
            found.append(f"{where}: a unit the shipped library lacks needs `display:`")
        if old is not None and unit.display not in (None, old.display):
            found.append(
                f"{where}: a shipped unit, shown as {old.display!r}; give it only "
                "`synonyms:` (its display is the shipped one)"
            )
        for synonym in unit.synonyms:
            spelt = unit_text(synonym)
            other = claimed.get(spelt)
            if not spelt:
                found.append(f"{where}.synonyms: an empty synonym")
            elif spelt == key:
                found.append(f"{where}.synonyms: {synonym!r} is the unit itself")
            elif other is not None and other != key:
                found.append(
                    f"{where}.synonyms: {synonym!r} is already a synonym of {other!r}; a "
                    "spelling stands for one unit"
                )
            claimed[spelt] = key
    return found


def unit_warnings(units: Mapping[str, StudyUnit]) -> list[str]:
    """A synonym that is itself a UCUM unit: cells written so are read as the study's unit,
    not as what UCUM says (``G/L`` is gauss per litre in UCUM)."""
    return [
        f"units.{key}.synonyms: {synonym!r} is itself a UCUM unit; cells written "
        f"{synonym!r} are read as {key!r}"
        for key, unit in units.items()
        for synonym in unit.synonyms
        if unit_text(synonym) != key and is_ucum(unit_text(synonym))
    ]


def units_data(data: TerminologyFile, units: Mapping[str, StudyUnit]) -> TerminologyFile:
    """``data`` with the units added (check :func:`unit_problems` first)."""
    if not units:
        return data
    merged = dict(data.units)
    for key, unit in units.items():
        old = merged.get(key)
        if old is None:
            merged[key] = Unit(code=key, display=unit.display or key, synonyms=unit.synonyms)
        else:
            merged[key] = old.model_copy(update={"synonyms": (*old.synonyms, *unit.synonyms)})
    return data.model_copy(update={"units": merged})


def with_units(terminology: Terminology, units: Mapping[str, StudyUnit]) -> Terminology:
    """A terminology like ``terminology`` with the units added."""
    if not units:
        return terminology
    return terminology.over(units_data(terminology.data, units))
