"""one outcome per (run, resource)

A job taken over by another worker recorded the resources the first worker had already
sent a second time (23,821 outcome rows for 18,683 resources). Duplicates already in a
cache are reduced to the latest row of each (run, resource), then a unique constraint
keeps it so; outcomes are written as upserts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 14:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KEY = ["run_id", "resource_type", "identifier_system", "identifier_value"]


def upgrade() -> None:
    op.execute(
        sa.text(
            "DELETE FROM resource_outcome WHERE id NOT IN (SELECT MAX(id) FROM resource_outcome "
            "GROUP BY run_id, resource_type, identifier_system, identifier_value)"
        )
    )
    with op.batch_alter_table("resource_outcome", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_resource_outcome", _KEY)


def downgrade() -> None:
    with op.batch_alter_table("resource_outcome", schema=None) as batch_op:
        batch_op.drop_constraint("uq_resource_outcome", type_="unique")
