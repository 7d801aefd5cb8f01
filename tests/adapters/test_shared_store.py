"""Two replicas on one PostgreSQL behave as one: alias moves, the run lock, idempotent feedback ids.

Each "replica" is a store object of its own; the second trainer is another process (its own pool and
connections), as on another host.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from adapters.runs import LockBusy, RunStore
from feedback.records import CompletionRecord
from feedback.store import FeedbackStore
from tests.lora_factory import write_lora, write_tiny_base
from tests.postgres import empty_database


@pytest.fixture
def url(postgres_database: str) -> str:
    empty_database(postgres_database)
    return postgres_database


def test_an_alias_move_through_one_replica_is_seen_by_the_other(url: str, tmp_path: Path) -> None:
    base_dir = write_tiny_base(tmp_path / "base")
    base = BaseModelInfo.from_dir(base_dir)
    one = Registry(url, tmp_path / "adapters", base, max_rank=8)
    two = Registry(url, tmp_path / "adapters", base, max_rank=8)
    for seed in (1, 2):
        one.register("bot", write_lora(tmp_path / f"a{seed}", base_dir, seed=seed))
    one.promote("bot", 1, actor="alice")
    token = two.change_token()
    assert two.resolve("bot").version == 1

    one.promote("bot", 2, actor="alice", reason="better")

    assert two.change_token() != token  # the other replica's poller notices
    assert two.resolve("bot").version == 2
    assert [(e.from_version, e.to_version) for e in two.history("bot")] == [(None, 1), (1, 2)]
    assert two.register("bot", write_lora(tmp_path / "a3", base_dir, seed=3)).version == 3  # one numbering


_HOLD_LOCK = (
    "import sys; sys.path.insert(0, sys.argv[2]); from adapters.runs import RunStore\n"
    "store = RunStore(sys.argv[1]); store.host = 'trainer-b'\n"  # another host
    "with store.running('support') as run_id:\n"
    "    print(run_id, flush=True); sys.stdin.read()\n"
)


def test_two_trainers_never_hold_one_adapters_lock(url: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, url, str(Path.cwd())], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        their_run = int(holder.stdout.readline())
        mine = RunStore(url)
        with pytest.raises(LockBusy, match=f"run {their_run}"):
            mine.acquire("support")
        assert mine.lock_holder("support")["host"] == "trainer-b"
        assert mine.acquire("sales")  # other adapters are free
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert mine.lock_holder("support") is None  # released at the end of its run
    assert mine.acquire("support") > their_run


def test_racing_trainers_on_two_replicas_take_the_lock_once(url: str) -> None:
    stores = [RunStore(url), RunStore(url)]
    stores[1].host = "trainer-b"
    won, busy, start = [], [], threading.Barrier(8)

    def race(store: RunStore) -> None:
        start.wait()
        try:
            won.append(store.acquire("support"))
        except LockBusy:
            busy.append(store.host)

    threads = [threading.Thread(target=race, args=(stores[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(busy) == 7
    assert [r.status for r in stores[0].list("support")] == ["running"]


def test_an_idempotent_feedback_id_is_stored_once_whichever_replica_it_reaches(url: str) -> None:
    with FeedbackStore(url) as one, FeedbackStore(url) as two:
        rec = CompletionRecord(id="chatcmpl-shared", adapter="bot", adapter_version=1, model="base",
                               messages=[{"role": "user", "content": "Hi"}], params={},
                               choices=[{"index": 0, "text": "Hello.", "finish_reason": "stop"}],
                               prompt_tokens=1, completion_tokens=1, latency_ms=1.0, user=None, created_at=1.0)
        one.record_completion(rec)
        one.flush()
        results, start = [], threading.Barrier(8)

        def submit(store: FeedbackStore) -> None:
            start.wait()
            results.append(store.add_feedback(rec.id, "up", feedback_id="client-key-1"))

        threads = [threading.Thread(target=submit, args=((one, two)[i % 2],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({r.record.id for r in results}) == 1  # every replica answers with the first record
        assert sum(r.created for r in results) == 1  # and only the one that stored it says it created it
        assert one._read("SELECT COUNT(*) FROM feedback WHERE client_id = 'client-key-1'") == [(1,)]
        assert two.get_feedback("client-key-1").id == results[0].record.id


def test_a_registry_database_of_schema_version_1_upgrades_in_place(url: str, tmp_path: Path) -> None:
    import psycopg

    from adapters.schema import MIGRATIONS

    with psycopg.connect(url, autocommit=True) as conn:  # what the first release created: no files, no status_reason
        for statement in MIGRATIONS[0].steps("postgresql"):
            conn.execute(statement)
        conn.execute("CREATE TABLE flywheel_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL,"
                     " updated_at DOUBLE PRECISION NOT NULL)")
        conn.execute("INSERT INTO flywheel_schema VALUES ('registry', 1, 0)")
        conn.execute("INSERT INTO versions (adapter, version, path, sha256, rank, alpha, target_modules,"
                     " base_fingerprint, created_at, source) VALUES ('bot', 1, 'bot/v1', 'abc', 4, 8, '[]', 'f', 0,"
                     " 'uploaded')")
    registry = Registry(url, tmp_path / "adapters", None, max_rank=8)
    v1 = registry.get_version("bot", 1)
    assert (v1.files, v1.status_reason) == ({}, "")
    assert registry.db.read("SELECT version FROM flywheel_schema WHERE component = 'registry'") == [(3,)]


def test_one_url_setting_puts_all_three_stores_in_postgresql(url: str, tmp_path: Path) -> None:
    from flywheel.settings import Settings

    settings = Settings(data_dir=tmp_path, database_url=url)
    assert settings.registry_db == settings.feedback_db == settings.trainer_db == url
    RunStore(settings.trainer_db).create("bot")
    with FeedbackStore(settings.feedback_db):
        pass
    Registry(settings.registry_db, settings.adapters_dir, None)
    tables = {r[0] for r in RunStore(url).db.read("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"versions", "aliases", "runs", "locks", "completions", "feedback", "pairs"} <= tables
    assert not list(tmp_path.glob("*.db"))  # no SQLite file beside it
    assert Settings(data_dir=tmp_path).registry_db == tmp_path / "registry.db"  # unset: the embedded default
    with pytest.raises(ValueError, match="database_url"):
        Settings(database_url="mysql://somewhere/db")


def test_the_feedback_writer_reconnects_after_its_connection_is_killed(url: str) -> None:
    from feedback.errors import StoreUnavailable

    with FeedbackStore(url) as store:
        rec = CompletionRecord(id="chatcmpl-k", adapter="bot", adapter_version=1, model="base",
                               messages=[{"role": "user", "content": "Hi"}], params={},
                               choices=[{"index": 0, "text": "Hello.", "finish_reason": "stop"}],
                               prompt_tokens=1, completion_tokens=1, latency_ms=1.0, user=None, created_at=1.0)
        store.record_completion(rec)
        store.flush()
        (pid,) = store._write_conn.execute("SELECT pg_backend_pid()").fetchone()
        store.db.read("SELECT pg_terminate_backend(?)", [pid])  # the server drops the writer's connection
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            store.add_feedback(rec.id, "up", feedback_id="k1")  # nothing acknowledged
        assert store.add_feedback(rec.id, "down", feedback_id="k1").record.rating == "down"  # a new connection
        assert store._read("SELECT COUNT(*) FROM feedback") == [(1,)]


def test_an_unreachable_server_is_named_without_its_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from flywheel import postgres_pools
    from flywheel.database_errors import DatabaseUnreachable

    monkeypatch.setattr(postgres_pools, "POOL_CONNECT_TIMEOUT_S", 1.0)
    with pytest.raises(DatabaseUnreachable, match=r"127\.0\.0\.1:1/flywheel") as e:
        Registry("postgresql://bot:s3cret@127.0.0.1:1/flywheel", tmp_path / "adapters", None)
    assert "s3cret" not in str(e.value)
