"""Compat shim, removed after merge: the module moved to fhir_cart.library.terminology."""

from fhir_cart.library.terminology import *  # noqa: F403
