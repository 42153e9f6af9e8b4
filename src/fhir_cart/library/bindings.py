"""The required value bindings of the profiles concepts claim (mappings/profiles.yaml
``bound_values``): a concept whose values would fall outside one is refused."""

from __future__ import annotations

from collections.abc import Mapping

from fhir_cart.library.concepts import ConceptDef, ConceptsFile, StudyLibraryFile
from fhir_cart.library.profiles import Profiles
from fhir_cart.library.terminology import TerminologyFile
from fhir_cart.library.words import STUDY_SYSTEM, word_problems

__all__ = ["bound_value_problems", "study_word_problems"]


def bound_value_problems(
    concepts: Mapping[str, ConceptDef], terms: TerminologyFile, profiles: Profiles
) -> list[str]:
    """Concepts whose values would fall outside the required binding of the profile they
    claim; each names the concept, the profile, the value set and the fix."""
    found: list[str] = []
    for key, concept in concepts.items():
        bound = profiles.bound_values.get(concept.profile or "")
        if bound is None:
            continue
        where = (
            f"concepts.{key}: claims profile {concept.profile!r} "
            f"({profiles.profiles.get(concept.profile or '', '?')}), whose {bound.element} "
            f"is bound ({bound.strength}) to {bound.value_set}"
        )
        fix = "drop `profile:` (the concept is then written without the profile's claim)"
        value = concept.value
        if value.type != "coded" or value.value_set is None:
            found.append(f"{where}; a {value.type} value is not in it; {fix}")
            continue
        if value.open:
            found.append(
                f"{where}; `open: true` writes a word outside value set {value.value_set!r} "
                f"as text, which is not in it; set `open: false`, or {fix}"
            )
        for word, meaning in terms.concepts.get(value.value_set, {}).items():
            codes = {f"{terms.systems.get(c.system, c.system)}|{c.code}" for c in meaning.codings}
            if not codes & bound.codes:
                shown = ", ".join(sorted(codes)) or "no coding"
                found.append(
                    f"{where}; word {word!r} of value set {value.value_set!r} has no code "
                    f"in it ({shown}); give the word a coding of that value set "
                    f"({bound.source}), use another value set, or {fix}"
                )
    return found


def study_word_problems(
    own: StudyLibraryFile, shared: ConceptsFile, terms: TerminologyFile, profiles: Profiles
) -> list[str]:
    """What refuses the words a study's library file adds (``value_sets``): those of
    :func:`fhir_cart.library.words.word_problems`, a word added to a vocabulary whose values
    a concept writes into a profile's required binding (mCODE's disease status) without a
    code of the bound value set, and a word added to a closed shipped vocabulary that a
    shipped extension binds (required): the study's FHIR would not validate there."""
    found = word_problems(own.value_sets, terms, own.system_url)
    systems = {**terms.systems, STUDY_SYSTEM: own.system_url or STUDY_SYSTEM}
    concepts = {**shared.concepts, **own.concepts}
    for group, words in own.value_sets.items():
        for key, concept in concepts.items():
            bound = profiles.bound_values.get(concept.profile or "")
            if bound is None or concept.value.value_set != group:
                continue
            for word, meaning in words.items():
                codes = {f"{systems.get(c.system, c.system)}|{c.code}" for c in meaning.codings}
                if codes & bound.codes:
                    continue
                found.append(
                    f"value_sets.{group}.{word}: concept {key!r} writes the words of "
                    f"{group!r} into {bound.element} of profile {concept.profile!r}, bound "
                    f"({bound.strength}) to {bound.value_set}, and the word has no code in it "
                    f"({', '.join(sorted(codes)) or 'no coding'}); add the coding of the status "
                    f"it falls under ({bound.source}) beside its own code, with `within:` that "
                    "word, or put the word in a vocabulary of the study's own concept without "
                    "`profile:`"
                )
        if group not in terms.concepts:
            continue
        for key, attr in {**shared.attributes, **shared.patient_attributes}.items():
            if attr.value_set == group and attr.fhir == "extension" and not attr.open:
                found.append(
                    f"value_sets.{group}: the shipped vocabulary {group!r} is the required "
                    f"binding of the shipped extension of attribute {key!r} (closed: not "
                    "`open`); a word added to it would not validate there; give the study "
                    "its own attribute with a vocabulary of its own"
                )
    return found
