"""The use cases :class:`fhir_cart.application.Application` owns, too long to sit in it:

- ``study``: map a study file, read one (or FHIR NDJSON) into cases, preview bundles, the
  summary's inputs, the conformance artefacts;
- ``registry``: build, extract, resolve and decide, with the registry key checks.

Each function takes the application (its settings decide everything) and is called through
an ``Application`` method; front ends never call them directly."""
