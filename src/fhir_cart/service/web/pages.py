"""The workbench pages (``/ui/...``): sign-in, upload and check, push and pull jobs with
live progress, the API documentation offline.

Each page only parses the form and shapes the answer: the work is done by the same route
functions the API uses (so the same scopes, limits and checks hold) over the application
layer. Every form carries the session's CSRF token (htmx requests send it as a header);
nothing is sent to a FHIR server until the person presses the push button.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from fhir_cart.errors import FhirCartError
from fhir_cart.records import Case
from fhir_cart.service import schemas as s
from fhir_cart.service.access import (
    Principal,
    can_see_upload,
    principal_for_key,
    principal_for_password,
)
from fhir_cart.service.deps import AppDep, CacheDep, PrincipalDep, get_job, visible_job
from fhir_cart.service.routers import cohort as cohort_routes
from fhir_cart.service.routers import jobs as job_routes
from fhir_cart.service.routers import study as study_routes
from fhir_cart.service.web import checks
from fhir_cart.service.web.grid import fix_for, grids, read_sheets
from fhir_cart.service.web.session import COOKIE, LOGIN_COOKIE, Session, Sessions, same_token

__all__ = ["problem_page", "router"]

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["fix_for"] = fix_for
router = APIRouter(include_in_schema=False)

FINISHED = frozenset({"succeeded", "failed", "interrupted"})
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
_MAPPING_LIMIT = 256 * 1024


def _page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    session: Session | None = getattr(request.state, "session", None)
    principal: Principal | None = getattr(request.state, "principal", None)
    context |= {"principal": principal, "csrf": session.csrf if session else ""}
    answer = templates.TemplateResponse(request, name, context, status_code=status)
    answer.headers["Content-Security-Policy"] = CSP
    answer.headers["Cache-Control"] = "no-store"
    answer.headers["X-Content-Type-Options"] = "nosniff"
    return answer


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def _session(request: Request) -> Session:
    """The page session of a form post, with its CSRF token checked (403 otherwise)."""
    session = _sessions(request).get(request.cookies.get(COOKIE))
    if session is None:
        raise HTTPException(403, "sign in first: forms are sent from a signed-in page")
    request.state.session = session
    return session


def _check_csrf(request: Request, given: str | None) -> None:
    session = _session(request)
    token = given or request.headers.get("x-csrf-token")
    if not same_token(token, session.csrf):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")


def _with_session(request: Request) -> None:
    """Pages that show forms need the session's CSRF token."""
    session = _sessions(request).get(request.cookies.get(COOKIE))
    if session is not None:
        request.state.session = session


# -- sign-in --------------------------------------------------------------------------------


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=303)


@router.get("/ui/login")
def login_page(request: Request) -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or _new_token()
    answer = _page(request, "login.html", login_csrf=token)
    _set_cookie(request, answer, LOGIN_COOKIE, token, path="/ui/login")
    return answer


def _new_token() -> str:
    import secrets

    return secrets.token_urlsafe(32)


def _set_cookie(request: Request, answer: Response, name: str, value: str, path: str) -> None:
    answer.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        path=path,
        secure=request.url.scheme == "https",
    )


