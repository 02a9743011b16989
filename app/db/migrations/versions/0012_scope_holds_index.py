"""A scope's holds by index (contract 12): GET /scopes reads the last released timers
of one job's scope, newest first, and the what-if replays them; with acquired_at and
end_reason in it, both read the index alone (bench/scope_stats.py).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_COLUMNS = ["job_id", "scope_id", "state", "ended_at", "acquired_at", "end_reason"]


def upgrade() -> None:
    op.create_index("ix_timers_scope_holds", "timers", _COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_timers_scope_holds", table_name="timers")
