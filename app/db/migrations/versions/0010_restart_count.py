"""Which incarnation of its job a timer's worker is: torchrun's
TORCHELASTIC_RESTART_COUNT, a label like the rank (contract 8). Timers recorded before
have none (null).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("timers") as batch:
        batch.add_column(sa.Column("restart_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("timers") as batch:
        batch.drop_column("restart_count")
