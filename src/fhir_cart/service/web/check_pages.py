"""An upload's check and summary pages, and the progress fragments their htmx polls while
the work runs in the background (:mod:`.checks` runs it and keeps what it finds): no page
reads the file itself, so each answers in well under 200 ms (issue 22)."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fhir_cart.errors import FhirCartError
from fhir_cart.service.deps import AppDep, PrincipalDep
from fhir_cart.service.web import checks
from fhir_cart.service.web.checks import CheckState, _checks
from fhir_cart.service.web.pages import _check, _page, _summary, _with_session

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


async def _check_of(request: Request, app: Any, principal: Any, upload_id: str) -> Any:
    """The kept check, or the state of its check in the pool (waited for a moment)."""
    found = await run_in_threadpool(
        checks.check_or_start, request, app, upload_id, principal, _check, _summary
    )
    if isinstance(found, CheckState) and not found.finished:
        state = found
        await checks.settle(lambda: state.finished)
        if state.status == "done":  # kept now
            found = await run_in_threadpool(
                checks.check_or_start, request, app, upload_id, principal, _check, _summary
            )
    return found


@router.get("/ui/uploads/{upload_id}")
async def check_page(
    request: Request, app: AppDep, principal: PrincipalDep, upload_id: str
) -> Response:
    """The check of an upload; while it runs in the background, its progress."""
    _with_session(request)
    found = await _check_of(request, app, principal, upload_id)
    if isinstance(found, CheckState):  # running, or failed (the file does not fit)
        status = 422 if found.status == "failed" else 200
        return _page(request, "checking.html", status, upload_id=upload_id, state=found)
    return _page(request, "check.html", servers=sorted(app.settings.servers), **found)


@router.get("/ui/uploads/{upload_id}/progress")
def progress(request: Request, principal: PrincipalDep, upload_id: str) -> Response:
    """The progress bar of a background check; when the check has ended, htmx is told to
    load the check page again."""
    _with_session(request)
    state = _checks(request).state(upload_id, principal)
    if state is None:
        raise HTTPException(404, "no check of this upload runs here")
    answer = _page(request, "_progress.html", upload_id=upload_id, state=state)
    if state.finished:
        answer.headers["HX-Refresh"] = "true"
    return answer


async def _summary_of(request: Request, app: Any, principal: Any, upload_id: str) -> Any:
    """The kept summary, the upload's check (running or failed), or the summary's future
    (waited for a moment; done: its context, or its failure raised)."""
    found = await run_in_threadpool(
        checks.summary_or_start, request, app, upload_id, principal, _summary
    )
    if isinstance(found, Future):
        future: Future[Any] = found
        await checks.settle(future.done)
        if future.done():
            return future.result()
    return found


@router.get("/ui/uploads/{upload_id}/summary")
async def summary_page(
    request: Request, app: AppDep, principal: PrincipalDep, upload_id: str
) -> Response:
    """The study's measures over the upload beside the paper's, and its plots (SVG); while
    they are worked out in the background, a page that says so and follows them."""
    _with_session(request)
    try:
        found = await _summary_of(request, app, principal, upload_id)
    except HTTPException:
        raise
    except FhirCartError as exc:
        raise HTTPException(422, str(exc)) from exc
    except Exception as exc:  # worked out in the pool: its failure is the page's to show
        return _page(
            request,
            "summarising.html",
            status=500,
            upload_id=upload_id,
            failed=f"the summary failed ({exc.__class__.__name__}); it was logged",
        )
    if isinstance(found, CheckState) and found.status == "failed":
        return _page(request, "checking.html", 422, upload_id=upload_id, state=found)
    if isinstance(found, dict):
        return _page(request, "summary.html", **found)
    checking = isinstance(found, CheckState)
    return _page(request, "summarising.html", upload_id=upload_id, checking=checking)


@router.get("/ui/uploads/{upload_id}/summary/progress")
def summary_progress(
    request: Request, app: AppDep, principal: PrincipalDep, upload_id: str
) -> Response:
    """The summary page's note while its summary is worked out; when it is ready (or has
    failed), htmx is told to load the page again."""
    _with_session(request)
    found = checks.summary_or_start(request, app, upload_id, principal, _summary)
    ended = isinstance(found, dict) or (
        found.finished if isinstance(found, CheckState) else found.done()
    )
    checking = isinstance(found, CheckState) and not ended
    answer = _page(
        request, "_summarising.html", upload_id=upload_id, checking=checking, ended=ended
    )
    if ended:
        answer.headers["HX-Refresh"] = "true"
    return answer
