"""What every router of the service depends on: the application (its settings, the cache
it opened), the API key check, and problem documents. Each router keeps the dependencies
only it needs beside its routes."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi._compat import field_annotation_is_sequence
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from fhir_cart.application import Application, Cache
from fhir_cart.errors import FhirCartError, InputError
from fhir_cart.service import schemas as s
from fhir_cart.service.access import Principal, can_see_job, principal_for_key
from fhir_cart.service.guard import key_accepted
from fhir_cart.settings import Settings

__all__ = [
    "AppDep",
    "Auth",
    "CacheDep",
    "JobId",
    "PrincipalDep",
    "ProblemError",
    "SettingsDep",
    "admin_only",
    "get_app",
    "get_cache",
    "get_job",
    "get_principal",
    "get_settings",
    "problem",
    "public_paths",
    "require_key",
    "single_valued_query",
    "single_values",
    "unprocessable",
    "visible_job",
]


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    members: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(members or {})
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def public_paths(text: str, app: Application) -> str:
    """``text`` with the service's own folders taken out: a path under the data folder is
    shown relative to it (``uploads/<id>/study.csv``), one under the mappings folder as
    ``mappings/...``. Clients never learn where the server keeps its files."""
    roots: dict[str, str] = {}
    for folder, shown in ((app.settings.data_dir, ""), (app.mappings_dir, "mappings/")):
        for form in {str(folder), str(folder.resolve())}:
            if form not in (".", "/", ""):
                roots[form.rstrip("/") + "/"] = shown
    for root in sorted(roots, key=len, reverse=True):
        text = text.replace(root, roots[root])
    return text


def single_valued_query(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route reads one value of, derived from what it declares (its
    own parameters and its dependencies'): every one whose type is not a list."""
    names: set[str] = set()
    seen: set[int] = set()
    todo = [dependant]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        names.update(
            field.alias
            for field in current.query_params
            if not field_annotation_is_sequence(field.field_info.annotation)
        )
        todo.extend(current.dependencies)
    return frozenset(names)


def single_values(request: Request) -> None:
    """Every route's first check (the app's own dependency): a single-valued query
    parameter given twice (``owner=a&owner=b``) is refused, never read as its last value,
    since which one was meant cannot be told."""
    route = request.scope.get("route")
    single = getattr(route, "single_valued_query", None)  # worked out once per route
    if single is None:
        dependant = getattr(route, "dependant", None)
        if not isinstance(dependant, Dependant):
            return
        single = single_valued_query(dependant)
        route.single_valued_query = single  # type: ignore[union-attr]
    query = request.query_params
    repeated = sorted(n for n in single if len(query.getlist(n)) > 1)
    if repeated:
        names = ", ".join(repr(n) for n in repeated)
        which = "it" if len(repeated) == 1 else "each"
        raise HTTPException(
            422, f"query parameter {names} given more than once: give {which} once (one value)"
        )


def get_app(request: Request) -> Application:
    application: Application = request.app.state.application
    return application


def get_settings(request: Request) -> Settings:
    return get_app(request).settings


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
AppDep = Annotated[Application, Depends(get_app)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CacheDep = Annotated[Cache, Depends(get_cache)]
Auth = [Depends(require_key)]


def get_principal(request: Request) -> Principal:
    """Who is asking: set by the Guard from a key or a page session (else from the key
    headers here, should the Guard be left out)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        key = request.headers.get("x-api-key")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = key or (token.strip() if scheme.lower() == "bearer" else None)
        principal = principal_for_key(given, get_settings(request))
    if principal is None:
        raise HTTPException(401, "an API key is required (X-API-Key or Authorization: Bearer)")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def visible_job(request: Request, principal: PrincipalDep) -> None:
    """A route with a ``job_id`` answers 404 for a job outside the caller's scope, as for
    one that does not exist."""
    job_id = request.path_params.get("job_id")
    if job_id is None or principal.role == "admin":
        return
    run = get_cache(request).get_run(int(job_id))
    if run is not None and not can_see_job(principal, run.kind, orjson.loads(run.params or "{}")):
        raise HTTPException(404, "no such job")


def admin_only(principal: PrincipalDep) -> None:
    if principal.role != "admin":
        raise HTTPException(403, f"the {principal.role} role cannot use this route")


def get_job(cache: Cache, job_id: int) -> s.Job:
    """The job, or 404."""
    run = cache.get_run(job_id)
    if run is None:
        raise HTTPException(404, "no such job")
    return s.Job.from_run(run)


class ProblemError(HTTPException):
    """An HTTP error whose problem document carries extension members (RFC 9457 section
    3.2), e.g. ``errors``: every reject of a study file, with its place."""

    def __init__(self, status: int, detail: str, **members: Any) -> None:
        super().__init__(status, detail)
        self.members = members


def unprocessable(exc: FhirCartError) -> HTTPException:
    """422 for an error of ours: the whole message (an InputError's headline and its list)
    in ``detail``, and an InputError's rejects as ``errors`` (file, table, row, column,
    value, reason), as many as its message shows."""
    if isinstance(exc, InputError):
        listed = exc.rejects[: InputError.shown]
        return ProblemError(422, str(exc), errors=[r.as_dict() for r in listed])
    return HTTPException(422, str(exc))
