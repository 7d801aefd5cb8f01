"""The trainer reads real feedback exports: SFT, DPO and KTO sets, held-out rows, lineage, new-feedback counts."""

from __future__ import annotations

import time
from pathlib import Path

from trainer_samples import BAD, GOOD, QUESTIONS, tiny_train

from feedback.records import CompletionRecord
from feedback.store import FeedbackStore
from trainer.dataset import adapters_with_feedback, from_feedback, screen
from trainer.stages import plan_stages
from trainer.watcher import _count_new_feedback


def fill(db: Path, copies: int = 5) -> None:
    with FeedbackStore(db) as store:
        for n in range(copies):
            for i, (q, good, bad) in enumerate(zip(QUESTIONS, GOOD, BAD, strict=True)):
                cid = f"chatcmpl-{n}-{i}"
                store.record_completion(CompletionRecord(
                    id=cid, adapter="support", adapter_version=1, model="base",
                    messages=[{"role": "user", "content": f"{q} (variant {n})"}], params={},
                    choices=[{"index": 0, "text": good, "finish_reason": "stop"},
                             {"index": 1, "text": bad, "finish_reason": "stop"}],
                    prompt_tokens=10, completion_tokens=5, latency_ms=1.0, user=f"u{n}", created_at=time.time(),
                ))  # fmt: skip
                store.flush()
                store.add_feedback(cid, "up", choice_index=0, user=f"u{n}")
                store.add_feedback(cid, "down", choice_index=1, user=f"u{n}")
                store.add_pair(chosen_completion_id=cid, rejected_completion_id=cid, rejected_choice_index=1)


def test_feedback_export_feeds_the_trainer(tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    fill(db, copies=10)  # 40 prompts: some land in the 10% held out by prompt hash

    data = from_feedback(db, "support")

    assert data.rows("sft") > 0 and data.rows("dpo") > 0 and data.rows("kto") > 0
    assert set(data.kto["label"]) == {True, False}
    assert len(data.feedback_ids) + len(data.held_out.pairs) > 0 and len(data.dataset_hash) == 64
    assert data.held_out.pairs or data.held_out.answers  # 10% of prompts held out by hash
    plan = plan_stages(data.rows("sft"), data.rows("dpo"), data.rows("kto"), tiny_train())
    assert plan.sft and plan.preference == "dpo"
    assert screen(data, plan.preference, 10_000) == []
    assert adapters_with_feedback(db) == ["support"]
    assert adapters_with_feedback(tmp_path / "missing.db") == []


def test_new_feedback_is_counted_since_the_last_run(tmp_path: Path) -> None:
    from trainer.config import TrainerSettings

    db = tmp_path / "feedback.db"
    fill(db, copies=1)
    settings = TrainerSettings(
        model_path=tmp_path, registry_db=tmp_path / "r.db", adapters_dir=tmp_path / "a",
        feedback_db=db, runs_db=tmp_path / "t.db",
    )  # fmt: skip
    count = _count_new_feedback(settings)
    assert count("support", None) == 12  # 8 ratings + 4 pairs
    assert count("support", time.time() + 60) == 0
