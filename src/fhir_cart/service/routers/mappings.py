"""Mapping files the service keeps (issue 22): upload one (checked like any mapping file,
kept as the next version of its name), list them, fetch a version.

Each mapping belongs to an owner: a centre user's own centre (a centre sees only its own),
``admin`` for what admins keep; admins see every owner's. The registry role has no use for
a centre's mapping (403). A mapping that does not check is a 422 problem document whose
``detail`` is the whole message and whose ``errors`` name each key, line and fix."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel

from fhir_cart.application import Application, StoredMapping
from fhir_cart.errors import ConfigError
from fhir_cart.service.access import Principal
from fhir_cart.service.deps import AppDep, Auth, PrincipalDep, ProblemError

__all__ = ["MappingVersion", "config_problem", "owner_of", "router", "visible_owner"]

router = APIRouter(tags=["mappings"], dependencies=Auth)

MAX_BYTES = 256 * 1024
NamePath = Annotated[str, PathParam(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]


class MappingVersion(BaseModel):
    owner: str
    name: str
    version: int
    size: int
    modified: dt.datetime
    url: str

    @classmethod
    def of(cls, kept: StoredMapping) -> MappingVersion:
        return cls(
            owner=kept.owner,
            name=kept.name,
            version=kept.version,
            size=kept.size,
            modified=dt.datetime.fromtimestamp(kept.modified, dt.UTC),
            url=f"/mappings/{kept.name}?version={kept.version}&owner={kept.owner}",
        )


def owner_of(principal: Principal) -> str:
    """Whose mappings a principal keeps: its centre's, or ``admin``'s (403 for the registry)."""
    if principal.role == "registry":
        raise HTTPException(403, "the registry role has no use for a centre's mapping files")
    if principal.role == "centre":
        assert principal.centre is not None
        return principal.centre
    return "admin"


def visible_owner(principal: Principal, asked: str | None) -> str | None:
    """The owner whose mappings to show: a centre only its own (asking for another's is 404,
    as if it did not exist); an admin the one asked for, or all (None)."""
    own = owner_of(principal)
    if principal.role == "admin":
        return asked
    if asked is not None and asked != own:
        raise HTTPException(404, "no such mapping")
    return own


_PROBLEM = re.compile(
    r"(?P<key>[\w\[\]\.\-]+): (?P<reason>.+?)"
    r"(?: \(line (?P<line>\d+)(?:; value (?P<value>.+?))?(?:; fix: (?P<fix>.+?))?\))?"
    r"(?=; [\w\[\]\.\-]+: |$)"
)


def config_problem(exc: ConfigError) -> ProblemError:
    """422 naming each problem's key, line and fix (as far as the message says them)."""
    message = str(exc)
    _, _, body = message.partition(" is invalid: ")
    errors: list[dict[str, Any]] = []
    for match in _PROBLEM.finditer(body):
        found = {k: v for k, v in match.groupdict().items() if v is not None}
        if "line" in found:
            found["line"] = int(found["line"])
        errors.append(found)
    return ProblemError(422, message, errors=errors)


def keep(app: Application, principal: Principal, name: str, text: bytes) -> StoredMapping:
    """Check and keep a mapping file as the principal's (blocking: file work)."""
    if len(text) > MAX_BYTES:
        raise HTTPException(413, f"a mapping file is at most {MAX_BYTES} bytes")
    try:
        return app.store_mapping(owner_of(principal), name, text)
    except ConfigError as exc:
        raise config_problem(exc) from exc


@router.post("/mappings/{name}", response_model=MappingVersion, status_code=201)
def upload_mapping(
    app: AppDep,
    principal: PrincipalDep,
    name: NamePath,
    file: Annotated[UploadFile, File(description="The mapping file (YAML)")],
) -> MappingVersion:
    """Keep a mapping file as the next version of ``name`` (v1, v2, ...), after checking it
    as ``fhir-cart`` checks one."""
    text = file.file.read(MAX_BYTES + 1)
    return MappingVersion.of(keep(app, principal, name, text))


@router.get("/mappings", response_model=list[MappingVersion])
def list_mappings(
    app: AppDep,
    principal: PrincipalDep,
    owner: Annotated[str | None, Query(description="Admins: one owner's only")] = None,
) -> list[MappingVersion]:
    """Every kept version the caller may see (a centre: its own)."""
    return [MappingVersion.of(m) for m in app.stored_mappings(visible_owner(principal, owner))]


@router.get(
    "/mappings/{name}",
    response_class=Response,
    responses={200: {"content": {"application/yaml": {}}, "description": "The mapping file"}},
)
def fetch_mapping(
    app: AppDep,
    principal: PrincipalDep,
    name: NamePath,
    version: Annotated[int | None, Query(ge=1, description="Default: the latest")] = None,
    owner: Annotated[str | None, Query(description="Admins: whose mapping")] = None,
) -> Response:
    """One version of a kept mapping file, as it was written."""
    whose = visible_owner(principal, owner) or owner_of(principal)
    try:
        kept = app.stored_mapping(whose, name, version)
    except KeyError:
        raise HTTPException(404, "no such mapping") from None
    filename = f"{kept.name}-v{kept.version}.yaml"
    return Response(
        kept.path.read_bytes(),
        media_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
