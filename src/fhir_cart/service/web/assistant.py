"""The mapping assistant's pages (issue 22): a file with no mapping is uploaded, each column
is shown with what it most likely holds (the library's label and codes, the score and why),
the person confirms or changes each column and each cell word, and "Write the mapping"
keeps the mapping file on the service (versioned, downloadable) and opens the check page
of the file with it. The work is the application's (``suggest_mapping``,
``draft_mapping``, ``store_mapping``); kept mappings have the API's scopes."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fhir_cart.application import Application, ColumnChoice, FileSuggestions
from fhir_cart.errors import ConfigError, FhirCartError
from fhir_cart.private import private_dir, write_private
from fhir_cart.service.access import Principal, owner_params
from fhir_cart.service.deps import AppDep, PrincipalDep
from fhir_cart.service.routers import mappings as mapping_routes
from fhir_cart.service.routers import study as study_routes
from fhir_cart.service.web.pages import _check_csrf, _page, _with_session

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

FIELDS = ("value", "when_date", "when_day", "end_date", "end_day", "grade", "concept")
"""Event fields a concept's column may fill (docs/mapping-file.md, event fields)."""
PATIENT_TARGETS = (("study_id", "Patient id"), ("sex", "Sex"), ("birth_date", "Birth date"))
NO_EVENT = "-"
"""A word's choice meaning 'the row makes no event' (a patient's cell: blank)."""


def _no_registry(principal: Principal) -> None:
    if principal.role == "registry":
        raise HTTPException(403, "the registry role cannot upload a centre's study file")


@router.get("/ui/assistant")
def start_page(request: Request, principal: PrincipalDep) -> Response:
    _with_session(request)
    _no_registry(principal)
    return _page(request, "assistant_start.html")


LIBRARY_LIMIT = 1024 * 1024
"""Bytes of a study's library file the assistant takes (a YAML of concepts and words)."""


def _store_library(app: Application, folder: Path, data: bytes, name: str) -> str:
    """A study's library file beside the upload, checked as ``library check`` reads it
    (a ConfigError names the uploaded file's name, not where it is kept)."""
    path = folder / "library.yaml"
    write_private(path, data)
    try:
        app.assistant_library(path)
    except ConfigError as exc:
        raise ConfigError(exc.message.replace(str(path), name or "the library file")) from None
    return str(path)


def _store_upload(
    app: Application,
    data: Any,
    suffix: str,
    principal: Principal,
    library: tuple[bytes, str] | None = None,
) -> str:
    """Keep a file to map (no mapping yet, so nothing is read but the workbook check), and
    the study's library file when one is given."""
    import shutil
    import uuid

    settings = app.settings
    study_routes.expire_uploads(settings)
    upload_id = uuid.uuid4().hex
    folder = private_dir(settings.data_dir / "uploads") / upload_id
    folder.mkdir(mode=0o700)
    try:
        study = study_routes._save_upload(settings, data, folder, suffix)
        meta = {"study_file": str(study), "mapping_file": None, **owner_params(principal)}
        if library is not None:
            meta["library_file"] = _store_library(app, folder, *library)
        write_private(folder / "meta.json", orjson.dumps(meta))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return upload_id


@router.post("/ui/assistant")
async def upload_to_map(
    request: Request,
    app: AppDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File()],
    csrf: Annotated[str, Form()] = "",
    library: Annotated[UploadFile | None, File()] = None,
) -> Response:
    _check_csrf(request, csrf)
    _no_registry(principal)
    suffix = study_routes._suffix(file)
    if suffix == ".json":
        raise HTTPException(415, "canonical JSON needs no mapping: check it on the home page")
    own = None
    if library is not None and library.filename:
        text = await library.read(LIBRARY_LIMIT + 1)
        if len(text) > LIBRARY_LIMIT:
            raise HTTPException(413, f"a library file of more than {LIBRARY_LIMIT} bytes")
        own = (text, Path(library.filename).name)
    try:
        upload_id = await run_in_threadpool(_store_upload, app, file.file, suffix, principal, own)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from exc
    return RedirectResponse(f"/ui/uploads/{upload_id}/assistant", status_code=303)


def _library(app: Application, upload_id: str, principal: Principal) -> Path | None:
    """The study's library file given with the upload, if any."""
    found = study_routes.visible_upload(app, upload_id, principal).get("library_file")
    return Path(found) if found else None


def _suggestions(app: Application, upload_id: str, principal: Principal) -> FileSuggestions:
    meta = study_routes.visible_upload(app, upload_id, principal)
    try:
        return app.suggest_mapping(Path(meta["study_file"]), _library(app, upload_id, principal))
    except FhirCartError as exc:
        raise HTTPException(422, str(exc)) from exc


def _centre_id(principal: Principal) -> str:
    """The mapping's centre id from the signed-in centre (``centre_b`` -> ``centre-b``)."""
    text = (principal.centre or "my-centre").lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:32] or "my-centre"


def _context(
    app: Application, upload_id: str, suggestions: FileSuggestions, library: Path | None
) -> dict[str, Any]:
    columns = []
    for i, column in enumerate(suggestions.columns):
        options = app.word_choices(column.choice, column.field, library)
        columns.append({"index": i, "s": column, "word_options": options})
    concepts = app.concept_choices(library)
    return {
        "upload_id": upload_id,
        "suggestions": suggestions,
        "columns": columns,
        "patient_targets": PATIENT_TARGETS,
        "concepts": concepts,
        "fields": FIELDS,
        "studies": app.study_names(),
        "anchors": [(k, label) for k, label in concepts if k.startswith("concept:")],
    }


