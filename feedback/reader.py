"""A read-only view of the feedback store, for exports, stats and the trainer.

`FeedbackStore` starts a writer thread and a checkpoint thread and creates the schema; a reader needs none
of that. The trainer's watcher reads the store on every poll for every adapter, so it opens this instead.
A reader never waits for the gateway's writer (WAL on SQLite, MVCC on PostgreSQL), and it never writes:
its connections come from `Database(read_only=True)` (flywheel/database.py), the opener the console's
timeline uses too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from feedback.queries import StoreQueries
from flywheel.database import Database, exists
from flywheel.location import Location

BUSY_TIMEOUT_S = 30.0


class FeedbackReader(StoreQueries):
    """The store's queries (`rated_answers`, `pairs`, counts) over read-only connections (one per thread)."""

    def __init__(self, db_path: Location):
        if not exists(db_path, "feedback"):
            raise FileNotFoundError(f"no feedback store at {db_path}; the gateway creates it on first start")
        self.db = Database(db_path, read_only=True, busy_timeout=BUSY_TIMEOUT_S)
        self.db_path = db_path if self.db.is_postgresql else Path(db_path)
        self.dialect = self.db.dialect

    def _read(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        return self.db.read(sql, args)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> FeedbackReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
