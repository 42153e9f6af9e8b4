"""Helpers for tests and demos: real local FHIR servers (sekmet-fhir, Medplum's router)."""

from fhir_cart.testing.fhir_server import LocalFhirServer, SekmetServer, ensure_sekmet
from fhir_cart.testing.medplum_server import MedplumServer, ensure_medplum

__all__ = [
    "SERVERS",
    "LocalFhirServer",
    "MedplumServer",
    "SekmetServer",
    "ensure_medplum",
    "ensure_sekmet",
]

SERVERS: dict[str, type[LocalFhirServer]] = {"sekmet": SekmetServer, "medplum": MedplumServer}
"""The local FHIR server implementations, by name."""
