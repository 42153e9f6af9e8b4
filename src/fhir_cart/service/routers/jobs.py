"""Jobs: queueing pushes, pulls and registry builds (run by a worker), their status and
progress, per-resource outcomes, failures grouped by cause, and resuming."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from fhir_cart.application import Application
from fhir_cart.errors import ConfigError
from fhir_cart.service import schemas as s
from fhir_cart.service.deps import AppDep, Auth, CacheDep, JobId, get_job
from fhir_cart.service.routers.study import NAME, read_upload
from fhir_cart.settings import ServerSettings

__all__ = ["router"]

router = APIRouter(tags=["jobs"], dependencies=Auth)


def named_server(app: Application, name: str) -> ServerSettings:
    """A server named in settings (422 otherwise: clients cannot name a URL)."""
    try:
        return app.server(name, url_allowed=False)
    except ConfigError as exc:
        raise HTTPException(422, exc.message) from exc


@router.post("/jobs/push", response_model=s.Job, status_code=202)
def start_push(app: AppDep, cache: CacheDep, body: s.PushRequest) -> s.Job:
    server = named_server(app, body.server)
    _, _, meta = read_upload(app, body.upload_id)
    params = {**meta, "server": body.server, "upload_id": body.upload_id,
              "continue_on_error": body.continue_on_error, "job": True}  # fmt: skip
    run_id = cache.create_run(kind="push", server=server.base_url, params=params,
                              status="pending")  # fmt: skip
    return get_job(cache, run_id)


@router.post("/jobs/pull", response_model=s.Job, status_code=202)
def start_pull(app: AppDep, cache: CacheDep, body: s.PullRequest) -> s.Job:
    server = named_server(app, body.server)
    params = {**body.model_dump(), "job": True}
    run_id = cache.create_run(kind="pull", server=server.base_url, params=params,
                              status="pending")  # fmt: skip
    return get_job(cache, run_id)


@router.post("/jobs/registry", response_model=s.Job, status_code=202)
def start_registry(app: AppDep, cache: CacheDep, body: s.RegistryRequest) -> s.Job:
    """Queue a registry build of ``<data_dir>/registries/<registry>.yaml`` (the registry
    goes to the job's folder; with ``server``, it is then pushed there)."""
    if not NAME.match(body.registry):
        raise HTTPException(422, "registry name: lower-case letters, digits, '-' and '_' only")
    registry_file = app.registry_file(body.registry)
    if not registry_file.is_file():
        raise HTTPException(404, f"no registry named {body.registry!r}")
    server = named_server(app, body.server).base_url if body.server else ""
    params = {"registry_file": str(registry_file), "server": body.server,
              "force": body.force, "job": True}  # fmt: skip
    run_id = cache.create_run(kind="registry", server=server, params=params, status="pending")
    return get_job(cache, run_id)


@router.get("/jobs", response_model=list[s.Job])
def jobs(
    cache: CacheDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[s.Job]:
    return [s.Job.from_run(r) for r in cache.list_runs(limit=limit, offset=offset)]


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
        s.FailureCauseOut(status=c.status, reason=c.reason, count=c.count, types=c.types,
                          hint=c.hint)
        for c in app.failure_causes(cache, job_id)
    ]  # fmt: skip
