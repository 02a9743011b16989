"""Timers and their events.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "timers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("scope_id", sa.String(), nullable=False),
        sa.Column("signal", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("expiration_time", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.String(), nullable=True),
        sa.Column("process_create_time", sa.Float(), nullable=True),
    )
    op.create_index("ix_timers_state_id", "timers", ["state", "id"])
    op.create_index("ix_timers_pid_id", "timers", ["pid", "id"])
    op.create_index("ix_timers_scope_id", "timers", ["scope_id", "id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("timer_id", sa.Integer(), sa.ForeignKey("timers.id"), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("scope_id", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_events_timer_id_id", "events", ["timer_id", "id"])
    op.create_index("ix_events_kind_id", "events", ["kind", "id"])
    op.create_index("ix_events_at", "events", ["at"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("timers")
