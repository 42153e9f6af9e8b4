"""What a succeeded pull job produced: its summary and its study tables."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

from fhir_cart.application import Cache
from fhir_cart.service.deps import (
    AppDep,
    Auth,
    CacheDep,
    JobId,
    SettingsDep,
    get_job,
    visible_job,
)
from fhir_cart.service.jobs import job_dir
from fhir_cart.settings import Settings
from fhir_cart.writers import write_study

__all__ = ["router"]

router = APIRouter(tags=["cohort"], dependencies=[*Auth, Depends(visible_job)])


def pull_output(settings: Settings, cache: Cache, job_id: int) -> Path:
    """The folder of a succeeded pull job (409 for any other job)."""
    current = get_job(cache, job_id)
    if current.kind != "pull" or current.status != "succeeded":
        raise HTTPException(409, "exports and summaries come from a succeeded pull job")
    return job_dir(settings, job_id)


@router.get("/jobs/{job_id:int}/summary")
def job_summary(settings: SettingsDep, cache: CacheDep, job_id: JobId) -> dict[str, Any]:
    path = pull_output(settings, cache, job_id) / "summary.json"
    result: dict[str, Any] = orjson.loads(path.read_bytes())
    return result


@router.get("/jobs/{job_id:int}/export", responses={200: {"content": {"application/zip": {}}}})
def export(
    app: AppDep,
    settings: SettingsDep,
    cache: CacheDep,
    job_id: JobId,
    format: Annotated[Literal["csv", "xlsx", "parquet", "json"], Query()] = "csv",
) -> Response:
    folder = pull_output(settings, cache, job_id)
    run = cache.get_run(job_id)
    name = orjson.loads(run.params or "{}").get("mapping") if run is not None else None
    mapping = app.load_mapping(app.mapping_file(name)) if name else None  # its own concepts
    cases = app.read_study(folder / "study.json", None).cases
    other_file = folder / "other.json"
    other = orjson.loads(other_file.read_bytes()) if other_file.exists() else []
    target = folder / f"export-{format}"
    files = [
        *write_study(cases, target, format, app.library.for_mapping(mapping), other=other),
        folder / "unmapped.csv",
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, path.name)
    headers = {"Content-Disposition": f'attachment; filename="job-{job_id}-{format}.zip"'}
    return Response(buffer.getvalue(), media_type="application/zip", headers=headers)
