"""Linking one patient's records across centres.

1. Deterministic: records whose shared identifiers (compared as keyed pseudonyms) agree.
2. Probabilistic (Fellegi-Sunter, with splink): the birth date (whole, or year and month),
   sex, the names (keyed tokens and Bloom filters, :mod:`.names`) and the first date of key
   events (diagnosis, CAR-T infusion, transplant). Each date comparison knows the
   usual corruptions: exact, day and month transposed, one typed character, within 30 days.
   splink runs embedded on DuckDB; the same model runs on Spark (``backend: spark``) when a
   registry outgrows one machine.
3. Clusters: links are taken strongest first (people's must-link decisions, identifiers,
   then probability), and a link is refused when it would put two records of the same
   centre into one patient (so a cluster holds at most one record per centre), or two
   records people decided are not one patient (cannot-link).

The linkage table (:class:`LinkRecord`) holds exact dates and lives in memory only; what
leaves this module is pseudonyms and probabilities.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_cart.records import Case
from fhir_cart.registry.definition import LinkageDef
from fhir_cart.registry.links import Link, Method, content_order
from fhir_cart.registry.names import bloom, name_words, soundex
from fhir_cart.registry.pseudonyms import Pseudonymiser

__all__ = [
    "Link",
    "LinkRecord",
    "Linkage",
    "Method",
    "cluster",
    "deterministic_links",
    "link_records",
    "linkage_record",
    "probabilistic_links",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkRecord:
    """One centre patient's linkage keys (in memory only: it holds exact dates)."""

    centre: str
    pseudonym: str
    sex: str | None = None
    birth_year: int | None = None
    birth_month: int | None = None
    birth_date: dt.date | None = None
    """The whole birth date, when the centre recorded its day."""
    dates: dict[str, dt.date | None] = field(default_factory=dict)
    identifiers: tuple[str, ...] = ()
    names: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    """Name attribute -> keyed tokens of its normalised spelling and of its sound, its
    keyed Bloom filter (:func:`~fhir_cart.registry.names.bloom`), and keyed tokens of its
    first and last word (a double surname written in part: 'García López', 'García').
    An extract made by an older fhir-cart lacks the filter or the words."""


