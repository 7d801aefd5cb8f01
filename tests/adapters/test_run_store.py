"""The runs table and the per-adapter lock, without training, on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.runs import LockBusy, RunStore


@pytest.fixture
def db(store_location) -> Path | str:
    """The runs store's location: an SQLite file, or the test's PostgreSQL database."""
    return store_location("trainer.db")


def test_one_run_per_adapter_at_a_time(db) -> None:
    store = RunStore(db)
    with store.running("support") as run_id:
        assert store.get(run_id).status == "running"
        with pytest.raises(LockBusy, match="run"):
            store.acquire("support")
        other = RunStore(db).acquire("sales")  # other adapters are not blocked
        assert other != run_id
        store.finish(run_id, "succeeded", result_version=3)
    assert store.lock_holder("support") is None
    assert store.get(run_id).result_version == 3
    assert store.acquire("support") > run_id  # free again


def test_lock_of_dead_process_is_recovered(db) -> None:
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[2]); from adapters.runs import RunStore;"
        "RunStore(sys.argv[1]).acquire('support'); os._exit(0)"  # dies holding the lock
    )
    subprocess.run([sys.executable, "-c", code, str(db), str(Path.cwd())], check=True)
    store = RunStore(db)
    dead_run = store.list("support")[0]
    assert store.lock_holder("support")["run_id"] == dead_run.id and dead_run.status == "running"

    new_run = store.acquire("support")

    assert store.get(dead_run.id).status == "failed"
    assert "died" in store.get(dead_run.id).error
    assert store.lock_holder("support")["run_id"] == new_run


def test_stale_heartbeat_is_recovered_and_fresh_one_is_not(db) -> None:
    store = RunStore(db, stale_seconds=60)
    first = store.acquire("support")
    store.db.execute("UPDATE locks SET pid = 999999999, host = 'elsewhere'")  # a live-looking remote holder
    with pytest.raises(LockBusy):
        store.acquire("support")
    store.db.execute("UPDATE locks SET heartbeat_at = ?", [time.time() - 3600])
    second = store.acquire("support")
    assert second != first and store.get(first).status == "failed"


def test_heartbeat_thread_keeps_lock_fresh(db) -> None:
    store = RunStore(db, stale_seconds=4)  # beats every second
    with store.running("support"):
        before = store.lock_holder("support")["heartbeat_at"]
        time.sleep(2.5)
        assert store.lock_holder("support")["heartbeat_at"] > before


def test_orphaned_running_rows_are_marked_failed(db) -> None:
    store = RunStore(db)
    run_id = store.create("support", status="running")
    store.update(run_id, pid=999999999)
    queued = store.create("support")  # carries the pid of the gateway that asked for it, long gone
    store.update(queued, pid=999999999)
    assert store.recover_orphans() == 1
    assert store.get(run_id).status == "failed"
    assert store.get(queued).status == "queued"  # still waiting for the watcher


def test_a_refusal_of_the_data_is_told_from_other_failures(db) -> None:
    store = RunStore(db)
    refused, crashed = store.create("support", "running"), store.create("support", "running")
    store.finish(refused, "failed", error="training data refused: empty", metrics={"problems": ["empty"]})
    store.finish(crashed, "failed", error="MemoryError: out of memory")
    assert store.get(refused).data_refused and not store.get(crashed).data_refused


def test_run_listing_and_last_start(db) -> None:
    store = RunStore(db)
    assert store.last_started("support") is None
    first = store.acquire("support")
    store.update(first, step=5, total_steps=10, loss=1.25, metrics={"gate": {"ppl": 3.0}})
    store.release("support")
    runs = store.list("support")
    assert [r.id for r in runs] == [first]
    assert runs[0].metrics == {"gate": {"ppl": 3.0}} and runs[0].loss == 1.25
    assert store.last_started("support") == pytest.approx(time.time(), abs=5)
    with pytest.raises(ValueError):
        store.finish(first, "running")
