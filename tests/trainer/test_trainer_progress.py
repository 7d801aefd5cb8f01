"""RunProgress: step and loss mirrored into the runs table, and the run's loss curve over all its stages."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerControl, TrainerState

from adapters.runs import RunStore
from trainer.progress import CURVE_KEY, MAX_CURVE_POINTS, RunProgress


def log(progress: RunProgress, losses: list[float], max_steps: int | None = None) -> None:
    """What a Trainer does with logging_steps=1: one on_log per step, with that step's loss."""
    state, control = TrainerState(), TrainerControl()
    state.max_steps = max_steps or len(losses)
    progress.on_train_begin(None, state, control)
    for step, loss in enumerate(losses, start=1):
        state.global_step = step
        progress.on_log(None, state, control, logs={"loss": loss, "learning_rate": 1e-4})
        progress.on_log(None, state, control, logs={"train_runtime": 1.0})  # the end-of-training log: no point
    progress.on_train_end(None, state, control)


def test_every_logged_loss_lands_on_the_curve_stage_after_stage(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "trainer.db")
    run_id = store.create("bot", status="running")
    store.update(run_id, metrics={"kept": 1})
    log(RunProgress(store, run_id, "sft"), [2.0, 1.5, 1.25])
    log(RunProgress(store, run_id, "dpo"), [0.69, 0.5])
    run = store.get(run_id)
    assert run.metrics[CURVE_KEY] == [["sft", 1, 2.0], ["sft", 2, 1.5], ["sft", 3, 1.25], ["dpo", 1, 0.69],
                                      ["dpo", 2, 0.5]]
    assert run.metrics["kept"] == 1  # what the run's metrics held before stays
    assert (run.stage, run.step, run.total_steps, run.loss) == ("dpo", 2, 2, 0.5)


def test_a_long_run_keeps_a_bounded_curve_with_its_first_and_last_point(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "trainer.db")
    run_id = store.create("bot", status="running")
    losses = [round(1 + i / 1000, 3) for i in range(MAX_CURVE_POINTS + 7)]
    log(RunProgress(store, run_id, "sft"), losses)
    curve = store.get(run_id).metrics[CURVE_KEY]
    assert len(curve) <= MAX_CURVE_POINTS
    assert curve[0] == ["sft", 1, losses[0]] and curve[-1] == ["sft", len(losses), losses[-1]]
    assert [step for _, step, _ in curve] == sorted(step for _, step, _ in curve)


def test_without_a_run_nothing_is_written() -> None:
    log(RunProgress(None, None, "sft"), [1.0, 0.5])  # a Trainer used outside a run: no store, no error
