"""A scope's holds by owner (contract 12): a job is its id and its owner, so the
statistics, the what-if and the learned timeouts read one owner's holds of one job's
scope; the index of 0012 gains ``uid`` after ``job_id``.

Dropped and made again in place, not in batch mode: on SQLite a batch copies
``timers`` to a new table and drops the old one, which deletes every stack (ON DELETE
CASCADE) or fails on the events' foreign key.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_NAME = "ix_timers_scope_holds"
_BEFORE = ["job_id", "scope_id", "state", "ended_at", "acquired_at", "end_reason"]
_AFTER = ["job_id", "uid", "scope_id", "state", "ended_at", "acquired_at", "end_reason"]


def upgrade() -> None:
    op.drop_index(_NAME, table_name="timers")
    op.create_index(_NAME, "timers", _AFTER)


def downgrade() -> None:
    op.drop_index(_NAME, table_name="timers")
    op.create_index(_NAME, "timers", _BEFORE)
