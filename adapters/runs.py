"""Training runs and the per-adapter lock, shared by the CLI, the watcher and the gateway.

Stored in an SQLite file (WAL) or in the PostgreSQL database every host shares (flywheel/database.py).
The lock row names its holder (pid, host) and carries a heartbeat. It is taken in one write transaction
that holds the runs store's write lock (`BEGIN IMMEDIATE`, or PostgreSQL's advisory lock), so two
processes, on one host or many, never both see it free. A lock whose holder is dead, or whose heartbeat
is older than `stale_seconds`, is taken over and the holder's run is marked failed: a trainer killed
mid-run never leaves a stuck lock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from adapters.names import Word
from flywheel.connection import Connection
from flywheel.database import Database
from flywheel.database_errors import database_errors
from flywheel.location import Location, is_url
from flywheel.migrations import Migration, migrate
from flywheel.scratch import pid_alive

logger = logging.getLogger(__name__)

_TABLES = (
    """CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    adapter TEXT NOT NULL,
    status TEXT NOT NULL,              -- RunStatus
    stage TEXT,                        -- export, sft, dpo, kto, gate, register
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    loss REAL,
    metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    pid INTEGER,
    host TEXT,
    result_version INTEGER
)""",
    "CREATE INDEX IF NOT EXISTS runs_adapter ON runs (adapter, id)",
    """CREATE TABLE IF NOT EXISTS locks (
    adapter TEXT PRIMARY KEY,
    run_id INTEGER,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    heartbeat_at REAL NOT NULL
)""",
)
MIGRATIONS = (Migration(1, _TABLES),)  # PostgreSQL's spelling: Dialect.ddl (identity ids, 8-byte floats)



class RunStatus(Word):
    """Where a training run is."""

    QUEUED = "queued"  # asked for (admin API, console); the watcher starts it
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # registered a version that passed the gate
    FAILED = "failed"
    REJECTED = "rejected"  # registered a version the gate rejected


FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED)
REFUSED_KEY = "problems"  # trainer.job stores DataRejected.problems under this metrics key
REQUESTS_KEY = "requests"  # who asked for a queued run and why: [{"by", "reason", "at"}], oldest first
MAX_REQUESTS = 20  # a waiting run asked for again and again keeps the latest reasons only


class LockBusy(RuntimeError):
    """Another live process is training this adapter."""


class RunNotFound(KeyError):
    """No run has this id."""


@dataclass(frozen=True)
class Run:
    """One row of the runs table."""

    id: int
    adapter: str
    status: str
    stage: str | None
    step: int
    total_steps: int
    loss: float | None
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    host: str | None = None
    result_version: int | None = None

    @classmethod
    def from_row(cls, row: dict) -> Run:
        return cls(**{**row, "metrics": json.loads(row["metrics"] or "{}")})

    @property
    def data_refused(self) -> bool:
        """A failed run whose exported data was refused (empty or poisoned): only new feedback can change that."""
        return self.status == RunStatus.FAILED and REFUSED_KEY in self.metrics


class RunStore:
    """The runs table and the per-adapter locks of one trainer database."""

    def __init__(self, db_path: Location, stale_seconds: float = 120.0, clock: Callable[[], float] = time.time):
        """`db_path`: the trainer's SQLite file, or a postgresql:// URL shared by every host."""
        self.db_path = db_path if is_url(db_path) else Path(db_path)
        self.stale_seconds = stale_seconds
        self.clock = clock  # stamps every time column; tests pass a fake one
        self.host = socket.gethostname()
        self.db = Database(self.db_path, lock_name="runs", busy_timeout=30)
        migrate(self.db, "runs", MIGRATIONS)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.db.write() as conn:
            yield conn

    def _dicts(self, sql: str, args: list | tuple = ()) -> list[dict]:
        return self.db.query(sql, args)

    def _rows(self, sql: str, args: list | tuple = ()) -> list[tuple]:
        return self.db.read(sql, args)

    # ---- runs ---------------------------------------------------------------------------------
    def create(self, adapter: str, status: str = RunStatus.QUEUED) -> int:
        """Add a run row and return its id."""
        with self._write() as conn:
            return self._insert(conn, adapter, status)

    def _insert(self, conn, adapter: str, status: str) -> int:
        (run_id,) = conn.execute(
            "INSERT INTO runs (adapter, status, created_at, pid, host) VALUES (?,?,?,?,?) RETURNING id",
            [adapter, status, self.clock(), os.getpid(), self.host],
        ).fetchone()
        return int(run_id)

    def queue(self, adapter: str, by: str = "", reason: str = "") -> int:
        """Ask the watcher for a run: the adapter's waiting request if there is one, else a new one (its id).

        With a `reason`, who asked (`by`) and why are kept in the run's metrics under REQUESTS_KEY, in the same
        transaction: the trainer keeps the metrics it finds when it adds its own (trainer/job.py)."""
        with self._write() as conn:
            row = conn.execute("SELECT MIN(id) FROM runs WHERE adapter = ? AND status = ?",
                               [adapter, RunStatus.QUEUED]).fetchone()
            if row and row[0] is not None:
                run_id = int(row[0])  # one waiting request per adapter: a repeated POST does not pile up runs
            else:
                run_id = self._insert(conn, adapter, RunStatus.QUEUED)
            if reason:
                (metrics,) = conn.execute("SELECT metrics FROM runs WHERE id = ?", [run_id]).fetchone()
                metrics = json.loads(metrics or "{}")
                asked = [*metrics.get(REQUESTS_KEY, []), {"by": by, "reason": reason, "at": self.clock()}]
                metrics[REQUESTS_KEY] = asked[-MAX_REQUESTS:]
                conn.execute("UPDATE runs SET metrics = ? WHERE id = ?", [json.dumps(metrics), run_id])
            return run_id

    def update(self, run_id: int, **values: object) -> None:
        """Set columns of one run (metrics given as a dict are stored as JSON)."""
        if "metrics" in values:
            values["metrics"] = json.dumps(values["metrics"], default=str)
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._write() as conn:
            conn.execute(f"UPDATE runs SET {cols} WHERE id = ?", [*values.values(), run_id])

    def finish(self, run_id: int, status: str, *, error: str | None = None, **values: object) -> None:
        """Mark a run finished with `status` (succeeded, failed, rejected)."""
        if status not in FINISHED:
            raise ValueError(f"{status!r} is not a finished status {FINISHED}")
        self.update(run_id, status=status, error=error, finished_at=self.clock(), **values)
        logger.info("run %d finished: %s%s", run_id, status, f" ({error})" if error else "")

    def get(self, run_id: int) -> Run:
        """One run by id; RunNotFound (a KeyError) when absent."""
        rows = self._dicts("SELECT * FROM runs WHERE id = ?", [run_id])
        if not rows:
            raise RunNotFound(f"no training run {run_id}")
        return Run.from_row(rows[0])

    def list(self, adapter: str | None = None, limit: int = 50) -> list[Run]:
        """Newest runs first, for one adapter or all."""
        sql, args = "SELECT * FROM runs", []
        if adapter:
            sql, args = sql + " WHERE adapter = ?", [adapter]
        rows = self._dicts(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])
        return [Run.from_row(r) for r in rows]

    def queued_adapters(self) -> list[str]:
        """Adapters with a run waiting to be picked up by the watcher."""
        return [r[0] for r in self._rows("SELECT DISTINCT adapter FROM runs WHERE status = ?", [RunStatus.QUEUED])]

    def last_started(self, adapter: str) -> float | None:
        """When the adapter's latest run started (any outcome), or None."""
        rows = self._rows("SELECT MAX(COALESCE(started_at, created_at)) FROM runs WHERE adapter = ?", [adapter])
        return rows[0][0] if rows else None

    def adapters(self) -> list[str]:
        """Adapters that have at least one run."""
        return [r[0] for r in self._rows("SELECT DISTINCT adapter FROM runs ORDER BY adapter")]

    def status_counts(self) -> dict[tuple[str, str], int]:
        """Runs per (adapter, status)."""
        return {(a, st): n for a, st, n in self._rows("SELECT adapter, status, COUNT(*) FROM runs GROUP BY 1, 2")}

    def failure_streaks(self, ended: Sequence[str]) -> dict[str, int]:
        """Each adapter's failed runs since its last run whose status is one of `ended`."""
        marks = ", ".join("?" * len(ended))
        return dict(self._rows(
            "SELECT adapter, SUM(CASE WHEN status = ? AND id > COALESCE("
            f"  (SELECT MAX(id) FROM runs e WHERE e.adapter = r.adapter AND e.status IN ({marks})), 0)"
            " THEN 1 ELSE 0 END) FROM runs r GROUP BY adapter", [RunStatus.FAILED, *ended],
        ))

    def recover_orphans(self) -> int:
        """Mark running runs of dead processes on this host as failed; returns how many."""
        # A queued row carries the pid of the gateway that asked for it: that process dying is no failure.
        rows = self._rows("SELECT id, pid FROM runs WHERE status = ? AND host = ?", [RunStatus.RUNNING, self.host])
        dead = [run_id for run_id, pid in rows if pid is not None and not pid_alive(pid)]
        for run_id in dead:
            self.finish(run_id, RunStatus.FAILED, error="trainer process died mid-run")
        return len(dead)

    # ---- lock ---------------------------------------------------------------------------------
    def _holder_gone(self, row: tuple) -> bool:
        _, pid, host, heartbeat_at = row
        if self.clock() - heartbeat_at > self.stale_seconds:
            return True
        return host == self.host and not pid_alive(pid)

    def acquire(self, adapter: str) -> int:
        """Take the adapter's lock and create its running run in one transaction; return the run id.

        Raises LockBusy when a live holder has the lock. A dead or stale holder's run is marked failed.
        """
        now = self.clock()
        with self._write() as conn:
            row = conn.execute(
                "SELECT run_id, pid, host, heartbeat_at FROM locks WHERE adapter = ?", [adapter]
            ).fetchone()
            if row is not None and not self._holder_gone(row):
                raise LockBusy(f"adapter {adapter!r} is being trained by run {row[0]} (pid {row[1]} on {row[2]})")
            if row is not None:
                logger.warning("recovering the lock of %s from dead or stale pid %s (run %s)", adapter, row[1], row[0])
                conn.execute(
                    "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status IN (?, ?)",
                    [RunStatus.FAILED, f"trainer process {row[1]} died mid-run; lock recovered", now, row[0],
                     RunStatus.QUEUED, RunStatus.RUNNING],
                )
            queued = conn.execute(  # a run asked for over the admin API becomes this run
                "SELECT id FROM runs WHERE adapter = ? AND status = ? ORDER BY id LIMIT 1", [adapter, RunStatus.QUEUED]
            ).fetchone()
            if queued:
                run_id = int(queued[0])
                conn.execute(
                    "UPDATE runs SET status = ?, started_at = ?, pid = ?, host = ? WHERE id = ?",
                    [RunStatus.RUNNING, now, os.getpid(), self.host, run_id],
                )
            else:
                (run_id,) = conn.execute(
                    "INSERT INTO runs (adapter, status, created_at, started_at, pid, host) VALUES (?,?,?,?,?,?)"
                    " RETURNING id", [adapter, RunStatus.RUNNING, now, now, os.getpid(), self.host],
                ).fetchone()
            conn.execute(
                "INSERT INTO locks (adapter, run_id, pid, host, heartbeat_at) VALUES (?,?,?,?,?)"
                " ON CONFLICT (adapter) DO UPDATE SET run_id = excluded.run_id, pid = excluded.pid,"
                " host = excluded.host, heartbeat_at = excluded.heartbeat_at",
                [adapter, run_id, os.getpid(), self.host, now],
            )
        logger.info("run %d started for %s (pid %d)", run_id, adapter, os.getpid())
        return run_id

    def heartbeat(self, adapter: str) -> None:
        """Refresh this process's lock so it does not look stale."""
        with self._write() as conn:
            conn.execute(
                "UPDATE locks SET heartbeat_at = ? WHERE adapter = ? AND pid = ? AND host = ?",
                [self.clock(), adapter, os.getpid(), self.host],
            )

    def release(self, adapter: str) -> None:
        """Drop this process's lock (a lock held by someone else is left alone)."""
        with self._write() as conn:
            conn.execute(
                "DELETE FROM locks WHERE adapter = ? AND pid = ? AND host = ?",
                [adapter, os.getpid(), self.host],
            )

    def lock_holder(self, adapter: str) -> dict | None:
        """The lock row of an adapter, or None when free."""
        rows = self._dicts("SELECT * FROM locks WHERE adapter = ?", [adapter])
        return rows[0] if rows else None

    @contextmanager
    def running(self, adapter: str) -> Iterator[int]:
        """Hold the adapter's lock and a new running run for the block (yields the run id).

        A heartbeat thread keeps the lock fresh, so long steps never look stale.
        """
        run_id = self.acquire(adapter)
        stop = threading.Event()
        thread = threading.Thread(target=self._beat, args=(adapter, stop), name=f"lock-{adapter}", daemon=True)
        thread.start()
        try:
            yield run_id
        finally:
            stop.set()
            thread.join()
            self.release(adapter)

    def _beat(self, adapter: str, stop: threading.Event) -> None:
        while not stop.wait(max(1.0, self.stale_seconds / 4)):
            try:
                self.heartbeat(adapter)
            except database_errors() as e:
                logger.warning("lock heartbeat for %s failed: %s", adapter, e)
