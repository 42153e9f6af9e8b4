"""The local SQL cache (SQLite by default, PostgreSQL by URL)."""

from fhir_cart.cache.store import (
    Cache,
    Key,
    Outcome,
    SentEntry,
    normalise_url,
    open_cache,
    worker_name,
)

__all__ = ["Cache", "Key", "Outcome", "SentEntry", "normalise_url", "open_cache", "worker_name"]
