"""Alembic environment: run with the connection fhir_cart hands over (see store.migrate)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import fhir_cart.cache.models  # noqa: F401 - registers the tables

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
