"""FeedbackStore: the completion log, ratings and preference pairs, in one SQLite file or in PostgreSQL.

Safe from many threads and several processes: WAL mode (or PostgreSQL's MVCC) lets readers run beside
the one writer, each process writes through a single BatchWriter thread, and every batch is one write
transaction that holds the store's write lock (`BEGIN IMMEDIATE`, or PostgreSQL's advisory lock,
flywheel/database.py), so writers from different processes, or replicas on other hosts, queue instead
of interleaving: a client's `feedback_id` is stored once whichever replica it reaches.

`synchronous=NORMAL` in WAL mode: a commit survives the process crashing, not the machine losing
power (https://www.sqlite.org/pragma.html#pragma_synchronous); the price of fsync per commit would
cap group commit far below the 2,000 submissions/s target on this machine's disk. WAL checkpoints
run on their own thread (`checkpointer.py`), never inside a commit that ratings wait on. On
PostgreSQL a commit is the server's durable commit; it has no checkpointer of ours.

This class is the storage boundary: exports and stats only use its public methods, so a server
database could replace SQLite behind the same interface.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from feedback.checkpointer import Checkpointer
from feedback.errors import CompletionNotFound, FeedbackNotFound
from feedback.pairs import resolve_pair
from feedback.queries import StoreQueries
from feedback.records import CompletionRecord, CompletionRef, FeedbackRecord, PairRecord, choice_indexes
from feedback.schema import (
    COMPLETION_COLUMNS,
    FEEDBACK_COLUMNS,
    MIGRATIONS,
    PAIR_COLUMNS,
    completion_from_row,
    completion_row,
    feedback_from_row,
    feedback_row,
    pair_from_row,
    pair_row,
    placeholders,
    upsert_updates,
)
from feedback.validation import (
    MAX_COMMENT_CHARS,
    MAX_CORRECTION_CHARS,
    feedback_id_problems,
    index_problems,
    raise_if,
    rating_problems,
    text_problems,
)
from feedback.vocabulary import Rating
from feedback.writer import BatchWriter
from flywheel.connection import Connection
from flywheel.database import Database
from flywheel.location import Location, describe
from flywheel.migrations import migrate

BUSY_TIMEOUT_S = 30.0
CACHE_KIB = 64 * 1024  # per connection; SQLite's default (2 MiB) re-read index pages on every batch
RECENT_COMPLETIONS = 100_000  # refs of committed completions kept in memory (~25 MB): most ratings are of these


R = TypeVar("R", FeedbackRecord, PairRecord)


@dataclass(frozen=True)
class Stored(Generic[R]):
    """What a submission left in the store: the record, and whether this call created it.

    `created` is False for an idempotent repeat (a `feedback_id` already stored, by this process or another
    replica): `record` is then the first submission's."""

    record: R
    created: bool


def new_id(prefix: str) -> str:
    """A server-assigned id: prefix + the time in ms (12 hex digits) + 20 random hex digits.

    Time first, so new rows append at the right edge of the primary-key index: with random keys each
    insert dirtied a page somewhere in the whole B-tree, and commits (WAL writes) grew with the table.
    80 random bits keep ids unguessable."""
    return f"{prefix}{time.time_ns() // 1_000_000:012x}{_random_hex.take(20)}"


