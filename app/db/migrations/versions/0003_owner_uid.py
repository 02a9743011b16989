"""The real uid of each timer's worker: who may release it or read its stack.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null for timers recorded before: only root, the service's uid and the admin
    # token may act on those.
    with op.batch_alter_table("timers") as batch:
        batch.add_column(sa.Column("uid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("timers") as batch:
        batch.drop_column("uid")
