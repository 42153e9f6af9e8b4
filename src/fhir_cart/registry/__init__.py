"""Registries: several centres pooled into one pseudonymised, linked data set (issue 10).

Reference: docs/registry.md. Modules: ``definition`` (the registry file), ``pseudonyms``
(keyed pseudonyms and date protection), ``linkage`` (identifiers, then splink;
``links`` holds the Link both use), ``merge`` (source-of-truth rules, conflicts),
``protect``, ``quality``, ``tables``, ``fhir`` (ConceptMap, Provenance), ``artefacts`` (their
push), ``build`` (the build), ``workflow`` (the study's summaries), ``cli`` (``fhir-cart
registry``). Settings to build and push: ``fhir_cart.application.Application.registry_build``.

Nothing is imported here, so that ``fhir-cart --help`` does not load pyarrow and splink:
import from the modules (``fhir_cart.registry.build.build_registry``)."""
