"""A database that cannot be written: typed 503-class errors, nothing half-written, and recovery in place.

SQLite's own limits stand in for the disk: `PRAGMA max_page_count` makes the next new page fail with
SQLITE_FULL, `PRAGMA query_only` makes every write fail with SQLITE_READONLY (chmod would not: the tests
run as root). No mocks: the errors come from SQLite through a real store or writer on tmp_path.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from feedback.errors import FeedbackNotFound, StoreUnavailable
from feedback.store import FeedbackStore
from feedback.writer import BatchWriter

PAGE_FILLER = "x" * 4_000  # a comment this long needs an overflow page: a full database refuses it


def fill_disk(conn: sqlite3.Connection, spare_pages: int = 0) -> None:
    """Let the database grow by `spare_pages` pages at most (call while the writer is idle)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + spare_pages}")


def free_disk(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA max_page_count = 1073741823")


def test_a_failed_commit_fails_exactly_its_batch_and_the_writer_goes_on(tmp_path: Path):
    conn = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (v BLOB)")
    writer = BatchWriter(conn, flush_interval=10.0)  # queued rows gather until a waited job arrives
    writer.run(lambda c: c.execute("INSERT INTO t VALUES (x'00')"))  # committed before the disk fills
    fill_disk(conn)
    rows = [writer.submit(lambda c: c.execute("INSERT INTO t VALUES (?)", (b"r" * 5000,))) for _ in range(3)]
    waited = writer.submit(lambda c: c.execute("INSERT INTO t VALUES (x'01')"), waited=True)
    for future in [*rows, waited]:
        with pytest.raises(StoreUnavailable, match="disk is full"):
            future.result(5)
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1  # the small row fitted, yet it was undone
    assert (writer.batches_failed, writer.writes_dropped, writer.failing) == (1, 3, True)
    free_disk(conn)
    writer.run(lambda c: c.execute("INSERT INTO t VALUES (?)", (b"r" * 5000,)))  # the same thread, no restart
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2 and not writer.failing
    writer.close()
    conn.close()


def test_a_full_disk_loses_no_acknowledged_rating(tmp_path: Path, make_completion):
    db = tmp_path / "feedback.db"
    with FeedbackStore(db) as store:
        completion = make_completion()
        store.record_completion(completion)
        store.flush()
        fill_disk(store._write_conn, spare_pages=40)  # room for a few dozen ratings, then full

        def submit(i: int) -> str:
            try:
                store.add_feedback(completion.id, "up", comment=PAGE_FILLER, feedback_id=f"client-{i}")
            except StoreUnavailable as e:
                assert "disk is full" in str(e) and "free space" in str(e)
                return "refused"
            return "acknowledged"

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(submit, range(200)))
        assert {"acknowledged", "refused"} <= set(outcomes), outcomes
        assert store._writer._thread.is_alive()
        free_disk(store._write_conn)
        store.add_feedback(completion.id, "down", feedback_id="after")  # writes again, no restart
    with FeedbackStore(db) as reopened:  # what is on disk: every acknowledged rating, no refused one
        for i, outcome in enumerate(outcomes):
            if outcome == "acknowledged":
                assert reopened.get_feedback(f"client-{i}").comment == PAGE_FILLER
            else:
                with pytest.raises(FeedbackNotFound):
                    reopened.get_feedback(f"client-{i}")
        assert reopened.get_feedback("after").rating == "down"
        assert reopened._read("PRAGMA integrity_check") == [("ok",)]


def _read_only(store: FeedbackStore, on: bool) -> None:
    """Make every write of the store's writer fail as on a read-only database (SQLITE_READONLY, SQLSTATE 25006)."""
    if store.db.is_postgresql:
        store._write_conn.execute(f"SET default_transaction_read_only = {'on' if on else 'off'}")
    else:
        store._write_conn.execute(f"PRAGMA query_only = {int(on)}")


def test_a_read_only_database_refuses_ratings_and_completions_then_recovers(store: FeedbackStore, make_completion):
    served = make_completion()
    store.record_completion(served)
    store.flush()
    _read_only(store, True)  # every write now fails
    lost = make_completion()
    store.record_completion(lost)  # serving never waits on the log: this returns at once
    with pytest.raises(StoreUnavailable, match="read-only.*permissions"):
        store.add_feedback(served.id, "up")
    with pytest.raises(StoreUnavailable, match="read-only"):
        asyncio.run(store.add_pair_async(prompt=[{"role": "user", "content": "Hi"}], chosen="a", rejected="b"))
    assert store._writer.writes_dropped == 1
    _read_only(store, False)
    stored = asyncio.run(store.add_feedback_async(served.id, "down"))
    assert stored.created and store.get_feedback(stored.record.id).rating == "down"
    assert store._read("SELECT COUNT(*) FROM feedback") == [(1,)]  # only the one after the recovery
    assert store._read("SELECT COUNT(*) FROM pairs") == [(0,)]
    with pytest.raises(Exception, match="no completion"):
        store.get_completion(lost.id)  # dropped with its failed batch (and logged), never half-written
