"""Registries: several centres pooled into one pseudonymised, linked data set (issue 10).

Reference: docs/registry.md. Modules: ``definition`` (the registry file), ``pseudonyms``
(keyed pseudonyms and date protection), ``linkage`` (identifiers, then splink;
``links`` holds the Link both use), ``merge`` (source-of-truth rules, conflicts),
``protect``, ``quality``, ``tables``, ``fhir`` (ConceptMap, Provenance), ``artefacts`` (their
push), ``build`` (the build), ``workflow`` (the study's summaries), ``cli`` (``fhir-cart
registry``). Settings to build and push: ``fhir_cart.application.Application.registry_build``.

The public names below load their module on first use (PEP 562), so that ``fhir-cart --help``
does not load pyarrow and splink."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhir_cart.registry.build import BuildResult, CentreData, Registry, build_registry
    from fhir_cart.registry.definition import RegistryDef, load_registry
    from fhir_cart.registry.pseudonyms import Pseudonymiser, registry_key

__all__ = [
    "BuildResult",
    "CentreData",
    "Pseudonymiser",
    "Registry",
    "RegistryDef",
    "build_registry",
    "load_registry",
    "registry_key",
]

_HOME = {
    "BuildResult": "build",
    "CentreData": "build",
    "Registry": "build",
    "build_registry": "build",
    "RegistryDef": "definition",
    "load_registry": "definition",
    "Pseudonymiser": "pseudonyms",
    "registry_key": "pseudonyms",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
