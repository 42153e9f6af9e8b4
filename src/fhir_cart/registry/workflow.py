"""What the registry use case needs besides the build: the summaries of the registry's study
definition. The use case itself (settings -> key, library, summaries -> build -> optional
push) is :meth:`fhir_cart.application.Application.registry_build`, which every front end
calls."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fhir_cart.records import Case
from fhir_cart.registry.build import Summariser
from fhir_cart.registry.definition import RegistryDef

__all__ = ["study_summariser"]


def study_summariser(definition: RegistryDef) -> Summariser | None:
    """The measures of the registry's study definition (spec §5), as plain dicts."""
    if definition.study is None:
        return None
    summary: Any = importlib.import_module("fhir_cart.summary")  # spec §5, its own branch
    name = definition.study  # a path resolves from the registry file, never the cwd
    study = summary.load_study(
        definition.resolve(Path(name)) if summary.names_a_file(name) else name
    )

    def measures(cases: Sequence[Case]) -> list[dict[str, Any]]:
        return [
            {"id": getattr(r, "id", r.label), "label": r.label, "value": r.value}
            for r in summary.summarise(list(cases), study)
        ]

    return measures
