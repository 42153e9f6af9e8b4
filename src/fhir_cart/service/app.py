"""The fhir_cart web service: uploads, previews, push/pull jobs, exports, cache browsing.

``create_app(settings)`` builds the app (tests pass their own settings and override
dependencies); ``fhir-cart serve`` runs it with uvicorn. Every endpoint but ``/health`` needs
an API key from settings (``X-API-Key`` header or ``Authorization: Bearer``). Errors are RFC
9457 problem documents, never stack traces. Servers are named in settings: clients cannot
make the service call arbitrary URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import re
import shutil
import threading
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

import orjson
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from fhir_cart import __version__
from fhir_cart.bundle import map_cases, transaction_bundles
from fhir_cart.cache import Cache, open_cache
from fhir_cart.errors import FhirCartError
from fhir_cart.mappers.context import mapping_context
from fhir_cart.readers import read_study
from fhir_cart.records import Case
from fhir_cart.service import schemas as s
from fhir_cart.service.guard import Guard, key_accepted
from fhir_cart.service.jobs import job_dir, run_worker
from fhir_cart.settings import Settings
from fhir_cart.study_mapping import load_study_mapping
from fhir_cart.terminology import default_mappings_dir
from fhir_cart.writers import write_study

__all__ = ["create_app"]

log = logging.getLogger(__name__)
_SUFFIXES = {".csv", ".xlsx", ".json"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def problem(
    status: int, title: str, detail: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


# -- dependencies ------------------------------------------------------------------------


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_cache(request: Request) -> Cache:
    cache: Cache = request.app.state.cache
    return cache


_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def require_key(
    settings: Annotated[Settings, Depends(get_settings)],
    key: Annotated[str | None, Depends(_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> None:
    """The key check again, per route: it documents the scheme in the contract, and holds
    should the Guard middleware ever be left out. The Guard checks first, before bodies."""
    given = key or (bearer.credentials if bearer else None)
    if given is None:
        raise HTTPException(401, "an API key is required (X-API-Key or Authorization: Bearer)")
    if not key_accepted(given, settings):
        raise HTTPException(403, "API key not accepted")


JobId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CacheDep = Annotated[Cache, Depends(get_cache)]
Auth = [Depends(require_key)]


# -- uploads -------------------------------------------------------------------------------


def _mapping_path(settings: Settings, name: str) -> Path:
    if not _NAME.match(name):
        raise HTTPException(422, "mapping name: lower-case letters, digits, '-' and '_' only")
    base = (settings.mappings_dir or default_mappings_dir()) / "centres"
    path = base / f"{name}.yaml"
    if not path.is_file():
        raise HTTPException(404, f"no mapping named {name!r}")
    return path


def _upload_dir(settings: Settings, upload_id: str) -> Path:
    if not _UPLOAD_ID.match(upload_id):
        raise HTTPException(404, "no such upload")
    path = settings.data_dir / "uploads" / upload_id
    if not path.is_dir():
        raise HTTPException(404, "no such upload")
    return path


def _suffix(upload: UploadFile) -> str:
    suffix = Path(upload.filename or "").suffix.lower()
    if suffix not in _SUFFIXES:
        raise HTTPException(415, f"study files are {', '.join(sorted(_SUFFIXES))}")
    return suffix


def _save_upload(settings: Settings, data: BinaryIO, folder: Path, suffix: str) -> Path:
    content = data.read(settings.max_upload_bytes + 1)
    if len(content) > settings.max_upload_bytes:
        raise HTTPException(413, f"upload larger than {settings.max_upload_bytes} bytes")
    # The stored name is ours, never the client's: nothing is written outside data_dir.
    path = folder / f"study{suffix}"
    path.write_bytes(content)
    if suffix == ".xlsx":
        _check_workbook(settings, path)
    return path


def _check_workbook(settings: Settings, path: Path) -> None:
    """An .xlsx is a zip: refuse one that is not, or that unpacks to more than the limit
    (a 182 KB zip bomb otherwise took 27 s and 265 MB to read)."""
    if not zipfile.is_zipfile(path):
        raise HTTPException(422, "the .xlsx file is not a workbook (not a zip archive)")
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > settings.max_unpacked_bytes:
        raise HTTPException(413, f"the workbook unpacks to more than "
                            f"{settings.max_unpacked_bytes} bytes")  # fmt: skip


def _accept_upload(
    settings: Settings, cache: Cache, data: BinaryIO, suffix: str, mapping_file: Path | None
) -> s.UploadReport:
    """Store, check and read an upload (blocking work: runs in a worker thread). A refused
    upload leaves nothing on disk."""
    upload_id = uuid.uuid4().hex
    folder = settings.data_dir / "uploads" / upload_id
    folder.mkdir(parents=True)
    try:
        study = _save_upload(settings, data, folder, suffix)
        meta = {"study_file": str(study), "mapping_file": str(mapping_file or "") or None}
        (folder / "meta.json").write_bytes(orjson.dumps(meta))
        try:
            result = read_study(study, load_study_mapping(mapping_file) if mapping_file else None)
        except FhirCartError as exc:
            raise HTTPException(422, str(exc)) from exc
        except csv.Error as exc:  # e.g. a field over the csv module's 131,072 characters
            raise HTTPException(422, f"the CSV file cannot be read: {exc}") from exc
        listed = result.rejects[: settings.max_rejects_reported]
        cache.add_rejects(run_id=None, rejects=listed)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return s.UploadReport(
        upload_id=upload_id, patients=len(result.cases),
        events=sum(len(c.events) for c in result.cases),
        rejects=[s.RejectOut(**r.as_dict()) for r in listed],
        rejects_total=len(result.rejects),
    )  # fmt: skip


def _read_upload(settings: Settings, upload_id: str) -> tuple[list[Case], Any, dict[str, Any]]:
    folder = _upload_dir(settings, upload_id)
    meta = orjson.loads((folder / "meta.json").read_bytes())
    mapping = load_study_mapping(Path(meta["mapping_file"])) if meta["mapping_file"] else None
    result = read_study(Path(meta["study_file"]), mapping)
    return result.cases, mapping, meta


# -- the app -------------------------------------------------------------------------------


def _routes(app: FastAPI) -> None:
    @app.get("/health", response_model=s.Health, tags=["service"])
    def health() -> s.Health:
        return s.Health(status="ok", version=__version__)

    @app.get("/ready", response_model=s.Health, tags=["service"], dependencies=Auth)
    def ready(cache: CacheDep) -> s.Health:
        with cache.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return s.Health(status="ready", version=__version__)

    @app.post("/uploads", response_model=s.UploadReport, status_code=201, tags=["study"],
              dependencies=Auth)  # fmt: skip
    async def upload(
        settings: SettingsDep,
        cache: CacheDep,
        file: Annotated[UploadFile, File(description="Study file: .csv, .xlsx or .json")],
        mapping: Annotated[str | None, Form(description="Mapping name (mappings/centres)")] = None,
    ) -> s.UploadReport:
        mapping_file = _mapping_path(settings, mapping) if mapping else None
        suffix = _suffix(file)
        # reading a study file is blocking work: off the event loop, so /health and every
        # other request keep answering while a large upload is checked
        return await run_in_threadpool(
            _accept_upload, settings, cache, file.file, suffix, mapping_file
        )

    @app.get("/uploads/{upload_id}/preview", tags=["study"], dependencies=Auth,
             response_model=s.Preview)  # fmt: skip
    def preview(
        settings: SettingsDep,
        upload_id: str,
        bundle_size: Annotated[int, Query(ge=1, le=1000)] = 100,
        limit: Annotated[int, Query(ge=1, le=20)] = 1,
    ) -> s.Preview:
        cases, mapping, _ = _read_upload(settings, upload_id)
        ctx = mapping_context(
            identifier_base=mapping.identifier_base if mapping else None,
            country=mapping.country if mapping else None,
        )
        bundles = []
        for bundle in transaction_bundles(map_cases(ctx, cases), size=bundle_size):
            bundles.append(bundle)
            if len(bundles) >= limit:
                break
        return s.Preview(bundles=bundles, unverified_codes=ctx.terminology.unverified_report())

    @app.post("/jobs/push", response_model=s.Job, status_code=202, tags=["jobs"],
              dependencies=Auth)  # fmt: skip
    def start_push(settings: SettingsDep, cache: CacheDep, body: s.PushRequest) -> s.Job:
        server = _server(settings, body.server)
        _, _, meta = _read_upload(settings, body.upload_id)
        params = {**meta, "server": body.server, "upload_id": body.upload_id,
                  "continue_on_error": body.continue_on_error, "job": True}  # fmt: skip
        run_id = cache.create_run(kind="push", server=server, params=params, status="pending")
        return _job(cache, run_id)

    @app.post("/jobs/pull", response_model=s.Job, status_code=202, tags=["jobs"],
              dependencies=Auth)  # fmt: skip
    def start_pull(settings: SettingsDep, cache: CacheDep, body: s.PullRequest) -> s.Job:
        server = _server(settings, body.server)
        params = {**body.model_dump(), "job": True}
        run_id = cache.create_run(kind="pull", server=server, params=params, status="pending")
        return _job(cache, run_id)

    @app.get("/jobs", response_model=list[s.Job], tags=["jobs"], dependencies=Auth)
    def jobs(
        cache: CacheDep,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> list[s.Job]:
        return [s.Job.from_run(r) for r in cache.list_runs(limit=limit, offset=offset)]

    @app.get("/jobs/{job_id:int}", response_model=s.Job, tags=["jobs"], dependencies=Auth)
    def job(cache: CacheDep, job_id: JobId) -> s.Job:
        return _job(cache, job_id)

    @app.post("/jobs/{job_id:int}/resume", response_model=s.Job, tags=["jobs"], dependencies=Auth)
    def resume(cache: CacheDep, job_id: JobId) -> s.Job:
        current = _job(cache, job_id)
        if current.status not in ("interrupted", "failed"):
            raise HTTPException(
                409, f"job is {current.status}; only interrupted or failed jobs resume"
            )
        cache.update_run(job_id, status="pending", error=None, worker=None)
        return _job(cache, job_id)

    @app.get("/jobs/{job_id:int}/outcomes", response_model=list[s.OutcomeOut], tags=["jobs"],
             dependencies=Auth)  # fmt: skip
    def outcomes(
        cache: CacheDep,
        job_id: JobId,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> list[s.OutcomeOut]:
        _job(cache, job_id)
        rows = cache.outcomes(run_id=job_id, limit=limit, offset=offset)
        return [s.OutcomeOut.model_validate(r, from_attributes=True) for r in rows]

    @app.get("/jobs/{job_id:int}/summary", tags=["cohort"], dependencies=Auth)
    def job_summary(settings: SettingsDep, cache: CacheDep, job_id: JobId) -> dict[str, Any]:
        path = _pull_output(settings, cache, job_id) / "summary.json"
        result: dict[str, Any] = orjson.loads(path.read_bytes())
        return result

    @app.get("/jobs/{job_id:int}/export", tags=["cohort"], dependencies=Auth,
             responses={200: {"content": {"application/zip": {}}}})  # fmt: skip
    def export(
        settings: SettingsDep,
        cache: CacheDep,
        job_id: JobId,
        format: Annotated[Literal["csv", "xlsx", "parquet", "json"], Query()] = "csv",
    ) -> Response:
        folder = _pull_output(settings, cache, job_id)
        cases = read_study(folder / "study.json").cases
        other_file = folder / "other.json"
        other = orjson.loads(other_file.read_bytes()) if other_file.exists() else []
        target = folder / f"export-{format}"
        files = [*write_study(cases, target, format, other=other), folder / "unmapped.csv"]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, path.name)
        headers = {"Content-Disposition": f'attachment; filename="job-{job_id}-{format}.zip"'}
        return Response(buffer.getvalue(), media_type="application/zip", headers=headers)

    @app.get("/cache/patients", response_model=list[s.PatientOut], tags=["cache"],
             dependencies=Auth)  # fmt: skip
    def cache_patients(cache: CacheDep) -> list[s.PatientOut]:
        return [s.PatientOut(centre=c.patient.centre, study_id=c.patient.study_id,
                             events=len(c.events))
                for c in cache.study_records()]  # fmt: skip

    @app.get("/cache/resources", response_model=list[s.ResourceOut], tags=["cache"],
             dependencies=Auth)  # fmt: skip
    def cache_resources(
        cache: CacheDep,
        direction: Annotated[Literal["sent", "received"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> list[s.ResourceOut]:
        rows = cache.list_resources(direction=direction, limit=limit, offset=offset)
        return [s.ResourceOut.model_validate(r, from_attributes=True) for r in rows]


def _server(settings: Settings, name: str) -> str:
    if name not in settings.servers:
        raise HTTPException(422, f"unknown server {name!r}: servers are named in settings")
    return settings.servers[name].base_url


def _job(cache: Cache, job_id: int) -> s.Job:
    run = cache.get_run(job_id)
    if run is None:
        raise HTTPException(404, "no such job")
    return s.Job.from_run(run)


def _pull_output(settings: Settings, cache: Cache, job_id: int) -> Path:
    current = _job(cache, job_id)
    if current.kind != "pull" or current.status != "succeeded":
        raise HTTPException(409, "exports and summaries come from a succeeded pull job")
    return job_dir(settings, job_id)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None  # e.g. Allow on a 405
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return problem(422, "Unprocessable Content", errors[:2000])

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error: %s", exc.__class__.__name__)
        return problem(500, "Internal Server Error", "the error was logged without details")


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def create_app(
    settings: Settings | None = None,
    *,
    cache: Cache | None = None,
    run_workers: bool = True,
) -> FastAPI:
    """The service. ``run_workers=False`` leaves job execution to separate workers."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_cache = cache is None
        app.state.cache = cache or open_cache(settings.effective_cache_url())
        # No start-up sweep: a job whose worker died is taken over by any worker once its
        # lease expires (jobs.execute), and a live worker's job is never touched.
        stop = threading.Event()
        worker = None
        if run_workers:
            # Jobs read study files and write the cache, blocking work: they run on a loop
            # of their own in a thread, so the API's loop only ever serves requests.
            job_loop = run_worker(settings, app.state.cache, stop=stop)
            worker = threading.Thread(target=asyncio.run, args=(job_loop,), name="jobs")
            worker.start()
        yield
        stop.set()
        if worker is not None:
            await asyncio.to_thread(worker.join)
        if own_cache:
            app.state.cache.close()

    app = FastAPI(
        title="fhir_cart",
        version=__version__,
        summary="Move clinical case-series data between study format and FHIR R4.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(Guard, settings=settings)
    _handlers(app)
    _routes(app)
    _document_problems(app)
    return app


_PROBLEM_SCHEMA = {
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
}


def _document_problems(app: FastAPI) -> None:
    """Every error is application/problem+json: say so in the contract (422 included)."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = plain()
        document.setdefault("components", {}).setdefault("schemas", {})["Problem"] = _PROBLEM_SCHEMA
        problem_content = {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }
        for operation in (op for path in document["paths"].values() for op in path.values()):
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {"description": "Validation Error", "content": problem_content}
            responses["default"] = {"description": "Error (RFC 9457)", "content": problem_content}
        schemas = document["components"]["schemas"]
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
