"""Stacks captured before kills, the worker's opt-in dump signal, and an index for
the dashboard's recent ends.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("timers") as batch:
        batch.add_column(sa.Column("dump_signal", sa.Integer(), nullable=True))
    # The dashboard's "recent ends", read at every start.
    op.create_index("ix_timers_ended_at", "timers", ["ended_at"])
    op.create_table(
        "stacks",
        sa.Column(
            "timer_id",
            sa.Integer(),
            sa.ForeignKey("timers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("captured_at", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stacks")
    op.drop_index("ix_timers_ended_at", "timers")
    with op.batch_alter_table("timers") as batch:
        batch.drop_column("dump_signal")
