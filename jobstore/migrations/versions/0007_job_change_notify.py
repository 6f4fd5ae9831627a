"""Job change notifications: on PostgreSQL, every write to a job or its metadata sends NOTIFY prunekit_job_changed
with the job's id, so API processes can cache status bodies and drop them the moment a worker changes the job.

A trigger rather than calls in the code: it sees every writer (API, workers, the reaper, manual SQL) and cannot be
forgotten by a new one. SQLite has no NOTIFY; there the status cache stays off (jobstore/job_changes.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION prunekit_job_changed() RETURNS trigger AS $$
BEGIN
    IF TG_TABLE_NAME = 'jobs' THEN
        PERFORM pg_notify('prunekit_job_changed', COALESCE(NEW.id, OLD.id));
    ELSE
        PERFORM pg_notify('prunekit_job_changed', COALESCE(NEW.job_id, OLD.job_id));
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""
_TRIGGERS = {
    "jobs": "AFTER UPDATE OR DELETE",  # a new job has nothing cached yet
    "job_metadata": "AFTER INSERT OR UPDATE OR DELETE",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    for table, events in _TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {table}_changed {events} ON {table} FOR EACH ROW EXECUTE FUNCTION prunekit_job_changed()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_changed ON {table}")
    op.execute("DROP FUNCTION IF EXISTS prunekit_job_changed()")
