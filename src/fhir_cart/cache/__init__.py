"""The local SQL cache (SQLite by default, PostgreSQL by URL)."""

from fhir_cart.cache.store import (
    JOB_MARK,
    Cache,
    Key,
    Outcome,
    SentEntry,
    normalise_url,
    open_cache,
    run_owner,
    worker_name,
)

__all__ = [
    "JOB_MARK",
    "Cache",
    "Key",
    "Outcome",
    "SentEntry",
    "normalise_url",
    "open_cache",
    "run_owner",
    "worker_name",
]
