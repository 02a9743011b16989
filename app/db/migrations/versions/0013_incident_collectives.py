"""Which collective hung (contract 10): each rank's flight recorder as the incident
stores it (normalized, the last entries of each group: ``RankRecorder.stored_json``),
and the incident's collective findings and which rule named each suspect. Incidents
recorded before have no recorders, no findings ([]) and no rules ({}).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incident_captures", sa.Column("collectives", sa.JSON(), nullable=True))
    op.add_column(
        "incidents",
        sa.Column("collective_findings", sa.JSON(), nullable=False, server_default="[]"),
    )
    op.add_column(
        "incidents", sa.Column("suspect_rules", sa.JSON(), nullable=False, server_default="{}")
    )


def downgrade() -> None:
    # In place, not in batch mode: on SQLite a batch copies ``incidents`` to a new table
    # and drops the old one, and dropping it deletes every rank's capture (ON DELETE
    # CASCADE, with foreign keys on). SQLite drops a column in place since 3.35 (2021).
    op.drop_column("incidents", "suspect_rules")
    op.drop_column("incidents", "collective_findings")
    op.drop_column("incident_captures", "collectives")
