"""Whose job: a job is its id and its owner's uid, as incidents are (0008). A job id is
any string a worker chose; another user's processes claiming it make a job of their own
instead of taking the place of the first one's ranks.

The owner is part of the key, so the table is rebuilt (both databases). Each job
recorded before gets one row per uid among its timers and incidents, with its first
and last activity and its incidents counted per owner; a job with neither keeps one
row, owner unknown (-1).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_UID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_OWNERS = """
SELECT job_id, coalesce(uid, -1) AS uid, min(acquired_at) AS first_seen,
       max(coalesce(ended_at, acquired_at)) AS last_seen
FROM timers WHERE job_id IS NOT NULL GROUP BY job_id, coalesce(uid, -1)
UNION ALL
SELECT job_id, coalesce(uid, -1), min(opened_at), max(opened_at)
FROM incidents GROUP BY job_id, coalesce(uid, -1)
"""


def _jobs_table(name: str, *key: sa.Column[object]) -> None:
    """A jobs table keyed by ``key``, with the columns every version of it has."""
    op.create_table(
        name,
        *key,
        sa.Column("world_size", sa.Integer(), nullable=True),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("incidents", sa.Integer(), nullable=False, server_default="0"),
    )


def _replace_jobs_with(name: str) -> None:
    op.drop_index("ix_jobs_last_seen", "jobs")
    op.drop_table("jobs")
    op.rename_table(name, "jobs")
    op.create_index("ix_jobs_last_seen", "jobs", ["last_seen"])


def upgrade() -> None:
    _jobs_table(
        "jobs_owned",
        sa.Column("job_id", sa.String(), primary_key=True),
        sa.Column("uid", _UID, primary_key=True, server_default="-1"),
    )
    # Each owner's activity, within the job's (its timers may have been pruned).
    sqlite = op.get_bind().dialect.name == "sqlite"
    greatest, least = ("max", "min") if sqlite else ("greatest", "least")
    op.execute(
        "INSERT INTO jobs_owned (job_id, uid, world_size, first_seen, last_seen, incidents)"
        " SELECT jobs.job_id, owners.uid, jobs.world_size,"
        f"  {greatest}(jobs.first_seen, min(owners.first_seen)),"
        f"  {least}(jobs.last_seen, max(owners.last_seen)),"
        "  (SELECT count(*) FROM incidents WHERE incidents.job_id = jobs.job_id"
        "   AND coalesce(incidents.uid, -1) = owners.uid)"
        f" FROM jobs JOIN ({_OWNERS}) AS owners ON owners.job_id = jobs.job_id"
        " GROUP BY jobs.job_id, owners.uid, jobs.world_size, jobs.first_seen, jobs.last_seen"
    )
    op.execute(
        "INSERT INTO jobs_owned (job_id, uid, world_size, first_seen, last_seen, incidents)"
        " SELECT job_id, -1, world_size, first_seen, last_seen, incidents FROM jobs"
        " WHERE job_id NOT IN (SELECT job_id FROM jobs_owned)"
    )
    _replace_jobs_with("jobs_owned")


def downgrade() -> None:
    # Back to one row per id: the most recently active owner's.
    _jobs_table("jobs_by_id", sa.Column("job_id", sa.String(), primary_key=True))
    op.execute(
        "INSERT INTO jobs_by_id (job_id, world_size, first_seen, last_seen, incidents)"
        " SELECT job_id, world_size, first_seen, last_seen, incidents FROM jobs AS j"
        " WHERE NOT EXISTS (SELECT 1 FROM jobs AS k WHERE k.job_id = j.job_id"
        "  AND (k.last_seen > j.last_seen OR (k.last_seen = j.last_seen AND k.uid > j.uid)))"
    )
    _replace_jobs_with("jobs_by_id")
