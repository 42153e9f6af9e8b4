"""Request and response models of the web service (its published contract)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_cart.application import SyncRun, parse_types
from fhir_cart.references import id_problem

__all__ = [
    "FailureCauseOut",
    "Health",
    "Job",
    "OutcomeOut",
    "PatientOut",
    "Preview",
    "PullRequest",
    "PushRequest",
    "RegistryRequest",
    "RejectOut",
    "ResourceOut",
    "UploadReport",
]


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
    warnings: list[str] = Field(
        default_factory=list,
        description="What was read but cannot be used as is, e.g. a patient with no event "
        "of the study's anchor concept (named by study id)",
    )


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
    types: str | None = Field(
        default=None,
        max_length=2000,
        description="Resource types to ask for: 'all' (default: every type the server can "
        "search by patient), 'library' (the types the concept library reads) or a comma "
        "list such as 'library,AllergyIntolerance'; types left out are listed in the job",
    )
    study: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_\-]*$",
        description="Study definition (a name in mappings/studies/) whose summary to compute",
    )
    mapping: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_\-]*$",
        description="A centre mapping (a name in mappings/centres/) whose own concepts (its "
        "library: file) are read back by their codes",
    )

    @model_validator(mode="after")
    def _matches(self) -> PullRequest:
        needed = {"patients": self.identifiers, "group": self.group_id, "search": self.query}
        if not needed[self.selection]:
            raise ValueError(f"selection {self.selection!r} needs its value")
        parse_types(self.types)  # its ValueError names the part at fault: a 422
        if self.group_id is not None and (problem := id_problem(self.group_id)):
            raise ValueError(f"group_id {self.group_id!r}: {problem}")
        return self


class RegistryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    registry: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_\-]*$",
        description="A registry file the service holds: <data_dir>/registries/<registry>.yaml",
    )
    server: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Push the built registry to this server (a name in settings)",
    )
    force: bool = Field(default=False, description="Build even when no input changed")


class Job(BaseModel):
    id: int
    kind: str
    status: str
    progress_done: int
    progress_total: int
    counts: dict[str, int]
    by_type: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="A pull's account per resource type: fetched, patients, events, used, "
        "other, excluded (unaccounted and twice are 0 unless fhir_cart is at fault)",
    )
    not_asked: list[str] = Field(
        default_factory=list,
        description="Resource types the server holds for patients that the pull did not ask "
        "for (its types option)",
    )
    not_searchable: list[str] = Field(
        default_factory=list,
        description="Types of R4's Patient compartment the server declares no patient search "
        "for: not asked (it may hold them; the types option naming one reads it by type)",
    )
    error: str | None
    worker: str | None
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def from_run(cls, run: SyncRun) -> Job:
        assert run.id is not None
        counts = orjson.loads(run.counts or "{}")
        return cls(
            id=run.id,
            kind=run.kind,
            status=run.status,
            progress_done=run.progress_done,
            progress_total=run.progress_total,
            counts={k: v for k, v in counts.items() if isinstance(v, int)},
            by_type=counts.get("by_type") or {},
            not_asked=counts.get("not_asked") or [],
            not_searchable=counts.get("not_searchable") or [],
            error=run.error,
            worker=run.worker,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
        )


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
