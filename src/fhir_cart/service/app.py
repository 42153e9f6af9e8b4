"""The fhir_cart web service: uploads, previews, push/pull/registry jobs, exports, cache
browsing.

``create_app(settings)`` builds the app over one application layer
(:class:`fhir_cart.application.Application`; tests pass their own settings and override
dependencies); ``fhir-cart serve`` runs it with uvicorn. The routes are one APIRouter per
area (``service/routers``), their shared dependencies in ``service/deps.py``.

Every endpoint but ``/health`` needs an API key from settings (``X-API-Key`` header or
``Authorization: Bearer``). Errors are RFC 9457 problem documents, never stack traces.
Servers are named in settings: clients cannot make the service call arbitrary URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from fhir_cart import __version__
from fhir_cart.application import Application, Cache
from fhir_cart.errors import ConfigError
from fhir_cart.private import tighten
from fhir_cart.service.access import credential_proof
from fhir_cart.service.deps import problem, public_paths, single_values
from fhir_cart.service.guard import Guard, weak_keys
from fhir_cart.service.jobs import Workers
from fhir_cart.service.routers import ROUTERS
from fhir_cart.service.routers.study import expire_uploads
from fhir_cart.service.web import assistant, check_pages, checks, pages, registry_pages
from fhir_cart.service.web.session import Sessions
from fhir_cart.settings import Settings

__all__ = ["create_app", "problem"]

log = logging.getLogger(__name__)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed(request: Request) -> str:
    """Every method some route of this path answers in full (a path can have one route per
    method, as ``GET`` and ``POST /mappings/{name}``), asked of each route through its
    public ``matches``."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    )


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers) if exc.headers else None  # e.g. Allow on a 405
        if exc.status_code == 405:  # starlette names the first route's methods only
            headers = {**(headers or {}), "Allow": _allowed(request)}
        members = getattr(exc, "members", None)  # ProblemError's extension members
        detail = public_paths(str(exc.detail), request.app.state.application)
        if request.url.path.startswith("/ui/"):  # a page's error is a page
            errors = (members or {}).get("errors", [])
            return pages.problem_page(request, exc.status_code, detail, errors)
        return problem(exc.status_code, _title(exc.status_code), detail, headers, members)

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


async def _sweep_uploads(settings: Settings) -> None:
    """Expired uploads deleted at start-up and then every tenth of their lifetime (at
    most hourly, at least a minute apart)."""
    every = min(max(settings.upload_ttl_hours * 360, 60.0), 3600.0)
    while True:
        try:
            await asyncio.to_thread(expire_uploads, settings)
        except OSError as exc:  # a folder that vanished meanwhile: next time
            log.warning("upload clean-up: %s", exc.__class__.__name__)
        await asyncio.sleep(every)


def create_app(
    settings: Settings | None = None,
    *,
    cache: Cache | None = None,
    run_workers: bool = True,
    application: Application | None = None,
) -> FastAPI:
    """The service over one :class:`Application` (``application``, else one built from
    ``settings``, else from settings read now). ``run_workers=False`` leaves job execution
    to separate workers; ``cache``: a cache the caller opened (and closes)."""
    application = application or Application(settings)
    settings = application.settings
    if problem := weak_keys(settings):
        raise ConfigError(problem)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_cache = cache is None
        tighten(settings.data_dir)  # uploads, job folders and a SQLite cache live here
        app.state.cache = cache or application.cache()
        # No start-up sweep: a job whose worker died is taken over by any worker once its
        # lease expires (jobs.execute), and a live worker's job is never touched.
        workers = None
        if run_workers:
            # Jobs read study files and write the cache, blocking work: they run on a loop
            # of their own in a thread, so the API's loop only ever serves requests. The
            # thread is watched and restarted should it die (/health says so meanwhile).
            workers = Workers(application, app.state.cache)
            workers.start()
        app.state.workers = workers
        sweeper = asyncio.create_task(_sweep_uploads(settings))
        yield
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        if workers is not None:
            await asyncio.to_thread(workers.close)
        app.state.checks.close()
        if own_cache:
            app.state.cache.close()

    app = FastAPI(
        title="fhir_cart",
        version=__version__,
        summary="Move clinical case-series data between study format and FHIR R4.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc are the workbench's, with assets from the wheel
        redoc_url=None,
    )
    app.state.application = application
    app.state.sessions = Sessions(
        settings.session_hours,
        settings.data_dir / "sessions",
        functools.partial(credential_proof, settings=settings),
    )
    app.add_middleware(Guard, settings=settings, sessions=app.state.sessions)
    _handlers(app)
    app.router.routes.extend(_service_routes())
    app.state.checks = checks.Checks()
    _document_problems(app)
    return app


@functools.cache
def _service_routes() -> tuple[BaseRoute, ...]:
    """The API's and the pages' routes, built once per process and shared read-only by
    every app made in it (they hold no state of their own: a request finds its app, and so
    its application and settings, in ``request.app``). FastAPI builds an included route's
    parameters and validators on the first request that reaches it, once per inclusion
    (about 7 ms of CPU a route): included into each new app, every app paid it again,
    which was most of the CPU of the service's unit tests. Every route's first dependency
    refuses a single-valued query parameter given twice (``single_values``).
    ``app.dependency_overrides`` does not reach these routes: give :func:`create_app` the
    settings or the application instead."""
    shared = APIRouter(dependencies=[Depends(single_values)])
    for router in (*ROUTERS, pages.router, registry_pages.router, check_pages.router):
        shared.include_router(router)
    shared.include_router(assistant.router)
    return tuple(shared.routes)


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
        "errors": {
            "description": "A rejected study file: each reject with its place (file, table "
            "or sheet, row, column, value) and reason",
            "type": "array",
            "items": {"type": "object"},
        },
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
