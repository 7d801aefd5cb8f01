"""Whole runs: train, gate, register, promote; poisoned data; a run killed mid-training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from trainer_samples import REPO, dpo_rows, kto_rows, sft_rows, tiny_data, tiny_gate, tiny_train

from adapters.errors import AdapterNotFound
from adapters.runs import RunStore
from trainer.config import PromotionPolicy, TrainerSettings
from trainer.job import run_job

pytestmark = pytest.mark.training

LENIENT = tiny_gate(min_preference_win_rate=0.0, max_loglik_drop=100.0, max_ppl_increase=100.0,
                   max_ppl_increase_vs_base=100.0)


def test_run_trains_gates_registers_and_auto_promotes(trainer_settings: TrainerSettings) -> None:
    settings = replace(trainer_settings, gate=LENIENT, promotion=PromotionPolicy(mode="auto"))

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
    assert {"candidate_ppl", "preference_win_rate", "candidate_answer_loglik"} <= set(metrics["gate"])
    assert metrics["config"]["LoraRecipe"]["r"] == 4 and metrics["duration_s"] > 0
    assert "auto: gate passed" in registry.history("support", "production")[-1].reason
    assert RunStore(settings.runs_db).lock_holder("support") is None


def test_poisoned_data_fails_the_run_and_registers_nothing(trainer_settings: TrainerSettings) -> None:
    one_label = [r for r in kto_rows() if not r["label"]]
    run = run_job(trainer_settings, "support", tiny_data(kto=one_label))
    assert run.status == "failed" and "all one label" in run.error
    empty = run_job(trainer_settings, "support", tiny_data())
    assert empty.status == "failed" and "no usable feedback" in empty.error
    with pytest.raises(AdapterNotFound):
        trainer_settings.registry().versions("support")


KILL_SCRIPT = """
import sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], str(Path(sys.argv[1]) / "tests" / "trainer")]
from dataclasses import replace
from trainer_samples import sft_rows, tiny_data, tiny_gate, tiny_lora, tiny_train
from trainer.config import TrainerSettings
from trainer.job import run_job
root = Path(sys.argv[2])
settings = TrainerSettings(
    model_path=Path(sys.argv[3]), registry_db=root / "registry.db", adapters_dir=root / "adapters",
    feedback_db=root / "feedback.db", runs_db=root / "trainer.db", work_dir=root,
    lora=tiny_lora(), train=tiny_train(max_steps=500), gate=tiny_gate(),
)
run_job(settings, "support", tiny_data(sft=sft_rows() * 50))
"""


def test_killed_run_leaves_no_version_and_a_recoverable_lock(trainer_settings: TrainerSettings) -> None:
    root = trainer_settings.runs_db.parent
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(REPO), str(root), str(trainer_settings.model_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = RunStore(trainer_settings.runs_db)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until it is training
        runs = store.list("support")
        if runs and runs[0].stage == "sft" and runs[0].step >= 1:
            break
        assert proc.poll() is None, "the training subprocess exited early"
        time.sleep(0.5)
    else:
        pytest.fail("the run never reached a training step")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    killed = store.list("support")[0]
    assert killed.status == "running" and store.lock_holder("support")["pid"] == proc.pid
    with pytest.raises(AdapterNotFound):
        trainer_settings.registry().versions("support")
    assert not list((root / "adapters").glob("support/*"))

    # The next run takes the lock over (it fails fast here on empty data, which is fine).
    follow = run_job(replace(trainer_settings, train=tiny_train()), "support", tiny_data())
    assert follow.status == "failed" and "no usable feedback" in follow.error
    assert store.get(killed.id).status == "failed" and "died" in store.get(killed.id).error
    assert store.lock_holder("support") is None
