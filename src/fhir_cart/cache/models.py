"""Tables of the local cache (sqlmodel). Schema changes go through migrations/ (alembic)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "FhirResource",
    "PushPending",
    "RejectedInput",
    "ResourceOutcome",
    "StudyRecord",
    "SyncRun",
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class StudyRecord(SQLModel, table=True):
    """One patient's canonical case as last read from a study file."""

    __tablename__ = "study_record"
    __table_args__ = (UniqueConstraint("centre", "study_id", name="uq_study_record"),)

    id: int | None = Field(default=None, primary_key=True)
    centre: str = Field(max_length=64)
    study_id: str = Field(max_length=64)
    content: str = Field(sa_column=Column(Text, nullable=False))
    content_hash: str = Field(max_length=64)
    updated_at: dt.datetime = Field(default_factory=_now)


class FhirResource(SQLModel, table=True):
    """A resource sent to or received from a server, with what the server said about it."""

    __tablename__ = "fhir_resource"
    __table_args__ = (
        UniqueConstraint(
            "server",
            "direction",
            "resource_type",
            "identifier_system",
            "identifier_value",
            name="uq_fhir_resource",
        ),
        Index("ix_fhir_resource_server_id", "server", "resource_type", "server_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    server: str = Field(max_length=500)
    direction: str = Field(max_length=8)
    resource_type: str = Field(max_length=64)
    identifier_system: str = Field(max_length=500)
    identifier_value: str = Field(max_length=200)
    server_id: str | None = Field(default=None, max_length=64)
    version_id: str | None = Field(default=None, max_length=64)
    etag: str | None = Field(default=None, max_length=100)
    last_modified: str | None = Field(default=None, max_length=64)
    content_hash: str = Field(max_length=64)
    content: str = Field(sa_column=Column(Text, nullable=False))
    patient_ref: str | None = Field(default=None, max_length=200)
    mapped: bool | None = None
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    updated_at: dt.datetime = Field(default_factory=_now)


class SyncRun(SQLModel, table=True):
    """A push or pull, and the job queue of the web service."""

    __tablename__ = "sync_run"
    __table_args__ = (Index("ix_sync_run_status", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=8)
    server: str = Field(max_length=500)
    status: str = Field(default="pending", max_length=16)
    params: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    counts: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    progress_done: int = 0
    progress_total: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    worker: str | None = Field(default=None, max_length=100)
    created_at: dt.datetime = Field(default_factory=_now)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    heartbeat_at: dt.datetime | None = None


class ResourceOutcome(SQLModel, table=True):
    __tablename__ = "resource_outcome"
    __table_args__ = (
        UniqueConstraint(
            "run_id",
            "resource_type",
            "identifier_system",
            "identifier_value",
            name="uq_resource_outcome",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="sync_run.id", index=True)
    resource_type: str = Field(max_length=64)
    identifier_system: str = Field(max_length=500)
    identifier_value: str = Field(max_length=200)
    outcome: str = Field(max_length=16)
    status_code: int | None = None
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: dt.datetime = Field(default_factory=_now)


class PushPending(SQLModel, table=True):
    """Intent journal: written before a bundle goes out, cleared when its answer is stored."""

    __tablename__ = "push_pending"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="sync_run.id", index=True)
    bundle_no: int
    resource_type: str = Field(max_length=64)
    identifier_system: str = Field(max_length=500)
    identifier_value: str = Field(max_length=200)
    content_hash: str = Field(max_length=64)


class RejectedInput(SQLModel, table=True):
    __tablename__ = "rejected_input"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int | None = Field(default=None, foreign_key="sync_run.id", index=True)
    source: str = Field(max_length=500)
    table_name: str | None = Field(default=None, max_length=64)
    row: int | None = None
    column_name: str | None = Field(default=None, max_length=200)
    value: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    at: dt.datetime = Field(default_factory=_now)
