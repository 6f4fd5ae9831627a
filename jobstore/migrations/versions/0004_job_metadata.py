"""Job metadata: up to 16 string pairs per job (git SHA, branch, PR), one row each so lists can filter on them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_metadata",
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_index("ix_job_metadata_key_value", "job_metadata", ["key", "value"])


def downgrade() -> None:
    op.drop_index("ix_job_metadata_key_value", table_name="job_metadata")
    op.drop_table("job_metadata")
