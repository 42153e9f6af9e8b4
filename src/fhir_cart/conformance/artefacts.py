"""The project's conformance artefacts as FHIR R4 resources, generated from the mapping data
(mappings/*.yaml) and checked in under api/fhir/:

- a StructureDefinition for every extension fhir_cart emits under its extension base (the
  time, value and provenance extensions of docs/fhir-model.md, one per attribute of the
  concept library and of each centre mapping, and the Patient events ``last-follow-up`` and
  ``death``);
- the own CodeSystem, with a definition for every code;
- a ValueSet for every vocabulary (terminology group) of mappings/terminology.yaml;
- a ConceptMap per centre mapping file (fhir_cart.conformance.conceptmaps).

Every artefact's id is its URL's tail, and all carry the version and date of the own code
system (mappings/terminology.yaml ``own_code_system``): one version everywhere.
``fhir-cart artefacts`` writes them as a FHIR package (fhir_cart.conformance.package); a
test checks the checked-in files equal the output.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fhir_cart.conformance.contexts import PATIENT_EVENT_KINDS, build_contexts, own_additions
from fhir_cart.library.concepts import AttributeDef, ConceptLibrary, StudyLibraryFile
from fhir_cart.library.study_mapping import StudyMapping
from fhir_cart.library.terminology import Coding, Concept
from fhir_cart.library.words import STUDY_SYSTEM, words_data
from fhir_cart.mappers.context import MappingContext
from fhir_cart.types import Json

__all__ = [
    "CANONICAL",
    "common",
    "extension_sds",
    "extension_urls",
    "load_centres",
    "own_code_system",
    "study_canonicals",
    "study_code_system",
    "study_value_set_urls",
    "study_value_sets",
    "value_sets",
]

CANONICAL = "https://fhir-cart.dev/fhir"
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
    (
        "stated",
        ["Quantity"],
        "The time as the source wrote it in weeks, months or years "
        "(UCUM wk, mo, a); day is then that time in whole days (a month is 30.4375 days)",
    ),
]
# Extensions the mappers write besides the attributes: name -> (value types, description);
# an empty type list is a complex extension (sub-extensions in _COMPLEX).
_STRUCTURAL: dict[str, tuple[list[str], str]] = {
    "relative-day": (
        [],
        "A time relative to an anchor concept, on the element holding the "
        "date (FHIR JSON primitive extension); day or window and the anchor.",
    ),
    "end": (
        [],
        "End of an event where the resource has no element for it (AdverseEvent, "
        "Patient events): a date and/or a relative day.",
    ),
    "value": (
        ["Quantity", "Range", "boolean", "string", "integer"],
        "The event's value on resources with no value element (Procedure, AdverseEvent, "
        "MedicationAdministration with a comparator).",
    ),
    "value-code": (["CodeableConcept"], "A coded value beside (or instead of) the value."),
    "source-text": (["string"], "The source's own words for the event (e.g. 'low pos')."),
    "origin": (["string"], "Resource type the event was pulled from (e.g. MedicationRequest)."),
    "assumed": (
        ["string"],
        "Why the mapping supplied a time or value the source does not "
        "state (its `assumed:` reason): the element it set is an assumption.",
    ),
    "event-id": (["string"], "The event's stable id where the resource has no identifier."),
}
_PATIENT_EVENTS = {
    "follow_up": "{label} of the patient: a date and/or a relative day, and its details.",
    "death": "A second {label} event of one patient (a data problem kept beside "
    "deceased[x]): a date and/or a relative day, and its details.",
}


def _attribute_defs(library: ConceptLibrary, mappings: Iterable[StudyMapping]) -> dict[str, Any]:
    out: dict[str, AttributeDef] = {}
    for source in (library.data.attributes, library.data.patient_attributes):
        out.update(source)
    for mapping in mappings:
        own = own_additions(mapping)
        out.update(own.attributes)
        out.update(own.patient_attributes)
    return dict(sorted(out.items()))


def common(ctx: MappingContext) -> Json:
    """Version, date, status and publisher every artefact carries (the own code system's)."""
    own = ctx.terminology.data.own_code_system
    out: Json = {"version": own.version, "status": "active"}
    if own.date is not None:
        out["date"] = own.date
    out["publisher"] = own.publisher
    return out


def _name(tail: str) -> str:
    """A computable name (R4 inv-0: starts upper case, letters and digits) from an id."""
    return "".join(p[:1].upper() + p[1:] for p in tail.replace("_", "-").split("-"))


def _patient_events(
    library: ConceptLibrary, mappings: Iterable[StudyMapping]
) -> dict[str, tuple[str, str]]:
    """Extension name of each Patient event concept -> (label, description)."""
    concepts = dict(library.data.concepts)
    for mapping in mappings:
        concepts.update(own_additions(mapping).concepts)
    return {
        key.replace("_", "-"): (c.label, _PATIENT_EVENTS[c.kind].format(label=c.label))
        for key, c in sorted(concepts.items())
        if c.kind in PATIENT_EVENT_KINDS
    }


def _attribute_url(ctx: MappingContext, key: str, attr: AttributeDef) -> str:
    return attr.extension_url or ctx.ext(key.replace("_", "-"))


def extension_urls(ctx: MappingContext, mappings: Iterable[StudyMapping] = ()) -> list[str]:
    """URLs of every extension fhir_cart may emit under its extension base."""
    mappings = list(mappings)
    names = [*_STRUCTURAL, *_patient_events(ctx.concepts, mappings)]
    urls = [ctx.ext(n) for n in names]
    for key, attr in _attribute_defs(ctx.concepts, mappings).items():
        urls.append(_attribute_url(ctx, key, attr))
    return sorted(set(urls))


def _element(element_id: str, **fields: Any) -> Json:
    """An element by id; its path is the id without slice names (R4 elementdefinition.html#id)."""
    path = ".".join(part.split(":", 1)[0] for part in element_id.split("."))
    return {"id": element_id, "path": path, **fields}


def _types(names: list[str]) -> list[Json]:
    return [{"code": n} for n in names]


def _extension_sd(
    url: str, title: str, description: str, types: list[str], value_rules: Json | None = None
) -> Json:
    """``value_rules``: more of ``Extension.value[x]`` (binding, minValue[x], maxValue[x])."""
    name = url.rsplit("/", 1)[1]
    elements: list[Json] = [
        _element("Extension", short=title, definition=description, min=0, max="*")
    ]
    if types:
        value = _element("Extension.value[x]", min=1, type=_types(types), **(value_rules or {}))
        elements += [
            _element("Extension.extension", max="0"),
            _element("Extension.url", fixedUri=url),
            value,
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
    return {
        "resourceType": "StructureDefinition",
        "id": name,
        "url": url,
        "name": _name(name),
        "title": title,
        "description": description,
        "fhirVersion": "4.0.1",
        "kind": "complex-type",
        "abstract": False,
        "type": "Extension",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Extension",
        "derivation": "constraint",
        "differential": {"element": elements},
    }


def _value_rules(attr: AttributeDef, study_sets: dict[str, str] | None = None) -> Json:
    """The binding of a coded attribute, the bounds of a number (R4 minValue[x] and
    maxValue[x] apply to integer and decimal values; a quantity's bounds are in its
    canonical unit, so they stay in the library)."""
    out: Json = {}
    binding = _binding(attr, study_sets or {})
    if binding is not None:
        out["binding"] = binding
    suffix = {"integer": "Integer", "number": "Decimal"}.get(attr.type)
    if suffix is not None:
        cast = int if attr.type == "integer" else float
        if attr.min is not None:
            out[f"minValue{suffix}"] = cast(attr.min)
        if attr.max is not None:
            out[f"maxValue{suffix}"] = cast(attr.max)
    return out


def _binding(attr: AttributeDef, study_sets: dict[str, str]) -> Json | None:
    """A coded attribute's value set: required when the vocabulary is closed, extensible when
    it is open (a word outside it is kept as text, R4 terminologies.html#extensible); the
    study's ValueSet of a vocabulary its library file adds words to."""
    if attr.type != "coded" or attr.value_set is None:
        return None
    return {
        "strength": "extensible" if attr.open else "required",
        "valueSet": study_sets.get(attr.value_set) or value_set_url(attr.value_set),
    }


def value_set_url(group: str) -> str:
    return f"{CANONICAL}/ValueSet/{group.replace('_', '-')}"


def extension_sds(ctx: MappingContext, mappings: list[StudyMapping]) -> list[Json]:
    """The StructureDefinitions (differential only) of every own extension, with contexts."""
    events = _patient_events(ctx.concepts, mappings)
    urls = {name: ctx.ext(name) for name in [*_STRUCTURAL, *events]}
    contexts = build_contexts(ctx.concepts, mappings, urls)
    bases = (ctx.profiles.extension_base, *study_canonicals(mappings))
    study_sets = study_value_set_urls(mappings)
    study_attributes = {
        key
        for mapping in mappings
        for group in (own_additions(mapping).attributes, own_additions(mapping).patient_attributes)
        for key in group
    }
    found: list[tuple[str, Json]] = []
    for name, (types, text) in _STRUCTURAL.items():
        found.append((name, _extension_sd(urls[name], name, text, types)))
    for name, (label, text) in events.items():
        found.append((name, _extension_sd(urls[name], label, text, [])))
    for key, attr in _attribute_defs(ctx.concepts, mappings).items():
        text = f"Attribute '{key}' of the fhir_cart concept library: {attr.label}."
        if attr.value_set:
            text += f" Words of vocabulary '{attr.value_set}' (ValueSet {attr.value_set})."
        url = _attribute_url(ctx, key, attr)
        if url.startswith(bases):
            rules = _value_rules(attr, study_sets if key in study_attributes else None)
            sd = _extension_sd(url, attr.label, text, _EXT_TYPES[attr.type], rules)
            found.append((key, sd))
    out = []
    for name, sd in found:
        context = contexts.of(name)
        if not context:
            continue  # an attribute no concept carries and no resource has room for
        out.append({**sd, **common(ctx), "context": context})
    return out


def study_canonicals(mappings: Iterable[StudyMapping]) -> tuple[str, ...]:
    """The canonical base of each mapping's library file that names one (``canonical:``)."""
    found = []
    for mapping in mappings:
        own = mapping.own_concepts()
        if isinstance(own, StudyLibraryFile) and own.canonical is not None:
            found.append(own.canonical + "/")
    return tuple(found)


def study_code_system(ctx: MappingContext, mapping: StudyMapping) -> Json | None:
    """The study's own CodeSystem (``<canonical>/CodeSystem/<code_system>`` of its library
    file): a code for each concept it adds without a standard coding (None: the library file
    names no ``canonical``, or adds no such concept)."""
    own = mapping.own_concepts()
    if not isinstance(own, StudyLibraryFile) or own.system_url is None:
        return None
    concepts = [
        {
            "code": key,
            "display": c.label,
            "definition": f"{c.label} (concept '{key}' of the library of study centre "
            f"'{mapping.centre}'; FHIR target: {c.kind}).",
        }
        for key, c in sorted(own.concepts.items())
        if not c.codings
    ]
    seen = {c["code"] for c in concepts}
    for group, words in sorted(own.value_sets.items()):
        for word, meaning in sorted(words.items()):
            for coding in meaning.codings:
                if coding.system != STUDY_SYSTEM or coding.code in seen:
                    continue
                seen.add(coding.code)
                concepts.append(
                    {
                        "code": coding.code,
                        "display": coding.display,
                        "definition": f"{meaning.text} (word '{word}' of vocabulary '{group}' "
                        f"in the library of study centre '{mapping.centre}'; source: "
                        f"{coding.source}).",
                    }
                )
    if not concepts:
        return None
    return {
        "resourceType": "CodeSystem",
        "id": own.code_system,
        "url": own.system_url,
        **common(ctx),
        "name": _name(own.code_system),
        "title": f"Concepts of {mapping.centre} without a standard code",
        "experimental": False,
        "description": "The concepts and vocabulary words the study library of "
        f"'{mapping.centre}' adds to the fhir_cart library with codes of the study's own.",
        "caseSensitive": True,
        "content": "complete",
        "count": len(concepts),
        "concept": concepts,
    }


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
    url = ctx.terminology.own_system
    return {
        "resourceType": "CodeSystem",
        "id": url.rsplit("/", 1)[1],
        "url": url,
        **common(ctx),
        "name": own.name,
        "title": own.title,
        "experimental": False,
        "description": "Concepts of fhir_cart case series for which no standard code was "
        "verified in a published artefact (mappings/terminology.yaml, mappings/concepts.yaml).",
        "caseSensitive": True,
        "content": "complete",
        "count": len(concepts),
        "concept": concepts,
    }


def _include(systems: dict[str, str], words: Iterable[Concept]) -> list[Json]:
    """``compose.include`` of the codes of ``words`` (a prefix code: it and its children)."""
    by_system: dict[str, dict[str, Json]] = {}
    families: set[tuple[str, str]] = set()
    for concept in words:
        for c in concept.codings:
            system = systems[c.system]
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
    return include


def study_value_set_urls(mappings: Iterable[StudyMapping]) -> dict[str, str]:
    """Vocabulary -> the study's ValueSet of it (``<canonical>/ValueSet/<vocabulary>``), for
    each vocabulary a mapping's library file (with ``canonical``) adds words to."""
    found: dict[str, str] = {}
    for mapping in mappings:
        own = mapping.own_concepts()
        if isinstance(own, StudyLibraryFile) and own.canonical is not None:
            for group in own.value_sets:
                found[group] = f"{own.canonical}/ValueSet/{group.replace('_', '-')}"
    return found


def study_value_sets(ctx: MappingContext, mapping: StudyMapping) -> list[Json]:
    """The study's ValueSet of each vocabulary its library file adds words to: every code of
    the vocabulary, the shipped words' and the study's (none without ``canonical``)."""
    own = mapping.own_concepts()
    urls = study_value_set_urls([mapping])
    if not isinstance(own, StudyLibraryFile) or not urls:
        return []
    data = words_data(ctx.terminology.data, own.value_sets, own.system_url)
    out = []
    for group, url in sorted(urls.items()):
        words = data.concepts[group]
        shipped = group in ctx.terminology.data.concepts
        whose = f"the fhir_cart vocabulary '{group}' with" if shipped else "vocabulary"
        out.append(
            {
                "resourceType": "ValueSet",
                "id": url.rsplit("/", 1)[1],
                "url": url,
                **common(ctx),
                "name": _name(url.rsplit("/", 1)[1]),
                "title": f"Vocabulary {group} of {mapping.centre}",
                "description": f"Codes of {whose} the words the study library of "
                f"'{mapping.centre}' adds ({', '.join(own.value_sets[group])}); all words: "
                f"{', '.join(words)}.",
                "compose": {"include": _include(data.systems, words.values())},
            }
        )
    return out


def value_sets(ctx: MappingContext) -> list[Json]:
    """A ValueSet per vocabulary (terminology group)."""
    terms = ctx.terminology
    out = []
    for group, words in terms.data.concepts.items():
        include = _include(terms.data.systems, words.values())
        out.append(
            {
                "resourceType": "ValueSet",
                "id": group.replace("_", "-"),
                "url": value_set_url(group),
                **common(ctx),
                "name": _name(group),
                "title": f"fhir_cart vocabulary {group}",
                "description": f"Codes of the words of vocabulary '{group}' "
                f"({', '.join(words)}); mappings/terminology.yaml.",
                "compose": {"include": include},
            }
        )
    return out


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
