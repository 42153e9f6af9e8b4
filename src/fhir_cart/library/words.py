"""Words a study's own library file adds to the terminology (its ``value_sets:``): to a
vocabulary of mappings/terminology.yaml or to one of its own, each with its codings and
their sources, as terminology.yaml writes them.

A coding's ``system`` is a key of terminology.yaml's ``systems``, or ``study``: the study's
own CodeSystem (``<canonical>/CodeSystem/<code_system>``, published by ``fhir-cart artefacts
--mapping``). :func:`word_problems` says what is refused; :func:`with_words` gives the
terminology with the words added (shipped words first, never changed).
"""

from __future__ import annotations

from collections.abc import Mapping

from fhir_cart.library.terminology import Concept, Terminology, TerminologyFile

__all__ = ["STUDY_SYSTEM", "with_words", "word_problems", "words_data"]

STUDY_SYSTEM = "study"
"""The coding system key of a study's own CodeSystem in its library file."""

Words = Mapping[str, Mapping[str, Concept]]


def word_problems(words: Words, terms: TerminologyFile, study_system: str | None) -> list[str]:
    """What refuses the added words: a word the vocabulary already has, an unknown system,
    ``system: study`` without ``canonical``, a ``within`` naming no word, a word with no
    coding (it would be text only and could not be read back by a code)."""
    found: list[str] = []
    for group, added in words.items():
        shipped = terms.concepts.get(group, {})
        for word, meaning in added.items():
            where = f"value_sets.{group}.{word}"
            if word in shipped:
                found.append(
                    f"{where}: already a word of the shipped vocabulary {group!r}; use it as "
                    "it is, or give the study's word another key"
                )
            if meaning.within is not None and meaning.within not in {*shipped, *added}:
                found.append(f"{where}.within: no word {meaning.within!r} in {group!r}")
            if not meaning.codings:
                found.append(
                    f"{where}: no coding; a word is written and read back by its codes: give "
                    "it a standard code with its source, or its own code with `system: study` "
                    "(the study's CodeSystem, needs `canonical:`)"
                )
            twin = _same_codes(meaning, {**shipped, **added}, word)
            if twin is not None:
                found.append(
                    f"{where}: every code of it is a code of word {twin!r} too, so written to "
                    f"FHIR it cannot be told from {twin!r} when read back; give it a code of "
                    "its own (a standard one, or `system: study` with `canonical:`)"
                )
            for coding in meaning.codings:
                if coding.system == STUDY_SYSTEM and study_system is None:
                    found.append(
                        f"{where}: `system: study` is the study's own CodeSystem, which needs "
                        "`canonical:` (the study's base URL) in the library file"
                    )
                elif coding.system != STUDY_SYSTEM and coding.system not in terms.systems:
                    found.append(
                        f"{where}: unknown system key {coding.system!r} (a key of systems in "
                        "mappings/terminology.yaml, or `study`)"
                    )
    return found


def _same_codes(meaning: Concept, words: Mapping[str, Concept], word: str) -> str | None:
    """Another word of the vocabulary carrying every code ``meaning`` carries, if any."""
    mine = {(c.system, c.code) for c in meaning.codings}
    if not mine:
        return None
    for other, concept in words.items():
        if other != word and mine <= {(c.system, c.code) for c in concept.codings}:
            return other
    return None


def words_data(data: TerminologyFile, words: Words, study_system: str | None) -> TerminologyFile:
    """``data`` with the words added (check :func:`word_problems` first)."""
    if not words:
        return data
    groups = {group: dict(found) for group, found in data.concepts.items()}
    for group, added in words.items():
        groups.setdefault(group, {}).update(added)
    systems = dict(data.systems)
    if study_system is not None:
        systems[STUDY_SYSTEM] = study_system
    return data.model_copy(update={"concepts": groups, "systems": systems})


def with_words(terminology: Terminology, words: Words, study_system: str | None) -> Terminology:
    """A terminology like ``terminology`` (strict, date, country, what it has emitted) with
    the words added."""
    if not words:
        return terminology
    return terminology.over(words_data(terminology.data, words, study_system))
