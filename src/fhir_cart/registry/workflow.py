"""What the registry use case needs besides the build: the summaries of the registry's study
definition. The use case itself (settings -> key, library, summaries -> build -> optional
push) is :meth:`fhir_cart.application.Application.registry_build`, which every front end
calls."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fhir_cart.library import Library, names_a_file
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.library.studies import load_study
from fhir_cart.records import Case
from fhir_cart.registry.build import Summariser
from fhir_cart.registry.definition import RegistryDef
from fhir_cart.report.evaluate import summarise

__all__ = ["study_summariser"]


def study_summariser(
    definition: RegistryDef, library: Library | None = None, concepts: ConceptLibrary | None = None
) -> Summariser | None:
    """The measures of the registry's study definition (spec §5), as plain dicts; a study
    name is one of ``library`` (default: the shipped one), checked against ``concepts``
    (default: the library's; the registry's own library files add to them)."""
    if definition.study is None:
        return None
    name = definition.study  # a path resolves from the registry file, never the cwd
    where = definition.resolve(Path(name)) if names_a_file(name) else name
    study = load_study(where, library, concepts=concepts)

    def measures(cases: Sequence[Case]) -> list[dict[str, Any]]:
        return [
            {"id": getattr(r, "id", r.label), "label": r.label, "value": r.value}
            for r in summarise(list(cases), study)
        ]

    return measures
