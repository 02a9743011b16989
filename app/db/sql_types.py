"""Column types that differ between the two databases the service runs on.

Timer ids are 64-bit (fleet ids, ``app.db.timer_ids``: below 2**53, far above 2**31), so
they and every column that points at a timer are BIGINT on PostgreSQL, whose INTEGER
is 32-bit; so are uids (32-bit unsigned) and the pid a refused request claimed. On
SQLite they stay INTEGER: its integers are 64-bit already, and only a column declared
exactly ``INTEGER PRIMARY KEY`` is the table's rowid, the one SQLite numbers by itself
(``events.id``); a BIGINT primary key there would stay null.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer
from sqlalchemy.types import TypeEngine

__all__ = ["BIG_ID"]

BIG_ID: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
