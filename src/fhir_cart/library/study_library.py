"""A study's own library file checked before any data is read (``fhir-cart library check``):
what it adds, where its codes and extensions are published, and what is refused.

Refused (problems): a YAML or key error (file, key path, line), a key the shipped library
already defines, a value set, attribute or code system that does not exist, and a concept
claiming a profile whose value element has a required binding (mappings/profiles.yaml
``bound_values``, e.g. mCODE CancerDiseaseStatus ``Observation.value[x]``) while a word of
its value set has no code in the bound value set, its value is not coded, or it is open (a
word outside it would be written as text). The same bound-value rule refuses such a concept
when a mapping or a pull loads the library (:meth:`fhir_cart.library.Library.concepts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fhir_cart.errors import ConfigError
from fhir_cart.library.bindings import bound_value_problems, study_word_problems
from fhir_cart.library.concepts import (
    ConceptLibrary,
    ConceptsFile,
    StudyLibraryFile,
    library_problems,
    merge_concepts,
    read_concepts_file,
)
from fhir_cart.library.core import Library
from fhir_cart.library.profiles import Profiles
from fhir_cart.library.terminology import Coding, TerminologyFile
from fhir_cart.library.units import unit_problems, unit_warnings
from fhir_cart.library.words import STUDY_SYSTEM, words_data

__all__ = ["LibraryReport", "bound_value_problems", "check_library_file", "with_library_file"]


@dataclass
class LibraryReport:
    """What :func:`check_library_file` found: ``problems`` refuse the file; ``notes`` say
    what it adds and where it is published; ``warnings`` do not refuse it."""

    path: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_library_file(path: Path, library: Library) -> LibraryReport:
    """Everything :class:`LibraryReport` says about a study's library file (``library:`` of
    a mapping), checked against ``library`` without reading any data."""
    from fhir_cart.library.study_mapping import read_study_library

    report = LibraryReport(path)
    try:
        own = read_study_library(path)
    except ConfigError as exc:
        report.problems.append(exc.message)
        return report
    shipped = library.terminology().data
    shared = read_concepts_file(library.folder / "concepts.yaml")
    try:
        merged = merge_concepts(shared, own)
    except ConfigError as exc:
        report.problems.append(exc.message)
        merged = _without_clashes(shared, own)
    report.problems += study_word_problems(own, shared, shipped, library.profiles())
    terms = words_data(shipped, own.value_sets, own.system_url)
    report.problems += library_problems(merged, terms)
    report.problems += bound_value_problems(own.concepts, terms, library.profiles())
    report.problems += unit_problems(own.units, shipped)
    report.warnings += unit_warnings(own.units)
    _describe(report, own, terms, library.profiles())
    _describe_words(report, own, shipped)
    _describe_units(report, own, shipped)
    return report


def _describe_units(report: LibraryReport, own: StudyLibraryFile, shipped: TerminologyFile) -> None:
    """A note per added unit (or synonyms of a shipped one)."""
    for key, unit in own.units.items():
        spelt = f", read from {', '.join(unit.synonyms)}" if unit.synonyms else ""
        old = shipped.units.get(key)
        if old is not None:
            report.notes.append(f"unit {key} (shipped, {old.display!r}){spelt}")
        else:
            report.notes.append(f"unit {key} ({unit.display!r}){spelt}")


def with_library_file(library: Library, path: Path | None) -> ConceptLibrary:
    """The concept library of ``library`` plus a study's library file (its concepts, words
    with their synonyms, units), for the mapping assistant; a file that does not check is a
    ConfigError naming it and each reason."""
    from fhir_cart.library.study_mapping import read_study_library

    if path is None:
        return library.concepts()
    own = read_study_library(path)
    try:
        return library.concepts(own)
    except ConfigError as exc:
        raise ConfigError(f"library file {path} is refused: {exc.message}") from None


def _without_clashes(shared: ConceptsFile, own: StudyLibraryFile) -> ConceptsFile:
    return ConceptsFile(
        concepts={**own.concepts, **shared.concepts},
        attributes={**own.attributes, **shared.attributes},
        patient_attributes={**own.patient_attributes, **shared.patient_attributes},
    )


def _describe(
    report: LibraryReport, own: StudyLibraryFile, terms: TerminologyFile, profiles: Profiles
) -> None:
    local = terms.systems[terms.own_code_system.key].rstrip("/") + "-local"
    system = own.system_url or local
    report.notes.append(
        f"adds {len(own.concepts)} concepts, {len(own.attributes)} attributes, "
        f"{len(own.patient_attributes)} patient attributes"
    )
    for key, concept in own.concepts.items():
        if concept.codings:
            codes = _codes_text(concept.codings, terms.systems)
            report.notes.append(f"concept {key} ({concept.kind}): {codes}")
            report.warnings += [
                f"concept {key}: coding {c.system}|{c.code} is verified: false (source "
                f"{c.source!r}); --strict runs refuse it"
                for c in concept.codings
                if not c.verified
            ]
        else:
            report.notes.append(f"concept {key} ({concept.kind}): own code {system}|{key}")
        if concept.profile is not None:
            bound = profiles.bound_values.get(concept.profile)
            checked = f", its values checked against {bound.value_set}" if bound else ""
            report.notes.append(f"concept {key}: claims profile {concept.profile!r}{checked}")
    for group in (own.attributes, own.patient_attributes):
        for key, attr in group.items():
            url = attr.extension_url or f"(extension base)/{key.replace('_', '-')}"
            guide = profiles.guide_of(url)
            whose = f" ({guide}'s: read and written as is, not published)" if guide else ""
            report.notes.append(f"attribute {key} ({attr.type}): {attr.fhir} {url}{whose}")
    if own.canonical is None:
        if any(not c.codings for c in own.concepts.values()) or own.attributes or own.value_sets:
            report.warnings.append(
                f"no `canonical:`: the own codes are in {local}, the extensions under "
                "fhir_cart's extension base and the added words in no ValueSet, which no "
                "package of this study publishes; set `canonical:` to the study's base URL"
            )
    else:
        report.notes.append(
            f"published by `fhir-cart artefacts --mapping M`: CodeSystem {own.system_url}, "
            f"extensions {own.canonical}/StructureDefinition/<key>"
            + (f", value sets {own.canonical}/ValueSet/<vocabulary>" if own.value_sets else "")
        )


def _codes_text(codings: Iterable[Coding], systems: Mapping[str, str]) -> str:
    """``system|code`` of each coding (the system's URL where known), unverified ones
    marked: how ``library check`` lists a concept's or a word's codes."""
    return ", ".join(
        f"{systems.get(c.system, c.system)}|{c.code}" + ("" if c.verified else " (unverified)")
        for c in codings
    )


def _describe_words(report: LibraryReport, own: StudyLibraryFile, shipped: TerminologyFile) -> None:
    """A note per added word (its vocabulary, shipped or the study's, and its codes), a
    warning per unverified code."""
    if not own.value_sets:
        return
    report.notes.append(
        f"adds {own.words_added} words to {len(own.value_sets)} vocabularies (value_sets)"
    )
    systems = {**shipped.systems, STUDY_SYSTEM: own.system_url or STUDY_SYSTEM}
    for group, words in own.value_sets.items():
        whose = "shipped vocabulary" if group in shipped.concepts else "the study's vocabulary"
        for word, meaning in words.items():
            codes = _codes_text(meaning.codings, systems)
            within = f", within {meaning.within}" if meaning.within else ""
            report.notes.append(f"word {word} of {whose} {group}{within}: {codes}")
            report.warnings += [
                f"value_sets.{group}.{word}: coding {c.system}|{c.code} is verified: false "
                f"(source {c.source!r}); --strict runs refuse it"
                for c in meaning.codings
                if not c.verified
            ]