class _RandomHex:
    """Hex digits from `os.urandom`, fetched 4 KiB at a time: one getrandom call per id showed in profiles."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._digits = ""
        self._at = 0

    def take(self, count: int) -> str:
        with self._lock:
            if self._at + count > len(self._digits):
                self._digits, self._at = os.urandom(4096).hex(), 0
            start, self._at = self._at, self._at + count
            return self._digits[start:self._at]

    def forget(self) -> None:
        """Drop the digits fetched so far (after a fork, so that parent and child never share them)."""
        self._digits, self._at = "", 0


_random_hex = _RandomHex()
os.register_at_fork(after_in_child=_random_hex.forget)  # a forked child must not reuse the parent's digits


class FeedbackStore(StoreQueries):
    """Record completions, take ratings and pairs, and read them back for exports and stats."""

    def __init__(self, db_path: Location, *, flush_interval: float = 0.05, max_batch: int = 500):
        """`db_path`: the store's SQLite file, or a postgresql:// URL shared by every replica."""
        self.db = Database(db_path, lock_name="feedback", busy_timeout=BUSY_TIMEOUT_S, pragmas=(
            "PRAGMA synchronous=NORMAL",
            f"PRAGMA cache_size=-{CACHE_KIB}",  # the indexes' hot pages stay in memory
        ))
        self.db_path = db_path if self.db.is_postgresql else Path(db_path)
        self.dialect = self.db.dialect
        migrate(self.db, "feedback", MIGRATIONS)
        conn = self.db.connect()
        checkpointer = None
        if not self.db.is_postgresql:
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it, off the commit path
            checkpointer = Checkpointer(self.db.connect)
        self._writer = BatchWriter(conn, flush_interval=flush_interval, max_batch=max_batch, begin=self.db.begin,
                                   reconnect=self.db.connect, name=describe(db_path))
        self._checkpointer = checkpointer
        # Completions queued but not yet committed, so feedback can find them at once; and the refs of
        # recently committed ones, so a rating (usually of a recent answer) costs no database read.
        self._pending: dict[str, CompletionRecord] = {}
        self._recent: OrderedDict[str, CompletionRef] = OrderedDict()
        self._pending_lock = threading.Lock()
        self._closed = False

    @property
    def _write_conn(self) -> Connection:
        return self._writer.connection

    @property
    def writer(self) -> BatchWriter:
        """The batch writer; its `failing`, `batches_failed` and `writes_dropped` say whether writes land."""
        return self._writer

    def _read(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        """Run a query on a read connection of this thread (SQLite) or the pool (PostgreSQL): never the writer's."""
        return self.db.read(sql, args)

    # ---- completion log -------------------------------------------------------------------------
    def record_completion(self, rec: CompletionRecord) -> None:
        """Queue a served completion for the log; returns at once, the writer commits it in a batch."""
        with self._pending_lock:
            self._pending[rec.id] = rec
        row = completion_row(rec)
        values = placeholders(COMPLETION_COLUMNS)
        sql = (f"INSERT INTO completions ({COMPLETION_COLUMNS}) VALUES ({values})"
               f" ON CONFLICT (id) DO UPDATE SET {upsert_updates(COMPLETION_COLUMNS)}")
        future = self._writer.submit(lambda conn: conn.execute(sql, row))
        future.add_done_callback(lambda done: self._forget_pending(rec, done))

    def _forget_pending(self, rec: CompletionRecord, done: Future) -> None:
        """The write finished: drop the record from `_pending`; remember its ref if it was committed."""
        with self._pending_lock:
            if self._pending.get(rec.id) is rec:
                del self._pending[rec.id]
            if done.exception() is None:
                self._remember(rec.id, rec.ref())

    def _remember(self, completion_id: str, ref: CompletionRef) -> None:
        """Keep a committed completion's ref, evicting the oldest past RECENT_COMPLETIONS (holds the lock)."""
        self._recent[completion_id] = ref
        self._recent.move_to_end(completion_id)
        if len(self._recent) > RECENT_COMPLETIONS:
            self._recent.popitem(last=False)

    def completion_ref(self, completion_id: str) -> CompletionRef:
        """Adapter, version and choice indexes of a completion; CompletionNotFound if unknown.

        Queued and recent completions are answered from memory; older ones with one narrow read."""
        with self._pending_lock:
            rec = self._pending.get(completion_id)
            ref = rec.ref() if rec is not None else self._recent.get(completion_id)
        if ref is not None:
            return ref
        rows = self._read("SELECT adapter, adapter_version, choices FROM completions WHERE id = ?", (completion_id,))
        if not rows:
            raise CompletionNotFound(f"no completion with id {completion_id!r}")
        adapter, version, choices = rows[0]
        ref = CompletionRef(adapter, version, tuple(choice_indexes(json.loads(choices))))
        with self._pending_lock:
            self._remember(completion_id, ref)
        return ref

    def get_completion(self, completion_id: str) -> CompletionRecord:
        """The completion with this id, committed or still queued; CompletionNotFound if unknown."""
        # Pending first: a record leaves `_pending` only after its commit, so checking the database
        # second can never miss one that is in flight.
        with self._pending_lock:
            rec = self._pending.get(completion_id)
        if rec is not None:
            return rec
        rows = self._read(f"SELECT {COMPLETION_COLUMNS} FROM completions WHERE id = ?", (completion_id,))
        if not rows:
            raise CompletionNotFound(f"no completion with id {completion_id!r}")
        return completion_from_row(rows[0])

    def delete_completions_older_than(self, seconds: float, *, keep_rated: bool = True) -> int:
        """Retention: delete completions older than `seconds`; rated ones stay unless keep_rated=False."""
        cutoff = time.time() - seconds
        sql = "DELETE FROM completions WHERE created_at < ?"
        if keep_rated:  # rated completions are training data: the ratings point at their text
            sql += (
                " AND id NOT IN (SELECT completion_id FROM feedback)"
                " AND id NOT IN (SELECT chosen_completion_id FROM pairs"
                "  WHERE chosen_completion_id IS NOT NULL)"
                " AND id NOT IN (SELECT rejected_completion_id FROM pairs"
                "  WHERE rejected_completion_id IS NOT NULL)"
            )
        deleted = self._writer.run(lambda conn: conn.execute(sql, (cutoff,)).rowcount)
        with self._pending_lock:  # a rating that raced the delete is refused by _insert_feedback's check
            self._recent.clear()
        return deleted

    # ---- ratings --------------------------------------------------------------------------------
    def add_feedback(self, completion_id: str, rating: Rating, **options: Any) -> Stored[FeedbackRecord]:
        """Store a rating on one choice; returns once it is committed.

        Idempotent on `feedback_id`: a repeat stores nothing and returns the first record, `created` False."""
        return self._writer.run(_feedback_op(self.new_feedback(completion_id, rating, **options)))

    async def add_feedback_async(self, completion_id: str, rating: Rating, **options: Any) -> Stored[FeedbackRecord]:
        """`add_feedback` for an event loop: waits for the commit without holding a thread."""
        return await self._writer.submit_async(_feedback_op(self.new_feedback(completion_id, rating, **options)))

    def new_feedback(
        self,
        completion_id: str,
        rating: Rating,
        *,
        choice_index: int = 0,
        comment: str | None = None,
        correction: str | None = None,
        user: str | None = None,
        feedback_id: str | None = None,
    ) -> FeedbackRecord:
        """Validate a rating against its completion and build the record (nothing is written)."""
        raise_if(
            rating_problems(rating)
            + index_problems("choice_index", choice_index)
            + text_problems("comment", comment, MAX_COMMENT_CHARS)
            + text_problems("correction", correction, MAX_CORRECTION_CHARS)
            + text_problems("user", user, 256)
            + feedback_id_problems(feedback_id)
        )
        completion = self.completion_ref(completion_id)
        if choice_index not in completion.choice_indexes:
            raise_if(
                [
                    f"choice_index {choice_index} is out of range: the completion has choices"
                    f" {list(completion.choice_indexes)}"
                ]
            )
        return FeedbackRecord(
            id=new_id("fb_"), completion_id=completion_id, adapter=completion.adapter,
            adapter_version=completion.adapter_version, rating=rating, choice_index=choice_index,
            comment=comment, correction=correction, user=user, created_at=time.time(),
            feedback_id=feedback_id,
        )  # fmt: skip

    # ---- pairs ----------------------------------------------------------------------------------
    def add_pair(self, **fields: Any) -> Stored[PairRecord]:
        """Store a preferred and a rejected answer (see `new_pair`); returns once committed (idempotent like
        `add_feedback`)."""
        return self._writer.run(_pair_op(self.new_pair(**fields)))

    async def add_pair_async(self, **fields: Any) -> Stored[PairRecord]:
        """`add_pair` for an event loop: waits for the commit without holding a thread."""
        return await self._writer.submit_async(_pair_op(self.new_pair(**fields)))

    def new_pair(
        self,
        *,
        chosen_completion_id: str | None = None,
        rejected_completion_id: str | None = None,
        chosen_choice_index: int = 0,
        rejected_choice_index: int = 0,
        prompt: list[dict] | None = None,
        chosen: str | None = None,
        rejected: str | None = None,
        adapter: str | None = None,
        user: str | None = None,
        feedback_id: str | None = None,
    ) -> PairRecord:
        """Validate and build a pair: two completion ids (+ choice indexes) or prompt messages + two texts.

        Nothing is written; saving is idempotent on `feedback_id`."""
        fields = resolve_pair(
            self.get_completion, chosen_completion_id=chosen_completion_id,
            rejected_completion_id=rejected_completion_id, chosen_choice_index=chosen_choice_index,
            rejected_choice_index=rejected_choice_index, prompt=prompt, chosen=chosen, rejected=rejected,
            adapter=adapter, user=user, feedback_id=feedback_id,
        )  # fmt: skip
        return PairRecord(id=new_id("pair_"), created_at=time.time(), user=user, feedback_id=feedback_id, **fields)

    # ---- reading back ---------------------------------------------------------------------------
    def get_feedback(self, feedback_id: str) -> FeedbackRecord | PairRecord:
        """A rating (`fb_...`) or pair (`pair_...`) by server id, or by the client's feedback_id."""
        for columns, table, convert in (
            (FEEDBACK_COLUMNS, "feedback", feedback_from_row),
            (PAIR_COLUMNS, "pairs", pair_from_row),
        ):
            rows = self._read(
                f"SELECT {columns} FROM {table} WHERE id = ? OR client_id = ?", (feedback_id,) * 2
            )
            if rows:
                return convert(rows[0])
        raise FeedbackNotFound(f"no feedback with id {feedback_id!r}")

    def flush(self) -> None:
        """Block until everything queued so far is committed."""
        self._writer.flush()

    def close(self) -> None:
        """Commit everything queued, stop the writer thread and close all connections."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._write_conn.close()
        self.db.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _feedback_op(rec: FeedbackRecord) -> Callable[[Connection], Stored[FeedbackRecord]]:
    return lambda conn: _insert_feedback(conn, rec)


def _pair_op(rec: PairRecord) -> Callable[[Connection], Stored[PairRecord]]:
    return lambda conn: _insert_pair(conn, rec)


def _insert_feedback(conn: Connection, rec: FeedbackRecord) -> Stored[FeedbackRecord]:
    """Insert one rating under the writer's transaction: first-wins on feedback_id, newest-wins per user."""
    if rec.feedback_id is not None:
        first = _by_client_id(conn, FEEDBACK_COLUMNS, "feedback", rec.feedback_id, feedback_from_row)
        if first is not None:
            return Stored(first, created=False)
    # validated against memory before queueing; retention may have deleted the row since (never dangle)
    if conn.execute("SELECT 1 FROM completions WHERE id = ?", (rec.completion_id,)).fetchone() is None:
        raise CompletionNotFound(f"no completion with id {rec.completion_id!r}")
    replaced = False
    if rec.user is not None:
        deleted = conn.execute(
            'DELETE FROM feedback WHERE completion_id = ? AND choice_index = ? AND "user" = ?',
            (rec.completion_id, rec.choice_index, rec.user),
        ).rowcount
        replaced = deleted > 0
    rec = FeedbackRecord(**{**rec.__dict__, "replaced": replaced})
    sql = f"INSERT INTO feedback ({FEEDBACK_COLUMNS}) VALUES ({placeholders(FEEDBACK_COLUMNS)}) ON CONFLICT DO NOTHING"
    if conn.execute(sql, feedback_row(rec)).rowcount == 0:  # lost a race to another process
        return Stored(_by_client_id(conn, FEEDBACK_COLUMNS, "feedback", rec.feedback_id, feedback_from_row),
                      created=False)
    return Stored(rec, created=True)


def _insert_pair(conn: Connection, rec: PairRecord) -> Stored[PairRecord]:
    """Insert one pair under the writer's transaction: first-wins on feedback_id."""
    sql = f"INSERT INTO pairs ({PAIR_COLUMNS}) VALUES ({placeholders(PAIR_COLUMNS)}) ON CONFLICT DO NOTHING"
    if conn.execute(sql, pair_row(rec)).rowcount == 0:
        return Stored(_by_client_id(conn, PAIR_COLUMNS, "pairs", rec.feedback_id, pair_from_row), created=False)
    return Stored(rec, created=True)


def _by_client_id(
    conn: Connection, columns: str, table: str, client_id: str | None, convert: Callable
):
    row = conn.execute(f"SELECT {columns} FROM {table} WHERE client_id = ?", (client_id,)).fetchone()
    return None if row is None else convert(row)
