"""Study files: uploads (stored, checked and read, with their rejects) and previews of the
FHIR they would become."""

from __future__ import annotations

import csv
import logging
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import orjson
from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from fhir_cart.application import Application, Cache
from fhir_cart.errors import FhirCartError, InputError
from fhir_cart.private import private_dir, write_private
from fhir_cart.records import Case
from fhir_cart.report.evaluate import missing_anchor
from fhir_cart.service import schemas as s
from fhir_cart.service.access import Principal, can_see_upload, owner_params
from fhir_cart.service.deps import AppDep, Auth, CacheDep, PrincipalDep, unprocessable
from fhir_cart.settings import Settings
from fhir_cart.workbook import WorkbookTooLarge, check_workbook

__all__ = ["expire_uploads", "mapping_path", "read_upload", "router", "visible_upload"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["study"], dependencies=Auth)

_SUFFIXES = {".csv", ".xlsx", ".json"}
NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
"""Names clients give for files the service holds (mappings, registries)."""
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def mapping_path(app: Application, name: str) -> Path:
    """A centre mapping by name, from the mappings folder settings name (404 if none)."""
    if not NAME.match(name):
        raise HTTPException(422, "mapping name: lower-case letters, digits, '-' and '_' only")
    path = app.mapping_file(name)
    if not path.is_file():
        raise HTTPException(404, f"no mapping named {name!r}")
    return path


def upload_dir(settings: Settings, upload_id: str) -> Path:
    if not _UPLOAD_ID.match(upload_id):
        raise HTTPException(404, "no such upload")
    path = settings.data_dir / "uploads" / upload_id
    if not path.is_dir():
        raise HTTPException(404, "no such upload")
    return path


def visible_upload(app: Application, upload_id: str, principal: Principal) -> dict[str, Any]:
    """An upload's stored facts, 404 for one outside the caller's scope (as for none)."""
    meta: dict[str, Any] = orjson.loads(
        (upload_dir(app.settings, upload_id) / "meta.json").read_bytes()
    )
    if not can_see_upload(principal, meta):
        raise HTTPException(404, "no such upload")
    return meta


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
    path = write_private(folder / f"study{suffix}", content)
    if suffix == ".xlsx":
        _check_workbook(settings, path)
    return path


def _check_workbook(settings: Settings, path: Path) -> None:
    """An .xlsx is a zip: refuse one that is not, holds no workbook, or would unpack to more
    than the limits (:mod:`fhir_cart.workbook`) before openpyxl opens it: 413 for size
    (a 437 KB zip bomb otherwise took 119 s of CPU), 422 for what is not a workbook."""
    try:
        check_workbook(path, max_unpacked=settings.max_unpacked_bytes)
    except WorkbookTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except InputError as exc:
        raise HTTPException(422, str(exc)) from None


def expire_uploads(settings: Settings, now: float | None = None) -> int:
    """Delete the uploads older than ``upload_ttl_hours`` (by their folder's time); how many.
    Run at start-up, before each upload and every few minutes by the service."""
    folder = settings.data_dir / "uploads"
    if not folder.is_dir():
        return 0
    limit = (time.time() if now is None else now) - settings.upload_ttl_hours * 3600
    expired = [
        p for p in folder.iterdir() if _UPLOAD_ID.match(p.name) and p.stat().st_mtime < limit
    ]
    for path in expired:
        shutil.rmtree(path, ignore_errors=True)
    if expired:
        log.info("%d upload(s) older than %g h deleted", len(expired), settings.upload_ttl_hours)
    return len(expired)


def _accept_upload(
    app: Application,
    cache: Cache,
    data: BinaryIO,
    suffix: str,
    mapping_file: Path | None,
    principal: Principal | None = None,
    mapping_text: bytes | None = None,
) -> s.UploadReport:
    """Store, check and read an upload (blocking work: runs in a worker thread). A refused
    upload leaves nothing on disk. ``principal``: who uploads (the upload is in their
    scope); ``mapping_text``: a mapping file sent with the upload (kept beside it)."""
    settings = app.settings
    expire_uploads(settings)
    upload_id = uuid.uuid4().hex
    folder = private_dir(settings.data_dir / "uploads") / upload_id
    folder.mkdir(mode=0o700)
    try:
        study = _save_upload(settings, data, folder, suffix)
        if mapping_text is not None:
            mapping_file = write_private(folder / "mapping.yaml", mapping_text)
        meta = {
            "study_file": str(study),
            "mapping_file": str(mapping_file or "") or None,
            **(owner_params(principal) if principal else {}),
        }
        write_private(folder / "meta.json", orjson.dumps(meta))
        try:
            mapping = app.load_mapping(mapping_file)
            result = app.read_study(study, mapping)
            anchor = app.anchor_of(mapping)
        except FhirCartError as exc:
            raise unprocessable(exc) from exc
        except csv.Error as exc:  # e.g. a field over the csv module's 131,072 characters
            raise HTTPException(422, f"the CSV file cannot be read: {exc}") from exc
        listed = app.keep_rejects(cache, result.rejects)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return s.UploadReport(
        upload_id=upload_id,
        patients=len(result.cases),
        events=sum(len(c.events) for c in result.cases),
        rejects=[s.RejectOut(**r.as_dict()) for r in listed],
        rejects_total=len(result.rejects),
        warnings=missing_anchor(result.cases, anchor) if anchor is not None else [],
    )


def read_upload(app: Application, upload_id: str) -> tuple[list[Case], Any, dict[str, Any]]:
    """An upload's cases, mapping and stored facts (404 for an unknown id)."""
    folder = upload_dir(app.settings, upload_id)
    meta = orjson.loads((folder / "meta.json").read_bytes())
    mapping = app.load_mapping(Path(meta["mapping_file"]) if meta["mapping_file"] else None)
    result = app.read_study(Path(meta["study_file"]), mapping)
    return result.cases, mapping, meta


@router.post("/uploads", response_model=s.UploadReport, status_code=201)
async def upload(
    app: AppDep,
    cache: CacheDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="Study file: .csv, .xlsx or .json")],
    mapping: Annotated[str | None, Form(description="Mapping name (mappings/centres)")] = None,
) -> s.UploadReport:
    if principal.role == "registry":
        raise HTTPException(403, "the registry role cannot upload a centre's study file")
    mapping_file = mapping_path(app, mapping) if mapping else None
    suffix = _suffix(file)
    # reading a study file is blocking work: off the event loop, so /health and every
    # other request keep answering while a large upload is checked
    return await run_in_threadpool(
        _accept_upload, app, cache, file.file, suffix, mapping_file, principal
    )


@router.get("/uploads/{upload_id}/preview", response_model=s.Preview)
def preview(
    app: AppDep,
    principal: PrincipalDep,
    upload_id: str,
    bundle_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    limit: Annotated[int, Query(ge=1, le=20)] = 1,
) -> s.Preview:
    visible_upload(app, upload_id, principal)
    cases, mapping, _ = read_upload(app, upload_id)
    try:
        shown = app.preview(cases, mapping, size=bundle_size, limit=limit)
    except FhirCartError as exc:  # e.g. an unverified code under strict_terminology
        raise unprocessable(exc) from exc
    return s.Preview(bundles=shown.bundles, unverified_codes=shown.unverified)
