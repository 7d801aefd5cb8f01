"""A TrainerCallback that mirrors step and loss into the runs table, and stops training on request.

Each logged loss is also kept as a point of the run's loss curve (`metrics["loss_curve"]`: `[stage, step,
loss]` rows, every stage of the run in order), which the console plots. `trainer.job` keeps it when the run
finishes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from adapters.runs import RunStore

logger = logging.getLogger(__name__)

CURVE_KEY = "loss_curve"
MAX_CURVE_POINTS = 500  # beyond this every other point is dropped, so a long run's metrics row stays small


class RunProgress(TrainerCallback):
    """Writes `stage`, `step`, `total_steps` and `loss` of one run at most every `min_interval` seconds."""

    def __init__(
        self,
        store: RunStore | None,
        run_id: int | None,
        stage: str,
        should_stop: Callable[[], bool] | None = None,
        min_interval: float = 1.0,
    ):
        self.store = store
        self.run_id = run_id
        self.stage = stage
        self.should_stop = should_stop
        self.min_interval = min_interval
        self.loss: float | None = None
        self._last_write = 0.0
        self._metrics: dict | None = None  # the run's metrics, read once, with the curve of earlier stages

    def _add_point(self, step: int, loss: float) -> dict | None:
        """The run's metrics with this point added to the loss curve (None without a run to write to)."""
        if self.store is None or self.run_id is None:
            return None
        if self._metrics is None:
            self._metrics = dict(self.store.get(self.run_id).metrics)
        curve = list(self._metrics.get(CURVE_KEY) or [])
        curve.append([self.stage, step, round(loss, 6)])
        if len(curve) > MAX_CURVE_POINTS:
            curve = curve[:-1:2] + curve[-1:]
        self._metrics[CURVE_KEY] = curve
        return self._metrics

    def _write(self, state: TrainerState, force: bool = False, metrics: dict | None = None) -> None:
        if self.store is None or self.run_id is None:
            return
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval:
            return
        self._last_write = now
        extra = {"metrics": metrics} if metrics is not None else {}
        self.store.update(
            self.run_id, stage=self.stage, step=state.global_step, total_steps=state.max_steps, loss=self.loss, **extra
        )

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self._write(state, force=True)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kw) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
            self._write(state, force=True, metrics=self._add_point(state.global_step, self.loss))

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self._write(state)
        if self.should_stop is not None and self.should_stop():
            logger.info("stop requested; ending stage %s at step %d", self.stage, state.global_step)
            control.should_training_stop = True

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self._write(state, force=True)
