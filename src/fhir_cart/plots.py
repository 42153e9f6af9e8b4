"""Compat shim, removed after merge: the module moved to fhir_cart.report.plots."""

from fhir_cart.report.plots import *  # noqa: F403
