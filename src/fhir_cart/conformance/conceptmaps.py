"""ConceptMaps: each centre's local words -> the standard codes of the canonical words they
stand for, and the ICD-10-CM -> ICD-10-GM crosswalk; with the artefacts they name.

R4 ConceptMap.source[x]/target[x] name the value sets the map is read in the context of,
and each group names the code system of its source codes. So that nothing a map names is
unpublished, the package carries, per centre, a CodeSystem of its local words of each
vocabulary (``local-<centre>-<vocabulary>``), a ValueSet of all of them (``local-<centre>``,
the map's source) and a ValueSet of the vocabularies they map to (``centre-<centre>-targets``,
including the vocabulary ValueSets); the crosswalk's source and target are ValueSets of the
codes it maps (``icd-10-cm-to-icd-10-gm-source`` / ``-target``).
"""

from __future__ import annotations

from fhir_cart.conformance.artefacts import (
    CANONICAL,
    common,
    study_value_set_urls,
    value_set_url,
)
from fhir_cart.library.study_mapping import StudyMapping, normalise_word
from fhir_cart.mappers.context import MappingContext, mapping_context
from fhir_cart.types import Json

__all__ = ["concept_maps"]


def _name(tail: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in tail.replace("_", "-").split("-"))


def _head(ctx: MappingContext, rtype: str, rid: str, title: str, description: str) -> Json:
    return {
        "resourceType": rtype,
        "id": rid,
        "url": f"{CANONICAL}/{rtype}/{rid}",
        **common(ctx),
        "name": _name(rid),
        "title": title,
        "description": description,
    }


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


def _broader_code(ctx: MappingContext, vocabulary: str, word: str, coding: Json) -> bool:
    """Whether ``coding`` is one of the word's ``broader`` codes (a class it is one of)."""
    concept = ctx.terminology.data.concepts[vocabulary][word]
    system, code = coding["system"], coding["code"]
    return any(
        c.broader and ctx.terminology.system(c.system) == system and c.code == code
        for c in concept.codings
    )


def _centre_groups(ctx: MappingContext, mapping: StudyMapping) -> dict[tuple[str, str], list[Json]]:
    """(vocabulary, target system) -> map elements (local word -> a code of its word)."""
    terms = ctx.terminology
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
                    for coding in codeable.get("coding", ()):
                        # wider: the standard code also stands for another word of the
                        # vocabulary, or several local words share the canonical word, or
                        # it is a broader class the word is one of
                        shared = (
                            len(sources) > 1
                            or _shared(ctx, vocabulary, coding)
                            or _broader_code(ctx, vocabulary, target, coding)
                        )
                        element = {
                            "code": normalise_word(source),
                            "display": str(source),
                            "target": [
                                {
                                    "code": coding["code"],
                                    "display": coding["display"],
                                    "equivalence": "wider" if shared else "equivalent",
                                }
                            ],
                        }
                        groups.setdefault((vocabulary, coding["system"]), []).append(element)
    return groups


def _local_code_system(ctx: MappingContext, centre: str, vocabulary: str, words: Json) -> Json:
    rid = f"local-{centre}-{vocabulary.replace('_', '-')}"
    return {
        **_head(
            ctx,
            "CodeSystem",
            rid,
            f"Local words of centre {centre}, vocabulary {vocabulary}",
            f"The words centre {centre}'s mapping file maps to vocabulary '{vocabulary}' "
            "(as normalised by the reader); the source codes of its ConceptMap.",
        ),
        "caseSensitive": True,
        "content": "complete",
        "count": len(words),
        "concept": [{"code": c, "display": d} for c, d in sorted(words.items())],
    }


