"""A read-only view of the feedback store, for exports, stats and the trainer.

`FeedbackStore` starts a writer thread and a checkpoint thread and creates the schema; a reader needs none
of that. The trainer's watcher reads the store on every poll for every adapter, so it opens this instead.
In WAL mode a reader never waits for the gateway's writer, and it never writes (the file is opened
`mode=ro`).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from feedback.queries import StoreQueries

BUSY_TIMEOUT_S = 30.0


class FeedbackReader(StoreQueries):
    """The store's queries (`rated_answers`, `pairs`, counts) over a read-only connection per thread."""

    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        if not self.db_path.is_file():
            raise FileNotFoundError(f"no feedback store at {self.db_path}; the gateway creates it on first start")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _read(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            uri = f"file:{self.db_path.resolve()}?mode=ro"
            conn = self._local.conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            with self._lock:
                self._conns.append(conn)
        return conn.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    def __enter__(self) -> FeedbackReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
