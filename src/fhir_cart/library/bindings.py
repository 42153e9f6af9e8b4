"""The required value bindings of the profiles concepts claim (mappings/profiles.yaml
``bound_values``): a concept whose values would fall outside one is refused."""

from __future__ import annotations

from collections.abc import Mapping

from fhir_cart.library.concepts import ConceptDef
from fhir_cart.library.profiles import Profiles
from fhir_cart.library.terminology import TerminologyFile

__all__ = ["bound_value_problems"]


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
