"""The batch writer: one thread that owns the write connection and commits queued work together.

Two kinds of work share one queue, in order:
- fire-and-forget inserts (the completion log): they wait up to `flush_interval` so that many rows
  share one transaction and serving never waits on disk;
- waited operations (feedback): the caller blocks until its operation is committed. Whatever else is
  queued at that moment rides along in the same transaction (group commit), so thousands of
  concurrent submissions cost a few dozen commits per second instead of one each. Under load, commits
  are spaced `commit_spacing` apart (the writer sleeps off the rest of the interval since the last one),
  so each gathers what arrived meanwhile: a lone operation commits at once, a busy stream pays a few
  milliseconds of latency for far fewer commits and thread switches.

Each operation runs inside its own SAVEPOINT, so one that raises (a typed error found under the lock)
is rolled back alone and the rest of the batch still commits. When the database itself fails (disk
full, read-only, I/O error, locked past the busy timeout) the whole transaction is rolled back and
every job of that batch fails with `StoreUnavailable`: nothing of it is half-written, nothing was
acknowledged, and the thread goes on to the next batch, so writes succeed again once the disk recovers.

The connection is an SQLite one or a `flywheel.connection.Connection` (SQLite or PostgreSQL); `begin`
starts a batch's transaction with the store's write lock (`BEGIN IMMEDIATE` by default, see
flywheel/database.py). A PostgreSQL connection that broke (the server restarted) is replaced through
`reconnect` before the next batch.

`submit_async` is for event loops: after a commit, all of a batch's waiters on one loop are woken by
one `call_soon_threadsafe` (one wake-up of the loop per batch, not one per operation).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from feedback.errors import StoreUnavailable
from flywheel.database_errors import database_errors

logger = logging.getLogger(__name__)

Operation = Callable[[Any], Any]  # called with the connection, inside the batch's transaction


class _Job:
    __slots__ = ("op", "future", "waited", "loop")

    def __init__(self, op: Operation, waited: bool, loop: asyncio.AbstractEventLoop | None = None):
        self.op = op
        self.waited = waited
        self.loop = loop  # set: `future` is an asyncio future of that loop, settled on the loop's thread
        self.future: Future | asyncio.Future = loop.create_future() if loop is not None else Future()


def _settle(outcomes: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    """On the loop's thread: resolve the asyncio futures of one batch (skipping cancelled waiters)."""
    for future, result, exc in outcomes:
        if future.done():
            continue
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


