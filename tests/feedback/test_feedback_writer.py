"""BatchWriter: group commit, per-operation rollback, ordering, draining on close."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from feedback.writer import BatchWriter


@pytest.fixture
def conn(tmp_path):
    conn = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (v INTEGER)")
    yield conn
    conn.close()


def _count(conn) -> int:
    return conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]


def test_concurrent_waited_operations_share_transactions(conn):
    writer = BatchWriter(conn)

    def insert(i: int) -> int:
        return writer.run(lambda c: c.execute("INSERT INTO t VALUES (?)", (i,)).lastrowid)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        rowids = list(pool.map(insert, range(2000)))
    elapsed = time.perf_counter() - started
    writer.close()
    assert sorted(rowids) == list(range(1, 2001))
    assert _count(conn) == 2000
    assert writer.batches_committed < 1000  # group commit, not one transaction per call
    assert elapsed < 10  # generous: the benchmark holds the real 2,000/s target


def test_commits_are_spaced_under_load_but_a_lone_operation_is_not_held(conn):
    writer = BatchWriter(conn, commit_spacing=0.3)

    def insert_timed(v: int) -> float:
        started = time.perf_counter()
        writer.run(lambda c: c.execute("INSERT INTO t VALUES (?)", (v,)))
        return time.perf_counter() - started

    assert insert_timed(0) < 0.3  # nothing committed lately: at once
    assert insert_timed(1) >= 0.25  # right after a commit: waits out the spacing, gathering what arrives
    started = time.perf_counter()
    futures = []
    for i in range(100):  # a steady stream, one every ~5 ms
        futures.append(writer.submit(lambda c, i=i: c.execute("INSERT INTO t VALUES (?)", (i,)), waited=True))
        time.sleep(0.005)
    for future in futures:
        future.result(timeout=10)
    batches = writer.batches_committed
    writer.close()
    assert _count(conn) == 102
    assert batches - 2 <= (time.perf_counter() - started) / 0.3 + 1  # one commit per spacing at most


def test_a_failing_operation_is_undone_alone(conn):
    writer = BatchWriter(conn, flush_interval=10.0)  # queued rows gather until flush() below
    ok1 = writer.submit(lambda c: c.execute("INSERT INTO t VALUES (1)"))

    def half_then_fail(c):
        c.execute("INSERT INTO t VALUES (2)")
        raise ValueError("typed failure under the lock")

    bad = writer.submit(half_then_fail)
    ok2 = writer.submit(lambda c: c.execute("INSERT INTO t VALUES (3)"))
    writer.flush()
    with pytest.raises(ValueError):
        bad.result(5)
    ok1.result(5), ok2.result(5)
    assert writer.batches_committed == 1  # all in one transaction, yet the failure left no trace
    writer.close()
    assert [v for (v,) in conn.execute("SELECT v FROM t ORDER BY v")] == [1, 3]


def test_fire_and_forget_rows_are_batched_and_drained_on_close(conn):
    writer = BatchWriter(conn, flush_interval=10.0)
    for i in range(100):
        writer.submit(lambda c, i=i: c.execute("INSERT INTO t VALUES (?)", (i,)))
    time.sleep(0.05)
    assert _count(conn) == 0  # still gathering: nobody is waiting
    started = time.perf_counter()
    writer.flush()  # a waiting caller commits everything queued before it at once
    assert time.perf_counter() - started < 2  # ...without sitting out the 10 s gathering interval
    assert _count(conn) == 100 and writer.batches_committed == 1
    for i in range(10):
        writer.submit(lambda c, i=i: c.execute("INSERT INTO t VALUES (?)", (i,)))
    writer.close()
    assert _count(conn) == 110
    with pytest.raises(RuntimeError):
        writer.submit(lambda c: None)


def test_max_batch_bounds_a_transaction(conn):
    writer = BatchWriter(conn, flush_interval=10.0, max_batch=10)
    futures = [writer.submit(lambda c: c.execute("INSERT INTO t VALUES (0)")) for _ in range(30)]
    for f in futures:
        f.result(5)  # full batches commit without waiting for the interval
    writer.close()
    assert writer.batches_committed == 3


def test_async_waiters_are_settled_on_their_loop(conn):
    import asyncio

    writer = BatchWriter(conn)

    async def main() -> list:
        ok = [writer.submit_async(lambda c, i=i: c.execute("INSERT INTO t VALUES (?)", (i,)).lastrowid)
              for i in range(50)]
        bad = writer.submit_async(lambda c: 1 / 0)
        results = await asyncio.gather(*ok)
        with pytest.raises(ZeroDivisionError):
            await bad
        return results

    assert sorted(asyncio.run(main())) == list(range(1, 51))
    writer.close()
    assert _count(conn) == 50
