"""The dev servers, for tests and the demo: real local FHIR servers (sekmet-fhir, Medplum's
router) and synthetic registry data (``registry_data``). Was ``fhir_cart.testing`` (kept as
a shim for old imports)."""

from fhir_cart.devservers.fhir_server import LocalFhirServer, SekmetServer, ensure_sekmet
from fhir_cart.devservers.medplum_server import MedplumServer, ensure_medplum

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
