"""Compat shim, removed after merge: the module moved to fhir_cart.library.study_mapping."""

from fhir_cart.library.study_mapping import *  # noqa: F403
