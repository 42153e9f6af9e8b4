"""The progress of a background check (``/ui/uploads/{id}/progress``), the fragment the
check page's htmx swaps in every second (:mod:`.checks` runs the check)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from fhir_cart.service.deps import PrincipalDep
from fhir_cart.service.web.checks import _checks
from fhir_cart.service.web.pages import _page, _with_session

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


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
