"""The registry pages (``/ui/registries...``, issue 22 item 6): start a registry build, see
each centre's completeness as a heat map, the conflicts with the rule that chose, and the
link review queue, where a person confirms (must-link) or refuses (cannot-link) a pair.

Registry managers and admins only: a centre's principal gets 403 on every route here. A
decision goes through :meth:`~fhir_cart.application.Application.registry_decide`, the code
path of ``fhir-cart registry decide``, with the signed-in user as who (and the time as when),
so the next build honours it. What the page shows is the last succeeded build's reports:
pseudonyms, encoded evidence and protected values, never a centre's file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fhir_cart.application import Application, Cache
from fhir_cart.errors import FhirCartError
from fhir_cart.service import schemas as s
from fhir_cart.service.access import Principal
from fhir_cart.service.deps import AppDep, CacheDep, PrincipalDep
from fhir_cart.service.jobs import job_dir
from fhir_cart.service.routers import jobs as job_routes
from fhir_cart.service.routers.study import NAME
from fhir_cart.service.web import registry_view as view
from fhir_cart.service.web.pages import _check_csrf, _page, _with_session, templates

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
templates.env.globals["shade"] = view.shade


def _registry_role(principal: Principal) -> None:
    if principal.role not in ("registry", "admin"):
        raise HTTPException(403, f"the {principal.role} role cannot see the registry")


def _registry_file(app: Application, name: str) -> Path:
    if not NAME.match(name):
        raise HTTPException(404, "no such registry")
    path = app.registry_file(name)
    if not path.is_file():
        raise HTTPException(404, "no such registry")
    return path


def registry_names(app: Application) -> list[str]:
    folder = app.data_dir / "registries"
    return sorted(p.stem for p in folder.glob("*.yaml") if NAME.match(p.stem))


def _builds(cache: Cache, registry_file: Path, limit: int = 500) -> list[Any]:
    """The registry's build jobs, newest first (registry builds are the registry role's
    to see whoever started them)."""
    return [
        run
        for run in cache.list_runs(limit=limit)
        if run.kind == "registry"
        and orjson.loads(run.params or "{}").get("registry_file") == str(registry_file)
    ]


def _definition(registry_file: Path) -> Any:
    from fhir_cart.registry.definition import load_registry

    return load_registry(registry_file)


def _decisions(definition: Any) -> dict[tuple[str, str], Any]:
    from fhir_cart.registry.decisions import read_decisions

    return read_decisions(definition.resolve(definition.linkage.decisions))


def _context(app: Application, cache: Cache, name: str) -> dict[str, Any]:
    registry_file = _registry_file(app, name)
    definition = _definition(registry_file)
    builds = _builds(cache, registry_file)
    last = next((r for r in builds if r.status == "succeeded"), None)
    decisions = _decisions(definition)
    context: dict[str, Any] = {
        "registry": name,
        "title": definition.name,
        "definition": definition,
        "builds": [s.Job.from_run(r) for r in builds[:10]],
        "last": None if last is None else s.Job.from_run(last),
        "decisions": sorted(decisions.values(), key=lambda d: d.when, reverse=True),
        "decided": decisions,
        "servers": sorted(app.settings.servers),
    }
    if last is None:
        return context
    out = job_dir(app.settings, last.id)
    links = view.read_links(out)
    taken = view.linked_pairs((r["left"], r["right"]) for r in links if r["taken"] == "yes")
    centres, heat = view.heat_map(view.read_quality(out))
    return context | {
        "review": view.read_review(out),
        "conflicts": view.read_conflicts(out),
        "centres": centres,
        "heat": heat,
        "linked": len(taken),
        "counts": orjson.loads(last.counts or "{}"),
    }


@router.get("/ui/registries")
def registries(request: Request, app: AppDep, principal: PrincipalDep) -> Response:
    _registry_role(principal)
    _with_session(request)
    return _page(request, "registries.html", names=registry_names(app))


@router.get("/ui/registries/{name}")
async def registry_page(
    request: Request, app: AppDep, cache: CacheDep, principal: PrincipalDep, name: str
) -> Response:
    _registry_role(principal)
    _with_session(request)
    try:
        context = await run_in_threadpool(_context, app, cache, name)
    except FhirCartError as exc:
        raise HTTPException(422, str(exc)) from exc
    done = request.query_params.get("decided")
    return _page(request, "registry.html", done=done, **context)


@router.post("/ui/registries/{name}/build")
def build(
    request: Request,
    app: AppDep,
    cache: CacheDep,
    principal: PrincipalDep,
    name: str,
    csrf: Annotated[str, Form()] = "",
    server: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Queue a build (the API's ``POST /jobs/registry``, with its checks)."""
    _check_csrf(request, csrf)
    _registry_role(principal)
    _registry_file(app, name)
    body = s.RegistryRequest(registry=name, server=server or None)
    job = job_routes.start_registry(app, cache, body, principal)
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


@router.post("/ui/registries/{name}/decide")
def decide(
    request: Request,
    app: AppDep,
    principal: PrincipalDep,
    name: str,
    left: Annotated[str, Form(max_length=40)],
    right: Annotated[str, Form(max_length=40)],
    decision: Annotated[Literal["link", "no-link"], Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Confirm (``link``: must-link) or refuse (``no-link``: cannot-link) a pair, kept in
    the registry's decisions file with the signed-in user and the time."""
    _check_csrf(request, csrf)
    _registry_role(principal)
    registry_file = _registry_file(app, name)
    try:
        app.registry_decide(registry_file, left, right, link=decision == "link", by=principal.name)
    except FhirCartError as exc:
        raise HTTPException(422, str(exc)) from exc
    log.info("registry decision by %s", principal.role)
    return RedirectResponse(f"/ui/registries/{name}?decided={decision}#review", status_code=303)
