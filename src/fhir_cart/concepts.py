"""Compat shim, removed after merge: the module moved to fhir_cart.library.concepts."""

from fhir_cart.library.concepts import *  # noqa: F403