@router.get("/ui/uploads/{upload_id}/assistant")
async def assistant_page(
    request: Request, app: AppDep, principal: PrincipalDep, upload_id: str
) -> Response:
    _with_session(request)
    _no_registry(principal)
    suggestions = await run_in_threadpool(_suggestions, app, upload_id, principal)
    context = _context(app, upload_id, suggestions, _library(app, upload_id, principal))
    return _page(request, "assistant.html", centre=_centre_id(principal), **context)


@router.get("/ui/uploads/{upload_id}/assistant/columns/{index:int}")
def column_fragment(
    request: Request,
    app: AppDep,
    principal: PrincipalDep,
    upload_id: str,
    index: int,
) -> Response:
    """One column's field and value table for the target the person picked (htmx)."""
    _with_session(request)
    _no_registry(principal)
    suggestions = _suggestions(app, upload_id, principal)
    if not 0 <= index < len(suggestions.columns):
        raise HTTPException(404, "no such column")
    target = request.query_params.get(f"t{index}") or None  # the select's own name
    library = _library(app, upload_id, principal)
    column, options = app.retarget_column(suggestions, index, target, library)
    item = {"index": index, "s": column, "word_options": options}
    return _page(request, "_assistant_column.html", c=item, fields=FIELDS)


def choices_from_form(form: Any, suggestions: FileSuggestions) -> list[ColumnChoice]:
    """What the person chose: ``t<i>`` the target of column i, ``f<i>`` its field,
    ``wv<i>_<j>``/``w<i>_<j>`` a cell word and its canonical word (empty: left as written,
    ``-``: no event)."""
    choices = []
    for i, column in enumerate(suggestions.columns):
        target = str(form.get(f"t{i}") or "") or None
        field = str(form.get(f"f{i}") or "") or None
        words: dict[str, str | None] = {}
        j = 0
        while f"wv{i}_{j}" in form:
            word, pick = str(form[f"wv{i}_{j}"]), str(form.get(f"w{i}_{j}") or "")
            if pick:
                words[word] = None if pick == NO_EVENT else pick
            j += 1
        choices.append(ColumnChoice(column.header, target, field, words))
    return choices


def _write(
    app: Application, upload_id: str, principal: Principal, form: Any
) -> tuple[str | None, dict[str, Any]]:
    """Draft, keep and attach the mapping; (the kept version's label, or None and the error
    context to show again)."""
    suggestions = _suggestions(app, upload_id, principal)
    library = _library(app, upload_id, principal)
    name = str(form.get("name") or "")
    try:
        if not study_routes.NAME.match(name):
            raise ConfigError(f"name {name!r}: lower-case letters, digits, '-' and '_' only")
        text = app.draft_mapping(
            suggestions,
            choices_from_form(form, suggestions),
            centre=str(form.get("centre") or _centre_id(principal)),
            study=str(form.get("study") or "") or None,
            anchor=str(form.get("anchor") or "").removeprefix("concept:") or None,
            library=library,  # carried inline: the kept mapping stands alone
        )
        kept = mapping_routes.keep(app, principal, name, text.encode())
    except ConfigError as exc:
        return None, {"error": str(exc), **_context(app, upload_id, suggestions, library)}
    except HTTPException as exc:
        detail = str(exc.detail)
        return None, {"error": detail, **_context(app, upload_id, suggestions, library)}
    folder = study_routes.upload_dir(app.settings, upload_id)
    meta = orjson.loads((folder / "meta.json").read_bytes())
    meta["mapping_file"] = str(kept.path)
    write_private(folder / "meta.json", orjson.dumps(meta))
    log.info("mapping kept from the assistant: version %d", kept.version)
    return f"{kept.name} v{kept.version}", {}


@router.post("/ui/uploads/{upload_id}/assistant")
async def write_mapping(
    request: Request, app: AppDep, principal: PrincipalDep, upload_id: str
) -> Response:
    form = await request.form()
    _check_csrf(request, str(form.get("csrf") or ""))
    _no_registry(principal)
    kept, context = await run_in_threadpool(_write, app, upload_id, principal, form)
    if kept is None:
        centre = str(form.get("centre") or _centre_id(principal))
        return _page(request, "assistant.html", status=422, centre=centre, **context)
    return RedirectResponse(f"/ui/uploads/{upload_id}", status_code=303)


# -- kept mappings -------------------------------------------------------------------------


@router.get("/ui/mappings")
def mappings_page(request: Request, app: AppDep, principal: PrincipalDep) -> Response:
    _with_session(request)
    kept = app.stored_mappings(mapping_routes.visible_owner(principal, None))
    kept.sort(key=lambda m: (m.owner, m.name, -m.version))
    return _page(request, "mappings.html", kept=kept)


@router.get("/ui/mappings/{owner}/{name}/{version:int}")
def download(app: AppDep, principal: PrincipalDep, owner: str, name: str, version: int) -> Response:
    whose = mapping_routes.visible_owner(principal, owner) or owner
    try:
        kept = app.stored_mapping(whose, name, version)
    except KeyError:
        raise HTTPException(404, "no such mapping") from None
    return FileResponse(
        kept.path,
        media_type="application/yaml",
        filename=f"{kept.name}-v{kept.version}.yaml",
        headers={"Cache-Control": "no-store"},
    )
