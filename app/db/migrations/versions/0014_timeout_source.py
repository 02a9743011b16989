"""How each timer's deadline was chosen (contract 12): "explicit" (the request's own),
or for an "auto" request "initial" or "learned". Timers recorded before chose their
own: "explicit".

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("timers") as batch:
        batch.add_column(
            sa.Column("timeout_source", sa.String(), nullable=False, server_default="explicit")
        )


def downgrade() -> None:
    # In place, not in batch mode: on SQLite a batch copies ``timers`` to a new table
    # and drops the old one, which fails on the events' foreign key, or without events
    # deletes every stack (ON DELETE CASCADE). SQLite drops a column in place since 3.35.
    op.drop_column("timers", "timeout_source")
