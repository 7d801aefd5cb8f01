"""`flywheel bench recipe`'s plumbing: one round's feedback cut from a real store, arms ordered after their parents."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from bench.recipe import ARMS, _with_parents, cut_to_first_ratings, write_page
from feedback.records import CompletionRecord
from feedback.store import FeedbackStore


def test_the_copy_keeps_the_first_ratings_and_what_came_before_them(tmp_path: Path) -> None:
    source = tmp_path / "feedback.db"
    store = FeedbackStore(source)
    try:
        for i in range(5):
            store.record_completion(CompletionRecord(
                id=f"c{i}", adapter="bot", adapter_version=1, model="base",
                messages=[{"role": "user", "content": f"q{i}"}], params={},
                choices=[{"index": 0, "text": f"a{i}", "finish_reason": "stop"}], prompt_tokens=3,
                completion_tokens=2, latency_ms=1.0, user=f"u{i}", created_at=1000.0 + i))
            store.add_feedback(f"c{i}", "up" if i % 2 else "down", user=f"u{i}")
            store.flush()
    finally:
        store.close()
    assert cut_to_first_ratings(source, tmp_path / "cut.db", 3) == 3
    with sqlite3.connect(tmp_path / "cut.db") as conn:
        kept = [r[0] for r in conn.execute("SELECT completion_id FROM feedback ORDER BY created_at")]
    assert kept == ["c0", "c1", "c2"]
    with sqlite3.connect(source) as conn:  # the loop run's own store is left as it was
        assert conn.execute("SELECT count(*) FROM feedback").fetchone()[0] == 5


def test_every_arm_runs_after_the_arm_it_continues() -> None:
    order = _with_parents(["sft_1ep+dpo_sft_term_1ep", "sft_2ep+dpo_plain", "sft_1ep"])
    assert order == ["sft_1ep", "sft_1ep+dpo_sft_term_1ep", "sft_2ep", "sft_2ep+dpo_plain"]
    assert all(ARMS[a].after in (None, *ARMS) for a in ARMS)


def test_the_page_shows_each_arm_against_the_base(tmp_path: Path) -> None:
    row = {"correct": 0.5, "satisfied": 0.0, "ppl": 20.0, "degenerate": 0.0, "replies": ["Paris."], "answers": []}
    results = {"base": row, "sft_1ep": {**row, "satisfied": 1.0, "ppl": 22.0, "steps": 32, "loss": 1.5,
                                         "train_s": 400.0, "replies": ["Answer: Paris."]}}
    write_page(results, ["sft_1ep"], 300, "answer_prefix", 120, 40, 2, tmp_path)
    page = (tmp_path / "bench_recipe.md").read_text()
    assert "| sft_1ep | SFT, lr 2e-4, 1 epoch (the default) | 32 |" in page and "+10.0%" in page
    assert json.loads((tmp_path / "bench_recipe.json").read_text())["sft_1ep"]["steps"] == 32
