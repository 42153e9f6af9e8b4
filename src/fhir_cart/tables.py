"""Compat shim, removed after merge: the module moved to fhir_cart.report.tables."""

from fhir_cart.report.tables import *  # noqa: F403
