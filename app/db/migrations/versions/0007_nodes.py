"""Fleet (contract 9): the nodes sharing the database, and the node of every event.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("number", sa.Integer(), nullable=False, unique=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
    )
    # Events recorded before have no node: "" (so are timers of before, see 0005).
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("node", sa.String(), nullable=False, server_default=""))
        batch.create_index("ix_events_node_id", ["node", "id"])


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_node_id")
        batch.drop_column("node")
    op.drop_table("nodes")
