"""Request and response models of the web service (its published contract)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_cart.cache.models import SyncRun
from fhir_cart.references import id_problem

__all__ = [
    "FailureCauseOut", "Health", "Job", "OutcomeOut", "PatientOut", "Preview", "PullRequest",
    "PushRequest", "RegistryRequest", "RejectOut", "ResourceOut", "UploadReport",
]  # fmt: skip


class Health(BaseModel):
    status: str
    version: str
    worker: str | None = None
    """``alive``, ``dead`` (503: being restarted), or ``separate`` (jobs run by ``fhir-cart
    worker`` processes, not by this one); only on ``/health``."""
    worker_restarts: int | None = None
    oldest_pending_seconds: float | None = None
    """Age of the oldest job waiting for a worker (None: none waits)."""


class RejectOut(BaseModel):
    source: str
    table: str | None
    row: int | None
    column: str | None
    value: str | None
    reason: str


class UploadReport(BaseModel):
    upload_id: str
    patients: int
    events: int
    rejects: list[RejectOut] = Field(description="The first max_rejects_reported rejects")
    rejects_total: int = Field(description="Every reject, including those not listed")


class Preview(BaseModel):
    bundles: list[dict[str, Any]]
    unverified_codes: list[dict[str, str]]


class PushRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    server: str = Field(min_length=1, max_length=64, description="A server named in settings")
    continue_on_error: bool = Field(
        default=False,
        description="Push the good rows of a file with rejected rows (else the job fails)",
    )


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: str = Field(min_length=1, max_length=64, description="A server named in settings")
    selection: Literal["patients", "group", "search"]
    identifiers: list[str] = Field(default_factory=list, max_length=100_000)
    group_id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9\-\.]+$")
    query: str | None = Field(default=None, max_length=2000)
    since: str | None = Field(default=None, max_length=40)
    use_export: bool = False
    study: str | None = Field(
        default=None, max_length=64, pattern=r"^[a-z0-9][a-z0-9_\-]*$",
        description="Study definition (a name in mappings/studies/) whose summary to compute",
    )  # fmt: skip

    @model_validator(mode="after")
    def _matches(self) -> PullRequest:
        needed = {"patients": self.identifiers, "group": self.group_id, "search": self.query}
        if not needed[self.selection]:
            raise ValueError(f"selection {self.selection!r} needs its value")
        if self.group_id is not None and (problem := id_problem(self.group_id)):
            raise ValueError(f"group_id {self.group_id!r}: {problem}")
        return self


class RegistryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    registry: str = Field(
        min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_\-]*$",
        description="A registry file the service holds: <data_dir>/registries/<registry>.yaml",
    )  # fmt: skip
    server: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Push the built registry to this server (a name in settings)",
    )  # fmt: skip
    force: bool = Field(default=False, description="Build even when no input changed")


class Job(BaseModel):
    id: int
    kind: str
    status: str
    progress_done: int
    progress_total: int
    counts: dict[str, int]
    error: str | None
    worker: str | None
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def from_run(cls, run: SyncRun) -> Job:
        assert run.id is not None
        return cls(
            id=run.id, kind=run.kind, status=run.status, progress_done=run.progress_done,
            progress_total=run.progress_total, counts=orjson.loads(run.counts or "{}"),
            error=run.error, worker=run.worker, created_at=run.created_at,
            started_at=run.started_at, finished_at=run.finished_at,
        )  # fmt: skip


class OutcomeOut(BaseModel):
    resource_type: str
    identifier_system: str
    identifier_value: str
    outcome: str
    status_code: int | None
    reason: str | None


class FailureCauseOut(BaseModel):
    """Failed resources of one job that failed for one cause (status and reason)."""

    status: int | None = Field(description="HTTP status of the failure (null: no answer)")
    reason: str
    count: int
    types: dict[str, int] = Field(description="How many of each resource type")
    hint: str | None = Field(description="What to do about it, where known")


class PatientOut(BaseModel):
    centre: str
    study_id: str
    events: int


class ResourceOut(BaseModel):
    server: str
    direction: str
    resource_type: str
    identifier_system: str
    identifier_value: str
    server_id: str | None
    version_id: str | None
    etag: str | None
    content_hash: str
    mapped: bool | None
    note: str | None
