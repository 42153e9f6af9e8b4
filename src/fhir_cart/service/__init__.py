"""The fhir_cart web service (FastAPI)."""
