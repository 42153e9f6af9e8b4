"""FHIR artefacts of a registry: a ConceptMap per centre (its local words -> the registry's
standard codes) and a Provenance per patient and centre (which file, which mapping, which
fhir_cart, when). Pure functions returning FHIR R4 JSON; checked against the R4B models in
the tests.

ConceptMap: https://hl7.org/fhir/R4/conceptmap.html (group.element.target.equivalence is
required in R4). Provenance: https://hl7.org/fhir/R4/provenance.html; targets are referenced
by business identifier, as the registry's resources carry them
(``<base>/<registry>/<kind>|<patient>/<event id>``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.records import Case
from fhir_cart.registry.screen import screened

__all__ = ["SourceInfo", "concept_map", "local_words", "provenance"]

PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_KIND_PART = {
    "condition": "condition",
    "medication": "medication-administration",
    "procedure": "procedure",
    "observation": "observation",
    "adverse_event": "adverse-event",
}


@dataclass(frozen=True)
class SourceInfo:
    """Where a centre's records came from."""

    centre: str
    file_name: str
    file_sha256: str
    mapping_name: str
    mapping_sha256: str
    recorded: str
    """ISO instant: the newest modification time of the centre's inputs (not the clock, so a
    rebuild of the same inputs says the same)."""


def local_words(
    cases: Sequence[Case], library: ConceptLibrary | None
) -> dict[tuple[str, str], str]:
    """(value set, local word) -> registry word, for every coded value read from a word
    other than the registry's own, and (``concept``, local word) -> concept key for events
    without a value whose source word named the concept (a long format's item column)."""
    found: dict[tuple[str, str], str] = {}
    for case in cases:
        for event in case.events:
            value, word = event.value, (event.source_text or "").strip()
            if not word or not screened(word):  # open text never reaches a ConceptMap
                continue
            if value is None and word != event.concept:
                found.setdefault(("concept", word), event.concept)
            elif value is not None and value.code is not None and value.number is None:
                coded = value.code
                if word != coded:
                    found.setdefault((_value_set(event.concept, library), word), coded)
    return dict(sorted(found.items()))


def _value_set(concept: str, library: ConceptLibrary | None) -> str:
    if library is not None and library.has(concept):
        return library.concept(concept).value.value_set or concept
    return concept


def _target(
    value_set: str, word: str, library: ConceptLibrary | None, local: str
) -> dict[str, str]:
    if library is not None:
        try:
            codings = library.terminology.concept(value_set, word).get("coding", [])
        except Exception:
            codings = []
        if codings:
            first = codings[0]
            return {
                "system": first["system"],
                "code": first["code"],
                "display": first.get("display", word),
            }
    return {"system": local, "code": word, "display": word}


def concept_map(
    registry: str,
    centre: str,
    words: dict[tuple[str, str], str],
    base: str,
    library: ConceptLibrary | None,
) -> dict[str, Any]:
    """The centre's local words mapped to the registry's codes, one group per target system."""
    source_system = f"{base}/{registry}/CodeSystem/{centre}-words"
    groups: dict[str, list[dict[str, Any]]] = {}
    for (value_set, word), code in words.items():
        target = _target(value_set, code, library, f"{base}/{registry}/CodeSystem/{value_set}")
        element = {
            "code": word,
            "display": word,
            "target": [
                {
                    "code": target["code"],
                    "display": target["display"],
                    "equivalence": "equivalent",
                    "comment": f"value set {value_set}, registry word {code}",
                }
            ],
        }
        groups.setdefault(target["system"], []).append(element)
    return {
        "resourceType": "ConceptMap",
        "id": f"{registry}-{centre}"[:64],
        "url": f"{base}/{registry}/ConceptMap/{centre}",
        "name": f"LocalWords{centre.title().replace('-', '')}",
        "title": f"Local words of centre {centre} mapped to registry {registry} codes",
        "status": "active",
        "sourceUri": source_system,
        "group": [
            {"source": source_system, "target": system, "element": elements}
            for system, elements in sorted(groups.items())
        ],
    }


def _id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def provenance(
    case: Case,
    centre_events: Sequence[tuple[str, str]],
    source: SourceInfo,
    *,
    registry: str,
    base: str,
    library: ConceptLibrary | None,
    version: str,
    rows: Sequence[str] = (),
) -> dict[str, Any]:
    """Provenance of one registry patient's resources that came from one centre.
    ``centre_events``: (registry event id, concept) of those resources; ``rows``: keyed
    tokens of the rows of the centre's file they were read from
    (:meth:`~fhir_cart.registry.pseudonyms.Pseudonymiser.source_row`), each an entity of
    role ``source`` whose ``what`` is a Reference by identifier (a spreadsheet row is no FHIR
    resource). Neither the data file's name nor a row number is written: only the centre,
    with the key and its file, resolves a token (``fhir-cart registry resolve``)."""
    patient = case.patient.study_id
    targets = [{"identifier": {"system": f"{base}/{registry}/patient", "value": patient}}]
    for event_id, concept in sorted(centre_events):
        kind = (
            library.concept(concept).kind
            if library is not None and library.has(concept)
            else "observation"
        )
        if kind in _KIND_PART:
            system = f"{base}/{registry}/{_KIND_PART[kind]}"
            targets.append({"identifier": {"system": system, "value": f"{patient}/{event_id}"}})
    centre = {"system": f"{base}/{registry}/centre", "value": source.centre}
    rows_system = f"{base}/{registry}/source-row"
    return {
        "resourceType": "Provenance",
        "id": _id(registry, patient, source.centre),
        "target": targets,
        "recorded": source.recorded,
        "activity": {"text": "registry harmonisation (fhir-cart registry build)"},
        "agent": [
            {"type": _participant("author"), "who": {"identifier": centre}},
            {"type": _participant("assembler"), "who": {"display": f"fhir_cart {version}"}},
        ],
        "entity": [
            _entity(source.file_sha256, "source data file"),
            _entity(source.mapping_sha256, "centre mapping file"),
            *(
                {
                    "role": "source",
                    "what": {
                        "identifier": {"system": rows_system, "value": row},
                        "display": f"a row of centre {source.centre}'s file",
                    },
                }
                for row in rows
            ),
        ],
    }


def _participant(code: str) -> dict[str, Any]:
    return {"coding": [{"system": PARTICIPANT, "code": code}]}


def _entity(digest: str, what: str) -> dict[str, Any]:
    return {
        "role": "source",
        "what": {
            "identifier": {"system": "urn:ietf:rfc:6920", "value": f"ni:///sha-256;{digest}"},
            "display": what,
        },
    }
