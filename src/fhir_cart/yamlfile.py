"""Compat shim, removed after merge: the module moved to fhir_cart.library.yamlfile."""

from fhir_cart.library.yamlfile import *  # noqa: F403
