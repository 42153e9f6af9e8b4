"""Count the codings of emitted resources by code system (the own-code share)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "codeable_concepts",
    "coding_counts",
    "iter_codings",
    "own_share",
    "unverified_codings",
    "without_standard_code",
    "without_standard_code_by_code",
]


def iter_codings(node: Any) -> Iterator[dict[str, Any]]:
    """Every Coding (an object with ``system`` and ``code``) anywhere in ``node``; Quantity
    units (which also have system and code) are not codings and are skipped."""
    if isinstance(node, dict):
        if "system" in node and "code" in node and "value" not in node and "unit" not in node:
            yield node
        for value in node.values():
            yield from iter_codings(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_codings(item)


def coding_counts(resources: Iterable[dict[str, Any]]) -> Counter[str]:
    """Number of codings per system URI over ``resources``."""
    return Counter(str(c["system"]) for r in resources for c in iter_codings(r))


def own_share(counts: Counter[str], own_system: str) -> float:
    total = sum(counts.values())
    return counts[own_system] / total if total else 0.0


_CODEABLE_KEYS = frozenset(
    (
        "code",
        "valueCodeableConcept",
        "usedCode",
        "reasonCode",
        "event",
        "category",
        "method",
        "type",
        "interpretation",
        "medicationCodeableConcept",
        "clinicalStatus",
        "verificationStatus",
        "bodySite",
        "severity",
        "outcome",
        "seriousness",
    )
)
"""Elements whose value is a CodeableConcept (or a list of them) on the resources written:
a dict there with only ``text`` is a CodeableConcept without any coding."""


def codeable_concepts(node: Any, key: str | None = None) -> Iterator[dict[str, Any]]:
    """Every CodeableConcept in ``node``: an object with a ``coding`` list, or one with only
    ``text`` where the element is a CodeableConcept. The ``anchor`` part of a time extension
    (relative-day, end, last-follow-up: which event day 0 is) is a reference to a concept
    written elsewhere, not a clinical statement, and is skipped."""
    if isinstance(node, dict):
        if node.get("url") == "anchor":
            return
        if isinstance(node.get("coding"), list) or (
            key in _CODEABLE_KEYS and set(node) == {"text"}
        ):
            yield node
            return
        for name, value in node.items():
            yield from codeable_concepts(value, name)
    elif isinstance(node, list):
        for item in node:
            yield from codeable_concepts(item, key)


def without_standard_code(
    resources: Iterable[dict[str, Any]],
    own_system: str,
    unverified: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[int, int]:
    """(CodeableConcepts with no coding of a standard system, all CodeableConcepts) over
    ``resources``: one whose codings are all the project's own (or that has none) counts as
    without; one with a standard coding beside an own one does not. A standard coding in
    ``unverified`` ((system URL, code) marked ``verified: false`` in the mappings: not read
    in a published artefact) does not count as standard either."""
    without = total = 0
    for resource in resources:
        for concept in codeable_concepts(resource):
            total += 1
            standard = {
                (c.get("system"), c.get("code"))
                for c in concept.get("coding") or ()
                if isinstance(c, dict) and c.get("system") != own_system
            }
            without += not (standard - unverified)
    return without, total


def without_standard_code_by_code(
    resources: Iterable[dict[str, Any]],
    own_system: str,
    unverified: frozenset[tuple[str, str]] = frozenset(),
) -> Counter[str]:
    """The CodeableConcepts :func:`without_standard_code` counts as without, by what they
    carry: their codes joined with ``+`` (the project's own, or standard ones marked
    unverified), or ``text: ...`` for one with no coding; which concepts keep a fixture's
    share up."""
    found: Counter[str] = Counter()
    for resource in resources:
        for concept in codeable_concepts(resource):
            codings = [c for c in concept.get("coding") or () if isinstance(c, dict)]
            standard = {
                (c.get("system"), c.get("code")) for c in codings if c.get("system") != own_system
            }
            if standard - unverified:
                continue
            codes = "+".join(str(c.get("code")) for c in codings)
            found[codes or f"text: {concept.get('text', '')}"] += 1
    return found


def unverified_codings(
    concepts: Mapping[str, Mapping[str, Any]], systems: Mapping[str, str]
) -> frozenset[tuple[str, str]]:
    """(system URL, code) of every coding marked ``verified: false`` in terminology groups
    ``concepts`` (word -> an object with ``codings``), systems by key."""
    return frozenset(
        (systems.get(c.system, c.system), c.code)
        for words in concepts.values()
        for meaning in words.values()
        for c in getattr(meaning, "codings", ())
        if not c.verified
    )
