"""Timer ids, and every column that points at a timer, as 64-bit integers on
PostgreSQL (fleet ids, contract 9, are far above 2**31; PostgreSQL's INTEGER is
32-bit), and the event log's own id too, since it only grows. So are the pid of an
event (a refused request's may be anything up to 2**63 - 1, and is recorded) and uids
(32-bit unsigned).

SQLite is left as it is: its INTEGER is 64-bit already (and ``events.id`` must stay
exactly ``INTEGER PRIMARY KEY`` to remain the rowid SQLite numbers by itself).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (table, column): the timers' ids and what refers to them, the event log's id, then
# the pids and uids that may not fit in 32 bits.
_COLUMNS = (
    ("timers", "id"),
    ("events", "timer_id"),
    ("stacks", "timer_id"),
    ("incidents", "trigger_timer_id"),
    ("incident_captures", "timer_id"),
    ("events", "id"),
    ("events", "pid"),
    ("timers", "uid"),
    ("incident_captures", "uid"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())
    # SERIAL made the sequence behind events.id an integer one: it would stop at 2**31.
    op.execute("ALTER SEQUENCE IF EXISTS events_id_seq AS bigint")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER SEQUENCE IF EXISTS events_id_seq AS integer")
    for table, column in reversed(_COLUMNS):
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
