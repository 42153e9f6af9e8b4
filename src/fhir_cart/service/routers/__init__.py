"""The service's routes, one APIRouter per area, each with its own dependencies:
``health`` (liveness, readiness), ``study`` (uploads and previews), ``jobs`` (queueing
push, pull and registry jobs; status, outcomes, failures by cause), ``cohort`` (what a pull
job produced), ``cache`` (browsing the cache) and ``mappings`` (mapping files the service
keeps, versioned)."""

from __future__ import annotations

from fastapi import APIRouter

from fhir_cart.service.routers import cache, cohort, health, jobs, mappings, study

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    study.router,
    jobs.router,
    cohort.router,
    cache.router,
    mappings.router,
)
"""In the order the routes were always declared (the OpenAPI document lists them so)."""
