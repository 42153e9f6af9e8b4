"""Liveness (the only route without an API key: the service and its job worker) and
readiness (the cache answers)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from fhir_cart import __version__
from fhir_cart.application import now
from fhir_cart.service import schemas as s
from fhir_cart.service.deps import Auth, CacheDep
from fhir_cart.service.jobs import JOB_KINDS, Workers

__all__ = ["router"]

router = APIRouter(tags=["service"])


@router.get(
    "/health",
    response_model=s.Health,
    responses={503: {"model": s.Health, "description": "the job worker is dead"}},
)
def health(request: Request, response: Response, cache: CacheDep) -> s.Health:
    """200 while the service's job worker is alive (or jobs run elsewhere), 503 while it
    is dead (it is restarted within a second or so; a 503 that lasts means it keeps dying:
    see the log). Also the age of the oldest job waiting for a worker."""
    workers: Workers | None = getattr(request.app.state, "workers", None)
    worker = "separate" if workers is None else "alive" if workers.alive() else "dead"
    oldest = cache.oldest_pending(kinds=JOB_KINDS)
    waited = None if oldest is None else round((now() - oldest).total_seconds(), 3)
    if worker == "dead":
        response.status_code = 503
    return s.Health(
        status="ok" if worker != "dead" else "worker dead",
        version=__version__,
        worker=worker,
        worker_restarts=None if workers is None else workers.restarts,
        oldest_pending_seconds=waited,
    )


@router.get("/ready", response_model=s.Health, response_model_exclude_none=True, dependencies=Auth)
def ready(cache: CacheDep) -> s.Health:
    with cache.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return s.Health(status="ready", version=__version__)