def _centre_artefacts(ctx: MappingContext, name: str, mapping: StudyMapping) -> list[Json]:
    groups = _centre_groups(ctx, mapping)
    if not groups:
        return []
    centre = mapping.centre
    studies = study_value_set_urls([mapping])  # the study's ValueSets of its words
    words: dict[str, dict[str, str]] = {}
    for (vocabulary, _), elements in groups.items():
        for e in elements:
            words.setdefault(vocabulary, {})[e["code"]] = e["display"]
    systems = [_local_code_system(ctx, centre, v, w) for v, w in sorted(words.items())]
    source = {
        **_head(
            ctx,
            "ValueSet",
            f"local-{centre}",
            f"Local words of centre {centre}",
            f"Every local word centre {centre} maps to a vocabulary: the source of "
            f"ConceptMap centre-{centre}.",
        ),
        "compose": {"include": [{"system": cs["url"]} for cs in systems]},
    }
    target = {
        **_head(
            ctx,
            "ValueSet",
            f"centre-{centre}-targets",
            f"Standard codes centre {centre}'s words map to",
            f"The vocabularies centre {centre}'s words map to: the target of "
            f"ConceptMap centre-{centre}.",
        ),
        "compose": {
            "include": [{"valueSet": [studies.get(v) or value_set_url(v)]} for v in sorted(words)]
        },
    }
    out_groups = []
    for (vocabulary, target_system), elements in sorted(groups.items()):
        unique = {(e["code"], e["target"][0]["code"]): e for e in elements}
        out_groups.append(
            {
                "source": f"{CANONICAL}/CodeSystem/local-{centre}-{vocabulary.replace('_', '-')}",
                "target": target_system,
                "element": list(unique.values()),
            }
        )
    concept_map = {
        **_head(
            ctx,
            "ConceptMap",
            f"centre-{centre}",
            f"Local words of centre {centre} -> standard codes",
            f"From mappings/centres/{name}: each local word (as normalised by the reader) "
            "to the codes of the canonical word it stands for.",
        ),
        "sourceCanonical": source["url"],
        "targetCanonical": target["url"],
        "group": out_groups,
    }
    return [*systems, source, target, concept_map]


def concept_maps(
    ctx: MappingContext, centres: dict[str, StudyMapping], *, crosswalk: bool = True
) -> list[Json]:
    """Each centre's ConceptMap with its local CodeSystems and ValueSets, then (``crosswalk``)
    the country crosswalk with its ValueSets; ``centres``: file name -> centre mapping."""
    out: list[Json] = []
    for name in sorted(centres):
        mapping = centres[name]
        same = mapping.country in (None, ctx.terminology.country)
        local = ctx if same else mapping_context(country=mapping.country)
        out += _centre_artefacts(local, name, mapping)
    if crosswalk:
        out += _country_crosswalk(ctx)
    return out


def _country_crosswalk(ctx: MappingContext) -> list[Json]:
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
        return []
    return _crosswalk_artefacts(ctx, groups)


def _crosswalk_artefacts(
    ctx: MappingContext, groups: dict[tuple[str, str], dict[str, Json]]
) -> list[Json]:
    rid = "icd-10-cm-to-icd-10-gm"
    sources: dict[str, dict[str, str]] = {}
    targets: dict[str, dict[str, str]] = {}
    for (s, t), elements in groups.items():
        for e in elements.values():
            sources.setdefault(s, {})[e["code"]] = e["display"]
            for target in e["target"]:
                targets.setdefault(t, {})[target["code"]] = target["display"]
    value_sets = []
    for part, codes in (("source", sources), ("target", targets)):
        value_sets.append(
            {
                **_head(
                    ctx,
                    "ValueSet",
                    f"{rid}-{part}",
                    f"The {part} codes of the ICD-10-CM -> ICD-10-GM crosswalk",
                    f"The codes ConceptMap {rid} maps {'from' if part == 'source' else 'to'}.",
                ),
                "compose": {
                    "include": [
                        {
                            "system": system,
                            "concept": [
                                {"code": c, "display": d} for c, d in sorted(found.items())
                            ],
                        }
                        for system, found in sorted(codes.items())
                    ]
                },
            }
        )
    concept_map = {
        **_head(
            ctx,
            "ConceptMap",
            rid,
            "ICD-10-CM -> ICD-10-GM crosswalk of the disease-state codes",
            "What a centre of a country excluding ICD-10-CM gets instead "
            "(mappings/terminology.yaml country_excluded_systems; BfArM ICD-10-GM, DKR 0208c).",
        ),
        "sourceCanonical": value_sets[0]["url"],
        "targetCanonical": value_sets[1]["url"],
        "group": [
            {"source": s, "target": t, "element": list(elements.values())}
            for (s, t), elements in sorted(groups.items())
        ],
    }
    return [*value_sets, concept_map]
