"""Browsing the cache: study records, and resources sent or received."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from fhir_cart.service import schemas as s
from fhir_cart.service.deps import Auth, CacheDep, admin_only

__all__ = ["router"]

router = APIRouter(tags=["cache"], dependencies=[*Auth, Depends(admin_only)])


@router.get("/cache/patients", response_model=list[s.PatientOut])
def cache_patients(cache: CacheDep) -> list[s.PatientOut]:
    return [
        s.PatientOut(centre=c.patient.centre, study_id=c.patient.study_id, events=len(c.events))
        for c in cache.study_records()
    ]


@router.get("/cache/resources", response_model=list[s.ResourceOut])
def cache_resources(
    cache: CacheDep,
    direction: Annotated[Literal["sent", "received"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[s.ResourceOut]:
    rows = cache.list_resources(direction=direction, limit=limit, offset=offset)
    return [s.ResourceOut.model_validate(r, from_attributes=True) for r in rows]
