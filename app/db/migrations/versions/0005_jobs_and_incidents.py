"""Jobs, ranks and incidents (contract 8): each timer's node and torchrun labels, the
jobs they belong to, and the incidents that group a hung job's ranks by their stacks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Timers recorded before have no labels; their node is unknown, shown as "".
    with op.batch_alter_table("timers") as batch:
        batch.add_column(sa.Column("node", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("job_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("rank", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("local_rank", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("world_size", sa.Integer(), nullable=True))
        batch.create_index("ix_timers_job_id_id", ["job_id", "id"])
        batch.create_index("ix_timers_node_id", ["node", "id"])
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(), primary_key=True),
        sa.Column("world_size", sa.Integer(), nullable=True),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("incidents", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_jobs_last_seen", "jobs", ["last_seen"])
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("trigger_timer_id", sa.Integer(), nullable=True),
        sa.Column("suspects", sa.JSON(), nullable=False),
        sa.Column("summary", sa.String(), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
    )
    op.create_index("ix_incidents_job_id_opened_at", "incidents", ["job_id", "opened_at"])
    op.create_table(
        "incident_captures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "incident_id",
            sa.Integer(),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("uid", sa.Integer(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("local_rank", sa.Integer(), nullable=True),
        sa.Column("timer_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("group_number", sa.Integer(), nullable=True),
        sa.Column("expired_at", sa.Float(), nullable=True),
        sa.Column("captured_at", sa.Float(), nullable=False),
        sa.Column("stack_method", sa.String(), nullable=True),
        sa.Column("stack_note", sa.String(), nullable=True),
        sa.Column("stack_text", sa.Text(), nullable=True),
        sa.UniqueConstraint("incident_id", "node", "pid"),
    )
    op.create_index("ix_incident_captures_incident_id", "incident_captures", ["incident_id"])


def downgrade() -> None:
    op.drop_table("incident_captures")
    op.drop_table("incidents")
    op.drop_table("jobs")
    with op.batch_alter_table("timers") as batch:
        batch.drop_index("ix_timers_node_id")
        batch.drop_index("ix_timers_job_id_id")
        for column in ("world_size", "local_rank", "rank", "job_id", "node"):
            batch.drop_column(column)