class BatchWriter:
    """Runs queued operations on one connection, many per transaction, in submission order."""

    def __init__(self, conn: Any, *, flush_interval: float = 0.05, max_batch: int = 500,
                 commit_spacing: float = 0.004, begin: Callable[[Any], None] | None = None,
                 reconnect: Callable[[], Any] | None = None, name: str | None = None):
        self._conn = conn
        self._begin = begin or (lambda c: c.execute("BEGIN IMMEDIATE"))
        self._reconnect = reconnect
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._commit_spacing = commit_spacing
        self._last_batch_at = 0.0  # monotonic time the last batch was taken
        self._queue: deque[_Job] = deque()
        self._waited = 0  # waited jobs in the queue: when > 0, commit now rather than gather more
        self._cond = threading.Condition()
        self._closing = False
        self.batches_committed = 0  # transactions committed so far (group commit makes this << operations)
        self.batches_failed = 0  # transactions that failed as a whole (disk full, read-only): all rolled back
        self.writes_dropped = 0  # fire-and-forget rows (the completion log) lost with a failed batch
        self.failing = False  # the last batch failed: the store cannot write now
        if name is None and isinstance(conn, sqlite3.Connection):
            name = conn.execute("PRAGMA database_list").fetchone()[2] or ":memory:"
        self._path = name or "?"  # for the log
        self._thread = threading.Thread(target=self._run, name="feedback-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Operation, *, waited: bool = False) -> Future:
        """Queue an operation; the future resolves once it is committed. `waited` commits it at once."""
        return self._put(op, waited=waited)

    def submit_async(self, op: Operation) -> asyncio.Future:
        """Queue an operation from a running event loop and commit it at once; await the result."""
        return self._put(op, waited=True, loop=asyncio.get_running_loop())

    def run(self, op: Operation, timeout: float | None = 60.0) -> Any:
        """Queue an operation, block until its transaction commits, and return its result (or raise)."""
        return self._put(op, waited=True).result(timeout)

    def flush(self, timeout: float | None = 60.0) -> None:
        """Block until everything queued before this call is committed."""
        self.run(lambda conn: None, timeout)

    def close(self) -> None:
        """Commit everything queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def _put(self, op: Operation, waited: bool, loop: asyncio.AbstractEventLoop | None = None) -> Any:
        job = _Job(op, waited, loop)
        with self._cond:
            if self._closing:
                raise RuntimeError("the feedback store is closed")
            self._queue.append(job)
            self._waited += waited
            self._cond.notify_all()
        return job.future

    def _next_batch(self) -> list[_Job] | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None  # closing and drained
            # Only fire-and-forget rows queued: wait a little so they share a transaction.
            deadline = time.monotonic() + self._flush_interval
            while not self._closing and not self._waited and len(self._queue) < self._max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            pause = self._last_batch_at + self._commit_spacing - time.monotonic()
        if pause > 0 and not self._closing:
            time.sleep(pause)  # outside the lock: submitters queue freely (and wake nobody) meanwhile
        with self._cond:
            self._last_batch_at = time.monotonic()
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            self._waited -= sum(job.waited for job in batch)
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._deliver(self._transact(batch))
            except Exception as exc:  # a bug here must not end the thread: every later caller would hang
                logger.exception("feedback writer failed to settle a batch of %d operations", len(batch))
                self._deliver([(job, None, exc) for job in batch if not job.future.done()])

    def _transact(self, batch: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        """Run the batch in one transaction; the outcome of each job (all failed if the commit did)."""
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn = self._connection()
            if conn.in_transaction:  # a ROLLBACK that failed left one open: start clean
                conn.execute("ROLLBACK")
            self._begin(conn)
            for job in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = job.op(conn)
                except Exception as exc:
                    if StoreUnavailable.from_sqlite(exc) is not None:
                        raise  # the database failed, not this operation: the whole batch fails
                    conn.execute("ROLLBACK TO op")  # the operation's own failure: undo it alone
                    conn.execute("RELEASE op")
                    if not job.waited:
                        logger.warning("dropped a queued write: %s", exc)
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((job, result, None))
            conn.execute("COMMIT")
        except Exception as exc:  # the transaction itself failed (disk full, read-only, locked): nothing stored
            return self._abort(batch, exc)
        self.batches_committed += 1
        if self.failing:
            self.failing = False
            logger.info("feedback store %s writes again", self._path)
        return outcomes

    def _connection(self) -> Any:
        """The write connection, replaced first if it broke (PostgreSQL) and a `reconnect` was given."""
        if self._reconnect is not None and getattr(self._conn, "closed", False):
            logger.warning("feedback store %s: the write connection broke; reconnecting", self._path)
            try:
                self._conn.close()
            except database_errors():
                pass
            self._conn = self._reconnect()
        return self._conn

    @property
    def connection(self) -> Any:
        """The connection the writer commits on now."""
        return self._conn

    def _abort(self, batch: list[_Job], exc: Exception) -> list[tuple[_Job, Any, BaseException | None]]:
        """Roll the failed transaction back and fail every job of the batch with its error."""
        try:
            if not getattr(self._conn, "closed", False) and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")  # SQLite may have rolled back already (SQLITE_FULL can)
        except database_errors() as e:
            logger.warning("feedback store %s: rollback failed, retried before the next batch: %s", self._path, e)
        dropped = sum(not job.waited for job in batch)
        self.writes_dropped += dropped
        self.batches_failed += 1
        self.failing = True
        reason = StoreUnavailable.from_sqlite(exc) or exc
        logger.warning(
            "feedback store %s: a batch of %d operations was rolled back, %d of them completion-log rows (dropped): %s",
            self._path, len(batch), dropped, reason,
        )  # fmt: skip
        return [(job, None, _failure(exc)) for job in batch]

    def _deliver(self, outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
        """Resolve each job's future: thread futures here, event-loop futures on their loop's thread."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any, BaseException | None]]] = {}
        for job, result, exc in outcomes:
            if job.loop is not None:
                by_loop.setdefault(job.loop, []).append((job.future, result, exc))
                continue
            try:
                if exc is None:
                    job.future.set_result(result)
                else:
                    job.future.set_exception(exc)
            except InvalidStateError:  # the caller cancelled it
                pass
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # that loop has closed: nobody is waiting any more
                pass


def _failure(exc: Exception) -> BaseException:
    """What a job of a failed batch raises: StoreUnavailable for a storage failure, else the error itself."""
    failure = StoreUnavailable.from_sqlite(exc)
    if failure is None:
        return exc
    failure.__cause__ = exc
    return failure
