"""The body of a run once the lock is held: plan, screen, train the stages, save, gate, register, promote.

`trainer.job` calls `Pipeline.run`; nothing here calls back into it (the settings are only a type here).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.errors import AdapterNotFound
from adapters.names import CANARY, CANDIDATE
from adapters.registry import Registry
from adapters.runs import RunStatus, RunStore
from adapters.version import AdapterVersion, VersionStatus
from trainer.config import TrainConfig, config_dict
from trainer.dataset import TrainingData, screen
from trainer.errors import Cancelled, DataRejected
from trainer.gate import GateResult, evaluate
from trainer.progress import RunProgress
from trainer.qlora import compute_dtype, load_tokenizer, load_trainable, save_adapter
from trainer.replay import with_replay
from trainer.scoring import OneModel, Scorer, preference_accuracy
from trainer.stages import StagePlan, StageResult, plan_stages, train_dpo, train_kto, train_sft

if TYPE_CHECKING:
    from trainer.config import TrainerSettings

logger = logging.getLogger(__name__)

STAGES = {"sft": train_sft, "dpo": train_dpo, "kto": train_kto}
MAX_LINEAGE_IDS = 2000  # keep the version's metrics row small; the dataset hash covers the rest


def production_of(registry: Registry, adapter: str) -> AdapterVersion | None:
    """The adapter's production version, or None for an adapter not registered or without production."""
    try:
        return registry.resolve(adapter)
    except AdapterNotFound:
        return None


def screen_or_raise(data: TrainingData, preference: str | None, config: TrainConfig) -> None:
    """Raise DataRejected when the data is empty or poisoned."""
    problems = screen(data, preference, config.max_example_chars)
    if problems:
        raise DataRejected(problems)


def version_metrics(data: TrainingData, settings: TrainerSettings, extra: dict) -> dict:
    """The lineage and numbers stored on a registered version."""
    ids = data.feedback_ids
    return {
        "feedback_count": len(ids),
        "feedback_ids": ids[:MAX_LINEAGE_IDS],
        "feedback_ids_truncated": len(ids) > MAX_LINEAGE_IDS,
        "dataset_hash": data.dataset_hash,
        "config": config_dict(settings.lora, settings.train, settings.gate, settings.promotion),
        **extra,
    }


@dataclass
class Outcome:
    """How a run ended, for the runs table."""

    status: str  # succeeded or rejected
    version: int | None
    error: str | None = None
    metrics: dict = field(default_factory=dict)


