"""Compat shim, removed after merge: study definitions moved to fhir_cart.library.studies,
their evaluation to fhir_cart.report.evaluate."""

from fhir_cart.library.studies import *  # noqa: F403
from fhir_cart.report.evaluate import *  # noqa: F403
