"""Kept for code written against ``fhir_cart.testing`` (the dev servers' package before it
became :mod:`fhir_cart.devservers`): its names, and its modules ``fhir_server``,
``medplum_server`` and ``registry_data`` as the very same module objects (so patching one
patches the other). New code imports from :mod:`fhir_cart.devservers`."""

import sys

from fhir_cart.devservers import (
    SERVERS,
    LocalFhirServer,
    MedplumServer,
    SekmetServer,
    ensure_medplum,
    ensure_sekmet,
    fhir_server,
    medplum_server,
    registry_data,
)

for _module in (fhir_server, medplum_server, registry_data):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module

__all__ = [
    "SERVERS",
    "LocalFhirServer",
    "MedplumServer",
    "SekmetServer",
    "ensure_medplum",
    "ensure_sekmet",
]
