"""WAL checkpoints on a thread of their own, so a commit never waits for one.

In WAL mode every commit appends to the -wal file and, by default, the commit that pushes the WAL past
1,000 pages also copies it back into the database and fsyncs the file (a checkpoint). That commit then
takes tens of milliseconds, and every rating waiting on it does too: it was the p99 of `flywheel bench
feedback`. The store turns automatic checkpoints off on its write connection and this thread runs a
PASSIVE checkpoint (one that never blocks the writer or readers) every `interval` seconds instead.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` every `interval` seconds on its own connection until closed."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], interval: float = 1.0):
        self._connect = connect
        self._interval = interval
        self._stop = threading.Event()
        self.checkpoints = 0
        self._thread = threading.Thread(target=self._run, name="feedback-checkpointer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = self._connect()
        try:
            while not self._stop.wait(self._interval):
                self.checkpoint(conn)
            self.checkpoint(conn)  # leave a short WAL behind
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as e:  # busy or locked: the next round catches up
            logger.debug("WAL checkpoint skipped: %s", e)

    def close(self) -> None:
        """Stop after one last checkpoint."""
        self._stop.set()
        self._thread.join()
