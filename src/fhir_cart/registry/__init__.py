"""Registries: several centres pooled into one pseudonymised, linked data set (issue 10).

Reference: docs/registry.md. Modules: ``definition`` (the registry file), ``pseudonyms``
(keyed pseudonyms and date protection), ``linkage`` (identifiers, then splink;
``links`` holds the Link both use), ``merge`` (source-of-truth rules, conflicts),
``protect``, ``quality``, ``tables``, ``fhir`` (ConceptMap, Provenance), ``artefacts`` (their
push), ``build`` (the build), ``workflow`` (the study's summaries), ``cli`` (``fhir-cart
registry``). Settings to build and push: ``fhir_cart.application.Application.registry_build``."""

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
