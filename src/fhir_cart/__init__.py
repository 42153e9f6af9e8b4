"""fhir_cart: move clinical case-series data between study format and FHIR R4."""

__version__ = "0.1.0"

__all__ = ["__version__"]
