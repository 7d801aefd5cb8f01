"""One database connection, SQLite's or psycopg's, behind one interface: SQL in SQLite's spelling with `?`
placeholders (turned into psycopg's `%s` on PostgreSQL, flywheel/dialect.py), rows as tuples or dicts, and
whether a transaction is open or the connection is gone. `flywheel/database.py` opens them."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from flywheel.dialect import SQLITE, Dialect, to_psycopg


class Connection:
    """One connection in autocommit mode (transactions are begun explicitly); `?` placeholders on both."""

    def __init__(self, raw: Any, dialect: Dialect):
        self.raw = raw
        self.dialect = dialect

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement; returns a cursor (`fetchone`, `fetchall`, `rowcount`)."""
        if self.dialect.name == SQLITE:
            return self.raw.execute(sql, args)
        if not args:
            return self.raw.execute(sql)
        return self.raw.execute(to_psycopg(sql), list(args))

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[dict]:
        """Rows as dicts keyed by column name."""
        cursor = self.execute(sql, args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @property
    def in_transaction(self) -> bool:
        if self.dialect.name == SQLITE:
            return self.raw.in_transaction
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    @property
    def closed(self) -> bool:
        if self.dialect.name == SQLITE:
            try:
                self.raw.total_changes  # noqa: B018 - raises ProgrammingError once closed
            except sqlite3.ProgrammingError:
                return True
            return False
        return self.raw.closed or self.raw.broken

    def close(self) -> None:
        self.raw.close()