class Pipeline:
    """Trains one candidate for one adapter and hands it to the registry."""

    def __init__(
        self,
        settings: TrainerSettings,
        adapter: str,
        store: RunStore,
        run_id: int,
        should_stop: Callable[[], bool] | None = None,
    ):
        self.settings = settings
        self.adapter = adapter
        self.store = store
        self.run_id = run_id
        self.should_stop = should_stop or (lambda: False)
        self.registry: Registry = settings.registry()
        self.production = production_of(self.registry, adapter)

    def _check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled("stop requested")

    def run(self, data: TrainingData, work: Path, started: float) -> Outcome:
        """Train, gate and register; returns the outcome (exceptions propagate to the caller)."""
        config = self.settings.train
        plan = plan_stages(data.rows("sft"), data.rows("dpo"), data.rows("kto"), config)
        logger.info("run %d plan for %s: %s", self.run_id, self.adapter, "; ".join(plan.reasons))
        screen_or_raise(data, plan.preference, config)
        # production's files on this host (fetched from an object store if need be; AdapterUnavailable fails the run)
        production_dir = self.registry.files.local_folder(self.production) if self.production else None
        results, quantized, notes = self._train(data, plan, work / "adapter", work / "trainer", production_dir)
        self._check_stop()
        self.store.update(self.run_id, stage="gate")
        gate = evaluate(
            self.settings.model_path,
            work / "adapter",
            production_dir,
            data.held_out,
            self.settings.gate,
            config.num_threads,
            compute_dtype(config),
            self.settings.cache_dir,
        )
        self._check_stop()
        extra = {
            "gate": gate.metrics,
            "gate_passed": gate.passed,
            "gate_reasons": gate.reasons,
            "plan": [*plan.reasons, *notes],
            "stages": [asdict(r) for r in results],
            "quantized": quantized,
            "run_id": self.run_id,
            "duration_s": round(time.monotonic() - started, 1),
        }
        version = self._register(work / "adapter", gate, version_metrics(data, self.settings, extra))
        self._promote(version, gate)
        return Outcome(
            status=RunStatus.SUCCEEDED if gate.passed else RunStatus.REJECTED,
            version=version.version,
            error=None if gate.passed else "gate: " + "; ".join(gate.reasons),
            metrics={"gate": gate.metrics, "stages": extra["stages"], "duration_s": extra["duration_s"]},
        )

    def _train(
        self, data: TrainingData, plan: StagePlan, adapter_dir: Path, out_dir: Path, production_dir: Path | None
    ) -> tuple[list[StageResult], bool, list[str]]:
        config = self.settings.train
        start_from = production_dir if config.continue_from_production else None
        self.store.update(self.run_id, stage="load")
        tokenizer = load_tokenizer(self.settings.model_path)
        model, quantized = load_trainable(self.settings.model_path, self.settings.lora, config, start_from)
        stages = (["sft"] if plan.sft else []) + ([plan.preference] if plan.preference else [])
        results, notes = [], []
        sets = {"sft": data.sft, "dpo": data.dpo, "kto": data.kto}
        if plan.sft and config.replay_fraction > 0:
            self.store.update(self.run_id, stage="replay")
            sets["sft"], note = with_replay(data.sft, model, tokenizer, config.replay_fraction, config.seed,
                                            self.settings.cache_dir, self.settings.model_path, quantized)
            notes.append(note)
        before = self._preference_accuracy(model, tokenizer, data) if plan.sft and plan.preference else None
        for name in stages:
            self._check_stop()
            if name == plan.preference and results and before is not None:
                note, skip = self._learned_already(before, self._preference_accuracy(model, tokenizer, data), data)
                notes.append(note)
                logger.info("run %d: %s", self.run_id, note)
                if skip:
                    break
            self.store.update(self.run_id, stage=name, step=0)
            callback = RunProgress(self.store, self.run_id, name, self.should_stop)
            results.append(STAGES[name](model, tokenizer, sets[name], config, out_dir, [callback]))
        self._check_stop()
        self.store.update(self.run_id, stage="save")
        save_adapter(model, adapter_dir)
        del model
        gc.collect()
        return results, quantized, notes

    def _preference_accuracy(self, model, tokenizer, data: TrainingData) -> float | None:
        """The model's share of held-out pairs where it prefers the chosen answer (None: the check is off)."""
        pairs = data.held_out.pairs
        if not (self.settings.train.skip_learned_preference and pairs):
            return None
        gate = self.settings.gate
        return preference_accuracy(Scorer(OneModel(model, tokenizer), gate.batch_size, gate.max_length), "", pairs)

    def _learned_already(self, before: float, after: float, data: TrainingData) -> tuple[str, bool]:
        """Whether SFT taught the preference (skip the preference stage), and the plan's note saying why.

        Only a model that did not prefer the chosen answers before SFT can show that SFT taught them. Where
        the start model already scores chosen above rejected, the likelihoods say nothing: a chosen answer
        that is a shortened rejected one (concision) has the higher likelihood whatever the model prefers to
        write, since it is the rejected answer's own beginning. Then the preference stage runs.
        """
        share, pairs = self.settings.gate.saturated_preference_accuracy, len(data.held_out.pairs)
        if before >= share:
            return (f"preference stage kept: before SFT the model already preferred the chosen answer on "
                    f"{before:.0%} of {pairs} held-out pairs, so scores cannot show what SFT taught"), False
        if after >= share:
            return (f"no preference stage: after SFT the model prefers the chosen answer on {after:.0%} of "
                    f"{pairs} held-out pairs (>= {share:.0%}; {before:.0%} before SFT)"), True
        return (f"preference stage kept: after SFT the model prefers the chosen answer on {after:.0%} of "
                f"{pairs} held-out pairs (< {share:.0%}; {before:.0%} before SFT)"), False

    def _register(self, adapter_dir: Path, gate: GateResult, metrics: dict) -> AdapterVersion:
        self.store.update(self.run_id, stage="register")
        version = self.registry.register(
            self.adapter,
            adapter_dir,
            source="trained",
            parent_version=self.production.version if self.production else None,
            metrics=metrics,
            status=VersionStatus.READY if gate.passed else VersionStatus.REJECTED,
            actor="trainer",
            alias=CANDIDATE if gate.passed else None,
        )
        logger.info(
            "run %d registered %s as %s",
            self.run_id,
            version.lora_name,
            CANDIDATE if gate.passed else VersionStatus.REJECTED,
        )
        return version

    def _promote(self, version: AdapterVersion, gate: GateResult) -> None:
        policy = self.settings.promotion
        if not gate.passed or policy.mode == "manual":
            return
        if policy.mode == "auto":
            reason = f"auto: gate passed in run {self.run_id} ({_summary(gate.metrics)})"
            self.registry.promote(self.adapter, version.version, actor="trainer", reason=reason)
            return
        # canary: the gateway sends a share of the adapter's traffic to the `canary` alias; the watcher
        # promotes or rolls it back with trainer.promotion.review_canary once both sides have ratings.
        reason = f"canary: gate passed in run {self.run_id} ({_summary(gate.metrics)})"
        self.registry.set_alias(self.adapter, CANARY, version.version, actor="trainer", reason=reason)
        logger.info("%s is the canary (%.0f%% of traffic)", version.lora_name, policy.canary_share * 100)


def _summary(metrics: dict) -> str:
    keys = ("preference_win_rate", "candidate_answer_loglik", "candidate_ppl", "production_ppl")
    return ", ".join(f"{k}={metrics[k]}" for k in keys if k in metrics)
