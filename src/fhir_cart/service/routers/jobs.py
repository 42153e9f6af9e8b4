"""Jobs: queueing pushes, pulls and registry builds (run by a worker), their status and
progress, per-resource outcomes, failures grouped by cause, and resuming."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query

from fhir_cart.application import Application, Cache
from fhir_cart.errors import ConfigError, FhirCartError
from fhir_cart.service import schemas as s
from fhir_cart.service.access import Principal, can_see_job, owner_params
from fhir_cart.service.deps import (
    AppDep,
    Auth,
    CacheDep,
    JobId,
    PrincipalDep,
    get_job,
    unprocessable,
    visible_job,
)
from fhir_cart.service.routers.study import NAME, mapping_path, read_upload, visible_upload
from fhir_cart.settings import ServerSettings

__all__ = ["router"]

router = APIRouter(tags=["jobs"], dependencies=[*Auth, Depends(visible_job)])


def named_server(app: Application, name: str) -> ServerSettings:
    """A server named in settings (422 otherwise: clients cannot name a URL)."""
    try:
        return app.server(name, url_allowed=False)
    except ConfigError as exc:
        raise HTTPException(422, exc.message) from exc


@router.post("/jobs/push", response_model=s.Job, status_code=202)
def start_push(app: AppDep, cache: CacheDep, body: s.PushRequest, principal: PrincipalDep) -> s.Job:
    if principal.role == "registry":
        raise HTTPException(403, "the registry role cannot push a centre's upload")
    server = named_server(app, body.server)
    visible_upload(app, body.upload_id, principal)
    _, _, meta = read_upload(app, body.upload_id)
    params = {
        **meta,
        "server": body.server,
        "upload_id": body.upload_id,
        "continue_on_error": body.continue_on_error,
        "job": True,
    }
    run_id = cache.create_run(kind="push", server=server.base_url, params=params, status="pending")
    return get_job(cache, run_id)


@router.post("/jobs/pull", response_model=s.Job, status_code=202)
def start_pull(app: AppDep, cache: CacheDep, body: s.PullRequest, principal: PrincipalDep) -> s.Job:
    if principal.role == "registry":
        raise HTTPException(403, "the registry role cannot pull a cohort (registry builds only)")
    server = named_server(app, body.server)
    if body.mapping is not None:
        try:  # a mapping or library file that cannot be read: refused now, not in the job
            app.study_library(mapping_path(app, body.mapping))
        except FhirCartError as exc:
            raise unprocessable(exc) from exc
    params = {**body.model_dump(), "job": True, **owner_params(principal)}
    run_id = cache.create_run(kind="pull", server=server.base_url, params=params, status="pending")
    return get_job(cache, run_id)


@router.post("/jobs/registry", response_model=s.Job, status_code=202)
def start_registry(
    app: AppDep, cache: CacheDep, body: s.RegistryRequest, principal: PrincipalDep
) -> s.Job:
    """Queue a registry build of ``<data_dir>/registries/<registry>.yaml`` (the registry
    goes to the job's folder; with ``server``, it is then pushed there)."""
    if principal.role == "centre":
        raise HTTPException(403, "the centre role cannot build the registry")
    if not NAME.match(body.registry):
        raise HTTPException(422, "registry name: lower-case letters, digits, '-' and '_' only")
    registry_file = app.registry_file(body.registry)
    if not registry_file.is_file():
        raise HTTPException(404, f"no registry named {body.registry!r}")
    server = named_server(app, body.server).base_url if body.server else ""
    params = {
        "registry_file": str(registry_file),
        "server": body.server,
        "force": body.force,
        "job": True,
        **owner_params(principal),
    }
    run_id = cache.create_run(kind="registry", server=server, params=params, status="pending")
    return get_job(cache, run_id)


@router.get("/jobs", response_model=list[s.Job])
def jobs(
    cache: CacheDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[s.Job]:
    return [s.Job.from_run(r) for r in visible_runs(cache, principal, limit, offset)]


def visible_runs(cache: Cache, principal: Principal, limit: int, offset: int) -> list[Any]:
    """The newest jobs the principal may see, ``offset`` of them skipped."""
    if principal.role == "admin":
        return cache.list_runs(limit=limit, offset=offset)
    found: list[Any] = []
    skipped, page, start = 0, 500, 0
    while len(found) < limit:
        runs = cache.list_runs(limit=page, offset=start)
        for run in runs:
            if can_see_job(principal, run.kind, orjson.loads(run.params or "{}")):
                if skipped < offset:
                    skipped += 1
                elif len(found) < limit:
                    found.append(run)
        if len(runs) < page:
            break
        start += page
    return found


@router.get("/jobs/{job_id:int}", response_model=s.Job)
def job(cache: CacheDep, job_id: JobId) -> s.Job:
    return get_job(cache, job_id)


@router.post("/jobs/{job_id:int}/resume", response_model=s.Job)
def resume(cache: CacheDep, job_id: JobId) -> s.Job:
    current = get_job(cache, job_id)
    if current.status not in ("interrupted", "failed"):
        raise HTTPException(409, f"job is {current.status}; only interrupted or failed jobs resume")
    cache.update_run(job_id, status="pending", error=None, worker=None)
    return get_job(cache, job_id)


@router.get("/jobs/{job_id:int}/outcomes", response_model=list[s.OutcomeOut])
def outcomes(
    cache: CacheDep,
    job_id: JobId,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[s.OutcomeOut]:
    get_job(cache, job_id)
    rows = cache.outcomes(run_id=job_id, limit=limit, offset=offset)
    return [s.OutcomeOut.model_validate(r, from_attributes=True) for r in rows]


@router.get("/jobs/{job_id:int}/failures", response_model=list[s.FailureCauseOut])
def failures(app: AppDep, cache: CacheDep, job_id: JobId) -> list[s.FailureCauseOut]:
    """The job's failed resources grouped by cause (status and reason), biggest first,
    each with how many of which type and a hint: what the CLI prints after a push."""
    get_job(cache, job_id)
    return [
        s.FailureCauseOut(
            status=c.status, reason=c.reason, count=c.count, types=c.types, hint=c.hint
        )
        for c in app.failure_causes(cache, job_id)
    ]
