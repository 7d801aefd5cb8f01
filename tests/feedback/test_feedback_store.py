"""FeedbackStore: completion log, ratings, idempotency, replacement, concurrency, durability."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from feedback.errors import CompletionNotFound, FeedbackNotFound, InvalidFeedback
from feedback.records import FeedbackRecord
from feedback.store import FeedbackStore, Stored, _insert_feedback


def _rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_get_completion_sees_a_queued_record_at_once(tmp_path, make_completion):
    # A long flush interval keeps the record in the queue while we look it up.
    with FeedbackStore(tmp_path / "f.db", flush_interval=5.0) as store:
        rec = make_completion()
        store.record_completion(rec)
        assert store.get_completion(rec.id) == rec
        assert store.add_feedback(rec.id, "up").record.completion_id == rec.id


def test_unknown_completion_raises(store):
    with pytest.raises(CompletionNotFound):
        store.get_completion("chatcmpl-nope")
    with pytest.raises(CompletionNotFound):
        store.add_feedback("chatcmpl-nope", "up")


def test_close_flushes_queued_completions(tmp_path, make_completion):
    db = tmp_path / "f.db"
    store = FeedbackStore(db, flush_interval=10.0)
    for _ in range(50):
        store.record_completion(make_completion())
    store.close()
    assert _rows(db, "completions") == 50
    with FeedbackStore(db) as reopened:
        assert reopened.completion_counts()[0]["completions"] == 50


def test_feedback_is_committed_when_acknowledged(tmp_path, make_completion):
    db = tmp_path / "f.db"
    with FeedbackStore(db, flush_interval=10.0) as store:
        rec = make_completion(answers=["a", "b"])
        store.record_completion(rec)
        fb = store.add_feedback(rec.id, "down", choice_index=1, comment="wrong", correction="c", user="ann").record
        # Read through a separate connection, as another process would, before close().
        assert _rows(db, "feedback") == 1
        assert _rows(db, "completions") == 1  # queued before the feedback, so committed with or before it
        assert fb.id.startswith("fb_") and fb.adapter == "bot" and fb.adapter_version == 1
        assert store.get_feedback(fb.id) == fb


def test_repeated_feedback_id_returns_the_first(store, make_completion):
    rec = make_completion()
    store.record_completion(rec)
    first = store.add_feedback(rec.id, "up", feedback_id="client-1")
    again = store.add_feedback(rec.id, "down", comment="changed my mind", feedback_id="client-1")
    assert first.created and not again.created  # the store says which call stored it
    assert again.record == first.record
    assert store.count_signals("bot") == 1
    assert store.get_feedback("client-1") == first.record


def test_same_user_replaces_earlier_rating(store, make_completion):
    rec = make_completion(answers=["x", "y"])
    store.record_completion(rec)
    first = store.add_feedback(rec.id, "up", user="ann").record
    assert first.replaced is False
    second = store.add_feedback(rec.id, "down", user="ann").record
    assert second.replaced is True and second.id != first.id
    other_choice = store.add_feedback(rec.id, "up", choice_index=1, user="ann").record
    assert other_choice.replaced is False
    store.add_feedback(rec.id, "up")  # anonymous ratings never replace each other
    store.add_feedback(rec.id, "up")
    with pytest.raises(FeedbackNotFound):
        store.get_feedback(first.id)
    ratings = [r.feedback.rating for r in store.rated_answers("bot") if r.feedback.user == "ann"]
    assert sorted(ratings) == ["down", "up"]
    assert store.count_signals("bot") == 4


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"rating": "meh"}, "rating must be 'up' or 'down'"),
        ({"rating": None}, "rating must be"),
        ({"rating": "up", "choice_index": 3}, "out of range"),
        ({"rating": "up", "choice_index": -1}, "non-negative"),
        ({"rating": "up", "comment": "x" * 1_000_000}, "at most 4,000"),
        ({"rating": "up", "correction": "y" * 32_001}, "at most 32,000"),
        ({"rating": "up", "comment": "bad \ud800 surrogate"}, "lone surrogate"),
        ({"rating": "up", "comment": "nul\x00byte"}, "NUL"),
        ({"rating": "up", "correction": 42}, "must be a string"),
        ({"rating": "up", "feedback_id": ""}, "feedback_id"),
        ({"rating": "up", "feedback_id": "x" * 129}, "feedback_id"),
        ({"rating": "up", "feedback_id": "a b"}, "feedback_id"),
    ],
)
def test_bad_feedback_is_rejected_and_nothing_stored(store, make_completion, kwargs, fragment):
    rec = make_completion()
    store.record_completion(rec)
    with pytest.raises(InvalidFeedback) as err:
        store.add_feedback(rec.id, **kwargs)
    assert fragment in str(err.value)
    assert store.count_signals("bot") == 0


def test_odd_but_valid_unicode_is_accepted(store, make_completion):
    rec = make_completion()
    store.record_completion(rec)
    text = "Zażółć 🦀 עברית ‮ zero\u200bwidth\ttab\nline"
    fb = store.add_feedback(rec.id, "up", comment=text, correction=text).record
    assert store.get_feedback(fb.id).comment == text


def test_errors_list_every_problem(store, make_completion):
    rec = make_completion()
    store.record_completion(rec)
    with pytest.raises(InvalidFeedback) as err:
        store.add_feedback(rec.id, "sideways", comment="\x00", feedback_id="")
    assert len(err.value.problems) == 3


def test_concurrent_submissions_with_repeated_ids(store, make_completion):
    recs = [make_completion(prompt=f"q{i}") for i in range(100)]
    for rec in recs:
        store.record_completion(rec)
    # 1,000 submissions; feedback_id k0..k699, so 300 are repeats, some racing each other.
    jobs = [(recs[i % 100].id, "up" if i % 3 else "down", f"k{i % 700}") for i in range(1000)]

    def submit(job: tuple[str, str, str]) -> Stored[FeedbackRecord]:
        return store.add_feedback(job[0], job[1], feedback_id=job[2])

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(submit, jobs))
    by_key: dict[str, set[str]] = {}
    for (_, _, key), result in zip(jobs, results, strict=True):
        by_key.setdefault(key, set()).add(result.record.id)
    assert len(by_key) == 700
    assert sum(result.created for result in results) == 700  # one per key, whichever submission won
    assert all(len(ids) == 1 for ids in by_key.values())  # every repeat got the first record back
    stored = store.rated_answers("bot")
    assert len(stored) == 700
    assert {r.feedback.feedback_id for r in stored} == set(by_key)
    assert {r.feedback.id for r in stored} == {next(iter(ids)) for ids in by_key.values()}


def test_two_stores_on_one_file_share_data(tmp_path, make_completion):
    db = tmp_path / "f.db"
    with FeedbackStore(db) as a, FeedbackStore(db) as b:
        rec = make_completion()
        a.record_completion(rec)
        a.flush()
        fb = b.add_feedback(rec.id, "up", feedback_id="same").record
        assert a.add_feedback(rec.id, "down", feedback_id="same").record == fb
        assert a.get_feedback(fb.id) == fb


def test_retention_keeps_rated_completions(store, make_completion):
    old = time.time() - 3600
    rated, unrated, fresh = (
        make_completion(created_at=old),
        make_completion(created_at=old),
        make_completion(),
    )
    for rec in (rated, unrated, fresh):
        store.record_completion(rec)
    store.add_feedback(rated.id, "up")
    assert store.delete_completions_older_than(60) == 1
    with pytest.raises(CompletionNotFound):
        store.get_completion(unrated.id)
    assert store.get_completion(rated.id) == rated
    assert store.get_completion(fresh.id) == fresh
    assert store.delete_completions_older_than(60, keep_rated=False) == 1


def test_closed_store_refuses_writes(tmp_path, make_completion):
    store = FeedbackStore(tmp_path / "f.db")
    store.close()
    with pytest.raises(RuntimeError):
        store.record_completion(make_completion())


def test_ratings_resolve_completions_from_memory_and_from_disk(tmp_path, make_completion):
    db = tmp_path / "f.db"
    with FeedbackStore(db) as store:
        rec = make_completion(answers=["Paris.", "It is Paris."])
        store.record_completion(rec)
        store.flush()
        assert store.completion_ref(rec.id) == rec.ref()  # committed, still remembered
    with FeedbackStore(db) as fresh:  # a new process: nothing in memory, one narrow read
        assert fresh.completion_ref(rec.id).choice_indexes == (0, 1)
        assert fresh.add_feedback(rec.id, "down", choice_index=1).record.adapter == rec.adapter


def test_a_rating_racing_retention_is_refused_not_dangling(store, make_completion):
    old = make_completion(created_at=time.time() - 3600)
    store.record_completion(old)
    store.flush()
    rating = store.new_feedback(old.id, "up")  # validated while the completion still exists...
    assert store.delete_completions_older_than(60) == 1  # ...then retention deletes it
    with pytest.raises(CompletionNotFound):
        store._writer.run(lambda conn: _insert_feedback(conn, rating))
    assert store.rating_counts() == []
    with pytest.raises(CompletionNotFound):
        store.add_feedback(old.id, "up")  # and the remembered ref went with it


def test_server_ids_are_time_ordered_and_unique(store, make_completion):
    rec = make_completion()
    store.record_completion(rec)
    ids = [store.new_feedback(rec.id, "up").id for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(len(i) == len("fb_") + 32 for i in ids)
    assert [i[3:15] for i in ids] == sorted(i[3:15] for i in ids)  # the time part never goes backwards


def test_wal_is_checkpointed_off_the_commit_path(tmp_path, make_completion):
    db = tmp_path / "f.db"
    with FeedbackStore(db) as store:
        assert store._write_conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # commits never do it
        before = db.stat().st_size
        for _ in range(300):
            store.record_completion(make_completion(answers="x" * 500))
        store.flush()
        deadline = time.time() + 60
        while db.stat().st_size <= before:  # the checkpointer thread copies the WAL into the file
            assert time.time() < deadline, "no checkpoint within 10 s"
            time.sleep(0.1)