@router.post("/ui/login")
def login(
    request: Request,
    app: AppDep,
    csrf: Annotated[str, Form()] = "",
    user: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    api_key: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    if not same_token(csrf, request.cookies.get(LOGIN_COOKIE) or ""):
        raise HTTPException(403, "the sign-in form's CSRF token is missing or wrong: reload it")
    client = request.client.host if request.client else "unknown"
    if _sessions(request).refused(client):
        log.warning("page sign-in refused: too many failed attempts from one address")
        raise HTTPException(429, "too many failed sign-ins from this address: wait 15 minutes")
    principal = (
        principal_for_key(api_key, app.settings)
        if api_key
        else principal_for_password(user, password, app.settings)
        if user
        else None
    )
    if principal is None:
        _sessions(request).failed(client)
        log.info("page sign-in refused")
        return _page(
            request,
            "login.html",
            status=401,
            login_csrf=csrf,
            error="Not signed in: the name and password, or the key, are not accepted.",
        )
    token, _ = _sessions(request).create(principal)
    log.info("page sign-in: %s", principal.role)
    answer = RedirectResponse("/ui/", status_code=303)
    _set_cookie(request, answer, COOKIE, token, path="/")
    answer.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    return answer


@router.post("/ui/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    _check_csrf(request, csrf)
    _sessions(request).drop(request.cookies.get(COOKIE))
    answer = RedirectResponse("/ui/login", status_code=303)
    answer.delete_cookie(COOKIE, path="/")
    return answer


# -- home: upload form, uploads and jobs ------------------------------------------------------


def _uploads(app: Any, principal: Principal) -> list[dict[str, Any]]:
    folder = app.settings.data_dir / "uploads"
    found = []
    for path in sorted(folder.glob("*/meta.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        meta = orjson.loads(path.read_bytes())
        if can_see_upload(principal, meta):
            study = Path(meta["study_file"])
            mapping = Path(meta["mapping_file"]).stem if meta.get("mapping_file") else "none"
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(path.stat().st_mtime))
            found.append(
                {
                    "id": path.parent.name,
                    "kind": study.suffix.lstrip("."),
                    "mapping": mapping,
                    "when": when,
                }
            )
    return found[:50]


@router.get("/ui/")
def home(request: Request, app: AppDep, cache: CacheDep, principal: PrincipalDep) -> Response:
    _with_session(request)
    jobs = [s.Job.from_run(r) for r in job_routes.visible_runs(cache, principal, 20, 0)]
    uploads = _uploads(app, principal) if principal.role != "registry" else []
    return _page(
        request,
        "home.html",
        jobs=jobs,
        uploads=uploads,
        mappings=app.mapping_names(),
        servers=sorted(app.settings.servers),
    )


@router.get("/ui/jobs-table")
def jobs_table(request: Request, cache: CacheDep, principal: PrincipalDep) -> Response:
    """The home page's job table, which htmx refreshes every few seconds."""
    jobs = [s.Job.from_run(r) for r in job_routes.visible_runs(cache, principal, 20, 0)]
    return _page(request, "_jobs.html", jobs=jobs)


@router.post("/ui/uploads")
async def upload(
    request: Request,
    app: AppDep,
    cache: CacheDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File()],
    csrf: Annotated[str, Form()] = "",
    mapping: Annotated[str, Form(max_length=64)] = "",
    mapping_file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    _check_csrf(request, csrf)
    if principal.role == "registry":
        raise HTTPException(403, "the registry role cannot upload a centre's study file")
    mapping_text = None
    if mapping_file is not None and mapping_file.filename:
        mapping_text = await mapping_file.read(_MAPPING_LIMIT + 1)
        if len(mapping_text) > _MAPPING_LIMIT:
            raise HTTPException(413, f"a mapping file is at most {_MAPPING_LIMIT} bytes")
    try:
        named = study_routes.mapping_path(app, mapping) if mapping and not mapping_text else None
        suffix = study_routes._suffix(file)
        # stored now, checked in the background (the page follows it), read once
        upload_id = await run_in_threadpool(
            checks.store,
            request,
            app,
            cache,
            file.file,
            suffix,
            named,
            principal,
            mapping_text,
            _check,
            _summary,
        )
    except HTTPException as exc:
        errors = getattr(exc, "members", {}).get("errors", [])
        jobs = [s.Job.from_run(r) for r in job_routes.visible_runs(cache, principal, 20, 0)]
        return _page(
            request,
            "home.html",
            status=exc.status_code,
            error=str(exc.detail),
            errors=errors,
            jobs=jobs,
            uploads=_uploads(app, principal),
            mappings=app.mapping_names(),
            servers=sorted(app.settings.servers),
        )
    return RedirectResponse(f"/ui/uploads/{upload_id}", status_code=303)


# -- the check ---------------------------------------------------------------------------------


def _check(
    app: Any, upload_id: str, principal: Principal, on_patient: Any = None
) -> tuple[dict[str, Any], Sequence[Case]]:
    """The check page's context of an upload, and the records read (for its summary)."""
    meta = study_routes.visible_upload(app, upload_id, principal)
    mapping = app.load_mapping(Path(meta["mapping_file"]) if meta["mapping_file"] else None)
    study_file = Path(meta["study_file"])
    result = app.read_study(study_file, mapping, on_patient=on_patient)
    options: dict[str, Any] = {}
    if mapping is not None:
        options = {"encoding": mapping.encoding, "delimiter": mapping.csv_delimiter}
    header_row = mapping.header_row if mapping is not None else 1
    sheets = read_sheets(study_file, **options)
    records = [
        (c.patient.study_id, len(c.events), sorted({e.concept for e in c.events}))
        for c in result.cases[:50]
    ]
    preview: str | None = None
    preview_error: str | None = None
    if result.cases:
        try:
            bundle = app.preview_patient(result.cases[0], mapping)
            preview = orjson.dumps(bundle, option=orjson.OPT_INDENT_2).decode()
        except FhirCartError as exc:
            preview_error = str(exc)
    context = {
        "upload_id": upload_id,
        "rejects": result.rejects,
        "grids": grids(sheets, result.rejects, header_row),
        "patients": len(result.cases),
        "events": sum(len(c.events) for c in result.cases),
        "records": records,
        "preview": preview,
        "preview_error": preview_error,
        "preview_patient": result.cases[0].patient.study_id if result.cases else None,
        "mapping": Path(meta["mapping_file"]).stem if meta["mapping_file"] else None,
    }
    return context, result.cases


def _summary(
    app: Any, upload_id: str, principal: Principal, cases: Sequence[Case] | None = None
) -> dict[str, Any]:
    """The summary page's context of an upload: over ``cases`` (the records its check
    read), or the file read again. The plots' titles name the upload and its mapping: the
    study's own titles describe the study's cohort, not this file."""
    meta = study_routes.visible_upload(app, upload_id, principal)
    mapping = app.load_mapping(Path(meta["mapping_file"]) if meta["mapping_file"] else None)
    study = mapping.study if mapping is not None else None
    if study is None:
        return {"upload_id": upload_id, "study": None}
    if cases is None:
        cases = app.read_study(Path(meta["study_file"]), mapping).cases
    plots_dir = study_routes.upload_dir(app.settings, upload_id) / "plots"
    about = f"upload {upload_id[:8]} (mapping {Path(meta['mapping_file']).stem})"
    definition, results, plots = app.study_summary(cases, study, plots_dir, about)
    return {
        "upload_id": upload_id,
        "study": definition,
        "results": results,
        "plots": [p.name for p in plots],
        "patients": len(cases),
    }


@router.get("/ui/uploads/{upload_id}/plots/{name}")
def plot(app: AppDep, principal: PrincipalDep, upload_id: str, name: str) -> Response:
    study_routes.visible_upload(app, upload_id, principal)
    path = study_routes.upload_dir(app.settings, upload_id) / "plots" / name
    if "/" in name or not name.endswith(".svg") or not path.is_file():
        raise HTTPException(404, "no such plot")
    return FileResponse(path, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.post("/ui/uploads/{upload_id}/push")
def push(
    request: Request,
    app: AppDep,
    cache: CacheDep,
    principal: PrincipalDep,
    upload_id: str,
    csrf: Annotated[str, Form()] = "",
    server: Annotated[str, Form(max_length=64)] = "",
    continue_on_error: Annotated[bool, Form()] = False,
) -> Response:
    _check_csrf(request, csrf)
    body = s.PushRequest(upload_id=upload_id, server=server, continue_on_error=continue_on_error)
    job = job_routes.start_push(app, cache, body, principal)
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


# -- jobs ---------------------------------------------------------------------------------------


@router.post("/ui/jobs/pull")
def pull(
    request: Request,
    app: AppDep,
    cache: CacheDep,
    principal: PrincipalDep,
    csrf: Annotated[str, Form()] = "",
    server: Annotated[str, Form(max_length=64)] = "",
    query: Annotated[str, Form(max_length=2000)] = "",
    study: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    _check_csrf(request, csrf)
    try:
        body = s.PullRequest(
            server=server, selection="search", query=query or None, study=study or None
        )
    except ValueError as exc:
        raise HTTPException(422, str(exc).splitlines()[-1]) from None
    job = job_routes.start_pull(app, cache, body, principal)
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


def _visible_job(request: Request, cache: Any, principal: Principal, job_id: int) -> s.Job:
    """The job, 404 outside the principal's scope (the API's own check)."""
    visible_job(request, principal)
    return get_job(cache, job_id)


@router.get("/ui/jobs/{job_id:int}")
def job_page(
    request: Request, app: AppDep, cache: CacheDep, principal: PrincipalDep, job_id: int
) -> Response:
    _with_session(request)
    job = _visible_job(request, cache, principal, job_id)
    causes = app.failure_causes(cache, job_id) if job.status in FINISHED else []
    return _page(request, "job.html", job=job, causes=causes, finished=job.status in FINISHED)


@router.post("/ui/jobs/{job_id:int}/resume")
def resume(
    request: Request,
    cache: CacheDep,
    principal: PrincipalDep,
    job_id: int,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _check_csrf(request, csrf)
    _visible_job(request, cache, principal, job_id)
    job_routes.resume(cache, job_id)
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


@router.get("/ui/jobs/{job_id:int}/export")
def job_export(
    request: Request,
    app: AppDep,
    cache: CacheDep,
    principal: PrincipalDep,
    job_id: int,
    format: Literal["csv", "xlsx", "parquet", "json"] = "csv",
) -> Response:
    """A succeeded pull job's study tables (zip), as ``GET /jobs/{id}/export`` answers."""
    _visible_job(request, cache, principal, job_id)
    return cohort_routes.export(app, app.settings, cache, job_id, format)


@router.get("/ui/jobs/{job_id:int}/events")
def job_events(request: Request, cache: CacheDep, principal: PrincipalDep, job_id: int) -> Response:
    """Server-sent events: the job's status and progress every half second while it
    changes, until it ends (at most an hour; the page reconnects after that)."""
    _visible_job(request, cache, principal, job_id)

    async def stream() -> AsyncIterator[bytes]:
        last = None
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            job = await asyncio.to_thread(get_job, cache, job_id)
            state = {
                "status": job.status,
                "done": job.progress_done,
                "total": job.progress_total,
                "counts": job.counts,
            }
            if state != last:
                yield b"event: progress\ndata: " + orjson.dumps(state) + b"\n\n"
                last = state
            if job.status in FINISHED:
                yield b"event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(0.5)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


# -- assets and the API documentation ---------------------------------------------------------

_STATIC = HERE / "static"
_DOCS_ASSETS = {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"}


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    path = _STATIC / name
    if "/" in name or not path.is_file():
        raise HTTPException(404, "no such file")
    return FileResponse(path, headers={"Cache-Control": "max-age=3600"})


@router.get("/ui/docs-assets/{name}")
def docs_asset(name: str) -> Response:
    """Swagger UI and ReDoc as the fastapi-offline package ships them (no CDN)."""
    if name not in _DOCS_ASSETS:
        raise HTTPException(404, "no such file")
    path = Path(str(files("fastapi_offline") / "static" / name))
    return FileResponse(path, headers={"Cache-Control": "max-age=3600"})


@router.get("/docs")
def swagger(request: Request) -> Response:
    _with_session(request)
    return _page(request, "swagger.html")


@router.get("/redoc")
def redoc(request: Request) -> Response:
    _with_session(request)
    return _page(request, "redoc.html")


def problem_page(request: Request, status: int, detail: str, errors: list[Any]) -> Response:
    """An error of a page, as a page (the API answers problem documents)."""
    _with_session(request)
    return _page(request, "error.html", status=status, detail=detail, errors=errors)