@dataclass
class Linkage:
    """The outcome: each record's registry patient and the links that made it."""

    patient_of: dict[str, str]
    """Centre pseudonym -> the smallest centre pseudonym of its patient (the caller names
    the registry patient, see :func:`fhir_cart.registry.ids.assign_ids`)."""
    links: list[Link]
    refused: list[Link]
    """Links not taken because they would join two records of one centre."""
    blocked: list[Link] = field(default_factory=list)
    """Links not taken because they would join two records decided apart (cannot-link)."""

    def members(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for record, patient in sorted(self.patient_of.items()):
            found.setdefault(patient, []).append(record)
        return found


def _first_date(case: Case, concept: str) -> dt.date | None:
    """The first day of the concept's events; a year or a month is no day to compare, so
    an event known only to one gives no evidence (as a missing date does)."""
    dates = [
        e.when.date
        for e in case.of(concept)
        if e.when is not None and e.when.date and not e.when.is_partial
    ]
    return min(dates) if dates else None


def linkage_record(
    case: Case,
    linkage: LinkageDef,
    pseudonyms: Pseudonymiser,
    keyed: tuple[tuple[str, ...], dict[str, tuple[str, ...] | None]] | None = None,
) -> LinkRecord:
    """The linkage keys of one centre's patient. ``keyed``: the record is sealed
    (:mod:`.extract`): its study id is already its pseudonym, and these are its identifier
    pseudonyms and name tokens."""
    patient = case.patient
    if keyed is not None:
        return _record(case, linkage, patient.study_id, keyed[0], keyed[1])
    identifiers = []
    for kind in linkage.identifiers:
        raw = patient.study_id if kind == "study_id" else patient.attributes.get(kind)
        if raw is not None and str(raw).strip():
            identifiers.append(pseudonyms.identifier(kind, str(raw)))
    names: dict[str, tuple[str, ...] | None] = {}
    for kind in linkage.names:
        words = name_words(str(patient.attributes.get(kind) or ""))
        clear = "".join(words)
        names[kind] = (
            (
                pseudonyms.token(f"name:{kind}", clear),
                pseudonyms.token(f"name-sound:{kind}", soundex(clear)),
                bloom(clear, pseudonyms.bloom_key(kind)),
                pseudonyms.token(f"name-word:{kind}", words[0]),
                pseudonyms.token(f"name-word:{kind}", words[-1]),
            )
            if clear
            else None
        )
    pseudonym = pseudonyms.patient(patient.centre, patient.study_id)
    return _record(case, linkage, pseudonym, tuple(identifiers), names)


def _record(
    case: Case,
    linkage: LinkageDef,
    pseudonym: str,
    identifiers: tuple[str, ...],
    names: dict[str, tuple[str, ...] | None],
) -> LinkRecord:
    patient = case.patient
    birth = patient.birth_date if linkage.birth else None
    sex = patient.sex if linkage.sex and patient.sex not in (None, "unknown") else None
    return LinkRecord(
        centre=patient.centre,
        pseudonym=pseudonym,
        sex=sex,
        birth_year=birth.year if birth else None,
        birth_month=birth.month if birth and patient.birth_precision != "year" else None,
        birth_date=birth if birth and patient.birth_precision == "day" else None,
        dates={name: _first_date(case, concept) for name, concept in linkage.dates.items()},
        identifiers=tuple(identifiers),
        names=names,
    )


def deterministic_links(records: Iterable[LinkRecord]) -> list[Link]:
    """Records of different centres that share an identifier pseudonym."""
    holders: dict[str, list[LinkRecord]] = {}
    for record in records:
        for token in record.identifiers:
            holders.setdefault(token, []).append(record)
    links = set()
    for group in holders.values():
        for a in group:
            for b in group:
                if a.centre < b.centre:
                    links.add(Link(a.pseudonym, b.pseudonym, 1.0, "identifier"))
    return sorted(links)


_RANK = {"decided": 0, "identifier": 1, "probabilistic": 2}


def cluster(
    records: Sequence[LinkRecord],
    links: Iterable[Link],
    threshold: float,
    apart: Iterable[tuple[str, str]] = (),
) -> Linkage:
    """Registry patients from links: strongest first, never two records of one centre,
    never two records of a pair in ``apart`` (cannot-link decisions)."""
    parent = {r.pseudonym: r.pseudonym for r in records}
    centres = {r.pseudonym: {r.centre} for r in records}
    members = {r.pseudonym: {r.pseudonym} for r in records}
    never: dict[str, set[str]] = {}
    for a, b in apart:
        never.setdefault(a, set()).add(b)
        never.setdefault(b, set()).add(a)

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    taken: list[Link] = []
    refused: list[Link] = []
    blocked: list[Link] = []
    # ties broken by the records' content, not their pseudonyms: which of two equally
    # likely links is taken must not depend on the key
    rank = {r.pseudonym: n for n, r in enumerate(sorted(records, key=content_order))}

    def strength(k: Link) -> tuple[Any, ...]:
        ends = sorted((rank.get(k.left, -1), rank.get(k.right, -1)))
        return (_RANK[k.method], -k.probability, ends, k.left, k.right)

    order = sorted(links, key=strength)
    for link in order:
        if link.probability < threshold or link.left not in parent or link.right not in parent:
            continue
        a, b = root(link.left), root(link.right)
        if a == b:
            taken.append(link)
        elif centres[a] & centres[b]:
            refused.append(link)
        elif any(never.get(m, set()) & members[b] for m in members[a]):
            blocked.append(link)
        else:
            a, b = min(a, b), max(a, b)
            parent[b] = a
            centres[a] |= centres.pop(b)
            members[a] |= members.pop(b)
            taken.append(link)
    groups: dict[str, list[str]] = {}
    for record in records:
        groups.setdefault(root(record.pseudonym), []).append(record.pseudonym)
    return Linkage(
        patient_of={m: r for r, members in groups.items() for m in members},
        links=sorted(taken),
        refused=sorted(refused),
        blocked=sorted(blocked),
    )


def link_records(
    records: Sequence[LinkRecord],
    linkage: LinkageDef,
    *,
    spark: Any = None,
) -> Linkage:
    """Deterministic and (when the definition asks) probabilistic links, clustered.
    Registry pseudonyms are assigned by the caller from :meth:`Linkage.members`."""
    links = deterministic_links(records)
    if linkage.probabilistic and len({r.centre for r in records}) > 1:
        links += probabilistic_links(records, linkage, spark=spark)
    return cluster(records, links, linkage.threshold)


def probabilistic_links(
    records: Sequence[LinkRecord], linkage: LinkageDef, *, spark: Any = None
) -> list[Link]:
    """Pairs of records of different centres whose match probability reaches the
    threshold (splink on DuckDB, or on Spark when ``linkage.backend`` says so)."""
    from fhir_cart.registry import _splink

    return list(_splink.predict(records, linkage, spark=spark)[0])
