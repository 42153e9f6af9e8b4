"""Helpers for tests and demos: a real local FHIR server."""

from fhir_cart.testing.fhir_server import SekmetServer, ensure_sekmet

__all__ = ["SekmetServer", "ensure_sekmet"]
