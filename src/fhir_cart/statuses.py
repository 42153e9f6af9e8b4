"""Compat shim, removed after merge: the module moved to fhir_cart.library.statuses."""

from fhir_cart.library.statuses import *  # noqa: F403
