"""The pairs people decide: the review band and identifier links the other fields
contradict, with the evidence for and against in encoded form (which comparison agreed, and
how), never a compared value; and the decisions that settle them.

Pure: links and decisions in, links to cluster, pairs kept apart and review rows out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fhir_cart.registry.decisions import Decision
from fhir_cart.registry.links import Link

__all__ = ["ReviewItem", "Settled", "describe", "rivalled", "settle"]

_DATE_LEVELS = {
    5: "exact",
    4: "day and month transposed",
    3: "one character off",
    2: "within 7 days",
    1: "within 30 days",
}
_LEVELS: dict[str, dict[int, str]] = {
    "sex": {1: "same"},
    "identifier": {1: "same"},
    "birth_ym": {
        6: "same birth date",
        5: "day and month transposed",
        4: "same year and month, another day",
        3: "same year and month",
        2: "same year",
        1: "one character off",
    },
}
_NAME_LEVELS = {
    5: "same spelling",
    4: "same sound",
    3: "a word in common",
    2: "most letter pairs shared",
    1: "many letter pairs shared",
}


def describe(evidence: Iterable[tuple[str, int]]) -> tuple[list[str], list[str], list[str]]:
    """Evidence -> (for: ``field: how it agrees``, against: fields that differ, missing:
    fields one record lacks)."""
    agree, differ, missing = [], [], []
    for name, level in evidence:
        if level < 0:
            missing.append(name)
        elif level == 0:
            differ.append(name)
        else:
            levels = _NAME_LEVELS if name.startswith("name_") else _DATE_LEVELS
            label = _LEVELS.get(name, levels).get(level, f"level {level}")
            agree.append(f"{name}: {label}")
    return agree, differ, missing


@dataclass(frozen=True)
class ReviewItem:
    link: Link
    reason: str
    """``review band`` or ``identifier contradicted``."""

    def row(self) -> list[str]:
        agree, differ, missing = describe(self.link.evidence)
        return [
            self.link.left,
            self.link.right,
            f"{self.link.probability:.6f}",
            self.reason,
            "; ".join(agree),
            "; ".join(differ),
            "; ".join(missing),
        ]


REVIEW_HEADER = ["left", "right", "probability", "reason", "agree", "differ", "missing"]


@dataclass
class Settled:
    links: list[Link]
    """What the clusters are made of: decided links, identifier links not contradicted,
    probabilistic links (those below the threshold are not taken)."""
    apart: list[tuple[str, str]]
    review: list[ReviewItem]
    unknown: list[Decision]
    """Decisions on records that are not in this build."""


def settle(
    identifier: Sequence[Link],
    probabilistic: Sequence[Link],
    contradicted: Mapping[tuple[str, str], Link],
    decisions: Mapping[tuple[str, str], Decision],
    records: set[str],
    threshold: float,
) -> Settled:
    """Links after people's decisions. ``contradicted``: identifier pairs the other fields
    speak against (their evidence), which go to review unless decided."""
    decided = {p: d for p, d in decisions.items() if p[0] in records and p[1] in records}
    links = [Link(*p, 1.0, "decided") for p, d in sorted(decided.items()) if d.link]
    apart = sorted(p for p, d in decided.items() if not d.link)
    review = []
    listed = set(decided)
    held = set()  # contradicted identifier pairs wait for people, whatever their score
    for link in identifier:
        pair = (min(link.left, link.right), max(link.left, link.right))
        listed.add(pair)  # in review once at most, and never when an identifier links it
        if pair in contradicted and pair not in decided:
            review.append(ReviewItem(contradicted[pair], "identifier contradicted"))
            held.add(pair)
        elif pair not in contradicted:
            links.append(link)
    for link in probabilistic:
        if (link.left, link.right) in held:
            continue  # twins share birth date and names: their score can reach 1.0
        if link.probability >= threshold:
            links.append(link)
        elif (link.left, link.right) not in listed:
            review.append(ReviewItem(link, "review band"))
    unknown = [d for p, d in sorted(decisions.items()) if p not in decided]
    return Settled(links, apart, sorted(review, key=lambda r: r.link), unknown)


def rivalled(
    identifier: Iterable[Link],
    probabilistic: Iterable[Link],
    centre_of: Mapping[str, str],
    threshold: float,
) -> set[tuple[str, str]]:
    """Identifier pairs (smaller pseudonym first) where one record is linked by probability
    (at ``threshold`` or more) to another record of the other's centre: it cannot be both
    patients. That is how a twin's insurance number typed into the co-twin's record looks
    when the co-twin is seen at the same centres (the record matches its own twin's record
    there by every other field), even when the twins share sex, names and dates enough for
    the contradiction check to let the identifier link pass."""
    strong: dict[tuple[str, str], set[str]] = {}
    for link in probabilistic:
        if link.probability >= threshold:
            for a, b in ((link.left, link.right), (link.right, link.left)):
                strong.setdefault((a, centre_of.get(b, "")), set()).add(b)
    found = set()
    for link in identifier:
        for a, b in ((link.left, link.right), (link.right, link.left)):
            if strong.get((a, centre_of.get(b, "")), set()) - {b}:
                found.add((min(a, b), max(a, b)))
    return found
