"""Where each own extension may stand: the ``context`` of its StructureDefinition.

R4 (extensibility.html#context): an extension's context names the elements it may be put
on, either an element path (``type: element``, e.g. ``AdverseEvent``, ``Period.start``) or
another extension (``type: extension``, its URL). The rules below follow the mappers
(fhir_cart.mappers.to_fhir) and the concept library: an attribute goes on the resource of
each concept that carries it (unless that resource has an element for it), patient
attributes on the Patient, and an event the Patient holds (a death, a follow-up) carries
its details inside its own extension or on ``Patient.deceased[x]``. The validation test
(tests/unit/conformance/test_package.py) checks every fixture's extensions against these contexts.
"""

from __future__ import annotations

from collections.abc import Iterable

from fhir_cart.library.concepts import ConceptDef, ConceptLibrary, ConceptsFile
from fhir_cart.library.study_mapping import StudyMapping
from fhir_cart.mappers.kinds import RESOURCE_KINDS
from fhir_cart.mappers.to_fhir import _PLACES as ELEMENT_PLACES

__all__ = ["Contexts", "build_contexts", "own_additions"]

Json = dict[str, object]
# concept kind -> the resource an event of it becomes (to_fhir._MAPPERS)
RESOURCE_OF_KIND = {k.concept_kind: k.type for k in RESOURCE_KINDS if k.concept_kind}
PATIENT_EVENT_KINDS = ("death", "follow_up")
DECEASED = "Patient.deceased[x]"
# the date elements that carry ``relative-day`` (to_fhir._put_time callers); a Period's
# start and end are named on the Period datatype (Procedure.performedPeriod,
# Observation.effectivePeriod, MedicationAdministration.effectivePeriod)
RELATIVE_DAY_HOSTS = tuple(
    sorted({*(host for k in RESOURCE_KINDS for host in k.day_hosts), "Period.end", "Period.start"})
)
# structural extension -> resource types (of the kinds present) it goes on; patient-event
# hosts are added to all of these (to_fhir._event_details)
_STRUCTURAL_RESOURCES: dict[str, tuple[str, ...]] = {
    **{
        name: tuple(k.type for k in RESOURCE_KINDS if name in k.extensions)
        for name in ("value", "value-code", "end")
    },
    "source-text": tuple(RESOURCE_OF_KIND.values()),
    "origin": tuple(RESOURCE_OF_KIND.values()),
    "assumed": tuple(RESOURCE_OF_KIND.values()),
    "event-id": (),
}


def own_additions(mapping: StudyMapping) -> ConceptsFile:
    """What a mapping adds to the library: its own concepts and those of its library file
    (attributes with their extension URLs under the library's ``canonical``)."""
    return mapping.own_concepts() or ConceptsFile()


def patient_event_name(key: str) -> str:
    """The extension name of a Patient event concept (to_fhir._patient_event)."""
    return key.replace("_", "-")


class Contexts:
    """Extension name (URL tail) or URL -> its context entries."""

    def __init__(self) -> None:
        self._found: dict[str, set[tuple[str, str]]] = {}

    def add(self, name: str, kind: str, expression: str) -> None:
        self._found.setdefault(name.replace("_", "-"), set()).add((kind, expression))

    def of(self, name: str) -> list[Json]:
        found = sorted(self._found.get(name.replace("_", "-"), ()))
        return [{"type": k, "expression": e} for k, e in found]


def _all_concepts(
    library: ConceptLibrary, mappings: Iterable[StudyMapping]
) -> dict[str, ConceptDef]:
    out = dict(library.data.concepts)
    for mapping in mappings:
        out.update(own_additions(mapping).concepts)
    return out


def build_contexts(
    library: ConceptLibrary, mappings: Iterable[StudyMapping], ext_url: dict[str, str]
) -> Contexts:
    """Contexts of the structural extensions, the Patient events and every attribute.
    ``ext_url``: extension name -> URL (for ``type: extension`` contexts)."""
    mappings = list(mappings)
    concepts = _all_concepts(library, mappings)
    out = Contexts()
    kinds = {c.kind for c in concepts.values()}
    present = {RESOURCE_OF_KIND[k] for k in kinds if k in RESOURCE_OF_KIND}
    event_hosts: list[tuple[str, str]] = []
    for key, concept in sorted(concepts.items()):
        if concept.kind in PATIENT_EVENT_KINDS:
            name = patient_event_name(key)
            out.add(name, "element", "Patient")
            event_hosts.append(("extension", ext_url[name]))
            if concept.kind == "death":
                event_hosts.append(("element", DECEASED))
    for host in RELATIVE_DAY_HOSTS:
        out.add("relative-day", "element", host)
    for name, resources in _STRUCTURAL_RESOURCES.items():
        for rtype in resources:
            if rtype in present:
                out.add(name, "element", rtype)
        for kind, expression in event_hosts:
            out.add(name, kind, expression)
    _attribute_contexts(out, library, mappings, concepts, event_hosts)
    return out


def _attribute_contexts(
    out: Contexts,
    library: ConceptLibrary,
    mappings: list[StudyMapping],
    concepts: dict[str, ConceptDef],
    event_hosts: list[tuple[str, str]],
) -> None:
    attrs = dict(library.data.attributes)
    patient_attrs = dict(library.data.patient_attributes)
    for mapping in mappings:
        own = own_additions(mapping)
        attrs.update(own.attributes)
        patient_attrs.update(own.patient_attributes)
    for key in patient_attrs:
        out.add(key, "element", "Patient")
    for concept_key, concept in sorted(concepts.items()):
        for key in concept.attributes:
            attr = attrs.get(key)
            if attr is None:
                continue
            rtype = RESOURCE_OF_KIND.get(concept.kind)
            if rtype is not None:
                if attr.fhir not in ELEMENT_PLACES.get(rtype, frozenset()):
                    out.add(key, "element", rtype)
                continue
            name = patient_event_name(concept_key)
            for kind, expression in event_hosts:
                if expression == DECEASED and concept.kind != "death":
                    continue
                if kind == "extension" and not expression.endswith("/" + name):
                    continue
                out.add(key, kind, expression)
