"""The data dictionary of a package, in Markdown: each extension (value types, binding,
where it may stand), each code system and value set with its codes, and for the
vocabularies of mappings/terminology.yaml the source of every code and whether it was
verified in a published artefact."""

from __future__ import annotations

from fhir_cart.mappers.context import MappingContext
from fhir_cart.types import Json

__all__ = ["data_dictionary"]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _row(*cells: object) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _value(sd: Json) -> tuple[str, str]:
    """(value types or sub-extensions, binding) from the differential."""
    elements = {e["id"]: e for e in sd["differential"]["element"]}
    value = elements.get("Extension.value[x]", {})
    if value.get("max") == "0":
        parts = [e["sliceName"] for e in elements.values() if "sliceName" in e]
        return "complex: " + ", ".join(parts), ""
    types = ", ".join(t["code"] for t in value.get("type", ()))
    bounds = [value.get(f"{end}Value{s}") for end in ("min", "max") for s in ("Integer", "Decimal")]
    low, high = (
        next((b for b in pair if b is not None), None) for pair in (bounds[:2], bounds[2:])
    )
    if low is not None or high is not None:
        types += f" ({'' if low is None else low}..{'' if high is None else high})"
    binding = value.get("binding")
    return types, f"{binding['strength']} {binding['valueSet']}" if binding else ""


def _extensions(resources: list[Json]) -> list[str]:
    lines = [
        "## Extensions",
        "",
        _row("id (URL tail)", "title", "value", "binding", "context"),
        "|---|---|---|---|---|",
    ]
    for sd in resources:
        if sd["resourceType"] != "StructureDefinition":
            continue
        types, binding = _value(sd)
        context = "; ".join(c["expression"] for c in sd.get("context", ()))
        lines.append(_row(f"`{sd['id']}`", sd["title"], types, binding, context))
    return [*lines, ""]


def _code_systems(resources: list[Json]) -> list[str]:
    lines = ["## Code systems", ""]
    for cs in resources:
        if cs["resourceType"] != "CodeSystem":
            continue
        lines += [f"### {cs['title']} (`{cs['id']}`)", "", f"URL `{cs['url']}`.", ""]
        lines += [_row("code", "display", "definition"), "|---|---|---|"]
        lines += [
            _row(f"`{c['code']}`", c.get("display", ""), c.get("definition", ""))
            for c in cs["concept"]
        ]
        lines.append("")
    return lines


def _vocabulary_rows(ctx: MappingContext, group: str) -> list[str]:
    terms = ctx.terminology
    rows = [
        _row("word", "system", "code", "display", "source", "verified"),
        "|---|---|---|---|---|---|",
    ]
    for word, concept in terms.data.concepts[group].items():
        for c in concept.codings:
            code = f"`{c.code}`" + (" and children" if c.prefix else "")
            code += " (broader: never read as the word alone)" if c.broader else ""
            countries = f" ({', '.join(c.countries)})" if c.countries else ""
            rows.append(
                _row(
                    word,
                    terms.system(c.system) + countries,
                    code,
                    c.display,
                    c.source,
                    "yes" if c.verified else "**no**",
                )
            )
    return rows


def _compose_rows(vs: Json) -> list[str]:
    rows = [_row("system or value set", "codes"), "|---|---|"]
    for include in vs["compose"]["include"]:
        if "valueSet" in include:
            rows.append(_row("value set " + ", ".join(include["valueSet"]), "all"))
            continue
        codes = ", ".join(
            f"`{c['code']}` {c.get('display', '')}" for c in include.get("concept", ())
        )
        rows.append(_row(include["system"], codes or "all"))
    return rows


def _value_sets(ctx: MappingContext, resources: list[Json]) -> list[str]:
    groups = {g.replace("_", "-"): g for g in ctx.terminology.data.concepts}
    lines = ["## Value sets", ""]
    for vs in resources:
        if vs["resourceType"] != "ValueSet":
            continue
        lines += [f"### {vs['title']} (`{vs['id']}`)", "", vs["description"], ""]
        group = groups.get(vs["id"])
        lines += _vocabulary_rows(ctx, group) if group else _compose_rows(vs)
        lines.append("")
    return lines


def _concept_maps(resources: list[Json]) -> list[str]:
    lines = [
        "## Concept maps",
        "",
        _row("id", "title", "source value set", "target value set", "mappings"),
        "|---|---|---|---|---|",
    ]
    for cm in resources:
        if cm["resourceType"] == "ConceptMap":
            count = sum(len(g["element"]) for g in cm["group"])
            lines.append(
                _row(
                    f"`{cm['id']}`",
                    cm["title"],
                    cm["sourceCanonical"],
                    cm["targetCanonical"],
                    count,
                )
            )
    return [*lines, ""]


def data_dictionary(ctx: MappingContext, package_id: str, resources: list[Json]) -> bytes:
    """The Markdown page of one package (generated; do not edit)."""
    ig = next(r for r in resources if r["resourceType"] == "ImplementationGuide")
    depends = ", ".join(f"{d['packageId']} {d['version']}" for d in ig["dependsOn"])
    lines = [
        f"# Data dictionary: {ig['title']}",
        "",
        "Generated by `fhir-cart artefacts` from the concept library and the mapping files; "
        "do not edit. How a hospital loads this package and validates what it receives: "
        "[docs/fhir-model.md](../../docs/fhir-model.md#the-fhir-package).",
        "",
        f"- package `{package_id}` version {ig['version']}, {ig.get('date', '')}, FHIR R4 4.0.1",
        f"- canonical base `{ig['url'].rsplit('/ImplementationGuide/', 1)[0]}`",
        f"- depends on hl7.fhir.r4.core 4.0.1, {depends}",
        "",
        *_extensions(resources),
        *_code_systems(resources),
        *_value_sets(ctx, resources),
        *_concept_maps(resources),
    ]
    return ("\n".join(lines).rstrip() + "\n").encode()
