"""The project's conformance artefacts as FHIR R4 resources, generated from the mapping data
(mappings/*.yaml) and checked in under api/fhir/:

- a StructureDefinition for every extension fhir_cart emits under its extension base (the
  time, value and provenance extensions of docs/fhir-model.md, one per attribute of the
  concept library and of each centre mapping, and the Patient events ``last-follow-up`` and
  ``death``);
- the own CodeSystem, with a definition for every code;
- a ValueSet for every vocabulary (terminology group) of mappings/terminology.yaml;
- a ConceptMap per centre mapping file: the centre's local words -> the standard codes of the
  canonical words they map to.

``fhir-cart artefacts`` writes them; a test checks the checked-in files equal the output.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_cart.library.concepts import AttributeDef, ConceptLibrary
from fhir_cart.library.study_mapping import StudyMapping, normalise_word
from fhir_cart.library.terminology import Coding
from fhir_cart.mappers.context import MappingContext, mapping_context
from fhir_cart.types import Json

__all__ = ["Artefact", "build_artefacts", "extension_urls", "load_centres", "own_code_system"]

CANONICAL = "https://fhir-cart.dev/fhir"
VERSION = "0.2.0"
PUBLISHER = "fhir_cart"
_EXT_TYPES = {
    "coded": ["CodeableConcept"],
    "integer": ["integer"],
    "number": ["decimal"],
    "quantity": ["Quantity"],
    "text": ["string"],
    "boolean": ["boolean"],
    "date": ["date"],
}
_TIME_PARTS: list[tuple[str, list[str], str]] = [
    ("day", ["integer"], "Day relative to the anchor (the anchor's first event is day 0)"),
    ("earliest-day", ["integer"], "Earliest relative day of a window"),
    ("latest-day", ["integer"], "Latest relative day of a window"),
    ("anchor", ["CodeableConcept"], "The anchor concept (its codings, from the library)"),
]
# Extensions the mappers write besides the attributes: name -> (value types, description);
# an empty type list is a complex extension (sub-extensions in _COMPLEX).
_STRUCTURAL: dict[str, tuple[list[str], str]] = {
    "relative-day": ([], "A time relative to an anchor concept, on the element holding the "
                     "date (FHIR JSON primitive extension); day or window and the anchor."),
    "end": ([], "End of an event where the resource has no element for it (AdverseEvent, "
            "Patient events): a date and/or a relative day."),
    "value": (["Quantity", "Range", "boolean", "string", "integer"],
              "The event's value on resources with no value element (Procedure, AdverseEvent, "
              "MedicationAdministration with a comparator)."),
    "value-code": (["CodeableConcept"], "A coded value beside (or instead of) the value."),
    "source-text": (["string"], "The source's own words for the event (e.g. 'low pos')."),
    "origin": (["string"], "Resource type the event was pulled from (e.g. MedicationRequest)."),
    "assumed": (["string"], "Why the mapping supplied a time or value the source does not "
                "state (its `assumed:` reason): the element it set is an assumption."),
    "event-id": (["string"], "The event's stable id where the resource has no identifier."),
}  # fmt: skip
_PATIENT_EVENTS = {
    "last-follow-up": "Last follow-up of the patient: a date and/or a relative day.",
    "death": "A second death event of one patient (a data problem kept beside deceased[x]).",
}


@dataclass(frozen=True)
class Artefact:
    filename: str
    resource: Json


def _attribute_defs(library: ConceptLibrary, mappings: Iterable[StudyMapping]) -> dict[str, Any]:
    out: dict[str, AttributeDef] = {}
    for source in (library.data.attributes, library.data.patient_attributes):
        out.update(source)
    for mapping in mappings:
        out.update(mapping.attributes)
        out.update(mapping.patient_attributes)
    return dict(sorted(out.items()))


def extension_urls(ctx: MappingContext, mappings: Iterable[StudyMapping] = ()) -> list[str]:
    """URLs of every extension fhir_cart may emit under its extension base."""
    names = [*_STRUCTURAL, *_PATIENT_EVENTS]
    urls = [ctx.ext(n) for n in names]
    for key, attr in _attribute_defs(ctx.concepts, mappings).items():
        urls.append(attr.extension_url or ctx.ext(key))
    return sorted(set(urls))


def _element(path: str, **fields: Any) -> Json:
    return {"id": path, "path": path, **fields}


def _types(names: list[str]) -> list[Json]:
    return [{"code": n} for n in names]


def _extension_sd(url: str, title: str, description: str, types: list[str]) -> Json:
    name = url.rsplit("/", 1)[1]
    elements: list[Json] = [
        _element("Extension", short=title, definition=description, min=0, max="*")
    ]
    if types:
        elements += [
            _element("Extension.extension", max="0"),
            _element("Extension.url", fixedUri=url),
            _element("Extension.value[x]", min=1, type=_types(types)),
        ]
    else:
        parts = list(_TIME_PARTS)
        if name != "relative-day":
            parts.insert(0, ("date", ["date"], "The date, when known"))
        elements.append(
            _element(
                "Extension.extension",
                slicing={"discriminator": [{"type": "value", "path": "url"}], "rules": "open"},
            )
        )
        for part, part_types, text in parts:
            base = f"Extension.extension:{part}"
            elements += [
                _element(base, sliceName=part, short=text, definition=text, min=0, max="1"),
                _element(f"{base}.url", fixedUri=part),
                _element(f"{base}.value[x]", type=_types(part_types)),
            ]
        elements += [
            _element("Extension.url", fixedUri=url),
            _element("Extension.value[x]", max="0"),
        ]
    sid = "".join(c if c.isalnum() or c == "-" else "-" for c in name)
    return {
        "resourceType": "StructureDefinition",
        "id": sid,
        "url": url,
        "version": VERSION,
        "name": "".join(p.capitalize() for p in sid.replace("_", "-").split("-")),
        "title": title,
        "status": "active",
        "publisher": PUBLISHER,
        "description": description,
        "fhirVersion": "4.0.1",
        "kind": "complex-type",
        "abstract": False,
        "context": [{"type": "element", "expression": "Element"}],
        "type": "Extension",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Extension",
        "derivation": "constraint",
        "differential": {"element": elements},
    }


def _extensions(ctx: MappingContext, mappings: list[StudyMapping]) -> list[Json]:
    out = []
    for name, (types, text) in _STRUCTURAL.items():
        out.append(_extension_sd(ctx.ext(name), name, text, types))
    for name, text in _PATIENT_EVENTS.items():
        out.append(_extension_sd(ctx.ext(name), name, text, []))
    for key, attr in _attribute_defs(ctx.concepts, mappings).items():
        text = f"Attribute '{key}' of the fhir_cart concept library: {attr.label}."
        if attr.value_set:
            text += f" Words of vocabulary '{attr.value_set}' (ValueSet {attr.value_set})."
        url = attr.extension_url or ctx.ext(key)
        if url.startswith(ctx.profiles.extension_base):
            out.append(_extension_sd(url, attr.label, text, _EXT_TYPES[attr.type]))
    return out


def _own_codes(ctx: MappingContext) -> dict[str, Json]:
    """Every own code with its display and a definition."""
    own = ctx.terminology.data.own_code_system.key
    found: dict[str, Json] = {}

    def add(coding: Coding, definition: str) -> None:
        if coding.system == own:
            found.setdefault(
                coding.code,
                {"code": coding.code, "display": coding.display, "definition": definition},
            )

    for group, words in ctx.terminology.data.concepts.items():
        for word, concept in words.items():
            for coding in concept.codings:
                add(
                    coding, f"{concept.text} (word '{word}' of the fhir_cart vocabulary '{group}')."
                )
    for key, c in ctx.concepts.data.concepts.items():
        for coding in c.codings:
            add(coding, f"{c.label} (fhir_cart concept '{key}', written as a {c.kind}).")
    for key, a in ctx.concepts.data.attributes.items():
        for coding in a.codings:
            add(coding, f"{a.label} (fhir_cart attribute '{key}').")
    return dict(sorted(found.items()))


def own_code_system(ctx: MappingContext) -> Json:
    """The own code system (terminology words and library concepts), with definitions."""
    own = ctx.terminology.data.own_code_system
    concepts = list(_own_codes(ctx).values())
    return {
        "resourceType": "CodeSystem",
        "id": own.key,
        "url": ctx.terminology.own_system,
        "version": own.version,
        "name": own.name,
        "title": own.title,
        "status": "active",
        "experimental": False,
        "publisher": own.publisher,
        "description": "Concepts of fhir_cart case series for which no standard code was "
        "verified in a published artefact (mappings/terminology.yaml, mappings/concepts.yaml).",
        "caseSensitive": True,
        "content": "complete",
        "count": len(concepts),
        "concept": concepts,
    }


def _value_sets(ctx: MappingContext) -> list[Json]:
    terms = ctx.terminology
    out = []
    for group, words in terms.data.concepts.items():
        by_system: dict[str, dict[str, Json]] = {}
        families: set[tuple[str, str]] = set()
        for concept in words.values():
            for c in concept.codings:
                system = terms.system(c.system)
                if c.prefix:  # the code and its children
                    families.add((system, c.code))
                    continue
                by_system.setdefault(system, {}).setdefault(
                    c.code, {"code": c.code, "display": c.display}
                )
        include: list[Json] = [
            {"system": system, "concept": list(codes.values())}
            for system, codes in sorted(by_system.items())
        ]
        include += [
            {"system": system, "filter": [{"property": "concept", "op": "is-a", "value": code}]}
            for system, code in sorted(families)
        ]
        out.append(
            {
                "resourceType": "ValueSet",
                "id": group.replace("_", "-"),
                "url": f"{CANONICAL}/ValueSet/{group.replace('_', '-')}",
                "version": VERSION,
                "name": "".join(p.capitalize() for p in group.split("_")),
                "title": f"fhir_cart vocabulary {group}",
                "status": "active",
                "publisher": PUBLISHER,
                "description": f"Codes of the words of vocabulary '{group}' "
                f"({', '.join(words)}); mappings/terminology.yaml.",
                "compose": {"include": include},
            }
        )
    return out


def _word_vocabulary(ctx: MappingContext, concept_key: str | None, field: str) -> str | None:
    library = ctx.concepts
    if concept_key is None or not library.has(concept_key):
        return None
    if field == "value":
        return library.concept(concept_key).value.value_set
    attr = library.data.attributes.get(field)
    return attr.value_set if attr is not None else None


def _shared(ctx: MappingContext, vocabulary: str, coding: Json) -> bool:
    words = ctx.terminology.data.concepts[vocabulary].values()
    system, code = coding["system"], coding["code"]
    return (
        sum(
            any(ctx.terminology.system(c.system) == system and c.code == code for c in w.codings)
            for w in words
        )
        > 1
    )


def _concept_map(ctx: MappingContext, name: str, mapping: StudyMapping) -> Json | None:
    terms = ctx.terminology
    source_base = f"{CANONICAL}/CodeSystem/local/{mapping.centre}"
    groups: dict[tuple[str, str], list[Json]] = {}
    for spec in mapping.events:
        concept_key = spec.fixed_concept()
        for field, words in spec.values.items():
            vocabulary = _word_vocabulary(ctx, concept_key, field)
            if vocabulary is None:
                continue
            by_target: dict[str, list[str]] = {}
            for source, target in words.items():
                if isinstance(target, str):
                    by_target.setdefault(target, []).append(str(source))
            for target, sources in by_target.items():
                if target not in terms.data.concepts.get(vocabulary, {}):
                    continue  # a word outside an open vocabulary: kept as text
                codeable = terms.concept(vocabulary, target)
                for source in sources:
                    code = normalise_word(source)
                    for coding in codeable.get("coding", ()):
                        # wider: the standard code also stands for another word of the
                        # vocabulary, or several local words share the canonical word
                        shared = len(sources) > 1 or _shared(ctx, vocabulary, coding)
                        groups.setdefault((f"{source_base}/{vocabulary}", coding["system"]), [])
                        groups[(f"{source_base}/{vocabulary}", coding["system"])].append(
                            {
                                "code": code,
                                "display": str(source),
                                "target": [
                                    {
                                        "code": coding["code"],
                                        "display": coding["display"],
                                        "equivalence": "wider" if shared else "equivalent",
                                    }
                                ],
                            }
                        )
    if not groups:
        return None
    out_groups = []
    for (source, target), elements in sorted(groups.items()):
        unique = {(e["code"], e["target"][0]["code"]): e for e in elements}
        out_groups.append({"source": source, "target": target, "element": list(unique.values())})
    cid = f"centre-{mapping.centre}"
    return {
        "resourceType": "ConceptMap",
        "id": cid,
        "url": f"{CANONICAL}/ConceptMap/{cid}",
        "version": VERSION,
        "name": "Centre" + "".join(p.capitalize() for p in mapping.centre.split("-")),
        "title": f"Local words of centre {mapping.centre} -> standard codes",
        "status": "active",
        "publisher": PUBLISHER,
        "description": f"From mappings/centres/{name}: each local word (as normalised by "
        "the reader) to the codes of the canonical word it stands for.",
        "group": out_groups,
    }


def build_artefacts(ctx: MappingContext, centres: dict[str, StudyMapping]) -> list[Artefact]:
    """All artefacts, in a stable order; ``centres``: file name -> centre mapping."""
    mappings = [centres[k] for k in sorted(centres)]
    out = [
        Artefact(f"StructureDefinition-{sd['id']}.json", sd) for sd in _extensions(ctx, mappings)
    ]
    cs = own_code_system(ctx)
    out.append(Artefact(f"CodeSystem-{cs['id']}.json", cs))
    out += [Artefact(f"ValueSet-{vs['id']}.json", vs) for vs in _value_sets(ctx)]
    for name in sorted(centres):
        mapping = centres[name]
        local = ctx if mapping.country is None else mapping_context(country=mapping.country)
        cm = _concept_map(local, name, mapping)
        if cm is not None:
            out.append(Artefact(f"ConceptMap-{cm['id']}.json", cm))
    crosswalk = _country_crosswalk(ctx)
    if crosswalk is not None:
        out.append(Artefact(f"ConceptMap-{crosswalk['id']}.json", crosswalk))
    return out


def _country_crosswalk(ctx: MappingContext) -> Json | None:
    """ICD-10-CM -> ICD-10-GM (any excluded -> country system): each excluded code to the
    country codes every word carrying it agrees on (the intersection)."""
    data = ctx.terminology.data
    found: dict[tuple[str, str, str], set[tuple[str, str]] | None] = {}
    for country, excluded in sorted(data.country_excluded_systems.items()):
        for words in data.concepts.values():
            for concept in words.values():
                theirs = {
                    (c.code, c.display)
                    for c in concept.codings
                    if country in c.countries and c.system != data.own_code_system.key
                }
                systems = {c.system for c in concept.codings if country in c.countries}
                for source in (c for c in concept.codings if c.system in excluded):
                    for target_system in systems - {data.own_code_system.key}:
                        key = (source.system, target_system, source.code)
                        before = found.get(key)
                        found[key] = set(theirs) if before is None else before & theirs
    groups: dict[tuple[str, str], dict[str, Json]] = {}
    displays = {
        (c.system, c.code): c.display
        for words in data.concepts.values()
        for concept in words.values()
        for c in concept.codings
    }
    for (source_system, target_system, code), targets in sorted(found.items()):
        pair = (data.systems[source_system], data.systems[target_system])
        groups.setdefault(pair, {})[code] = {
            "code": code,
            "display": displays[(source_system, code)],
            "target": [
                {
                    "code": t_code,
                    "display": t_display,
                    # the GM fifth digit 0 is wider than CM's; a secondary code goes with it
                    "equivalence": "relatedto" if t_code.endswith("!") else "wider",
                    **(
                        {"comment": "secondary code, written with the primary code"}
                        if t_code.endswith("!")
                        else {}
                    ),
                }
                for t_code, t_display in sorted(targets or ())
            ],
        }
    if not groups:
        return None
    return {
        "resourceType": "ConceptMap",
        "id": "icd-10-cm-to-icd-10-gm",
        "url": f"{CANONICAL}/ConceptMap/icd-10-cm-to-icd-10-gm",
        "version": VERSION,
        "name": "Icd10CmToIcd10Gm",
        "title": "ICD-10-CM -> ICD-10-GM crosswalk of the disease-state codes",
        "status": "active",
        "publisher": PUBLISHER,
        "description": "What a centre of a country excluding ICD-10-CM gets instead "
        "(mappings/terminology.yaml country_excluded_systems; BfArM ICD-10-GM, DKR 0208c).",
        "group": [
            {"source": s, "target": t, "element": list(elements.values())}
            for (s, t), elements in sorted(groups.items())
        ],
    }


def load_centres(folder: Path) -> dict[str, StudyMapping]:
    """The valid centre mappings of a folder (a deliberately broken example is skipped)."""
    from fhir_cart.errors import ConfigError
    from fhir_cart.library.study_mapping import load_study_mapping

    out = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            out[path.name] = load_study_mapping(path)
        except ConfigError:
            continue
    return out
