"""Whole runs: train, gate, register, promote; poisoned data. (A run killed mid-training: test_trainer_sigkill.py.)"""

from __future__ import annotations

from dataclasses import replace

import pytest
from trainer_samples import BRIEF_GATE, dpo_rows, kto_rows, sft_rows, tiny_data, tiny_gate

from adapters.errors import AdapterNotFound
from adapters.runs import REFUSED_KEY, REQUESTS_KEY, RunStore
from trainer.config import PromotionPolicy, TrainerSettings
from trainer.job import run_job

pytestmark = pytest.mark.training

LENIENT = tiny_gate(min_preference_win_rate=0.0, max_loglik_drop=100.0, max_ppl_increase=100.0,
                   max_ppl_increase_vs_base=100.0, **BRIEF_GATE)


def test_run_trains_gates_registers_and_auto_promotes(trainer_settings: TrainerSettings) -> None:
    train = replace(trainer_settings.train, replay_fraction=0.5)  # 2 rows of the base's answers beside 4
    settings = replace(trainer_settings, gate=LENIENT, promotion=PromotionPolicy(mode="auto"), train=train)

    run = run_job(settings, "support", tiny_data(sft=sft_rows(), dpo=dpo_rows()))

    assert run.status == "succeeded", run.error
    assert run.result_version == 1 and run.stage == "done" and run.step == 2 and run.loss is not None
    assert {stage for stage, _, _ in run.metrics["loss_curve"]} == {"sft", "dpo"}  # kept when the run finished
    registry = settings.registry()
    version = registry.resolve("support")  # auto policy: production now
    assert version.version == 1 and version.source == "trained" and version.parent_version is None
    assert registry.resolve("support@candidate").version == 1
    metrics = version.metrics
    assert metrics["feedback_count"] == 6 and len(metrics["dataset_hash"]) == 64
    assert [s["name"] for s in metrics["stages"]] == ["sft", "dpo"] and metrics["gate_passed"]
    assert metrics["stages"][0]["examples"] == 6 and any(p.startswith("replay: 2 rows") for p in metrics["plan"])
    assert {"candidate_ppl", "preference_win_rate", "candidate_answer_loglik"} <= set(metrics["gate"])
    assert metrics["config"]["LoraRecipe"]["r"] == 4 and metrics["duration_s"] > 0
    assert "auto: gate passed" in registry.history("support", "production")[-1].reason
    assert RunStore(settings.runs_db).lock_holder("support") is None


def test_poisoned_data_fails_the_run_and_registers_nothing(trainer_settings: TrainerSettings) -> None:
    one_label = [r for r in kto_rows() if not r["label"]]
    run = run_job(trainer_settings, "support", tiny_data(kto=one_label))
    assert run.status == "failed" and "all one label" in run.error
    RunStore(trainer_settings.runs_db).queue("support", by="console:ana", reason="new corrections")
    empty = run_job(trainer_settings, "support", tiny_data())  # takes the queued run
    assert empty.status == "failed" and "no usable feedback" in empty.error
    assert empty.metrics[REQUESTS_KEY][0]["reason"] == "new corrections" and empty.metrics[REFUSED_KEY]
    with pytest.raises(AdapterNotFound):
        trainer_settings.registry().versions("support")
