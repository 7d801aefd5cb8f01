"""Trigger policy, watcher loop, configs and data screening, without training."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_samples import dpo_rows, kto_rows, sft_rows, tiny_train

from adapters.runs import LockBusy, RunStore
from trainer.config import LoraRecipe, PromotionPolicy, TrainConfig, TrainerSettings, TriggerPolicy
from trainer.dataset import TrainingData, screen
from trainer.stages import plan_stages
from trainer.watcher import History, Watcher, decide

NOW = 1_000_000.0


def test_trigger_needs_enough_feedback_and_respects_interval() -> None:
    policy = TriggerPolicy(min_new_feedback=10, min_interval_seconds=600)
    assert decide(policy, NOW, History(), 10).run
    assert not decide(policy, NOW, History(), 9).run
    assert not decide(policy, NOW, History(last_started=NOW - 100), 500).run  # too soon after the last run
    assert decide(policy, NOW, History(last_started=NOW - 700), 10).run


def test_schedule_runs_only_with_something_new() -> None:
    policy = TriggerPolicy(min_new_feedback=None, schedule_seconds=3600, min_interval_seconds=0)
    assert decide(policy, NOW, History(last_started=NOW - 4000), 1).run
    assert not decide(policy, NOW, History(last_started=NOW - 4000), 0).run
    assert not decide(policy, NOW, History(last_started=NOW - 100), 5).run


def test_config_checks_name_the_field() -> None:
    with pytest.raises(ValueError, match="DoRA"):
        LoraRecipe(use_dora=True)
    with pytest.raises(ValueError, match="max_rank"):
        LoraRecipe(r=32, max_rank=16)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="min_new_feedback or schedule_seconds"):
        TriggerPolicy(min_new_feedback=None, schedule_seconds=None)
    with pytest.raises(ValueError, match="promotion mode"):
        PromotionPolicy(mode="yolo")
    assert TrainConfig().num_threads >= 1


def test_plan_prefers_dpo_then_kto() -> None:
    config = TrainConfig(min_pairs_for_dpo=4)
    assert plan_stages(3, 4, 8, config).preference == "dpo"
    assert plan_stages(3, 3, 8, config).preference == "kto"
    plan = plan_stages(0, 0, 0, config)
    assert not plan.sft and plan.preference is None


def test_screen_refuses_empty_and_poisoned_data() -> None:
    assert screen(TrainingData(), None, 1000) == ["no usable feedback: the SFT, DPO and KTO sets are all empty"]
    one_label = TrainingData.from_rows(kto=[r for r in kto_rows() if r["label"]])
    assert any("all one label" in p for p in screen(one_label, "kto", 1000))
    huge = sft_rows()
    huge[1]["completion"][0]["content"] = "x" * 5000
    assert any("absurdly long" in p for p in screen(TrainingData.from_rows(sft=huge), None, 1000))
    same = dpo_rows()
    same[0]["rejected"] = same[0]["chosen"]
    assert any("identical" in p for p in screen(TrainingData.from_rows(dpo=same), "dpo", 1000))
    assert screen(TrainingData.from_rows(sft=sft_rows(), kto=kto_rows()), "kto", 1000) == []


def _settings(tmp_path: Path) -> TrainerSettings:
    return TrainerSettings(
        model_path=tmp_path / "model",
        registry_db=tmp_path / "r.db",
        adapters_dir=tmp_path / "adapters",
        feedback_db=tmp_path / "f.db",
        runs_db=tmp_path / "trainer.db",
        train=tiny_train(),
        trigger=TriggerPolicy(min_new_feedback=5, min_interval_seconds=60),
    )


def test_watcher_runs_due_adapters_one_at_a_time(tmp_path: Path) -> None:
    calls = []

    def fake_run(settings, adapter, *, store: RunStore, should_stop):
        calls.append(adapter)
        if adapter == "busy":
            raise LockBusy("held")
        run_id = store.acquire(adapter)
        store.finish(run_id, "succeeded")
        store.release(adapter)
        return store.get(run_id)

    counts = {"a": 10, "b": 1, "busy": 10}
    watcher = Watcher(
        _settings(tmp_path), count_new=lambda a, since: counts[a], list_adapters=lambda: list(counts), run=fake_run
    )
    finished = watcher.tick()
    assert calls == ["a", "busy"] and [r.adapter for r in finished] == ["a"]
    watcher.tick()  # "a" ran moments ago: the minimum interval holds it back
    assert calls == ["a", "busy", "busy"]
    watcher.stop()
    assert watcher.tick() == []


def test_canary_waits_then_promotes_or_rolls_back() -> None:
    from trainer.promotion import decide_canary

    policy = PromotionPolicy(mode="canary", canary_min_feedback=50, canary_alpha=0.05)
    assert decide_canary(80, 100, 10, 20, policy).verdict == "wait"
    assert decide_canary(80, 100, 40, 50, policy).verdict == "promote"  # 80% vs 80%
    worse = decide_canary(80, 100, 25, 50, policy)  # 50% vs 80%
    assert worse.verdict == "rollback" and worse.p_value < 0.05 and "worse" in worse.reason
    assert decide_canary(50, 50, 50, 50, policy).verdict == "promote"  # no variance at all
