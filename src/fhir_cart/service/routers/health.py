"""Liveness (the only route without an API key) and readiness (the cache answers)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from fhir_cart import __version__
from fhir_cart.service import schemas as s
from fhir_cart.service.deps import Auth, CacheDep

__all__ = ["router"]

router = APIRouter(tags=["service"])


@router.get("/health", response_model=s.Health)
def health() -> s.Health:
    return s.Health(status="ok", version=__version__)


@router.get("/ready", response_model=s.Health, dependencies=Auth)
def ready(cache: CacheDep) -> s.Health:
    with cache.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return s.Health(status="ready", version=__version__)
