"""The read-only reader sees what the store committed, starts no threads and cannot write."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from feedback.export import build_training_set
from feedback.reader import FeedbackReader
from feedback.store import FeedbackStore
from flywheel.database_errors import database_errors


def test_reader_reads_what_the_store_committed_without_threads(store: FeedbackStore, make_completion) -> None:
    rec = make_completion(answers=["Paris.", "Lyon."])
    store.record_completion(rec)
    store.add_feedback(rec.id, "up", user="u1", correction="Paris, of course.")
    store.add_pair(chosen_completion_id=rec.id, rejected_completion_id=rec.id, rejected_choice_index=1)
    store.flush()

    threads = threading.active_count()
    with FeedbackReader(store.db_path) as reader:
        assert threading.active_count() == threads
        assert reader.count_signals("bot") == store.count_signals("bot") == 2
        ids = [r.feedback.id for r in reader.rated_answers("bot")]
        assert ids == [r.feedback.id for r in store.rated_answers("bot")] != []
        assert reader.rating_counts("bot") == store.rating_counts("bot")
        assert build_training_set(reader, "bot", "sft").report == build_training_set(store, "bot", "sft").report
        with pytest.raises(database_errors(), match="readonly|read-only"):
            reader._read("DELETE FROM feedback")


def test_reader_of_a_missing_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no feedback store"):
        FeedbackReader(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()
